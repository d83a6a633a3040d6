"""`groundrt bench` (runtime/bench.py, bench_report.py, roofline.py, machine.py): the GOP counter
against a hand-counted graph, and the whole harness on a tiny v2 package with a few runs: JSON,
Markdown and PNG well formed, a failed backend kept as a row with its reason."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from groundrt.runtime.bench import caption_with, stats
from groundrt.runtime.bench_report import pareto_front
from groundrt.runtime.chunker import noun_phrases
from groundrt.runtime.cli import main
from groundrt.runtime.machine import cpu_description

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def test_captions_have_the_phrase_count_asked_for():
    for count in (1, 2, 3, 8, 20, 64):
        assert len(noun_phrases(caption_with(count))) == count
    with pytest.raises(ValueError, match="--phrases"):
        caption_with(65)


def test_stats_percentiles_and_mean():
    values = list(range(1, 101))
    got = stats([float(v) for v in reversed(values)])
    assert got["p50"] == pytest.approx(50.5) and got["p90"] == pytest.approx(90.1)
    assert got["p99"] == pytest.approx(99.01) and got["mean"] == pytest.approx(50.5)
    assert stats([]) is None


def test_pareto_front_keeps_the_points_nothing_beats():
    points = [(10.0, 0.7), (5.0, 0.6), (12.0, 0.65), (20.0, 0.8), (6.0, 0.55)]
    assert pareto_front(points) == [1, 0, 3]


def test_cpu_description_reads_model_cores_and_isa_flags():
    cpuinfo = ("processor\t: 0\nmodel name\t: Test CPU 9000\nphysical id\t: 0\ncore id\t: 0\n"
               "flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni\n\n"
               "processor\t: 1\nmodel name\t: Test CPU 9000\nphysical id\t: 0\ncore id\t: 1\n"
               "flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni\n")
    cpu = cpu_description(cpuinfo)
    assert cpu["model"] == "Test CPU 9000" and cpu["physical_cores"] == 2
    assert cpu["isa"] == ["sse4_2", "avx2", "avx512f", "avx512_vnni"]


# ---- the GOP counter ---------------------------------------------------------------------------


def hand_counted_graph(path: Path) -> None:
    """x [N, 3, 8, 8] -> Conv 4x3x3x3 (pad 1) -> [N, 4, 8, 8] -> reshape [N, 256] -> Gemm
    256 -> 10; and, quantized (Q/DQ), q [N, 3, 8, 8] -> Conv 2x3x1x1 -> [N, 2, 8, 8]; and
    MatMulInteger a [N, 5, 7] x b [7, 6]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    f32 = np.float32
    inits = [numpy_helper.from_array(np.zeros((4, 3, 3, 3), f32), "w"),
             numpy_helper.from_array(np.array([-1, 256], np.int64), "flat"),
             numpy_helper.from_array(np.zeros((256, 10), f32), "g"),
             numpy_helper.from_array(np.zeros((2, 3, 1, 1), f32), "wq_f"),
             numpy_helper.from_array(np.array(0.1, f32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.zeros((7, 6), np.uint8), "b")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "flat"], ["r"]),
        helper.make_node("Gemm", ["r", "g"], ["y"]),
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("QuantizeLinear", ["wq_f", "s", "z"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["yq"]),
        helper.make_node("MatMulInteger", ["a", "b"], ["m"]),
    ]
    graph = helper.make_graph(
        nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
                        helper.make_tensor_value_info("a", TensorProto.UINT8, ["N", 5, 7])],
        [helper.make_tensor_value_info(n, t, None) for n, t in
         (("y", TensorProto.FLOAT), ("yq", TensorProto.FLOAT), ("m", TensorProto.INT32))],
        inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), str(path))


