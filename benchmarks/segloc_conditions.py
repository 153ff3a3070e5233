"""SegLoc networks against the reference SIFT localizer across appearance changes: real scenes by day, at dusk and at night, synthetic scenes under changed light and seasons.

Rows: scene x condition. A real scene (``--dataset``, default ``../shared/data/strecha_castle``)
is measured on its own queries (``day``) and on the dusk and night variants of them that
``segloc dataset relight`` writes (:mod:`segloc.data.relight`; mapping images and poses
unchanged). A synthetic scene (``--synthetic``, default room and street) is rendered by
``segloc synth`` at a small size under each ``--synthetic-condition`` (default lighting, night,
season, severe of :data:`segloc.data.synthetic.CONDITIONS`: day mapping images, changed queries).

Columns: one SegLoc column per ``--checkpoint`` (a checkpoint folder or the name of a shipped
network in ``src/segloc/models/weights``; repeatable; default every shipped network) and the
reference. Each cell: recall at (0.25 m, 2 deg), (0.5 m, 5 deg), (5 m, 10 deg), (5 cm, 5 deg),
median errors and time per query.

The conditions of one scene share its mapping images, so each method's map is built once per
scene (checked: the mapping list and image bytes must match, else the map is built again) and
reused across runs in ``--work``. Builds and evaluations run in ``segloc`` subprocesses through
the helpers of ``benchmarks/segloc_table.py`` and ``benchmarks/localization.py``. Real scenes
use ``--config`` (default ``config/segloc_outdoor.yaml``), synthetic scenes ``--synthetic-config``
(default none: the library's defaults), for SegLoc's ``map:`` and ``localize:`` sections.

    python benchmarks/segloc_conditions.py --threads 1 --work outputs/conditions -o conditions.json --markdown conditions.md
    python benchmarks/segloc_conditions.py --checkpoint general --checkpoint path/to/castle_finetuned --synthetic street

Output: the Markdown tables on stdout and in ``--markdown`` (default ``WORK/segloc_conditions.md``), and JSON
(``-o``, default ``WORK/segloc_conditions.json``)::

    {"threads": N, "checkpoints": {COLUMN: PATH}, "map_build_s": {SCENE: {COLUMN: s}},
     "rows": [{"scene": ..., "condition": ..., "kind": "real" | "synthetic", "dataset": PATH,
               "methods": {COLUMN: {"recall": {...}, "median_translation_m", "median_rotation_deg",
                                    "time_per_query_s", "num_localized", "num_queries", ...}}}]}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localization import SEGLOC, run  # noqa: E402
from segloc_table import REFERENCE_METHOD, SEGLOC_METHOD, THRESHOLDS, build_map, checkpoint_sha256, evaluate, open_map, write_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = (REPO.parent / "shared" / "data" / "strecha_castle",)
REAL_CONDITIONS = ("day", "dusk", "night")
SYNTHETIC_SCENES = ("room", "street")
SYNTHETIC_CONDITIONS = ("lighting", "night", "season", "severe")
THRESHOLD_TITLES = {"0.25m_2deg": "(0.25 m, 2°)", "0.5m_5deg": "(0.5 m, 5°)", "5m_10deg": "(5 m, 10°)", "5cm_5deg": "(5 cm, 5°)"}


# --- inputs ---------------------------------------------------------------------------------------


def resolve_checkpoints(names: list[str]) -> dict[str, Path]:
    """Column name -> checkpoint folder of each ``--checkpoint`` (a folder, a shipped network's name or
    ``general``); default: every shipped SegLoc network. A folder named ``checkpoint`` (what
    ``segloc train segloc -o RUN`` writes) is named after its run folder."""
    from segloc.errors import SeglocError
    from segloc.models.checkpoint import SHIPPED_CHECKPOINTS, read_checkpoint_info, resolve_checkpoint, shipped_checkpoint

    if not names:
        names = [name for name in SHIPPED_CHECKPOINTS if read_checkpoint_info(shipped_checkpoint(name)).model == "segmentation"]
    checkpoints: dict[str, Path] = {}
    for name in names:
        try:
            path = resolve_checkpoint(name, "--checkpoint").resolve()
        except SeglocError as error:
            raise SystemExit(str(error)) from None
        column = f"SegLoc {path.parent.name if path.name == 'checkpoint' else path.name}"
        if column in checkpoints and checkpoints[column] != path:
            column = f"SegLoc {path}"
        checkpoints[column] = path
    return checkpoints


def mapping_fingerprint(dataset: Path) -> str:
    """SHA-256 over the mapping records (names, poses, cameras) and the bytes of their images: equal for datasets that share their mapping images."""
    from segloc.data.dataset import read_dataset

    digest = hashlib.sha256()
    for record in read_dataset(dataset, check_images=False).mapping:
        pose = np.round(np.concatenate([record.cam_from_world.quat_wxyz, record.cam_from_world.translation]), 8) + 0.0
        camera = (
            record.camera.model,
            record.camera.width,
            record.camera.height,
            np.round(np.asarray(record.camera.params, float), 6).tolist(),
        )
        digest.update(f"{record.name} {pose.tolist()} {camera}".encode())  # rounded: a copied list is re-normalised when read
        digest.update(hashlib.sha256((dataset / "images" / record.name).read_bytes()).digest())
    return digest.hexdigest()


def real_datasets(args: argparse.Namespace, source: Path, work: Path) -> dict[str, Path]:
    """Condition -> dataset folder of one real scene: its own queries by day, relit ones (written once into ``work``) otherwise."""
    datasets = {}
    for condition in args.real_condition:
        if condition == "day":
            datasets[condition] = source.resolve()
            continue
        target = work / f"{source.name}_{condition}_{args.seed}"
        if not (target / "query.txt").is_file():
            run(
                [
                    *SEGLOC,
                    "-q",
                    "dataset",
                    "relight",
                    str(source),
                    "--condition",
                    condition,
                    "--seed",
                    str(args.seed),
                    "-o",
                    str(target),
                    "--overwrite",
                    "--no-progress",
                ]
            )
        datasets[condition] = target.resolve()
    return datasets


def synthetic_datasets(args: argparse.Namespace, scene: str, work: Path) -> dict[str, Path]:
    """Condition -> dataset folder of one synthetic scene, rendered once into ``work``."""
    datasets = {}
    width, height = args.size
    for condition in args.synthetic_condition:
        target = work / f"synthetic_{scene}_{condition}_{args.seed}_{width}x{height}_{args.num_mapping}_{args.num_query}"
        if not (target / "scene.json").is_file():
            run(
                [
                    *SEGLOC,
                    "-q",
                    "synth",
                    "-o",
                    str(target),
                    "--scene",
                    scene,
                    "--condition",
                    condition,
                    "--seed",
                    str(args.seed),
                    "--size",
                    f"{width}x{height}",
                    "--num-mapping",
                    str(args.num_mapping),
                    "--num-query",
                    str(args.num_query),
                    "--overwrite",
                    "--no-progress",
                ]
            )
        datasets[condition] = target.resolve()
    return datasets


# --- maps and evaluations -------------------------------------------------------------------------------


def scene_maps(
    dataset: Path, fingerprint: str, checkpoints: dict[str, Path], config: dict[str, Any], work: Path
) -> tuple[dict[str, Path], dict[str, float]]:
    """Column -> map of one scene's mapping images (built unless ``work`` holds one of the same fingerprint and network); build seconds."""
    work.mkdir(parents=True, exist_ok=True)
    maps, seconds = {}, {}
    wanted = {column: (SEGLOC_METHOD, path) for column, path in checkpoints.items()}
    wanted[REFERENCE_METHOD] = (REFERENCE_METHOD, None)
    for column, (method, checkpoint) in wanted.items():
        key = hashlib.sha256(
            f"{fingerprint} {method} {checkpoint_sha256(checkpoint) if checkpoint else ''} {json.dumps(config.get('map'))}".encode()
        )
        map_dir = work / f"map_{method}_{key.hexdigest()[:16]}"
        if open_map(map_dir) is None:
            map_config = None
            if method == SEGLOC_METHOD:
                map_config = write_config(
                    work / f"{map_dir.name}.yaml", {"map": {**(config.get("map") or {}), "checkpoint": str(checkpoint)}}
                )
            seconds[column] = build_map(dataset, method, map_dir, map_config)
        maps[column] = map_dir
    return maps, seconds


