"""Where a network v2 package's things AR goes: what each singular thing's mask does wrong.

    python benchmarks/phrase_errors.py --model runtime/models/default --data data/synth-hn

Every singular thing phrase of the first `--limit` val narratives, grounded through `Grounder`
by its caption, falls in one class: grounded (IoU > 0.5), not found (the gate answered no, or
the mask is empty), or, for the rest, what the mask m does with the instance t
(`grounding_errors.classify_miss`): merged (m holds most of t and as much again elsewhere, on
other things or on stuff), partial (m lies on t but covers at most half of it), missed. The
table is printed twice where the package trims singulars (`grounding.singular_margin`): with
the whole phrase masks, then with the parts the network is surest of.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from grounding_errors import MISSES, classify_miss, print_table

from groundrt.data.dataset import PNGDataset
from groundrt.metric.average_recall import soft_iou
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.predict import predict_narratives

CLASSES = ("grounded", "not found", *MISSES)


def classify_answers(grounder: Grounder, dataset: PNGDataset, limit: int) -> dict[str, list]:
    by_key = {p.key: p for p in dataset.phrases}
    groups: dict[str, list[str]] = defaultdict(list)
    for prediction in predict_narratives(grounder, dataset, limit=limit):
        panoptic = dataset.read_panoptic(prediction.image_id)
        image_id = prediction.image_id
        things = np.isin(panoptic, [s for s in np.unique(panoptic)
                                    if s and dataset.panoptic.is_thing(image_id, int(s))])
        for key, mask, found in zip(prediction.keys, prediction.masks, prediction.found,
                                    strict=True):
            phrase = by_key[key]
            if not phrase.is_thing or phrase.is_plural:
                continue
            target = dataset.gt_mask(panoptic, phrase)
            if soft_iou(mask, target) > 0.5:
                label = "grounded"
            elif not found or not mask.any():
                label = "not found"
            else:
                label = classify_miss(mask, target, things)
            for group in ["all", *sorted(phrase.phenomena or ["none"])]:
                groups[group].append(label)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runtime/models/default",
                        help="a v2 package, or a run with --backend torch")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=300, help="val narratives")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    grounder = Grounder(args.model, backend=args.backend, threads=args.threads)
    dataset = PNGDataset(args.data, "val")
    margin = grounder.grounding.get("singular_margin")
    ways = [("whole masks", None)] + ([("surest parts", margin)] if margin is not None else [])
    for title, value in ways:
        grounder.grounding = {**grounder.grounding, "singular_margin": value}
        groups = classify_answers(grounder, dataset, args.limit)
        print(f"\n{args.model}, {title}: {len(groups['all'])} singular thing phrases in "
              f"{args.limit} val narratives\n")
        print_table(groups, CLASSES, "phrases")


if __name__ == "__main__":
    main()
