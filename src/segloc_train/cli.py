"""The ``segloc train`` command: network training pipelines.

::

    segloc train sld DATASET -o OUT [--config YAML] [--preset cpu_demo|paper] [--epochs N] [--steps-per-epoch N]
                     [--time-budget S] [--resume] [--device cpu|cuda] [--threads N] [--no-progress]
    segloc train sld-backbone SCENE [SCENE ...] -o RUN [--config YAML] [--preset cpu_demo|paper] [--epochs N] [--max-steps N]
                              [--time-budget S] [--resume] [--device cpu|cuda] [--threads N] [--no-progress]
        (under torchrun: torchrun --nproc-per-node N -m segloc train sld-backbone ...)
    segloc train sld-head DATASET --backbone RUN|imagenet -o OUT [--config YAML] [--preset cpu_demo|paper] [--epochs N]
                          [--patches-per-image N] [--time-budget S] [--device cpu|cuda] [--threads N] [--no-progress]
    segloc train segloc DATASET [DATASET ...] -o OUT [--config YAML] [--init CHECKPOINT|general] [--preset cpu_demo|paper] [--map MAP]
                        [--epochs N] [--steps-per-epoch N] [--time-budget S] [--resume]
                        [--device cpu|cuda] [--threads N] [--no-progress]
    segloc train sfrs DATASET [DATASET ...] -o RUN [--config YAML] [--preset cpu|paper] [--generations N] ...
    segloc train ninjadesc DATASET [DATASET ...] -o RUN [--config YAML] [--preset cpu|paper] [--lambda L] [--epochs N] ...
    segloc train depth DATASET [DATASET ...] -o RUN [--config YAML] [--preset cpu|gpu] [--epochs N] ...

:func:`add_train_parser` adds the command to the ``segloc`` parser. The ``segloc`` package
must not import ``segloc_train`` (nor torch) when it starts, so this module imports only
argparse at import time; the trainers are imported inside the command functions.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segloc.errors import SeglocError


def run_config(
    args: argparse.Namespace, load: Callable[[Path], Any], preset: Callable[[str], Any], default_preset: str, overrides: dict[str, Any]
) -> Any:
    """A trainer's config from its command line.

    ``--config``'s ``train`` section, or with ``--resume`` the run's own ``config.yaml``, or
    ``--preset`` (``default_preset`` when none is given); then the ``overrides`` that are not
    None replace the config's fields.

    Args:
        args: the parsed command line (``config``, ``preset``, ``resume``, ``output``).
        load: reads a YAML file's ``train`` section into the trainer's config.
        preset: the trainer's config for a preset name.
        default_preset: the preset without ``--preset``.
        overrides: config field -> command-line value (None: not given).

    Raises:
        SeglocError: both ``--config`` and ``--preset``, or an override of a wrong type or range.
    """
    from segloc_train.checkpointing import CONFIG_FILE

    if args.config is not None:
        if args.preset is not None:
            raise SeglocError("give either --config or --preset; a config file's 'train' section can name a preset itself")
        config = load(args.config)
    elif args.resume and args.preset is None and (args.output / CONFIG_FILE).is_file():
        config = load(args.output / CONFIG_FILE)
    else:
        config = preset(args.preset or default_preset)
    try:
        return dataclasses.replace(config, **{key: value for key, value in overrides.items() if value is not None})
    except (TypeError, SeglocError) as exc:  # replace() of a wrong type or a value out of range: a bad input
        raise SeglocError(f"invalid command-line option: {exc}") from None


def add_run_config_options(p: argparse.ArgumentParser, presets: str) -> None:
    """Where a training run goes and what it trains with: ``-o RUN``, ``--config``, ``--preset`` (``presets`` says which)."""
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder of the training run")
    p.add_argument("--config", type=Path, help="YAML config with a 'train' section (optionally 'preset: NAME' plus options)")
    p.add_argument("--preset", help=presets)


def add_run_options(p: argparse.ArgumentParser, steps_per_epoch: bool = True) -> None:
    """The options every trainer takes: steps (unless ``steps_per_epoch`` is false), time budget, resume, device, threads, progress bars."""
    if steps_per_epoch:
        p.add_argument("--steps-per-epoch", type=int, help="at most this many steps per epoch")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop cleanly after this much wall time (setup included)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last save")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _segloc_config(args: argparse.Namespace):
    """The SegLoc trainer's config (:func:`run_config`)."""
    from segloc_train.segloc.train_segloc import load_train_config, train_config

    overrides = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "time_budget_s": args.time_budget,
        "device": args.device,
        "threads": args.threads,
        "init_checkpoint": args.init,
    }
    return run_config(args, load_train_config, train_config, "cpu_demo", overrides)


