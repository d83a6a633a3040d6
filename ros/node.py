"""The groundrt ROS 2 node (`groundrt ros`, or `ros2 run groundrt_ros groundrt_node` /
`ros2 launch groundrt_ros groundrt.launch.py` from a colcon workspace: ros/package.xml).

Subscribes `image` (sensor_msgs/Image: bgr8, rgb8, bgra8, rgba8, mono8) and `caption`
(std_msgs/String); publishes `detections` (vision_msgs/Detection2DArray), `mask` (mono8) and
`annotated` (bgr8), each with the image's header (groundrt/ros/messages.py says what they
hold). Parameters (PARAMETERS): the Grounder's (read-only), `caption` (changeable at run time:
`ros2 param set /groundrt caption "..."`; the `caption` topic changes it too, the latest wins),
and QoS as Isaac ROS names it: `input_qos` / `output_qos` (SENSOR_DATA, DEFAULT,
SYSTEM_DEFAULT) with `input_qos_depth` / `output_qos_depth` (0: the profile's own).

The subscription callbacks only hand messages on: grounding runs in groundrt's stream threads
(runtime/stream.py) under the live policy: the newest image waits, an older one still waiting
is dropped and counted. Before the first caption arrives, images are counted and dropped.

rclpy and the message packages come from a ROS 2 distro (not from pip); they are imported when
the node starts, and their absence is a RosUnavailableError saying what to install.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import SimpleNamespace
from typing import Any

from groundrt.errors import GroundrtError
from groundrt.runtime.images import DEFAULT_MAX_PIXELS

NODE_NAME = "groundrt"
QOS_PROFILES = ("SENSOR_DATA", "DEFAULT", "SYSTEM_DEFAULT")
# name -> (default, description); all but `caption` are read-only once the node runs
PARAMETERS = {
    "model": ("", "model package folder (empty: the shipped default)"),
    "backend": ("auto", "auto, onnxruntime, tensorrt or torch"),
    "precision": ("", "the image graph: fp32, int8-cpu, int8-trt (empty: the package's)"),
    "device": ("cpu", "cpu, cuda or cuda:N"),
    "ort_provider": ("", "on a GPU device: cuda or tensorrt (ONNX Runtime's providers)"),
    "threads": (1, "ONNX Runtime threads"),
    "kernel_threads": (1, "threads of the CPU letterbox and mask decoding"),
    "max_pixels": (DEFAULT_MAX_PIXELS, "largest image accepted, width x height"),
    "caption": ("", "the caption whose noun phrases are grounded (changeable at run time)"),
    "input_qos": ("SENSOR_DATA", "QoS of the image subscription: " + ", ".join(QOS_PROFILES)),
    "input_qos_depth": (0, "its history depth (0: the profile's)"),
    "output_qos": ("DEFAULT", "QoS of the publishers: " + ", ".join(QOS_PROFILES)),
    "output_qos_depth": (0, "their history depth (0: the profile's)"),
    "stats_period": (10.0, "seconds between frame statistics lines (0: none)"),
}
INSTALL_HINT = ("pip cannot install ROS 2: source a ROS 2 distro (`source "
                "/opt/ros/<distro>/setup.bash`: humble, jazzy, ...), install its vision_msgs "
                "(`sudo apt install ros-$ROS_DISTRO-vision-msgs`) and run groundrt from a Python "
                "that sees both (a venv made with --system-site-packages); README, \"On a "
                "robot\"")


class RosUnavailableError(GroundrtError):
    """rclpy or a message package is missing: ROS 2 is not sourced."""


def import_ros() -> SimpleNamespace:
    """The ROS 2 modules the node uses; RosUnavailableError naming the missing one."""
    try:
        import rclpy
        import rclpy.executors
        import rclpy.qos
        from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
        from rosidl_runtime_py import set_message_fields
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from vision_msgs.msg import Detection2DArray
    except ModuleNotFoundError as exc:
        raise RosUnavailableError(f"groundrt ros needs {exc.name}, which is not importable: "
                                  f"{INSTALL_HINT}") from exc
    return SimpleNamespace(rclpy=rclpy, qos=rclpy.qos, executors=rclpy.executors,
                           ParameterDescriptor=ParameterDescriptor,
                           SetParametersResult=SetParametersResult,
                           set_message_fields=set_message_fields, Image=Image, String=String,
                           Detection2DArray=Detection2DArray)


def qos_profile(qos: Any, name: str, depth: int) -> Any:
    """An rclpy QoSProfile by Isaac ROS's names (isaac_ros_common's parse_qos_string), with
    `depth` (KEEP_LAST) when positive."""
    presets = {"SENSOR_DATA": qos.qos_profile_sensor_data,
               "SYSTEM_DEFAULT": qos.qos_profile_system_default,
               "DEFAULT": qos.QoSProfile(depth=10)}
    base = presets.get(name.upper())
    if base is None:
        raise ValueError(f"unknown QoS profile {name!r}: use one of {', '.join(QOS_PROFILES)}")
    if depth <= 0:
        return base
    return qos.QoSProfile(history=qos.QoSHistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=base.reliability, durability=base.durability)


def header_of(msg_header: Any) -> dict:
    """A std_msgs/Header message as messages.py's dict."""
    from groundrt.ros.messages import header

    return header(msg_header.stamp.sec, msg_header.stamp.nanosec, msg_header.frame_id)


