"""The caption of a stream, changeable while it runs: from stdin (one caption per line) or from a
watched file (its whole text, re-read when it changes). A change takes effect on the next frame
read; a caption without a noun phrase is refused (logged) and the previous one kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from groundrt.errors import GroundrtError

log = logging.getLogger(__name__)

PHRASE_SEPARATOR = ";"  # --phrases "two red circles; the sky"


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
                 watch: str | Path | None = None, stdin: TextIO | None = None) -> None:
        self._validate = validate or (lambda prompt: None)
        self._lock = threading.Lock()
        self._prompt = initial
        self.changes = 0
        self._watch = Path(watch) if watch else None
        self._watched_stamp: tuple[int, int] | None = None
        if self._watch is not None:
            self._poll_file()
        if stdin is not None:
            threading.Thread(target=self._read_lines, args=(stdin,), name="captions-stdin",
                             daemon=True).start()

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
            stat = self._watch.stat()
        except FileNotFoundError:
            return  # not written yet (or being replaced): keep the current caption
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._watched_stamp:
            return
        self._watched_stamp = stamp
        text = self._watch.read_text(encoding="utf-8").strip()
        if text:
            self.set(Prompt.parse(text))

    def _read_lines(self, stream: TextIO) -> None:
        for line in stream:
            if line.strip():
                self.set(Prompt.parse(line))

