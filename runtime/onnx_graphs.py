"""A package's two graphs in ONNX Runtime: image -> embeddings, token ids -> token features."""

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

    def _graph(self, name: str) -> bytes | str:
        """A graph's verified bytes (a package), or its path (a manifest without hashes)."""
        if name in self.manifest.get("files", {}):
            return read_verified(self.folder, self.manifest, name)
        return str(self.folder / name)

    def image(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, 3, S, S] float32 normalized -> (pixel_embed [B, D, h, w], mask_embed [B, Q, D])."""
        pixel_embed, mask_embed = self.image_session.run(["pixel_embed", "mask_embed"],
                                                         {"image": images})
        return pixel_embed, mask_embed

    def text(self, token_ids: np.ndarray) -> np.ndarray:
        """[T] token ids -> token_embed [T, D]."""
        ids = np.asarray(token_ids, dtype=np.int32)[None]
        return self.text_session.run(["token_embed"], {"token_ids": ids})[0][0]
