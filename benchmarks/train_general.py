"""Train one SegLoc network across many places and conditions (the candidate general network).

Renders synthetic scenes (``--scenes`` x ``--seeds``), each under every ``--conditions`` with the
same mapping poses (sibling dataset folders, which the trainer pairs across conditions: image A
under one condition, B under another, correspondences from the geometry), adds the real scenes
(``--real``, by default the Strecha scenes in ``../shared/data`` when present), and trains one
network on all of them with ``segloc_train.segloc.train_segloc`` (batches mixed across places).
Runs unattended: rendered scenes are reused when already in ``OUT/scenes``, the training stops
cleanly after ``--time-budget`` seconds (core builds included), and one JSON document is printed
at the end (and written to ``OUT/summary.json``)::

    python benchmarks/train_general.py -o outputs/general --device cuda --time-budget 480
    python benchmarks/train_general.py -o /tmp/tiny --scenes room --seeds 0 --conditions day night \
        --num-mapping 12 --mapping-laps 0.25 --size 160x120 --real --epochs 1 --steps-per-epoch 2

Output::

    {"checkpoint": "OUT/train/checkpoint", "places": 9, "datasets": 21, "render_s": ..., "train_s": ...,
     "epochs": [{"epoch": 1, "steps": ..., "seconds": ..., "total": ..., "classes_used": ...,
                 "class_perplexity": ...}, ...],
     "classes_used": ..., "class_perplexity": ..., "stopped": "time_budget" | "" , "device": "cuda"}

Ship the result as ``segloc_general`` (``segloc.models.checkpoint.SHIPPED_CHECKPOINTS``) to make
``segloc train segloc DATASET --init general`` start from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_REAL = ("strecha_castle", "strecha_fountain", "strecha_entry")


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def render_scenes(args: argparse.Namespace, scene_dir: Path) -> list[Path]:
    """Dataset folders of every (scene, seed, condition), rendered unless already there."""
    from segloc.data import synthetic
    from segloc.data.dataset import is_dataset_folder

    width, height = args.size
    folders = []
    for scene in args.scenes:
        for seed in args.seeds:
            for condition in args.conditions:
                folder = scene_dir / f"{scene}_seed{seed}" / condition
                if not is_dataset_folder(folder):
                    config = synthetic.synth_config(
                        scene,
                        "same",
                        seed=seed,
                        num_mapping=args.num_mapping,
                        mapping_laps=args.mapping_laps,
                        num_query=0,
                        width=width,
                        height=height,
                        mapping_appearance=condition,
                    )
                    synthetic.generate_scene(config, folder, progress=not args.no_progress)
                folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (scenes/, train/, summary.json)")
    parser.add_argument("--scenes", nargs="+", default=["room", "corridor", "street"], help="synthetic scenes")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds of each synthetic scene")
    parser.add_argument("--conditions", nargs="+", default=["day", "evening", "night", "autumn"], help="mapping conditions per scene")
    parser.add_argument("--num-mapping", type=int, default=80, help="mapping images per synthetic scene")
    parser.add_argument("--mapping-laps", type=float, default=1.0, help="laps of the loop the mapping images cover")
    parser.add_argument("--size", type=parse_size, default=(320, 240), help="synthetic image size WIDTHxHEIGHT")
    parser.add_argument(
        "--real", nargs="*", type=Path, help="real dataset folders (default: the Strecha scenes in ../shared/data; none when given empty)"
    )
    parser.add_argument("--config", type=Path, help="YAML with a 'train' section (default: the cpu_demo preset)")
    parser.add_argument("--init", help="start from this checkpoint folder or shipped network")
    parser.add_argument("--epochs", type=int, default=1000, help="epochs (the time budget usually ends the run first)")
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, help="image pairs per step (default: the config's)")
    parser.add_argument("--time-budget", type=float, default=480.0, help="training wall time in seconds (core builds included)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from segloc.config import config_to_dict
    from segloc.evaluate.report import write_json
    from segloc_train.segloc.train_segloc import group_condition_variants, load_train_config, train_config, train_segloc

    start = time.perf_counter()
    datasets = render_scenes(args, args.output / "scenes")
    render_s = time.perf_counter() - start
    real = args.real if args.real is not None else [SHARED_DATA / name for name in DEFAULT_REAL if (SHARED_DATA / name).is_dir()]
    datasets += [Path(path) for path in real]

    config = load_train_config(args.config) if args.config else train_config("cpu_demo")
    overrides = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "time_budget_s": args.time_budget,
        "device": args.device,
        "threads": args.threads,
        "init_checkpoint": args.init,
        "batch_size": args.batch_size,
    }
    values = {**config_to_dict(config), **{k: v for k, v in overrides.items() if v is not None}}
    if args.device != "cpu":
        values["core"]["matcher"]["device"] = args.device
    config = train_config(**values)
    epochs: list[dict] = []

    def on_epoch(summary: dict) -> None:
        keys = ("epoch", "steps", "seconds", "total", "classes_used", "class_perplexity", "stopped")
        epochs.append({key: summary[key] for key in keys if key in summary})
        print(json.dumps(epochs[-1]), flush=True)

    train_start = time.perf_counter()
    checkpoint = train_segloc(datasets, args.output / "train", config, progress=not args.no_progress, on_epoch=on_epoch)
    summary = {
        "checkpoint": str(checkpoint),
        "places": len(group_condition_variants(datasets)),
        "datasets": len(datasets),
        "render_s": round(render_s, 1),
        "train_s": round(time.perf_counter() - train_start, 1),
        "epochs": epochs,
        "classes_used": epochs[-1]["classes_used"] if epochs else None,
        "class_perplexity": epochs[-1]["class_perplexity"] if epochs else None,
        "stopped": epochs[-1].get("stopped", "") if epochs else "",
        "device": args.device,
    }
    write_json(args.output / "summary.json", summary)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
