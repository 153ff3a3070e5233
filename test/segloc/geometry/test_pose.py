import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3, pose_error
from segloc.geometry.pose import (
    CHI2_6DOF_95,
    PnPConfig,
    estimate_absolute_pose,
    normalized_estimation_error_squared,
    perturb_world_from_cam,
    pose_covariance,
    pose_perturbation,
    projection_jacobian,
    systematic_pose_covariance,
)


def make_scene(rng, camera, cam_from_world, count=300):
    points_cam = rng.uniform(-1, 1, size=(count, 3)) * [3, 2, 0] + rng.uniform(4, 8, size=(count, 1)) * [0, 0, 1]
    points3D = cam_from_world.inverse().transform_points(points_cam)
    return camera.project(points_cam), points3D


@pytest.mark.parametrize("model_params", [("PINHOLE", (500, 505, 320, 240)), ("OPENCV", (500, 505, 320, 240, 0.05, -0.01, 0.001, 0.0005))])
def test_pnp_recovers_noise_free_pose_to_1e6(model_params):
    rng = np.random.default_rng(0)
    camera = Camera(model_params[0], 640, 480, model_params[1])
    cam_from_world = Rigid3(rng.normal(size=4), rng.normal(size=3) * 5)
    points2D, points3D = make_scene(rng, camera, cam_from_world)
    estimate = estimate_absolute_pose(points2D, points3D, camera)
    t_err, r_err = pose_error(estimate.cam_from_world, cam_from_world)
    assert t_err < 1e-6 and r_err < 1e-6
    assert np.allclose(estimate.cam_from_world.matrix(), cam_from_world.matrix(), atol=1e-6)
    assert estimate.num_inliers == len(points2D)


def test_pnp_with_outliers_and_covariance_scales_with_noise():
    rng = np.random.default_rng(1)
    camera = Camera("PINHOLE", 640, 480, (500, 500, 320, 240))
    cam_from_world = Rigid3(rng.normal(size=4), rng.normal(size=3))
    points2D, points3D = make_scene(rng, camera, cam_from_world, count=400)
    outliers = rng.choice(len(points2D), 150, replace=False)
    points2D = points2D.copy()
    points2D[outliers] = rng.uniform(0, 480, size=(150, 2))
    stds = []
    for sigma in (0.5, 2.0):
        noisy = points2D + rng.normal(size=points2D.shape) * sigma
        estimate = estimate_absolute_pose(noisy, points3D, camera, PnPConfig(max_error_px=8 * sigma, min_pixel_sigma=0.0, pixel_floor=0.0))
        assert pose_error(estimate.cam_from_world, cam_from_world)[0] < 0.05
        assert not estimate.inlier_mask[outliers].mean() > 0.05
        assert estimate.covariance.shape == (6, 6)
        assert np.all(np.linalg.eigvalsh(estimate.covariance) > 0)
        stds.append(np.sqrt(np.diag(estimate.covariance)))
    assert np.all(stds[1] / stds[0] > 2.5) and np.all(stds[1] / stds[0] < 6)


def test_covariance_matches_the_spread_of_estimates():
    rng = np.random.default_rng(2)
    camera = Camera("PINHOLE", 640, 480, (500, 500, 320, 240))
    cam_from_world = Rigid3.identity()
    points2D, points3D = make_scene(rng, camera, cam_from_world, count=60)
    deltas, covariances = [], []
    for _ in range(60):
        noisy = points2D + rng.normal(size=points2D.shape)
        estimate = estimate_absolute_pose(noisy, points3D, camera, PnPConfig(max_error_px=20, min_pixel_sigma=0.0, pixel_floor=0.0))
        world_from_cam = estimate.cam_from_world.inverse()
        rotation_delta = world_from_cam.rotation  # identity ground truth: delta rotation = R_wc
        from segloc.geometry import matrix_to_axis_angle

        deltas.append(np.concatenate([world_from_cam.translation, matrix_to_axis_angle(rotation_delta)]))
        covariances.append(estimate.covariance)
    empirical = np.std(np.array(deltas), axis=0)
    predicted = np.sqrt(np.diag(np.mean(covariances, axis=0)))
    assert np.all(empirical / predicted > 0.6) and np.all(empirical / predicted < 1.6)


def test_perturbation_convention_moves_the_camera_centre():
    pose = Rigid3.identity()
    moved = perturb_world_from_cam(pose, np.array([1.0, 0, 0, 0, 0, 0]))
    assert np.allclose(moved.center, [1, 0, 0])


