"""Training step time, float32 against bfloat16 autocast, side by side.

    python benchmarks/train_step.py --config teacher --batch-size 16 --runs 10 --threads 2

One step = forward, the grounding loss on random segment masks, backward and an AdamW update,
on random images and tokens of the preset's sizes (the time depends on shapes, not values).
The two precisions alternate step by step; medians after one warm-up step each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from groundrt.model.config import PRESETS
from groundrt.model.network import GroundingNet
from groundrt.train.batch import Batch
from groundrt.train.losses import grounding_loss


def random_batch(size: int, b: int, phrases: int = 6, segments: int = 8) -> Batch:
    g = torch.Generator().manual_seed(0)
    starts = torch.arange(phrases).repeat(b, 1)[..., None] * 4 + 1
    return Batch(
        image=torch.randn(b, 3, size, size, generator=g),
        tokens=torch.randint(4, 200, (b, 48), generator=g),
        token_padding=torch.zeros(b, 48, dtype=torch.bool),
        spans=torch.cat([starts, starts + 3], dim=-1),
        plural=torch.arange(phrases).repeat(b, 1) % 3 == 0,
        phrase_valid=torch.ones(b, phrases, dtype=torch.bool),
        segment_masks=[(torch.rand(segments, 128, 128, generator=g) > 0.8).float()
                       for _ in range(b)],
        phrase_members=[torch.eye(phrases, segments, dtype=torch.bool) for _ in range(b)],
        present=torch.ones(b, phrases, dtype=torch.bool))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="teacher", choices=sorted(PRESETS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = PRESETS[args.config]
    model = GroundingNet(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = random_batch(cfg.input_size, args.batch_size)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = model(batch.image, batch.tokens, batch.token_padding, batch.spans)
        loss, _ = grounding_loss(out.float(), batch, 128)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs + 1):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    fp32, bf16 = (statistics.median(times[k][1:]) for k in (False, True))
    print(f"{args.config}, batch {args.batch_size}, {args.threads} threads, {args.runs} steps "
          f"each (interleaved): float32 {fp32:.3f} s, bfloat16 autocast {bf16:.3f} s per step "
          f"(median); {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
