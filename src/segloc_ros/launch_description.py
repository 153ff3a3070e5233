"""What ``launch/localize.launch.py`` starts, as plain Python (no ``launch`` import), so that it can be tested anywhere.

The launch file declares :func:`launch_arguments`, sets :func:`environment`, and turns the
resolved argument values into ``launch_ros`` Node actions with :func:`node_launches`; it holds
no logic of its own.

Arguments (``ros2 launch segloc_ros localize.launch.py --show-args``):

- ``map``: the map package folder; set in every node (empty keeps the params file's);
- ``params_file``: node parameters (default: the installed ``config/segloc_ros.yaml``);
- ``image``, ``camera_info``: the camera topics, e.g. ``/camera/color/image_raw`` (the nodes
  subscribe ``image`` and ``camera_info``; ``image/compressed`` follows ``image``); an empty
  ``camera_info`` (the default) is the ``camera_info`` beside the image topic, as camera drivers
  and image_transport name it (``/camera/color/image_raw`` -> ``/camera/color/camera_info``);
- ``use_sim_time``: use ``/clock`` (rosbag replay with ``--clock``);
- ``backend``: inference backend, overrides the params file;
- ``pipeline``: ``split`` runs SegLoc's three nodes, ``single`` runs ``localizer_node`` (the
  whole pipeline of the map's method, any registered method, in one process), ``auto`` (the
  default) ``split`` for a SegLoc map (or no map argument) and ``single`` for any other;
- ``composition``: with ``split``, ``true`` runs the three nodes in one
  ``localization_container`` process, ``false`` (default) as three processes;
- ``map_store``: a fleet map store (folder or fsspec URL); when set, ``map_manager`` runs too
  and keeps the launched localizer nodes on the store's version (``localizer_nodes`` set to
  them); empty (default): no manager.

Fast DDS gets the large shared-memory profile ``config/fastdds_shm.xml``
(``FASTRTPS_DEFAULT_PROFILES_FILE``), without which most camera images between processes are lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloc_ros.nodes import COMPOSED_NODES, CONTAINER_EXECUTABLE, node_info
from segloc_ros.nodes.params import AVAILABLE_BACKENDS

__all__ = [
    "CONTAINER_EXECUTABLE",
    "MAP_MANAGER",
    "NODE_EXECUTABLES",
    "PACKAGE",
    "SINGLE",
    "LaunchArgument",
    "NodeLaunch",
    "camera_info_topic",
    "environment",
    "launch_arguments",
    "map_method",
    "node_launches",
    "parameter_overrides",
    "pipeline_kind",
    "remappings",
]

PACKAGE = "segloc_ros"
#: Node name -> executable (console script installed into lib/segloc_ros) of the nodes started
#: one process each with ``composition:=false`` (those localization_container runs otherwise).
NODE_EXECUTABLES: dict[str, str] = {node.name: node.executable for node in COMPOSED_NODES}
#: The node of ``pipeline:=single``: any method's whole pipeline in one process.
SINGLE = node_info("localizer_node")
#: The node that keeps the localizers on a fleet map store's version (``map_store`` argument).
MAP_MANAGER = node_info("map_manager")
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
        LaunchArgument(
            "camera_info", "", "camera info topic; empty: camera_info beside the image topic (<namespace of image>/camera_info)"
        ),
        LaunchArgument("use_sim_time", "false", "use the /clock topic (rosbag replay with --clock)"),
        LaunchArgument("backend", "torch", f"inference backend: {', '.join(AVAILABLE_BACKENDS)}"),
        LaunchArgument(
            "pipeline",
            "auto",
            "split: SegLoc's three nodes; single: localizer_node (any method, one process); auto: split for a SegLoc map, else single",
        ),
        LaunchArgument(
            "composition", "false", "with split, true: the three nodes in one localization_container process; false: three processes"
        ),
        LaunchArgument(
            "map_store", "", "fleet map store (folder or fsspec URL): map_manager keeps the localizer nodes on its version; empty: none"
        ),
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


def camera_info_topic(image: str, camera_info: str = "") -> str:
    """``camera_info``, or when empty the camera_info topic beside ``image`` (``/cam/image_raw`` -> ``/cam/camera_info``)."""
    if camera_info:
        return camera_info
    namespace = image.rstrip("/").rpartition("/")[0]
    return f"{namespace}/camera_info" if namespace or image.startswith("/") else "camera_info"


def remappings(image: str, camera_info: str) -> list[tuple[str, str]]:
    """The camera topic remappings (raw and compressed image, camera info; see :func:`camera_info_topic`)."""
    image = image.rstrip("/")
    return [("image", image), ("image/compressed", f"{image}/compressed"), ("camera_info", camera_info_topic(image, camera_info))]


def map_method(map_path: str) -> str | None:
    """The method a map package was built for (its manifest's ``method``), None without a readable manifest."""
    import json

    try:
        return json.loads((Path(map_path) / "manifest.json").read_text()).get("method")
    except (OSError, ValueError, AttributeError):
        return None


def pipeline_kind(pipeline: str, map_path: str) -> str:
    """``split`` or ``single`` for the ``pipeline`` argument (``auto``: from the map's method)."""
    if pipeline not in ("auto", "split", "single"):
        raise ValueError(f"launch argument pipeline must be auto, split or single, got {pipeline!r}")
    if pipeline != "auto":
        return pipeline
    method = map_method(map_path) if map_path else None
    return "split" if method in (None, "segloc") else "single"


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
    if pipeline_kind(values.get("pipeline", "auto"), values["map"]) == "single":
        launches, localizers = [NodeLaunch(SINGLE.executable, SINGLE.name, parameters, topics)], [SINGLE.name]
    elif _flag("composition", values["composition"]):
        launches, localizers = [NodeLaunch(CONTAINER_EXECUTABLE, None, parameters, topics)], list(NODE_EXECUTABLES)
    else:
        launches = [NodeLaunch(executable, name, parameters, topics) for name, executable in NODE_EXECUTABLES.items()]
        localizers = list(NODE_EXECUTABLES)
    if values.get("map_store"):
        manager_overrides = {
            "store": values["map_store"],
            "localizer_nodes": ",".join(localizers),
            "use_sim_time": _flag("use_sim_time", values["use_sim_time"]),
        }
        launches.append(NodeLaunch(MAP_MANAGER.executable, MAP_MANAGER.name, [values["params_file"], manager_overrides]))
    return launches
