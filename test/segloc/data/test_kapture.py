"""kapture folders: round trip, hand-written files, rigs, mapping/query conversion, bad inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from segloc.data.dataset import ImageRecord, read_dataset, save_image
from segloc.data.kapture import kapture_to_dataset, load_kapture, read_kapture, write_kapture
from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3, axis_angle_to_matrix

CAMERAS = [
    Camera("FULL_OPENCV", 64, 48, (50.1, 50.2, 32.3, 24.4, 0.01, -0.002, 0.0003, 0.0004, 0.00005, 0.001, 0.0002, 0.00003)),
    Camera("PINHOLE", 32, 24, (30.0, 31.0, 16.0, 12.0)),
]


def make_records(n: int = 6, seed: int = 0, prefix: str = "mapping") -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    return [
        ImageRecord(
            f"{prefix}/cam{i % 2}/{i:05d}.png",
            Rigid3.from_rotation(axis_angle_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 5),
            CAMERAS[i % 2],
            timestamp=1_700_000_000.0 + 0.1 * (i // 2),
        )
        for i in range(n)
    ]


def assert_records_equal(actual: list[ImageRecord], expected: list[ImageRecord], atol: float = 1e-9) -> None:
    assert [r.name for r in actual] == [r.name for r in expected]
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a.cam_from_world.matrix(), e.cam_from_world.matrix(), atol=atol)
        assert a.camera == e.camera
        assert a.timestamp == pytest.approx(e.timestamp, abs=1e-6)


def save_images(root: Path, records: list[ImageRecord]) -> None:
    for record in records:
        save_image(root / record.name, np.full((record.camera.height, record.camera.width, 3), 100, np.uint8))


def test_round_trip(tmp_path: Path) -> None:
    records = make_records()
    save_images(tmp_path / "src", records)
    root = write_kapture(tmp_path / "kapture", records, image_dir=tmp_path / "src", timestamp_unit=1e-6)
    assert (root / "sensors" / "records_data" / records[0].name).is_file()
    assert (root / "sensors" / "sensors.txt").read_text().startswith("# kapture format: 1.1\n")
    assert_records_equal(read_kapture(root, timestamp_unit=1e-6), records)
    data = load_kapture(root)
    assert set(data.cameras) == {"cam0", "cam1"}
    assert data.records[2].timestamp == 1_700_000_000_100_000


def test_records_without_timestamps_get_indices(tmp_path: Path) -> None:
    records = [ImageRecord(r.name, r.cam_from_world, r.camera) for r in make_records(3)]
    read = read_kapture(write_kapture(tmp_path, records))
    assert [r.timestamp for r in read] == [0.0, 1.0, 2.0]


HAND_WRITTEN = {
    "sensors.txt": """# kapture format: 1.1
# sensor_device_id, name, sensor_type, [sensor_params]+
cam01,Hero7 ,  camera, SIMPLE_PINHOLE, 640, 480, 500.5, 320, 240

phone_wifi, , wifi
gps1, , gnss, EPSG:4326
rigcam, , camera, PINHOLE,  320, 240, 300, 301, 160, 120
""",
    "rigs.txt": """# kapture format: 1.1
# rig_device_id, sensor_device_id, qw, qx, qy, qz, tx, ty, tz
rig, rigcam, 1, 0, 0, 0, 0.5, 0, 0
""",
    "records_camera.txt": """# kapture format: 1.1
# timestamp, device_id, image_path
0000, cam01, mapping/cam01/00000.jpg
   # an indented comment
0001 ,cam01 , mapping/cam01/00001.jpg
0001, rigcam, mapping/rigcam/00001.jpg
0002, cam01, mapping/cam01/00002.jpg
""",
    "trajectories.txt": """# kapture format: 1.1
