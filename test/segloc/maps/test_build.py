"""Reference map building on a small scene of textured planes rendered from known poses."""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from segloc.config import config_from_dict
from segloc.data.dataset import ImageRecord, read_dataset, write_dataset
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3, pose_error
from segloc.maps.build import PairConfig, epipolar_errors, select_pairs
from segloc.maps.core import read_core
from segloc.maps.package import MapPackage
from segloc.methods.reference.layer import ReferenceMapConfig, build_reference_map, read_reference_layer, read_vlad_layer
from segloc.methods.reference.localizer import ReferenceLocalizer

CAMERA = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))
FAST_CONFIG = {"vlad": {"num_clusters": 16, "max_training_descriptors": 20000}}


@dataclass
class Plane:
    """A textured rectangle: ``origin + a * axis_u + b * axis_v`` for a in [0, width], b in [0, height]."""

    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    width: float
    height: float
    texel: float = 0.01

    def distance(self, points: np.ndarray, margin: float = 0.05) -> np.ndarray:
        """Distance (N,) of points (N, 3) to the rectangle's plane; inf outside the rectangle."""
        offsets = points - self.origin
        a, b = offsets @ self.axis_u, offsets @ self.axis_v
        normal = np.cross(self.axis_u, self.axis_v)
        inside = (a > -margin) & (a < self.width + margin) & (b > -margin) & (b < self.height + margin)
        return np.where(inside, np.abs(offsets @ normal), np.inf)


