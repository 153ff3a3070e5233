"""Accuracy, time per stage, map size and peak memory of localization methods on one dataset,
each against the reference localizer measured in the same run.

Every method is built and evaluated in its own `segloc` subprocess, so that peak memory (process
peak RSS) is per method. Prints one JSON document and writes it with ``-o``.

    python benchmarks/localization.py --dataset ../shared/data/strecha_castle -o bench_castle.json
    python benchmarks/localization.py --synthetic room --condition season --method reference

Output::

    {"dataset": ..., "reference": "reference",
     "methods": {NAME: {"recall": {...}, "median_translation_m": ..., "median_rotation_deg": ...,
                        "time_per_query_s": ..., "time_per_stage_s": {...}, "map_bytes": ...,
                        "map_build_s": ..., "peak_memory_bytes": ..., "num_localized": ...,
                        "num_queries": ...}},
     "relative_to_reference": {NAME: {"time_per_query": ratio, "map_bytes": ratio,
                                      "recall_delta": {threshold: difference}}}}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEGLOC = [sys.executable, "-m", "segloc.cli"]
KEYS = (
    "recall",
    "median_translation_m",
    "median_rotation_deg",
    "num_queries",
    "num_localized",
    "time_per_query_s",
    "time_per_query_median_s",
    "time_per_stage_s",
    "map_bytes",
    "peak_memory_bytes",
)


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"command failed ({result.returncode}): {' '.join(command)}")


def measure(method: str, dataset: Path, work: Path, config: Path | None) -> dict:
    map_dir, eval_dir = work / f"map_{method}", work / f"eval_{method}"
    extra = ["--config", str(config)] if config else []
    start = time.perf_counter()
    run([*SEGLOC, "-q", "map", "build", str(dataset), "--method", method, "-o", str(map_dir), "--overwrite", "--no-progress", *extra])
    build_s = time.perf_counter() - start
    run([*SEGLOC, "-q", "evaluate", str(map_dir), str(dataset), "--method", method, "-o", str(eval_dir), "--no-progress", *extra])
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    summary = {key: metrics.get(key) for key in KEYS}
    summary["map_build_s"] = round(build_s, 3)
    return summary


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="a dataset folder with mapping.txt and query.txt")
    source.add_argument("--synthetic", metavar="SCENE", help="render this synthetic scene (room, corridor, street) first")
    parser.add_argument(
        "--condition", default=None, help="with --synthetic: mapping/query conditions (same, lighting, night, season, blur, hard)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", action="append", default=[], help="method to measure besides the reference (repeatable)")
    parser.add_argument("--config", type=Path, help="YAML config passed to map build and evaluate")
    parser.add_argument("--work", type=Path, help="folder for maps and evaluations (default: a temporary folder)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="segloc_bench_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        dataset = args.dataset
        if dataset is None:
            dataset = work / f"synthetic_{args.synthetic}"
            command = [
                *SEGLOC,
                "-q",
                "synth",
                "-o",
                str(dataset),
                "--scene",
                args.synthetic,
                "--seed",
                str(args.seed),
                "--overwrite",
                "--no-progress",
            ]
            if args.condition:
                command += ["--condition", args.condition]
            run(command)
        methods = ["reference", *[m for m in args.method if m != "reference"]]
        results = {method: measure(method, dataset, work, args.config) for method in methods}

    reference = results["reference"]
    relative = {}
    for method, result in results.items():
        relative[method] = {
            "time_per_query": ratio(result["time_per_query_s"], reference["time_per_query_s"]),
            "map_bytes": ratio(result["map_bytes"], reference["map_bytes"]),
            "peak_memory": ratio(result["peak_memory_bytes"], reference["peak_memory_bytes"]),
            "recall_delta": {k: round(v - reference["recall"][k], 4) for k, v in (result["recall"] or {}).items()},
        }
    report = {
        "dataset": str(args.dataset or f"synthetic:{args.synthetic}:{args.condition or 'same'}"),
        "reference": "reference",
        "methods": results,
        "relative_to_reference": relative,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
