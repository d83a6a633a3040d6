"""`groundrt run --mcap OUT.mcap`: every frame recorded into an MCAP file, one message per
frame on each channel, in one of two profiles:

* `foxglove` (default): Foxglove's schemas (runtime/foxglove_frame.py: the image, the label
  mask, image annotations, the overlay, a JSON record with the timings), written by the
  Foxglove SDK;
* `ros2`: the ROS 2 node's messages in CDR (groundrt/ros/messages.py: `/image` bgr8,
  `/caption`, `/detections` vision_msgs/Detection2DArray, `/mask` mono8, `/annotated` bgr8),
  written by mcap-ros2-support with the definitions of groundrt/ros/definitions.py, so ROS 2's
  bag tools (`ros2 bag info / play`, rosbags) read it.

Both need the [robot] extra. As every file sink, the file is written beside its target
(`.NAME.partial-*.mcap`) and renamed over it on close when a frame was recorded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from groundrt.ros.sink import MessageSink
from groundrt.runtime.results import GroundingResult
from groundrt.runtime.sinks import OutputError, Sink, commit, partial_file, writable_file
from groundrt.runtime.sources import Frame

PROFILES = ("foxglove", "ros2")
ROS2_TYPES = {"image": "sensor_msgs/msg/Image", "caption": "std_msgs/msg/String",
              "detections": "vision_msgs/msg/Detection2DArray", "mask": "sensor_msgs/msg/Image",
              "annotated": "sensor_msgs/msg/Image"}


class _Ros2Writer:
    """mcap-ros2-support's writer over the partial file; a schema per message type."""

    def __init__(self, path: Path) -> None:
        from mcap.writer import CompressionType
        from mcap_ros2.writer import Writer

        from groundrt.ros.definitions import msgdef

        self.file = open(path, "wb")  # noqa: SIM115 (closed in close())
        # LZ4 chunks: half zstd's write time for raw camera images, at about twice the size
        # (measured on the sample video: 4.9 against 10.5 ms a frame, 536 against 289 KB)
        self.writer = Writer(self.file, compression=CompressionType.LZ4)
        schemas = {t: self.writer.register_msgdef(t, msgdef(t)) for t in set(ROS2_TYPES.values())}
        self.schemas = {topic: schemas[t] for topic, t in ROS2_TYPES.items()}

    def write(self, messages: dict[str, dict]) -> None:
        from groundrt.ros.messages import stamp_ns

        time_ns = stamp_ns(messages["detections"]["header"])
        for topic, schema in self.schemas.items():
            self.writer.write_message(f"/{topic}", schema, messages[topic], log_time=time_ns,
                                      publish_time=time_ns)

    def close(self) -> None:
        try:
            self.writer.finish()
        finally:
            self.file.close()


class McapSink(Sink):
    """Records every frame into `path` (profile: "foxglove" or "ros2")."""

    needs_overlay = True

    def __init__(self, path: str | Path, profile: str = "foxglove") -> None:
        if profile not in PROFILES:
            raise OutputError(f"unknown MCAP profile {profile!r}: use one of "
                              f"{', '.join(PROFILES)}")
        self.path = writable_file(path)
        self.profile = profile
        self.start_ns = time.time_ns()
        self.frames = 0
        fd, self.partial = partial_file(self.path, ".mcap")
        os.close(fd)  # the writers open it themselves
        try:
            if profile == "ros2":
                self.ros2 = _Ros2Writer(self.partial)
                self.messages = MessageSink(self.ros2.write, inputs=True, start_ns=self.start_ns)
            else:
                import foxglove

                from groundrt.runtime.foxglove_frame import FoxgloveChannels

                self.context = foxglove.Context()
                self.writer = foxglove.open_mcap(self.partial, allow_overwrite=True,
                                                 context=self.context)
                self.channels = FoxgloveChannels(self.context)
        except BaseException:
            self.partial.unlink(missing_ok=True)
            raise

    def render(self, frame: Frame, result: GroundingResult, annotated: np.ndarray | None) -> Any:
        if self.profile == "ros2":
            return self.messages.render(frame, result, annotated)
        time_ns = self.start_ns + round(frame.timestamp * 1e9)
        return time_ns, self.channels.messages(frame, result, annotated, time_ns)

    def write(self, rendered: Any) -> None:
        try:
            if self.profile == "ros2":
                self.messages.write(rendered)
            else:
                self.channels.log(rendered[1], rendered[0])
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.frames += 1

    def close(self) -> None:
        if self.partial is None:
            return
        partial, self.partial = self.partial, None
        try:
            if self.profile == "ros2":
                self.ros2.close()
            else:
                self.writer.close()
        finally:
            commit(partial, self.path, self.frames > 0)