def _print_epoch(summary: dict) -> None:
    terms = " ".join(f"{key} {summary[key]:.3f}" for key in ("ce", "cc", "pc", "pf", "ms") if key in summary)
    note = ", stopped: time budget used up" if summary.get("stopped") == "time_budget" else ""
    print(
        f"epoch {summary['epoch']}/{summary['epochs']}: loss {summary['total']:.4f} ({terms}), {summary['steps']} steps, "
        f"{summary['seconds']:.1f} s, {summary['classes_used']} classes in use{note}",
        flush=True,
    )


def cmd_train_segloc(args: argparse.Namespace) -> int:
    """``segloc train segloc``: train the SegLoc segmentation network; prints one line per epoch and the checkpoint."""
    import time

    from segloc_train.segloc.train_segloc import train_segloc

    config = _segloc_config(args)
    start = time.perf_counter()
    checkpoint = train_segloc(
        args.datasets, args.output, config, core_map=args.map, resume=args.resume, progress=not args.no_progress, on_epoch=_print_epoch
    )
    print(f"wrote checkpoint {checkpoint} in {time.perf_counter() - start:.1f} s (config, losses and curves in {args.output})")
    return 0


def add_train_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` (with its ``segloc`` subcommand) to the ``segloc`` command's subparsers.

    Args:
        commands: the object ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The ``train`` parser (other trainers add their subcommands to its subparsers).
    """
    train = commands.add_parser("train", help="train a method's networks on a dataset's mapping images")
    trainers = train.add_subparsers(dest="train_command", required=True, metavar="METHOD")
    p = trainers.add_parser(
        "segloc",
        help="train the SegLoc segmentation network (self-supervised K-class clustering) on a dataset's mapping images",
        description=(
            "Train the SegLoc segmentation network on DATASET's mapping images. Writes OUT/checkpoint (load it with "
            "segloc.models.load_checkpoint), OUT/config.yaml (every option; reusable with --config), OUT/losses.json, "
            "OUT/loss_curves.png, OUT/prototypes.safetensors and OUT/resume/."
        ),
    )
    p.add_argument(
        "datasets",
        type=Path,
        nargs="+",
        metavar="DATASET",
        help="dataset folder(s) (images/, mapping.txt); several: one network for all, batches mixed across them; folders with "
        "the same mapping images (names, poses) under other conditions are paired across conditions",
    )
    add_run_config_options(p, "cpu_demo (default; about 15 min on two idle cores for a 150-image scene) or paper (GPU-scale)")
    p.add_argument("--map", type=Path, help="map package built from DATASET whose core gives the training pairs (default: build it)")
    p.add_argument(
        "--init",
        metavar="CHECKPOINT",
        help="start from this checkpoint folder, a shipped network's name, or 'general' (the shipped general network) "
        "instead of the ImageNet encoder: per-place fine-tuning",
    )
    p.add_argument("--epochs", type=int, help="total number of epochs (with --resume: train up to this many)")
    add_run_options(p)
    p.set_defaults(func=cmd_train_segloc)
    add_sld_parser(trainers)
    add_sld_onboarding_parsers(trainers)
    from segloc_train.sfrs.cli import add_sfrs_parser

    add_sfrs_parser(trainers)
    from segloc_train.ninjadesc.cli import add_ninjadesc_parser

    add_ninjadesc_parser(trainers)
    from segloc_train.depth.cli import add_depth_parser

    add_depth_parser(trainers)
    return train


def cmd_train_sld(args: argparse.Namespace) -> int:
    """``segloc train sld``: select the landmarks and train the landmark network; prints one line per epoch."""
    import time

    from segloc_train.sld.train_sld import load_train_config, train_config, train_sld

    overrides = {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "time_budget_s": args.time_budget}
    config = run_config(args, load_train_config, train_config, "cpu_demo", {**overrides, "device": args.device, "threads": args.threads})

    start = time.perf_counter()
    checkpoint = train_sld(
        args.dataset, args.output, config, resume=args.resume, progress=not args.no_progress, on_epoch=_print_landmark_epoch
    )
    print(f"wrote checkpoint {checkpoint} in {time.perf_counter() - start:.1f} s (config, losses and curves in {args.output})")
    return 0


def add_sld_parser(trainers: argparse._SubParsersAction) -> None:
    """Add ``segloc train sld`` to the ``train`` command's subparsers."""
    p = trainers.add_parser(
        "sld",
        help="train the SLD* scene landmark network (landmark selection, visibility, heatmap regression) on a dataset",
        description=(
            "Select DATASET's scene landmarks and train the SLD* landmark network on its mapping images. Writes OUT/checkpoint "
            "(the best network on the held-out images, with its landmarks; pass it as map: checkpoint: to `segloc map build "
            "--method sld`), OUT/config.yaml, OUT/losses.json, OUT/curves.png, OUT/landmarks.json and OUT/resume/."
        ),
    )
    p.add_argument("dataset", type=Path, metavar="DATASET", help="dataset folder (images/, mapping.txt[, depth/])")
    add_run_config_options(p, "cpu_demo (default; 100 landmarks, one network, minutes on a CPU) or paper (1000 landmarks, 8 x 125, GPU)")
    p.add_argument("--epochs", type=int, help="total number of epochs (with --resume: train up to this many)")
    add_run_options(p)
    p.set_defaults(func=cmd_train_sld)


