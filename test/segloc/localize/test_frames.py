import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from segloc.errors import SeglocError
from segloc.geometry import Rigid3, axis_angle_to_matrix, matrix_to_axis_angle
from segloc.geometry.pose import perturb_world_from_cam
from segloc.localize.frames import (
    base_covariance_from_camera,
    base_pose_from_camera,
    camera_pose_from_base,
    check_pose_covariance,
    fixed_transform_jacobian,
    map_from_odom,
    map_from_odom_covariance,
    pose_is_confident,
    pose_uncertainty,
    propagate_pose_covariance,
)


def random_pose(rng: np.random.Generator, scale: float = 2.0) -> Rigid3:
    return Rigid3(rng.normal(size=4), rng.normal(size=3) * scale)


def random_covariance(rng: np.random.Generator, position_std: float = 0.05, rotation_std: float = 0.02) -> np.ndarray:
    factor = rng.normal(size=(6, 6)) * np.array([position_std] * 3 + [rotation_std] * 3)[:, None]
    return factor @ factor.T / 6 + np.diag([position_std**2] * 3 + [rotation_std**2] * 3) * 0.1


def yaw(degrees: float) -> Rigid3:
    return Rigid3.from_rotation(axis_angle_to_matrix([0.0, 0.0, np.radians(degrees)]), np.zeros(3))


def perturb(world_from_x: Rigid3, delta: np.ndarray) -> Rigid3:
    """``world_from_x`` moved by a 6-vector in the covariance convention (world axes, rotation on the left)."""
    return perturb_world_from_cam(world_from_x.inverse(), delta).inverse()


def pose_delta(world_from_x: Rigid3, world_from_x_moved: Rigid3) -> np.ndarray:
    """The 6-vector that :func:`perturb` maps ``world_from_x`` to ``world_from_x_moved`` with."""
    rotation = matrix_to_axis_angle(world_from_x_moved.rotation @ world_from_x.rotation.T)
    return np.concatenate([world_from_x_moved.translation - world_from_x.translation, rotation])


def assert_same_pose(a: Rigid3, b: Rigid3, atol: float = 1e-12) -> None:
    assert np.allclose(a.matrix(), b.matrix(), atol=atol), (a, b)


# --- poses -------------------------------------------------------------------------------------
def test_base_pose_composition_identities():
    rng = np.random.default_rng(0)
    for _ in range(20):
        world_from_cam, base_from_cam = random_pose(rng), random_pose(rng, 0.5)
        world_from_base = base_pose_from_camera(world_from_cam, base_from_cam)
        # The camera seen from the base, then the base from the world, is the camera from the world.
        assert_same_pose(world_from_base * base_from_cam, world_from_cam)
        assert_same_pose(camera_pose_from_base(world_from_base, base_from_cam), world_from_cam)
        # Points: a point in the camera frame lands at the same world point either way.
        points_cam = rng.normal(size=(5, 3))
        via_base = world_from_base.transform_points(base_from_cam.transform_points(points_cam))
        assert np.allclose(via_base, world_from_cam.transform_points(points_cam), atol=1e-12)
    assert_same_pose(base_pose_from_camera(world_from_cam, Rigid3.identity()), world_from_cam)


def test_base_pose_of_a_known_mounting():
    # A forward-looking camera 0.3 m ahead of and 0.5 m above base_link (ROS body axes: x forward, z up);
    # optical axes: z forward = base x, x right = base -y, y down = base -z.
    optical_in_base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    base_from_cam = Rigid3.from_rotation(optical_in_base, [0.3, 0.0, 0.5])
    # The robot stands at (2, 1, 0) in the map, heading along map y.
    world_from_base_true = Rigid3.from_rotation(yaw(90).rotation, [2.0, 1.0, 0.0])
    world_from_cam = world_from_base_true * base_from_cam
    assert np.allclose(world_from_cam.translation, [2.0, 1.3, 0.5])  # 0.3 m ahead = +y in the map
    assert np.allclose(world_from_cam.rotation[:, 2], [0.0, 1.0, 0.0])  # the optical axis looks along map y
    assert_same_pose(base_pose_from_camera(world_from_cam, base_from_cam), world_from_base_true)


def test_map_from_odom_keeps_odometry_continuous():
    rng = np.random.default_rng(1)
    odom_drift = random_pose(rng)  # the (unknown) true map_from_odom
    odom_from_base = random_pose(rng)
    world_from_base = odom_drift * odom_from_base
    correction = map_from_odom(world_from_base, odom_from_base)
    assert_same_pose(correction, odom_drift)
    assert_same_pose(correction * odom_from_base, world_from_base)
    # After the robot moves, the base in the map follows odometry through the unchanged correction.
    motion = random_pose(rng, 0.3)
    assert_same_pose(correction * (odom_from_base * motion), world_from_base * motion)
    # Without drift, the correction is the identity.
    assert_same_pose(map_from_odom(odom_from_base, odom_from_base), Rigid3.identity())


