"""The `groundrt` command line: one entry point, a sub-command per job.

Exit codes: 0 ok, 2 bad usage, 1 runtime error (one line; the traceback only with --debug).
`groundrt run`: 0 when it processed at least one frame and no error stopped it, 1 when it
processed nothing or an error stopped it (the summary line comes first), 130 on Ctrl-C.
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
  groundrt run --source video.mp4 --caption "A red star on the grass." --save o.mp4 --json o.jsonl
  groundrt run --source 0 --phrases "a red circle; the grass" --show
  groundrt run --source 0 --caption "A red star on the grass." --foxglove --mcap run.mcap
  groundrt ros --ros-args -p caption:="A red star on the grass." -r image:=/camera/image_raw
  groundrt export triton --model runtime/models/default --out triton/repo --device gpu
  groundrt serve --model runtime/models/default --http-port 8000 --grpc-port 8001
  groundrt run --source video.mp4 --caption "A red star." --server grpc://localhost:8001
  groundrt bench --runs 100
  groundrt info
"""

class UsageError(Exception):
    """Bad usage found after parsing (exit code 2, like argparse's own errors)."""


# The optional extra that provides a module a command may need.
EXTRA_OF_MODULE = {"torch": "export", "onnx": "export", "onnxscript": "export",
                   "safetensors": "export", "scipy": "export", "tensorrt": "gpu", "pycuda": "gpu",
                   "pytriton": "serve", "tritonclient": "serve", "foxglove": "robot",
                   "mcap": "robot", "mcap_ros2": "robot", "rosbags": "robot"}


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from groundrt.synth.dataset import synthesize

    layout = synthesize(args.out, args.split, args.count, args.seed,
                        tuple(args.size) if args.size else None, args.workers,
                        progress=not args.quiet, renderer=args.renderer)
    print(f"wrote {args.count} scenes of split {layout.name} ({args.renderer} renderer) "
          f"to {layout.root}")
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
                  progress=not args.quiet, init=args.init)
    _report_training(state, args.out)
    return 0


def _train_overrides(args: argparse.Namespace, defaults):
    """The TrainConfig `defaults` with the options given on the command line."""
    from dataclasses import replace

    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                   ("lr", args.lr), ("seed", args.seed),
                                   ("val_limit", args.val_limit), ("device", args.device),
                                   ("bf16", args.bf16), ("threads", args.threads))
                 if v is not None}
    return replace(defaults, **overrides)


def _model_config(name: str):
    from groundrt.model.config import PRESETS, ModelConfig

    return PRESETS[name] if name in PRESETS else ModelConfig.load(name)


def _report_training(state: dict, out: str) -> None:
    import os

    if int(os.environ.get("RANK", "0")):  # torchrun: rank 0 reports (it validated)
        return
    last = state["history"][-1] if state["history"] else {}
    print(f"trained {state['step']} steps in {state['elapsed_s'] / 60:.1f} min; "
          f"val AR {last.get('overall', float('nan')):.4f}; run in {out}")


def _cmd_export_distill(args: argparse.Namespace) -> int:
    from groundrt.export.distill import distill
    from groundrt.train.trainer import TrainConfig

    state = distill(args.teacher, args.data, args.out,
                    _model_config(args.config) if args.config else None,
                    _train_overrides(args, TrainConfig(epochs=3)), resume=args.resume,
                    progress=not args.quiet, init=args.init)
    _report_training(state, args.out)
    return 0


