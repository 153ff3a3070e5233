"""segloc_ros for colcon (an ament_python package) and pip alike; the metadata is in setup.cfg.

Here is only what colcon cannot take from setup.cfg:
- ``data_files``: the ament index marker, package.xml, launch/ and config/ in share/segloc_ros;
- ``python_requires``: setup.cfg would make it a ``SpecifierSet``, which colcon cannot read back
  (it runs this file and reads every attribute of the distribution as a Python literal);
- ``long_description``: ``colcon build --symlink-install`` runs this file through a symlink in a
  build folder that holds no README.md, so it is read next to the real file.
"""

from glob import glob
from pathlib import Path

from setuptools import setup

PACKAGE = "segloc_ros"

setup(
    python_requires=">=3.10",
    long_description=(Path(__file__).resolve().parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
)
