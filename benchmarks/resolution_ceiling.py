"""The AR a perfect network would reach at an input size and pixel stride: its masks' ceiling.

    python benchmarks/resolution_ceiling.py --data data/synth-hn --sizes 192,256 --strides 4,2

A network's phrase mask is a logit map at the input size / pixel stride, resized bilinearly to
the image and thresholded at 0 (`Letterbox.to_original`). The best such map a network could
output is the ground truth itself, letterboxed to the input (area interpolation), averaged
over each cell, resized back the same way and thresholded at one half (where the logit of those
fractions crosses 0). Its AR by group is the ceiling the mask resolution puts on the metric,
whatever the network learns: a target above it cannot be met at that resolution.
"""

from __future__ import annotations

import argparse

import numpy as np

from groundrt.data.dataset import PNGDataset
from groundrt.metric.average_recall import accuracy_at, average_recall, soft_iou
from groundrt.metric.evaluate import phrase_groups
from groundrt.preprocess import Letterbox

GROUPS = ("overall", "things", "stuff", "singulars", "plurals", "phenomenon:position",
          "phenomenon:small", "phenomenon:lookalike", "phenomenon:occluded",
          "phenomenon:distractor")


def ceiling_mask(target: np.ndarray, size: int, stride: int) -> np.ndarray:
    """[H, W] bool ground truth -> the [H, W] bool mask of its cell averages at `stride` on a
    `size` x `size` input."""
    box = Letterbox((size, size), *target.shape)
    square = box.apply(target.astype(np.float32), pad=0)
    cells = square.reshape(size // stride, stride, size // stride, stride).mean((1, 3))
    return box.to_original(cells, stride) > 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=300, help="images (0: all)")
    parser.add_argument("--sizes", default="192,256", help="input sizes (square)")
    parser.add_argument("--strides", default="4,2", help="pixel strides")
    args = parser.parse_args()
    dataset = PNGDataset(args.data, args.split)
    settings = [(int(size), int(stride)) for size in args.sizes.split(",")
                for stride in args.strides.split(",")]
    ious: dict[tuple[int, int], dict[str, list[float]]] = {s: {} for s in settings}
    images = list(dataset.phrases_by_image().items())[:args.limit or None]
    for image_id, phrases in images:
        panoptic = dataset.read_panoptic(image_id)
        for phrase in phrases:
            target = dataset.gt_mask(panoptic, phrase)
            for setting in settings:
                iou = soft_iou(ceiling_mask(target, *setting), target)
                for group in phrase_groups(phrase):
                    ious[setting].setdefault(group, []).append(iou)
    print(f"{dataset.name}, {len(images)} images: AR of the ground truth at each mask "
          "resolution\n")
    names = [g.removeprefix("phenomenon:") for g in GROUPS]
    print("| input | stride | grid | " + " | ".join(names) + " | acc@0.5 |")
    print("|---" * (len(GROUPS) + 4) + "|")
    for (size, stride), groups in ious.items():
        cells = [f"{average_recall(groups[g]):.4f}" if g in groups else "-" for g in GROUPS]
        print(f"| {size} | {stride} | {size // stride} | " + " | ".join(cells)
              + f" | {accuracy_at(groups['overall']):.4f} |")


if __name__ == "__main__":
    main()
