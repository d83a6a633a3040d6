"""End-to-end `Grounder.ground()` latency, per stage, side by side with the teacher in PyTorch.

    python benchmarks/grounder_latency.py --runs 100 --threads 2

A 640x480 sample image (a committed sample scene, resized), a caption with 8 noun phrases,
the caption's text cached (it is encoded once before timing). Rows: the shipped package
(default precision, native kernels), the same with numpy post-processing, and the teacher run in
PyTorch eager through the same Grounder code (`backend="torch"`). p50 / p90 / p99 per stage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from timing import percentile

import groundrt
from groundrt.data import PNGDataset
from groundrt.runtime.chunker import noun_phrases

ROOT = Path(__file__).resolve().parents[1]
CAPTION = ("In this picture we can see two red circles, a blue star, three green squares, "
           "a small yellow triangle, an orange ring, the sky, the grass and the road.")
CAPTION_PHRASES = noun_phrases(CAPTION)
STAGES = ("preprocess", "image", "affinity", "decode", "total")


def measure(grounder: groundrt.Grounder, image: np.ndarray, runs: int) -> dict[str, list[float]]:
    grounder.encode_text(CAPTION)  # cached, as in a stream with a fixed caption
    for _ in range(5):
        grounder.ground(image, CAPTION)
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for _ in range(runs):
        result = grounder.ground(image, CAPTION)
        for stage in STAGES:
            times[stage].append(result.timings_ms[stage])
    return {stage: sorted(values) for stage, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="package (default: the shipped one)")
    parser.add_argument("--teacher", default=str(ROOT / "runs" / "teacher"))
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    samples = PNGDataset(ROOT / "runtime" / "samples" / "png", "val")
    image = cv2.resize(samples.read_image(sorted(samples.panoptic.images)[0]), (640, 480))

    # Each row is built right before it is measured: the teacher row imports torch, whose
    # OpenMP threads must not sit beside the package rows (a deployment has no torch).
    rows = {
        "package, native kernels": lambda: groundrt.Grounder(
            args.model, threads=args.threads, native_kernels=True),
        "package, numpy post-processing": lambda: groundrt.Grounder(
            args.model, threads=args.threads, native_kernels=False),
        "teacher, PyTorch eager": lambda: groundrt.Grounder(
            args.teacher, backend="torch", threads=args.threads),
    }
    print(f"640x480 image, {len(CAPTION_PHRASES)} phrases (caption cached), {args.threads} "
          f"threads, median / p90 / p99 of {args.runs} runs, ms")
    print("| variant | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    medians = {}
    for name, build in rows.items():
        grounder = build()
        times = measure(grounder, image, args.runs)
        medians[name] = percentile(times["total"], 0.5)
        cells = [f"{percentile(t, 0.5):.2f} / {percentile(t, 0.9):.2f} / "
                 f"{percentile(t, 0.99):.2f}" for t in times.values()]
        print(f"| {name} ({grounder.backend.name}, {grounder.backend.precision}) | "
              + " | ".join(cells) + " |")
    base = medians["package, native kernels"]
    for name, value in medians.items():
        print(f"{name}: total p50 {value:.2f} ms = {value / base:.1f}x the package's")


if __name__ == "__main__":
    main()
