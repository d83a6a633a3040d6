"""The caption of a stream, changeable while it runs: from stdin (one caption per line) or from a
watched file (its whole text, re-read when it changes). A change takes effect on the next frame
read; a caption without a noun phrase is refused (logged) and the previous one kept.

The watched file is read whole from one open file (an editor's rename-on-save gives the old or
the new file, never a mix), and only once it has not changed for `settle_s` seconds (a file still
being written is looked at again on a later frame). Text that is not UTF-8, a file too large to
be a caption or one that cannot be read is logged once and the current caption kept; so is a
line on stdin that is not UTF-8.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from groundrt.errors import GroundrtError
from groundrt.text.checks import MAX_TEXT_CHARS

log = logging.getLogger(__name__)

PHRASE_SEPARATOR = ";"  # --phrases "two red circles; the sky"
MAX_CAPTION_BYTES = 4 * MAX_TEXT_CHARS  # UTF-8 takes at most 4 bytes a character


class CaptionFileError(GroundrtError, ValueError):
    """A caption file cannot be read, is too large, or is not UTF-8 text."""


def decode_caption(data: bytes, source: str) -> str:
    """UTF-8 bytes of a caption -> str; CaptionFileError naming `source` otherwise."""
    if len(data) > MAX_CAPTION_BYTES:
        raise CaptionFileError(f"{source} holds {len(data)} bytes, more than a caption can be "
                               f"({MAX_CAPTION_BYTES} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaptionFileError(f"{source} is not UTF-8 text (byte {exc.start}: "
                               f"{data[exc.start:exc.start + 1]!r})") from exc


def read_caption_file(path: str | Path) -> str:
    """The whole text of a caption file, read from one open file."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CAPTION_BYTES + 1)
    except OSError as exc:
        raise CaptionFileError(f"cannot read caption file {path}: {exc.strerror or exc}") from exc
    return decode_caption(data, f"caption file {path}")


@dataclass(frozen=True)
class Prompt:
    """What to ground: a caption (its noun phrases) or explicit phrases."""

    caption: str | None = None
    phrases: tuple[str, ...] | None = None

    @staticmethod
    def parse(caption: str | None = None, phrases: str | Sequence[str] | None = None) -> Prompt:
        if isinstance(phrases, str):
            phrases = [p.strip() for p in phrases.split(PHRASE_SEPARATOR) if p.strip()]
        if phrases is not None:
            return Prompt(phrases=tuple(phrases))
        if caption is None or not caption.strip():
            raise ValueError("give a non-empty caption or a list of phrases")
        return Prompt(caption=caption.strip())

    def __str__(self) -> str:
        return self.caption if self.caption is not None else "; ".join(self.phrases or ())


class CaptionSource:
    """The current prompt. `validate` (e.g. Grounder.encode_text) vets every new one."""

    def __init__(self, initial: Prompt, validate: Callable[[Prompt], object] | None = None,
                 watch: str | Path | None = None, stdin: TextIO | BinaryIO | None = None,
                 settle_s: float = 0.2) -> None:
        self._validate = validate or (lambda prompt: None)
        self.settle_s = settle_s
        self._lock = threading.Lock()
        self._prompt = initial
        self.changes = 0
        self._watch = Path(watch) if watch else None
        self._watched_stamp: tuple | None = None  # (inode, mtime, size) last read
        if self._watch is not None:
            self._poll_file()
        self.reader: threading.Thread | None = None  # reads stdin until it ends
        if stdin is not None:
            self.reader = threading.Thread(target=self._read_lines, args=(stdin,),
                                           name="captions-stdin", daemon=True)
            self.reader.start()

    def current(self) -> Prompt:
        """The prompt for the next frame (re-reads the watched file when it changed)."""
        if self._watch is not None:
            self._poll_file()
        with self._lock:
            return self._prompt

    def set(self, prompt: Prompt) -> bool:
        """Make `prompt` current if valid; False (logged) when it is refused."""
        try:
            self._validate(prompt)
        except (GroundrtError, ValueError) as exc:
            log.error("caption %r refused, keeping the previous one: %s", str(prompt), exc)
            return False
        with self._lock:
            if prompt != self._prompt:
                self._prompt = prompt
                self.changes += 1
                log.info("caption changed to %r", str(prompt))
        return True

    def _poll_file(self) -> None:
        assert self._watch is not None
        try:
            with open(self._watch, "rb") as f:
                stat = os.fstat(f.fileno())  # of the file read, whatever the path names later
                stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if stamp == self._watched_stamp:
                    return
                if time.time_ns() - stat.st_mtime_ns < self.settle_s * 1e9:
                    return  # still being written: look again on a later frame
                data = f.read(MAX_CAPTION_BYTES + 1)
        except FileNotFoundError:
            return  # not written yet (or being replaced): keep the current caption
        except OSError as exc:
            stamp = ("error", str(exc))  # logged once per failure
            if stamp != self._watched_stamp:
                log.error("cannot read caption file %s, keeping the caption: %s", self._watch,
                          exc.strerror or exc)
            self._watched_stamp = stamp
            return
        self._watched_stamp = stamp
        try:
            text = decode_caption(data, f"caption file {self._watch}").strip()
        except CaptionFileError as exc:
            log.error("%s; keeping the current caption", exc)
            return
        if text:
            self._set_text(text)

    def _set_text(self, text: str) -> None:
        try:
            self.set(Prompt.parse(text))
        except ValueError as exc:
            log.error("caption %r refused, keeping the previous one: %s", text, exc)

    def _read_lines(self, stream: TextIO | BinaryIO) -> None:
        try:
            for line in stream:
                if isinstance(line, bytes):
                    try:
                        line = decode_caption(line, "a caption line on stdin")
                    except CaptionFileError as exc:
                        log.error("%s; keeping the current caption", exc)
                        continue
                if line.strip():
                    self._set_text(line)
        except (OSError, ValueError) as exc:  # a closed or undecodable stdin ends the reader
            log.error("stopped reading captions from stdin: %s", exc)
