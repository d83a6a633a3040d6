"""A client of the `groundrt` server model (`groundrt serve`, or a Triton repository from
`groundrt export triton`), with tritonclient (`pip install 'groundrt[serve]'`):

    client = GroundrtClient("http://localhost:8000")        # or "grpc://localhost:8001"
    record = client.ground(open("shot.jpg", "rb").read(), "A red star on the grass.")
    record["phrases"][0]["mask"]                            # COCO RLE, as `groundrt run --json`

`ServerGrounder` gives `groundrt run --server URL` the Grounder stages a Stream runs: each frame
is PNG-encoded (lossless: the server grounds the frame's own pixels), sent, and its JSON answer
turned back into a GroundingResult (masks from their RLE; instances are not sent).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from groundrt.errors import GroundrtError
from groundrt.runtime.chunker import require_noun_phrases
from groundrt.runtime.images import ImageInput, load_image
from groundrt.runtime.results import GroundingResult, PhraseResult
from groundrt.runtime.serving import MODEL_NAME


class ServerError(GroundrtError):
    """The server cannot be reached, or it answered a request with an error."""


def parse_url(url: str) -> tuple[str, str]:
    """'http://host:8000', 'grpc://host:8001' or 'host:8000' (HTTP) -> (protocol, host:port)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "grpc") or not parsed.netloc:
        raise ValueError(f"server URL {url!r}: use http://HOST:PORT or grpc://HOST:PORT")
    return parsed.scheme, parsed.netloc


ERROR_LINE = re.compile(r"^(?:\w+\.)*(\w+(?:Error|Exception)): (.+)$")


def server_message(message: str) -> str:
    """The error itself from a server's message: PyTriton sends the model's traceback, whose
    last exception line is the error ("RequestError: caption is empty: ...")."""
    if "Traceback" not in message:
        return message
    found = [m for line in message.replace("\\n", "\n").splitlines()
             if (m := ERROR_LINE.match(line.strip()))]
    return f"{found[-1][1]}: {found[-1][2]}" if found else message


