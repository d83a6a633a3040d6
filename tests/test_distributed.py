"""DDP training: `torchrun --nproc-per-node 2 -m groundrt.train` (gloo, on the CPU) on a tiny set
against one process at the same global batch: the same steps, weights that moved alike; and
one process at another batch as the control that they could have differed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs the [export] extra")

from groundrt.model.checkpoint import load_model  # noqa: E402
from groundrt.model.config import PRESETS, ModelConfig  # noqa: E402
from groundrt.model.network import GroundingNet  # noqa: E402
from groundrt.synth.dataset import synthesize  # noqa: E402
from groundrt.train.trainer import TrainConfig, train  # noqa: E402

GLOBAL_BATCH = 4
# DDP is not bit-identical to one process (BatchNorm sees each rank's half of the batch, the
# losses are means over each rank's phrases): its update stays within this share of the update
TOLERANCE = 0.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flat(model: GroundingNet) -> torch.Tensor:
    return torch.cat([v.detach().float().reshape(-1) for k, v in model.state_dict().items()
                      if v.is_floating_point()])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, "train", 8, seed=11, size=(96, 72), workers=1, progress=False)
    synthesize(root, "val", 2, seed=12, size=(96, 72), workers=1, progress=False)
    return root


def one_process(data: Path, out: Path, batch: int) -> GroundingNet:
    cfg = TrainConfig(epochs=1, batch_size=batch, val_limit=2, threads=1)
    train(data, out, PRESETS["tiny"], cfg, progress=False)
    return load_model(out)


def test_two_processes_train_as_one_at_the_same_global_batch(data, tmp_path):
    single = one_process(data, tmp_path / "one", GLOBAL_BATCH)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "groundrt.train", "--data", str(data), "--out", str(tmp_path / "two"),
               "--config", "tiny", "--epochs", "1", "--batch-size", str(GLOBAL_BATCH),
               "--val-limit", "2", "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("trained 2 steps") == 1  # 8 examples / 4; rank 0 reports
    both = load_model(tmp_path / "two")
    # the same initial weights: one seed, and the run's own config (its tokenizer's vocab)
    torch.manual_seed(TrainConfig().seed)
    initial = flat(GroundingNet(replace(ModelConfig.load(tmp_path / "one" / "config.json"))))
    update = flat(single) - initial
    assert update.norm() > 0
    apart = (flat(both) - flat(single)).norm() / update.norm()
    assert apart < TOLERANCE, f"DDP's weights are {apart:.3f} of the update from one process's"
    control = one_process(data, tmp_path / "control", GLOBAL_BATCH // 2)  # 4 steps of 2
    assert (flat(control) - flat(single)).norm() / update.norm() > 2 * apart
