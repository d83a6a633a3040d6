"""pycuda loader of the CUDA kernels (`groundrt_kernels.fatbin`): the two functions of cpu.py.

    kernels = CudaKernels()  # loads the fatbin into the device's primary context
    scores, selected = kernels.affinity(phrase_embed, mask_embed, logit_scale, bias, plural, t)
    masks, stats = kernels.decode_masks(pixel_embed, mask_embed, selected, crop_h, crop_w, H, W)

numpy in, numpy out (same shapes, dtypes and STATS_DTYPE as cpu.py); decode_masks also takes
pixel_embed as a DeviceTensor (kernels/device_buffers.py: an engine output, read in place). Safe
from several threads at once: each call takes a stream with its device buffers (allocated once,
reused while large enough) and pinned host staging from a pool; the context policy is
cuda_context.py's.
pycuda is imported by CudaKernels, so this module imports without it. The launch geometry
(`*_launch`) is pure Python, shared with benchmarks/kernels_gpu.py (which drives the same
kernels with cupy).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groundrt.kernels.cpu import (
    BUILD_COMMAND,
    STATS_DTYPE,
    KernelError,
    KernelsNotBuiltError,
    affinity_args,
    check_geometry,
    decode_args,
    mask_shape,
)
from groundrt.kernels.cuda_context import driver, gpu_context
from groundrt.kernels.device_buffers import DeviceTensor, PinnedBuffers

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


class _CallState:
    """A stream, device scratch buffers (by name, grown on demand) and pinned host staging, lent
    to one call at a time: concurrent calls never share one."""

    def __init__(self, cuda: Any, stream: Any = None) -> None:
        self.cuda = cuda
        self.stream = stream if stream is not None else cuda.Stream()
        self.buffers: dict[str, Any] = {}
        self.capacity: dict[str, int] = {}
        self.pinned = PinnedBuffers()

    def buffer(self, name: str, nbytes: int) -> Any:
        """Device buffer `name` of at least `nbytes` (reallocated only when it grows)."""
        if self.capacity.get(name, -1) < nbytes:
            self.buffers[name] = self.cuda.mem_alloc(max(nbytes, 1))
            self.capacity[name] = nbytes
        return self.buffers[name]

    def upload(self, name: str, array: np.ndarray) -> Any:
        """`array` on the device (through pinned memory, asynchronously on this stream)."""
        buffer = self.buffer(name, array.nbytes)
        if array.nbytes:
            self.cuda.memcpy_htod_async(buffer, self.pinned.stage(name, array), self.stream)
        return buffer

    def download(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """Queues device buffer `name` -> a pinned host view (valid after synchronize)."""
        host = self.pinned.get(name, shape, dtype)
        if host.nbytes:
            self.cuda.memcpy_dtoh_async(host, self.buffers[name], self.stream)
        return host


def device_pixel_embed(pixel_embed: DeviceTensor, mask_embed: np.ndarray) -> None:
    """Shape checks of a [D, h, w] float32 pixel_embed already on the device."""
    if pixel_embed.dtype != np.float32 or pixel_embed.ndim != 3:
        raise KernelError(f"pixel_embed on the device must be [D, h, w] float32, got "
                          f"{pixel_embed!r}")
    if pixel_embed.shape[0] != mask_embed.shape[1] or min(pixel_embed.shape[1:]) < 1:
        raise KernelError(f"pixel_embed {pixel_embed.shape} and mask_embed {mask_embed.shape} "
                          "disagree: expected [D, h, w] and [Q, D]")


class CudaKernels:
    """The fatbin's kernels in the device's primary context (kernels/cuda_context.py), callable
    from any number of threads: the module is loaded once; each call takes a stream with its
    device buffers and pinned host staging from a pool (a new one when all are in use), so
    concurrent calls never share one and nothing is tied to a thread that may end. `stream`
    (optional) is the first one of the pool."""

    def __init__(self, fatbin: str | Path | None = None, stream: Any = None,
                 device: int = 0) -> None:
        path = Path(fatbin) if fatbin is not None else fatbin_path()
        if not path.is_file():
            raise KernelsNotBuiltError(
                f"the CUDA kernels {path} do not exist: {FATBIN_HINT} (or point ${FATBIN_ENV} "
                "at one)")
        self._cuda = driver()
        self.device = device
        self._free: list[_CallState] = []
        self._lock = threading.Lock()
        with gpu_context(device):
            self._module = self._cuda.module_from_file(str(path))
            self._functions = {}
            for name, signature in SIGNATURES.items():
                function = self._module.get_function(name)
                function.prepare(signature)
                self._functions[name] = function
            if stream is not None:
                self._free.append(_CallState(self._cuda, stream))

    @contextlib.contextmanager
    def _state(self) -> Iterator[_CallState]:
        """A stream and buffers for one call, with the context current."""
        with gpu_context(self.device):
            with self._lock:
                state = self._free.pop() if self._free else None
            if state is None:
                state = _CallState(self._cuda)
            try:
                yield state
            finally:
                with self._lock:
                    self._free.append(state)

    def _launch(self, state: _CallState, name: str, launch: Launch, *args: Any) -> None:
        self._functions[name].prepared_async_call(launch.grid, launch.block, state.stream, *args,
                                                  shared_size=launch.shared)

    def affinity(self, phrase_embed: np.ndarray, mask_embed: np.ndarray, logit_scale: float,
                 bias: float, plural: np.ndarray,
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """[P, D], [Q, D] -> scores [P, Q] float32, selected [P, Q] uint8 (as cpu.affinity)."""
        phrase, masks, plural_u8 = affinity_args(phrase_embed, mask_embed, plural)
        (num_phrases, dim), num_queries = phrase.shape, len(masks)
        shape = (num_phrases, num_queries)
        if num_phrases * num_queries == 0:
            return np.empty(shape, np.float32), np.empty(shape, np.uint8)
        with self._state() as state:
            args = (state.upload("phrase", phrase), state.upload("mask", masks),
                    np.int32(num_phrases), np.int32(num_queries), np.int32(dim),
                    np.float32(logit_scale), np.float32(bias), state.upload("plural", plural_u8),
                    np.float32(threshold), state.buffer("scores", 4 * num_phrases * num_queries),
                    state.buffer("selected", num_phrases * num_queries))
            self._launch(state, "grt_affinity_kernel", affinity_launch(num_phrases, num_queries),
                         *args)
            scores = state.download("scores", shape, np.float32)
            selected = state.download("selected", shape, np.uint8)
            state.stream.synchronize()
            return scores.copy(), selected.copy()

    def decode_masks(self, pixel_embed: np.ndarray | DeviceTensor, mask_embed: np.ndarray,
                     selected: np.ndarray, crop_h: float, crop_w: float, height: int, width: int,
                     threshold: float = 0.0,
                     packed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Masks [P, H, W] (or packed bits) and stats [P], as cpu.decode_masks. `pixel_embed`
        may be a DeviceTensor (an engine's output): it is read where it is, not copied."""
        on_device = isinstance(pixel_embed, DeviceTensor)
        if on_device:
            masks = np.ascontiguousarray(mask_embed, dtype=np.float32)
            chosen = np.ascontiguousarray(np.asarray(selected).astype(bool), dtype=np.uint8)
            device_pixel_embed(pixel_embed, masks)
            if chosen.ndim != 2 or chosen.shape[1] != len(masks):
                raise KernelError(f"selected {chosen.shape} must be [P, Q] with Q = "
                                  f"{len(masks)}")
            pixel = pixel_embed
        else:
            pixel, masks, chosen = decode_args(pixel_embed, mask_embed, selected)
        check_geometry(crop_h, crop_w, height, width)
        num_phrases = len(chosen)
        shape = mask_shape(num_phrases, height, width, packed)
        if num_phrases == 0:
            return np.empty(shape, np.uint8), np.empty(num_phrases, STATS_DTYPE)
        dim, h, w = pixel.shape
        rows, cols = region(h, w, crop_h, crop_w)
        with self._state() as state:
            logits = state.buffer("logits", 4 * num_phrases * rows * cols)
            acc = state.buffer("stats_acc", STATS_ACC_BYTES * num_phrases)
            device_masks = state.buffer("masks", int(np.prod(shape)))
            pixel_ptr = pixel.ptr if on_device else state.upload("pixel", pixel)
            self._launch(state, "grt_phrase_logits_kernel",
                         logits_launch(rows, cols, num_phrases), pixel_ptr, np.int32(dim),
                         np.int32(h), np.int32(w), np.int32(rows), np.int32(cols),
                         state.upload("mask", masks), np.int32(len(masks)),
                         state.upload("selected_in", chosen), np.int32(num_phrases), logits, acc)
            if height * width:
                rows_per = rows_per_block(height, width, num_phrases)
                self._launch(state, "grt_decode_masks_kernel",
                             decode_launch(height, width, num_phrases, rows_per), logits,
                             np.int32(rows), np.int32(cols), np.float64(crop_h / height),
                             np.float64(crop_w / width), np.int32(height), np.int32(width),
                             np.float32(threshold), np.int32(bool(packed)), np.int32(rows_per),
                             device_masks, acc)
            state.buffer("stats", STATS_DTYPE.itemsize * num_phrases)
            self._launch(state, "grt_finalize_stats_kernel", finalize_launch(num_phrases), acc,
                         np.int32(num_phrases), state.buffers["stats"])
            out = state.download("masks", shape, np.uint8)
            stats = state.download("stats", (num_phrases,), STATS_DTYPE)
            state.stream.synchronize()
            return out.copy(), stats.copy()
