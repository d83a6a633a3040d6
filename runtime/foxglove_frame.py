"""A grounded frame as Foxglove messages, on channels of one Foxglove SDK context (the MCAP
recorder's or the live server's; `foxglove-sdk`, the [robot] extra).

One message per frame on each channel (TOPICS):
* `/groundrt/image` (foxglove.CompressedImage, JPEG): the frame;
* `/groundrt/mask` (CompressedImage, PNG: lossless): the mono8 label mask (pixel = phrase
  index + 1, 0 = none; groundrt/ros/messages.py);
* `/groundrt/annotations` (foxglove.ImageAnnotations, drawn over either image by Foxglove's
  Image panel): per phrase its mask's outlines, filled, and a "phrase 0.91" label; a line of
  per-stage timings;
* `/groundrt/annotated` (CompressedImage, JPEG): the overlay `groundrt run --save` writes;
* `/groundrt/result` (JSON): caption, per phrase text / score / box / area / centroid, the
  per-stage timings in ms and the FPS (Foxglove's Plot panel plots e.g. `.timings_ms.total`).
"""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np

from groundrt.ros.messages import label_mask
from groundrt.runtime.overlay import box_contours, colour
from groundrt.runtime.results import GroundingResult
from groundrt.runtime.sources import Frame

FRAME_ID = "camera"
TOPICS = ("/groundrt/image", "/groundrt/mask", "/groundrt/annotations", "/groundrt/annotated",
          "/groundrt/result")
JPEG_QUALITY = 90
OUTLINE_EPSILON_PX = 1.0  # outlines simplified to within a pixel (approxPolyDP)
RESULT_SCHEMA = json.dumps({"type": "object", "properties": {
    "frame": {"type": "integer"}, "timestamp": {"type": "number"}, "caption": {"type": "string"},
    "phrases": {"type": "array"}, "timings_ms": {"type": "object"},
    "fps": {"type": ["number", "null"]}}}).encode()


def _encode(image: np.ndarray, suffix: str, *params: int) -> bytes:
    ok, encoded = cv2.imencode(suffix, image, list(params))
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {image.shape} image as {suffix}")
    return encoded.tobytes()


def outlines(mask: np.ndarray, box: tuple[int, int, int, int]) -> list[np.ndarray]:
    """The outer contours of a [H, W] bool mask inside its box, each [N, 2] float x, y in
    image pixels (a plural's instances are separate contours)."""
    return [cv2.approxPolyDP(c, OUTLINE_EPSILON_PX, True).reshape(-1, 2).astype(np.float64)
            for c in box_contours(mask, box) if len(c) >= 3]


def timings_line(result: GroundingResult, fps: float | None) -> str:
    stages = " · ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items() if k != "total")
    total = result.timings_ms.get("total")
    head = f"{total:.1f} ms" if total is not None else ""
    return " | ".join(p for p in (head, stages, f"{fps:.1f} FPS" if fps else "") if p)


class FoxgloveChannels:
    """The channels of TOPICS in `context`; `messages` builds a frame's (CPU work), `log` writes
    them to the context's sinks (an MCAP writer, a WebSocket server)."""

    def __init__(self, context: Any) -> None:
        import foxglove
        from foxglove.channels import CompressedImageChannel, ImageAnnotationsChannel

        image, mask, annotations, annotated, result = TOPICS
        self.image = CompressedImageChannel(image, context=context)
        self.mask = CompressedImageChannel(mask, context=context)
        self.annotations = ImageAnnotationsChannel(annotations, context=context)
        self.annotated = CompressedImageChannel(annotated, context=context)
        self.result = foxglove.Channel(result, context=context, message_encoding="json",
                                       schema=foxglove.Schema(name="groundrt.Result",
                                                              encoding="jsonschema",
                                                              data=RESULT_SCHEMA))

    def messages(self, frame: Frame, result: GroundingResult, annotated: np.ndarray,
                 time_ns: int) -> list[tuple[Any, Any]]:
        """The frame's message on each channel, stamped `time_ns` (ns since the epoch)."""
        from foxglove.messages import CompressedImage, Timestamp

        fps = frame.fps

        stamp = Timestamp(time_ns // 1_000_000_000, time_ns % 1_000_000_000)
        jpeg = (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY)
        record = {"frame": frame.index, "timestamp": frame.timestamp, "name": frame.name,
                  **result.to_json(rle=False), "fps": fps}
        return [
            (self.image, CompressedImage(timestamp=stamp, frame_id=FRAME_ID, format="jpeg",
                                         data=_encode(frame.image, ".jpg", *jpeg))),
            (self.mask, CompressedImage(timestamp=stamp, frame_id=FRAME_ID, format="png",
                                        data=_encode(label_mask(result), ".png"))),
            (self.annotations, self._annotations(result, stamp, fps)),
            (self.annotated, CompressedImage(timestamp=stamp, frame_id=FRAME_ID, format="jpeg",
                                             data=_encode(annotated, ".jpg", *jpeg))),
            (self.result, json.dumps(record)),
        ]

    @staticmethod
    def _annotations(result: GroundingResult, stamp: Any, fps: float | None) -> Any:
        from foxglove.messages import (
            Color,
            ImageAnnotations,
            Point2,
            PointsAnnotation,
            PointsAnnotationType,
            TextAnnotation,
        )

        points, texts = [], []
        for i, phrase in enumerate(result.phrases):
            if not phrase.area:
                continue
            b, g, r = (c / 255 for c in colour(i))  # the overlay's colour of phrase i
            for outline in outlines(phrase.mask, phrase.box):
                points.append(PointsAnnotation(
                    timestamp=stamp, type=PointsAnnotationType.LineLoop, thickness=2.0,
                    points=[Point2(x=x, y=y) for x, y in outline],
                    outline_color=Color(r=r, g=g, b=b, a=1.0),
                    fill_color=Color(r=r, g=g, b=b, a=0.35)))
            x0, y0 = phrase.box[:2]
            texts.append(TextAnnotation(
                timestamp=stamp, position=Point2(x=float(x0), y=float(y0)), font_size=14.0,
                text=f"{phrase.text} {phrase.score:.2f}", text_color=Color(r=1, g=1, b=1, a=1),
                background_color=Color(r=r, g=g, b=b, a=0.85)))
        texts.append(TextAnnotation(
            timestamp=stamp, position=Point2(x=4.0, y=4.0), font_size=12.0,
            text=timings_line(result, fps), text_color=Color(r=1, g=1, b=1, a=1),
            background_color=Color(r=0, g=0, b=0, a=0.6)))
        return ImageAnnotations(timestamp=stamp, points=points, texts=texts)

    @staticmethod
    def log(messages: list[tuple[Any, Any]], time_ns: int) -> None:
        for channel, message in messages:
            channel.log(message, log_time=time_ns)
