"""Localization metrics: per-query pose errors, recall at the standard thresholds, medians, timings.

Errors come from :func:`segloc.geometry.pose_error`: the translation error is the distance
between the estimated and the ground-truth camera centres (metres), the rotation error the
angle of ``R_est @ R_gt^T`` (degrees). A query that failed to localize has infinite errors: it
counts as a miss at every threshold and as an infinite value in the all-query medians.

JSON has no infinity or NaN: every non-finite number is written as ``null`` (see
:func:`to_json_safe`), so ``metrics.json`` stays valid for every JSON reader.

Keys of the metrics dict (:func:`summarize`, written to ``metrics.json``; a caller of
:func:`segloc.evaluate.run.evaluate_localizer` may add or replace entries through ``extra``):

==================================  =================================================================================
key                                 meaning
==================================  =================================================================================
``format``                          ``"segloc-metrics"``, what this file is
``format_version``                  version of this key layout (``1``)
``segloc_version``                  the segloc version that wrote it
``method``                          the localizer's method name (``Localizer.method``), or null
``map_path``                        path of the map package evaluated, or null
``dataset``                         path of the dataset folder whose queries were localized, or null
``num_queries``                     number of queries evaluated
``num_localized``                   queries for which the localizer returned a pose (right or wrong)
``num_failed``                      ``num_queries - num_localized``
``recall``                          dict keyed ``0.25m_2deg``, ``0.5m_5deg``, ``5m_10deg``, ``5cm_5deg``: fraction
                                    in [0, 1] of ALL queries with translation error <= t AND rotation error <= r
                                    (failed queries are misses)
``thresholds``                      dict with the same keys: ``{"translation_m": t, "rotation_deg": r}``
``median_translation_m``            median translation error over ALL queries, failures counted as infinite: null
                                    when half or more of the queries failed (the median is then infinite)
``median_rotation_deg``             median rotation error over ALL queries, same convention
``median_translation_localized_m``  median translation error over the localized queries only; null if none. This
                                    is the median ``evo_ape`` reports on the report's TUM files: with failed
                                    queries, ``estimates_tum.txt`` holds only the localized ones, so evo agrees
                                    with this key, not with ``median_translation_m``
``median_rotation_localized_deg``   median rotation error over the localized queries only; null if none
``time_per_query_s``                mean wall-clock time of ``Localizer.localize`` per query, seconds (image
                                    decoding excluded)
``time_per_query_median_s``         median of the same
``time_per_stage_s``                dict stage -> ``{"mean": s, "median": s, "count": n}`` from the localizer's own
                                    ``timings``, over the ``count`` queries that report that stage, in the order
                                    the stages first appear
``map_bytes``                       bytes on disk of the map package (or of the layers the method uses), or null
``peak_memory_bytes``               peak resident set size of the whole process (``getrusage`` ``ru_maxrss``) at
                                    the end of the run, bytes: process-wide and since process start, so it
                                    includes loading the models and the map; null where unavailable
``peak_memory_at_start_bytes``      the same peak just before the first query: when it equals
                                    ``peak_memory_bytes``, the peak happened before localizing started
``peak_python_memory_bytes``        peak of memory traced by ``tracemalloc`` (Python and numpy allocations, not
                                    torch's or native libraries') during the run; null when tracing was off
``failure_reasons``                 dict reason -> number of failed queries (``info["failure_reason"]`` of the
                                    result, the message of a SeglocError, or ``"unknown"``)
``queries_without_overlap``         names of the queries that see too few map points at their ground-truth pose
                                    (see :func:`segloc.evaluate.run.check_query_overlap`); null when not checked
``num_with_covariance``             localized queries whose result carries a valid covariance (the next keys
                                    are over these)
``nees_mean``                       mean NEES (normalized estimation error squared, 6-DoF,
                                    :func:`segloc.geometry.pose.normalized_estimation_error_squared`): 6 for a
                                    covariance that fits the errors, larger when it is overconfident; null
                                    without covariances
``nees_median``                     median NEES (5.35 for a covariance that fits, the median of chi-square 6)
``coverage_95``                     fraction of those queries whose true pose lies inside the 95 % ellipsoid
                                    of the covariance (NEES <= chi2(6).ppf(0.95) = 12.59): 0.95 when it fits
``derived_options``                 the ``localize:`` options the localizer derived from the map because the config
                                    left them null (its ``derived_options``, e.g. SegLoc's
                                    ``refinement.max_translation_change``), name -> value; null when none
``map_scale``                       the map's scale the localizer measured (its ``map_scale``,
                                    :class:`segloc.maps.scale.MapScale`: ``image_spacing``, ``scene_depth``,
                                    ``extent`` in metres, ``num_images``, ``num_points``); null when it has none
==================================  =================================================================================

Keys of each per-query record (:func:`per_query_records`, written to ``per_query.json``):

==================================  =================================================================================
key                                 meaning
==================================  =================================================================================
``name``                            image name in the dataset (relative to ``images/``)
``timestamp``                       the record's timestamp (seconds), or null when the dataset has none
``success``                         whether the localizer returned a pose
``translation_error_m``             distance between estimated and true camera centres, metres; null if failed
``rotation_error_deg``              rotation angle between estimate and truth, degrees; null if failed
``num_inliers``                     the localizer's inlier count (or its own support measure)
``time_s``                          wall-clock time of ``Localizer.localize`` for this query, seconds
``timings``                         the localizer's seconds per stage for this query
``failure_reason``                  why it failed (see ``failure_reasons`` above); null on success
``cam_from_world_gt``               ground truth ``{"quat_wxyz": [w, x, y, z], "translation": [x, y, z]}``
``cam_from_world_est``              the estimate in the same form; null if failed
``nees``                            NEES of the estimate under its covariance (see ``nees_mean``); null when
                                    failed or without covariance
``inside_95``                       whether the true pose is inside the covariance's 95 % ellipsoid; null when
                                    ``nees`` is
``covariance``                      the estimate's (6, 6) covariance (:mod:`segloc.geometry.pose`) as nested lists;
                                    null when failed or without covariance
``position_std_m``                  square root of the largest eigenvalue of the position covariance, metres
                                    (what the publishing gate compares with ``max_position_std``); null when
                                    ``nees`` is
``info``                            the localizer's method-specific details, made JSON-safe (numpy arrays of more
                                    than 64 values are replaced by a short description)
==================================  =================================================================================
"""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import segloc
from segloc.errors import SeglocError
from segloc.geometry.pose import CHI2_6DOF_95, normalized_estimation_error_squared
from segloc.geometry.transforms import Rigid3, pose_error
from segloc.localize.frames import pose_uncertainty

