"""TensorRT backend: a package's plans run with pycuda (TensorRT 10.x and 11.x Python APIs).

Per engine: the plan is checked against this machine (TensorRT version, GPU) from the manifest's
engine record and deserialized once. GPU work runs in the device's primary context, made current
in whichever thread calls (groundrt.kernels.cuda_context: the context policy). Concurrency: an
engine with dynamic shapes and one optimization profile may be used by one execution context at
a time (TensorRT's rule), so each engine has one execution context, its own stream and staging
buffers (device inputs, pinned host copies), guarded by a lock: calls from several threads are
safe and run one after another per engine (the image and text engines run concurrently).

Outputs come back to the host through pinned buffers, except those asked for on the device
(`device_outputs`, set by the Grounder when the CUDA mask kernels run): `pixel_embed` is then
written into a pooled device buffer and handed over as a DeviceTensor, which the kernels read in
place (no device -> host -> device round trip); the buffer returns to the pool when the last
reference to it goes, in any thread, so a frame in flight in the decoding thread is never
overwritten by the next inference.

Not run on the machine this was written on (no TensorRT, no GPU): written against the documented
API, exercised where TensorRT and pycuda are installed (benchmarks/gpu_checks.sh).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from groundrt.export.engine import check_engine_record, current_platform
from groundrt.kernels.cuda_context import driver, gpu_context
from groundrt.kernels.device_buffers import DevicePool, DeviceTensor, PinnedBuffers
from groundrt.package import PackageError

GRAPH_PRECISION = {"int8-trt": "int8", "int8-cpu": "int8", "fp32": "fp32", "fp16": "fp16"}


class TrtEngine:
    """One deserialized plan, its execution context and buffers (see the module docstring)."""

    def __init__(self, plan: Path, trt: Any, device: int = 0) -> None:
        self.trt, self.device = trt, device
        self.cuda = driver()
        self._lock = threading.Lock()
        with gpu_context(device):
            self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
            if self.engine is None:
                raise PackageError(f"TensorRT could not load {plan}: rebuild it with "
                                   "`groundrt export engine`")
            self.context = self.engine.create_execution_context()
            self.stream = self.cuda.Stream()
            self.pinned = PinnedBuffers()
            self.inputs, self.outputs = [], []
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (self.inputs if is_input else self.outputs).append(name)
            self.dtypes = {name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                           for name in self.inputs + self.outputs}
            self.device_buffers: dict[str, Any] = {}
            for name in self.inputs:
                shape = tuple(self.engine.get_tensor_shape(name))
                if -1 in shape:  # dynamic: the profile's largest shape sizes the buffers
                    shape = tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
                self.context.set_input_shape(name, shape)
                self._allocate(name, shape)
            # sized for the largest input shapes set above
            self.max_shapes = {name: tuple(self.context.get_tensor_shape(name))
                               for name in self.outputs}
            for name in self.outputs:
                self._allocate(name, self.max_shapes[name])
        self.pools: dict[str, DevicePool] = {}

    def _allocate(self, name: str, shape: tuple[int, ...]) -> None:
        nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
        self.device_buffers[name] = self.cuda.mem_alloc(max(nbytes, 1))

    def _pool(self, name: str) -> DevicePool:
        if name not in self.pools:
            nbytes = int(np.prod(self.max_shapes[name])) * self.dtypes[name].itemsize
            self.pools[name] = DevicePool(nbytes, self.device)
        return self.pools[name]

    def __call__(self, feeds: dict[str, np.ndarray],
                 on_device: tuple[str, ...] = ()) -> dict[str, np.ndarray | DeviceTensor]:
        """Runs the plan: host inputs by name -> outputs by name (host copies, or DeviceTensors
        for the names in `on_device`)."""
        with self._lock, gpu_context(self.device):
            for name, array in feeds.items():
                staged = self.pinned.stage(name, np.ascontiguousarray(array,
                                                                      self.dtypes[name]))
                self.context.set_input_shape(name, staged.shape)
                self.context.set_tensor_address(name, int(self.device_buffers[name]))
                self.cuda.memcpy_htod_async(self.device_buffers[name], staged, self.stream)
            results: dict[str, Any] = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if name in on_device:
                    results[name] = DeviceTensor.from_pool(self._pool(name), shape,
                                                           self.dtypes[name])
                    self.context.set_tensor_address(name, results[name].ptr)
                else:
                    self.context.set_tensor_address(name, int(self.device_buffers[name]))
                    results[name] = self.pinned.get(name, shape, self.dtypes[name])
            if not self.context.execute_async_v3(self.stream.handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for name in self.outputs:
                if name not in on_device:
                    self.cuda.memcpy_dtoh_async(results[name], self.device_buffers[name],
                                                self.stream)
            self.stream.synchronize()  # device outputs are complete before another thread reads
            return {name: out if name in on_device else out.copy()
                    for name, out in results.items()}


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, folder: Path, manifest: dict, precision: str | None = None,
                 device: int = 0) -> None:
        import tensorrt as trt

        wanted = GRAPH_PRECISION.get(precision or manifest["precision"], precision)
        graphs = set(manifest["graphs"])  # image, text and (network v2) phrase
        engines = {e["graph"]: e for e in manifest.get("engines", [])
                   if e["graph"] != "image" or e["precision"] == wanted}
        if set(engines) != graphs:
            raise PackageError(
                f"package {folder} has no TensorRT {wanted} engines for all of its graphs "
                f"({', '.join(sorted(graphs))}; found "
                f"{sorted(e['file'] for e in manifest.get('engines', []))}): build them with "
                f"`groundrt export engine --package {folder} --precision {wanted}`")
        platform = current_platform()
        for record in engines.values():
            check_engine_record(record, platform, folder)
        self.precision = wanted
        self.device = device
        # the Grounder sets it when the CUDA mask kernels run: pixel_embed stays on the GPU
        self.device_outputs = False
        self._image = TrtEngine(folder / engines["image"]["file"], trt, device)
        self._text = TrtEngine(folder / engines["text"]["file"], trt, device)
        self._phrase = (TrtEngine(folder / engines["phrase"]["file"], trt, device)
                        if "phrase" in engines else None)
        self._token_dtype = self._text.dtypes[self._text.inputs[0]]
        io = manifest["io"]
        self._outputs = {graph: [t["name"] for t in io[graph]["outputs"]] for graph in graphs}
        self._phrase_inputs = [t["name"] for t in io.get("phrase", {}).get("inputs", [])]

    def image(self, images: np.ndarray) -> tuple[np.ndarray | DeviceTensor, ...]:
        """[B, 3, S, S] -> (pixel_embed [B, D, h, w]: a DeviceTensor when device_outputs,
        mask_embed [B, Q, D] on the host) and, for network v2, (image_keys, image_values)."""
        out = self._image({"image": images},
                          on_device=("pixel_embed",) if self.device_outputs else ())
        return tuple(out[name] for name in self._outputs["image"])

    def text(self, token_ids: np.ndarray) -> tuple[np.ndarray, ...]:
        ids = np.asarray(token_ids, dtype=self._token_dtype)[None]
        out = self._text({"token_ids": ids})
        return tuple(out[name][0] for name in self._outputs["text"])

    def phrase(self, *inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network v2: the phrase engine (any number of phrases up to the profile's 64)."""
        if self._phrase is None:
            raise PackageError("this package has no phrase graph (network v1)")
        out = self._phrase(dict(zip(self._phrase_inputs, inputs, strict=True)))
        return out["kernels"], out["presence"], out["phrase_embed"]
