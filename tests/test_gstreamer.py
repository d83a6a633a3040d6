"""GStreamer sources: the csi:// and gst: pipeline builder, and a videotestsrc stream where this
OpenCV has GStreamer (the PyPI wheels do not: then the clear error is what is tested)."""

from __future__ import annotations

import pytest

from groundrt.runtime.gstreamer import (
    APPSINK,
    GStreamerError,
    csi_pipeline,
    opencv_has_gstreamer,
    pipeline_of,
)
from groundrt.runtime.sources import open_source

HAS_GSTREAMER = opencv_has_gstreamer()


def test_csi_camera_pipeline():
    pipeline = pipeline_of("csi://0")
    assert pipeline == csi_pipeline(0, 1920, 1080, 30, 0)
    assert pipeline.startswith("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM), "
                               "width=1920, height=1080, framerate=30/1, format=NV12 ! ")
    assert "nvvidconv flip-method=0 ! video/x-raw, format=BGRx ! videoconvert" in pipeline
    assert pipeline.endswith("format=BGR ! " + APPSINK)
    custom = pipeline_of("csi://1?width=1280&height=720&fps=60&flip=2")
    assert "sensor-id=1" in custom and "width=1280, height=720, framerate=60/1" in custom
    assert "flip-method=2" in custom


@pytest.mark.parametrize("spec, problem", [
    ("csi://", "csi://N"), ("csi://cam", "csi://N"), ("csi://0/x", "csi://N"),
    ("csi://0?zoom=2", "unknown option 'zoom'"), ("csi://0?fps=fast", "whole number"),
    ("csi://0?flip=9", "flip must be 0 to 7"), ("csi://0?width=0", "width must be positive"),
    ("gst:", "needs a pipeline"), ('gst:""', "needs a pipeline"),
])
def test_malformed_specs_say_what_is_wrong(spec, problem):
    with pytest.raises(GStreamerError, match=problem):
        pipeline_of(spec)
    with pytest.raises(GStreamerError, match=problem):  # before OpenCV is asked
        open_source(spec)


def test_gst_pipeline_gets_an_appsink_only_when_it_has_none():
    given = "videotestsrc ! videoconvert ! appsink"
    assert pipeline_of(f'gst:"{given}"') == given
    assert pipeline_of(f"gst:{given}") == given
    assert pipeline_of("gst:videotestsrc is-live=true") == (
        "videotestsrc is-live=true ! videoconvert ! video/x-raw, format=BGR ! " + APPSINK)
    assert pipeline_of("gst:filesrc location=appsink.mp4 ! decodebin").endswith(APPSINK)


@pytest.mark.skipif(HAS_GSTREAMER, reason="this OpenCV has GStreamer")
def test_without_gstreamer_the_error_says_how_to_get_it():
    for spec in ("csi://0", "gst:videotestsrc ! appsink"):
        with pytest.raises(GStreamerError, match="built without it.*system-site-packages"):
            open_source(spec)


@pytest.mark.skipif(not HAS_GSTREAMER, reason="this OpenCV was built without GStreamer (the "
                    "opencv-python wheels are); JetPack's python3-opencv has it")
def test_videotestsrc_stream_delivers_bgr_frames():
    source = open_source("gst:videotestsrc pattern=ball ! video/x-raw, width=160, height=120 ! "
                         "videoconvert ! video/x-raw, format=BGR ! appsink")
    try:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 3:
                break
    finally:
        source.close()
    assert source.live and [f.image.shape for f in frames] == [(120, 160, 3)] * 3
