"""The Grounder API: a model package in, phrase masks out.

    g = Grounder()                                   # the shipped default package
    res = g.ground(image, "Two red circles are next to a blue star on the grass.")
    for p in res.phrases: p.text, p.mask, p.instances, p.score, p.box, p.area, p.centroid

Per call: letterbox + normalize, the image graph, the text graph (once per caption: an LRU
cache keeps the phrase embeddings), then affinity and mask decoding (native kernels when built).
A network v2 package adds the phrase graph per frame: each phrase's own mask kernel (decoded
by the same kernels) and presence score (a phrase not in the image is not found: empty mask);
a plural's instances are the connected parts of its mask (the object tokens the affinity
selects are still reported, `PhraseResult.queries`, but split plurals worse: instance AR 0.24
against 0.64 on val).
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
from groundrt.package import (
    MANIFEST_FILE,
    PackageError,
    has_phrase_decoder,
    input_shape,
    read_manifest,
)
from groundrt.preprocess import Letterbox, letterbox_input
from groundrt.runtime import DEFAULT_MODEL, reference
from groundrt.runtime.backends import Backend, create_backend, parse_device
from groundrt.runtime.chunker import noun_phrases, require_noun_phrases
from groundrt.runtime.images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from groundrt.runtime.postprocess import Postprocessor, mask_components
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
    phrase_embed: np.ndarray | None  # v1: [P, D] float32, each phrase's mean token
    # v2: the text half of the phrase graph's inputs (`phrase_inputs`)
    phrase_inputs: tuple[np.ndarray, ...] | None = None


@dataclass(frozen=True)
class ImageEmbeddings:
    """The image graph's outputs for a batch (or, from `item`, one image without batch axis)."""

    pixel_embed: np.ndarray  # [B, D, h, w]
    mask_embed: np.ndarray  # [B, Q, D]
    image_keys: np.ndarray | None = None  # v2: [B, layers, h, N, d] for the phrase decoder
    image_values: np.ndarray | None = None  # v2: [B, layers, h, N, d]

    def item(self, i: int) -> ImageEmbeddings:
        return ImageEmbeddings(*(None if a is None else a[i] for a in (
            self.pixel_embed, self.mask_embed, self.image_keys, self.image_values)))


MASKED = -1e4  # the own-token bias of a padding slot (groundrt.model.phrase_decoder.MASKED)


