"""`groundrt bench`: per-stage latency of `Grounder.ground` on one image and caption.

    groundrt bench                      # the shipped model, a sample scene at 640x480, 8 phrases
    groundrt bench --model PKG --backend onnxruntime --precision fp32 --runs 200

The caption is encoded once before timing (as in a stream with a fixed caption); the table gives
median / p90 / p99 of every stage in ms (benchmarks/grounder_latency.py compares rows with it).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from groundrt.runtime.grounder import Grounder

STAGES = ("preprocess", "image", "phrase", "affinity", "decode", "total")  # phrase: v2 only
DEFAULT_CAPTION = ("In this picture we can see two red circles, a blue star, three green "
                   "squares, a small yellow triangle, an orange ring, the sky, the grass and "
                   "the road.")
SAMPLES = Path(__file__).resolve().parent / "samples" / "png"


def sample_image(width: int = 640, height: int = 480) -> np.ndarray:
    """The first committed sample scene, resized to width x height (BGR)."""
    from groundrt.data import PNGDataset

    samples = PNGDataset(SAMPLES, "val")
    image = samples.read_image(sorted(samples.panoptic.images)[0])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def measure(grounder: Grounder, image: np.ndarray, caption: str = DEFAULT_CAPTION,
            runs: int = 100, warmup: int = 5) -> dict[str, list[float]]:
    """Sorted per-stage times (ms) of `runs` calls of grounder.ground(image, caption)."""
    return measure_interleaved({"": grounder}, image, caption, runs, warmup)[""]


def measure_interleaved(grounders: dict[str, Grounder], image: np.ndarray,
                        caption: str = DEFAULT_CAPTION, runs: int = 100, warmup: int = 5,
                        rounds: int = 1) -> dict[str, dict[str, list[float]]]:
    """`measure` for several grounders, in `rounds` alternating blocks of runs / rounds calls
    each, so that all of them see the same phases of a shared machine's speed."""
    times = {name: {stage: [] for stage in STAGES} for name in grounders}
    for grounder in grounders.values():
        grounder.encode_text(caption)
        for _ in range(warmup):
            grounder.ground(image, caption)
    for block in range(rounds):
        for name, grounder in grounders.items():
            for _ in range(runs // rounds + (block < runs % rounds)):
                result = grounder.ground(image, caption)
                for stage in STAGES:
                    if stage in result.timings_ms:
                        times[name][stage].append(result.timings_ms[stage])
    return {name: {stage: sorted(v) for stage, v in stages.items()}
            for name, stages in times.items()}


def percentile(sorted_values: list[float], q: float) -> float:
    return float(np.percentile(sorted_values, q * 100)) if sorted_values else float("nan")


def table_row(name: str, times: dict[str, list[float]]) -> str:
    """A markdown row: median / p90 / p99 of each stage."""
    cells = [f"{percentile(t, 0.5):.2f} / {percentile(t, 0.9):.2f} / {percentile(t, 0.99):.2f}"
             if t else "-" for t in times.values()]
    return f"| {name} | " + " | ".join(cells) + " |"


def table_header() -> str:
    return "| variant | " + " | ".join(STAGES) + " |\n|---|" + "---|" * len(STAGES)
