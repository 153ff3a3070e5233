"""Accuracy, time per stage, map size and peak memory of localization methods on one dataset,
each against the reference localizer measured in the same run.

Methods are looked up by name in the method registry (:func:`segloc.methods.get_method`: built-in
methods, plug-ins of the ``segloc.methods`` entry-point group), so any registered method can be
measured. Every method is built and evaluated in its own `segloc` subprocess (``segloc map build
--method NAME``, then ``segloc evaluate``, which takes the method from the map's manifest), so
that peak memory (process peak RSS) is per method. ``--config PATH`` gives every method the
same YAML file; ``--config NAME=PATH`` gives one to method NAME only (e.g. SegLoc's ``map:``
section with its ``checkpoint``, which the reference's strict config would reject). Prints one
JSON document and writes it with ``-o``.

    python benchmarks/localization.py --dataset ../shared/data/strecha_castle -o bench_castle.json
    python benchmarks/localization.py --synthetic room --condition season --method reference
    python benchmarks/localization.py --dataset DATASET --method segloc --config segloc=segloc_with_checkpoint.yaml

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
    """Build ``method``'s map and evaluate it, each in a subprocess; the summary of its metrics.json."""
    map_dir, eval_dir = work / f"map_{method}", work / f"eval_{method}"
    extra = ["--config", str(config)] if config else []
    start = time.perf_counter()
    run([*SEGLOC, "-q", "map", "build", str(dataset), "--method", method, "-o", str(map_dir), "--overwrite", "--no-progress", *extra])
    build_s = time.perf_counter() - start
    run([*SEGLOC, "-q", "evaluate", str(map_dir), str(dataset), "-o", str(eval_dir), "--no-progress", *extra])
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    summary = {key: metrics.get(key) for key in KEYS}
    summary["map_build_s"] = round(build_s, 3)
    return summary


def method_configs(methods: list[str], configs: list[str]) -> dict[str, Path | None]:
    """The config file of each method from ``--config [NAME=]PATH`` options (a bare PATH: every method without its own)."""
    shared, own = None, {}
    for text in configs:
        name, separator, path = text.rpartition("=")
        if not separator:
            if shared is not None:
                raise SystemExit("--config: give one config for every method (PATH) and per-method ones as NAME=PATH")
            shared = Path(path)
        elif name not in methods:
            raise SystemExit(f"--config {text}: {name!r} is not one of the measured methods ({', '.join(methods)})")
        else:
            own[name] = Path(path)
    for path in [shared, *own.values()]:
        if path is not None and not path.is_file():
            raise SystemExit(f"--config: {path} does not exist")
    return {method: own.get(method, shared) for method in methods}


def check_methods(methods: list[str]) -> None:
    """Fail before any work when a method is not in the registry (the message lists those available)."""
    from segloc.errors import SeglocError
    from segloc.methods import get_method

    for method in methods:
        try:
            get_method(method)
        except SeglocError as exc:
            raise SystemExit(f"--method: {exc}") from None


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
    parser.add_argument("--method", action="append", default=[], help="registered method to measure besides the reference (repeatable)")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="YAML config passed to map build and evaluate: PATH for every method, NAME=PATH for method NAME only (repeatable)",
    )
    parser.add_argument("--work", type=Path, help="folder for maps and evaluations (default: a temporary folder)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    args = parser.parse_args()
    methods = ["reference", *dict.fromkeys(m for m in args.method if m != "reference")]
    check_methods(methods)
    configs = method_configs(methods, args.config)

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
        results = {method: measure(method, dataset, work, configs[method]) for method in methods}

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
