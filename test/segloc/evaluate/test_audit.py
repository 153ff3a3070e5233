"""The privacy audit: the attacker's sparse input, its training, the refusal to train on the audited scene, audit.json."""

import json
import shutil

import numpy as np
import pytest
import torch

from segloc.config import config_from_dict
from segloc.data.dataset import ImageRecord, read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.errors import SeglocError
from segloc.evaluate.audit import (
    AUDIT_FORMAT,
    AuditConfig,
    SparsePoints,
    TrainingImage,
    check_training_data,
    image_metrics,
    keypoint_depth,
    map_sparse_inputs,
    run_audit,
    sparse_input,
    ssim,
    train_attacker,
    training_images,
)
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.maps.core import MapCore
from segloc.maps.package import MapPackage
from segloc.methods import get_method
from segloc.methods.reference.layer import ReferenceMapConfig, build_reference_map
from segloc.models.inversion import PerceptualFeatures


def _one_image_core(points3D, camera, cam_from_world, num_images=1):
    images = [ImageRecord(f"mapping/{i:06d}.png", cam_from_world, camera) for i in range(num_images)]
    num = len(points3D)
    return MapCore(images, points3D, np.zeros(num), np.arange(num), np.zeros(num), np.zeros((num, 2)))


def test_sparse_builder_places_each_points_attributes_at_its_projection():
    camera = Camera("PINHOLE", 64, 48, (50.0, 50.0, 32.0, 24.0))
    cam_from_world = Rigid3(np.array([1.0, 0, 0, 0]), np.array([0.1, -0.2, 0.5]))
    rng = np.random.default_rng(0)
    points_cam = np.column_stack([rng.uniform(-0.5, 0.5, 30), rng.uniform(-0.4, 0.4, 30), rng.uniform(1.0, 4.0, 30)])
    points3D = points_cam - cam_from_world.translation  # identity rotation: world = cam - t
    core = _one_image_core(points3D, camera, cam_from_world)
    attributes = rng.uniform(0.1, 1.0, (30, 5)).astype(np.float32)
    for max_edge, scale in ((64, 1.0), (32, 0.5)):
        (points,) = map_sparse_inputs(core, attributes, max_edge)
        size = (round(64 * scale), round(48 * scale))
        image = points.rasterise(size)
        assert image.shape == (5 + 2, size[1], size[0])
        pixels = camera.project(points_cam) * scale
        cols, rows = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
        occupied = {}
        for i in np.argsort(-points_cam[:, 2]):  # the nearest point of a pixel wins
            occupied[(rows[i], cols[i])] = i
        for (row, col), i in occupied.items():
            np.testing.assert_allclose(image[:5, row, col], attributes[i], rtol=1e-6)
            np.testing.assert_allclose(image[5, row, col], 1 / (1 + points_cam[i, 2]), rtol=1e-5)
            assert image[6, row, col] == 1
        assert image[6].sum() == len(occupied)
        assert np.all(image[:, image[6] == 0] == 0)


def test_sparse_input_skips_points_outside_or_behind():
    image = sparse_input(np.array([[-1.0, 2.0], [5.5, 5.5], [2.5, 3.5]]), np.array([1.0, -2.0, 3.0]), np.ones((3, 2)), (8, 6))
    assert image[-1].sum() == 1 and image[-1, 3, 2] == 1


