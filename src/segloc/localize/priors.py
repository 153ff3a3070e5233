"""A first pose from retrieved mapping images: the best one's, or a similarity-weighted mean of those near it.

Shared by every retrieval that turns into pose priors: SegLoc's approximation stage
(:mod:`segloc.methods.segloc.localizer`) and the ``sfrs`` retrieval layer
(:meth:`segloc.maps.sfrs.SfrsRetriever.pose_priors`).
"""

from __future__ import annotations

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3

__all__ = ["APPROXIMATIONS", "approximate_pose"]

APPROXIMATIONS = ("top1", "weighted")
"""``top1``: the best image's pose; ``weighted``: the similarity-weighted mean of the retrieved poses near it."""


def approximate_pose(
    poses: list[Rigid3],
    similarities: np.ndarray,
    mode: str = "top1",
    max_distance: float = 2.0,
    max_angle_deg: float = 30.0,
) -> Rigid3:
    """A pose from retrieved mapping images, best first.

    Args:
        poses: ``cam_from_world`` of the retrieved images, most similar first.
        similarities: (R,) their descriptor similarities.
        mode: ``top1`` (the first pose) or ``weighted``: camera centres averaged with weights
            ``max(similarity, 0)``, rotations by the weighted quaternion mean (the principal
            eigenvector of ``sum w q q^T``), over the images within ``max_distance`` metres and
            ``max_angle_deg`` degrees (between optical axes) of the first one (averaging views
            of other places would give a pose between them, looking at neither).
        max_distance: see ``mode``.
        max_angle_deg: see ``mode``.

    Returns:
        The approximate ``cam_from_world``.
    """
    if not poses:
        raise SeglocError("no retrieved image to approximate the pose from")
    if mode not in APPROXIMATIONS:
        raise SeglocError(f"unknown approximation {mode!r}; valid values are: {', '.join(APPROXIMATIONS)}")
    if mode == "top1" or len(poses) == 1:
        return poses[0]
    centers = np.stack([pose.center for pose in poses])
    weights = np.maximum(np.asarray(similarities, dtype=np.float64)[: len(poses)], 0.0)
    axes = np.stack([pose.rotation[2] for pose in poses])
    far = np.linalg.norm(centers - centers[0], axis=1) > max_distance
    turned = axes @ axes[0] < np.cos(np.radians(max_angle_deg))
    weights[far | turned] = 0.0
    weights[0] = max(weights[0], 1e-12)
    weights /= weights.sum()
    quaternions = np.stack([pose.quat_wxyz for pose in poses])
    moment = (quaternions * weights[:, None]).T @ quaternions
    quaternion = np.linalg.eigh(moment)[1][:, -1]
    rotation = Rigid3(quaternion, np.zeros(3)).rotation
    center = weights @ centers
    return Rigid3.from_rotation(rotation, -rotation @ center)
