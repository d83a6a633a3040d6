"""GStreamer sources for `groundrt run`: a Jetson CSI camera and any pipeline, read by OpenCV.

    --source csi://0                              # nvarguscamerasrc sensor-id=0, 1920x1080 @ 30
    --source "csi://1?width=1280&height=720&fps=60&flip=2"
    --source gst:"videotestsrc ! videoconvert ! appsink"

A CSI camera is an `nvarguscamerasrc` pipeline: NV12 frames in NVMM memory converted by
`nvvidconv` (the Jetson's VIC) to BGRx, then by `videoconvert` to the BGR OpenCV reads. A `gst:`
pipeline is used as given, with an `appsink` added when it has none. `appsink drop=true
max-buffers=1` keeps only the newest frame (a live source must not queue frames the runtime is
too slow for). OpenCV must be built with GStreamer (JetPack's python3-opencv is; the
opencv-python wheels from PyPI are not): `require_gstreamer` says so otherwise.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import cv2

from groundrt.errors import GroundrtError

CSI_SCHEME = "csi://"
GST_PREFIX = "gst:"
APPSINK = "appsink drop=true max-buffers=1 sync=false"
TO_BGR = "videoconvert ! video/x-raw, format=BGR"
CSI_DEFAULTS = {"width": 1920, "height": 1080, "fps": 30, "flip": 0}


class GStreamerError(GroundrtError, ValueError):
    """A GStreamer source that this OpenCV cannot open, or a malformed csi:// / gst: spec."""


def is_gstreamer_source(spec: str) -> bool:
    return spec.startswith((CSI_SCHEME, GST_PREFIX))


def csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30,
                 flip: int = 0) -> str:
    """The pipeline of Jetson CSI camera `sensor_id` at width x height, `fps` frames/s,
    nvvidconv flip-method `flip` (0-7), delivering BGR frames to OpenCV."""
    for name, value in (("width", width), ("height", height), ("fps", fps)):
        if value < 1:
            raise GStreamerError(f"csi camera {name} must be positive, got {value}")
    if not 0 <= flip <= 7:
        raise GStreamerError(f"csi camera flip must be 0 to 7 (nvvidconv flip-method), got {flip}")
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1, format=NV12 ! nvvidconv flip-method={flip} ! "
            f"video/x-raw, format=BGRx ! {TO_BGR} ! {APPSINK}")


def parse_csi(spec: str) -> str:
    """csi://N[?width=W&height=H&fps=F&flip=M] -> its pipeline."""
    parts = urlsplit(spec)
    if not parts.netloc.isdigit() or parts.path not in ("", "/"):
        raise GStreamerError(f"{spec!r}: a CSI camera is csi://N (sensor id N, e.g. csi://0), "
                             "optionally ?width=W&height=H&fps=F&flip=M")
    options = dict(CSI_DEFAULTS)
    for key, values in parse_qs(parts.query, strict_parsing=bool(parts.query)).items():
        if key not in options:
            raise GStreamerError(f"{spec!r}: unknown option {key!r} (known: "
                                 f"{', '.join(CSI_DEFAULTS)})")
        if not re.fullmatch(r"\d+", values[-1]):
            raise GStreamerError(f"{spec!r}: {key} must be a whole number, got {values[-1]!r}")
        options[key] = int(values[-1])
    return csi_pipeline(int(parts.netloc), **options)


def parse_gst(spec: str) -> str:
    """gst:PIPELINE (quotes around it allowed) -> the pipeline, ending in an appsink."""
    pipeline = spec[len(GST_PREFIX):].strip()
    if len(pipeline) >= 2 and pipeline[0] == pipeline[-1] and pipeline[0] in "\"'":
        pipeline = pipeline[1:-1].strip()
    if not pipeline:
        raise GStreamerError("gst: needs a pipeline, e.g. gst:\"videotestsrc ! videoconvert ! "
                             "appsink\"")
    if not re.search(r"(^|!)\s*appsink\b", pipeline):
        pipeline = f"{pipeline} ! {TO_BGR} ! {APPSINK}"
    return pipeline


def pipeline_of(spec: str) -> str:
    """The GStreamer pipeline a csi:// or gst: source names."""
    return parse_csi(spec) if spec.startswith(CSI_SCHEME) else parse_gst(spec)


def opencv_has_gstreamer() -> bool:
    """This OpenCV's build information lists GStreamer as YES."""
    for line in cv2.getBuildInformation().splitlines():
        name, _, value = line.strip().partition(":")
        if name.strip() == "GStreamer":
            return value.strip().upper().startswith("YES")
    return False


def require_gstreamer(spec: str) -> None:
    if not opencv_has_gstreamer():
        raise GStreamerError(
            f"source {spec!r} needs OpenCV with GStreamer, and this OpenCV ({cv2.__version__}, "
            f"{cv2.__file__}) was built without it (the opencv-python wheels from PyPI are). On "
            "a Jetson use JetPack's python3-opencv: a venv made with --system-site-packages and "
            "no opencv-python in it (see the README's Jetson section)")
