"""Pair and correspondence mining from a map core: geometry, filters, files."""

import numpy as np
import pytest
from scipy import sparse

from segloc.data import synthetic
from segloc.data.dataset import ImageRecord, read_dataset
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3, axis_angle_to_matrix
from segloc.maps.core import MapCore
from segloc_train.pairs import (
    PairMiningConfig,
    describe_pairs,
    mine_pairs,
    read_pairs,
    reprojected_overlaps,
    reprojection_errors,
    write_pairs,
)

CAMERA = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))
# No minimum count worth mentioning: the hand-made tests control the other filters.
LOOSE = {"min_correspondences": 1, "reference_image_size": None, "min_correspondences_floor": 1}


def look_from(center, yaw_deg: float = 0.0, roll_deg: float = 0.0) -> Rigid3:
    """``cam_from_world`` of a camera at ``center`` looking along world +z, turned by yaw (about
    world y) then rolled about its optical axis."""
    world_from_cam = axis_angle_to_matrix([0.0, np.radians(yaw_deg), 0.0]) @ axis_angle_to_matrix([0.0, 0.0, np.radians(roll_deg)])
    rotation = world_from_cam.T
    return Rigid3.from_rotation(rotation, -rotation @ np.asarray(center, dtype=np.float64))


def wall_points(num_points: int = 3000, seed: int = 0) -> np.ndarray:
    """Points on a slightly thick wall 4.5 to 5.5 m in front of the origin, wider than any view."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-12, 12, num_points), rng.uniform(-8, 8, num_points), rng.uniform(4.5, 5.5, num_points)], axis=1)


def make_core(poses: list[Rigid3], points3D: np.ndarray, noise_px: float = 0.0, seed: int = 0) -> MapCore:
    """Every image observes every point it sees (in front, inside the image)."""
    rng = np.random.default_rng(seed)
    images = [ImageRecord(f"{i:03d}.png", pose, CAMERA) for i, pose in enumerate(poses)]
    point_ids, image_ids, xy = [], [], []
    for image_id, pose in enumerate(poses):
        pixels, _, visible = CAMERA.world_to_image(pose, points3D)
        visible &= (pixels[:, 0] < CAMERA.width) & (pixels[:, 1] < CAMERA.height)
        ids = np.flatnonzero(visible)
        point_ids.append(ids)
        image_ids.append(np.full(len(ids), image_id))
        xy.append(pixels[ids] + rng.normal(0.0, noise_px, (len(ids), 2)))
    return MapCore(images, points3D, np.zeros(len(points3D)), np.concatenate(point_ids), np.concatenate(image_ids), np.concatenate(xy))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from segloc.maps.build import build_core

    config = synthetic.synth_config("room", "same", num_mapping=12, num_query=0, width=160, height=120, seed=3, mapping_laps=0.25)
    dataset = read_dataset(synthetic.generate_scene(config, tmp_path_factory.mktemp("room") / "dataset", progress=False))
    return build_core(dataset, progress=False).core


def test_synthetic_correspondences_are_geometrically_consistent(scene):
    config = PairMiningConfig()
    pairs = mine_pairs(scene, config, progress=False)
    assert len(pairs) >= 5
    assert [(p.image_id_a, p.image_id_b) for p in pairs] == sorted((p.image_id_a, p.image_id_b) for p in pairs)
    minimum = int(config.min_correspondences_for(160 * 120))
    assert minimum == 13
    for pair in pairs:
        assert pair.image_id_a < pair.image_id_b
        assert pair.points_a.shape == pair.points_b.shape == (pair.num_correspondences, 2)
        assert pair.points_a.dtype == np.float32 and pair.point_ids.dtype == np.int64
        assert np.all(np.diff(pair.point_ids) > 0)
        assert pair.num_correspondences >= minimum
        assert min(pair.overlap_a_in_b, pair.overlap_b_in_a) >= 0.75
        for image_id, points in ((pair.image_id_a, pair.points_a), (pair.image_id_b, pair.points_b)):
            image = scene.images[image_id]
            projected, depth, _ = image.camera.world_to_image(image.cam_from_world, scene.points3D[pair.point_ids])
            assert np.all(depth > 0)
            assert np.linalg.norm(projected - points, axis=1).max() <= 5.0
    assert describe_pairs(pairs)["num_pairs"] == len(pairs)


def _incidence(core: MapCore) -> sparse.csr_matrix:
    incidence = sparse.csr_matrix(
        (np.ones(core.num_observations), (core.observation_image_ids, core.observation_point_ids)),
        shape=(len(core.images), core.num_points),
    )
    incidence.sort_indices()
    return incidence


def _check_shortcuts(core: MapCore) -> np.ndarray:
    """The hull shortcut and the pruning bounds agree with the computation from every point."""
    incidence = _incidence(core)
    sources, targets = np.meshgrid(np.arange(len(core.images)), np.arange(len(core.images)))
    sources, targets = sources.ravel(), targets.ravel()
    every_point = (incidence.indptr, incidence.indices)
    reference = reprojected_overlaps(core, incidence.indptr, incidence.indices, sources, targets, hulls=every_point)
    fast = reprojected_overlaps(core, incidence.indptr, incidence.indices, sources, targets)
    np.testing.assert_allclose(fast, reference, atol=1e-9)
    for minimum in (0.5, 0.75):
        pruned = reprojected_overlaps(core, incidence.indptr, incidence.indices, sources, targets, minimum=minimum)
        passing = reference >= minimum
        assert np.array_equal(pruned >= minimum, passing)
        np.testing.assert_allclose(pruned[passing], reference[passing], atol=1e-9)
    assert np.all(reference[sources == targets] == 1.0) and np.all((reference >= 0) & (reference <= 1))
    return reference


def test_overlap_shortcuts_match_all_points(scene):
    _check_shortcuts(scene)


def test_overlap_shortcuts_with_points_behind_the_target():
    # Cameras moving forward through points spread in depth: the later cameras have some of the
    # earlier cameras' points behind them, where the hull shortcut does not apply.
    rng = np.random.default_rng(4)
    points3D = np.stack([rng.uniform(-6, 6, 4000), rng.uniform(-4, 4, 4000), rng.uniform(0.5, 12, 4000)], axis=1)
    core = make_core([look_from([0.0, 0, z], yaw_deg=yaw) for z, yaw in ((0, 0), (0.7, 3), (1.5, -4), (3.0, 10), (4.0, 0))], points3D)
    overlaps = _check_shortcuts(core)
    assert np.sum((overlaps > 0.05) & (overlaps < 0.95)) >= 5  # a spread of values, not all trivial


def test_reprojection_error_above_5px_is_rejected():
    poses = [look_from([0.0, 0, 0]), look_from([0.3, 0, 0])]
    core = make_core(poses, wall_points(800))
    image_1 = np.flatnonzero(core.observation_image_ids == 1)
    far, near = image_1[0], image_1[1]
    core.observation_xy[far] += [4.0, 4.0]  # 5.66 px
    core.observation_xy[near] += [3.0, 3.0]  # 4.24 px
    _, errors = reprojection_errors(core)
    assert errors[far] == pytest.approx(np.sqrt(32), abs=1e-3) and errors[near] == pytest.approx(np.sqrt(18), abs=1e-3)
    (pair,) = mine_pairs(core, PairMiningConfig(**LOOSE), progress=False)
    assert core.observation_point_ids[far] not in pair.point_ids
    assert core.observation_point_ids[near] in pair.point_ids
    (loose,) = mine_pairs(core, PairMiningConfig(max_reprojection_error_px=6.0, **LOOSE), progress=False)
    assert loose.num_correspondences == pair.num_correspondences + 1


def test_point_behind_a_camera_is_rejected():
    core = make_core([look_from([0.0, 0, 0]), look_from([0.3, 0, 0])], wall_points(800))
    core.points3D[core.observation_point_ids[0]] *= -1.0  # now behind both cameras
    _, errors = reprojection_errors(core)
    assert np.isinf(errors[core.observation_point_ids == core.observation_point_ids[0]]).all()
    (pair,) = mine_pairs(core, PairMiningConfig(**LOOSE), progress=False)
    assert core.observation_point_ids[0] not in pair.point_ids


def test_minimum_count_scales_with_image_area():
    config = PairMiningConfig()
    assert config.min_correspondences_for(1024 * 768) == 500
    assert config.min_correspondences_for(640 * 480) == 196
    assert config.min_correspondences_for(16 * 12) == 10  # the floor
    assert PairMiningConfig(reference_image_size=None).min_correspondences_for(160 * 120) == 500


def test_pairs_below_the_minimum_count_are_dropped():
    points3D = wall_points(8000)
    core = make_core([look_from([0.0, 0, 0]), look_from([0.2, 0, 0]), look_from([0.0, 0.2, 0])], points3D)
    # Image 2 keeps 30 observations of points images 0 and 1 see: pairs with it have 30 correspondences.
    seen = [set(core.observation_point_ids[core.observation_image_ids == i]) for i in range(3)]
    chosen = sorted(seen[0] & seen[1] & seen[2])[:30]
    keep = (core.observation_image_ids != 2) | np.isin(core.observation_point_ids, chosen)
    core = MapCore(
        core.images,
        core.points3D,
        core.point_errors,
        core.observation_point_ids[keep],
        core.observation_image_ids[keep],
        core.observation_xy[keep],
    )
    counts = {
        (p.image_id_a, p.image_id_b): p.num_correspondences
        for p in mine_pairs(core, PairMiningConfig(min_bbox_overlap=0.0, **LOOSE), progress=False)
    }
    assert counts[(0, 2)] == counts[(1, 2)] == 30 and counts[(0, 1)] > 300
    fixed_40 = {"min_correspondences": 40, "reference_image_size": None}
    pairs = mine_pairs(core, PairMiningConfig(min_bbox_overlap=0.0, **fixed_40), progress=False)
    assert [(p.image_id_a, p.image_id_b) for p in pairs] == [(0, 1)]
    # The default scaled threshold at 640 x 480 is 196.
    pairs = mine_pairs(core, PairMiningConfig(min_bbox_overlap=0.0), progress=False)
    assert [(p.image_id_a, p.image_id_b) for p in pairs] == [(0, 1)]


def test_bounding_box_overlap_filter():
    # At ~5 m with f = 500 px, 1 m sideways moves the view by ~100 px; 3.2 m is half the width.
    poses = [look_from([0.0, 0, 0]), look_from([0.4, 0, 0]), look_from([3.2, 0, 0]), look_from([0.0, 0, 2.5])]
    core = make_core(poses, wall_points(4000))
    pairs = {(p.image_id_a, p.image_id_b): p for p in mine_pairs(core, PairMiningConfig(min_bbox_overlap=0.0, **LOOSE), progress=False)}
    assert pairs[(0, 1)].overlap_a_in_b == pytest.approx(0.92, abs=0.03)
    assert pairs[(0, 2)].overlap_a_in_b == pytest.approx(0.5, abs=0.05) and pairs[(0, 2)].overlap_b_in_a == pytest.approx(0.5, abs=0.05)
    # Image 3 is twice closer to the wall: a close-up. Its points fall inside image 0 ...
    assert pairs[(0, 3)].overlap_b_in_a == pytest.approx(1.0)
    # ... but image 0's points spread over about twice the close-up's frame in each direction.
    assert pairs[(0, 3)].overlap_a_in_b < 0.4
    kept = mine_pairs(core, PairMiningConfig(**LOOSE), progress=False)
    assert [(p.image_id_a, p.image_id_b) for p in kept] == [(0, 1)]
    half = mine_pairs(core, PairMiningConfig(min_bbox_overlap=0.45, **LOOSE), progress=False)
    assert (0, 2) in [(p.image_id_a, p.image_id_b) for p in half] and (0, 3) not in [(p.image_id_a, p.image_id_b) for p in half]


def test_relative_rotation_filter():
    poses = [look_from([0.0, 0, 0]), look_from([0.0, 0, 0], roll_deg=10.0), look_from([0.0, 0, 0], roll_deg=30.0)]
    core = make_core(poses, wall_points(3000))
    loose = PairMiningConfig(min_bbox_overlap=0.0, **LOOSE)
    angles = {(p.image_id_a, p.image_id_b): p.relative_rotation_deg for p in mine_pairs(core, loose, progress=False)}
    assert angles[(0, 1)] == pytest.approx(10.0) and angles[(0, 2)] == pytest.approx(30.0) and angles[(1, 2)] == pytest.approx(20.0)
    limited = PairMiningConfig(min_bbox_overlap=0.0, max_relative_rotation_deg=25.0, **LOOSE)
    assert [(p.image_id_a, p.image_id_b) for p in mine_pairs(core, limited, progress=False)] == [(0, 1), (1, 2)]


def test_max_pairs_per_image(scene):
    all_pairs = mine_pairs(scene, PairMiningConfig(min_bbox_overlap=0.5), progress=False)
    limited = mine_pairs(scene, PairMiningConfig(min_bbox_overlap=0.5, max_pairs_per_image=2), progress=False)
    assert 0 < len(limited) < len(all_pairs)
    per_image = np.bincount([i for p in limited for i in (p.image_id_a, p.image_id_b)], minlength=len(scene.images))
    assert per_image.max() <= 2
    best = max(all_pairs, key=lambda p: p.num_correspondences)
    assert (best.image_id_a, best.image_id_b) in [(p.image_id_a, p.image_id_b) for p in limited]


def test_file_round_trip(scene, tmp_path):
    pairs = mine_pairs(scene, progress=False)
    loaded = read_pairs(write_pairs(tmp_path / "pairs.npz", pairs))
    assert len(loaded) == len(pairs)
    for original, copy in zip(pairs, loaded):
        assert (copy.image_id_a, copy.image_id_b) == (original.image_id_a, original.image_id_b)
        np.testing.assert_array_equal(copy.points_a, original.points_a)
        np.testing.assert_array_equal(copy.points_b, original.points_b)
        np.testing.assert_array_equal(copy.point_ids, original.point_ids)
        assert copy.overlap_a_in_b == original.overlap_a_in_b and copy.relative_rotation_deg == original.relative_rotation_deg
    assert read_pairs(write_pairs(tmp_path / "empty.npz", [])) == []
    with pytest.raises(SeglocError, match="does not exist"):
        read_pairs(tmp_path / "missing.npz")


def test_degenerate_inputs_and_bad_options():
    core = make_core([look_from([0.0, 0, 0])], wall_points(100))
    assert mine_pairs(core, progress=False) == []
    with pytest.raises(SeglocError, match="min_bbox_overlap"):
        PairMiningConfig(min_bbox_overlap=1.5)
    with pytest.raises(SeglocError, match="max_reprojection_error_px"):
        PairMiningConfig(max_reprojection_error_px=0.0)
    with pytest.raises(SeglocError, match="max_relative_rotation_deg"):
        PairMiningConfig(max_relative_rotation_deg=-5.0)
