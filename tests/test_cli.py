"""The command line: exit codes, one-line errors, and synth -> gt-pred -> eval end to end."""

from __future__ import annotations

import json

import pytest

from groundrt.data import PNGDataset
from groundrt.runtime.cli import build_parser, main


def test_help_lists_commands_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("data", "eval", "examples:", "groundrt data synth"):
        assert word in out


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", "x", "--split", "nope", "--count", "1", "--seed", "1"])
    assert exit_info.value.code == 2


def test_input_shape_is_height_x_width(capsys):
    args = build_parser().parse_args(["export", "package", "--model", "r", "--data", "d",
                                      "--out", "o", "--input-shape", "144x192"])
    assert args.input_shape == (144, 192)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "package", "--model", "r", "--data", "d", "--out", "o",
              "--input-shape", "4:3"])
    assert exit_info.value.code == 2
    assert "expected HEIGHTxWIDTH such as 144x192, not '4:3'" in capsys.readouterr().err


def test_runtime_error_is_one_line_exit_1(tmp_path, capsys):
    code = main(["eval", "--pred", str(tmp_path / "p.json"), "--data", str(tmp_path / "none"),
                 "--split", "val"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("groundrt: error: data folder") and err.count("\n") == 1
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "eval", "--pred", "p", "--data", str(tmp_path / "none"),
              "--split", "val"])


def test_eval_writes_json_report(tmp_path, release, capsys):
    assert main(["data", "gt-pred", "--data", str(release), "--split", "val",
                 "--out", str(tmp_path / "gt.json")]) == 0
    assert main(["eval", "--pred", str(tmp_path / "gt.json"), "--data", str(release),
                 "--split", "val2017", "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "excluded: 3" in out
    report = json.loads((tmp_path / "r.json").read_text())
    overall = next(g for g in report["groups"] if g["name"] == "overall")
    assert overall["phrases"] == 4 and overall["ar"] == pytest.approx(1.0, abs=1e-5)
    assert report["excluded"] == {"words_mismatch": 1, "no_grounded_phrase": 1,
                                  "unknown_segment": 1}


def test_synth_then_ground_truth_scores_one(tmp_path, capsys):
    data = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(data), "--split", "val", "--count", "6",
                 "--seed", "3", "--workers", "2", "--quiet"]) == 0
    ds = PNGDataset(data, "val")
    assert len(ds.narratives) == 6 and not ds.excluded
    assert main(["data", "gt-pred", "--data", str(data), "--split", "val", "--out",
                 str(tmp_path / "pred")]) == 0
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--data", str(data), "--split", "val",
                 "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    for group in report["groups"]:
        assert group["ar"] == pytest.approx(1.0, abs=1e-5), group["name"]
    names = {g["name"] for g in report["groups"]}
    assert {"overall", "things", "stuff", "singulars", "plurals"} <= names


def test_synth_is_deterministic_across_worker_counts(tmp_path):
    for name, workers in (("a", "1"), ("b", "2")):
        assert main(["data", "synth", "--out", str(tmp_path / name), "--split", "train",
                     "--count", "4", "--seed", "11", "--size", "96", "64", "--workers", workers,
                     "--quiet"]) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    for path in sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()):
        assert (a / path).read_bytes() == (b / path).read_bytes(), path
    ds = PNGDataset(a, "train")
    assert ds.image_size(1_000_000) == (64, 96)


def test_parser_has_every_documented_command():
    parser = build_parser()
    for argv in (["data", "synth", "--out", "o", "--split", "val", "--count", "1", "--seed", "0"],
                 ["data", "gt-pred", "--data", "d", "--split", "val", "--out", "o"],
                 ["eval", "--pred", "p", "--data", "d", "--split", "val"]):
        assert parser.parse_args(argv).handler


def test_train_and_distill_options_reach_the_train_config():
    from groundrt.runtime.cli import _train_overrides
    from groundrt.train.trainer import TrainConfig

    parser = build_parser()
    for argv in (["train", "--data", "d", "--out", "o", "--threads", "1", "--epochs", "2"],
                 ["export", "distill", "--teacher", "t", "--data", "d", "--out", "o",
                  "--threads", "1", "--epochs", "2"]):
        cfg = _train_overrides(parser.parse_args(argv), TrainConfig())
        assert (cfg.threads, cfg.epochs, cfg.bf16) == (1, 2, TrainConfig().bf16)
    unset = _train_overrides(parser.parse_args(["train", "--data", "d", "--out", "o"]),
                             TrainConfig())
    assert unset == TrainConfig()
