"""Soak and concurrency: many frames through one Grounder, memory and latency over time, and N
threads sharing one Grounder against one thread. Not part of CI's default run (minutes).

    python benchmarks/soak.py --frames 10000 --threads 4
    python benchmarks/soak.py --frames 2000 --out benchmarks/reports/soak.md

Soak: `--frames` calls of `Grounder.ground` on the committed sample scenes at changing sizes
(SIZES, cropped and flipped views included) with changing captions (the samples' narratives
and phrase lists drawn from them, far more distinct captions than the text cache holds), and
one call in BAD_EVERY a bad input (a caption with a lone surrogate, corrupt bytes, a header
claiming 20000x20000 pixels, a float image) that must be refused with a groundrt error. Reported:
resident memory (/proc/self/statm) after the warm-up and at the end (growth must stay under
5%), median latency of the first and the last tenth after the warm-up (drift), in wall time and
in CPU time (the process's, ONNX Runtime's threads included: on a shared machine it moves less
with the other jobs than wall time does), refused bad inputs and unexpected errors (must be 0).

Concurrency: `--threads` threads ground the same list of items on one shared Grounder; every
mask, score and selected query must equal the one-thread results.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

import groundrt
from groundrt.data import PNGDataset
from groundrt.errors import GroundrtError

SAMPLES = Path(__file__).resolve().parents[1] / "runtime" / "samples" / "png"
SIZES = [(640, 480), (320, 240), (1280, 720), (200, 150), (480, 640), (97, 61), (960, 540),
         (1920, 1080)]
BAD_EVERY = 100
RSS_LIMIT = 0.05


def rss_mb() -> float:
    """Resident memory of this process now (Linux), MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def huge_png() -> bytes:
    """A 100-byte PNG whose header says 20000 x 20000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0,
                                                               0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


class Workload:
    """Deterministic frames and prompts for step i."""

    def __init__(self, seed: int) -> None:
        dataset = PNGDataset(SAMPLES, "val")
        self.images = [dataset.read_image(i) for i in sorted(dataset.phrases_by_image())]
        self.captions = [n.caption for n in dataset.narratives]
        self.phrases = sorted({p.text for p in dataset.phrases})
        self.rng = np.random.default_rng(seed)
        self.bad = [("caption", "two red circles \udcff on the grass"),
                    ("image", b"\xff\xd8\xff" + bytes(200)), ("image", huge_png()),
                    ("image", np.zeros((64, 64, 3), np.float32))]

    def item(self, i: int) -> tuple[np.ndarray, str | None, list[str] | None]:
        rng = self.rng
        image = self.images[rng.integers(len(self.images))]
        width, height = SIZES[rng.integers(len(SIZES))]
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        view = rng.integers(3)
        if view == 1:
            image = image[::-1]  # a negative-stride view
        elif view == 2:
            image = image[height // 8:, width // 8:]  # a crop: strided rows
        if rng.random() < 0.3:  # explicit phrases
            count = int(rng.integers(1, 6))
            chosen = rng.choice(len(self.phrases), count, replace=False)
            return image, None, [self.phrases[c] for c in chosen]
        caption = self.captions[rng.integers(len(self.captions))]
        if rng.random() < 0.5:  # a variant: another distinct caption for the text cache
            caption = f"{caption} Also {self.phrases[rng.integers(len(self.phrases))]}."
        return image, caption, None


def soak(grounder: groundrt.Grounder, frames: int, warmup: int, seed: int) -> dict:
    work = Workload(seed)
    latencies, cpu, rss = [], [], []  # wall and CPU ms per call (CPU: all of this process)
    refused = unexpected = 0
    errors: list[str] = []
    base_rss = None
    for i in range(frames):
        if i == warmup:
            base_rss = rss_mb()
        if i % BAD_EVERY == BAD_EVERY - 1:
            kind, bad = work.bad[(i // BAD_EVERY) % len(work.bad)]
            try:
                if kind == "caption":
                    grounder.ground(work.images[0], bad)
                else:
                    grounder.ground(bad, "the grass")
                unexpected += 1
                errors.append(f"frame {i}: bad {kind} accepted")
            except GroundrtError:
                refused += 1
            continue
        image, caption, phrases = work.item(i)
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            result = grounder.ground(image, caption, phrases)
            assert all(p.mask.shape == image.shape[:2] for p in result.phrases)
        except Exception as exc:  # noqa: BLE001 (counted and reported)
            unexpected += 1
            errors.append(f"frame {i}: {type(exc).__name__}: {exc}")
            continue
        latencies.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - cpu_start) * 1e3)
        if i % 500 == 0:
            rss.append((i, rss_mb()))
    end_rss = rss_mb()
    def first_and_last(values: list[float]) -> tuple[float, float]:
        """Medians of the first and the last tenth after the warm-up."""
        after = values[warmup:] if len(values) > warmup else values
        tenth = max(1, len(after) // 10)
        return statistics.median(after[:tenth]), statistics.median(after[-tenth:])

    after = latencies[warmup:] if len(latencies) > warmup else latencies
    first, last = first_and_last(latencies)
    cpu_first, cpu_last = first_and_last(cpu)
    return {"frames": frames, "warmup": warmup, "rss_warm_mb": base_rss, "rss_end_mb": end_rss,
            "rss_growth": (end_rss - base_rss) / base_rss if base_rss else float("nan"),
            "rss_max_mb": max(r for _, r in rss) if rss else end_rss,
            "latency_first_ms": first, "latency_last_ms": last, "drift": last / first,
            "cpu_first_ms": cpu_first, "cpu_last_ms": cpu_last, "cpu_drift": cpu_last / cpu_first,
            "latency_p50_ms": float(np.percentile(after, 50)),
            "latency_p99_ms": float(np.percentile(after, 99)),
            "refused": refused, "unexpected": unexpected, "errors": errors[:10],
            "rss_trace": rss}


def signature(result) -> list:
    """Everything a caller reads of a result, exactly."""
    return [(p.text, p.mask.tobytes(), p.score, p.area, p.box, p.centroid, tuple(p.queries))
            for p in result.phrases]


def concurrency(grounder: groundrt.Grounder, threads: int, items: int, seed: int) -> dict:
    work = Workload(seed + 1)
    cases = [work.item(i) for i in range(items)]
    want = [signature(grounder.ground(*case)) for case in cases]
    got: list[list] = [[None] * items for _ in range(threads)]

    def worker(t: int) -> None:
        order = np.random.default_rng(t).permutation(items)  # each thread its own order
        for j in order:
            got[t][j] = signature(grounder.ground(*cases[j]))

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - start
    mismatches = sum(got[t][j] != want[j] for t in range(threads) for j in range(items))
    return {"threads": threads, "items": items, "calls": threads * items,
            "mismatches": mismatches, "wall_s": wall}


def markdown(s: dict, c: dict, args: argparse.Namespace, backend: str) -> str:
    ok = (s["rss_growth"] < RSS_LIMIT and s["unexpected"] == 0 and c["mismatches"] == 0)
    return "\n".join([
        f"# Soak and concurrency ({'pass' if ok else 'FAIL'})", "",
        f"`python benchmarks/soak.py --frames {args.frames} --warmup {args.warmup} --threads "
        f"{args.threads}`; {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, {backend}.", "",
        "| measure | value |", "|---|---|",
        f"| frames (1 in {BAD_EVERY} a bad input) | {s['frames']} |",
        f"| RSS after {s['warmup']} warm-up frames | {s['rss_warm_mb']:.1f} MB |",
        f"| RSS at the end | {s['rss_end_mb']:.1f} MB |",
        f"| RSS growth after warm-up (limit {RSS_LIMIT:.0%}) | {s['rss_growth']:+.2%} |",
        f"| RSS max sampled | {s['rss_max_mb']:.1f} MB |",
        f"| median latency (wall), first / last tenth | {s['latency_first_ms']:.1f} / "
        f"{s['latency_last_ms']:.1f} ms (drift {s['drift']:.2f}x) |",
        f"| median CPU time per call, first / last tenth | {s['cpu_first_ms']:.1f} / "
        f"{s['cpu_last_ms']:.1f} ms (drift {s['cpu_drift']:.2f}x) |",
        f"| latency p50 / p99 (sizes {SIZES[0][0]}x{SIZES[0][1]} .. 1920x1080) | "
        f"{s['latency_p50_ms']:.1f} / {s['latency_p99_ms']:.1f} ms |",
        f"| bad inputs refused with a groundrt error | {s['refused']} |",
        f"| unexpected errors | {s['unexpected']} |",
        f"| {c['threads']} threads x {c['items']} items on one Grounder: results unlike one "
        f"thread's | {c['mismatches']} of {c['calls']} |", "",
        "RSS trace (frame: MB): " + ", ".join(f"{i}: {r:.1f}" for i, r in s["rss_trace"]),
        *(["", "Errors:", *[f"* {e}" for e in s["errors"]]] if s["errors"] else []), ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model package (default: the shipped one)")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--items", type=int, default=50, help="items per concurrency thread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args()
    grounder = groundrt.Grounder(args.model)
    backend = f"{grounder.backend.name} {grounder.backend.precision}"
    s = soak(grounder, args.frames, args.warmup, args.seed)
    c = concurrency(grounder, args.threads, args.items, args.seed)
    report = markdown(s, c, args, backend)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0 if s["unexpected"] == 0 and c["mismatches"] == 0 and s["rss_growth"] < RSS_LIMIT \
        else 1


if __name__ == "__main__":
    sys.exit(main())
