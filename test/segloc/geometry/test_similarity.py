"""Sim(3) transforms and their robust estimation from camera trajectories (segloc.geometry.similarity)."""

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.geometry.similarity import Sim3, align_trajectories, estimate_sim3, rotation_angles_deg
from segloc.geometry.transforms import Rigid3, axis_angle_to_matrix


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    return axis_angle_to_matrix(rng.normal(size=3))


def _trajectory(rng: np.random.Generator, count: int, straight: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) camera centres on a loop (or a straight line) and (N, 3, 3) world_from_cam rotations."""
    t = np.linspace(0, 2 * np.pi, count, endpoint=False)
    centers = (
        np.stack([t, np.zeros(count), np.full(count, 1.2)], 1)
        if straight
        else np.stack([3 * np.cos(t), 2 * np.sin(t), 1.2 + 0.05 * np.sin(3 * t)], 1)
    )
    rotations = np.stack([axis_angle_to_matrix(np.array([0.0, 0.0, a]) + 0.05 * rng.normal(size=3)) for a in t])
    return centers, rotations


def test_sim3_algebra():
    rng = np.random.default_rng(0)
    a_from_b = Sim3.from_rotation(_random_rotation(rng), rng.normal(size=3), 2.5)
    points = rng.normal(size=(10, 3))
    assert np.allclose(a_from_b.inverse().transform_points(a_from_b.transform_points(points)), points)
    assert np.allclose((a_from_b * a_from_b.inverse()).matrix(), np.eye(4), atol=1e-9)
    assert np.allclose(a_from_b.matrix()[:3, :3] @ points[0] + a_from_b.translation, a_from_b.transform_points(points[:1])[0])
    cam_from_b = Rigid3.from_rotation(_random_rotation(rng), rng.normal(size=3))
    cam_from_a = a_from_b.transform_pose(cam_from_b)
    assert np.allclose(cam_from_a.center, a_from_b.transform_points(cam_from_b.center[None])[0])
    assert np.allclose(cam_from_a.rotation.T, a_from_b.rotation @ cam_from_b.rotation.T)
    with pytest.raises(SeglocError, match="positive"):
        Sim3(scale=0.0)


@pytest.mark.parametrize("straight", [False, True])
def test_alignment_recovers_a_known_transform(straight):
    rng = np.random.default_rng(1)
    centers_b, rotations_b = _trajectory(rng, 20, straight)
    truth = Sim3.from_rotation(_random_rotation(rng), rng.normal(size=3) * 5, 0.3)
    centers_a = truth.transform_points(centers_b)
    rotations_a = truth.rotation @ rotations_b
    estimate = align_trajectories(centers_b, centers_a, rotations_b, rotations_a)
    assert estimate is not None
    assert np.allclose(estimate.matrix(), truth.matrix(), atol=1e-6)
    if straight:  # collinear centres alone leave the rotation about their line free
        assert align_trajectories(centers_b, centers_a) is None


def test_msac_recovers_a_known_transform_with_outliers():
    rng = np.random.default_rng(2)
    centers_b, rotations_b = _trajectory(rng, 40)
    truth = Sim3.from_rotation(_random_rotation(rng), np.array([4.0, -2.0, 1.0]), 1.7)
    centers_a = truth.transform_points(centers_b) + rng.normal(0, 0.01, (40, 3))
    rotations_a = np.stack([axis_angle_to_matrix(rng.normal(0, 0.005, 3)) for _ in range(40)]) @ truth.rotation @ rotations_b
    outliers = rng.choice(40, 12, replace=False)
    centers_a[outliers[:8]] += rng.uniform(1, 5, (8, 3))  # wrong places
    rotations_a[outliers[8:]] = rotations_a[outliers[8:]] @ axis_angle_to_matrix(np.array([0.0, 0.0, 1.0]))  # right place, wrong heading
    estimate = estimate_sim3(centers_b, centers_a, rotations_b, rotations_a, max_center_error=0.05, max_rotation_error_deg=3.0)
    assert estimate is not None
    expected = np.ones(40, bool)
    expected[outliers] = False
    assert np.array_equal(estimate.inliers, expected)
    assert abs(estimate.a_from_b.scale / 1.7 - 1) < 0.01
    assert np.linalg.norm(estimate.a_from_b.translation - truth.translation) < 0.05
    assert rotation_angles_deg(estimate.a_from_b.rotation[None], truth.rotation[None])[0] < 0.5
    assert np.median(estimate.center_residuals[expected]) < 0.03


def test_msac_gives_none_without_enough_cameras():
    rng = np.random.default_rng(3)
    centers, rotations = _trajectory(rng, 2)
    assert estimate_sim3(centers, centers, rotations, rotations, max_center_error=0.1) is None
    with pytest.raises(SeglocError, match="centres"):
        estimate_sim3(np.zeros((3, 2)), np.zeros((3, 2)), max_center_error=0.1)