# World axes as the camera's (x right, y down, z forward): a wall, the floor, a box face in front.
PLANES = [
    Plane(np.array([-4.0, -3.0, 6.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 8.0, 4.5),
    Plane(np.array([-4.0, 1.5, 6.0]), np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), 8.0, 5.0),
    Plane(np.array([-1.0, -0.5, 4.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 1.5, 1.5),
]


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Multi-scale noise with blobs: distinctive for SIFT."""
    image = np.zeros((height, width), np.float32)
    for scale, weight in ((6, 0.5), (14, 1.0), (40, 1.0)):
        noise = rng.random((height // scale + 2, width // scale + 2)).astype(np.float32)
        image += weight * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    image = 255 * (image - image.min()) / (image.max() - image.min())
    for _ in range(width * height // 2000):
        center = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.circle(image, center, int(rng.integers(2, 9)), float(rng.integers(256)), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def look_at(center, target) -> Rigid3:
    """``cam_from_world`` of a camera at ``center`` looking at ``target`` (world y down)."""
    z = np.asarray(target, float) - center
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    world_from_cam = np.stack([x, np.cross(z, x), z], axis=1)
    return Rigid3.from_rotation(world_from_cam.T, -world_from_cam.T @ np.asarray(center, float))


def render(textures: list[np.ndarray], cam_from_world: Rigid3) -> np.ndarray:
    """Paint the planes far to near with homographies; (H, W, 3) RGB uint8."""
    k = CAMERA.opencv_calibration_matrix()
    rotation, translation = cam_from_world.rotation, cam_from_world.translation
    image = np.zeros((CAMERA.height, CAMERA.width), np.uint8)
    for plane, pixels in zip(PLANES, textures):
        s = plane.texel
        # texture pixel (u, v) (OpenCV convention) lies at origin + s (u + 0.5) axis_u + s (v + 0.5) axis_v
        corner = plane.origin + 0.5 * s * (plane.axis_u + plane.axis_v)
        homography = k @ np.stack([rotation @ (s * plane.axis_u), rotation @ (s * plane.axis_v), rotation @ corner + translation], axis=1)
        size = (CAMERA.width, CAMERA.height)
        warped = cv2.warpPerspective(pixels, homography, size, flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.full_like(pixels, 255), homography, size, flags=cv2.INTER_NEAREST)
        image[mask > 0] = warped[mask > 0]
    return np.repeat(image[:, :, None], 3, axis=2)


def planar_poses() -> tuple[list[Rigid3], list[Rigid3]]:
    """12 mapping poses along a line and 2 held-out query poses between them."""
    mapping = [
        look_at(np.array([x, -0.2 + 0.1 * np.sin(3 * x), 0.2 * np.cos(2 * x)]), [0.4 * x, 0.3, 6.0]) for x in np.linspace(-1.5, 1.5, 12)
    ]
    query = [look_at(np.array([-0.6, -0.1, -0.3]), [0.2, 0.2, 6.0]), look_at(np.array([0.7, -0.3, 0.1]), [0.0, 0.4, 6.0])]
    return mapping, query


def make_planar_dataset(root: Path) -> Path:
    rng = np.random.default_rng(7)
    textures = [texture(rng, round(p.height / p.texel), round(p.width / p.texel)) for p in PLANES]
    mapping_poses, query_poses = planar_poses()
    mapping = [ImageRecord(f"mapping/{i:03d}.png", pose, CAMERA) for i, pose in enumerate(mapping_poses)]
    query = [ImageRecord(f"query/{i:03d}.png", pose, CAMERA) for i, pose in enumerate(query_poses)]
    images = {record.name: render(textures, record.cam_from_world) for record in mapping + query}
    return write_dataset(root, mapping, query, images=images)


@pytest.fixture(scope="module")
def planar_map(tmp_path_factory):
    root = make_planar_dataset(tmp_path_factory.mktemp("planar") / "dataset")
    dataset = read_dataset(root)
    config = config_from_dict(ReferenceMapConfig, FAST_CONFIG)
    path = build_reference_map(dataset, root.parent / "map", config, progress=False)
    return dataset, MapPackage.open(path)


def test_points_lie_on_the_planes(planar_map):
    dataset, package = planar_map
    core = read_core(package)
    assert core.num_points > 1000
    distances = np.min(np.stack([plane.distance(core.points3D) for plane in PLANES]), axis=0)
    # 1 px at 6 m is 1.2 cm across and, for two views 1 m apart, 7 cm in depth
    assert np.median(distances) < 0.005
    assert np.percentile(distances, 90) < 0.03
    assert np.mean(distances > 0.2) < 0.02
    assert np.all(core.track_lengths() >= 2)
    # every observation reprojects close to its keypoint with the known poses
    for image_id, image in enumerate(core.images):
        point_ids, xy = core.image_observations(image_id)
        projected, _, visible = image.camera.world_to_image(image.cam_from_world, core.points3D[point_ids])
        assert np.all(visible)
        assert np.percentile(np.linalg.norm(projected - xy, axis=1), 95) < 2.0


def test_map_package_layers_and_provenance(planar_map):
    dataset, package = planar_map
    assert package.method == "reference" and package.frame_id == "map"
    assert set(package.layers) == {"core", "reference", "vlad"}
    created = package.manifest["created"]
    assert created["source"] == str(dataset.root.resolve())
    assert created["config"]["vlad"]["num_clusters"] == 16
    core = read_core(package)
    assert [image.name for image in core.images] == [record.name for record in dataset.mapping]
    reference = read_reference_layer(package, core)
    assert reference.descriptors.shape == (core.num_observations, 128)
    assert reference.sift.max_edge == 1024
    vlad = read_vlad_layer(package, len(core.images))
    assert vlad.global_descriptors.shape == (12, 16 * 128)
    statistics = package.manifest["metadata"]["statistics"]
    assert statistics["num_points"] == core.num_points
    # a core layer without appearance: no descriptors or colours
    assert set(package.read_arrays("core", "points3D")) == {
        "points3D",
        "point_errors",
        "observation_point_ids",
        "observation_image_ids",
        "observation_xy",
    }


def test_localizes_held_out_views(planar_map):
    dataset, package = planar_map
    localizer = ReferenceLocalizer.from_map(package)
    for record in dataset.query:
        result = localizer.localize(dataset.load_image(record.name), record.camera)
        assert result.success, result.info
        t_err, r_err = pose_error(result.cam_from_world, record.cam_from_world)
        assert t_err < 0.02 and r_err < 0.2


def test_select_pairs():
    poses = [look_at(np.array([x, 0.0, 0.0]), [x, 0.0, 5.0]) for x in range(5)]
    poses.append(look_at(np.array([2.0, 0.0, 0.0]), [2.0, 0.0, -5.0]))  # looks the other way
    images = [ImageRecord(f"{i}.png", pose, CAMERA) for i, pose in enumerate(poses)]
    pairs = select_pairs(images, PairConfig(num_neighbors=1, max_viewing_angle_deg=60))
    assert pairs == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert all(5 not in pair for pair in select_pairs(images, PairConfig(num_neighbors=10)))
    assert select_pairs(images, PairConfig(num_neighbors=10, max_distance=1.5)) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert select_pairs(images[:1]) == []


def test_epipolar_errors():
    rng = np.random.default_rng(0)
    points = rng.uniform([-2, -1, 4], [2, 1, 8], size=(50, 3))
    pose0, pose1 = look_at(np.zeros(3), [0, 0, 6]), look_at(np.array([1.0, 0.1, 0.2]), [0, 0, 6])
    xy0, _, _ = CAMERA.world_to_image(pose0, points)
    xy1, _, _ = CAMERA.world_to_image(pose1, points)
    relative = pose1 * pose0.inverse()
    assert np.all(epipolar_errors(xy0, xy1, CAMERA, CAMERA, relative) < 1e-6)
    shifted = epipolar_errors(xy0, xy1 + np.array([0.0, 5.0]), CAMERA, CAMERA, relative)
    assert np.median(shifted) > 1.0
    assert np.all(np.isinf(epipolar_errors(xy0, xy1, CAMERA, CAMERA, Rigid3())))


def test_bad_inputs(tmp_path, planar_map):
    dataset, package = planar_map
    empty = type(dataset)(dataset.root, [], dataset.query)
    with pytest.raises(SeglocError, match="mapping.txt lists no images"):
        build_reference_map(empty, tmp_path / "map", progress=False)
    with pytest.raises(SeglocError, match="exists already"):
        build_reference_map(dataset, package.path, progress=False)
    wrong_size = [ImageRecord(r.name, r.cam_from_world, CAMERA.scaled(320, 240)) for r in dataset.mapping[:2]]
    with pytest.raises(SeglocError, match="fix the camera line"):
        build_reference_map(type(dataset)(dataset.root, wrong_size, []), tmp_path / "map", progress=False)
    with pytest.raises(SeglocError, match="no 3D point could be triangulated"):
        build_reference_map(type(dataset)(dataset.root, dataset.mapping[:1], []), tmp_path / "map", progress=False)
    assert not (tmp_path / "map").exists()
    with pytest.raises(SeglocError, match="unknown option"):
        config_from_dict(ReferenceMapConfig, {"core": {"pairs": {"neighbours": 3}}})
