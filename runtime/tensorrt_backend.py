"""TensorRT backend: a package's plans run with pycuda (TensorRT 10.x and 11.x Python APIs).

Per engine: the plan is checked against this machine (TensorRT version, GPU) from the manifest's
engine record, deserialized once, and its I/O tensors are bound by name with
`set_tensor_address`; device buffers and pinned host buffers are allocated once at the
profile's largest shapes; each call copies the input up, runs `execute_async_v3` on the one
stream and copies the outputs back once.

Not run on the machine this was written on (no TensorRT, no GPU): written against the documented
API, exercised where TensorRT and pycuda are installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from groundrt.export.engine import check_engine_record, current_platform
from groundrt.package import PackageError

GRAPH_PRECISION = {"int8-trt": "int8", "int8-cpu": "int8", "fp32": "fp32", "fp16": "fp16"}


class TrtEngine:
    """One deserialized plan with its execution context and buffers."""

    def __init__(self, plan: Path, stream, trt, cuda) -> None:
        self.trt, self.cuda, self.stream = trt, cuda, stream
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise PackageError(f"TensorRT could not load {plan}: rebuild it with "
                               "`groundrt export engine`")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = [], []
        self.device, self.host = {}, {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        for name in self.inputs:
            shape = tuple(self.engine.get_tensor_shape(name))
            if -1 in shape:  # dynamic: the profile's largest shape sizes the buffers
                shape = tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
            self.context.set_input_shape(name, shape)
            self._allocate(name, shape)
        for name in self.outputs:  # sized for the largest input shapes set above
            self._allocate(name, tuple(self.context.get_tensor_shape(name)))

    def _allocate(self, name: str, shape: tuple[int, ...]) -> None:
        dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
        self.host[name] = self.cuda.pagelocked_empty(shape, dtype)
        self.device[name] = self.cuda.mem_alloc(self.host[name].nbytes)
        self.context.set_tensor_address(name, int(self.device[name]))

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in feeds.items():
            staged = self.host[name].reshape(-1)[:array.size].reshape(array.shape)
            np.copyto(staged, array.astype(staged.dtype, copy=False))
            self.context.set_input_shape(name, array.shape)
            self.cuda.memcpy_htod_async(self.device[name], staged, self.stream)
        shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in self.outputs}
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        results = {}
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            out = self.host[name].reshape(-1)[:size].reshape(shape)
            self.cuda.memcpy_dtoh_async(out, self.device[name], self.stream)
            results[name] = out
        self.stream.synchronize()
        return {name: out.copy() for name, out in results.items()}


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, folder: Path, manifest: dict, precision: str | None = None) -> None:
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context on device 0)
        import pycuda.driver as cuda
        import tensorrt as trt

        wanted = GRAPH_PRECISION.get(precision or manifest["precision"], precision)
        engines = {e["graph"]: e for e in manifest.get("engines", [])
                   if e["graph"] == "text" or e["precision"] == wanted}
        if set(engines) != {"image", "text"}:
            raise PackageError(
                f"package {folder} has no TensorRT {wanted} engines for both graphs (found "
                f"{sorted(e['file'] for e in manifest.get('engines', []))}): build them with "
                f"`groundrt export engine --package {folder} --precision {wanted}`")
        platform = current_platform()
        for record in engines.values():
            check_engine_record(record, platform, folder)
        self.precision = wanted
        self.stream = cuda.Stream()
        self._image = TrtEngine(folder / engines["image"]["file"], self.stream, trt, cuda)
        self._text = TrtEngine(folder / engines["text"]["file"], self.stream, trt, cuda)
        self._token_dtype = self._text.host[self._text.inputs[0]].dtype

    def image(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._image({"image": images})
        return out["pixel_embed"], out["mask_embed"]

    def text(self, token_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=self._token_dtype)[None]
        return self._text({"token_ids": ids})["token_embed"][0]