def _print_landmark_epoch(summary: dict) -> None:
    """One line per epoch of the landmark trainers (loss, held-out recall)."""
    stopped = {"time_budget": "time budget used up", "max_steps": "max steps reached"}.get(summary.get("stopped", ""))
    note = f", stopped: {stopped}" if stopped else ""
    error = f", median error {summary['median_px_error']:.2f} px" if "median_px_error" in summary else ""
    print(
        f"epoch {summary['epoch'] + 1}/{summary['epochs']}: loss {summary['loss']:.5f}, held-out recall {summary['recall']:.3f}{error}, "
        f"{summary['steps']} steps, {summary['seconds']:.1f} s{note}",
        flush=True,
    )


def cmd_train_sld_backbone(args: argparse.Namespace) -> int:
    """``segloc train sld-backbone``: the shared landmark backbone over several scenes; one line per epoch (rank 0)."""
    import time

    from segloc_train.sld.backbone import backbone_config, train_sld_backbone
    from segloc_train.sld.train_sld import load_train_config

    overrides = {"epochs": args.epochs, "max_steps": args.max_steps, "time_budget_s": args.time_budget, "device": args.device,
                 "threads": args.threads}  # fmt: skip
    config = run_config(args, lambda path: load_train_config(path, backbone_config), backbone_config, "cpu_demo", overrides)
    start = time.perf_counter()
    checkpoint = train_sld_backbone(
        args.scenes, args.output, config, resume=args.resume, progress=not args.no_progress, on_epoch=_print_landmark_epoch
    )
    print(f"wrote checkpoint {checkpoint} in {time.perf_counter() - start:.1f} s (config, losses and curves in {args.output})")
    return 0


