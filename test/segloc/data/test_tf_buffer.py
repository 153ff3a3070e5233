"""Interpolated pose series and TF tree lookups."""

from __future__ import annotations

import numpy as np
import pytest

from segloc.data.tf_buffer import PoseLookupError, PoseSeries, TfBuffer
from segloc.errors import SeglocError
from segloc.geometry import Rigid3, axis_angle_to_matrix, interpolate_rigid

S = 1_000_000_000


def random_pose(rng: np.random.Generator) -> Rigid3:
    return Rigid3.from_rotation(axis_angle_to_matrix(rng.normal(size=3)), rng.normal(size=3))


def assert_pose_close(a: Rigid3, b: Rigid3, atol: float = 1e-9) -> None:
    np.testing.assert_allclose(a.matrix(), b.matrix(), atol=atol)


def test_series_exact_at_samples_and_interpolated_between() -> None:
    rng = np.random.default_rng(0)
    poses = [random_pose(rng) for _ in range(4)]
    series = PoseSeries()
    for i in (2, 0, 3, 1):  # out of order on purpose
        series.add(i * S, poses[i])
    assert len(series) == 4
    assert series.time_range == (0, 3 * S)
    assert series.at(2 * S) == poses[2]
    assert_pose_close(series.at(int(1.25 * S)), interpolate_rigid(poses[1], poses[2], 0.25))


def test_series_rejects_outside_range_and_gaps() -> None:
    series = PoseSeries("odom")
    series.add(10 * S, Rigid3.identity())
    series.add(12 * S, Rigid3.identity())
    with pytest.raises(PoseLookupError, match="outside") as info:
        series.at(9 * S)
    assert info.value.reason == "outside_range" and info.value.is_time_related
    with pytest.raises(PoseLookupError, match="from the nearest pose sample") as info:
        series.at(11 * S, max_gap_ns=S // 2)
    assert info.value.reason == "gap"
    series.at(11 * S, max_gap_ns=S)  # within the gap limit
    with pytest.raises(PoseLookupError) as info:
        PoseSeries().at(0)
    assert info.value.reason == "empty"


def test_series_duplicate_stamp_keeps_last() -> None:
    series = PoseSeries()
    series.add(0, Rigid3.identity())
    series.add(0, Rigid3(translation=[1.0, 0, 0]))
    series.add(S, Rigid3.identity())
    assert len(series) == 2
    np.testing.assert_allclose(series.at(0).translation, [1, 0, 0])


def test_tf_chain_static_and_dynamic() -> None:
    rng = np.random.default_rng(1)
    world_from_odom = random_pose(rng)
    odom_from_base = [random_pose(rng), random_pose(rng)]
    base_from_cam = random_pose(rng)
    buffer = TfBuffer()
    buffer.add("base_link", "camera", base_from_cam)
    buffer.add("/map", "odom", world_from_odom, stamp_ns=0)  # a ROS 1 leading slash is ignored
    buffer.add("map", "odom", world_from_odom, stamp_ns=2 * S)
    buffer.add("odom", "base_link", odom_from_base[0], stamp_ns=0)
    buffer.add("odom", "base_link", odom_from_base[1], stamp_ns=2 * S)
    assert buffer.frames == {"map", "odom", "base_link", "camera"}

    expected = world_from_odom * interpolate_rigid(*odom_from_base, 0.5) * base_from_cam
    assert_pose_close(buffer.lookup("map", "camera", S), expected)
    assert_pose_close(buffer.lookup("camera", "map", S), expected.inverse())
    # sibling lookup through the common ancestor
    assert_pose_close(buffer.lookup("odom", "camera", 0), odom_from_base[0] * base_from_cam)
    assert buffer.lookup("camera", "camera", 0) == Rigid3.identity()
    # static edges alone work at any time
    assert_pose_close(buffer.lookup("base_link", "camera", 100 * S), base_from_cam)
    with pytest.raises(PoseLookupError, match="outside"):
        buffer.lookup("map", "camera", 3 * S)


def test_tf_structural_errors() -> None:
    buffer = TfBuffer()
    buffer.add("map", "base_link", Rigid3.identity(), stamp_ns=0)
    buffer.add("odom", "base_link", Rigid3.identity(), stamp_ns=0)
    buffer.add("camera_link", "camera", Rigid3.identity())
    with pytest.raises(PoseLookupError, match="'world' is not in the TF data; known frames: base_link") as info:
        buffer.lookup("world", "camera", 0)
    assert info.value.reason == "unknown_frame" and not info.value.is_time_related
    with pytest.raises(PoseLookupError, match="several parents") as info:
        buffer.lookup("map", "base_link", 0)
    assert info.value.reason == "ambiguous_parent"
    with pytest.raises(PoseLookupError, match="not connected") as info:
        buffer.lookup("camera_link", "odom", 0)
    assert info.value.reason == "not_connected"
    with pytest.raises(SeglocError, match="to itself"):
        buffer.add("map", "map", Rigid3.identity())
