"""`groundrt train`: AdamW + cosine schedule, validation AR each epoch, resumable checkpoints."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from groundrt.data import PNGDataset
from groundrt.examples import Example, build_examples
from groundrt.metric.evaluate import score_masks
from groundrt.metric.presence import presence_accuracy
from groundrt.model.checkpoint import (
    CHECKPOINT_FILES,
    TOKENIZER_FILE,
    load_model,
    load_optimizer,
    save_model,
    save_optimizer,
    write_json,
)
from groundrt.model.config import PRESETS, ModelConfig
from groundrt.model.inference import predict_masks, predict_phrases
from groundrt.model.network import GroundingNet, GroundingOutput
from groundrt.text.tokenizer import Tokenizer, train_tokenizer
from groundrt.train.batch import Batch, collate
from groundrt.train.distributed import setup, teardown
from groundrt.train.losses import grounding_loss

# (output, batch, loss_size) -> (loss, float parts incl. "total"); distillation brings its own
Objective = Callable[[GroundingOutput, Batch, int], tuple[torch.Tensor, dict]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    seed: int = 0
    loss_size: int = 128  # masks are compared at this side (letterboxed square)
    val_limit: int = 300  # narratives of the val split scored after each epoch
    checkpoint_every: int = 200  # steps between checkpoints inside an epoch
    threads: int = 2
    device: str = "cpu"  # a torch device: "cuda" trains on a GPU (not bit-deterministic there)
    bf16: bool = False  # the forward pass under bfloat16 autocast (the losses stay float32)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def validate(model: GroundingNet, dataset: PNGDataset, examples: list[Example],
             probes: list[Example] | None = None) -> dict:
    """AR overall / things / stuff / singulars / plurals on `examples` (a val subset); v2 adds
    target accuracy (grounded phrases found in their captions) and no-target accuracy (absent
    phrases answered not found in `probes`, the same images as phrase lists)."""
    if not model.cfg.phrase_queries:
        return score_masks(dataset, predict_masks(model, examples))
    predictions = list(predict_phrases(model, examples))
    report = score_masks(dataset, ((e, p.masks[:len(e.keys)]) for e, p in predictions))
    target = presence_accuracy(np.concatenate([p.found for _, p in predictions]),
                               np.concatenate([e.present_mask for e, _ in predictions]))
    report["target_acc"] = target["target_acc"]
    if probes:
        found, present = zip(*((p.found, e.present_mask)
                               for e, p in predict_phrases(model, probes)), strict=True)
        report["no_target_acc"] = presence_accuracy(np.concatenate(found),
                                                    np.concatenate(present))["no_target_acc"]
    return report


def prepare_tokenizer(run: Path, train_set: PNGDataset, source: Path | None) -> Tokenizer:
    """The run's tokenizer: kept when resuming, else copied from `source` or trained."""
    path = run / TOKENIZER_FILE
    if not path.is_file():
        if source is not None:
            shutil.copyfile(source, path)
        else:
            train_tokenizer((n.caption for n in train_set.narratives), run)
    return Tokenizer(path)


