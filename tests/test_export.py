"""Export stage on a tiny generated set: distillation, ONNX round trip, INT8, packages."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export needs the [export] extra (torch)")
onnx = pytest.importorskip("onnx", reason="export needs the [export] extra (onnx)")

import onnxruntime as ort  # noqa: E402

from groundrt.data import PNGDataset  # noqa: E402
from groundrt.examples import build_examples  # noqa: E402
from groundrt.export.distill import DistillObjective, distill  # noqa: E402
from groundrt.export.folded_query_decoder import FoldedQueryDecoder  # noqa: E402
from groundrt.export.onnx_export import compare_with_torch, export_onnx, graph_io  # noqa: E402
from groundrt.export.package_builder import build_package  # noqa: E402
from groundrt.export.quantize import (  # noqa: E402
    FLOAT_POLICIES,
    ImageCalibrationReader,
    calibration_images,
    input_convolutions,
    output_projections,
    quantize_image_graph,
)
from groundrt.export.trt_rules import check_trt_qdq  # noqa: E402
from groundrt.model.checkpoint import TOKENIZER_FILE, save_model  # noqa: E402
from groundrt.model.config import PRESETS, ConfigError  # noqa: E402
from groundrt.model.network import GroundingNet  # noqa: E402
from groundrt.package import PackageError, read_manifest  # noqa: E402
from groundrt.text import Tokenizer, train_tokenizer  # noqa: E402
from groundrt.train.batch import collate  # noqa: E402
from groundrt.train.trainer import TrainConfig  # noqa: E402

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A randomly initialized tiny model saved as a run (weights, config, tokenizer)."""
    run = tmp_path_factory.mktemp("run")
    captions = (n.caption for n in PNGDataset(tiny_data, "train").narratives)
    tokenizer = Tokenizer(train_tokenizer(captions, run))
    torch.manual_seed(0)
    save_model(run, GroundingNet(replace(TINY, vocab_size=tokenizer.vocab_size)))
    return run


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_folded_query_decoder_computes_the_trained_decoder(layers):
    """Folding the constant first self-attention and repacking the projections changes no
    result (random weights, several batch sizes)."""
    from groundrt.model.image_encoder import QueryDecoder

    cfg = replace(PRESETS["student"], query_layers=layers)
    torch.manual_seed(layers)
    decoder = QueryDecoder(cfg).eval()
    folded = FoldedQueryDecoder(decoder).eval()
    side = cfg.input_size // 16
    with torch.no_grad():
        for batch in (1, 3):
            memory = torch.randn(batch, cfg.query_dim, side, side)
            want, got = decoder(memory), folded(memory)
            assert got.shape == want.shape == (batch, cfg.num_queries, cfg.embed_dim)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_onnx_export_matches_pytorch_at_any_token_count(tiny_run, tmp_path):
    from groundrt.model.checkpoint import load_model

    model = load_model(tiny_run).eval()
    paths = export_onnx(model, tmp_path)
    for path in paths.values():
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph, full_check=True)
        assert all(node.domain in ("", "ai.onnx") for node in graph.graph.node)
    checks = compare_with_torch(model, paths, trials=5)
    assert [c.graph for c in checks] == ["image", "text"]
    assert all(c.max_abs_error < 1e-4 for c in checks), checks
    # the batch axis of the image graph is dynamic too
    session = ort.InferenceSession(str(paths["image"]), providers=["CPUExecutionProvider"])
    pixel, mask = session.run(None, {"image": np.zeros((3, 3, 64, 64), np.float32)})
    assert pixel.shape == (3, TINY.embed_dim, 16, 16) and mask.shape == (3, 8, TINY.embed_dim)


def test_onnx_export_of_the_model_options(tmp_path):
    """Locality channels and a stride-8 query memory export too (the folded decoder reads the
    memory's side from its position table)."""
    torch.manual_seed(4)
    cfg = replace(TINY, locality_channels=True, memory_stride=8)
    model = GroundingNet(cfg).eval()
    paths = export_onnx(model, tmp_path)
    checks = compare_with_torch(model, paths, trials=3)
    assert all(c.max_abs_error < 1e-4 for c in checks), checks


@pytest.mark.parametrize(("input_shape", "pixel_stride"), [(None, 4), ((48, 64), 4), ((48, 64), 2)],
                         ids=["square", "crop", "stride-2 crop"])
