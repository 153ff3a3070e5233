"""Camera inputs of the nodes that take images: ``image`` (or ``image/compressed``) and ``camera_info``.

:class:`CameraInputs` is mixed into a :class:`~segloc_ros.nodes.common.SeglocNode`
(segmentation_node, localizer_node). It subscribes, on activate, ``image`` (sensor_msgs/Image;
with ``image_transport: compressed``, ``image/compressed``, sensor_msgs/CompressedImage) and
``camera_info`` (sensor_msgs/CameraInfo; the latest per ``frame_id`` is kept). An image whose
frame has had no camera_info yet is held (the last :data:`HELD_IMAGES` per frame) with a
diagnostic WARN, and goes to the worker when the frame's first camera_info arrives: a driver or
a bag that sends the image just before its camera_info loses no frame. The others are
submitted to the node's worker as ``(msg, camera_info, received)``, and :meth:`decode` turns
one into an RGB array and its segloc camera in the worker.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from segloc.geometry.camera import Camera
from segloc.localize.ingest import CameraIngest
from segloc_ros.conversions import camera_from_camera_info, rgb_from_image_msg
from segloc_ros.nodes.common import SENSOR_QOS

__all__ = ["HELD_IMAGES", "CameraInputs"]

#: Images held per camera frame while its first camera_info has not arrived (older ones are dropped and counted).
HELD_IMAGES = 2


class CameraInputs:
    """The image and camera_info subscriptions of a node (see the module docstring); a mixin of SeglocNode subclasses."""

    _camera_infos: dict[str, CameraInfo]
    _camera_inputs: list[Any]
    _without_camera_info: int
    _dropped_without_camera_info: int
    _held: dict[str, deque]
    _camera_ingest: CameraIngest | None

    def create_camera_inputs(self) -> None:
        self._camera_infos = getattr(self, "_camera_infos", {})
        self._without_camera_info = getattr(self, "_without_camera_info", 0)
        self._dropped_without_camera_info = getattr(self, "_dropped_without_camera_info", 0)
        self._held = {}
        group = self.input_group  # type: ignore[attr-defined]
        if self.param("image_transport") == "compressed":  # type: ignore[attr-defined]
            image = self.create_subscription(CompressedImage, "image/compressed", self._on_image, SENSOR_QOS, callback_group=group)  # type: ignore[attr-defined]
        else:
            image = self.create_subscription(Image, "image", self._on_image, SENSOR_QOS, callback_group=group)  # type: ignore[attr-defined]
        info = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, SENSOR_QOS, callback_group=group)  # type: ignore[attr-defined]
        self._camera_inputs = [image, info]

    def destroy_camera_inputs(self) -> None:
        for subscription in getattr(self, "_camera_inputs", []):
            self.destroy_subscription(subscription)  # type: ignore[attr-defined]
        self._camera_inputs = []
        self._held = {}

    def create_inputs(self) -> None:
        """The inputs of a node that takes camera images only (a node with more inputs overrides it)."""
        self.create_camera_inputs()

    def destroy_inputs(self) -> None:
        self.destroy_camera_inputs()

    def ingest(self, rgb: np.ndarray, camera: Camera, max_edge: int, timings: dict[str, float]) -> tuple[np.ndarray, Camera]:
        """Undistort into the pinhole camera and shrink to ``max_edge`` (:class:`segloc.localize.ingest.CameraIngest`, kept across frames).

        ``ingest`` seconds go into ``timings``.
        """
        start = time.perf_counter()
        ingest = getattr(self, "_camera_ingest", None)
        if ingest is None or ingest.max_edge != max_edge:
            ingest = self._camera_ingest = CameraIngest(max_edge)
        image, camera = ingest(rgb, camera)
        timings["ingest"] = time.perf_counter() - start
        return image, camera

    def camera_diagnostics(self) -> dict[str, Any]:
        return {
            "frames_without_camera_info": getattr(self, "_without_camera_info", 0),
            "frames_dropped_without_camera_info": getattr(self, "_dropped_without_camera_info", 0),
            "image_transport": self.param("image_transport"),  # type: ignore[attr-defined]
        }

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_infos[msg.header.frame_id] = msg
        for image, received in self._held.pop(msg.header.frame_id, ()):
            self.submit((image, msg, received))  # type: ignore[attr-defined]

    def _on_image(self, msg: Image | CompressedImage) -> None:
        info = self._camera_infos.get(msg.header.frame_id)
        if info is None:
            self._without_camera_info += 1
            held = self._held.setdefault(msg.header.frame_id, deque(maxlen=HELD_IMAGES))
            if len(held) == held.maxlen:
                self._dropped_without_camera_info += 1
            held.append((msg, time.perf_counter()))
            known = ", ".join(sorted(repr(f) for f in self._camera_infos)) or "none"
            self.report(  # type: ignore[attr-defined]
                "warn",
                f"image held: no camera_info received yet for frame {msg.header.frame_id!r} (camera_info frames: {known}); "
                f"it is processed when one arrives ({self._dropped_without_camera_info} dropped so far). "
                "Is camera_info published, and remapped to the same camera?",
            )
            return
        self.submit((msg, info, time.perf_counter()))  # type: ignore[attr-defined]

    @staticmethod
    def decode(msg: Image | CompressedImage, info: CameraInfo, timings: dict[str, float]) -> tuple[np.ndarray, Camera]:
        """The (H, W, 3) RGB uint8 image of a message and its camera (``decode`` seconds into ``timings``)."""
        start = time.perf_counter()
        rgb = rgb_from_image_msg(msg)
        camera = camera_from_camera_info(info, (rgb.shape[1], rgb.shape[0]))
        timings["decode"] = time.perf_counter() - start
        return rgb, camera
