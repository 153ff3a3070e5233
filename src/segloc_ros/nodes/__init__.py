"""The segloc_ros nodes: one node for any registered method, and SegLoc split into three.

``localizer_node`` (:mod:`segloc_ros.nodes.localizer_node`) runs the whole pipeline of the method
a map was built for (SegLoc, the SIFT reference, any plug-in) in one process: camera ingest,
the method's localizer, the publishing decision (:mod:`segloc.localize.pipeline`), the same
code the evaluator runs.

SegLoc's split deployment runs the same stages in three processes::

    image, camera_info ─▶ segmentation_node ─┬─ segloc/descriptor ─▶ retrieval_node ─ segloc/retrieval ───┐
                                             ├─ segloc/probabilities, segloc/camera_info ──────────────────┤
                                             └─ segloc/labels                (and segloc/pose_priors)      ▼
    /tf, /tf_static, initialpose (, odom_topic) ─────────────────────────────────────▶ pose_refinement_node
                                                            ─▶ pose, /tf (map -> odom), segloc/localized

- :mod:`segloc_ros.nodes.segmentation_node`: undistorts and shrinks camera images and runs the
  segmentation network embedded in the map;
- :mod:`segloc_ros.nodes.retrieval_node`: the most similar mapping images (and pose priors);
- :mod:`segloc_ros.nodes.pose_refinement_node`: label-based pose refinement from the retrieval
  (or pose priors, or ``initialpose``), then the publishing decision;
- :mod:`segloc_ros.nodes.place_recognition_node`: SFRS retrieval from the map's ``sfrs`` layer
  (images in; ``segloc/pose_priors`` and ``segloc/retrieval`` out), for any method's map, in place
  of retrieval_node or for a start-up without ``initialpose``;
- :mod:`segloc_ros.nodes.map_manager_node` (``map_manager``): follows a fleet map store and
  swaps new versions into the localizer nodes through their ``map_path`` parameter;
- :mod:`segloc_ros.composition`: the three in one process (``localization_container``).

Shared pieces: :mod:`~segloc_ros.nodes.common` (the lifecycle base: parameters, diagnostics,
the worker, map loading and atomic reload, ``run_nodes``), :mod:`~segloc_ros.nodes.localizing`
(the base of the nodes that publish the pose: TF, odometry, initialpose, outputs),
:mod:`~segloc_ros.nodes.camera_input` (image and camera_info subscriptions),
:mod:`~segloc_ros.nodes.segloc_split` (the split nodes' SegLoc localizer),
:mod:`~segloc_ros.nodes.params` (every parameter with its default and description, without ROS)
and :mod:`~segloc_ros.nodes.buffers` (worker queue, stamp matching, TF cache; without ROS).

:data:`NODES` below is the one list of the nodes: name, executable, module, class and
parameters of each. The launch description, localization_container, the replay launcher and the
tests take the nodes from it; ``console_scripts`` of setup.cfg (which cannot import it) must
install one console script per executable, which a test checks on the installed distribution
(and test/ros/test_colcon.py in colcon's lib/segloc_ros). A new node is one :class:`NodeInfo` entry here, plus its console script and its
section in ``config/segloc_ros.yaml``.

Importing this package does not import rclpy; the node modules do.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from segloc_ros.nodes.params import (
    LOCALIZER_NODE,
    LOCALIZER_PARAMETERS,
    MAP_MANAGER_NODE,
    MAP_MANAGER_PARAMETERS,
    PLACE_RECOGNITION_NODE,
    PLACE_RECOGNITION_PARAMETERS,
    POSE_REFINEMENT_NODE,
    POSE_REFINEMENT_PARAMETERS,
    RETRIEVAL_NODE,
    RETRIEVAL_PARAMETERS,
    SEGMENTATION_NODE,
    SEGMENTATION_PARAMETERS,
    ParameterSpec,
)

__all__ = [
    "COMPOSED_NODES",
    "CONTAINER_EXECUTABLE",
    "CONTAINER_MODULE",
    "EXECUTABLES",
    "NODES",
    "NODE_PARAMETERS",
    "NodeInfo",
    "node_info",
    "parameter_defaults",
]


@dataclass(frozen=True)
class NodeInfo:
    """One segloc_ros node.

    Attributes:
        name: the ROS node name (also its section in a params file).
        executable: its console script, ``ros2 run segloc_ros <executable>`` (``lib/segloc_ros``).
        module: the module whose ``main()`` runs it alone (``python -m <module>``).
        class_name: its :class:`~segloc_ros.nodes.common.SeglocNode` subclass in ``module``.
        parameters: what it declares (:mod:`segloc_ros.nodes.params`).
        composed: one of the split SegLoc pipeline: started one process each by the launch file
            and the replay launcher, or together in ``localization_container`` (composition).
        serves_map: it loads a map and takes the common parameters (``map_path``, ``backend``, ...);
            false for map_manager, which sets the others' ``map_path``.
    """

    name: str
    executable: str
    module: str
    class_name: str
    parameters: tuple[ParameterSpec, ...]
    composed: bool = False
    serves_map: bool = True

    @property
    def entry_point(self) -> str:
        """The console script's target, ``module:main``."""
        return f"{self.module}:main"

    def load_class(self) -> Any:
        """The node class (imports the node module, and so rclpy)."""
        return getattr(importlib.import_module(self.module), self.class_name)

    def parameter_defaults(self) -> dict[str, bool | int | float | str]:
        """``{name: default}`` of its parameters, in declaration order."""
        return {spec.name: spec.default for spec in self.parameters}


