"""Masks of two `groundrt run --json` outputs against each other: mean and worst IoU per phrase.

    python benchmarks/compare_runs.py pred/gpu.jsonl pred/cpu.jsonl --min-mean-iou 0.99

Frames and phrases are matched by frame number and phrase position (the same caption on both
sides). Exit status 1 when the mean IoU is below --min-mean-iou, or when the runs disagree on
frames or phrases. Used by benchmarks/gpu_checks.sh (GPU path vs CPU path).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from groundrt.metric.predictions import decode_rle


def read_frames(path: Path) -> dict[int, dict]:
    frames = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            frames[record["frame"]] = record
    return frames


def mask_ious(a: dict[int, dict], b: dict[int, dict]) -> list[float]:
    """IoU of every phrase mask of every frame (both empty: 1)."""
    if sorted(a) != sorted(b):
        raise ValueError(f"the runs hold different frames: {len(a)} and {len(b)}")
    ious = []
    for frame in sorted(a):
        left, right = a[frame]["phrases"], b[frame]["phrases"]
        if [p["text"] for p in left] != [p["text"] for p in right]:
            raise ValueError(f"frame {frame}: different phrases")
        for p, q in zip(left, right, strict=True):
            m, n = decode_rle(p["mask"]).astype(bool), decode_rle(q["mask"]).astype(bool)
            union = np.logical_or(m, n).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(m, n).sum() / union))
    return ious


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="JSONL of groundrt run (e.g. the GPU path)")
    parser.add_argument("reference", type=Path, help="JSONL of the reference run (the CPU)")
    parser.add_argument("--min-mean-iou", type=float, default=0.99)
    args = parser.parse_args(argv)
    try:
        ious = mask_ious(read_frames(args.run), read_frames(args.reference))
    except ValueError as exc:
        print(f"compare_runs: {exc}", file=sys.stderr)
        return 1
    mean = float(np.mean(ious)) if ious else 0.0
    print(f"{len(ious)} phrase masks: mean IoU {mean:.5f}, min {min(ious, default=0):.5f} "
          f"(pass: mean >= {args.min_mean_iou})")
    return 0 if mean >= args.min_mean_iou else 1


if __name__ == "__main__":
    sys.exit(main())
