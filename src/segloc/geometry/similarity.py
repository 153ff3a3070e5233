"""Similarity transforms (Sim(3)) and their robust estimation from camera trajectories.

A :class:`Sim3` ``a_from_b`` maps ``x_a = scale * R @ x_b + translation``. It aligns two
trajectories of the same cameras in different frames (a recording's odometry frame, with its
own origin and, for monocular visual odometry, its own scale, and the map frame):
:func:`align_trajectories` is the least-squares alignment of camera centres (Umeyama), with an
optional term that also aligns the cameras' orientations (it keeps the rotation determined when
the centres lie on a line, as a robot's do on a straight stretch); :func:`estimate_sim3` wraps
it in MSAC over minimal samples of three cameras, a camera being an inlier when both its centre
and its orientation agree with the hypothesis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3, matrix_to_quat_wxyz, quat_wxyz_to_matrix

__all__ = ["Sim3", "Sim3Estimate", "align_trajectories", "estimate_sim3", "rotation_angles_deg"]


@dataclass(frozen=True)
class Sim3:
    """A similarity transform ``a_from_b``: ``x_a = scale * R(quat_wxyz) @ x_b + translation``.

    Attributes:
        quat_wxyz: (4,) unit quaternion, scalar first.
        translation: (3,) in frame a.
        scale: positive scale from b's units to a's.
    """

    quat_wxyz: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0

    def __post_init__(self) -> None:
        rigid = Rigid3(self.quat_wxyz, self.translation)  # shape, finiteness and normalisation checks
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise SeglocError(f"a similarity transform needs a positive finite scale, got {self.scale}")
        object.__setattr__(self, "quat_wxyz", rigid.quat_wxyz)
        object.__setattr__(self, "translation", rigid.translation)
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def from_rotation(cls, rotation: np.ndarray, translation: np.ndarray, scale: float) -> Sim3:
        return cls(matrix_to_quat_wxyz(rotation), translation, scale)

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) rotation matrix."""
        return quat_wxyz_to_matrix(self.quat_wxyz)

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix ``[s R | t]``."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def inverse(self) -> Sim3:
        """``b_from_a``."""
        rot_t = self.rotation.T
        return Sim3.from_rotation(rot_t, -rot_t @ self.translation / self.scale, 1.0 / self.scale)

    def __mul__(self, other: Sim3) -> Sim3:
        """``a_from_b * b_from_c = a_from_c``."""
        if not isinstance(other, Sim3):
            return NotImplemented
        return Sim3.from_rotation(
            self.rotation @ other.rotation, self.scale * self.rotation @ other.translation + self.translation, self.scale * other.scale
        )

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points of frame b in frame a."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def transform_pose(self, cam_from_b: Rigid3) -> Rigid3:
        """``cam_from_a`` of a camera whose pose in frame b is ``cam_from_b`` (same centre, scaled frame; the camera stays metric)."""
        rotation = cam_from_b.rotation @ self.rotation.T
        center = self.transform_points(cam_from_b.center[None])[0]
        return Rigid3.from_rotation(rotation, -rotation @ center)

    def as_dict(self) -> dict:
        return {"quat_wxyz": self.quat_wxyz.tolist(), "translation": self.translation.tolist(), "scale": self.scale}


