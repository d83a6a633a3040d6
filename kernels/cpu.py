"""ctypes loader of the CPU kernels (`libgroundrt_kernels.so`, built by CMakeLists.txt).

    scores, selected = affinity(phrase_embed, mask_embed, logit_scale, bias, plural, threshold)
    masks, stats = decode_masks(pixel_embed, mask_embed, selected, crop_h, crop_w, height, width)
    keep_surest_parts(pixel_embed, mask_embed, selected, crop_h, crop_w, masks, stats, margins)
    model_input = letterbox(image_bgr, (h, w), inner_h, inner_w, pad, table)

The library is looked up at `$GROUNDRT_KERNELS_LIB`, else in `lib/` next to this module: where
`pip install .` (a wheel), `pip install -e .` and an in-tree CMake build put it. A library that
is missing, does not load (built for another architecture, a missing dependency) or has another
ABI raises KernelsNotBuiltError, which the runtime turns into its numpy fallback and one warning.
`stats` is a structured array with the C struct's layout (STATS_DTYPE):
area int64, box int32 [4] (x0, y0, x1, y1; x1/y1 exclusive), centroid float64 [2] (x, y),
score float64 (mean sigmoid of the logits over the mask).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np

from groundrt.errors import GroundrtError

LIB_ENV = "GROUNDRT_KERNELS_LIB"
LIB_DIR = Path(__file__).resolve().parent / "lib"
LIB_NAME = "libgroundrt_kernels.so"
ABI_VERSION = 6
BUILD_COMMAND = "cmake -S . -B build/cmake && cmake --build build/cmake"
# how a user gets the kernels: pip builds them when a C++ compiler is there
INSTALL_HINT = (f"reinstall groundrt where a C++ compiler (g++ or clang++) and CMake >= 3.22 are "
                f"installed (`pip install .` or `pip install -e .` from the source tree), or "
                f"build them in a checkout with `{BUILD_COMMAND}`")

STATS_DTYPE = np.dtype([("area", "<i8"), ("box", "<i4", (4,)), ("centroid", "<f8", (2,)),
                        ("score", "<f8")])
assert STATS_DTYPE.itemsize == 48  # sizeof(grt_phrase_stats)

_STATUS = {1: "invalid argument", 2: "out of memory"}


class KernelsNotBuiltError(GroundrtError):
    """The native kernels (CPU library or CUDA fatbin) are not where groundrt looks for them."""


class KernelError(GroundrtError, ValueError):
    """A kernel rejected its arguments (shapes, sizes) or could not allocate its scratch."""


def library_path() -> Path:
    """Where the CPU library is expected: $GROUNDRT_KERNELS_LIB, else kernels/lib/."""
    override = os.environ.get(LIB_ENV)
    return Path(override) if override else LIB_DIR / LIB_NAME


@functools.cache
def _load(path: str) -> ctypes.CDLL:
    if not Path(path).is_file():
        raise KernelsNotBuiltError(
            f"the CPU kernel library {path} does not exist: {INSTALL_HINT} (or point "
            f"${LIB_ENV} at a built {LIB_NAME})")
    try:
        lib = ctypes.CDLL(path)
        version = lib.grt_abi_version()
    except (OSError, AttributeError) as exc:  # another architecture, not a library, no symbol
        raise KernelsNotBuiltError(
            f"the CPU kernel library {path} exists but cannot be loaded ({exc}): it was built "
            f"for another machine; {INSTALL_HINT}") from exc
    if version != ABI_VERSION:
        raise KernelsNotBuiltError(
            f"{path} has ABI version {version}, this groundrt needs {ABI_VERSION}: "
            f"{INSTALL_HINT}")
    f32, i32, f64 = ctypes.c_float, ctypes.c_int32, ctypes.c_double
    ptr = ctypes.c_void_p
    lib.grt_affinity.argtypes = [ptr, ptr, i32, i32, i32, f32, f32, ptr, f32, ptr, ptr]
    lib.grt_affinity.restype = ctypes.c_int
    lib.grt_decode_masks.argtypes = [ptr, i32, i32, i32, ptr, i32, ptr, i32, f64, f64, i32, i32,
                                     f32, i32, i32, ptr, ptr]
    lib.grt_decode_masks.restype = ctypes.c_int
    lib.grt_keep_surest_parts.argtypes = [ptr, i32, i32, i32, ptr, i32, ptr, i32, f64, f64, i32,
                                          i32, f32, ptr, i32, ptr, ptr]
    lib.grt_keep_surest_parts.restype = ctypes.c_int
    lib.grt_letterbox.argtypes = [ptr, i32, i32, ctypes.c_int64, i32, i32, i32, i32,
                                  ctypes.c_uint8, ptr, i32, ptr]
    lib.grt_letterbox.restype = ctypes.c_int
    return lib


def library() -> ctypes.CDLL:
    """The loaded CPU library (raises KernelsNotBuiltError when it was not built)."""
    return _load(str(library_path()))


def is_built() -> bool:
    return library_path().is_file()


def problem() -> str | None:
    """Why the library cannot be used here (None: it is built, loads and has this ABI)."""
    try:
        library()
    except KernelsNotBuiltError as exc:
        return str(exc)
    return None


def is_usable() -> bool:
    """The library is built, loads and has this groundrt's ABI."""
    return problem() is None


