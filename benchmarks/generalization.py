"""Generalization: a model on the held-out renderer's scenes beside the training renderer's val
split, through the public API only.

    groundrt data synth --renderer heldout --out data/heldout --split val --count 1000 --seed 4242
    python benchmarks/generalization.py --model runtime/models/default \\
        --heldout data/heldout --val data/synth --limit 300 --report benchmarks/reports

Every narrative of the first `--limit` images of each split is grounded twice with
`Grounder.ground`:

* caption: `ground(image, caption)`, the runtime finding the noun phrases itself (its chunker).
  Each annotated phrase takes the mask of the found phrase with the same char span, else of the
  found phrase overlapping it most, else an empty mask (IoU 0); how many were found exactly, by
  overlap or not at all is reported;
* phrases: `ground(image, phrases=[...])` with the annotated phrases' texts.

The table is the official metric's (AR overall, things, stuff, singulars, plurals, each
phenomenon, acc@0.5; `groundrt.metric.evaluate.score_masks`). `--model` is whatever `Grounder`
takes: a package folder, or a training run folder with `--backend torch`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from groundrt.data import PNGDataset
from groundrt.data.dataset import GroundedPhrase
from groundrt.data.layout import split_dirname
from groundrt.metric.evaluate import phrase_groups, score_masks
from groundrt.metric.predictions import PhraseKey
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.results import PhraseResult

MODES = ("caption", "phrases")
GROUPS = ("overall", "things", "stuff", "singulars", "plurals")


@dataclass
class Grounded:
    """One narrative's annotated phrases and the masks the API gave them."""

    image_id: int
    keys: list[PhraseKey]
    masks: list[np.ndarray]
    matches: list[str]  # caption mode: "exact", "overlap" or "missed" per phrase


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def match_phrases(annotated: list[GroundedPhrase], found: list[PhraseResult],
                  shape: tuple[int, int]) -> tuple[list[np.ndarray], list[str]]:
    """Per annotated phrase, the mask of the found phrase with its char span, else of the one
    overlapping it most, else an empty mask; and which of the three it was."""
    masks, matches = [], []
    for p in annotated:
        best, best_overlap = None, 0
        for r in found:
            if r.span is None:
                continue
            if tuple(r.span) == p.char_span:
                best, best_overlap = r, -1
                break
            n = _overlap(tuple(r.span), p.char_span)
            if n > best_overlap:
                best, best_overlap = r, n
        matches.append("exact" if best_overlap < 0 else "overlap" if best is not None
                       else "missed")
        masks.append(best.mask if best is not None else np.zeros(shape, bool))
    return masks, matches


def ground_split(grounder: Grounder, dataset: PNGDataset, mode: str, limit: int | None,
                 progress: bool = True) -> Iterator[Grounded]:
    """The first `limit` images' narratives grounded through `Grounder.ground` in `mode`."""
    narratives = list(dataset.phrases_by_narrative().items())
    images = sorted({phrases[0].image_id for _, phrases in narratives})[:limit]
    chosen = set(images)
    for index, phrases in tqdm([n for n in narratives if n[1][0].image_id in chosen],
                               desc=f"{dataset.name} {mode}", unit="narrative",
                               disable=not progress):
        image_id = phrases[0].image_id
        image = str(dataset.image_path(image_id))
        if mode == "caption":
            result = grounder.ground(image, dataset.narratives[index].caption)
            masks, matches = match_phrases(phrases, result.phrases, result.image_size)
        else:
            result = grounder.ground(image, phrases=[p.text for p in phrases])
            masks, matches = [r.mask for r in result.phrases], ["exact"] * len(phrases)
        yield Grounded(image_id, [p.key for p in phrases], masks, matches)


