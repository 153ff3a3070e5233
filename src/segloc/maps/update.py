"""Incremental map updates: a new recording (mapping images with poses) added to an existing map.

:func:`update_map` writes a new map package (the input map is never touched):

1. **Core** (:func:`update_core`): SIFT of the new images only, pairs among the new images from
   their poses, matching with geometric verification and triangulation with the poses fixed
   (the core build's own steps, :mod:`segloc.maps.build`). The map holds no keypoints of the old
   images (only observation pixels; a privacy-preserving map no appearance at all), so new and
   old sessions are tied together by geometry: in each new image the old points are projected
   and compared with the observations of the newly triangulated points.

   - **Merge**: a new point observed within ``match_radius_px`` of an old point's projection,
     at a depth within ``depth_tolerance`` (relative) of it, in at least one new image, is that
     old point: its new observations join the old point's track (the old position is kept).
   - **Retire**: an old point is *expected* in a new image when it projects inside it (at least
     ``border_px`` from the edge), in front of it, at a distance within
     [``min_distance_ratio`` x nearest, ``max_distance_ratio`` x farthest] of the distances it
     was observed from, along a ray within ``max_view_angle_deg`` of a ray it was observed
     along, and when the new session mapped that part of the image (a new observation within
     ``coverage_radius_px`` of the projection). A point expected in at least
     ``retire_min_expected`` new images and matched in none, around which (projecting within
     ``neighborhood_px`` of it) at most ``max_neighborhood_matched`` of the old points were
     matched in those images (on average), is retired: the place changed there (a poster replaced,
     furniture moved), not just this one point's detection. Occlusion is not modelled: a point hidden by
     moved furniture in every new view is retired too.
   - **Add**: new points that merged with no old point are added.

2. **Layers**: the map's method brings its layers up to date through its registry hook
   (:meth:`segloc.methods.registry.Method.update_layers`: descriptors of the new observations,
   labels of the new points, retrieval descriptors of the new images, ...); the ``sfrs`` layer a
   map of any method may carry gets the new images' descriptors from the map's network
   (:func:`segloc.maps.sfrs.update_sfrs_layer`). Networks are never retrained. Every layer that
   refers to the core is checked to have been rewritten for the new one.

New images are named ``<prefix><name>`` in the map (default prefix ``updateN/``, N the number of
updates the map has had plus one), so that two recordings with the same file names can live
in one map.

The recording's mapping poses are in the map's frame (``poses: map``, the default), or they are
odometry (``poses: odometry``: a drifting frame with its own origin and scale, e.g. a visual
odometry's): then the images are first localized against the current map with its own method
and the odometry is brought into the map's frame by a robust, windowed Sim(3) fit
(:mod:`segloc.maps.register`); the update goes on with the registered poses, and the report's
``registration`` holds the counts (localized, inliers), the scale and the residuals.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc.config import check_options, config_from_dict, config_to_dict, option
from segloc.data.dataset import Dataset, ImageRecord, read_dataset
from segloc.errors import SeglocError
from segloc.features.sift import LocalFeatures
from segloc.maps.build import CoreConfig, extract_mapping_features, match_pairs, select_pairs, triangulate
from segloc.maps.core import MapCore, core_checksum, read_core, write_core
from segloc.maps.package import MapPackage, MapWriter, check_map_output
from segloc.maps.parallel import BuildExecution
from segloc.maps.register import RegisterConfig, register_recording

logger = logging.getLogger("segloc")

__all__ = ["POSE_SOURCES", "CoreUpdate", "UpdateConfig", "update_core", "update_map"]

#: What a recording's mapping poses may be: in the map's frame, or odometry to register first.
POSE_SOURCES = ("map", "odometry")


@dataclass
class UpdateConfig:
    """Options of :func:`update_map` (the rules are in the module docstring).

    Attributes:
        match_radius_px: a new observation this close to an old point's projection ...
        depth_tolerance: ... at a depth within this fraction of the old point's is that point.
        coverage_radius_px: an old point counts as expected in a new image only if a new
            observation lies this close to its projection (the new session mapped that area).
        border_px: ... and if it projects at least this far inside the image.
        max_view_angle_deg: ... and if the new ray is within this angle of a ray it was seen along.
        min_distance_ratio, max_distance_ratio: ... and if the new camera is within
            [min x nearest, max x farthest] of the distances it was seen from.
        retire_min_expected: an old point expected in at least this many new images and
            matched in none is retired (0 retires nothing) ...
        neighborhood_px, max_neighborhood_matched: ... when, on average over those images, at
            most this share of the old points projecting within ``neighborhood_px`` of it were
            matched: the area around it changed too. A point missed alone in an
            unchanged area (not triangulated again by the new session) is kept.
        prefix: prefix of the new images' names in the map; None: ``updateN/``.
        poses: what the recording's mapping poses are: ``map`` (in the map's frame) or
            ``odometry`` (registered first, :mod:`segloc.maps.register`).
        register: the registration's options (``poses: odometry``).
    """

    match_radius_px: float = option(3.0, gt=0)
    depth_tolerance: float = option(0.05, gt=0, lt=1)
    coverage_radius_px: float = option(20.0, gt=0)
    border_px: float = option(8.0, ge=0)
    max_view_angle_deg: float = option(45.0, gt=0, le=180)
    min_distance_ratio: float = option(0.5, gt=0, le=1)
    max_distance_ratio: float = option(2.0, ge=1)
    retire_min_expected: int = option(3, ge=0, note="0: retire nothing")
    neighborhood_px: float = option(15.0, gt=0)
    max_neighborhood_matched: float = option(0.5, ge=0, le=1)
    prefix: str | None = None
    poses: str = "map"
    register: RegisterConfig = field(default_factory=RegisterConfig)

    def __post_init__(self) -> None:
        if isinstance(self.register, dict):
            self.register = config_from_dict(RegisterConfig, self.register, "update.register")
        check_options(self, "update")
        if self.poses not in POSE_SOURCES:
            raise SeglocError(f"update.poses must be one of {', '.join(POSE_SOURCES)}, got {self.poses!r}")
        if self.prefix is not None and (self.prefix.startswith("/") or ".." in self.prefix.split("/")):
            raise SeglocError(f"update prefix {self.prefix!r} must be a relative name (e.g. 'rec2/')")


@dataclass
class CoreUpdate:
    """The updated core and where each of its parts came from (what :meth:`Method.update_layers` works from).

    Attributes:
        core: the updated core: the old images, then the new ones; the kept old points (old
            order), then the added points.
        old_core: the core of the input map.
        recording: the new recording (its images are read by their names there).
        prefix: what the new images' names in ``core`` start with.
        features: SIFT features of each new image (``core.images[num_old_images:]`` order);
            empty when no point was triangulated (:attr:`segloc.methods.registry.Method.update_points`).
        point_old_ids: (P,) int64 old point id of each point, -1 for an added point.
        observation_old_ids: (M,) int64 old observation index of each observation, -1 for a new one.
        observation_keypoint_ids: (M,) int64 keypoint index of each new observation in its
            image's ``features``, -1 for an old one.
        retired_point_ids: (R,) int64 old point ids that were retired.
        statistics: counts and seconds per step, for the manifest.
    """

    core: MapCore
    old_core: MapCore
    recording: Dataset
    prefix: str
    features: list[LocalFeatures]
    point_old_ids: np.ndarray
    observation_old_ids: np.ndarray
    observation_keypoint_ids: np.ndarray
    retired_point_ids: np.ndarray
    statistics: dict[str, Any] = field(default_factory=dict)

    @property
    def num_old_images(self) -> int:
        return len(self.old_core.images)

    @property
    def new_images(self) -> list[ImageRecord]:
        """The new images as named in the map."""
        return self.core.images[self.num_old_images :]

    @property
    def new_observations(self) -> np.ndarray:
        """(M,) bool: the observations in the new images."""
        return self.observation_old_ids < 0

    def load_image(self, name: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB of a new image, by its name in the map."""
        if not name.startswith(self.prefix):
            raise SeglocError(f"{name} is not an image of the update (its names start with {self.prefix!r})")
        return self.recording.load_image(name[len(self.prefix) :])

    def observation_values(self, old_values: np.ndarray, per_new_image: list[np.ndarray]) -> np.ndarray:
        """(M, D) rows per observation: old observations' rows from ``old_values`` (M_old, D), new ones from per-keypoint arrays.

        Args:
            old_values: (M_old, D) rows of the old core's observations (e.g. stored descriptors).
            per_new_image: per new image, (N_j, D) rows of its keypoints (``features`` order).
        """
        old_values = np.asarray(old_values)
        values = np.empty((self.core.num_observations, *old_values.shape[1:]), old_values.dtype)
        old = ~self.new_observations
        values[old] = old_values[self.observation_old_ids[old]]
        for index, image_values in enumerate(per_new_image):
            mask = self.new_observations & (self.core.observation_image_ids == self.num_old_images + index)
            values[mask] = np.asarray(image_values)[self.observation_keypoint_ids[mask]]
        return values


