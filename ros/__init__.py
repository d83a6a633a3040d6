"""ROS 2: the groundrt node (`groundrt ros`, node.py; needs a ROS 2 distro) and the plain code
around it that runs anywhere: ROS 2 messages of a result (messages.py), their definitions
(definitions.py) and the frame source a subscription feeds (source.py)."""
