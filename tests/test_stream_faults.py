"""Stream faults: a source that opens but never delivers (or delivers only garbage) gives up
after a bounded number of attempts; the caption file is read whole and settled, and bad text
in it or on stdin is logged while the old caption stays."""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from groundrt.runtime.captions import MAX_CAPTION_BYTES, CaptionSource, Prompt
from groundrt.runtime.sources import Reconnect, SourceError, VideoSource


class FakeCapture:
    """A capture that opens and then delivers `frames` (a list of read() results), then
    nothing (read() fails)."""

    def __init__(self, frames: list) -> None:
        self.frames = list(frames)

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def read(self):
        return self.frames.pop(0) if self.frames else (False, None)

    def grab(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


def live_source(frames_per_open, attempts: int = 3) -> tuple[VideoSource, list]:
    opened: list[FakeCapture] = []

    def open_capture() -> FakeCapture:
        if len(opened) > 50:  # the old behaviour: reopened forever
            raise AssertionError("reopened more than 50 times")
        opened.append(FakeCapture(frames_per_open(len(opened))))
        return opened[-1]

    source = VideoSource(open_capture, "cam", "stream", live=True,
                         reconnect=Reconnect(attempts=attempts, first_delay=0.001,
                                             max_delay=0.002))
    return source, opened


IMAGE = np.zeros((4, 4, 3), np.uint8)


def test_a_source_that_opens_but_never_delivers_gives_up():
    source, opened = live_source(lambda i: [])
    with pytest.raises(SourceError, match="did not come back after 3 attempts"):
        list(source)
    assert len(opened) == 1 + 3 and source.read == 0


def test_a_source_that_delivers_only_garbage_gives_up():
    garbage = (True, np.zeros((0,), np.uint8))
    source, opened = live_source(lambda i: [garbage] * 1000)
    with pytest.raises(SourceError, match="did not come back after 3 attempts"):
        list(source)
    assert len(opened) == 1 + 3 and source.corrupt >= 100


def test_every_frame_restarts_the_attempts():
    # the first 5 opens deliver 2 frames each, later ones none: 4 reopens that worked, then
    # 3 attempts that opened but delivered nothing
    source, opened = live_source(lambda i: [(True, IMAGE)] * 2 if i < 5 else [])
    with pytest.raises(SourceError):
        list(source)
    assert source.read == 10 and len(opened) == 5 + 3 and source.reconnects == 4 + 3


# --- the caption file --------------------------------------------------------------------------

def settled(path: Path) -> None:
    """Make `path` look written a while ago (what time does for a file nobody touches)."""
    past = time.time_ns() - 10 ** 10
    os.utime(path, ns=(past, past))


def always_valid(prompt: Prompt) -> None:
    if "nothing" in str(prompt):
        raise ValueError("no noun phrase")


def test_the_caption_file_is_read_when_settled_and_renamed_saves_are_whole(tmp_path):
    path = tmp_path / "caption.txt"
    path.write_text("the sky")
    settled(path)
    captions = CaptionSource(Prompt.parse("the grass"), always_valid, watch=path, settle_s=1.0)
    assert captions.current().caption == "the sky"
    path.write_text("a red")  # an editor still writing: not read yet
    assert captions.current().caption == "the sky"
    path.write_text("a red circle")
    settled(path)
    assert captions.current().caption == "a red circle"
    new = tmp_path / ".caption.txt.swp"  # rename-on-save
    new.write_text("two blue squares")
    settled(new)
    os.replace(new, path)
    assert captions.current().caption == "two blue squares" and captions.changes == 3


@pytest.mark.parametrize(("content", "logged"), [
    (b"a red \xff\xfe circle", "not UTF-8 text"),
    (b"a red circle \xe2\x82", "not UTF-8 text"),  # cut inside a character
    (b"x" * (MAX_CAPTION_BYTES + 1), "more than a caption can be"),
    (b"nothing to see", "refused"),
    (b"  \n\t ", None),  # empty: ignored
])
def test_bad_text_in_the_caption_file_keeps_the_caption(tmp_path, caplog, content, logged):
    path = tmp_path / "caption.txt"
    captions = CaptionSource(Prompt.parse("the sky"), always_valid, watch=path, settle_s=0.0)
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            assert captions.current().caption == "the sky"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if logged is None:
        assert errors == []
    else:
        assert len(errors) == 1 and logged in errors[0]  # once, not on every frame
    path.write_text("a red circle")
    assert captions.current().caption == "a red circle"


def test_a_caption_file_that_vanishes_or_becomes_a_folder_keeps_the_caption(tmp_path, caplog):
    path = tmp_path / "caption.txt"
    path.write_text("a red circle")
    captions = CaptionSource(Prompt.parse("the sky"), always_valid, watch=path, settle_s=0.0)
    assert captions.current().caption == "a red circle"
    path.unlink()
    assert captions.current().caption == "a red circle"
    path.mkdir()
    with caplog.at_level(logging.ERROR):
        assert captions.current().caption == "a red circle"
    assert "cannot read caption file" in caplog.text


def test_stdin_lines_that_are_not_utf8_are_skipped(caplog):
    lines = b"the sky\n\xff\xfe broken\nnothing here\na red circle\n"
    with caplog.at_level(logging.ERROR):
        captions = CaptionSource(Prompt.parse("the grass"), always_valid,
                                 stdin=io.BytesIO(lines))
        captions.reader.join(5)
    assert captions.current().caption == "a red circle" and captions.changes == 2
    assert "not UTF-8" in caplog.text and "refused" in caplog.text
    # a text stdin that cannot decode ends the reader with a message, not a traceback
    text = io.TextIOWrapper(io.BytesIO(b"a blue star\n\xff\n"), encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        captions = CaptionSource(Prompt.parse("the grass"), always_valid, stdin=text)
        captions.reader.join(5)
    assert "stopped reading captions from stdin" in caplog.text
