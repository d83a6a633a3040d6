"""The ament_python package of the groundrt node, for a colcon workspace (colcon runs this file;
it installs the node's executable, the package marker, package.xml and the launch file; the
node's code is groundrt.ros.node from the pip-installed groundrt). Not part of the groundrt
wheel. With groundrt in a virtual environment, `GROUNDRT_PYTHON=$(which python) colcon build`
makes the executable run that environment's Python (the `build_scripts` option of ROS 2's
"Using Python Packages with ROS 2" guide)."""

import os
from glob import glob

PACKAGE = "groundrt_ros"

if __name__ == "__main__":  # colcon runs it as a script; importing it does nothing
    from setuptools import setup

    setup(
        name=PACKAGE,
        version="0.1.0",
        packages=[],
        data_files=[
            ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
            (f"share/{PACKAGE}", ["package.xml"]),
            (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        ],
        install_requires=["setuptools"],
        zip_safe=True,
        maintainer="groundrt",
        maintainer_email="groundrt@example.com",
        description="The groundrt ROS 2 node (Panoptic Narrative Grounding)",
        license="Apache-2.0",
        entry_points={"console_scripts": ["groundrt_node = groundrt.ros.node:main"]},
        options={"build_scripts": {"executable": os.environ["GROUNDRT_PYTHON"]}}
        if os.environ.get("GROUNDRT_PYTHON") else {},
    )