def encode_image(image: ImageInput) -> bytes:
    """Encoded bytes as they are; arrays (BGR) and paths as PNG (lossless)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    ok, png = cv2.imencode(".png", load_image(image))
    if not ok:
        raise ServerError("OpenCV could not encode the frame as PNG")
    return png.tobytes()


class GroundrtClient:
    """One connection to a server's `groundrt` model (HTTP or gRPC); thread-safe for gRPC, one
    client per thread for HTTP (tritonclient's HTTP client is not)."""

    def __init__(self, url: str, model: str = MODEL_NAME, timeout_s: float = 60.0) -> None:
        self.protocol, self.address = parse_url(url)
        self.model = model
        self.timeout_s = timeout_s
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as triton
            else:
                import tritonclient.http as triton
        except ModuleNotFoundError as exc:
            raise ServerError("the server client needs tritonclient: "
                              "pip install 'groundrt[serve]'") from exc
        self._triton = triton
        kwargs = {} if self.protocol == "grpc" else {"network_timeout": timeout_s,
                                                     "connection_timeout": timeout_s}
        self._client = triton.InferenceServerClient(self.address, **kwargs)
        self._batched: bool | None = None

    def _call(self, what: str, function, *args, **kwargs) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return function(*args, **kwargs)
        except InferenceServerException as exc:
            raise ServerError(f"{self.protocol}://{self.address} {what}: "
                              f"{server_message(exc.message() or str(exc))}") from exc
        except OSError as exc:
            raise ServerError(f"cannot reach {self.protocol}://{self.address}: {exc}") from exc

    def ready(self) -> bool:
        """The server is live and the model ready."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:  # noqa: BLE001 (not reachable yet is "not ready")
            return False

    def batched(self) -> bool:
        """The model has a batch axis (max_batch_size > 0): every input gains a leading 1."""
        if self._batched is None:
            config = self._call("model config", self._client.get_model_config, self.model)
            if self.protocol == "grpc":
                config = config.config
                size = config.max_batch_size
            else:
                size = config.get("max_batch_size", 0)
            self._batched = int(size) > 0
        return self._batched

    def ground(self, image: ImageInput, caption: str | None = None,
               phrases: Sequence[str] | None = None) -> dict:
        """The server's JSON result for one image (encoded bytes, a path or a BGR array)."""
        data = np.frombuffer(encode_image(image), dtype=np.uint8)
        lead = [1] if self.batched() else []
        tensors = [("image", data, "UINT8")]
        if caption is not None:
            tensors.append(("caption", np.array([caption.encode()], dtype=np.object_), "BYTES"))
        if phrases is not None:
            tensors.append(("phrases", np.array([p.encode() for p in phrases],
                                                dtype=np.object_), "BYTES"))
        inputs = []
        for name, array, dtype in tensors:
            array = array.reshape(lead + list(array.shape))
            tensor = self._triton.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [self._triton.InferRequestedOutput("result")]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        response = self._call("grounding request", self._client.infer, self.model, inputs,
                              outputs=outputs, **kwargs)
        return json.loads(response.as_numpy("result").reshape(-1)[0])

    def close(self) -> None:
        self._client.close()


def result_from_record(record: dict) -> GroundingResult:
    """A GroundingResult from a JSON result (masks decoded from their RLE; no instances)."""
    phrases = []
    for p in record["phrases"]:
        rle = {"size": p["mask"]["size"], "counts": p["mask"]["counts"].encode("ascii")}
        mask = mask_utils.decode(rle).astype(bool)
        phrases.append(PhraseResult(
            text=p["text"], span=tuple(p["span"]) if p["span"] else None, plural=p["plural"],
            mask=mask, score=p["score"], area=p["area"], box=tuple(p["box"]),
            centroid=tuple(p["centroid"]), queries=p["queries"], found=p.get("found", True),
            presence=p.get("presence")))
    return GroundingResult(tuple(record["image_size"]), record["caption"], phrases,
                           dict(record.get("timings_ms", {})))


@dataclass(frozen=True)
class _Encoded:
    input: np.ndarray  # the PNG bytes as uint8
    box: None = None


@dataclass(frozen=True)
class _Sent:
    rows: np.ndarray

    def item(self, i: int) -> np.ndarray:
        return self.rows[i]


class ServerGrounder:
    """What runtime/stream.py's Stream asks of a Grounder (prepare, infer, encode_text,
    decode), answered by a server: the encoding in `prepare`, the request in `decode`."""

    def __init__(self, url: str, model: str = MODEL_NAME, timeout_s: float = 60.0) -> None:
        self.url = url
        self.client = GroundrtClient(url, model, timeout_s)
        if not self.client.ready():
            raise ServerError(f"the server at {url} is not ready (is `groundrt serve` running, "
                              f"with a model named {model}?)")
        self.backend = SimpleNamespace(name="server", precision=url)
        # one tritonclient HTTP client per thread: decode is one stage (one thread) of a stream

    def prepare(self, image: ImageInput, rgb: bool = False) -> _Encoded:
        loaded = load_image(image, rgb)
        return _Encoded(np.frombuffer(encode_image(loaded), dtype=np.uint8))

    def infer(self, inputs: np.ndarray) -> _Sent:
        return _Sent(inputs)

    def encode_text(self, caption: str | None = None,
                    phrases: Sequence[str] | None = None) -> tuple:
        """The prompt as sent; a caption without noun phrases fails here, as in process."""
        if phrases is None:
            require_noun_phrases(caption or "")
        return caption, None if phrases is None else tuple(phrases)

    def decode(self, text: tuple, box: None, embeddings: np.ndarray) -> GroundingResult:
        caption, phrases = text
        return result_from_record(self.client.ground(embeddings.tobytes(), caption, phrases))
