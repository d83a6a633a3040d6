"""Images in: numpy arrays (BGR as OpenCV gives them, or RGB), file paths or encoded bytes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from groundrt.errors import GroundrtError

ImageInput = np.ndarray | str | Path | bytes | bytearray | memoryview


class ImageError(GroundrtError, ValueError):
    """An image is missing, empty, corrupt or of an unsupported type or shape."""


def _decode(data: bytes, source: str) -> np.ndarray:
    if not data:
        raise ImageError(f"{source} is empty (0 bytes)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{source} is not a readable image (corrupt or unsupported format)")
    return image


def load_image(image: ImageInput, rgb: bool = False) -> np.ndarray:
    """Any accepted input -> [H, W, 3] uint8 BGR. `rgb=True` says a numpy input is RGB."""
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"image file {path} does not exist")
        return _decode(path.read_bytes(), f"image file {path}")
    if isinstance(image, bytes | bytearray | memoryview):
        return _decode(bytes(image), "the image bytes")
    if not isinstance(image, np.ndarray):
        raise ImageError(f"an image must be a numpy array, a path or bytes, not "
                         f"{type(image).__name__}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], not "
                         f"{list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"the image is empty ({image.shape[0]}x{image.shape[1]} pixels)")
    if image.dtype != np.uint8:
        raise ImageError(f"an image array must be uint8, not {image.dtype} (scale it to "
                         "0..255 and convert)")
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image[..., ::-1]) if rgb else image