def test_too_few_points_and_bad_shapes():
    camera = Camera("PINHOLE", 640, 480, (500, 500, 320, 240))
    assert estimate_absolute_pose(np.zeros((3, 2)), np.ones((3, 3)), camera) is None
    with pytest.raises(SeglocError, match="differ in length"):
        estimate_absolute_pose(np.zeros((5, 2)), np.ones((6, 3)), camera)
    with pytest.raises(SeglocError, match="non-finite"):
        estimate_absolute_pose(np.full((20, 2), np.nan), np.ones((20, 3)), camera)


def random_scene(seed: int, count: int = 300, camera: Camera | None = None):
    """A pinhole camera (unless given), a random pose and ``count`` points in front of it, projected."""
    rng = np.random.default_rng(seed)
    camera = camera or Camera("PINHOLE", 640, 480, (500, 500, 320, 240))
    cam_from_world = Rigid3(rng.normal(size=4), rng.normal(size=3))
    return (camera, cam_from_world, *make_scene(rng, camera, cam_from_world, count=count))


def test_covariance_floor_keeps_noise_free_estimates_honest():
    camera, _, points2D, points3D = random_scene(3)
    floored = estimate_absolute_pose(points2D, points3D, camera, PnPConfig(pixel_floor=0.0))
    tighter = estimate_absolute_pose(points2D, points3D, camera, PnPConfig(min_pixel_sigma=0.5, pixel_floor=0.0))
    assert np.allclose(np.sqrt(np.diag(floored.covariance)), 2 * np.sqrt(np.diag(tighter.covariance)), rtol=1e-6)


def test_projection_jacobian_moves_projections_as_a_small_perturbation_does():
    distorted = Camera("OPENCV", 640, 480, (500, 505, 320, 240, 0.05, -0.01, 0.001, 0.0005))
    camera, cam_from_world, _, points3D = random_scene(4, count=50, camera=distorted)
    delta = np.array([1e-4, -2e-4, 1e-4, 2e-5, -1e-5, 3e-5])
    moved = camera.project(perturb_world_from_cam(cam_from_world, delta).transform_points(points3D))
    predicted = camera.project(cam_from_world.transform_points(points3D)) + projection_jacobian(cam_from_world, camera, points3D) @ delta
    assert np.max(np.abs(moved - predicted)) < 1e-3 * np.max(np.abs(moved - camera.project(cam_from_world.transform_points(points3D))))


def test_systematic_covariance_does_not_shrink_with_more_points_and_grows_with_the_floor():
    camera, cam_from_world, points2D, points3D = random_scene(5, count=100)
    shared = systematic_pose_covariance(cam_from_world, camera, points3D, 1.0)
    repeated = systematic_pose_covariance(cam_from_world, camera, np.repeat(points3D, 10, axis=0), 1.0)
    assert np.allclose(shared, repeated, rtol=1e-6, atol=0)  # ten copies of each point share their error: no gain
    independent = pose_covariance(cam_from_world, camera, points2D, points3D, pixel_sigma=1.0)
    assert np.allclose(shared, len(points3D) * independent, rtol=1e-6)  # one point's worth of information
    assert np.allclose(systematic_pose_covariance(cam_from_world, camera, points3D, 3.0), 9.0 * shared, rtol=1e-9)
    assert np.array_equal(systematic_pose_covariance(cam_from_world, camera, points3D, 0.0), np.zeros((6, 6)))
    assert systematic_pose_covariance(cam_from_world, camera, points3D[:3], 1.0) is None
    with pytest.raises(SeglocError, match="pixel_floor"):
        systematic_pose_covariance(cam_from_world, camera, points3D, -1.0)


def test_pnp_pixel_floor_adds_the_shared_error_term():
    camera, _, points2D, points3D = random_scene(6)
    plain = estimate_absolute_pose(points2D, points3D, camera, PnPConfig(pixel_floor=0.0))
    floored = estimate_absolute_pose(points2D, points3D, camera, PnPConfig(pixel_floor=0.5))
    inliers = floored.inlier_mask
    expected = plain.covariance + systematic_pose_covariance(floored.cam_from_world, camera, points3D[inliers], 0.5)
    assert np.allclose(floored.covariance, expected, rtol=1e-5)
    assert np.all(np.linalg.eigvalsh(floored.covariance - plain.covariance) > -1e-12)
    with pytest.raises(SeglocError, match="pixel_floor"):
        PnPConfig(pixel_floor=-0.1)


