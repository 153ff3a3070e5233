"""localization_container: the split pipeline (segmentation_node, retrieval_node, pose_refinement_node) in one process.

The nodes are those of :data:`segloc_ros.nodes.COMPOSED_NODES`. One multi-threaded executor
(:class:`~segloc_ros.nodes.executor.NodeExecutor`) spins these lifecycle nodes (each still has its own worker
thread, parameters, lifecycle services and diagnostics); they read their parameters from the
same params file as the separate processes, by node name; a ``-p`` on the command line applies
to all three::

    ros2 run segloc_ros localization_container --ros-args --params-file config/segloc_ros.yaml -p map_path:=/maps/office

(``launch/localize.launch.py composition:=true`` does this.) Messages between the nodes still go
through the middleware: rclpy has no intra-process transport. ``threads`` sets torch's threads
for the whole process, so give it the same value in all three nodes.
"""

from __future__ import annotations

from segloc_ros.nodes import COMPOSED_NODES
from segloc_ros.nodes.common import run_nodes

__all__ = ["main"]


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros localization_container``."""
    return run_nodes([node.load_class() for node in COMPOSED_NODES], args)


if __name__ == "__main__":
    raise SystemExit(main())