class GroundrtNode:
    """The node's wiring around an rclpy node (`self.node`): parameters, topics, the stream."""

    def __init__(self, ros: SimpleNamespace, node: Any) -> None:
        from groundrt.ros.sink import MessageSink
        from groundrt.ros.source import TopicSource
        from groundrt.runtime.grounder import Grounder

        self.ros, self.node = ros, node
        self.log = node.get_logger()
        for name, (default, description) in PARAMETERS.items():
            node.declare_parameter(name, default, ros.ParameterDescriptor(
                description=description, read_only=name != "caption"))
        p = {name: node.get_parameter(name).value for name in PARAMETERS}
        self.grounder = Grounder(p["model"] or None, backend=p["backend"],
                                 precision=p["precision"] or None, threads=p["threads"],
                                 kernel_threads=p["kernel_threads"], device=p["device"],
                                 ort_provider=p["ort_provider"] or None,
                                 max_pixels=p["max_pixels"])
        inputs = qos_profile(ros.qos, p["input_qos"], p["input_qos_depth"])
        outputs = qos_profile(ros.qos, p["output_qos"], p["output_qos_depth"])
        self.publishers = {
            "detections": node.create_publisher(ros.Detection2DArray, "detections", outputs),
            "mask": node.create_publisher(ros.Image, "mask", outputs),
            "annotated": node.create_publisher(ros.Image, "annotated", outputs)}
        self.source = TopicSource("image")
        self.sink = MessageSink(self._publish)
        self.captions = None  # a CaptionSource once the first caption is set
        self.stream = None
        self.thread: threading.Thread | None = None
        self.waiting = 0  # images that came before any caption
        self._lock = threading.Lock()
        node.add_on_set_parameters_callback(self._on_parameters)
        if p["caption"]:
            self._set_caption(p["caption"], raise_errors=True)
        images = node.create_subscription(ros.Image, "image", self._on_image, inputs)
        # reliable: a caption published once must arrive (a best-effort caption publisher
        # does not match; use the parameter then)
        node.create_subscription(ros.String, "caption", self._on_caption, 10)
        if p["stats_period"] > 0:
            node.create_timer(p["stats_period"], self._log_stats)
        self.log.info(f"grounding {self.grounder.backend.name} {self.grounder.backend.precision}"
                      f"; waiting for images on {images.topic_name}")

    # ------------------------------------------------------------------ callbacks (executor)

    def _on_image(self, msg: Any) -> None:
        if self.stream is None:
            self.waiting += 1
            self.log.warning("no caption yet: set the caption parameter or publish one on "
                             "the caption topic; dropping images", throttle_duration_sec=5.0)
            return
        self.source.push(msg.height, msg.width, msg.encoding, msg.step, msg.data,
                         header_of(msg.header))

    def _on_caption(self, msg: Any) -> None:
        self._set_caption(msg.data)

    def _on_parameters(self, parameters: list) -> Any:
        for parameter in parameters:
            if parameter.name == "caption":
                reason = self._set_caption(parameter.value)
                if reason:
                    return self.ros.SetParametersResult(successful=False, reason=reason)
        return self.ros.SetParametersResult(successful=True)

    def _set_caption(self, text: str, raise_errors: bool = False) -> str | None:
        """Make `text` the caption from the next image on; the reason when it is refused."""
        from groundrt.runtime.captions import CaptionSource, Prompt

        try:
            prompt = Prompt.parse(text)
            self.grounder.encode_text(prompt.caption, prompt.phrases)
        except (GroundrtError, ValueError) as exc:
            if raise_errors:
                raise
            self.log.error(f"caption {text!r} refused, keeping the previous one: {exc}")
            return str(exc)
        with self._lock:
            if self.captions is None:
                self.captions = CaptionSource(
                    prompt, lambda p: self.grounder.encode_text(p.caption, p.phrases))
                self._start_stream()
            else:
                self.captions.set(prompt)
        self.log.info(f"caption: {prompt}")
        return None

    def _log_stats(self) -> None:
        if self.stream is not None:
            source = self.source
            live = source.dropped + self.stream.live_drops
            self.log.info(f"images: received {source.read + source.dropped + source.corrupt}, "
                          f"processed {self.stream.report.processed}, dropped {live} (live), "
                          f"{source.corrupt} (encoding), {self.waiting} before a caption")

    # -------------------------------------------------------------------- stream (threads)

    def _start_stream(self) -> None:
        from groundrt.runtime.stream import Stream

        self.stream = Stream(self.grounder, self.source, self.captions, [self.sink], live=True)
        self.thread = threading.Thread(target=self._run_stream, name="groundrt-stream",
                                       daemon=True)
        self.thread.start()

    def _run_stream(self) -> None:
        report = self.stream.run()
        if report.error:
            self.log.error(f"grounding stopped: {report.error}")
        self.log.info(report.summary())

    def _publish(self, messages: dict[str, dict]) -> None:
        """Publish a frame's messages (the stream's write thread; rclpy publishers are
        thread-safe)."""
        for topic, values in messages.items():
            publisher = self.publishers[topic]
            msg = publisher.msg_type()
            self.ros.set_message_fields(msg, values)
            publisher.publish(msg)

    def close(self) -> None:
        """Stop taking images, finish the ones in flight, log the summary."""
        self.source.close()
        if self.thread is not None:
            self.thread.join()


def main(argv: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or a ROS 2 shutdown; `argv`: ROS 2 arguments (default: the
    command line's, as `ros2 run` and `ros2 launch` pass them)."""
    ros = import_ros()
    logging.basicConfig(level=logging.INFO, format="[groundrt] %(levelname)s: %(message)s")
    ros.rclpy.init(args=["groundrt", *(sys.argv[1:] if argv is None else argv)])
    node = ros.rclpy.create_node(NODE_NAME)
    grounding = None
    try:
        grounding = GroundrtNode(ros, node)
        ros.rclpy.spin(node)
    except (KeyboardInterrupt, ros.executors.ExternalShutdownException):
        pass
    finally:
        if grounding is not None:
            grounding.close()
        node.destroy_node()
        if ros.rclpy.ok():
            ros.rclpy.shutdown()
    return 0