# --- covariances -------------------------------------------------------------------------------
def test_pure_translation_offset_keeps_the_covariance_without_rotation_uncertainty():
    rng = np.random.default_rng(2)
    world_from_cam = random_pose(rng)
    base_from_cam = Rigid3(translation=[0.4, -0.2, 0.9])
    covariance = np.zeros((6, 6))
    covariance[:3, :3] = random_covariance(rng)[:3, :3]
    covariance_base = base_covariance_from_camera(covariance, world_from_cam, base_from_cam)
    assert np.allclose(covariance_base, covariance, atol=1e-15)


@pytest.mark.parametrize("offset_yaw_deg", [0.0, 30.0, 90.0, 180.0])
def test_pure_rotation_offset_keeps_the_covariance(offset_yaw_deg):
    # Same origin for camera and base: the covariance is expressed in world axes, so nothing changes.
    rng = np.random.default_rng(3)
    covariance = random_covariance(rng)
    world_from_cam = random_pose(rng)
    base_from_cam = Rigid3.from_rotation(random_pose(rng).rotation @ yaw(offset_yaw_deg).rotation, np.zeros(3))
    assert np.allclose(base_covariance_from_camera(covariance, world_from_cam, base_from_cam), covariance, atol=1e-15)


def test_rotation_block_is_unchanged_and_the_translation_offset_adds_lever_arm_variance():
    rng = np.random.default_rng(4)
    covariance = random_covariance(rng)
    world_from_cam, base_from_cam = random_pose(rng), random_pose(rng, 0.5)
    covariance_base = base_covariance_from_camera(covariance, world_from_cam, base_from_cam)
    assert np.allclose(covariance_base[3:, 3:], covariance[3:, 3:], atol=1e-15)
    assert np.allclose(covariance_base, covariance_base.T)
    assert np.min(np.linalg.eigvalsh(covariance_base)) > 0


@pytest.mark.parametrize("heading_deg", [0.0, 90.0, 45.0, -120.0])
def test_yaw_uncertainty_becomes_sideways_position_uncertainty_that_turns_with_the_base(heading_deg):
    # Camera 0.5 m ahead of the base; yaw std 2 degrees only. The base's position std is 0.5 m * yaw std,
    # perpendicular to the heading: along map y for heading 0, along map x for heading 90, and so on.
    yaw_std = np.radians(2.0)
    covariance_cam = np.diag([0.0, 0.0, 0.0, 0.0, 0.0, yaw_std**2])
    base_from_cam = Rigid3(translation=[0.5, 0.0, 0.0])  # orientation irrelevant here (world axes)
    world_from_base = Rigid3.from_rotation(yaw(heading_deg).rotation, [3.0, -1.0, 0.0])
    world_from_cam = camera_pose_from_base(world_from_base, base_from_cam)
    covariance_base = base_covariance_from_camera(covariance_cam, world_from_cam, base_from_cam)
    heading = np.radians(heading_deg)
    sideways = np.array([-np.sin(heading), np.cos(heading), 0.0])
    expected_position = (0.5 * yaw_std) ** 2 * np.outer(sideways, sideways)
    assert np.allclose(covariance_base[:3, :3], expected_position, atol=1e-15)
    # Rotating the base rotates the covariance: R cov(heading 0) R^T.
    rotation = yaw(heading_deg).rotation
    covariance_heading0 = (0.5 * yaw_std) ** 2 * np.outer([0, 1, 0], [0, 1, 0])
    assert np.allclose(covariance_base[:3, :3], rotation @ covariance_heading0 @ rotation.T, atol=1e-15)
    # Cross term: a positive yaw error moves the base to its right (the camera is the pivot).
    assert np.allclose(covariance_base[:3, 5], -0.5 * yaw_std**2 * sideways, atol=1e-15)


def test_propagation_commutes_with_a_rotation_of_the_world():
    # Rotating the world by Q maps poses to Q * pose and covariances to blockdiag(Q, Q) cov blockdiag(Q, Q)^T.
    rng = np.random.default_rng(5)
    covariance = random_covariance(rng)
    world_from_cam, base_from_cam = random_pose(rng), random_pose(rng, 0.5)
    world2_from_world = Rigid3(rng.normal(size=4), np.zeros(3))
    q6 = np.kron(np.eye(2), world2_from_world.rotation)
    direct = q6 @ base_covariance_from_camera(covariance, world_from_cam, base_from_cam) @ q6.T
    rotated = base_covariance_from_camera(q6 @ covariance @ q6.T, world2_from_world * world_from_cam, base_from_cam)
    assert np.allclose(direct, rotated, atol=1e-14)


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(6)
    world_from_a, a_from_b = random_pose(rng), random_pose(rng)
    world_from_b = world_from_a * a_from_b
    eps = 1e-6
    numeric = np.empty((6, 6))
    for i in range(6):
        step = np.zeros(6)
        step[i] = eps
        plus = pose_delta(world_from_b, perturb(world_from_a, step) * a_from_b)
        minus = pose_delta(world_from_b, perturb(world_from_a, -step) * a_from_b)
        numeric[:, i] = (plus - minus) / (2 * eps)
    assert np.allclose(fixed_transform_jacobian(world_from_a, a_from_b), numeric, atol=1e-8)


