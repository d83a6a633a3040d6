"""A package of an untrained preset, for measuring an architecture's speed before training it.

    python benchmarks/untrained_package.py --preset student-v2 --data data/synth \
        --tokenizer runs/student/tokenizer.model --out packages/student-v2-untrained

Random weights (seed 0), calibrated on `--calibration-images` training images; its accuracy
means nothing (scored on 10 val narratives only, to keep the build short). Latency does not
depend on the weights: `benchmarks/grounder_latency.py --compare PKG` times it beside the
shipped package.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from groundrt.export.package_builder import build_package
from groundrt.model.checkpoint import TOKENIZER_FILE, save_model
from groundrt.model.config import PRESETS
from groundrt.model.network import GroundingNet
from groundrt.text import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="student-v2", choices=sorted(PRESETS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calibration-images", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    vocab = Tokenizer(args.tokenizer).vocab_size
    with tempfile.TemporaryDirectory() as run:
        shutil.copyfile(args.tokenizer, Path(run) / TOKENIZER_FILE)
        save_model(Path(run), GroundingNet(replace(PRESETS[args.preset], vocab_size=vocab)))
        build_package(run, args.data, args.out, name=f"{args.preset}-untrained",
                      calibration_count=args.calibration_images, eval_limit=10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
