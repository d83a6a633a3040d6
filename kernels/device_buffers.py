"""Device memory that crosses threads, and pinned host staging (see cuda_context.py's rules).

* `DeviceTensor`: a float32 (or other) array on the GPU, [B, ...] with `tensor[i]` views; what
  the TensorRT backend hands to the CUDA mask kernels instead of a host copy. It holds a slot of
  a `DevicePool`; the slot goes back to the pool (no CUDA call, any thread) when the tensor and
  all its views are gone, so the producer reuses it only after every consumer finished.
* `DevicePool`: fixed-size device allocations made by the producing thread (inside its
  gpu_context), reused, freed when the pool is closed.
* `PinnedBuffers`: per-name page-locked host buffers, grown on demand, for asynchronous
  copies (a copy from pageable memory is staged by the driver and blocks).

pycuda is reached through cuda_context.driver(), so this module imports without it.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from groundrt.kernels.cuda_context import driver, gpu_context


class DevicePool:
    """Device allocations of `nbytes` each, lent out as DeviceTensors and taken back."""

    def __init__(self, nbytes: int, device: int = 0) -> None:
        self.nbytes, self.device = max(int(nbytes), 1), device
        self._free: list[Any] = []
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        """A free allocation, or a new one (call with the device's context current)."""
        with self._lock:
            if self._free:
                return self._free.pop()
        allocation = driver().mem_alloc(self.nbytes)
        with self._lock:
            self._all.append(allocation)
        return allocation

    def release(self, allocation: Any) -> None:
        with self._lock:
            self._free.append(allocation)

    @property
    def size(self) -> int:
        """Allocations made so far (in use or free)."""
        return len(self._all)

    def close(self) -> None:
        with self._lock, gpu_context(self.device):
            for allocation in self._all:
                allocation.free()
            self._all.clear()
            self._free.clear()


class DeviceTensor:
    """An array on the GPU: `ptr` (device address), `shape`, `dtype`; `tensor[i]` is the i-th
    slice of the first axis (a view that keeps the parent alive); `to_host()` copies it back."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype | type, device: int = 0,
                 owner: Any = None, pool: DevicePool | None = None) -> None:
        self.ptr, self.shape, self.dtype = int(ptr), tuple(int(d) for d in shape), np.dtype(dtype)
        self.device = device
        self._owner = owner  # the allocation (pooled) or the parent tensor (a view)
        self._pool = pool

    @classmethod
    def from_pool(cls, pool: DevicePool, shape: tuple[int, ...],
                  dtype: np.dtype | type) -> DeviceTensor:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes > pool.nbytes:
            raise ValueError(f"a {shape} {np.dtype(dtype)} tensor needs {nbytes} bytes, the "
                             f"pool's allocations hold {pool.nbytes}")
        allocation = pool.acquire()
        return cls(int(allocation), shape, dtype, pool.device, allocation, pool)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> DeviceTensor:
        if not isinstance(index, (int, np.integer)) or not -len(self) <= index < len(self):
            raise IndexError(f"DeviceTensor {self.shape} takes an index of its first axis, got "
                             f"{index!r}")
        index = int(index) % len(self)
        step = self.nbytes // len(self)
        return DeviceTensor(self.ptr + index * step, self.shape[1:], self.dtype, self.device,
                            owner=self)

    def to_host(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        with gpu_context(self.device):
            driver().memcpy_dtoh(out, self.ptr)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = self.to_host()
        return host if dtype is None else host.astype(dtype)

    def __del__(self) -> None:
        if self._pool is not None:
            self._pool.release(self._owner)
            self._pool = None

    def __repr__(self) -> str:
        return f"DeviceTensor({list(self.shape)}, {self.dtype}, cuda:{self.device})"


class PinnedBuffers:
    """Page-locked host arrays by name, reallocated only when a larger one is asked for
    (call with the device's context current; used by one call at a time)."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A pinned [shape] view of buffer `name` (contents undefined)."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape))
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = driver().pagelocked_empty(max(size, 1), dtype)
            self._buffers[name] = buffer
        return buffer[:size].reshape(shape)

    def stage(self, name: str, array: np.ndarray) -> np.ndarray:
        """`array` copied into pinned buffer `name`."""
        staged = self.get(name, array.shape, array.dtype)
        np.copyto(staged, array)
        return staged
