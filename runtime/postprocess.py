"""Affinity and mask decoding: the CUDA kernels (a GPU backend), the native CPU kernels, or
numpy where the kernels are not built.

Both paths take the same arguments and return the same arrays (kernels/cpu.py documents them):
scores [P, Q] float32 and selected [P, Q] uint8; masks uint8 [P, H, W] and stats [P]
(area, box, centroid, score). The numpy path is the straightforward version (cv2 resize of each
phrase's logit map, sigmoid, threshold, np.nonzero); the kernels compute the same in one pass.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from groundrt.kernels import cpu as cpu_kernels
from groundrt.preprocess import resize_region
from groundrt.runtime import reference

log = logging.getLogger(__name__)
_warned: set[str] = set()  # each fallback reason is logged once per process


def warn_fallback(reason: str) -> None:
    """One warning per reason: the numpy path runs, and how to get the native one."""
    if reason not in _warned:
        _warned.add(reason)
        log.warning("%s; using the slower numpy path (`groundrt info` shows the kernels' state)",
                    reason)


def numpy_affinity(phrase_embed: np.ndarray, mask_embed: np.ndarray, logit_scale: float,
                   bias: float, plural: np.ndarray,
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    scores = reference.affinity(phrase_embed, mask_embed, logit_scale, bias).astype(np.float32)
    selected = reference.select_queries(scores, np.asarray(plural, bool), threshold)
    return scores, selected.astype(np.uint8)


def numpy_decode_masks(pixel_embed: np.ndarray, mask_embed: np.ndarray, selected: np.ndarray,
                       crop_h: float, crop_w: float, height: int, width: int,
                       threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    logits = resize_region(reference.phrase_logits(selected.astype(bool), mask_embed,
                                                   pixel_embed), crop_h, crop_w, height, width)
    masks = (logits > threshold).astype(np.uint8)
    stats = np.zeros(len(masks), dtype=cpu_kernels.STATS_DTYPE)
    for p, (mask, logit) in enumerate(zip(masks, logits, strict=True)):
        ys, xs = np.nonzero(mask)
        if len(xs):
            stats[p] = (len(xs), (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1),
                        (xs.mean(), ys.mean()), float((1 / (1 + np.exp(-logit[ys, xs]))).mean()))
    return masks, stats


MIN_INSTANCE_SHARE = 0.01  # of the phrase's mask: smaller pieces are specks, not instances


def mask_components(mask: np.ndarray, min_share: float = MIN_INSTANCE_SHARE) -> list[np.ndarray]:
    """The connected parts (8-neighbourhood) of a [H, W] bool mask, largest first, without
    those under `min_share` of its area: a v2 plural's instances. (Measured on 200 val scenes,
    the student's phrase masks hold 2.78 parts per plural for 2.77 true instances, and give
    instance AR 0.635; the object tokens the affinity selects, 1.45 per plural, give 0.243.)"""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8),
                                                               connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    floor = min_share * areas.sum()
    keep = [k + 1 for k in np.argsort(-areas, kind="stable") if areas[k] >= floor]
    return [labels == k for k in keep]


SINGULAR_MARGIN = 0.05  # parts of a singular's mask kept: mean probability within this of the best
SUBCELLS = 4  # the parts' mean probabilities from 4 x 4 points a cell


def _first_cells(pixels: np.ndarray, crop: float, size: int, cells: int) -> np.ndarray:
    """Pixel positions on an axis of `size` -> the first of the two cells of a region of
    `cells` (the image's crop cells of the map) each interpolates between, as resize_region
    samples (pixel centres aligned, the region's edge replicated)."""
    at = np.clip((pixels + 0.5) * crop / size - 0.5, 0, cells - 1)
    return np.floor(at).astype(int)


def _blocks(cells: np.ndarray) -> np.ndarray:
    """[h, w] -> [h, w]: the largest value of the 2 x 2 block of cells whose first cell each
    is (the region's edge replicated), which a pixel interpolating from that block sees."""
    out = cells.copy()
    np.maximum(out[:-1], cells[1:], out=out[:-1])
    np.maximum(out[:, :-1], out[:, 1:], out=out[:, :-1])
    return out


def _block_sums(points: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """[high, wide, channels] float32 values at SUBCELLS points a cell -> [rows, cols,
    channels] their sums by the block each interpolates from (its first cell): a point k of an
    axis interpolates from cell (k - SUBCELLS / 2) // SUBCELLS, the first ones from cell 0 (the
    edge replicated)."""
    shift = SUBCELLS - SUBCELLS // 2
    padded = cv2.copyMakeBorder(points, shift, SUBCELLS * (rows + 1) - shift - points.shape[0],
                                shift, SUBCELLS * (cols + 1) - shift - points.shape[1],
                                cv2.BORDER_CONSTANT, value=0)
    # the mean of each SUBCELLS x SUBCELLS tile (exact for an integer factor), times its size
    out = cv2.resize(padded, (cols + 1, rows + 1), interpolation=cv2.INTER_AREA)
    out = out.reshape(rows + 1, cols + 1, -1) * SUBCELLS**2
    out[1] += out[0]  # the points before the first cell's block interpolate from it
    out[:, 1] += out[:, 0]
    return out[1:, 1:]


def confident_parts(mask: np.ndarray, stats: np.void, grid: np.ndarray, crop_h: float,
                    crop_w: float, margin: float = SINGULAR_MARGIN
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """A v2 singular's [H, W] bool mask (`stats` its STATS_DTYPE record from the decoding;
    `grid` [h, w] its logit map, kernel x pixel_embed, the image region crop_h x crop_w cells)
    without the parts the network is less sure of, and its stats (STATS_DTYPE; the score the
    mean probability of the kept parts); None when there is nothing to drop.

    A network unsure which of two look-alikes a singular names covers both (measured on 300 val
    scenes: 27% of the singular things' masks hold their instance and more, IoU < 0.5). The
    parts of its logit map (cells > 0, 8-connected; parts under 1% of the cells are specks, which
    go too when a part goes, and a mask of one part and specks stays whole) then differ in how
    sure it is: the parts whose mean probability over the area they cover is within `margin`
    of the surest one's are kept. Chosen on 600 train narratives
    (margins 0.03-0.15, the means over each part's pixels): the student's singular things +2.7
    AR points, stuff (whose parts are all sure) -0.1.

    Working on the grid keeps it cheap (labelling the image's pixels took ~1 ms a phrase): a
    pixel's mask value interpolates a 2 x 2 block of cells, and two parts never share a block
    (they are not 8-connected), so a pixel goes exactly when its block holds a dropped cell."""
    rows, cols = (min(n, int(np.ceil(c))) for n, c in zip(grid.shape, (crop_h, crop_w),
                                                          strict=True))
    region = grid[:rows, :cols]
    count, labels = cv2.connectedComponents((region > 0).view(np.uint8), connectivity=8)
    cells = np.bincount(labels.ravel(), minlength=count)[1:]
    candidate = cells >= MIN_INSTANCE_SHARE * cells.sum()
    if candidate.sum() < 2:  # one part and specks at most: nothing to choose between
        return None
    # each part's mean probability over the area its cells cover: the logits interpolated as
    # the mask is at SUBCELLS x SUBCELLS points a cell (OpenCV's bilinear resize by an integer
    # factor samples where resize_region would), summed by the 2 x 2 block they interpolate
    # from; a block holds cells of one part at most
    size = (SUBCELLS * cols, SUBCELLS * rows)
    high, wide = int(np.ceil(SUBCELLS * crop_h)), int(np.ceil(SUBCELLS * crop_w))
    logits = cv2.resize(region, size, interpolation=cv2.INTER_LINEAR)[:high, :wide]
    inside = logits > 0
    # (the points outside are 0: their logits, clipped, cannot overflow exp)
    probability = np.where(inside, 1 / (1 + np.exp(-np.maximum(logits, 0))), 0).astype(np.float32)
    owner = _blocks(labels).ravel()
    by_block = _block_sums(np.dstack([probability, inside.astype(np.float32)]), rows, cols)
    sums = np.bincount(owner, by_block[..., 0].ravel(), minlength=count)
    samples = np.bincount(owner, by_block[..., 1].ravel(), minlength=count)[1:]
    means = sums[1:] / np.maximum(samples, 1)
    candidate &= samples > 0
    if not candidate.any():
        return None
    keep = candidate & (means >= means[candidate].max() - margin)
    if keep.all():
        return None
    dropped = np.concatenate([[False], ~keep])[labels]  # [rows, cols]: the cells that go
    height, width = mask.shape
    x0, y0, x1, y1 = (int(v) for v in stats["box"])
    # only the pixels whose 2 x 2 block may hold a dropped cell are looked at (a speck of the sky
    # is a few of them, the whole mask's box up to the image: ~1 ms a phrase at 640 x 480)
    spans = []
    for axis, (start, stop, crop, pixels, n_cells) in enumerate(
            ((y0, y1, crop_h, height, rows), (x0, x1, crop_w, width, cols))):
        low = _first_cells(np.arange(start, stop), crop, pixels, n_cells)
        hit = np.flatnonzero(dropped.any(1 - axis))
        first, last = (np.searchsorted(low, hit[0] - 1), np.searchsorted(low, hit[-1], "right"))
        spans.append((start + first, start + last, low[first:last]))
    (ry0, ry1, low_y), (rx0, rx1, low_x) = spans
    trimmed = mask.copy()
    region = trimmed[ry0:ry1, rx0:rx1]
    removed = region & _blocks(dropped)[low_y][:, low_x]
    region &= ~removed
    ys, xs = np.nonzero(removed)
    out = np.zeros(1, dtype=cpu_kernels.STATS_DTYPE)[0]
    out["area"] = stats["area"] - len(ys)
    if out["area"]:
        left, top, w, h = cv2.boundingRect(trimmed[y0:y1, x0:x1].view(np.uint8))
        out["box"] = (x0 + left, y0 + top, x0 + left + w, y0 + top + h)
        # the centroid without the removed pixels' share
        out["centroid"] = ((stats["centroid"] * stats["area"] - (xs.sum() + rx0 * len(xs),
                                                                  ys.sum() + ry0 * len(ys)))
                           / out["area"])
        out["score"] = (means[keep] * samples[keep]).sum() / samples[keep].sum()
    return trimmed, out


class Postprocessor:
    """Picks the native CPU kernels when built (`native=None`: if available), else numpy; or,
    given a CUDA device index (`cuda_device`: the TensorRT backend's, or ONNX Runtime's on a
    GPU), the CUDA kernels on that device where they and pycuda are there (else the CPU path,
    with one warning). The CPU kernels decode phrases on up to `threads` threads. Safe to call
    from several threads (the CUDA kernels lend each call its own stream and buffers)."""

    def __init__(self, native: bool | None = None, cuda_device: int | None = None,
                 threads: int = 1) -> None:
        self.kernels: Any = cpu_kernels
        self.threads = threads
        self.on_gpu = False
        if cuda_device is not None and native is not False:
            try:
                from groundrt.kernels.cuda import CudaKernels

                self.kernels = CudaKernels(device=cuda_device)
                self.on_gpu = native = True
            except Exception as exc:  # noqa: BLE001 (no pycuda, no fatbin, a driver error)
                warn_fallback(f"the CUDA mask kernels are not usable ({exc}); decoding on the "
                              "CPU")
        if native is None:
            reason = cpu_kernels.problem()  # missing, or there but not loadable here
            if reason is not None:
                warn_fallback(reason)
            native = reason is None
        elif native and not self.on_gpu:
            cpu_kernels.library()  # raises KernelsNotBuiltError with the build command
        self.native = native

    def affinity(self, phrase_embed: np.ndarray, mask_embed: np.ndarray, logit_scale: float,
                 bias: float, plural: np.ndarray,
                 threshold: float) -> tuple[np.ndarray, np.ndarray]:
        run = self.kernels.affinity if self.native else numpy_affinity
        return run(phrase_embed, mask_embed, logit_scale, bias, plural, threshold)

    def decode_masks(self, pixel_embed: Any, mask_embed: np.ndarray,
                     selected: np.ndarray, crop_h: float, crop_w: float, height: int,
                     width: int, threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """pixel_embed [D, h, w]: a numpy array, or a DeviceTensor (the CUDA kernels read it on
        the device; the other paths copy it to the host)."""
        if self.on_gpu:
            return self.kernels.decode_masks(pixel_embed, mask_embed, selected, crop_h, crop_w,
                                             height, width, threshold)
        args = (np.asarray(pixel_embed), mask_embed, selected, crop_h, crop_w, height, width,
                threshold)
        if not self.native:
            return numpy_decode_masks(*args)
        return cpu_kernels.decode_masks(*args, threads=self.threads)
