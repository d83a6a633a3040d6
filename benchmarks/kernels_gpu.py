"""GPU grounding kernels (the fatbin, run with cupy): checked against the CPU library, then timed.

    python benchmarks/kernels_gpu.py [--runs 200] [--json results.json]

Loads kernels/lib/groundrt_kernels.fatbin with cupy.RawModule, runs affinity and mask decoding on
random inputs and compares every output with libgroundrt_kernels (the same arithmetic: masks,
selections and stats must be equal bit for bit). Then times the kernels for 8 phrases at
640 x 480 and 1920 x 1080 (a 40 x 40 pixel_embed, D = 48, Q = 24): GPU time per call from
`--runs` calls replayed as a CUDA graph (no launch overhead), the logits + decode + finalize
pipeline also as plain launches, and the achieved memory bandwidth, (bytes read + written) / time.
It also sweeps the decode kernel's rows per block. Without cupy, a GPU or the fatbin it says so and
exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from groundrt.kernels import cpu
from groundrt.kernels import cuda as launches

DIM, QUERIES, PHRASES, CELLS = 48, 24, 8, 40
SIZES = [(480, 640), (1080, 1920)]
LOGIT_SCALE, BIAS, THRESHOLD = 10.0, -2.0, 0.5
# (P, Q, D, h, w, crop_h, crop_w, H, W) for the comparison with the CPU library
CASES = [
    (1, 1, 4, 5, 5, 5.0, 5.0, 17, 23),
    (3, 9, 12, 9, 15, 7.3, 15.0, 61, 130),
    (17, 24, 48, 13, 13, 13.0, 13.0, 97, 101),
    (64, 30, 16, 9, 9, 9.8, 8.2, 45, 37),
    (2, 3, 8, 6, 9, 0.4, 0.7, 10, 13),
    (8, 24, 48, 40, 40, 30.0, 40.0, 480, 640),
    (8, 24, 48, 40, 40, 22.5, 40.0, 1080, 1920),
]


class CupyKernels:
    """The fatbin's four kernels, launched with cupy on its current stream."""

    def __init__(self, cp, path: str) -> None:
        self.cp = cp
        module = cp.RawModule(path=path)
        self.functions = {name: module.get_function(name) for name in launches.SIGNATURES}

    def launch(self, name: str, launch: launches.Launch, *args) -> None:
        self.functions[name](launch.grid, launch.block, args, shared_mem=launch.shared)

    def affinity(self, phrase, masks, plural, out: tuple | None = None) -> tuple:
        cp = self.cp
        num_phrases, dim = phrase.shape
        scores, selected = out or (cp.empty((num_phrases, len(masks)), cp.float32),
                                   cp.empty((num_phrases, len(masks)), cp.uint8))
        self.launch("grt_affinity_kernel", launches.affinity_launch(num_phrases, len(masks)),
                    phrase, masks, np.int32(num_phrases), np.int32(len(masks)), np.int32(dim),
                    np.float32(LOGIT_SCALE), np.float32(BIAS), plural, np.float32(THRESHOLD),
                    scores, selected)
        return scores, selected

    def decoder(self, pixel, masks, selected, crop: tuple[float, float], size: tuple[int, int],
                packed: bool) -> dict:
        """Buffers and arguments of one image's decoding (run with `run`)."""
        cp = self.cp
        (dim, h, w), num_phrases = pixel.shape, len(selected)
        rows, cols = launches.region(h, w, *crop)
        height, width = size
        return {
            "pixel": pixel, "masks": masks, "selected": selected, "dim": dim, "h": h, "w": w,
            "rows": rows, "cols": cols, "crop": crop, "size": size, "packed": packed,
            "P": num_phrases,
            "logits": cp.empty(num_phrases * rows * cols, cp.float32),
            "acc": cp.empty(num_phrases * launches.STATS_ACC_BYTES, cp.uint8),
            "out": cp.empty(cpu.mask_shape(num_phrases, height, width, packed), cp.uint8),
            "stats": cp.empty(num_phrases * cpu.STATS_DTYPE.itemsize, cp.uint8),
        }

    def logits(self, d: dict) -> None:
        launch = launches.logits_launch(d["rows"], d["cols"], d["P"])
        self.launch("grt_phrase_logits_kernel", launch, d["pixel"], np.int32(d["dim"]),
                    np.int32(d["h"]), np.int32(d["w"]), np.int32(d["rows"]),
                    np.int32(d["cols"]), d["masks"], np.int32(len(d["masks"])), d["selected"],
                    np.int32(d["P"]), d["logits"], d["acc"])

    def decode(self, d: dict, rows_per: int | None = None) -> None:
        (height, width), (crop_h, crop_w) = d["size"], d["crop"]
        rows_per = rows_per or launches.rows_per_block(height, width, d["P"])
        self.launch("grt_decode_masks_kernel",
                    launches.decode_launch(height, width, d["P"], rows_per), d["logits"],
                    np.int32(d["rows"]), np.int32(d["cols"]), np.float64(crop_h / height),
                    np.float64(crop_w / width), np.int32(height), np.int32(width),
                    np.float32(0.0), np.int32(d["packed"]), np.int32(rows_per), d["out"],
                    d["acc"])

    def finalize(self, d: dict) -> None:
        self.launch("grt_finalize_stats_kernel", launches.finalize_launch(d["P"]), d["acc"],
                    np.int32(d["P"]), d["stats"])

    def run(self, d: dict) -> tuple[np.ndarray, np.ndarray]:
        self.logits(d)
        self.decode(d)
        self.finalize(d)
        return d["out"].get(), d["stats"].get().view(cpu.STATS_DTYPE)


