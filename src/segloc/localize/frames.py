"""Robot frames for a camera localizer: camera pose -> base pose -> ``map -> odom`` (REP-105).

A localizer estimates the camera pose in the map, ``world_from_cam`` (world = the ``map``
frame). A robot wants the pose of its base frame (``base_link``) in the map, and a TF tree in
which each frame has one parent: ``map -> odom -> base_link -> ... -> camera``. Odometry owns
``odom -> base_link`` (continuous, drifting); the localizer publishes the correction
``map -> odom`` computed at the image stamp, as Nav2 AMCL does::

    world_from_base = world_from_cam * cam_from_base               (camera extrinsics)
    map_from_odom   = world_from_base * (odom_from_base at the image stamp)^-1

so that ``map_from_odom * odom_from_base == world_from_base`` at that stamp, and between two
corrections the base moves in the map exactly as odometry says. Without odometry, a node
publishes ``map -> base_link`` (``world_from_base``) instead.

Covariance convention (the one of :mod:`segloc.geometry.pose`, and ROS's
``PoseWithCovariance`` when the header frame is the map): a (6, 6) matrix over
``(x, y, z, rx, ry, rz)`` for a pose ``world_from_x``: ``(x, y, z)`` perturb the origin of
frame x in world coordinates (metres) and ``(rx, ry, rz)`` is a rotation vector (radians)
about the *world* axes applied on the left of the rotation::

    world_from_x' = (Exp(r) @ R_wx, t_wx + dt)

Propagation through a fixed transform. For ``world_from_b = world_from_a * a_from_b`` with
``a_from_b`` known exactly (camera extrinsics; odometry at the stamp, which AMCL also treats as
exact), a perturbation ``(dt, r)`` of ``world_from_a`` moves ``world_from_b`` by::

    R_wb' = Exp(r) R_wa R_ab = Exp(r) R_wb                         ->  r_b  = r
    t_wb' = Exp(r) R_wa t_ab + t_wa + dt ~ t_wb + dt + r x lever    ->  dt_b = dt - [lever]x r

with ``lever = R_wa @ t_ab = t_wb - t_wa``, the vector from the origin of a to the origin of b
in world axes. The first-order (analytic) Jacobian is therefore::

    J = [[I, -[lever]x],
         [0,  I       ]]        covariance_b = J @ covariance_a @ J.T

exact in rotation, first order in translation (the neglected terms are of order
``|lever| * angle_std^2``: 0.15 mm for a 1 m lever at 1 degree). Consequences worth knowing:

- the rotation block is unchanged by any fixed transform (the axes are the world's);
- a frame b at the same origin as a (pure rotation offset, ``lever = 0``) has the same
  covariance, because it is expressed in world axes, not in b's axes;
- with a lever, rotation uncertainty turns into position uncertainty perpendicular to the lever
  (a yaw error ``s`` moves a base 0.5 m behind the camera by ``0.5 * s`` sideways); that
  contribution turns with the robot's heading.

The covariance of ``map -> odom`` is that of the base pose moved to the odom origin (the lever is
then the vector from the base to the odom origin, which grows as the robot drives away from it);
it is useful for diagnostics, TF itself carries none.
"""

from __future__ import annotations

import logging

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

__all__ = [
    "base_covariance_from_camera",
    "base_pose_from_camera",
    "camera_pose_from_base",
    "check_pose_covariance",
    "fixed_transform_jacobian",
    "map_from_odom",
    "map_from_odom_covariance",
    "pose_is_confident",
    "pose_uncertainty",
    "propagate_pose_covariance",
]


