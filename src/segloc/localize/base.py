"""What every localizer returns, and the interface the evaluator and the nodes call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3


@dataclass
class LocalizationResult:
    """The outcome of localizing one image.

    Attributes:
        cam_from_world: the estimated pose, None when localization failed.
        covariance: (6, 6) pose covariance (convention of :mod:`segloc.geometry.pose`), or None.
        num_inliers: inlier correspondences (or the method's own support measure).
        timings: seconds per stage, in pipeline order (e.g. ``extract``, ``retrieve``,
            ``match``, ``pose``).
        info: method-specific details (retrieved images, number of matches). A failed
            localization puts a short reason under ``info["failure_reason"]`` (the evaluator
            counts failures by it).
    """

    cam_from_world: Rigid3 | None
    covariance: np.ndarray | None = None
    num_inliers: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.cam_from_world is not None


class Localizer(Protocol):
    """A localizer built from a map package; ``localize`` takes one image."""

    method: str

    def localize(self, image: np.ndarray, camera: Camera, prior: Rigid3 | None = None) -> LocalizationResult:
        """Localize ``image`` (H, W, 3) RGB uint8 taken by ``camera``.

        ``prior`` is an optional ``cam_from_world`` guess (from odometry, ``initialpose`` or
        another method); methods that cannot use it ignore it.
        """
        ...
