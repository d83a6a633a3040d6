"""Backends run a model's graphs: image -> (pixel_embed, mask_embed[, image_keys,
image_values]), tokens -> features[, token_kv] and, for network v2, the phrase graph ->
(kernels, presence, phrase_embed).

* `onnxruntime` (default, everywhere): a package's ONNX graphs on the CPU (`device="cpu"`), or
  on a GPU (`device="cuda"` / `"cuda:N"`) with ONNX Runtime's CUDA execution provider, or its
  TensorRT provider (`ort_provider="tensorrt"`), where onnxruntime-gpu provides them;
* `tensorrt`: a package's TensorRT plans with pycuda (runtime/tensorrt_backend.py);
* `torch`: PyTorch eager on a training run folder (the reference; needs `groundrt[export]`);
* `auto`: TensorRT where the package has engines and they run here, else ONNX Runtime on
  `device`, else ONNX Runtime on the CPU; each step down is one BackendFallbackWarning that
  names why.

On a GPU the default image graph is the fp32 one (the CPU's default, int8-cpu, is a QUInt8
graph the CUDA provider runs dequantized); with the TensorRT provider it is int8-trt (the S8S8
Q/DQ graph TensorRT runs in INT8) where the package has it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from groundrt.errors import GroundrtError
from groundrt.runtime.onnx_graphs import OnnxGraphs

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
EXTRA_OF_BACKEND = {"tensorrt": "gpu", "torch": "export"}
ORT_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
ORT_GPU_HINT = ("install onnxruntime-gpu instead of onnxruntime (pip uninstall -y onnxruntime && "
                "pip install onnxruntime-gpu; on a Jetson the wheel for its JetPack, see the "
                "README), with the CUDA and cuDNN libraries it was built for")


class BackendUnavailableError(GroundrtError, ImportError):
    """The requested backend's libraries are not installed or it cannot run this model."""


class BackendFallbackWarning(UserWarning):
    """backend="auto" did not get its first choice (the message says why) and runs another."""


def parse_device(device: str) -> int | None:
    """"cpu" -> None; "cuda" -> 0; "cuda:N" -> N."""
    text = str(device).strip().lower()
    if text == "cpu":
        return None
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N")


def ort_providers(device: str, ort_provider: str | None = None,
                  cache_dir: Path | None = None) -> list[Any]:
    """ONNX Runtime's provider list for `device` ("cpu", "cuda", "cuda:N") and, on a GPU,
    `ort_provider` ("cuda", the default, or "tensorrt": TensorRT's provider first, its plans
    cached in `cache_dir`, CUDA for what TensorRT does not take). The CPU provider comes last
    in every list (ONNX Runtime places there whatever the others do not run)."""
    index = parse_device(device)
    if index is None:
        if ort_provider not in (None, "cpu"):
            raise ValueError(f"ort_provider {ort_provider!r} needs a GPU device (cuda or "
                             "cuda:N), not cpu")
        return ["CPUExecutionProvider"]
    provider = ort_provider or "cuda"
    if provider not in ORT_PROVIDERS:
        raise ValueError(f"unknown ort_provider {provider!r}: choose cuda or tensorrt")
    providers: list[Any] = [(ORT_PROVIDERS["cuda"], {"device_id": index}),
                            "CPUExecutionProvider"]
    if provider == "tensorrt":
        options: dict[str, Any] = {"device_id": index, "trt_engine_cache_enable": True,
                                   "trt_timing_cache_enable": True}
        if cache_dir is not None:
            options["trt_engine_cache_path"] = str(cache_dir)
            options["trt_timing_cache_path"] = str(cache_dir)
        providers.insert(0, (ORT_PROVIDERS["tensorrt"], options))
    return providers


def default_gpu_precision(manifest: dict, ort_provider: str | None) -> str:
    images = manifest["graphs"]["image"]
    if ort_provider == "tensorrt" and "int8-trt" in images:
        return "int8-trt"
    return "fp32" if "fp32" in images else manifest["precision"]