def train(data: str | Path, run: str | Path, model_cfg: ModelConfig | None = None,
          cfg: TrainConfig = TrainConfig(), resume: bool = False, progress: bool = True,
          objective: Objective | None = None, teacher_size: int | None = None,
          tokenizer: Path | None = None, extra_config: dict | None = None,
          init: str | Path | None = None) -> dict:
    """Trains a model on `data`'s train split, validating on its val split; returns the history.

    Distillation passes its `objective`, the teacher's input size (the examples then carry the
    teacher's letterboxed images), the teacher's `tokenizer` file and `extra_config` to record.
    `init` fine-tunes: the network, its config and its tokenizer come from that run folder's
    checkpoint, with a fresh optimizer and schedule (`model_cfg` is then not used).
    """
    objective = objective or grounding_loss
    run = Path(run)
    # under torchrun: this process's rank (rank 0 writes the run folder) and device
    ranks, device = setup(cfg.device, cfg.batch_size)
    # A run killed before its first complete checkpoint holds only some of the files.
    resuming = resume and all((run / name).is_file() for name in CHECKPOINT_FILES)
    if ranks.main and run.exists() and any(run.iterdir()) and not resuming:
        if resume:  # no complete checkpoint: start over, removing only what training writes
            ours = {*CHECKPOINT_FILES, "train_config.json"}
            ours |= {f"{name}.tmp" for name in ours}
            others = sorted(p.name for p in run.iterdir() if p.name not in ours)
            if others:
                raise FileExistsError(
                    f"run folder {run} has no complete checkpoint to resume and holds files "
                    f"training did not write ({', '.join(others[:5])}): move them or choose "
                    "another --out")
            for name in ours:
                (run / name).unlink(missing_ok=True)
        else:
            raise FileExistsError(f"run folder {run} is not empty: pass --resume to continue "
                                  "it or choose another --out")
    if ranks.main:
        run.mkdir(parents=True, exist_ok=True)
    if init is not None:
        init = Path(init)
        if tokenizer is not None and (init / TOKENIZER_FILE).read_bytes() != tokenizer.read_bytes():
            raise ValueError(f"--init {init} was trained with another tokenizer than {tokenizer}")
        tokenizer = init / TOKENIZER_FILE
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    train_set, val_set = PNGDataset(data, "train"), PNGDataset(data, "val")
    if ranks.main:
        tokenizer = prepare_tokenizer(run, train_set, tokenizer)
    ranks.barrier()  # the others read the tokenizer rank 0 wrote
    if not ranks.main:
        tokenizer = prepare_tokenizer(run, train_set, None)
    if resuming or init is not None:
        model = load_model(run if resuming else init)
    else:
        base = model_cfg or PRESETS["teacher"]
        model = GroundingNet(replace(base, vocab_size=tokenizer.vocab_size))
    model.to(device)
    forward = ranks.wrap(model, device)
    # v2 learns the presence score from absent phrases added to the training examples
    absent = "mixed" if model.cfg.phrase_queries else "none"
    train_examples = build_examples(train_set, tokenizer, model.cfg, progress, teacher_size,
                                    absent=absent, seed=cfg.seed)
    val_examples = build_examples(val_set, tokenizer, model.cfg, progress)
    chosen = np.random.default_rng(cfg.seed).permutation(len(val_examples))[:cfg.val_limit]
    val_examples = [val_examples[i] for i in sorted(chosen)]
    probes = None
    if model.cfg.phrase_queries:
        probes = build_examples(val_set, tokenizer, model.cfg, progress, absent="list",
                                seed=cfg.seed)
        probes = [probes[i] for i in sorted(chosen)]

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = len(train_examples) // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs
    state = {"epoch": 0, "step_in_epoch": 0, "step": 0, "history": [], "elapsed_s": 0.0,
             "train_config": asdict(cfg)}
    if resuming:
        state = load_optimizer(run, optimizer)
    if ranks.main:
        write_json(run / "train_config.json", {**asdict(cfg), **(extra_config or {}),
                                               **({"init": str(init)} if init else {})})

    def checkpoint() -> None:
        if ranks.main:
            save_optimizer(run, optimizer, state)
            save_model(run, model, state["step"])

    started = time.perf_counter() - state["elapsed_s"]
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_examples))
        model.train()
        bar = tqdm(range(state["step_in_epoch"], steps_per_epoch), desc=f"epoch {epoch + 1}/"
                   f"{cfg.epochs}", unit="step", disable=not progress or not ranks.main)
        tick, parts = time.perf_counter(), {}
        for k in bar:
            torch.manual_seed(cfg.seed * 1_000_003 + state["step"])
            batch = collate([train_examples[j] for j in ranks.shard(
                order[k * cfg.batch_size:(k + 1) * cfg.batch_size])], cfg.loss_size).to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state["step"], total_steps, cfg)
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=cfg.bf16):
                out = forward(batch.image, batch.tokens, batch.token_padding, batch.spans)
            loss, parts = objective(out.float(), batch, cfg.loss_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            state["step"] += 1
            state["step_in_epoch"] = k + 1
            now = time.perf_counter()
            bar.set_postfix(refresh=False, loss=f"{parts['total']:.3f}",
                            img_s=f"{cfg.batch_size / (now - tick):.1f}")
            tick = now
            if state["step"] % cfg.checkpoint_every == 0:
                state["elapsed_s"] = time.perf_counter() - started
                checkpoint()
        bar.close()
        if ranks.main:  # the others wait at the barrier below
            metrics = validate(model, val_set, val_examples, probes)
            state["history"].append({"epoch": epoch + 1, "step": state["step"],
                                     "elapsed_s": round(time.perf_counter() - started, 1),
                                     "last_loss": parts, **metrics})
            print(json.dumps(state["history"][-1]), flush=True)
        state.update(epoch=epoch + 1, step_in_epoch=0,
                     elapsed_s=time.perf_counter() - started)
        checkpoint()
        ranks.barrier()
    teardown(ranks)
    return state