def test_gop_counter_against_a_hand_counted_graph(tmp_path):
    from groundrt.runtime.roofline import count_graph_ops

    hand_counted_graph(tmp_path / "hand.onnx")
    ops = count_graph_ops(tmp_path / "hand.onnx", {"x": (2, 3, 8, 8), "a": (2, 5, 7)})
    conv = 2 * 4 * 8 * 8 * (3 * 3 * 3)  # N * M * H * W outputs, C * kh * kw each
    gemm = 2 * 10 * 256
    qconv = 2 * 2 * 8 * 8 * 3
    matmul_integer = 2 * 5 * 6 * 7
    assert ops.fp32_gops * 1e9 == pytest.approx(2 * (conv + gemm))
    assert ops.int8_gops * 1e9 == pytest.approx(2 * (qconv + matmul_integer))
    assert ops.counted_nodes == 4 and ops.unshaped_nodes == 0
    # the weights: 108 + 2 + 2560 + 6 floats, 1 + 1 bytes of scale / zero point... all of them
    assert ops.weight_bytes == (108 + 2560 + 6 + 1) * 4 + 2 * 8 + 1 + 42
    # a batch of 1 halves everything
    single = count_graph_ops(tmp_path / "hand.onnx", {"x": (1, 3, 8, 8), "a": (1, 5, 7)})
    assert single.gops == pytest.approx(ops.gops / 2)
    with pytest.raises(ValueError, match="rank"):
        count_graph_ops(tmp_path / "hand.onnx", {"x": (1, 3, 8)})


def test_edge_estimates_are_the_slower_of_work_and_bytes():
    from groundrt.runtime.roofline import EdgeDevice, edge_estimate

    device = EdgeDevice("test", int8_tops=10.0, memory_gbs=100.0)
    assert edge_estimate(device, gops=10.0, bytes_moved=1000) == pytest.approx(1.0)
    assert edge_estimate(device, gops=0.001, bytes_moved=10**9) == pytest.approx(10.0)


# ---- the harness on a tiny v2 package ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny v2 package of random weights, its dataset)."""
    torch = pytest.importorskip("torch", reason="building a package needs the [export] extra")
    from groundrt.data import PNGDataset
    from groundrt.export.package_builder import build_package
    from groundrt.model.checkpoint import save_model
    from groundrt.model.config import PRESETS
    from groundrt.model.network import GroundingNet
    from groundrt.synth.dataset import synthesize
    from groundrt.text import Tokenizer, train_tokenizer

    data = tmp_path_factory.mktemp("synth")
    synthesize(data, "train", 6, seed=5, size=(128, 96), workers=1, progress=False)
    synthesize(data, "val", 3, seed=6, size=(120, 90), workers=1, progress=False)
    run = tmp_path_factory.mktemp("run")
    captions = (n.caption for n in PNGDataset(data, "train").narratives)
    tokenizer = Tokenizer(train_tokenizer(captions, run))
    torch.manual_seed(0)
    save_model(run, GroundingNet(replace(PRESETS["tiny-v2"], vocab_size=tokenizer.vocab_size)))
    package = tmp_path_factory.mktemp("pkg") / "tiny-v2"
    build_package(run, data, package, calibration_count=2, progress=False, eval_limit=2)
    return package, data


