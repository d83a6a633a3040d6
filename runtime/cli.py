"""The `groundrt` command line: one entry point, a sub-command per job.

Exit codes: 0 ok, 2 bad usage, 1 runtime error (one line; the traceback only with --debug).
Heavy modules are imported inside the handlers so that `groundrt --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """examples:
  groundrt data synth --out data/synth --split val --count 1000 --seed 20261125
  groundrt data gt-pred --data data/synth --split val --out pred/gt.json
  groundrt eval --pred pred/gt.json --data data/synth --split val --json report.json
  groundrt train --data data/synth --out runs/teacher --config teacher
  groundrt predict --model runs/teacher --data data/synth --split val --out pred/teacher.json
"""

# The optional extra that provides a module a command may need.
EXTRA_OF_MODULE = {"torch": "export", "onnx": "export", "onnxscript": "export",
                   "safetensors": "export", "scipy": "export", "tensorrt": "gpu", "pycuda": "gpu"}


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from groundrt.synth.dataset import synthesize

    layout = synthesize(args.out, args.split, args.count, args.seed,
                        tuple(args.size) if args.size else None, args.workers,
                        progress=not args.quiet)
    print(f"wrote {args.count} scenes of split {layout.name} to {layout.root}")
    return 0


def _cmd_data_gt_pred(args: argparse.Namespace) -> int:
    from groundrt.data import PNGDataset
    from groundrt.metric import write_ground_truth_predictions

    path = write_ground_truth_predictions(PNGDataset(args.data, args.split), args.out, args.soft)
    print(f"wrote the ground truth as predictions to {path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from groundrt.data import PNGDataset
    from groundrt.metric import PredictionReader, evaluate

    report = evaluate(PNGDataset(args.data, args.split), PredictionReader(args.pred),
                      progress=not args.quiet)
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from groundrt.model.config import PRESETS, ModelConfig
    from groundrt.train.trainer import TrainConfig, train

    model_cfg = PRESETS[args.config] if args.config in PRESETS else ModelConfig.load(args.config)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                   ("lr", args.lr), ("seed", args.seed),
                                   ("val_limit", args.val_limit)) if v is not None}
    state = train(args.data, args.out, model_cfg, replace(TrainConfig(), **overrides),
                  resume=args.resume, progress=not args.quiet)
    last = state["history"][-1] if state["history"] else {}
    print(f"trained {state['step']} steps in {state['elapsed_s'] / 60:.1f} min; "
          f"val AR {last.get('overall', float('nan')):.4f}; run in {args.out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from groundrt.model.inference import predict_split

    path = predict_split(args.model, args.data, args.split, args.out, progress=not args.quiet)
    print(f"wrote predictions to {path}")
    return 0


def _add_split_arguments(parser: argparse.ArgumentParser, out_help: str | None = None) -> None:
    """--data and --split (and --out when `out_help` is given): the dataset a command reads."""
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", required=True, help="e.g. val or val2017")
    if out_help:
        parser.add_argument("--out", required=True, help=out_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundrt", description="Panoptic Narrative Grounding: data, metric and runtime.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="generate and convert PNG-format data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    synth = data_commands.add_parser(
        "synth", help="render procedural narrative scenes in the PNG format",
        epilog="example: groundrt data synth --out data/synth --split train --count 20000 "
               "--seed 1", formatter_class=argparse.RawDescriptionHelpFormatter)
    synth.add_argument("--out", required=True, help="dataset folder (created)")
    synth.add_argument("--split", required=True, choices=["train", "val", "test"])
    synth.add_argument("--count", type=int, required=True, help="number of images")
    synth.add_argument("--seed", type=int, required=True,
                       help="scene i depends only on (seed, i)")
    synth.add_argument("--size", type=int, nargs=2, metavar=("W", "H"),
                       help="fixed image size (default: random, 240..640 px long side)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_cmd_data_synth)

    gt = data_commands.add_parser(
        "gt-pred", help="write a split's ground truth as a prediction file (checks the metric)",
        epilog="example: groundrt data gt-pred --data data/synth --split val --out gt.json")
    _add_split_arguments(gt, out_help="a .json file or a folder")
    gt.add_argument("--soft", action="store_true", help="soft-map PNGs instead of RLE")
    gt.set_defaults(handler=_cmd_data_gt_pred)

    tr = commands.add_parser(
        "train", help="train the grounding network (needs the [export] extra: torch)",
        epilog="example: groundrt train --data data/synth --out runs/teacher --config teacher",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("--data", required=True, help="dataset folder with train and val splits")
    tr.add_argument("--out", required=True, help="run folder (checkpoints, tokenizer, logs)")
    tr.add_argument("--config", default="teacher",
                    help="a preset (teacher, student, tiny) or a model config JSON")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--val-limit", type=int, help="val narratives scored after each epoch")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(handler=_cmd_train)

    pr = commands.add_parser(
        "predict", help="write a run's masks for a split in the prediction format",
        epilog="example: groundrt predict --model runs/teacher --data data/synth --split val "
               "--out pred/teacher.json")
    pr.add_argument("--model", required=True, help="run folder")
    _add_split_arguments(pr, out_help="a .json file or a folder")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(handler=_cmd_predict)

    ev = commands.add_parser(
        "eval", help="score predictions with the official PNG metric",
        epilog="example: groundrt eval --pred pred.json --data data/synth --split val")
    ev.add_argument("--pred", required=True, help="prediction file (or folder with "
                    "predictions.json); format in the README")
    _add_split_arguments(ev)
    ev.add_argument("--json", help="also write the report as JSON here")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=_cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    from groundrt.errors import GroundrtError

    args = build_parser().parse_args(argv)  # exits with 2 on bad usage
    try:
        return args.handler(args)
    except ModuleNotFoundError as exc:
        if args.debug:
            raise
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        hint = f": pip install 'groundrt[{extra}]'" if extra else ""
        print(f"groundrt: error: {exc.name} is not installed{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (GroundrtError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"groundrt: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
