"""The ROS 2 message definitions groundrt writes (the `ros2msg` schemas of an MCAP file): the
standard ones from rosbags' typestore, vision_msgs' (not in it) registered here.

The vision_msgs fields below are those of ros-perception/vision_msgs 4.x (the Humble, Jazzy and
later releases: `BoundingBox2D.center` is a `vision_msgs/Pose2D` of a `Point2D`).
"""

from __future__ import annotations

from functools import cache

IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
DETECTIONS = "vision_msgs/msg/Detection2DArray"

VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\n"
        "vision_msgs/ObjectHypothesisWithPose[] results\nvision_msgs/BoundingBox2D bbox\n"
        "string id\n",
    "vision_msgs/msg/Detection2DArray":
        "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}


@cache
def typestore():
    """rosbags' ROS 2 Humble typestore with vision_msgs registered (ModuleNotFoundError naming
    rosbags when it is not installed: the [robot] extra)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def msgdef(typename: str) -> str:
    """The full definition of `typename` as ROS 2 writes it into bags: the message's fields,
    then each type it uses after a `MSG: pkg/Type` separator line."""
    return typestore().generate_msgdef(typename, ros_version=2)[0]
