"""Image preprocessing shared by training, prediction and the runtime: letterbox + normalize.

The model sees an input of a fixed shape, the trained S x S square or a top-left crop of it
(a package built for one camera aspect, e.g. 144 x 192 for 4:3 frames): the original is scaled
to fit (aspect kept), placed at the top-left corner and padded with grey. `Letterbox` remembers
the geometry so that maps predicted on the input can be cropped and resized back to the original
size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from groundrt.kernels import cpu as cpu_kernels

MEAN_RGB = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD_RGB = np.array([58.395, 57.12, 57.375], dtype=np.float32)
PAD_VALUE = 114
# (v - mean) / std of every uint8 value v, per RGB channel: normalizing is a table lookup, with
# the same float32 values as computing it
NORMALIZED_RGB = (np.arange(256, dtype=np.float32)[None, :] - MEAN_RGB[:, None]) / STD_RGB[:, None]


@dataclass(frozen=True)
class Letterbox:
    shape: tuple[int, int]  # (h, w) of the model's input
    height: int  # original image size
    width: int

    @property
    def scale(self) -> float:
        return min(self.shape[0] / self.height, self.shape[1] / self.width)

    @property
    def shrinks(self) -> bool:
        """The image gets smaller (or keeps its size) on both axes."""
        h, w = self.inner
        return h <= self.height and w <= self.width

    @property
    def inner(self) -> tuple[int, int]:
        """(h, w) of the resized image inside the input."""
        return (min(self.shape[0], max(1, round(self.height * self.scale))),
                min(self.shape[1], max(1, round(self.width * self.scale))))

    def apply(self, image: np.ndarray, interpolation: int = cv2.INTER_AREA,
              pad: int = PAD_VALUE) -> np.ndarray:
        """[H, W, ...] -> [h, w, ...] of the input: resize into the top-left corner, pad the
        rest."""
        h, w = self.inner
        resized = cv2.resize(image, (w, h), interpolation=interpolation)
        out = np.full(self.shape + image.shape[2:], pad, dtype=image.dtype)
        out[:h, :w] = resized.reshape((h, w) + image.shape[2:])
        return out

    def crop_region(self, stride: int) -> tuple[float, float]:
        """(h, w) of the image region in a map of stride `stride` (fractional cells)."""
        h, w = self.inner
        return h / stride, w / stride

    def to_original(self, maps: np.ndarray, stride: int) -> np.ndarray:
        """[..., h, w] float maps at `stride` -> [..., H, W] at the original size, bilinear.

        Pixel centres are aligned (align_corners=False), as torch's bilinear resize does.
        """
        return resize_region(maps, *self.crop_region(stride), self.height, self.width)


def resize_region(maps: np.ndarray, crop_h: float, crop_w: float, height: int,
                  width: int) -> np.ndarray:
    """[..., h, w] maps -> [..., height, width]: the top-left crop_h x crop_w region (fractional
    cells), resized bilinearly with pixel centres aligned and the region's edge replicated."""
    lead = maps.shape[:-2]
    flat = maps.reshape((-1,) + maps.shape[-2:])
    out = np.empty((flat.shape[0], height, width), dtype=np.float32)
    # Map each original pixel centre to map coordinates and sample bilinearly.
    map_x = (np.arange(width, dtype=np.float32) + 0.5) * (crop_w / width) - 0.5
    map_y = (np.arange(height, dtype=np.float32) + 0.5) * (crop_h / height) - 0.5
    grid_x = np.ascontiguousarray(np.broadcast_to(map_x[None, :], (height, width)))
    grid_y = np.ascontiguousarray(np.broadcast_to(map_y[:, None], (height, width)))
    # Cells beyond the image region (padding) must not bleed in: clamp at the region's edge.
    rows = min(flat.shape[1], int(np.ceil(crop_h)))
    cols = min(flat.shape[2], int(np.ceil(crop_w)))
    for i, m in enumerate(flat):
        region = np.ascontiguousarray(m[:rows, :cols], dtype=np.float32)
        out[i] = cv2.remap(region, grid_x, grid_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(lead + (height, width))


def normalize(image_bgr: np.ndarray) -> np.ndarray:
    """[h, w, 3] uint8 BGR -> [3, h, w] float32, RGB, ImageNet mean/std."""
    if image_bgr.dtype != np.uint8:
        raise TypeError(f"normalize takes uint8 images, not {image_bgr.dtype}")
    out = np.empty((3,) + image_bgr.shape[:2], dtype=np.float32)
    for channel in range(3):  # RGB channel c is BGR channel 2 - c
        np.take(NORMALIZED_RGB[channel], image_bgr[..., 2 - channel], out=out[channel])
    return out


def letterbox_input(image_bgr: np.ndarray, box: Letterbox, native: bool = False,
                    threads: int = 1) -> np.ndarray:
    """[H, W, 3] uint8 BGR -> the model's input [3, h, w] float32: `normalize(box.apply(image))`.

    native=True computes it in one pass with the CPU kernel library (kernels/cpu.py: a few times
    faster than cv2's area resize at ratios like 640 -> 192; a value on a rounding tie may come
    out 1 apart) on up to `threads` threads when the image shrinks; enlarging always takes
    OpenCV's path.
    """
    if native and box.shrinks:
        return cpu_kernels.letterbox(image_bgr, box.shape, *box.inner, PAD_VALUE, NORMALIZED_RGB,
                                     threads=threads)
    return normalize(box.apply(image_bgr))
