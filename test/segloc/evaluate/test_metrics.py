"""Metrics against hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.evaluate import metrics as metrics_module
from segloc.evaluate.metrics import THRESHOLDS, QueryResult, peak_rss_bytes, per_query_records, recall_at, summarize, to_json_safe
from segloc.geometry import Rigid3, axis_angle_to_matrix
from segloc.geometry.pose import perturb_world_from_cam


def perturbed(cam_from_world: Rigid3, offset_m: float, angle_deg: float, direction=(1.0, 2.0, 2.0), axis=(0.0, 1.0, 0.0)) -> Rigid3:
    """``cam_from_world`` with its centre moved by ``offset_m`` and its rotation turned by ``angle_deg``."""
    direction = np.asarray(direction) / np.linalg.norm(direction)
    axis = np.asarray(axis) / np.linalg.norm(axis)
    rotation = axis_angle_to_matrix(axis * np.radians(angle_deg)) @ cam_from_world.rotation
    centre = cam_from_world.center + offset_m * direction
    return Rigid3.from_rotation(rotation, -rotation @ centre)


def gt_pose(i: int) -> Rigid3:
    return Rigid3.from_rotation(axis_angle_to_matrix(np.array([0.1, 0.2 * i, 0.05])), np.array([i, -1.0, 2.0 * i]))


def make_results(cases: list[tuple[float, float] | None]) -> list[QueryResult]:
    """One result per case: (offset m, angle deg), or None for a failed query."""
    results = []
    for i, case in enumerate(cases):
        gt = gt_pose(i)
        est = None if case is None else perturbed(gt, *case)
        results.append(
            QueryResult.from_estimate(
                f"q{i}.png", gt, est, num_inliers=50 + i, timings={"extract": 0.1 * (i + 1), "pose": 0.01}, time_s=0.2 * (i + 1)
            )
        )
    return results


def test_errors_are_the_perturbation():
    (result,) = make_results([(0.3, 7.0)])
    assert result.translation_error_m == pytest.approx(0.3, abs=1e-9)
    assert result.rotation_error_deg == pytest.approx(7.0, abs=1e-6)
    assert result.success and result.failure_reason is None


def test_recall_and_medians_hand_computed():
    results = make_results([(0.1, 1.0), (0.3, 1.0), (3.0, 8.0), None])
    metrics = summarize(results, map_bytes=1234, peak_memory_bytes=5678, method="fake", map_path="maps/x", dataset="data/y")
    # 0.25 m / 2 deg: only q0; 0.5 m / 5 deg: q0, q1; 5 m / 10 deg: q0-q2; 5 cm / 5 deg: none. The failure is a miss.
    assert metrics["recall"] == pytest.approx({"0.25m_2deg": 0.25, "0.5m_5deg": 0.5, "5m_10deg": 0.75, "5cm_5deg": 0.0})
    assert list(metrics["recall"]) == list(THRESHOLDS)
    # All queries, failure = inf: t [0.1, 0.3, 3, inf] -> (0.3 + 3) / 2; r [1, 1, 8, inf] -> (1 + 8) / 2.
    assert metrics["median_translation_m"] == pytest.approx(1.65)
    assert metrics["median_rotation_deg"] == pytest.approx(4.5)
    assert metrics["median_translation_localized_m"] == pytest.approx(0.3)
    assert metrics["median_rotation_localized_deg"] == pytest.approx(1.0)
    assert (metrics["num_queries"], metrics["num_localized"], metrics["num_failed"]) == (4, 3, 1)
    assert metrics["failure_reasons"] == {"unknown": 1}
    # Wall time 0.2, 0.4, 0.6, 0.8 s; stage "extract" 0.1 .. 0.4 s.
    assert metrics["time_per_query_s"] == pytest.approx(0.5)
    assert metrics["time_per_query_median_s"] == pytest.approx(0.5)
    assert metrics["time_per_stage_s"]["extract"] == pytest.approx({"mean": 0.25, "median": 0.25, "count": 4})
    assert list(metrics["time_per_stage_s"]) == ["extract", "pose"]
    assert metrics["map_bytes"] == 1234 and metrics["peak_memory_bytes"] == 5678
    assert (metrics["method"], metrics["map_path"], metrics["dataset"]) == ("fake", "maps/x", "data/y")
    assert metrics["queries_without_overlap"] is None


def test_threshold_is_inclusive():
    t = np.array([0.25, 0.2500001])
    r = np.array([2.0, 1.0])
    assert recall_at(t, r, 0.25, 2.0) == 0.5
    assert recall_at(np.array([]), np.array([]), 0.25, 2.0) == 0.0


@pytest.mark.parametrize(
    "cases, median_t",
    [
        ([(0.1, 1.0), None], None),  # half failed: (0.1 + inf) / 2 is infinite
        ([(0.1, 1.0), (0.2, 1.0), None], 0.2),  # one of three failed: finite
        ([(0.1, 1.0), None, None], None),
    ],
)
def test_median_with_failures(cases, median_t):
    metrics = summarize(make_results(cases))
    if median_t is None:
        assert metrics["median_translation_m"] is None and metrics["median_rotation_deg"] is None
    else:
        assert metrics["median_translation_m"] == pytest.approx(median_t)
    json.dumps(metrics, allow_nan=False)


def test_all_failed():
    results = make_results([None, None])
    results[0].failure_reason = "too few matches"
    metrics = summarize(results)
    assert metrics["recall"] == {name: 0.0 for name in THRESHOLDS}
    assert metrics["median_translation_localized_m"] is None and metrics["median_rotation_localized_deg"] is None
    assert metrics["failure_reasons"] == {"too few matches": 1, "unknown": 1}
    json.dumps(metrics, allow_nan=False)


def test_failure_reason_from_info():
    result = QueryResult.from_estimate("q.png", gt_pose(0), None, info={"failure_reason": "no retrieval"})
    assert result.failure_reason == "no retrieval"
    assert math.isinf(result.translation_error_m) and math.isinf(result.rotation_error_deg)


def test_summarize_needs_results():
    with pytest.raises(SeglocError, match="zero queries"):
        summarize([])


def test_every_key_is_documented():
    doc = metrics_module.__doc__
    metrics = summarize(make_results([(0.1, 1.0), None]))
    for key in metrics:
        assert f"``{key}``" in doc, key
    for key in per_query_records(make_results([(0.1, 1.0)]))[0]:
        assert f"``{key}``" in doc, key
    for name in THRESHOLDS:
        assert f"``{name}``" in doc


def test_per_query_records_are_json_safe():
    results = make_results([(0.1, 1.0), None])
    results[0].info = {"matches": np.arange(3), "mask": np.zeros(1000, bool), "score": np.float32(0.5), "bad": float("nan")}
    records = per_query_records(results)
    json.dumps(records, allow_nan=False)
    assert records[0]["info"] == {"matches": [0, 1, 2], "mask": "<array shape [1000] dtype bool>", "score": 0.5, "bad": None}
    assert records[0]["translation_error_m"] == pytest.approx(0.1)
    assert records[1]["translation_error_m"] is None and records[1]["cam_from_world_est"] is None
    assert records[1]["success"] is False and records[1]["failure_reason"] == "unknown"
    gt = Rigid3(records[0]["cam_from_world_gt"]["quat_wxyz"], records[0]["cam_from_world_gt"]["translation"])
    np.testing.assert_allclose(gt.matrix(), results[0].cam_from_world_gt.matrix(), atol=1e-12)


def test_to_json_safe():
    value = {1: (np.int64(3), np.bool_(True), float("inf")), "pose": Rigid3.identity()}
    assert to_json_safe(value) == {"1": [3, True, None], "pose": {"quat_wxyz": [1.0, 0.0, 0.0, 0.0], "translation": [0.0, 0.0, 0.0]}}


def test_peak_rss():
    peak = peak_rss_bytes()
    assert peak is None or peak > 1 << 20  # a Python process with numpy uses more than 1 MiB


def test_nees_and_coverage_per_query_and_aggregated():
    gt = gt_pose(1)
    covariance = np.diag([0.01, 0.01, 0.01, 1e-4, 1e-4, 1e-4])  # 10 cm and 0.57 deg standard deviations
    inside = QueryResult.from_estimate("in.png", gt, perturb_world_from_cam(gt, np.array([-0.1, 0, 0, 0, 0, 0])), covariance=covariance)
    outside = QueryResult.from_estimate("out.png", gt, perturb_world_from_cam(gt, np.array([0, 0, 0.5, 0, 0, 0])), covariance=covariance)
    without = QueryResult.from_estimate("none.png", gt, gt)
    failed = QueryResult.from_estimate("failed.png", gt, None, covariance=covariance)
    assert inside.nees == pytest.approx(1.0, rel=1e-6) and outside.nees == pytest.approx(25.0, rel=1e-6)
    assert without.nees is None and failed.nees is None
    records = {r["name"]: r for r in per_query_records([inside, outside, without, failed])}
    assert records["in.png"]["inside_95"] is True and records["out.png"]["inside_95"] is False
    assert records["in.png"]["position_std_m"] == pytest.approx(0.1)
    assert records["none.png"]["nees"] is None and records["none.png"]["inside_95"] is None
    json.dumps(records, allow_nan=False)
    metrics = summarize([inside, outside, without, failed])
    assert metrics["num_with_covariance"] == 2
    assert metrics["nees_mean"] == pytest.approx(13.0) and metrics["nees_median"] == pytest.approx(13.0)
    assert metrics["coverage_95"] == pytest.approx(0.5)
    assert summarize([without])["nees_mean"] is None and summarize([without])["coverage_95"] is None


def test_coverage_of_draws_from_the_covariance():
    rng = np.random.default_rng(5)
    gt = gt_pose(2)
    covariance = np.diag([0.04, 0.01, 0.02, 1e-4, 4e-4, 1e-4])
    results = [
        QueryResult.from_estimate(f"q{i}.png", gt, perturb_world_from_cam(gt, d), covariance=covariance)
        for i, d in enumerate(rng.multivariate_normal(np.zeros(6), covariance, size=2000))
    ]
    metrics = summarize(results)
    assert abs(metrics["nees_mean"] - 6.0) < 0.4 and abs(metrics["coverage_95"] - 0.95) < 0.02
    assert abs(metrics["nees_median"] - 5.35) < 0.4
