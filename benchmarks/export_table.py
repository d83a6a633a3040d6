"""The export table: accuracy, file size and image-path latency of every export variant, one run.

    python benchmarks/export_table.py --teacher runs/teacher --student runs/student \
        --package runtime/models/default --data data/synth --runs 100 --threads 2

Rows: teacher PyTorch FP32, student PyTorch FP32, student ONNX Runtime FP32, INT8-CPU (U8S8)
and INT8-TRT graph (S8S8, run by ONNX Runtime here), every row through `Grounder` (network v2
rows add target / no-target accuracy and instance AR). AR on the val split (`--limit` narratives,
default all); size = the files that variant loads; latency = median / p90 of `--runs` batch-1
calls of the image path after warm-up, `--threads` intra-op threads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from timing import median, percentile, timed

from groundrt.data import PNGDataset
from groundrt.model.checkpoint import MODEL_FILE, load_model
from groundrt.package import input_shape, read_manifest
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.predict import score_split

GROUPS = ("overall", "things", "stuff", "singulars", "plurals")


def torch_row(name: str, run: Path, dataset: PNGDataset, limit: int | None, runs: int) -> dict:
    model = load_model(run).eval()
    scores = score_split(Grounder(run, backend="torch"), dataset, limit)
    image = torch.randn(1, 3, model.cfg.input_size, model.cfg.input_size)
    with torch.no_grad():
        ms = timed(lambda: model.image_encoder(image), runs)
    return {"variant": name, **scores, "bytes": (run / MODEL_FILE).stat().st_size,
            "input": model.cfg.input_size, "p50_ms": median(ms), "p90_ms": percentile(ms, 0.9)}


def onnx_row(name: str, package: Path, precision: str, dataset: PNGDataset,
             limit: int | None, runs: int, threads: int) -> dict:
    manifest = read_manifest(package)
    grounder = Grounder(package, backend="onnxruntime", precision=precision, threads=threads)
    scores = score_split(grounder, dataset, limit)
    height, width = input_shape(manifest)
    image = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
    ms = timed(lambda: grounder.backend.image(image), runs)
    files = [manifest["graphs"]["image"][precision], manifest["graphs"]["text"]["fp32"]]
    size = sum(manifest["files"][f]["bytes"] for f in files)
    shape = f"{height}x{width}" if height != width else height
    return {"variant": name, **scores, "bytes": size, "input": shape,
            "p50_ms": median(ms), "p90_ms": percentile(ms, 0.9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, help="val narratives (default: all)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = PNGDataset(args.data, args.split)
    rows = [torch_row("teacher PyTorch FP32", args.teacher, dataset, args.limit, args.runs),
            torch_row("student PyTorch FP32", args.student, dataset, args.limit, args.runs)]
    for precision, name in (("fp32", "student ORT FP32"), ("int8-cpu", "student ORT INT8-CPU"),
                            ("int8-trt", "student ORT INT8-TRT graph")):
        rows.append(onnx_row(name, args.package, precision, dataset, args.limit, args.runs,
                             args.threads))
    print(f"| variant | input | {' | '.join(GROUPS)} | acc@0.5 | size MB | image p50 ms | p90 ms |")
    print("|---|---|" + "---|" * (len(GROUPS) + 4))
    for r in rows:
        print(f"| {r['variant']} | {r['input']} | "
              + " | ".join(f"{r[g]:.4f}" for g in GROUPS)
              + f" | {r['acc@0.5']:.4f} | {r['bytes'] / 1e6:.2f} | {r['p50_ms']:.2f} | "
              f"{r['p90_ms']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
