"""evaluate_localizer on a tiny dataset folder with a fake localizer; the query/map overlap check."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from segloc.data.dataset import ImageRecord, read_dataset, write_dataset
from segloc.errors import SeglocError
from segloc.evaluate import check_query_overlap, evaluate_localizer, read_tum_trajectory
from segloc.geometry import Camera, Rigid3, axis_angle_to_matrix
from segloc.localize.base import LocalizationResult

CAMERA = Camera("PINHOLE", 64, 48, (50.0, 50.0, 32.0, 24.0))
# Map points on a wall 10 m in front of cameras at z = 0 looking along +z.
WALL = np.stack(np.meshgrid(np.linspace(-5, 8, 14), np.linspace(-3, 3, 7), [10.0]), axis=-1).reshape(-1, 3)


def camera_at(x: float, yaw: float = 0.0) -> Rigid3:
    """``cam_from_world`` of a camera at (x, 0, 0) turned by ``yaw`` radians about the y axis."""
    rotation = axis_angle_to_matrix(np.array([0.0, yaw, 0.0])).T
    return Rigid3.from_rotation(rotation, -rotation @ np.array([x, 0.0, 0.0]))


def perturbed(cam_from_world: Rigid3, offset_m: float, angle_deg: float) -> Rigid3:
    rotation = axis_angle_to_matrix(np.array([0.0, 0.0, np.radians(angle_deg)])) @ cam_from_world.rotation
    return Rigid3.from_rotation(rotation, -rotation @ (cam_from_world.center + np.array([0.0, offset_m, 0.0])))


class FakeLocalizer:
    """Recognises a query by its grey level and returns its ground truth plus a known error."""

    method = "fake"

    def __init__(self, queries: list[ImageRecord], behaviour: dict[int, object]):
        self.by_grey = {40 * (i + 1): (record, behaviour[i]) for i, record in enumerate(queries)}

    def localize(self, image: np.ndarray, camera: Camera, prior: Rigid3 | None = None) -> LocalizationResult:
        assert image.shape == (camera.height, camera.width, 3) and image.dtype == np.uint8
        record, behaviour = self.by_grey[int(image[0, 0, 0])]
        timings = {"extract": 0.001, "pose": 0.002}
        if behaviour == "raise":
            raise SeglocError("image too dark")
        if behaviour == "fail":
            return LocalizationResult(None, timings=timings, info={"failure_reason": "too few inliers"})
        if behaviour == "bug":
            raise ZeroDivisionError("a bug")
        offset, angle = behaviour
        return LocalizationResult(perturbed(record.cam_from_world, offset, angle), num_inliers=100, timings=timings, info={"k": 1})


def make_dataset(tmp_path, query_poses: list[Rigid3]):
    mapping = [ImageRecord(f"db/m{i}.png", camera_at(0.5 * i), CAMERA) for i in range(3)]
    query = [ImageRecord(f"query/q{i}.png", pose, CAMERA) for i, pose in enumerate(query_poses)]
    images = {r.name: np.full((48, 64, 3), 200, np.uint8) for r in mapping}
    images.update({r.name: np.full((48, 64, 3), 40 * (i + 1), np.uint8) for i, r in enumerate(query)})
    return read_dataset(write_dataset(tmp_path / "dataset", mapping, query, images=images), require_query=True)


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path, [camera_at(float(i)) for i in range(5)])


def test_evaluate_hand_computed(tmp_path, dataset):
    behaviour = {0: (0.1, 1.0), 1: (0.3, 1.0), 2: (3.0, 8.0), 3: "fail", 4: "raise"}
    out = tmp_path / "out"
    metrics = evaluate_localizer(
        FakeLocalizer(dataset.query, behaviour), dataset, out, map_bytes=999, progress=False, map_points3D=WALL, map_path="maps/m"
    )
    assert metrics["recall"] == pytest.approx({"0.25m_2deg": 0.2, "0.5m_5deg": 0.4, "5m_10deg": 0.6, "5cm_5deg": 0.0})
    assert (metrics["num_queries"], metrics["num_localized"]) == (5, 3)
    # All queries: t [0.1, 0.3, 3, inf, inf] -> 3; localized only: 0.3 m, 1 deg.
    assert metrics["median_translation_m"] == pytest.approx(3.0)
    assert metrics["median_rotation_deg"] == pytest.approx(8.0)
    assert metrics["median_translation_localized_m"] == pytest.approx(0.3)
    assert metrics["median_rotation_localized_deg"] == pytest.approx(1.0)
    assert metrics["failure_reasons"] == {"too few inliers": 1, "image too dark": 1}
    assert metrics["time_per_stage_s"]["pose"] == pytest.approx({"mean": 0.002, "median": 0.002, "count": 4})
    assert metrics["time_per_query_s"] > 0
    assert metrics["map_bytes"] == 999 and metrics["method"] == "fake" and metrics["map_path"] == "maps/m"
    assert metrics["peak_memory_bytes"] is None or metrics["peak_memory_bytes"] >= metrics["peak_memory_at_start_bytes"]
    assert metrics["peak_python_memory_bytes"] is None
    assert metrics["queries_without_overlap"] == []

    def reject(name):
        raise AssertionError(f"JSON contains {name}")

    assert json.loads((out / "metrics.json").read_text(), parse_constant=reject) == metrics
    per_query = json.loads((out / "per_query.json").read_text(), parse_constant=reject)
    assert [q["success"] for q in per_query] == [True, True, True, False, False]
    assert per_query[2]["translation_error_m"] == pytest.approx(3.0)
    assert per_query[4]["failure_reason"] == "image too dark"
    stamps, poses = read_tum_trajectory(out / "estimates_tum.txt")
    np.testing.assert_array_equal(stamps, [0, 1, 2])
    np.testing.assert_allclose(poses[1].translation, dataset.query[1].cam_from_world.center + [0, 0.3, 0], atol=1e-9)
    stamps, poses = read_tum_trajectory(out / "groundtruth_tum.txt")
    assert len(stamps) == 5
    for name in ("errors_cdf.png", "trajectory_topview.png"):
        assert (out / name).stat().st_size > 1000


def test_limit_and_python_memory(tmp_path, dataset):
    behaviour = dict.fromkeys(range(5), (0.0, 0.0))
    metrics = evaluate_localizer(
        FakeLocalizer(dataset.query, behaviour), dataset, tmp_path / "out", progress=False, limit=2, track_python_memory=True, plots=False
    )
    assert metrics["num_queries"] == 2 and metrics["recall"]["5cm_5deg"] == 1.0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["num_queries"] == 2
    assert metrics["peak_python_memory_bytes"] > 0
    assert metrics["queries_without_overlap"] is None
    assert not (tmp_path / "out" / "errors_cdf.png").exists()


def test_other_exceptions_propagate(tmp_path, dataset):
    behaviour = {0: (0.0, 0.0), 1: "bug", 2: (0.0, 0.0), 3: (0.0, 0.0), 4: (0.0, 0.0)}
    with pytest.raises(ZeroDivisionError):
        evaluate_localizer(FakeLocalizer(dataset.query, behaviour), dataset, tmp_path / "out", progress=False)


def test_check_query_overlap():
    queries = [
        ImageRecord("front", camera_at(0.0), CAMERA),
        ImageRecord("back", camera_at(0.0, yaw=np.pi), CAMERA),
        ImageRecord("side", camera_at(0.0, yaw=np.pi / 2), CAMERA),
    ]
    assert check_query_overlap(queries, WALL) == ["back", "side"]
    assert check_query_overlap(queries, WALL, min_visible=10_000) == ["front", "back", "side"]
    with pytest.raises(SeglocError, match=r"\(N, 3\)"):
        check_query_overlap(queries, WALL[:, :2])


def test_queries_overlapping_nothing_is_one_clear_error(tmp_path):
    # Query poses in another frame: every query looks away from the map.
    dataset = make_dataset(tmp_path, [camera_at(float(i), yaw=np.pi) for i in range(3)])
    localizer = FakeLocalizer(dataset.query, dict.fromkeys(range(3), (0.0, 0.0)))
    with pytest.raises(SeglocError, match="query images overlap nothing in the map: none of the 3 queries") as info:
        evaluate_localizer(localizer, dataset, tmp_path / "out", progress=False, map_points3D=WALL)
    assert "map's frame" in str(info.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(SeglocError, match="no 3D points"):
        evaluate_localizer(localizer, dataset, tmp_path / "out", progress=False, map_points3D=np.zeros((0, 3)))


def test_some_queries_without_overlap_warn(tmp_path, caplog):
    dataset = make_dataset(tmp_path, [camera_at(0.0), camera_at(1.0, yaw=np.pi)])
    localizer = FakeLocalizer(dataset.query, {0: (0.0, 0.0), 1: "fail"})
    with caplog.at_level(logging.WARNING, logger="segloc"):
        metrics = evaluate_localizer(localizer, dataset, tmp_path / "out", progress=False, map_points3D=WALL, plots=False)
    assert metrics["queries_without_overlap"] == ["query/q1.png"]
    assert "1 of 2 queries see fewer than 10 map points" in caplog.text


def test_no_queries(tmp_path, dataset):
    dataset.query = []
    with pytest.raises(SeglocError, match="no query images"):
        evaluate_localizer(FakeLocalizer([], {}), dataset, tmp_path / "out", progress=False)


def test_extra_entries_and_mapping_centers(tmp_path, dataset):
    behaviour = dict.fromkeys(range(5), (0.0, 0.0))
    metrics = evaluate_localizer(
        FakeLocalizer(dataset.query, behaviour),
        dataset,
        tmp_path / "out",
        progress=False,
        mapping_centers=[np.zeros(3), np.ones(3)],
        extra={"method": "renamed", "map_path": "maps/m"},
    )
    assert (metrics["method"], metrics["map_path"]) == ("renamed", "maps/m")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["method"] == "renamed"
    assert (tmp_path / "out" / "trajectory_topview.png").stat().st_size > 1000
