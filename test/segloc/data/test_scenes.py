"""Scene layouts: the office's random footprints and furniture, and the older kinds unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

from segloc.data.render import prepare_scene, render_view
from segloc.data.scenes import SCENE_BUILDERS, GroundRect, LoopPath, SceneLayout, build_scene
from segloc.data.synthetic import LABEL_IDS, SynthConfig, synth_config
from segloc.geometry.transforms import Rigid3

#: build_scene(kind, 0) of the kinds the shipped networks were trained on, computed from main's
#: code before the office kind came: (hash of names, corners, texture sizes, label histograms and
#: loop; mean texture colour; mean of the quads' colours weighted by their index).
MAIN_FINGERPRINTS = {
    "room": ("3f75f733007f4edd", (153.415, 145.328, 112.525), (5605.341, 4613.445, 3388.237)),
    "corridor": ("ed022e19f933a08a", (166.03, 136.351, 104.982), (3017.18, 2494.446, 1925.382)),
    "street": ("9783dffff6b56b44", (93.323, 105.722, 82.75), (8549.162, 9916.59, 7610.279)),
}
SEEDS = range(8)


def fingerprint(layout: SceneLayout) -> tuple[str, np.ndarray, np.ndarray]:
    digest = hashlib.sha256()
    colour_sum, weighted = np.zeros(3), np.zeros(3)
    for k, quad in enumerate(layout.scene.quads):
        digest.update(quad.name.encode())
        digest.update(np.round(quad.corners(), 4).astype(np.float64).tobytes())
        digest.update(np.asarray(quad.texture.labels.shape, np.int64).tobytes())
        digest.update(np.bincount(quad.texture.labels.ravel(), minlength=256).astype(np.int64).tobytes())
        mean = quad.texture.color.reshape(-1, 3).mean(axis=0)
        colour_sum += mean
        weighted += (k + 1) * mean
    path = layout.path
    digest.update(np.round([path.half_x, path.half_y, path.radius], 6).tobytes())
    count = len(layout.scene.quads)
    return digest.hexdigest()[:16], colour_sum / count, weighted / count


@pytest.mark.parametrize("kind", sorted(MAIN_FINGERPRINTS))
def test_older_scene_kinds_build_as_on_main(kind: str):
    digest, mean, weighted = fingerprint(build_scene(kind, 0))
    expected_digest, expected_mean, expected_weighted = MAIN_FINGERPRINTS[kind]
    assert digest == expected_digest
    np.testing.assert_allclose(mean, expected_mean, atol=0.01)
    np.testing.assert_allclose(weighted, expected_weighted, rtol=1e-5)


@pytest.fixture(scope="module")
def offices() -> dict[int, SceneLayout]:
    return {seed: build_scene("office", seed) for seed in SEEDS}


def walls_of(layout: SceneLayout) -> np.ndarray:
    """(N, 2, 2) ground segments of the walls, in order."""
    return np.array([q.corners()[:2, :2] for q in layout.scene.quads if q.name.startswith("wall_")])


def furniture_of(layout: SceneLayout) -> list:
    return [q for q in layout.scene.quads if not q.name.startswith(("wall_", "floor", "ceiling"))]


def segment_distance(points: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    d = p1 - p0
    t = np.clip((points - p0) @ d / max(d @ d, 1e-12), 0, 1)
    return np.linalg.norm(points - p0 - t[:, None] * d, axis=1)


def quad_distance(points: np.ndarray, quad) -> np.ndarray:
    """(N,) ground distance of points (N, 2) to the quad seen from above (0 under a horizontal quad)."""
    corners = quad.corners()[:, :2]
    distance = np.min([segment_distance(points, corners[i], corners[(i + 1) % 4]) for i in range(4)], axis=0)
    if abs(quad.normal[2]) > 0.5:
        distance[PolygonPath(corners).contains_points(points)] = 0.0
    return distance


def loops(path: LoopPath) -> dict[str, np.ndarray]:
    """Ground points of the mapping loop and of the query loops at the extreme offsets (-0.2 and 0.45 m inside)."""
    result = {}
    for offset in (0.0, -0.2, 0.45):
        loop = LoopPath(path.half_x - offset, path.half_y - offset, max(path.radius - offset, 0.0))
        result[f"offset {offset}"] = loop.sample(np.arange(0, loop.length, 0.05))[0]
    return result


def test_office_is_deterministic_per_seed():
    first, second = build_scene("office", 5), build_scene("office", 5)
    assert [q.name for q in first.scene.quads] == [q.name for q in second.scene.quads]
    for a, b in zip(first.scene.quads, second.scene.quads):
        assert np.array_equal(a.corners(), b.corners())
        assert np.array_equal(a.texture.color, b.texture.color) and np.array_equal(a.texture.labels, b.texture.labels)
    assert first.path == second.path
    assert "office" in SCENE_BUILDERS


def test_office_layouts_vary_with_the_seed(offices):
    outlines = [walls_of(layout)[:, 0] for layout in offices.values()]
    assert len({np.round(o, 3).tobytes() for o in outlines}) == len(offices)  # every footprint differs
    assert {len(o) for o in outlines} == {4, 6}  # rectangles and L shapes
    heights = [max(q.corners()[:, 2].max() for q in layout.scene.quads) for layout in offices.values()]
    assert all(2.5 <= h <= 4.0 for h in heights) and np.ptp(heights) > 0.5
    for layout in offices.values():
        main = layout.scene.quads[[q.name for q in layout.scene.quads].index("floor_0")].corners()[:, :2]
        width, depth = np.ptp(main, axis=0)
        assert 5.0 <= width <= 14.0 and 4.0 <= depth <= 10.0
    counts = [len({q.name.split("_")[0] for q in furniture_of(layout) if q.name.startswith("island")}) for layout in offices.values()]
    assert sum(counts) >= 2 * len(offices)  # furniture stands free in the middle too
    kinds = {q.name.split("_")[1] for layout in offices.values() for q in furniture_of(layout) if q.name.startswith("island")}
    assert kinds == {"table", "bookcase", "cabinet", "boxes", "partition", "pillar"}
    yaws = [
        np.arctan2(*q.axis_u[1::-1]) % (0.5 * np.pi)
        for layout in offices.values()
        for q in furniture_of(layout)
        if q.name.startswith("island") and q.name.endswith("_front")
    ]
    assert np.ptp(yaws) > 0.5  # not all aligned with the walls


@pytest.mark.parametrize("seed", SEEDS)
def test_office_loop_stays_inside_and_clear_of_furniture(offices, seed: int):
    layout = offices[seed]
    walls = walls_of(layout)
    footprint = PolygonPath(walls[:, 0])
    furniture = furniture_of(layout)
    assert furniture
    for name, points in loops(layout.path).items():
        assert footprint.contains_points(points).all(), name
        to_walls = np.min([segment_distance(points, p0, p1) for p0, p1 in walls], axis=0)
        assert to_walls.min() >= 1.0, name
        to_furniture = np.min([quad_distance(points, q) for q in furniture], axis=0)
        assert to_furniture.min() >= 0.7, (name, to_furniture.min())
    mapping_loop = loops(layout.path)["offset 0.0"]
    assert np.min([quad_distance(mapping_loop, q) for q in furniture]) >= 1.15


@pytest.mark.parametrize("seed", [1, 3])
def test_office_views_along_the_loops_see_walls_everywhere(offices, seed: int):
    layout = offices[seed]
    assert len(walls_of(layout)) == 6  # an L-shaped room
    config: SynthConfig = synth_config("office", seed=seed, width=64, height=48)
    prepared = prepare_scene(layout.scene, config.mapping_appearance)
    base_from_cam = config.mount.base_from_cam()
    for offset in (-0.2, 0.45):
        path = layout.path
        loop = LoopPath(path.half_x - offset, path.half_y - offset, max(path.radius - offset, 0.0))
        xy, heading = loop.sample(np.linspace(0, loop.length, 6, endpoint=False))
        for (x, y), yaw in zip(xy, heading):
            c, s = np.cos(yaw), np.sin(yaw)
            world_from_base = Rigid3.from_rotation(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]), [x, y, 0.0])
            view = render_view(prepared, config.camera(), (world_from_base * base_from_cam).inverse(), np.random.default_rng(0))
            assert (view.depth > 0).all()  # a closed room: no holes
            assert view.depth.min() > 0.5  # the camera is not inside (or against) anything
            assert LABEL_IDS["floor"] in view.labels and LABEL_IDS["void"] not in view.labels


def test_ground_rect_distance_and_overlap():
    rect = GroundRect((1.0, 0.0), (2.0, 1.0), 0.5 * np.pi)  # 1 m along world x, 2 m along world y
    np.testing.assert_allclose(
        rect.distance([[1.0, 0.0], [2.5, 0.0], [1.0, 2.0], [2.5, 2.0]]), [0.0, 1.0, 1.0, np.hypot(1.0, 1.0)], atol=1e-9
    )
    assert rect.overlaps(GroundRect((2.0, 0.0), (1.2, 1.2), 0.0))
    assert not rect.overlaps(GroundRect((2.5, 0.0), (1.0, 1.0), 0.0))
    assert rect.overlaps(GroundRect((2.5, 0.0), (1.0, 1.0), 0.0), gap=0.6)
    assert not rect.overlaps(GroundRect((3.0, 3.0), (1.0, 1.0), np.pi / 4))
