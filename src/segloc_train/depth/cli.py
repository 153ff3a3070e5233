"""``segloc train depth DATASET [DATASET ...] -o RUN``: the depth subcommand (imports only argparse at import time)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segloc_train.cli import add_run_config_options, add_run_options, run_config


def _print_epoch(summary: dict) -> None:
    note = ", stopped: time budget used up" if summary.get("stopped") == "time_budget" else ""
    print(
        f"epoch {summary['epoch'] + 1}/{summary['epochs']}: loss {summary['loss']:.4f}, held-out AbsRel {summary['abs_rel']:.3f}, "
        f"delta1 {summary['delta1']:.3f}, {summary['steps']} steps, {summary['seconds']:.1f} s{note}",
        flush=True,
    )


def cmd_train_depth(args: argparse.Namespace) -> int:
    """Train the monocular depth network; prints one line per epoch and the checkpoint."""
    import time

    from segloc_train.depth.train_depth import load_train_config, train_config, train_depth

    overrides = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "time_budget_s": args.time_budget,
        "device": args.device,
        "threads": args.threads,
    }
    config = run_config(args, load_train_config, train_config, "cpu", overrides)
    start = time.perf_counter()
    checkpoint = train_depth(args.datasets, args.output, config, resume=args.resume, progress=not args.no_progress, on_epoch=_print_epoch)
    print(f"wrote checkpoint {checkpoint} in {time.perf_counter() - start:.1f} s (config, losses and curves in {args.output})")
    return 0


def add_depth_parser(trainers: argparse._SubParsersAction) -> None:
    """Add the ``depth`` subcommand to ``segloc train``'s subparsers."""
    p = trainers.add_parser(
        "depth",
        help="train the monocular depth network (relative depth, scale-invariant loss) on the synthetic scenes' depth images",
        description=(
            "Train the project's monocular depth network (EfficientNet-Lite0 ImageNet encoder + light decoder) on the images of "
            "DATASET(s) that have a depth image (depth/<name>, uint16 millimetres: the synthetic scenes). Writes RUN/checkpoint "
            "(the best on the held-out images; load it with segloc.depth.load_depth_estimator), RUN/config.yaml, RUN/losses.json, "
            "RUN/curves.png and RUN/resume/."
        ),
    )
    p.add_argument("datasets", type=Path, nargs="+", metavar="DATASET", help="dataset folder(s) with depth/ images")
    add_run_config_options(p, "cpu (default; a few minutes on two cores) or gpu")
    p.add_argument("--epochs", type=int, help="total number of epochs (with --resume: train up to this many)")
    add_run_options(p)
    p.set_defaults(func=cmd_train_depth)