def compare(gpu: CupyKernels, seed: int = 0) -> list[dict]:
    """Every output of every case, GPU vs CPU library."""
    cp, rng, results = gpu.cp, np.random.default_rng(seed), []
    for case in CASES:
        num_phrases, num_queries, dim, h, w, crop_h, crop_w, height, width = case
        phrase = rng.standard_normal((num_phrases, dim)).astype(np.float32)
        masks = rng.standard_normal((num_queries, dim)).astype(np.float32)
        pixel = rng.standard_normal((dim, h, w)).astype(np.float32)
        plural = rng.random(num_phrases) < 0.5
        scores, selected = cpu.affinity(phrase, masks, LOGIT_SCALE, BIAS, plural, THRESHOLD)
        gpu_scores, gpu_selected = gpu.affinity(cp.asarray(phrase), cp.asarray(masks),
                                                cp.asarray(plural.astype(np.uint8)))
        row = {"case": case, "scores_equal": bool((gpu_scores.get() == scores).all()),
               "selected_equal": bool((gpu_selected.get() == selected).all())}
        for packed in (False, True):
            want, want_stats = cpu.decode_masks(pixel, masks, selected, crop_h, crop_w, height,
                                                width, packed=packed)
            d = gpu.decoder(cp.asarray(pixel), cp.asarray(masks), cp.asarray(selected),
                            (crop_h, crop_w), (height, width), packed)
            got, got_stats = gpu.run(d)
            tag = "packed" if packed else "bytes"
            row[f"masks_{tag}_equal"] = bool((got == want).all())
            row[f"masks_{tag}_differing_pixels"] = int((got != want).sum())
            row[f"stats_{tag}_equal"] = bool(got_stats.tobytes() == want_stats.tobytes())
            row[f"score_{tag}_max_diff"] = float(np.abs(got_stats["score"] -
                                                        want_stats["score"]).max())
        results.append(row)
    return results


