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
  groundrt export distill --teacher runs/teacher --data data/synth --out runs/student
  groundrt export package --model runs/student --data data/synth --out packages/student
  groundrt export engine --package packages/student --precision int8
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
    from groundrt.train.trainer import TrainConfig, train

    state = train(args.data, args.out, _model_config(args.config),
                  _train_overrides(args, TrainConfig()), resume=args.resume,
                  progress=not args.quiet)
    _report_training(state, args.out)
    return 0


def _train_overrides(args: argparse.Namespace, defaults):
    """The TrainConfig `defaults` with the options given on the command line."""
    from dataclasses import replace

    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                   ("lr", args.lr), ("seed", args.seed),
                                   ("val_limit", args.val_limit)) if v is not None}
    return replace(defaults, **overrides)


def _model_config(name: str):
    from groundrt.model.config import PRESETS, ModelConfig

    return PRESETS[name] if name in PRESETS else ModelConfig.load(name)


def _report_training(state: dict, out: str) -> None:
    last = state["history"][-1] if state["history"] else {}
    print(f"trained {state['step']} steps in {state['elapsed_s'] / 60:.1f} min; "
          f"val AR {last.get('overall', float('nan')):.4f}; run in {out}")


def _cmd_export_distill(args: argparse.Namespace) -> int:
    from groundrt.export.distill import distill
    from groundrt.train.trainer import TrainConfig

    state = distill(args.teacher, args.data, args.out, _model_config(args.config),
                    _train_overrides(args, TrainConfig(epochs=3)), resume=args.resume,
                    progress=not args.quiet)
    _report_training(state, args.out)
    return 0


def _cmd_export_package(args: argparse.Namespace) -> int:
    from groundrt.export.package_builder import build_package

    manifest = build_package(args.model, args.data, args.out, name=args.name,
                             calibration_count=args.calibration_images,
                             eval_limit=args.eval_limit,
                             keep_float=tuple(filter(None, args.keep_float.split(","))),
                             progress=not args.quiet)
    print(f"wrote package {args.out}: " + ", ".join(
        f"{name} {entry['bytes'] / 1e6:.2f} MB" for name, entry in manifest["files"].items()))
    for precision, scores in manifest["accuracy"].items():
        print(f"  {precision:<9} " + "  ".join(
            f"{k} {scores[k]:.4f}" for k in ("overall", "things", "stuff", "singulars",
                                              "plurals") if k in scores))
    return 0


def _cmd_export_engine(args: argparse.Namespace) -> int:
    from groundrt.export.engine import build_package_engines

    records = build_package_engines(args.package, args.precision, args.workspace,
                                    max_batch=args.max_batch)
    for record in records:
        print(f"built {record['file']} (TensorRT {record['tensorrt']}, {record['gpu']}, "
              f"sm {record['compute_capability']})")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from groundrt.package import MANIFEST_FILE
    from groundrt.runtime import DEFAULT_MODEL

    args.model = args.model or str(DEFAULT_MODEL)
    if (Path(args.model) / MANIFEST_FILE).is_file():  # a model package: ONNX Runtime, no torch
        from groundrt.runtime.predict import predict_split_with_package

        path = predict_split_with_package(args.model, args.data, args.split, args.out,
                                          args.precision, progress=not args.quiet)
    else:
        from groundrt.model.inference import predict_split

        path = predict_split(args.model, args.data, args.split, args.out,
                             progress=not args.quiet)
    print(f"wrote predictions to {path}")
    return 0


def _add_split_arguments(parser: argparse.ArgumentParser, out_help: str | None = None) -> None:
    """--data and --split (and --out when `out_help` is given): the dataset a command reads."""
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", required=True, help="e.g. val or val2017")
    if out_help:
        parser.add_argument("--out", required=True, help=out_help)


def _add_training_arguments(parser: argparse.ArgumentParser, out_help: str,
                            default_config: str) -> None:
    parser.add_argument("--data", required=True, help="dataset folder with train and val splits")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--config", default=default_config,
                        help="a preset (teacher, student, tiny) or a model config JSON")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--val-limit", type=int, help="val narratives scored after each epoch")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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
    _add_training_arguments(tr, "run folder (checkpoints, tokenizer, logs)", "teacher")
    tr.set_defaults(handler=_cmd_train)

    export = commands.add_parser("export", help="distill, export to ONNX, quantize, package "
                                 "(needs the [export] extra)")
    export_commands = export.add_subparsers(dest="export_command", required=True,
                                            metavar="COMMAND")
    di = export_commands.add_parser(
        "distill", help="train a small student on a teacher's outputs and the ground truth",
        epilog="example: groundrt export distill --teacher runs/teacher --data data/synth "
               "--out runs/student")
    di.add_argument("--teacher", required=True, help="the teacher's run folder")
    _add_training_arguments(di, "the student's run folder", "student")
    di.set_defaults(handler=_cmd_export_distill)

    pk = export_commands.add_parser(
        "package", help="ONNX export, INT8 calibration and quantization, accuracy, manifest",
        epilog="example: groundrt export package --model runs/student --data data/synth "
               "--out packages/student")
    pk.add_argument("--model", required=True, help="run folder (a distilled student)")
    pk.add_argument("--data", required=True,
                    help="dataset folder: train split for calibration, val for accuracy")
    pk.add_argument("--out", required=True, help="package folder (created, must be empty)")
    pk.add_argument("--name", help="model name in the manifest (default: the run's folder)")
    pk.add_argument("--calibration-images", type=int, default=512,
                    help="training images for INT8 calibration (default 512)")
    pk.add_argument("--eval-limit", type=int, help="val narratives scored (default: all)")
    pk.add_argument("--keep-float", default="projections",
                    help="comma-separated float policies: projections, norms ('' = none)")
    pk.add_argument("--quiet", action="store_true", help="no progress bars")
    pk.set_defaults(handler=_cmd_export_package)

    en = export_commands.add_parser(
        "engine", help="build TensorRT engines into a package, on the target device "
        "(needs the [gpu] extra)",
        epilog="example: groundrt export engine --package packages/student --precision int8")
    en.add_argument("--package", required=True, help="package folder")
    en.add_argument("--precision", default="int8", choices=["int8", "fp16", "fp32"])
    en.add_argument("--workspace", type=int, default=1024, help="builder workspace, MB")
    en.add_argument("--max-batch", type=int, default=1, help="largest image batch")
    en.set_defaults(handler=_cmd_export_engine)

    pr = commands.add_parser(
        "predict", help="write a run's masks for a split in the prediction format",
        epilog="example: groundrt predict --model runs/teacher --data data/synth --split val "
               "--out pred/teacher.json")
    pr.add_argument("--model", help="a model package (ONNX Runtime) or a training run folder "
                    "(PyTorch); default: the shipped model package")
    pr.add_argument("--precision", choices=["fp32", "int8-cpu", "int8-trt"],
                    help="a package's image graph (default: the package's own default)")
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
