"""Training on a tiny generated set: the loss falls, runs are deterministic and resumable."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs the [export] extra (torch)")

from groundrt.data import PNGDataset  # noqa: E402
from groundrt.examples import build_examples  # noqa: E402
from groundrt.model.checkpoint import MODEL_FILE, STATE_FILE  # noqa: E402
from groundrt.model.config import PRESETS  # noqa: E402
from groundrt.model.network import GroundingNet  # noqa: E402
from groundrt.synth.dataset import synthesize  # noqa: E402
from groundrt.text import Tokenizer, train_tokenizer  # noqa: E402
from groundrt.train.batch import collate  # noqa: E402
from groundrt.train.losses import grounding_loss  # noqa: E402
from groundrt.train.trainer import TrainConfig, train  # noqa: E402

TINY = PRESETS["tiny"]
FAST = TrainConfig(epochs=2, batch_size=4, lr=3e-3, warmup_steps=2, loss_size=32, val_limit=4,
                   checkpoint_every=1)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, "train", 12, seed=5, size=(128, 96), workers=1, progress=False)
    synthesize(root, "val", 4, seed=6, size=(128, 96), workers=1, progress=False)
    return root


V1_PARTS = {"query_bce", "query_dice", "affinity", "phrase_bce", "phrase_dice", "total"}


@pytest.mark.parametrize(("preset", "absent", "parts_expected"), [
    ("tiny", "none", V1_PARTS), ("tiny-v2", "mixed", V1_PARTS | {"presence"})])
def test_a_few_steps_lower_the_loss(tiny_data, tmp_path, preset, absent, parts_expected):
    train_set = PNGDataset(tiny_data, "train")
    tokenizer = Tokenizer(train_tokenizer((n.caption for n in train_set.narratives), tmp_path))
    cfg = replace(PRESETS[preset], vocab_size=tokenizer.vocab_size)
    examples = build_examples(train_set, tokenizer, cfg, progress=False, absent=absent)
    if absent != "none":  # some examples carry absent phrases, which train only the presence
        assert any(not e.present_mask.all() for e in examples[:4])
    batch = collate(examples[:4], loss_size=32)
    torch.manual_seed(0)
    model = GroundingNet(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(batch.image, batch.tokens, batch.token_padding, batch.spans)
        loss, parts = grounding_loss(out, batch, 32)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(parts["total"])
    assert set(parts) == parts_expected
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_is_deterministic_and_validates(tiny_data, tmp_path):
    a = train(tiny_data, tmp_path / "a", TINY, FAST, progress=False)
    train(tiny_data, tmp_path / "b", TINY, FAST, progress=False)
    assert [h["epoch"] for h in a["history"]] == [1, 2]
    assert 0.0 <= a["history"][-1]["overall"] <= 1.0
    assert (tmp_path / "a" / MODEL_FILE).read_bytes() == (tmp_path / "b" / MODEL_FILE).read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_data, tmp_path / "a", TINY, FAST, progress=False)


def test_bf16_autocast_trains_the_options_and_differs_from_float32(tiny_data, tmp_path):
    """A bfloat16-autocast run of the opt-in options trains and validates; its weights are not
    the float32 run's, so the autocast really ran."""
    options = replace(TINY, locality_channels=True, memory_stride=8)
    bf16 = train(tiny_data, tmp_path / "bf16", options, replace(FAST, bf16=True), progress=False)
    train(tiny_data, tmp_path / "fp32", options, FAST, progress=False)
    last = bf16["history"][-1]
    assert last["epoch"] == 2 and 0.0 <= last["overall"] <= 1.0
    assert all(torch.isfinite(torch.tensor(v)) for v in last["last_loss"].values())
    assert (tmp_path / "bf16" / MODEL_FILE).read_bytes() != (tmp_path / "fp32" / MODEL_FILE
                                                             ).read_bytes()


