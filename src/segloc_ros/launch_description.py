"""What ``launch/localize.launch.py`` starts, as plain Python (no ``launch`` import), so that it can be tested anywhere.

The launch file declares :func:`launch_arguments`, sets :func:`environment`, and turns the
resolved argument values into ``launch_ros`` Node actions with :func:`node_launches`; it holds
no logic of its own.

Arguments (``ros2 launch segloc_ros localize.launch.py --show-args``):

- ``map``: the SegLoc map package folder; set in every node (empty keeps the params file's);
- ``params_file``: node parameters (default: the installed ``config/segloc_ros.yaml``);
- ``image``, ``camera_info``: the camera topics, e.g. ``/camera/color/image_raw`` (the nodes
  subscribe ``image`` and ``camera_info``; ``image/compressed`` follows ``image``);
- ``use_sim_time``: use ``/clock`` (rosbag replay with ``--clock``);
- ``backend``: inference backend, overrides the params file;
- ``composition``: ``true`` runs the three nodes in one ``localization_container`` process,
  ``false`` (default) as three processes.

Fast DDS gets the large shared-memory profile ``config/fastdds_shm.xml``
(``FASTRTPS_DEFAULT_PROFILES_FILE``), without which most camera images between processes are lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloc_ros.nodes import COMPOSED_NODES, CONTAINER_EXECUTABLE
from segloc_ros.nodes.params import AVAILABLE_BACKENDS

__all__ = [
    "CONTAINER_EXECUTABLE",
    "NODE_EXECUTABLES",
    "PACKAGE",
    "LaunchArgument",
    "NodeLaunch",
    "environment",
    "launch_arguments",
    "node_launches",
    "parameter_overrides",
    "remappings",
]

PACKAGE = "segloc_ros"
#: Node name -> executable (console script installed into lib/segloc_ros) of the nodes started
#: one process each with ``composition:=false`` (those localization_container runs otherwise).
NODE_EXECUTABLES: dict[str, str] = {node.name: node.executable for node in COMPOSED_NODES}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class LaunchArgument:
    """A ``DeclareLaunchArgument``: name, default value, description."""

    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeLaunch:
    """One process to start: a ``launch_ros.actions.Node``'s arguments.

    Attributes:
        executable: the console script in ``lib/segloc_ros``.
        name: the node name (None for the container, whose nodes keep their own names).
        parameters: the params file, then a dict of overrides (later entries win).
        remappings: ``(from, to)`` topic remappings.
    """

    executable: str
    name: str | None
    parameters: list[Any] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)


def launch_arguments(share_dir: str | Path) -> list[LaunchArgument]:
    """The launch arguments, with defaults inside the package's share folder ``share_dir``."""
    share = Path(share_dir)
    return [
        LaunchArgument("map", "", "SegLoc map package folder (sets map_path in every node; empty: the params file's)"),
        LaunchArgument("params_file", str(share / "config" / "segloc_ros.yaml"), "ROS 2 parameters file of the nodes"),
        LaunchArgument("image", "image", "camera image topic (image/compressed follows it: <image>/compressed)"),
        LaunchArgument("camera_info", "camera_info", "camera info topic"),
        LaunchArgument("use_sim_time", "false", "use the /clock topic (rosbag replay with --clock)"),
        LaunchArgument("backend", "torch", f"inference backend: {', '.join(AVAILABLE_BACKENDS)}"),
        LaunchArgument("composition", "false", "true: the three nodes in one localization_container process; false: three processes"),
    ]


def environment(share_dir: str | Path) -> dict[str, str]:
    """Environment variables the launch file sets: the Fast DDS large shared-memory profile."""
    return {"FASTRTPS_DEFAULT_PROFILES_FILE": str(Path(share_dir) / "config" / "fastdds_shm.xml")}


def _flag(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"launch argument {name} must be true or false, got {value!r}")


def remappings(image: str, camera_info: str) -> list[tuple[str, str]]:
    """The camera topic remappings (raw and compressed image, camera info)."""
    image = image.rstrip("/")
    return [("image", image), ("image/compressed", f"{image}/compressed"), ("camera_info", camera_info)]


def parameter_overrides(map_path: str, use_sim_time: str, backend: str) -> dict[str, Any]:
    """Parameters the launch arguments set in every node, over the params file."""
    if backend not in AVAILABLE_BACKENDS:
        raise ValueError(f"backend {backend!r} is not available; available backends: {', '.join(AVAILABLE_BACKENDS)}")
    overrides: dict[str, Any] = {"use_sim_time": _flag("use_sim_time", use_sim_time), "backend": backend}
    if map_path:
        overrides["map_path"] = map_path
    return overrides


def node_launches(values: dict[str, str]) -> list[NodeLaunch]:
    """The processes for resolved launch argument values (every argument of :func:`launch_arguments`).

    Raises:
        ValueError: a missing argument, a flag that is not true/false, or an unknown backend.
    """
    missing = [
        argument
        for argument in ("map", "params_file", "image", "camera_info", "use_sim_time", "backend", "composition")
        if argument not in values
    ]
    if missing:
        raise ValueError(f"missing launch argument value(s): {', '.join(missing)}")
    parameters = [values["params_file"], parameter_overrides(values["map"], values["use_sim_time"], values["backend"])]
    topics = remappings(values["image"], values["camera_info"])
    if _flag("composition", values["composition"]):
        return [NodeLaunch(CONTAINER_EXECUTABLE, None, parameters, topics)]
    return [NodeLaunch(executable, name, parameters, topics) for name, executable in NODE_EXECUTABLES.items()]