METRICS_FORMAT = "segloc-metrics"
METRICS_FORMAT_VERSION = 1

#: Recall thresholds: name -> (translation metres, rotation degrees).
THRESHOLDS: dict[str, tuple[float, float]] = {
    "0.25m_2deg": (0.25, 2.0),
    "0.5m_5deg": (0.5, 5.0),
    "5m_10deg": (5.0, 10.0),
    "5cm_5deg": (0.05, 5.0),
}

_MAX_INFO_ARRAY_SIZE = 64


@dataclass
class QueryResult:
    """The evaluation of one query.

    Attributes:
        name: image name in the dataset.
        cam_from_world_gt: ground-truth pose.
        cam_from_world_est: estimated pose, None when localization failed.
        translation_error_m: distance between the camera centres, metres (inf if failed).
        rotation_error_deg: rotation angle between estimate and truth, degrees (inf if failed).
        num_inliers: the localizer's inlier count.
        timings: the localizer's seconds per stage.
        info: the localizer's method-specific details.
        timestamp: seconds, when the dataset has timestamps.
        time_s: wall-clock seconds of the ``localize`` call.
        failure_reason: why it failed; None on success.
        covariance: (6, 6) covariance of the estimate (:mod:`segloc.geometry.pose`), or None.
        nees: NEES of the estimate under ``covariance``; None without both (or when the
            covariance is not positive definite).
    """

    name: str
    cam_from_world_gt: Rigid3
    cam_from_world_est: Rigid3 | None
    translation_error_m: float
    rotation_error_deg: float
    num_inliers: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    timestamp: float | None = None
    time_s: float = 0.0
    failure_reason: str | None = None
    covariance: np.ndarray | None = None
    nees: float | None = None

    @property
    def success(self) -> bool:
        return self.cam_from_world_est is not None

    @classmethod
    def from_estimate(
        cls,
        name: str,
        cam_from_world_gt: Rigid3,
        cam_from_world_est: Rigid3 | None,
        num_inliers: int = 0,
        timings: dict[str, float] | None = None,
        info: dict[str, Any] | None = None,
        timestamp: float | None = None,
        time_s: float = 0.0,
        failure_reason: str | None = None,
        covariance: np.ndarray | None = None,
    ) -> QueryResult:
        """Build a result, computing the errors with :func:`segloc.geometry.pose_error`.

        A failed query (``cam_from_world_est`` None) gets infinite errors and a failure
        reason (``info["failure_reason"]`` when not given, else ``"unknown"``). With a
        ``covariance``, a localized query gets its NEES.
        """
        info = dict(info or {})
        nees = None
        if cam_from_world_est is None:
            t_err, r_err = math.inf, math.inf
            covariance = None
            if failure_reason is None:
                failure_reason = str(info.get("failure_reason", "unknown"))
        else:
            t_err, r_err = pose_error(cam_from_world_est, cam_from_world_gt)
            failure_reason = None
            if covariance is not None:
                covariance = np.asarray(covariance, dtype=np.float64)
                try:
                    nees = normalized_estimation_error_squared(cam_from_world_est, cam_from_world_gt, covariance)
                except SeglocError:  # not a valid covariance: the query counts as one without
                    nees = None
        return cls(
            name=name,
            cam_from_world_gt=cam_from_world_gt,
            cam_from_world_est=cam_from_world_est,
            translation_error_m=t_err,
            rotation_error_deg=r_err,
            num_inliers=int(num_inliers),
            timings={str(k): float(v) for k, v in (timings or {}).items()},
            info=info,
            timestamp=timestamp,
            time_s=float(time_s),
            failure_reason=failure_reason,
            covariance=covariance,
            nees=nees,
        )


