"""The changed-place scenario: a map updated with a new recording against the old map and a full rebuild.

Renders two recordings of one synthetic place (``segloc synth``): recording 1, and recording 2
driven on other trajectories after part of the place changed (``change``: walls repainted, new
posters, furniture moved; :func:`segloc.data.scenes.changed_variant`). For each method (found in
the registry, with its ``segloc demo`` map options: SegLoc gets the shipped ``segloc_room320``
network on the default room):

- ``v1``: the map of recording 1's mapping images;
- ``v2``: ``v1`` updated with recording 2's mapping images (:func:`segloc.maps.update.update_map`);
- ``rebuild``: a map built from both recordings' mapping images (one dataset folder);

each evaluated on recording 2's queries (the changed place) and ``v2`` also on recording 1's
(the place as it was). Prints JSON: recall at the evaluator's four thresholds, median errors,
map bytes, and the update's time against the rebuild's, measured in this invocation (each
``--repeats`` times, alternately; the fastest of each is compared).

With ``--odometry`` recording 2 is also written with its mapping poses as drifting monocular
odometry (``segloc synth --odometry-drift``: the same images, poses in a random Sim(3) frame with
heading and scale drift; the true ones in ``mapping_groundtruth.txt``), and a ``v2_odometry`` map
is ``v1`` updated from it with ``poses: odometry`` (:mod:`segloc.maps.register`): the
registration's figures (images localized / total, inliers, scale, the registered poses' errors
against the truth, seconds) and its recall next to ``v2``'s (the update from the true poses).

    python benchmarks/map_update.py -o outputs/map_update --threads 1
    python benchmarks/map_update.py -o outputs/map_update_odom --methods reference --repeats 1 --odometry --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from segloc.data.dataset import Dataset, merge_datasets, read_dataset
from segloc.data.synthetic import generate_scene, read_mapping_groundtruth, synth_config
from segloc.evaluate.run import evaluate_map
from segloc.geometry.transforms import pose_error
from segloc.maps.core import read_core
from segloc.maps.package import MapPackage
from segloc.maps.register import RegisterConfig
from segloc.maps.update import UpdateConfig, update_map
from segloc.methods import DemoContext, get_method


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def summary(metrics: dict) -> dict:
    return {
        "recall": metrics["recall"],
        "median_translation_m": metrics["median_translation_m"],
        "median_rotation_deg": metrics["median_rotation_deg"],
        "num_queries": metrics.get("num_queries"),
    }


def run_method(name: str, recordings: dict[str, Dataset], merged: Dataset, out: Path, args: argparse.Namespace) -> dict:
    method = get_method(name)
    context = DemoContext(recordings["rec1"].root, out, args.scene, args.seed, args.size, progress=False)
    config = method.map_config(method.demo_map_config(context))
    maps = {key: out / f"{name}_{key}" for key in ("v1", "v2", "rebuild")}
    seconds: dict[str, list[float]] = {"v1_build": [], "update": [], "rebuild": []}
    start = time.perf_counter()
    method.build_map(recordings["rec1"], maps["v1"], config, overwrite=True, progress=False)
    seconds["v1_build"].append(time.perf_counter() - start)
    for _ in range(args.repeats):  # update and rebuild alternate: load from other processes hits both alike
        start = time.perf_counter()
        report = update_map(maps["v1"], recordings["rec2"].root, maps["v2"], UpdateConfig(prefix="rec2/"), overwrite=True, progress=False)
        seconds["update"].append(time.perf_counter() - start)
        start = time.perf_counter()
        method.build_map(merged, maps["rebuild"], config, overwrite=True, progress=False)
        seconds["rebuild"].append(time.perf_counter() - start)
    result: dict = {"seconds": {k: [round(v, 2) for v in values] for k, values in seconds.items()}, "update_report": report}
    result["update_vs_rebuild_time"] = round(min(seconds["update"]) / min(seconds["rebuild"]), 3)  # fastest of each
    for key, path in maps.items():
        metrics = evaluate_map(path, recordings["rec2"], out / f"eval_{name}_{key}_rec2", progress=False, limit=args.limit)
        result[key] = {**summary(metrics), "map_bytes": MapPackage.open(path).bytes()}
        print(f"{name} {key}: recall {metrics['recall']}", file=sys.stderr)
    if "rec2_odometry" in recordings:
        result["v2_odometry"] = run_odometry_update(name, maps["v1"], recordings, out, args)
        result["v2_odometry"]["v2_recall"] = result["v2"]["recall"]
    old_place = evaluate_map(maps["v2"], recordings["rec1"], out / f"eval_{name}_v2_rec1", progress=False, limit=args.limit)
    result["v2_on_recording1_queries"] = summary(old_place)
    result["v2_recall_over_rebuild"] = {
        k: (round(result["v2"]["recall"][k] / result["rebuild"]["recall"][k], 3) if result["rebuild"]["recall"][k] else None)
        for k in result["rebuild"]["recall"]
    }
    return result


def run_odometry_update(name: str, v1: Path, recordings: dict[str, Dataset], out: Path, args: argparse.Namespace) -> dict:
    """``v1`` updated from recording 2's odometry poses: the registration's figures, its poses against the truth, recall."""
    recording = recordings["rec2_odometry"]
    path = out / f"{name}_v2_odometry"
    config = UpdateConfig(prefix="rec2/", poses="odometry", register=RegisterConfig(window=args.window))
    start = time.perf_counter()
    report = update_map(v1, recording.root, path, config, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    truth = {"rec2/" + r.name: r.cam_from_world for r in read_mapping_groundtruth(recording.root)}
    errors = [
        pose_error(image.cam_from_world, truth[image.name]) for image in read_core(MapPackage.open(path)).images if image.name in truth
    ]
    translation = sorted(e[0] for e in errors)
    rotation = sorted(e[1] for e in errors)
    registration = report["registration"]
    metrics = evaluate_map(path, recordings["rec2"], out / f"eval_{name}_v2_odometry_rec2", progress=False, limit=args.limit)
    print(f"{name} v2_odometry: recall {metrics['recall']}", file=sys.stderr)
    return {
        "registration": {
            "localized": f"{registration['num_localized']}/{registration['num_images']}",
            "inliers": registration["num_inliers"],
            "global_inliers": registration["global"]["num_inliers"],
            "scale_global": registration["global"]["scale"],
            "scale_windows": registration["scale"],
            "images_from_windows": registration["num_images_from_windows"],
            "residual_m": registration["center_residual_m"],
            "residual_deg": registration["rotation_residual_deg"],
            "seconds": registration["seconds"],
        },
        "registered_pose_error": {
            "median_cm": round(100 * float(np.median(translation)), 2),
            "max_cm": round(100 * translation[-1], 2),
            "median_deg": round(float(np.median(rotation)), 3),
            "max_deg": round(rotation[-1], 3),
        },
        "odometry_pose_error_before_median_m": round(
            float(np.median([pose_error(r.cam_from_world, truth["rec2/" + r.name])[0] for r in recording.mapping])), 3
        ),
        "update_seconds": round(seconds, 2),
        "update_report": report,
        **summary(metrics),
        "map_bytes": MapPackage.open(path).bytes(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="working folder (recordings, maps, reports, results.json)")
    parser.add_argument("--methods", default="segloc,reference", help="comma-separated methods (default segloc,reference)")
    parser.add_argument("--scene", default="room")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (the shipped SegLoc network is for room seed 0 at 320x240)")
    parser.add_argument("--size", type=_size, default=(320, 240), help="WIDTHxHEIGHT (default 320x240)")
    parser.add_argument("--num-mapping", type=int, default=60, help="mapping images per recording")
    parser.add_argument("--num-query", type=int, default=20, help="query images per recording")
    parser.add_argument("--change", type=float, default=1.0, help="how much of the place changed in recording 2 (SynthConfig.change)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N queries")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="times the update and the rebuild are timed, alternately (the fastest counts)"
    )
    parser.add_argument(
        "--odometry", action="store_true", help="also update v1 from recording 2's poses as drifting odometry (poses: odometry)"
    )
    parser.add_argument("--odometry-drift", type=float, default=0.5, help="heading deg and scale %% per metre of that odometry")
    parser.add_argument("--window", type=int, default=RegisterConfig.window, help="register.window (0: one Sim(3))")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    recordings = {}
    variants = [("rec1", 0, 0.0, None), ("rec2", 1, args.change, None)]
    if args.odometry:
        variants.append(("rec2_odometry", 1, args.change, args.odometry_drift))
    for key, recording, change, drift in variants:
        folder = out / key
        if not (folder / "scene.json").is_file():
            config = synth_config(
                args.scene,
                seed=args.seed,
                width=args.size[0],
                height=args.size[1],
                num_mapping=args.num_mapping,
                num_query=args.num_query,
                recording=recording,
                change=change,
                odometry_drift=drift,
            )
            generate_scene(config, folder, progress=False)
        recordings[key] = read_dataset(folder)
    merged_dataset = Dataset(recordings["rec1"].root, recordings["rec1"].mapping, [])
    merged = read_dataset(
        merge_datasets(
            [(merged_dataset, ""), (Dataset(recordings["rec2"].root, recordings["rec2"].mapping, []), "rec2/")],
            out / "merged",
            overwrite=True,
        )
    )
    results = {
        "scene": args.scene,
        "seed": args.seed,
        "size": list(args.size),
        "num_mapping": args.num_mapping,
        "num_query": args.num_query,
        "change": args.change,
        "odometry_drift": args.odometry_drift if args.odometry else None,
        "window": args.window if args.odometry else None,
        "methods": {},
    }
    for name in args.methods.split(","):
        results["methods"][name] = run_method(name, recordings, merged, out, args)
    text = json.dumps(results, indent=1)
    (out / "results.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
