"""SegLoc against its own pose approximation and the reference SIFT localizer, on one dataset, side by side.

Rows of the main table, all measured in this invocation:

- ``approximation``: SegLoc retrieval only (the pose of the most similar mapping image);
- ``segloc``: the same map and query segmentation, then the label-based refinement;
- ``reference``: the non-private SIFT localizer (retrieval, 2D-3D matching, PnP).

Columns: recall at (0.25 m, 2 deg), (0.5 m, 5 deg), (5 m, 10 deg) and (5 cm, 5 deg), median
errors, time per query and per stage, map bytes per 3D point and in total, peak memory. With
``--topk-table``, a second table gives SegLoc's storage/accuracy trade-off (labels per point
k = 1, 3, 10 and the full distribution; Pietrantoni et al., Fig. A.4).

The SegLoc maps come from ONE segmentation pass: a map that stores the full distribution, from
which the top-1 / top-k maps are derived (:func:`segloc.methods.segloc.layer.relabel_segloc_map`).
Maps are built in the work folder (``segloc map build --method NAME``) and reused when present
(the full SegLoc map when it was built from the same checkpoint). Every evaluation runs in its
own subprocess (``python -m segloc.cli evaluate``, the method taken from the map's manifest), so
that peak memory is per method, as ``benchmarks/localization.py`` does. The ``map:`` and
``localize:`` sections of ``--config`` are checked against SegLoc's config dataclasses (from the
method registry, :func:`segloc.methods.get_method`) before anything is built.

    python benchmarks/segloc_table.py --synthetic room --condition lighting --checkpoint CKPT --work outputs/segloc_table
    python benchmarks/segloc_table.py --dataset ../shared/data/strecha_castle --checkpoint CKPT --topk-table -o table.json
    python benchmarks/segloc_table.py --synthetic room --oracle --topk-table      # ground-truth labels: the refinement's upper bound

``--oracle`` (synthetic datasets only) replaces the network by the ground-truth part labels of
the synthetic images (one-hot, resized to 1/8 ... 1/1 and blurred, as in
``benchmarks/refinement.py``): it measures the pipeline without a trained network. Its
``segment`` times are those of the oracle, not of a network.

Output: the tables on stdout, and JSON (``-o``, default ``WORK/segloc_table.json``)::

    {"dataset": ..., "segmenter": CHECKPOINT or "oracle ...", "threads": N, "map_build_s": {...},
     "methods": {"approximation" | "segloc" | "reference": {"recall": {...}, "median_translation_m", "median_rotation_deg",
                 "time_per_query_s", "time_per_stage_s", "map_bytes", "num_points", "map_bytes_per_point",
                 "map_layer_bytes", "peak_memory_bytes", "num_localized", "num_queries", "failure_reasons",
                 SegLoc maps only: "label_bytes_per_point", "map_bytes_without_network"}},
     "topk": {"1" | "3" | "10" | "full": {... the same keys}}}

Times on a shared machine drift: compare rows of one invocation, and use ``--threads 1`` when
other jobs compete for the cores (torch's thread pool slows down several-fold when oversubscribed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localization import KEYS, SEGLOC, run  # noqa: E402  (the sibling benchmark's subprocess helpers)

from segloc.config import read_config_file  # noqa: E402
from segloc.evaluate.report import format_bytes, format_comparison  # noqa: E402

#: Registry names of the method this table is about and of the non-private baseline it is compared with.
SEGLOC_METHOD, REFERENCE_METHOD = "segloc", "reference"
THRESHOLDS = ("0.25m_2deg", "0.5m_5deg", "5m_10deg", "5cm_5deg")
TOPK = ("1", "3", "10", "full")
EXTRA_KEYS = ("failure_reasons",)


# --- the oracle (synthetic datasets) ----------------------------------------------------------


def oracle_segmenter(dataset_root: Path):
    """The ground-truth segmenter of a synthetic dataset (its ``labels/`` images; strides 8, 4, 2, 1)."""
    from segloc.data.dataset import read_dataset
    from segloc.models.segmenter import LabelSegmenter

    return LabelSegmenter.from_dataset(read_dataset(dataset_root))


def oracle_worker(argv: list[str]) -> None:
    """``oracle-worker build DATASET MAP CONFIG`` or ``oracle-worker evaluate MAP DATASET OUT CONFIG LIMIT`` (in a subprocess).

    The configs are SegLoc's, from the registry; map and localizer are SegLoc's own builders,
    which take a segmenter in place of the map's network (the one thing the oracle changes).
    """
    from segloc.data.dataset import read_dataset
    from segloc.methods import get_method

    action, *paths = argv
    limit = int(paths.pop()) if action == "evaluate" else 0
    config = yaml.safe_load(Path(paths[-1]).read_text()) or {}
    method = get_method(SEGLOC_METHOD)
    if action == "build":
        from segloc.methods.segloc.layer import build_segloc_map

        dataset = read_dataset(paths[0])
        map_config = method.map_config(config.get("map"))
        build_segloc_map(dataset, paths[1], map_config, overwrite=True, progress=False, segmenter=oracle_segmenter(dataset.root))
        return
    from segloc.evaluate.replay import MapSummary
    from segloc.evaluate.run import evaluate_localizer
    from segloc.maps.package import MapPackage
    from segloc.methods.segloc.localizer import SegLocLocalizer

    package, dataset = MapPackage.open(paths[0]), read_dataset(paths[1], require_query=True)
    localizer = SegLocLocalizer.from_map(package, method.localize_config(config.get("localize")), segmenter=oracle_segmenter(dataset.root))
    summary = MapSummary.from_package(package)
    evaluate_localizer(
        localizer,
        dataset,
        paths[2],
        map_bytes=summary.bytes,
        map_points3D=summary.points3D,
        mapping_centers=summary.mapping_centers,
        progress=False,
        limit=limit or None,
        map_path=summary.path,
        extra={"method": method.name},
        plots=False,
    )


# --- maps -----------------------------------------------------------------------------------------


def write_config(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def open_map(path: Path):
    from segloc.errors import SeglocError
    from segloc.maps.package import MapPackage

    try:
        return MapPackage.open(path)
    except SeglocError:
        return None


def checkpoint_sha256(checkpoint: Path) -> str:
    from segloc.fileio import sha256_file
    from segloc.models.checkpoint import read_checkpoint_info

    return sha256_file(read_checkpoint_info(checkpoint).weights_file)


def full_map_is_current(path: Path, checkpoint: Path | None) -> bool:
    """Whether the full-distribution SegLoc map at ``path`` exists and came from this checkpoint (or from the oracle)."""
    from segloc.methods.segloc.layer import MODEL_LAYER, SEGLOC_LAYER

    package = open_map(path)
    if package is None or package.method != SEGLOC_METHOD or not package.has_layer(SEGLOC_LAYER):
        return False
    meta = package.read_json(SEGLOC_LAYER, "meta")
    if meta.get("store") != "full":
        return False
    if checkpoint is None:
        return meta.get("segmenter") == "LabelSegmenter"
    return package.has_layer(MODEL_LAYER) and package.read_json(MODEL_LAYER, "model").get("source", {}).get("sha256") == (
        checkpoint_sha256(checkpoint)
    )


def build_map(dataset: Path, method: str, output: Path, config: Path | None = None) -> float:
    """Build ``method``'s map with ``segloc map build`` in a subprocess; returns the seconds it took."""
    extra = [] if config is None else ["--config", str(config)]
    start = time.perf_counter()
    run([*SEGLOC, "-q", "map", "build", str(dataset), "--method", method, "-o", str(output), "--overwrite", "--no-progress", *extra])
    return round(time.perf_counter() - start, 2)


