"""End-to-end `Grounder.ground()` latency, per stage, side by side with the teacher in PyTorch.

    python benchmarks/grounder_latency.py --runs 100 --threads 2
    python benchmarks/grounder_latency.py --runs 100 --threads 2 --camera-model packages/student-4x3

A 640x480 sample image (a committed sample scene, resized), a caption with 8 noun phrases,
the caption's text cached (it is encoded once before timing). Rows: the shipped package
(default precision, native kernels on the Grounder's default 2 threads), the same with the
kernels on 1 thread, the same with numpy post-processing, and the teacher run in
PyTorch eager through the same Grounder code (`backend="torch"`); with --camera-model, also a
package of the same run built for 4:3 frames (`groundrt export package --input-shape 144x192`).
p50 / p90 / p99 per stage.
The rows are measured in alternating blocks (--rounds), so that a shared machine's changes of
speed reach every row alike and their ratios hold (measured one after the other, the teacher's
ratio moved from 4.3x to 7.2x between two runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import groundrt
from groundrt.runtime.bench import (
    DEFAULT_CAPTION,
    measure_interleaved,
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
    parser.add_argument("--camera-model",
                        help="a package built with --input-shape for 4:3 frames: one more row")
    parser.add_argument("--compare", action="append", default=[],
                        help="another package timed beside the shipped one (repeatable)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10,
                        help="alternating blocks the runs are split into (default 10)")
    args = parser.parse_args()
    image = sample_image(640, 480)

    grounders = {
        "package, native kernels": groundrt.Grounder(
            args.model, threads=args.threads, native_kernels=True),
        "package, native kernels on 1 thread": groundrt.Grounder(
            args.model, threads=args.threads, native_kernels=True, kernel_threads=1),
        **({"4:3 package, native kernels": groundrt.Grounder(
            args.camera_model, threads=args.threads, native_kernels=True)}
           if args.camera_model else {}),
        **{f"{Path(p).name}, native kernels": groundrt.Grounder(
            p, threads=args.threads, native_kernels=True) for p in args.compare},
        "package, numpy post-processing": groundrt.Grounder(
            args.model, threads=args.threads, native_kernels=False),
        "teacher, PyTorch eager": groundrt.Grounder(
            args.teacher, backend="torch", threads=args.threads),
    }
    print(f"640x480 image, {len(noun_phrases(DEFAULT_CAPTION))} phrases (caption cached), "
          f"{args.threads} threads, median / p90 / p99 of {args.runs} runs in {args.rounds} "
          "alternating blocks, ms")
    print(table_header())
    times = measure_interleaved(grounders, image, DEFAULT_CAPTION, args.runs,
                                rounds=args.rounds)
    medians = {}
    for name, grounder in grounders.items():
        medians[name] = percentile(times[name]["total"], 0.5)
        shape = "x".join(map(str, grounder.input_shape))
        print(table_row(f"{name} ({grounder.backend.name}, {grounder.backend.precision}, "
                        f"{shape})", times[name]))
    base, teacher = medians["package, native kernels"], medians["teacher, PyTorch eager"]
    for name, value in medians.items():
        print(f"{name}: total p50 {value:.2f} ms = {value / base:.2f}x the package's; "
              f"the teacher's is {teacher / value:.1f}x this")


if __name__ == "__main__":
    main()
