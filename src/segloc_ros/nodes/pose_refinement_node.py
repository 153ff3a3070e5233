"""pose_refinement_node: class probabilities and pose priors in, the robot's pose in the map and TF ``map -> odom`` out.

Subscribes:
    ``segloc/probabilities`` (sensor_msgs/Image ``16UC{K}``, float16 words, from
    segmentation_node), ``segloc/camera_info`` (the processed pinhole camera),
    ``segloc/pose_priors`` (geometry_msgs/PoseArray of camera poses in ``map_frame``, from
    retrieval_node), ``initialpose`` (geometry_msgs/PoseWithCovarianceStamped of
    ``base_frame`` in ``map_frame``, as RViz's "2D Pose Estimate" sends it), ``/tf`` and
    ``/tf_static`` (camera extrinsics ``base_frame -> camera`` and odometry
    ``odom_frame -> base_frame``), and ``odom_topic`` (nav_msgs/Odometry) when set.

The three inputs of a frame are matched by their exact header stamp (the image stamp, which
the upstream nodes copy) in a small buffer (``pair_buffer_size`` stamps, ``pair_timeout``
seconds); unmatched stamps expire and are counted. A valid ``initialpose`` is the prior of the
next frame that has probabilities and camera_info, instead of waiting for retrieval priors. One
with a wrong frame or NaN/infinite values is rejected with a diagnostic ERROR.

Per frame (in the worker thread) the refinement
(:meth:`segloc.methods.segloc.localizer.SegLocLocalizer.localize_segmentation`) starts from the priors;
on success the camera pose goes to the base with the extrinsics at the image stamp, and its
covariance with it (:mod:`segloc.localize.frames`), and the node publishes, stamped with the
image stamp:

- ``pose`` (geometry_msgs/PoseWithCovarianceStamped of ``base_frame`` in ``map_frame``);
- on ``/tf`` (with ``publish_tf``): ``map -> odom`` from the odometry at the image stamp
  (``use_odometry: true``), or ``map -> base_link`` (``use_odometry: false``), stamped with
  the image stamp plus ``transform_tolerance`` as AMCL does;
- ``segloc/localized`` (std_msgs/Bool) True.

When the refinement fails, or the base pose is less certain than ``max_position_std`` /
``max_yaw_std_deg`` (:func:`segloc.localize.frames.pose_is_confident`), no pose is published:
``segloc/localized`` is False, the diagnostic says ``localization lost: <reason>`` (WARN; ERROR
after ``lost_frames_error`` frames in a row, when the extrinsics are missing or an input is
malformed: every frame gets its answer on ``segloc/localized``), and the last
``map -> odom`` is published again with the new stamp, so that the TF tree stays connected
while odometry carries the robot (AMCL's behaviour). Without odometry nothing is republished:
an old ``map -> base_link`` would be wrong as soon as the robot moves.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool
from tf2_msgs.msg import TFMessage

from segloc.data.tf_buffer import PoseLookupError, normalize_frame
from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3
from segloc.localize.frames import (
    base_covariance_from_camera,
    base_pose_from_camera,
    map_from_odom,
    pose_is_confident,
    pose_uncertainty,
)
from segloc.methods.segloc.packing import packed_probabilities_from_image, segmentation_from_packed
from segloc.models.segmentation import LEVEL_STRIDES
from segloc_ros.conversions import (
    camera_from_camera_info,
    pose_and_covariance_from_msg,
    pose_with_covariance_stamped_msg,
    rigid_from_pose_msg,
    rigid_from_transform_stamped_msg,
    stamp_to_ns,
    tf_message,
    transform_stamped_msg,
)
from segloc_ros.nodes.buffers import NS_PER_S, StampMatcher, TfCache
from segloc_ros.nodes.common import PIPELINE_QOS, STATE_QOS, TF_QOS, TF_STATIC_QOS, LoadedMap, SeglocNode, run_nodes
from segloc_ros.nodes.params import POSE_REFINEMENT_NODE, POSE_REFINEMENT_PARAMETERS

logger = logging.getLogger("segloc")

__all__ = ["PoseRefinementNode", "main"]

PARTS = ("probabilities", "camera_info", "priors")
_INITIALPOSE_QOS = 5


class PoseRefinementNode(SeglocNode):
    """The pose refinement stage of the split SegLoc pipeline (see the module docstring)."""

    node_name = POSE_REFINEMENT_NODE
    parameters = POSE_REFINEMENT_PARAMETERS
    component = "localization"
    needs_network = False

    def __init__(self, node_name: str | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._outputs: dict[str, Any] = {}
        self._inputs: list[Any] = []
        self._tf = TfCache(int(self.param("tf_buffer_duration") * NS_PER_S))
        self._matcher = StampMatcher(PARTS)
        self._reported_expired = 0
        self._initial_pose: Rigid3 | None = None
        self._last_transform: Rigid3 | None = None
        self._consecutive_failures = 0
        self._poses_published = 0
        self._last_pose_stamp = "none"
        self._last_uncertainty: tuple[float, float] | None = None

    # --- interfaces -------------------------------------------------------------------------
    def create_outputs(self) -> None:
        self._outputs = {
            "pose": self.create_publisher(PoseWithCovarianceStamped, "pose", STATE_QOS),
            "localized": self.create_publisher(Bool, "segloc/localized", STATE_QOS),
            "tf": self.create_publisher(TFMessage, "/tf", TF_QOS),
        }
        self._tf = TfCache(int(self.param("tf_buffer_duration") * NS_PER_S))
        self._matcher = StampMatcher(PARTS, self.param("pair_buffer_size"), int(self.param("pair_timeout") * NS_PER_S))
        self._reported_expired = 0
        self._initial_pose = None
        self._last_transform = None
        self._consecutive_failures = 0

    def destroy_outputs(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}

    def create_inputs(self) -> None:
        group = self.input_group

        def subscribe(msg_type: Any, topic: str, callback: Any, qos: Any) -> None:
            self._inputs.append(self.create_subscription(msg_type, topic, callback, qos, callback_group=group))

        subscribe(Image, "segloc/probabilities", self._on_probabilities, PIPELINE_QOS)
        subscribe(CameraInfo, "segloc/camera_info", self._on_camera_info, PIPELINE_QOS)
        subscribe(PoseArray, "segloc/pose_priors", self._on_priors, PIPELINE_QOS)
        subscribe(PoseWithCovarianceStamped, "initialpose", self._on_initialpose, _INITIALPOSE_QOS)
        subscribe(TFMessage, "/tf", lambda msg: self._on_tf(msg, static=False), TF_QOS)
        subscribe(TFMessage, "/tf_static", lambda msg: self._on_tf(msg, static=True), TF_STATIC_QOS)
        if self.param("odom_topic"):
            subscribe(Odometry, self.param("odom_topic"), self._on_odometry, TF_QOS)

    def destroy_inputs(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        self._matcher.clear()

    def extra_diagnostics(self) -> dict[str, Any]:
        return {
            "poses_published": self._poses_published,
            "last_pose_stamp": self._last_pose_stamp,
            "last_position_std_m": self._last_uncertainty[0] if self._last_uncertainty else "none",
            "last_yaw_std_deg": self._last_uncertainty[1] if self._last_uncertainty else "none",
            "consecutive_failures": self._consecutive_failures,
            "frames_waiting": len(self._matcher),
            "frames_expired": self._matcher.expired,
            "late_inputs": self._matcher.late,
            "tf_samples": self._tf.num_samples,
        }

    # --- callbacks (input group: one at a time) ---------------------------------------------
    def _on_probabilities(self, msg: Image) -> None:
        self._matcher.add(stamp_to_ns(msg.header.stamp), "probabilities", (msg, time.perf_counter()))
        self._dispatch()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._matcher.add(stamp_to_ns(msg.header.stamp), "camera_info", msg)
        self._dispatch()

    def _on_priors(self, msg: PoseArray) -> None:
        if normalize_frame(msg.header.frame_id) != self.param("map_frame"):
            self.report("error", f"pose priors ignored: they are in frame {msg.header.frame_id!r}, not {self.param('map_frame')!r}")
            return
        self._matcher.add(stamp_to_ns(msg.header.stamp), "priors", msg)
        self._dispatch()

    def _on_initialpose(self, msg: PoseWithCovarianceStamped) -> None:
        map_frame = self.param("map_frame")
        try:
            if normalize_frame(msg.header.frame_id) != map_frame:
                raise SeglocError(f"it is in frame {msg.header.frame_id!r}; send the pose of {self.param('base_frame')} in {map_frame!r}")
            world_from_base, covariance = pose_and_covariance_from_msg(msg)
            if not np.all(np.isfinite(covariance)):
                raise SeglocError("its covariance has NaN or infinite values")
        except SeglocError as exc:
            self.report("error", f"initialpose rejected: {exc}")
            return
        self._initial_pose = world_from_base
        self.report("ok", "initialpose accepted: it is the prior of the next frame")
        self._dispatch()

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        own = (self.param("map_frame"), self.param("odom_frame") if self.param("use_odometry") else self.param("base_frame"))
        for transform in msg.transforms:
            parent, child = normalize_frame(transform.header.frame_id), normalize_frame(transform.child_frame_id)
            if (parent, child) == own or not parent or not child or parent == child:
                continue  # our own output, or not a transform
            try:
                rigid = rigid_from_transform_stamped_msg(transform)
            except SeglocError as exc:
                self.report("error", f"TF {parent} -> {child} ignored: {exc}")
                continue
            self._tf.add(parent, child, rigid, None if static else stamp_to_ns(transform.header.stamp))

    def _on_odometry(self, msg: Odometry) -> None:
        try:
            odom_from_base = rigid_from_pose_msg(msg.pose.pose)
        except SeglocError as exc:
            self.report("error", f"odometry ignored: {exc}")
            return
        self._tf.add(msg.header.frame_id, msg.child_frame_id or self.param("base_frame"), odom_from_base, stamp_to_ns(msg.header.stamp))

    def _dispatch(self) -> None:
        """Hand complete frames to the worker: with a pending initialpose the newest frame needs no priors."""
        if self._initial_pose is not None:
            for stamp, parts in self._matcher.take(("probabilities", "camera_info"), limit=1, newest=True):
                self.submit((stamp, parts, self._initial_pose))
                self._initial_pose = None
        for stamp, parts in self._matcher.take(PARTS):
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
        except SeglocError as exc:  # a bad input: its message says what was wrong
            self._lost(frame[0], str(exc), error=True)
        except Exception as exc:
            logger.error("%s: unexpected error while localizing", self.get_name(), exc_info=exc)
            self._lost(frame[0], f"unexpected {type(exc).__name__}: {exc}", error=True)

    def _localize(self, frame: tuple[int, dict[str, Any], Rigid3 | None], loaded: LoadedMap) -> None:
        stamp_ns, parts, initial_pose = frame
        probabilities_msg, received = parts["probabilities"]
        timings: dict[str, float] = {"queue": time.perf_counter() - received}
        base_frame = self.param("base_frame")
        camera_frame = self.param("camera_frame") or probabilities_msg.header.frame_id
        timeout = self.param("tf_timeout")

        start = time.perf_counter()
        try:
            base_from_cam = self._tf.lookup(base_frame, camera_frame, stamp_ns, timeout)
        except PoseLookupError as exc:
            self._lost(stamp_ns, f"no camera extrinsics {base_frame} -> {camera_frame} at the image stamp: {exc}", error=True)
            return
        timings["tf"] = time.perf_counter() - start
        if initial_pose is not None:
            priors = [(initial_pose * base_from_cam).inverse()]
        else:
            priors = [rigid_from_pose_msg(pose).inverse() for pose in parts["priors"].poses]
            if not priors:
                self._lost(stamp_ns, "the pose priors are empty (retrieval found no mapping image)")
                return

        start = time.perf_counter()
        segmentation = segmentation_from_packed(packed_probabilities_from_image(probabilities_msg), None, LEVEL_STRIDES)
        camera = camera_from_camera_info(parts["camera_info"])
        timings["decode"] = time.perf_counter() - start
        result = loaded.localizer.localize_segmentation(segmentation, camera, priors, timings)
        if not result.success:
            self._lost(stamp_ns, result.info.get("failure_reason") or "refinement failed", timings=timings)
            return

        if result.covariance is None:
            self._lost(
                stamp_ns, "the localizer gives no covariance (is localize.refine false?): nothing to check the pose with", timings=timings
            )
            return
        world_from_cam = result.cam_from_world.inverse()
        world_from_base = base_pose_from_camera(world_from_cam, base_from_cam)
        covariance = base_covariance_from_camera(result.covariance, world_from_cam, base_from_cam)
        max_position_std, max_yaw_std = self.param("max_position_std"), self.param("max_yaw_std_deg")
        if not pose_is_confident(covariance, max_position_std, max_yaw_std):
            try:
                position_std, yaw_std = pose_uncertainty(covariance)
                detail = f"position std {position_std:.3f} m (max {max_position_std:g}), yaw std {yaw_std:.2f} deg (max {max_yaw_std:g})"
            except SeglocError as exc:
                detail = str(exc)
            self._lost(stamp_ns, f"pose not confident: {detail}", timings=timings)
            return

        start = time.perf_counter()
        map_frame = self.param("map_frame")
        self._outputs["pose"].publish(pose_with_covariance_stamped_msg(world_from_base, covariance, stamp_ns, map_frame))
        self._poses_published += 1
        self._last_pose_stamp = f"{stamp_ns / NS_PER_S:.9f}"
        warning = self._publish_transform(stamp_ns, world_from_base, base_frame)
        self._outputs["localized"].publish(Bool(data=True))
        timings["publish"] = time.perf_counter() - start
        timings["total"] = time.perf_counter() - received
        self.timings.add(timings)
        self._consecutive_failures = 0
        self._last_uncertainty = pose_uncertainty(covariance)
        if warning:
            self.report("warn", warning)
        else:
            self.report("ok", "localized")

    def _publish_transform(self, stamp_ns: int, world_from_base: Rigid3, base_frame: str) -> str | None:
        """Publish the new TF edge; a warning when the odometry at the stamp is missing (the pose is published anyway)."""
        if not self.param("publish_tf"):
            return None
        map_frame = self.param("map_frame")
        if not self.param("use_odometry"):
            self._send_transform(world_from_base, stamp_ns, map_frame, base_frame)
            return None
        odom_frame = self.param("odom_frame")
        try:
            odom_from_base = self._tf.lookup(odom_frame, base_frame, stamp_ns, self.param("tf_timeout"))
        except PoseLookupError as exc:
            self._republish(stamp_ns)
            return f"pose published, but {map_frame} -> {odom_frame} not updated: no odometry {odom_frame} -> {base_frame} at the image stamp: {exc}"
        self._last_transform = map_from_odom(world_from_base, odom_from_base)
        self._send_transform(self._last_transform, stamp_ns, map_frame, odom_frame)
        return None

    def _send_transform(self, parent_from_child: Rigid3, stamp_ns: int, parent: str, child: str) -> None:
        stamp = stamp_ns + int(round(self.param("transform_tolerance") * NS_PER_S))
        self._outputs["tf"].publish(tf_message([transform_stamped_msg(parent_from_child, stamp, parent, child)]))

    def _republish(self, stamp_ns: int) -> None:
        """Publish the last ``map -> odom`` again with a new stamp (nothing without odometry or before a first pose)."""
        if self.param("publish_tf") and self.param("use_odometry") and self._last_transform is not None:
            self._send_transform(self._last_transform, stamp_ns, self.param("map_frame"), self.param("odom_frame"))

    def _lost(self, stamp_ns: int, reason: str, error: bool = False, timings: dict[str, float] | None = None) -> None:
        """No pose for this frame: say so on segloc/localized and /diagnostics, keep the last map -> odom alive."""
        self._consecutive_failures += 1
        self._republish(stamp_ns)
        self._outputs["localized"].publish(Bool(data=False))
        if timings is not None:
            self.timings.add(timings)
        level = "error" if error or self._consecutive_failures >= self.param("lost_frames_error") else "warn"
        self.report(level, f"localization lost: {reason}")


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros pose_refinement_node``."""
    return run_nodes([PoseRefinementNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
