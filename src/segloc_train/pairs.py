"""Training pairs of mapping images with 2D-2D correspondences from the map's 3D points.

SegLoc's correspondence-consistency loss needs pairs of mapping images and, for each pair,
pixels of both images that see the same 3D point (the network must give them the same class).
:func:`mine_pairs` derives them from a :class:`~segloc.maps.core.MapCore`:

1. Every observation is checked against its 3D point: the point is projected into the
   observing image with the known pose and camera; observations whose reprojection error
   exceeds ``max_reprojection_error_px`` (5 px), or whose point lies behind the camera, are
   rejected. If an image observes a point twice, the observation with the smaller error is kept.
2. The number of 3D points two images share (after step 1) is counted for all pairs at once
   (a sparse image x point incidence matrix times its transpose). Pairs with fewer than the
   minimum number of correspondences (:meth:`PairMiningConfig.min_correspondences_for`) are
   dropped.
3. Optionally, pairs whose cameras are rotated by more than ``max_relative_rotation_deg``
   relative to each other are dropped (25 degrees indoors in the paper).
4. Bounding-box overlap, in both directions: all 3D points image A observes (after step 1)
   are projected into image B; ``overlap_a_in_b`` is the fraction of the axis-aligned bounding
   box of those reprojections (points in front of B) that lies inside B's image rectangle,
   times the fraction of A's points that are in front of B. Likewise ``overlap_b_in_a``. The
   pair is kept when ``min(overlap_a_in_b, overlap_b_in_a) >= min_bbox_overlap`` (0.75): what
   either image sees must mostly fall inside the other image's frame. A lateral shift by a
   third of the image, a close-up of a detail of the other image (its content spreads far
   beyond the close-up's frame) or a zoomed-out view (the other direction) fails. The measure
   is relative to each image's own point extent, so images whose points do not reach the
   image borders (textureless floor or sky) are not penalised, and it is purely geometric
   (occlusions are ignored).
5. Optionally, each image keeps at most ``max_pairs_per_image`` pairs: pairs are visited by
   decreasing number of correspondences and accepted while both of their images are below the
   limit.

Pixels use COLMAP's convention (the centre of the top-left pixel is (0.5, 0.5)); the image
rectangle is ``[0, width] x [0, height]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from tqdm import tqdm

from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.maps.core import MapCore

logger = logging.getLogger("segloc")


@dataclass
class PairMiningConfig:
    """Options of :func:`mine_pairs`.

    The paper keeps pairs with at least 500 correspondences at about 1024 px. Feature counts
    grow with the image area, so the minimum is scaled by area: a pair needs
    ``max(min_correspondences_floor, ceil(min_correspondences * area / reference_area))``
    correspondences, where ``area`` is the pixel area of the smaller of its two images (per
    the map's cameras, i.e. at the resolution the map's features were extracted) and
    ``reference_area = reference_image_size[0] * reference_image_size[1]`` (1024 x 768). A
    160 x 120 image needs 13, a 640 x 480 image 196, a 1024 x 768 image 500.

    Attributes:
        max_reprojection_error_px: observations whose 3D point reprojects farther than this
            from the observed pixel are rejected (pixels).
        min_correspondences: minimum number of correspondences at ``reference_image_size``.
        reference_image_size: (width, height) at which ``min_correspondences`` applies; None:
            use ``min_correspondences`` as it is, whatever the image size.
        min_correspondences_floor: lower bound of the scaled minimum (small images).
        min_bbox_overlap: minimum overlap of each image's reprojected point bounding box
            with the other image (see the module documentation), in [0, 1].
        max_relative_rotation_deg: maximum rotation angle between the two cameras (degrees);
            None: no limit (the paper uses 25 indoors).
        max_pairs_per_image: keep at most this many pairs per image (those with the most
            correspondences); None: no limit.
    """

    max_reprojection_error_px: float = 5.0
    min_correspondences: int = 500
    reference_image_size: tuple[int, int] | None = (1024, 768)
    min_correspondences_floor: int = 10
    min_bbox_overlap: float = 0.75
    max_relative_rotation_deg: float | None = None
    max_pairs_per_image: int | None = None

    def __post_init__(self) -> None:
        if not self.max_reprojection_error_px > 0:
            raise SeglocError(f"max_reprojection_error_px must be positive, got {self.max_reprojection_error_px}")
        if self.min_correspondences < 1 or self.min_correspondences_floor < 1:
            raise SeglocError(
                f"min_correspondences and min_correspondences_floor must be at least 1, got {self.min_correspondences} "
                f"and {self.min_correspondences_floor}"
            )
        if self.reference_image_size is not None and (len(self.reference_image_size) != 2 or min(self.reference_image_size) <= 0):
            raise SeglocError(f"reference_image_size must be a positive (width, height) or null, got {self.reference_image_size}")
        if not 0.0 <= self.min_bbox_overlap <= 1.0:
            raise SeglocError(f"min_bbox_overlap must be in [0, 1], got {self.min_bbox_overlap}")
        if self.max_relative_rotation_deg is not None and not 0 < self.max_relative_rotation_deg <= 180:
            raise SeglocError(f"max_relative_rotation_deg must be in (0, 180] degrees or null, got {self.max_relative_rotation_deg}")
        if self.max_pairs_per_image is not None and self.max_pairs_per_image < 1:
            raise SeglocError(f"max_pairs_per_image must be at least 1 or null, got {self.max_pairs_per_image}")

    def min_correspondences_for(self, area: float | np.ndarray) -> np.ndarray:
        """Minimum number of correspondences (int64, same shape as ``area``) for a pair whose
        smaller image has ``area`` pixels."""
        area = np.asarray(area, dtype=np.float64)
        if self.reference_image_size is None:
            return np.full(area.shape, self.min_correspondences, dtype=np.int64)
        reference_area = float(self.reference_image_size[0]) * float(self.reference_image_size[1])
        scaled = np.ceil(self.min_correspondences * area / reference_area - 1e-9).astype(np.int64)
        return np.maximum(scaled, self.min_correspondences_floor)


@dataclass
class ImagePair:
    """Two mapping images and their correspondences.

    Attributes:
        image_id_a, image_id_b: map image ids (``image_id_a < image_id_b``).
        points_a: (M, 2) float32 observed pixels in image A (COLMAP convention).
        points_b: (M, 2) float32 observed pixels of the same 3D points in image B.
        point_ids: (M,) int64 map point id of each correspondence, increasing.
        overlap_a_in_b: fraction of the bounding box of A's points reprojected into B that
            lies inside B (times the fraction of A's points in front of B).
        overlap_b_in_a: the same from B into A.
        relative_rotation_deg: rotation angle between the two cameras, degrees.
    """

    image_id_a: int
    image_id_b: int
    points_a: np.ndarray
    points_b: np.ndarray
    point_ids: np.ndarray
    overlap_a_in_b: float
    overlap_b_in_a: float
    relative_rotation_deg: float

    @property
    def num_correspondences(self) -> int:
        return len(self.point_ids)


# --- per-observation geometry -------------------------------------------------------------
def reprojection_errors(core: MapCore) -> tuple[np.ndarray, np.ndarray]:
    """Reproject every observation's 3D point into its image.

    Returns:
        reprojections (M, 2) float64 pixels (NaN for points behind the camera) and errors (M,)
        float64 distance to the observed pixel (inf behind the camera), in observation order.
    """
    num_obs = core.num_observations
    reprojections = np.full((num_obs, 2), np.nan)
    if num_obs == 0:
        return reprojections, np.zeros(0)
    rotations = np.stack([image.cam_from_world.rotation for image in core.images])
    translations = np.stack([image.cam_from_world.translation for image in core.images])
    image_ids = core.observation_image_ids
    points_cam = np.einsum("mij,mj->mi", rotations[image_ids], core.points3D[core.observation_point_ids]) + translations[image_ids]
    cameras: dict = {}
    for image_id, image in enumerate(core.images):
        cameras.setdefault(image.camera, []).append(image_id)
    for camera, camera_image_ids in cameras.items():
        mask = np.isin(image_ids, camera_image_ids)
        reprojections[mask] = camera.project(points_cam[mask])  # NaN where z <= 0
    errors = np.linalg.norm(reprojections - core.observation_xy, axis=1)
    return reprojections, np.where(np.isfinite(errors), errors, np.inf)


def _relative_rotation_deg(rotations: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(K,) rotation angle (degrees) of ``R[rows] @ R[cols].T`` for rotations (I, 3, 3)."""
    trace = np.einsum("kij,kij->k", rotations[rows], rotations[cols])
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def _project_for_bbox(camera: Camera, points_cam: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) of camera-frame points (N, 3) in front of the camera, for bounding boxes.

    Far outside the field of view a distortion polynomial can fold points back into the
    image; there (normalized radius beyond 1.5 times that of the image corners) the
    undistorted pinhole projection is used, which keeps them outside.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = points_cam[:, :2] / points_cam[:, 2:3]
    pixels = camera.normalized_to_pixels(normalized)
    if camera.has_distortion:
        corners = np.array([[0.0, 0.0], [camera.width, 0.0], [0.0, camera.height], [camera.width, camera.height]])
        max_radius = np.linalg.norm(camera.pixels_to_normalized(corners), axis=1).max()
        far = np.linalg.norm(normalized, axis=1) > 1.5 * max_radius
        (fx, fy), (cx, cy) = camera.focal, camera.principal_point
        pixels[far] = normalized[far] * [fx, fy] + [cx, cy]
    return pixels


def reprojected_overlaps(
    core: MapCore,
    indptr: np.ndarray,
    point_ids: np.ndarray,
    sources: np.ndarray,
    targets: np.ndarray,
    minimum: float = 0.0,
    hulls: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Overlap of each source image's points, reprojected into the target image, with that image.

    For a pair (source S, target T): the points S observes are projected into T; the result
    is ``area(bbox & image) / area(bbox) * (fraction of the points in front of T)``, with
    ``bbox`` the axis-aligned bounding box of the reprojections in front of T and ``image``
    the rectangle ``[0, width] x [0, height]`` of T. A degenerate (zero-area) box counts as
    inside when all its points are.

    Speed: a pinhole projection maps the convex hull of points in front of the camera onto the
    convex hull of their projections, so when all vertices of the 3D convex hull of S's points
    are in front of T (and T has no distortion), the bounding box only needs those vertices
    (tens instead of hundreds of points). Otherwise the box of the vertices in front of T,
    which lies inside the true box, bounds the overlap from above
    (:func:`_overlap_upper_bound`), and so does the fraction of points in front of T; the
    full computation runs only where both bounds reach ``minimum``.

    Args:
        core: the map core (poses, cameras, 3D points).
        indptr: (I + 1,) int offsets and point_ids: (sum,) int point ids, the points image
            ``i`` observes being ``point_ids[indptr[i]:indptr[i + 1]]`` (a CSR row structure).
        sources, targets: (K,) int image ids; every source must observe at least one point.
        minimum: overlaps below it may be returned as an upper bound that is below it (the
            caller only needs to know that they fail); 0 gives exact values everywhere.
        hulls: the output of :func:`convex_hull_vertices` for these points, if already computed.
        progress: show progress bars.

    Returns:
        (K,) float64 overlaps in [0, 1].
    """
    sources, targets = np.asarray(sources, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    if np.any(indptr[sources + 1] == indptr[sources]):
        raise SeglocError("reprojected_overlaps: a source image observes no point")
    hulls = hulls or convex_hull_vertices(core.points3D, indptr, point_ids, np.unique(sources), progress)
    overlaps, exact = _hull_overlaps(core, hulls, sources, targets, progress)
    redo = np.flatnonzero(~exact & (overlaps >= minimum))
    overlaps[redo] = _exact_overlaps(core, indptr, point_ids, sources[redo], targets[redo], minimum, progress)
    return overlaps


def convex_hull_vertices(
    points3D: np.ndarray, indptr: np.ndarray, point_ids: np.ndarray, image_ids: np.ndarray | None = None, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of the 3D convex hull of the points each image observes.

    Args:
        points3D: (P, 3) world points.
        indptr, point_ids: CSR structure of the points of each image (see :func:`reprojected_overlaps`).
        image_ids: the images to compute (others get no points); None: all.
        progress: show a progress bar.

    Returns:
        CSR structure (indptr (I + 1,), point ids) of the hull vertices; all points of an image
        where there is no hull (16 points or fewer, flat or degenerate sets).
    """
    from scipy.spatial import ConvexHull, QhullError

    if image_ids is None:
        image_ids = np.arange(len(indptr) - 1)
    vertices: list[np.ndarray] = [np.zeros(0, dtype=point_ids.dtype)] * (len(indptr) - 1)
    for image_id in tqdm(image_ids, desc="hulls", unit="image", disable=not progress):
        ids = point_ids[indptr[image_id] : indptr[image_id + 1]]
        try:
            vertices[image_id] = ids[ConvexHull(points3D[ids]).vertices] if len(ids) > 16 else ids
        except (QhullError, ValueError):  # flat or degenerate point sets
            vertices[image_id] = ids
    counts = np.array([len(v) for v in vertices], dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)]), np.concatenate(vertices)


