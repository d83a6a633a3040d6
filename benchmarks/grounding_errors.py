"""Where the things AR goes: no query holds the instance, or the phrase picks the wrong one.

    python benchmarks/grounding_errors.py --model runs/teacher --data data/synth

For every singular thing phrase of the val split, with the run in PyTorch at the loss
resolution (input / pixel stride), it compares two IoUs with the phrase's instance:
* the oracle: the best IoU any of the Q query masks reaches (the image path's ceiling);
* the picked query's IoU (top-1 affinity: what the model grounds).
Each phrase falls in one of three classes: grounded (picked IoU > 0.5), wrong pick (the
oracle > 0.5 but the picked query's IoU is not), not found (oracle <= 0.5): overall and per
phenomenon of the phrase (a phrase may have several).

A second table splits "not found" by what the best query's mask m does with the instance t:
* merged: m covers most of t (|m & t| > |t| / 2) but most of m lies elsewhere: the query holds
  t together with something else, "with things" when most of m outside t lies on other thing
  instances, "with stuff" when on stuff;
* partial: most of m lies on t, but m covers at most half of it;
* missed: neither (a stray or empty mask).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from query_masks import grounded_examples, iou, load_val_run

CLASSES = ("grounded", "wrong pick", "not found")
MISSES = ("merged with things", "merged with stuff", "partial", "missed")


def classify(picked: float, oracle: float) -> str:
    if picked > 0.5:
        return "grounded"
    return "wrong pick" if oracle > 0.5 else "not found"


def classify_miss(mask, target, things) -> str:
    """How the best query's mask fails an instance it does not hold (see the docstring);
    `things` [h, w] bool: the pixels of the image's thing segments."""
    inter = (mask & target).sum().item()
    if inter > target.sum().item() / 2:
        outside = mask & ~target
        on_things = (outside & things).sum().item() > outside.sum().item() / 2
        return "merged with things" if on_things else "merged with stuff"
    return "partial" if inter > mask.sum().item() / 2 else "missed"


def print_table(groups: dict[str, list[str]], classes: tuple[str, ...], title: str) -> None:
    print("| " + title + " | count | " + " | ".join(classes) + " |")
    print("|---|---|" + "---|" * len(classes))
    for group, labels in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])):
        shares = " | ".join(f"{labels.count(c) / len(labels):.1%}" for c in classes)
        print(f"| {group} | {len(labels)} | {shares} |")


def main() -> None:
    run = load_val_run(__doc__)
    by_key, examples = run.by_key, run.examples

    groups: dict[str, list[str]] = defaultdict(list)
    misses: dict[str, list[str]] = defaultdict(list)
    picked_iou, oracle_iou = [], []
    for g in grounded_examples(run.model, examples):
        picks = g.affinity.argmax(-1).tolist()
        image_id = g.example.image_id
        things = g.target([s for s in g.example.segment_ids
                           if run.dataset.panoptic.is_thing(image_id, int(s))])
        for phrase, pick in zip((by_key[k] for k in g.example.keys), picks, strict=True):
            if not phrase.is_thing or phrase.is_plural:
                continue
            target = g.target(phrase.segment_ids)
            best = g.query_masks[g.best_query(target)]
            oracle = iou(best, target)
            picked = iou(g.query_masks[pick], target)
            picked_iou.append(picked)
            oracle_iou.append(oracle)
            label = classify(picked, oracle)
            for group in ["all", *sorted(phrase.phenomena or ["none"])]:
                groups[group].append(label)
                if label == "not found":
                    misses[group].append(classify_miss(best, target, things))

    print(f"{run.name}: {len(picked_iou)} singular thing phrases in {len(examples)} val "
          f"narratives; mean IoU picked {np.mean(picked_iou):.3f}, oracle "
          f"{np.mean(oracle_iou):.3f}")
    print_table(groups, CLASSES, "phrases")
    print()
    print_table(misses, MISSES, "not found")


if __name__ == "__main__":
    main()
