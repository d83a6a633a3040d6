"""A grounding result as ROS 2 messages, and ROS 2 images as frames: plain code (no rclpy).

Messages are dicts with the fields of their ROS 2 definitions (definitions.py), which the node
fills into rclpy messages (rosidl_runtime_py.set_message_fields) and the MCAP recorder encodes
to CDR (mcap-ros2-support), so both carry the same values:

* `detections` (vision_msgs/Detection2DArray): one Detection2D per phrase with a non-empty
  mask: `results[0].hypothesis` = (class_id: the phrase's text, score: its mean mask
  probability), `bbox` = the mask's box in pixels (centre and size; a pixel i spans [i, i + 1)),
  `id` = the phrase's value in the mask image; every header is the image's.
* `mask` (sensor_msgs/Image, mono8): pixel = phrase index + 1, 0 = no phrase. Where masks
  overlap, the smaller mask wins (a thing on its stuff stays visible), equal areas the earlier
  phrase.
* `annotated` (sensor_msgs/Image, bgr8): the overlay.
"""

from __future__ import annotations

import cv2
import numpy as np

from groundrt.runtime.images import ImageError
from groundrt.runtime.results import GroundingResult

# encoding -> (channels, OpenCV conversion to BGR): the 8-bit colour and grey encodings of
# cameras (sensor_msgs/image_encodings.hpp names)
ENCODINGS = {"bgr8": (3, None), "rgb8": (3, cv2.COLOR_RGB2BGR), "bgra8": (4, cv2.COLOR_BGRA2BGR),
             "rgba8": (4, cv2.COLOR_RGBA2BGR), "mono8": (1, cv2.COLOR_GRAY2BGR)}
MAX_PHRASES = 255  # mono8 mask values 1..255


def header(sec: int, nanosec: int, frame_id: str = "") -> dict:
    """A std_msgs/Header."""
    return {"stamp": {"sec": int(sec), "nanosec": int(nanosec)}, "frame_id": frame_id}


def header_at(time_ns: int, frame_id: str = "") -> dict:
    """A std_msgs/Header stamped `time_ns` nanoseconds since the epoch."""
    return header(time_ns // 1_000_000_000, time_ns % 1_000_000_000, frame_id)


def stamp_ns(head: dict) -> int:
    """A header's stamp in nanoseconds since the epoch."""
    return head["stamp"]["sec"] * 1_000_000_000 + head["stamp"]["nanosec"]


def image_to_bgr(height: int, width: int, encoding: str, step: int, data) -> np.ndarray:
    """The [H, W, 3] uint8 BGR image of a sensor_msgs/Image's fields (`data`: any buffer, such
    as rclpy's array or bytes); ImageError naming an unsupported encoding or a wrong size."""
    if encoding not in ENCODINGS:
        raise ImageError(f"image encoding {encoding!r} is not supported: use one of "
                         f"{', '.join(ENCODINGS)}")
    channels, conversion = ENCODINGS[encoding]
    if height <= 0 or width <= 0 or step < width * channels:
        raise ImageError(f"{encoding} image of {width}x{height} with step {step}: the step "
                         f"must be at least {width * channels} bytes")
    try:
        buffer = np.frombuffer(data, dtype=np.uint8)  # bytes, array.array('B'), numpy: no copy
    except TypeError:  # a list of ints
        buffer = np.asarray(data, dtype=np.uint8).ravel()
    if buffer.size < step * (height - 1) + width * channels:
        raise ImageError(f"{encoding} image of {width}x{height} (step {step}) needs "
                         f"{step * height} bytes, got {buffer.size}")
    rows = np.lib.stride_tricks.as_strided(buffer, (height, width, channels), (step, channels, 1),
                                           writeable=False)
    if conversion is None:
        return np.ascontiguousarray(rows)
    return cv2.cvtColor(np.ascontiguousarray(rows), conversion)


def image_message(image: np.ndarray, encoding: str, head: dict) -> dict:
    """A sensor_msgs/Image of a [H, W, C] or [H, W] uint8 image, rows packed."""
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    return {"header": head, "height": height, "width": width, "encoding": encoding,
            "is_bigendian": 0, "step": width * channels, "data": image.tobytes()}


def label_mask(result: GroundingResult) -> np.ndarray:
    """[H, W] uint8: phrase index + 1 where the phrase's mask is, 0 elsewhere; the smaller mask
    wins where masks overlap (equal areas: the earlier phrase)."""
    if len(result.phrases) > MAX_PHRASES:
        raise ValueError(f"a mono8 mask holds at most {MAX_PHRASES} phrases, got "
                         f"{len(result.phrases)}")
    labels = np.zeros(result.image_size, dtype=np.uint8)
    order = sorted(range(len(result.phrases)), key=lambda i: (-result.phrases[i].area, -i))
    for i in order:  # largest first, so smaller masks are painted over them
        phrase = result.phrases[i]
        if phrase.area:
            x0, y0, x1, y1 = phrase.box
            labels[y0:y1, x0:x1][phrase.mask[y0:y1, x0:x1]] = i + 1
    return labels


def detections_message(result: GroundingResult, head: dict) -> dict:
    """vision_msgs/Detection2DArray: a Detection2D per phrase with a non-empty mask."""
    detections = []
    for i, phrase in enumerate(result.phrases):
        if not phrase.area:
            continue
        x0, y0, x1, y1 = phrase.box
        pose = {"pose": {"position": {"x": 0.0, "y": 0.0, "z": 0.0},
                         "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
                "covariance": [0.0] * 36}
        detections.append({
            "header": head,
            "results": [{"hypothesis": {"class_id": phrase.text, "score": float(phrase.score)},
                         "pose": pose}],
            "bbox": {"center": {"position": {"x": (x0 + x1) / 2, "y": (y0 + y1) / 2},
                                "theta": 0.0},
                     "size_x": float(x1 - x0), "size_y": float(y1 - y0)},
            "id": str(i + 1)})
    return {"header": head, "detections": detections}


def result_messages(result: GroundingResult, annotated: np.ndarray | None,
                    head: dict) -> dict[str, dict]:
    """The node's outputs for one frame: topic -> message (`annotated` only when given)."""
    messages = {"detections": detections_message(result, head),
                "mask": image_message(label_mask(result), "mono8", head)}
    if annotated is not None:
        messages["annotated"] = image_message(annotated, "bgr8", head)
    return messages
