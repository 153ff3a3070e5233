"""segmentation_node: camera images in, SegLoc class probabilities, labels and global descriptor out.

Subscribes:
    ``image`` (sensor_msgs/Image; with ``image_transport: compressed``, ``image/compressed``,
    sensor_msgs/CompressedImage), ``camera_info`` (sensor_msgs/CameraInfo; the latest per
    ``frame_id`` is kept, an image whose frame has had none yet is dropped with a diagnostic WARN).

Per image (in the worker thread): decode to RGB, undistort into the pinhole camera and shrink to
``max_edge`` (:class:`segloc.localize.ingest.CameraIngest`), segment with the network embedded
in the map (:meth:`segloc.methods.segloc.localizer.SegLocLocalizer.segment`), and publish, every message
with the input image's header (stamp and frame_id):

- ``segloc/labels`` (sensor_msgs/Image ``mono16``): argmax class of the finest level
  (1/4 of the network input);
- ``segloc/descriptor`` (sensor_msgs/Image ``32FC1``, 1 x Dg): the global descriptor;
- ``segloc/probabilities`` (sensor_msgs/Image ``16UC{K}``): the packed probability pyramid of
  :mod:`segloc.methods.segloc.packing`: levels of strides 32, 16, 8, 4 stacked vertically coarse to
  fine, each left-aligned and zero-padded to the finest width, K channels per pixel. **Each
  16-bit word is an IEEE 754 half-precision float, not an integer**: read the data as
  ``float16`` (``is_bigendian`` gives the byte order), e.g.
  ``numpy.frombuffer(msg.data, "<f2").reshape(msg.height, msg.width, K)``, or use
  :func:`segloc.methods.segloc.packing.packed_probabilities_from_image`;
- ``segloc/camera_info`` (sensor_msgs/CameraInfo): the pinhole camera of the processed image
  (the camera the probabilities belong to).

An unsupported encoding (e.g. ``32FC1``, ``bgra16``) or an image that does not fit its
camera_info is a diagnostic ERROR naming the problem; the frame is skipped.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from segloc.maps.package import MapPackage
from segloc.methods.segloc.packing import descriptor_image_fields, pack_probabilities, probabilities_image_fields
from segloc.models.segmentation import LEVEL_STRIDES
from segloc_ros.conversions import camera_info_msg_from_camera, image_msg_from_array, raw_image_msg
from segloc_ros.nodes.camera_input import CameraInputs
from segloc_ros.nodes.common import PIPELINE_QOS, LoadedMap, SeglocNode, run_nodes
from segloc_ros.nodes.params import SEGMENTATION_NODE, SEGMENTATION_PARAMETERS
from segloc_ros.nodes.segloc_split import load_segloc_localizer

__all__ = ["SegmentationNode", "main"]


class SegmentationNode(CameraInputs, SeglocNode):
    """The segmentation stage of the split SegLoc pipeline (see the module docstring)."""

    node_name = SEGMENTATION_NODE
    parameters = SEGMENTATION_PARAMETERS
    component = "segmentation"
    needs_network = True

    def __init__(self, node_name: str | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._outputs: dict[str, Any] = {}

    def make_localizer(self, package: MapPackage, config_path: str) -> Any:
        return load_segloc_localizer(package, config_path, self.param("device"), True, self.param("backend"), self.param("threads"))

    # --- interfaces -------------------------------------------------------------------------
    def create_outputs(self) -> None:
        self._outputs = {
            "labels": self.create_publisher(Image, "segloc/labels", PIPELINE_QOS),
            "descriptor": self.create_publisher(Image, "segloc/descriptor", PIPELINE_QOS),
            "probabilities": self.create_publisher(Image, "segloc/probabilities", PIPELINE_QOS),
            "camera_info": self.create_publisher(CameraInfo, "segloc/camera_info", PIPELINE_QOS),
        }

    def destroy_outputs(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}

    def extra_diagnostics(self) -> dict[str, Any]:
        return self.camera_diagnostics()

    # --- the worker -------------------------------------------------------------------------
    def process(self, frame: tuple[Image | CompressedImage, CameraInfo, float], loaded: LoadedMap) -> None:
        msg, info, received = frame
        header = msg.header
        timings: dict[str, float] = {"queue": time.perf_counter() - received}
        rgb, camera = self.decode(msg, info, timings)

        # the one-process pipeline's ingest (segloc.localize.pipeline): to max_edge, else the network's size
        image, camera = self.ingest(rgb, camera, self.param("max_edge") or loaded.localizer.ingest_max_edge or 0, timings)

        start = time.perf_counter()
        segmentation = loaded.localizer.segment(image)
        timings["segment"] = time.perf_counter() - start

        start = time.perf_counter()
        labels = segmentation.probabilities[-1].argmax(dim=0).numpy().astype(np.uint16)
        packed = pack_probabilities(segmentation.probabilities, LEVEL_STRIDES)
        publishers = self._outputs
        publishers["camera_info"].publish(camera_info_msg_from_camera(camera, header.stamp, header.frame_id))
        publishers["labels"].publish(image_msg_from_array(labels, header.stamp, header.frame_id, "mono16"))
        publishers["descriptor"].publish(raw_image_msg(header, descriptor_image_fields(segmentation.descriptor)))
        publishers["probabilities"].publish(raw_image_msg(header, probabilities_image_fields(packed)))
        timings["publish"] = time.perf_counter() - start
        timings["total"] = time.perf_counter() - received
        self.timings.add(timings)
        self.report("ok", "segmenting")


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros segmentation_node``."""
    return run_nodes([SegmentationNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