@pytest.mark.parametrize("target", ["base", "map_from_odom"])
def test_propagation_matches_monte_carlo_sampling(target):
    rng = np.random.default_rng(7)
    world_from_cam = random_pose(rng)
    base_from_cam = Rigid3(rng.normal(size=4), [0.3, -0.1, 0.6])
    odom_from_base = random_pose(rng, 3.0)  # odom origin a few metres from the base: a long lever
    covariance_cam = random_covariance(rng, position_std=0.05, rotation_std=np.radians(1.0))
    world_from_base = base_pose_from_camera(world_from_cam, base_from_cam)
    covariance_base = base_covariance_from_camera(covariance_cam, world_from_cam, base_from_cam)
    if target == "base":
        expected, nominal = covariance_base, world_from_base
    else:
        expected = map_from_odom_covariance(covariance_base, world_from_base, odom_from_base)
        nominal = map_from_odom(world_from_base, odom_from_base)

    # Sampled in a batch with scipy's rotations (an independent implementation of Exp and Log).
    count = 20000
    samples = rng.multivariate_normal(np.zeros(6), covariance_cam, size=count)
    nominal_from_target = world_from_cam.inverse() * nominal  # cam_from_base or cam_from_odom, fixed
    rotations = Rotation.from_rotvec(samples[:, 3:]) * Rotation.from_matrix(world_from_cam.rotation)
    sampled_rotations = rotations * Rotation.from_matrix(nominal_from_target.rotation)
    sampled_translations = rotations.apply(nominal_from_target.translation) + world_from_cam.translation + samples[:, :3]
    deltas = np.concatenate(
        [
            sampled_translations - nominal.translation,
            (sampled_rotations * Rotation.from_matrix(nominal.rotation).inv()).as_rotvec(),
        ],
        axis=1,
    )
    sampled_covariance = np.cov(deltas, rowvar=False)
    # Compare in the metric of the expected covariance: whitened, the sample covariance is ~ identity
    # (sampling error ~ sqrt(2 / count) = 1 %; first-order error far below that at 1 degree).
    whitening = np.linalg.inv(np.linalg.cholesky(expected))
    whitened = whitening @ sampled_covariance @ whitening.T
    assert np.max(np.abs(whitened - np.eye(6))) < 0.05, np.round(whitened, 3)
    assert np.allclose(np.mean(deltas, axis=0), 0.0, atol=4 * np.sqrt(np.diag(expected) / count) + 1e-4)


def test_check_pose_covariance_accepts_ros_layout_and_rejects_bad_input():
    rng = np.random.default_rng(8)
    covariance = random_covariance(rng)
    assert np.array_equal(check_pose_covariance(covariance.reshape(-1)), covariance)
    with pytest.raises(SeglocError, match="6x6"):
        check_pose_covariance(np.eye(3))
    with pytest.raises(SeglocError, match="non-finite"):
        check_pose_covariance(np.full((6, 6), np.nan))
    asymmetric = covariance.copy()
    asymmetric[0, 1] += 1.0
    with pytest.raises(SeglocError, match="not symmetric"):
        propagate_pose_covariance(asymmetric, Rigid3.identity(), Rigid3.identity())


# --- failure signal ----------------------------------------------------------------------------
def test_pose_uncertainty_and_confidence():
    covariance = np.diag([0.04**2, 0.10**2, 0.01**2, 0.03**2, 0.03**2, np.radians(3.0) ** 2])
    position_std, yaw_std = pose_uncertainty(covariance)
    assert position_std == pytest.approx(0.10)
    assert yaw_std == pytest.approx(3.0)
    assert pose_is_confident(covariance, max_position_std_m=0.2, max_yaw_std_deg=5.0)
    assert not pose_is_confident(covariance, max_position_std_m=0.05, max_yaw_std_deg=5.0)
    assert not pose_is_confident(covariance, max_position_std_m=0.2, max_yaw_std_deg=2.0)
    # The worst direction counts, not the axes: each axis of this correlated xy block has 0.14 m, the diagonal 0.2 m.
    correlated = np.zeros((6, 6))
    correlated[:2, :2] = 0.5 * 0.2**2 * np.array([[1.0, 0.99], [0.99, 1.0]])
    assert pose_uncertainty(correlated)[0] == pytest.approx(0.2 * np.sqrt(0.995))
    assert not pose_is_confident(correlated, max_position_std_m=0.15, max_yaw_std_deg=5.0)


def test_pose_is_confident_rejects_missing_or_invalid_covariances(caplog):
    assert not pose_is_confident(None, 1.0, 10.0)
    assert not pose_is_confident(np.full((6, 6), np.inf), 1.0, 10.0)
    assert not pose_is_confident(-np.eye(6) * 1e-4, 1.0, 10.0)
    assert "not positive semi-definite" in caplog.text
    with pytest.raises(SeglocError, match="must be > 0"):
        pose_is_confident(np.eye(6), 0.0, 10.0)