def _hull_overlaps(
    core: MapCore, hulls: tuple[np.ndarray, np.ndarray], sources: np.ndarray, targets: np.ndarray, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Overlaps (K,) from the hull vertices and (K,) bool, exact (all vertices in front of an
    undistorted target camera); where not exact, the value is an upper bound."""
    overlaps, in_front, bounds = _overlaps(core, hulls[0], hulls[1], sources, targets, progress)
    distorted = np.array([image.camera.has_distortion for image in core.images])
    exact = (in_front == 1.0) & ~distorted[targets]
    return np.where(exact, overlaps, np.where(distorted[targets], 1.0, bounds)), exact


def _exact_overlaps(
    core: MapCore, indptr: np.ndarray, point_ids: np.ndarray, sources: np.ndarray, targets: np.ndarray, minimum: float, progress: bool
) -> np.ndarray:
    """Overlaps (K,) from all points; pairs whose fraction of points in front of the target is
    below ``minimum`` get that fraction (an upper bound) instead."""
    overlaps = np.zeros(len(sources))
    if len(sources) == 0:
        return overlaps
    compute = np.arange(len(sources))
    if minimum > 0:
        overlaps[:] = _fractions_in_front(core, indptr, point_ids, sources, targets)
        compute = compute[overlaps >= minimum]
    if len(compute):
        overlaps[compute] = _overlaps(core, indptr, point_ids, sources[compute], targets[compute], progress)[0]
    return overlaps


def _chunks(core: MapCore, indptr: np.ndarray, point_ids: np.ndarray, sources: np.ndarray, targets: np.ndarray, chunk_size: int = 500_000):
    """Split pairs, sorted by target image, into chunks of about ``chunk_size`` (pair, point) elements.

    Yields:
        pair_indices (n,) indices into ``sources`` / ``targets`` of the chunk's pairs, counts
        (n,) points per pair, segment_starts (n,) first element of each pair, points_cam (N, 3)
        the source points in the target camera, target (N,) target image id of each element.
    """
    if len(sources) == 0:
        return
    rotations = np.stack([image.cam_from_world.rotation for image in core.images])
    translations = np.stack([image.cam_from_world.translation for image in core.images])
    order = np.argsort(targets, kind="stable")
    lengths = indptr[sources[order] + 1] - indptr[sources[order]]
    cumulative = np.cumsum(lengths)
    edges = np.unique(np.concatenate([[0], np.searchsorted(cumulative, np.arange(chunk_size, cumulative[-1], chunk_size)), [len(order)]]))
    for start, stop in zip(edges[:-1], edges[1:]):
        pair_indices, counts = order[start:stop], lengths[start:stop]
        segment = np.repeat(np.arange(stop - start), counts)
        segment_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        elements = np.arange(counts.sum()) - segment_starts[segment] + indptr[sources[pair_indices]][segment]
        points_cam = core.points3D[point_ids[elements]]
        target = targets[pair_indices][segment]
        runs = np.flatnonzero(np.diff(target)) + 1  # pairs are sorted by target: one transform per run
        for run_start, run_stop in zip(np.concatenate([[0], runs]), np.concatenate([runs, [len(target)]])):
            image_id = target[run_start]
            points_cam[run_start:run_stop] = points_cam[run_start:run_stop] @ rotations[image_id].T + translations[image_id]
        yield pair_indices, counts, segment_starts, points_cam, target


def _fractions_in_front(core: MapCore, indptr: np.ndarray, point_ids: np.ndarray, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(K,) fraction of each source's points in front of the target camera."""
    fractions = np.zeros(len(sources))
    for pair_indices, counts, segment_starts, points_cam, _ in _chunks(core, indptr, point_ids, sources, targets):
        fractions[pair_indices] = np.add.reduceat((points_cam[:, 2] > 0).astype(np.int64), segment_starts) / counts
    return fractions


def _overlap_upper_bound(lower: np.ndarray, upper: np.ndarray, image_bounds: np.ndarray) -> np.ndarray:
    """Upper bound (K,) of ``area(B & image) / area(B)`` over boxes B containing the boxes
    ``[lower, upper]`` (K, 2): per axis, growing B into the image only raises the ratio, so the
    best B spans ``[min(lower, 0), max(upper, size)]`` and the ratio is ``size / length``."""
    lengths = np.maximum(upper, image_bounds) - np.minimum(lower, 0.0)
    return np.prod(image_bounds / lengths, axis=1)


def _overlaps(
    core: MapCore, indptr: np.ndarray, point_ids: np.ndarray, sources: np.ndarray, targets: np.ndarray, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`reprojected_overlaps` from the given point lists, vectorised over pairs.

    Returns:
        overlaps (K,), fractions (K,) of the points in front of the target, and (K,) upper
        bounds of the overlap of any superset of the points (1 where no point is in front).
    """
    overlaps, fractions, bounds = np.zeros(len(sources)), np.zeros(len(sources)), np.ones(len(sources))
    cameras = list(dict.fromkeys(image.camera for image in core.images))
    camera_ids = np.array([cameras.index(image.camera) for image in core.images])
    sizes = np.array([[image.camera.width, image.camera.height] for image in core.images], dtype=np.float64)
    chunks = _chunks(core, indptr, point_ids, sources, targets)
    for pair_indices, counts, segment_starts, points_cam, target in tqdm(chunks, desc="overlap", unit="chunk", disable=not progress):
        in_front = points_cam[:, 2] > 0
        pixels = np.zeros((len(points_cam), 2))
        for camera_id, camera in enumerate(cameras):
            mask = in_front if len(cameras) == 1 else in_front & (camera_ids[target] == camera_id)
            pixels[mask] = _project_for_bbox(camera, points_cam[mask])
        in_front &= np.isfinite(pixels).all(axis=1)
        lower = np.minimum.reduceat(np.where(in_front[:, None], pixels, np.inf), segment_starts, axis=0)
        upper = np.maximum.reduceat(np.where(in_front[:, None], pixels, -np.inf), segment_starts, axis=0)
        num_in_front = np.add.reduceat(in_front.astype(np.int64), segment_starts)
        image_bounds = sizes[targets[pair_indices]]
        any_in_front = num_in_front > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            area = np.prod(upper - lower, axis=1)
            inside_area = np.prod(np.clip(upper, 0.0, image_bounds) - np.clip(lower, 0.0, image_bounds), axis=1)
            inside_all = np.all((lower >= 0) & (upper <= image_bounds), axis=1)
            inside = np.where(area > 0, inside_area / np.where(area > 0, area, 1.0), inside_all.astype(np.float64))
            bounds[pair_indices] = np.where(any_in_front, _overlap_upper_bound(lower, upper, image_bounds), 1.0)
        fractions[pair_indices] = num_in_front / counts
        overlaps[pair_indices] = np.where(any_in_front, inside * num_in_front / counts, 0.0)
    return overlaps, fractions, bounds


# --- mining -------------------------------------------------------------------------------
def _pair_overlaps(
    core: MapCore, indptr: np.ndarray, point_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray, minimum: float, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reprojected_overlaps` in both directions (rows into cols, cols into rows).

    Both must reach ``minimum``: the cheap hull values (exact, or upper bounds) are computed
    both ways first, a pair failing either way is rejected at once, and the full computation
    runs only for pairs still alive. Values below ``minimum`` may be upper bounds.
    """
    hulls = convex_hull_vertices(core.points3D, indptr, point_ids, np.unique(np.concatenate([rows, cols])), progress)
    overlap_ab, exact_ab = _hull_overlaps(core, hulls, rows, cols, progress)
    overlap_ba, exact_ba = _hull_overlaps(core, hulls, cols, rows, progress)
    alive = (overlap_ab >= minimum) & (overlap_ba >= minimum)
    redo = np.flatnonzero(alive & ~exact_ab)
    overlap_ab[redo] = _exact_overlaps(core, indptr, point_ids, rows[redo], cols[redo], minimum, progress)
    alive &= overlap_ab >= minimum
    redo = np.flatnonzero(alive & ~exact_ba)
    overlap_ba[redo] = _exact_overlaps(core, indptr, point_ids, cols[redo], rows[redo], minimum, progress)
    return overlap_ab, overlap_ba


def mine_pairs(core: MapCore, config: PairMiningConfig | None = None, progress: bool = True) -> list[ImagePair]:
    """Image pairs with correspondences from the map's 3D points (see the module documentation).

    Args:
        core: the map core (mapping images with known poses, points, observations).
        config: mining options.
        progress: show a progress bar over the candidate pairs.

    Returns:
        The pairs, sorted by (image_id_a, image_id_b).
    """
    config = config or PairMiningConfig()
    num_images = len(core.images)
    if num_images < 2 or core.num_observations == 0:
        logger.info("pair mining: %d images, %d observations: no pairs", num_images, core.num_observations)
        return []
    _, errors = reprojection_errors(core)
    valid = errors <= config.max_reprojection_error_px
    # One observation per (image, point): the one with the smallest error.
    keys = core.observation_image_ids.astype(np.int64) * core.num_points + core.observation_point_ids
    order = np.lexsort((errors, keys))
    order = order[valid[order]]
    first = np.ones(len(order), dtype=bool)
    first[1:] = keys[order[1:]] != keys[order[:-1]]
    kept = order[first]
    logger.info(
        "pair mining: %d of %d observations within %.1f px of their reprojection, %d after dropping repeated (image, point) ones",
        int(valid.sum()),
        core.num_observations,
        config.max_reprojection_error_px,
        len(kept),
    )
    # Image x point incidence; data = observation index + 1 (0 is 'absent' in a sparse matrix).
    incidence = sparse.csr_matrix(
        (kept + 1, (core.observation_image_ids[kept], core.observation_point_ids[kept])), shape=(num_images, core.num_points)
    )
    incidence.sort_indices()
    binary = incidence.copy()
    binary.data = np.ones_like(binary.data, dtype=np.int64)
    shared = sparse.triu(binary @ binary.T, k=1).tocoo()
    by_ids = np.lexsort((shared.col, shared.row))
    rows, cols, counts = shared.row[by_ids].astype(np.int64), shared.col[by_ids].astype(np.int64), shared.data[by_ids].astype(np.int64)
    num_covisible = len(rows)

    areas = np.array([image.camera.width * image.camera.height for image in core.images], dtype=np.float64)
    enough = counts >= config.min_correspondences_for(np.minimum(areas[rows], areas[cols]))
    rows, cols, counts = rows[enough], cols[enough], counts[enough]
    num_enough = len(rows)

    rotations = np.stack([image.cam_from_world.rotation for image in core.images])
    angles = _relative_rotation_deg(rotations, rows, cols)
    if config.max_relative_rotation_deg is not None:
        close = angles <= config.max_relative_rotation_deg
        rows, cols, counts, angles = rows[close], cols[close], counts[close], angles[close]
    num_rotation = len(rows)

    indptr, indices, data = incidence.indptr, incidence.indices, incidence.data
    overlap_a_in_b, overlap_b_in_a = _pair_overlaps(core, indptr, indices, rows, cols, config.min_bbox_overlap, progress)
    overlapping = np.minimum(overlap_a_in_b, overlap_b_in_a) >= config.min_bbox_overlap
    pairs: list[ImagePair] = []
    for k in tqdm(np.flatnonzero(overlapping), desc="pairs", unit="pair", disable=not progress):
        row, col = rows[k], cols[k]
        points_row, points_col = indices[indptr[row] : indptr[row + 1]], indices[indptr[col] : indptr[col + 1]]
        point_ids, in_row, in_col = np.intersect1d(points_row, points_col, assume_unique=True, return_indices=True)
        pairs.append(
            ImagePair(
                int(row),
                int(col),
                core.observation_xy[data[indptr[row] + in_row] - 1].astype(np.float32),
                core.observation_xy[data[indptr[col] + in_col] - 1].astype(np.float32),
                point_ids.astype(np.int64),
                float(overlap_a_in_b[k]),
                float(overlap_b_in_a[k]),
                float(angles[k]),
            )
        )
    num_overlap = len(pairs)
    if config.max_pairs_per_image is not None:
        pairs = _limit_pairs_per_image(pairs, num_images, config.max_pairs_per_image)
    logger.info(
        "pair mining: %d co-visible pairs, %d with enough correspondences, %d within the rotation limit, %d with bounding-box "
        "overlap >= %.2f, %d kept (%.0f correspondences per pair on average)",
        num_covisible,
        num_enough,
        num_rotation,
        num_overlap,
        config.min_bbox_overlap,
        len(pairs),
        float(np.mean([p.num_correspondences for p in pairs])) if pairs else 0.0,
    )
    return pairs


def _limit_pairs_per_image(pairs: Sequence[ImagePair], num_images: int, limit: int) -> list[ImagePair]:
    """Greedy cap: pairs by decreasing correspondence count, accepted while both images are under ``limit``."""
    order = sorted(range(len(pairs)), key=lambda k: (-pairs[k].num_correspondences, pairs[k].image_id_a, pairs[k].image_id_b))
    per_image = np.zeros(num_images, dtype=np.int64)
    accepted = []
    for k in order:
        a, b = pairs[k].image_id_a, pairs[k].image_id_b
        if per_image[a] < limit and per_image[b] < limit:
            per_image[a] += 1
            per_image[b] += 1
            accepted.append(k)
    return [pairs[k] for k in sorted(accepted)]


# --- files --------------------------------------------------------------------------------
def write_pairs(path: str | Path, pairs: Sequence[ImagePair]) -> Path:
    """Save pairs to an ``.npz`` file (no pickles); returns ``path``.

    Arrays: ``image_ids`` (N, 2) int64, ``offsets`` (N + 1,) int64 (pair ``k``'s
    correspondences are rows ``offsets[k]:offsets[k + 1]``), ``points_a`` / ``points_b``
    (sum M, 2) float32, ``point_ids`` (sum M,) int64, ``overlap`` (N, 2) float64 (a in b, b in a),
    ``relative_rotation_deg`` (N,) float64.
    """
    path = Path(path)
    counts = np.array([p.num_correspondences for p in pairs], dtype=np.int64)
    arrays = {
        "image_ids": np.array([[p.image_id_a, p.image_id_b] for p in pairs], dtype=np.int64).reshape(-1, 2),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "points_a": np.concatenate([p.points_a for p in pairs]).astype(np.float32) if pairs else np.zeros((0, 2), np.float32),
        "points_b": np.concatenate([p.points_b for p in pairs]).astype(np.float32) if pairs else np.zeros((0, 2), np.float32),
        "point_ids": np.concatenate([p.point_ids for p in pairs]).astype(np.int64) if pairs else np.zeros(0, np.int64),
        "overlap": np.array([[p.overlap_a_in_b, p.overlap_b_in_a] for p in pairs], dtype=np.float64).reshape(-1, 2),
        "relative_rotation_deg": np.array([p.relative_rotation_deg for p in pairs], dtype=np.float64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)
    return path


def read_pairs(path: str | Path) -> list[ImagePair]:
    """Load pairs written by :func:`write_pairs`."""
    path = Path(path)
    if not path.is_file():
        raise SeglocError(f"pair file {path} does not exist; mine the pairs first")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            values = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as exc:
        raise SeglocError(f"pair file {path} could not be read ({exc})") from None
    required = ("image_ids", "offsets", "points_a", "points_b", "point_ids", "overlap", "relative_rotation_deg")
    missing = [key for key in required if key not in values]
    if missing:
        raise SeglocError(f"pair file {path} lacks {', '.join(missing)}; write it with write_pairs")
    offsets = values["offsets"]
    if len(offsets) != len(values["image_ids"]) + 1 or (len(offsets) and offsets[-1] != len(values["point_ids"])):
        raise SeglocError(f"pair file {path} is inconsistent: offsets do not match the correspondence arrays")
    return [
        ImagePair(
            int(ids[0]),
            int(ids[1]),
            values["points_a"][start:end],
            values["points_b"][start:end],
            values["point_ids"][start:end],
            float(overlap[0]),
            float(overlap[1]),
            float(angle),
        )
        for ids, start, end, overlap, angle in zip(
            values["image_ids"], offsets[:-1], offsets[1:], values["overlap"], values["relative_rotation_deg"]
        )
    ]


def describe_pairs(pairs: Sequence[ImagePair]) -> dict[str, float]:
    """Summary numbers of a pair list (for logs and training metadata)."""
    if not pairs:
        return {"num_pairs": 0}
    counts = np.array([p.num_correspondences for p in pairs])
    overlap = np.array([min(p.overlap_a_in_b, p.overlap_b_in_a) for p in pairs])
    return {
        "num_pairs": len(pairs),
        "num_images": len({p.image_id_a for p in pairs} | {p.image_id_b for p in pairs}),
        "mean_correspondences": float(counts.mean()),
        "min_correspondences": int(counts.min()),
        "mean_min_overlap": float(overlap.mean()),
        "max_relative_rotation_deg": float(max(p.relative_rotation_deg for p in pairs)),
    }
