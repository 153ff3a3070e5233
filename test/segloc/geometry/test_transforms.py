import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.geometry import Rigid3, axis_angle_to_matrix, interpolate_rigid, matrix_to_axis_angle, pose_error


def random_pose(rng: np.random.Generator) -> Rigid3:
    return Rigid3(rng.normal(size=4), rng.normal(size=3))


def test_quaternion_matrix_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(100):
        pose = random_pose(rng)
        again = Rigid3.from_matrix(pose.matrix())
        assert np.allclose(again.quat_wxyz, pose.quat_wxyz, atol=1e-12)
        assert np.allclose(again.rotation @ again.rotation.T, np.eye(3), atol=1e-12)


def test_quaternion_order_is_explicit():
    # 90 degrees about z: w = cos(45), z = sin(45).
    pose = Rigid3([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], [0, 0, 0])
    assert np.allclose(pose.transform_points([[1, 0, 0]]), [[0, 1, 0]])
    assert np.allclose(pose.quat_xyzw, [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    assert Rigid3.from_quat_xyzw(pose.quat_xyzw, [0, 0, 0]) == pose


def test_composition_and_inverse():
    rng = np.random.default_rng(1)
    a_from_b, b_from_c = random_pose(rng), random_pose(rng)
    points = rng.normal(size=(10, 3))
    a_from_c = a_from_b * b_from_c
    assert np.allclose(a_from_c.transform_points(points), a_from_b.transform_points(b_from_c.transform_points(points)))
    assert np.allclose((a_from_b * a_from_b.inverse()).matrix(), np.eye(4), atol=1e-12)
    assert np.allclose(a_from_b.center, a_from_b.inverse().translation)


def test_pycolmap_round_trip():
    rng = np.random.default_rng(2)
    pose = random_pose(rng)
    again = Rigid3.from_pycolmap(pose.to_pycolmap())
    assert np.allclose(again.matrix(), pose.matrix(), atol=1e-12)


def test_axis_angle():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rotvec = rng.normal(size=3)
        rotvec *= min(1.0, 3.0 / np.linalg.norm(rotvec))
        assert np.allclose(matrix_to_axis_angle(axis_angle_to_matrix(rotvec)), rotvec, atol=1e-9)


def test_pose_error_hand_computed():
    gt = Rigid3.identity()
    rot_10deg = Rigid3.from_rotation(axis_angle_to_matrix([0, 0, np.radians(10)]), [0, 0, 0])
    shifted = Rigid3([1, 0, 0, 0], [0.3, -0.4, 0])  # camera centre at (-0.3, 0.4, 0)
    assert pose_error(rot_10deg, gt) == pytest.approx((0.0, 10.0))
    assert pose_error(shifted, gt) == pytest.approx((0.5, 0.0))


def test_interpolation_midpoint():
    a = Rigid3.identity()
    b = Rigid3.from_rotation(axis_angle_to_matrix([0, 0, np.radians(40)]), [2, 0, 0])
    mid = interpolate_rigid(a, b, 0.5)
    assert pose_error(mid, Rigid3.from_rotation(axis_angle_to_matrix([0, 0, np.radians(20)]), [1, 0, 0]))[1] < 1e-9
    assert np.allclose(mid.translation, [1, 0, 0])


@pytest.mark.parametrize(
    "quat, translation, message",
    [([np.nan, 0, 0, 1], [0, 0, 0], "non-finite"), ([0, 0, 0, 0], [0, 0, 0], "zero quaternion"), ([1, 0, 0], [0, 0, 0], "4-vector")],
)
def test_bad_transforms(quat, translation, message):
    with pytest.raises(SeglocError, match=message):
        Rigid3(quat, translation)