def measure_row(args: argparse.Namespace, dataset: Path, maps: dict[str, Path], config: dict[str, Any], work: Path) -> dict[str, dict]:
    """Column -> evaluation summary of one dataset's queries against each map (SegLoc with refinement, the reference with its defaults)."""
    work.mkdir(parents=True, exist_ok=True)
    localize = {**(config.get("localize") or {}), "refine": True}
    results = {}
    for index, (column, map_dir) in enumerate(maps.items()):
        options = None if column == REFERENCE_METHOD else localize
        results[column] = evaluate(args, f"{index}_{map_dir.name}", map_dir, dataset, work, options, reuse=args.reuse)
    return results


# --- tables ----------------------------------------------------------------------------------------------


def _count(row: dict, threshold: str) -> str:
    recall, total = (row.get("recall") or {}).get(threshold), row.get("num_queries")
    if recall is None:
        return "-"
    return f"{round(recall * total)}/{total}" if total else f"{100 * recall:.0f}%"


def _median(row: dict) -> str:
    t, r = row.get("median_translation_m"), row.get("median_rotation_deg")
    if t is None or r is None:
        return "-"
    return (f"{1000 * t:.0f} mm" if t < 0.1 else f"{t:.2f} m") + f", {r:.2f}°"


def _time(row: dict) -> str:
    seconds = row.get("time_per_query_s")
    return "-" if seconds is None else f"{seconds:.2f} s"