# --- the core ---------------------------------------------------------------------------


def _prefixed(records: list[ImageRecord], prefix: str, old: MapCore) -> list[ImageRecord]:
    renamed = [ImageRecord(prefix + r.name, r.cam_from_world, r.camera, r.timestamp) for r in records]
    clash = sorted({r.name for r in renamed} & {image.name for image in old.images})
    if clash:
        raise SeglocError(f"the map has images named like the new recording's ({', '.join(clash[:3])}...); pass another prefix (--prefix)")
    return renamed


def append_images(old: MapCore, recording: Dataset, prefix: str) -> CoreUpdate:
    """The old core with the recording's images added and no point changed (for maps whose points are not triangulated, e.g. SLD's landmarks)."""
    start = time.perf_counter()
    records = _prefixed(recording.mapping, prefix, old)
    core = MapCore(
        old.images + records, old.points3D, old.point_errors, old.observation_point_ids, old.observation_image_ids, old.observation_xy
    )
    statistics = {"num_new_images": len(records), "points_triangulated": False, "seconds": {"core": time.perf_counter() - start}}
    return CoreUpdate(
        core,
        old,
        recording,
        prefix,
        [],
        np.arange(old.num_points, dtype=np.int64),
        np.arange(old.num_observations, dtype=np.int64),
        np.full(old.num_observations, -1, np.int64),
        np.zeros(0, np.int64),
        statistics,
    )


