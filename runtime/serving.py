"""The `groundrt` server model's protocol, shared by `groundrt serve` (PyTriton) and the Triton
repository's BLS model (runtime/triton_bls.py):

    inputs   image    UINT8 [-1]  the encoded image (JPEG, PNG, anything OpenCV decodes)
             caption  BYTES [1]   UTF-8; its noun phrases are grounded
             phrases  BYTES [-1]  optional: explicit phrases instead of the caption's
    output   result   BYTES [1]   one JSON document: a line of `groundrt run --json`

With a batch axis (max_batch_size > 0) every input gains it in front. The `frame` of a result is
the server's request sequence number, `timestamp` the Unix time the request was read and `name`
"request" (a client that knows its frames, as `groundrt run --server` does, keeps its own).

Each item is checked on its own: an image that does not decode, an empty caption, a caption
without noun phrases or with too many, a body over MAX_IMAGE_BYTES get an error for that item
(RequestError, or the runtime's own error class) and the others are grounded; items with the
same caption go through one image-graph call (Grounder.ground_batch).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from groundrt.errors import GroundrtError
from groundrt.runtime.backends import Backend
from groundrt.runtime.grounder import Grounder
from groundrt.runtime.images import load_image
from groundrt.runtime.results import GroundingResult

MODEL_NAME = "groundrt"
DEFAULT_MAX_BATCH = 8  # images per batch: what a GPU fills in a few ms at the student's size
QUEUE_DELAY_US = 2000  # how long the dynamic batcher lets a request wait for others
MAX_IMAGE_BYTES = 32 << 20  # 32 MiB: a 8K JPEG is a few MB; more is a mistake or an attack
REQUEST_NAME = "request"


class RequestError(GroundrtError, ValueError):
    """A server request is malformed (the message says which input and why)."""


@dataclass(frozen=True)
class GroundRequest:
    image: bytes
    caption: str | None
    phrases: tuple[str, ...] | None

    @property
    def prompt(self) -> tuple[str | None, tuple[str, ...] | None]:
        return self.caption, self.phrases


def result_record(result: GroundingResult, frame: int, timestamp: float, name: str) -> dict:
    """A line of `groundrt run --json` (runtime/sinks.py's JsonlSink writes the same keys)."""
    return {"frame": frame, "timestamp": round(timestamp, 6), "name": name, **result.to_json()}


def _text(value: object, what: str) -> str:
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{what} is not UTF-8 text: {exc}") from exc
    if isinstance(value, str):
        return value
    raise RequestError(f"{what} must be BYTES (UTF-8 text), not {type(value).__name__}")


def _rows(array: np.ndarray | None, batched: bool) -> list | None:
    if array is None:
        return None
    return list(array) if batched else [array]


def parse_inputs(image: np.ndarray | None, caption: np.ndarray | None,
                 phrases: np.ndarray | None, batched: bool) -> list[GroundRequest | Exception]:
    """One request's inputs (numpy, as Triton hands them over) -> an item per batch row: a
    GroundRequest or the RequestError that says what is wrong with it."""
    if image is None:
        return [RequestError("the request has no image input")]
    images = _rows(np.asarray(image), batched)
    captions, lists = _rows(caption, batched), _rows(phrases, batched)
    items: list[GroundRequest | Exception] = []
    for i, row in enumerate(images):
        try:
            items.append(_parse_item(row, captions[i] if captions is not None else None,
                                     lists[i] if lists is not None else None))
        except RequestError as exc:
            items.append(exc)
    return items


def _parse_item(image: np.ndarray, caption: np.ndarray | None,
                phrases: np.ndarray | None) -> GroundRequest:
    if image.dtype != np.uint8 or image.ndim != 1:
        raise RequestError(f"image must be UINT8 [bytes] (the encoded file), not "
                           f"{image.dtype} {list(image.shape)}")
    if image.size > MAX_IMAGE_BYTES:
        raise RequestError(f"image is {image.size} bytes, over the server's limit of "
                           f"{MAX_IMAGE_BYTES} (send an encoded JPEG or PNG)")
    text = None
    if caption is not None:
        values = np.asarray(caption, dtype=object).reshape(-1)
        if len(values) != 1:
            raise RequestError(f"caption must hold one string, not {len(values)}")
        text = _text(values[0], "caption")
    listed = None
    if phrases is not None:
        listed = tuple(_text(v, "a phrase").strip()
                       for v in np.asarray(phrases, dtype=object).reshape(-1))
        if not listed or not all(listed):
            raise RequestError("phrases must be a non-empty list of non-empty strings")
    if listed is None and (text is None or not text.strip()):
        raise RequestError("caption is empty: give a caption with noun phrases (or phrases)")
    return GroundRequest(image.tobytes(), None if listed else text, listed)


class RequestHandler:
    """Grounds parsed items with one Grounder (thread-safe: Grounder is)."""

    def __init__(self, grounder: Grounder, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.grounder = grounder
        self.max_batch = max_batch
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def _next_frame(self) -> int:
        with self._lock:
            return next(self._counter)

    def handle(self, items: Sequence[GroundRequest | Exception]) -> list[str | Exception]:
        """A JSON document or an exception per item, in order."""
        received = time.time()
        out: list[str | Exception | None] = [None] * len(items)
        frames = [self._next_frame() for _ in items]
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for i, item in enumerate(items):
            if isinstance(item, Exception):
                out[i] = item
                continue
            try:
                groups.setdefault(item.prompt, []).append((i, load_image(item.image)))
            except GroundrtError as exc:
                out[i] = exc
        for (caption, phrases), members in groups.items():
            for start in range(0, len(members), self.max_batch):
                chunk = members[start:start + self.max_batch]
                try:
                    results = self.grounder.ground_batch([image for _, image in chunk],
                                                         caption, phrases)
                except (GroundrtError, ValueError) as exc:
                    for i, _ in chunk:
                        out[i] = exc
                    continue
                for (i, _), result in zip(chunk, results, strict=True):
                    out[i] = json.dumps(result_record(result, frames[i], received,
                                                      REQUEST_NAME))
        return out  # type: ignore[return-value]

    def handle_requests(self, requests: Sequence[dict], batched: bool
                        ) -> list[list[str | Exception]]:
        """Per server request (its inputs by name: image, caption, phrases), the answers of its
        batch rows, all requests' items grounded together."""
        items, owners = [], []
        for n, inputs in enumerate(requests):
            parsed = parse_inputs(inputs.get("image"), inputs.get("caption"),
                                  inputs.get("phrases"), batched)
            items.extend(parsed)
            owners.extend([n] * len(parsed))
        per_request: list[list[str | Exception]] = [[] for _ in requests]
        for owner, answer in zip(owners, self.handle(items), strict=True):
            per_request[owner].append(answer)
        return per_request


def result_tensor(answers: Sequence[str], batched: bool) -> np.ndarray:
    """The `result` output of one request: [rows, 1] BYTES with a batch axis, else [1]."""
    result = np.array([[a.encode()] for a in answers], dtype=np.object_)
    return result if batched else result[0]


class BackendGrounder(Grounder):
    """A Grounder whose graphs run elsewhere (a Triton server's graph models): a package folder
    with only the manifest and the tokenizer, and a Backend that sends the graphs' inputs.
    Everything else (tokenizing, the caption cache, letterbox, decoding) is Grounder's."""

    def __init__(self, folder: str | Path, backend: Backend, max_phrases: int = 64,
                 text_cache_size: int = 128, kernel_threads: int = 1) -> None:
        super().__init__(folder, backend=backend, max_phrases=max_phrases,
                         text_cache_size=text_cache_size, kernel_threads=kernel_threads)
