"""pycuda loader of the CUDA kernels (`groundrt_kernels.fatbin`): the two functions of cpu.py.

    kernels = CudaKernels()  # loads the fatbin into the current CUDA context (or the primary one)
    scores, selected = kernels.affinity(phrase_embed, mask_embed, logit_scale, bias, plural, t)
    masks, stats = kernels.decode_masks(pixel_embed, mask_embed, selected, crop_h, crop_w, H, W)

numpy in, numpy out (same shapes, dtypes and STATS_DTYPE as cpu.py). Device buffers are allocated
once and reused while large enough; everything runs on one stream, passed in or created. pycuda is
imported by CudaKernels, so this module imports without it. The launch geometry (`*_launch`) is
pure Python, shared with benchmarks/kernels_gpu.py (which drives the same kernels with cupy).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groundrt.kernels.cpu import (
    BUILD_COMMAND,
    STATS_DTYPE,
    KernelsNotBuiltError,
    affinity_args,
    check_geometry,
    decode_args,
    mask_shape,
)

FATBIN_ENV = "GROUNDRT_KERNELS_FATBIN"
FATBIN_PATH = Path(__file__).resolve().parent / "lib" / "groundrt_kernels.fatbin"
STATS_ACC_BYTES = 48  # sizeof(groundrt::StatsAcc): 4 x uint64 + 4 x int32
AFFINITY_BLOCK = 128
LOGITS_BLOCK = 128
DECODE_BLOCK = 256  # must equal kDecodeBlock in grounding.cu
FINALIZE_BLOCK = 128
MAX_ROWS_PER_BLOCK = 64  # kMaxRowsPerBlock
ROWS_PER_BLOCK = (8, 32)  # fastest at 640x480 and 1920x1080 on an H200 (reports/kernels_gpu.md)
TARGET_DECODE_BLOCKS = 2048  # enough blocks to fill a large GPU, few enough to keep atomics rare

# kernel name -> pycuda `prepare` signature (P pointer, i int32, f float32, d float64)
SIGNATURES = {
    "grt_affinity_kernel": "PPiiiffPfPP",
    "grt_phrase_logits_kernel": "PiiiiiPiPiPP",
    "grt_decode_masks_kernel": "PiiddiifiiPP",
    "grt_finalize_stats_kernel": "PiP",
}


@dataclass(frozen=True)
class Launch:
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared: int = 0


FATBIN_HINT = ("reinstall groundrt where nvcc is found ($CUDA_HOME/bin, PATH or /usr/local/cuda; "
               f"`pip install .`), or build it in a checkout with `{BUILD_COMMAND}`")


def fatbin_path() -> Path:
    """Where the fatbin is expected: $GROUNDRT_KERNELS_FATBIN, else kernels/lib/."""
    override = os.environ.get(FATBIN_ENV)
    return Path(override) if override else FATBIN_PATH


def region(h: int, w: int, crop_h: float, crop_w: float) -> tuple[int, int]:
    """(rows, cols) of the image region in an [h, w] map: min(h, ceil(crop_h)), ..."""
    return min(h, math.ceil(crop_h)), min(w, math.ceil(crop_w))


def affinity_launch(num_phrases: int, num_queries: int) -> Launch:
    return Launch((num_phrases, 1, 1), (AFFINITY_BLOCK, 1, 1), 4 * num_queries)


def logits_launch(rows: int, cols: int, num_phrases: int) -> Launch:
    return Launch((-(-rows * cols // LOGITS_BLOCK), num_phrases, 1), (LOGITS_BLOCK, 1, 1))


def rows_per_block(height: int, width: int, num_phrases: int) -> int:
    """Output rows per decode block: about TARGET_DECODE_BLOCKS blocks, 8 to 32 rows each."""
    columns = -(-width // DECODE_BLOCK)
    low, high = ROWS_PER_BLOCK
    return max(low, min(high, height * columns * num_phrases // TARGET_DECODE_BLOCKS))


def decode_launch(height: int, width: int, num_phrases: int, rows: int | None = None) -> Launch:
    """Grid of grt_decode_masks_kernel, `rows` output rows per block (default rows_per_block)."""
    rows = rows or rows_per_block(height, width, num_phrases)
    if not 1 <= rows <= MAX_ROWS_PER_BLOCK:
        raise ValueError(f"rows per decode block must be 1 to {MAX_ROWS_PER_BLOCK}, got {rows}")
    grid = (-(-width // DECODE_BLOCK), -(-height // rows), num_phrases)
    return Launch(grid, (DECODE_BLOCK, 1, 1))


def finalize_launch(num_phrases: int) -> Launch:
    return Launch((-(-num_phrases // FINALIZE_BLOCK), 1, 1), (FINALIZE_BLOCK, 1, 1))


class CudaKernels:
    """The fatbin's kernels on one stream, with device buffers reused across calls."""

    def __init__(self, fatbin: str | Path | None = None, stream: Any = None) -> None:
        path = Path(fatbin) if fatbin is not None else fatbin_path()
        if not path.is_file():
            raise KernelsNotBuiltError(
                f"the CUDA kernels {path} do not exist: {FATBIN_HINT} (or point ${FATBIN_ENV} "
                "at one)")
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Context.get_current() is None:
            import pycuda.autoprimaryctx  # noqa: F401  (retains the device's primary context)
        self._cuda = cuda
        self._module = cuda.module_from_file(str(path))
        self._functions = {}
        for name, signature in SIGNATURES.items():
            function = self._module.get_function(name)
            function.prepare(signature)
            self._functions[name] = function
        self.stream = stream if stream is not None else cuda.Stream()
        self._buffers: dict[str, Any] = {}
        self._capacity: dict[str, int] = {}

    def _buffer(self, name: str, nbytes: int) -> Any:
        """Device buffer `name` of at least `nbytes` (reallocated only when it grows)."""
        if self._capacity.get(name, -1) < nbytes:
            self._buffers[name] = self._cuda.mem_alloc(max(nbytes, 1))
            self._capacity[name] = nbytes
        return self._buffers[name]

    def _upload(self, name: str, array: np.ndarray) -> Any:
        buffer = self._buffer(name, array.nbytes)
        if array.nbytes:
            self._cuda.memcpy_htod_async(buffer, array, self.stream)
        return buffer

    def _launch(self, name: str, launch: Launch, *args: Any) -> None:
        self._functions[name].prepared_async_call(launch.grid, launch.block, self.stream, *args,
                                                  shared_size=launch.shared)

    def affinity(self, phrase_embed: np.ndarray, mask_embed: np.ndarray, logit_scale: float,
                 bias: float, plural: np.ndarray,
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """[P, D], [Q, D] -> scores [P, Q] float32, selected [P, Q] uint8 (as cpu.affinity)."""
        phrase, masks, plural_u8 = affinity_args(phrase_embed, mask_embed, plural)
        (num_phrases, dim), num_queries = phrase.shape, len(masks)
        scores = np.empty((num_phrases, num_queries), np.float32)
        selected = np.empty((num_phrases, num_queries), np.uint8)
        if scores.size == 0:
            return scores, selected
        args = (self._upload("phrase", phrase), self._upload("mask", masks), np.int32(num_phrases),
                np.int32(num_queries), np.int32(dim), np.float32(logit_scale), np.float32(bias),
                self._upload("plural", plural_u8), np.float32(threshold),
                self._buffer("scores", scores.nbytes), self._buffer("selected", selected.nbytes))
        self._launch("grt_affinity_kernel", affinity_launch(num_phrases, num_queries), *args)
        self._cuda.memcpy_dtoh_async(scores, self._buffers["scores"], self.stream)
        self._cuda.memcpy_dtoh_async(selected, self._buffers["selected"], self.stream)
        self.stream.synchronize()
        return scores, selected

    def decode_masks(self, pixel_embed: np.ndarray, mask_embed: np.ndarray,
                     selected: np.ndarray, crop_h: float, crop_w: float, height: int, width: int,
                     threshold: float = 0.0,
                     packed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Masks [P, H, W] (or packed bits) and stats [P], as cpu.decode_masks."""
        pixel, masks, chosen = decode_args(pixel_embed, mask_embed, selected)
        check_geometry(crop_h, crop_w, height, width)
        num_phrases = len(chosen)
        out = np.empty(mask_shape(num_phrases, height, width, packed), np.uint8)
        stats = np.empty(num_phrases, STATS_DTYPE)
        if num_phrases == 0:
            return out, stats
        dim, h, w = pixel.shape
        rows, cols = region(h, w, crop_h, crop_w)
        logits = self._buffer("logits", 4 * num_phrases * rows * cols)
        acc = self._buffer("stats_acc", STATS_ACC_BYTES * num_phrases)
        device_masks = self._buffer("masks", out.nbytes)
        self._launch("grt_phrase_logits_kernel", logits_launch(rows, cols, num_phrases),
                     self._upload("pixel", pixel), np.int32(dim), np.int32(h), np.int32(w),
                     np.int32(rows), np.int32(cols), self._upload("mask", masks),
                     np.int32(len(masks)), self._upload("selected_in", chosen),
                     np.int32(num_phrases), logits, acc)
        if out.size:
            rows_per = rows_per_block(height, width, num_phrases)
            self._launch("grt_decode_masks_kernel",
                         decode_launch(height, width, num_phrases, rows_per), logits,
                         np.int32(rows), np.int32(cols), np.float64(crop_h / height),
                         np.float64(crop_w / width), np.int32(height), np.int32(width),
                         np.float32(threshold), np.int32(bool(packed)), np.int32(rows_per),
                         device_masks, acc)
        device_stats = self._buffer("stats", stats.nbytes)
        self._launch("grt_finalize_stats_kernel", finalize_launch(num_phrases), acc,
                     np.int32(num_phrases), device_stats)
        if out.size:
            self._cuda.memcpy_dtoh_async(out, device_masks, self.stream)
        self._cuda.memcpy_dtoh_async(stats, device_stats, self.stream)
        self.stream.synchronize()
        return out, stats