# --- NEES: the covariance checked against the truth ----------------------------------------


def random_pose_covariance(rng: np.random.Generator) -> np.ndarray:
    """A correlated (6, 6) covariance: centimetres to decimetres, and about a degree."""
    basis = rng.normal(size=(6, 6))
    scales = np.array([0.2, 0.05, 0.1, 0.02, 0.005, 0.01])
    return (basis * scales) @ (basis * scales).T + np.diag(scales**2) * 0.1


def test_pose_perturbation_inverts_perturb_world_from_cam():
    rng = np.random.default_rng(3)
    for _ in range(20):
        estimate = Rigid3(rng.normal(size=4), rng.normal(size=3) * 5)
        delta = np.concatenate([rng.normal(size=3), rng.normal(size=3) * 0.5])
        truth = perturb_world_from_cam(estimate, delta)
        assert np.allclose(pose_perturbation(estimate, truth), delta, atol=1e-9)
        t_err, _ = pose_error(estimate, truth)
        assert np.isclose(t_err, np.linalg.norm(delta[:3]))


def test_nees_of_errors_drawn_from_the_covariance_is_chi_square_6():
    rng = np.random.default_rng(0)
    estimate = Rigid3(rng.normal(size=4), np.array([4.0, -2.0, 10.0]))  # far from the origin: a wrong convention shows
    covariance = random_pose_covariance(rng)
    draws = rng.multivariate_normal(np.zeros(6), covariance, size=4000)
    nees = np.array([normalized_estimation_error_squared(estimate, perturb_world_from_cam(estimate, d), covariance) for d in draws])
    assert abs(nees.mean() - 6.0) < 0.3  # chi2(6): mean 6, standard error 0.055 over 4000 draws
    assert abs(np.mean(nees <= CHI2_6DOF_95) - 0.95) < 0.015  # standard error 0.0034
    # A covariance 4 times too small (the overconfidence this measures) is caught.
    shrunk = np.array(
        [normalized_estimation_error_squared(estimate, perturb_world_from_cam(estimate, d), covariance / 4) for d in draws[:500]]
    )
    assert shrunk.mean() > 20.0 and np.mean(shrunk <= CHI2_6DOF_95) < 0.6


def test_nees_depends_on_the_perturbation_convention():
    # The same error expressed in the camera's axes instead of the world's is not consistent.
    estimate = Rigid3(np.array([0.5, 0.5, -0.5, 0.5]), np.array([1.0, 2.0, 3.0]))
    covariance = np.diag([0.01, 0.01, 0.0001, 1e-6, 1e-6, 1e-6])  # uncertain in world x and y, sure in world z
    along_world_z = perturb_world_from_cam(estimate, np.array([0.0, 0.0, 0.1, 0.0, 0.0, 0.0]))
    along_world_x = perturb_world_from_cam(estimate, np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0]))
    assert normalized_estimation_error_squared(estimate, along_world_z, covariance) == pytest.approx(100.0)
    assert normalized_estimation_error_squared(estimate, along_world_x, covariance) == pytest.approx(1.0)


def test_nees_rejects_a_bad_covariance():
    pose = Rigid3.identity()
    with pytest.raises(SeglocError, match="positive definite"):
        normalized_estimation_error_squared(pose, pose, -np.eye(6))
    with pytest.raises(SeglocError, match=r"\(6, 6\)"):
        normalized_estimation_error_squared(pose, pose, np.eye(3))


def test_pnp_is_repeatable_with_its_seed():
    """The same noisy correspondences with outliers give the same pose call after call (live and offline agree)."""
    rng = np.random.default_rng(3)
    camera = Camera("PINHOLE", 640, 480, (500, 500, 320, 240))
    cam_from_world = Rigid3(rng.normal(size=4), rng.normal(size=3))
    points2D, points3D = make_scene(rng, camera, cam_from_world, count=300)
    points2D = points2D + rng.normal(scale=1.5, size=points2D.shape)
    points2D[rng.choice(len(points2D), 120, replace=False)] = rng.uniform([0, 0], [640, 480], size=(120, 2))
    first, second = (estimate_absolute_pose(points2D, points3D, camera, PnPConfig(max_error_px=4.0)) for _ in range(2))
    assert first.num_inliers == second.num_inliers
    np.testing.assert_allclose(first.cam_from_world.matrix(), second.cam_from_world.matrix(), atol=1e-9)
    with pytest.raises(SeglocError, match="random_seed"):
        PnPConfig(random_seed=-2)
