"""Overlays, rendered for real and checked pixel by pixel: the blend, the outlines, the labels
(where they go, their contrast, their Unicode text) and the FPS / latency strip."""

from __future__ import annotations

import itertools
import os

import cv2
import numpy as np
import pytest

from groundrt.runtime import fonts
from groundrt.runtime.fonts import BUNDLED_FONT, contrast, face_for, text_box, text_colour
from groundrt.runtime.overlay import (
    LARGE,
    LARGE_TINT,
    PALETTE,
    STRIP_COLOUR,
    colour,
    label_bitmap,
    overlaps,
    place_label,
    stats_text,
    text_size,
)
from groundrt.runtime.results import GroundingResult, PhraseResult

H, W = 480, 640


def phrase(text: str, mask: np.ndarray, plural: bool = False,
           instances: list[np.ndarray] | None = None, score: float = 0.9) -> PhraseResult:
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) \
        else (0, 0, 0, 0)
    centroid = (float(xs.mean()), float(ys.mean())) if len(xs) else (0.0, 0.0)
    return PhraseResult(text=text, span=None, plural=plural, mask=mask, score=score,
                        area=int(mask.sum()), box=box, centroid=centroid,
                        queries=list(range(len(instances or [mask]))),
                        _instances=lambda: list(instances or [mask]))


def rect_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def noise_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def find(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, int] | None:
    """The top left (x, y) where `needle` appears exactly in `haystack`, else None."""
    scores = cv2.matchTemplate(haystack, needle, cv2.TM_SQDIFF)  # float: not exactly 0
    x, y = cv2.minMaxLoc(scores)[2]
    h, w = needle.shape[:2]
    return (x, y) if (haystack[y:y + h, x:x + w] == needle).all() else None


