"""Does SegLoc's pose covariance mean something? NEES and 95 %-ellipsoid coverage, raw and calibrated.

For each case (a dataset and a SegLoc map of it), the queries are localized twice with the
same map and options, once with ``refinement.covariance: raw`` (``sigma^2 H^-1``, points taken
as independent) and once with ``calibrated`` at ``covariance_scale: 1`` (the cluster sandwich
over image blocks, :mod:`segloc.methods.segloc.refine`). For the localized queries it reports
the NEES (normalized estimation error squared, 6-DoF; 6 on average when the covariance fits the
errors, :func:`segloc.geometry.pose.normalized_estimation_error_squared`) and the fraction of
true poses inside the 95 % ellipsoid (goal: 0.85 to 0.99).

A global scale ``s`` on a covariance divides every NEES by ``s``. ``--fit`` fits the scale that
puts 95 % of the true poses inside the ellipsoid (``s = quantile_95(NEES) / chi2_6(0.95)``) on the
cases named by ``--fit-on`` (default: all) and checks it on the others, and also leave-one-out:
each case with the scale fitted on the other cases. It also gives, per case, the scale that
brings the median NEES to 5.35 (blind to gross failures, which no scale can cover without
making every good pose look useless). Fit on several scenes of different kinds
and conditions, never on one; the shipped default ``covariance_scale`` is the one to put in
``LabelRefinementConfig`` when a fit says the default is off.

It also counts the localized queries the publishing gate would let through
(:func:`segloc.localize.frames.pose_is_confident` with the default
:class:`segloc.localize.pipeline.PublishConfig` thresholds, the camera taken as the base), with
each covariance.

    python benchmarks/covariance.py --case room_lighting DATASET MAP CONFIG --case castle DATASET MAP CONFIG \\
        --fit --work outputs/covariance -o covariance.json

CONFIG is a config file whose ``localize:`` section is used (``refinement.covariance`` and
``covariance_scale`` are set by this script). Output (stdout and ``-o``)::

    {"cases": {NAME: {"num_queries", "raw": STATS, "calibrated_unit": STATS, "calibrated": STATS,
                      "recall_0.25m_2deg": {"raw", "calibrated"}}},
     "default_scale": s0, "fit": {"fit_on": [...], "scale": s, "check": {NAME: STATS}, "leave_one_out": {NAME: {"scale", ...STATS}}}}

with STATS ``{"num_with_covariance", "nees_mean", "nees_median", "coverage_95", "published_fraction"}``
(``calibrated`` at the default ``covariance_scale``, ``calibrated_unit`` at scale 1).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from segloc.config import read_config_file
from segloc.data.dataset import read_dataset
from segloc.evaluate.metrics import covariance_consistency
from segloc.evaluate.run import evaluate_map
from segloc.geometry.pose import CHI2_6DOF_95
from segloc.localize.frames import pose_is_confident
from segloc.localize.pipeline import PublishConfig
from segloc.methods.segloc.refine import LabelRefinementConfig

CHI2_6DOF_MEDIAN = 5.348120627447118  # scipy.stats.chi2.median(6)


def localize(name: str, dataset: Path, map_path: Path, config: Path, covariance: str, work: Path, reuse: bool) -> dict[str, Any]:
    """Evaluate one case with one covariance model (or read a previous evaluation in ``work`` with ``reuse``)."""
    localize_options = copy.deepcopy(read_config_file(config).get("localize") or {})
    refinement = dict(localize_options.get("refinement") or {})
    refinement["covariance"] = covariance
    if covariance == "calibrated":
        refinement["covariance_scale"] = 1.0
        refinement.pop("residual_sigma", None)
    localize_options["refinement"] = refinement
    output = work / name / covariance
    if reuse and (output / "metrics.json").is_file() and (output / "per_query.json").is_file():
        metrics = json.loads((output / "metrics.json").read_text())
    else:
        metrics = evaluate_map(map_path, read_dataset(dataset), output, localize=localize_options, progress=False)
    records = json.loads((output / "per_query.json").read_text())
    return {"metrics": metrics, "records": records}


def statistics(nees: np.ndarray, covariances: list[np.ndarray], scale: float) -> dict[str, Any]:
    """NEES statistics and publishing fraction of the localized queries with covariances scaled by ``scale``."""
    publish = PublishConfig()
    published = [pose_is_confident(scale * c, publish.max_position_std, publish.max_yaw_std_deg) for c in covariances]
    return {
        **covariance_consistency(nees / scale),
        "published_fraction": float(np.mean(published)) if published else None,
    }


def fit_scale(nees: np.ndarray) -> float:
    """The scale that puts 95 % of the true poses inside the 95 % ellipsoid."""
    return float(np.quantile(nees, 0.95) / CHI2_6DOF_95)


def median_scale(nees: np.ndarray) -> float:
    """The scale that brings the median NEES to chi-square 6's (5.35): blind to the few gross failures."""
    return float(np.median(nees) / CHI2_6DOF_MEDIAN)


