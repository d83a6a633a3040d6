"""What the presence score costs and buys: a network v2 run (or package) scored on a val split
through `Grounder`, with its presence gate (a phrase not found has an empty mask) and without
it (every phrase keeps its own mask), plus target / no-target accuracy and instance AR.

    python benchmarks/presence_gating.py --model runs/teacher-v2 --data data/synth --json out.json
    python benchmarks/presence_gating.py --model runs/teacher-v2 --data data/synth --calibrate

`--calibrate` gates by the presence weights and threshold chosen on the train split (as a
package's are) instead of the model's own head at 0.5.

The gap between the two ARs is what wrong "not found" answers cost the official metric; the
ungated AR is the masks' own quality.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from groundrt.data import PNGDataset
from groundrt.export.package_builder import calibrate_presence
from groundrt.package import MANIFEST_FILE
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.predict import score_split

GROUPS = ("overall", "things", "stuff", "singulars", "plurals", "phenomenon:position",
          "phenomenon:lookalike", "phenomenon:small", "phenomenon:occluded",
          "phenomenon:distractor", "acc@0.5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a v2 run folder or package")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, help="narratives and images (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibrate", action="store_true",
                        help="fit the presence gate (weights and threshold) on --data's train "
                             "split first, as `groundrt export package` does, and gate by it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    backend = "onnxruntime" if (Path(args.model) / MANIFEST_FILE).is_file() else "torch"
    grounder = Grounder(args.model, backend=backend, threads=args.threads)
    if not grounder.phrase_queries:
        raise SystemExit(f"{args.model} is a network v1 model: it has no presence score")
    dataset = PNGDataset(args.data, args.split)
    if args.calibrate:
        gate, how = calibrate_presence(grounder, PNGDataset(args.data, "train"))
        print(f"presence gate chosen on the train split: {gate} ({how})")
        grounder.grounding = {**grounder.grounding, **gate}
    gated = score_split(grounder, dataset, args.limit, progress=True)
    shipped = grounder.grounding["presence_threshold"]
    grounder.grounding = {**grounder.grounding, "presence_threshold": 0.0}  # everything found
    ungated = score_split(grounder, dataset, args.limit, progress=True)
    print(f"{args.model} ({grounder.backend.name}) on {dataset.name}, "
          f"{gated['narratives']} narratives")
    print("| | " + " | ".join(GROUPS) + " | target acc | no-target acc | instance AR |")
    print("|---" * (len(GROUPS) + 4) + "|")
    for name, report in (("presence gate", gated), ("no gate", ungated)):
        cells = [f"{report[g]:.4f}" if g in report else "-" for g in GROUPS]
        extras = [report.get(k) for k in ("target_acc", "no_target_acc", "instance_ar")]
        print(f"| {name} | " + " | ".join(cells) + " | "
              + " | ".join("-" if v is None else f"{v:.4f}" for v in extras) + " |")
    print(f"\nthe presence score's trade-off (gated above at {shipped}):")
    print("| presence threshold | target acc | no-target acc |\n|---|---|---|")
    for point in gated["presence_curve"]:
        print(f"| {point['threshold']:.1f} | {point['target_acc']:.4f} | "
              f"{point['no_target_acc']:.4f} |")
    print("no-target accuracy by what the absent phrase names: " + ", ".join(
        f"{k.split(':')[1]} {v:.4f}" for k, v in gated.items() if k.startswith("no_target_acc:")))
    if args.json:
        args.json.write_text(json.dumps({"gated": gated, "ungated": ungated}, indent=2))


if __name__ == "__main__":
    main()
