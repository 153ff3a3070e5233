"""retrieval_node: a global descriptor in, the most similar mapping images and pose priors out.

Subscribes ``segloc/descriptor`` (sensor_msgs/Image ``32FC1``, 1 x Dg, from segmentation_node).
Per descriptor (in the worker thread): the retrieval stage of SegLoc
(:meth:`segloc.methods.segloc.localizer.SegLocLocalizer.retrieval`: the map's images ranked by
descriptor similarity, and a first pose), then publishes, stamped with the image stamp:

- ``segloc/retrieval`` (sensor_msgs/Image ``64FC1``, 2 x R: the retrieved image ids and their
  similarities, best first; :func:`segloc.methods.segloc.packing.retrieval_image_fields`): what
  pose_refinement_node starts from, exactly as the one-process localizer does;
- ``segloc/pose_priors`` (geometry_msgs/PoseArray in ``map_frame``): the camera optical-frame
  poses ``world_from_cam``, best first (the approximation, then the poses of the next retrieved
  images), at most ``num_priors``, for any other consumer.

This node loads the map's core and descriptors only, not the network.
"""

from __future__ import annotations

import time
from typing import Any

from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import Image

from segloc.maps.package import MapPackage
from segloc.methods.segloc.packing import descriptor_from_image, retrieval_image_fields
from segloc_ros.conversions import pose_array_msg, raw_image_msg
from segloc_ros.nodes.common import PIPELINE_QOS, LoadedMap, SeglocNode, run_nodes
from segloc_ros.nodes.params import RETRIEVAL_NODE, RETRIEVAL_PARAMETERS
from segloc_ros.nodes.segloc_split import load_segloc_localizer

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
        self._retrieval_publisher: Any = None
        self._subscription: Any = None
        self._last_similarity: float | None = None

    def make_localizer(self, package: MapPackage, config_path: str) -> Any:
        return load_segloc_localizer(package, config_path, self.param("device"), with_network=False)

    def create_outputs(self) -> None:
        self._retrieval_publisher = self.create_publisher(Image, "segloc/retrieval", PIPELINE_QOS)
        self._priors_publisher = self.create_publisher(PoseArray, "segloc/pose_priors", PIPELINE_QOS)

    def destroy_outputs(self) -> None:
        for publisher in (self._retrieval_publisher, self._priors_publisher):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._retrieval_publisher = self._priors_publisher = None

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
        retrieval = loaded.localizer.retrieval(descriptor, timings)
        limit = self.param("num_priors")
        poses = [cam_from_world.inverse() for cam_from_world in (retrieval.starts[:limit] if limit else retrieval.starts)]
        self._retrieval_publisher.publish(raw_image_msg(msg.header, retrieval_image_fields(retrieval.image_ids, retrieval.similarities)))
        self._priors_publisher.publish(pose_array_msg(poses, msg.header.stamp, self.param("map_frame")))
        self._last_similarity = float(retrieval.similarities[0]) if len(retrieval.similarities) else None
        timings["total"] = time.perf_counter() - received
        self.timings.add(timings)
        self.report("ok", "retrieving")


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros retrieval_node``."""
    return run_nodes([RetrievalNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
