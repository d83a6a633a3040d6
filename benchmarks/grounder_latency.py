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

import groundrt
from groundrt.runtime.bench import (
    DEFAULT_CAPTION,
    measure,
    percentile,
    sample_image,
    table_header,
    table_row,
)
from groundrt.runtime.chunker import noun_phrases

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="package (default: the shipped one)")
    parser.add_argument("--teacher", default=str(ROOT / "runs" / "teacher"))
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    image = sample_image(640, 480)

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
    print(f"640x480 image, {len(noun_phrases(DEFAULT_CAPTION))} phrases (caption cached), "
          f"{args.threads} threads, median / p90 / p99 of {args.runs} runs, ms")
    print(table_header())
    medians = {}
    for name, build in rows.items():
        grounder = build()
        times = measure(grounder, image, DEFAULT_CAPTION, args.runs)
        medians[name] = percentile(times["total"], 0.5)
        print(table_row(f"{name} ({grounder.backend.name}, {grounder.backend.precision})", times))
    base = medians["package, native kernels"]
    for name, value in medians.items():
        print(f"{name}: total p50 {value:.2f} ms = {value / base:.1f}x the package's")


if __name__ == "__main__":
    main()
