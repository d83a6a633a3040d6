"""Where the things AR goes: no query holds the instance, or the phrase picks the wrong one.

    python benchmarks/grounding_errors.py --model runs/teacher --data data/synth

For every singular thing phrase of the val split, with the run in PyTorch at the loss
resolution (input / pixel stride), it compares two IoUs with the phrase's instance:
* the oracle: the best IoU any of the Q query masks reaches (the image path's ceiling);
* the picked query's IoU (top-1 affinity: what the model grounds).
Each phrase falls in one of three classes: grounded (picked IoU > 0.5), wrong pick (the
oracle > 0.5 but the picked query's IoU is not), not found (oracle <= 0.5): overall and per
phenomenon of the phrase (a phrase may have several).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from query_masks import grounded_examples, iou, load_val_run

CLASSES = ("grounded", "wrong pick", "not found")


def classify(picked: float, oracle: float) -> str:
    if picked > 0.5:
        return "grounded"
    return "wrong pick" if oracle > 0.5 else "not found"


def main() -> None:
    run = load_val_run(__doc__)
    by_key, examples = run.by_key, run.examples

    groups: dict[str, list[str]] = defaultdict(list)
    picked_iou, oracle_iou = [], []
    for g in grounded_examples(run.model, examples):
        picks = g.affinity.argmax(-1).tolist()
        for phrase, pick in zip((by_key[k] for k in g.example.keys), picks, strict=True):
            if not phrase.is_thing or phrase.is_plural:
                continue
            target = g.target(phrase.segment_ids)
            oracle = g.oracle_iou(target)
            picked = iou(g.query_masks[pick], target)
            picked_iou.append(picked)
            oracle_iou.append(oracle)
            label = classify(picked, oracle)
            for group in ["all", *sorted(phrase.phenomena or ["none"])]:
                groups[group].append(label)

    print(f"{run.name}: {len(picked_iou)} singular thing phrases in {len(examples)} val "
          f"narratives; mean IoU picked {np.mean(picked_iou):.3f}, oracle "
          f"{np.mean(oracle_iou):.3f}")
    print("| phrases | count | " + " | ".join(CLASSES) + " |")
    print("|---|---|" + "---|" * len(CLASSES))
    for group, labels in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])):
        shares = " | ".join(f"{labels.count(c) / len(labels):.1%}" for c in CLASSES)
        print(f"| {group} | {len(labels)} | {shares} |")


if __name__ == "__main__":
    main()
