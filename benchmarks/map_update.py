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

    python benchmarks/map_update.py -o outputs/map_update --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from segloc.data.dataset import Dataset, merge_datasets, read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.evaluate.run import evaluate_map
from segloc.maps.package import MapPackage
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
    old_place = evaluate_map(maps["v2"], recordings["rec1"], out / f"eval_{name}_v2_rec1", progress=False, limit=args.limit)
    result["v2_on_recording1_queries"] = summary(old_place)
    result["v2_recall_over_rebuild"] = {
        k: (round(result["v2"]["recall"][k] / result["rebuild"]["recall"][k], 3) if result["rebuild"]["recall"][k] else None)
        for k in result["rebuild"]["recall"]
    }
    return result


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
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    recordings = {}
    for key, recording, change in (("rec1", 0, 0.0), ("rec2", 1, args.change)):
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
