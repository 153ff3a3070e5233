"""The validation gate: a candidate map is published only when it localizes held-out queries as well as the store's latest.

Each gate dataset is a recording's dataset folder whose ``query.txt`` lists held-out images
with their ground-truth poses (the newest recording and earlier ones, so that a map that
learns the new place but forgets the old one is refused too). The candidate and the store's
latest version (pulled to a temporary folder, checksums checked) localize every query with
the evaluator (:func:`segloc.evaluate.run.evaluate_localizer`, relocalizing each query, no
tracking); the candidate is refused when, on any dataset, its recall at
``GateConfig.recall_threshold`` is lower than the latest's by more than
``GateConfig.max_recall_drop``, or lower than ``GateConfig.min_recall``. The report (both
metrics per dataset, the tolerance, the decision and its reason) is stored with the published
version.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segloc.config import check_options, config_from_dict, option
from segloc.errors import SeglocError

logger = logging.getLogger("segloc")


@dataclass
class GateConfig:
    """Options of the validation gate (the ``gate:`` section of a config file).

    Attributes:
        recall_threshold: the threshold whose recall is compared, a key of
            :data:`segloc.evaluate.metrics.THRESHOLDS` (``0.25m_2deg``, ``0.5m_5deg``, ``5m_10deg``, ``5cm_5deg``).
        max_recall_drop: the largest recall loss (a fraction of the queries) tolerated against
            the latest version, on each dataset.
        min_recall: the recall every version must reach on each dataset (also the first one,
            which has no latest to compare with).
        limit: evaluate only the first N queries of each dataset (null: all).
    """

    recall_threshold: str = "0.5m_5deg"
    max_recall_drop: float = option(0.05, ge=0.0, le=1.0)
    min_recall: float = option(0.0, ge=0.0, le=1.0)
    limit: int | None = option(None, ge=1)

    def __post_init__(self) -> None:
        from segloc.evaluate.metrics import THRESHOLDS

        check_options(self, "gate")
        if self.recall_threshold not in THRESHOLDS:
            raise SeglocError(f"gate.recall_threshold must be one of {', '.join(THRESHOLDS)}, got {self.recall_threshold!r}")


def gate_config(values: dict[str, Any] | None = None) -> GateConfig:
    """The :class:`GateConfig` of a config file's ``gate`` section (unknown keys and values out of range are errors)."""
    return config_from_dict(GateConfig, values, "gate")


def _evaluate(
    map_path: Path, dataset_path: Path, report_dir: Path, config: GateConfig, localize_values: Any, progress: bool
) -> dict[str, Any]:
    """Recall and medians of the map at ``map_path`` on the queries of ``dataset_path`` (every query relocalized)."""
    from segloc.data.dataset import read_dataset
    from segloc.evaluate.replay import MapSummary
    from segloc.evaluate.run import evaluate_localizer
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method

    package = MapPackage.open(map_path)
    method = get_method(package.method)
    localizer = method.load_localizer(package, method.localize_config(localize_values))
    summary = MapSummary.from_package(package)
    metrics = evaluate_localizer(
        localizer,
        read_dataset(dataset_path, require_query=True),
        report_dir,
        map_bytes=summary.bytes,
        progress=progress,
        limit=config.limit,
        plots=False,
        extra={"method": method.name},
    )
    return {
        "num_queries": metrics["num_queries"],
        "recall": metrics["recall"],
        "median_translation_m": metrics["median_translation_m"],
        "median_rotation_deg": metrics["median_rotation_deg"],
    }


def validate_candidate(
    candidate: str | Path,
    store: Any,
    datasets: list[str | Path],
    config: GateConfig | None = None,
    *,
    localize_values: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the map ``candidate`` against the latest version of ``store`` (a :class:`~segloc.maps.store.MapStore`) on ``datasets``.

    Args:
        candidate: the map folder to publish.
        store: the map store; its latest version is the baseline (none in an empty store).
        datasets: dataset folders whose queries are held out (newest recording and earlier ones).
        config: the tolerances.
        localize_values: the ``localize`` section of a config file (the same for both maps).
        progress: progress bars.

    Returns:
        the report: ``accepted``, ``reason``, ``summary`` (printable lines), ``baseline_version``,
        ``config`` and per dataset ``{"dataset", "candidate": metrics, "baseline": metrics or None}``.
    """
    config = config or GateConfig()
    if not datasets:
        raise SeglocError("the validation gate needs at least one dataset folder with held-out queries")
    baseline_version = store.latest()
    key = config.recall_threshold
    entries, refusals = [], []
    with tempfile.TemporaryDirectory(prefix="segloc-gate-") as scratch:
        scratch = Path(scratch)
        baseline_map = None
        if baseline_version is not None:
            baseline_map = store.pull(scratch / "baseline", version=baseline_version)
        for index, dataset in enumerate(datasets):
            dataset = Path(dataset)
            entry: dict[str, Any] = {"dataset": str(dataset)}
            entry["candidate"] = _evaluate(Path(candidate), dataset, scratch / f"candidate_{index}", config, localize_values, progress)
            entry["baseline"] = None
            if baseline_map is not None:
                entry["baseline"] = _evaluate(baseline_map, dataset, scratch / f"baseline_{index}", config, localize_values, progress)
            recall = entry["candidate"]["recall"][key]
            if recall < config.min_recall:
                refusals.append(f"{dataset}: recall at {key} {recall:.3f} < the minimum {config.min_recall:.3f}")
            if entry["baseline"] is not None:
                baseline_recall = entry["baseline"]["recall"][key]
                if recall < baseline_recall - config.max_recall_drop:
                    refusals.append(
                        f"{dataset}: recall at {key} {recall:.3f} < {baseline_recall:.3f} of version {baseline_version} "
                        f"by more than the tolerance {config.max_recall_drop:.3f}"
                    )
            entries.append(entry)
    lines = [f"validation gate ({key}, tolerance {config.max_recall_drop:.3f}, against version {baseline_version}):"]
    for entry in entries:
        baseline = "-" if entry["baseline"] is None else f"{entry['baseline']['recall'][key]:.3f}"
        lines.append(
            f"  {entry['dataset']}: candidate {entry['candidate']['recall'][key]:.3f}, latest {baseline} ({entry['candidate']['num_queries']} queries)"
        )
    accepted = not refusals
    lines.append("accepted" if accepted else "refused: " + "; ".join(refusals))
    report = {
        "accepted": accepted,
        "reason": "; ".join(refusals) if refusals else "no dataset lost recall beyond the tolerance",
        "summary": "\n".join(lines),
        "baseline_version": baseline_version,
        "config": asdict(config),
        "datasets": entries,
    }
    logger.info("%s", report["summary"])
    return report