def launch_us(cp, fn, runs: int) -> float:
    """Median event time of single fn() calls, launch latency included (no graph)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) * 1e3)
    return float(np.median(times))


def kernel_us(cp, fn, runs: int) -> float:
    """GPU time of one fn() call: `runs` calls captured in a CUDA graph, replayed and timed
    (median of 5 replays); back-to-back launches between two events if capture fails."""
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        fn()
        stream.synchronize()
        try:
            stream.begin_capture()
            for _ in range(runs):
                fn()
            graph = stream.end_capture()
        except Exception:  # capture unsupported: launches back to back
            graph = None

        def replay() -> None:
            if graph is not None:
                graph.launch(stream)
            else:
                for _ in range(runs):
                    fn()

        replay()
        times = []
        for _ in range(5):
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record(stream)
            replay()
            stop.record(stream)
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) * 1e3 / runs)
    return float(np.median(times))


def timings(gpu: CupyKernels, size: tuple[int, int], runs: int, seed: int = 1) -> dict:
    cp, rng = gpu.cp, np.random.default_rng(seed)
    height, width = size
    crop = (CELLS * height / max(size), CELLS * width / max(size))
    phrase = cp.asarray(rng.standard_normal((PHRASES, DIM)).astype(np.float32))
    masks = cp.asarray(rng.standard_normal((QUERIES, DIM)).astype(np.float32))
    pixel = cp.asarray(rng.standard_normal((DIM, CELLS, CELLS)).astype(np.float32))
    plural = cp.asarray((np.arange(PHRASES) % 2).astype(np.uint8))
    scores, selected = gpu.affinity(phrase, masks, plural)
    out = {"size": f"{width}x{height}", "phrases": PHRASES,
           "affinity_us": kernel_us(cp, lambda: gpu.affinity(phrase, masks, plural,
                                                             (scores, selected)), runs)}
    for packed in (False, True):
        d = gpu.decoder(pixel, masks, selected, crop, size, packed)
        tag = "packed" if packed else "bytes"
        logits_bytes = 4 * PHRASES * d["rows"] * d["cols"]
        t_logits = kernel_us(cp, lambda d=d: gpu.logits(d), runs)
        t_decode = kernel_us(cp, lambda d=d: gpu.decode(d), runs)
        t_final = kernel_us(cp, lambda d=d: gpu.finalize(d), runs)
        def pipeline(d: dict = d) -> None:
            gpu.logits(d)
            gpu.decode(d)
            gpu.finalize(d)

        t_all = kernel_us(cp, pipeline, runs)
        decode_bytes = d["out"].nbytes + logits_bytes + PHRASES * launches.STATS_ACC_BYTES
        logits_read = pixel.nbytes + masks.nbytes + selected.nbytes
        out[tag] = {
            "rows_per_block": launches.rows_per_block(height, width, PHRASES),
            "logits_us": t_logits, "decode_us": t_decode, "finalize_us": t_final,
            "pipeline_us": t_all, "pipeline_with_launches_us": launch_us(cp, pipeline, runs),
            "mask_bytes": d["out"].nbytes,
            "decode_GBps": decode_bytes / (t_decode * 1e-6) / 1e9,
            "pipeline_GBps": (decode_bytes + logits_read + logits_bytes) / (t_all * 1e-6) / 1e9,
            "decode_us_by_rows_per_block": {
                r: kernel_us(cp, lambda d=d, r=r: gpu.decode(d, r), runs // 2)
                for r in (1, 2, 4, 8, 16, 32, 64)},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    try:
        import cupy as cp

        count = cp.cuda.runtime.getDeviceCount()
    except Exception as error:  # no cupy, no driver
        print(f"skipped: cupy with a CUDA device is needed ({error})")
        return 0
    if count == 0:
        print("skipped: no CUDA device")
        return 0
    path = launches.fatbin_path()
    if not path.is_file():
        print(f"skipped: {path} is not built ({cpu.BUILD_COMMAND})")
        return 0
    gpu = CupyKernels(cp, str(path))
    props = cp.cuda.runtime.getDeviceProperties(0)
    results = {"device": props["name"].decode(), "cupy": cp.__version__}
    if cpu.is_built():
        results["compare"] = compare(gpu)
        ok = all(v for row in results["compare"] for k, v in row.items() if k.endswith("_equal"))
        results["all_equal"] = ok
    else:
        print(f"CPU library not built ({cpu.BUILD_COMMAND}): no comparison")
    results["timings"] = [timings(gpu, size, args.runs) for size in SIZES]
    print(json.dumps(results, indent=1, default=str))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0 if results.get("all_equal", True) else 1


if __name__ == "__main__":
    sys.exit(main())