def cmd_train_sld_head(args: argparse.Namespace) -> int:
    """``segloc train sld-head``: a new scene's landmark head on a frozen backbone; one line per epoch."""
    import json
    import time

    from segloc_train.sld.head import head_config, train_sld_head
    from segloc_train.sld.train_sld import load_train_config

    args.resume = False
    overrides = {"backbone": args.backbone, "epochs": args.epochs, "patches_per_image": args.patches_per_image,
                 "time_budget_s": args.time_budget, "device": args.device, "threads": args.threads}  # fmt: skip
    config = run_config(args, lambda path: load_train_config(path, head_config), head_config, "cpu_demo", overrides)
    start = time.perf_counter()
    checkpoint = train_sld_head(args.dataset, args.output, config, progress=not args.no_progress, on_epoch=_print_landmark_epoch)
    buffer = json.loads((args.output / "losses.json").read_text())["buffer"]
    print(
        f"wrote checkpoint {checkpoint} in {time.perf_counter() - start:.1f} s; feature buffer: {buffer['patches']} patches of "
        f"{tuple(buffer['feature_shape'])}, {buffer['bytes'] / 1e6:.1f} MB ({buffer['dtype']}), filled in {buffer['seconds']:.1f} s"
    )
    return 0


def add_sld_onboarding_parsers(trainers: argparse._SubParsersAction) -> None:
    """Add ``segloc train sld-backbone`` and ``segloc train sld-head`` (fast onboarding of a new scene)."""
    p = trainers.add_parser(
        "sld-backbone",
        help="train a scene-agnostic landmark backbone over several scenes (one simple head per scene)",
        description=(
            "Train one shared landmark backbone and a simple head per scene over SCENES (dataset folders), in batches that each "
            "hold one scene, shuffled across scenes. Writes RUN/checkpoint (best mean held-out recall; pass RUN to "
            "`segloc train sld-head --backbone`), RUN/config.yaml, RUN/losses.json, RUN/curves.png, RUN/scenes/ and RUN/resume/ "
            "(--resume continues from the last epoch, with the same SCENES in the same order). Runs "
            "under torchrun unchanged: torchrun --nproc-per-node N -m segloc train sld-backbone ... (gloo on CPU, nccl on CUDA)."
        ),
    )
    p.add_argument("scenes", type=Path, nargs="+", metavar="SCENE", help="dataset folders (images/, mapping.txt[, depth/])")
    add_run_config_options(p, "cpu_demo (default; 100 landmarks per scene, 320-pixel images) or paper (GPU-scale)")
    p.add_argument("--epochs", type=int, help="epochs (each: every batch of every scene once; with --resume: train up to this many)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in all")
    add_run_options(p, steps_per_epoch=False)
    p.set_defaults(func=cmd_train_sld_backbone)

    p = trainers.add_parser(
        "sld-head",
        help="train a new scene's landmark head on a frozen backbone, from a buffer of its features",
        description=(
            "Select DATASET's landmarks as `segloc train sld` does, fill a buffer of the frozen backbone's features of augmented "
            "patches once, and train only the small head on it. Writes OUT/checkpoint (backbone + head with the landmarks; pass "
            "it as map: checkpoint: to `segloc map build --method sld`), OUT/config.yaml, OUT/losses.json (with the buffer's "
            "size and the seconds of each stage), OUT/curves.png and OUT/landmarks.json."
        ),
    )
    p.add_argument("dataset", type=Path, metavar="DATASET", help="dataset folder (images/, mapping.txt[, depth/])")
    p.add_argument("--backbone", help="a `segloc train sld-backbone` run (or checkpoint folder), or imagenet (default: the config's)")
    add_run_config_options(p, "cpu_demo (default; 100 landmarks, 10 epochs over 6 patches per image) or paper (GPU-scale)")
    p.add_argument("--epochs", type=int, help="epochs over the buffer")
    p.add_argument("--patches-per-image", type=int, help="augmented patches of each training image in the buffer")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop cleanly after this much wall time (setup included)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train_sld_head)
