"""Report files: strict JSON, TUM trajectories that parse back, plots, the text summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segloc.evaluate.metrics import QueryResult, summarize
from segloc.evaluate.report import (
    format_summary,
    plot_error_cdf,
    plot_trajectory_topview,
    read_tum_trajectory,
    write_metrics,
    write_report,
    write_tum_trajectory,
)
from segloc.geometry import Rigid3, axis_angle_to_matrix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _reject_constant(name: str):
    raise AssertionError(f"JSON contains {name}")


def strict_json(path):
    return json.loads(path.read_text(), parse_constant=_reject_constant)


def random_pose(rng: np.random.Generator) -> Rigid3:
    return Rigid3.from_rotation(axis_angle_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 5)


def make_results(rng: np.random.Generator, n: int = 6, failed=(2,), far=()) -> list[QueryResult]:
    """Queries along a line in x-y; the estimate is off by a few cm, ``far`` ones by 1 km."""
    results = []
    for i in range(n):
        world_from_cam = Rigid3.from_rotation(axis_angle_to_matrix(np.array([0.0, 0.0, 0.3 * i])), np.array([2.0 * i, np.sin(i), 1.5]))
        gt = world_from_cam.inverse()
        est = None
        if i not in failed:
            offset = np.array([1000.0, 0, 0]) if i in far else rng.normal(size=3) * 0.05 * (i + 1)
            est = Rigid3.from_rotation(world_from_cam.rotation, world_from_cam.translation + offset).inverse()
        results.append(QueryResult.from_estimate(f"seq/q{i}.png", gt, est, timings={"extract": 0.01}, time_s=0.02))
    return results


def test_tum_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    poses = [random_pose(rng) for _ in range(5)]
    stamps = [1.7e9 + 0.1 * i + 1e-9 * i for i in range(5)]
    # Written sorted by time whatever the input order.
    order = [3, 0, 4, 1, 2]
    path = write_tum_trajectory(tmp_path / "traj.txt", [stamps[i] for i in order], [poses[i] for i in order])
    read_stamps, read_poses = read_tum_trajectory(path)
    np.testing.assert_array_equal(read_stamps, stamps)
    for pose, read in zip(poses, read_poses):
        np.testing.assert_allclose(read.matrix(), pose.matrix(), atol=1e-12)
    first = next(line for line in path.read_text().splitlines() if not line.startswith("#")).split()
    assert len(first) == 8
    # tx ty tz then qx qy qz qw (scalar last).
    np.testing.assert_allclose([float(v) for v in first[1:4]], poses[0].translation)
    np.testing.assert_allclose([float(v) for v in first[4:8]], poses[0].quat_xyzw)


def test_write_metrics_is_strict_json(tmp_path):
    metrics = {"recall": {"a": 0.5}, "median_translation_m": float("inf"), "x": float("nan"), "n": np.int64(3)}
    path = write_metrics(tmp_path / "out" / "metrics.json", metrics)
    assert strict_json(path) == {"recall": {"a": 0.5}, "median_translation_m": None, "x": None, "n": 3}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left


def test_report_layout(tmp_path):
    rng = np.random.default_rng(1)
    results = make_results(rng)
    metrics = summarize(results, map_bytes=10, peak_memory_bytes=20, method="fake")
    mapping_centers = np.stack([np.linspace(-1, 11, 13), np.zeros(13), np.full(13, 1.5)], axis=1)
    files = write_report(tmp_path, metrics, results, mapping_centers=mapping_centers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["metrics.json", "per_query.json", "estimates_tum.txt", "groundtruth_tum.txt", "errors_cdf.png", "trajectory_topview.png"]
    )
    assert strict_json(files["metrics"])["recall"] == metrics["recall"]
    per_query = strict_json(files["per_query"])
    assert [q["name"] for q in per_query] == [r.name for r in results]
    # No timestamps in the results: the query index stands in; estimates only for localized queries.
    gt_stamps, gt_poses = read_tum_trajectory(files["groundtruth_tum"])
    est_stamps, est_poses = read_tum_trajectory(files["estimates_tum"])
    np.testing.assert_array_equal(gt_stamps, np.arange(6))
    np.testing.assert_array_equal(est_stamps, [0, 1, 3, 4, 5])
    for stamp, pose in zip(est_stamps, est_poses):
        expected = results[int(stamp)].cam_from_world_est.inverse()
        np.testing.assert_allclose(pose.matrix(), expected.matrix(), atol=1e-12)
    np.testing.assert_allclose(gt_poses[4].translation, results[4].cam_from_world_gt.center, atol=1e-12)
    for name in ("groundtruth_tum", "estimates_tum"):  # and the files say so, for evo's durations and speeds
        assert "# the timestamps are query indices (0, 1, 2, ...), not seconds" in files[name].read_text()
    for name in ("errors_cdf", "trajectory_topview"):
        data = files[name].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_timestamps_used_when_present(tmp_path):
    results = make_results(np.random.default_rng(2), n=3, failed=())
    for i, result in enumerate(results):
        result.timestamp = 100.0 - i  # distinct, descending: the files are sorted by time
    files = write_report(tmp_path, summarize(results), results, plots=False)
    stamps, poses = read_tum_trajectory(files["groundtruth_tum"])
    np.testing.assert_array_equal(stamps, [98.0, 99.0, 100.0])
    np.testing.assert_allclose(poses[0].translation, results[2].cam_from_world_gt.center, atol=1e-12)
    assert "errors_cdf" not in files
    assert "query indices" not in files["groundtruth_tum"].read_text()


@pytest.mark.parametrize("failed, far", [((0, 1, 2), ()), ((), (1,)), ((), ())])
def test_plots_in_corner_cases(tmp_path, failed, far):
    results = make_results(np.random.default_rng(3), n=3, failed=failed, far=far)
    for path in (plot_error_cdf(tmp_path / "cdf.png", results), plot_trajectory_topview(tmp_path / "top.png", results)):
        assert path.read_bytes().startswith(PNG_MAGIC)


def test_format_summary():
    results = make_results(np.random.default_rng(4), n=4, failed=(1, 2, 3))
    results[1].failure_reason = "too few inliers"
    metrics = summarize(results, map_bytes=3 * 1024 * 1024, peak_memory_bytes=2 * 1024**3, method="fake")
    text = format_summary(metrics)
    assert "1/4 queries (25.0%)" in text
    assert "0.25m_2deg  25.0%" in text and "5cm_5deg" in text
    assert "inf (half or more failed)" in text
    assert "3.0 MiB" in text and "2.0 GiB" in text
    assert "extract" in text and "too few inliers" in text
    assert len(text.splitlines()) < 25