def _cmd_export_package(args: argparse.Namespace) -> int:
    from groundrt.export.package_builder import build_package
    from groundrt.export.quantize import DEFAULT_FLOAT_POLICIES

    keep_float = (DEFAULT_FLOAT_POLICIES if args.keep_float is None
                  else tuple(filter(None, args.keep_float.split(","))))
    manifest = build_package(args.model, args.data, args.out, name=args.name,
                             calibration_count=args.calibration_images,
                             eval_limit=args.eval_limit,
                             keep_float=keep_float, input_shape=args.input_shape,
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
    from groundrt.runtime.info import format_engine

    records = build_package_engines(args.package, args.precision, args.workspace,
                                    max_batch=args.max_batch)
    for record in records:
        print(f"built {format_engine(record)}, checked against {record['checked_against']}")
    return 0


def _cmd_export_triton(args: argparse.Namespace) -> int:
    from groundrt.export.triton_repo import RepoOptions, export_triton_repo

    options = RepoOptions(device=args.device, instances=args.instances,
                          precision=args.precision, tensorrt=not args.no_tensorrt,
                          max_batch=args.max_batch)
    configs = export_triton_repo(args.model, args.out, options)
    print(f"wrote Triton model repository {args.out}: " + ", ".join(configs))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from groundrt.runtime.serve import ServeOptions, serve

    serve(ServeOptions(model=args.model, http_port=args.http_port, grpc_port=args.grpc_port,
                       metrics_port=args.metrics_port, address=args.address,
                       batching=not args.no_batching, max_batch=args.max_batch,
                       instances=args.instances, threads=args.threads,
                       precision=args.precision))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from groundrt.package import MANIFEST_FILE
    from groundrt.runtime import DEFAULT_MODEL
    from groundrt.runtime.grounder import Grounder
    from groundrt.runtime.predict import predict_split

    args.model = args.model or str(DEFAULT_MODEL)
    # a model package runs on ONNX Runtime (no torch); a training run folder on PyTorch
    backend = "onnxruntime" if (Path(args.model) / MANIFEST_FILE).is_file() else "torch"
    grounder = Grounder(args.model, backend=backend, precision=args.precision)
    path = predict_split(grounder, args.data, args.split, args.out, progress=not args.quiet)
    print(f"wrote predictions to {path}")
    return 0


def _cmd_data_video(args: argparse.Namespace) -> int:
    from groundrt.synth.video import SAMPLE_CAPTION, write_video

    path = write_video(args.out, args.seconds, args.fps, tuple(args.size), args.seed)
    print(f"wrote {path}; its caption: {SAMPLE_CAPTION}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from groundrt.runtime.captions import Prompt, read_caption_file
    from groundrt.runtime.images import DEFAULT_MAX_PIXELS
    from groundrt.runtime.sinks import (
        VIDEO_FOURCC,
        ImageFolderSink,
        JsonlSink,
        VideoSink,
        WindowSink,
    )
    from groundrt.runtime.sources import Reconnect, open_source

    if args.caption is None and args.phrases is None:
        if not args.caption_file:
            raise UsageError("give --caption, --phrases or --caption-file")
        args.caption = read_caption_file(args.caption_file)
    if args.mcap_profile and not args.mcap:
        raise UsageError("--mcap-profile needs --mcap OUT.mcap")
    prompt = Prompt.parse(args.caption, args.phrases)
    args.max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    # Outputs first: an unwritable path fails before the model loads or a frame is read (an
    # existing output file is replaced only once a frame has been written: runtime/sinks.py).
    sinks = []
    try:
        if args.json:
            sinks.append(JsonlSink(args.json))
        save_video = args.save and Path(args.save).suffix.lower() in VIDEO_FOURCC
        if args.save and not save_video:
            sinks.append(ImageFolderSink(args.save))
        if args.show:
            sinks.append(WindowSink())
        if args.mcap:
            from groundrt.runtime.mcap_sink import McapSink

            sinks.append(McapSink(args.mcap, args.mcap_profile or "foxglove"))
        if args.foxglove is not None:
            from groundrt.runtime.foxglove_sink import FoxgloveServerSink

            sink = FoxgloveServerSink(args.foxglove, args.foxglove_host)
            sinks.append(sink)
            print(f"Foxglove live view: open connection {sink.url}", file=sys.stderr)
        source = open_source(args.source, args.vid_stride, Reconnect(args.reconnect_attempts),
                             max_pixels=args.max_pixels)
        try:
            _check_outputs(args, source, sinks)
            if save_video:
                sinks.append(VideoSink(args.save, (source.fps or 10.0) / args.vid_stride))
            return _stream(args, prompt, source, sinks)
        finally:
            source.close()
    finally:
        for sink in sinks:  # a stream closes its sinks; this closes them when none ran
            sink.close()


def _check_outputs(args: argparse.Namespace, source, sinks: list) -> None:
    """OutputError when an output would overwrite an input (a source file, the caption file)."""
    from groundrt.runtime.sinks import ImageFolderSink, check_not_inputs

    inputs = list(getattr(source, "paths", []))
    if Path(args.source).is_file():
        inputs.append(Path(args.source))
    if args.caption_file:
        inputs.append(Path(args.caption_file))
    outputs = [Path(p) for p in (args.json, args.save, args.mcap) if p]
    for sink in sinks:
        if isinstance(sink, ImageFolderSink):
            outputs += [sink.output_path(p.name, 0) for p in getattr(source, "paths", [])]
    check_not_inputs(outputs, inputs)


def _stream(args: argparse.Namespace, prompt, source, sinks: list) -> int:
    from tqdm import tqdm

    from groundrt.runtime.captions import CaptionSource
    from groundrt.runtime.grounder import Grounder
    from groundrt.runtime.stream import Stream

    if args.server:
        from groundrt.runtime.client import ServerGrounder

        grounder = ServerGrounder(args.server)
    else:
        grounder = Grounder(args.model, backend=args.backend, precision=args.precision,
                            threads=args.threads, kernel_threads=args.kernel_threads,
                            device=args.device, ort_provider=args.ort_provider,
                            max_pixels=args.max_pixels)
    grounder.encode_text(prompt.caption, prompt.phrases)  # a bad caption fails here, not later
    captions = CaptionSource(prompt, lambda p: grounder.encode_text(p.caption, p.phrases),
                             watch=args.caption_file,
                             stdin=sys.stdin.buffer if args.stdin_captions else None)
    total = source.total if args.max_frames is None else min(source.total or args.max_frames,
                                                             args.max_frames)
    live = True if args.live else False if args.lossless else None
    with tqdm(total=total, unit="frame", disable=args.quiet, desc=source.name) as bar:
        stream = Stream(grounder, source, captions, sinks, live=live, max_frames=args.max_frames,
                        progress=lambda: bar.update(1))
        print(f"grounding {source.kind} {source.name} ({'live' if stream.live else 'lossless'}"
              f", {grounder.backend.name} {grounder.backend.precision}): {prompt}",
              file=sys.stderr)
        report = stream.run()
    print(report.summary())
    if report.interrupted:
        return 130
    if report.error:
        print(f"groundrt: error: {report.error}", file=sys.stderr)
        return 1
    if not report.processed:
        print(f"groundrt: error: no frame of {source.name} was processed "
              f"({report.read} read)", file=sys.stderr)
        return 1
    return 0


def _cmd_ros(args: argparse.Namespace) -> int:
    from groundrt.ros.node import main as node_main

    return node_main(args.ros_args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from groundrt.runtime.bench import BenchOptions, run_bench
    from groundrt.runtime.bench_report import format_tables, write_json, write_report

    options = BenchOptions(
        model=args.model, backends=args.backend or ["auto"],
        precisions=args.precision or [None], device=args.device,
        ort_provider=args.ort_provider, scenarios=args.scenario or ["singlestream"],
        size=_size(args.size), phrases=args.phrases, caption=args.caption, image=args.image,
        threads=args.threads, kernel_threads=args.kernel_threads, runs=args.runs,
        warmup=args.warmup, rounds=args.rounds, streams=args.streams, batch=args.batch,
        baseline=args.baseline, teacher=args.teacher, numpy_baseline=not args.no_numpy_baseline,
        data=args.data, split=args.split, eval_limit=args.eval_limit,
        roofline=not args.no_roofline)
    report = run_bench(options, log=lambda line: print(line, file=sys.stderr))
    print(format_tables(report))
    if args.json:
        write_json(report, args.json)
    if args.report:
        import shlex

        command = "groundrt " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
        print(f"wrote {write_report(report, args.report, command)}")
    return 0 if any(row["status"] == "ok" for row in report["rows"]) else 1


def _size(values: list[str]) -> tuple[int, int]:
    """['640x480'] or ['640', '480'] -> (640, 480): width x height."""
    try:
        width, height = (int(v) for v in "x".join(values).lower().split("x"))
    except ValueError:
        raise UsageError(f"--size: expected WIDTHxHEIGHT such as 640x480, not "
                         f"{' '.join(values)!r}") from None
    return width, height


def _cmd_info(args: argparse.Namespace) -> int:
    from groundrt.runtime import DEFAULT_MODEL
    from groundrt.runtime.info import environment, format_info, package_info

    package, env = package_info(args.model or DEFAULT_MODEL), environment()
    print(json.dumps({"package": package, "environment": env}, indent=2) if args.json
          else format_info(package, env))
    return 0


def _device(text: str) -> str:
    from groundrt.runtime.backends import parse_device

    try:
        parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _input_shape(text: str) -> tuple[int, int]:
    """'144x192' -> (144, 192): height x width."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH such as 144x192, not {text!r}") from None
    return height, width


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
                        help="a preset (teacher, student, tiny; network v2: teacher-v2, "
                             "student-v2, tiny-v2) or a model config JSON"
                             + ("" if default_config else " (default: the student preset of "
                                "the teacher's network version)"))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--val-limit", type=int, help="val narratives scored after each epoch")
    parser.add_argument("--device", help="torch device, e.g. cuda or cuda:1 (default: cpu)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default 2; 1 when the run shares the machine, "
                             "e.g. pinned to one core with taskset)")
    parser.add_argument("--bf16", action="store_true", default=None,
                        help="bfloat16 autocast for the forward pass (faster on CPUs with AMX "
                             "and on GPUs; the losses stay float32)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--init", metavar="RUN",
                        help="fine-tune: start from RUN's weights, config and tokenizer, with a "
                             "fresh optimizer and schedule (--config is then not used)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_model_arguments(parser: argparse.ArgumentParser, threads: int, threads_help: str,
                         kernel_threads: int, kernel_threads_help: str,
                         repeatable: bool = False) -> None:
    """--model, --backend, --precision, --device, --ort-provider, --threads, --kernel-threads:
    the Grounder a command builds (`repeatable`: several --backend and --precision, a list
    each, None when not given)."""
    parser.add_argument("--model", help="model package (default: the shipped one)")
    many = {"action": "append"} if repeatable else {"default": "auto"}
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt", "torch"],
                        **many, help="repeatable: one row each" if repeatable else None)
    parser.add_argument("--precision", choices=["fp32", "int8-cpu", "int8-trt"],
                        action="append" if repeatable else "store",
                        help="the image graph (default: the package's)"
                        + ("; repeatable: one row each" if repeatable else ""))
    parser.add_argument("--device", default="cpu", type=_device,
                        help="cpu, cuda or cuda:N: ONNX Runtime's CUDA execution provider "
                        "(onnxruntime-gpu) and the CUDA mask kernels (default: cpu)")
    parser.add_argument("--ort-provider", choices=["cuda", "tensorrt"],
                        help="on a GPU device: ONNX Runtime's CUDA provider (default) or its "
                        "TensorRT provider")
    parser.add_argument("--threads", type=int, default=threads, help=threads_help)
    parser.add_argument("--kernel-threads", type=int, default=kernel_threads,
                        help=kernel_threads_help)


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
        epilog="examples:\n  groundrt data synth --out data/synth --split train --count 20000 "
               "--seed 1\n  groundrt data synth --renderer heldout --out data/heldout --split val "
               "--count 1000 --seed 4242", formatter_class=argparse.RawDescriptionHelpFormatter)
    synth.add_argument("--out", required=True, help="dataset folder (created)")
    synth.add_argument("--split", required=True, choices=["train", "val", "test"])
    synth.add_argument("--count", type=int, required=True, help="number of images")
    synth.add_argument("--seed", type=int, required=True,
                       help="scene i depends only on (seed, i)")
    synth.add_argument("--size", type=int, nargs=2, metavar=("W", "H"),
                       help="fixed image size (default: random, 240..640 px long side)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--renderer", choices=["training", "heldout"], default="training",
                       help="training: the training data's scenes (default); heldout: scenes "
                            "drawn and worded otherwise, kept apart to measure generalization")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_cmd_data_synth)

    gt = data_commands.add_parser(
        "gt-pred", help="write a split's ground truth as a prediction file (checks the metric)",
        epilog="example: groundrt data gt-pred --data data/synth --split val --out gt.json")
    _add_split_arguments(gt, out_help="a .json file or a folder")
    gt.add_argument("--soft", action="store_true", help="soft-map PNGs instead of RLE")
    gt.set_defaults(handler=_cmd_data_gt_pred)

    vd = data_commands.add_parser(
        "video", help="render the sample video (shapes moving over grass under a sky)",
        epilog="example: groundrt data video --out samples/video.mp4")
    vd.add_argument("--out", required=True, help="video file (.mp4)")
    vd.add_argument("--seconds", type=float, default=4.0)
    vd.add_argument("--fps", type=float, default=10.0)
    vd.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    vd.add_argument("--seed", type=int, default=7)
    vd.set_defaults(handler=_cmd_data_video)

    rn = commands.add_parser(
        "run", help="ground a caption in images, a folder, a video, a camera or a stream",
        epilog="""examples:
  groundrt run --source video.mp4 --caption "A red star on the grass." --save o.mp4 --json o.jsonl
  groundrt run --source "shots/*.jpg" --phrases "the sky; two blue squares" --save annotated/
  groundrt run --source rtsp://cam.local/stream --caption-file caption.txt --json live.jsonl
  groundrt run --source csi://0 --caption "a red circle" --device cuda --json live.jsonl
  echo "a yellow star" | groundrt run --source 0 --caption "the grass" --stdin-captions --show
  groundrt run --source video.mp4 --caption "A red star." --mcap o.mcap --mcap-profile ros2
  groundrt run --source 0 --caption "A red star on the grass." --foxglove 8765

The caption can change while a stream runs: a new line on stdin (--stdin-captions) or a new
text in --caption-file takes effect on the next frame read. Cameras and streams default to
--live (only the newest frame waits; the others are dropped and counted), files to --lossless.
The last line sums up: frames read, processed, dropped; latency p50/p99; FPS.""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    rn.add_argument("--source", required=True, help="an image, a folder or glob of images, a "
                    "video file, a camera index (0) or /dev/videoN, an rtsp:// or http:// URL, a "
                    "Jetson CSI camera (csi://0) or a GStreamer pipeline (gst:\"PIPELINE\"; "
                    "both need OpenCV with GStreamer)")
    what = rn.add_mutually_exclusive_group()
    what.add_argument("--caption", help="ground the noun phrases of this caption")
    what.add_argument("--phrases", help='explicit phrases separated by ";": "a; b"')
    rn.add_argument("--caption-file", help="a file whose text is the caption, re-read when it "
                    "changes")
    rn.add_argument("--stdin-captions", action="store_true",
                    help="each line on stdin replaces the caption")
    _add_model_arguments(rn, threads=1, threads_help="ONNX Runtime threads (default 1: the "
                         "other stages use the other cores)", kernel_threads=1,
                         kernel_threads_help="threads of the CPU letterbox and mask decoding "
                         "(default 1: the pipeline's stages already share the cores)")
    rn.add_argument("--server", metavar="URL", help="ground through a groundrt server "
                    "(groundrt serve, or Triton with groundrt export triton's repository): "
                    "http://HOST:PORT or grpc://HOST:PORT; the model options are the server's")
    rn.add_argument("--save", help="annotated output: a video file (.mp4, .avi, ...) or a "
                    "folder of images")
    rn.add_argument("--json", help="one JSON line per frame (phrases, boxes, RLE masks)")
    rn.add_argument("--show", action="store_true", help="an OpenCV window (needs a display)")
    rn.add_argument("--mcap", metavar="OUT.mcap", help="record every frame into an MCAP file: "
                    "the image, the phrase masks, the annotations (needs the [robot] extra)")
    rn.add_argument("--mcap-profile", choices=["foxglove", "ros2"],
                    help="--mcap's messages: Foxglove's schemas (default) or the ROS 2 node's "
                    "(sensor_msgs/Image, vision_msgs/Detection2DArray; ros2 bag tools read it)")
    rn.add_argument("--foxglove", type=int, nargs="?", const=8765, metavar="PORT",
                    help="serve a live view on a Foxglove WebSocket server (default port 8765; "
                    "needs the [robot] extra)")
    rn.add_argument("--foxglove-host", default="127.0.0.1",
                    help="where --foxglove listens (default: loopback; 0.0.0.0 for all)")
    rn.add_argument("--max-frames", type=int, help="stop after this many frames")
    rn.add_argument("--vid-stride", type=int, default=1, help="take every n-th frame")
    policy = rn.add_mutually_exclusive_group()
    policy.add_argument("--live", action="store_true", help="drop all but the newest frame "
                        "when busy (default for cameras and streams)")
    policy.add_argument("--lossless", action="store_true", help="process every frame in order "
                        "(default for files)")
    rn.add_argument("--reconnect-attempts", type=int, default=5,
                    help="reopen a camera or stream this many times in a row (backoff) before "
                    "giving up; the count restarts only when a frame arrives")
    rn.add_argument("--max-pixels", type=int,
                    help="largest image or frame, width x height (default 40,000,000), "
                    "checked from a file's header before it is decoded")
    rn.add_argument("--quiet", action="store_true", help="no progress bar")
    rn.set_defaults(handler=_cmd_run)

    bn = commands.add_parser(
        "bench", help="latency per stage, MLPerf-style scenarios, memory, accuracy and the "
        "roofline of packages, one row per backend and precision",
        epilog="""examples:
  groundrt bench --runs 100
  groundrt bench --backend onnxruntime --backend tensorrt --precision int8-cpu --precision fp32
  groundrt bench --scenario singlestream --scenario multistream --scenario offline \\
      --baseline packages/old --teacher runs/teacher --data data/synth --report reports/bench

SingleStream is always measured (the per-stage table comes from it); --scenario adds
MultiStream (a query = one frame of each of --streams cameras: p99 query latency) and Offline
(all frames in batches of --batch: frames per second). A row that cannot run is kept, marked
with its reason. --report DIR writes report.md, report.json and PNG plots (matplotlib:
pip install 'groundrt[bench]').""", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_arguments(bn, threads=2, threads_help="ONNX Runtime threads (default 2)",
                         kernel_threads=2, kernel_threads_help="threads of the CPU letterbox "
                         "and mask decoding (default 2)", repeatable=True)
    bn.add_argument("--scenario", action="append", choices=["singlestream", "multistream",
                                                            "offline"])
    bn.add_argument("--runs", type=int, default=100,
                    help="SingleStream runs and MultiStream queries per row; Offline frames")
    bn.add_argument("--warmup", type=int, default=5)
    bn.add_argument("--rounds", type=int, default=5,
                    help="alternating blocks the SingleStream runs are split into")
    bn.add_argument("--size", nargs="+", default=["640x480"], metavar="WxH",
                    help="frame size (default 640x480; the older form W H still works)")
    bn.add_argument("--phrases", type=int, default=8, help="noun phrases in the caption "
                    "(default 8; 1..64)")
    bn.add_argument("--image", help="image file (default: the sample scenes)")
    bn.add_argument("--caption", help="caption (overrides --phrases)")
    bn.add_argument("--streams", type=int, default=8, help="MultiStream cameras (default 8)")
    bn.add_argument("--batch", type=int, default=8, help="Offline batch (default 8)")
    bn.add_argument("--baseline", metavar="PKG", help="the previous package: one more row")
    bn.add_argument("--teacher", metavar="RUN", help="a training run folder: a PyTorch eager "
                    "row (needs groundrt[export])")
    bn.add_argument("--no-numpy-baseline", action="store_true",
                    help="no row with the numpy post-processing")
    bn.add_argument("--data", help="a PNG dataset: AR of every row on --split")
    bn.add_argument("--split", default="val")
    bn.add_argument("--eval-limit", type=int, default=100,
                    help="narratives scored per row (default 100)")
    bn.add_argument("--no-roofline", action="store_true",
                    help="skip the peaks and the GOP counts")
    bn.add_argument("--json", help="the whole report as JSON")
    bn.add_argument("--report", metavar="DIR", help="report.md, report.json and PNG plots")
    bn.set_defaults(handler=_cmd_bench)

    nf = commands.add_parser(
        "info", help="a package's manifest and the runtimes available on this machine",
        epilog="example: groundrt info --model runtime/models/default")
    nf.add_argument("--model", help="model package (default: the shipped one)")
    nf.add_argument("--json", action="store_true", help="as JSON")
    nf.set_defaults(handler=_cmd_info)

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
    _add_training_arguments(di, "the student's run folder", "")
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
    pk.add_argument("--keep-float",
                    help="comma-separated float policies: projections, stem, attention, norms "
                    "('' = none; default: projections,stem,attention)")
    pk.add_argument("--input-shape", type=_input_shape, metavar="HxW",
                    help="image graph input, a top-left crop of the trained square with sides "
                    "that are multiples of 16, for cameras of one aspect: 144x192 for 4:3 "
                    "frames at the student's 192 (25%% less compute, same masks); default: "
                    "the square")
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

    tx = export_commands.add_parser(
        "triton", help="a Triton Inference Server model repository: the graphs (ONNX Runtime "
        "or TensorRT) and a groundrt model (Python BLS: image bytes + caption in, JSON out)",
        epilog="example: groundrt export triton --model runtime/models/default --out "
               "triton/repo --device gpu")
    tx.add_argument("--model", required=True, help="model package")
    tx.add_argument("--out", required=True, help="repository folder (created, must be empty)")
    tx.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                    help="instance groups of the graph models (default: cpu)")
    tx.add_argument("--instances", type=int, default=1, help="instances per graph model")
    tx.add_argument("--precision", choices=["fp32", "int8-cpu", "int8-trt"],
                    help="the image graph (default: the package's on cpu, fp32 on gpu)")
    tx.add_argument("--max-batch", type=int, default=8,
                    help="max_batch_size of the image, phrase and groundrt models (default 8)")
    tx.add_argument("--no-tensorrt", action="store_true",
                    help="ONNX Runtime models even where the package has TensorRT engines")
    tx.set_defaults(handler=_cmd_export_triton)

    sv = commands.add_parser(
        "serve", help="a local Triton server (PyTriton) with the groundrt model: HTTP, gRPC, "
        "/metrics (needs the [serve] extra)",
        epilog="""example: groundrt serve --model runtime/models/default --http-port 8000

Requests: image (UINT8, the encoded JPEG/PNG bytes), caption (BYTES) or phrases (BYTES);
the answer: result (BYTES, a line of groundrt run --json). Health: /v2/health/live and
/v2/health/ready on the HTTP port; metrics: http://ADDRESS:METRICS_PORT/metrics.""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sv.add_argument("--model", help="model package (default: the shipped one)")
    sv.add_argument("--precision", choices=["fp32", "int8-cpu", "int8-trt"],
                    help="the image graph (default: the package's)")
    sv.add_argument("--http-port", type=int, default=8000)
    sv.add_argument("--grpc-port", type=int, default=8001)
    sv.add_argument("--metrics-port", type=int, default=8002)
    sv.add_argument("--address", default="127.0.0.1",
                    help="where the ports listen (default: loopback; 0.0.0.0 for all)")
    sv.add_argument("--max-batch", type=int, default=8, help="images per batch (default 8)")
    sv.add_argument("--no-batching", action="store_true", help="no dynamic batching")
    sv.add_argument("--instances", type=int, default=1,
                    help="model instances (each its own thread; default 1)")
    sv.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    sv.set_defaults(handler=_cmd_serve)

    ros = commands.add_parser(
        "ros", help="the ROS 2 node: image + caption topics in; detections, mask and annotated "
        "image out (needs a ROS 2 distro with vision_msgs)",
        usage="groundrt ros [--ros-args [-p NAME:=VALUE ...] [-r FROM:=TO ...]]",
        epilog="""examples:
  groundrt ros --ros-args -p caption:="A red star on the grass." -r image:=/camera/image_raw
  groundrt ros --ros-args -p model:=packages/student -p input_qos:=SENSOR_DATA
  ros2 param set /groundrt caption "two blue squares"
  ros2 topic pub --once /caption std_msgs/msg/String "{data: 'the sky'}"

Everything after `ros` goes to ROS 2 (rclpy.init): parameters with -p NAME:=VALUE, topic
remapping with -r FROM:=TO. Parameters: model, backend, precision, device, ort_provider,
threads, kernel_threads, max_pixels, caption (changeable at run time), input_qos / output_qos
(SENSOR_DATA, DEFAULT, SYSTEM_DEFAULT) and input_qos_depth / output_qos_depth (0: the
profile's), frame_stats_period (seconds between stats lines, 0: none). README: "On a robot".""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ros.set_defaults(handler=_cmd_ros)  # its arguments are ROS 2's: main() hands them on

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

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # exits with 2 on bad usage
    if args.command == "ros":
        args.ros_args = unknown  # --ros-args -p NAME:=VALUE -r FROM:=TO, for rclpy
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv
    try:
        return args.handler(args)
    except UsageError as exc:
        parser.error(str(exc))  # exits with 2
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
