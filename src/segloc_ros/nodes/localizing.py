"""The base of the nodes that publish the robot's pose: TF and odometry in, pose, ``map -> odom`` and the lost signal out.

:class:`LocalizingNode` (a :class:`~segloc_ros.nodes.common.SeglocNode`) is what
pose_refinement_node (the last stage of split SegLoc) and localizer_node (any method in one
process) share:

Inputs (on activate, besides the node's own): ``/tf`` and ``/tf_static`` (camera extrinsics
``base_frame -> camera`` and odometry ``odom_frame -> base_frame``), ``odom_topic``
(nav_msgs/Odometry) when set, and ``initialpose`` (geometry_msgs/PoseWithCovarianceStamped of
``base_frame`` in ``map_frame``, as RViz's "2D Pose Estimate" sends it): a valid one is the prior
of the next frame (:meth:`LocalizingNode.take_initial_pose`); one with a wrong frame or
NaN/infinite values is rejected with a diagnostic ERROR.

Outputs, stamped with the image stamp, from the library's publishing decision
(:class:`segloc.localize.pipeline.PublishDecision`, configured by the node's parameters):

- ``pose`` (geometry_msgs/PoseWithCovarianceStamped of ``base_frame`` in ``map_frame``);
- on ``/tf`` (with ``publish_tf``): ``map -> odom`` from the odometry at the image stamp
  (``use_odometry: true``), or ``map -> base_link`` (``use_odometry: false``), stamped with the
  image stamp plus ``transform_tolerance`` as AMCL does; for a lost frame the last
  ``map -> odom`` again (never an old ``map -> base_link``);
- ``segloc/localized`` (std_msgs/Bool): every frame gets its verdict, and when no frame has been
  answered for ``stale_timeout`` seconds (the camera or an upstream node stopped) it goes False
  once with a WARN ``localization stale``: a consumer never keeps trusting an old True;
- the diagnostic: ``localized``, or ``localization lost: <reason>`` (WARN; ERROR after
  ``lost_frames_error`` frames in a row, and for a bad input or missing extrinsics); its
  ``last_frame_mode`` says how the last frame's pose was found: ``tracked`` (refined from the
  pose odometry predicts, :mod:`segloc.localize.tracking`), ``relocalized`` (tracking failed,
  then retrieval in the same frame) or ``localized`` (no tracking tried).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from std_msgs.msg import Bool
from tf2_msgs.msg import TFMessage

from segloc.data.tf_buffer import PoseLookupError, normalize_frame
from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3
from segloc.localize.pipeline import Decision, PublishConfig, PublishDecision
from segloc_ros.conversions import (
    pose_and_covariance_from_msg,
    pose_with_covariance_stamped_msg,
    rigid_from_pose_msg,
    rigid_from_transform_stamped_msg,
    stamp_to_ns,
    tf_message,
    transform_stamped_msg,
)
from segloc_ros.nodes.buffers import NS_PER_S, TfCache
from segloc_ros.nodes.common import STATE_QOS, TF_QOS, TF_STATIC_QOS, SeglocNode

logger = logging.getLogger("segloc")

__all__ = ["LocalizingNode"]

_INITIALPOSE_QOS = 5


class LocalizingNode(SeglocNode):
    """Base of the nodes that publish the robot's pose (see the module docstring).

    Subclasses call :meth:`create_localizing_outputs` / :meth:`create_localizing_inputs` from
    their ``create_outputs`` / ``create_inputs``, look the extrinsics up with
    :meth:`camera_extrinsics`, and end every frame with :meth:`finish` (a
    :class:`~segloc.localize.pipeline.Decision`) or :meth:`lost`.
    """

    def __init__(self, node_name: str | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._outputs: dict[str, Any] = {}
        self._localizing_inputs: list[Any] = []
        self._tf = TfCache(int(self.param("tf_buffer_duration") * NS_PER_S))
        self._initial_pose: Rigid3 | None = None
        self.decision = PublishDecision(self.publish_config())
        self._poses_published = 0
        self._last_pose_stamp = "none"
        self._last_uncertainty: tuple[float, float] | None = None
        self._last_frame_mode = "none"
        self._last_verdict_ns: int | None = None
        self._stale = False
        self._stale_timer = self.create_timer(0.25, self._check_stale)

    # --- parameters -------------------------------------------------------------------------
    def publish_config(self) -> PublishConfig:
        """The publishing thresholds from the parameters (read per frame: a change applies to the next frame)."""
        return PublishConfig(self.param("max_position_std"), self.param("max_yaw_std_deg"), self.param("lost_frames_error"))

    # --- interfaces -------------------------------------------------------------------------
    def create_localizing_outputs(self) -> None:
        """The pose, localized and /tf publishers; a fresh TF cache and publishing decision."""
        self._outputs = {
            "pose": self.create_publisher(PoseWithCovarianceStamped, "pose", STATE_QOS),
            "localized": self.create_publisher(Bool, "segloc/localized", STATE_QOS),
            "tf": self.create_publisher(TFMessage, "/tf", TF_QOS),
        }
        self._tf = TfCache(int(self.param("tf_buffer_duration") * NS_PER_S))
        self._initial_pose = None
        self.decision = PublishDecision(self.publish_config())
        self._last_verdict_ns, self._stale = None, False

    def destroy_outputs(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}

    def create_localizing_inputs(self) -> None:
        """Subscribe /tf, /tf_static, initialpose and (when set) odom_topic, in the input group."""
        group = self.input_group

        def subscribe(msg_type: Any, topic: str, callback: Any, qos: Any) -> None:
            self._localizing_inputs.append(self.create_subscription(msg_type, topic, callback, qos, callback_group=group))

        subscribe(PoseWithCovarianceStamped, "initialpose", self._on_initialpose, _INITIALPOSE_QOS)
        subscribe(TFMessage, "/tf", lambda msg: self._on_tf(msg, static=False), TF_QOS)
        subscribe(TFMessage, "/tf_static", lambda msg: self._on_tf(msg, static=True), TF_STATIC_QOS)
        if self.param("odom_topic"):
            subscribe(Odometry, self.param("odom_topic"), self._on_odometry, TF_QOS)

    def destroy_localizing_inputs(self) -> None:
        for subscription in self._localizing_inputs:
            self.destroy_subscription(subscription)
        self._localizing_inputs = []

    def localizing_diagnostics(self) -> dict[str, Any]:
        return {
            "poses_published": self._poses_published,
            "last_pose_stamp": self._last_pose_stamp,
            "last_position_std_m": self._last_uncertainty[0] if self._last_uncertainty else "none",
            "last_yaw_std_deg": self._last_uncertainty[1] if self._last_uncertainty else "none",
            "consecutive_failures": self.decision.consecutive_failures,
            "last_frame_mode": self._last_frame_mode,
            "tf_samples": self._tf.num_samples,
        }

    # --- callbacks (input group: one at a time) ---------------------------------------------
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
        self.on_initial_pose()

    def on_initial_pose(self) -> None:
        """Called when an initialpose was accepted (e.g. to dispatch a frame waiting for priors)."""

    def has_initial_pose(self) -> bool:
        return self._initial_pose is not None

    def take_initial_pose(self) -> Rigid3 | None:
        """The accepted initialpose (``world_from_base``), once: the next frame starts from it."""
        pose, self._initial_pose = self._initial_pose, None
        return pose

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

    def _check_stale(self) -> None:
        """Timer: no verdict for ``stale_timeout`` seconds while active -> localized False and a WARN, once."""
        timeout = self.param("stale_timeout")
        last = self._last_verdict_ns
        if self._state != "active" or timeout <= 0 or last is None or self._stale or "localized" not in self._outputs:
            return
        silent_s = (self.get_clock().now().nanoseconds - last) / NS_PER_S
        if silent_s > timeout:
            self._stale = True
            self._outputs["localized"].publish(Bool(data=False))
            self.report(
                "warn",
                f"localization stale: no frame answered for {silent_s:.1f} s (stale_timeout {timeout:g} s); "
                "is the camera publishing, and are the upstream nodes running?",
            )

    # --- per frame (worker thread) ----------------------------------------------------------
    def camera_extrinsics(self, camera_frame: str, stamp_ns: int) -> Rigid3:
        """``base_from_cam`` at the stamp (``camera_frame`` parameter, else the images' frame).

        Raises:
            PoseLookupError: not known at the stamp (within ``tf_timeout``).
        """
        base_frame, camera_frame = self.param("base_frame"), self.param("camera_frame") or camera_frame
        try:
            return self._tf.lookup(base_frame, camera_frame, stamp_ns, self.param("tf_timeout"))
        except PoseLookupError as exc:
            raise PoseLookupError(f"no camera extrinsics {base_frame} -> {camera_frame} at the image stamp: {exc}", exc.reason) from None

    def odometry(self, stamp_ns: int) -> tuple[Rigid3 | None, str | None]:
        """``(odom_from_base, None)`` at the stamp, or ``(None, why)`` (also without ``use_odometry``)."""
        if not self.param("use_odometry"):
            return None, "use_odometry is false"
        try:
            return self._tf.lookup(self.param("odom_frame"), self.param("base_frame"), stamp_ns, self.param("tf_timeout")), None
        except PoseLookupError as exc:
            return None, f"{self.param('odom_frame')} -> {self.param('base_frame')}: {exc}"

    def lost(self, stamp_ns: int, reason: str, error: bool = False, timings: dict[str, float] | None = None) -> None:
        """No pose for this frame (a bad input, missing extrinsics): the decision's lost frame, published."""
        self.decision.config = self.publish_config()
        self.finish(self.decision.lost(stamp_ns, reason, error=error, use_odometry=self.param("use_odometry")), timings)

    def finish(self, decision: Decision, timings: dict[str, float] | None = None, received: float | None = None) -> None:
        """Publish a frame's decision: pose, TF edge, localized, diagnostics; record the stage times."""
        start = time.perf_counter()
        map_frame = self.param("map_frame")
        if decision.published:
            self._outputs["pose"].publish(
                pose_with_covariance_stamped_msg(decision.world_from_base, decision.covariance, decision.stamp_ns, map_frame)
            )
            self._poses_published += 1
            self._last_pose_stamp = f"{decision.stamp_ns / NS_PER_S:.9f}"
            self._last_uncertainty = decision.uncertainty
        if decision.transform is not None and self.param("publish_tf"):
            child = self.param("odom_frame") if decision.transform_kind == "map_from_odom" else self.param("base_frame")
            stamp = decision.stamp_ns + int(round(self.param("transform_tolerance") * NS_PER_S))
            self._outputs["tf"].publish(tf_message([transform_stamped_msg(decision.transform, stamp, map_frame, child)]))
        self._outputs["localized"].publish(Bool(data=decision.published))
        self._last_frame_mode = decision.tracking
        self._last_verdict_ns, self._stale = self.get_clock().now().nanoseconds, False
        if timings is not None:
            timings["publish"] = time.perf_counter() - start
            if received is not None:
                timings["total"] = time.perf_counter() - received
            self.timings.add(timings)
        self.report(decision.level, decision.message)