def case_arrays(run: dict[str, Any], names: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """NEES (n,) and covariances of the localized queries with a covariance, in the order of ``names``."""
    by_name = {r["name"]: r for r in run["records"]}
    nees = [by_name[n]["nees"] for n in names]
    covariances = [np.asarray(by_name[n]["covariance"]) for n in names]
    return np.asarray(nees, dtype=np.float64), covariances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", nargs=4, action="append", metavar=("NAME", "DATASET", "MAP", "CONFIG"), required=True)
    parser.add_argument("--work", type=Path, default=Path("outputs/covariance"))
    parser.add_argument("--fit", action="store_true", help="fit a global scale on --fit-on and check it on the other cases")
    parser.add_argument("--fit-on", nargs="*", default=None, help="case names to fit the scale on (default: all)")
    parser.add_argument("--reuse", action="store_true", help="read the evaluations already in --work instead of running them again")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    default_scale = LabelRefinementConfig().covariance_scale
    cases: dict[str, Any] = {}
    unit_nees: dict[str, np.ndarray] = {}
    unit_covariances: dict[str, list[np.ndarray]] = {}
    for name, dataset, map_path, config in args.case:
        runs = {
            model: localize(name, Path(dataset), Path(map_path), Path(config), model, args.work, args.reuse)
            for model in ("raw", "calibrated")
        }
        # Compare on the queries both runs localized with a covariance (the refinements are the same; only the covariance differs).
        with_covariance = [{r["name"] for r in runs[model]["records"] if r["nees"] is not None} for model in ("raw", "calibrated")]
        names = sorted(with_covariance[0] & with_covariance[1])
        raw_nees, raw_covariances = case_arrays(runs["raw"], names)
        unit_nees[name], unit_covariances[name] = case_arrays(runs["calibrated"], names)
        cases[name] = {
            "num_queries": runs["raw"]["metrics"]["num_queries"],
            "raw": statistics(raw_nees, raw_covariances, 1.0),
            "calibrated_unit": statistics(unit_nees[name], unit_covariances[name], 1.0),
            "calibrated": statistics(unit_nees[name], unit_covariances[name], default_scale),
            "recall_0.25m_2deg": {model: runs[model]["metrics"]["recall"]["0.25m_2deg"] for model in runs},
        }
    report: dict[str, Any] = {"cases": cases, "default_scale": default_scale}
    if args.fit:
        fit_on = args.fit_on or list(cases)
        scale = fit_scale(np.concatenate([unit_nees[n] for n in fit_on]))
        leave_one_out = {}
        for name in cases:
            others = [n for n in cases if n != name]
            if others:
                held_out_scale = fit_scale(np.concatenate([unit_nees[n] for n in others]))
                leave_one_out[name] = {"scale": held_out_scale, **statistics(unit_nees[name], unit_covariances[name], held_out_scale)}
        report["fit"] = {
            "fit_on": fit_on,
            "scale": scale,
            "median_scale_per_case": {n: median_scale(unit_nees[n]) for n in cases},
            "check": {n: statistics(unit_nees[n], unit_covariances[n], scale) for n in cases if n not in fit_on},
            "leave_one_out": leave_one_out,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
