"""Does a method's pose covariance mean something? NEES and 95 %-ellipsoid coverage, before and after a fitted floor.

Every localizer of the library reports a covariance built from what one image shows (SegLoc:
the cluster sandwich of its label refinement; SLD*, the reference and NinjaDesc: PnP's
``sigma^2 (J^T J)^-1``), plus a term for the pixel error that all the points of an image share
and that no within-image statistic sees, ``f^2 M`` with ``M`` the covariance of a pose whose
projections are off by 1 px in common (:func:`segloc.geometry.pose.systematic_pose_covariance`).
The floor ``f`` is the option ``--floor-option`` of the ``localize:`` section
(``refinement.covariance_pixel_floor`` for SegLoc, in pixels of its finest refinement level;
``pnp.pixel_floor`` for the PnP methods, in image pixels).

For each case (a dataset and a map of it), the queries are localized twice with the same map and
options, with the floor at 0 (``C0``) and at 1 px (``C1 = C0 + M``); the poses are the same, so
any

- global scale ``s C0`` (what a single scale factor can do), or
- floor ``C0 + f^2 (C1 - C0)`` (what the option computes at ``f``)

is evaluated without localizing again. For the localized queries it reports the NEES
(normalized estimation error squared, 6-DoF; 6 on average when the covariance fits the errors,
:func:`segloc.geometry.pose.normalized_estimation_error_squared`), the fraction of true poses
inside the 95 % ellipsoid (goal: 0.85 to 0.99) and the fraction the publishing gate lets
through (:func:`segloc.localize.frames.pose_is_confident` with the default
:class:`segloc.localize.pipeline.PublishConfig` thresholds, the camera taken as the base).

``--fit`` fits each model's one parameter (``s`` or ``f``) so that 95 % of the true poses lie
inside the ellipsoid, on the cases named by ``--fit-on`` (default: all) and checks it on the
others; it also fits leave-one-out (each case of the fit with the parameter fitted on the
others of the fit)
and per case alone (at 95 % inside, and at the median NEES of chi-square 6, which a case's few
gross failures do not move). How much the per-case parameters differ says whether one default can serve
unseen places: fit on several scenes of different kinds and conditions, never on one.
``default`` is the covariance at the config's own floor (the library default unless CONFIG
sets it).

    python benchmarks/covariance.py --case room_lighting DATASET MAP CONFIG --case castle DATASET MAP CONFIG \\
        --fit --work outputs/covariance -o covariance.json
    python benchmarks/covariance.py --floor-option pnp.pixel_floor --case ... (an SLD*, reference or NinjaDesc map)

CONFIG is a config file whose ``localize:`` section is used (the floor is set by this script).
Output (stdout and ``-o``)::

    {"floor_option": "...", "cases": {NAME: {"num_queries", "num_with_covariance", "recall_0.25m_2deg",
                      "floor_0": STATS, "default": STATS}},
     "fit": {"fit_on": [...], MODEL: {"parameter", "per_case": {NAME: p}, "per_case_median": {NAME: p},
                                     "check": {NAME: STATS},
                                     "leave_one_out": {NAME: {"parameter", ...STATS}}}}}

with MODEL ``scale`` or ``floor`` and STATS ``{"num_with_covariance", "nees_mean", "nees_median",
"coverage_95", "published_fraction"}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segloc.config import read_config_file
from segloc.data.dataset import read_dataset
from segloc.evaluate.metrics import covariance_consistency, pose_from_record
from segloc.evaluate.run import evaluate_map
from segloc.geometry.pose import CHI2_6DOF_95, pose_perturbation
from segloc.localize.frames import pose_is_confident
from segloc.localize.pipeline import PublishConfig
from segloc.methods.segloc.refine import LabelRefinementConfig

FLOORS = (0.0, 1.0)
"""The floors each case is localized with: ``C0`` and ``C1 = C0 + M``."""


def localize(name: str, dataset: Path, map_path: Path, config: Path, option: str, floor: float, work: Path, reuse: bool) -> dict[str, Any]:
    """Evaluate one case with the floor ``option`` (a dotted path in ``localize:``) at ``floor``.

    With ``reuse``, a previous evaluation in ``work`` is read instead.
    """
    localize_options = copy.deepcopy(read_config_file(config).get("localize") or {})
    *parents, key = option.split(".")
    section = localize_options
    for parent in parents:
        section = section.setdefault(parent, {})
    section[key] = floor
    output = work / name / f"floor_{floor:g}"
    if reuse and (output / "metrics.json").is_file() and (output / "per_query.json").is_file():
        metrics = json.loads((output / "metrics.json").read_text())
    else:
        metrics = evaluate_map(map_path, read_dataset(dataset), output, localize=localize_options, progress=False)
    records = json.loads((output / "per_query.json").read_text())
    return {"metrics": metrics, "records": records}


def config_floor(config: Path, option: str) -> float | None:
    """The floor CONFIG sets itself (None: the library default)."""
    section: Any = read_config_file(config).get("localize") or {}
    for key in option.split("."):
        section = section.get(key) if isinstance(section, dict) else None
    return None if section is None else float(section)


@dataclass
class Case:
    """The localized queries of one case: errors (n, 6), covariances at floor 0 and 1 px (n, 6, 6)."""

    errors: np.ndarray
    floor_0: np.ndarray
    floor_1: np.ndarray

    def nees(self, covariances: np.ndarray) -> np.ndarray:
        """NEES (n,) of the errors under covariances (n, 6, 6)."""
        return np.einsum("ni,ni->n", self.errors, np.linalg.solve(covariances, self.errors[..., None])[..., 0])

    def model(self, name: str, parameter: float) -> np.ndarray:
        """Covariances (n, 6, 6): ``scale`` s C0, ``floor`` C0 + f^2 (C1 - C0)."""
        if name == "scale":
            return parameter * self.floor_0
        return self.floor_0 + parameter**2 * (self.floor_1 - self.floor_0)


def read_case(runs: list[dict[str, Any]]) -> Case:
    """The queries both runs localized with a covariance, in one order (the poses agree; only the covariance differs)."""
    by_run = [{r["name"]: r for r in run["records"] if r.get("covariance") is not None} for run in runs]
    names = sorted(set(by_run[0]) & set(by_run[1]))
    first = by_run[0]
    errors = np.array(
        [
            pose_perturbation(pose_from_record(first[n]["cam_from_world_est"]), pose_from_record(first[n]["cam_from_world_gt"]))
            for n in names
        ]
    ).reshape(-1, 6)
    covariances = [np.array([records[n]["covariance"] for n in names], dtype=np.float64).reshape(-1, 6, 6) for records in by_run]
    return Case(errors, *covariances)


def statistics(case: Case, covariances: np.ndarray) -> dict[str, Any]:
    """NEES statistics and publishing fraction of a case's queries under ``covariances`` (n, 6, 6)."""
    publish = PublishConfig()
    published = [pose_is_confident(c, publish.max_position_std, publish.max_yaw_std_deg) for c in covariances]
    return {
        **covariance_consistency(case.nees(covariances) if len(covariances) else []),
        "published_fraction": float(np.mean(published)) if published else None,
    }


