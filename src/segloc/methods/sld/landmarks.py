"""Scene landmarks of the SLD* method: which triangulated points become landmarks, and where each is visible.

**Selection** (:func:`select_landmarks`, as the SLD code does it). Candidates are the core's
triangulated points with long tracks (at least ``min_track_length`` observations). Each gets a
saliency score::

    min(1, std / mean of its depth over the observations)      # seen from near and far
    + 0.25 log2(track length)                                   # seen often
    + sessions seen / all sessions                              # seen in every session
    + angular span of the viewing rays                          # seen from many directions (radians)

where the angular span is ``arccos(1 - 2 lambda_min / lambda_max)`` of the smallest and largest
eigenvalues of the mean of ``I - b b^T`` over the unit viewing rays ``b``: 0 for parallel rays,
the angle between them for two rays, 90 degrees for rays all around a circle. A session is the first folder
of the image name (``day/0001.png``); images without a folder are one session. Candidates whose
mean depth exceeds ``max_mean_depth`` or whose span is below ``min_angular_span_deg`` are dropped.
The landmarks are then spread over the scene greedily: in order of decreasing score a candidate
is kept when it is at least ``d`` from every landmark kept so far; ``d`` starts at
``initial_distance`` and halves after each pass over the candidates until ``num_landmarks`` are
kept (or ``d`` is below ``min_distance``, when the best remaining candidates fill up the set).

**Scale.** The SLD thresholds are metres in indoor scenes (a room a few metres across, seen from
1 to 4 m). Here the distances are fractions of the map's :class:`~segloc.maps.scale.MapScale`
(``max_mean_depth = max_mean_depth_factor x scene_depth``, ``initial_distance =
initial_distance_factor x extent``), so that a castle façade seen from 20 m and a room seen from
2 m get the same treatment.

**Few long tracks** (Strecha's castle: 30 images, most points seen 2 to 4 times). When fewer
than ``num_landmarks`` points pass the track-length and filter tests, the selection relaxes
in steps: the minimum track length falls to 3, then 2, and then the depth and span filters are
dropped; the score still ranks the candidates, so the longest, widest-seen tracks come first.
The selection records which step it used (``LandmarkSelection.relaxation``). A map with fewer
triangulated points than ``num_landmarks`` gets them all.

**Visibility labels** (:func:`visibility_labels`): for each mapping image and landmark, 1
(visible), 0 (not visible) or -1 (unknown, masked out of the training loss). A landmark observed
in the image is visible. Otherwise, one outside the image (or behind the camera) is not
visible; one inside the image is checked against the image's depth map (the synthetic scenes'
``depth/`` images): visible when its depth agrees with the depth map within the tolerance and
its surface faces the camera (the angle between the camera and the mean direction it was
observed from is at most ``max_facing_angle_deg``), not visible when something is in front of
it (occluded) or it faces away, and unknown when the depth map has no surface there or the
landmark lies in front of the surface (a triangulation error). Without a depth map, every
unobserved landmark inside the image is unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.maps.core import MapCore
from segloc.maps.scale import map_scale

logger = logging.getLogger("segloc")

VISIBLE, INVISIBLE, UNKNOWN = 1, 0, -1


@dataclass
class LandmarkConfig:
    """Options of :func:`select_landmarks` (the ``landmarks:`` section of the ``sld`` map and training configs).

    Attributes:
        num_landmarks: landmarks to select (L; the paper uses 100 to 1000).
        min_track_length: observations a candidate needs (relaxed down to 2 in scenes with few long tracks).
        max_mean_depth_factor: candidates farther on average than this times the map's scene depth are dropped.
        min_angular_span_deg: candidates seen over a smaller angular span are dropped.
        initial_distance_factor: the greedy spread's first minimum distance, as a fraction of the map's extent.
        min_distance_factor: the spread stops halving below this fraction of the extent.
    """

    num_landmarks: int = option(300, ge=1)
    min_track_length: int = option(5, ge=2)
    max_mean_depth_factor: float = option(3.0, gt=0)
    min_angular_span_deg: float = option(2.0, ge=0, lt=180)
    initial_distance_factor: float = option(0.5, gt=0)
    min_distance_factor: float = option(1e-4, gt=0)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class LandmarkSelection:
    """The selected landmarks.

    Attributes:
        point_ids: (L,) int64 core point id of each landmark, in selection order.
        positions: (L, 3) float64 world positions, metres.
        scores: (L,) float64 saliency scores.
        relaxation: the fallback step that was needed: ``"none"``, ``"track_length_3"``,
            ``"track_length_2"`` or ``"no_filters"``.
    """

    point_ids: np.ndarray
    positions: np.ndarray
    scores: np.ndarray
    relaxation: str = "none"


@dataclass
class TrackGeometry:
    """Per-point statistics of the observations (all arrays (P,)).

    Attributes:
        track_length: observations of each point.
        mean_depth, depth_std: depth along the optical axis over the observations.
        angular_span: radians, ``arccos(1 - 2 lambda_min / lambda_max)`` (see the module docstring).
        sessions: fraction of the map's sessions that observe the point.
        normals: (P, 3) mean unit direction from the point to its observing cameras (zero without observations).
    """

    track_length: np.ndarray
    mean_depth: np.ndarray
    depth_std: np.ndarray
    angular_span: np.ndarray
    sessions: np.ndarray
    normals: np.ndarray

    def saliency(self) -> np.ndarray:
        """(P,) the SLD saliency score of each point."""
        with np.errstate(divide="ignore", invalid="ignore"):
            relative_std = np.where(self.mean_depth > 0, self.depth_std / self.mean_depth, 0.0)
            length = np.log2(np.maximum(self.track_length, 1))
        return np.minimum(1.0, relative_std) + 0.25 * length + self.sessions + self.angular_span


def image_session(name: str) -> str:
    """The session of a mapping image: the first folder of its name, '' for names without one."""
    return name.split("/", 1)[0] if "/" in name else ""


def track_geometry(core: MapCore) -> TrackGeometry:
    """The per-point statistics the saliency score and the filters use."""
    num_points = core.num_points
    point_ids, image_ids = core.observation_point_ids.astype(np.int64), core.observation_image_ids.astype(np.int64)
    rotations = np.stack([image.cam_from_world.rotation for image in core.images])
    translations = np.stack([image.cam_from_world.translation for image in core.images])
    centers = np.stack([image.cam_from_world.center for image in core.images])
    points = core.points3D[point_ids]
    depth = np.einsum("ij,ij->i", rotations[image_ids, 2], points) + translations[image_ids, 2]
    counts = np.bincount(point_ids, minlength=num_points).astype(np.float64)
    safe = np.maximum(counts, 1)
    mean_depth = np.bincount(point_ids, depth, num_points) / safe
    depth_std = np.sqrt(np.maximum(np.bincount(point_ids, depth**2, num_points) / safe - mean_depth**2, 0.0))

    rays = points - centers[image_ids]
    rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-12)
    outer = np.zeros((num_points, 3, 3))
    np.add.at(outer, point_ids, rays[:, :, None] * rays[:, None, :])
    scatter = np.eye(3)[None] - outer / safe[:, None, None]  # mean of (I - b b^T)
    eigenvalues = np.linalg.eigvalsh(scatter)  # ascending
    lambda_min, lambda_max = eigenvalues[:, 0], eigenvalues[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lambda_max > 1e-12, lambda_min / lambda_max, 0.0)
    angular_span = np.arccos(np.clip(1.0 - 2.0 * ratio, -1.0, 1.0))
    angular_span[counts == 0] = 0.0

    normals = np.zeros((num_points, 3))
    np.add.at(normals, point_ids, -rays)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)

    names = sorted({image_session(image.name) for image in core.images})
    session_of_image = np.array([names.index(image_session(image.name)) for image in core.images], np.int64)
    seen = np.zeros((num_points, len(names)), bool)
    seen[point_ids, session_of_image[image_ids]] = True
    return TrackGeometry(counts.astype(np.int64), mean_depth, depth_std, angular_span, seen.sum(1) / len(names), normals)


def spread_greedily(positions: np.ndarray, order: np.ndarray, count: int, initial_distance: float, min_distance: float) -> np.ndarray:
    """Pick ``count`` of ``positions`` (P, 3) in ``order`` (best first), spread out by a halving minimum distance.

    Each pass walks ``order`` and keeps a candidate at least ``d`` from every kept one; ``d``
    starts at ``initial_distance`` and halves after each pass. Below ``min_distance`` the best
    remaining candidates fill up the set.

    Returns:
        (min(count, len(order)),) int64 indices into ``positions``, in the order they were kept.
    """
    order = np.asarray(order, dtype=np.int64)
    count = min(count, len(order))
    chosen: list[int] = []
    taken = np.zeros(len(positions), bool)
    distance = float(initial_distance)
    while len(chosen) < count and distance >= min_distance:
        for index in order:
            if taken[index]:
                continue
            if chosen and np.min(np.linalg.norm(positions[chosen] - positions[index], axis=1)) < distance:
                continue
            chosen.append(int(index))
            taken[index] = True
            if len(chosen) == count:
                break
        distance /= 2.0
    for index in order:  # spacing below min_distance: the best of the rest
        if len(chosen) == count:
            break
        if not taken[index]:
            chosen.append(int(index))
            taken[index] = True
    return np.asarray(chosen, dtype=np.int64)


def select_landmarks(core: MapCore, config: LandmarkConfig | None = None) -> LandmarkSelection:
    """Select the scene landmarks of a map core (see the module docstring).

    Raises:
        SeglocError: the core has no triangulated point observed twice.
    """
    config = config or LandmarkConfig()
    geometry = track_geometry(core)
    scale = map_scale(core)
    scene_depth = scale.scene_depth or scale.extent
    scores = geometry.saliency()
    depth_ok = (geometry.mean_depth > 0) & (geometry.mean_depth <= config.max_mean_depth_factor * scene_depth)
    span_ok = geometry.angular_span >= np.radians(config.min_angular_span_deg)
    steps = [
        ("none", (geometry.track_length >= config.min_track_length) & depth_ok & span_ok),
        ("track_length_3", (geometry.track_length >= min(3, config.min_track_length)) & depth_ok & span_ok),
        ("track_length_2", (geometry.track_length >= 2) & depth_ok & span_ok),
        ("no_filters", geometry.track_length >= 2),
    ]
    relaxation, candidates = steps[-1]
    for name, mask in steps:
        if mask.sum() >= config.num_landmarks:
            relaxation, candidates = name, mask
            break
    candidate_ids = np.flatnonzero(candidates)
    if len(candidate_ids) == 0:
        raise SeglocError(f"no triangulated point is observed twice among the map's {core.num_points} points: no landmark to select")
    if relaxation != "none":
        logger.info(
            "landmark selection: %d points with tracks >= %d pass the filters, fewer than %d; relaxed to %r (%d candidates)",
            int(steps[0][1].sum()),
            config.min_track_length,
            config.num_landmarks,
            relaxation,
            len(candidate_ids),
        )
    order = candidate_ids[np.argsort(-scores[candidate_ids], kind="stable")]
    chosen = spread_greedily(
        core.points3D,
        order,
        config.num_landmarks,
        config.initial_distance_factor * scale.extent,
        config.min_distance_factor * scale.extent,
    )
    if len(chosen) < config.num_landmarks:
        logger.warning("landmark selection: only %d candidates for %d landmarks", len(chosen), config.num_landmarks)
    return LandmarkSelection(chosen, core.points3D[chosen].copy(), scores[chosen], relaxation)


@dataclass
class VisibilityConfig:
    """Options of :func:`visibility_labels` (the ``visibility:`` section of the training config).

    Attributes:
        depth_tolerance_relative: depths agree within this fraction of the landmark's depth ...
        depth_tolerance_min: ... or within this many metres, whichever is larger.
        max_facing_angle_deg: a landmark faces a camera when the angle between the camera's
            direction and the landmark's normal (the mean direction it was observed from) is at most this.
        border_px: landmarks this close to the image border (or outside) are not visible.
    """

    depth_tolerance_relative: float = option(0.05, ge=0)
    depth_tolerance_min: float = option(0.03, ge=0)
    max_facing_angle_deg: float = option(80.0, gt=0, le=180)
    border_px: float = option(0.0, ge=0)

    def __post_init__(self) -> None:
        check_options(self)


def visibility_labels(
    core: MapCore,
    selection: LandmarkSelection,
    depth_of: Callable[[int], np.ndarray | None] | None = None,
    config: VisibilityConfig | None = None,
) -> np.ndarray:
    """Visibility of each landmark in each mapping image (see the module docstring).

    Args:
        core: the map core the landmarks were selected from.
        selection: the landmarks.
        depth_of: image id -> (H, W) float depth map in metres at the image's camera size (0:
            no surface), or None when the image has none; None: no depth at all.
        config: tolerances.

    Returns:
        (I, L) int8 labels: 1 visible, 0 not visible, -1 unknown.
    """
    config = config or VisibilityConfig()
    geometry_normals = track_geometry(core).normals[selection.point_ids]
    labels = np.full((len(core.images), len(selection.point_ids)), INVISIBLE, np.int8)
    landmark_index = np.full(core.num_points, -1, np.int64)
    landmark_index[selection.point_ids] = np.arange(len(selection.point_ids))
    cos_facing = np.cos(np.radians(config.max_facing_angle_deg))
    for image_id, image in enumerate(core.images):
        camera, pose = image.camera, image.cam_from_world
        points2D, depth, inside = camera.world_to_image(pose, selection.positions)
        border = config.border_px
        with np.errstate(invalid="ignore"):
            inside &= (
                (points2D[:, 0] >= border)
                & (points2D[:, 1] >= border)
                & (points2D[:, 0] <= camera.width - border)
                & (points2D[:, 1] <= camera.height - border)
            )
        row = labels[image_id]
        depth_map = depth_of(image_id) if depth_of is not None else None
        if depth_map is None:
            row[inside] = UNKNOWN
        else:
            if depth_map.shape != (camera.height, camera.width):
                raise SeglocError(f"depth map of {image.name} is {depth_map.shape}, the camera is {camera.width}x{camera.height}")
            index = np.flatnonzero(inside)
            columns = np.clip(np.floor(points2D[index, 0]).astype(np.int64), 0, camera.width - 1)
            rows = np.clip(np.floor(points2D[index, 1]).astype(np.int64), 0, camera.height - 1)
            surface = depth_map[rows, columns].astype(np.float64)
            tolerance = np.maximum(config.depth_tolerance_relative * depth[index], config.depth_tolerance_min)
            to_camera = pose.center - selection.positions[index]
            to_camera /= np.maximum(np.linalg.norm(to_camera, axis=1, keepdims=True), 1e-12)
            facing = np.einsum("ij,ij->i", to_camera, geometry_normals[index]) >= cos_facing
            agrees = np.abs(depth[index] - surface) <= tolerance
            occluded = depth[index] > surface + tolerance
            value = np.full(len(index), UNKNOWN, np.int8)  # no surface, or the landmark in front of it
            value[(surface > 0) & agrees & facing] = VISIBLE
            value[(surface > 0) & agrees & ~facing] = INVISIBLE
            value[(surface > 0) & occluded] = INVISIBLE
            row[index] = value
        observed = landmark_index[core.observation_point_ids[core.observation_image_ids == image_id]]
        row[observed[observed >= 0]] = VISIBLE
    return labels
