"""Evaluation outputs: metrics JSON, TUM trajectories, plots, and a one-screen summary.

Output folder written by :func:`write_report`::

    OUT/
      metrics.json             totals (keys: see segloc.evaluate.metrics)
      per_query.json           a list with one record per query (keys: see segloc.evaluate.metrics)
      estimates_tum.txt        estimated poses of the localized queries, TUM format
      groundtruth_tum.txt      ground-truth poses of all queries, TUM format
      errors_cdf.png           cumulative distribution of the translation and rotation errors
      trajectory_topview.png   top view of true camera centres, estimates and failures

TUM lines are ``timestamp tx ty tz qx qy qz qw``: the camera pose in the world,
``world_from_cam`` (camera centre and orientation, quaternion scalar LAST), sorted by time, so
``evo_ape tum groundtruth_tum.txt estimates_tum.txt`` associates them by timestamp. The
timestamp is the query's ``timestamp`` (seconds: the last field of the dataset line, a bag's
header stamps) when every query has a distinct one, otherwise the query's index in the
dataset's query list (0, 1, 2, ...), in both files alike; the files then say so in a header
comment (:data:`INDEX_STAMPS_COMMENT`), since a duration or speed evo derives from them is not
in seconds. ``estimates_tum.txt`` holds the localized queries only: with failed queries,
evo's statistics are those of ``median_translation_localized_m``, not of the all-query
``median_translation_m`` (see :mod:`segloc.evaluate.metrics`).

Every file is written to a temporary file beside it and renamed into place. Plots use
matplotlib's object API with the Agg canvas: no display and no global backend change.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloc.errors import SeglocError
from segloc.evaluate.metrics import THRESHOLDS, QueryResult, per_query_records, to_json_safe
from segloc.fileio import atomic_write
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

METRICS_FILE = "metrics.json"
PER_QUERY_FILE = "per_query.json"
ESTIMATES_TUM_FILE = "estimates_tum.txt"
GROUNDTRUTH_TUM_FILE = "groundtruth_tum.txt"
ERRORS_CDF_FILE = "errors_cdf.png"
TRAJECTORY_FILE = "trajectory_topview.png"

TUM_HEADER = "# timestamp tx ty tz qx qy qz qw (world_from_cam: camera centre and orientation in the world)\n"
#: The header comment of TUM files whose timestamps are query indices.
INDEX_STAMPS_COMMENT = (
    "# the timestamps are query indices (0, 1, 2, ...), not seconds: the queries have no distinct timestamps "
    "(durations and speeds are not in seconds)\n"
)


# --- files ------------------------------------------------------------------------------
def write_json(path: str | Path, value: Any) -> Path:
    path = Path(path)
    text = json.dumps(to_json_safe(value), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> Path:
    """Write the metrics dict as strict JSON (non-finite numbers as null), atomically."""
    return write_json(path, metrics)


def write_per_query(path: str | Path, results: Sequence[QueryResult]) -> Path:
    """Write the per-query records (:func:`segloc.evaluate.metrics.per_query_records`) as a JSON list."""
    return write_json(path, per_query_records(results))


def write_tum_trajectory(path: str | Path, stamps: Sequence[float], world_from_cam: Sequence[Rigid3], comment: str = "") -> Path:
    """Write poses in TUM format: ``timestamp tx ty tz qx qy qz qw`` per line, sorted by time.

    Args:
        stamps: (N,) timestamps, seconds.
        world_from_cam: N camera poses in the world (the inverse of ``cam_from_world``).
        comment: more header lines, each starting with ``#`` (e.g. :data:`INDEX_STAMPS_COMMENT`).
    """
    path = Path(path)
    if len(stamps) != len(world_from_cam):
        raise SeglocError(f"{path}: {len(stamps)} timestamps for {len(world_from_cam)} poses")
    lines = []
    for i in np.argsort(np.asarray(stamps, dtype=np.float64), kind="stable"):
        pose = world_from_cam[i]
        values = (float(stamps[i]), *pose.translation, *pose.quat_xyzw)
        lines.append(" ".join(repr(float(v)) for v in values) + "\n")
    text = TUM_HEADER + comment + "".join(lines)
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def read_tum_trajectory(path: str | Path) -> tuple[np.ndarray, list[Rigid3]]:
    """Read a TUM trajectory: timestamps (N,) and N ``world_from_cam`` poses."""
    path = Path(path)
    if not path.is_file():
        raise SeglocError(f"trajectory file {path} does not exist")
    stamps: list[float] = []
    poses: list[Rigid3] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 8:
            raise SeglocError(f"{path}:{number}: expected 'timestamp tx ty tz qx qy qz qw', got {len(fields)} fields")
        try:
            values = [float(v) for v in fields]
        except ValueError as exc:
            raise SeglocError(f"{path}:{number}: malformed number ({exc})") from None
        stamps.append(values[0])
        poses.append(Rigid3.from_quat_xyzw(values[4:8], values[1:4]))
    return np.asarray(stamps, dtype=np.float64), poses


def trajectory_stamps(results: Sequence[QueryResult]) -> tuple[np.ndarray, bool]:
    """(N,) TUM timestamps: the queries' own when all are set and distinct, else their indices; and whether they are the queries' own."""
    stamps = [r.timestamp for r in results]
    if all(s is not None for s in stamps) and len(set(stamps)) == len(stamps):
        return np.asarray(stamps, dtype=np.float64), True
    if any(s is not None for s in stamps):
        logger.warning("some query timestamps are missing or repeated: the TUM trajectories use the query index as timestamp")
    return np.arange(len(results), dtype=np.float64), False


# --- plots ------------------------------------------------------------------------------
def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save_figure(figure, path: Path) -> Path:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def plot_error_cdf(path: str | Path, results: Sequence[QueryResult], title: str | None = None) -> Path:
    """Plot the cumulative fraction of ALL queries under each translation / rotation error.

    Failed queries never enter the curves, which therefore end at the localized fraction. The
    recall thresholds are drawn as dashed vertical lines; x axes are logarithmic (errors below
    1 mm / 0.01 deg are drawn at those values).
    """
    from matplotlib.ticker import NullLocator

    path = Path(path)
    n = len(results)
    figure = new_figure(10.0, 4.4)
    axes = figure.subplots(1, 2)
    panels = [
        ("translation error [m]", [r.translation_error_m for r in results], sorted({t for t, _ in THRESHOLDS.values()}), 1e-3),
        ("rotation error [deg]", [r.rotation_error_deg for r in results], sorted({r for _, r in THRESHOLDS.values()}), 1e-2),
    ]
    for ax, (label, errors, thresholds, floor) in zip(axes, panels):
        finite = np.sort(np.asarray([e for e in errors if math.isfinite(e)], dtype=np.float64))
        finite = np.maximum(finite, floor)
        low = min(floor * 10, thresholds[0] / 2) if len(finite) == 0 else min(finite[0], thresholds[0]) / 2
        high = thresholds[-1] * 2 if len(finite) == 0 else max(finite[-1], thresholds[-1]) * 2
        if len(finite):
            xs = np.concatenate([[low], np.repeat(finite, 2), [high]])
            ys = np.concatenate([[0.0, 0.0], np.repeat(np.arange(1, len(finite) + 1) / n, 2)])
            ax.plot(xs, ys, color="tab:blue", linewidth=2, label=f"{len(finite)}/{n} localized")
        for threshold in thresholds:
            ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(0.0, 1.02)
        top = ax.secondary_xaxis("top")
        top.set_xticks(thresholds, labels=[f"{t:g}" for t in thresholds], color="tab:red", fontsize=8)
        top.xaxis.set_minor_locator(NullLocator())
        top.set_xlabel("recall thresholds", color="tab:red", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of all queries")
        ax.grid(True, which="major", alpha=0.3)
        if len(finite):
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "no query localized", transform=ax.transAxes, ha="center", va="center", color="tab:red")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def _topview_axes(centers: np.ndarray) -> tuple[int, int]:
    """The two world axes (in index order) along which the camera centres (N, 3) spread most."""
    spread = np.var(centers, axis=0) if len(centers) > 1 else np.array([1.0, 1.0, 0.0])
    a, b = sorted(int(i) for i in np.argsort(-spread, kind="stable")[:2])
    return a, b


def plot_trajectory_topview(
    path: str | Path,
    results: Sequence[QueryResult],
    mapping_centers: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """Plot the true query camera centres, the estimates, and failures, seen from above.

    "Above" is along the world axis with the least spread of the camera centres (z for a
    robot map with z up), so the plot shows the other two axes. The view is fitted to the true
    query and mapping camera centres; estimates outside it are drawn clipped to its border
    with a distinct marker.

    Args:
        mapping_centers: (M, 3) mapping camera centres, drawn in grey when given.
    """
    path = Path(path)
    gt = np.array([r.cam_from_world_gt.center for r in results]).reshape(-1, 3)
    mapping = np.zeros((0, 3)) if mapping_centers is None else np.asarray(mapping_centers, dtype=np.float64).reshape(-1, 3)
    reference = np.concatenate([gt, mapping])
    a, b = _topview_axes(reference)
    lower, upper = reference[:, [a, b]].min(axis=0), reference[:, [a, b]].max(axis=0)
    margin = np.maximum(0.15 * (upper - lower).max(initial=0.0), 0.5)
    lower, upper = lower - margin, upper + margin

    extent = upper - lower
    figure = new_figure(8.0, float(np.clip(7.0 * extent[1] / extent[0] + 1.0, 4.0, 9.0)))
    ax = figure.subplots()
    if len(mapping):
        ax.scatter(mapping[:, a], mapping[:, b], s=8, color="0.65", label="mapping cameras", zorder=1)
    ax.scatter(gt[:, a], gt[:, b], s=22, color="tab:blue", label="query ground truth", zorder=3)
    localized = [(g, r.cam_from_world_est.center) for g, r in zip(gt, results) if r.cam_from_world_est is not None]
    if localized:
        true_xy = np.array([g[[a, b]] for g, _ in localized])
        est_xy = np.array([e[[a, b]] for _, e in localized])
        clipped = np.clip(est_xy, lower, upper)
        outside = np.any(clipped != est_xy, axis=1)
        for (tx, ty), (ex, ey) in zip(true_xy, clipped):
            ax.plot([tx, ex], [ty, ey], color="tab:orange", linewidth=1, zorder=2)
        inside = ~outside
        ax.scatter(clipped[inside, 0], clipped[inside, 1], s=30, marker="+", color="tab:orange", label="estimate", zorder=4)
        if outside.any():
            ax.scatter(
                clipped[outside, 0],
                clipped[outside, 1],
                s=40,
                marker=">",
                color="tab:purple",
                label="estimate outside view (clipped)",
                zorder=4,
            )
    failed = np.array([g[[a, b]] for g, r in zip(gt, results) if r.cam_from_world_est is None]).reshape(-1, 2)
    if len(failed):
        ax.scatter(failed[:, 0], failed[:, 1], s=60, marker="x", color="tab:red", label="failed", zorder=5)
    names = "xyz"
    ax.set_xlabel(f"world {names[a]} [m]")
    ax.set_ylabel(f"world {names[b]} [m]")
    ax.update_datalim([lower, upper])  # the view box; equal aspect may widen it, never cut it
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view(tight=True)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or f"top view: {len(localized)}/{len(results)} localized")
    return save_figure(figure, path)


# --- all outputs ------------------------------------------------------------------------
def write_report(
    output_dir: str | Path,
    metrics: dict[str, Any],
    results: Sequence[QueryResult],
    mapping_centers: np.ndarray | None = None,
    plots: bool = True,
) -> dict[str, Path]:
    """Write every output of an evaluation into ``output_dir`` (layout in the module docstring).

    Returns:
        File kind (``metrics``, ``per_query``, ``estimates_tum``, ``groundtruth_tum``,
        ``errors_cdf``, ``trajectory_topview``) -> path written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stamps, own_stamps = trajectory_stamps(results)
    comment = "" if own_stamps else INDEX_STAMPS_COMMENT
    estimated = [i for i, r in enumerate(results) if r.cam_from_world_est is not None]
    files = {
        "metrics": write_metrics(output_dir / METRICS_FILE, metrics),
        "per_query": write_per_query(output_dir / PER_QUERY_FILE, results),
        "estimates_tum": write_tum_trajectory(
            output_dir / ESTIMATES_TUM_FILE, stamps[estimated], [results[i].cam_from_world_est.inverse() for i in estimated], comment
        ),
        "groundtruth_tum": write_tum_trajectory(
            output_dir / GROUNDTRUTH_TUM_FILE, stamps, [r.cam_from_world_gt.inverse() for r in results], comment
        ),
    }
    if plots:
        label = metrics.get("method") or "localizer"
        recall = metrics.get("recall", {})
        title = f"{label}: " + ", ".join(f"{name} {100 * value:.1f}%" for name, value in recall.items())
        files["errors_cdf"] = plot_error_cdf(output_dir / ERRORS_CDF_FILE, results, title=title)
        files["trajectory_topview"] = plot_trajectory_topview(output_dir / TRAJECTORY_FILE, results, mapping_centers)
    logger.info("wrote evaluation report to %s", output_dir)
    return files


