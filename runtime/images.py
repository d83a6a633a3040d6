"""Images in: numpy arrays (BGR as OpenCV gives them, or RGB), file paths or encoded bytes.

Every input is checked where it enters, before any pixel is decoded or copied:
* a file or bytes: the width and height are read from the header (Pillow reads only the header
  of the formats in HEADER_FORMATS) and refused above `max_pixels` before OpenCV decodes a pixel;
  a format whose header Pillow cannot read is refused, an OpenCV failure is an ImageError;
* an array: [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] uint8 of at most `max_pixels` pixels, any
  memory layout (views with negative or odd strides are copied into a packed array).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from groundrt.errors import GroundrtError

ImageInput = np.ndarray | str | Path | bytes | bytearray | memoryview

# 40 megapixels: an 8K UHD frame (33.2 MP) passes. Decoding costs 3 bytes a pixel and every
# phrase mask one more, so the limit bounds a call's memory; raise it with max_pixels.
DEFAULT_MAX_PIXELS = 40_000_000
# The formats OpenCV decodes whose header Pillow reads without decoding the pixels.
HEADER_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF", "PPM", "GIF")


class ImageError(GroundrtError, ValueError):
    """An image is missing, empty, corrupt, too large or of an unsupported shape or dtype."""


def _check_pixels(height: int, width: int, max_pixels: int, source: str) -> None:
    if height * width > max_pixels:
        raise ImageError(f"{source} is {width}x{height} pixels ({height * width / 1e6:.1f} MP), "
                         f"more than the limit of {max_pixels / 1e6:.1f} MP: downscale it or "
                         "raise max_pixels (--max-pixels)")


def header_size(data: bytes, source: str) -> tuple[int, int]:
    """(height, width) from the image's header, no pixel decoded; ImageError when unreadable.

    Pillow's format plugins read the header as Image.open does, without its own size cap
    (MAX_IMAGE_PIXELS): the limit is the caller's `max_pixels`.
    """
    Image.init()
    prefix = data[:16]
    for name in HEADER_FORMATS:
        factory, accept = Image.OPEN[name]
        if accept is not None and not accept(prefix):
            continue
        try:
            with factory(io.BytesIO(data), "") as header:
                width, height = header.size
        except (OSError, ValueError, SyntaxError, IndexError, struct.error, EOFError):
            continue  # not this format, or a corrupt header
        if width <= 0 or height <= 0:
            raise ImageError(f"{source} has an empty size in its header ({width}x{height})")
        return height, width
    raise ImageError(f"{source} is not a readable image (corrupt, or not one of "
                     f"{', '.join(HEADER_FORMATS)})")


def _decode(data: bytes, source: str, max_pixels: int) -> np.ndarray:
    if not data:
        raise ImageError(f"{source} is empty (0 bytes)")
    _check_pixels(*header_size(data, source), max_pixels, source)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"{source} could not be decoded: {exc.err or exc}") from exc
    if image is None or image.ndim != 3 or not image.size:
        raise ImageError(f"{source} is not a readable image (corrupt or unsupported format)")
    _check_pixels(*image.shape[:2], max_pixels, source)  # the header did not lie
    return image


def _read_file(path: Path) -> bytes:
    if path.is_dir():
        raise ImageError(f"image path {path} is a folder, not an image file")
    if not path.is_file():
        raise ImageError(f"image file {path} does not exist")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc


def _packed(image: np.ndarray) -> np.ndarray:
    """The array itself when its rows go forward and its pixels are packed, else a packed copy
    (every kernel and OpenCV call after this one can rely on it)."""
    channels = image.shape[2]
    if image.strides[0] > 0 and image.strides[1:] == (channels, 1):
        return image
    return np.ascontiguousarray(image)


def load_image(image: ImageInput, rgb: bool = False,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any accepted input -> [H, W, 3] uint8 BGR. `rgb=True` says a numpy input is RGB.

    TypeError for an input of another type; ImageError for a bad image (named in the message).
    """
    if isinstance(image, str | Path):
        path = Path(image)
        return _decode(_read_file(path), f"image file {path}", max_pixels)
    if isinstance(image, bytes | bytearray | memoryview):
        return _decode(bytes(image), "the image bytes", max_pixels)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"an image must be a numpy array, a path or bytes, not "
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
    _check_pixels(*image.shape[:2], max_pixels, "the image array")
    image = _packed(image)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image[..., ::-1]) if rgb else image
