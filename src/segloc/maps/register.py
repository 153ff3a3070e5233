"""Registering a recording with odometry poses to a map's frame: localize its images, fit Sim(3), re-pose them all.

A recording whose mapping poses are odometry (``cam_from_odom`` in ``mapping.txt``: a
drifting frame with an arbitrary origin, and for monocular visual odometry an arbitrary scale)
cannot be added to a map as it is (:mod:`segloc.maps.update` needs map-frame poses).
:func:`register_recording` brings it into the map's frame:

1. **Localize** every mapping image of the recording against the map with the map's own
   method (its localizer from the registry, :func:`segloc.localize.retrieval.load_localizer`,
   run through the robot's pipeline as ``segloc evaluate`` runs queries,
   :func:`segloc.evaluate.run.localize_query`). An image that fails is not used for the fit.
2. **Global Sim(3)** ``map_from_odom`` over the localized images
   (:func:`segloc.geometry.similarity.estimate_sim3`): MSAC over triples of cameras, an image
   being an inlier when its odometry centre lands within ``max_center_error_m`` of its
   localized centre and its odometry orientation within ``max_rotation_error_deg`` of the
   localized one; Umeyama refinement on the inliers.
3. **Windows** (``window`` > 0): odometry drifts, so each image gets the Sim(3) fitted the
   same way on the ``window`` localized images nearest to it in time (timestamps, else file
   order), when that fit has at least ``min_window_inliers`` inliers; otherwise the Sim(3) of
   the image nearest in time whose window had them (a stretch where localization failed or
   went wrong is bridged by the odometry from its ends), or the global one when no window had.
4. **Poses**: every image, localized or not, gets the pose its odometry has under its Sim(3)
   (the recording's own relative motion is kept; the camera stays metric). An image is an
   *inlier* when that pose agrees with its localized pose within the two thresholds.

Refused (:class:`~segloc.errors.SeglocError`, with the counts) when fewer than
``min_localized`` images localize or fewer than ``min_inliers`` are inliers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from segloc.config import check_options, option
from segloc.data.dataset import Dataset, ImageRecord
from segloc.errors import SeglocError
from segloc.geometry.similarity import Sim3, estimate_sim3, rotation_angles_deg
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

__all__ = ["RegisterConfig", "Registration", "register_recording"]


@dataclass
class RegisterConfig:
    """Options of :func:`register_recording` (the steps are in the module docstring).

    Attributes:
        max_center_error_m: an image is an inlier of a Sim(3) when its transformed odometry
            centre is within this many metres of its localized centre ...
        max_rotation_error_deg: ... and its transformed odometry orientation within this
            angle of the localized one.
        min_localized: fewest images that must localize.
        min_inliers: fewest inliers (images whose registered pose agrees with their localized one).
        window: localized images (nearest in time) each image's own Sim(3) is fitted on;
            0: one Sim(3) for the whole recording.
        min_window_inliers: a window's Sim(3) is used when it has at least this many inliers,
            else the nearest image's window's (the global one when no window has enough).
        rotation_weight: weight of the orientations against the centres in each fit
            (:func:`segloc.geometry.similarity.align_trajectories`).
        max_iterations: MSAC hypotheses per fit at most.
        seed: MSAC's random triples.
    """

    max_center_error_m: float = option(0.1, gt=0)
    max_rotation_error_deg: float = option(3.0, gt=0, le=180)
    min_localized: int = option(6, ge=3)
    min_inliers: int = option(6, ge=3)
    window: int = option(20, ge=0, note="0: one Sim(3) for the whole recording")
    min_window_inliers: int = option(8, ge=3)
    rotation_weight: float = option(1.0, ge=0)
    max_iterations: int = option(1000, ge=1)
    seed: int = option(0, ge=0)

    def __post_init__(self) -> None:
        check_options(self, "register")
        if 0 < self.window < self.min_window_inliers:
            raise SeglocError(
                f"register.window ({self.window}) must be 0 or at least register.min_window_inliers ({self.min_window_inliers})"
            )


@dataclass
class Registration:
    """The recording's mapping images in the map's frame.

    Attributes:
        records: the mapping records (recording order) with ``cam_from_world`` in the map's frame.
        localized: per image, its localized ``cam_from_world`` (None where localization failed).
        map_from_odom: the global Sim(3).
        image_map_from_odom: per image, the Sim(3) its pose came from (a window's or the global one).
        inliers: (N,) bool: the images whose registered pose agrees with their localized one.
        statistics: counts, scale, residuals and seconds (the update report's ``registration``).
    """

    records: list[ImageRecord]
    localized: list[Rigid3 | None]
    map_from_odom: Sim3
    image_map_from_odom: list[Sim3]
    inliers: np.ndarray
    statistics: dict[str, Any] = field(default_factory=dict)

    def dataset(self, recording: Dataset) -> Dataset:
        """``recording`` with these mapping poses (images read from its folder)."""
        return Dataset(recording.root, list(self.records), list(recording.query))


def _time_order(records: list[ImageRecord]) -> np.ndarray:
    """(N,) indices of the records in time order (file order without timestamps)."""
    if all(r.timestamp is not None for r in records):
        return np.argsort([r.timestamp for r in records], kind="stable")
    return np.arange(len(records))


def _localize(package, recording: Dataset, localize: dict[str, Any] | Any | None, progress: bool) -> tuple[list[Rigid3 | None], list[str]]:
    """Each mapping image's ``cam_from_world`` from the map's own localizer (None where it fails) and the failure reasons."""
    from segloc.evaluate.run import as_pipeline, localize_query
    from segloc.localize.retrieval import load_localizer
    from segloc.methods import get_method

    pipeline = as_pipeline(load_localizer(get_method(package.method), package, localize))
    poses: list[Rigid3 | None] = []
    reasons = []
    for record in tqdm(recording.mapping, desc=f"register: localize ({package.method})", unit="image", disable=not progress):
        # The record's pose is odometry, not ground truth: only the estimate of the result is used.
        result = localize_query(pipeline, recording, record)
        poses.append(result.cam_from_world_est)
        if not result.success:
            reasons.append(result.failure_reason or "unknown")
    return poses, reasons


def _fit(centers_odom, centers_map, rotations_odom, rotations_map, config: RegisterConfig) -> Any:
    return estimate_sim3(
        centers_odom,
        centers_map,
        rotations_odom,
        rotations_map,
        max_center_error=config.max_center_error_m,
        max_rotation_error_deg=config.max_rotation_error_deg,
        rotation_weight=config.rotation_weight,
        max_iterations=config.max_iterations,
        seed=config.seed,
    )


def _summary(values: np.ndarray, digits: int) -> dict[str, float | None]:
    if len(values) == 0:
        return {"median": None, "max": None}
    return {"median": round(float(np.median(values)), digits), "max": round(float(np.max(values)), digits)}


def register_recording(
    package,
    recording: Dataset,
    config: RegisterConfig | None = None,
    localize: dict[str, Any] | Any | None = None,
    progress: bool = True,
) -> Registration:
    """The recording's mapping images posed in the map's frame from their odometry poses (module docstring).

    Args:
        package: the map (an opened :class:`segloc.maps.package.MapPackage`), any method.
        recording: a dataset whose ``mapping.txt`` poses are ``cam_from_odom`` (odometry frame,
            any origin and scale).
        config: thresholds and windows.
        localize: the method's ``localize:`` options (as ``segloc localize --config``); None: defaults.
        progress: show a progress bar over the images.

    Raises:
        SeglocError: fewer than ``min_localized`` images localized, no Sim(3) with 3 inliers,
            or fewer than ``min_inliers`` inliers.
    """
    config = config or RegisterConfig()
    records = list(recording.mapping)
    if not records:
        raise SeglocError(f"{recording.root}: no mapping images to register")
    start = time.perf_counter()
    localized, reasons = _localize(package, recording, localize, progress)
    localize_seconds = time.perf_counter() - start
    ok = np.array([pose is not None for pose in localized])
    counts = f"{int(ok.sum())} of {len(records)} images of {recording.root} localized against map {package.path}"
    if ok.sum() < config.min_localized:
        common = max(set(reasons), key=reasons.count) if reasons else "none"
        raise SeglocError(
            f"cannot register the recording's odometry to the map: {counts}, fewer than register.min_localized "
            f"({config.min_localized}); most frequent failure: {common}"
        )
    align_start = time.perf_counter()
    centers_odom = np.array([r.cam_from_world.center for r in records])
    rotations_odom = np.array([r.cam_from_world.rotation.T for r in records])  # world_from_cam, odometry frame
    used = np.flatnonzero(ok)
    centers_map = np.array([localized[i].center for i in used])
    rotations_map = np.array([localized[i].rotation.T for i in used])
    global_fit = _fit(centers_odom[used], centers_map, rotations_odom[used], rotations_map, config)
    if global_fit is None:
        raise SeglocError(f"cannot register the recording's odometry to the map: {counts}, but no Sim(3) agrees with 3 of them")
    image_fits = [global_fit.a_from_b] * len(records)
    from_window = np.zeros(len(records), bool)
    if config.window > 0 and len(used) > config.window:
        order = _time_order(records)
        rank = np.empty(len(records), int)
        rank[order] = np.arange(len(records))
        used_rank = rank[used]
        fits: dict[tuple[int, ...], Sim3 | None] = {}
        for i in range(len(records)):
            nearest = tuple(sorted(np.argsort(np.abs(used_rank - rank[i]), kind="stable")[: config.window].tolist()))
            if nearest not in fits:
                chosen = list(nearest)
                fit = _fit(centers_odom[used[chosen]], centers_map[chosen], rotations_odom[used[chosen]], rotations_map[chosen], config)
                fits[nearest] = fit.a_from_b if fit is not None and fit.num_inliers >= config.min_window_inliers else None
            if fits[nearest] is not None:
                image_fits[i], from_window[i] = fits[nearest], True
        windowed = np.flatnonzero(from_window)
        for i in np.flatnonzero(~from_window) if len(windowed) else []:  # the fit of the nearest image in time that has one
            image_fits[i] = image_fits[windowed[np.argmin(np.abs(rank[windowed] - rank[i]))]]
    registered = [ImageRecord(r.name, fit.transform_pose(r.cam_from_world), r.camera, r.timestamp) for r, fit in zip(records, image_fits)]
    center_residuals = np.array([np.linalg.norm(registered[i].cam_from_world.center - localized[i].center) for i in used])
    rotation_residuals = rotation_angles_deg(
        np.array([registered[i].cam_from_world.rotation for i in used]), rotations_map.transpose(0, 2, 1)
    )
    good = (center_residuals <= config.max_center_error_m) & (rotation_residuals <= config.max_rotation_error_deg)
    inliers = np.zeros(len(records), bool)
    inliers[used[good]] = True
    scales = np.array([fit.scale for fit in image_fits])
    statistics = {
        "num_images": len(records),
        "num_localized": int(ok.sum()),
        "num_inliers": int(inliers.sum()),
        "global": {
            "num_inliers": global_fit.num_inliers,
            "scale": round(global_fit.a_from_b.scale, 6),
            "map_from_odom": global_fit.a_from_b.as_dict(),
            "center_residual_m": _summary(global_fit.center_residuals[global_fit.inliers], 4),
        },
        "window": config.window,
        "num_images_from_windows": int(from_window.sum()),
        "scale": {"min": round(float(scales.min()), 6), "max": round(float(scales.max()), 6)},
        "center_residual_m": _summary(center_residuals[good], 4),
        "rotation_residual_deg": _summary(rotation_residuals[good], 3),
        "center_residual_all_localized_m": _summary(center_residuals, 4),
        "seconds": {"localize": round(localize_seconds, 3), "align": round(time.perf_counter() - align_start, 3)},
    }
    logger.info(
        "register: %s; global Sim(3) scale %.4f with %d inliers; %d images posed by a window's Sim(3); %d inliers, median residual %s m",
        counts,
        global_fit.a_from_b.scale,
        global_fit.num_inliers,
        int(from_window.sum()),
        int(inliers.sum()),
        statistics["center_residual_m"]["median"],
    )
    if inliers.sum() < config.min_inliers:
        raise SeglocError(
            f"cannot register the recording's odometry to the map: {counts}, but only {int(inliers.sum())} agree with the "
            f"registered trajectory within {config.max_center_error_m} m and {config.max_rotation_error_deg} deg, fewer than "
            f"register.min_inliers ({config.min_inliers})"
        )
    return Registration(registered, localized, global_fit.a_from_b, image_fits, inliers, statistics)
