"""``segloc train ninjadesc DATASET [DATASET ...] -o RUN``: the NinjaDesc subcommand (imports only argparse at import time)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segloc_train.cli import add_run_config_options, add_run_options, run_config


def _config(args: argparse.Namespace):
    from segloc_train.ninjadesc.train_ninjadesc import load_ninjadesc_config, ninjadesc_config_from_dict

    overrides = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "lambda_recon": args.lambda_recon,
        "base_descriptor": args.base_descriptor,
        "time_budget_s": args.time_budget,
        "device": args.device,
        "threads": args.threads,
    }
    return run_config(
        args, load_ninjadesc_config, lambda name: ninjadesc_config_from_dict({"preset": name}, where="--preset"), "cpu", overrides
    )


def _print_epoch(summary: dict) -> None:
    note = ", stopped: time budget used up" if summary.get("stopped") == "time_budget" else ""
    losses = " ".join(f"{name} {summary[key]:.4f}" for key, name in (("util", "L_util"), ("recon", "L_recon")) if key in summary)
    base = summary["base"]
    print(
        f"epoch {summary['epoch']}/{summary['epochs']}: {losses}, held-out FPR@95 {summary['fpr95']:.4f} MMA {summary['mma']:.3f} "
        f"(raw {base['name']} {base['fpr95']:.4f} / {base['mma']:.3f}), {summary['steps']} steps, {summary['seconds']:.1f} s{note}",
        flush=True,
    )


def cmd_train_ninjadesc(args: argparse.Namespace) -> int:
    """Train NinjaNet adversarially; prints one line per epoch and the checkpoint."""
    import time

    from segloc_train.ninjadesc.train_ninjadesc import train_ninjadesc

    config = _config(args)
    start = time.perf_counter()
    checkpoint = train_ninjadesc(
        args.datasets, args.output, config, resume=args.resume, progress=not args.no_progress, on_epoch=_print_epoch
    )
    print(
        f"wrote checkpoint {checkpoint} (best held-out FPR@95) in {time.perf_counter() - start:.1f} s (attacker, losses, curves in {args.output})"
    )
    return 0


def add_ninjadesc_parser(trainers: argparse._SubParsersAction) -> None:
    """Add the ``ninjadesc`` subcommand to ``segloc train``'s subparsers."""
    p = trainers.add_parser(
        "ninjadesc",
        help="train NinjaNet (NinjaDesc over RootSIFT or VGG) adversarially against an inversion attacker on SfM tracks",
        description=(
            "Train NinjaNet on the core builds of DATASET(s) (synthetic scenes other than the audited one): utility "
            "initialisation (triplet + SOS on the base descriptors of SfM tracks), attacker initialisation, then alternating steps on "
            "L_util - lambda * L_recon (NinjaNet) and L_recon (the inversion U-Net). Writes RUN/checkpoint (the best held-out "
            "FPR@95), RUN/attacker, RUN/config.yaml, RUN/losses.json, RUN/curves.png and RUN/resume/."
        ),
    )
    p.add_argument("datasets", type=Path, nargs="+", metavar="DATASET", help="dataset folder(s) with mapping images and poses")
    add_run_config_options(p, "cpu (default; minutes on one core for two small synthetic scenes) or paper (GPU)")
    p.add_argument(
        "--lambda", dest="lambda_recon", type=float, help="weight of the privacy term: NinjaNet minimises L_util - lambda * L_recon"
    )
    p.add_argument(
        "--base-descriptor",
        metavar="NAME",
        help="the descriptor NinjaNet re-encodes at SIFT keypoints: rootsift (default) or vgg (OpenCV's VGG, needs opencv-contrib)",
    )
    p.add_argument("--epochs", type=int, help="epochs of the joint adversarial training (with --resume: train up to this many)")
    add_run_options(p)
    p.set_defaults(func=cmd_train_ninjadesc)
