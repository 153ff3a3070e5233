"""Installs the ament index marker, package.xml, launch/ and config/ into share/segloc_ros, so that
the repository root builds as an ament_python package with colcon; metadata lives in pyproject.toml."""

from glob import glob

from setuptools import setup

PACKAGE = "segloc_ros"

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
)