def _array(name: str, x: np.ndarray, dtype: type, ndim: int) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=dtype)
    if a.ndim != ndim:
        raise KernelError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def _output(name: str, out: np.ndarray | None, shape: tuple[int, ...],
            dtype: np.dtype | type) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape or out.dtype != np.dtype(dtype) or not out.flags.c_contiguous:
        raise KernelError(f"{name} must be a C-contiguous {np.dtype(dtype)} array of shape "
                          f"{shape}, got {out.dtype} {out.shape}")
    return out


def _check(status: int, what: str) -> None:
    if status != 0:
        raise KernelError(f"{what} failed: {_STATUS.get(status, f'status {status}')}")


def affinity_args(phrase_embed: np.ndarray, mask_embed: np.ndarray,
                  plural: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous float32 [P, D], [Q, D] and uint8 [P] inputs, shapes checked."""
    phrase = _array("phrase_embed", phrase_embed, np.float32, 2)
    masks = _array("mask_embed", mask_embed, np.float32, 2)
    plural_u8 = _array("plural", np.asarray(plural).astype(bool), np.uint8, 1)
    if masks.shape[1] != phrase.shape[1] or len(plural_u8) != len(phrase):
        raise KernelError(f"phrase_embed {phrase.shape}, mask_embed {masks.shape} and plural "
                          f"{plural_u8.shape} disagree: expected [P, D], [Q, D] and [P]")
    return phrase, masks, plural_u8


def decode_args(pixel_embed: np.ndarray, mask_embed: np.ndarray,
                selected: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous float32 [D, h, w], [Q, D] and uint8 [P, Q] inputs, shapes checked."""
    pixel = _array("pixel_embed", pixel_embed, np.float32, 3)
    masks = _array("mask_embed", mask_embed, np.float32, 2)
    chosen = _array("selected", np.asarray(selected).astype(bool), np.uint8, 2)
    if masks.shape[1] != pixel.shape[0] or chosen.shape[1] != masks.shape[0]:
        raise KernelError(f"pixel_embed {pixel.shape}, mask_embed {masks.shape} and selected "
                          f"{chosen.shape} disagree: expected [D, h, w], [Q, D] and [P, Q]")
    if pixel.shape[1] < 1 or pixel.shape[2] < 1:
        raise KernelError(f"pixel_embed {pixel.shape} has an empty map")
    return pixel, masks, chosen


def mask_shape(num_phrases: int, height: int, width: int, packed: bool) -> tuple[int, int, int]:
    """[P, H, W], or [P, H, ceil(W / 8)] when packed."""
    return (num_phrases, height, (width + 7) // 8 if packed else width)


def check_geometry(crop_h: float, crop_w: float, height: int, width: int) -> None:
    if not (crop_h > 0 and crop_w > 0) or height < 0 or width < 0:
        raise KernelError(f"crop region ({crop_h}, {crop_w}) must be positive and the output "
                          f"size ({height}, {width}) non-negative")


def affinity(phrase_embed: np.ndarray, mask_embed: np.ndarray, logit_scale: float, bias: float,
             plural: np.ndarray, threshold: float,
             out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[P, D], [Q, D] -> scores [P, Q] float32, selected [P, Q] uint8 (0/1).

    `out` = (scores, selected) writes into preallocated arrays.
    """
    lib = library()
    phrase, masks, plural_u8 = affinity_args(phrase_embed, mask_embed, plural)
    shape = (len(phrase), len(masks))
    scores = _output("scores", None if out is None else out[0], shape, np.float32)
    selected = _output("selected", None if out is None else out[1], shape, np.uint8)
    _check(lib.grt_affinity(phrase.ctypes.data, masks.ctypes.data, shape[0], shape[1],
                            phrase.shape[1], float(logit_scale), float(bias),
                            plural_u8.ctypes.data, float(threshold), scores.ctypes.data,
                            selected.ctypes.data), "grt_affinity")
    return scores, selected


def decode_masks(pixel_embed: np.ndarray, mask_embed: np.ndarray, selected: np.ndarray,
                 crop_h: float, crop_w: float, height: int, width: int, threshold: float = 0.0,
                 packed: bool = False, out: tuple[np.ndarray, np.ndarray] | None = None,
                 threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Phrase masks at the original size and their stats (see the module docstring).

    Returns masks uint8 [P, H, W] (0/1), or [P, H, ceil(W / 8)] packed bits (np.packbits order)
    when `packed`, and stats [P] (STATS_DTYPE). `out` = (masks, stats) writes into preallocated
    arrays. Up to `threads` threads decode phrases in parallel (the results do not depend on it).
    """
    lib = library()
    pixel, masks, chosen = decode_args(pixel_embed, mask_embed, selected)
    check_geometry(crop_h, crop_w, height, width)
    num_phrases = len(chosen)
    out_masks = _output("masks", None if out is None else out[0],
                        mask_shape(num_phrases, height, width, packed), np.uint8)
    stats = _output("stats", None if out is None else out[1], (num_phrases,), STATS_DTYPE)
    d, h, w = pixel.shape
    _check(lib.grt_decode_masks(pixel.ctypes.data, d, h, w, masks.ctypes.data, len(masks),
                                chosen.ctypes.data, num_phrases, float(crop_h), float(crop_w),
                                int(height), int(width), float(threshold), int(bool(packed)),
                                max(1, int(threads)), out_masks.ctypes.data,
                                stats.ctypes.data), "grt_decode_masks")
    return out_masks, stats


def keep_surest_parts(pixel_embed: np.ndarray, mask_embed: np.ndarray, selected: np.ndarray,
                      crop_h: float, crop_w: float, masks: np.ndarray, stats: np.ndarray,
                      margins: np.ndarray, threshold: float = 0.0, threads: int = 1) -> None:
    """Rewrites in place the masks [P, H, W] uint8 (unpacked) and stats [P] that decode_masks
    returned for the same arguments: a phrase with margins[p] >= 0 keeps the parts of its mask
    whose mean probability is within margins[p] of its surest part's (kernels_c.h has the rule);
    a negative margin leaves the phrase as it is."""
    lib = library()
    pixel, embed, chosen = decode_args(pixel_embed, mask_embed, selected)
    num_phrases = len(chosen)
    bars = _array("margins", margins, np.float64, 1)
    if masks.ndim != 3 or len(masks) != num_phrases or len(bars) != num_phrases:
        raise KernelError(f"masks {masks.shape} and margins {bars.shape} must be [P, H, W] and "
                          f"[P] for P = {num_phrases} phrases")
    check_geometry(crop_h, crop_w, *masks.shape[1:])
    _output("masks", masks, masks.shape, np.uint8)
    _output("stats", stats, (num_phrases,), STATS_DTYPE)
    d, h, w = pixel.shape
    _check(lib.grt_keep_surest_parts(pixel.ctypes.data, d, h, w, embed.ctypes.data, len(embed),
                                     chosen.ctypes.data, num_phrases, float(crop_h),
                                     float(crop_w), masks.shape[1], masks.shape[2],
                                     float(threshold), bars.ctypes.data, max(1, int(threads)),
                                     masks.ctypes.data, stats.ctypes.data),
           "grt_keep_surest_parts")


def letterbox(image_bgr: np.ndarray, shape: tuple[int, int], inner_h: int, inner_w: int,
              pad: int, table: np.ndarray, out: np.ndarray | None = None,
              threads: int = 1) -> np.ndarray:
    """[H, W, 3] uint8 BGR -> [3, h, w] float32 RGB, (h, w) = shape: the image shrunk by area
    averaging (cv2.INTER_AREA's averages; a value on a rounding tie may differ by 1) into the
    top-left inner_h x inner_w, `pad` elsewhere, each uint8 value v of RGB channel c replaced by
    table[c, v]. Shrinking only (inner_h <= H, inner_w <= W): otherwise KernelError. Up to
    `threads` threads shrink bands of rows (the values do not depend on it)."""
    lib = library()
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise KernelError(f"letterbox takes a [H, W, 3] uint8 image, got {image_bgr.dtype} "
                          f"{image_bgr.shape}")
    # rows may be strided (a crop of a larger frame); pixels within a row must be packed
    image = image_bgr if image_bgr.strides[1:] == (3, 1) else np.ascontiguousarray(image_bgr)
    lut = _array("table", table, np.float32, 2)
    if lut.shape != (3, 256):
        raise KernelError(f"table must be [3, 256], got {lut.shape}")
    height, width = image.shape[:2]
    out_h, out_w = shape
    if not (0 < inner_h <= min(height, out_h) and 0 < inner_w <= min(width, out_w)):
        raise KernelError(f"letterbox only shrinks: {height}x{width} cannot go to "
                          f"{inner_h}x{inner_w} inside {out_h}x{out_w}")
    result = _output("out", out, (3, out_h, out_w), np.float32)
    _check(lib.grt_letterbox(image.ctypes.data, height, width, image.strides[0], out_h, out_w,
                             inner_h, inner_w, pad, lut.ctypes.data, max(1, int(threads)),
                             result.ctypes.data),
           "grt_letterbox")
    return result