def segloc_map_section(args: argparse.Namespace, user_config: dict) -> dict[str, Any]:
    """The ``map:`` options of the full SegLoc map: the user's, storing the full distribution, with ``--checkpoint``."""
    map_section = {**(user_config.get("map") or {}), "store": "full"}
    if args.checkpoint is not None:
        map_section["checkpoint"] = str(args.checkpoint.resolve())
    return map_section


def read_user_config(args: argparse.Namespace) -> dict[str, Any]:
    """The sections of ``--config``, checked before any work against SegLoc's ``map:`` and ``localize:`` configs (from the registry)."""
    from segloc.errors import SeglocError
    from segloc.methods import get_method

    method = get_method(SEGLOC_METHOD)
    try:
        user_config = read_config_file(args.config) if args.config else {}
        method.map_config(segloc_map_section(args, user_config))
        method.localize_config({**(user_config.get("localize") or {}), "refine": True, "labels_top_k": None})
    except SeglocError as exc:
        raise SystemExit(f"--config {args.config}: {exc}") from None
    return user_config


def build_maps(args: argparse.Namespace, dataset: Path, work: Path, user_config: dict) -> dict[str, float]:
    """Build (or reuse) the reference map and the full SegLoc map, derive the top-k maps; returns build seconds."""
    from segloc.methods.segloc.layer import read_segloc_layer, relabel_segloc_map

    seconds: dict[str, float] = {}
    reference = open_map(work / "map_reference")
    if reference is None or reference.method != REFERENCE_METHOD:
        seconds[REFERENCE_METHOD] = build_map(dataset, REFERENCE_METHOD, work / "map_reference")
    full = work / "map_segloc_full"
    if not full_map_is_current(full, args.checkpoint):
        config = write_config(work / "segloc_map.yaml", {"map": segloc_map_section(args, user_config)})
        if args.oracle:
            start = time.perf_counter()
            run([sys.executable, __file__, "oracle-worker", "build", str(dataset), str(full), str(config)])
            seconds[SEGLOC_METHOD] = round(time.perf_counter() - start, 2)
        else:
            seconds[SEGLOC_METHOD] = build_map(dataset, SEGLOC_METHOD, full, config)
    num_classes = read_segloc_layer(open_map(full)).num_classes
    for k in TOPK[:-1]:
        if int(k) < num_classes:
            store = "top1" if k == "1" else "topk"
            relabel_segloc_map(full, work / f"map_segloc_top{k}", store, int(k), overwrite=True)
    return seconds


