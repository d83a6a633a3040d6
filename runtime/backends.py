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
        network v2, (image_keys, image_values [B, layers, h, N, d])."""
        ...

    def text(self, token_ids: np.ndarray) -> tuple[np.ndarray, ...]:
        """[T] token ids -> (token features [T, D]) or, for network v2, (token features
        [T, C], every phrase-decoder layer's keys and values of every token [T, layers, 2, C])."""
        ...

    def phrase(self, *inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network v2: phrase_mean, own_keys, own_values, own_bias, image_keys, image_values
        (groundrt.model.phrase_decoder.SplitPhraseDecoder) -> kernels [B, P, D], presence
        logits [B, P], phrase_embed [B, P, D]."""
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
        # network v2: the phrase decoder split as the package's graphs run it
        self.split = self.model.split_phrase_decoder() if self.model.phrase_decoder else None

    def image(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        from groundrt.model.network import image_graph

        x = self._torch.from_numpy(images)
        with self._torch.no_grad():
            if self.split is not None:
                return tuple(v.numpy() for v in image_graph(self.model, self.split, x).values())
            return tuple(v.numpy() for v in self.model.image_encoder(x))

    def text(self, token_ids: np.ndarray) -> tuple[np.ndarray, ...]:
        from groundrt.model.network import text_graph

        ids = self._torch.from_numpy(np.asarray(token_ids, dtype=np.int64))[None]
        with self._torch.no_grad():
            if self.split is not None:
                return tuple(v[0].numpy() for v in text_graph(self.model, self.split,
                                                              ids).values())
            return (self.model.text_encoder(ids)[0].numpy(),)

    def phrase(self, *inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from groundrt.model.network import phrase_graph

        out = phrase_graph(self.split, *(self._torch.from_numpy(a) for a in inputs))
        return out["kernels"].numpy(), out["presence"].numpy(), out["phrase_embed"].numpy()


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
