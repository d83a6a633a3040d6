"""Backends run a model's graphs: image -> (pixel_embed, mask_embed[, objects, memory]),
tokens -> features and, for network v2, phrase tokens + objects + memory -> (kernels,
presence, phrase_embed).

* `onnxruntime` (default, everywhere): a package's ONNX graphs; CPU, or the CUDA / TensorRT
  execution providers when onnxruntime-gpu provides them;
* `tensorrt`: a package's TensorRT plans with pycuda (runtime/tensorrt_backend.py);
* `torch`: PyTorch eager on a training run folder (the reference; needs `groundrt[export]`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from groundrt.errors import GroundrtError
from groundrt.runtime.onnx_graphs import OnnxGraphs

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
EXTRA_OF_BACKEND = {"tensorrt": "gpu", "torch": "export"}


class BackendUnavailableError(GroundrtError, ImportError):
    """The requested backend's libraries are not installed or it cannot run this model."""


class Backend(Protocol):
    name: str
    precision: str

    def image(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        """[B, 3, S, S] float32 -> (pixel_embed [B, D, h, w], mask_embed [B, Q, D]) and, for
        network v2, (objects [B, Q, C], memory [B, K, C])."""
        ...

    def text(self, token_ids: np.ndarray) -> np.ndarray:
        """[T] token ids -> token features [T, D] (v2: [T, C])."""
        ...

    def phrase(self, objects: np.ndarray, memory: np.ndarray, phrase_tokens: np.ndarray,
               phrase_token_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network v2: [B, Q, C], [B, K, C], [B, P, L, C], [B, P, L] bool -> kernels [B, P, D],
        presence logits [B, P], phrase_embed [B, P, D]."""
        ...


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, folder: Path, manifest: dict, precision: str | None, threads: int,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = providers or ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime here has no {', '.join(missing)} (available: "
                f"{', '.join(available)}): install onnxruntime-gpu for CUDA / TensorRT")
        self.graphs = OnnxGraphs(folder, precision, threads, providers, manifest)
        self.precision = self.graphs.precision
        self.image, self.text, self.phrase = self.graphs.image, self.graphs.text, self.graphs.phrase


class TorchBackend:
    """PyTorch eager on a run folder: the reference the other backends are compared with."""

    name = "torch"
    precision = "fp32"

    def __init__(self, folder: Path, threads: int) -> None:
        import torch

        from groundrt.model.checkpoint import load_model

        torch.set_num_threads(threads)
        self._torch = torch
        self.model = load_model(folder).eval()

    def image(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        x = self._torch.from_numpy(images)
        with self._torch.no_grad():
            if self.model.phrase_decoder is not None:
                return tuple(v.numpy() for v in self.model.image_graph(x).values())
            return tuple(v.numpy() for v in self.model.image_encoder(x))

    def phrase(self, objects: np.ndarray, memory: np.ndarray, phrase_tokens: np.ndarray,
               phrase_token_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        args = (self._torch.from_numpy(a) for a in (objects, memory, phrase_tokens,
                                                    phrase_token_valid))
        out = self.model.phrase_graph(*args)
        return out["kernels"].numpy(), out["presence"].numpy(), out["phrase_embed"].numpy()

    def text(self, token_ids: np.ndarray) -> np.ndarray:
        ids = self._torch.from_numpy(np.asarray(token_ids, dtype=np.int64))[None]
        with self._torch.no_grad():
            return self.model.text_encoder(ids)[0].numpy()


def tensorrt_usable(manifest: dict) -> bool:
    """Engines in the package, and tensorrt + pycuda importable here."""
    return bool(manifest.get("engines")) and all(
        importlib.util.find_spec(m) is not None for m in ("tensorrt", "pycuda"))


def create_backend(kind: str, folder: Path, manifest: dict, precision: str | None,
                   threads: int) -> Backend:
    """The backend `kind` for a package (or, for "torch", a run folder)."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}: choose one of {', '.join(BACKENDS)}")
    if kind == "auto":
        kind = "tensorrt" if tensorrt_usable(manifest) else "onnxruntime"
    try:
        if kind == "onnxruntime":
            return OnnxRuntimeBackend(folder, manifest, precision, threads)
        if kind == "torch":
            return TorchBackend(folder, threads)
        from groundrt.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(folder, manifest, precision)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_BACKEND.get(kind, "")
        raise BackendUnavailableError(
            f"the {kind} backend needs {exc.name}, which is not installed: "
            f"pip install 'groundrt[{extra}]'") from exc