def rotation_angles_deg(rotations_a: np.ndarray, rotations_b: np.ndarray) -> np.ndarray:
    """(N,) angles in degrees between (N, 3, 3) rotations ``a`` and ``b``."""
    relative = np.einsum("nij,nkj->nik", rotations_a, rotations_b)
    cos = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def _check_trajectory(centers: np.ndarray, rotations: np.ndarray | None, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[1] != 3:
        raise SeglocError(f"{where}: camera centres must be an (N, 3) array, got shape {centers.shape}")
    if not np.all(np.isfinite(centers)):
        raise SeglocError(f"{where}: non-finite camera centres")
    if rotations is not None:
        rotations = np.asarray(rotations, dtype=np.float64)
        if rotations.shape != (len(centers), 3, 3):
            raise SeglocError(f"{where}: rotations must be ({len(centers)}, 3, 3), got shape {rotations.shape}")
    return centers, rotations


def align_trajectories(
    centers_b: np.ndarray,
    centers_a: np.ndarray,
    rotations_b: np.ndarray | None = None,
    rotations_a: np.ndarray | None = None,
    rotation_weight: float = 1.0,
) -> Sim3 | None:
    """The least-squares ``a_from_b`` taking camera centres ``centers_b`` onto ``centers_a`` (Umeyama 1991).

    With the cameras' orientations (``rotations_*``: (N, 3, 3) ``world_from_cam`` rotations in
    each frame) the rotation maximises ``tr(R^T (H_centres + w H_orientations))``: the
    normalised cross-covariance of the centres plus ``rotation_weight`` times the mean of
    ``R_a,i R_b,i^T``, so that it stays determined when the centres are (nearly) collinear;
    the scale and translation are then the least-squares ones for that rotation.

    Args:
        centers_b, centers_a: (N, 3) centres of the same N cameras in frames b and a.
        rotations_b, rotations_a: (N, 3, 3) their orientations, or None (centres only, N >= 3).
        rotation_weight: weight of the orientation term against the centres'.

    Returns:
        ``a_from_b``, or None when it is not determined (centres all at one point, or too
        few non-collinear centres without orientations).
    """
    centers_b, rotations_b = _check_trajectory(centers_b, rotations_b, "align_trajectories")
    centers_a, rotations_a = _check_trajectory(centers_a, rotations_a, "align_trajectories")
    if len(centers_a) != len(centers_b):
        raise SeglocError(f"align_trajectories: {len(centers_b)} centres in frame b, {len(centers_a)} in frame a")
    use_rotations = rotations_a is not None and rotations_b is not None and rotation_weight > 0
    mean_b, mean_a = centers_b.mean(0), centers_a.mean(0)
    offsets_b, offsets_a = centers_b - mean_b, centers_a - mean_a
    spread_b = np.sqrt((offsets_b**2).sum(1).mean())
    spread_a = np.sqrt((offsets_a**2).sum(1).mean())
    if spread_b < 1e-9 or spread_a < 1e-9:
        return None
    covariance = offsets_a.T @ offsets_b / (len(centers_a) * spread_a * spread_b)
    if use_rotations:
        covariance = covariance + rotation_weight * np.einsum("nij,nkj->ik", rotations_a, rotations_b) / len(centers_a)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    if not use_rotations and singular[1] < 1e-6 * max(singular[0], 1e-12):
        return None  # collinear centres: the rotation about their line is free
    rotation = u @ sign @ vt
    scale = float(np.sum(offsets_a * (offsets_b @ rotation.T)) / np.sum(offsets_b**2))
    if not np.isfinite(scale) or scale <= 0:
        return None
    return Sim3.from_rotation(rotation, mean_a - scale * rotation @ mean_b, scale)


@dataclass
class Sim3Estimate:
    """The result of :func:`estimate_sim3`.

    Attributes:
        a_from_b: the transform, refined on the inliers.
        inliers: (N,) bool: the cameras it explains.
        center_residuals: (N,) distances in frame a between ``a_from_b`` of each b centre and its a centre.
        rotation_residuals_deg: (N,) angles between the transformed b orientations and the a ones
            (zeros without orientations).
        num_iterations: hypotheses drawn.
    """

    a_from_b: Sim3
    inliers: np.ndarray
    center_residuals: np.ndarray
    rotation_residuals_deg: np.ndarray
    num_iterations: int

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def _residuals(
    a_from_b: Sim3, centers_b: np.ndarray, centers_a: np.ndarray, rotations_b: np.ndarray | None, rotations_a: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    center = np.linalg.norm(a_from_b.transform_points(centers_b) - centers_a, axis=1)
    if rotations_a is None or rotations_b is None:
        return center, np.zeros(len(centers_a))
    return center, rotation_angles_deg(a_from_b.rotation @ rotations_b, rotations_a)


def estimate_sim3(
    centers_b: np.ndarray,
    centers_a: np.ndarray,
    rotations_b: np.ndarray | None = None,
    rotations_a: np.ndarray | None = None,
    *,
    max_center_error: float,
    max_rotation_error_deg: float = 180.0,
    rotation_weight: float = 1.0,
    max_iterations: int = 1000,
    confidence: float = 0.999,
    seed: int = 0,
) -> Sim3Estimate | None:
    """Robust ``a_from_b`` (MSAC) from corresponding camera centres (and orientations) with outliers.

    Hypotheses are :func:`align_trajectories` of random triples of cameras (every triple when
    there are few); each is scored by the truncated squared centre residual (MSAC) over the
    cameras whose orientation agrees within ``max_rotation_error_deg``; the best one is refined
    on its inliers, twice (the inliers of the refined transform, then again).

    Args:
        centers_b, centers_a: (N, 3) centres of the same cameras in frames b and a (N >= 3).
        rotations_b, rotations_a: (N, 3, 3) their ``world_from_cam`` rotations in each frame, or None.
        max_center_error: inlier threshold on the centre residual, in frame a's units.
        max_rotation_error_deg: inlier threshold on the orientation residual.
        rotation_weight: see :func:`align_trajectories`.
        max_iterations, confidence: the adaptive stopping rule (the number of triples needed
            to draw an all-inlier one with this probability at the best inlier ratio so far).
        seed: the random triples.

    Returns:
        The estimate, or None when fewer than 3 cameras or no hypothesis has 3 inliers.
    """
    centers_b, rotations_b = _check_trajectory(centers_b, rotations_b, "estimate_sim3")
    centers_a, rotations_a = _check_trajectory(centers_a, rotations_a, "estimate_sim3")
    if len(centers_a) != len(centers_b):
        raise SeglocError(f"estimate_sim3: {len(centers_b)} centres in frame b, {len(centers_a)} in frame a")
    if max_center_error <= 0:
        raise SeglocError(f"estimate_sim3: max_center_error must be > 0, got {max_center_error}")
    count = len(centers_a)
    if count < 3:
        return None
    with_rotations = rotations_a is not None and rotations_b is not None

    def fit(mask: np.ndarray) -> Sim3 | None:
        return align_trajectories(
            centers_b[mask],
            centers_a[mask],
            rotations_b[mask] if with_rotations else None,
            rotations_a[mask] if with_rotations else None,
            rotation_weight,
        )

    def score(a_from_b: Sim3) -> tuple[float, np.ndarray]:
        center, rotation = _residuals(a_from_b, centers_b, centers_a, rotations_b, rotations_a)
        inliers = (center <= max_center_error) & (rotation <= max_rotation_error_deg)
        cost = np.where(inliers, center**2, max_center_error**2).sum()
        return float(cost), inliers

    rng = np.random.default_rng(seed)
    num_triples = count * (count - 1) * (count - 2) // 6
    exhaustive = num_triples <= max_iterations
    samples = itertools.combinations(range(count), 3) if exhaustive else None
    best_cost, best, best_inliers, needed, iterations = np.inf, None, None, max_iterations, 0
    while iterations < needed:
        if samples is not None:
            sample = next(samples, None)
            if sample is None:
                break
        else:
            sample = rng.choice(count, 3, replace=False)
        iterations += 1
        mask = np.zeros(count, bool)
        mask[list(sample)] = True
        hypothesis = fit(mask)
        if hypothesis is None:
            continue
        cost, inliers = score(hypothesis)
        if cost < best_cost and inliers.sum() >= 3:
            best_cost, best, best_inliers = cost, hypothesis, inliers
            if not exhaustive:
                ratio = inliers.mean()
                miss = 1.0 - ratio**3
                needed = (
                    max_iterations if miss >= 1.0 else min(max_iterations, int(np.ceil(np.log(1 - confidence) / np.log(max(miss, 1e-12)))))
                )
    if best is None:
        return None
    a_from_b, inliers = best, best_inliers
    for _ in range(2):  # refine on the inliers, re-select, refine again
        refined = fit(inliers)
        if refined is None:
            break
        refined_inliers = score(refined)[1]
        if refined_inliers.sum() < 3:
            break
        a_from_b, inliers = refined, refined_inliers
    center, rotation = _residuals(a_from_b, centers_b, centers_a, rotations_b, rotations_a)
    return Sim3Estimate(a_from_b, inliers, center, rotation, iterations)