def test_v2_training_validates_presence(tiny_data, tmp_path):
    """A v2 run scores target accuracy on the captions and no-target accuracy on the absent
    phrases of the val split (its side file), and a v2 student distils from it."""
    from groundrt.export.distill import distill

    state = train(tiny_data, tmp_path / "v2", PRESETS["tiny-v2"], FAST, progress=False)
    last = state["history"][-1]
    assert 0.0 <= last["target_acc"] <= 1.0 and 0.0 <= last["no_target_acc"] <= 1.0
    student = distill(tmp_path / "v2", tiny_data, tmp_path / "student",
                      replace(PRESETS["tiny-v2"], input_size=32), replace(FAST, epochs=1),
                      progress=False)
    assert {"kd_phrase_masks", "kd_presence"} <= set(student["history"][-1]["last_loss"])


def test_a_killed_run_resumes_to_the_same_weights(tiny_data, tmp_path):
    cfg = replace(FAST, epochs=3)
    train(tiny_data, tmp_path / "whole", TINY, cfg, progress=False)
    run = tmp_path / "killed"
    code = (f"from groundrt.train.trainer import TrainConfig, train; "
            f"from groundrt.model.config import PRESETS; "
            f"train({str(tiny_data)!r}, {str(run)!r}, PRESETS['tiny'], "
            f"TrainConfig(**{json.dumps(cfg.__dict__)}), progress=False)")
    process = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while not (run / STATE_FILE).is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    train(tiny_data, run, TINY, cfg, resume=True, progress=False)
    assert (run / MODEL_FILE).read_bytes() == (tmp_path / "whole" / MODEL_FILE).read_bytes()


def test_init_fine_tunes_from_another_runs_weights_config_and_tokenizer(tiny_data, tmp_path):
    from groundrt.model.checkpoint import TOKENIZER_FILE, load_model

    base = tmp_path / "base"
    train(tiny_data, base, TINY, replace(FAST, epochs=1), progress=False)
    # a zero learning rate keeps the weights (not BatchNorm's running statistics, which training
    # updates): the fine-tune starts exactly at the base's
    kept = tmp_path / "kept"
    train(tiny_data, kept, PRESETS["tiny-v2"], replace(FAST, epochs=1, lr=0.0), progress=False,
          init=base)
    assert load_model(kept).cfg == load_model(base).cfg  # --config is not used
    assert (kept / TOKENIZER_FILE).read_bytes() == (base / TOKENIZER_FILE).read_bytes()
    base_weights = dict(load_model(base).named_parameters())
    for name, tensor in load_model(kept).named_parameters():
        torch.testing.assert_close(tensor, base_weights[name], msg=name)
    tuned = tmp_path / "tuned"
    state = train(tiny_data, tuned, None, replace(FAST, epochs=1), progress=False, init=base)
    assert state["step"] == 12 // FAST.batch_size  # a fresh schedule, not the base's
    assert json.loads((tuned / "train_config.json").read_text())["init"] == str(base)
    assert any(not torch.equal(t, base_weights[n]) for n, t in load_model(tuned).named_parameters())


def test_resume_without_a_checkpoint_deletes_only_what_training_wrote(tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("my notes")  # not training's: --resume must not delete it
    (run / "train_config.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"no complete checkpoint .*notes\.txt"):
        train(tiny_data, run, TINY, replace(FAST, epochs=1), resume=True, progress=False)
    assert (run / "notes.txt").read_text() == "my notes"
    (run / "notes.txt").unlink()
    (run / MODEL_FILE).write_bytes(b"half a checkpoint")  # killed before its first checkpoint
    train(tiny_data, run, TINY, replace(FAST, epochs=1), resume=True, progress=False)
    assert (run / STATE_FILE).is_file() and (run / MODEL_FILE).stat().st_size > 100


def test_predict_writes_every_phrase_for_eval(tiny_data, tmp_path):
    from groundrt.metric import PredictionReader, evaluate
    from groundrt.runtime.cli import main

    train(tiny_data, tmp_path / "run", TINY, replace(FAST, epochs=1), progress=False)
    assert main(["predict", "--model", str(tmp_path / "run"), "--data", str(tiny_data),
                 "--split", "val", "--out", str(tmp_path / "pred.json"), "--quiet"]) == 0
    dataset = PNGDataset(tiny_data, "val")
    predictions = PredictionReader(tmp_path / "pred.json")
    assert predictions.keys() == {p.key for p in dataset.phrases}
    report = evaluate(dataset, predictions)
    assert report.missing_predictions == 0
    assert 0.0 <= report.group("overall").ar <= 1.0
