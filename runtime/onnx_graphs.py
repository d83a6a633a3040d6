"""A package's graphs in ONNX Runtime: image -> embeddings, token ids -> token features, and
(network v2) phrase tokens + image embeddings -> phrase kernels and presence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from groundrt.package import PackageError, read_manifest, read_verified


class OnnxGraphs:
    """ONNX Runtime sessions of a package's image and text graphs at one precision.

    `precision` picks the image graph ("fp32", "int8-cpu", "int8-trt"; default: the package's
    default precision); the text graph is the
    most precise one the package has for it (packages keep the text path in float: it runs once
    per caption).
    """

    def __init__(self, package: str | Path, precision: str | None = None, threads: int = 2,
                 providers: list[str] | None = None, manifest: dict | None = None) -> None:
        self.folder = Path(package)
        self.manifest = manifest or read_manifest(self.folder)
        graphs = self.manifest["graphs"]
        precision = precision or self.manifest["precision"]
        if precision not in graphs["image"]:
            raise PackageError(f"package {self.folder} has no {precision} image graph "
                               f"(it has {sorted(graphs['image'])})")
        self.precision = precision
        text_precision = precision if precision in graphs["text"] else "fp32"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ONNX Runtime's pool threads spin while a run is on (fast hand-offs between its many
        # small nodes) but would keep spinning after it, holding the cores the next stages
        # (mask decoding, the next frame's letterbox) need: stop them when a run returns.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        providers = providers or ["CPUExecutionProvider"]
        # sessions are built from the bytes whose hash was checked, not from the path again
        self.image_session = ort.InferenceSession(
            self._graph(graphs["image"][precision]), options, providers=providers)
        self.text_session = ort.InferenceSession(
            self._graph(graphs["text"][text_precision]), options, providers=providers)
        self.phrase_session = None
        if "phrase" in graphs:  # network v2; the phrase decoder stays float (it is small)
            self.phrase_session = ort.InferenceSession(
                self._graph(graphs["phrase"]["fp32"]), options, providers=providers)
        io = self.manifest["io"]
        self.image_outputs = [t["name"] for t in io["image"]["outputs"]]
        self.text_outputs = [t["name"] for t in io["text"]["outputs"]]
        self.phrase_inputs = [t["name"] for t in io.get("phrase", {}).get("inputs", [])]

    def _graph(self, name: str) -> bytes | str:
        """A graph's verified bytes (a package), or its path (a manifest without hashes)."""
        if name in self.manifest.get("files", {}):
            return read_verified(self.folder, self.manifest, name)
        return str(self.folder / name)

    def image(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        """[B, 3, S, S] float32 normalized -> (pixel_embed [B, D, h, w], mask_embed [B, Q, D])
        and, for network v2, (image_keys, image_values [B, layers, h, N, d])."""
        return tuple(self.image_session.run(self.image_outputs, {"image": images}))

    def phrase(self, *inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network v2: the phrase graph's inputs in the manifest's order -> kernels [B, P, D],
        presence logits [B, P], phrase_embed [B, P, D]."""
        if self.phrase_session is None:
            raise PackageError(f"package {self.folder} has no phrase graph (network v1)")
        kernels, presence, embed = self.phrase_session.run(
            ["kernels", "presence", "phrase_embed"],
            dict(zip(self.phrase_inputs, inputs, strict=True)))
        return kernels, presence, embed

    def text(self, token_ids: np.ndarray) -> tuple[np.ndarray, ...]:
        """[T] token ids -> (token_embed [T, D]) or, for network v2, (token_embed [T, C],
        token_kv [T, layers, 2, C])."""
        ids = np.asarray(token_ids, dtype=np.int32)[None]
        return tuple(out[0] for out in self.text_session.run(self.text_outputs,
                                                             {"token_ids": ids}))