def recall_at(
    translation_errors_m: np.ndarray, rotation_errors_deg: np.ndarray, max_translation_m: float, max_rotation_deg: float
) -> float:
    """Fraction of queries with ``t_err <= max_translation_m`` and ``r_err <= max_rotation_deg``.

    Args:
        translation_errors_m: (N,) errors, inf for failed queries.
        rotation_errors_deg: (N,) errors, inf for failed queries.
    """
    t = np.asarray(translation_errors_m, dtype=np.float64)
    r = np.asarray(rotation_errors_deg, dtype=np.float64)
    if len(t) == 0:
        return 0.0
    return float(np.mean((t <= max_translation_m) & (r <= max_rotation_deg)))


def covariance_consistency(nees: Sequence[float]) -> dict[str, Any]:
    """Mean and median NEES and 95 %-ellipsoid coverage of (N,) NEES values.

    Returns:
        ``{"num_with_covariance": N, "nees_mean", "nees_median", "coverage_95"}`` (the last three
        None when N is 0); a covariance that fits the errors gives about 6, 5.35 and 0.95.
    """
    values = np.asarray(nees, dtype=np.float64).reshape(-1)
    if len(values) == 0:
        return {"num_with_covariance": 0, "nees_mean": None, "nees_median": None, "coverage_95": None}
    return {
        "num_with_covariance": len(values),
        "nees_mean": float(np.mean(values)),
        "nees_median": float(np.median(values)),
        "coverage_95": float(np.mean(values <= CHI2_6DOF_95)),
    }


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process since it started, bytes (None where unavailable).

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS.
    """
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (AttributeError, OSError):  # pragma: no cover - platforms without getrusage
        return None
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _median(values: Sequence[float]) -> float | None:
    """Median (inf allowed in ``values``); None when empty or infinite."""
    if len(values) == 0:
        return None
    return _finite_or_none(float(np.median(np.asarray(values, dtype=np.float64))))


def _stage_statistics(results: Sequence[QueryResult]) -> dict[str, dict[str, float | int]]:
    per_stage: dict[str, list[float]] = {}
    for result in results:
        for stage, seconds in result.timings.items():
            per_stage.setdefault(stage, []).append(float(seconds))
    return {
        stage: {"mean": float(np.mean(values)), "median": float(np.median(values)), "count": len(values)}
        for stage, values in per_stage.items()
    }


def summarize(
    results: Sequence[QueryResult],
    map_bytes: int | None = None,
    peak_memory_bytes: int | None = None,
    *,
    peak_memory_at_start_bytes: int | None = None,
    peak_python_memory_bytes: int | None = None,
    method: str | None = None,
    map_path: str | Path | None = None,
    dataset: str | Path | None = None,
    queries_without_overlap: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The metrics dict of an evaluation run (keys documented in the module docstring).

    Args:
        results: one entry per query, failed ones included.
        map_bytes: size of the map on disk.
        peak_memory_bytes: process peak RSS at the end of the run (:func:`peak_rss_bytes`).
        peak_memory_at_start_bytes: process peak RSS before the first query.
        peak_python_memory_bytes: ``tracemalloc`` peak during the run.
        method, map_path, dataset: provenance stored as-is.
        queries_without_overlap: queries that see too few map points (None: not checked).

    Returns:
        A JSON-safe dict: non-finite values are None.

    Raises:
        SeglocError: when ``results`` is empty.
    """
    if len(results) == 0:
        raise SeglocError("no query results to summarize: the evaluation ran on zero queries")
    t_err = np.array([r.translation_error_m for r in results], dtype=np.float64)
    r_err = np.array([r.rotation_error_deg for r in results], dtype=np.float64)
    localized = np.array([r.success for r in results], dtype=bool)
    times = np.array([r.time_s for r in results], dtype=np.float64)
    failure_reasons: dict[str, int] = {}
    for result in results:
        if not result.success:
            reason = result.failure_reason or "unknown"
            failure_reasons[reason] = failure_reasons.get(reason, 0) + 1
    return {
        "format": METRICS_FORMAT,
        "format_version": METRICS_FORMAT_VERSION,
        "segloc_version": segloc.__version__,
        "method": method,
        "map_path": None if map_path is None else str(map_path),
        "dataset": None if dataset is None else str(dataset),
        "num_queries": len(results),
        "num_localized": int(localized.sum()),
        "num_failed": int((~localized).sum()),
        "recall": {name: recall_at(t_err, r_err, t, r) for name, (t, r) in THRESHOLDS.items()},
        "thresholds": {name: {"translation_m": t, "rotation_deg": r} for name, (t, r) in THRESHOLDS.items()},
        "median_translation_m": _median(t_err),
        "median_rotation_deg": _median(r_err),
        "median_translation_localized_m": _median(t_err[localized]),
        "median_rotation_localized_deg": _median(r_err[localized]),
        "time_per_query_s": float(np.mean(times)),
        "time_per_query_median_s": float(np.median(times)),
        "time_per_stage_s": _stage_statistics(results),
        "map_bytes": None if map_bytes is None else int(map_bytes),
        "peak_memory_bytes": None if peak_memory_bytes is None else int(peak_memory_bytes),
        "peak_memory_at_start_bytes": None if peak_memory_at_start_bytes is None else int(peak_memory_at_start_bytes),
        "peak_python_memory_bytes": None if peak_python_memory_bytes is None else int(peak_python_memory_bytes),
        "failure_reasons": failure_reasons,
        "queries_without_overlap": None if queries_without_overlap is None else [str(n) for n in queries_without_overlap],
        **covariance_consistency([r.nees for r in results if r.nees is not None]),
    }


