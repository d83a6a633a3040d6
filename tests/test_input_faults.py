"""Bad input where it enters the Grounder: images of every dtype and layout, corrupt, truncated,
empty and huge files, folders as paths, captions of any str, wrong API types. Each gets a clear
error, and a bad input never changes how the next call behaves."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import groundrt
from groundrt.errors import CaptionTooLongError, TokenizerError
from groundrt.runtime.cli import main
from groundrt.runtime.grounder import TooManyPhrasesError
from groundrt.runtime.images import DEFAULT_MAX_PIXELS, ImageError, header_size, load_image

CAPTION = "Two red circles and a blue star on the grass under the sky."


def png_with_header(width: int, height: int, pixels: bytes = b"\0" * 64) -> bytes:
    """A small PNG file whose header says width x height (its pixel data is cut short): what a
    decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(pixels))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def grounder() -> groundrt.Grounder:
    return groundrt.Grounder()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = np.full((120, 160, 3), (40, 160, 60), np.uint8)  # grass
    frame[:40] = (235, 206, 135)  # sky
    cv2.circle(frame, (50, 80), 15, (0, 0, 220), -1)
    cv2.circle(frame, (110, 80), 15, (0, 0, 220), -1)
    return np.clip(frame + rng.integers(0, 8, frame.shape), 0, 255).astype(np.uint8)


def masks(result) -> list[np.ndarray]:
    return [p.mask for p in result.phrases]


def same(a, b) -> bool:
    return all((x == y).all() for x, y in zip(masks(a), masks(b), strict=True))


# --- images ------------------------------------------------------------------------------------

def test_every_memory_layout_gives_the_result_of_its_packed_copy(grounder, image):
    big = np.zeros((300, 400, 4), np.uint8)
    big[::2, ::2, :3] = cv2.resize(image, (200, 150))
    views = {
        "rows reversed": image[::-1],
        "columns reversed": image[:, ::-1],
        "channels reversed": image[:, :, ::-1],
        "every other row and third column": image[::2, ::3],
        "fortran order": np.asfortranarray(image),
        "a strided crop of a 4-channel frame": big[::2, ::2, :3],
        "read-only": np.lib.stride_tricks.as_strided(image, writeable=False),
        "grey, transposed": image[..., 1].T,
        "4 channels, reversed rows": np.dstack([image, image[..., :1]])[::-1],
    }
    for name, view in views.items():
        got = grounder.ground(view, CAPTION)
        want = grounder.ground(np.ascontiguousarray(view), CAPTION)
        assert same(got, want), name
        assert got.image_size == view.shape[:2], name


@pytest.mark.parametrize("dtype", [bool, np.int8, np.uint16, np.int32, np.float16, np.float32,
                                   np.float64, np.complex64, object])
def test_an_image_array_of_another_dtype_is_refused_by_name(grounder, dtype):
    with pytest.raises(ImageError, match=f"must be uint8, not {np.dtype(dtype)}"):
        grounder.ground(np.zeros((8, 8, 3), dtype), CAPTION)


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((8,), np.uint8), r"\[H, W\]"),
    (np.zeros((2, 8, 8, 3), np.uint8), r"\[H, W\]"),
    (np.zeros((8, 8, 5), np.uint8), r"\[H, W\]"),
    (np.zeros((8, 0, 3), np.uint8), "empty"),
    (np.zeros((), np.uint8), r"\[H, W\]"),
])
def test_an_image_array_of_another_shape_is_refused(grounder, array, message):
    with pytest.raises(ImageError, match=message):
        grounder.ground(array, CAPTION)


