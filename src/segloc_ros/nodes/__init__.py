"""The segloc_ros nodes: SegLoc localization split into three lifecycle nodes.

::

    image, camera_info ─▶ segmentation_node ─┬─ segloc/descriptor ─▶ retrieval_node ─ segloc/pose_priors ─┐
                                             ├─ segloc/probabilities, segloc/camera_info ──────────────────┤
                                             └─ segloc/labels                                              ▼
    /tf, /tf_static, initialpose (, odom_topic) ─────────────────────────────────────▶ pose_refinement_node
                                                            ─▶ pose, /tf (map -> odom), segloc/localized

- :mod:`segloc_ros.nodes.segmentation_node`: undistorts and shrinks camera images and runs the
  segmentation network embedded in the map;
- :mod:`segloc_ros.nodes.retrieval_node`: pose priors from the mapping images with the most
  similar global descriptors;
- :mod:`segloc_ros.nodes.pose_refinement_node`: label-based pose refinement from the priors (or
  ``initialpose``), the base pose with covariance, ``map -> odom``, and the failure signal;
- :mod:`segloc_ros.composition`: the three in one process (``localization_container``).

Shared pieces: :mod:`~segloc_ros.nodes.common` (the lifecycle base: parameters, diagnostics,
the worker, map loading and atomic reload, ``run_nodes``), :mod:`~segloc_ros.nodes.params`
(every parameter with its default and description, without ROS) and
:mod:`~segloc_ros.nodes.buffers` (worker queue, stamp matching, TF cache; without ROS).

:data:`NODES` below is the one list of the nodes: name, executable, module, class and
parameters of each. The launch description, localization_container, the replay launcher and the
tests take the nodes from it; ``[project.scripts]`` of pyproject.toml (which cannot import it)
must install one console script per executable, which a test checks on the installed
distribution. A new node is one :class:`NodeInfo` entry here, plus its console script and its
section in ``config/segloc_ros.yaml``.

Importing this package does not import rclpy; the node modules do.

The SLD landmark node (to come)
-------------------------------
SLD / SLD* (scene landmark detection) localizes from network weights only: a scene-agnostic
backbone and a per-scene head predict landmark heatmaps, whose peaks give 2D-3D matches for PnP
+ RANSAC. It will be ``segloc_ros.nodes.landmark_node`` (executable ``landmark_node``), built
like the nodes here:

- a :class:`~segloc_ros.nodes.common.SeglocNode` subclass with ``needs_network = True`` that
  overrides :meth:`~segloc_ros.nodes.common.SeglocNode.load_map` to load the SLD layer of the
  map package (the SegLoc-specific :func:`~segloc_ros.nodes.common.load_localizer` does not
  apply); its parameters go into :mod:`~segloc_ros.nodes.params`, its entry into :data:`NODES`
  (and ``config/segloc_ros.yaml``, ``[project.scripts]``);
- inputs ``image`` / ``camera_info`` through :class:`segloc.localize.ingest.CameraIngest` as
  segmentation_node does, and the TF inputs of pose_refinement_node;
- outputs ``pose``, ``/tf`` and ``segloc/localized`` with the same frames, stamps, confidence
  check and "localization lost" diagnostics as pose_refinement_node (that logic should then move
  from pose_refinement_node into a shared helper rather than be copied), so that either
  localizer can drive the robot; optionally ``segloc/pose_priors`` to seed the SegLoc refinement.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from segloc_ros.nodes.params import (
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
    """

    name: str
    executable: str
    module: str
    class_name: str
    parameters: tuple[ParameterSpec, ...]
    composed: bool = False

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


#: Every node of the package, in pipeline order.
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
