"""``segloc train sfrs DATASET [DATASET ...] -o RUN``: the SFRS subcommand (imports only argparse at import time)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segloc_train.cli import add_run_config_options, add_run_options, run_config


def _config(args: argparse.Namespace):
    from segloc_train.sfrs.train_sfrs import load_sfrs_config, sfrs_config_from_dict

    overrides = {
        "generations": args.generations,
        "epochs_per_generation": args.epochs_per_generation,
        "steps_per_epoch": args.steps_per_epoch,
        "time_budget_s": args.time_budget,
        "device": args.device,
        "threads": args.threads,
    }
    return run_config(args, load_sfrs_config, lambda name: sfrs_config_from_dict({"preset": name}, where="--preset"), "cpu", overrides)


def _print_epoch(summary: dict) -> None:
    terms = " ".join(f"{key} {summary[key]:.3f}" for key in ("image", "soft", "recall_at_1") if key in summary)
    note = ", stopped: time budget used up" if summary.get("stopped") == "time_budget" else ""
    print(
        f"generation {summary['generation']} epoch {summary['epoch']}/{summary['epochs']}: loss {summary['total']:.4f} ({terms}), "
        f"{summary['steps']} steps, {summary['seconds']:.1f} s{note}",
        flush=True,
    )


def cmd_train_sfrs(args: argparse.Namespace) -> int:
    """Train NetVLAD with SFRS; prints one line per epoch and the checkpoint."""
    import time

    from segloc_train.sfrs.train_sfrs import train_sfrs

    config = _config(args)
    start = time.perf_counter()
    checkpoint = train_sfrs(args.datasets, args.output, config, resume=args.resume, progress=not args.no_progress, on_epoch=_print_epoch)
    print(f"wrote checkpoint {checkpoint} in {time.perf_counter() - start:.1f} s (per generation in {args.output}/generation_G)")
    return 0


def add_sfrs_parser(trainers: argparse._SubParsersAction) -> None:
    """Add the ``sfrs`` subcommand to ``segloc train``'s subparsers."""
    p = trainers.add_parser(
        "sfrs",
        help="train the NetVLAD retrieval network with SFRS (self-supervised region similarities) on posed images",
        description=(
            "Train NetVLAD (EfficientNet-Lite0 backbone) with SFRS on the posed images of DATASET(s): weak labels from the poses, "
            "generation 0 with the image-level loss, later generations with the previous one's soft image-to-region "
            "similarities. Writes RUN/generation_G/checkpoint per generation, RUN/checkpoint (last save), RUN/config.yaml, "
            "RUN/losses.json, RUN/loss_curves.png and RUN/resume/."
        ),
    )
    p.add_argument("datasets", type=Path, nargs="+", metavar="DATASET", help="dataset folder(s); each is one place, mined on its own")
    add_run_config_options(p, "cpu (default; minutes on 2 cores for synthetic scenes) or paper (GPU)")
    p.add_argument("--generations", type=int, help="number of generations (generation 0 included)")
    p.add_argument("--epochs-per-generation", type=int, help="epochs of each generation")
    add_run_options(p)
    p.set_defaults(func=cmd_train_sfrs)
