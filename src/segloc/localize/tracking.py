"""Tracking: refine from the pose odometry predicts, relocalize only when that fails.

When the last published pose was confident and odometry gives the motion since then, the
camera pose of a new frame is predicted as::

    cam_from_world = (map_from_odom(last) * odom_from_base(now) * base_from_cam)^-1

and a method that tracks (its registry entry's ``tracks``, a localizer with ``track``, see
:class:`Tracker`) refines from it with one start and a cheaper schedule, and falls back to full
relocalization (retrieval, several starts) in the same frame when that refinement fails its
checks. :class:`TrackingState` is the per-robot state (armed or not, consecutive failures)
shared by :class:`segloc.localize.pipeline.LocalizationPipeline` (``localizer_node``, the
evaluator) and the split pipeline's ``pose_refinement_node``.

Tracking is off (every frame relocalizes) until a pose is published whose uncertainty is within
the tracking thresholds, and again after ``max_failures`` consecutive frames in which tracking
was tried and no pose was published (the relocalization of the same frame failed too), or when
a published pose is not confident enough to predict from; a published relocalization arms it
again. Without odometry at the frame's stamp the frame relocalizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from segloc.config import check_options, option
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.localize.base import LocalizationResult

__all__ = ["TRACKING_MODES", "Tracker", "TrackingConfig", "TrackingState", "tracking_mode"]

#: ``info["tracking"]["mode"]`` of a result: refined from the prediction (``tracked``), or
#: relocalized after a failed tracking attempt in the same frame (``relocalized``). A frame
#: that did not try tracking has no ``info["tracking"]``.
TRACKING_MODES = ("tracked", "relocalized")


@dataclass
class TrackingConfig:
    """When the pipeline tracks (the ``tracking:`` section of a config file).

    The cheaper schedule of the tracked refinement and how far it may move from the prediction
    are options of each method's ``localize:`` section (SegLoc: ``localize.tracking``).

    Attributes:
        enabled: track when the method can and odometry is there; false: every frame relocalizes.
        max_failures: consecutive frames that tried tracking and published no pose after
            which tracking is off until a relocalization is published.
        max_position_std: a published pose arms tracking only when its position standard
            deviation (metres, worst direction) is at most this; null: the publishing
            threshold (``max_position_std`` of the publishing decision).
        max_yaw_std_deg: the same for the yaw standard deviation (degrees); null: the
            publishing threshold.
    """

    enabled: bool = True
    max_failures: int = option(3, ge=1)
    max_position_std: float | None = option(None, gt=0, note="null: the publishing threshold")
    max_yaw_std_deg: float | None = option(None, gt=0, note="null: the publishing threshold")

    def __post_init__(self) -> None:
        check_options(self)


@runtime_checkable
class Tracker(Protocol):
    """A localizer that can track: what a method whose registry entry has ``tracks = True`` loads."""

    def track(self, image: np.ndarray, camera: Camera, predicted: Rigid3) -> LocalizationResult:
        """Localize ``image`` (H, W, 3) RGB uint8 starting from ``predicted`` (a ``cam_from_world``).

        Refine from the prediction with one start and the method's tracking schedule; when that
        fails, relocalize in the same call (as ``localize`` without a prior). The result's
        ``info["tracking"]`` holds ``mode`` (one of :data:`TRACKING_MODES`) and, after a
        fallback, ``failure`` (why tracking failed).
        """
        ...


def tracking_mode(result: LocalizationResult | None) -> str:
    """``tracked``, ``relocalized`` (tracking failed, then full relocalization) or ``localized`` (tracking not tried)."""
    tracking = None if result is None else result.info.get("tracking")
    return tracking["mode"] if isinstance(tracking, dict) and tracking.get("mode") in TRACKING_MODES else "localized"


class TrackingState:
    """Whether the next frame may track, and from what (see the module docstring).

    Args:
        config: the options.
        tracks: the method can track (its localizer is a :class:`Tracker`); False: never.
    """

    def __init__(self, config: TrackingConfig | None = None, tracks: bool = False):
        self.config = config or TrackingConfig()
        self.tracks = tracks
        self.armed = False
        self.failures = 0
        self.frames = {"tracked": 0, "relocalized": 0, "localized": 0}

    @property
    def enabled(self) -> bool:
        return self.tracks and self.config.enabled

    def reset(self) -> None:
        """Tracking off until a pose is published (a new map, a new run, a manual initial pose)."""
        self.armed, self.failures = False, 0

    def predict(self, map_from_odom: Rigid3 | None, odom_from_base: Rigid3 | None, base_from_cam: Rigid3) -> Rigid3 | None:
        """The predicted ``cam_from_world``, or None when the frame must relocalize (not armed, no odometry, no ``map -> odom``)."""
        if not (self.enabled and self.armed) or map_from_odom is None or odom_from_base is None:
            return None
        prediction = (map_from_odom * odom_from_base * base_from_cam).inverse()
        return prediction if np.all(np.isfinite(prediction.matrix())) else None

    def update(
        self, tried: bool, published: bool, uncertainty: tuple[float, float] | None, publish_thresholds: tuple[float, float], result: Any
    ) -> None:
        """After a frame: arm, count a failure, or disarm.

        Args:
            tried: tracking was tried in this frame (a prediction was given).
            published: the frame's pose was published.
            uncertainty: (position std m, yaw std deg) of the published pose.
            publish_thresholds: (max position std, max yaw std) of the publishing decision, the
                defaults of this config's thresholds.
            result: the localizer's result (for the counts of tracked and relocalized frames).
        """
        self.frames[tracking_mode(result) if tried else "localized"] += 1
        if not published:
            if tried:
                self.failures += 1
                if self.failures >= self.config.max_failures:
                    self.armed = False
            return
        self.failures = 0
        max_position = self.config.max_position_std or publish_thresholds[0]
        max_yaw = self.config.max_yaw_std_deg or publish_thresholds[1]
        self.armed = uncertainty is not None and uncertainty[0] <= max_position and uncertainty[1] <= max_yaw

    def describe(self) -> dict[str, Any]:
        """A summary for diagnostics: enabled, armed, consecutive failures, frames per mode."""
        return {
            "tracking_enabled": self.enabled,
            "tracking_armed": self.armed,
            "tracking_failures": self.failures,
            **{f"frames_{mode}": count for mode, count in self.frames.items()},
        }
