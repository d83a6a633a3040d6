"""groundrt's one CUDA context policy: the device's primary context, retained once per process
and made current in each thread, for the duration of each piece of GPU work.

    with gpu_context(device):      # any thread: the primary context is current inside
        ...                         # pycuda allocations, copies, launches, TensorRT calls

Why the primary context: it is the context the CUDA runtime API uses, so TensorRT (cudart
underneath), ONNX Runtime's CUDA provider, CuPy and PyTorch in the same process all work in it
and a device pointer from one is valid in the others (the engine's pixel_embed goes to the mask
kernels without leaving the GPU). `pycuda.autoinit` instead creates a new context that is
current only in the importing thread, so a worker thread of `groundrt run` had no context.

Rules every GPU user in groundrt follows (runtime/tensorrt_backend.py, kernels/cuda.py):
* GPU work happens inside `gpu_context`; contexts nest (push on entry, pop on exit), so a
  caller that already made it current pays one push/pop;
* one pycuda Context object per device and process (the retained primary context), pushed in
  every thread: pycuda frees an allocation or a stream without switching contexts only when
  the freeing thread has this same object current;
* streams, execution contexts and scratch buffers are used by one call at a time (a lock, or a
  pool they are lent from), never tied to a thread that may end; what crosses threads (an
  engine output handed to the decoding thread) is owned by a pool and goes back to it without
  a CUDA call.
The context is released at interpreter exit. pycuda is imported on first use, so this module
imports without it.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_contexts: dict[int, Any] = {}


def driver() -> Any:
    """pycuda.driver, initialized."""
    import pycuda.driver as cuda

    cuda.init()
    return cuda


def primary_context(device: int = 0) -> Any:
    """The retained primary context of `device` (one pycuda Context object per process)."""
    with _lock:
        context = _contexts.get(device)
        if context is None:
            cuda = driver()
            if not 0 <= device < cuda.Device.count():
                raise ValueError(f"CUDA device {device} does not exist (this machine has "
                                 f"{cuda.Device.count()})")
            context = cuda.Device(device).retain_primary_context()
            if not _contexts:
                atexit.register(_release_all)
            _contexts[device] = context
        return context


@contextmanager
def gpu_context(device: int = 0) -> Iterator[Any]:
    """Makes the primary context of `device` current in this thread inside the block."""
    context = primary_context(device)
    context.push()
    try:
        yield context
    finally:
        context.pop()


def _release_all() -> None:
    with _lock:
        for context in _contexts.values():
            with contextlib.suppress(Exception):  # the driver may be gone at exit already
                context.detach()  # cuDevicePrimaryCtxRelease
        _contexts.clear()