# --- text -------------------------------------------------------------------------------
def format_bytes(value: int | None) -> str:
    """``value`` bytes in B, KiB, MiB or GiB with one decimal; ``n/a`` for None."""
    if value is None:
        return "n/a"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{value} B"  # pragma: no cover


def _format_seconds(seconds: float) -> str:
    return f"{1000.0 * seconds:.1f} ms" if seconds < 1.0 else f"{seconds:.3f} s"


def _format_errors(translation_m: float | None, rotation_deg: float | None, missing: str) -> str:
    if translation_m is None or rotation_deg is None:
        return missing
    return f"{translation_m:.3f} m, {rotation_deg:.2f} deg"


def format_summary(metrics: dict[str, Any]) -> str:
    """A one-screen, human-readable summary of a metrics dict (what the CLI prints)."""
    n, localized = metrics["num_queries"], metrics["num_localized"]
    median_all = _format_errors(metrics["median_translation_m"], metrics["median_rotation_deg"], "inf (half or more failed)")
    median_localized = _format_errors(metrics["median_translation_localized_m"], metrics["median_rotation_localized_deg"], "n/a")
    lines = [
        f"method {metrics.get('method') or 'n/a'}   map {metrics.get('map_path') or 'n/a'}   dataset {metrics.get('dataset') or 'n/a'}",
        f"localized        {localized}/{n} queries ({100.0 * localized / max(n, 1):.1f}%)",
        "recall           " + "   ".join(f"{name} {100.0 * value:5.1f}%" for name, value in metrics["recall"].items()),
        f"median error     all queries: {median_all}",
        f"                 localized only: {median_localized}",
        f"time per query   mean {_format_seconds(metrics['time_per_query_s'])}   median {_format_seconds(metrics['time_per_query_median_s'])}",
    ]
    for stage, stats in metrics.get("time_per_stage_s", {}).items():
        lines.append(
            f"  {stage:<14} mean {_format_seconds(stats['mean'])}   median {_format_seconds(stats['median'])}   ({stats['count']} queries)"
        )
    lines.append(f"map size         {format_bytes(metrics.get('map_bytes'))}")
    memory = f"peak memory      {format_bytes(metrics.get('peak_memory_bytes'))} (process RSS)"
    if metrics.get("peak_python_memory_bytes") is not None:
        memory += f", {format_bytes(metrics['peak_python_memory_bytes'])} traced Python allocations"
    lines.append(memory)
    if metrics.get("num_with_covariance"):
        lines.append(
            f"covariance       NEES mean {metrics['nees_mean']:.2f} median {metrics['nees_median']:.2f} (6 fits)   "
            f"95% ellipsoid holds the truth {100.0 * metrics['coverage_95']:.1f}% ({metrics['num_with_covariance']} queries)"
        )
    if metrics.get("failure_reasons"):
        reasons = sorted(metrics["failure_reasons"].items(), key=lambda item: -item[1])
        lines.append("failures         " + "; ".join(f"{count}x {reason}" for reason, count in reasons[:3]))
    if metrics.get("queries_without_overlap"):
        lines.append(f"no map overlap   {len(metrics['queries_without_overlap'])} queries see too few map points")
    if metrics.get("derived_options"):
        lines.append("derived options  " + ", ".join(f"{name} {value:g}" for name, value in metrics["derived_options"].items()))
    return "\n".join(lines)


