"""The core map layer: round trip through a map package, validation, helpers."""

import json

import numpy as np
import pytest

from segloc.data.dataset import ImageRecord
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.maps.core import MapCore, read_core, write_core
from segloc.maps.package import MapPackage, MapWriter


def make_core(num_points: int = 5) -> MapCore:
    camera = Camera("SIMPLE_RADIAL", 640, 480, (500.0, 320.0, 240.0, 0.01))
    images = [
        ImageRecord("a/0.png", Rigid3(np.array([1.0, 0, 0, 0]), np.zeros(3)), camera),
        ImageRecord("a/1.png", Rigid3(np.array([0.9, 0.1, -0.2, 0.3]), np.array([0.5, -1.0, 2.0])), camera.pinhole(), 1700000000.25),
    ]
    rng = np.random.default_rng(0)
    point_ids = np.repeat(np.arange(num_points), 2)
    image_ids = np.tile([0, 1], num_points)
    return MapCore(
        images, rng.normal(size=(num_points, 3)), rng.random(num_points), point_ids, image_ids, rng.random((2 * num_points, 2)) * 400
    )


def write_map(path, core: MapCore) -> MapPackage:
    with MapWriter(path, method="test") as writer:
        write_core(writer, core)
        return writer.commit()


def test_round_trip(tmp_path):
    core = make_core()
    package = write_map(tmp_path / "map", core)
    assert sorted(package.layers["core"]["files"]) == ["core/images.json", "core/points3D.npz"]
    loaded = read_core(MapPackage.open(tmp_path / "map"))
    assert [image.name for image in loaded.images] == ["a/0.png", "a/1.png"]
    assert loaded.images[0].camera == core.images[0].camera and loaded.images[1].camera == core.images[1].camera
    assert loaded.images[0].timestamp is None and loaded.images[1].timestamp == 1700000000.25
    for original, read in zip(core.images, loaded.images):
        np.testing.assert_allclose(read.cam_from_world.matrix(), original.cam_from_world.matrix(), atol=1e-15)
    np.testing.assert_array_equal(loaded.points3D, core.points3D)
    np.testing.assert_array_equal(loaded.point_errors, core.point_errors)
    np.testing.assert_array_equal(loaded.observation_point_ids, core.observation_point_ids)
    np.testing.assert_array_equal(loaded.observation_image_ids, core.observation_image_ids)
    np.testing.assert_array_equal(loaded.observation_xy, core.observation_xy)
    assert loaded.points3D.dtype == np.float64 and loaded.observation_xy.dtype == np.float32


def test_helpers():
    core = make_core(4)
    assert core.num_points == 4 and core.num_observations == 8
    np.testing.assert_array_equal(core.track_lengths(), [2, 2, 2, 2])
    order, offsets = core.observations_by_image()
    np.testing.assert_array_equal(offsets, [0, 4, 8])
    np.testing.assert_array_equal(core.observation_image_ids[order], [0, 0, 0, 0, 1, 1, 1, 1])
    point_ids, xy = core.image_observations(1)
    np.testing.assert_array_equal(point_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(xy, core.observation_xy[1::2])
    assert core.image_id("a/1.png") == 1
    with pytest.raises(SeglocError, match="no mapping image named"):
        core.image_id("missing.png")


def test_validation():
    core = make_core()
    with pytest.raises(SeglocError, match="point ids outside"):
        MapCore(
            core.images, core.points3D, core.point_errors, core.observation_point_ids + 5, core.observation_image_ids, core.observation_xy
        )
    with pytest.raises(SeglocError, match="image ids outside"):
        MapCore(
            core.images, core.points3D, core.point_errors, core.observation_point_ids, core.observation_image_ids + 1, core.observation_xy
        )
    with pytest.raises(SeglocError, match="differ in length"):
        MapCore(
            core.images, core.points3D, core.point_errors, core.observation_point_ids, core.observation_image_ids[:-1], core.observation_xy
        )
    with pytest.raises(SeglocError, match="point errors"):
        MapCore(
            core.images, core.points3D, core.point_errors[:-1], core.observation_point_ids, core.observation_image_ids, core.observation_xy
        )
    with pytest.raises(SeglocError, match="duplicate"):
        MapCore(
            core.images[:1] * 2,
            core.points3D,
            core.point_errors,
            core.observation_point_ids,
            core.observation_image_ids,
            core.observation_xy,
        )


def test_read_rejects_bad_layers(tmp_path):
    with MapWriter(tmp_path / "empty", method="test") as writer:
        writer.add_json("other", "meta", {})
        writer.commit()
    with pytest.raises(SeglocError, match="no core layer"):
        read_core(MapPackage.open(tmp_path / "empty"))

    core = make_core()
    with MapWriter(tmp_path / "bad_ids", method="test") as writer:
        write_core(writer, core)
        writer.add_arrays(
            "core",
            "points3D",
            points3D=core.points3D,
            point_errors=core.point_errors,
            observation_point_ids=core.observation_point_ids + 100,
            observation_image_ids=core.observation_image_ids,
            observation_xy=core.observation_xy,
        )
        writer.commit()
    with pytest.raises(SeglocError, match="invalid: .*point ids outside"):
        read_core(MapPackage.open(tmp_path / "bad_ids"))

    with MapWriter(tmp_path / "missing_array", method="test") as writer:
        write_core(writer, core)
        writer.add_arrays("core", "points3D", points3D=core.points3D)
        writer.commit()
    with pytest.raises(SeglocError, match="lacks point_errors"):
        read_core(MapPackage.open(tmp_path / "missing_array"))

    with MapWriter(tmp_path / "bad_images", method="test") as writer:
        write_core(writer, core)
        writer.add_json("core", "images", {"images": [{"name": "x.png"}]})
        writer.commit()
    with pytest.raises(SeglocError, match="malformed image entry"):
        read_core(MapPackage.open(tmp_path / "bad_images"))


def test_images_json_is_plain(tmp_path):
    write_map(tmp_path / "map", make_core())
    listing = json.loads((tmp_path / "map" / "core" / "images.json").read_text())
    assert listing["images"][1]["camera"]["model"] == "PINHOLE"
    assert len(listing["images"][1]["quat_wxyz"]) == 4 and len(listing["images"][1]["translation"]) == 3
