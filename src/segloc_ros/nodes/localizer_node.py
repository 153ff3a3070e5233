"""localizer_node: camera images in, the robot's pose in the map out, with any registered method, in one process.

Runs the library's whole pipeline (:class:`segloc.localize.pipeline.LocalizationPipeline`):
camera ingest (undistort, shrink to what the method works at or ``max_edge``), the localizer
of the method the map was built for (or the ``method`` parameter), found in the method
registry (:mod:`segloc.methods`: SegLoc, the SIFT reference, and any plug-in registered
through the ``segloc.methods`` entry-point group), then the publishing decision. It is the
same code the evaluator runs per query (``segloc evaluate``), so offline figures are what
the robot gets.

Subscribes ``image`` (or ``image/compressed``) and ``camera_info``
(:mod:`segloc_ros.nodes.camera_input`), plus the inputs of every localizing node (TF, odometry,
``initialpose``: a valid one is the prior of the next image, for methods that take a prior);
publishes ``pose``, ``/tf`` (``map -> odom``), ``segloc/localized`` and ``/diagnostics``
(:mod:`segloc_ros.nodes.localizing`). Frames go through the bounded worker queue
(``queue_size``, the oldest dropped and counted); the map is swapped atomically on
``map_path`` changes and ``~/reload_map`` (:mod:`segloc_ros.nodes.common`).

The method's ``localize:`` options come from the file that ``config_path`` names; ``device``,
``backend`` and ``threads`` set the method's torch device and inference runtime where it has them;
``localize.retrieval: sfrs`` takes the prior of a frame without one from the map's ``sfrs``
layer (:mod:`segloc.localize.retrieval`), as ``segloc evaluate`` does. With a method that tracks (SegLoc), a frame
after a confident pose refines from the pose odometry predicts and relocalizes only when that
fails (:mod:`segloc.localize.tracking`; the ``tracking:`` section of the same file, e.g.
``enabled: false``); the diagnostics say how each frame was localized (``last_frame_mode``)
and count the frames of each mode.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from segloc.config import config_from_dict, config_section
from segloc.errors import SeglocError
from segloc.localize.pipeline import LocalizationPipeline
from segloc.localize.retrieval import load_localizer
from segloc.localize.tracking import TrackingConfig
from segloc.maps.package import MapPackage
from segloc.methods import get_method
from segloc_ros.conversions import stamp_to_ns
from segloc_ros.nodes.camera_input import CameraInputs
from segloc_ros.nodes.common import LoadedMap, run_nodes
from segloc_ros.nodes.localizing import LocalizingNode
from segloc_ros.nodes.params import LOCALIZER_NODE, LOCALIZER_PARAMETERS

logger = logging.getLogger("segloc")

__all__ = ["LocalizerNode", "main"]


class LocalizerNode(CameraInputs, LocalizingNode):
    """Any registered method's whole pipeline in one lifecycle node (see the module docstring)."""

    node_name = LOCALIZER_NODE
    parameters = LOCALIZER_PARAMETERS
    component = "localization"
    needs_network = True

    def make_localizer(self, package: MapPackage, config_path: str) -> LocalizationPipeline:
        """The pipeline of the map's method (or the ``method`` parameter's) over ``package``."""
        method = get_method(self.param("method") or package.method)
        localize = config_section(config_path or None, "localize")
        localizer = load_localizer(method, package, localize, self.param("device"), self.param("backend"), self.param("threads"))
        tracking = config_from_dict(TrackingConfig, config_section(config_path or None, "tracking"), "tracking")
        pipeline = LocalizationPipeline(
            localizer,
            self.publish_config(),
            max_edge=self.param("max_edge") or None,
            prior_use=method.prior_use,
            tracks=method.tracks,
            tracking_config=tracking,
        )
        pipeline.decision = self.decision  # one lost count and last map -> odom across map swaps
        logger.info("%s: method %s, %s", self.get_name(), method.name, pipeline.describe())
        return pipeline

    # --- interfaces -------------------------------------------------------------------------
    def create_outputs(self) -> None:
        self.create_localizing_outputs()
        loaded = self.current_map
        if loaded is not None:
            loaded.localizer.decision = self.decision

    def create_inputs(self) -> None:
        self.create_camera_inputs()
        self.create_localizing_inputs()

    def destroy_inputs(self) -> None:
        self.destroy_camera_inputs()
        self.destroy_localizing_inputs()

    def extra_diagnostics(self) -> dict[str, Any]:
        loaded = self.current_map
        tracking = loaded.localizer.tracking.describe() if loaded else {}
        return {**self.camera_diagnostics(), **self.localizing_diagnostics(), "method": loaded.method if loaded else "", **tracking}

    # --- the worker -------------------------------------------------------------------------
    def process(self, frame: tuple[Image | CompressedImage, CameraInfo, float], loaded: LoadedMap) -> None:
        """Localize one image; every image gets its verdict on segloc/localized, a bad one too."""
        msg, info, received = frame
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            self._localize(msg, info, received, stamp_ns, loaded)
        except SeglocError as exc:  # a bad input (PoseLookupError included): its message says what was wrong
            self.lost(stamp_ns, str(exc), error=True)
        except Exception as exc:
            logger.error("%s: unexpected error while localizing", self.get_name(), exc_info=exc)
            self.lost(stamp_ns, f"unexpected {type(exc).__name__}: {exc}", error=True)

    def _localize(self, msg: Image | CompressedImage, info: CameraInfo, received: float, stamp_ns: int, loaded: LoadedMap) -> None:
        timings: dict[str, float] = {"queue": time.perf_counter() - received}
        start = time.perf_counter()
        base_from_cam = self.camera_extrinsics(msg.header.frame_id, stamp_ns)
        timings["tf"] = time.perf_counter() - start
        image, camera = self.decode(msg, info, timings)
        pipeline: LocalizationPipeline = loaded.localizer
        initial_pose = self.take_initial_pose()
        if initial_pose is not None and pipeline.prior_use == "none":
            self.report("warn", f"initialpose not used: method {loaded.method!r} takes no prior; it localizes from the image alone")
        self.decision.config = self.publish_config()
        pipeline.decision = self.decision
        decision = pipeline.process(
            image,
            camera,
            stamp_ns,
            base_from_cam,
            use_odometry=self.param("use_odometry"),
            odometry=lambda: self.odometry(stamp_ns),
            prior_world_from_base=initial_pose,
        )
        if decision.result is not None:
            timings.update(decision.result.timings)
        self.finish(decision, timings, received)


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros localizer_node``."""
    return run_nodes([LocalizerNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
