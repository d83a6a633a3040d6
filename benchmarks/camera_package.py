"""Accuracy of a package built for one camera aspect against the square package it crops.

    python benchmarks/camera_package.py --camera packages/student-4x3 --data data/synth

Both packages must come from the same run. AR per group on the val narratives whose
letterboxed image in the square lies inside the camera package's crop (the frames that package
is for), then on all val narratives (portrait images shrink further in a 4:3 input).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from groundrt.data import PNGDataset
from groundrt.model.config import ModelConfig
from groundrt.package import input_shape
from groundrt.preprocess import Letterbox
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.predict import score_split

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("overall", "things", "stuff", "singulars", "plurals", "acc@0.5")


def fits(shape: tuple[int, int], square: int, original: tuple[int, int]) -> bool:
    """The image's letterbox in the square lies inside the top-left `shape` crop."""
    inner = Letterbox((square, square), *original).inner
    return inner[0] <= shape[0] and inner[1] <= shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camera", required=True, help="package built with --input-shape")
    parser.add_argument("--square", default=str(ROOT / "runtime" / "models" / "default"),
                        help="the square package of the same run (default: the shipped one)")
    parser.add_argument("--data", default=str(ROOT / "data" / "synth"))
    parser.add_argument("--precision", default="int8-cpu")
    args = parser.parse_args()

    dataset = PNGDataset(args.data, "val")
    grounders = {name: Grounder(path, backend="onnxruntime", precision=args.precision)
                 for name, path in (("square", args.square), ("camera", args.camera))}
    configs = [ModelConfig.from_json(g.manifest["model"]["config"]) for g in grounders.values()]
    if configs[0] != configs[1]:
        raise SystemExit("the two packages come from different model configs")
    shape = input_shape(grounders["camera"].manifest)
    square = grounders["square"].manifest["input"]["size"]
    every = {p.image_id for p in dataset.phrases}
    subsets = {
        f"fit {shape[0]}x{shape[1]}": {i for i in every
                                       if fits(shape, square, dataset.image_size(i))},
        "all": every,
    }
    print(f"{args.precision}, val split: AR per group")
    print("| narratives | input | count | " + " | ".join(GROUPS) + " |")
    print("|---" * (3 + len(GROUPS)) + "|")
    for label, images in subsets.items():
        for g in grounders.values():
            scores = score_split(g, dataset, images=images)
            shape_text = "x".join(map(str, input_shape(g.manifest)))
            print(f"| {label} | {shape_text} | {scores['narratives']} | "
                  + " | ".join(f"{scores[k]:.4f}" for k in GROUPS) + " |")


if __name__ == "__main__":
    main()