def markdown_tables(rows: list[dict]) -> str:
    """The two Markdown tables of a report's ``rows``: recall at (0.25 m, 2 deg) per scene x condition and method, then every figure per method.

    Args:
        rows: ``{"scene", "condition", "methods": {column: summary}}`` in table order; a summary
            holds ``recall`` (fraction per threshold key of :data:`THRESHOLDS`), ``num_queries``,
            ``median_translation_m``, ``median_rotation_deg`` and ``time_per_query_s`` (None when unknown).
    """
    columns = list(dict.fromkeys(column for row in rows for column in row["methods"]))
    headline = THRESHOLDS[0]
    lines = [
        f"Localized within {THRESHOLD_TITLES[headline]}:",
        "",
        "| scene | condition | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [_count(row["methods"][c], headline) if c in row["methods"] else "-" for c in columns]
        best = max((row["methods"][c].get("recall") or {}).get(headline) or 0 for c in row["methods"]) if row["methods"] else 0
        cells = [
            f"**{cell}**" if c in row["methods"] and best > 0 and (row["methods"][c].get("recall") or {}).get(headline) == best else cell
            for c, cell in zip(columns, cells)
        ]
        lines.append(f"| {row['scene']} | {row['condition']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "All figures:",
        "",
        "| scene | condition | method | " + " | ".join(THRESHOLD_TITLES[t] for t in THRESHOLDS) + " | median error | time / query |",
        "|---|---|---|" + "---|" * (len(THRESHOLDS) + 2),
    ]
    for row in rows:
        for column, summary in row["methods"].items():
            counts = " | ".join(_count(summary, t) for t in THRESHOLDS)
            lines.append(f"| {row['scene']} | {row['condition']} | {column} | {counts} | {_median(summary)} | {_time(summary)} |")
    return "\n".join(lines) + "\n"


# --- main --------------------------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from segloc.data.relight import RELIGHT_PRESETS
    from segloc.data.synthetic import CONDITIONS, SCENES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME_OR_PATH",
        help="SegLoc network, a column each (repeatable; default: the shipped ones)",
    )
    parser.add_argument("--dataset", action="append", type=Path, help=f"real scene (repeatable; default {DEFAULT_REAL[0]})")
    parser.add_argument(
        "--real-condition",
        action="append",
        choices=["day", *RELIGHT_PRESETS],
        help="conditions of the real scenes' queries (default day, dusk, night)",
    )
    parser.add_argument("--synthetic", action="append", choices=list(SCENES), help="synthetic scene (repeatable; default room, street)")
    parser.add_argument(
        "--synthetic-condition",
        action="append",
        choices=list(CONDITIONS),
        help="conditions of the synthetic scenes (default lighting, night, season, severe)",
    )
    parser.add_argument("--no-real", action="store_true", help="no real scene")
    parser.add_argument("--no-synthetic", action="store_true", help="no synthetic scene")
    parser.add_argument("--size", type=_size, default=(320, 240), help="synthetic image size (default 320x240, the shipped networks')")
    parser.add_argument("--num-mapping", type=int, default=60, help="synthetic mapping images (default 60)")
    parser.add_argument("--num-query", type=int, default=15, help="synthetic query images (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic scenes and of the relighting noise")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "segloc_outdoor.yaml", help="SegLoc config of real scenes")
    parser.add_argument("--synthetic-config", type=Path, help="SegLoc config of synthetic scenes (default: the library's defaults)")
    parser.add_argument("--limit", type=int, help="only the first N queries of each dataset")
    parser.add_argument("--threads", type=int, help="CPU threads of every subprocess (OMP_NUM_THREADS)")
    parser.add_argument(
        "--work", type=Path, default=Path("outputs/segloc_conditions"), help="folder for datasets, maps, evaluations (reused)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read the evaluations an earlier run left in WORK (same map, dataset and options) instead of running them again",
    )
    parser.add_argument("-o", "--output", type=Path, help="JSON output (default WORK/segloc_conditions.json)")
    parser.add_argument("--markdown", type=Path, help="Markdown tables (default WORK/segloc_conditions.md)")
    args = parser.parse_args(argv)
    args.dataset = [] if args.no_real else (args.dataset or list(DEFAULT_REAL))
    args.synthetic = [] if args.no_synthetic else (args.synthetic or list(SYNTHETIC_SCENES))
    args.real_condition = list(dict.fromkeys(args.real_condition or REAL_CONDITIONS))
    args.synthetic_condition = list(dict.fromkeys(args.synthetic_condition or SYNTHETIC_CONDITIONS))
    args.oracle = False  # read by segloc_table.evaluate
    for dataset in args.dataset:
        if not (dataset / "mapping.txt").is_file() or not (dataset / "query.txt").is_file():
            parser.error(f"--dataset {dataset}: not a dataset folder with mapping.txt and query.txt")
    for name, path in (("--config", args.config), ("--synthetic-config", args.synthetic_config)):
        if path is not None and not path.is_file():
            parser.error(f"{name} {path} does not exist")
    if not args.dataset and not args.synthetic:
        parser.error("nothing to measure: both --no-real and --no-synthetic")
    return args


