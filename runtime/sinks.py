"""Where `groundrt run` writes each grounded frame: a JSONL file, an annotated video, a folder of
annotated images, an OpenCV window.

Nothing is lost: every output path is checked before the first frame is read (an unwritable
path fails at once), but an existing output file is not touched until the run has written a
frame to it. A file output is written to a temporary file beside it (`.NAME.partial-*`) and
renamed over the output when the sink closes, so a run that fails before its first frame leaves
an existing file as it was; a run stopped by an error after some frames (a full disk) keeps
the whole frames it wrote. Each annotated image of a folder output is written the same way.
`check_not_inputs` refuses outputs that would overwrite the stream's own input files.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from groundrt.errors import GroundrtError
from groundrt.runtime.results import GroundingResult
from groundrt.runtime.sources import Frame

log = logging.getLogger(__name__)

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
_UMASK = os.umask(0o022)  # read once (setting it is the only way), then restored
os.umask(_UMASK)


class OutputError(GroundrtError):
    """An output path cannot be written, or would overwrite an input."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def writable_file(path: str | Path) -> Path:
    """`path`, its folder created; OutputError unless a file can be written there. An existing
    file at `path` is left as it is."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write output {path}: {_reason(exc)}") from exc
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent,
                                                                         os.W_OK | os.X_OK):
        raise OutputError(f"cannot write output {path}: permission denied")
    return path


def writable_folder(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {path}: {_reason(exc)}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into output folder {path}: permission denied")
    return path


def check_not_inputs(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """OutputError when an output path is one of the input files (after resolving links)."""
    inputs = list(inputs)
    names = {os.path.realpath(p) for p in inputs}
    for output in outputs:
        same = os.path.realpath(output) in names or (output.exists() and any(
            p.exists() and os.path.samefile(output, p) for p in inputs))  # hard links
        if same:
            raise OutputError(f"output {output} is one of the inputs: it would be overwritten; "
                              "choose another output path")


def partial_file(target: Path, suffix: str = "") -> tuple[int, Path]:
    """A new file beside `target` (`.NAME.partial-*SUFFIX`, open: its descriptor) with the mode
    a plain open() would give it (mkstemp's is 0600), or the mode of the file it will replace."""
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.partial-",
                                    suffix=suffix)
    except OSError as exc:
        raise OutputError(f"cannot write output {target}: {_reason(exc)}") from exc
    os.fchmod(fd, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_UMASK)
    return fd, Path(name)


class PartialFile:
    """A file written beside its target and renamed over it on `commit` (whole frames only).

    `write` appends one frame's bytes and flushes them; when the disk is full (or any write
    fails) the file is cut back to the last whole frame and OutputError raised.
    """

    def __init__(self, target: Path, suffix: str = "") -> None:
        self.target = target
        fd, self.path = partial_file(target, suffix)
        self.file = os.fdopen(fd, "wb")
        self.frames = 0
        self._good = 0  # bytes of whole frames

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
            self.file.flush()
        except OSError as exc:
            self._cut_back()
            raise OutputError(f"cannot write output {self.target}: {_reason(exc)}; it keeps "
                              f"the {self.frames} frame(s) written before") from exc
        self._good += len(data)
        self.frames += 1

    def _cut_back(self) -> None:
        try:
            os.truncate(self.path, self._good)
        except OSError as exc:  # the whole frames before stay; the last line may be cut
            log.error("cannot cut %s back to its whole frames: %s", self.path, _reason(exc))

    def close(self) -> None:
        """Rename over the target when a frame was written; else remove (the target stays)."""
        if self.file.closed:
            return
        try:
            self.file.close()
        except OSError:  # buffered bytes that did not fit: keep the whole frames
            self._cut_back()
        commit(self.path, self.target, self.frames > 0)


def commit(partial: Path, target: Path, keep: bool) -> None:
    """Rename `partial` over `target` when `keep`, else remove it."""
    if keep:
        os.replace(partial, target)
    else:
        partial.unlink(missing_ok=True)


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
        self.file = PartialFile(self.path)

    def render(self, frame: Frame, result: GroundingResult, annotated: np.ndarray | None) -> bytes:
        record = {"frame": frame.index, "timestamp": round(frame.timestamp, 6),
                  "name": frame.name, **result.to_json()}
        return (json.dumps(record) + "\n").encode("utf-8")

    def write(self, rendered: bytes) -> None:
        self.file.write(rendered)

    def close(self) -> None:
        self.file.close()


class VideoSink(Sink):
    """An annotated video (.mp4: MPEG-4 Part 2, which every OpenCV build writes), opened on the
    first frame with its size; frames of another size are resized to it. OpenCV's writer does
    not report a full disk: the video may end early then."""

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
        self.frames = 0
        # the container is chosen by the suffix, so the partial file keeps it
        self.partial = self.path.with_name(f".{self.path.name}.partial{self.path.suffix}")

    def write(self, annotated: np.ndarray) -> None:
        if self.writer is None:
            self.size = (annotated.shape[1], annotated.shape[0])
            self.writer = cv2.VideoWriter(str(self.partial),
                                          cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                                          self.size)
            if not self.writer.isOpened():
                raise OutputError(f"OpenCV cannot open a {self.fourcc} video writer for "
                                  f"{self.path}")
        if (annotated.shape[1], annotated.shape[0]) != self.size:
            annotated = cv2.resize(annotated, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(annotated)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            commit(self.partial, self.path, self.frames > 0)


class ImageFolderSink(Sink):
    """Annotated frames as JPEG files: the source image's name, or frame_<index>.jpg; each is
    written whole (a partial file renamed over it)."""

    needs_overlay = True

    def __init__(self, folder: str | Path) -> None:
        self.folder = writable_folder(folder)

    def output_path(self, name: str, index: int) -> Path:
        """Where the frame called `name` (a source file's name, or "frame N") is written."""
        stem = Path(name).stem if "." in name else f"frame_{index:06d}"
        return self.folder / f"{stem}.jpg"

    def render(self, frame: Frame, result: GroundingResult,
               annotated: np.ndarray | None) -> tuple[Path, np.ndarray | None]:
        return self.output_path(frame.name, frame.index), annotated

    def write(self, rendered: tuple[Path, np.ndarray]) -> None:
        path, annotated = rendered
        ok, encoded = cv2.imencode(".jpg", annotated)
        if not ok:
            raise OutputError(f"OpenCV cannot encode {path}")
        partial = PartialFile(path, ".jpg")
        try:
            partial.write(encoded.tobytes())
        finally:
            partial.close()


class WindowSink(Sink):
    """An OpenCV window (needs a display and an OpenCV with GUI support); `q` or Esc stops."""

    needs_overlay = True
    title = "groundrt"

    def __init__(self) -> None:
        self.stop_requested = False
        self.closed = False
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
        if not self.closed:
            self.closed = True
            cv2.destroyWindow(self.title)


def annotate(frame: Frame, result: GroundingResult, fps: float | None,
             latency_ms: float | None = None) -> np.ndarray:
    """The frame's overlay with the strip: the stream's FPS (when measured) and the frame's
    latency (`latency_ms`, else the result's total time when it has one)."""
    if latency_ms is None:
        latency_ms = result.timings_ms.get("total")
    return result.overlay(frame.image, fps=fps, latency_ms=latency_ms)
