"""Uniform against PROSAC sampling in the SLD* localizer's PnP, on the same detections.

Each query of each dataset goes once through the SLD* map's network (the localizer's own
``detect``, with the ``localize:`` options of ``--config`` or the defaults); then
:func:`segloc.geometry.pose.estimate_absolute_pose` runs on those detections with every sampling
and every RANSAC seed, so the samplings differ in nothing else. The samplings:

- ``uniform``: pycolmap's LO-RANSAC (the reference, measured in the same run);
- ``prosac``: PROSAC over the detections ranked by their weights ``v^2`` (poselib);
- ``prosac_shuffled``: the same PROSAC over the detections in a random order (weights None), a
  control that tells the value of the confidence ranking from that of poselib's RANSAC.

``--max-iterations`` sets a RANSAC budget (e.g. 20) to see what the ranking buys when samples
are few. Per dataset and sampling: recall at the four thresholds and median errors (mean over
the seeds, with the lowest and highest recall), queries localized, and PnP seconds per query.

    python benchmarks/pnp_sampling.py MAP DATASET [DATASET ...] --seeds 0 1 2 3 4 -o bench_sampling.json
    python benchmarks/pnp_sampling.py MAP DATASET --max-iterations 20

Output::

    {"map": ..., "config": {...}, "seeds": [...], "datasets": {DATASET: {"num_queries": N,
     "mean_detections": ..., "samplings": {NAME: {"recall": {threshold: mean}, "recall_min": {...},
     "recall_max": {...}, "median_translation_m", "median_rotation_deg", "localized",
     "pnp_time_median_s", "pnp_time_mean_s"}}}}}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from segloc.config import load_config
from segloc.data.dataset import read_dataset
from segloc.evaluate.metrics import THRESHOLDS, recall_at
from segloc.geometry import pose_error
from segloc.geometry.pose import estimate_absolute_pose
from segloc.methods.sld.localizer import SldLocalizer, SldLocalizerConfig

SAMPLINGS = ("uniform", "prosac", "prosac_shuffled")


def measure_dataset(localizer: SldLocalizer, dataset_path: Path, seeds: list[int], max_iterations: int | None) -> dict:
    dataset = read_dataset(dataset_path, require_query=True)
    errors = {name: [] for name in SAMPLINGS}  # per sampling: (seeds, queries, 2)
    times = {name: [] for name in SAMPLINGS}
    detection_counts = []
    base = localizer.config.pnp
    if max_iterations is not None:
        base = dataclasses.replace(base, max_iterations=max_iterations)
    per_query = []
    for record in dataset.query:
        detections = localizer.detect(dataset.load_image(record.name), record.camera)
        detection_counts.append(len(detections.landmark_ids))
        per_query.append((record, detections))
    for name in SAMPLINGS:
        for seed in seeds:
            config = dataclasses.replace(base, random_seed=seed, sampling="uniform" if name == "uniform" else "prosac")
            shuffle = np.random.default_rng(seed)
            seed_errors = []
            for record, detections in per_query:
                points2D, points3D, weights = detections.points2D, localizer.positions[detections.landmark_ids], detections.weights
                if name == "prosac_shuffled":
                    order = shuffle.permutation(len(points2D))
                    points2D, points3D, weights = points2D[order], points3D[order], None
                start = time.perf_counter()
                estimate = None
                if len(points2D) >= max(4, config.min_inliers):
                    estimate = estimate_absolute_pose(points2D, points3D, record.camera, config, weights)
                times[name].append(time.perf_counter() - start)
                seed_errors.append(pose_error(estimate.cam_from_world, record.cam_from_world) if estimate else (np.inf, np.inf))
            errors[name].append(seed_errors)
    result = {"num_queries": len(per_query), "mean_detections": float(np.mean(detection_counts)), "samplings": {}}
    for name in SAMPLINGS:
        runs = np.asarray(errors[name], dtype=np.float64)  # (seeds, queries, 2)
        recalls = {key: [recall_at(run[:, 0], run[:, 1], *bounds) for run in runs] for key, bounds in THRESHOLDS.items()}
        medians = np.median(runs, axis=1)  # (seeds, 2)
        result["samplings"][name] = {
            "recall": {key: float(np.mean(values)) for key, values in recalls.items()},
            "recall_min": {key: float(np.min(values)) for key, values in recalls.items()},
            "recall_max": {key: float(np.max(values)) for key, values in recalls.items()},
            "median_translation_m": float(np.mean(medians[:, 0])),
            "median_rotation_deg": float(np.mean(medians[:, 1])),
            "localized": float(np.mean(np.isfinite(runs[:, :, 0]))),
            "pnp_time_median_s": float(np.median(times[name])),
            "pnp_time_mean_s": float(np.mean(times[name])),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("map", type=Path, help="an sld map package")
    parser.add_argument("datasets", type=Path, nargs="+", help="dataset folders whose queries to localize")
    parser.add_argument("--config", type=Path, help="YAML config whose 'localize' section sets the SLD* options")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="RANSAC seeds")
    parser.add_argument("--max-iterations", type=int, help="RANSAC budget (default: the config's pnp.max_iterations)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    args = parser.parse_args()
    config = load_config(SldLocalizerConfig, args.config, section="localize")
    localizer = SldLocalizer.from_map(args.map, config)
    report = {
        "map": str(args.map),
        "config": dataclasses.asdict(config),
        "seeds": args.seeds,
        "max_iterations": args.max_iterations,
        "datasets": {str(path): measure_dataset(localizer, path, args.seeds, args.max_iterations) for path in args.datasets},
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
