"""Stream throughput: the pipelined `groundrt run` vs the same frames one by one, side by side.

    python benchmarks/stream_throughput.py [--seconds 20] [--threads 1] [--kernel-threads 1]
        [--repeats 3] [--model PKG]

A 640x480 sample video (groundrt.synth.video, 10 FPS) through the shipped INT8 model with the
README's outputs (an annotated .mp4 and a JSONL file), lossless. Both modes run the same stage
functions (runtime/stream.py): `plain loop` one frame at a time, `pipelined` in four threads
with bounded queues. Alternating repeats; medians of FPS. The bound 1 / (slowest stage) uses the
busy times measured in the plain loop (no contention there), summed over the stages each
pipeline thread runs (runtime/stream.py: PIPELINE_THREADS).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from groundrt.runtime.captions import CaptionSource, Prompt
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.sinks import JsonlSink, VideoSink
from groundrt.runtime.sources import open_source
from groundrt.runtime.stream import PIPELINE_THREADS, Stream, StreamReport
from groundrt.synth.video import SAMPLE_CAPTION, write_video


def run_once(grounder: Grounder, video: Path, out: Path, pipelined: bool) -> StreamReport:
    source = open_source(str(video))
    sinks = [JsonlSink(out / "frames.jsonl"), VideoSink(out / "annotated.mp4", source.fps or 10)]
    stream = Stream(grounder, source, CaptionSource(Prompt.parse(SAMPLE_CAPTION)), sinks,
                    live=False)
    return stream.run(pipelined=pipelined)


def median_stage_ms(reports: list[StreamReport]) -> dict[str, float]:
    """Each stage's busy time per frame, the median over the runs."""
    return {name: statistics.median(r.stage_ms[name] for r in reports)
            for name in reports[0].stage_ms}


def per_thread(stage_ms: dict[str, float]) -> dict[str, float]:
    """The busy time per frame of each pipeline thread after capture (its stages summed)."""
    return {" + ".join(names): sum(stage_ms[n] for n in names) for names in PIPELINE_THREADS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="video length (10 FPS)")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime threads (groundrt run's default: 1)")
    parser.add_argument("--kernel-threads", type=int, default=1,
                        help="CPU letterbox and mask decoding threads (groundrt run's default: 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="package (default: the shipped one; a 4:3 package "
                        "built with --input-shape 144x192 fits this video)")
    args = parser.parse_args()
    grounder = Grounder(args.model, threads=args.threads, kernel_threads=args.kernel_threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        video = write_video(out / "sample.mp4", args.seconds, 10.0, (640, 480))
        run_once(grounder, video, out, True)  # warm-up
        reports: dict[str, list[StreamReport]] = {"plain loop": [], "pipelined": []}
        for _ in range(args.repeats):
            reports["plain loop"].append(run_once(grounder, video, out, False))
            reports["pipelined"].append(run_once(grounder, video, out, True))

    frames = reports["pipelined"][0].processed
    print(f"640x480 video, {frames} frames, package input "
          f"{'x'.join(map(str, grounder.input_shape))}, caption with "
          f"{len(grounder.encode_text(SAMPLE_CAPTION).texts)} phrases, outputs .mp4 + JSONL, "
          f"ONNX Runtime {args.threads} threads, {args.kernel_threads} kernel threads; median of "
          f"{args.repeats} alternating runs")
    print("| mode | FPS | latency p50 ms | latency p99 ms |\n|---|---|---|---|")
    fps = {}
    for mode, runs in reports.items():
        fps[mode] = statistics.median(r.fps for r in runs)
        print(f"| {mode} | {fps[mode]:.1f} | "
              f"{statistics.median(r.latency(0.5) for r in runs):.1f} | "
              f"{statistics.median(r.latency(0.99) for r in runs):.1f} |")
    stages = median_stage_ms(reports["plain loop"])
    threads = {"capture": stages["capture"]} | per_thread(stages)
    slowest = max(threads, key=threads.get)
    bound = 1e3 / threads[slowest]
    print("plain-loop stage times, ms per frame: " + ", ".join(
        f"{name} {ms:.2f}" for name, ms in stages.items()))
    print(f"pipelined / plain loop: {fps['pipelined'] / fps['plain loop']:.2f}x; "
          f"1 / slowest pipeline thread ({slowest}, {threads[slowest]:.2f} ms) = {bound:.1f} "
          f"FPS, pipelined reaches {fps['pipelined'] / bound:.0%} of it")
    # the stages share the machine's cores: their summed CPU time bounds the throughput too
    cores = os.cpu_count() or 1
    core_bound = cores * 1e3 / sum(stages.values())
    print(f"{cores} cores / total stage time ({sum(stages.values()):.2f} ms) = "
          f"{core_bound:.1f} FPS, pipelined reaches {fps['pipelined'] / core_bound:.0%} of it")
    # in the pipeline the stages run side by side on shared cores and each takes longer: the
    # busy time of each thread there, and how much of the wall time the slowest one is busy
    busy = per_thread(median_stage_ms(reports["pipelined"]))
    busiest = max(busy, key=busy.get)
    print("pipelined busy time per thread, ms per frame: " + ", ".join(
        f"{name} {ms:.2f}" for name, ms in busy.items())
          + f"; the busiest ({busiest}) is busy {fps['pipelined'] * busy[busiest] / 1e3:.0%} "
          "of the wall time")


if __name__ == "__main__":
    main()
