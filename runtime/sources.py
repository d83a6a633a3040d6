"""Frame sources for `groundrt run`: image files, folders and globs, video files, cameras,
network streams (RTSP, HTTP) and GStreamer pipelines (a Jetson CSI camera), all read with
OpenCV.

    source = open_source("pred/sample.mp4")     # or "0", "/dev/video0", "rtsp://..."
    for frame in source: frame.index, frame.timestamp, frame.image

Files end at their end; a camera or stream that stops delivering frames is reopened with
exponential backoff (bounded attempts, each logged) and fails with `SourceError` when it does not
come back. The attempts are counted from the last frame delivered, not from the last open: a
source that opens but never delivers a frame gives up after the same number of attempts.
Unreadable image files and frames that do not decode are skipped and counted
(`source.corrupt`).
"""

from __future__ import annotations

import glob
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from groundrt.errors import GroundrtError
from groundrt.runtime.gstreamer import (
    CSI_SCHEME,
    is_gstreamer_source,
    pipeline_of,
    require_gstreamer,
)
from groundrt.runtime.images import DEFAULT_MAX_PIXELS, ImageError, load_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
# a live source that delivers this many frames in a row that do not decode is reopened
MAX_CORRUPT_IN_A_ROW = 100
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceError(GroundrtError):
    """A source cannot be opened, or a live source did not come back after reconnecting."""


@dataclass
class Frame:
    index: int  # position among the frames the source delivered (after --vid-stride)
    timestamp: float  # seconds: the position in a video file, else since the source opened
    image: np.ndarray  # [H, W, 3] uint8 BGR
    name: str  # the image file's name, or "frame <index>"
    started: float = 0.0  # time.perf_counter() when processing began (latency is from here)
    meta: Any = None  # what the source attaches for the sinks (a ROS 2 message's header)
    fps: float | None = None  # the stream's frame rate when this frame was rendered
    stage_ms: dict[str, float] = field(default_factory=dict)  # a stream's stages, on this frame


class Capture(Protocol):
    """What groundrt needs of cv2.VideoCapture (tests may hand in their own)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's names)
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def grab(self) -> bool: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class Reconnect:
    """How a live source is reopened: `attempts` tries, waiting `first_delay` seconds before the
    first and doubling up to `max_delay`."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1-based)."""
        return min(self.first_delay * 2.0 ** min(attempt - 1, 64), self.max_delay)