def fit_parameter(cases: list[Case], model: str, share: float = 0.95, threshold: float = CHI2_6DOF_95) -> float | None:
    """The smallest parameter of ``model`` with at least ``share`` of the pooled NEES at most ``threshold``.

    By default the parameter that puts 95 % of the true poses inside the 95 % ellipsoid; with
    ``share=0.5, threshold=CHI2_6DOF_MEDIAN`` the one that brings the median NEES to chi-square
    6's, which the few gross failures of a case do not move. Every model's NEES falls as its
    parameter grows, so it is found by bisection on its logarithm. None without queries.
    """
    cases = [c for c in cases if len(c.errors)]
    if not cases:
        return None

    def inside(parameter: float) -> float:
        nees = np.concatenate([c.nees(c.model(model, parameter)) for c in cases])
        return float(np.mean(nees <= threshold))

    low, high = 1e-6, 1e8
    if inside(low) >= share:
        return low
    if inside(high) < share:
        return high
    for _ in range(60):
        middle = math.sqrt(low * high)
        low, high = (low, middle) if inside(middle) >= share else (middle, high)
    return high


CHI2_6DOF_MEDIAN = 5.348120627447118
"""The median of chi-square with 6 degrees of freedom (``scipy.stats.chi2.median(6)``)."""

FITTED_MODELS = ("scale", "floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", nargs=4, action="append", metavar=("NAME", "DATASET", "MAP", "CONFIG"), required=True)
    parser.add_argument("--work", type=Path, default=Path("outputs/covariance"))
    parser.add_argument(
        "--floor-option",
        default="refinement.covariance_pixel_floor",
        help="dotted path of the floor in the localize: section (default: SegLoc's; pnp.pixel_floor for the PnP methods)",
    )
    parser.add_argument(
        "--default-floor", type=float, default=None, help="the library default of the floor, for the 'default' row (default: SegLoc's)"
    )
    parser.add_argument("--fit", action="store_true", help="fit each model on --fit-on, check it on the other cases and leave-one-out")
    parser.add_argument("--fit-on", nargs="*", default=None, help="case names to fit on (default: all)")
    parser.add_argument("--reuse", action="store_true", help="read the evaluations already in --work instead of running them again")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    if args.default_floor is None:
        args.default_floor = LabelRefinementConfig().covariance_pixel_floor
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    report: dict[str, Any] = {"floor_option": args.floor_option, "cases": {}}
    cases: dict[str, Case] = {}
    for name, dataset, map_path, config in args.case:
        runs = [localize(name, Path(dataset), Path(map_path), Path(config), args.floor_option, f, args.work, args.reuse) for f in FLOORS]
        case = cases[name] = read_case(runs)
        own = config_floor(Path(config), args.floor_option)
        default = args.default_floor if own is None else own
        report["cases"][name] = {
            "num_queries": runs[0]["metrics"]["num_queries"],
            "num_with_covariance": len(case.errors),
            "recall_0.25m_2deg": runs[0]["metrics"]["recall"]["0.25m_2deg"],
            "floor_0": statistics(case, case.floor_0),
            "default": {"floor": default, **statistics(case, case.model("floor", default))},
        }
    if args.fit:
        fit_on = args.fit_on or list(cases)
        fits: dict[str, Any] = {"fit_on": fit_on}
        for model in FITTED_MODELS:
            parameter = fit_parameter([cases[n] for n in fit_on], model)
            leave_one_out = {}
            for name in fit_on:
                case = cases[name]
                held_out = fit_parameter([cases[n] for n in fit_on if n != name], model)
                if held_out is not None and len(case.errors):
                    leave_one_out[name] = {"parameter": held_out, **statistics(case, case.model(model, held_out))}
            fits[model] = {
                "parameter": parameter,
                "per_case": {n: fit_parameter([c], model) for n, c in cases.items()},
                "per_case_median": {n: fit_parameter([c], model, 0.5, CHI2_6DOF_MEDIAN) for n, c in cases.items()},
                "check": {n: statistics(c, c.model(model, parameter)) for n, c in cases.items() if n not in fit_on and len(c.errors)},
                "leave_one_out": leave_one_out,
            }
        report["fit"] = fits
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