#: Every node of the package: SegLoc's split pipeline in its order, localizer_node (any method, one process),
#: place_recognition_node (SFRS retrieval), map_manager.
NODES: tuple[NodeInfo, ...] = (
    NodeInfo(
        SEGMENTATION_NODE,
        "segmentation_node",
        "segloc_ros.nodes.segmentation_node",
        "SegmentationNode",
        SEGMENTATION_PARAMETERS,
        composed=True,
    ),
    NodeInfo(RETRIEVAL_NODE, "retrieval_node", "segloc_ros.nodes.retrieval_node", "RetrievalNode", RETRIEVAL_PARAMETERS, composed=True),
    NodeInfo(
        POSE_REFINEMENT_NODE,
        "pose_refinement_node",
        "segloc_ros.nodes.pose_refinement_node",
        "PoseRefinementNode",
        POSE_REFINEMENT_PARAMETERS,
        composed=True,
    ),
    NodeInfo(LOCALIZER_NODE, "localizer_node", "segloc_ros.nodes.localizer_node", "LocalizerNode", LOCALIZER_PARAMETERS),
    NodeInfo(
        PLACE_RECOGNITION_NODE,
        "place_recognition_node",
        "segloc_ros.nodes.place_recognition_node",
        "PlaceRecognitionNode",
        PLACE_RECOGNITION_PARAMETERS,
    ),
    NodeInfo(
        MAP_MANAGER_NODE,
        "map_manager",
        "segloc_ros.nodes.map_manager_node",
        "MapManagerNode",
        MAP_MANAGER_PARAMETERS,
        serves_map=False,
    ),
)
#: The split pipeline: the nodes localization_container runs in one process.
COMPOSED_NODES: tuple[NodeInfo, ...] = tuple(node for node in NODES if node.composed)
CONTAINER_EXECUTABLE = "localization_container"
CONTAINER_MODULE = "segloc_ros.composition"
#: Console script -> entry point, for every executable the package installs to run nodes.
EXECUTABLES: dict[str, str] = {
    **{node.executable: node.entry_point for node in NODES},
    CONTAINER_EXECUTABLE: f"{CONTAINER_MODULE}:main",
}
#: Node name -> its parameters.
NODE_PARAMETERS: dict[str, tuple[ParameterSpec, ...]] = {node.name: node.parameters for node in NODES}


def node_info(name: str) -> NodeInfo:
    """The entry of node ``name``; ValueError naming the nodes when there is none."""
    for node in NODES:
        if node.name == name:
            return node
    raise ValueError(f"no segloc_ros node {name!r}; the nodes: {', '.join(node.name for node in NODES)}")


def parameter_defaults(node_name: str) -> dict[str, bool | int | float | str]:
    """``{name: default}`` of a node's parameters, in declaration order."""
    return node_info(node_name).parameter_defaults()