def _pose_dict(pose: Rigid3 | None) -> dict[str, list[float]] | None:
    if pose is None:
        return None
    return {"quat_wxyz": pose.quat_wxyz.tolist(), "translation": pose.translation.tolist()}


def pose_from_record(value: Mapping[str, Any] | None) -> Rigid3 | None:
    """A pose of ``per_query.json`` (``{"quat_wxyz", "translation"}``, or null) as a :class:`Rigid3`."""
    if not value:
        return None
    return Rigid3(np.asarray(value["quat_wxyz"], np.float64), np.asarray(value["translation"], np.float64))


def per_query_records(results: Sequence[QueryResult]) -> list[dict[str, Any]]:
    """One JSON-safe dict per query (keys documented in the module docstring)."""
    return [
        {
            "name": r.name,
            "timestamp": to_json_safe(r.timestamp),
            "success": r.success,
            "translation_error_m": _finite_or_none(r.translation_error_m),
            "rotation_error_deg": _finite_or_none(r.rotation_error_deg),
            "num_inliers": int(r.num_inliers),
            "time_s": float(r.time_s),
            "timings": {k: float(v) for k, v in r.timings.items()},
            "failure_reason": r.failure_reason,
            "cam_from_world_gt": _pose_dict(r.cam_from_world_gt),
            "cam_from_world_est": _pose_dict(r.cam_from_world_est),
            "covariance": None if r.covariance is None else to_json_safe(r.covariance),
            "nees": to_json_safe(r.nees),
            "inside_95": None if r.nees is None else bool(r.nees <= CHI2_6DOF_95),
            "position_std_m": None if r.nees is None else pose_uncertainty(r.covariance)[0],
            "info": to_json_safe(r.info),
        }
        for r in results
    ]


def to_json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts.

    Non-finite floats become None, numpy scalars and small arrays plain Python values, numpy
    arrays of more than 64 values a short description, poses ``{"quat_wxyz", "translation"}``
    dicts, paths strings, and anything else its ``str``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return _finite_or_none(float(value))
    if isinstance(value, np.ndarray):
        if value.size > _MAX_INFO_ARRAY_SIZE:
            return f"<array shape {list(value.shape)} dtype {value.dtype}>"
        return to_json_safe(value.tolist())
    if isinstance(value, Rigid3):
        return _pose_dict(value)
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return str(value)
