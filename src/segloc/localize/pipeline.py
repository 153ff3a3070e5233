"""The localization pipeline every method runs, on a robot and in the evaluator.

::

    image, camera (any COLMAP model, any size)
        │  CameraIngest: undistort into the pinhole camera, shrink to the localizer's ingest_max_edge
        ▼
    localizer.localize(image, camera, prior)        any registered method (segloc.methods)
      or localizer.track(image, camera, predicted)  tracking (segloc.localize.tracking): when the last
        │                                           pose was confident and odometry gives the motion
        │  LocalizationResult: cam_from_world, covariance, timings, failure reason
        ▼
    PublishDecision: confidence gate, base pose from the camera extrinsics,
        │            map -> odom from the odometry at the image stamp, the lost signal
        ▼
    Decision: what a node publishes (pose, TF edge, localized, diagnostic level and message)

:meth:`LocalizationPipeline.localize` is what the evaluator runs for each query
(:func:`segloc.evaluate.run.evaluate_localizer`); :meth:`LocalizationPipeline.process` is what
``localizer_node`` runs for each frame. A split deployment (SegLoc's three nodes) runs the same
stages in separate processes (:class:`segloc.methods.segloc.localizer.SegLocLocalizer`'s
``segment``, ``retrieval`` and ``localize_segmentation``) and the same :class:`PublishDecision`
at the end, so that offline evaluation measures what the robot computes.

Frames and covariances follow :mod:`segloc.localize.frames`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.localize.base import LocalizationResult, Localizer
from segloc.localize.frames import base_covariance_from_camera, base_pose_from_camera, map_from_odom, pose_is_confident, pose_uncertainty
from segloc.localize.ingest import CameraIngest
from segloc.localize.tracking import Tracker, TrackingConfig, TrackingState, tracking_mode
from segloc.runtime.session import SessionStatus, inference_statuses

logger = logging.getLogger("segloc")

__all__ = ["TRANSFORM_KINDS", "Decision", "LocalizationPipeline", "Odometry", "PublishConfig", "PublishDecision"]

#: The odometry at an image stamp: ``(odom_from_base, None)``, or ``(None, why it is missing)``.
Odometry = tuple[Rigid3 | None, str | None]

#: What :attr:`Decision.transform` is: ``map_from_odom`` (the correction, with odometry) or
#: ``map_from_base`` (the base pose, without odometry).
TRANSFORM_KINDS = ("map_from_odom", "map_from_base")


@dataclass
class PublishConfig:
    """When a pose is published, and when a lost robot is an error.

    Attributes:
        max_position_std: largest published position standard deviation, metres (worst
            direction of the base pose's covariance).
        max_yaw_std_deg: largest published yaw standard deviation, degrees.
        lost_frames_error: consecutive frames without a pose after which "localization lost"
            is an ERROR (a WARN before).
    """

    max_position_std: float = option(0.5, gt=0)
    max_yaw_std_deg: float = option(10.0, gt=0)
    lost_frames_error: int = option(5, ge=1)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class Decision:
    """What to publish for one frame.

    Attributes:
        stamp_ns: the image stamp (every output carries it).
        published: a pose is published (``world_from_base`` and ``covariance`` are set).
        world_from_base: the robot base's pose in the map.
        covariance: (6, 6) covariance of ``world_from_base`` (:mod:`segloc.localize.frames`).
        transform: the TF edge to send at the image stamp, or None: the new ``map -> odom``
            (or ``map -> base`` without odometry), or, for a lost frame, the last
            ``map -> odom`` again so that the TF tree stays connected while odometry carries
            the robot (AMCL's behaviour); never an old ``map -> base``.
        transform_kind: one of :data:`TRANSFORM_KINDS` (None without a transform).
        level: diagnostic level, ``ok``, ``warn`` or ``error``.
        message: diagnostic message (``localized``, ``localization lost: <reason>``, ...).
        uncertainty: (position std m, yaw std deg) of a published pose.
        result: the localizer's result (None when it did not run).
        tracking: how the pose was found: ``tracked``, ``relocalized`` (tracking failed, then
            relocalization in the same frame) or ``localized`` (no tracking tried)
            (:func:`segloc.localize.tracking.tracking_mode`).
    """

    stamp_ns: int
    published: bool
    world_from_base: Rigid3 | None = None
    covariance: np.ndarray | None = None
    transform: Rigid3 | None = None
    transform_kind: str | None = None
    level: str = "ok"
    message: str = "localized"
    uncertainty: tuple[float, float] | None = None
    result: LocalizationResult | None = None
    tracking: str = "localized"


class PublishDecision:
    """The publishing decision of a localizer on a robot (stateful: the lost count, the last ``map -> odom``).

    Args:
        config: the thresholds.
    """

    def __init__(self, config: PublishConfig | None = None):
        self.config = config or PublishConfig()
        self.consecutive_failures = 0
        self.last_map_from_odom: Rigid3 | None = None

    def reset(self) -> None:
        """Forget the lost count and the last ``map -> odom`` (a new map, a new run)."""
        self.consecutive_failures = 0
        self.last_map_from_odom = None

    def lost(
        self, stamp_ns: int, reason: str, *, error: bool = False, use_odometry: bool = True, result: LocalizationResult | None = None
    ) -> Decision:
        """No pose for this frame: WARN (ERROR after ``lost_frames_error`` in a row, or when ``error``), the last ``map -> odom`` again."""
        self.consecutive_failures += 1
        level = "error" if error or self.consecutive_failures >= self.config.lost_frames_error else "warn"
        transform = self.last_map_from_odom if use_odometry else None
        return Decision(
            stamp_ns,
            False,
            transform=transform,
            transform_kind="map_from_odom" if transform is not None else None,
            level=level,
            message=f"localization lost: {reason}",
            result=result,
        )

    def decide(
        self,
        stamp_ns: int,
        result: LocalizationResult,
        base_from_cam: Rigid3,
        *,
        use_odometry: bool = True,
        odom_from_base: Rigid3 | None = None,
        odometry_error: str | None = None,
    ) -> Decision:
        """The decision for a localizer's result.

        Args:
            stamp_ns: the image stamp.
            result: the localizer's result for the frame.
            base_from_cam: the camera extrinsics at the stamp (identity: the camera is the base).
            use_odometry: publish ``map -> odom`` (True) or ``map -> base`` (False).
            odom_from_base: the odometry at the stamp (with ``use_odometry``); None when it is
                missing: the pose is published with a WARN, ``map -> odom`` is not updated.
            odometry_error: why the odometry is missing (for the WARN).
        """
        if not result.success:
            return self.lost(stamp_ns, result.info.get("failure_reason") or "localization failed", use_odometry=use_odometry, result=result)
        if result.covariance is None:
            return self.lost(
                stamp_ns,
                "the localizer gives no covariance (is localize.refine false?): nothing to check the pose with",
                use_odometry=use_odometry,
                result=result,
            )
        world_from_cam = result.cam_from_world.inverse()
        world_from_base = base_pose_from_camera(world_from_cam, base_from_cam)
        covariance = base_covariance_from_camera(result.covariance, world_from_cam, base_from_cam)
        config = self.config
        if not pose_is_confident(covariance, config.max_position_std, config.max_yaw_std_deg):
            try:
                position_std, yaw_std = pose_uncertainty(covariance)
                detail = (
                    f"position std {position_std:.3f} m (max {config.max_position_std:g}), "
                    f"yaw std {yaw_std:.2f} deg (max {config.max_yaw_std_deg:g})"
                )
            except SeglocError as exc:
                detail = str(exc)
            return self.lost(stamp_ns, f"pose not confident: {detail}", use_odometry=use_odometry, result=result)

        self.consecutive_failures = 0
        decision = Decision(stamp_ns, True, world_from_base, covariance, uncertainty=pose_uncertainty(covariance), result=result)
        if not use_odometry:
            decision.transform, decision.transform_kind = world_from_base, "map_from_base"
        elif odom_from_base is None:
            decision.transform = self.last_map_from_odom
            decision.transform_kind = "map_from_odom" if self.last_map_from_odom is not None else None
            decision.level = "warn"
            decision.message = (
                f"pose published, but map -> odom not updated: no odometry at the image stamp: {odometry_error or 'none given'}"
            )
        else:
            self.last_map_from_odom = map_from_odom(world_from_base, odom_from_base)
            decision.transform, decision.transform_kind = self.last_map_from_odom, "map_from_odom"
        return decision


@dataclass
class LocalizationPipeline:
    """Ingest, a method's localizer and the publishing decision (module docstring).

    Args:
        localizer: any :class:`~segloc.localize.base.Localizer`; its optional
            ``ingest_max_edge`` attribute (the longest image side it works at) sets how far
            images are shrunk before it sees them.
        publish: the publishing thresholds.
        max_edge: overrides the localizer's ``ingest_max_edge`` (0: keep the image size).
        prior_use: what the method does with a prior (:data:`segloc.methods.registry.PRIOR_USES`);
            with ``none`` a prior is not passed on.
        tracks: the method tracks (its registry entry's ``tracks``); its localizer must then be a
            :class:`~segloc.localize.tracking.Tracker`. False: every frame relocalizes.
        tracking_config: when :meth:`process` tracks (:class:`~segloc.localize.tracking.TrackingConfig`).
    """

    localizer: Localizer
    publish: PublishConfig = field(default_factory=PublishConfig)
    max_edge: int | None = None
    prior_use: str = "starts"
    tracks: bool = False
    tracking_config: TrackingConfig = field(default_factory=TrackingConfig)
    ingest: CameraIngest = field(init=False)
    decision: PublishDecision = field(init=False)
    tracking: TrackingState = field(init=False)

    def __post_init__(self) -> None:
        max_edge = self.max_edge if self.max_edge is not None else getattr(self.localizer, "ingest_max_edge", None)
        self.ingest = CameraIngest(max_edge or None)
        self.decision = PublishDecision(self.publish)
        if self.tracks and not isinstance(self.localizer, Tracker):
            raise SeglocError(f"method {self.method!r} says it tracks, but its localizer {type(self.localizer).__name__} has no track()")
        self.tracking = TrackingState(self.tracking_config, self.tracks)

    @property
    def method(self) -> str:
        return getattr(self.localizer, "method", type(self.localizer).__name__)

    def localize(
        self, image: np.ndarray, camera: Camera, prior: Rigid3 | None = None, predicted: Rigid3 | None = None
    ) -> LocalizationResult:
        """Ingest ``image`` (H, W[, 3]) taken by ``camera``, then the localizer; ``timings`` start with ``ingest``.

        Args:
            image: the camera image, RGB uint8.
            camera: its camera, any COLMAP model, of the image's size.
            prior: an optional ``cam_from_world`` guess, for methods that take one.
            predicted: a ``cam_from_world`` to track from (the localizer's ``track``, which
                relocalizes when tracking fails); ignored by a method that does not track, or
                when ``prior`` is given.

        Raises:
            SeglocError: an image that does not fit its camera, or the localizer's own errors.
        """
        start = time.perf_counter()
        image, camera = self.ingest(image, camera)
        ingest_s = time.perf_counter() - start
        if prior is not None and self.prior_use != "none":
            result = self.localizer.localize(image, camera, prior=prior)
        elif predicted is not None and self.tracks:
            result = self.localizer.track(image, camera, predicted)  # type: ignore[attr-defined]
        else:
            result = self.localizer.localize(image, camera)
        result.timings = {"ingest": ingest_s, **result.timings}
        return result

    def process(
        self,
        image: np.ndarray,
        camera: Camera,
        stamp_ns: int,
        base_from_cam: Rigid3 | None = None,
        *,
        use_odometry: bool = True,
        odometry: Odometry | Callable[[], Odometry] = (None, None),
        prior_world_from_base: Rigid3 | None = None,
    ) -> Decision:
        """One frame on a robot: localize, then decide what to publish (a bad input is a lost frame at ERROR).

        Args:
            image, camera: as :meth:`localize`.
            stamp_ns: the image stamp.
            base_from_cam: the camera extrinsics at the stamp; None: the camera is the base.
            use_odometry: see :meth:`PublishDecision.decide`.
            odometry: ``(odom_from_base, why it is missing)`` at the stamp, or a function giving
                it, called after localization (odometry at the image stamp has usually arrived
                by then).
            prior_world_from_base: a base pose in the map to start from (``initialpose``); it
                replaces tracking for this frame.

        With tracking armed (:mod:`segloc.localize.tracking`) and odometry, the odometry is
        looked up before localization and the frame tracks from the pose it predicts; the
        decision's mode, ``tracked`` or ``relocalized``
        (:func:`~segloc.localize.tracking.tracking_mode`) is in ``decision.tracking``.
        """
        base_from_cam = base_from_cam if base_from_cam is not None else Rigid3.identity()
        prior = None if prior_world_from_base is None else (prior_world_from_base * base_from_cam).inverse()
        if prior is not None:
            self.tracking.reset()
        looked_up: Odometry | None = None
        predicted = None
        if prior is None and use_odometry and self.tracking.enabled and self.tracking.armed:
            looked_up = odometry() if callable(odometry) else odometry
            predicted = self.tracking.predict(self.decision.last_map_from_odom, looked_up[0], base_from_cam)
        try:
            result = self.localize(image, camera, prior, predicted)
        except SeglocError as exc:
            decision = self.decision.lost(stamp_ns, str(exc), error=True, use_odometry=use_odometry)
            self.tracking.update(predicted is not None, False, None, self._publish_thresholds(), None)
            return decision
        odom_from_base, odometry_error = looked_up if looked_up is not None else (odometry() if callable(odometry) else odometry)
        decision = self.decision.decide(
            stamp_ns, result, base_from_cam, use_odometry=use_odometry, odom_from_base=odom_from_base, odometry_error=odometry_error
        )
        self.tracking.update(predicted is not None, decision.published, decision.uncertainty, self._publish_thresholds(), result)
        decision.tracking = tracking_mode(result)
        return decision

    def _publish_thresholds(self) -> tuple[float, float]:
        return self.decision.config.max_position_std, self.decision.config.max_yaw_std_deg

    def inference_status(self) -> list[SessionStatus]:
        """How the localizer's networks run (:func:`segloc.runtime.session.inference_statuses`)."""
        return inference_statuses(self.localizer)

    def describe(self) -> dict[str, Any]:
        """A summary for logs and diagnostics."""
        return {
            "method": self.method,
            "ingest_max_edge": self.ingest.max_edge or 0,
            **vars(self.publish),
            "tracking": self.tracking.enabled,
        }
