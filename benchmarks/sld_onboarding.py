"""Fast onboarding of a new scene: full SLD* training against a head on a frozen backbone, and the head's recall against N.

On target scenes the backbones never saw, every row trains in this run, on this machine:

- ``full``: ``segloc train sld`` (the cpu_demo preset) on the target's mapping images;
- ``head N=0``: ``segloc train sld-head --backbone imagenet`` (the ImageNet encoder of the PyPI
  wheel, an untrained fuse layer; no multi-scene training at all);
- ``head N=n``: ``segloc train sld-head`` on the backbone of ``segloc train sld-backbone`` over n
  scenes (``--backbone-steps`` optimizer steps): N=1 one synthetic office, N=3 that office and
  the real scenes fountain and entry, N=10 eight offices, fountain and entry (never the target).

Targets: ``office`` (a synthetic office, seed 0, mapped by day, queried under the ``lighting``
condition: evening light) and ``castle`` (``../shared/data/strecha_castle``, real; the backbones
never include it). Each row: training seconds (full: the epochs; head: buffer fill + head
epochs; setup, i.e. core build, landmark selection and labels, is the same for both and
reported apart), recall at the four standard thresholds, median errors, time per query and map
bytes, and against the full row the speed-up and the recall ratio at each threshold. Outputs
are cached under ``--workdir`` (scenes, runs, maps), so a rerun continues where one stopped.

    python benchmarks/sld_onboarding.py --workdir outputs/onboarding --threads 2 -o onboarding.json
    python benchmarks/sld_onboarding.py --workdir outputs/onboarding_quick --quick   # a minutes-long smoke run

Output::

    {"machine": ..., "backbones": {"N": {"scenes": [...], "train_s": ..., "steps": ..., "mean_heldout_recall": ...}},
     "targets": {TARGET: {"rows": {ROW: {"train_s", "setup_s", "buffer_s", "head_s", "buffer_bytes", "heldout_recall",
                                          "recall": {...}, "median_translation_m", "median_rotation_deg",
                                          "time_per_query_s", "map_bytes", "speedup", "recall_ratio": {...}}}}}}
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
THRESHOLDS = ("0.25m_2deg", "0.5m_5deg", "5m_10deg", "5cm_5deg")


def render(path: Path, scene: str, seed: int, condition: str, num_mapping: int, num_query: int, size: tuple[int, int]) -> Path:
    from segloc.data.synthetic import generate_scene, synth_config

    if not (path / "mapping.txt").is_file():
        config = synth_config(scene, condition, seed=seed, num_mapping=num_mapping, num_query=num_query, width=size[0], height=size[1])
        generate_scene(config, path, progress=False)
    return path


def evaluate(checkpoint: Path, dataset_dir: Path, work: Path) -> dict[str, Any]:
    """Build the SLD map from ``checkpoint`` and evaluate it on the dataset's queries."""
    from segloc.data.dataset import read_dataset
    from segloc.evaluate.run import evaluate_map
    from segloc.methods.sld.layer import SldMapConfig, build_sld_map

    dataset = read_dataset(dataset_dir)
    map_dir = work / "map"
    if not (map_dir / "manifest.json").is_file():
        build_sld_map(dataset, map_dir, SldMapConfig(checkpoint=str(checkpoint)), overwrite=True, progress=False)
    metrics = evaluate_map(map_dir, dataset, work / "eval", progress=False)
    keys = ("recall", "median_translation_m", "median_rotation_deg", "time_per_query_s", "map_bytes", "num_queries", "num_localized")
    return {key: metrics.get(key) for key in keys}


def full_row(target: Path, work: Path, threads: int, quick: bool) -> dict[str, Any]:
    from segloc.models.checkpoint import read_checkpoint_info
    from segloc_train.sld.train_sld import train_config, train_sld

    run = work / "full"
    if (
        not (run / "resume" / "state.json").is_file()
        or json.loads((run / "resume" / "state.json").read_text()).get("stopped") != "completed"
    ):
        values = {"threads": threads, **({"epochs": 3, "steps_per_epoch": 10} if quick else {})}
        start = time.perf_counter()
        train_sld(target, run, train_config("cpu_demo", values), resume=(run / "resume").is_dir(), progress=False)
        logging.info("full SLD* on %s: %.1f s", target.name, time.perf_counter() - start)
    state = json.loads((run / "resume" / "state.json").read_text())
    info = read_checkpoint_info(run / "checkpoint")
    row = {
        "train_s": round(state["train_seconds"], 2),
        "epochs": state["epochs_done"],
        "heldout_recall": info.metadata["heldout"]["recall"],
    }
    return {**row, **evaluate(run / "checkpoint", target, work / "full_eval")}


def head_row(target: Path, work: Path, name: str, backbone: str, threads: int, quick: bool) -> dict[str, Any]:
    from segloc.models.checkpoint import read_checkpoint_info
    from segloc_train.sld.head import head_config, train_sld_head

    run = work / name
    if not (run / "losses.json").is_file() or "seconds" not in json.loads((run / "losses.json").read_text()):
        if run.exists():
            import shutil

            shutil.rmtree(run)  # an interrupted head run of this benchmark's own workdir
        values = {"threads": threads, "backbone": backbone, **({"epochs": 2} if quick else {})}
        train_sld_head(target, run, head_config("cpu_demo", values), progress=False)
    history = json.loads((run / "losses.json").read_text())
    info = read_checkpoint_info(run / "checkpoint")
    seconds = history["seconds"]
    row = {
        "train_s": round(seconds["buffer"] + seconds["head"], 2),
        "setup_s": seconds["setup"],
        "buffer_s": seconds["buffer"],
        "head_s": seconds["head"],
        "buffer_bytes": history["buffer"]["bytes"],
        "buffer_patches": history["buffer"]["patches"],
        "heldout_recall": info.metadata["heldout"]["recall"],
    }
    return {**row, **evaluate(run / "checkpoint", target, work / f"{name}_eval")}


