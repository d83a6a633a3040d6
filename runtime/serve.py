"""`groundrt serve`: a local Triton Inference Server through PyTriton (`pip install
'groundrt[serve]'`), its `groundrt` model grounded by an in-process Grounder.

PyTriton starts the `tritonserver` its wheel bundles (no GPU needed) and hands each batch of
requests to `ServeModel` in this process; the model's inputs and outputs are
runtime/serving.py's, the same as the Triton repository's BLS model (export/triton_repo.py),
so one client (runtime/client.py) talks to both. Triton serves HTTP (/v2/health/live,
/v2/health/ready, /v2/models/groundrt/infer), gRPC and Prometheus metrics (/metrics:
nv_inference_request_success, nv_inference_queue_duration_us, ...).

Dynamic batching gathers requests of the same shape (Triton's rule: same encoded size, e.g. the
frames of one camera sent raw-compressed alike; JPEGs of different sizes run one by one).
A batch is grounded per caption with one image-graph call. PyTriton answers a batch with its
results or with one error: a malformed request fails the batch it is in (with dynamic
batching, only requests of its own shape share it; the Triton repository's BLS model answers
each request on its own).
"""

from __future__ import annotations

import os
import signal
import sysconfig
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from groundrt.runtime.grounder import Grounder
from groundrt.runtime.serving import (
    DEFAULT_MAX_BATCH,
    MODEL_NAME,
    QUEUE_DELAY_US,
    RequestError,
    RequestHandler,
    result_tensor,
)


@dataclass(frozen=True)
class ServeOptions:
    model: str | None = None
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "127.0.0.1"
    batching: bool = True
    max_batch: int = DEFAULT_MAX_BATCH
    instances: int = 1
    threads: int = 2
    precision: str | None = None


def stub_library_path() -> None:
    """The Python backend's stub links libpython; under a pyenv (or any non-system) Python it
    finds it only with the interpreter's LIBDIR on LD_LIBRARY_PATH (the server inherits it)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and libdir not in current.split(os.pathsep):
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, current]))


class ServeModel:
    """PyTriton's inference callable: a list of requests (input name -> numpy) in, a list of
    responses (output name -> numpy) out, one per request."""

    def __init__(self, grounder: Grounder, batched: bool, max_batch: int) -> None:
        self.batched = batched
        self.handler = RequestHandler(grounder, max_batch)

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        answers = self.handler.handle_requests([r.data for r in requests], self.batched)
        errors = [a for mine in answers for a in mine if isinstance(a, Exception)]
        if errors:  # PyTriton answers a batch with its results or with one error
            raise RequestError("; ".join(dict.fromkeys(str(e) for e in errors)))
        return [{"result": result_tensor(mine, self.batched)} for mine in answers]


def bind(triton: Any, options: ServeOptions) -> list[Grounder]:
    """Binds the `groundrt` model (one Grounder per instance) to a pytriton Triton."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    grounders = [Grounder(options.model, backend="onnxruntime", precision=options.precision,
                          threads=options.threads) for _ in range(options.instances)]
    config = ModelConfig(batching=options.batching,
                         max_batch_size=options.max_batch if options.batching else 0,
                         batcher=DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US))
    triton.bind(
        model_name=MODEL_NAME,
        infer_func=[ServeModel(g, options.batching, options.max_batch) for g in grounders],
        inputs=[Tensor(name="image", dtype=np.uint8, shape=(-1,)),
                Tensor(name="caption", dtype=np.bytes_, shape=(1,), optional=True),
                Tensor(name="phrases", dtype=np.bytes_, shape=(-1,), optional=True)],
        outputs=[Tensor(name="result", dtype=np.bytes_, shape=(1,))],
        config=config, strict=True)
    return grounders


def triton_config(options: ServeOptions) -> Any:
    from pytriton.triton import TritonConfig

    return TritonConfig(http_address=options.address, http_port=options.http_port,
                        grpc_address=options.address, grpc_port=options.grpc_port,
                        metrics_port=options.metrics_port, allow_metrics=True)


def start(options: ServeOptions) -> Any:
    """A running server (pytriton's Triton; stop() it), for tests and benchmarks."""
    from pytriton.triton import Triton

    stub_library_path()
    triton = Triton(config=triton_config(options))
    try:
        bind(triton, options)
        triton.run()
    except BaseException:
        triton.stop()
        raise
    return triton


def serve(options: ServeOptions) -> None:
    """Serves until SIGINT / SIGTERM."""
    triton = start(options)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"serving model {MODEL_NAME}: http://{options.address}:{options.http_port}, "
          f"grpc://{options.address}:{options.grpc_port}, metrics "
          f"http://{options.address}:{options.metrics_port}/metrics (Ctrl-C stops)",
          flush=True)
    try:
        done.wait()
    finally:
        triton.stop()
