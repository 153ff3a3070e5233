"""The core build shared by every method's map: SIFT, matching and triangulation of images with known poses.

Steps (each logged, with a progress bar):

1. SIFT features of every mapping image (extracted once, kept in memory as uint8).
2. Co-visible pairs from the known poses: each image with its nearest cameras whose viewing
   directions differ by less than a threshold (:func:`select_pairs`).
3. Mutual-nearest-neighbour + ratio matching of RootSIFT (:mod:`segloc.features.matching`),
   then geometric verification against the epipolar geometry of the known relative pose
   (Sampson distance).
4. Triangulation with the known poses by COLMAP's point triangulator (pycolmap): keypoints,
   matches and two-view geometries go into a temporary COLMAP database; poses and intrinsics
   stay fixed, points are refined by bundle adjustment and filtered by reprojection error,
   triangulation angle and track length.
Steps 1 to 4 are :func:`build_core` (options: :class:`CoreConfig`, the ``core:`` section of a
method's ``map:`` config); each method adds its own layers to the ``core`` layer
(:mod:`segloc.maps.core`) it returns, e.g. :mod:`segloc.methods.reference.layer`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from segloc.config import check_options, option
from segloc.data.dataset import Dataset, ImageRecord
from segloc.errors import SeglocError
from segloc.features.matching import MatcherConfig, match_descriptors
from segloc.features.sift import LocalFeatures, SiftConfig, extract_sift, root_sift
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.maps.core import MapCore
from segloc.maps.parallel import BuildExecution, parallel_map

logger = logging.getLogger("segloc")


@dataclass
class PairConfig:
    """Which mapping images are matched with each other (from the known poses).

    Attributes:
        num_neighbors: each image is paired with this many nearest cameras (centre distance).
        max_viewing_angle_deg: ... whose optical axes differ by at most this angle.
        max_distance: ... and whose centres are at most this far apart (metres; 0: no limit).
    """

    num_neighbors: int = option(8, ge=1)
    max_viewing_angle_deg: float = option(75.0, ge=0, le=180)
    max_distance: float = option(0.0, ge=0, note="0: no limit")

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class TriangulationConfig:
    """Geometric verification and triangulation options.

    Attributes:
        max_epipolar_error_px: matches farther than this (Sampson distance, pixels) from the
            epipolar geometry of the known relative pose are rejected.
        min_verified_matches: pairs with fewer verified matches are not used.
        max_reprojection_error_px: observations reprojecting farther than this are dropped.
        min_triangulation_angle_deg: points whose rays meet at a smaller angle are dropped.
        min_track_length: points seen by fewer images are dropped.
        seed: random seed of COLMAP's RANSAC.
    """

    max_epipolar_error_px: float = option(4.0, gt=0)
    min_verified_matches: int = option(15, ge=1)
    max_reprojection_error_px: float = option(4.0, gt=0)
    min_triangulation_angle_deg: float = option(1.5, ge=0, lt=180)
    min_track_length: int = option(2, ge=2, note="a point needs two views")
    seed: int = option(0, ge=0)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class CoreConfig:
    """Options of the shared core build (:func:`build_core`): the ``core:`` section of every method's ``map:`` config.

    Attributes:
        sift: SIFT extraction of the mapping images.
        matcher: descriptor matching between co-visible mapping images.
        pairs: which mapping images are matched (from the known poses).
        triangulation: geometric verification and triangulation.
        frame_id: the map frame the poses are in (the package's ``frame_id``).
    """

    sift: SiftConfig = field(default_factory=SiftConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    frame_id: str = "map"

    def __post_init__(self) -> None:
        check_options(self)
        if not self.frame_id or not isinstance(self.frame_id, str):
            raise SeglocError(f"map.core.frame_id must be a non-empty frame name, got {self.frame_id!r}")


# --- pairs and verification -------------------------------------------------------------
def select_pairs(images: Sequence[ImageRecord], config: PairConfig | None = None) -> list[tuple[int, int]]:
    """Co-visible image pairs from the known poses.

    Each image is paired with its ``num_neighbors`` nearest cameras (by centre distance)
    among those looking in a similar direction; the pairs are made symmetric.

    Returns:
        Sorted ``(i, j)`` index pairs with ``i < j``.
    """
    config = config or PairConfig()
    if len(images) < 2:
        return []
    centers = np.stack([image.cam_from_world.center for image in images])
    axes = np.stack([image.cam_from_world.rotation[2] for image in images])  # optical axes in the world
    distances = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    angles = np.degrees(np.arccos(np.clip(axes @ axes.T, -1.0, 1.0)))
    allowed = angles <= config.max_viewing_angle_deg
    if config.max_distance > 0:
        allowed &= distances <= config.max_distance
    allowed &= distances > 1e-9  # no baseline, nothing to triangulate
    np.fill_diagonal(allowed, False)
    pairs: set[tuple[int, int]] = set()
    for i in range(len(images)):
        candidates = np.flatnonzero(allowed[i])
        for j in candidates[np.argsort(distances[i, candidates], kind="stable")][: config.num_neighbors]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def _skew(vector: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -vector[2], vector[1]], [vector[2], 0.0, -vector[0]], [-vector[1], vector[0], 0.0]])


def epipolar_errors(points0: np.ndarray, points1: np.ndarray, camera0: Camera, camera1: Camera, cam1_from_cam0: Rigid3) -> np.ndarray:
    """Sampson distances (pixels) of correspondences to the epipolar geometry of a known pose.

    Args:
        points0: (K, 2) pixels in image 0, COLMAP convention; points1: (K, 2) in image 1.
        camera0, camera1: the cameras (distortion is removed before the test).
        cam1_from_cam0: the relative pose.

    Returns:
        (K,) float64 Sampson distances in normalized coordinates scaled by the mean focal length;
        infinite when the baseline is zero.
    """
    if len(points0) == 0:
        return np.zeros(0)
    norm = np.linalg.norm(cam1_from_cam0.translation)
    if norm < 1e-12:
        return np.full(len(points0), np.inf)
    essential = _skew(cam1_from_cam0.translation / norm) @ cam1_from_cam0.rotation
    x0 = np.concatenate([camera0.pixels_to_normalized(points0), np.ones((len(points0), 1))], axis=1)
    x1 = np.concatenate([camera1.pixels_to_normalized(points1), np.ones((len(points1), 1))], axis=1)
    line1 = x0 @ essential.T  # epipolar lines in image 1
    line0 = x1 @ essential  # epipolar lines in image 0
    numerator = np.sum(x1 * line1, axis=1) ** 2
    denominator = line1[:, 0] ** 2 + line1[:, 1] ** 2 + line0[:, 0] ** 2 + line0[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        sampson = np.sqrt(numerator / denominator)
    focal = (np.mean(camera0.focal) + np.mean(camera1.focal)) / 2
    return np.where(np.isfinite(sampson), sampson * focal, np.inf)


def match_pairs(
    images: Sequence[ImageRecord],
    features: Sequence[LocalFeatures],
    pairs: Sequence[tuple[int, int]],
    matcher: MatcherConfig,
    triangulation: TriangulationConfig,
    progress: bool = True,
    execution: BuildExecution | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """Match and verify the given pairs (in chunks of pairs, as ``execution`` says: :mod:`segloc.maps.parallel`).

    Returns:
        ``(i, j) -> (K, 2)`` int64 keypoint indices of the verified matches, for the pairs with
        at least ``min_verified_matches``.
    """
    execution = execution or BuildExecution()
    size = max(1, len(pairs)) if execution.serial else max(1, -(-len(pairs) // (4 * max(1, execution.workers or 8))))
    chunks = [pairs[start : start + size] for start in range(0, len(pairs), size)]
    tasks = []
    for chunk in chunks:
        used = sorted({index for pair in chunk for index in pair})
        tasks.append((list(chunk), {k: (images[k], features[k]) for k in used}, matcher, triangulation))
    verified: dict[tuple[int, int], np.ndarray] = {}
    if execution.serial:  # one chunk: a per-pair progress bar
        verified.update(_match_chunk(tasks[0], progress) if tasks else {})
        return verified
    for chunk_result in parallel_map(_match_chunk, tasks, execution, "match", progress):
        verified.update(chunk_result)
    return dict(sorted(verified.items()))


def _match_chunk(task: tuple, progress: bool = False) -> dict[tuple[int, int], np.ndarray]:
    """The verified matches of one chunk of pairs: ``(pairs, {image index: (record, features)}, matcher, triangulation)``."""
    pairs, inputs, matcher, triangulation = task
    verified: dict[tuple[int, int], np.ndarray] = {}
    cache: dict[int, np.ndarray] = {}
    for i, j in tqdm(pairs, desc="match", unit="pair", disable=not progress):
        for index in (i, j):
            if index not in cache:
                cache[index] = root_sift(inputs[index][1].descriptors)
        (image_i, features_i), (image_j, features_j) = inputs[i], inputs[j]
        matches, _ = match_descriptors(cache[i], cache[j], matcher)
        cam1_from_cam0 = image_j.cam_from_world * image_i.cam_from_world.inverse()
        errors = epipolar_errors(
            features_i.keypoints[matches[:, 0]], features_j.keypoints[matches[:, 1]], image_i.camera, image_j.camera, cam1_from_cam0
        )
        inliers = matches[errors <= triangulation.max_epipolar_error_px]
        if len(inliers) >= triangulation.min_verified_matches:
            verified[(i, j)] = inliers
        # Pairs are sorted by i: descriptors of images before i are not needed again.
        for index in [k for k in cache if k < i]:
            del cache[index]
    return verified


# --- triangulation ----------------------------------------------------------------------
def triangulate(
    images: Sequence[ImageRecord],
    features: Sequence[LocalFeatures],
    matches: dict[tuple[int, int], np.ndarray],
    config: TriangulationConfig,
    image_dir: str | Path,
) -> tuple[MapCore, np.ndarray]:
    """Triangulate verified matches with the known poses (COLMAP's point triangulator).

    ``image_dir`` holds the images (COLMAP reads them to colour the points, which the map
    does not store).

    Returns:
        The map core, and (M,) int64 keypoint index of each observation in its image's
        features (to attach descriptors to the observations).
    """
    import pycolmap

    if not matches:
        raise SeglocError(
            f"no 3D point could be triangulated: no pair of the {len(images)} mapping images has {config.min_verified_matches} "
            "or more verified matches (a map needs at least two overlapping mapping images; check the poses in mapping.txt "
            "and pairs.num_neighbors)"
        )
    with tempfile.TemporaryDirectory(prefix="segloc-triangulation-") as workdir:
        database_path = Path(workdir) / "database.db"
        reconstruction = pycolmap.Reconstruction()
        database = pycolmap.Database.open(database_path)
        try:
            camera_ids: dict[Camera, int] = {}
            for image_index, (image, image_features) in enumerate(zip(images, features)):
                if image.camera not in camera_ids:
                    camera_ids[image.camera] = len(camera_ids) + 1
                    colmap_camera = image.camera.to_pycolmap()
                    colmap_camera.camera_id = camera_ids[image.camera]
                    database.write_camera(colmap_camera, use_camera_id=True)
                    reconstruction.add_camera_with_trivial_rig(colmap_camera)
                keypoints = image_features.keypoints.astype(np.float32)
                camera_id = camera_ids[image.camera]
                database.write_image(pycolmap.Image(name=image.name, camera_id=camera_id, image_id=image_index + 1), use_image_id=True)
                database.write_keypoints(image_index + 1, keypoints)
                colmap_image = pycolmap.Image(
                    name=image.name, keypoints=keypoints.astype(np.float64), camera_id=camera_id, image_id=image_index + 1
                )
                reconstruction.add_image_with_trivial_frame(colmap_image, image.cam_from_world.to_pycolmap())
            for (i, j), pair_matches in matches.items():
                database.write_matches(i + 1, j + 1, pair_matches.astype(np.uint32))
                geometry = pycolmap.TwoViewGeometry()
                geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
                geometry.inlier_matches = pair_matches.astype(np.uint32)
                geometry.cam2_from_cam1 = (images[j].cam_from_world * images[i].cam_from_world.inverse()).to_pycolmap()
                database.write_two_view_geometry(i + 1, j + 1, geometry)
        finally:
            database.close()
        options = pycolmap.IncrementalPipelineOptions()
        options.extract_colors = False
        options.random_seed = config.seed
        # COLMAP's multi-threaded bundle adjustment sums in another order each run: one thread, the same map every build.
        options.num_threads = 1
        options.mapper.filter_max_reproj_error = config.max_reprojection_error_px
        options.mapper.filter_min_tri_angle = config.min_triangulation_angle_deg
        options.triangulation.min_angle = config.min_triangulation_angle_deg
        options.triangulation.ignore_two_view_tracks = config.min_track_length > 2
        output_dir = Path(workdir) / "model"
        output_dir.mkdir()
        previous_level = pycolmap.logging.minloglevel
        pycolmap.logging.minloglevel = 1  # COLMAP's per-image INFO lines are noise here
        try:
            result = pycolmap.triangulate_points(reconstruction, database_path, image_dir, output_dir, options=options)
        finally:
            pycolmap.logging.minloglevel = previous_level
    for image_index, image in enumerate(images):
        pose = Rigid3.from_pycolmap(result.image(image_index + 1).cam_from_world())
        if np.linalg.norm(pose.center - image.cam_from_world.center) > 1e-6 * max(1.0, np.linalg.norm(image.cam_from_world.center)):
            raise RuntimeError(f"COLMAP's triangulator moved the known pose of {image.name}")
    return _collect_points(images, features, result, config)


def _collect_points(
    images: Sequence[ImageRecord], features: Sequence[LocalFeatures], reconstruction, config: TriangulationConfig
) -> tuple[MapCore, np.ndarray]:
    points, errors, point_ids, image_ids, keypoint_ids = [], [], [], [], []
    for point in reconstruction.points3D.values():
        elements = point.track.elements
        track_images = np.array([element.image_id - 1 for element in elements], dtype=np.int64)
        if len(np.unique(track_images)) < config.min_track_length or point.error > config.max_reprojection_error_px:
            continue
        point_ids.append(np.full(len(elements), len(points), dtype=np.int64))
        image_ids.append(track_images)
        keypoint_ids.append(np.array([element.point2D_idx for element in elements], dtype=np.int64))
        points.append(point.xyz)
        errors.append(point.error)
    if not points:
        raise SeglocError(
            "no 3D point could be triangulated: the mapping images share too few verified matches "
            "(check the poses in mapping.txt, the image overlap, and pairs.num_neighbors)"
        )
    image_ids_flat, keypoint_ids_flat = np.concatenate(image_ids), np.concatenate(keypoint_ids)
    xy = np.empty((len(image_ids_flat), 2), np.float32)
    for image_index in np.unique(image_ids_flat):
        mask = image_ids_flat == image_index
        xy[mask] = features[image_index].keypoints[keypoint_ids_flat[mask]]
    core = MapCore(list(images), np.stack(points), np.asarray(errors, np.float32), np.concatenate(point_ids), image_ids_flat, xy)
    # Group observations by image (then point): the order the localizer reads them in.
    order = np.lexsort((core.observation_point_ids, core.observation_image_ids))
    core.observation_point_ids = core.observation_point_ids[order]
    core.observation_image_ids = core.observation_image_ids[order]
    core.observation_xy = core.observation_xy[order]
    return core, keypoint_ids_flat[order]


# --- entry point ------------------------------------------------------------------------
def extract_mapping_features(
    dataset: Dataset, config: SiftConfig, progress: bool = True, execution: BuildExecution | None = None
) -> list[LocalFeatures]:
    """SIFT features of every mapping image of ``dataset``, checked against its camera size (image by image, as ``execution`` says)."""
    return parallel_map(_extract_one, [(dataset, image, config) for image in dataset.mapping], execution, "extract", progress)


def _extract_one(task: tuple[Dataset, ImageRecord, SiftConfig]) -> LocalFeatures:
    dataset, image, config = task
    pixels = dataset.load_image(image.name)  # RGB, converted as query images are
    height, width = pixels.shape[:2]
    if (width, height) != (image.camera.width, image.camera.height):
        raise SeglocError(
            f"mapping image {image.name} is {width}x{height} but its camera in mapping.txt is "
            f"{image.camera.width}x{image.camera.height}: fix the camera line"
        )
    return extract_sift(pixels, config)


@dataclass
class CoreBuild:
    """The output of :func:`build_core`: the core layer and what other layers derive from.

    Attributes:
        core: mapping images, 3D points and observations.
        features: SIFT features of each mapping image (same order as ``core.images``).
        observation_keypoint_ids: (M,) int64 index of each core observation's keypoint in its
            image's ``features`` (its descriptor is ``features[image].descriptors[index]``).
        statistics: counts, averages and seconds per step, for the manifest.
    """

    core: MapCore
    features: list[LocalFeatures]
    observation_keypoint_ids: np.ndarray
    statistics: dict[str, Any]

    def copy(self) -> CoreBuild:
        """A copy with its own statistics (each map adds its timings to them); the arrays are shared."""
        statistics = {**self.statistics, "seconds": dict(self.statistics.get("seconds", {}))}
        return CoreBuild(self.core, self.features, self.observation_keypoint_ids, statistics)

    def observation_descriptors(self) -> np.ndarray:
        """(M, 128) uint8 SIFT descriptor of each core observation."""
        return self.observation_values([image_features.descriptors for image_features in self.features])

    def observation_values(self, per_image: Sequence[np.ndarray]) -> np.ndarray:
        """(M, D) rows of each core observation, taken from per-keypoint arrays of each image ((N_i, D), ``features`` order)."""
        first = np.asarray(per_image[0]) if len(per_image) else np.zeros((0, 0))
        values = np.empty((self.core.num_observations, *first.shape[1:]), first.dtype)
        for image_index, image_values in enumerate(per_image):
            mask = self.core.observation_image_ids == image_index
            values[mask] = np.asarray(image_values)[self.observation_keypoint_ids[mask]]
        return values


def build_core(
    dataset: Dataset, config: CoreConfig | None = None, progress: bool = True, execution: BuildExecution | None = None
) -> CoreBuild:
    """Triangulate the mapping images of ``dataset`` with their known poses (steps 1 to 4).

    Methods that store other appearance data (labels, learned descriptors) start from this.
    ``execution`` runs the feature extraction and the pair matching in parallel (Dask;
    :mod:`segloc.maps.parallel`); the result is the same.
    """
    config = config or CoreConfig()
    if not dataset.mapping:
        raise SeglocError(f"{dataset.root}: mapping.txt lists no images; a map needs mapping images with poses")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if execution is not None and not execution.serial:
        logger.info("building the core on %s", execution.describe())
    features = extract_mapping_features(dataset, config.sift, progress, execution)
    seconds["extract"] = time.perf_counter() - start
    logger.info("extracted %d keypoints per image on average", int(np.mean([len(f) for f in features])))

    start = time.perf_counter()
    pairs = select_pairs(dataset.mapping, config.pairs)
    matches = match_pairs(dataset.mapping, features, pairs, config.matcher, config.triangulation, progress, execution)
    seconds["match"] = time.perf_counter() - start
    num_matches = sum(len(m) for m in matches.values())
    logger.info("%d of %d pairs kept after verification, %d verified matches", len(matches), len(pairs), num_matches)

    start = time.perf_counter()
    core, keypoint_ids = triangulate(dataset.mapping, features, matches, config.triangulation, dataset.image_dir)
    seconds["triangulate"] = time.perf_counter() - start
    track_lengths = core.track_lengths()
    logger.info(
        "triangulated %d points, %d observations, mean track length %.2f, mean reprojection error %.3f px",
        core.num_points,
        core.num_observations,
        float(track_lengths.mean()),
        float(core.point_errors.mean()),
    )
    statistics = {
        "num_images": len(core.images),
        "num_points": core.num_points,
        "num_observations": core.num_observations,
        "num_pairs": len(pairs),
        "num_verified_pairs": len(matches),
        "num_verified_matches": num_matches,
        "mean_track_length": float(track_lengths.mean()),
        "mean_reprojection_error_px": float(core.point_errors.mean()),
        "seconds": seconds,
    }
    return CoreBuild(core, features, keypoint_ids, statistics)


def core_for(dataset: Dataset, config: CoreConfig, progress: bool, core: CoreBuild | None) -> CoreBuild:
    """The geometry a map builder starts from: a copy of ``core`` (built already for ``dataset``) or a new build.

    Raises:
        SeglocError: ``core`` holds other images than ``dataset``'s mapping images.
    """
    if core is None:
        return build_core(dataset, config, progress)
    if [image.name for image in core.core.images] != [record.name for record in dataset.mapping]:
        raise SeglocError(f"the core given to the map builder is not that of {dataset.root}'s mapping images")
    return core.copy()


def core_config_of(package: Any) -> CoreConfig:
    """The core options a map was built with (``created.config.core`` of its manifest; the defaults where absent).

    Args:
        package: an opened :class:`segloc.maps.package.MapPackage`.
    """
    from segloc.config import config_from_dict

    created = package.manifest.get("created", {})
    values = (created.get("config") or {}).get("core")
    return config_from_dict(CoreConfig, values, where=f"{package.path} manifest created.config.core")


def core_sift_config(package: Any) -> SiftConfig:
    """The SIFT options a map's core was built with (``created.config.core.sift`` of its manifest; the defaults if absent).

    Args:
        package: an opened :class:`segloc.maps.package.MapPackage`.
    """
    return core_config_of(package).sift
