"""Where `groundrt run` writes each grounded frame: a JSONL file, an annotated video, a folder of
annotated images, an OpenCV window.

Every output path is checked (and created) before the first frame is read, so an unwritable
path fails at once; `close()` flushes and finalizes (the video's index is written then).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from groundrt.errors import GroundrtError
from groundrt.runtime.results import GroundingResult
from groundrt.runtime.sources import Frame

log = logging.getLogger(__name__)

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class OutputError(GroundrtError):
    """An output path cannot be written."""


def writable_file(path: str | Path) -> Path:
    """`path`, its folder created; OutputError unless a file can be written there."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write output {path}: {exc.strerror or exc}") from exc
    return path


def writable_folder(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into output folder {path}: permission denied")
    return path


class Sink:
    """Takes every processed frame in order, in two steps that a stream runs in two threads:
    `render` turns a frame's result into what is written (CPU work: `annotated` is the frame's
    overlay when the sink needs one), `write` writes it (I/O, encoding)."""

    needs_overlay = False

    def render(self, frame: Frame, result: GroundingResult, annotated: np.ndarray | None) -> Any:
        return annotated

    def write(self, rendered: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release."""


class JsonlSink(Sink):
    """One JSON line per frame: index, timestamp, source name, caption, and per phrase its
    score, box, area, centroid and COCO RLE mask."""

    def __init__(self, path: str | Path) -> None:
        self.path = writable_file(path)
        self.file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def render(self, frame: Frame, result: GroundingResult, annotated: np.ndarray | None) -> str:
        record = {"frame": frame.index, "timestamp": round(frame.timestamp, 6),
                  "name": frame.name, **result.to_json()}
        return json.dumps(record) + "\n"

    def write(self, rendered: str) -> None:
        self.file.write(rendered)

    def close(self) -> None:
        self.file.close()


class VideoSink(Sink):
    """An annotated video (.mp4: MPEG-4 Part 2, which every OpenCV build writes), opened on the
    first frame with its size; frames of another size are resized to it."""

    needs_overlay = True

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = writable_file(path)
        self.fourcc = VIDEO_FOURCC.get(self.path.suffix.lower())
        if self.fourcc is None:
            raise OutputError(f"cannot write video {self.path}: use one of "
                              f"{', '.join(VIDEO_FOURCC)}")
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None

    def write(self, annotated: np.ndarray) -> None:
        if self.writer is None:
            self.size = (annotated.shape[1], annotated.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc),
                                          self.fps, self.size)
            if not self.writer.isOpened():
                raise OutputError(f"OpenCV cannot open a {self.fourcc} video writer for "
                                  f"{self.path}")
        if (annotated.shape[1], annotated.shape[0]) != self.size:
            annotated = cv2.resize(annotated, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(annotated)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class ImageFolderSink(Sink):
    """Annotated frames as JPEG files: the source image's name, or frame_<index>.jpg."""

    needs_overlay = True

    def __init__(self, folder: str | Path) -> None:
        self.folder = writable_folder(folder)

    def render(self, frame: Frame, result: GroundingResult,
               annotated: np.ndarray | None) -> tuple[str, np.ndarray | None]:
        stem = Path(frame.name).stem if "." in frame.name else f"frame_{frame.index:06d}"
        return stem, annotated

    def write(self, rendered: tuple[str, np.ndarray]) -> None:
        stem, annotated = rendered
        path = self.folder / f"{stem}.jpg"
        if not cv2.imwrite(str(path), annotated):
            raise OutputError(f"cannot write {path}")


class WindowSink(Sink):
    """An OpenCV window (needs a display and an OpenCV with GUI support); `q` or Esc stops."""

    needs_overlay = True
    title = "groundrt"

    def __init__(self) -> None:
        self.stop_requested = False
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise OutputError("--show needs a display and opencv-python with GUI support "
                              "(opencv-python-headless has none)") from exc

    def write(self, annotated: np.ndarray) -> None:
        cv2.imshow(self.title, annotated)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def annotate(frame: Frame, result: GroundingResult, fps: float | None) -> np.ndarray:
    """The frame with coloured masks, phrase labels and (when known) the FPS counter."""
    out = result.overlay(frame.image)
    if fps is not None:
        cv2.putText(out, f"{fps:.1f} FPS", (8, out.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return out
