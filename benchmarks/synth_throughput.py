"""Throughput of `groundrt data synth` (render + encode + write) and of `groundrt eval`.

    python benchmarks/synth_throughput.py --count 1000 --size 320 320 --workers 2

Prints images/s for generation and evaluation (ground truth as prediction) and the per-image
render time in one process, so numbers from one run can be compared side by side.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from groundrt.data import PNGDataset
from groundrt.metric import PredictionReader, evaluate, write_ground_truth_predictions
from groundrt.synth.dataset import synthesize
from groundrt.synth.scene import render_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("W", "H"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = tuple(args.size) if args.size else None

    render_ms = []
    for i in range(50):
        start = time.perf_counter()
        render_sample(args.seed, i, size)
        render_ms.append((time.perf_counter() - start) * 1e3)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synthesize(tmp, "val", args.count, args.seed, size, args.workers, progress=False)
        synth_s = time.perf_counter() - start
        start = time.perf_counter()
        dataset = PNGDataset(tmp, "val")
        pred = write_ground_truth_predictions(dataset, Path(tmp) / "gt.json")
        report = evaluate(dataset, PredictionReader(pred))
        eval_s = time.perf_counter() - start

    size_text = f"{size[0]}x{size[1]}" if size else "random 240..640"
    print(f"size {size_text}, {args.count} images, {args.workers} workers")
    print(f"render (1 process): median {statistics.median(render_ms):.1f} ms/image over 50")
    print(f"synth:  {synth_s:.1f} s  ({args.count / synth_s:.1f} images/s)")
    print(f"gt-pred + eval: {eval_s:.1f} s for {report.group('overall').phrases} phrases, "
          f"AR {report.group('overall').ar:.5f}")


if __name__ == "__main__":
    main()
