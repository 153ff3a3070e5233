"""pose_refinement_node: class probabilities and the retrieval in, the robot's pose in the map and TF ``map -> odom`` out.

The last stage of the split SegLoc deployment. Subscribes:
    ``segloc/probabilities`` (sensor_msgs/Image ``16UC{K}``, float16 words, from
    segmentation_node), ``segloc/camera_info`` (the processed pinhole camera), and the starts of
    the refinement: with ``prior_input: retrieval`` (default) ``segloc/retrieval`` (the retrieved
    mapping image ids and similarities, sensor_msgs/Image ``64FC1``, from retrieval_node: the
    refinement then starts from, and takes its points from, exactly what the one-process
    localizer would), with ``prior_input: pose_priors`` ``segloc/pose_priors``
    (geometry_msgs/PoseArray of camera poses in ``map_frame`` from any source, e.g. another
    method); plus the inputs every localizing node has (:mod:`segloc_ros.nodes.localizing`: TF,
    odometry, ``initialpose``).

The inputs of a frame are matched by their exact header stamp (the image stamp, which the
upstream nodes copy) in a small buffer (``pair_buffer_size`` stamps, ``pair_timeout`` seconds);
unmatched stamps expire and are counted. A valid ``initialpose`` is the prior of the next frame
that has probabilities and camera_info, instead of waiting for retrieval.

Per frame (in the worker thread) the refinement
(:meth:`segloc.methods.segloc.localizer.SegLocLocalizer.localize_segmentation`) runs, then the
library's publishing decision (:class:`segloc.localize.pipeline.PublishDecision`): the outputs
and the lost signal are those of :mod:`segloc_ros.nodes.localizing`. After a confident pose,
with odometry at the stamp, a frame tracks instead
(:meth:`~segloc.methods.segloc.localizer.SegLocLocalizer.track_segmentation`: one refinement
from the pose odometry predicts, the frame's retrieval only when that fails), with the
library's :class:`segloc.localize.tracking.TrackingState` (the ``tracking:`` section of
``config_path``), as localizer_node does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from geometry_msgs.msg import PoseArray
from sensor_msgs.msg import CameraInfo, Image

from segloc.data.tf_buffer import normalize_frame
from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3
from segloc.localize.tracking import TrackingState, tracking_mode
from segloc.maps.package import MapPackage
from segloc.methods.segloc.packing import packed_probabilities_from_image, retrieval_from_image, segmentation_from_packed
from segloc.models.segmentation import LEVEL_STRIDES
from segloc_ros.conversions import camera_from_camera_info, rigid_from_pose_msg, stamp_to_ns
from segloc_ros.nodes.buffers import NS_PER_S, StampMatcher
from segloc_ros.nodes.common import PIPELINE_QOS, PRIORS_QOS, LoadedMap, run_nodes
from segloc_ros.nodes.localizing import LocalizingNode
from segloc_ros.nodes.params import POSE_REFINEMENT_NODE, POSE_REFINEMENT_PARAMETERS
from segloc_ros.nodes.segloc_split import load_segloc_localizer, load_tracking_config

logger = logging.getLogger("segloc")

__all__ = ["PoseRefinementNode", "main"]

FRAME_PARTS = ("probabilities", "camera_info")


class PoseRefinementNode(LocalizingNode):
    """The pose refinement stage of the split SegLoc pipeline (see the module docstring)."""

    node_name = POSE_REFINEMENT_NODE
    parameters = POSE_REFINEMENT_PARAMETERS
    component = "localization"
    needs_network = False

    def __init__(self, node_name: str | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._inputs: list[Any] = []
        self._matcher = StampMatcher((*FRAME_PARTS, "starts"))
        self._reported_expired = 0
        self._tracking = TrackingState()

    def make_localizer(self, package: MapPackage, config_path: str) -> Any:
        localizer = load_segloc_localizer(package, config_path, self.param("device"), with_network=False)
        self._tracking = TrackingState(load_tracking_config(config_path), tracks=True)  # a new map: relocalize first
        return localizer

    # --- interfaces -------------------------------------------------------------------------
    def create_outputs(self) -> None:
        self.create_localizing_outputs()
        self._matcher = StampMatcher((*FRAME_PARTS, "starts"), self.param("pair_buffer_size"), int(self.param("pair_timeout") * NS_PER_S))
        self._reported_expired = 0

    def create_inputs(self) -> None:
        group = self.input_group

        def subscribe(msg_type: Any, topic: str, callback: Any, qos: Any = PIPELINE_QOS) -> None:
            self._inputs.append(self.create_subscription(msg_type, topic, callback, qos, callback_group=group))

        subscribe(Image, "segloc/probabilities", self._on_probabilities)
        subscribe(CameraInfo, "segloc/camera_info", self._on_camera_info)
        if self.param("prior_input") == "retrieval":
            subscribe(Image, "segloc/retrieval", self._on_retrieval)
        else:  # priors from any source: a volatile subscription matches volatile and transient-local publishers alike
            subscribe(PoseArray, "segloc/pose_priors", self._on_priors, PRIORS_QOS)
        self.create_localizing_inputs()

    def destroy_inputs(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        self.destroy_localizing_inputs()
        self._matcher.clear()

    def extra_diagnostics(self) -> dict[str, Any]:
        return {
            **self.localizing_diagnostics(),
            "prior_input": self.param("prior_input"),
            "frames_waiting": len(self._matcher),
            "frames_expired": self._matcher.expired,
            "late_inputs": self._matcher.late,
            **self._tracking.describe(),
        }

    # --- callbacks (input group: one at a time) ---------------------------------------------
    def _on_probabilities(self, msg: Image) -> None:
        self._matcher.add(stamp_to_ns(msg.header.stamp), "probabilities", (msg, time.perf_counter()))
        self._dispatch()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._matcher.add(stamp_to_ns(msg.header.stamp), "camera_info", msg)
        self._dispatch()

    def _on_retrieval(self, msg: Image) -> None:
        self._matcher.add(stamp_to_ns(msg.header.stamp), "starts", msg)
        self._dispatch()

    def _on_priors(self, msg: PoseArray) -> None:
        if normalize_frame(msg.header.frame_id) != self.param("map_frame"):
            self.report("error", f"pose priors ignored: they are in frame {msg.header.frame_id!r}, not {self.param('map_frame')!r}")
            return
        self._matcher.add(stamp_to_ns(msg.header.stamp), "starts", msg)
        self._dispatch()

    def on_initial_pose(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand complete frames to the worker: with a pending initialpose the newest frame needs no starts."""
        if self.has_initial_pose():
            for stamp, parts in self._matcher.take(FRAME_PARTS, limit=1, newest=True):
                self.submit((stamp, parts, self.take_initial_pose()))
        for stamp, parts in self._matcher.take((*FRAME_PARTS, "starts")):
            self.submit((stamp, parts, None))
        if self._matcher.expired > self._reported_expired:
            missing = ", ".join(f"{part} ({count})" for part, count in sorted(self._matcher.expired_missing.items()))
            self._reported_expired = self._matcher.expired
            self.report(
                "warn",
                f"{self._matcher.expired} frame(s) expired unmatched; missing: {missing} (are segmentation_node and retrieval_node running?)",
            )

    # --- the worker -------------------------------------------------------------------------
    def process(self, frame: tuple[int, dict[str, Any], Rigid3 | None], loaded: LoadedMap) -> None:
        """Localize one frame; every frame gets its verdict on segloc/localized, a bad input too."""
        try:
            self._localize(frame, loaded)
        except SeglocError as exc:  # a bad input (PoseLookupError included): its message says what was wrong
            self.lost(frame[0], str(exc), error=True)
        except Exception as exc:
            logger.error("%s: unexpected error while localizing", self.get_name(), exc_info=exc)
            self.lost(frame[0], f"unexpected {type(exc).__name__}: {exc}", error=True)

    def _localize(self, frame: tuple[int, dict[str, Any], Rigid3 | None], loaded: LoadedMap) -> None:
        stamp_ns, parts, initial_pose = frame
        probabilities_msg, received = parts["probabilities"]
        timings: dict[str, float] = {"queue": time.perf_counter() - received}
        start = time.perf_counter()
        base_from_cam = self.camera_extrinsics(probabilities_msg.header.frame_id, stamp_ns)
        timings["tf"] = time.perf_counter() - start

        localizer = loaded.localizer
        tracking = self._tracking
        priors, retrieval, predicted = None, None, None
        odom_from_base, odometry_error = self.odometry(stamp_ns)
        if initial_pose is not None:
            tracking.reset()
            priors = [(initial_pose * base_from_cam).inverse()]
        elif isinstance(parts["starts"], PoseArray):
            priors = [rigid_from_pose_msg(pose).inverse() for pose in parts["starts"].poses]
            if not priors:
                self.lost(stamp_ns, "the pose priors are empty", timings=timings)
                return
        else:
            retrieval = localizer.retrieval_from_ids(*retrieval_from_image(parts["starts"]))
            predicted = tracking.predict(self.decision.last_map_from_odom, odom_from_base, base_from_cam)

        start = time.perf_counter()
        segmentation = segmentation_from_packed(packed_probabilities_from_image(probabilities_msg), None, LEVEL_STRIDES)
        camera = camera_from_camera_info(parts["camera_info"])
        timings["decode"] = time.perf_counter() - start
        if predicted is not None:
            result = localizer.track_segmentation(segmentation, camera, predicted, timings, retrieval=retrieval)
        else:
            result = localizer.localize_segmentation(segmentation, camera, priors, timings, retrieval=retrieval)

        self.decision.config = self.publish_config()
        decision = self.decision.decide(
            stamp_ns,
            result,
            base_from_cam,
            use_odometry=self.param("use_odometry"),
            odom_from_base=odom_from_base,
            odometry_error=odometry_error,
        )
        thresholds = (self.decision.config.max_position_std, self.decision.config.max_yaw_std_deg)
        tracking.update(predicted is not None, decision.published, decision.uncertainty, thresholds, result)
        decision.tracking = tracking_mode(result)
        self.finish(decision, timings, received)


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros pose_refinement_node``."""
    return run_nodes([PoseRefinementNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
