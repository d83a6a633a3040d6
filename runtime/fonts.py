"""Label text for overlays, drawn with Pillow in TrueType fonts (OpenCV's putText draws ASCII
only): which font draws each character, and text boxes (text on a filled box in a contrasting
colour) rendered once and cached, so that an overlay drawn every frame stays cheap.

Fonts are searched in this order, character by character (a label mixing scripts is drawn in
runs, one font each):

1. the files named in `$GROUNDRT_FONTS` (separated by `os.pathsep`);
2. DejaVu Sans Bold, bundled (`runtime/fonts/`, 0.7 MB, the Bitstream Vera licence: free to
   copy and redistribute): Latin, Greek, Cyrillic, many symbols and the emoticons, the same on
   every machine;
3. the system fonts of `SYSTEM_FONTS` that exist: CJK (Noto Sans CJK, WenQuanYi, Droid Sans
   Fallback, PingFang, Microsoft YaHei) and colour emoji (Noto Color Emoji, Apple Color
   Emoji, Segoe UI Emoji); too large to bundle, installed on most desktops
   (`apt-get install fonts-noto-cjk fonts-noto-color-emoji` on Debian and Ubuntu).

A character no font has is drawn as the first font's missing-glyph box: something is always
drawn, and nothing raises. Where not even the bundled font loads, Pillow's built-in font is
used.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BUNDLED_FONT = Path(__file__).with_name("fonts") / "DejaVuSans-Bold.ttf"
FONTS_ENV = "GROUNDRT_FONTS"
SYSTEM_FONTS = (
    # CJK
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    # colour emoji
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
    "/System/Library/Fonts/Apple Color Emoji.ttc",
    "C:/Windows/Fonts/seguiemj.ttf",
)
EMOJI_STRIKE = 109  # the one pixel size of Noto Color Emoji's bitmaps (Apple's: 160)
_MISSING = "\U0010ffff"  # a noncharacter: no font maps it, so it draws the missing-glyph box

BGR = tuple[int, int, int]


@dataclass(frozen=True)
class Face:
    """A loaded font at a size: `scale` resizes what it draws (a bitmap font drawn at its
    strike size); ascent and descent in output pixels."""

    font: ImageFont.FreeTypeFont
    scale: float
    ascent: int
    descent: int


def font_paths() -> tuple[str, ...]:
    """The font files searched, in order: $GROUNDRT_FONTS, the bundled font, the system fonts
    that exist."""
    named = [p for p in os.environ.get(FONTS_ENV, "").split(os.pathsep) if p]
    return tuple(p for p in (*named, str(BUNDLED_FONT), *SYSTEM_FONTS) if os.path.isfile(p))


@functools.lru_cache(maxsize=64)
def _face(path: str, size: int) -> Face | None:
    """The font at `path` at `size` pixels; None when it does not load."""
    try:
        font, scale = ImageFont.truetype(path, size), 1.0
    except OSError:  # a bitmap (colour emoji) font has fixed strikes only
        for strike in (EMOJI_STRIKE, 160):
            try:
                font, scale = ImageFont.truetype(path, strike), size / strike
                break
            except OSError:
                continue
        else:
            return None
    ascent, descent = font.getmetrics()
    return Face(font, scale, round(ascent * scale), round(descent * scale))


@functools.lru_cache(maxsize=8)
def _builtin_face(size: int) -> Face:
    font = ImageFont.load_default(size)  # a scalable built-in font (Aileron Regular)
    ascent, descent = font.getmetrics()
    return Face(font, 1.0, ascent, descent)


def _signature(face: Face, char: str) -> tuple:
    """What `char` draws in `face`: its box and pixels (equal to the missing glyph's when the
    font lacks it; Pillow has no call that says whether a font maps a character)."""
    left, top, right, bottom = (int(v) for v in face.font.getbbox(char))
    image = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(image).text((-left, -top), char, font=face.font, fill=255)
    return (left, top, right, bottom), image.tobytes()


@functools.lru_cache(maxsize=64)
def _missing_signature(face: Face) -> tuple:
    return _signature(face, _MISSING)


@functools.lru_cache(maxsize=8192)
def face_for(char: str, size: int) -> Face:
    """The first searched font at `size` that draws `char` (whitespace: the first font)."""
    faces = [f for f in (_face(p, size) for p in font_paths()) if f is not None]
    if not faces:
        return _builtin_face(size)
    if not char.isspace():
        for face in faces:
            if _signature(face, char) != _missing_signature(face):
                return face
    return faces[0]


def runs(text: str, size: int) -> list[tuple[Face, str]]:
    """`text` split into runs of characters drawn by the same font."""
    out: list[tuple[Face, str]] = []
    for char in text:
        face = face_for(char, size)
        if out and out[-1][0] is face:
            out[-1] = (face, out[-1][1] + char)
        else:
            out.append((face, char))
    return out


def luminance(colour: BGR) -> float:
    """WCAG relative luminance of a BGR colour (0 black, 1 white)."""
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4
              for c in colour]
    b, g, r = linear
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: BGR, b: BGR) -> float:
    """WCAG contrast ratio of two colours (1 to 21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(background: BGR) -> BGR:
    """Black or white, whichever contrasts more with `background` (at least 4.58:1)."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast(background, black) >= contrast(background, white) else white


@functools.lru_cache(maxsize=2048)
def text_box(text: str, size: int, background: BGR) -> np.ndarray:
    """[h, w, 3] uint8 BGR, read-only: `text` at `size` pixels in `text_colour(background)` on
    a box of `background`, padded; cached (the same text at the same size and colour is drawn
    once)."""
    pad_x, pad_y = max(2, size // 4), max(1, size // 7)
    parts = runs(text, size)
    ascent = max(face.ascent for face, _ in parts)
    descent = max(face.descent for face, _ in parts)
    widths = [round(face.font.getlength(run) * face.scale) for face, run in parts]
    width, height = sum(widths) + 2 * pad_x, ascent + descent + 2 * pad_y
    fill = text_colour(background)
    box = Image.new("RGB", (width, height), background[::-1])
    draw = ImageDraw.Draw(box)
    x, baseline = pad_x, pad_y + ascent
    for (face, run), run_width in zip(parts, widths, strict=True):
        if face.scale == 1.0:
            draw.text((x, baseline), run, font=face.font, fill=fill[::-1], anchor="ls",
                      embedded_color=True)
        elif run_width > 0:  # a bitmap font: drawn at its strike, then resized
            strike_ascent, strike_descent = face.font.getmetrics()
            native = Image.new("RGBA", (max(1, round(run_width / face.scale)),
                                        strike_ascent + strike_descent))
            ImageDraw.Draw(native).text((0, strike_ascent), run, font=face.font,
                                        fill=fill[::-1] + (255,), anchor="ls",
                                        embedded_color=True)
            scaled = native.resize((run_width, face.ascent + face.descent),
                                   Image.Resampling.LANCZOS)
            box.paste(scaled, (x, baseline - face.ascent), scaled)
        x += run_width
    out = cv2.cvtColor(np.asarray(box), cv2.COLOR_RGB2BGR)
    out.flags.writeable = False
    return out