def test_bench_report_on_a_tiny_package(tiny, tmp_path, capsys):
    package, data = tiny
    report_dir, out = tmp_path / "report", tmp_path / "bench.json"
    assert main(["bench", "--model", str(package), "--backend", "onnxruntime", "--backend",
                 "tensorrt", "--precision", "fp32", "--precision", "int8-cpu", "--runs", "4",
                 "--warmup", "1", "--rounds", "2", "--size", "160x120", "--phrases", "3",
                 "--scenario", "multistream", "--scenario", "offline", "--streams", "2",
                 "--batch", "2", "--data", str(data), "--eval-limit", "2",
                 "--json", str(out), "--report", str(report_dir)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["tiny-v2 onnxruntime fp32", "tiny-v2 onnxruntime int8-cpu",
                          "tiny-v2 tensorrt fp32", "tiny-v2 tensorrt int8-cpu",
                          "tiny-v2, numpy post-processing"]
    for name in ("tiny-v2 tensorrt fp32", "tiny-v2 tensorrt int8-cpu"):
        assert rows[name]["status"] == "failed" and "tensorrt" in rows[name]["error"]
        assert f"| {name} | failed: " in printed
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    assert [r["precision"] for r in ok] == ["fp32", "int8-cpu", "fp32"]
    assert ok[2]["native_kernels"] is False
    for row in ok:
        stages = row["stages"]
        assert row["network"] == 2 and row["phrases"] == 3
        for stage in ("preprocess", "image", "text cold", "text cached", "phrase", "affinity",
                      "decode", "total"):
            s = stages[stage]
            assert s["n"] >= 4 and 0 < s["p50"] <= s["p90"] <= s["p95"] <= s["p99"], stage
        assert stages["text cold"]["p50"] > stages["text cached"]["p50"]
        multi, off = row["scenarios"]["multistream"], row["scenarios"]["offline"]
        assert multi["streams"] == 2 and multi["queries"] == 4
        assert multi["value"] == pytest.approx(multi["latency_ms"]["p99"])
        assert off["frames"] == 4 and off["batch"] == 2 and off["value"] > 0
        assert isinstance(row["rss_added_mib"], float) and row["package_mib"] > 0
        assert 0 <= row["accuracy"]["overall"] <= 1 and row["accuracy"]["narratives"] == 2
        roof = row["roofline"]
        assert set(roof["stages"]) == {"preprocess", "image", "text cold", "phrase", "affinity",
                                       "decode"}
        assert roof["frame_floor_ms"] > 0 and roof["frame_gops"] > 0
        assert all(v > 0 for v in roof["edge_estimates_ms"].values())
    # the fp32 graph has no integer work; the int8-cpu one has
    assert ok[0]["roofline"]["stages"]["image"]["int8_gops"] == 0
    assert ok[1]["roofline"]["stages"]["image"]["int8_gops"] > 0
    assert report["peaks"]["int8_gops"] > 0 and report["peaks"]["copy_gbs"] > 0
    assert report["machine"]["cpu"]["logical_cores"] >= 1 and report["peak_rss_mib"] > 0
    assert ok[0]["x_first"] == pytest.approx(1.0)

    markdown = (report_dir / "report.md").read_text()
    assert markdown.startswith("# groundrt bench\n\nRegenerate: `groundrt bench --model ")
    for section in ("## Machine", "## Summary", "## Per stage", "## Roofline",
                    "## Edge estimates (estimates, not measurements)", "## Accuracy (AR)"):
        assert section in markdown
    # every table row has the same number of cells as its header
    for block in markdown.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            assert len({line.count(" | ") for line in lines if "---" not in line}) == 1, block
    assert json.loads((report_dir / "report.json").read_text())["rows"][0]["name"] == \
        "tiny-v2 onnxruntime fp32"
    if HAS_MATPLOTLIB:
        for name in ("stages.png", "latency_histogram.png", "accuracy_latency.png"):
            assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"![{name[:-4]}]({name})" in markdown
    else:
        assert "matplotlib is not installed" in markdown


def test_a_report_named_md_keeps_its_json_and_plots_beside_it(tiny, tmp_path):
    package, _ = tiny
    assert main(["bench", "--model", str(package), "--runs", "2", "--warmup", "0", "--rounds",
                 "1", "--size", "64x48", "--no-roofline", "--report",
                 str(tmp_path / "RESULTS.md")]) == 0
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert json.loads((tmp_path / "RESULTS" / "report.json").read_text())["rows"]
    if HAS_MATPLOTLIB:
        assert "![stages](RESULTS/stages.png)" in markdown
        assert (tmp_path / "RESULTS" / "stages.png").is_file()
    assert "peaks: not measured (roofline off)" in markdown


def test_bench_fails_when_no_row_runs(tmp_path, capsys):
    assert main(["bench", "--backend", "tensorrt", "--runs", "2", "--no-roofline",
                 "--no-numpy-baseline", "--json", str(tmp_path / "b.json")]) == 1
    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["status"] for r in report["rows"]] == ["failed"]
    assert "failed: " in capsys.readouterr().out


def test_bench_size_must_be_width_x_height(capsys):
    for bad in (["640"], ["640x"], ["1", "2", "3"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", "--size", *bad])
        assert exit_info.value.code == 2
        assert "expected WIDTHxHEIGHT" in capsys.readouterr().err