def read_segloc_config(path: Path | None) -> dict[str, Any]:
    """The ``map:`` and ``localize:`` sections of a config file, checked against SegLoc's configs before any work."""
    from segloc.config import read_config_file
    from segloc.errors import SeglocError
    from segloc.methods import get_method

    if path is None:
        return {}
    method = get_method(SEGLOC_METHOD)
    try:
        values = read_config_file(path)
        method.map_config(values.get("map"))
        method.localize_config(values.get("localize"))
    except SeglocError as exc:
        raise SystemExit(f"config {path}: {exc}") from None
    return {key: values[key] for key in ("map", "localize") if values.get(key)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    checkpoints = resolve_checkpoints(args.checkpoint)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    configs = {"real": read_segloc_config(args.config), "synthetic": read_segloc_config(args.synthetic_config)}
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    scenes: list[tuple[str, str, dict[str, Path]]] = []
    for source in args.dataset:
        scenes.append((source.name, "real", real_datasets(args, source, work / "datasets")))
    for scene in args.synthetic:
        scenes.append((scene, "synthetic", synthetic_datasets(args, scene, work / "datasets")))

    rows, build_seconds = [], {}
    for scene, kind, datasets in scenes:
        config = configs[kind]
        maps_by_fingerprint: dict[str, dict[str, Path]] = {}
        for condition, dataset in datasets.items():
            fingerprint = mapping_fingerprint(dataset)
            if fingerprint not in maps_by_fingerprint:
                maps_by_fingerprint[fingerprint], seconds = scene_maps(dataset, fingerprint, checkpoints, config, work / "maps")
                build_seconds.setdefault(scene, {}).update(seconds)
            print(f"[{time.perf_counter() - start:6.0f} s] {scene} {condition}", file=sys.stderr, flush=True)
            methods = measure_row(args, dataset, maps_by_fingerprint[fingerprint], config, work / "evaluations" / f"{scene}_{condition}")
            rows.append({"scene": scene, "condition": condition, "kind": kind, "dataset": str(dataset), "methods": methods})
            write_report(args, work, checkpoints, build_seconds, rows, time.perf_counter() - start)
    tables = write_report(args, work, checkpoints, build_seconds, rows, time.perf_counter() - start)
    print(tables)
    print(f"wrote {args.output or work / 'segloc_conditions.json'} and {args.markdown or work / 'segloc_conditions.md'}")


def write_report(
    args: argparse.Namespace, work: Path, checkpoints: dict[str, Path], build_seconds: dict, rows: list[dict], seconds: float
) -> str:
    """Write the JSON report and the Markdown tables of the rows measured so far (atomically); returns the tables."""
    from segloc.fileio import atomic_write

    report = {
        "threads": args.threads,
        "checkpoints": {column: str(path) for column, path in checkpoints.items()},
        "config": {"real": str(args.config), "synthetic": str(args.synthetic_config) if args.synthetic_config else None},
        "synthetic": {"size": list(args.size), "num_mapping": args.num_mapping, "num_query": args.num_query, "seed": args.seed},
        "map_build_s": build_seconds,
        "total_s": round(seconds, 1),
        "rows": rows,
    }
    tables = markdown_tables(rows)
    output, markdown = args.output or work / "segloc_conditions.json", args.markdown or work / "segloc_conditions.md"
    atomic_write(output, lambda path: path.write_text(json.dumps(report, indent=2) + "\n"))
    atomic_write(markdown, lambda path: path.write_text(tables))
    return tables


if __name__ == "__main__":
    main()