def train_backbone(scenes: list[Path], run: Path, steps: int, threads: int) -> dict[str, Any]:
    from segloc_train.sld.backbone import backbone_config, train_sld_backbone

    if not (run / "checkpoint").is_dir():
        if run.exists():
            import shutil

            shutil.rmtree(run)
        train_sld_backbone(
            scenes, run, backbone_config("cpu_demo", {"threads": threads, "epochs": 1000, "max_steps": steps}), progress=False
        )
    history = json.loads((run / "losses.json").read_text())
    return {
        "scenes": [Path(scene).name for scene in history["scenes"]],
        "train_s": history["seconds"]["train"],
        "setup_s": history["seconds"]["setup"],
        "steps": len(history["steps"]),
        "epochs": len(history["epochs"]),
        "mean_heldout_recall": max(record["recall"] for record in history["epochs"]),
    }


def plot(path: Path, result: dict[str, Any]) -> None:
    from segloc.evaluate.report import new_figure, save_figure

    figure = new_figure(5 * len(result["targets"]), 3.5)
    axes = figure.subplots(1, len(result["targets"]), squeeze=False)[0]
    for axis, (target, entry) in zip(axes, result["targets"].items()):
        rows = entry["rows"]
        ns = sorted(int(name.split("=")[1]) for name in rows if name.startswith("head N="))
        for threshold, colour in zip(THRESHOLDS[:3], ("C0", "C1", "C2")):
            axis.plot(ns, [rows[f"head N={n}"]["recall"][threshold] for n in ns], marker="o", color=colour, label=f"head {threshold}")
            axis.axhline(rows["full"]["recall"][threshold], color=colour, linestyle="--", linewidth=1)
        axis.set_title(f"{target}: head recall vs N (dashed: full SLD*)")
        axis.set_xlabel("scenes the backbone was trained on (0: ImageNet encoder)")
        axis.set_ylim(0, 1.05)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    save_figure(figure, path)


def table(result: dict[str, Any]) -> str:
    lines = []
    for target, entry in result["targets"].items():
        lines += [f"\n{target}", "| row | train s | speed-up | recall 0.25m/2° / 0.5m/5° / 5m/10° / 5cm/5° | ratio at 0.5m/5° | median m / ° | ms/query | map MB |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in entry["rows"].items():
            recall = " / ".join(f"{100 * row['recall'][k]:.1f}" for k in THRESHOLDS)
            ratio = row.get("recall_ratio", {}).get("0.5m_5deg")
            median = (
                f"{row['median_translation_m']:.2f} / {row['median_rotation_deg']:.2f}" if row["median_translation_m"] is not None else "-"
            )
            lines.append(
                f"| {name} | {row['train_s']:.1f} | {row.get('speedup', 1.0):.1f}x | {recall} | {'-' if ratio is None else f'{ratio:.2f}'} "
                f"| {median} | {1000 * row['time_per_query_s']:.0f} | {row['map_bytes'] / 1e6:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="scenes, runs and maps (reused by a rerun)")
    parser.add_argument("--targets", nargs="+", default=["office", "castle"], choices=["office", "castle"])
    parser.add_argument("--backbone-ns", nargs="+", type=int, default=[1, 3, 10], choices=[1, 3, 10])
    parser.add_argument("--backbone-steps", type=int, default=400, help="optimizer steps of each backbone")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small scenes and short runs: a smoke test of the benchmark")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too (and a PNG of recall vs N beside it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    work = args.workdir
    size = (160, 120) if args.quick else (320, 240)
    count = (16, 4) if args.quick else (100, 40)
    steps = 20 if args.quick else args.backbone_steps
    targets = {}
    if "office" in args.targets:
        targets["office"] = render(work / "scenes" / "office_0", "office", 0, "lighting", count[0], count[1], size)
    if "castle" in args.targets:
        targets["castle"] = SHARED / "strecha_castle"
    offices = [render(work / "scenes" / f"office_{seed}", "office", seed, "same", count[0] * 3 // 5, 4, size) for seed in range(100, 108)]
    real = [SHARED / "strecha_fountain", SHARED / "strecha_entry"]
    plans = {1: offices[:1], 3: offices[:1] + real, 10: offices + real}

    result: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "quick": args.quick,
                              "backbones": {}, "targets": {}}  # fmt: skip
    for n in args.backbone_ns:
        result["backbones"][str(n)] = train_backbone(plans[n], work / "backbones" / f"N{n}", steps, args.threads)
        logging.info("backbone N=%d: %s", n, result["backbones"][str(n)])
    for target, root in targets.items():
        base = work / "runs" / target
        rows = {"full": full_row(root, base, args.threads, args.quick)}
        rows["head N=0"] = head_row(root, base, "head_N0", "imagenet", args.threads, args.quick)
        for n in args.backbone_ns:
            rows[f"head N={n}"] = head_row(root, base, f"head_N{n}", str(work / "backbones" / f"N{n}"), args.threads, args.quick)
        full = rows["full"]
        for row in rows.values():
            row["speedup"] = round(full["train_s"] / max(row["train_s"], 1e-9), 2)
            row["recall_ratio"] = {k: round(row["recall"][k] / full["recall"][k], 3) if full["recall"][k] else None for k in THRESHOLDS}
        result["targets"][target] = {"dataset": str(root), "rows": rows}
        logging.info("%s done", target)
    text = json.dumps(result, indent=2)
    print(text)
    print(table(result))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        plot(args.output.with_suffix(".png"), result)


if __name__ == "__main__":
    main()
