"""A network v2 package end to end: three graphs, presence gating, instances, predict + eval."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="building a package needs the [export] extra")

from instance_checks import assert_instances_are_parts  # noqa: E402

from groundrt.data import PNGDataset  # noqa: E402
from groundrt.export.package_builder import (  # noqa: E402
    build_package,
    fit_presence_weights,
    gate_curve,
)
from groundrt.metric.presence import (  # noqa: E402
    CALIBRATION_THRESHOLDS,
    choose_threshold,
    presence_curve,
)
from groundrt.model.checkpoint import save_model  # noqa: E402
from groundrt.model.config import PRESETS  # noqa: E402
from groundrt.model.network import GroundingNet  # noqa: E402
from groundrt.package import PackageError, read_manifest  # noqa: E402
from groundrt.runtime.cli import main  # noqa: E402
from groundrt.runtime.grounder import Grounder  # noqa: E402
from groundrt.runtime.postprocess import mask_components  # noqa: E402
from groundrt.runtime.predict import score_split  # noqa: E402
from groundrt.runtime.reference import presence_features, presence_probability  # noqa: E402
from groundrt.text import Tokenizer, train_tokenizer  # noqa: E402

TINY_V2 = PRESETS["tiny-v2"]


def make_run(root: Path, data: Path, presence_bias: float) -> Path:
    """A random tiny v2 model whose presence head says `presence_bias` (logit) to everything."""
    captions = (n.caption for n in PNGDataset(data, "train").narratives)
    tokenizer = Tokenizer(train_tokenizer(captions, root))
    torch.manual_seed(0)
    model = GroundingNet(replace(TINY_V2, vocab_size=tokenizer.vocab_size))
    with torch.no_grad():
        model.phrase_decoder.presence_head.weight.zero_()
        model.phrase_decoder.presence_head.bias.fill_(presence_bias)
    save_model(root, model)
    return root


@pytest.fixture(scope="module")
def found_run(tiny_data, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("found"), tiny_data, 8.0)


@pytest.fixture(scope="module")
def package(found_run, tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "pkg"
    build_package(found_run, tiny_data, out, calibration_count=3, progress=False)
    return out


FRAME = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
PHRASES = ["the sky", "two red circles", "a blue star"]


def test_a_v2_package_has_a_phrase_graph_and_scores_presence(package, tiny_data):
    manifest = read_manifest(package)
    assert manifest["format_version"] == 2
    assert manifest["graphs"]["phrase"] == {"fp32": "phrase.onnx"} and "phrase.onnx" in \
        manifest["files"]
    # the presence head says the same to every phrase: alone, no threshold finds an absent
    # phrase without losing present ones, so it would keep the lowest
    how = manifest["calibration"]["presence"]
    assert how["split"] == "train2017"
    assert how["head_only"] == {"threshold": 0.01, "target_acc": 1.0, "target_acc:caption": 1.0,
                                "target_acc:list": 1.0, "no_target_acc": 0.0}
    # the gate shipped: the logistic regression of the head and the mask, and its threshold
    gate = manifest["grounding"]
    assert len(gate["presence_weights"]) == 4 and how["weights"] == gate["presence_weights"]
    assert how["threshold"] == gate["presence_threshold"] and 0 < gate["presence_threshold"] < 1
    assert not how["chosen"] or min(how["target_acc:caption"], how["target_acc:list"]) >= 0.98
    for scores in manifest["accuracy"].values():
        # present phrases are counted where they are asked in captions and in the probe lists
        assert {"target_acc", "no_target_acc", "target_acc:caption", "target_acc:list"} <= set(
            scores)
        by_kind = {k for k in scores if k.startswith("no_target_acc:")}
        assert by_kind == {"no_target_acc:thing", "no_target_acc:stuff",
                           "no_target_acc:unknown"} & {f"no_target_acc:{a.kind}" for a in
                                                       read_absent_of(tiny_data)}
        assert scores["instance_ar"] is None or 0.0 <= scores["instance_ar"] <= 1.0


def read_absent_of(data: Path) -> list:
    from groundrt.data.absent import read_absent

    return [a for phrases in read_absent(PNGDataset(data, "val").layout).values()
            for a in phrases]


def test_the_grounder_gates_by_the_presence_weights(package):
    grounder = Grounder(package, backend="onnxruntime", precision="fp32")
    grounder.grounding = {k: v for k, v in grounder.grounding.items() if k != "presence_weights"}
    grounder.grounding["presence_threshold"] = 0.0
    ungated = grounder.ground(FRAME, phrases=PHRASES).phrases
    head = np.array([p.presence for p in ungated])
    assert all(p.found for p in ungated) and head == pytest.approx(1 / (1 + np.exp(-8.0)))
    weights = [0.5, 3.0, 0.25, -2.0]
    expected = presence_probability(np.log(head / (1 - head)), [p.score for p in ungated],
                                    [p.area / FRAME[..., 0].size for p in ungated], weights)
    threshold = float(np.sort(expected)[len(expected) // 2 - 1])  # some found, some not
    grounder.grounding.update(presence_weights=weights, presence_threshold=threshold)
    gated = grounder.ground(FRAME, phrases=PHRASES).phrases
    assert any(p.found for p in gated) and not all(p.found for p in gated)
    for a, b, e in zip(ungated, gated, expected, strict=True):
        assert b.presence == pytest.approx(e) and b.found == (e > threshold)
        if b.found:
            assert (b.mask == a.mask).all() and b.score == a.score
        else:
            assert not b.mask.any() and b.area == 0 and b.score == 0 and b.instances == []


def test_the_gate_keeps_present_phrases_in_captions_and_in_lists_each():
    # captions' present phrases score high, lists' lower, absent ones (in lists) lowest: over
    # both together a threshold between the lists' and the captions' scores looks fine
    caption = np.full(60, 0.9)
    listed = np.linspace(0.3, 0.6, 10)
    absent = np.linspace(0.05, 0.5, 20)
    probability = np.concatenate([caption, listed, absent])
    present = np.array([True] * 70 + [False] * 20)
    in_caption = np.arange(90) < 60
    point = choose_threshold(gate_curve(probability, present, in_caption), 0.98)
    assert point["target_acc:list"] == 1.0 and point["threshold"] < 0.3
    mixed = choose_threshold(presence_curve(probability, present, CALIBRATION_THRESHOLDS), 0.85)
    assert mixed["threshold"] > point["threshold"]  # what counting both together would keep


def test_presence_weights_fit_what_separates_absent_phrases():
    rng = np.random.default_rng(0)
    n = 400
    present = rng.random(n) < 0.8
    logit = rng.normal(3.0, 1.0, n)  # the head: no help
    score = np.where(present, rng.uniform(0.75, 1.0, n), rng.uniform(0.3, 0.7, n))
    area = np.where(present, rng.uniform(0.01, 0.3, n), rng.uniform(0.0, 0.3, n))
    features = presence_features(logit, score, area)
    weights = fit_presence_weights(features, present)
    assert weights[1] > 5 * max(abs(weights[0]), abs(weights[2]))  # the mask's score decides
    probability = presence_probability(logit, score, area, weights)
    assert ((probability > 0.5) == present).mean() > 0.97
    assert fit_presence_weights(features, np.ones(n, bool)) is None  # one class: nothing to fit


def test_onnx_runtime_and_torch_ground_alike(package, found_run):
    """The package on ONNX Runtime (fp32) and the run in PyTorch give the same phrases."""
    ort_result = Grounder(package, backend="onnxruntime", precision="fp32").ground(
        FRAME, phrases=PHRASES)
    eager = Grounder(found_run, backend="torch")  # a run folder: gated as the package is
    gate = read_manifest(package)["grounding"]
    eager.grounding = {**eager.grounding, "presence_threshold": gate["presence_threshold"],
                       "presence_weights": gate["presence_weights"]}
    torch_result = eager.ground(FRAME, phrases=PHRASES)
    for a, b in zip(ort_result.phrases, torch_result.phrases, strict=True):
        assert a.found == b.found and a.presence == pytest.approx(b.presence, abs=1e-3)
        assert np.mean(a.mask != b.mask) < 0.01 and a.queries == b.queries
    assert "phrase" in ort_result.timings_ms


def test_a_phrase_not_found_has_an_empty_mask_and_no_instances(tiny_data, tmp_path):
    run = make_run(tmp_path / "absent", tiny_data, -8.0)
    result = Grounder(run, backend="torch").ground(FRAME, "Two red circles on the grass.")
    assert result.phrases and all(not p.found for p in result.phrases)
    for p in result.phrases:
        assert not p.mask.any() and p.area == 0 and p.queries == [] and p.instances == []
        assert p.presence == pytest.approx(1 / (1 + np.exp(8.0)), rel=1e-4)
        assert p.to_json(rle=False)["found"] is False
    # "not found" to everything: every absent phrase right, no present one, in captions and in
    # the probe lists alike (the lists' present phrases count, or this would look good)
    scores = score_split(Grounder(run, backend="torch"), PNGDataset(tiny_data, "val"))
    assert (scores["no_target_acc"], scores["target_acc"], scores["target_acc:caption"],
            scores["target_acc:list"]) == (1.0, 0.0, 0.0, 0.0)


def test_instances_are_the_parts_of_the_phrase_mask(package):
    grounder = Grounder(package, backend="onnxruntime", precision="fp32")
    result = grounder.ground(FRAME, phrases=PHRASES)
    for p in result.phrases:
        assert_instances_are_parts(p)


def test_mask_components_split_a_plural_into_its_parts_without_specks():
    mask = np.zeros((60, 80), bool)
    mask[5:25, 5:25] = True  # 400 px
    mask[30:50, 40:70] = True  # 600 px, the largest
    mask[55, 0] = True  # a speck under 1% of the mask
    mask[24:27, 24:27] |= np.eye(3, dtype=bool)  # diagonal pixels join the first part
    parts = mask_components(mask)
    assert [int(m.sum()) for m in parts] == [600, 402]
    assert parts[0][40, 50] and parts[1][5, 5] and parts[1][26, 26]
    assert mask_components(np.zeros((4, 4), bool)) == []


def test_predict_and_eval_report_presence_and_instances(package, tiny_data, tmp_path):
    pred, report = tmp_path / "pred.json", tmp_path / "report.json"
    assert main(["predict", "--model", str(package), "--data", str(tiny_data), "--split", "val",
                 "--out", str(pred), "--quiet"]) == 0
    raw = json.loads(pred.read_text())
    absent = json.loads((tiny_data / "absent_val2017.json").read_text())["phrases"]
    assert len(raw["absent"]) == len(absent)
    found_absent = [a["found"] for a in raw["absent"]]
    found_present = [p["found"] for p in raw["predictions"]]
    assert {type(f) for f in found_absent + found_present} == {bool}
    assert main(["eval", "--pred", str(pred), "--data", str(tiny_data), "--split", "val",
                 "--json", str(report)]) == 0
    scores = json.loads(report.read_text())  # the accuracies of the file's answers
    assert scores["target_acc"] == pytest.approx(np.mean(found_present))
    assert scores["no_target_acc"] == pytest.approx(1 - np.mean(found_absent))
    assert scores["absent_phrases"] == len(absent)
    plurals = [p for p in PNGDataset(tiny_data, "val").phrases if p.is_plural]
    if plurals:
        assert 0.0 <= scores["instance_ar"] <= 1.0


def test_a_package_of_an_unknown_format_version_is_refused(package, tmp_path):
    copy = tmp_path / "future"
    copy.mkdir()
    for f in package.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 3
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="format version 3; this groundrt reads versions 1, 2"):
        Grounder(copy)


def test_info_shows_the_presence_gate_and_its_accuracies(package, capsys):
    assert main(["info", "--model", str(package)]) == 0
    out = capsys.readouterr().out
    gate = read_manifest(package)["grounding"]
    assert f"presence gate: presence head and mask, found above {gate['presence_threshold']}" in out
    assert f"within {gate['singular_margin']} of the surest part" in out
    assert "target / no-target accuracy" in out and "instance AR" in out
