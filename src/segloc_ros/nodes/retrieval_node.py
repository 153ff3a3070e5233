"""retrieval_node: a global descriptor in, pose priors from the most similar mapping images out.

Subscribes ``segloc/descriptor`` (sensor_msgs/Image ``32FC1``, 1 x Dg, from segmentation_node).
Per descriptor (in the worker thread): ranks the map's images by descriptor similarity and
approximates a first pose (:meth:`segloc.methods.segloc.localizer.SegLocLocalizer.retrieval_priors`),
then publishes ``segloc/pose_priors`` (geometry_msgs/PoseArray in ``map_frame``, stamped with
the image stamp): the camera optical-frame poses ``world_from_cam``, best first (the
approximation, then the poses of the next retrieved images), at most ``num_priors``.

This node loads the map's core and descriptors only, not the network.
"""

from __future__ import annotations

import time
from typing import Any

from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import Image

from segloc.methods.segloc.packing import descriptor_from_image
from segloc_ros.conversions import pose_array_msg
from segloc_ros.nodes.common import PIPELINE_QOS, LoadedMap, SeglocNode, run_nodes
from segloc_ros.nodes.params import RETRIEVAL_NODE, RETRIEVAL_PARAMETERS

__all__ = ["RetrievalNode", "main"]


class RetrievalNode(SeglocNode):
    """The retrieval stage of the split SegLoc pipeline (see the module docstring)."""

    node_name = RETRIEVAL_NODE
    parameters = RETRIEVAL_PARAMETERS
    component = "retrieval"
    needs_network = False

    def __init__(self, node_name: str | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._priors_publisher: Any = None
        self._subscription: Any = None
        self._last_similarity: float | None = None

    def create_outputs(self) -> None:
        self._priors_publisher = self.create_publisher(PoseArray, "segloc/pose_priors", PIPELINE_QOS)

    def destroy_outputs(self) -> None:
        if self._priors_publisher is not None:
            self.destroy_publisher(self._priors_publisher)
            self._priors_publisher = None

    def create_inputs(self) -> None:
        self._subscription = self.create_subscription(
            Image, "segloc/descriptor", lambda msg: self.submit((msg, time.perf_counter())), PIPELINE_QOS, callback_group=self.input_group
        )

    def destroy_inputs(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None

    def extra_diagnostics(self) -> dict[str, Any]:
        return {"best_similarity": self._last_similarity if self._last_similarity is not None else "none"}

    def process(self, frame: tuple[Image, float], loaded: LoadedMap) -> None:
        msg, received = frame
        timings: dict[str, float] = {"queue": time.perf_counter() - received}
        descriptor = descriptor_from_image(msg)
        starts, _, similarities = loaded.localizer.retrieval_priors(descriptor, timings)
        limit = self.param("num_priors")
        poses = [cam_from_world.inverse() for cam_from_world in (starts[:limit] if limit else starts)]
        self._priors_publisher.publish(pose_array_msg(poses, msg.header.stamp, self.param("map_frame")))
        self._last_similarity = float(similarities[0]) if len(similarities) else None
        timings["total"] = time.perf_counter() - received
        self.timings.add(timings)
        self.report("ok", "retrieving")


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros retrieval_node``."""
    return run_nodes([RetrievalNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
