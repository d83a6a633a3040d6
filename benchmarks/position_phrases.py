"""Why position-named phrases fail: "the brown hexagon on the left" vs "... on the right".

    python benchmarks/position_phrases.py --model runs/teacher --data data/synth

A position group names two or three lookalike things by their order along one axis. For every
pair of such phrases in a val caption (the same words but the position) it measures, with the
run in PyTorch at the loss resolution (input / pixel stride):
* how often both phrases pick the same query (top-1 affinity);
* the cosine of the pair's phrase embeddings (does the text path tell them apart?);
* the IoU of the picked query's mask with the phrase's own instance and with its partner's;
* the oracle: the best IoU any query reaches with the phrase's instance (do the queries
  separate the lookalikes at all?), beside the same oracle for the other singular things of
  those captions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import torch.nn.functional as F
from query_masks import grounded_examples, iou, load_val_run

from groundrt.vocabulary import load_vocabulary


def position_pairs(phrases: list, positions: list[str]) -> Iterator[tuple[int, int]]:
    """Index pairs of position phrases whose words differ only by the position."""
    pattern = re.compile(" (" + "|".join(map(re.escape, positions)) + ")$")
    named = [i for i, p in enumerate(phrases) if "position" in p.phenomena]
    for a in named:
        for b in named:
            if a < b and pattern.sub("", phrases[a].text) == pattern.sub("", phrases[b].text):
                yield a, b


def main() -> None:
    run = load_val_run(__doc__)
    model, by_key = run.model, run.by_key
    positions = list(load_vocabulary().positions)
    examples = [e for e in run.examples
                if any("position" in by_key[k].phenomena for k in e.keys)]

    same_query, cosines, own, partner, oracle, other_oracle = [], [], [], [], [], []
    for g in grounded_examples(model, examples):
        phrases = [by_key[k] for k in g.example.keys]
        embed = F.normalize(g.phrase_embed, dim=-1)
        for phrase in phrases:
            if phrase.is_thing and not phrase.is_plural and "position" not in phrase.phenomena:
                other_oracle.append(g.oracle_iou(g.target(phrase.segment_ids)))
        for a, b in position_pairs(phrases, positions):
            picked = g.affinity[[a, b]].argmax(-1).tolist()
            same_query.append(picked[0] == picked[1])
            cosines.append(float(embed[a] @ embed[b]))
            for this, other, query in ((a, b, picked[0]), (b, a, picked[1])):
                mine = g.target(phrases[this].segment_ids)
                theirs = g.target(phrases[other].segment_ids)
                own.append(iou(g.query_masks[query], mine))
                partner.append(iou(g.query_masks[query], theirs))
                oracle.append(g.oracle_iou(mine))

    own_a, partner_a, oracle_a = map(np.array, (own, partner, oracle))
    print(f"{run.name}: {len(examples)} val narratives with position phrases, "
          f"{len(same_query)} pairs")
    print(f"| both phrases of a pair pick the same query | {np.mean(same_query):.1%} |")
    print(f"| cosine of the pair's phrase embeddings, median (min) | {np.median(cosines):.4f} "
          f"({np.min(cosines):.4f}) |")
    print(f"| picked query's mask: IoU with its own instance / the partner's | "
          f"{own_a.mean():.3f} / {partner_a.mean():.3f} |")
    print(f"| picked the own instance rather than the partner's | "
          f"{np.mean(own_a > partner_a):.1%} (partner's {np.mean(partner_a > own_a):.1%}) |")
    print(f"| oracle: best query's IoU with the instance, mean (share > 0.5) | "
          f"{oracle_a.mean():.3f} ({np.mean(oracle_a > 0.5):.1%}) |")
    other = np.array(other_oracle)
    print(f"| the same oracle for the {len(other)} other singular things | {other.mean():.3f} "
          f"({np.mean(other > 0.5):.1%}) |")


if __name__ == "__main__":
    main()
