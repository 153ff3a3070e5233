"""Absolute pose estimation: LO-RANSAC P3P + non-linear refinement (pycolmap), with a covariance.

Sampling is uniform, or PROSAC over correspondences ranked by weight (``PnPConfig.sampling``,
:mod:`segloc.geometry.ransac`, poselib); the refinement is pycolmap's either way.

Covariance convention (used across segloc and converted as-is to ROS
``PoseWithCovariance``): a 6x6 matrix over ``(x, y, z, rx, ry, rz)`` where ``(x, y, z)`` perturb
the camera centre in the world frame (metres) and ``(rx, ry, rz)`` are a rotation vector
(radians) about the world axes applied on the left of ``world_from_cam``:
``world_from_cam' = (Exp(r) R_wc, c + dc)``. This is the order and meaning of ROS's pose
covariance when the parent frame is the map.

A covariance is checked against the truth with :func:`pose_perturbation` (the 6-vector that
moves the estimate onto the truth in this convention) and :func:`normalized_estimation_error_squared`
(NEES, ``e^T C^-1 e``: chi-square with 6 degrees of freedom, mean 6, when the errors follow the
covariance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera, distort_normalized
from segloc.geometry.ransac import SAMPLINGS, check_weights, prosac_absolute_pose
from segloc.geometry.transforms import Rigid3, axis_angle_to_matrix, matrix_to_axis_angle

logger = logging.getLogger("segloc")


PIXEL_FLOOR = 0.2
"""Default :attr:`PnPConfig.pixel_floor`, pixels. Synthetic renders need none (perfect calibration);
real photographs (Strecha castle and fountain) need 0.05, their dusk variant and the synthetic
room's severe night 0.2, for 95 % of the true poses inside the 95 % ellipsoid of the reference
localizer (``benchmarks/covariance.py --floor-option pnp.pixel_floor``)."""


@dataclass
class PnPConfig:
    """Options of :func:`estimate_absolute_pose`.

    Attributes:
        max_error_px: RANSAC inlier threshold on the reprojection error, pixels.
        min_inliers: fewer inliers than this is a failure.
        min_inlier_ratio: RANSAC's assumed minimum inlier ratio (sets the number of iterations).
        confidence: RANSAC confidence.
        max_iterations: upper bound of RANSAC iterations.
        refine: run the non-linear refinement on the inliers (Cauchy loss).
        min_pixel_sigma: floor of the reprojection noise used for the covariance, pixels. The
            noise estimated from the inlier residuals ignores correlated errors (calibration,
            keypoint bias) and makes the covariance overconfident with thousands of inliers.
        pixel_floor: pixel error shared by all the inliers of an image, which more inliers do
            not average away (:func:`systematic_pose_covariance`); 0 leaves it out.
        random_seed: RANSAC's seed: the same correspondences give the same pose, in every
            process and run (live and offline agree); -1 draws a new seed each call.
        sampling: ``uniform`` (pycolmap LO-RANSAC) or ``prosac``: minimal samples drawn first
            from the correspondences of highest weight (:mod:`segloc.geometry.ransac`, poselib).
    """

    max_error_px: float = option(12.0, gt=0)
    min_inliers: int = option(12, ge=4, note="a pose needs 4 correspondences")
    min_inlier_ratio: float = option(0.01, gt=0, le=1)
    confidence: float = option(0.9999, gt=0, le=1)
    max_iterations: int = option(100000, ge=1)
    refine: bool = True
    min_pixel_sigma: float = option(1.0, ge=0)
    pixel_floor: float = option(PIXEL_FLOOR, ge=0)
    random_seed: int = option(0, ge=-1, note="-1: a new seed each call")
    sampling: str = "uniform"

    def __post_init__(self) -> None:
        check_options(self)
        if self.sampling not in SAMPLINGS:
            raise SeglocError(f"PnPConfig.sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")


@dataclass
class PoseEstimate:
    """Result of an absolute pose estimation.

    Attributes:
        cam_from_world: the estimated pose.
        inlier_mask: (N,) bool over the input correspondences.
        num_inliers: number of inliers.
        covariance: (6, 6) covariance in the convention of this module (see the module docstring),
            from the reprojection errors of the inliers; None when too few inliers to estimate it.
        reprojection_rmse_px: root mean square reprojection error of the inliers, pixels.
    """

    cam_from_world: Rigid3
    inlier_mask: np.ndarray
    num_inliers: int
    covariance: np.ndarray | None
    reprojection_rmse_px: float


def _check_correspondences(points2D: np.ndarray, points3D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    points2D = np.asarray(points2D, dtype=np.float64)
    points3D = np.asarray(points3D, dtype=np.float64)
    if points2D.ndim != 2 or points2D.shape[1] != 2 or points3D.ndim != 2 or points3D.shape[1] != 3:
        raise SeglocError(f"expected points2D (N, 2) and points3D (N, 3), got {points2D.shape} and {points3D.shape}")
    if len(points2D) != len(points3D):
        raise SeglocError(f"points2D and points3D differ in length: {len(points2D)} != {len(points3D)}")
    if not (np.all(np.isfinite(points2D)) and np.all(np.isfinite(points3D))):
        raise SeglocError("correspondences contain non-finite coordinates")
    return points2D, points3D


def estimate_absolute_pose(
    points2D: np.ndarray,
    points3D: np.ndarray,
    camera: Camera,
    config: PnPConfig | None = None,
    weights: np.ndarray | None = None,
) -> PoseEstimate | None:
    """Estimate ``cam_from_world`` from 2D-3D correspondences.

    Args:
        points2D: (N, 2) pixel coordinates, COLMAP convention (top-left pixel centre at 0.5, 0.5).
        points3D: (N, 3) world points.
        camera: the camera that took the image.
        config: RANSAC and refinement options.
        weights: (N,) confidences, >= 0 and not all zero; ``sampling: prosac`` samples the
            highest first (None: in the input order); uniform sampling ignores them.

    Returns:
        The estimate, or None when there are too few correspondences or inliers.

    Raises:
        SeglocError: malformed correspondences or weights.
    """
    import pycolmap

    config = config or PnPConfig()
    points2D, points3D = _check_correspondences(points2D, points3D)
    if weights is not None:
        weights = check_weights(weights, len(points2D))
    if len(points2D) < max(4, config.min_inliers):
        return None
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = config.max_error_px
    options.ransac.min_inlier_ratio = config.min_inlier_ratio
    options.ransac.confidence = config.confidence
    options.ransac.max_num_trials = config.max_iterations
    options.ransac.min_num_trials = min(options.ransac.min_num_trials, config.max_iterations)
    options.ransac.random_seed = config.random_seed
    pc_camera = camera.to_pycolmap()
    if config.sampling == "prosac":
        result = prosac_absolute_pose(points2D, points3D, camera, weights, options.ransac)
        if result is not None and config.refine:
            refined = pycolmap.refine_absolute_pose(result["cam_from_world"], points2D, points3D, result["inlier_mask"], pc_camera)
            result = None if refined is None else {**result, "cam_from_world": refined["cam_from_world"]}
    elif config.refine:
        result = pycolmap.estimate_and_refine_absolute_pose(points2D, points3D, pc_camera, options)
    else:
        result = pycolmap.estimate_absolute_pose(points2D, points3D, pc_camera, options)
    if result is None or result["num_inliers"] < config.min_inliers:
        return None
    cam_from_world = Rigid3.from_pycolmap(result["cam_from_world"])
    inlier_mask = np.asarray(result["inlier_mask"], dtype=bool)
    inliers2D, inliers3D = points2D[inlier_mask], points3D[inlier_mask]
    residuals = reprojection_residuals(cam_from_world, camera, inliers2D, inliers3D)
    rmse = float(np.sqrt(np.mean(residuals**2))) if len(residuals) else float("nan")
    covariance = pose_covariance(
        cam_from_world, camera, inliers2D, inliers3D, min_pixel_sigma=config.min_pixel_sigma, pixel_floor=config.pixel_floor
    )
    return PoseEstimate(cam_from_world, inlier_mask, int(inlier_mask.sum()), covariance, rmse)


def reprojection_residuals(cam_from_world: Rigid3, camera: Camera, points2D: np.ndarray, points3D: np.ndarray) -> np.ndarray:
    """Reprojection residuals (N, 2) in pixels: ``project(points3D) - points2D``."""
    return camera.project(cam_from_world.transform_points(points3D)) - points2D


def perturb_world_from_cam(cam_from_world: Rigid3, delta: np.ndarray) -> Rigid3:
    """Apply a 6-vector ``(dx, dy, dz, rx, ry, rz)`` in the covariance convention of this module."""
    world_from_cam = cam_from_world.inverse()
    rotation = axis_angle_to_matrix(delta[3:]) @ world_from_cam.rotation
    return Rigid3.from_rotation(rotation, world_from_cam.translation + delta[:3]).inverse()


def projection_jacobian(cam_from_world: Rigid3, camera: Camera, points3D: np.ndarray) -> np.ndarray:
    """Jacobian (N, 2, 6) of the pixel projections of points (N, 3) with respect to the pose.

    The pose is perturbed in the convention of the module docstring: with ``v = X - c``, the
    point in the camera is ``R_cw Exp(-r) (v - dc)``, whose derivatives are ``-R_cw`` (centre)
    and ``R_cw [v]_x`` (rotation). These are exact; only a lens distortion is differentiated
    numerically, on the normalized coordinates, so the result depends smoothly on the pose.
    """
    points3D = np.asarray(points3D, dtype=np.float64).reshape(-1, 3)
    world_from_cam = cam_from_world.inverse()
    rotation_cw = world_from_cam.rotation.T
    offsets = points3D - world_from_cam.translation  # v = X - c (N, 3)
    points_cam = offsets @ rotation_cw.T
    z = points_cam[:, 2]
    x, y = points_cam[:, 0] / z, points_cam[:, 1] / z
    zeros = np.zeros_like(z)
    normalized_by_cam = np.stack([np.stack([1 / z, zeros, -x / z], 1), np.stack([zeros, 1 / z, -y / z], 1)], 1)  # (N, 2, 3)
    fx, fy = camera.focal
    pixels_by_normalized = np.zeros((len(z), 2, 2))
    if camera.has_distortion:
        step = 1e-6
        for column, (dx, dy) in enumerate(((step, 0.0), (0.0, step))):
            plus = distort_normalized(camera.model, camera.params, x + dx, y + dy)
            minus = distort_normalized(camera.model, camera.params, x - dx, y - dy)
            pixels_by_normalized[:, 0, column] = fx * (plus[0] - minus[0]) / (2 * step)
            pixels_by_normalized[:, 1, column] = fy * (plus[1] - minus[1]) / (2 * step)
    else:
        pixels_by_normalized[:, 0, 0], pixels_by_normalized[:, 1, 1] = fx, fy
    skew = np.zeros((len(z), 3, 3))
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -offsets[:, 2], offsets[:, 1], -offsets[:, 0]
    skew -= np.swapaxes(skew, 1, 2)  # [v]_x
    cam_by_pose = np.concatenate([np.broadcast_to(-rotation_cw, (len(z), 3, 3)), rotation_cw @ skew], axis=2)  # (N, 3, 6)
    return pixels_by_normalized @ normalized_by_cam @ cam_by_pose


def systematic_pose_covariance(cam_from_world: Rigid3, camera: Camera, points3D: np.ndarray, pixel_floor: float) -> np.ndarray | None:
    """Covariance (6, 6) of the pose error that more points do not average away.

    A pose from N points whose pixel errors are independent has the covariance
    ``sigma^2 (J^T J)^-1``, which shrinks as 1 / N. Errors shared by the points of one image
    (a detector's or a segmentation's bias, a calibration error, a map's local drift) do not
    shrink: this term models them as if the pose came from a fixed number of independent
    measurements at the image's geometry, ``pixel_floor^2 (J^T J / N)^-1``, so its size is set
    by the pixel error ``pixel_floor`` (pixels of ``camera``) and its shape by where the points
    lie (depth, spread in the image). Added to a covariance of the independent errors it floors
    the confidence that a method may claim, whatever the number of points.

    Args:
        points3D: (N, 3) world points the pose was estimated from.
        pixel_floor: standard deviation of the shared pixel error, pixels of ``camera``.

    Returns:
        (6, 6) covariance in the convention of the module docstring, zero when ``pixel_floor``
        is 0, or None with fewer than 4 points or a degenerate configuration.
    """
    if pixel_floor < 0:
        raise SeglocError(f"pixel_floor must be >= 0, got {pixel_floor}")
    if len(points3D) < 4:
        return None
    if pixel_floor == 0:
        return np.zeros((6, 6))
    jacobian = projection_jacobian(cam_from_world, camera, points3D).reshape(-1, 6)
    return _inverse_information(jacobian.T @ jacobian / len(points3D), pixel_floor**2)


def _inverse_information(information: np.ndarray, variance: float) -> np.ndarray | None:
    """``variance * information^-1`` (6, 6), symmetrised; None when ``information`` is degenerate."""
    if not np.all(np.isfinite(information)) or np.linalg.cond(information) > 1e14:
        return None
    covariance = variance * np.linalg.inv(information)
    return 0.5 * (covariance + covariance.T)


def pose_covariance(
    cam_from_world: Rigid3,
    camera: Camera,
    points2D: np.ndarray,
    points3D: np.ndarray,
    pixel_sigma: float | None = None,
    min_pixel_sigma: float = 0.1,
    pixel_floor: float = 0.0,
) -> np.ndarray | None:
    """First-order 6x6 pose covariance ``sigma^2 (J^T J)^-1`` from inlier correspondences.

    Args:
        points2D: (N, 2) inlier pixels; points3D: (N, 3) inlier world points.
        pixel_sigma: standard deviation of the reprojection noise; by default estimated from
            the residuals (``sum r^2 / (2N - 6)``), floored at ``min_pixel_sigma``.
        min_pixel_sigma: floor of the estimated noise, pixels.
        pixel_floor: pixel error shared by all the points, pixels; adds
            :func:`systematic_pose_covariance` (the covariance becomes
            ``(sigma^2 + N pixel_floor^2) (J^T J)^-1``).

    Returns:
        (6, 6) covariance (see the module docstring), or None with fewer than 4 points or a
        degenerate configuration.
    """
    n = len(points2D)
    if n < 4:
        return None
    if pixel_floor < 0:
        raise SeglocError(f"pixel_floor must be >= 0, got {pixel_floor}")
    residuals = reprojection_residuals(cam_from_world, camera, points2D, points3D).reshape(-1)
    jacobian = projection_jacobian(cam_from_world, camera, points3D).reshape(-1, 6)
    if pixel_sigma is None:
        variance = max(float(residuals @ residuals) / max(2 * n - 6, 1), min_pixel_sigma**2)
    else:
        variance = pixel_sigma**2
    return _inverse_information(jacobian.T @ jacobian, variance + n * pixel_floor**2)


def pose_perturbation(cam_from_world_est: Rigid3, cam_from_world_gt: Rigid3) -> np.ndarray:
    """The 6-vector ``(dx, dy, dz, rx, ry, rz)`` that moves the estimate onto the truth.

    The inverse of :func:`perturb_world_from_cam`: ``perturb_world_from_cam(est, delta) == gt``
    with ``dc = c_gt - c_est`` (camera centres in the world) and ``r = Log(R_wc_gt R_wc_est^T)``
    (a rotation vector about the world axes). A covariance in the convention of this module is
    the covariance of this vector.

    Returns:
        (6,) float64.
    """
    world_from_est, world_from_gt = cam_from_world_est.inverse(), cam_from_world_gt.inverse()
    rotation = matrix_to_axis_angle(world_from_gt.rotation @ world_from_est.rotation.T)
    return np.concatenate([world_from_gt.translation - world_from_est.translation, rotation])


def normalized_estimation_error_squared(cam_from_world_est: Rigid3, cam_from_world_gt: Rigid3, covariance: np.ndarray) -> float:
    """NEES ``e^T C^-1 e`` of an estimate with covariance ``C`` (6, 6) and error ``e = pose_perturbation(est, gt)``.

    When the errors are drawn from ``C`` this is chi-square distributed with 6 degrees of
    freedom (mean 6; below :data:`CHI2_6DOF_95` 95 % of the time); consistently larger values
    mean an overconfident covariance.

    Raises:
        SeglocError: when ``covariance`` is not a finite symmetric positive definite (6, 6) matrix.
    """
    covariance = np.asarray(covariance, dtype=np.float64)
    if covariance.shape != (6, 6) or not np.all(np.isfinite(covariance)):
        raise SeglocError(f"expected a finite (6, 6) pose covariance, got shape {covariance.shape}")
    try:
        factor = np.linalg.cholesky(0.5 * (covariance + covariance.T))
    except np.linalg.LinAlgError as exc:
        raise SeglocError("the pose covariance is not positive definite: NEES is undefined") from exc
    whitened = np.linalg.solve(factor, pose_perturbation(cam_from_world_est, cam_from_world_gt))
    return float(whitened @ whitened)


CHI2_6DOF_95 = 12.591587243743977
"""The 95 % quantile of chi-square with 6 degrees of freedom: a true pose is inside the 95 %
ellipsoid of a covariance when its NEES is at most this (``scipy.stats.chi2.ppf(0.95, 6)``)."""
