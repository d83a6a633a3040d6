"""The runtime kernels (groundrt.kernels) against a float64 numpy reference.

The CPU library runs the per-element arithmetic the CUDA kernels share (grounding_math.h), so these
tests cover the GPU's arithmetic too; the GPU itself is tested when pycuda and a device exist.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess

import numpy as np
import pytest
from conftest import run_in_threads

from groundrt.kernels import cpu
from groundrt.preprocess import NORMALIZED_RGB, PAD_VALUE, STD_RGB, Letterbox, letterbox_input
from groundrt.runtime import reference
from groundrt.runtime.postprocess import numpy_decode_masks, numpy_keep_surest_parts

NEAR = 1e-4  # pixels whose reference logit is this close to the threshold may differ
SASS_ARCHITECTURES = {75, 86, 87, 89, 90}
PTX_ARCHITECTURE = 90
# CI sets it (.ci/run): there the build must have made the library, so a skip is a failure
REQUIRE_NATIVE_ENV = "GROUNDRT_REQUIRE_NATIVE"


def skip_unless_required(reason: str) -> None:
    if os.environ.get(REQUIRE_NATIVE_ENV) == "1":
        pytest.fail(f"{reason} (${REQUIRE_NATIVE_ENV}=1: the native kernels should have been "
                    "built by the install)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def lib():
    try:
        return cpu.library()
    except cpu.KernelsNotBuiltError as error:
        skip_unless_required(str(error))


# ---- float64 reference ----------------------------------------------------------------------


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def taps(n_out: int, crop: float, n_src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps of every output pixel: (X + 0.5) * crop / n_out - 0.5, clamped to n_src."""
    coord = (np.arange(n_out) + 0.5) * (crop / n_out) - 0.5
    base = np.floor(coord)
    i0 = np.clip(base.astype(np.int64), 0, n_src - 1)
    i1 = np.clip(base.astype(np.int64) + 1, 0, n_src - 1)
    return i0, i1, coord - base


def upsample(logits: np.ndarray, crop_h: float, crop_w: float, height: int,
             width: int) -> np.ndarray:
    """[P, h, w] -> [P, H, W]: exact bilinear inside the region, clamped at its edge."""
    rows = min(logits.shape[1], math.ceil(crop_h))
    cols = min(logits.shape[2], math.ceil(crop_w))
    region = logits[:, :rows, :cols]
    y0, y1, wy = taps(height, crop_h, rows)
    x0, x1, wx = taps(width, crop_w, cols)
    top, bottom = region[:, y0], region[:, y1]
    blend = top + wy[None, :, None] * (bottom - top)
    left, right = blend[:, :, x0], blend[:, :, x1]
    return left + wx * (right - left)


def reference_logits(pixel_embed: np.ndarray, mask_embed: np.ndarray, selected: np.ndarray,
                     crop_h: float, crop_w: float, height: int, width: int) -> np.ndarray:
    low = reference.phrase_logits(selected.astype(bool), mask_embed.astype(np.float64),
                                  pixel_embed.astype(np.float64))
    return upsample(low, crop_h, crop_w, height, width)