class FrameSource:
    """Base of every source: iterate for frames; counters of what was read and skipped."""

    kind = "source"
    live = False  # cameras and streams: frames come at their pace, whether read or not

    def __init__(self, name: str, vid_stride: int = 1) -> None:
        if vid_stride < 1:
            raise ValueError(f"vid_stride must be at least 1, got {vid_stride}")
        self.name = name
        self.vid_stride = vid_stride
        self.read = 0  # frames delivered
        self.corrupt = 0  # frames or files skipped because they did not decode
        self.reconnects = 0
        self.total: int | None = None  # frames a file source will deliver, when known
        self.fps: float | None = None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file (iteration may stop early)."""


class ImageFiles(FrameSource):
    """Image files in order; one that cannot be read is skipped, logged and counted."""

    kind = "images"

    def __init__(self, paths: list[Path], name: str, vid_stride: int = 1,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(name, vid_stride)
        self.paths = paths[::vid_stride]
        self.total = len(self.paths)
        self.max_pixels = max_pixels

    def __iter__(self) -> Iterator[Frame]:
        start = time.perf_counter()
        for path in self.paths:
            try:
                image = load_image(path, max_pixels=self.max_pixels)
            except ImageError as exc:
                self.corrupt += 1
                log.warning("skipping %s", exc)
                continue
            yield Frame(self.read, time.perf_counter() - start, image, path.name)
            self.read += 1


class VideoSource(FrameSource):
    """A video file, a camera or a network stream through an OpenCV capture.

    `open_capture` returns a new capture each call. A file ends when its frames end; a live
    source that fails to deliver a frame is released and reopened (`reconnect`).
    """

    def __init__(self, open_capture: Callable[[], Capture], name: str, kind: str, live: bool,
                 vid_stride: int = 1, reconnect: Reconnect | None = None) -> None:
        super().__init__(name, vid_stride)
        self.kind, self.live = kind, live
        self.open_capture = open_capture
        self.reconnect = reconnect or Reconnect()
        self.capture: Capture | None = None
        self._attempts = 0  # reopen attempts since the last frame delivered
        self._open_first()

    def _open_first(self) -> None:
        capture = self.open_capture()
        if not capture.isOpened():
            capture.release()
            if not self.live:
                raise SourceError(f"cannot open {self.kind} {self.name}: missing, unreadable "
                                  "or in a format this OpenCV cannot decode")
            capture = self._reopen(f"cannot open {self.kind} {self.name}")
        self.capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None
        if not self.live:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.total = -(-count // self.vid_stride) if count > 0 else None

    def _reopen(self, reason: str) -> Capture:
        """A working capture after `reason`, or SourceError once `reconnect.attempts` attempts
        have passed since the last frame delivered (an open that delivers nothing counts)."""
        while self._attempts < self.reconnect.attempts:
            self._attempts += 1
            attempt = self._attempts
            delay = self.reconnect.delay(attempt)
            log.warning("%s: reopening in %.1f s (attempt %d of %d)", reason, delay, attempt,
                        self.reconnect.attempts)
            time.sleep(delay)
            capture = self.open_capture()
            if capture.isOpened():
                self.reconnects += 1
                log.warning("%s %s is open again after attempt %d", self.kind, self.name,
                            attempt)
                return capture
            capture.release()
        raise SourceError(f"{reason}, and it did not come back after "
                          f"{self.reconnect.attempts} attempts")

    def _next_image(self) -> np.ndarray | None:
        """The next frame (after skipping vid_stride - 1), None at the end of a file."""
        assert self.capture is not None
        corrupt_in_a_row = 0
        while True:
            skipped = all(self.capture.grab() for _ in range(self.vid_stride - 1))
            ok, image = self.capture.read() if skipped else (False, None)
            if ok and image is not None and image.ndim == 3 and image.size:
                self._attempts = 0  # the source works: a later drop gets every attempt again
                return image
            if ok:  # the capture delivered something that is not an image
                self.corrupt += 1
                corrupt_in_a_row += 1
                log.warning("skipping a frame of %s that did not decode", self.name)
                if not self.live or corrupt_in_a_row < MAX_CORRUPT_IN_A_ROW:
                    continue  # else a live source delivering only garbage is reopened
            if not self.live:
                return None
            self.capture.release()
            self.capture = self._reopen(f"{self.kind} {self.name} stopped delivering frames")

    def __iter__(self) -> Iterator[Frame]:
        start = time.perf_counter()
        while self.capture is not None:
            image = self._next_image()
            if image is None:
                return
            if self.live:
                timestamp = time.perf_counter() - start
            else:
                timestamp = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1e3
            yield Frame(self.read, timestamp, image, f"frame {self.read}")
            self.read += 1

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


def _image_paths(spec: str) -> list[Path] | None:
    """The images a folder, a glob or an image file names (None: not an image source)."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if glob.has_magic(spec):
        return sorted(Path(p) for p in glob.glob(spec, recursive=True)
                      if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    return None


def open_source(spec: str, vid_stride: int = 1, reconnect: Reconnect | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> FrameSource:
    """The source `spec` names: an image file, a folder or glob of images, a video file, a camera
    index ("0") or device ("/dev/video0"), an rtsp:// / http(s):// stream URL, a Jetson CSI
    camera ("csi://0") or a GStreamer pipeline ("gst:PIPELINE"; runtime/gstreamer.py).
    `max_pixels` bounds the image files (read from their headers)."""
    if is_gstreamer_source(spec):
        pipeline = pipeline_of(spec)  # a malformed spec fails before OpenCV is asked
        require_gstreamer(spec)
        live = spec.startswith(CSI_SCHEME) or not pipeline.lstrip().startswith("filesrc")
        return VideoSource(lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER), spec,
                           "camera" if spec.startswith(CSI_SCHEME) else "gstreamer", live,
                           vid_stride, reconnect)
    if spec.isdecimal():
        index = int(spec)
        return VideoSource(lambda: cv2.VideoCapture(index), spec, "camera", True, vid_stride,
                           reconnect)
    if spec.startswith("/dev/video"):
        return VideoSource(lambda: cv2.VideoCapture(spec, cv2.CAP_V4L2), spec, "camera", True,
                           vid_stride, reconnect)
    if spec.lower().startswith(STREAM_SCHEMES):
        return VideoSource(lambda: cv2.VideoCapture(spec, cv2.CAP_FFMPEG), spec, "stream", True,
                           vid_stride, reconnect)
    paths = _image_paths(spec)
    if paths is not None:
        if not paths:
            raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {spec}")
        if len(paths) == 1 and not paths[0].is_file():
            raise SourceError(f"image file {spec} does not exist")
        return ImageFiles(paths, spec, vid_stride, max_pixels)
    path = Path(spec)
    if not path.is_file():
        raise SourceError(f"source {spec} is not a file, a folder, a glob, a camera index, "
                          "/dev/videoN or a stream URL")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        log.warning("%s has no video suffix (%s); trying it as a video", spec,
                    ", ".join(sorted(VIDEO_SUFFIXES)))
    return VideoSource(lambda: cv2.VideoCapture(str(path)), spec, "video", False, vid_stride,
                       reconnect)
