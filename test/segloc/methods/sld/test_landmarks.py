"""Landmark selection on a constructed point cloud, and visibility labels against depth (constructed and synthetic)."""

import numpy as np
import pytest

from segloc.data.dataset import ImageRecord
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.maps.core import MapCore
from segloc.methods.sld.landmarks import (
    INVISIBLE,
    UNKNOWN,
    VISIBLE,
    LandmarkConfig,
    LandmarkSelection,
    VisibilityConfig,
    select_landmarks,
    spread_greedily,
    track_geometry,
    visibility_labels,
)

CAMERA = Camera("PINHOLE", 200, 150, (100.0, 100.0, 100.0, 75.0))


def look_at(center, target) -> Rigid3:
    """cam_from_world of a camera at ``center`` looking at ``target`` (y down, OpenCV axes)."""
    z = np.asarray(target, float) - center
    z /= np.linalg.norm(z)
    x = np.cross([0.0, -1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rotation = np.stack([x, y, z])
    return Rigid3.from_rotation(rotation, -rotation @ center)


def ring_core(points: np.ndarray, num_cameras: int = 12, radius: float = 6.0, observe=None) -> MapCore:
    """Cameras on a ring around the origin looking at it; each point observed by the cameras ``observe(point_id)`` lists."""
    images = []
    for index in range(num_cameras):
        angle = 2 * np.pi * index / num_cameras
        center = np.array([radius * np.cos(angle), 0.0, radius * np.sin(angle)])
        images.append(ImageRecord(f"s{index % 2}/{index:03d}.png", look_at(center, np.zeros(3)), CAMERA))
    point_ids, image_ids, xy = [], [], []
    for point_id, point in enumerate(points):
        for image_id in observe(point_id) if observe else range(num_cameras):
            pixel, depth, _ = CAMERA.world_to_image(images[image_id].cam_from_world, point[None])
            if depth[0] > 0:
                point_ids.append(point_id)
                image_ids.append(image_id)
                xy.append(pixel[0])
    return MapCore(images, points, np.zeros(len(points)), point_ids, image_ids, np.asarray(xy).reshape(-1, 2))


def test_scores_follow_track_length_span_and_sessions():
    points = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]])
    observers = {0: range(12), 1: range(6), 2: [0, 1], 3: [0, 2, 4, 6, 8, 10]}  # 3: one session only
    core = ring_core(points, observe=lambda i: observers[i])
    geometry = track_geometry(core)
    assert list(geometry.track_length) == [12, 6, 2, 6]
    assert geometry.sessions.tolist() == [1.0, 1.0, 1.0, 0.5]
    # rays all around a full ring: span 90 degrees (arccos(1 - 2 * 0.5)), two nearby rays: small
    assert geometry.angular_span[0] == pytest.approx(np.pi / 2, abs=0.05)
    assert geometry.angular_span[2] < np.radians(40)
    scores = geometry.saliency()
    assert scores[0] > scores[1] > scores[2]
    assert scores[1] > scores[3]  # same track length, fewer sessions
    # the spelled-out formula for point 0
    expected = min(1, geometry.depth_std[0] / geometry.mean_depth[0]) + 0.25 * np.log2(12) + 1.0 + geometry.angular_span[0]
    assert scores[0] == pytest.approx(expected)


def test_greedy_spread_halves_the_distance_until_enough():
    positions = np.array([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [4.0, 0, 0], [8.0, 0, 0]])
    order = np.arange(5)
    # distance 8: 0, 8 ... then 4: 4.0; then halving down to 0.1: 0.1 and 0.2
    assert spread_greedily(positions, order, 3, 8.0, 1e-3).tolist() == [0, 4, 3]
    assert sorted(spread_greedily(positions, order, 5, 8.0, 1e-3).tolist()) == [0, 1, 2, 3, 4]
    # below the minimum distance the best remaining ones fill up
    assert spread_greedily(positions, order, 4, 8.0, 5.0).tolist() == [0, 4, 1, 2]


def test_selection_spreads_over_the_scene_and_respects_filters():
    rng = np.random.default_rng(0)
    cluster = rng.normal([0.0, 0.0, 0.0], 0.05, (40, 3))  # a tight cluster of good points
    spread = rng.uniform(-2, 2, (20, 3)) * [1, 0.5, 1]
    points = np.concatenate([cluster, spread, [[0.0, 0.0, 60.0]]])  # the last one: far away (depth filter)
    core = ring_core(points, radius=8.0)
    selection = select_landmarks(core, LandmarkConfig(num_landmarks=10, min_track_length=3))
    assert selection.relaxation == "none"
    assert len(selection.point_ids) == 10
    assert len(points) - 1 not in selection.point_ids
    assert np.sum(selection.point_ids < 40) <= 2  # not all in the cluster: the spread picks distant points first
    distances = np.linalg.norm(selection.positions[:, None] - selection.positions[None], axis=2)
    assert np.min(distances[np.triu_indices(10, 1)]) > 0.2
    np.testing.assert_allclose(selection.positions, points[selection.point_ids])


def test_few_long_tracks_fall_back_to_short_ones():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, (30, 3))
    core = ring_core(points, observe=lambda i: [i % 12, (i + 1) % 12])  # every track has length 2
    selection = select_landmarks(core, LandmarkConfig(num_landmarks=20, min_track_length=5))
    assert selection.relaxation in ("track_length_2", "no_filters")
    assert len(selection.point_ids) == 20


def test_visibility_against_a_constructed_depth_map():
    # camera a looks at a wall at depth 5 (the depth map); camera c, beside it, and camera b,
    # behind the wall, observed the landmarks (their observation rays give the landmarks' normals)
    front = look_at(np.array([0.0, 0.0, -5.0]), np.zeros(3))
    beside = look_at(np.array([1.0, 0.0, -5.0]), np.zeros(3))
    behind = look_at(np.array([0.0, 0.0, 5.0]), np.zeros(3))
    images = [ImageRecord("a.png", front, CAMERA), ImageRecord("c.png", beside, CAMERA), ImageRecord("b.png", behind, CAMERA)]
    # on the wall, behind the wall (occluded), where the depth map has no surface, outside the
    # image, on the wall but observed from behind only (facing away from a)
    points = np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 2.0], [1.5, 0.0, 0.0], [30.0, 0.0, 0.0], [0.2, 0.2, 0.0]])
    core = MapCore(images, points, np.zeros(5), [0, 1, 2, 3, 4], [1, 1, 1, 1, 2], np.zeros((5, 2)))
    selection = LandmarkSelection(np.arange(5), points, np.zeros(5))
    depth = np.full((150, 200), 5.0)
    depth[:, :75] = 0.0  # no surface on the left of the image (world x > 1.25 m on the wall)
    labels = visibility_labels(core, selection, lambda i: depth if i == 0 else None, VisibilityConfig())
    assert labels[0].tolist() == [VISIBLE, INVISIBLE, UNKNOWN, INVISIBLE, INVISIBLE]
    # observed landmarks are visible; without a depth map, the others inside the image are unknown
    assert labels[2, 4] == VISIBLE
    assert labels[1, :3].tolist() == [VISIBLE] * 3
    assert labels[2, 0] == UNKNOWN
    # a looser facing angle does not make the landmark seen from behind visible, a depth mismatch stays invisible
    loose = visibility_labels(core, selection, lambda i: depth if i == 0 else None, VisibilityConfig(max_facing_angle_deg=100))
    assert loose[0, 4] == INVISIBLE and loose[0, 1] == INVISIBLE
