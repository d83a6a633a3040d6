"""The ROS 2 node's wiring (needs rclpy and vision_msgs from a ROS 2 distro: skipped where
they are absent, as on the development machine) and, where they are absent, what
`groundrt ros` says instead. The messages it publishes are tested without ROS in
test_ros_messages.py."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from groundrt.runtime.cli import main
from groundrt.synth.video import SAMPLE_CAPTION, render_frames

HAVE_ROS = all(importlib.util.find_spec(m) is not None
               for m in ("rclpy", "vision_msgs", "sensor_msgs", "rosidl_runtime_py"))
needs_ros = pytest.mark.skipif(not HAVE_ROS, reason="rclpy and vision_msgs come from a ROS 2 "
                               "distro (not pip): source one to run the node's tests")


@pytest.mark.skipif(HAVE_ROS, reason="ROS 2 is sourced here: the node runs")
def test_groundrt_ros_without_ros_says_what_to_install(capsys):
    assert main(["ros", "--ros-args", "-p", f"caption:={SAMPLE_CAPTION}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("groundrt: error: groundrt ros needs rclpy, which is not importable")
    assert "source a ROS 2 distro" in err and "ros-$ROS_DISTRO-vision-msgs" in err


def test_the_node_module_imports_without_ros():
    from groundrt.ros import node

    assert set(node.PARAMETERS) >= {"model", "backend", "device", "precision", "caption",
                                    "input_qos", "input_qos_depth", "output_qos",
                                    "output_qos_depth"}
    assert node.QOS_PROFILES == ("SENSOR_DATA", "DEFAULT", "SYSTEM_DEFAULT")


@pytest.fixture
def ros():
    from groundrt.ros.node import import_ros

    modules = import_ros()
    modules.rclpy.init()
    yield modules
    if modules.rclpy.ok():
        modules.rclpy.shutdown()


@needs_ros
def test_qos_parameters_name_isaac_ros_profiles(ros):
    from groundrt.ros.node import qos_profile

    sensor = qos_profile(ros.qos, "sensor_data", 0)
    assert sensor.reliability == ros.qos.QoSReliabilityPolicy.BEST_EFFORT
    deep = qos_profile(ros.qos, "SENSOR_DATA", 3)
    assert deep.depth == 3 and deep.reliability == sensor.reliability
    assert qos_profile(ros.qos, "DEFAULT", 0).depth == 10
    with pytest.raises(ValueError, match="unknown QoS profile 'FAST'"):
        qos_profile(ros.qos, "FAST", 0)


def image_msg(ros, image: np.ndarray, encoding: str = "bgr8", stamp: int = 7):
    msg = ros.Image()
    msg.header.stamp.sec, msg.header.frame_id = stamp, "camera"
    msg.height, msg.width = image.shape[:2]
    msg.encoding, msg.step = encoding, image.shape[1] * 3
    msg.data = image.tobytes()
    return msg


def spin_until(executor, done, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    assert done(), "no answer from the node"


@needs_ros
def test_the_node_grounds_published_images_and_takes_new_captions(ros):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from groundrt.ros.node import GroundrtNode
    from groundrt.runtime.grounder import Grounder

    node = ros.rclpy.create_node(
        "groundrt", parameter_overrides=[Parameter("caption", value=SAMPLE_CAPTION)])
    grounding = GroundrtNode(ros, node)
    tester = ros.rclpy.create_node("tester")
    received: dict[str, list] = {"detections": [], "mask": [], "annotated": []}
    for topic, kind in (("detections", ros.Detection2DArray), ("mask", ros.Image),
                        ("annotated", ros.Image)):
        tester.create_subscription(kind, topic, received[topic].append, 10)
    images = tester.create_publisher(ros.Image, "image", 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(tester)
    frame = next(iter(render_frames(seconds=0.1, fps=10.0, size=(320, 240))))
    try:
        spin_until(executor, lambda: images.get_subscription_count() > 0)
        images.publish(image_msg(ros, frame))
        spin_until(executor, lambda: all(received.values()))
        want = Grounder().ground(frame, SAMPLE_CAPTION)
        detections = received["detections"][0]
        assert (detections.header.stamp.sec, detections.header.frame_id) == (7, "camera")
        assert [d.results[0].hypothesis.class_id for d in detections.detections] == [
            p.text for p in want.phrases if p.area]
        mask = received["mask"][0]
        assert mask.encoding == "mono8" and (mask.height, mask.width) == (240, 320)
        assert received["annotated"][0].encoding == "bgr8"

        # the caption parameter changes at run time; a caption without a noun phrase is refused
        assert node.set_parameters([Parameter("caption", value="the sky")])[0].successful
        refused = node.set_parameters([Parameter("caption", value="of and")])[0]
        assert not refused.successful and refused.reason
        assert not node.set_parameters([Parameter("model", value="elsewhere")])[0].successful
        received["detections"].clear()
        images.publish(image_msg(ros, frame, stamp=8))
        spin_until(executor, lambda: received["detections"])
        assert [d.results[0].hypothesis.class_id
                for d in received["detections"][0].detections] == ["the sky"]

        # an unsupported encoding is counted, not grounded
        bad = image_msg(ros, frame, stamp=9)
        bad.encoding = "32FC1"
        images.publish(bad)
        spin_until(executor, lambda: grounding.source.corrupt == 1)
    finally:
        grounding.close()
        executor.shutdown()
        node.destroy_node()
        tester.destroy_node()


def test_the_colcon_package_files_agree(tmp_path):
    """ros/ is an ament_python package: its marker, package.xml, setup.py's executable and the
    launch file name the same package and node."""
    import subprocess
    import sys
    import xml.etree.ElementTree as ET
    from pathlib import Path

    ros = Path(__file__).resolve().parents[1] / "ros"
    package = ET.parse(ros / "package.xml").getroot()
    name = package.findtext("name")
    assert name == "groundrt_ros" and (ros / "resource" / name).is_file()
    assert package.find("export/build_type").text == "ament_python"
    assert {"rclpy", "sensor_msgs", "std_msgs", "vision_msgs", "rosidl_runtime_py",
            "rcl_interfaces", "launch_ros"} <= {e.text for e in package.iter("exec_depend")}
    assert f"script_dir=$base/lib/{name}" in (ros / "setup.cfg").read_text()
    pytest.importorskip("setuptools", reason="setuptools runs setup.py")
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "-e", str(tmp_path)], cwd=ros,
                   check=True, capture_output=True)
    entry_points = (tmp_path / f"{name}.egg-info" / "entry_points.txt").read_text()
    assert "groundrt_node = groundrt.ros.node:main" in entry_points
    sources = (tmp_path / f"{name}.egg-info" / "SOURCES.txt").read_text()
    assert "launch/groundrt.launch.py" in sources and f"resource/{name}" in sources
    launch = (ros / "launch" / "groundrt.launch.py").read_text()
    compile(launch, "groundrt.launch.py", "exec")  # `launch` itself comes with ROS 2
    assert f'package="{name}", executable="groundrt_node"' in launch