def stats_of(mask: np.ndarray, logits: np.ndarray) -> list[dict]:
    """Stats of each phrase's (kernel) mask, with the reference logits for the score."""
    out = []
    for m, logit in zip(mask.astype(bool), logits, strict=True):
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            out.append({"area": 0, "box": [0, 0, 0, 0], "centroid": [0.0, 0.0], "score": 0.0})
            continue
        out.append({"area": len(xs), "box": [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                    "centroid": [xs.mean(), ys.mean()], "score": sigmoid(logit[m]).mean()})
    return out


def assert_stats(stats: np.ndarray, expected: list[dict]) -> None:
    assert stats.dtype == cpu.STATS_DTYPE and len(stats) == len(expected)
    for got, want in zip(stats, expected, strict=True):
        assert got["area"] == want["area"]
        assert list(got["box"]) == list(want["box"])
        np.testing.assert_allclose(got["centroid"], want["centroid"], rtol=0, atol=1e-6)
        assert abs(got["score"] - want["score"]) <= 1e-6


def assert_masks(masks: np.ndarray, logits: np.ndarray, threshold: float) -> None:
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    expected = logits > threshold
    differ = (masks.astype(bool) != expected) & (np.abs(logits - threshold) >= NEAR)
    assert not differ.any(), f"{differ.sum()} pixels differ from the reference"
    assert (np.abs(logits - threshold) < NEAR).sum() <= 1e-3 * logits.size  # a few, at most


# ---- inputs ---------------------------------------------------------------------------------


def embeddings(rng: np.random.Generator, num_phrases: int, num_queries: int, dim: int, h: int,
               w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pixel_embed [D, h, w], mask_embed [Q, D], selected [P, Q] (>= 1 query per phrase)."""
    pixel = rng.standard_normal((dim, h, w)).astype(np.float32)
    masks = rng.standard_normal((num_queries, dim)).astype(np.float32)
    selected = rng.random((num_phrases, num_queries)) < 0.15
    selected[np.arange(num_phrases), rng.integers(0, num_queries, num_phrases)] = True
    return pixel, masks, selected.astype(np.uint8)


def poisoned(num_phrases: int, height: int, width: int,
             packed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    masks = np.full(cpu.mask_shape(num_phrases, height, width, packed), 0xAB, np.uint8)
    stats = np.frombuffer(np.full(48 * num_phrases, 0xAB, np.uint8).tobytes(),
                          cpu.STATS_DTYPE).copy()
    stats["centroid"] = np.nan
    stats["score"] = np.nan
    return masks, stats


# (P, Q, D, h, w, crop_h, crop_w, H, W): odd maps, non-square images, sizes not multiples of
# the stride, crops smaller than the map (letterbox padding), larger than it, or tiny.
CASES = [
    (0, 5, 8, 7, 7, 5.5, 7.0, 33, 47),
    (1, 1, 4, 5, 5, 5.0, 5.0, 17, 23),
    (1, 6, 16, 13, 13, 13.0, 9.4375, 301, 219),
    (3, 9, 12, 9, 15, 7.3, 15.0, 61, 130),
    (5, 24, 48, 11, 11, 6.6875, 11.0, 115, 189),
    (17, 24, 48, 13, 13, 13.0, 13.0, 97, 101),
    (64, 30, 16, 9, 9, 9.8, 8.2, 45, 37),
    (2, 3, 8, 6, 9, 0.4, 0.7, 10, 13),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"P{c[0]}-{c[3]}x{c[4]}-{c[7]}x{c[8]}")
def test_decode_matches_reference(lib, case: tuple) -> None:
    num_phrases, num_queries, dim, h, w, crop_h, crop_w, height, width = case
    rng = np.random.default_rng(sum(case[:5]))
    pixel, mask_embed, selected = embeddings(rng, num_phrases, num_queries, dim, h, w)
    out = poisoned(num_phrases, height, width)
    masks, stats = cpu.decode_masks(pixel, mask_embed, selected, crop_h, crop_w, height, width,
                                    out=out)
    assert masks is out[0] and stats is out[1]
    assert masks.shape == (num_phrases, height, width)
    logits = reference_logits(pixel, mask_embed, selected, crop_h, crop_w, height, width)
    assert_masks(masks, logits, 0.0)
    assert_stats(stats, stats_of(masks, logits))

    bits, packed_stats = cpu.decode_masks(pixel, mask_embed, selected, crop_h, crop_w, height,
                                          width, packed=True,
                                          out=poisoned(num_phrases, height, width, True))
    np.testing.assert_array_equal(bits, np.packbits(masks, axis=-1, bitorder="big"))
    np.testing.assert_array_equal(packed_stats, stats)


def blob_maps(rng: np.random.Generator, num_queries: int, h: int,
              w: int) -> tuple[np.ndarray, np.ndarray]:
    """pixel_embed [Q, h, w] and one-hot mask_embed [Q, Q]: query q's logits are negative
    except for a small blob (a thing), at a map corner or edge for some queries; the last
    query's map is negative everywhere."""
    pixel = -rng.uniform(0.5, 6.0, (num_queries, h, w)).astype(np.float32)
    for q in range(num_queries - 1):
        y, x = rng.integers(0, h), rng.integers(0, w)
        size_y, size_x = rng.integers(1, 4, 2)
        pixel[q, y:y + size_y, x:x + size_x] = rng.uniform(0.1, 8.0, (min(size_y, h - y),
                                                                       min(size_x, w - x)))
    pixel[0, :2, :2] = 3.0
    pixel[1, -1:, -3:] = 2.0
    return pixel, np.eye(num_queries, dtype=np.float32)


def test_decode_of_small_blobs(lib) -> None:
    """Masks much smaller than the image: only the rows and columns near an above-threshold
    cell are sampled; the rest must still be written (poisoned outputs) and match."""
    rng = np.random.default_rng(11)
    num_queries, h, w, crop_h, crop_w, height, width = 9, 13, 13, 9.75, 13.0, 150, 201
    pixel, mask_embed = blob_maps(rng, num_queries, h, w)
    selected = np.eye(num_queries, dtype=np.uint8)
    selected[2, 3] = 1  # a plural: two blobs
    logits = reference_logits(pixel, mask_embed, selected, crop_h, crop_w, height, width)
    for threshold in (0.0, 1.5, -0.7):
        masks, stats = cpu.decode_masks(pixel, mask_embed, selected, crop_h, crop_w, height,
                                        width, threshold=threshold,
                                        out=poisoned(num_queries, height, width))
        assert_masks(masks, logits, threshold)
        assert_stats(stats, stats_of(masks, logits))
        if threshold > 0:
            assert masks[-1].sum() == 0 and stats[-1]["area"] == 0
        bits, _ = cpu.decode_masks(pixel, mask_embed, selected, crop_h, crop_w, height, width,
                                   threshold=threshold, packed=True,
                                   out=poisoned(num_queries, height, width, True))
        np.testing.assert_array_equal(bits, np.packbits(masks, axis=-1, bitorder="big"))


@pytest.mark.parametrize("threads", [2, 3, 64])
def test_decode_threads_give_the_same_bits(lib, threads: int) -> None:
    rng = np.random.default_rng(threads)
    pixel, mask_embed, selected = embeddings(rng, 11, 24, 48, 13, 13)
    args = (pixel, mask_embed, selected, 13.0, 9.75, 97, 131)
    masks, stats = cpu.decode_masks(*args, threads=1)
    parallel = cpu.decode_masks(*args, threads=threads, out=poisoned(11, 97, 131))
    np.testing.assert_array_equal(parallel[0], masks)
    assert parallel[1].tobytes() == stats.tobytes()


def test_threshold_on_the_logit(lib) -> None:
    rng = np.random.default_rng(3)
    pixel, mask_embed, selected = embeddings(rng, 4, 8, 16, 11, 11)
    logits = reference_logits(pixel, mask_embed, selected, 8.25, 11.0, 71, 95)
    for threshold in (-2.0, 1.5):
        masks, stats = cpu.decode_masks(pixel, mask_embed, selected, 8.25, 11.0, 71, 95,
                                        threshold=threshold)
        assert_masks(masks, logits, threshold)
        assert_stats(stats, stats_of(masks, logits))


def test_letterbox_geometry(lib) -> None:
    """Same geometry as Letterbox.to_original (cv2, 1/32-pixel weights) away from the edge."""
    stride, cells = 16, 13
    box = Letterbox((cells * stride, cells * stride), 117, 301)
    crop_h, crop_w = box.crop_region(stride)
    rng = np.random.default_rng(4)
    pixel, mask_embed, selected = embeddings(rng, 6, 10, 16, cells, cells)
    masks, _ = cpu.decode_masks(pixel, mask_embed, selected, crop_h, crop_w, 117, 301)
    low = reference.phrase_logits(selected.astype(bool), mask_embed, pixel)
    remapped = box.to_original(low, stride)
    decided = np.abs(remapped) > 1.0
    np.testing.assert_array_equal(masks.astype(bool)[decided], (remapped > 0)[decided])


# (H, W, (h, w)): the camera case (ratio 10/3), 1080p, odd sizes, an integer ratio, no resize at
# all, extreme aspect ratios; inputs cropped from the square (4:3 and 16:9 packages), a portrait
# frame in a 4:3 input
LETTERBOX_CASES = [(480, 640, (192, 192)), (1080, 1920, (192, 192)), (481, 643, (192, 192)),
                   (300, 301, (256, 256)), (480, 640, (160, 160)), (192, 100, (192, 192)),
                   (1000, 37, (64, 64)), (7, 5000, (64, 64)), (480, 640, (144, 192)),
                   (1080, 1920, (112, 192)), (640, 480, (144, 192))]


@pytest.mark.parametrize("case", LETTERBOX_CASES,
                         ids=lambda c: f"{c[0]}x{c[1]}-{c[2][0]}x{c[2][1]}")
def test_native_letterbox_matches_opencv(lib, case: tuple) -> None:
    """The one-pass kernel against cv2.resize(INTER_AREA) + the normalization table: at most one
    uint8 step apart (a rounding tie summed in another order), and rarely; padding exact."""
    height, width, shape = case
    rng = np.random.default_rng(height * width)
    # noise, plus smooth gradients where ties are likelier than in noise
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ramp = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
    for image in (noise, np.repeat(ramp[..., None], 3, axis=2)):
        box = Letterbox(shape, height, width)
        expected = letterbox_input(image, box, native=False)
        assert expected.shape == (3, *shape)
        out = np.full((3, *shape), np.nan, np.float32)  # poisoned: every value is written
        got = cpu.letterbox(image, shape, *box.inner, PAD_VALUE, NORMALIZED_RGB, out=out)
        assert got is out and np.isfinite(got).all()
        steps = np.abs(got - expected) * STD_RGB[:, None, None]  # in uint8 steps
        assert steps.max() <= 1.0 + 1e-4, steps.max()
        assert (steps > 0).mean() < 0.005, (steps > 0).mean()
        h, w = box.inner
        for c in range(3):
            assert (got[c, h:] == NORMALIZED_RGB[c, PAD_VALUE]).all()
            assert (got[c, :, w:] == NORMALIZED_RGB[c, PAD_VALUE]).all()


def test_native_letterbox_takes_strided_rows(lib) -> None:
    """A crop of a larger frame (rows further apart than 3 W bytes) needs no copy."""
    frame = np.random.default_rng(1).integers(0, 256, (500, 700, 3), dtype=np.uint8)
    crop = frame[10:490, 30:670]
    box = Letterbox((144, 192), *crop.shape[:2])
    np.testing.assert_array_equal(
        cpu.letterbox(crop, box.shape, *box.inner, PAD_VALUE, NORMALIZED_RGB),
        cpu.letterbox(np.ascontiguousarray(crop), box.shape, *box.inner, PAD_VALUE,
                      NORMALIZED_RGB))


@pytest.mark.parametrize("threads", [2, 3, 500])
def test_native_letterbox_threads_give_the_same_values(lib, threads: int) -> None:
    """Bands of rows on several threads (more threads than rows included): the same floats,
    every value written."""
    image = np.random.default_rng(threads).integers(0, 256, (481, 643, 3), dtype=np.uint8)
    box = Letterbox((144, 192), *image.shape[:2])
    single = cpu.letterbox(image, box.shape, *box.inner, PAD_VALUE, NORMALIZED_RGB)
    out = np.full((3, 144, 192), np.nan, np.float32)
    cpu.letterbox(image, box.shape, *box.inner, PAD_VALUE, NORMALIZED_RGB, out=out,
                  threads=threads)
    np.testing.assert_array_equal(out, single)


def test_native_letterbox_only_shrinks(lib) -> None:
    small = np.zeros((100, 120, 3), np.uint8)
    box = Letterbox((192, 192), 100, 120)
    assert not box.shrinks
    with pytest.raises(cpu.KernelError, match="only shrinks"):
        cpu.letterbox(small, box.shape, *box.inner, PAD_VALUE, NORMALIZED_RGB)
    # letterbox_input takes OpenCV's path for an enlargement
    np.testing.assert_array_equal(letterbox_input(small, box, native=True),
                                  letterbox_input(small, box, native=False))
    with pytest.raises(cpu.KernelError, match="uint8"):
        cpu.letterbox(small.astype(np.float32), (64, 64), 50, 60, PAD_VALUE, NORMALIZED_RGB)


def look_alikes() -> np.ndarray:
    """A singular's [30, 40] logit map covering two look-alikes: one part it is sure of (logit
    4: probability 0.98), one less sure (1: 0.73), a far-off corner (exp(100) overflows float32)."""
    grid = np.full((30, 40), -6.0, np.float32)
    grid[0, 20:] = -100.0
    grid[2:12, 2:12] = 4.0
    grid[16:26, 20:34] = 1.0
    return grid


def surest_parts(grid: np.ndarray, margin: float = 0.05, native: bool = True,
                 size: tuple[int, int] = (120, 160)) -> tuple[np.ndarray, ...]:
    """The whole mask and stats of `grid` [h, w] (one phrase: a one-channel map whose logits are
    the grid itself) and the same after keep_surest_parts, natively or in numpy."""
    args = (grid[None], np.ones((1, 1), np.float32), np.ones((1, 1), np.uint8), *grid.shape)
    decode = cpu.decode_masks if native else numpy_decode_masks
    masks, stats = decode(*args, *size)
    kept, kept_stats = masks.copy(), stats.copy()
    keep = cpu.keep_surest_parts if native else numpy_keep_surest_parts
    keep(*args, kept, kept_stats, np.array([margin]))
    return masks[0], stats[0], kept[0], kept_stats[0]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # far-off logits must not overflow exp
@pytest.mark.parametrize("native", [True, False], ids=["native", "numpy"])
def test_a_singular_keeps_the_parts_it_is_surest_of(lib, native: bool) -> None:
    """The part with the lower mean probability goes: what is left is, pixel for pixel, the
    decoding of the map without that part, and its stats are that decoding's (natively to the
    bit); a margin wider than the parts' difference keeps both."""
    grid = look_alikes()
    mask, _, kept, stats = surest_parts(grid, native=native)
    without = np.where(grid == 1.0, -6.0, grid).astype(np.float32)
    decode = cpu.decode_masks if native else numpy_decode_masks
    expected, expected_stats = decode(without[None], np.ones((1, 1), np.float32),
                                      np.ones((1, 1), np.uint8), *grid.shape, 120, 160)
    np.testing.assert_array_equal(kept, expected[0])
    assert kept[20, 20] and mask[80, 100] and not kept[80, 100]
    if native:
        np.testing.assert_array_equal(stats, expected_stats[0])
    else:
        assert stats["area"] == expected_stats[0]["area"]
        assert tuple(stats["box"]) == tuple(expected_stats[0]["box"])
        np.testing.assert_allclose(stats["centroid"], expected_stats[0]["centroid"])
        assert stats["score"] == pytest.approx(expected_stats[0]["score"], abs=1e-6)
    _, whole_stats, kept, stats = surest_parts(grid, margin=0.3, native=native)
    np.testing.assert_array_equal(kept, mask)
    np.testing.assert_array_equal(stats, whole_stats)


@pytest.mark.parametrize("native", [True, False], ids=["native", "numpy"])
def test_specks_go_only_beside_two_parts(lib, native: bool) -> None:
    """Two equally sure parts and a speck (one cell of 241, under 1%) lose the speck; a part
    and a speck stay whole."""
    grid = np.where(look_alikes() > 0, 4.0, look_alikes()).astype(np.float32)
    grid[28, 38] = 4.0
    mask, _, kept, _ = surest_parts(grid, native=native)
    assert mask[114, 154] and not kept[114, 154] and kept[20, 20] and kept[80, 100]
    grid[16:26, 20:34] = -6.0
    mask, whole_stats, kept, stats = surest_parts(grid, native=native)
    assert mask[114, 154]
    np.testing.assert_array_equal(kept, mask)
    np.testing.assert_array_equal(stats, whole_stats)


SURE_CASES = [  # (h, w, crop_h, crop_w, height, width): fractional crops, a region smaller
    (13, 13, 9.75, 13.0, 150, 201),  # than the map, outputs larger and smaller than the map
    (16, 12, 16.0, 7.3, 97, 61),
    (24, 24, 17.5, 24.0, 20, 29),
]


@pytest.mark.parametrize("case", SURE_CASES, ids=lambda c: f"{c[0]}x{c[1]}-{c[4]}x{c[5]}")
def test_keep_surest_parts_native_and_numpy_agree(lib, case: tuple) -> None:
    """Random maps of many parts, decoded natively: the kernel on 1 and 3 threads and the
    numpy twin keep the same pixels; kept masks only lose pixels, their stats follow them, and
    phrases with a negative margin stay as decoded."""
    h, w, crop_h, crop_w, height, width = case
    rng = np.random.default_rng(h * w)
    pixel, mask_embed, selected = embeddings(rng, 12, 6, 8, h, w)
    masks, stats = cpu.decode_masks(pixel, mask_embed, selected, crop_h, crop_w, height, width)
    margins = np.where(np.arange(12) % 4 == 3, -1.0, rng.choice([0.0, 0.05, 0.2], 12))
    results = []
    for keep in (lambda *a: cpu.keep_surest_parts(*a, threads=1),
                 lambda *a: cpu.keep_surest_parts(*a, threads=3), numpy_keep_surest_parts):
        kept, kept_stats = masks.copy(), stats.copy()
        keep(pixel, mask_embed, selected, crop_h, crop_w, kept, kept_stats, margins)
        results.append((kept, kept_stats))
    (kept, kept_stats), (threaded, threaded_stats), (twin, twin_stats) = results
    np.testing.assert_array_equal(threaded, kept)
    np.testing.assert_array_equal(threaded_stats, kept_stats)
    np.testing.assert_array_equal(twin, kept)
    assert not (kept & ~masks).any()
    trimmed = (kept != masks).any(axis=(1, 2))
    assert trimmed.any() and not trimmed[margins < 0].any()
    for p in np.flatnonzero(trimmed):
        ys, xs = np.nonzero(kept[p])
        assert kept_stats[p]["area"] == len(xs) == twin_stats[p]["area"]
        assert tuple(kept_stats[p]["box"]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        np.testing.assert_allclose(kept_stats[p]["centroid"], (xs.mean(), ys.mean()))
        assert twin_stats[p]["score"] == pytest.approx(kept_stats[p]["score"], abs=1e-5)
    np.testing.assert_array_equal(kept_stats[margins < 0], stats[margins < 0])


def test_keep_surest_parts_checks_its_arguments(lib) -> None:
    grid = look_alikes()
    args = (grid[None], np.ones((1, 1), np.float32), np.ones((1, 1), np.uint8), 30, 40)
    masks, stats = cpu.decode_masks(*args, 120, 160)
    with pytest.raises(cpu.KernelError, match="margins"):
        cpu.keep_surest_parts(*args, masks, stats, np.zeros(3))
    with pytest.raises(cpu.KernelError, match=r"\[P, H, W\]"):
        cpu.keep_surest_parts(*args, masks[0], stats, np.zeros(1))


def test_phrase_without_query_is_empty(lib) -> None:
    rng = np.random.default_rng(5)
    pixel, mask_embed, selected = embeddings(rng, 3, 4, 8, 5, 5)
    selected[1] = 0
    masks, stats = cpu.decode_masks(pixel, mask_embed, selected, 5.0, 5.0, 20, 21,
                                    out=poisoned(3, 20, 21))
    assert not masks[1].any()
    assert stats[1]["area"] == 0 and not stats[1]["box"].any() and stats[1]["score"] == 0.0
    assert not stats[1]["centroid"].any()
    assert stats[0]["area"] > 0


def test_empty_output_size(lib) -> None:
    rng = np.random.default_rng(6)
    pixel, mask_embed, selected = embeddings(rng, 2, 4, 8, 5, 5)
    masks, stats = cpu.decode_masks(pixel, mask_embed, selected, 5.0, 5.0, 0, 9,
                                    out=poisoned(2, 0, 9))
    assert masks.shape == (2, 0, 9) and (stats["area"] == 0).all()
    assert (stats["score"] == 0).all()


@pytest.mark.parametrize("num_phrases", [0, 1, 2, 7, 64])
def test_affinity_matches_reference(lib, num_phrases: int) -> None:
    rng = np.random.default_rng(10 + num_phrases)
    num_queries, dim, threshold = 24, 48, 0.5
    phrase = rng.standard_normal((num_phrases, dim)).astype(np.float32)
    masks = rng.standard_normal((num_queries, dim)).astype(np.float32)
    if num_phrases > 1:
        phrase[1] = 0.0  # a zero vector: cosine 0, as F.normalize leaves it
    plural = rng.random(num_phrases) < 0.5
    scale, bias = 12.0, -1.5
    out = (np.full((num_phrases, num_queries), np.nan, np.float32),
           np.full((num_phrases, num_queries), 0xAB, np.uint8))
    scores, selected = cpu.affinity(phrase, masks, scale, bias, plural, threshold, out=out)
    assert scores is out[0] and selected is out[1]
    expected = reference.affinity(phrase.astype(np.float64), masks.astype(np.float64), scale,
                                  bias)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5 * scale)
    # the selection rule, applied to the kernel's own scores (sigmoid ties excluded)
    want = reference.select_queries(scores.astype(np.float64), plural, threshold)
    ambiguous = np.abs(sigmoid(scores.astype(np.float64)) - threshold) < 1e-6
    assert set(np.unique(selected)) <= {0, 1}
    assert ((selected.astype(bool) == want) | ambiguous).all()
    if num_phrases:
        assert selected.sum(1).min() >= 1
        assert (selected[~plural].sum(1) == 1).all()


def test_affinity_first_maximum_on_ties(lib) -> None:
    phrase = np.array([[1.0, 0.0]], np.float32)
    masks = np.array([[0.0, 1.0], [2.0, 0.0], [3.0, 0.0]], np.float32)
    scores, selected = cpu.affinity(phrase, masks, 1.0, 0.0, np.array([False]), 0.9)
    np.testing.assert_array_equal(scores, [[0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(selected, [[0, 1, 0]])


def test_bad_arguments(lib) -> None:
    pixel = np.zeros((8, 5, 5), np.float32)
    with pytest.raises(cpu.KernelError, match="disagree"):
        cpu.decode_masks(pixel, np.zeros((3, 7), np.float32), np.ones((1, 3)), 5, 5, 9, 9)
    with pytest.raises(cpu.KernelError, match="positive"):
        cpu.decode_masks(pixel, np.zeros((3, 8), np.float32), np.ones((1, 3)), 0, 5, 9, 9)
    with pytest.raises(cpu.KernelError, match="shape"):
        cpu.decode_masks(pixel, np.zeros((3, 8), np.float32), np.ones((1, 3)), 5, 5, 9, 9,
                         out=poisoned(1, 9, 8))


def test_missing_library_says_how_to_build(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(cpu.LIB_ENV, str(tmp_path / "libnothing.so"))
    with pytest.raises(cpu.KernelsNotBuiltError, match="pip install .*cmake --build build/cmake"):
        cpu.affinity(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32), 1, 0, [0], 0.5)
    assert not cpu.is_usable() and "does not exist" in cpu.problem()


def test_library_that_does_not_load_is_not_built(monkeypatch, tmp_path) -> None:
    """A file that is no library for this machine (as an .so of another architecture is):
    KernelsNotBuiltError naming the file and the cause, not an OSError."""
    fake = tmp_path / cpu.LIB_NAME
    fake.write_bytes(b"\x7fELF" + bytes(60))  # an ELF header of no known machine
    monkeypatch.setenv(cpu.LIB_ENV, str(fake))
    with pytest.raises(cpu.KernelsNotBuiltError, match="exists but cannot be loaded"):
        cpu.library()
    assert not cpu.is_usable()


# ---- the CUDA fatbin ------------------------------------------------------------------------


def fatbin_entries(data: bytes) -> list[tuple[str, int]]:
    """(kind, sm) of every entry of a fatbin container: kind 'elf' (SASS) or 'ptx'."""
    magic, _, header_size, body_size = struct.unpack_from("<IHHQ", data, 0)
    assert magic == 0xBA55ED50, "not a fatbin"
    entries, offset = [], header_size
    while offset < header_size + body_size:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, offset)
        (arch,) = struct.unpack_from("<I", data, offset + 28)
        entries.append(({1: "ptx", 2: "elf"}.get(kind, str(kind)), arch))
        offset += entry_header + payload
    return entries


def test_fatbin_holds_every_architecture(lib) -> None:
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on this machine: the CUDA fatbin is not built here")
    from groundrt.kernels import cuda

    path = cuda.fatbin_path()
    assert path.is_file(), f"nvcc is present but {path} was not built"
    entries = fatbin_entries(path.read_bytes())
    assert {arch for kind, arch in entries if kind == "elf"} == SASS_ARCHITECTURES
    assert {arch for kind, arch in entries if kind == "ptx"} == {PTX_ARCHITECTURE}
    if shutil.which("cuobjdump"):
        listed = subprocess.run(["cuobjdump", "--list-elf", str(path)], capture_output=True,
                                text=True, check=True).stdout
        assert all(f"sm_{arch}" in listed for arch in SASS_ARCHITECTURES)
        ptx = subprocess.run(["cuobjdump", "--list-ptx", str(path)], capture_output=True,
                             text=True, check=True).stdout
        assert f"sm_{PTX_ARCHITECTURE}" in ptx or f"compute_{PTX_ARCHITECTURE}" in ptx


# ---- the GPU --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu():
    pytest.importorskip("pycuda", reason="pycuda is not installed (pip install '.[gpu]')")
    import pycuda.driver as driver

    from groundrt.kernels import cuda

    try:
        driver.init()
        count = driver.Device.count()
    except driver.Error as error:
        pytest.skip(f"no usable CUDA driver: {error}")
    if count == 0:
        pytest.skip("no CUDA device")
    try:
        return cuda.CudaKernels()
    except cpu.KernelsNotBuiltError as error:
        pytest.skip(str(error))


@pytest.mark.parametrize("case", CASES[1:], ids=lambda c: f"P{c[0]}-{c[7]}x{c[8]}")
def test_gpu_matches_cpu(lib, gpu, case: tuple) -> None:
    num_phrases, num_queries, dim, h, w, crop_h, crop_w, height, width = case
    rng = np.random.default_rng(sum(case[:5]))
    pixel, mask_embed, selected = embeddings(rng, num_phrases, num_queries, dim, h, w)
    phrase = rng.standard_normal((num_phrases, dim)).astype(np.float32)
    plural = rng.random(num_phrases) < 0.5
    cpu_scores, cpu_selected = cpu.affinity(phrase, mask_embed, 10.0, -1.0, plural, 0.5)
    gpu_scores, gpu_selected = gpu.affinity(phrase, mask_embed, 10.0, -1.0, plural, 0.5)
    np.testing.assert_array_equal(gpu_scores, cpu_scores)
    np.testing.assert_array_equal(gpu_selected, cpu_selected)
    for packed in (False, True):
        want, want_stats = cpu.decode_masks(pixel, mask_embed, selected, crop_h, crop_w, height,
                                            width, packed=packed)
        got, got_stats = gpu.decode_masks(pixel, mask_embed, selected, crop_h, crop_w, height,
                                          width, packed=packed)
        np.testing.assert_array_equal(got, want)
        for field in ("area", "box", "centroid"):
            np.testing.assert_array_equal(got_stats[field], want_stats[field])
        np.testing.assert_allclose(got_stats["score"], want_stats["score"], rtol=0, atol=1e-6)


def test_gpu_kernels_shared_by_threads_match_cpu(lib, gpu) -> None:
    """One CudaKernels from 4 threads at once (each gets its own stream and buffers in the
    primary context): every result equals the CPU library's."""

    cases = CASES[1:]
    expected = []
    for case in cases:
        num_phrases, num_queries, dim, h, w, crop_h, crop_w, height, width = case
        rng = np.random.default_rng(sum(case[:5]))
        pixel, mask_embed, selected = embeddings(rng, num_phrases, num_queries, dim, h, w)
        args = (pixel, mask_embed, selected, crop_h, crop_w, height, width)
        expected.append((args, cpu.decode_masks(*args)[0]))
    failures: list = []

    def work(offset: int) -> None:
        try:
            for n in range(3 * len(cases)):
                args, want = expected[(n + offset) % len(cases)]
                got, _ = gpu.decode_masks(*args)
                if not np.array_equal(got, want):
                    failures.append((offset, n))
        except Exception as exc:  # noqa: BLE001 (reported below)
            failures.append(exc)

    run_in_threads(work, 4)
    assert not failures, failures
