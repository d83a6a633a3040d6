"""Property tests on random input, bounded to about a minute in all (explicit max_examples, no
per-example deadline: the machine is shared): the chunker, the tokenizer's spans, the RLE round
trip, the CPU kernels (random shapes, NaN and inf), the manifest loader and the image loader.
Each property is what a caller relies on: no exception but the documented ones, and results
that agree with their definition."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from groundrt.errors import GroundrtError, TokenizerError
from groundrt.kernels import cpu as cpu_kernels
from groundrt.package import PackageError, read_manifest
from groundrt.runtime import DEFAULT_MODEL, reference
from groundrt.runtime.chunker import NoNounPhraseError, noun_phrases, require_noun_phrases
from groundrt.runtime.images import ImageError, load_image
from groundrt.runtime.results import encode_rle
from groundrt.text import Tokenizer

# GROUNDRT_FUZZ_EXAMPLES=5000 runs a longer campaign (CI: 200 examples per property)
FUZZ = settings(max_examples=int(os.environ.get("GROUNDRT_FUZZ_EXAMPLES", 200)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
WORDS = ["a", "the", "two", "three", "red", "blue", "small", "circle", "circles", "squares",
         "star", "grass", "sky", "on", "left", "of", "several", "and", ",", ".", "Über", "猫"]
# any text: every Unicode category, surrogates and control characters included
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
CAPTIONS = st.one_of(ANY_TEXT, st.lists(st.sampled_from(WORDS), max_size=20).map(" ".join),
                     st.lists(st.one_of(st.sampled_from(WORDS), ANY_TEXT), max_size=8)
                     .map(" ".join))


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(DEFAULT_MODEL / "tokenizer.model", max_tokens=128)


# --- text ----------------------------------------------------------------------------------------

@FUZZ
@given(CAPTIONS)
def test_chunker_spans_are_ordered_slices_of_any_caption(caption):
    phrases = noun_phrases(caption)
    end = 0
    for p in phrases:
        assert end <= p.start < p.end <= len(caption)
        assert caption[p.start:p.end] == p.text and p.text == p.text.strip()
        assert isinstance(p.plural, bool) and p.head
        end = p.end
    try:
        assert require_noun_phrases(caption) == phrases
    except NoNounPhraseError:
        assert not phrases


@FUZZ
@given(caption=CAPTIONS, data=st.data())
def test_tokenizer_spans_on_any_caption(tokenizer, caption, data):
    clean = "two red circles on the grass"
    want = tokenizer.encode(clean).ids.tolist()
    try:
        encoding = tokenizer.encode(caption)
    except TokenizerError:
        assert tokenizer.encode(clean).ids.tolist() == want  # a failure leaves no trace
        return
    offsets = encoding.offsets
    assert encoding.ids[0] == tokenizer.bos_id and len(encoding) == len(offsets)
    assert ((offsets >= 0) & (offsets <= len(caption))).all()
    assert (offsets[:, 0] <= offsets[:, 1]).all() and (np.diff(offsets[:, 0]) >= 0).all()
    assert all(not caption[a:b].isspace() for a, b in offsets if b > a)
    start = data.draw(st.integers(0, len(caption)))
    stop = data.draw(st.integers(start, len(caption)))
    try:
        first, last = encoding.span_to_tokens((start, stop))
    except TokenizerError:
        return
    assert 1 <= first < last <= len(encoding)

    def touches(a: int, b: int) -> bool:  # the span's rule: overlap, or empty and inside
        return (a < stop and b > start) if b > a else start <= a < stop

    inside = [touches(int(a), int(b)) for a, b in offsets[1:]]  # BOS left out
    assert inside[first - 1] and inside[last - 2]
    assert not any(inside[:first - 1]) and not any(inside[last - 1:])
    assert tokenizer.encode(clean).ids.tolist() == want


# --- masks ---------------------------------------------------------------------------------------

@FUZZ
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)))
def test_rle_round_trip(mask):
    rle = encode_rle(mask)
    assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert (decoded.astype(bool) == mask).all()
    assert int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()})) \
        == int(mask.sum())


def floats32(shape, nonfinite: bool):
    elements = st.floats(-1e3, 1e3, width=32) if not nonfinite else st.one_of(
        st.floats(-1e3, 1e3, width=32), st.sampled_from([np.nan, np.inf, -np.inf]))
    return hnp.arrays(np.float32, shape, elements=elements)


needs_kernels = pytest.mark.skipif(not cpu_kernels.is_usable(),
                                   reason=f"CPU kernels not built ({cpu_kernels.BUILD_COMMAND})")


@needs_kernels
@FUZZ
@given(data=st.data(), nonfinite=st.booleans())
def test_kernel_decode_on_random_shapes_and_values(data, nonfinite):
    p, q, d = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 5)), data.draw(
        st.integers(1, 6))
    h, w = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    pixel = data.draw(floats32((d, h, w), nonfinite))
    queries = data.draw(floats32((q, d), nonfinite))
    selected = data.draw(hnp.arrays(np.uint8, (p, q), elements=st.integers(0, 1)))
    height, width = data.draw(st.integers(0, 30)), data.draw(st.integers(0, 30))
    crop_h, crop_w = data.draw(st.floats(0.5, h)), data.draw(st.floats(0.5, w))
    masks, stats = cpu_kernels.decode_masks(pixel, queries, selected, crop_h, crop_w, height,
                                            width)
    assert masks.shape == (p, height, width) and set(np.unique(masks)) <= {0, 1}
    for mask, s in zip(masks, stats, strict=True):
        assert s["area"] == mask.sum()
        if s["area"]:
            ys, xs = np.nonzero(mask)
            assert list(s["box"]) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        else:
            assert list(s["box"]) == [0, 0, 0, 0]
    packed, _ = cpu_kernels.decode_masks(pixel, queries, selected, crop_h, crop_w, height,
                                         width, packed=True)
    assert (np.unpackbits(packed, axis=2, count=width) == masks).all()
    threaded, _ = cpu_kernels.decode_masks(pixel, queries, selected, crop_h, crop_w, height,
                                           width, threads=3)
    assert (threaded == masks).all()


@needs_kernels
@FUZZ
@given(data=st.data(), nonfinite=st.booleans())
def test_kernel_affinity_on_random_shapes_and_values(data, nonfinite):
    p, q, d = data.draw(st.integers(0, 5)), data.draw(st.integers(1, 6)), data.draw(
        st.integers(1, 8))
    phrases, queries = data.draw(floats32((p, d), nonfinite)), data.draw(
        floats32((q, d), nonfinite))
    plural = data.draw(hnp.arrays(bool, (p,)))
    scale, bias = data.draw(st.floats(0.1, 50)), data.draw(st.floats(-5, 5))
    threshold = data.draw(st.floats(0.05, 0.95))
    scores, selected = cpu_kernels.affinity(phrases, queries, scale, bias, plural, threshold)
    assert scores.shape == selected.shape == (p, q) and set(np.unique(selected)) <= {0, 1}
    assert (selected.sum(1) >= 1).all()  # every phrase gets at least its top-1 query
    if nonfinite:
        return
    want = reference.affinity(phrases.astype(np.float64), queries.astype(np.float64), scale,
                              bias)
    assert np.allclose(scores, want, rtol=1e-4, atol=1e-4 * scale)
    for score in scores:  # the selection rule, applied to the kernel's own scores
        ordered = np.sort(score)[::-1]
        assume(len(ordered) < 2 or ordered[0] - ordered[1] > 1e-4)
        assume(np.abs(1 / (1 + np.exp(-score.astype(np.float64))) - threshold).min() > 1e-5)
    expected = reference.select_queries(scores.astype(np.float64), plural, threshold)
    assert (selected.astype(bool) == expected).all()


# --- packages ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz") / "pkg"
    shutil.copytree(DEFAULT_MODEL, folder)
    return folder


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
              st.floats(allow_nan=False, allow_infinity=False), ANY_TEXT.filter(
                  lambda s: not any("\ud800" <= c <= "\udfff" for c in s))),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def paths_of(value, prefix=()):
    """Every key path inside a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_of(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths_of(item, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_manifest_loader_on_mutated_manifests(package, data):
    original = json.loads((DEFAULT_MODEL / "manifest.json").read_text())
    manifest = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from([p for p in paths_of(manifest) if p]))
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON_VALUES)
        if not isinstance(manifest, dict):
            break
    (package / "manifest.json").write_text(json.dumps(manifest))
    try:
        loaded = read_manifest(package)
    except PackageError:
        return
    assert loaded == manifest  # accepted: then it loaded as written, inside the package
    for name in loaded["files"]:
        assert (package / name).resolve().is_relative_to(package.resolve())