def score(grounder: Grounder, dataset: PNGDataset, mode: str, limit: int | None,
          progress: bool = True) -> dict:
    """The official table (AR per group and phenomenon, acc@0.5) of one split in one mode, with
    the phrase and image counts, the caption mode's phrase matching and the wall time."""
    start = time.perf_counter()
    grounded = list(ground_split(grounder, dataset, mode, limit, progress))
    seconds = time.perf_counter() - start
    ar = score_masks(dataset, ((g, g.masks) for g in grounded))
    matches = [m for g in grounded for m in g.matches]
    by_key = {p.key: p for p in dataset.phrases}
    counts: dict[str, int] = {}
    for g in grounded:
        for key in g.keys:
            for name in phrase_groups(by_key[key]):
                counts[name] = counts.get(name, 0) + 1
    return {"ar": ar, "phrases": counts, "images": len({g.image_id for g in grounded}),
            "matches": {m: matches.count(m) for m in ("exact", "overlap", "missed")},
            "seconds": round(seconds, 1)}


def rows(results: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown table: a row per group, the phrase counts of each split, a column per (split,
    mode)."""
    columns = [(split, mode) for split in results for mode in results[split]]
    phenomena = sorted({n for split in results for n in results[split][MODES[0]]["ar"]
                        if n.startswith("phenomenon:")})
    out = ["| group | phrases (" + " / ".join(results) + ") | "
           + " | ".join(f"{split}: {mode}" for split, mode in columns) + " |",
           "|---|---|" + "---|" * len(columns)]
    for name in [*GROUPS, *phenomena, "acc@0.5"]:
        counted = "overall" if name == "acc@0.5" else name
        counts = " / ".join(str(results[s][MODES[0]]["phrases"].get(counted, 0))
                            for s in results)
        cells = ["-" if (v := results[split][mode]["ar"].get(name)) is None else f"{v:.3f}"
                 for split, mode in columns]
        out.append(f"| {name} | {counts} | " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="package or run folder (default: shipped)")
    parser.add_argument("--backend", default="auto", help="Grounder backend (torch for a run)")
    parser.add_argument("--heldout", required=True, help="the held-out renderer's dataset")
    parser.add_argument("--val", required=True, help="the training renderer's dataset")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=300, help="images per split (all: 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", default=None,
                        help="folder for generalization.json / .md (default: print only)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    grounder = Grounder(args.model, backend=args.backend, threads=args.threads,
                        kernel_threads=args.threads)
    limit = args.limit or None
    results: dict[str, dict[str, dict]] = {}
    for name, root in (("val (training renderer)", args.val), ("held-out", args.heldout)):
        dataset = PNGDataset(root, args.split)
        results[name] = {mode: score(grounder, dataset, mode, limit, not args.quiet)
                         for mode in MODES}
    table = rows(results)
    matching = [f"caption mode, annotated phrases the runtime's chunker found in {split}: "
                + ", ".join(f"{k} {v}" for k, v in r["caption"]["matches"].items())
                for split, r in results.items()]
    matching.append("wall time (s, images): " + "; ".join(
        f"{split} {mode} {r[mode]['seconds']} ({r[mode]['images']})"
        for split, r in results.items() for mode in r))
    print("\n".join(table + [""] + matching))
    if args.report:
        folder = Path(args.report)
        folder.mkdir(parents=True, exist_ok=True)
        info = {"command": " ".join(["python", "benchmarks/generalization.py", *(
                    argv if argv is not None else sys.argv[1:])]),
                "model": str(grounder.folder), "backend": type(grounder.backend).__name__,
                "precision": getattr(grounder.backend, "precision", None),
                "threads": args.threads, "limit": limit, "heldout": args.heldout,
                "val": args.val, "split": args.split, "machine": platform.machine(),
                "python": sys.version.split()[0]}
        for name, root in (("heldout_info", args.heldout), ("val_info", args.val)):
            synth = Path(root) / f"synth_{split_dirname(args.split)}.json"
            if synth.is_file():
                info[name] = json.loads(synth.read_text())
        (folder / "generalization.json").write_text(json.dumps(
            {"info": info, "results": results}, indent=1))
        (folder / "generalization.md").write_text("\n".join(
            ["# Generalization: the held-out renderer beside the training renderer's val", "",
             "Written by benchmarks/generalization.py (its docstring says what is measured): "
             "AR of the official metric per group, each split grounded through "
             "`Grounder.ground` with the caption and with the explicit phrases.", "",
             "```", json.dumps(info, indent=1), "```", "", *table, "", *matching, ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
