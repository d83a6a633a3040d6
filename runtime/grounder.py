"""The Grounder API: a model package in, phrase masks out.

    g = Grounder()                                   # the shipped default package
    res = g.ground(image, "Two red circles are next to a blue star on the grass.")
    for p in res.phrases: p.text, p.mask, p.instances, p.score, p.box, p.area, p.centroid

Per call: letterbox + normalize, the image graph, the text graph (once per caption: an LRU
cache keeps the phrase embeddings), then affinity and mask decoding (native kernels when built).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from groundrt.errors import CaptionTooLongError, GroundrtError
from groundrt.kernels import cpu as cpu_kernels
from groundrt.package import MANIFEST_FILE, PackageError, input_shape, read_manifest
from groundrt.preprocess import Letterbox, letterbox_input
from groundrt.runtime import DEFAULT_MODEL, reference
from groundrt.runtime.backends import Backend, create_backend
from groundrt.runtime.chunker import noun_phrases, require_noun_phrases
from groundrt.runtime.images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from groundrt.runtime.postprocess import Postprocessor
from groundrt.runtime.results import GroundingResult, PhraseResult
from groundrt.text.checks import check_text
from groundrt.text.tokenizer import Tokenizer

EXPLICIT_SEPARATOR = ", "  # explicit phrases are encoded as one list-like caption


class TooManyPhrasesError(GroundrtError, ValueError):
    """A caption or phrase list has more phrases than the Grounder's limit."""