def _observed_rays(old: MapCore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rays (M_old, 3) from each old observation's camera to its point, and each point's nearest and farthest observing distance (P,)."""
    centers = np.stack([image.cam_from_world.center for image in old.images])
    rays = old.points3D[old.observation_point_ids] - centers[old.observation_image_ids]
    distances = np.linalg.norm(rays, axis=1)
    nearest = np.full(old.num_points, np.inf)
    farthest = np.zeros(old.num_points)
    np.minimum.at(nearest, old.observation_point_ids, distances)
    np.maximum.at(farthest, old.observation_point_ids, distances)
    return rays / np.maximum(distances, 1e-12)[:, None], nearest, farthest


def associate(old: MapCore, new: MapCore, config: UpdateConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tie the points triangulated from the new images to the old points (module docstring: merge and retire rules).

    Args:
        old: the map's core.
        new: the core triangulated from the new images alone.
        config: the rules' thresholds.

    Returns:
        merged_into (P_new,) int64: the old point each new point is, or -1; expected (P_old,)
        and matched (P_old,) int64: in how many new images each old point was expected and
        matched; neighborhood (P_old,) float64: the mean, over the images it was expected in,
        of the share of the old points projecting around it that were matched there.
    """
    from scipy.spatial import cKDTree

    rays, nearest, farthest = _observed_rays(old)
    max_cos = np.cos(np.radians(config.max_view_angle_deg))
    expected = np.zeros(old.num_points, np.int64)
    matched = np.zeros(old.num_points, np.int64)
    pairs: list[np.ndarray] = []  # (new point, old point) per match
    matched_here = np.zeros(old.num_points, bool)
    neighborhood = np.zeros(old.num_points)  # sum over expected images of the share of re-observed points around
    for image_id, image in enumerate(new.images):
        observations = np.flatnonzero(new.observation_image_ids == image_id)
        pose, camera = image.cam_from_world, image.camera
        uv, depth, visible = camera.world_to_image(pose, old.points3D)
        if not len(observations) or not visible.any():
            continue
        shown = np.flatnonzero(visible)
        old_tree = cKDTree(uv[shown])
        # Matches: each new observation and the nearest visible old point projecting within the radius at its depth.
        new_depth = pose.transform_points(new.points3D[new.observation_point_ids[observations]])[:, 2]
        for k, hits in enumerate(old_tree.query_ball_point(new.observation_xy[observations], r=config.match_radius_px)):
            if not hits:
                continue
            old_ids = shown[np.asarray(hits)]
            agree = np.abs(depth[old_ids] - new_depth[k]) <= config.depth_tolerance * depth[old_ids]
            if np.any(agree):
                best = old_ids[agree][np.argmin(np.linalg.norm(uv[old_ids[agree]] - new.observation_xy[observations[k]], axis=1))]
                pairs.append(np.array([new.observation_point_ids[observations[k]], best]))
                matched_here[old_ids[agree]] = True  # every old point re-observed here counts as matched
        matched += matched_here
        # Expected: inside the image, in the distance range and the viewing directions it was seen from, in a mapped area.
        offsets = old.points3D - pose.center
        distance = np.linalg.norm(offsets, axis=1)
        b = config.border_px
        with np.errstate(invalid="ignore"):
            inside = visible & (uv[:, 0] >= b) & (uv[:, 0] <= camera.width - b) & (uv[:, 1] >= b) & (uv[:, 1] <= camera.height - b)
        inside &= (distance >= config.min_distance_ratio * nearest) & (distance <= config.max_distance_ratio * farthest)
        candidates = np.flatnonzero(inside)
        if not len(candidates):
            matched_here[:] = False
            continue
        unit = offsets / np.maximum(distance, 1e-12)[:, None]
        cosines = np.full(old.num_points, -1.0)
        np.maximum.at(cosines, old.observation_point_ids, np.sum(rays * unit[old.observation_point_ids], axis=1))
        candidates = candidates[cosines[candidates] >= max_cos]
        gap, _ = cKDTree(new.observation_xy[observations]).query(uv[candidates], k=1, distance_upper_bound=config.coverage_radius_px)
        candidates = candidates[np.isfinite(gap)]
        expected[candidates] += 1
        # The share of the old points projecting around each candidate that were re-observed in this image.
        around = old_tree.query_ball_point(uv[candidates], r=config.neighborhood_px, return_length=True)
        rematched = shown[matched_here[shown]]
        if len(rematched):
            around_matched = cKDTree(uv[rematched]).query_ball_point(uv[candidates], r=config.neighborhood_px, return_length=True)
            neighborhood[candidates] += around_matched / np.maximum(around, 1)
        matched_here[:] = False
    merged_into = np.full(new.num_points, -1, np.int64)
    if pairs:
        votes, counts = np.unique(np.stack(pairs), axis=0, return_counts=True)
        # Per new point, the old point it matched in the most images (ties: the lower id).
        order = np.lexsort((votes[:, 1], -counts, votes[:, 0]))
        votes = votes[order]
        first = np.concatenate([[True], votes[1:, 0] != votes[:-1, 0]])
        merged_into[votes[first, 0]] = votes[first, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        neighborhood = np.where(expected > 0, neighborhood / expected, 0.0)
    return merged_into, expected, matched, neighborhood


def update_core(
    old: MapCore,
    recording: Dataset,
    core_config: CoreConfig,
    config: UpdateConfig,
    prefix: str,
    progress: bool = True,
    execution: BuildExecution | None = None,
) -> CoreUpdate:
    """Add the recording's mapping images to ``old``: triangulate them, merge, retire, add (module docstring).

    Args:
        old: the map's core.
        recording: the new recording (mapping images with poses in the map's frame).
        core_config: the options the map's core was built with (SIFT, matching, triangulation).
        config: the merge and retire rules.
        prefix: prefix of the new images' names in the map.
        progress: show progress bars.
        execution: parallel extraction and matching (:mod:`segloc.maps.parallel`).

    Raises:
        SeglocError: names that clash with the map's, no image, or too little overlap to triangulate.
    """
    records = _prefixed(recording.mapping, prefix, old)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    features = extract_mapping_features(recording, core_config.sift, progress, execution)
    seconds["extract"] = time.perf_counter() - start
    start = time.perf_counter()
    pairs = select_pairs(recording.mapping, core_config.pairs)
    matches = match_pairs(recording.mapping, features, pairs, core_config.matcher, core_config.triangulation, progress, execution)
    seconds["match"] = time.perf_counter() - start
    start = time.perf_counter()
    new, keypoint_ids = triangulate(recording.mapping, features, matches, core_config.triangulation, recording.image_dir)
    seconds["triangulate"] = time.perf_counter() - start

    start = time.perf_counter()
    merged_into, expected, matched, neighborhood = associate(old, new, config)
    retired = (expected >= max(1, config.retire_min_expected)) & (matched == 0) & (neighborhood <= config.max_neighborhood_matched)
    if not config.retire_min_expected:
        retired[:] = False
    kept = np.flatnonzero(~retired)
    old_to_kept = np.full(old.num_points, -1, np.int64)
    old_to_kept[kept] = np.arange(len(kept))
    added = np.flatnonzero(merged_into < 0)
    new_to_final = np.where(merged_into >= 0, old_to_kept[np.maximum(merged_into, 0)], -1)
    new_to_final[added] = len(kept) + np.arange(len(added))

    old_obs = np.flatnonzero(~retired[old.observation_point_ids])
    point_ids = np.concatenate([old_to_kept[old.observation_point_ids[old_obs]], new_to_final[new.observation_point_ids]])
    image_ids = np.concatenate([old.observation_image_ids[old_obs], new.observation_image_ids + len(old.images)])
    xy = np.concatenate([old.observation_xy[old_obs], new.observation_xy])
    old_ids = np.concatenate([old_obs, np.full(new.num_observations, -1)]).astype(np.int64)
    keypoints = np.concatenate([np.full(len(old_obs), -1), keypoint_ids]).astype(np.int64)
    # Two new points merged into one old point may both be seen in one image: keep one observation.
    _, unique = np.unique(np.stack([point_ids, image_ids], axis=1), axis=0, return_index=True)
    unique = np.sort(unique)
    order = unique[np.lexsort((point_ids[unique], image_ids[unique]))]  # by image, then point, as the core build
    core = MapCore(
        old.images + records,
        np.concatenate([old.points3D[kept], new.points3D[added]]),
        np.concatenate([old.point_errors[kept], new.point_errors[added]]),
        point_ids[order],
        image_ids[order],
        xy[order],
    )
    seconds["associate"] = time.perf_counter() - start
    statistics = {
        "num_new_images": len(records),
        "points_triangulated": True,
        "new_points_triangulated": new.num_points,
        "points_merged": int(np.sum(merged_into >= 0)),
        "points_added": len(added),
        "old_points_expected": int(np.sum(expected >= max(1, config.retire_min_expected))),
        "old_points_matched": int(np.sum(matched > 0)),
        "points_retired": int(retired.sum()),
        "num_points": core.num_points,
        "num_observations": core.num_observations,
        "num_verified_pairs": len(matches),
        "seconds": seconds,
    }
    logger.info(
        "update: %d new images, %d new points (%d merged with old ones, %d added), %d of %d old points retired",
        len(records),
        new.num_points,
        statistics["points_merged"],
        len(added),
        int(retired.sum()),
        old.num_points,
    )
    return CoreUpdate(
        core,
        old,
        recording,
        prefix,
        features,
        np.concatenate([kept, np.full(len(added), -1)]).astype(np.int64),
        old_ids[order],
        keypoints[order],
        np.flatnonzero(retired).astype(np.int64),
        statistics,
    )


# --- the map ----------------------------------------------------------------------------


def _read_recording(path: str | Path) -> Dataset:
    path = Path(path)
    if not (path / "mapping.txt").is_file():
        raise SeglocError(
            f"{path} is not a recording with poses: it has no mapping.txt (image name, cam_from_world pose, camera per line). "
            "A recording with odometry poses goes in the same file, with --poses odometry"
        )
    recording = read_dataset(path)
    if not recording.mapping:
        raise SeglocError(f"{path}: mapping.txt lists no images with poses; an update needs mapping images with poses")
    return recording


def _stale_layers(writer: MapWriter) -> list[str]:
    """Layers of a map being written whose ``meta.json`` refers to another core than the one written."""
    checksum = core_checksum(writer.manifest["files"])
    stale = []
    for layer, info in writer.manifest["layers"].items():
        if f"{layer}/meta.json" in info["files"]:
            meta = writer.read_json(layer, "meta")
            if isinstance(meta, dict) and "core_points_sha256" in meta and meta["core_points_sha256"] != checksum:
                stale.append(layer)
    return stale


def update_map(
    map_path: str | Path,
    recording_path: str | Path,
    output: str | Path,
    config: UpdateConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    execution: BuildExecution | None = None,
    localize: dict[str, Any] | Any | None = None,
) -> dict[str, Any]:
    """Write ``output``: the map at ``map_path`` updated with the recording at ``recording_path`` (module docstring).

    Args:
        map_path: the current map (read only).
        recording_path: a dataset folder whose mapping images have poses in the map's frame
            (or in an odometry frame, with ``config.poses`` ``odometry``).
        output: the new map package folder (written atomically; never the input map).
        config: merge / retire rules and the new images' prefix.
        overwrite: replace an existing package at ``output``.
        progress: show progress bars.
        execution: parallel extraction and matching (:mod:`segloc.maps.parallel`).
        localize: the method's ``localize:`` options for registering odometry poses (None: defaults).

    Returns:
        The update's report (also in the new map's manifest, ``metadata.update``): counts and
        seconds per step; with odometry poses also ``registration``
        (:attr:`segloc.maps.register.Registration.statistics`).

    Raises:
        SeglocError: ``output`` is the input map or exists, a recording without poses, a
            method without an update hook, odometry that does not register (too few images
            localized or inliers), or anything wrong in the core update.
    """
    from segloc.maps.sfrs import SFRS_LAYER, update_sfrs_layer
    from segloc.methods.registry import get_method

    config = config or UpdateConfig()
    start = time.perf_counter()
    map_path, output = Path(map_path), Path(output)
    if output.resolve() == map_path.resolve():
        raise SeglocError(f"the updated map must go to a new folder, not the input map {map_path}: choose another -o")
    package = MapPackage.open(map_path)
    recording = _read_recording(recording_path)
    check_map_output(output, overwrite, [(package.path, "the input map"), *recording.inputs()])
    method = get_method(package.method)
    method.check_updatable()
    created = package.manifest.get("created", {})
    map_config = method.map_config(created.get("config") or {})
    updates = list(created.get("updates") or [])
    prefix = config.prefix if config.prefix is not None else f"update{len(updates) + 1}/"
    old = read_core(package)
    registration = None
    if config.poses == "odometry":
        registration = register_recording(package, recording, config.register, localize, progress)
        recording = registration.dataset(recording)
    if method.update_points:
        update = update_core(old, recording, method.core_config(map_config), config, prefix, progress, execution)
    else:
        update = append_images(old, recording, prefix)
    logger.info("updating %s map %s with %d images of %s", package.method, package.path, len(recording.mapping), recording.root)
    entry = {
        "recording": str(recording.root.resolve()),
        "prefix": prefix,
        "options": config_to_dict(config),
        "parent": {"path": str(package.path.resolve()), "core_points_sha256": core_checksum(package.manifest["files"])},
    }
    new_created = {key: value for key, value in created.items() if key in ("source", "config")}
    new_created["updates"] = [*updates, entry]
    with MapWriter(
        output, method=package.method, frame_id=package.frame_id, base=package, overwrite=overwrite, created=new_created
    ) as writer:
        write_core(writer, update.core)
        layers_start = time.perf_counter()
        method.update_layers(package, update, writer, progress=progress)
        if package.has_layer(SFRS_LAYER):
            update_sfrs_layer(package, update, writer, progress=progress)
        update.statistics["seconds"]["layers"] = time.perf_counter() - layers_start
        stale = _stale_layers(writer)
        if stale:
            raise SeglocError(
                f"method {package.method!r}: its update_layers left the layer(s) {', '.join(stale)} built for the old core; "
                "the map cannot be updated (rebuild it)"
            )
        if registration is not None:
            update.statistics["registration"] = registration.statistics
            update.statistics["seconds"]["register"] = sum(registration.statistics["seconds"].values())
        update.statistics["seconds"]["total"] = time.perf_counter() - start
        report = {**update.statistics, "seconds": {k: round(v, 3) for k, v in update.statistics["seconds"].items()}}
        writer.set_metadata(update=report, statistics=_core_counts(update.core))
        writer.commit()
    return report


def _core_counts(core: MapCore) -> dict[str, Any]:
    return {"num_images": len(core.images), "num_points": core.num_points, "num_observations": core.num_observations}