# --- poses -------------------------------------------------------------------------------------
def base_pose_from_camera(world_from_cam: Rigid3, base_from_cam: Rigid3) -> Rigid3:
    """Pose of the robot base in the world from the camera pose and the camera extrinsics.

    Args:
        world_from_cam: camera pose in the world (map) frame, OpenCV camera axes (for a
            localizer's ``cam_from_world``, pass ``cam_from_world.inverse()``).
        base_from_cam: camera extrinsics: the camera (optical) frame in the base frame, e.g.
            the TF transform ``base_link -> camera_optical_frame``.

    Returns:
        ``world_from_base = world_from_cam * base_from_cam^-1``.
    """
    return world_from_cam * base_from_cam.inverse()


def camera_pose_from_base(world_from_base: Rigid3, base_from_cam: Rigid3) -> Rigid3:
    """Camera pose in the world from a base pose (e.g. an ``initialpose`` used as a prior).

    Returns:
        ``world_from_cam = world_from_base * base_from_cam``; the inverse of
        :func:`base_pose_from_camera`.
    """
    return world_from_base * base_from_cam


def map_from_odom(world_from_base: Rigid3, odom_from_base: Rigid3) -> Rigid3:
    """The ``map -> odom`` correction that puts the odometry's base pose on the localized one.

    Args:
        world_from_base: localized base pose in the map frame at the image stamp.
        odom_from_base: odometry's base pose (TF ``odom -> base_link``) at the *same* stamp.

    Returns:
        ``map_from_odom = world_from_base * odom_from_base^-1``, so that
        ``map_from_odom * odom_from_base == world_from_base``.
    """
    return world_from_base * odom_from_base.inverse()


# --- covariances -------------------------------------------------------------------------------
def check_pose_covariance(covariance: np.ndarray, name: str = "pose covariance") -> np.ndarray:
    """Validate a pose covariance and return it as a symmetric (6, 6) float64 array.

    Args:
        covariance: (6, 6) matrix, or the 36 values of ROS's row-major layout.
        name: what the matrix is, for the error message.

    Raises:
        SeglocError: wrong size, non-finite values, or a matrix that is not symmetric.
    """
    values = np.asarray(covariance, dtype=np.float64)
    if values.size != 36 or values.ndim not in (1, 2) or (values.ndim == 2 and values.shape != (6, 6)):
        raise SeglocError(f"{name} must be a 6x6 matrix (or 36 row-major values), got shape {values.shape}")
    values = values.reshape(6, 6)
    if not np.all(np.isfinite(values)):
        raise SeglocError(f"{name} has non-finite values: {values.tolist()}")
    scale = max(float(np.max(np.abs(values))), 1e-300)
    if np.max(np.abs(values - values.T)) > 1e-9 * scale:
        raise SeglocError(f"{name} is not symmetric (max asymmetry {np.max(np.abs(values - values.T)):.3g})")
    return 0.5 * (values + values.T)


def _skew(vector: np.ndarray) -> np.ndarray:
    x, y, z = vector
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def fixed_transform_jacobian(world_from_a: Rigid3, a_from_b: Rigid3) -> np.ndarray:
    """Jacobian (6, 6) of the perturbation of ``world_from_b = world_from_a * a_from_b`` w.r.t. that of ``world_from_a``.

    Both perturbations in the module's convention (world axes, rotation on the left);
    ``a_from_b`` is exact. ``J = [[I, -[lever]x], [0, I]]`` with ``lever = R_wa @ t_ab``.
    """
    lever = world_from_a.rotation @ a_from_b.translation
    jacobian = np.eye(6)
    jacobian[:3, 3:] = -_skew(lever)
    return jacobian


def propagate_pose_covariance(covariance: np.ndarray, world_from_a: Rigid3, a_from_b: Rigid3) -> np.ndarray:
    """Covariance (6, 6) of ``world_from_b = world_from_a * a_from_b`` from that of ``world_from_a``.

    First order (see the module docstring); ``a_from_b`` is taken as exact.

    Args:
        covariance: (6, 6) covariance of ``world_from_a`` (module convention).
        world_from_a: the pose whose covariance is given.
        a_from_b: the fixed transform from b to a.

    Returns:
        (6, 6) symmetric covariance of ``world_from_b``.
    """
    covariance = check_pose_covariance(covariance)
    jacobian = fixed_transform_jacobian(world_from_a, a_from_b)
    propagated = jacobian @ covariance @ jacobian.T
    return 0.5 * (propagated + propagated.T)