@dataclass(frozen=True)
class TextEncoding:
    """A caption's phrases, ready for the kernels (cached per caption)."""

    caption: str
    texts: tuple[str, ...]
    spans: tuple[tuple[int, int], ...] | None  # char spans (None: explicit phrases)
    plural: np.ndarray  # [P] bool
    phrase_embed: np.ndarray  # [P, D] float32


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the image graph, with the geometry to map results back."""

    box: Letterbox
    input: np.ndarray  # [3, S, S] float32, normalized


def run_manifest(run: Path) -> dict:
    """A manifest-like description of a training run folder (for the torch backend)."""
    from groundrt.export.package_builder import base_manifest
    from groundrt.model.checkpoint import load_model

    return base_manifest(load_model(run), run.name)


class Grounder:
    """Grounds noun phrases of captions in images with a model package.

    model: a package folder (default: the shipped INT8 student), or a training run folder
        with backend="torch". backend: "auto" (TensorRT where the package has engines and
        TensorRT + pycuda are installed, else ONNX Runtime), "onnxruntime", "tensorrt", "torch".
    precision: the image graph ("int8-cpu", "int8-trt", "fp32"; default: the package's).
    native_kernels: None = the C++ kernels (letterbox, affinity, decoding) when built, else
        OpenCV and numpy; True requires them.
    threads: ONNX Runtime's intra-op threads. kernel_threads: threads of the C++ letterbox (bands
        of rows) and mask decoding (one phrase each); the results do not depend on it.
    max_pixels: the largest image accepted (width x height), checked from a file's header before
        it is decoded.
    """

    def __init__(self, model: str | Path | None = None, backend: str = "auto",
                 precision: str | None = None, threads: int = 2, text_cache_size: int = 128,
                 max_phrases: int = 64, native_kernels: bool | None = None,
                 kernel_threads: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.folder = Path(model) if model is not None else DEFAULT_MODEL
        if (self.folder / MANIFEST_FILE).is_file():
            self.manifest = read_manifest(self.folder)
        elif backend == "torch" and (self.folder / "config.json").is_file():
            self.manifest = run_manifest(self.folder)
        else:
            raise PackageError(f"{self.folder} is not a model package ({MANIFEST_FILE} is "
                               "missing); a training run folder needs backend='torch'")
        self.backend: Backend = create_backend(backend, self.folder, self.manifest, precision,
                                               threads)
        tokenizer = self.manifest["tokenizer"]
        digest = self.manifest.get("files", {}).get(tokenizer["file"], {}).get("sha256")
        self.tokenizer = Tokenizer(self.folder / tokenizer["file"], tokenizer["max_tokens"],
                                   sha256=digest)
        # the TensorRT backend runs the CUDA kernels on its own stream
        self.postprocess = Postprocessor(native_kernels, getattr(self.backend, "stream", None),
                                         kernel_threads)
        self.native_letterbox = native_kernels is not False and cpu_kernels.is_usable()
        self.kernel_threads = kernel_threads
        self.max_pixels = max_pixels
        self.input_shape: tuple[int, int] = input_shape(self.manifest)
        self.grounding: dict = self.manifest["grounding"]
        self.max_phrases = max_phrases
        self.text_cache_size = text_cache_size
        self._text_cache: OrderedDict[tuple, TextEncoding] = OrderedDict()
        self._text_lock = threading.Lock()  # stream stages encode captions from several threads

    # ----------------------------------------------------------------------------- text

    def encode_text(self, caption: str | None = None,
                    phrases: Sequence[str] | None = None) -> TextEncoding:
        """The phrase embeddings of a caption (its noun phrases) or of explicit phrases."""
        key = self._check_prompt(caption, phrases)
        with self._text_lock:
            cached = self._text_cache.get(key)
            if cached is not None:
                self._text_cache.move_to_end(key)
                return cached
            encoding = self._encode_text(caption, phrases)
            self._text_cache[key] = encoding
            if len(self._text_cache) > self.text_cache_size:
                self._text_cache.popitem(last=False)
            return encoding

    def _check_prompt(self, caption: object, phrases: object) -> tuple:
        """The cache key of a valid prompt; TypeError / a groundrt error naming what is wrong.
        Checked before anything is cached or run, so a bad prompt leaves no trace."""
        if phrases is None:
            if caption is None:
                raise ValueError("give a caption or a list of phrases")
            return check_text(caption), None
        if isinstance(phrases, str | bytes) or not isinstance(phrases, Sequence):
            raise TypeError(f"phrases must be a list of str, not {type(phrases).__name__}"
                            + (" (wrap one phrase in a list)" if isinstance(phrases, str)
                               else ""))
        if len(phrases) > self.max_phrases:
            raise TooManyPhrasesError(f"{len(phrases)} phrases, more than this Grounder's limit "
                                      f"of {self.max_phrases}: split the list or raise "
                                      "max_phrases")
        texts = tuple(check_text(p, f"phrase {i}") for i, p in enumerate(phrases))
        return (check_text(caption) if caption is not None else None), texts

    def _encode_text(self, caption: str | None, phrases: Sequence[str] | None) -> TextEncoding:
        if phrases is not None:
            texts = [p.strip() for p in phrases]
            if not texts:
                raise ValueError("phrases must be a non-empty list of non-empty strings")
            empty = [i for i, t in enumerate(texts) if not t]
            if empty:
                raise ValueError(f"phrases must be a non-empty list of non-empty strings: "
                                 f"phrase {empty[0]} is {phrases[empty[0]]!r}")
            full = EXPLICIT_SEPARATOR.join(texts)
            starts = np.cumsum([0] + [len(t) + len(EXPLICIT_SEPARATOR) for t in texts[:-1]])
            char_spans = [(int(s), int(s) + len(t)) for s, t in zip(starts, texts, strict=True)]
            plural = [any(n.plural for n in noun_phrases(t)) for t in texts]
            spans = None
        else:
            if caption is None:
                raise ValueError("give a caption or a list of phrases")
            found = require_noun_phrases(caption)
            full, texts = caption, [p.text for p in found]
            char_spans = [(p.start, p.end) for p in found]
            plural = [p.plural for p in found]
            spans = tuple(char_spans)
        if len(texts) > self.max_phrases:
            raise TooManyPhrasesError(f"{len(texts)} phrases, more than this Grounder's limit "
                                      f"of {self.max_phrases}: split the caption or raise "
                                      "max_phrases")
        try:
            encoding, token_spans = self.tokenizer.encode_phrases(full, char_spans)
        except CaptionTooLongError as exc:
            if phrases is None:
                raise
            raise CaptionTooLongError(exc.num_tokens, exc.max_tokens, full,
                                      len(texts)) from None
        token_embed = self.backend.text(encoding.ids)
        phrase_embed = reference.pool_phrases(token_embed, token_spans).astype(np.float32)
        return TextEncoding(full, tuple(texts), spans, np.array(plural, dtype=bool),
                            phrase_embed)

    # ---------------------------------------------------------------------------- images

    def ground(self, image: ImageInput, caption: str | None = None,
               phrases: Sequence[str] | None = None, rgb: bool = False) -> GroundingResult:
        """Masks for the noun phrases of `caption` (or for the explicit `phrases`) in `image`:
        a BGR numpy array (RGB with rgb=True), a path or encoded bytes."""
        return self.ground_batch([image], caption, phrases, rgb)[0]

    def ground_batch(self, images: Sequence[ImageInput], caption: str | None = None,
                     phrases: Sequence[str] | None = None,
                     rgb: bool = False) -> list[GroundingResult]:
        """`ground` for several images with one caption: one image-graph call for all."""
        if isinstance(images, str | bytes | np.ndarray) or not isinstance(images, Sequence):
            raise TypeError(f"ground_batch takes a list of images, not {type(images).__name__} "
                            "(ground takes one)")
        if not images:
            raise ValueError("ground_batch needs at least one image")
        start = time.perf_counter()
        text = self.encode_text(caption, phrases)
        after_text = time.perf_counter()
        prepared = [self.prepare(image, rgb) for image in images]
        after_pre = time.perf_counter()
        # one image: a view, no copy of its input
        batch = (prepared[0].input[None] if len(prepared) == 1
                 else np.stack([p.input for p in prepared]))
        pixel_embed, mask_embed = self.infer(batch)
        after_image = time.perf_counter()
        results = []
        for i, item in enumerate(prepared):
            result = self.decode(text, item.box, pixel_embed[i], mask_embed[i])
            result.timings_ms.update(text=(after_text - start) * 1e3,
                                     preprocess=(after_pre - after_text) * 1e3 / len(prepared),
                                     image=(after_image - after_pre) * 1e3 / len(prepared))
            results.append(result)
        total = (time.perf_counter() - start) * 1e3 / len(prepared)
        for result in results:
            result.timings_ms["total"] = total
        return results

    # The three stages of `ground`, for callers that overlap them (runtime/stream.py).

    def prepare(self, image: ImageInput, rgb: bool = False) -> PreparedImage:
        """Load, letterbox and normalize one image."""
        loaded = load_image(image, rgb, self.max_pixels)
        box = Letterbox(self.input_shape, *loaded.shape[:2])
        return PreparedImage(box, letterbox_input(loaded, box, self.native_letterbox,
                                                      self.kernel_threads))

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, 3, h, w] prepared inputs -> (pixel_embed [B, D, h, w], mask_embed [B, Q, D])."""
        return self.backend.image(inputs)

    def decode(self, text: TextEncoding, box: Letterbox, pixel_embed: np.ndarray,
               mask_embed: np.ndarray) -> GroundingResult:
        """One image's phrase masks from its embeddings: affinity, then mask decoding."""
        g = self.grounding
        tick = time.perf_counter()
        _, selected = self.postprocess.affinity(text.phrase_embed, mask_embed, g["logit_scale"],
                                                g["affinity_bias"], text.plural,
                                                g["plural_threshold"])
        after_affinity = time.perf_counter()
        crop_h, crop_w = box.crop_region(g["pixel_stride"])
        masks, stats = self.postprocess.decode_masks(pixel_embed, mask_embed, selected, crop_h,
                                                     crop_w, box.height, box.width)
        after_decode = time.perf_counter()

        def instances_of(queries: list[int]):
            def decode() -> list[np.ndarray]:
                one_hot = np.zeros((len(queries), len(mask_embed)), dtype=np.uint8)
                one_hot[np.arange(len(queries)), queries] = 1
                found, _ = self.postprocess.decode_masks(pixel_embed, mask_embed, one_hot,
                                                         crop_h, crop_w, box.height, box.width)
                return list(found.view(bool))
            return decode

        phrases = []
        for p, name in enumerate(text.texts):
            queries = np.flatnonzero(selected[p]).tolist()
            s = stats[p]
            phrases.append(PhraseResult(
                text=name, span=text.spans[p] if text.spans else None,
                plural=bool(text.plural[p]), mask=masks[p].view(bool),
                score=float(s["score"]), area=int(s["area"]),
                box=tuple(int(v) for v in s["box"]),
                centroid=(float(s["centroid"][0]), float(s["centroid"][1])),
                queries=queries, _instances=instances_of(queries)))
        return GroundingResult((box.height, box.width), text.caption, phrases, {
            "affinity": (after_affinity - tick) * 1e3, "decode": (after_decode - after_affinity)
            * 1e3})
