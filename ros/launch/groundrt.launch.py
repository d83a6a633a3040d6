"""Launches the groundrt node: `ros2 launch groundrt_ros groundrt.launch.py
caption:="A red star on the grass." image:=/camera/image_raw` (any argument below with
NAME:=VALUE)."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

ARGUMENTS = {
    "image": ("/image", "the sensor_msgs/Image topic to ground"),
    "caption": ("", "the caption (changeable later: ros2 param set / the caption topic)"),
    "model": ("", "model package folder (empty: the shipped default)"),
    "backend": ("auto", "auto, onnxruntime, tensorrt or torch"),
    "device": ("cpu", "cpu, cuda or cuda:N"),
    "input_qos": ("SENSOR_DATA", "QoS of the image subscription"),
    "output_qos": ("DEFAULT", "QoS of the publishers"),
}


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in ARGUMENTS.items()]
    # as strings, not YAML: a caption such as "note: a red star" stays one string
    parameters = {name: ParameterValue(LaunchConfiguration(name), value_type=str)
                  for name in ARGUMENTS if name != "image"}
    node = Node(package="groundrt_ros", executable="groundrt_node", name="groundrt",
                output="screen", parameters=[parameters],
                remappings=[("image", LaunchConfiguration("image"))])
    return LaunchDescription([*arguments, node])
