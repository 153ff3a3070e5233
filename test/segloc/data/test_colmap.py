"""COLMAP model reading and writing, and conversion to a dataset folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segloc.data.colmap import colmap_to_dataset, read_colmap_model, read_colmap_points3D, write_colmap_model
from segloc.data.dataset import ImageRecord, read_dataset, save_image
from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3, axis_angle_to_matrix

CAMERAS = [
    Camera("OPENCV", 64, 48, (50.123456789012, 51.5, 32.25, 24.75, 0.0123, -0.00456, 0.000789, -0.000321)),
    Camera("SIMPLE_RADIAL", 80, 60, (70.0, 40.5, 30.5, -0.05)),
]


def make_records(n: int = 6, seed: int = 0) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    return [
        ImageRecord(
            f"seq/img_{i:03d}.png",
            Rigid3.from_rotation(axis_angle_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 10),
            CAMERAS[i % 2],
        )
        for i in range(n)
    ]


def assert_records_equal(actual: list[ImageRecord], expected: list[ImageRecord], atol: float = 1e-9) -> None:
    assert [r.name for r in actual] == [r.name for r in expected]
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a.cam_from_world.quat_wxyz, e.cam_from_world.quat_wxyz, atol=atol)
        np.testing.assert_allclose(a.cam_from_world.translation, e.cam_from_world.translation, atol=atol)
        assert (a.camera.model, a.camera.width, a.camera.height) == (e.camera.model, e.camera.width, e.camera.height)
        np.testing.assert_allclose(a.camera.params, e.camera.params, atol=atol)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_round_trip(tmp_path: Path, binary: bool) -> None:
    records = make_records()
    rng = np.random.default_rng(1)
    points3D = rng.normal(size=(20, 3))
    colors = rng.integers(0, 256, size=(20, 3), dtype=np.uint8)
    model = write_colmap_model(tmp_path / "model", records, points3D, colors, binary=binary)
    suffix = ".bin" if binary else ".txt"
    assert (model / f"images{suffix}").is_file() and (model / f"cameras{suffix}").is_file()

    assert_records_equal(read_colmap_model(model), sorted(records, key=lambda r: r.name))
    points_read, colors_read = read_colmap_points3D(model)
    np.testing.assert_allclose(points_read, points3D, atol=1e-9)
    np.testing.assert_array_equal(colors_read, colors)


def test_shared_cameras_written_once(tmp_path: Path) -> None:
    write_colmap_model(tmp_path, make_records(6))
    camera_lines = [line for line in (tmp_path / "cameras.txt").read_text().splitlines() if not line.startswith("#")]
    assert len(camera_lines) == 2
    read = read_colmap_model(tmp_path)
    assert read[0].camera is read[2].camera  # one Camera object per COLMAP camera


def test_legacy_text_model_without_rigs(tmp_path: Path) -> None:
    """Models from COLMAP < 3.12 have no rigs/frames files."""
    (tmp_path / "cameras.txt").write_text("# Camera list\n1 PINHOLE 64 48 50 50 32 24\n")
    (tmp_path / "images.txt").write_text("# Image list\n1 0.7071067811865476 0.7071067811865476 0 0 1 2 3 1 a.png\n\n")
    (tmp_path / "points3D.txt").write_text("")
    (record,) = read_colmap_model(tmp_path)
    assert record.name == "a.png" and record.camera == Camera("PINHOLE", 64, 48, (50, 50, 32, 24))
    np.testing.assert_allclose(record.cam_from_world.quat_wxyz, [np.sqrt(0.5), np.sqrt(0.5), 0, 0])
    np.testing.assert_allclose(record.cam_from_world.translation, [1, 2, 3])


def test_colmap_to_dataset(tmp_path: Path) -> None:
    records = make_records(5)
    image_dir = tmp_path / "images"
    for record in records:
        save_image(image_dir / record.name, np.full((record.camera.height, record.camera.width, 3), 7, np.uint8))
    write_colmap_model(tmp_path / "model", records, binary=True)
    query_list = tmp_path / "queries.txt"
    query_list.write_text(f"# hloc-style list\n{records[1].name} OPENCV 64 48 1 2 3 4 0 0 0 0\n{records[3].name}\n")

    out = colmap_to_dataset(tmp_path / "model", image_dir, tmp_path / "dataset", query_names=query_list)
    dataset = read_dataset(out)
    assert [r.name for r in dataset.query] == [records[1].name, records[3].name]
    assert len(dataset.mapping) == 3
    assert_records_equal(dataset.mapping + dataset.query, [records[i] for i in (0, 2, 4, 1, 3)])
    assert dataset.load_image(records[0].name).shape == (48, 64, 3)

    # the same with a list of names, overwriting
    colmap_to_dataset(tmp_path / "model", image_dir, out, query_names=[records[0].name], overwrite=True)
    assert [r.name for r in read_dataset(out).query] == [records[0].name]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(SeglocError, match="does not exist"):
        read_colmap_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeglocError, match="is not a COLMAP model"):
        read_colmap_model(tmp_path / "empty")
    records = make_records(2)
    with pytest.raises(SeglocError, match="duplicated: seq/img_000.png"):
        write_colmap_model(tmp_path / "dup", [records[0], records[0]])
    write_colmap_model(tmp_path / "model", records)
    with pytest.raises(SeglocError, match="not registered .*: nope.png"):
        colmap_to_dataset(tmp_path / "model", tmp_path, tmp_path / "out", query_names=["nope.png"])
    with pytest.raises(SeglocError, match=r"points3D must have shape \(N, 3\)"):
        write_colmap_model(tmp_path / "pts", records, points3D=np.zeros((4, 2)))