def crowded_result() -> GroundingResult:
    """8 phrases whose masks sit close together in the middle of the image, a sky above."""
    phrases = [phrase("the sky", rect_mask(0, 0, W, 150), score=0.99)]
    for k in range(7):
        x, y = 230 + 25 * (k % 4), 200 + 30 * (k // 4)
        phrases.append(phrase(f"thing number {k}", rect_mask(x, y, x + 20, y + 20),
                              score=0.5 + k / 20))
    return GroundingResult((H, W), None, phrases)


def test_labels_are_drawn_whole_and_do_not_overlap():
    result = crowded_result()
    out = result.overlay(noise_image(), fps=9.5, latency_ms=104.0)
    size = text_size(out.shape)
    rects = []
    for i, p in enumerate(result.phrases):
        bitmap = label_bitmap(p.text, p.score, size, colour(i))
        where = find(out, bitmap)  # found exactly: drawn whole, nothing drawn over it
        assert where is not None, f"label of {p.text!r} is not drawn whole"
        rects.append((*where, where[0] + bitmap.shape[1], where[1] + bitmap.shape[0]))
    strip = text_box(stats_text(9.5, 104.0), size, STRIP_COLOUR)
    where = find(out, strip)
    assert where is not None and where[0] < 20 and where[1] > H - 40  # bottom left
    rects.append((*where, where[0] + strip.shape[1], where[1] + strip.shape[0]))
    for a, b in itertools.combinations(rects, 2):
        assert not overlaps(a, b), (a, b)
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    # the sky's label lies on the sky; each thing's label near its mask (within 4 labels'
    # heights of its box)
    assert rects[0][3] <= 150
    label_h = rects[1][3] - rects[1][1]
    for (x0, y0, x1, y1), p in zip(rects[1:8], result.phrases[1:], strict=True):
        bx0, by0, bx1, by1 = p.box
        gap_y = max(by0 - y1, y0 - by1, 0)
        gap_x = max(bx0 - x1, x0 - bx1, 0)
        assert gap_y <= 4 * label_h and gap_x <= 4 * label_h, p.text


def test_a_thing_gets_its_label_above_and_a_large_region_on_itself():
    taken: list = []
    above = place_label((80, 16), (100, 200, 140, 240), (120, 220), (H, W), taken)
    assert above == (100, 184, 180, 200)
    taken.append(above)
    # the same place is taken: inside the box's top left next
    assert place_label((80, 16), (100, 200, 140, 240), (120, 220), (H, W), taken) == \
        (100, 200, 180, 216)
    # a region whose box's top left is not on it (a wavy horizon): the label goes where it is
    region = np.zeros((H, W), bool)
    region[300:, :] = True
    region[200:300, 320:] = True
    rect = place_label((80, 16), (0, 200, W, H), (320, 380), (H, W), [], region)
    assert region[rect[1]:rect[3], rect[0]:rect[2]].mean() >= 0.9
    assert rect[1] < 300  # the highest place on it, on the right


@pytest.mark.parametrize("bgr", PALETTE + (STRIP_COLOUR, (0, 255, 255), (0, 0, 128)))
def test_label_text_contrasts_with_its_box(bgr):
    chosen = text_colour(bgr)
    other = (255, 255, 255) if chosen == (0, 0, 0) else (0, 0, 0)
    assert contrast(bgr, chosen) >= max(4.5, contrast(bgr, other))
    box = text_box("Ag 0.91", 14, bgr)
    # the box is the colour, the glyphs' cores the text colour
    assert tuple(box[0, 0]) == bgr and tuple(box[-1, -1]) == bgr
    distance = np.abs(box.astype(int) - np.array(chosen)).sum(axis=2)
    assert (distance == 0).sum() >= 20


def test_light_boxes_get_black_text_and_dark_boxes_white():
    assert text_colour((25, 225, 255)) == (0, 0, 0)  # yellow
    assert text_colour((0, 0, 128)) == (255, 255, 255)  # maroon
    assert text_colour(STRIP_COLOUR) == (255, 255, 255)


def test_cyrillic_labels_are_drawn():
    size = 14
    cyrillic = text_box("красный круг", size, PALETTE[0])
    missing = text_box("\U0010ffff" * 12, size, PALETTE[0])  # what a font without it draws
    ascii_only = text_box("?" * 12, size, PALETTE[0])  # what cv2.putText draws for it
    assert face_for("ж", size).font.path == str(BUNDLED_FONT)
    for other in (missing, ascii_only):
        assert cyrillic.shape != other.shape or (cyrillic != other).any()
    # each letter is its own glyph: the word is not a repeated box
    letters = [text_box(c, size, PALETTE[0]) for c in "красный"]
    assert len({(b.shape, b.tobytes()) for b in letters}) == 7
    # drawn in an overlay at its label's place
    result = GroundingResult((H, W), None, [phrase("красный круг", rect_mask(200, 200, 260,
                                                                             260))])
    out = result.overlay(np.full((H, W, 3), 128, np.uint8))
    assert find(out, label_bitmap("красный круг", 0.9, text_size(out.shape), PALETTE[0]))


def font_for_or_skip(char: str) -> fonts.Face:
    face = face_for(char, 14)
    if face.font.path == str(BUNDLED_FONT):
        pytest.skip(f"no font on this machine draws {char!r} (install fonts-noto-cjk / "
                    "fonts-noto-color-emoji, or name one in $GROUNDRT_FONTS)")
    return face


@pytest.mark.parametrize("char", ["中", "🤖"])
def test_cjk_and_emoji_come_from_a_system_font(char):
    face = font_for_or_skip(char)
    mixed = text_box(f"a {char} b", 14, PALETTE[3])
    without = text_box("a  b", 14, PALETTE[3])
    assert mixed.shape[1] > without.shape[1]  # the character takes room and draws pixels
    glyph = text_box(char, 14, PALETTE[3])
    assert (glyph != np.array(PALETTE[3], np.uint8)).any(axis=2).sum() >= 10
    assert glyph.shape[0] <= 2 * text_box("A", 14, PALETTE[3]).shape[0]  # scaled to the text
    assert face.scale <= 1.0


def test_fonts_named_in_the_environment_come_first_and_broken_ones_are_skipped(
        tmp_path, monkeypatch):
    mine, broken = tmp_path / "mine.ttf", tmp_path / "broken.ttf"
    mine.write_bytes(BUNDLED_FONT.read_bytes())
    broken.write_bytes(b"not a font")
    monkeypatch.setenv(fonts.FONTS_ENV, os.pathsep.join([str(broken), str(mine)]))
    fonts.face_for.cache_clear()
    try:
        assert fonts.font_paths()[:3] == (str(broken), str(mine), str(BUNDLED_FONT))
        assert face_for("a", 23).font.path == str(mine)  # the broken one does not load
        assert (text_box("ok", 23, PALETTE[0]) != np.array(PALETTE[0], np.uint8)).any()
    finally:
        fonts.face_for.cache_clear()
        fonts.text_box.cache_clear()


def test_a_character_no_font_has_still_draws_something():
    box = text_box("x \U000e01ef \U0010fffe y", 14, PALETTE[1])
    assert box.shape[0] > 0 and (box != np.array(PALETTE[1], np.uint8)).any()


def test_masks_blend_so_that_the_image_stays_visible():
    image = noise_image(1)
    sky = rect_mask(0, 0, W, 200)  # a large region: tinted lighter
    thing = rect_mask(300, 300, 360, 360)
    result = GroundingResult((H, W), None, [phrase("the sky", sky), phrase("a box", thing)])
    out = result.overlay(image, alpha=0.5, labels=False)
    inner = np.zeros((H, W), bool)  # away from the outlines
    for mask, alpha, bgr in ((sky, 0.5 * LARGE_TINT, PALETTE[0]), (thing, 0.5, PALETTE[1])):
        core = cv2.erode(mask.view(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        expected = (1 - alpha) * image[core] + alpha * np.array(bgr, float)
        assert np.abs(out[core] - expected).max() <= 1.5  # uint8 rounding
        # the image is still there: the tinted pixels follow the original ones
        assert np.corrcoef(out[core][:, 1], image[core][:, 1])[0, 1] > 0.95
        inner |= cv2.dilate(mask.view(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert (out[~inner] == image[~inner]).all()  # nothing drawn outside the masks
    assert sky.mean() > LARGE > thing.mean()


def test_each_instance_of_a_plural_is_outlined():
    left, right = rect_mask(200, 200, 260, 260), rect_mask(260, 200, 320, 260)  # touching
    union = left | right
    grey = np.full((H, W, 3), 128, np.uint8)
    plural = GroundingResult((H, W), None, [phrase("two boxes", union, True, [left, right])])
    singular = GroundingResult((H, W), None, [phrase("a box", union)])
    out_plural = plural.overlay(grey, labels=False)
    out_singular = singular.overlay(grey, labels=False)
    seam = (slice(215, 245), slice(259, 261))  # where the instances meet, inside the union
    bgr = np.array(PALETTE[0])
    assert (np.abs(out_plural[seam].astype(int) - bgr).max(axis=2) <= 40).mean() > 0.9
    blended = 0.5 * 128 + 0.5 * bgr
    assert (np.abs(out_singular[seam] - blended).max(axis=2) <= 1.5).all()
    # the outer outline is drawn for both
    for out in (out_plural, out_singular):
        assert (np.abs(out[230, 199:201].astype(int) - bgr).max(axis=1) <= 40).any()


def test_the_outline_skips_the_image_edge():
    sky = rect_mask(0, 0, W, 200)
    out = GroundingResult((H, W), None, [phrase("the sky", sky)]).overlay(
        np.full((H, W, 3), 128, np.uint8), labels=False)
    tint = np.round(128 * (1 - 0.5 * LARGE_TINT) + 0.5 * LARGE_TINT * np.array(PALETTE[0]))
    assert (np.abs(out[0, 20:-20] - tint).max(axis=1) <= 1).all()  # the top edge: no line
    assert (np.abs(out[199, 20:-20].astype(int) - PALETTE[0]).max(axis=1) <= 40).all()


def test_the_strip_shows_fps_and_latency_only_when_given():
    result = GroundingResult((H, W), None, [])
    image = noise_image(2)
    assert (result.overlay(image) == image).all()
    strip = text_box(stats_text(29.97, 33.4), text_size(image.shape), STRIP_COLOUR)
    assert stats_text(29.97, 33.4) == "30.0 FPS · 33 ms"
    assert find(result.overlay(image, fps=29.97, latency_ms=33.4), strip) is not None
    assert stats_text(None, 12.0) == "12 ms" and stats_text(7.0, None) == "7.0 FPS"


def test_an_image_of_another_size_or_kind_raises():
    result = crowded_result()
    with pytest.raises(ValueError, match=r"size \(480, 640\)"):
        result.overlay(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(ValueError, match="BGR uint8"):
        result.overlay(np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="BGR uint8"):
        result.overlay(np.zeros((H, W, 3), np.float32))


def test_phrases_not_found_are_not_drawn():
    empty = phrase("a purple star", np.zeros((H, W), bool))
    empty.found = False
    image = noise_image(3)
    assert (GroundingResult((H, W), None, [empty]).overlay(image) == image).all()