def ort_trt_cache(folder: Path, manifest: dict) -> Path:
    """Where ONNX Runtime's TensorRT provider keeps its plans for a package: a per-user cache
    (the package folder may be read-only), one folder per package content."""
    digest = hashlib.sha256(repr(sorted(manifest.get("files", {}).items())).encode())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "groundrt" / "ort-tensorrt" / f"{folder.name}-{digest.hexdigest()[:12]}"


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
    """A package's ONNX graphs in ONNX Runtime on `device` (see ort_providers)."""

    name = "onnxruntime"

    def __init__(self, folder: Path, manifest: dict, precision: str | None, threads: int,
                 device: str = "cpu", ort_provider: str | None = None) -> None:
        import onnxruntime as ort

        on_gpu = parse_device(device) is not None
        cache = ort_trt_cache(folder, manifest) if ort_provider == "tensorrt" else None
        providers = ort_providers(device, ort_provider, cache)
        names = [p if isinstance(p, str) else p[0] for p in providers]
        available = ort.get_available_providers()
        missing = [p for p in names if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime {ort.__version__} here has no {', '.join(missing)} (available: "
                f"{', '.join(available)}): {ORT_GPU_HINT}")
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        if on_gpu and hasattr(ort, "preload_dlls"):  # ONNX Runtime >= 1.21
            # the CUDA / cuDNN libraries of pip's nvidia-* wheels (PyTorch's), where installed
            with contextlib.suppress(Exception):
                ort.preload_dlls()
        if on_gpu and precision is None:
            precision = default_gpu_precision(manifest, ort_provider)
        self.graphs = OnnxGraphs(folder, precision, threads, providers, manifest)
        active = self.graphs.image_session.get_providers()
        if names[0] not in active:  # ONNX Runtime drops a provider that fails to load, silently
            raise BackendUnavailableError(
                f"ONNX Runtime could not start {names[0]} (the session runs on "
                f"{', '.join(active)}): the CUDA / cuDNN libraries of this onnxruntime-gpu are "
                "missing or do not match (its log above says which)")
        self.precision = self.graphs.precision
        self.device = device
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


def _create(kind: str, folder: Path, manifest: dict, precision: str | None, threads: int,
            device: str, ort_provider: str | None) -> Backend:
    try:
        if kind == "onnxruntime":
            return OnnxRuntimeBackend(folder, manifest, precision, threads, device, ort_provider)
        if kind == "torch":
            return TorchBackend(folder, threads)
        from groundrt.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(folder, manifest, precision, parse_device(device) or 0)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_BACKEND.get(kind, "")
        raise BackendUnavailableError(
            f"the {kind} backend needs {exc.name}, which is not installed: "
            f"pip install 'groundrt[{extra}]'") from exc


def auto_choices(manifest: dict, device: str) -> list[tuple[str, str]]:
    """(backend, device) in the order backend="auto" tries them."""
    choices = [("tensorrt", device if device != "cpu" else "cuda")] if manifest.get(
        "engines") else []
    choices.append(("onnxruntime", device))
    if device != "cpu":
        choices.append(("onnxruntime", "cpu"))
    return choices


def create_backend(kind: str, folder: Path, manifest: dict, precision: str | None,
                   threads: int, device: str = "cpu",
                   ort_provider: str | None = None) -> Backend:
    """The backend `kind` for a package (or, for "torch", a run folder) on `device`."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}: choose one of {', '.join(BACKENDS)}")
    parse_device(device)  # a bad device name fails here, whatever the backend
    if kind != "auto":
        return _create(kind, folder, manifest, precision, threads, device, ort_provider)
    choices = auto_choices(manifest, device)
    images = manifest.get("graphs", {}).get("image", {})
    for n, (choice, where) in enumerate(choices):
        try:
            if choice == "tensorrt" and not tensorrt_usable(manifest):
                raise BackendUnavailableError(
                    "the package has TensorRT engines but tensorrt or pycuda is not installed "
                    "here (pip install 'groundrt[gpu]')")
            wanted = precision if choice == "tensorrt" or precision in images else None
            backend = _create(choice, folder, manifest, wanted, threads, where,
                              ort_provider if where != "cpu" else None)
        except Exception as exc:  # noqa: BLE001 (whatever stops a choice is the warning's why)
            if n == len(choices) - 1:
                raise
            following, at = choices[n + 1]
            warnings.warn(f"backend auto: {choice} on {where} is not usable ({exc}); running "
                          f"{following} on {at}", BackendFallbackWarning, stacklevel=3)
            continue
        return backend
    raise AssertionError("unreachable")  # the last choice returned or raised