# timestamp, device_id, qw, qx, qy, qz, tx, ty, tz
0000, cam01, 1, 0, 0, 0, 0, 0, 0
0001, cam01, 0.7071067811865476, 0, 0.7071067811865476, 0, 1, 2, 3
0001, rig, 1, 0, 0, 0, 10, 0, 0
""",
}


def write_hand_written(root: Path, **overrides: str) -> Path:
    (root / "sensors").mkdir(parents=True)
    for name, text in {**HAND_WRITTEN, **overrides}.items():
        (root / "sensors" / name).write_text(text)
    return root


def test_hand_written_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_hand_written(tmp_path / "k")
    with caplog.at_level(logging.WARNING, logger="segloc"):
        records = read_kapture(root)
    assert [r.name for r in records] == ["mapping/cam01/00000.jpg", "mapping/cam01/00001.jpg", "mapping/rigcam/00001.jpg"]
    assert records[0].camera == Camera("SIMPLE_PINHOLE", 640, 480, (500.5, 320, 240))
    assert records[2].camera == Camera("PINHOLE", 320, 240, (300, 301, 160, 120))
    assert records[1].timestamp == 1.0
    np.testing.assert_allclose(records[1].cam_from_world.rotation, axis_angle_to_matrix([0, np.pi / 2, 0]), atol=1e-12)
    np.testing.assert_allclose(records[1].cam_from_world.translation, [1, 2, 3])
    # the rig camera: cam_from_world = cam_from_rig * rig_from_world
    np.testing.assert_allclose(records[2].cam_from_world.translation, [10.5, 0, 0])
    # the image at timestamp 2 has no pose: skipped with a warning naming it
    assert "1 of 4 image(s) have no pose" in caplog.text and "mapping/cam01/00002.jpg" in caplog.text
    with pytest.raises(SeglocError, match="have no pose in sensors/trajectories.txt: mapping/cam01/00002.jpg"):
        read_kapture(root, missing_pose="error")


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        (
            "trajectories.txt",
            "# kapture format: 1.1\n0000, cam01, 1, 0, 0, 0, 0, 0\n",
            r"trajectories.txt:2: expected 'timestamp, device_id, qw",
        ),
        ("trajectories.txt", "0000, cam01, 1, 0, 0, 0, 0, 0, x\n", r"trajectories.txt:1: malformed number"),
        ("records_camera.txt", "# kapture format: 1.1\n\n1.5, cam01, a.jpg\n", r"records_camera.txt:3: the timestamp must be an integer"),
        ("records_camera.txt", "0, cam02, a.jpg\n", r"device\(s\) cam02 are not camera sensors"),
        (
            "sensors.txt",
            "cam01, , camera, OPENCV_FISHEYE, 640, 480, 500, 500, 320, 240, 0, 0, 0, 0\n",
            r"sensors.txt:1: .*'OPENCV_FISHEYE'",
        ),
        ("sensors.txt", "cam01, , camera, PINHOLE, 640, 480, 500\n", r"sensors.txt:1: camera cam01: camera model PINHOLE takes 4"),
    ],
)
def test_malformed_files(tmp_path: Path, file: str, text: str, message: str) -> None:
    root = write_hand_written(tmp_path / "k", **{file: text})
    with pytest.raises(SeglocError, match=message):
        read_kapture(root)


def test_not_a_kapture_folder(tmp_path: Path) -> None:
    with pytest.raises(SeglocError, match="sensors/sensors.txt is missing"):
        read_kapture(tmp_path)
    (tmp_path / "mapping" / "sensors").mkdir(parents=True)
    with pytest.raises(SeglocError, match="holds mapping/ and query/ kapture folders"):
        read_kapture(tmp_path)


def test_kapture_to_dataset(tmp_path: Path) -> None:
    mapping = make_records(4, seed=1, prefix="mapping")
    query = make_records(2, seed=2, prefix="query")
    for split, records in (("mapping", mapping), ("query", query)):
        save_images(tmp_path / f"{split}_src", records)
        write_kapture(tmp_path / split, records, image_dir=tmp_path / f"{split}_src", timestamp_unit=1e-3)
    out = kapture_to_dataset(tmp_path / "mapping", tmp_path / "query", tmp_path / "dataset", timestamp_unit=1e-3)
    dataset = read_dataset(out)
    assert_records_equal([ImageRecord(r.name, r.cam_from_world, r.camera, t.timestamp) for r, t in zip(dataset.mapping, mapping)], mapping)
    assert [r.name for r in dataset.query] == [r.name for r in query]
    assert dataset.load_image(query[0].name).shape == (48, 64, 3)


def test_kapture_to_dataset_prefixes_colliding_names(tmp_path: Path) -> None:
    records = make_records(2, prefix="images")
    save_images(tmp_path / "src", records)
    for split in ("mapping", "query"):
        write_kapture(tmp_path / split, records, image_dir=tmp_path / "src")
    out = kapture_to_dataset(tmp_path / "mapping", tmp_path / "query", tmp_path / "dataset")
    dataset = read_dataset(out)
    assert [r.name for r in dataset.mapping] == [f"mapping/{r.name}" for r in records]
    assert [r.name for r in dataset.query] == [f"query/{r.name}" for r in records]
    with pytest.raises(SeglocError, match="exists already"):
        kapture_to_dataset(tmp_path / "mapping", None, out)
    kapture_to_dataset(tmp_path / "mapping", None, out, overwrite=True)
    assert read_dataset(out).query == []
