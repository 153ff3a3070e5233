"""Run a localizer over a dataset's queries and write the evaluation report.

:func:`evaluate_localizer` loads each query image, calls ``Localizer.localize`` with the
query's camera, compares the estimate with the ground-truth pose of ``query.txt`` and writes
the outputs of :func:`segloc.evaluate.report.write_report` (``metrics.json``,
``per_query.json``, TUM trajectories, plots).

A SeglocError raised by the localizer for one query (a bad image, too few features) counts as
a failure of that query with the message as its reason; any other exception is a bug and
propagates. Before running, the queries can be checked against the map's 3D points
(:func:`check_query_overlap`): when no query sees the map at its ground-truth pose, the query
poses are almost certainly in another frame than the map, and the evaluation stops with one
clear error instead of reporting zero recall.

Tracking (:mod:`segloc.localize.tracking`): given the odometry of the query sequence
(:class:`QueryOdometry`: a synthetic scene's ``scene.json``, :func:`read_query_odometry`; a
bag's TF, :func:`segloc.evaluate.replay.read_bag_odometry`), the queries run in order through
:meth:`~segloc.localize.pipeline.LocalizationPipeline.process` as frames on a robot do, so a
method that tracks refines from the pose odometry predicts and relocalizes when that fails;
``metrics["tracking"]`` counts the frames of each mode and ``per_query.json``'s ``info`` holds
each frame's ``tracking``.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from segloc.data.dataset import Dataset, ImageRecord
from segloc.errors import SeglocError
from segloc.evaluate.metrics import QueryResult, peak_rss_bytes, summarize
from segloc.evaluate.report import format_summary, write_report
from segloc.fileio import check_output
from segloc.geometry.transforms import Rigid3
from segloc.localize.base import Localizer
from segloc.localize.pipeline import LocalizationPipeline

logger = logging.getLogger("segloc")


def check_query_overlap(queries: Sequence[ImageRecord], points3D: np.ndarray, min_visible: int = 10) -> list[str]:
    """Names of the queries that see fewer than ``min_visible`` map points at their true pose.

    A point is seen when it projects in front of the camera and inside the image
    (:meth:`segloc.geometry.Camera.world_to_image`); occlusions are ignored.

    Args:
        queries: query records with ground-truth ``cam_from_world``.
        points3D: (N, 3) map points in the map's world frame.
        min_visible: fewest points a query must see.

    Returns:
        The names of the queries without enough overlap, in query order.
    """
    points3D = np.asarray(points3D, dtype=np.float64)
    if points3D.ndim != 2 or points3D.shape[1] != 3:
        raise SeglocError(f"map points must be an (N, 3) array, got shape {points3D.shape}")
    points3D = points3D[np.all(np.isfinite(points3D), axis=1)]
    without_overlap = []
    for record in queries:
        _, _, visible = record.camera.world_to_image(record.cam_from_world, points3D)
        if int(visible.sum()) < min_visible:
            without_overlap.append(record.name)
    return without_overlap


def overlap_or_raise(queries: Sequence[ImageRecord], points3D: np.ndarray, min_visible: int) -> list[str]:
    """:func:`check_query_overlap`, raising when no query overlaps the map and warning about those that do not."""
    if len(points3D) == 0:
        raise SeglocError("the map has no 3D points to check the queries against: pass map_points3D=None for maps without points")
    without_overlap = check_query_overlap(queries, points3D, min_visible)
    if len(without_overlap) == len(queries):
        raise SeglocError(
            f"query images overlap nothing in the map: none of the {len(queries)} queries sees {min_visible} or more of the "
            f"{len(points3D)} map points at its ground-truth pose. Are the query poses in the map's frame (same origin, axes "
            "and scale as mapping.txt)? Evaluate with the dataset the map was built from, or rebuild the map from this dataset."
        )
    if without_overlap:
        shown = ", ".join(without_overlap[:5]) + (f" and {len(without_overlap) - 5} more" if len(without_overlap) > 5 else "")
        logger.warning(
            "%d of %d queries see fewer than %d map points at their ground-truth pose (they will likely fail): %s",
            len(without_overlap),
            len(queries),
            min_visible,
            shown,
        )
    return without_overlap


@dataclass
class QueryOdometry:
    """The odometry of a query sequence, by query name: what the evaluator tracks with.

    Attributes:
        odom_from_base: the odometry pose of the robot base at each query.
        base_from_cam: the camera extrinsics at each query.
    """

    odom_from_base: dict[str, Rigid3]
    base_from_cam: dict[str, Rigid3]


def read_query_odometry(dataset_dir: str | Path) -> QueryOdometry | None:
    """The query odometry of a synthetic scene folder (``scene.json``), None for a folder without one."""
    from segloc.data.synthetic import read_scene_frames

    if not (Path(dataset_dir) / "scene.json").is_file():
        return None
    frames, base_from_cam = read_scene_frames(dataset_dir, "query")
    return QueryOdometry({f.name: f.odom_from_base for f in frames}, {f.name: base_from_cam for f in frames})


def as_pipeline(localizer: Localizer | LocalizationPipeline) -> LocalizationPipeline:
    """The :class:`~segloc.localize.pipeline.LocalizationPipeline` a localizer runs in on a robot (ingest, then the localizer)."""
    return localizer if isinstance(localizer, LocalizationPipeline) else LocalizationPipeline(localizer)


def scale_entries(localizer: Localizer | LocalizationPipeline) -> dict[str, Any]:
    """The metrics entries ``derived_options`` and ``map_scale`` of a localizer (see :mod:`segloc.evaluate.metrics`).

    A localizer that derives options from its map's scale says so in its optional
    ``derived_options`` (dict) and ``map_scale`` (:class:`segloc.maps.scale.MapScale`)
    attributes; both entries are None for one that has neither.
    """
    localizer = as_pipeline(localizer).localizer
    derived = getattr(localizer, "derived_options", None)
    scale = getattr(localizer, "map_scale", None)
    return {"derived_options": dict(derived) if derived else None, "map_scale": scale.as_dict() if scale is not None else None}


def localize_query(
    localizer: Localizer | LocalizationPipeline, dataset: Dataset, record: ImageRecord, odometry: QueryOdometry | None = None
) -> QueryResult:
    """Localize one query of ``dataset`` through the robot's pipeline and time it; a localizer error counts as a failure with its message.

    ``dataset`` is anything with ``load_image(name)`` (a dataset folder, a bag's images). With
    the sequence's ``odometry`` (and the query in it) the query is a frame of
    :meth:`~segloc.localize.pipeline.LocalizationPipeline.process` (tracking, the publishing
    decision's state); the estimate is the localizer's pose either way.
    """
    pipeline = as_pipeline(localizer)
    image = dataset.load_image(record.name)
    start = time.perf_counter()
    try:
        if odometry is not None and record.name in odometry.odom_from_base:
            decision = pipeline.process(
                image,
                record.camera,
                int(round((record.timestamp or 0.0) * 1e9)),
                odometry.base_from_cam[record.name],
                odometry=(odometry.odom_from_base[record.name], None),
            )
            if decision.result is None:
                raise SeglocError(decision.message)
            estimate = decision.result
        else:
            estimate = pipeline.localize(image, record.camera)
    except SeglocError as exc:
        elapsed = time.perf_counter() - start
        logger.warning("query %s: localizer error, counted as a failure: %s", record.name, exc)
        return QueryResult.from_estimate(
            record.name, record.cam_from_world, None, timestamp=record.timestamp, time_s=elapsed, failure_reason=str(exc)
        )
    elapsed = time.perf_counter() - start
    return QueryResult.from_estimate(
        record.name,
        record.cam_from_world,
        estimate.cam_from_world,
        num_inliers=estimate.num_inliers,
        timings=estimate.timings,
        info=estimate.info,
        timestamp=record.timestamp,
        time_s=elapsed,
        covariance=estimate.covariance,
    )


def evaluate_localizer(
    localizer: Localizer,
    dataset: Dataset,
    output_dir: str | Path,
    map_bytes: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    *,
    map_points3D: np.ndarray | None = None,
    min_visible: int = 10,
    map_path: str | Path | None = None,
    mapping_centers: np.ndarray | Sequence[np.ndarray] | None = None,
    extra: dict[str, Any] | None = None,
    track_python_memory: bool = False,
    plots: bool = True,
    odometry: QueryOdometry | None = None,
) -> dict[str, Any]:
    """Localize every query of ``dataset``, write the report into ``output_dir``, return the metrics.

    Args:
        localizer: any :class:`~segloc.localize.base.Localizer` (run through the robot's
            :class:`~segloc.localize.pipeline.LocalizationPipeline`: camera ingest first), or a
            pipeline.
        dataset: a dataset folder with queries (their poses are the ground truth).
        output_dir: where the report goes (created; existing report files are replaced); it may
            not be a file, nor the dataset or map folder or inside one.
        map_bytes: size of the map on disk, for the report.
        progress: show a tqdm progress bar.
        limit: evaluate only the first ``limit`` queries.
        map_points3D: (N, 3) map points; when given, queries are checked for overlap with the
            map first (see :func:`check_query_overlap`). None skips the check (maps without points).
        min_visible: fewest map points a query must see to overlap the map.
        map_path: the map's path, stored in the metrics.
        mapping_centers: (M, 3) camera centres of the map's images for the top-view plot;
            by default those of ``dataset.mapping``.
        extra: more entries for the metrics dict; they replace computed ones of the same key
            (e.g. ``{"method": "segloc"}`` when the localizer's ``method`` is not the name wanted).
        track_python_memory: trace Python allocations with ``tracemalloc`` during the run
            (slows allocation-heavy code down) for ``peak_python_memory_bytes``.
        plots: write the PNG plots.
        odometry: the query sequence's odometry: the queries run in order as a robot's frames
            (tracking, see the module docstring); None: each query alone.

    Returns:
        The metrics dict (keys documented in :mod:`segloc.evaluate.metrics`; with
        ``odometry`` also ``tracking``, :meth:`segloc.localize.tracking.TrackingState.describe`).

    Raises:
        SeglocError: when the dataset has no queries, or when map points are given and no
            query overlaps them.
    """
    queries = list(dataset.query)
    if limit is not None:
        if limit < 1:
            raise SeglocError(f"limit must be at least 1, got {limit}")
        queries = queries[:limit]
    if not queries:
        raise SeglocError(f"{dataset.root}: no query images to evaluate (query.txt is missing or empty)")
    inputs = [*dataset.inputs(), (map_path, "the map")] if hasattr(dataset, "inputs") else [(map_path, "the map")]
    check_output(output_dir, "folder", inputs=inputs, what="report folder")
    pipeline = as_pipeline(localizer)
    method = pipeline.method
    logger.info(
        "evaluating %s on %d queries of %s (map %s, %s bytes) -> %s",
        method,
        len(queries),
        dataset.root,
        map_path,
        map_bytes,
        output_dir,
    )
    without_overlap = None if map_points3D is None else overlap_or_raise(queries, np.asarray(map_points3D), min_visible)

    peak_at_start = peak_rss_bytes()
    started_tracing = track_python_memory and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    if track_python_memory:
        tracemalloc.reset_peak()
    results: list[QueryResult] = []
    try:
        for record in tqdm(queries, desc=f"localize ({method})", unit="query", disable=not progress):
            results.append(localize_query(pipeline, dataset, record, odometry))
        peak_python = tracemalloc.get_traced_memory()[1] if track_python_memory else None
    finally:
        if started_tracing:
            tracemalloc.stop()

    metrics = summarize(
        results,
        map_bytes,
        peak_rss_bytes(),
        peak_memory_at_start_bytes=peak_at_start,
        peak_python_memory_bytes=peak_python,
        method=method,
        map_path=map_path,
        dataset=dataset.root,
        queries_without_overlap=without_overlap,
    )
    if odometry is not None:
        metrics["tracking"] = pipeline.tracking.describe()
    metrics.update(scale_entries(pipeline))
    metrics.update(extra or {})
    if mapping_centers is None:
        mapping_centers = [r.cam_from_world.center for r in dataset.mapping]
    mapping_centers = np.asarray(mapping_centers, dtype=np.float64).reshape(-1, 3)
    write_report(output_dir, metrics, results, mapping_centers=mapping_centers, plots=plots)
    logger.debug("evaluation of %s:\n%s", metrics["method"], format_summary(metrics))
    return metrics


def evaluate_map(
    map_path: str | Path | Any,
    dataset: Dataset,
    output_dir: str | Path,
    *,
    method: str | None = None,
    localize: dict[str, Any] | Any | None = None,
    progress: bool = True,
    limit: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a map package on a dataset's queries with its method's localizer (found in the registry).

    Args:
        map_path: the map package (a path or an opened :class:`segloc.maps.package.MapPackage`).
        dataset: the dataset with queries.
        output_dir: where the report goes.
        method: the method name; None: the one the map was built for.
        localize: the method's ``localize:`` options (a dict or its config dataclass); None: defaults.
        progress: show a progress bar.
        limit: only the first ``limit`` queries.
        extra: more entries for the metrics dict.

    Returns:
        The metrics dict (:func:`evaluate_localizer`), with ``method`` the method's name.
    """
    from segloc.evaluate.replay import MapSummary
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method

    package = map_path if isinstance(map_path, MapPackage) else MapPackage.open(map_path)
    method_entry = get_method(method or package.method)
    from segloc.localize.retrieval import load_localizer

    localizer = load_localizer(method_entry, package, localize)
    summary = MapSummary.from_package(package)
    return evaluate_localizer(
        localizer,
        dataset,
        output_dir,
        map_bytes=summary.bytes,
        map_points3D=summary.points3D if len(summary.points3D) else None,
        mapping_centers=summary.mapping_centers,
        progress=progress,
        limit=limit,
        map_path=summary.path,
        extra={"method": method_entry.name, **(extra or {})},
    )
