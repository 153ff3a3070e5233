"""Evaluation: run a localizer over a dataset's queries, compute metrics, write reports and plots.

``metrics`` holds the numbers (and the table of every ``metrics.json`` key), ``report`` the
files and plots, ``run`` the loop over the queries (:func:`evaluate_localizer`).
"""

from segloc.evaluate.metrics import THRESHOLDS, QueryResult, peak_rss_bytes, per_query_records, recall_at, summarize, to_json_safe
from segloc.evaluate.report import (
    format_summary,
    plot_error_cdf,
    plot_trajectory_topview,
    read_tum_trajectory,
    write_metrics,
    write_per_query,
    write_report,
    write_tum_trajectory,
)
from segloc.evaluate.run import check_query_overlap, evaluate_localizer

__all__ = [
    "THRESHOLDS",
    "QueryResult",
    "check_query_overlap",
    "evaluate_localizer",
    "format_summary",
    "peak_rss_bytes",
    "per_query_records",
    "plot_error_cdf",
    "plot_trajectory_topview",
    "read_tum_trajectory",
    "recall_at",
    "summarize",
    "to_json_safe",
    "write_metrics",
    "write_per_query",
    "write_report",
    "write_tum_trajectory",
]
