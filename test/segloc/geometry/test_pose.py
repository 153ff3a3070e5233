import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3, pose_error
from segloc.geometry.pose import PnPConfig, estimate_absolute_pose, perturb_world_from_cam


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
        estimate = estimate_absolute_pose(noisy, points3D, camera, PnPConfig(max_error_px=8 * sigma, min_pixel_sigma=0.0))
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
        estimate = estimate_absolute_pose(noisy, points3D, camera, PnPConfig(max_error_px=20, min_pixel_sigma=0.0))
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


def test_covariance_floor_keeps_noise_free_estimates_honest():
    rng = np.random.default_rng(3)
    camera = Camera("PINHOLE", 640, 480, (500, 500, 320, 240))
    cam_from_world = Rigid3(rng.normal(size=4), rng.normal(size=3))
    points2D, points3D = make_scene(rng, camera, cam_from_world)
    floored = estimate_absolute_pose(points2D, points3D, camera)
    tighter = estimate_absolute_pose(points2D, points3D, camera, PnPConfig(min_pixel_sigma=0.5))
    assert np.allclose(np.sqrt(np.diag(floored.covariance)), 2 * np.sqrt(np.diag(tighter.covariance)), rtol=1e-6)
