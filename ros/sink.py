"""The node's outputs as a stream sink: each frame's ROS 2 messages (messages.py) handed to a
`publish` function, in the stream's write thread (the node publishes them; the MCAP recorder
writes them)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from groundrt.ros.messages import header_at, image_message, result_messages
from groundrt.runtime.results import GroundingResult
from groundrt.runtime.sinks import Sink
from groundrt.runtime.sources import Frame


class MessageSink(Sink):
    """`publish(messages)` per frame: topic -> message dict (`detections`, `mask`,
    `annotated`; with `inputs` also `image` and `caption`, what a recording needs to replay).
    Headers are the frame's own (`frame.meta`, a subscribed image's) or, for frames from
    elsewhere, stamped at `start_ns` + the frame's timestamp with `frame_id`."""

    needs_overlay = True

    def __init__(self, publish: Callable[[dict[str, dict]], None], inputs: bool = False,
                 frame_id: str = "camera", start_ns: int | None = None) -> None:
        self.publish = publish
        self.inputs = inputs
        self.frame_id = frame_id
        self.start_ns = time.time_ns() if start_ns is None else start_ns

    def header_of(self, frame: Frame) -> dict:
        if isinstance(frame.meta, dict) and "stamp" in frame.meta:
            return frame.meta
        return header_at(self.start_ns + round(frame.timestamp * 1e9), self.frame_id)

    def render(self, frame: Frame, result: GroundingResult,
               annotated: np.ndarray | None) -> dict[str, dict]:
        head = self.header_of(frame)
        messages = result_messages(result, annotated, head)
        if self.inputs:
            messages["image"] = image_message(frame.image, "bgr8", head)
            messages["caption"] = {"data": result.caption or "; ".join(
                p.text for p in result.phrases)}
        return messages

    def write(self, rendered: dict[str, dict]) -> None:
        self.publish(rendered)
