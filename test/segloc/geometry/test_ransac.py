"""PROSAC sampling in absolute pose RANSAC: confident correspondences first, seeded, weights checked."""

import math

import numpy as np
import pytest

from segloc.config import config_from_dict
from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3, pose_error
from segloc.geometry.pose import PnPConfig, estimate_absolute_pose
from segloc.geometry.ransac import check_weights, ransac_trials

CAMERA = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))


def scene_with_outliers(seed, count=60, outlier_ratio=0.7, noise_px=0.5):
    """Correspondences of a random pose, ``outlier_ratio`` of them moved to random pixels and given low weights.

    Returns:
        points2D (N, 2), points3D (N, 3), weights (N,), outlier mask (N,), the true ``cam_from_world``.
    """
    rng = np.random.default_rng(seed)
    truth = Rigid3(rng.normal(size=4), rng.normal(size=3))
    points_cam = rng.uniform(-1, 1, size=(count, 3)) * [3, 2, 0] + rng.uniform(4, 8, size=(count, 1)) * [0, 0, 1]
    points2D = CAMERA.project(points_cam) + rng.normal(size=(count, 2)) * noise_px
    outliers = np.zeros(count, bool)
    outliers[rng.choice(count, round(outlier_ratio * count), replace=False)] = True
    points2D[outliers] = rng.uniform([0, 0], [640, 480], size=(outliers.sum(), 2))
    weights = np.where(outliers, rng.uniform(0.0, 0.3, count), rng.uniform(0.4, 1.0, count))
    return points2D, truth.inverse().transform_points(points_cam), weights, outliers, truth


def recovered(estimate, truth):
    return estimate is not None and pose_error(estimate.cam_from_world, truth)[0] < 0.05


def test_prosac_needs_fewer_samples_when_the_outliers_have_low_weights():
    # 70 % outliers: a uniform minimal sample is all inliers with probability 0.3^3 = 2.7 %, so 10
    # samples mostly miss; ranked by weight, the first samples come from the inliers.
    config = PnPConfig(max_error_px=4.0, max_iterations=10, sampling="prosac")
    ranked, unranked = 0, 0
    for seed in range(20):
        points2D, points3D, weights, outliers, truth = scene_with_outliers(seed)
        estimate = estimate_absolute_pose(points2D, points3D, CAMERA, config, weights)
        if recovered(estimate, truth):
            ranked += 1
            assert not np.any(estimate.inlier_mask[outliers])  # the mask follows the input order
            assert estimate.inlier_mask[~outliers].mean() > 0.9
        ranked_by_input_order = estimate_absolute_pose(points2D, points3D, CAMERA, config, np.ones(len(weights)))
        unranked += recovered(ranked_by_input_order, truth)
    assert ranked == 20
    assert unranked <= 14


def test_prosac_with_the_default_budget_recovers_the_pose_with_any_ranking():
    points2D, points3D, weights, outliers, truth = scene_with_outliers(0)
    for ranking in (weights, None, 1.0 - weights):
        estimate = estimate_absolute_pose(points2D, points3D, CAMERA, PnPConfig(max_error_px=4.0, sampling="prosac"), ranking)
        assert recovered(estimate, truth)
        assert estimate.covariance.shape == (6, 6) and np.all(np.linalg.eigvalsh(estimate.covariance) > 0)
        assert np.array_equal(estimate.inlier_mask, ~outliers) or np.mean(estimate.inlier_mask == ~outliers) > 0.95


@pytest.mark.parametrize("model_params", [("PINHOLE", (500, 505, 320, 240)), ("OPENCV", (500, 505, 320, 240, 0.05, -0.01, 0.001, 0.0005))])
def test_prosac_recovers_a_noise_free_pose_through_lens_distortion(model_params):
    rng = np.random.default_rng(3)
    camera = Camera(model_params[0], 640, 480, model_params[1])
    truth = Rigid3(rng.normal(size=4), rng.normal(size=3) * 5)
    points_cam = rng.uniform(-1, 1, size=(100, 3)) * [3, 2, 0] + rng.uniform(4, 8, size=(100, 1)) * [0, 0, 1]
    estimate = estimate_absolute_pose(
        camera.project(points_cam), truth.inverse().transform_points(points_cam), camera, PnPConfig(sampling="prosac"), rng.random(100)
    )
    t_err, r_err = pose_error(estimate.cam_from_world, truth)
    assert t_err < 1e-6 and r_err < 1e-6 and estimate.num_inliers == 100


def test_a_seed_gives_the_same_pose_every_time():
    points2D, points3D, weights, _, truth = scene_with_outliers(1)
    config = PnPConfig(max_error_px=4.0, max_iterations=50, sampling="prosac", random_seed=7)
    first = estimate_absolute_pose(points2D, points3D, CAMERA, config, weights)
    second = estimate_absolute_pose(points2D, points3D, CAMERA, config, weights)
    assert np.array_equal(first.inlier_mask, second.inlier_mask)
    assert np.allclose(first.cam_from_world.matrix(), second.cam_from_world.matrix(), atol=1e-9)
    fresh = estimate_absolute_pose(points2D, points3D, CAMERA, PnPConfig(max_error_px=4.0, sampling="prosac", random_seed=-1), weights)
    assert recovered(fresh, truth)


@pytest.mark.parametrize("sampling", ["uniform", "prosac"])
@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones(59), "one weight per correspondence"),
        (np.ones((60, 1)), "one weight per correspondence"),
        (np.r_[np.ones(59), -0.1], ">= 0"),
        (np.zeros(60), "all zero"),
        (np.r_[np.ones(59), np.nan], "NaN"),
        (np.r_[np.ones(59), np.inf], "NaN or infinity"),
    ],
)
def test_bad_weights_are_rejected(sampling, weights, message):
    points2D, points3D, _, _, _ = scene_with_outliers(2)
    with pytest.raises(SeglocError, match=message):
        estimate_absolute_pose(points2D, points3D, CAMERA, PnPConfig(sampling=sampling), weights)


def test_weights_may_be_zero_where_some_are_not():
    weights = check_weights([0.0, 0.0, 2.0], 3)
    assert weights.dtype == np.float64 and weights.tolist() == [0.0, 0.0, 2.0]


def test_the_sampling_option_is_checked():
    assert PnPConfig().sampling == "uniform"
    assert config_from_dict(PnPConfig, {"sampling": "prosac"}).sampling == "prosac"
    with pytest.raises(SeglocError, match="sampling must be one of uniform, prosac, got 'weighted'"):
        PnPConfig(sampling="weighted")
    with pytest.raises(SeglocError, match="sampling must be one of"):
        config_from_dict(PnPConfig, {"sampling": "PROSAC"}, "localize.pnp")
    with pytest.raises(SeglocError, match="expected str"):
        config_from_dict(PnPConfig, {"sampling": 1}, "localize.pnp")


def test_ransac_trials_as_colmap_counts_them():
    # one all-inlier sample of 3 with probability 0.99 at half inliers: log(0.01) / log(1 - 0.125) = 34.5
    assert ransac_trials(0.5, 0.99, 1.0) == 35
    assert ransac_trials(0.5, 0.99, 3.0) == math.ceil(3 * math.log(0.01) / math.log(0.875))
    assert ransac_trials(1.0, 0.9999, 3.0) == 1
    assert ransac_trials(0.0, 0.9999, 3.0) == math.inf