def base_covariance_from_camera(covariance_cam: np.ndarray, world_from_cam: Rigid3, base_from_cam: Rigid3) -> np.ndarray:
    """Covariance (6, 6) of :func:`base_pose_from_camera`'s ``world_from_base``.

    Args:
        covariance_cam: (6, 6) covariance of ``world_from_cam`` (e.g.
            :attr:`segloc.localize.base.LocalizationResult.covariance`).
        world_from_cam: the camera pose.
        base_from_cam: the camera extrinsics (exact).
    """
    return propagate_pose_covariance(covariance_cam, world_from_cam, base_from_cam.inverse())


def map_from_odom_covariance(covariance_base: np.ndarray, world_from_base: Rigid3, odom_from_base: Rigid3) -> np.ndarray:
    """Covariance (6, 6) of :func:`map_from_odom`'s correction, the odometry at the stamp taken as exact.

    Args:
        covariance_base: (6, 6) covariance of ``world_from_base``.
        world_from_base: localized base pose.
        odom_from_base: odometry's base pose at the same stamp.
    """
    return propagate_pose_covariance(covariance_base, world_from_base, odom_from_base.inverse())


# --- failure signal ----------------------------------------------------------------------------
def pose_uncertainty(covariance: np.ndarray) -> tuple[float, float]:
    """Worst-direction position standard deviation (metres) and yaw standard deviation (degrees).

    The position std is the square root of the largest eigenvalue of the (3, 3) position block
    (the semi-major axis of the 1-sigma ellipsoid); the yaw std is ``sqrt(cov[5, 5])``, the
    rotation about the world (map) z axis, which for a map with z up is the heading.

    Args:
        covariance: (6, 6) pose covariance (module convention).
    """
    covariance = check_pose_covariance(covariance)
    position_variance = float(np.max(np.linalg.eigvalsh(covariance[:3, :3])))
    return float(np.sqrt(max(position_variance, 0.0))), float(np.degrees(np.sqrt(max(covariance[5, 5], 0.0))))


def pose_is_confident(covariance: np.ndarray | None, max_position_std_m: float, max_yaw_std_deg: float) -> bool:
    """Whether a pose is certain enough to publish (the localizer's failure signal).

    Args:
        covariance: (6, 6) pose covariance of the camera or base pose; None (a localizer that
            could not estimate one) is not confident.
        max_position_std_m: largest accepted worst-direction position std, metres.
        max_yaw_std_deg: largest accepted yaw std, degrees.

    Returns:
        True when both standard deviations (:func:`pose_uncertainty`) are within the limits and
        the covariance is a valid one (finite, symmetric, no negative variance); an invalid
        covariance is logged and returns False rather than raising, as nodes call this per image.
    """
    if max_position_std_m <= 0 or max_yaw_std_deg <= 0:
        raise SeglocError(f"max_position_std_m and max_yaw_std_deg must be > 0, got {max_position_std_m} and {max_yaw_std_deg}")
    if covariance is None:
        return False
    try:
        covariance = check_pose_covariance(covariance)
    except SeglocError as exc:
        logger.warning("pose rejected: %s", exc)
        return False
    if np.any(np.diag(covariance) < 0) or np.min(np.linalg.eigvalsh(covariance)) < -1e-9 * max(np.max(np.diag(covariance)), 1e-300):
        logger.warning("pose rejected: the covariance is not positive semi-definite (diagonal %s)", np.diag(covariance).tolist())
        return False
    position_std, yaw_std = pose_uncertainty(covariance)
    return position_std <= max_position_std_m and yaw_std <= max_yaw_std_deg