def phrase_inputs(token_embed: np.ndarray, token_kv: np.ndarray, spans: np.ndarray,
                  heads: int) -> tuple[np.ndarray, ...]:
    """The text half of the v2 phrase graph's inputs, from the text graph's outputs
    token_embed [T, C] and token_kv [T, layers, 2, C] and the phrases' token spans [P, 2]:
    phrase_mean [P, C], own_keys and own_values [P, layers, heads, L, C / heads] (L the longest
    span) and own_bias [P, L] (0 inside a phrase, MASKED after its end), as
    `groundrt.model.phrase_decoder` gathers a phrase's own tokens."""
    lengths = np.maximum(spans[:, 1] - spans[:, 0], 0)
    longest = max(1, int(lengths.max()) if len(lengths) else 1)
    offsets = np.arange(longest)
    valid = offsets[None] < lengths[:, None]  # [P, L]
    index = np.minimum(spans[:, :1] + offsets, len(token_embed) - 1)
    weights = valid / np.maximum(lengths, 1)[:, None]
    phrase_mean = np.einsum("pl,plc->pc", weights, token_embed[index]).astype(np.float32)
    p, layers = len(spans), token_kv.shape[1]
    own = token_kv[index].reshape(p, longest, layers, 2, heads, -1)  # [P, L, layers, 2, h, d]
    own = np.ascontiguousarray(own.transpose(3, 0, 2, 4, 1, 5), dtype=np.float32)
    bias = np.where(valid, 0.0, MASKED).astype(np.float32)
    return phrase_mean, own[0], own[1], bias


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the image graph, with the geometry to map results back."""

    box: Letterbox
    input: np.ndarray  # [3, S, S] float32, normalized


def gpu_index(backend: Backend) -> int | None:
    """The CUDA device a backend runs on (None: the CPU)."""
    if backend.name == "tensorrt":
        return getattr(backend, "device", 0)
    return parse_device(getattr(backend, "device", "cpu"))


def run_manifest(run: Path) -> dict:
    """A manifest-like description of a training run folder (for the torch backend)."""
    from groundrt.export.package_builder import base_manifest
    from groundrt.model.checkpoint import load_model

    return base_manifest(load_model(run), run.name)


class Grounder:
    """Grounds noun phrases of captions in images with a model package.

    model: a package folder (default: the shipped INT8 student), or a training run folder
        with backend="torch". backend: "auto" (TensorRT where the package has engines that run
        here, else ONNX Runtime on `device`, else on the CPU: each step down is one
        BackendFallbackWarning naming why), "onnxruntime", "tensorrt", "torch".
    precision: the image graph ("int8-cpu", "int8-trt", "fp32"; default: the package's).
    native_kernels: None = the C++ kernels (letterbox, affinity, decoding) when built, else
        OpenCV and numpy; True requires them.
    threads: ONNX Runtime's intra-op threads. kernel_threads: threads of the C++ letterbox (bands
        of rows) and mask decoding (one phrase each); the results do not depend on it.
    max_pixels: the largest image accepted (width x height), checked from a file's header before
        it is decoded.
    singular_parts: network v2 packages with `grounding.singular_margin`: a singular keeps the
        parts of its mask it is surest of (val AR +0.9 points; ~0.5 ms a frame with the native
        kernels where several singulars have masks of several parts). False keeps whole masks.
    device: "cpu", "cuda" or "cuda:N": where ONNX Runtime runs (its CUDA execution provider, or
        TensorRT's with ort_provider="tensorrt"; needs onnxruntime-gpu) and, on a GPU, where
        the CUDA kernels decode the masks (when built and pycuda is installed). The TensorRT
        backend always runs on a GPU (cuda:0 unless given).

    Thread safety: one Grounder may be shared by several threads (as `groundrt run`'s stages
    share one): the caption cache is locked, ONNX Runtime sessions take concurrent runs, the CPU
    kernels keep no state between calls, the CUDA kernels lend each call a stream and buffers,
    and each TensorRT engine runs one call at a time (a lock) in the device's primary context,
    made current in the calling thread (groundrt/kernels/cuda_context.py). Results are the same
    as from one thread (tests/test_devices_and_fallbacks.py).
    """

    def __init__(self, model: str | Path | None = None, backend: str | Backend = "auto",
                 precision: str | None = None, threads: int = 2, text_cache_size: int = 128,
                 max_phrases: int = 64, native_kernels: bool | None = None,
                 kernel_threads: int = 2, device: str = "cpu",
                 ort_provider: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, singular_parts: bool = True) -> None:
        self.folder = Path(model) if model is not None else DEFAULT_MODEL
        remote = not isinstance(backend, str)  # a Backend object whose graphs run elsewhere
        if (self.folder / MANIFEST_FILE).is_file():
            # graphs that run elsewhere are not in the folder: only the manifest is checked
            self.manifest = read_manifest(self.folder, verify=not remote)
        elif backend == "torch" and (self.folder / "config.json").is_file():
            self.manifest = run_manifest(self.folder)
        else:
            raise PackageError(f"{self.folder} is not a model package ({MANIFEST_FILE} is "
                               "missing); a training run folder needs backend='torch'")
        self.backend: Backend = backend if remote else create_backend(
            backend, self.folder, self.manifest, precision, threads, device, ort_provider)
        tokenizer = self.manifest["tokenizer"]
        digest = self.manifest.get("files", {}).get(tokenizer["file"], {}).get("sha256")
        self.tokenizer = Tokenizer(self.folder / tokenizer["file"], tokenizer["max_tokens"],
                                   sha256=digest)
        # a backend on a GPU decodes masks with the CUDA kernels on that GPU; the TensorRT
        # backend then hands them pixel_embed on the device
        self.postprocess = Postprocessor(native_kernels, gpu_index(self.backend),
                                         kernel_threads)
        if hasattr(self.backend, "device_outputs"):
            self.backend.device_outputs = self.postprocess.on_gpu
        self.native_letterbox = native_kernels is not False and cpu_kernels.is_usable()
        self.kernel_threads = kernel_threads
        self.max_pixels = max_pixels
        self.input_shape: tuple[int, int] = input_shape(self.manifest)
        self.grounding: dict = self.manifest["grounding"]
        if not singular_parts:  # whole masks for singulars, whatever the package says
            self.grounding = {k: v for k, v in self.grounding.items() if k != "singular_margin"}
        self.phrase_queries = has_phrase_decoder(self.manifest)  # network v2
        self.max_phrases = max_phrases
        self.text_cache_size = text_cache_size
        self._text_cache: OrderedDict[tuple, TextEncoding] = OrderedDict()
        self._text_lock = threading.Lock()  # stream stages encode captions from several threads

    # ----------------------------------------------------------------------------- text

    def encode_text(self, caption: str | None = None, phrases: Sequence[str] | None = None,
                    spans: Sequence[tuple[int, int]] | None = None,
                    plural: Sequence[bool] | None = None) -> TextEncoding:
        """The phrase embeddings of a caption (its noun phrases), of explicit phrases, or of
        given char `spans` of the caption (with their `plural` flags; default: the chunker's
        reading of each span)."""
        key = (*self._check_prompt(caption, phrases),
               tuple(map(tuple, spans)) if spans is not None else None,
               tuple(plural) if plural is not None else None)
        with self._text_lock:
            cached = self._text_cache.get(key)
            if cached is not None:
                self._text_cache.move_to_end(key)
                return cached
            encoding = self._encode_text(caption, phrases, spans, plural)
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

    def _encode_text(self, caption: str | None, phrases: Sequence[str] | None,
                     given_spans: Sequence[tuple[int, int]] | None,
                     given_plural: Sequence[bool] | None) -> TextEncoding:
        if given_spans is not None:
            if caption is None or not len(given_spans):
                raise ValueError("spans need a caption and at least one span")
            full, char_spans = caption, [(int(a), int(b)) for a, b in given_spans]
            texts = [caption[a:b] for a, b in char_spans]
            plural = (list(given_plural) if given_plural is not None else
                      [any(n.plural for n in noun_phrases(t)) for t in texts])
            if len(plural) != len(texts):
                raise ValueError(f"{len(plural)} plural flags for {len(texts)} spans")
            spans = tuple(char_spans)
        elif phrases is not None:
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
        token_outputs = self.backend.text(encoding.ids)
        plural_flags = np.array(plural, dtype=bool)
        if self.phrase_queries:
            heads = int(self.manifest["model"]["config"]["phrase_heads"])
            inputs = phrase_inputs(*token_outputs, token_spans, heads)
            return TextEncoding(full, tuple(texts), spans, plural_flags, None, inputs)
        token_embed = token_outputs[0]
        phrase_embed = reference.pool_phrases(token_embed, token_spans).astype(np.float32)
        return TextEncoding(full, tuple(texts), spans, plural_flags, phrase_embed)

    # ---------------------------------------------------------------------------- images

    def ground(self, image: ImageInput, caption: str | None = None,
               phrases: Sequence[str] | None = None, rgb: bool = False,
               spans: Sequence[tuple[int, int]] | None = None,
               plural: Sequence[bool] | None = None) -> GroundingResult:
        """Masks for the noun phrases of `caption` (or for the explicit `phrases`, or for the
        char `spans` of `caption`) in `image`: a BGR numpy array (RGB with rgb=True), a path or
        encoded bytes."""
        return self.ground_batch([image], caption, phrases, rgb, spans, plural)[0]

    def ground_batch(self, images: Sequence[ImageInput], caption: str | None = None,
                     phrases: Sequence[str] | None = None, rgb: bool = False,
                     spans: Sequence[tuple[int, int]] | None = None,
                     plural: Sequence[bool] | None = None) -> list[GroundingResult]:
        """`ground` for several images with one caption: one image-graph call for all."""
        if isinstance(images, str | bytes | np.ndarray) or not isinstance(images, Sequence):
            raise TypeError(f"ground_batch takes a list of images, not {type(images).__name__} "
                            "(ground takes one)")
        if not images:
            raise ValueError("ground_batch needs at least one image")
        start = time.perf_counter()
        text = self.encode_text(caption, phrases, spans, plural)
        after_text = time.perf_counter()
        prepared = [self.prepare(image, rgb) for image in images]
        after_pre = time.perf_counter()
        # one image: a view, no copy of its input
        batch = (prepared[0].input[None] if len(prepared) == 1
                 else np.stack([p.input for p in prepared]))
        embeddings = self.infer(batch)
        after_image = time.perf_counter()
        results = []
        for i, item in enumerate(prepared):
            result = self.decode(text, item.box, embeddings.item(i))
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

    def infer(self, inputs: np.ndarray) -> ImageEmbeddings:
        """[B, 3, h, w] prepared inputs -> the image graph's embeddings of each image."""
        return ImageEmbeddings(*self.backend.image(inputs))

    def decode(self, text: TextEncoding, box: Letterbox,
               embeddings: ImageEmbeddings) -> GroundingResult:
        """One image's phrase masks from its embeddings (`ImageEmbeddings.item`): v1 the union
        of the object masks each phrase selects; v2 each phrase's own kernel (its presence
        decides whether it is found; a singular keeps the parts of its mask it is surest of,
        `Postprocessor.keep_surest_parts`), a plural's instances the parts of its mask."""
        g = self.grounding
        pixel_embed, mask_embed = embeddings.pixel_embed, embeddings.mask_embed
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        found = np.ones(len(text.texts), bool)
        presence = None
        phrase_embed = text.phrase_embed
        if self.phrase_queries:
            kernels, logits, phrase_embed = (a[0] for a in self.backend.phrase(
                *(a[None] for a in text.phrase_inputs), embeddings.image_keys[None],
                embeddings.image_values[None]))
            after_phrase = time.perf_counter()
            timings["phrase"] = (after_phrase - tick) * 1e3
            tick = after_phrase
        _, selected = self.postprocess.affinity(phrase_embed, mask_embed, g["logit_scale"],
                                                g["affinity_bias"], text.plural,
                                                g["plural_threshold"])
        after_affinity = time.perf_counter()
        crop_h, crop_w = box.crop_region(g["pixel_stride"])

        def decode_rows(embed: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Masks and stats of the unions of `embed`'s rows that `rows` [N, rows] selects."""
            return self.postprocess.decode_masks(pixel_embed, embed, rows.astype(np.uint8),
                                                 crop_h, crop_w, box.height, box.width)

        if self.phrase_queries:  # each phrase decodes its own kernel; presence reads its mask
            masks, stats = decode_rows(kernels, np.eye(len(found)))
            presence = reference.presence_probability(
                logits, stats["score"], stats["area"] / (box.height * box.width),
                g.get("presence_weights"))
            found = presence > g["presence_threshold"]
            masks[~found], stats[~found] = 0, np.zeros(1, dtype=stats.dtype)  # not found: empty
            margin = g.get("singular_margin")  # packages built before it keep whole masks
            if margin is not None:  # a found singular keeps the parts of its mask it is surest of
                margins = np.where(found & ~np.asarray(text.plural, bool), margin, -1.0)
                self.postprocess.keep_surest_parts(pixel_embed, kernels, np.eye(len(found)),
                                                   crop_h, crop_w, masks, stats, margins)
        else:
            masks, stats = decode_rows(mask_embed, selected)
        after_decode = time.perf_counter()

        def instances_of(p: int, queries: list[int]):
            def decode() -> list[np.ndarray]:
                if not found[p] or (self.phrase_queries and not stats[p]["area"]):
                    return []
                if self.phrase_queries:  # the phrase's own mask: a plural's parts, else whole
                    mask = masks[p].view(bool)
                    return mask_components(mask) if text.plural[p] else [mask]
                if not queries:
                    return []
                return list(decode_rows(mask_embed, np.eye(len(mask_embed))[queries])[0]
                            .view(bool))
            return decode

        phrases = []
        for p, name in enumerate(text.texts):
            queries = np.flatnonzero(selected[p]).tolist() if found[p] else []
            s = stats[p]
            phrases.append(PhraseResult(
                text=name, span=text.spans[p] if text.spans else None,
                plural=bool(text.plural[p]), mask=masks[p].view(bool),
                score=float(s["score"]), area=int(s["area"]),
                box=tuple(int(v) for v in s["box"]),
                centroid=(float(s["centroid"][0]), float(s["centroid"][1])),
                queries=queries, found=bool(found[p]),
                presence=None if presence is None else float(presence[p]),
                _instances=instances_of(p, queries)))
        timings.update(affinity=(after_affinity - tick) * 1e3,
                       decode=(after_decode - after_affinity) * 1e3)
        return GroundingResult((box.height, box.width), text.caption, phrases, timings)
