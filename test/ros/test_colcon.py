"""colcon builds the package as README.md's "On a robot" does: ``colcon build``, plain and with ``--symlink-install``.

Each build (conftest's ``colcon_install``: this checkout as ``src/segloc_ros`` of a new
workspace) must install what ``ros2 run`` and ``ros2 launch`` look for, and
``source install/setup.bash`` must make the workspace's packages the ones that run. The
launch file runs from the ``--symlink-install`` build in test_launch.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segloc_ros.nodes import EXECUTABLES

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pytest runs with --import-mode=importlib: siblings are not importable
import node_harness as harness  # noqa: E402
from node_harness import PACKAGE, REPO_ROOT  # noqa: E402

SHARED_FILES = ("package.xml", "launch/localize.launch.py", "config/segloc_ros.yaml", "config/fastdds_shm.xml")
# Run in the environment of `source install/setup.bash`: where the packages, the distribution and the shipped networks come from.
WHERE_FROM = """
import importlib.metadata, importlib.resources, json, segloc, segloc_ros, segloc_train
distribution = importlib.metadata.distribution("segloc_ros")
weights = importlib.resources.files("segloc") / "models" / "weights"
print(json.dumps({
    "modules": [module.__file__ for module in (segloc, segloc_ros, segloc_train)],
    "distribution": str(distribution.locate_file("")),
    "console_scripts": sorted(entry.name for entry in distribution.entry_points if entry.group == "console_scripts"),
    "weights": sorted(f"{folder.name}/{file.name}" for folder in weights.iterdir() if folder.is_dir() for file in folder.iterdir()),
}))
"""


@pytest.mark.parametrize("symlink_install", [False, True], ids=["plain", "symlink_install"])
def test_colcon_build_installs_the_package(colcon_install, symlink_install):
    install = colcon_install(symlink_install)
    workspace, prefix = install.parent, install / PACKAGE
    # colcon crawls no further than a package's root: test/ros/tf2_msgs and any venv in the checkout are not built.
    assert sorted(path.name for path in install.iterdir() if path.is_dir()) == [PACKAGE]

    # ros2 run: an executable per entry of the node table in lib/segloc_ros.
    lib = prefix / "lib" / PACKAGE
    assert not [name for name in EXECUTABLES if not os.access(lib / name, os.X_OK)], sorted(path.name for path in lib.iterdir())
    # ros2 launch: the ament index marker, then package.xml, the launch file and the configs in share/segloc_ros;
    # with --symlink-install, links to the checkout (edits take effect without a new build).
    assert (install / PACKAGE / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    for name in SHARED_FILES:
        installed = prefix / "share" / PACKAGE / name
        assert installed.read_bytes() == (REPO_ROOT / name).read_bytes(), name
        assert (installed.resolve() == REPO_ROOT / name) == symlink_install, f"{name} -> {installed.resolve()}"

    # source install/setup.bash: the packages, their metadata and the shipped networks come from the workspace
    # (not from the venv's editable install), and the console scripts run.
    env = {**os.environ, **harness.install_space_environment(install, dict(os.environ))}
    found = json.loads(subprocess.run([sys.executable, "-c", WHERE_FROM], env=env, capture_output=True, text=True, check=True).stdout)
    for module in found["modules"]:
        assert Path(module).is_relative_to(workspace), module
        assert Path(module).resolve().is_relative_to(REPO_ROOT / "src") == symlink_install, module
    assert Path(found["distribution"]).is_relative_to(workspace), found["distribution"]
    assert set(EXECUTABLES) <= set(found["console_scripts"]), found["console_scripts"]
    shipped = sorted(f"{path.parent.name}/{path.name}" for path in (REPO_ROOT / "src" / "segloc" / "models" / "weights").glob("*/*.*"))
    assert found["weights"] == shipped
    usage = subprocess.run([str(lib / "segloc"), "--help"], env=env, capture_output=True, text=True, check=True).stdout
    assert usage.startswith("usage: segloc")
