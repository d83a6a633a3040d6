"""Checkpoints: weights as safetensors, the model config as JSON (never pickle).

A run folder holds `model.safetensors`, `config.json` and `tokenizer.model`; a training run
adds `optimizer.safetensors` and `train_state.json` so that it can be resumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from groundrt.model.config import ConfigError, ModelConfig
from groundrt.model.network import GroundingNet

MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.model"
OPTIMIZER_FILE, STATE_FILE = "optimizer.safetensors", "train_state.json"
CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, OPTIMIZER_FILE, STATE_FILE)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)))


def save_model(run: Path, model: GroundingNet, step: int = 0) -> None:
    """Weights (with the training step they are from, as metadata) and config.json."""
    run.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic(run / MODEL_FILE, lambda tmp: save_file(tensors, str(tmp), {"step": str(step)}))
    write_json(run / CONFIG_FILE, model.cfg.to_json())


def load_model(run: str | Path, cfg: ModelConfig | None = None) -> GroundingNet:
    """The network of a run folder; `cfg` overrides its config.json (it must match the weights)."""
    run = Path(run)
    cfg = cfg or ModelConfig.load(run / CONFIG_FILE)
    if not (run / MODEL_FILE).is_file():
        raise ConfigError(f"checkpoint missing: {run / MODEL_FILE}")
    tensors = load_file(str(run / MODEL_FILE))
    model = GroundingNet(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in expected.keys() & tensors.keys()
                   if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(filter(None, [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            ", ".join(f"{k}: checkpoint {tuple(tensors[k].shape)} vs config "
                      f"{tuple(expected[k].shape)}" for k in wrong[:3]),
        ]))
        raise ConfigError(f"checkpoint {run / MODEL_FILE} does not match the model config "
                          f"({detail})")
    model.load_state_dict(tensors)
    return model


def save_optimizer(run: Path, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Adam moments as safetensors; step counters and hyper-parameters in train_state.json."""
    sd = optimizer.state_dict()
    tensors = {f"{index}.{name}": value.cpu().contiguous()
               for index, param_state in sd["state"].items()
               for name, value in param_state.items() if torch.is_tensor(value)}
    _atomic(run / OPTIMIZER_FILE,
            lambda tmp: save_file(tensors, str(tmp), {"step": str(state["step"])}))
    write_json(run / STATE_FILE, {**state, "param_groups": sd["param_groups"]})


def _saved_step(path: Path) -> str:
    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("step", "?")


def load_optimizer(run: Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restores the optimizer; returns the training state saved beside it."""
    state = json.loads((run / STATE_FILE).read_text())
    steps = {str(state["step"]), _saved_step(run / MODEL_FILE), _saved_step(run / OPTIMIZER_FILE)}
    if len(steps) != 1:
        raise ConfigError(f"checkpoint in {run} is torn (weights, optimizer and state are from "
                          f"steps {sorted(steps)}): the run was killed while saving; start over")
    per_param: dict[int, dict] = {}
    for key, value in load_file(str(run / OPTIMIZER_FILE)).items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state
