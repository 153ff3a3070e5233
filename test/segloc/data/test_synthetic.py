"""Synthetic scenes: determinism, geometric consistency of poses / depth / labels, conditions, errors."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest

from segloc.config import config_from_dict, load_config
from segloc.data import rosbag
from segloc.data.dataset import load_image, read_dataset
from segloc.data.render import prepare_scene, render_view
from segloc.data.scenes import build_scene, changed_variant, seasonal_variant
from segloc.data.synthetic import (
    APPEARANCE_PRESETS,
    CONDITIONS,
    LABEL_IDS,
    LABELS,
    SCENES,
    AppearanceConfig,
    SynthConfig,
    generate_scene,
    read_scene_frames,
    read_scene_info,
    synth_config,
    write_scene_bag,
)
from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3, pose_error

SMALL = {"seed": 3, "width": 160, "height": 120, "num_mapping": 6, "num_query": 3, "mapping_laps": 0.25, "query_laps": 0.3}


def small_config(**overrides) -> SynthConfig:
    condition = overrides.pop("condition", "same")
    return synth_config(overrides.pop("scene", "room"), condition, **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def room_dataset(tmp_path_factory) -> Path:
    return generate_scene(small_config(), tmp_path_factory.mktemp("synth") / "room", progress=False)


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _depth_m(root: Path, name: str) -> np.ndarray:
    import cv2

    return cv2.imread(str(root / "depth" / name), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0


def _labels(root: Path, name: str) -> np.ndarray:
    return load_image(root / "labels" / name, grayscale=True)


def test_layout_and_records(room_dataset: Path):
    dataset = read_dataset(room_dataset, require_query=True)
    assert [r.name for r in dataset.mapping] == [f"mapping/{i:06d}.png" for i in range(6)]
    assert [r.name for r in dataset.query] == [f"query/{i:06d}.png" for i in range(3)]
    for record in (*dataset.mapping, *dataset.query):
        assert record.camera.model == "PINHOLE" and (record.camera.width, record.camera.height) == (160, 120)
        assert dataset.load_image(record.name).shape == (120, 160, 3)
        assert _labels(room_dataset, record.name).shape == (120, 160)
        assert _depth_m(room_dataset, record.name).shape == (120, 160)
    info = read_scene_info(room_dataset)
    assert info["labels"] == {str(k): v for k, v in LABELS.items()}
    assert info["scene"] == "room" and info["config"]["seed"] == 3
    assert config_from_dict(SynthConfig, info["config"]) == small_config()  # the config round-trips


def test_same_seed_gives_identical_files(room_dataset: Path, tmp_path: Path):
    again = generate_scene(small_config(), tmp_path / "again", progress=False)
    assert _files(again) == _files(room_dataset)
    for rel in _files(room_dataset):
        assert filecmp.cmp(room_dataset / rel, again / rel, shallow=False), rel


def test_different_seed_differs(room_dataset: Path, tmp_path: Path):
    other = generate_scene(small_config(seed=4), tmp_path / "other", progress=False)
    name = "mapping/000000.png"
    assert not np.array_equal(load_image(other / "images" / name), load_image(room_dataset / "images" / name))


def test_condition_changes_pixels_not_labels_or_depth(room_dataset: Path, tmp_path: Path):
    hard = generate_scene(small_config(condition="hard"), tmp_path / "hard", progress=False)
    for split in ("mapping", "query"):
        for i in range(3):
            name = f"{split}/{i:06d}.png"
            image_a, image_b = load_image(room_dataset / "images" / name), load_image(hard / "images" / name)
            if split == "mapping":  # both conditions map in daylight
                assert np.array_equal(image_a, image_b)
            else:
                assert np.abs(image_a.astype(int) - image_b.astype(int)).mean() > 5
            assert np.array_equal(_labels(room_dataset, name), _labels(hard, name))
            assert np.array_equal(_depth_m(room_dataset, name), _depth_m(hard, name))
    assert (hard / "query.txt").read_text() == (room_dataset / "query.txt").read_text()


def test_labels_come_from_the_table(room_dataset: Path):
    seen = set()
    for name in [f"mapping/{i:06d}.png" for i in range(6)] + [f"query/{i:06d}.png" for i in range(3)]:
        seen |= set(np.unique(_labels(room_dataset, name)).tolist())
    assert seen <= set(LABELS)
    assert {LABEL_IDS["floor"], LABEL_IDS["wall"]} <= seen
    assert LABEL_IDS["void"] not in seen  # a closed room: every ray hits a surface


def _unproject(record, depth: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """World points (N, 3) of integer pixels (N, 2) (col, row) with their depth."""
    rays = record.camera.unproject(pixels + 0.5)
    z = depth[pixels[:, 1], pixels[:, 0]]
    points_cam = rays / rays[:, 2:3] * z[:, None]
    return record.cam_from_world.inverse().transform_points(points_cam)


def test_depth_and_poses_reproject_consistently(room_dataset: Path):
    dataset = read_dataset(room_dataset)
    rng = np.random.default_rng(0)
    for first, second in ((0, 1), (1, 2), (2, 3)):
        a, b = dataset.mapping[first], dataset.mapping[second]
        depth_a, depth_b = _depth_m(room_dataset, a.name), _depth_m(room_dataset, b.name)
        labels_a, labels_b = _labels(room_dataset, a.name), _labels(room_dataset, b.name)
        pixels = np.stack([rng.integers(0, 160, 2000), rng.integers(0, 120, 2000)], axis=1)
        pixels = pixels[depth_a[pixels[:, 1], pixels[:, 0]] > 0]
        points = _unproject(a, depth_a, pixels)
        projected, z, visible = b.camera.world_to_image(b.cam_from_world, points)
        visible &= (projected[:, 0] < 160) & (projected[:, 1] < 120)
        assert visible.sum() > 300, "consecutive mapping views should overlap"
        cols, rows = projected[visible, 0].astype(int), projected[visible, 1].astype(int)
        depth_error = np.abs(depth_b[rows, cols] - z[visible])
        # Pixel quantisation and occlusion boundaries: most, not all, points agree closely.
        assert np.mean(depth_error < 0.02 + 0.02 * z[visible]) > 0.9
        assert np.mean(labels_b[rows, cols] == labels_a[pixels[visible, 1], pixels[visible, 0]]) > 0.9


def test_depth_points_lie_on_the_described_surfaces(room_dataset: Path):
    info = read_scene_info(room_dataset)
    corners = np.array([s["corners"] for s in info["surfaces"]])  # (Q, 4, 3)
    origin, axis_u, axis_v = corners[:, 0], corners[:, 1] - corners[:, 0], corners[:, 3] - corners[:, 0]
    normal = np.cross(axis_v, axis_u)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    record = read_dataset(room_dataset).query[0]
    depth = _depth_m(room_dataset, record.name)
    rows, cols = np.nonzero(depth > 0)
    pick = np.random.default_rng(1).choice(len(rows), 500, replace=False)
    points = _unproject(record, depth, np.stack([cols[pick], rows[pick]], axis=1))
    offsets = points[:, None] - origin[None]  # (N, Q, 3)
    plane_distance = np.abs(np.einsum("nqk,qk->nq", offsets, normal))
    a = np.einsum("nqk,qk->nq", offsets, axis_u) / np.sum(axis_u**2, axis=1)
    b = np.einsum("nqk,qk->nq", offsets, axis_v) / np.sum(axis_v**2, axis=1)
    inside = (a > -0.01) & (a < 1.01) & (b > -0.01) & (b < 1.01)
    nearest = np.where(inside, plane_distance, np.inf).min(axis=1)
    assert np.all(nearest < 0.005)


def test_trajectory_mount_and_odometry(room_dataset: Path):
    config = small_config()
    frames, base_from_cam = read_scene_frames(room_dataset, "mapping")
    records = {r.name: r for r in read_dataset(room_dataset).mapping}
    assert np.allclose(np.diff([f.timestamp for f in frames]), 1.0 / config.frame_rate)
    for frame in frames:
        cam_from_world = records[frame.name].cam_from_world
        expected = (frame.world_from_base * base_from_cam).inverse()
        assert max(pose_error(cam_from_world, expected)) < 1e-4  # metres, degrees (arccos precision)
        assert cam_from_world.center[2] == pytest.approx(config.mount.height, abs=1e-6)
        forward_world = cam_from_world.rotation.T @ np.array([0.0, 0.0, 1.0])  # optical axis
        base_forward = frame.world_from_base.rotation @ np.array([1.0, 0.0, 0.0])
        assert np.degrees(np.arccos(forward_world @ base_forward)) == pytest.approx(config.mount.pitch_deg, abs=1e-4)
        assert forward_world[2] < 0  # pitched down
    assert frames[0].odom_from_base == Rigid3.identity()
    for prev, cur in zip(frames, frames[1:]):
        gt_step = prev.world_from_base.inverse() * cur.world_from_base
        odom_step = prev.odom_from_base.inverse() * cur.odom_from_base
        assert np.linalg.norm(gt_step.translation - odom_step.translation) < 0.1 * np.linalg.norm(gt_step.translation) + 0.01
    query, _ = read_scene_frames(room_dataset, "query")
    assert query[0].timestamp == pytest.approx(frames[0].timestamp + 3600.0)


@pytest.fixture(scope="module")
def room_layout():
    return build_scene("room", SMALL["seed"])


@pytest.mark.parametrize("preset", [p for p in APPEARANCE_PRESETS if p != "day"])
def test_appearance_presets_keep_labels_and_depth(preset: str, room_layout):
    config = small_config(width=96, height=72)
    layout = room_layout
    cam_from_world = (Rigid3.identity() * config.mount.base_from_cam()).inverse()
    views = []
    for appearance in (APPEARANCE_PRESETS["day"], APPEARANCE_PRESETS[preset]):
        prepared = prepare_scene(seasonal_variant(layout.scene, appearance.season, config.seed), appearance)
        views.append(render_view(prepared, config.camera(), cam_from_world, np.random.default_rng(0)))
    assert np.abs(views[0].image.astype(int) - views[1].image.astype(int)).mean() > 2
    assert np.array_equal(views[0].labels, views[1].labels)
    assert np.array_equal(views[0].depth, views[1].depth)


@pytest.mark.parametrize("scene", SCENES)
def test_every_scene_renders(scene: str):
    config = small_config(scene=scene, width=80, height=60)
    layout = build_scene(scene, 0)
    xy, heading = layout.path.sample(np.array([0.0]))
    world_from_base = Rigid3.from_rotation(
        np.array([[np.cos(heading[0]), -np.sin(heading[0]), 0], [np.sin(heading[0]), np.cos(heading[0]), 0], [0, 0, 1]]), [*xy[0], 0.0]
    )
    prepared = prepare_scene(layout.scene, config.mapping_appearance)
    view = render_view(prepared, config.camera(), (world_from_base * config.mount.base_from_cam()).inverse(), np.random.default_rng(0))
    labels = set(np.unique(view.labels).tolist())
    assert labels <= set(LABELS) and len(labels) >= 3
    expected = {"room": "floor", "corridor": "floor", "street": "road", "office": "floor"}[scene]
    assert LABEL_IDS[expected] in labels
    assert (view.depth > 0).mean() > (0.5 if scene == "street" else 0.99)


def test_config_from_yaml(tmp_path: Path):
    path = tmp_path / "synth.yaml"
    path.write_text(
        "scene: corridor\nseed: 7\nquery_appearance: night\nmapping_appearance: {season: 0.5, noise_std: 0}\nmount: {height: 1.0}\n"
    )
    config = load_config(SynthConfig, path)
    assert config.scene == "corridor" and config.seed == 7 and config.mount.height == 1.0
    assert config.query_appearance == APPEARANCE_PRESETS["night"]
    assert config.mapping_appearance == AppearanceConfig(season=0.5, noise_std=0.0)
    assert set(CONDITIONS) >= {"same", "lighting", "season", "hard"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"scene": "kitchen"}, "valid scenes are: room, corridor, street"),
        ({"width": 0}, "image size 0x480 is too small: the smallest is 64x48"),
        ({"fov_deg": 200.0}, "fov_deg"),
        ({"num_mapping": 0}, "num_mapping must be >= 1"),
        ({"frame_rate": 0.0}, "frame_rate must be > 0"),
        ({"colour": "red"}, "unknown option(s) colour"),
        ({"query_appearance": "dusk"}, "valid presets are: day"),
        ({"query_appearance": {"brightness": 2.0}}, "unknown option(s) brightness"),
        ({"query_appearance": {"season": 2.0}}, "season must be >= 0 and <= 1"),
        ({"mount": {"height": 5.0}}, "mount.height"),
        ({"width": 48, "height": 36}, "too small"),
        ({"fov_deg": float("nan")}, "fov_deg must be a finite number"),
        ({"mount": {"pitch_deg": float("inf")}}, "mount.pitch_deg must be a finite number"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"query_offset": 1.0}, "query_offset must be >= -0.2 and <= 0.45"),
    ],
)
def test_bad_config_raises(tmp_path: Path, values: dict, message: str):
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(values))
    with pytest.raises(SeglocError) as info:
        load_config(SynthConfig, path)
    assert message in str(info.value)


def test_bad_calls_raise(room_dataset: Path, tmp_path: Path):
    with pytest.raises(SeglocError, match="valid conditions are"):
        synth_config("room", "foggy")
    with pytest.raises(SeglocError, match="exists already"):
        generate_scene(small_config(), room_dataset, progress=False)
    with pytest.raises(SeglocError, match="scene.json is missing"):
        read_scene_frames(tmp_path, "query")
    with pytest.raises(SeglocError, match="unknown split"):
        read_scene_frames(room_dataset, "test")


def test_overwrite_replaces_atomically(tmp_path: Path):
    target = tmp_path / "scene"
    target.mkdir()
    (target / "mapping.txt").write_text("")  # a dataset folder: overwrite replaces it
    (target / "stale.txt").write_text("old")
    generate_scene(small_config(num_mapping=2, num_query=1), target, overwrite=True, progress=False)
    assert not (target / "stale.txt").exists() and (target / "scene.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]  # no temporary folders left behind
    assert (target.stat().st_mode & 0o777) == (0o777 & ~_umask())  # the usual permissions, not mkdtemp's 0700


def test_overwrite_replaces_only_a_dataset_folder(tmp_path: Path):
    target = tmp_path / "notes"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(SeglocError, match="is not a dataset folder: --overwrite only replaces a dataset folder"):
        generate_scene(small_config(num_mapping=2, num_query=1), target, overwrite=True, progress=False)
    assert (target / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_scene_bag_round_trip(room_dataset: Path, tmp_path: Path):
    bag = write_scene_bag(room_dataset, tmp_path / "query_bag", split="query")
    config = rosbag.BagReadConfig(pose_source="topic", pose_topic="/ground_truth/pose", image_name="query/{index:06d}.png")
    records = {r.name: r for r in read_dataset(room_dataset).query}
    read = list(rosbag.read_bag(bag, config))
    assert len(read) == len(records)
    frames, _ = read_scene_frames(room_dataset, "query")
    for (record, image), frame in zip(read, frames):
        expected = records[frame.name]
        assert record.timestamp == pytest.approx(frame.timestamp, abs=1e-6)
        assert max(pose_error(record.cam_from_world, expected.cam_from_world)) < 1e-5
        assert np.array_equal(image, load_image(room_dataset / "images" / frame.name))


def test_a_changed_place_is_a_later_recording_of_the_same_layout(room_dataset: Path, tmp_path: Path):
    first = read_scene_info(room_dataset)
    assert "change" not in first and not {"recording", "change"} & set(first["config"])  # recording 0 describes itself as before
    layout = build_scene("room", 3)
    assert changed_variant(layout.scene, 0.0, 3, 1)[0] is layout.scene  # no change: the very same scene, the same renders
    later = generate_scene(small_config(recording=1, change=0.6), tmp_path / "later", progress=False)
    again = generate_scene(small_config(recording=1, change=0.6), tmp_path / "again", progress=False)
    for rel in _files(later):  # deterministic from (seed, recording)
        assert filecmp.cmp(later / rel, again / rel, shallow=False), rel
    info = read_scene_info(later)
    assert config_from_dict(SynthConfig, info["config"]) == small_config(recording=1, change=0.6)
    whats = [region["what"].split()[0] for region in info["change"]["regions"]]
    assert "repainted" in whats and "new" in whats and info["change"]["moved"]
    # The same layout, except the furniture that moved; other trajectories, a day later.
    before = {s["name"]: s["corners"] for s in first["surfaces"]}
    after = {s["name"]: s["corners"] for s in info["surfaces"]}
    assert set(before) == set(after)
    moved = {name for name in after if any(name.startswith(group + "_") for group in info["change"]["moved"])}
    assert moved and all((before[name] == after[name]) == (name not in moved) for name in after)
    old, new = read_dataset(room_dataset), read_dataset(later)
    assert new.mapping[0].timestamp - old.mapping[0].timestamp == pytest.approx(86400.0)
    offsets = [np.linalg.norm(a.cam_from_world.center - b.cam_from_world.center) for a, b in zip(old.mapping, new.mapping)]
    assert 0 < max(offsets) < 0.2


def test_odometry_mapping_poses_are_a_drifting_similarity_of_the_truth(room_dataset: Path, tmp_path: Path):
    from segloc.data.synthetic import GROUNDTRUTH_FILE, read_mapping_groundtruth
    from segloc.geometry.similarity import align_trajectories

    assert not (room_dataset / GROUNDTRUTH_FILE).exists() and "odometry" not in read_scene_info(room_dataset)
    assert "odometry_drift" not in read_scene_info(room_dataset)["config"]  # the default describes itself as before
    odometry = generate_scene(small_config(odometry_drift=0.0), tmp_path / "odometry", progress=False)
    for rel in ("images/mapping/000000.png", "query.txt"):  # same renders, same query poses
        assert filecmp.cmp(room_dataset / rel, odometry / rel, shallow=False), rel
    truth, recorded = read_mapping_groundtruth(odometry), read_dataset(odometry).mapping
    assert [r.name for r in truth] == [r.name for r in recorded]
    errors = [pose_error(a.cam_from_world, b.cam_from_world) for a, b in zip(truth, read_dataset(room_dataset).mapping)]
    assert np.max(errors) < 1e-4  # the true poses, as mapping.txt holds them without the option
    info = read_scene_info(odometry)["odometry"]
    # Without drift the odometry is the truth in another frame, up to the 0.2 % random walk.
    odom_from_world = align_trajectories(
        np.array([r.cam_from_world.center for r in truth]),
        np.array([r.cam_from_world.center for r in recorded]),
        np.array([r.cam_from_world.rotation.T for r in truth]),
        np.array([r.cam_from_world.rotation.T for r in recorded]),
    )
    assert odom_from_world.scale == pytest.approx(info["odom_from_world_at_start"]["scale"], rel=0.02)
    assert 0.5 <= odom_from_world.scale <= 2.0
    assert max(pose_error(odom_from_world.transform_pose(t.cam_from_world), r.cam_from_world)[1] for t, r in zip(truth, recorded)) < 0.1
    drifting = generate_scene(small_config(odometry_drift=2.0), tmp_path / "drifting", progress=False)
    first, last = read_dataset(drifting).mapping[0], read_dataset(drifting).mapping[-1]
    assert pose_error(first.cam_from_world, recorded[0].cam_from_world)[1] < 1e-6  # drift starts at the first pose
    assert pose_error(last.cam_from_world, recorded[-1].cam_from_world)[1] > 0.5  # and grows with the distance travelled