# --- evaluation ---------------------------------------------------------------------------------


def evaluate(
    args: argparse.Namespace, name: str, map_dir: Path, dataset: Path, work: Path, localize: dict | None, reuse: bool = False
) -> dict:
    """Evaluate one map in a subprocess with its method's localizer (the map's manifest names it); a summary with map sizes.

    ``localize``: the method's ``localize:`` options (None: its defaults). SegLoc maps are
    evaluated with the ground-truth segmenter under ``--oracle``. ``reuse``: read the metrics
    of an earlier evaluation in ``work`` under the same name, ``localize`` options and query
    limit instead of running it again (the caller makes ``name`` identify map and dataset).
    """
    from segloc.maps.core import read_core
    from segloc.methods.segloc.layer import MODEL_LAYER, SEGLOC_LAYER

    out = work / f"eval_{name}"
    limit = ["--limit", str(args.limit)] if args.limit else []
    package = open_map(map_dir)
    options = {"localize": localize, "limit": args.limit}
    stamp = work / f"options_{name}.json"
    done = reuse and (out / "metrics.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == options
    config = None if localize is None else write_config(work / f"localize_{name}.yaml", {"localize": localize})
    stamp.unlink(missing_ok=True)
    if done:
        pass
    elif args.oracle and package.method == SEGLOC_METHOD:
        run(
            [sys.executable, __file__, "oracle-worker", "evaluate", str(map_dir), str(dataset), str(out), str(config), str(args.limit or 0)]
        )
    else:
        extra = [] if config is None else ["--config", str(config)]
        run([*SEGLOC, "-q", "evaluate", str(map_dir), str(dataset), "-o", str(out), "--no-progress", *limit, *extra])
    stamp.write_text(json.dumps(options))
    metrics = json.loads((out / "metrics.json").read_text())
    summary = {key: metrics.get(key) for key in (*KEYS, *EXTRA_KEYS)}
    num_points = read_core(package).num_points
    layers = {layer: package.bytes([layer]) for layer in package.layers}
    summary["map_layer_bytes"] = layers
    summary["num_points"] = num_points
    summary["map_bytes_per_point"] = round(package.bytes() / num_points, 2) if num_points else None
    if SEGLOC_LAYER in layers and num_points:
        label_file = package.file_path(SEGLOC_LAYER, "labels")
        summary["label_bytes_per_point"] = round(label_file.stat().st_size / num_points, 3)
        summary["map_bytes_without_network"] = package.bytes() - layers.get(MODEL_LAYER, 0)
    return summary


# --- main ------------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "oracle-worker":
        oracle_worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="a dataset folder with mapping.txt and query.txt")
    source.add_argument("--synthetic", metavar="SCENE", help="render this synthetic scene (room, corridor, street) first")
    parser.add_argument(
        "--condition", default="same", help="with --synthetic: mapping/query conditions (same, lighting, night, season, ...)"
    )
    parser.add_argument("--seed", type=int, default=0)
    segmenter = parser.add_mutually_exclusive_group(required=True)
    segmenter.add_argument("--checkpoint", type=Path, help="the SegLoc segmentation network (a checkpoint folder)")
    segmenter.add_argument("--oracle", action="store_true", help="synthetic datasets: ground-truth labels instead of a network")
    parser.add_argument(
        "--config", type=Path, help="YAML with 'map' (SegLoc map options) and 'localize' (SegLoc localizer options) sections"
    )
    parser.add_argument("--topk-table", action="store_true", help="also the labels-per-point table (k = 1, 3, 10, full)")
    parser.add_argument("--limit", type=int, help="only the first N queries")
    parser.add_argument(
        "--threads", type=int, help="CPU threads of every subprocess (OMP_NUM_THREADS); 1 gives steadier times on a shared machine"
    )
    parser.add_argument("--work", type=Path, help="folder for the dataset, maps and evaluations, reused across runs (default: temporary)")
    parser.add_argument("-o", "--output", type=Path, help="JSON output (default WORK/segloc_table.json)")
    args = parser.parse_args()
    if args.checkpoint is not None and not args.checkpoint.is_dir():
        parser.error(f"--checkpoint {args.checkpoint} is not a checkpoint folder")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    user_config = read_user_config(args)
    localize = user_config.get("localize") or {}

    with tempfile.TemporaryDirectory(prefix="segloc_table_") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        dataset = args.dataset
        if dataset is None:
            dataset = work / f"synthetic_{args.synthetic}_{args.condition}_{args.seed}"
            if not (dataset / "scene.json").is_file():
                run(
                    [
                        *SEGLOC,
                        "-q",
                        "synth",
                        "-o",
                        str(dataset),
                        "--scene",
                        args.synthetic,
                        "--condition",
                        args.condition,
                        "--seed",
                        str(args.seed),
                        "--overwrite",
                        "--no-progress",
                    ]
                )
        dataset = dataset.resolve()
        build_seconds = build_maps(args, dataset, work, user_config)
        top1 = work / "map_segloc_top1"
        methods = {
            "approximation": evaluate(args, "approximation", top1, dataset, work, {**localize, "refine": False}),
            SEGLOC_METHOD: evaluate(args, SEGLOC_METHOD, top1, dataset, work, {**localize, "refine": True}),
            REFERENCE_METHOD: evaluate(args, REFERENCE_METHOD, work / "map_reference", dataset, work, None),
        }
        topk: dict[str, dict] = {}
        if args.topk_table:
            for k in TOPK:
                map_dir = work / ("map_segloc_full" if k == "full" else f"map_segloc_top{k}")
                if map_dir.is_dir():
                    topk[k] = evaluate(args, f"top{k}", map_dir, dataset, work, {**localize, "refine": True, "labels_top_k": None})

    report = {
        "dataset": str(args.dataset or f"synthetic:{args.synthetic}:{args.condition}:{args.seed}"),
        "segmenter": "oracle (ground-truth labels)" if args.oracle else str(args.checkpoint),
        "threads": args.threads,
        "map_build_s": build_seconds,
        "methods": methods,
        "topk": topk,
    }
    print(f"dataset {report['dataset']}, segmentation: {report['segmenter']}\n")
    print(format_comparison(methods, "method"))
    if topk:
        print("\nSegLoc labels per point (refinement; label bytes per point, map without the network):\n")
        extra = [
            ("label B/pt", lambda row: f"{row['label_bytes_per_point']:.2f}" if row.get("label_bytes_per_point") is not None else "-"),
            ("map w/o net", lambda row: format_bytes(row.get("map_bytes_without_network"))),
        ]
        print(format_comparison(topk, "k", extra))
    output = args.output or ((args.work / "segloc_table.json") if args.work else None)
    if output is not None:
        output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {output}")
    else:
        print("\n" + json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
