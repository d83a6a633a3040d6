"""The `groundrt` model of a Triton repository (export/triton_repo.py): a Python-backend BLS model.

Triton's Python backend loads the repository's groundrt/1/model.py, which imports
TritonPythonModel from here (so the server's Python needs `pip install groundrt`). Per request
batch: runtime/serving.py parses and checks each request; a BackendGrounder (the package's
manifest and tokenizer in groundrt/1/package/) grounds them, its graphs sent as BLS requests to
groundrt_image, groundrt_text and groundrt_phrase (ONNX Runtime or TensorRT models); each
request gets its JSON result or its own error. The outputs of graph models on a GPU come back
in CPU memory (`preferred_memory`): the mask decoding runs in this model, on the CPU kernels.

`triton_python_backend_utils` exists only inside Triton's Python-backend stub: this module
imports it when the server loads the model (not on import). tests/test_triton_bls.py runs this
model in the tritonserver PyTriton's wheel bundles (which has only the Python backend: there
the graph models run their model.onnx in ONNX Runtime inside Python-backend models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from groundrt.errors import GroundrtError
from groundrt.runtime.serving import BackendGrounder, RequestHandler, result_tensor


class TritonGraphError(GroundrtError):
    """A graph model of the repository answered a BLS request with an error."""


class BlsBackend:
    """The Backend protocol (runtime/backends.py) over BLS requests to the graph models."""

    name = "triton-bls"

    def __init__(self, pb_utils: Any, manifest: dict, phrase_model: str) -> None:
        self.pb = pb_utils
        self.precision = manifest["precision"]
        io = manifest["io"]
        self.outputs = {graph: [t["name"] for t in io[graph]["outputs"]] for graph in io}
        self.phrase_inputs = [t["name"] for t in io.get("phrase", {}).get("inputs", [])]
        self.phrase_model = phrase_model

    def _run(self, model: str, graph: str, inputs: dict[str, np.ndarray]) -> tuple:
        pb = self.pb
        request = pb.InferenceRequest(
            model_name=model, requested_output_names=self.outputs[graph],
            inputs=[pb.Tensor(name, np.ascontiguousarray(a)) for name, a in inputs.items()],
            preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0))
        response = request.exec()
        if response.has_error():
            raise TritonGraphError(f"{model}: {response.error().message()}")
        return tuple(pb.get_output_tensor_by_name(response, name).as_numpy()
                     for name in self.outputs[graph])

    def image(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._run("groundrt_image", "image", {"image": images})

    def text(self, token_ids: np.ndarray) -> tuple[np.ndarray, ...]:
        ids = np.asarray(token_ids, dtype=np.int32)[None]
        return tuple(out[0] for out in self._run("groundrt_text", "text", {"token_ids": ids}))

    def phrase(self, *inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        kernels, presence, embed = self._run(self.phrase_model, "phrase",
                                             dict(zip(self.phrase_inputs, inputs, strict=True)))
        return kernels, presence, embed


class TritonPythonModel:
    """Triton's Python-backend interface: initialize(args), execute(requests), finalize()."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"] / parameters["package"]
        manifest = json.loads((folder / "manifest.json").read_text())
        backend = BlsBackend(pb_utils, manifest, parameters.get("phrase_graph", ""))
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.handler = RequestHandler(BackendGrounder(folder, backend),
                                      max(1, int(config.get("max_batch_size", 1))))

    def _input(self, request: Any, name: str) -> np.ndarray | None:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def execute(self, requests: list) -> list:
        inputs = [{name: self._input(r, name) for name in ("image", "caption", "phrases")}
                  for r in requests]
        responses = []
        for mine in self.handler.handle_requests(inputs, self.batched):
            error = next((a for a in mine if isinstance(a, Exception)), None)
            if error is not None:
                responses.append(self.pb.InferenceResponse(
                    output_tensors=[], error=self.pb.TritonError(str(error))))
            else:
                responses.append(self.pb.InferenceResponse(output_tensors=[
                    self.pb.Tensor("result", result_tensor(mine, self.batched))]))
        return responses

    def finalize(self) -> None:
        """Nothing to release: the graph models own the sessions."""