def test_bad_image_files_are_image_errors(tmp_path, image):
    ok, encoded = cv2.imencode(".png", image)
    png = encoded.tobytes()
    ok, encoded = cv2.imencode(".jpg", image)
    jpeg = encoded.tobytes()
    cases = {
        "empty.png": (b"", "empty"),
        "garbage.jpg": (b"\xff\xd8\xff" + b"\x00" * 50, "not a readable image"),
        "text.png": (b"hello, not an image", "not a readable image"),
        "truncated.png": (png[:len(png) // 2], "not a readable image|could not be decoded"),
        "header-only.png": (png[:33], "not a readable image|could not be decoded"),
        "zero-size.png": (png_with_header(0, 10), "not a readable image|empty size"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError, match=message):
            load_image(path)
        with pytest.raises(ImageError, match=message):
            load_image(data)
    # a JPEG cut short: refused, or (another libjpeg) decoded at its header's size
    path = tmp_path / "truncated.jpg"
    path.write_bytes(jpeg[:len(jpeg) // 2])
    try:
        assert load_image(path).shape == image.shape
    except ImageError as exc:
        assert "not a readable image" in str(exc)
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    bomb = png_with_header(20000, 20000)  # 400 MP in 100 bytes
    assert len(bomb) < 200 and header_size(bomb, "bomb") == (20000, 20000)
    with pytest.raises(ImageError, match="20000x20000 pixels .* limit of 40.0 MP"):
        load_image(bomb)
    # the limit is configurable; over OpenCV's own cap (2^30 pixels) its error stays an
    # ImageError instead of escaping as cv2.error
    with pytest.raises(ImageError, match="(not a readable image|could not be decoded)"):
        load_image(png_with_header(40000, 40000), max_pixels=10 ** 10)
    with pytest.raises(ImageError, match="limit of 0.0 MP"):
        load_image(np.zeros((10, 10, 3), np.uint8), max_pixels=99)
    assert DEFAULT_MAX_PIXELS >= 7680 * 4320  # 8K UHD passes


def test_the_grounder_applies_its_pixel_limit(image):
    small = groundrt.Grounder(max_pixels=100 * 100)
    with pytest.raises(ImageError, match="limit of 0.0 MP"):
        small.ground(image, CAPTION)
    ok, encoded = cv2.imencode(".png", image)
    with pytest.raises(ImageError, match="160x120 pixels"):
        small.ground(encoded.tobytes(), CAPTION)
    assert small.ground(image[:90, :100], CAPTION).image_size == (90, 100)


def test_a_folder_run_skips_a_huge_image_and_goes_on(tmp_path, image, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), image)
    (folder / "b.png").write_bytes(png_with_header(50000, 50000))
    cv2.imwrite(str(folder / "c.jpg"), image)
    assert main(["run", "--source", str(folder), "--caption", CAPTION, "--json",
                 str(tmp_path / "o.jsonl"), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "frames: read 3, processed 2, dropped 1 (live 0, corrupt 1" in out.out
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2


# --- text and API types --------------------------------------------------------------------

@pytest.mark.parametrize(("caption", "phrases", "error", "message"), [
    ("a red \ud800 circle", None, TokenizerError, "lone surrogate"),
    ("\udcff\udcfe on the grass", None, TokenizerError, "lone surrogate"),
    (None, ["a red circle", "the \udc80 sky"], TokenizerError, "phrase 1 holds a lone"),
    ("the grass " * 2000, None, TokenizerError, "characters long"),
    (12, None, TypeError, "caption must be a str, not int"),
    (b"a red circle", None, TypeError, "not bytes"),
    (None, "a red circle", TypeError, "wrap one phrase in a list"),
    (None, [b"a red circle"], TypeError, "phrase 0 must be a str"),
    (None, 42, TypeError, "phrases must be a list"),
    (None, ["a circle"] * 1000, TooManyPhrasesError, "1000 phrases"),
    (None, ["two big red circles"] * 40, CaptionTooLongError, "the 40 phrases take .* tokens"),
    (None, ["the sky", "  "], ValueError, "phrase 1 is '  '"),
])
def test_a_bad_prompt_is_refused_and_leaves_no_trace(grounder, image, caption, phrases, error,
                                                     message):
    before = grounder.ground(image, CAPTION)
    cached = len(grounder._text_cache)
    with pytest.raises(error, match=message):
        grounder.ground(image, caption, phrases)
    assert len(grounder._text_cache) == cached
    after = grounder.ground(image, CAPTION)
    assert same(before, after)
    assert [p.text for p in after.phrases] == [p.text for p in before.phrases]


def test_control_characters_and_other_scripts_ground(grounder, image):
    for caption in ("Two red\x00 circles on the\x07 grass.", "\u202etwo red circles\u202c",
                    "猫 and two red circles on the grass \U0001f431",
                    "la hierba, the grass\r\n\tunder the sky"):
        result = grounder.ground(image, caption)
        assert result.phrases, caption
        for p in result.phrases:
            assert caption[p.span[0]:p.span[1]] == p.text


def test_wrong_types_elsewhere_in_the_api(grounder, image):
    with pytest.raises(TypeError, match="list of images"):
        grounder.ground_batch(image, CAPTION)
    with pytest.raises(ValueError, match="at least one image"):
        grounder.ground_batch([], CAPTION)
    with pytest.raises(TypeError, match="not NoneType"):
        grounder.ground(None, CAPTION)
    with pytest.raises(TypeError, match="not list"):
        grounder.ground([[0, 0, 0]], CAPTION)


def test_the_cli_reports_invalid_utf8_in_one_line(tmp_path, image, capsys):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), image)
    # Python hands bytes that are not UTF-8 on the command line over as lone surrogates
    caption = b"two red circles \xff\xfe on the grass".decode("utf-8", "surrogateescape")
    assert main(["run", "--source", str(path), "--caption", caption, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lone surrogate" in err[0] and "Traceback" not in err[0]
    caption_file = tmp_path / "caption.txt"
    caption_file.write_bytes(b"two red circles \xff on the grass")
    assert main(["run", "--source", str(path), "--caption-file", str(caption_file),
                 "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(caption_file) in err[0] and "UTF-8" in err[0]


def test_path_inputs_that_are_not_files(grounder, tmp_path):
    with pytest.raises(ImageError, match="is a folder"):
        grounder.ground(tmp_path, CAPTION)
    with pytest.raises(ImageError, match="is a folder"):
        grounder.ground(str(tmp_path), CAPTION)
    with pytest.raises(ImageError, match="does not exist"):
        grounder.ground(Path("/nonexistent") / "x.png", CAPTION)


def test_a_source_of_digits_that_int_refuses_is_not_a_camera(capsys):
    assert main(["run", "--source", "¹", "--caption", CAPTION, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a file, a folder" in err[0]