# --- images --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoded() -> dict[str, bytes]:
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)
    return {ext: cv2.imencode(ext, image)[1].tobytes() for ext in (".png", ".jpg", ".bmp",
                                                                   ".webp", ".tiff")}


def check_image_or_error(load) -> None:
    try:
        image = load()
    except ImageError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.flags.c_contiguous or image.strides[1:] == (3, 1)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's header reader, harmless
@FUZZ
@given(data=st.data())
def test_image_loader_on_corrupted_files(encoded, data):
    original = encoded[data.draw(st.sampled_from(sorted(encoded)))]
    blob = bytearray(original)
    for _ in range(data.draw(st.integers(0, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    blob = bytes(blob[:cut]) + data.draw(st.binary(max_size=16))
    check_image_or_error(lambda: load_image(blob, max_pixels=10 ** 6))


@FUZZ
@given(st.binary(max_size=300))
def test_image_loader_on_random_bytes(blob):
    check_image_or_error(lambda: load_image(blob))


@FUZZ
@given(data=st.data())
def test_image_loader_on_arrays_of_any_dtype_and_layout(data):
    dtype = data.draw(st.sampled_from([np.uint8, np.uint8, np.uint8, bool, np.int16, np.float32,
                                       np.float64]))
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12))
    array = data.draw(hnp.arrays(dtype, shape))
    if array.ndim >= 2:  # a view with negative or odd strides
        steps = tuple(data.draw(st.sampled_from([1, -1, 2, -3])) for _ in range(array.ndim))
        array = array[tuple(slice(None, None, s) for s in steps)]
    rgb = data.draw(st.booleans())
    try:
        image = load_image(array, rgb=rgb)
    except ImageError:
        assert not (array.dtype == np.uint8 and array.ndim in (2, 3) and array.size
                    and (array.ndim == 2 or array.shape[2] in (1, 3, 4)))
        return
    assert image.shape == array.shape[:2] + (3,) and image.dtype == np.uint8
    if array.ndim == 3 and array.shape[2] == 3:
        assert (image == (array[..., ::-1] if rgb else array)).all()


def test_errors_are_groundrt_errors():
    """The documented failures the properties accept are all groundrt errors."""
    for error in (TokenizerError, PackageError, ImageError, NoNounPhraseError):
        assert issubclass(error, GroundrtError)