def test_onnx_export_of_network_v2(tmp_path, input_shape, pixel_stride):
    """v2 packages have three graphs; the phrase graph takes any number of phrases and phrase
    tokens and any batch, and every graph matches PyTorch (pixel_embed at stride 2 too)."""
    torch.manual_seed(6)
    cfg = replace(PRESETS["tiny-v2"], pixel_stride=pixel_stride)
    model = GroundingNet(cfg).eval()
    paths = export_onnx(model, tmp_path, input_shape=input_shape)
    assert sorted(paths) == ["image", "phrase", "text"]
    checks = compare_with_torch(model, paths, trials=4, input_shape=input_shape)
    assert [c.graph for c in checks] == ["image", "text", "phrase"]
    assert all(c.max_abs_error < 1e-4 for c in checks), checks
    io = graph_io(model, input_shape)
    image = ort.InferenceSession(str(paths["image"]), providers=["CPUExecutionProvider"])
    shape = input_shape or (64, 64)
    outputs = image.run(None, {"image": np.zeros((3, 3, *shape), np.float32)})
    assert [o.name for o in image.get_outputs()] == [t["name"] for t in io["image"]["outputs"]]
    assert [list(o.shape[1:]) for o in outputs] == [t["shape"][1:] for t in io["image"]["outputs"]]
    assert outputs[0].shape[-2:] == (shape[0] // pixel_stride, shape[1] // pixel_stride)
    phrase = ort.InferenceSession(str(paths["phrase"]), providers=["CPUExecutionProvider"])
    layers, heads, d = cfg.phrase_layers, cfg.phrase_heads, cfg.query_dim // cfg.phrase_heads
    for batch, phrases, tokens in ((1, 1, 1), (3, 7, 5)):
        own = np.ones((batch, phrases, layers, heads, tokens, d), np.float32)
        kernels, presence, embed = phrase.run(None, {
            "phrase_mean": np.ones((batch, phrases, cfg.query_dim), np.float32),
            "own_keys": own, "own_values": own,
            "own_bias": np.zeros((batch, phrases, tokens), np.float32),
            "image_keys": outputs[2][:batch], "image_values": outputs[3][:batch]})
        assert kernels.shape == embed.shape == (batch, phrases, cfg.embed_dim)
        assert presence.shape == (batch, phrases)


def test_onnx_export_of_a_cropped_input(tmp_path):
    """A graph for 4:3 frames: the input is a 48 x 64 crop of the tiny 64 square (with the
    options, whose position tables are cropped too); shapes in graph and manifest io agree."""
    torch.manual_seed(5)
    model = GroundingNet(replace(TINY, locality_channels=True, memory_stride=8)).eval()
    paths = export_onnx(model, tmp_path, input_shape=(48, 64))
    checks = compare_with_torch(model, paths, trials=3,
                                input_shape=(48, 64))
    assert all(c.max_abs_error < 1e-4 for c in checks), checks
    session = ort.InferenceSession(str(paths["image"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 48, 64]
    pixel, _ = session.run(None, {"image": np.zeros((1, 3, 48, 64), np.float32)})
    io = graph_io(model, (48, 64))["image"]
    assert list(pixel.shape[1:]) == io["outputs"][0]["shape"][1:] == [TINY.embed_dim, 12, 16]
    with pytest.raises(ConfigError, match="not a crop"):
        export_onnx(model, tmp_path / "bad", input_shape=(40, 64))


def test_calibration_writes_a_trt_graph_and_a_cpu_graph(tiny_run, tiny_data, tmp_path):
    from groundrt.model.checkpoint import load_model

    model = load_model(tiny_run).eval()
    paths = export_onnx(model, tmp_path)
    train_set = PNGDataset(tiny_data, "train")
    ids = calibration_images(train_set, 4)
    assert len(ids) == 4 and ids == calibration_images(train_set, 4)  # seeded choice
    reader = ImageCalibrationReader(train_set, ids, TINY.input_shape, progress=False)
    graphs = quantize_image_graph(paths["image"], reader, tmp_path / "work")
    assert graphs.calibration_images == 4
    prepared = onnx.load(str(tmp_path / "work" / "prepared.onnx"))
    projections, stem = output_projections(prepared), input_convolutions(prepared)
    assert len(projections) == 2 and len(stem) == 1  # pixel_embed's and mask_embed's; the stem
    attention = FLOAT_POLICIES["attention"](prepared)
    assert {prepared_op(prepared, n) for n in attention} == {"MatMul", "Softmax",
                                                            "LayerNormalization"}
    assert set(graphs.float_nodes) == set(projections) | set(stem) | set(attention)

    assert check_trt_qdq(graphs.trt) == []
    cpu_types = {init.data_type for init in onnx.load(str(graphs.cpu)).graph.initializer}
    assert onnx.TensorProto.UINT8 in cpu_types  # U8 activation zero points
    assert check_trt_qdq(graphs.cpu), "uint8 activations must fail TensorRT's rules"

    reader.rewind()
    image = np.stack([reader.get_next()["image"][0] for _ in range(2)])
    want = ort.InferenceSession(str(paths["image"])).run(None, {"image": image})
    for path in (graphs.cpu, graphs.trt):
        got = ort.InferenceSession(str(path)).run(None, {"image": image})
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            # int8 is close to float: correlation of the embeddings, not equality
            assert np.corrcoef(g.ravel(), w.ravel())[0, 1] > 0.9


def prepared_op(model, name: str) -> str:
    return next(n.op_type for n in model.graph.node if n.name == name)


def test_a_package_for_one_camera_aspect(tiny_run, tiny_data, tmp_path):
    """--input-shape: the image graph takes a crop of the square; the Grounder letterboxes
    into it and returns masks at the frame's size."""
    from groundrt.runtime.grounder import Grounder

    with pytest.raises(ConfigError, match="not a crop"):  # before any file is written
        build_package(tiny_run, tiny_data, tmp_path / "bad", input_shape=(64, 80),
                      progress=False)
    assert not (tmp_path / "bad").exists()
    package = tmp_path / "pkg43"
    manifest = build_package(tiny_run, tiny_data, package, calibration_count=3,
                             input_shape=(48, 64), progress=False)
    assert (manifest["input"]["size"], manifest["input"]["height"],
            manifest["input"]["width"]) == (64, 48, 64)
    assert manifest["io"]["image"]["inputs"][0]["shape"] == ["batch", 3, 48, 64]
    grounder = Grounder(package, backend="onnxruntime")
    assert grounder.input_shape == (48, 64)
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    result = grounder.ground(frame, phrases=["the sky", "two red circles"])
    assert [p.mask.shape for p in result.phrases] == [(120, 160)] * 2


def test_package_manifest_verifies_every_file(tiny_run, tiny_data, tmp_path):
    package = tmp_path / "pkg"
    manifest = build_package(tiny_run, tiny_data, package, calibration_count=3, progress=False)
    assert set(manifest["files"]) == {TOKENIZER_FILE, "image.onnx", "image.int8.cpu.onnx",
                                      "image.int8.trt.onnx", "text.onnx"}
    assert {p.name for p in package.iterdir()} == set(manifest["files"]) | {"manifest.json"}
    assert set(manifest["accuracy"]) == {"fp32", "int8-cpu", "int8-trt"}
    for scores in manifest["accuracy"].values():
        assert 0.0 <= scores["overall"] <= 1.0 and scores["narratives"] == 4
    assert manifest["input"]["size"] == TINY.input_size
    assert manifest["grounding"]["logit_scale"] == pytest.approx(10.0)  # exp(log 10) untrained
    assert manifest["calibration"]["images"] == 3

    read_manifest(package)  # intact: no error
    graph = package / "image.int8.cpu.onnx"
    original = graph.read_bytes()
    graph.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(PackageError, match="image.int8.cpu.onnx does not match its SHA-256"):
        read_manifest(package)
    graph.write_bytes(original)

    raw = json.loads((package / "manifest.json").read_text())
    del raw["files"]["text.onnx"]
    (package / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(PackageError, match="text.onnx has no hash"):
        read_manifest(package)
    (package / "manifest.json").unlink()
    with pytest.raises(PackageError, match="manifest.json is missing"):
        read_manifest(package)
    with pytest.raises(FileExistsError, match="not empty"):
        build_package(tiny_run, tiny_data, package, progress=False)


def test_distillation_trains_a_student_from_a_teacher(tiny_run, tiny_data, tmp_path):
    teacher_cfg = json.loads((tiny_run / "config.json").read_text())
    student_cfg = replace(TINY, widths=(8, 8, 8, 16), fpn_dim=8, embed_dim=8, query_dim=16,
                          input_size=32)
    fast = TrainConfig(epochs=1, batch_size=4, lr=3e-3, warmup_steps=1, loss_size=16,
                       val_limit=2, checkpoint_every=100)
    state = distill(tiny_run, tiny_data, tmp_path / "student", student_cfg, fast,
                    progress=False)
    assert state["history"][0]["epoch"] == 1
    parts = state["history"][0]["last_loss"]
    assert {"truth", "kd_masks", "kd_affinity", "kd_embed", "total"} <= set(parts)
    written = json.loads((tmp_path / "student" / "config.json").read_text())
    assert written["input_size"] == 32 and written["vocab_size"] == teacher_cfg["vocab_size"]
    assert (tmp_path / "student" / TOKENIZER_FILE).read_bytes() == \
        (tiny_run / TOKENIZER_FILE).read_bytes()
    recorded = json.loads((tmp_path / "student" / "train_config.json").read_text())
    assert recorded["teacher"] == str(tiny_run)


def test_distillation_loss_falls_and_is_zero_free(tiny_run, tiny_data):
    from groundrt.model.checkpoint import load_model

    teacher = load_model(tiny_run)
    cfg = replace(teacher.cfg, input_size=32, widths=(8, 8, 8, 16))
    dataset = PNGDataset(tiny_data, "train")
    examples = build_examples(dataset, Tokenizer(tiny_run / TOKENIZER_FILE), cfg,
                              progress=False, teacher_size=teacher.cfg.input_size)
    batch = collate(examples[:4], loss_size=16)
    assert batch.teacher_image.shape[-1] == teacher.cfg.input_size
    torch.manual_seed(0)
    student = GroundingNet(cfg)
    objective = DistillObjective(teacher)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    totals = []
    for _ in range(20):
        out = student(batch.image, batch.tokens, batch.token_padding, batch.spans)
        loss, parts = objective(out, batch, 16)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(parts["total"])
    assert all(parts[k] > 0 for k in ("kd_masks", "kd_affinity", "kd_embed"))
    assert totals[-1] < 0.8 * totals[0], totals
    assert not any(p.grad is not None for p in teacher.parameters())
