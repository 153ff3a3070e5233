"""place_recognition_node: camera images in, the most similar mapping images and pose priors out, from the map's sfrs layer.

Serves the SFRS retrieval (:mod:`segloc.maps.sfrs`: NetVLAD trained with self-supervised
region similarities, ``segloc train sfrs``, added to any method's map with ``segloc map
add-sfrs``) to the other nodes, with no method behind it.

Subscribes ``image`` (or ``image/compressed``) and ``camera_info``
(:mod:`segloc_ros.nodes.camera_input`). Per image (in the worker thread): decode, undistort and
shrink to ``max_edge`` (:class:`segloc.localize.ingest.CameraIngest`), then
:meth:`segloc.maps.sfrs.SfrsRetriever.pose_priors`, and publish, stamped with the image stamp:

- ``segloc/pose_priors`` (geometry_msgs/PoseArray in ``map_frame``): camera optical-frame poses
  ``world_from_cam``, best first: with ``approximation: weighted`` the similarity-weighted mean
  of the retrieved poses near the best one, with ``top1`` the best image's pose, then the poses
  of the next retrieved images; at most ``num_priors``. pose_refinement_node takes them with
  ``prior_input: pose_priors``; a robot that wakes up anywhere needs no ``initialpose``.
- ``segloc/retrieval`` (sensor_msgs/Image ``64FC1``, 2 x R: the retrieved mapping image ids,
  in the map's core order, and their similarities;
  :func:`segloc.methods.segloc.packing.retrieval_image_fields`): what retrieval_node publishes,
  so that SegLoc's pose_refinement_node (``prior_input: retrieval``) can start from SFRS instead
  of SegLoc's own retrieval (run one of the two retrieval nodes).

``backend`` and ``threads`` run the NetVLAD network on torch, ONNX Runtime or TensorRT
(:mod:`segloc.runtime`; the map's ``onnx`` layer when ``segloc export MAP`` stored it).
"""

from __future__ import annotations

import time
from typing import Any

from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from segloc.maps.package import MapPackage
from segloc.maps.sfrs import SfrsRetriever
from segloc.methods.segloc.packing import retrieval_image_fields
from segloc.runtime.session import RuntimeConfig
from segloc_ros.conversions import pose_array_msg, raw_image_msg
from segloc_ros.nodes.camera_input import CameraInputs
from segloc_ros.nodes.common import PIPELINE_QOS, LoadedMap, SeglocNode, run_nodes
from segloc_ros.nodes.params import PLACE_RECOGNITION_NODE, PLACE_RECOGNITION_PARAMETERS

__all__ = ["PlaceRecognitionNode", "main"]


class PlaceRecognitionNode(CameraInputs, SeglocNode):
    """SFRS retrieval as a node (see the module docstring)."""

    node_name = PLACE_RECOGNITION_NODE
    parameters = PLACE_RECOGNITION_PARAMETERS
    component = "place_recognition"
    needs_network = True

    def __init__(self, node_name: str | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._outputs: dict[str, Any] = {}
        self._last_similarity: float | None = None

    def make_localizer(self, package: MapPackage, config_path: str) -> SfrsRetriever:
        """The map's sfrs retriever (``config_path`` is not read: the layer holds its options)."""
        return SfrsRetriever.from_map(package, self.param("device"), RuntimeConfig(self.param("backend"), self.param("threads")))

    # --- interfaces -------------------------------------------------------------------------
    def create_outputs(self) -> None:
        self._outputs = {
            "retrieval": self.create_publisher(Image, "segloc/retrieval", PIPELINE_QOS),
            "priors": self.create_publisher(PoseArray, "segloc/pose_priors", PIPELINE_QOS),
        }

    def destroy_outputs(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}

    def extra_diagnostics(self) -> dict[str, Any]:
        return {**self.camera_diagnostics(), "best_similarity": self._last_similarity if self._last_similarity is not None else "none"}

    # --- the worker -------------------------------------------------------------------------
    def process(self, frame: tuple[Image | CompressedImage, CameraInfo, float], loaded: LoadedMap) -> None:
        msg, info, received = frame
        header = msg.header
        timings: dict[str, float] = {"queue": time.perf_counter() - received}
        rgb, camera = self.decode(msg, info, timings)

        image, _ = self.ingest(rgb, camera, self.param("max_edge"), timings)

        start = time.perf_counter()
        limit = self.param("num_priors")
        priors = loaded.localizer.pose_priors(image, self.param("num_results"), self.param("approximation"))
        timings["retrieve"] = time.perf_counter() - start

        poses = [cam_from_world.inverse() for cam_from_world in (priors.poses[:limit] if limit else priors.poses)]
        self._outputs["retrieval"].publish(raw_image_msg(header, retrieval_image_fields(priors.image_ids, priors.similarities)))
        self._outputs["priors"].publish(pose_array_msg(poses, header.stamp, self.param("map_frame")))
        self._last_similarity = float(priors.similarities[0]) if len(priors.similarities) else None
        timings["total"] = time.perf_counter() - received
        self.timings.add(timings)
        self.report("ok", "retrieving")


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros place_recognition_node``."""
    return run_nodes([PlaceRecognitionNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