def test_ssim_and_metrics_on_known_images():
    perceptual = PerceptualFeatures(pretrained=False)
    target = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    same = image_metrics(target, target, perceptual)
    assert all(m["ssim"] == pytest.approx(1.0, abs=1e-4) and m["mae"] == 0 and m["perceptual"] == pytest.approx(0, abs=1e-6) for m in same)
    noisy = (target + 0.3 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    worse = image_metrics(noisy, target, perceptual)
    assert all(m["ssim"] < 0.8 and 10 < m["psnr"] < 14 and m["perceptual"] > 0.1 for m in worse)
    assert ssim(target, 1 - target).max() < 0.2


def test_the_attacker_overfits_one_image():
    """The U-Net and its loss can learn: one image from its sparse points, MAE falls well below its start."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    rgb = np.stack([xx, yy, 0.5 + 0.4 * np.sin(6 * xx)]).astype(np.float32)
    points2D = rng.uniform(0, 32, (300, 2))
    cols, rows = points2D.astype(int).T
    points = SparsePoints(points2D, rng.uniform(1, 3, 300), rgb[:, rows, cols].T)  # the attributes carry the colour
    values = {"steps": 150, "batch_size": 2, "width": 8, "depth": 2, "perceptual_weight": 0.0, "learning_rate": 3e-3}
    model, summary = train_attacker([TrainingImage(points, rgb, "one")] * 2, 3, config_from_dict(AuditConfig, values), None, False)
    assert summary["steps"] == 150 and summary["stopped_by"] == "steps"
    with torch.no_grad():
        prediction = model(torch.from_numpy(points.rasterise((32, 32)))[None])[0].numpy()
    error = np.abs(prediction - rgb).mean()  # random flips: it learns the image and its mirror
    assert error < 0.09 and error < summary["first_loss"] / 3


def test_the_time_budget_stops_training():
    points = SparsePoints(np.array([[1.0, 1.0]]), np.array([1.0]), np.zeros((1, 0)))
    config = AuditConfig(steps=10_000, width=4, depth=1, time_budget_s=0.2, perceptual_weight=0)
    _, summary = train_attacker([TrainingImage(points, np.zeros((3, 8, 8), np.float32), "x")], 0, config, None, False)
    assert summary["stopped_by"] == "time_budget" and summary["steps"] < 10_000


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A small audited room with its reference map, and another place (a corridor) to train on."""
    root = tmp_path_factory.mktemp("audit")
    audited = generate_scene(
        synth_config("room", seed=4, width=160, height=120, num_mapping=10, num_query=2), root / "room", progress=False
    )
    other = generate_scene(
        synth_config("corridor", seed=1, width=160, height=120, num_mapping=4, num_query=0), root / "corridor", progress=False
    )
    config = config_from_dict(ReferenceMapConfig, {"vlad": {"num_clusters": 8, "max_training_descriptors": 5000}})
    map_path = build_reference_map(read_dataset(audited), root / "map", config, progress=False)
    return root, audited, other, map_path


def test_the_audit_refuses_to_train_on_the_audited_scene(scenes, tmp_path):
    root, audited, other, map_path = scenes
    dataset = read_dataset(audited)
    names = [r.name for r in dataset.mapping]
    check_training_data(dataset, names, [other], strong=False)  # another place is fine
    with pytest.raises(SeglocError, match="is the audited dataset.*--strong"):
        check_training_data(dataset, names, [other, audited], strong=False)
    rerender = generate_scene(
        synth_config("room", seed=4, width=160, height=120, num_mapping=3, num_query=0), tmp_path / "again", progress=False
    )
    with pytest.raises(SeglocError, match=r"renders the audited scene \(room, seed 4\)"):
        check_training_data(dataset, names, [rerender], strong=False)
    copy = tmp_path / "copy"
    shutil.copytree(other, copy)
    (copy / "scene.json").unlink()
    shutil.copy(dataset.image_path(names[3]), copy / "images" / "mapping" / "stolen.png")
    with pytest.raises(SeglocError, match="an image of the audited map"):
        check_training_data(dataset, names, [copy], strong=False)
    check_training_data(dataset, names, [audited, rerender, copy], strong=True)  # asked for: allowed
    with pytest.raises(SeglocError, match="is the audited dataset"):  # and run_audit refuses before any work
        run_audit(map_path, audited, tmp_path / "out", AuditConfig(steps=1), [audited], progress=False)
    assert not (tmp_path / "out" / "audit.json").exists()


def test_audit_json_schema(scenes):
    root, audited, other, map_path = scenes
    config = config_from_dict(
        AuditConfig, {"steps": 2, "batch_size": 2, "width": 4, "depth": 1, "max_edge": 64, "max_images": 3, "strong": True}
    )
    report = run_audit(map_path, audited, root / "out", config, [other], progress=False)
    written = json.loads((root / "out" / "audit.json").read_text())
    assert written == report
    assert written["format"] == AUDIT_FORMAT and written["version"] == 1
    assert written["method"] == "reference" and written["variant"] == "strong"
    assert written["attack_surface"]["channels"] == 128 and written["image_size"] == [64, 48]
    assert written["training"]["steps"] == 2 and written["training"]["images"] == 4 + 2  # the corridor and the room's 2 queries
    assert written["training"]["triangulated_images"] == 0  # both carry depth maps
    assert len(written["per_image"]) == 3 and written["total"]["images"] == 3
    for row in written["per_image"]:
        assert set(row) == {"name", "points", "ssim", "psnr", "mae", "perceptual"} and row["points"] >= 0
        assert -1 <= row["ssim"] <= 1 and row["psnr"] > 0 and 0 <= row["mae"] <= 1 and row["perceptual"] >= 0
    assert sum(row["points"] for row in written["per_image"]) > 0
    for key in ("ssim", "psnr", "mae", "perceptual"):
        assert written["total"][key] == pytest.approx(np.mean([row[key] for row in written["per_image"]]))
    assert (root / "out" / "contact_sheet.png").stat().st_size > 1000
    assert (root / "out" / "attacker" / "manifest.json").is_file()


def test_default_attack_surface_is_the_core_geometry(scenes):
    """A method that does not override the hook (e.g. SLD) is audited on its core: depth and mask, no attribute channel."""
    from segloc.methods.registry import geometry_attack_surface

    _, audited, _, map_path = scenes
    package = MapPackage.open(map_path)
    surface = geometry_attack_surface(package)
    assert surface.num_channels == 0 and "no per-point appearance" in surface.description
    image = read_dataset(audited).load_image("mapping/000000.png")
    keypoints, attributes = surface.features(image)
    assert len(keypoints) > 10 and attributes.shape == (len(keypoints), 0)
    reference = get_method("reference").attack_surface(package)
    assert reference.num_channels == 128 and reference.observation_attributes.shape[0] == len(
        package.read_arrays("core", "points3D")["observation_xy"]
    )


def test_keypoint_depth_takes_the_sparse_point_at_each_keypoint():
    points2D = np.array([[10.0, 10.0], [20.5, 5.5], [30.0, 40.0]])
    depth = np.array([1.5, 2.5, 3.5])
    keypoints = np.array([[20.4, 5.6], [10.0, 10.0], [50.0, 50.0], [30.0, 41.0]])
    np.testing.assert_allclose(keypoint_depth(keypoints, points2D, depth, 0.5), [2.5, 1.5, 0.0, 0.0])
    np.testing.assert_allclose(keypoint_depth(keypoints, points2D, depth, 1.5), [2.5, 1.5, 0.0, 3.5])
    assert keypoint_depth(keypoints, np.zeros((0, 2)), np.zeros(0), 1.0).tolist() == [0.0] * 4


def test_a_place_without_depth_maps_trains_the_attacker_on_its_triangulated_points(scenes, tmp_path):
    """Real places (Strecha) have poses but no depth: their keypoints take the depth of the SfM points a map would hold."""
    from segloc.depth.completion import measured_depth
    from segloc.maps.build import core_config_of

    _, _, _, map_path = scenes
    package = MapPackage.open(map_path)
    surface = get_method("reference").attack_surface(package)
    other = generate_scene(
        synth_config("room", seed=7, width=160, height=120, num_mapping=8, num_query=0), tmp_path / "room7", progress=False
    )
    posed = tmp_path / "posed"
    shutil.copytree(other, posed)
    shutil.rmtree(posed / "depth")
    (posed / "scene.json").unlink()
    with_depth, without_depth = read_dataset(other), read_dataset(posed)
    args = ([without_depth], [without_depth.mapping], set(), 160, 10_000, 0)
    with pytest.raises(SeglocError, match="has no depth map"):
        training_images(surface, *args, progress=False)
    items = training_images(surface, *args, progress=False, core_config=core_config_of(package))
    assert len(items) == len(without_depth.mapping) and all(item.triangulated for item in items)
    assert sum(len(item.points.depth) for item in items) > 50
    close = []
    for item, record in zip(items, with_depth.mapping):
        rendered = measured_depth(with_depth, record.name)
        cols, rows = np.floor(item.points.points2D).astype(int).T  # 160 px: the attacker's size is the image's
        truth = rendered[rows, cols]
        close.extend(np.abs(item.points.depth - truth) <= 0.05 * truth + 0.02)
    assert np.mean(close) > 0.8  # triangulated depth is the rendered depth (a few points sit on depth edges)
    dense = training_images(surface, [with_depth], [with_depth.mapping], set(), 160, 10_000, 0, progress=False)
    assert all(not item.triangulated for item in dense)
    assert sum(len(i.points.depth) for i in items) < sum(len(i.points.depth) for i in dense)  # only triangulated keypoints
    lone = tmp_path / "lone"
    shutil.copytree(posed, lone)
    lone_dataset = read_dataset(lone)
    with pytest.raises(SeglocError, match="at least 2 images"):
        training_images(surface, [lone_dataset], [lone_dataset.mapping[:1]], set(), 160, 100, 0, False, core_config_of(package))