def format_comparison(rows: dict[str, dict[str, Any]], first_column: str = "method", extra: Sequence[tuple[str, Any]] = ()) -> str:
    """Several evaluations side by side, one row each, as a fixed-width text table.

    Args:
        rows: name -> a metrics dict (:func:`segloc.evaluate.metrics.summarize`), optionally
            with ``num_points`` and ``map_bytes_per_point`` (map bytes / 3D points).
        first_column: header of the name column.
        extra: more columns, ``(header, function of the row -> text)``, before the map columns.

    Columns: recall (%) at each threshold of the first row, median errors over all queries,
    median time per query, the extras, map bytes, bytes per 3D point, peak memory, and the
    median time of each stage.
    """
    thresholds = list(next(iter(rows.values()), {}).get("recall") or {})

    def number(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
        return "-" if value is None else f"{value * scale:.{digits}f}"

    header = [first_column, *thresholds, "med t (m)", "med R (deg)", "ms/query", *(name for name, _ in extra)]
    header += ["map", "B/point", "peak mem", "stages, median ms"]
    lines = [header]
    for name, row in rows.items():
        recall = row.get("recall") or {}
        stages = row.get("time_per_stage_s") or {}
        per_query = row.get("time_per_query_median_s", row.get("time_per_query_s"))
        lines.append(
            [
                name,
                *(number(recall.get(t), 100.0, 1) for t in thresholds),
                number(row.get("median_translation_m"), digits=3),
                number(row.get("median_rotation_deg")),
                number(per_query, 1000.0, 1),
                *(str(function(row)) for _, function in extra),
                format_bytes(row.get("map_bytes")),
                number(row.get("map_bytes_per_point"), digits=1),
                format_bytes(row.get("peak_memory_bytes")),
                " ".join(f"{stage} {1000.0 * stats['median']:.1f}" for stage, stats in stages.items()),
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(str(c).ljust(w) for c, w in zip(line[:-1], widths)), str(line[-1])]).rstrip() for line in lines)
