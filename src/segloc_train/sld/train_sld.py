"""Training the SLD* landmark network (``segloc train sld DATASET -o RUN``).

The run:

1. builds the core of DATASET's mapping images (:func:`segloc.maps.build.build_core`), selects
   the landmarks (:func:`segloc.methods.sld.landmarks.select_landmarks`) and labels their
   visibility in every mapping image, completed with the dataset's depth images when it has
   them (``depth/``, the synthetic scenes) (:func:`~segloc.methods.sld.landmarks.visibility_labels`),
   or, with ``depth_estimator``, with a monocular depth network's output completed against the
   map's sparse depth per image (:func:`segloc.depth.completed_depth_loader`);
2. holds out every ``holdout_every``-th mapping image for model selection;
3. trains :class:`segloc.models.landmarks.LandmarkEnsemble` on patches of the other images:
   half (``positive_fraction``) centred near a visible landmark, the rest anywhere; each patch
   rotated (``rotation_deg``), scaled (``scale_range``, the focal length's change) and, with
   ``photometric_probability``, changed by the SegLoc trainer's strong photometric set
   (:func:`segloc_train.augment.photometric_augment`: brightness, contrast, blur, noise, low
   light). Targets are Gaussians of peak 1 and standard deviation ``sigma`` output cells at the
   visible landmarks' projections (:func:`segloc.methods.sld.heatmaps.gaussian_targets`); the
   loss is the squared error masked where the visibility is unknown (pixels under a Gaussian
   weigh ``positive_weight``); AdamW, learning rate times ``lr_gamma`` every ``lr_step_epochs``;
4. after each epoch, measures the held-out images (the network on whole images): recall (the
   visible landmarks detected within ``2 x stride`` pixels), median pixel error of those, and
   keeps the best network by recall in ``RUN/checkpoint`` (its metadata holds the landmarks,
   for ``segloc map build --method sld``);
5. writes ``RUN/config.yaml``, ``RUN/losses.json``, ``RUN/curves.png`` (loss, held-out pixel
   error and recall per epoch) and ``RUN/resume/`` (last network, optimizer, state) after each
   epoch (:func:`segloc_train.checkpointing.save_epoch_end`); ``--resume`` continues from there
   (:func:`~segloc_train.checkpointing.resume_last_epoch`), ``time_budget_s`` stops cleanly.

Presets: ``cpu_demo`` (100 landmarks, one network, 320-pixel images: a useful network for the
synthetic room in minutes on two cores) and ``paper`` (1000 landmarks, 8 x 125, 200 epochs, for
a GPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
import yaml

from segloc.config import check_options, config_from_dict, config_to_dict, option
from segloc.data.dataset import Dataset, load_image, read_dataset
from segloc.depth.completion import CompletionConfig
from segloc.depth.estimator import DepthEstimatorConfig
from segloc.errors import SeglocError
from segloc.evaluate.report import new_figure, save_figure, write_json
from segloc.fileio import atomic_write
from segloc.maps.build import CoreConfig, build_core
from segloc.methods.sld.heatmaps import gaussian_targets, heatmap_peaks
from segloc.methods.sld.landmarks import (
    UNKNOWN,
    VISIBLE,
    LandmarkConfig,
    LandmarkSelection,
    VisibilityConfig,
    select_landmarks,
    visibility_labels,
)
from segloc.methods.sld.layer import LANDMARKS_METADATA
from segloc.models.checkpoint import save_checkpoint
from segloc.models.landmarks import OUTPUT_STRIDE, LandmarkEnsemble, LandmarkNetConfig
from segloc_train.augment import AugmentConfig, photometric_augment, transform_points, warp_image
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
from segloc_train.loop import merge_options, torch_threads

logger = logging.getLogger("segloc")

T = TypeVar("T", bound="SldTrainConfig")

TRAINER_NAME = "sld"
CURVES_FILE = "curves.png"
DATA_FILE = "landmarks.json"


@dataclass
class SldTrainConfig:
    """Options of :func:`train_sld` (the ``train:`` section of a config file; see the module docstring).

    Attributes:
        preset: the preset the other defaults came from (informative).
        core: the core build the landmarks are selected from.
        landmarks: landmark selection.
        visibility: visibility labelling.
        depth_estimator: a monocular depth network (checkpoint or ONNX; ``path`` empty: none)
            whose output, completed per image against the map's sparse depth
            (:func:`segloc.depth.completed_depth_loader`), gives the visibility labels of the
            mapping images that have no depth image of their own (``depth/``).
        depth_completion: the per-image regressor of that completion.
        num_networks: networks of the ensemble (``landmarks.num_landmarks`` must be a multiple).
        fuse_channels, head_channels: the network's widths (:class:`LandmarkNetConfig`).
        pretrained: start from the ImageNet encoder of the PyPI wheel.
        max_edge: longer edge of the images the network sees (the map's queries are resized to it).
        patch_size: (width, height) of the training patches, multiples of 8.
        batch_size: patches per step.
        positive_fraction: fraction of the patches centred near a visible landmark.
        sigma: standard deviation of the target Gaussians, output cells.
        positive_weight: weight of the pixels under a Gaussian (target > 0.1) in the loss.
        epochs, steps_per_epoch: training length.
        learning_rate, weight_decay: AdamW.
        lr_step_epochs, lr_gamma: the learning rate is multiplied by ``lr_gamma`` every ``lr_step_epochs``.
        rotation_deg: patches are rotated by up to this angle.
        scale_range: patches are scaled by a factor log-uniform in this range.
        photometric_probability: probability of the photometric set on a patch.
        photometric: the photometric set (only its photometric options are used).
        holdout_every: every n-th mapping image is held out for model selection (0: none,
            the training images are measured instead).
        detection_threshold: heatmap value of a detection, for the held-out measure.
        time_budget_s: stop after this wall time (seconds; None: no limit).
        device: torch device.
        threads: torch CPU threads (None: torch's default).
        seed: random seed.
    """

    preset: str = "cpu_demo"
    core: CoreConfig = field(default_factory=CoreConfig)
    landmarks: LandmarkConfig = field(default_factory=lambda: LandmarkConfig(num_landmarks=100))
    visibility: VisibilityConfig = field(default_factory=VisibilityConfig)
    depth_estimator: DepthEstimatorConfig = field(default_factory=DepthEstimatorConfig)
    depth_completion: CompletionConfig = field(default_factory=CompletionConfig)
    num_networks: int = option(1, ge=1)
    fuse_channels: int = option(96, ge=1)
    head_channels: int = option(64, ge=1)
    pretrained: bool = True
    max_edge: int = option(320, ge=32)
    patch_size: tuple[int, int] = (192, 160)
    batch_size: int = option(8, ge=1)
    positive_fraction: float = option(0.75, ge=0, le=1)
    sigma: float = option(1.0, gt=0)
    positive_weight: float = option(50.0, gt=0)
    epochs: int = option(30, ge=1)
    steps_per_epoch: int = option(40, ge=1)
    learning_rate: float = option(1e-3, gt=0)
    weight_decay: float = option(1e-4, ge=0)
    lr_step_epochs: int = option(15, ge=1)
    lr_gamma: float = option(0.5, gt=0, le=1)
    rotation_deg: float = option(10.0, ge=0, le=180)
    scale_range: tuple[float, float] = (0.8, 1.25)
    photometric_probability: float = option(0.5, ge=0, le=1)
    photometric: AugmentConfig = field(default_factory=AugmentConfig)
    holdout_every: int = option(8, ge=0, note="0: no held-out images")
    detection_threshold: float = option(0.3, ge=0)
    time_budget_s: float | None = option(None, gt=0)
    device: str = "cpu"
    threads: int | None = option(None, ge=1)
    seed: int = 0

    def __post_init__(self) -> None:
        check_options(self)
        if any(size % OUTPUT_STRIDE or size <= 0 for size in self.patch_size):
            raise SeglocError(f"train: patch_size must be positive multiples of {OUTPUT_STRIDE}, got {self.patch_size}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise SeglocError(f"train: scale_range must be 0 < low <= high, got {self.scale_range}")
        if self.landmarks.num_landmarks % self.num_networks:
            raise SeglocError(f"train: landmarks.num_landmarks ({self.landmarks.num_landmarks}) must be a multiple of num_networks")


PRESETS: dict[str, dict[str, Any]] = {
    "cpu_demo": {},
    "paper": {
        "landmarks": {"num_landmarks": 1000},
        "num_networks": 8,
        "fuse_channels": 128,
        "head_channels": 128,
        "max_edge": 640,
        "patch_size": [320, 240],
        "batch_size": 16,
        "sigma": 1.5,
        "positive_weight": 1.0,
        "epochs": 200,
        "steps_per_epoch": 200,
        "lr_step_epochs": 50,
        "device": "cuda",
    },
}


def preset_train_config(cls: type[T], presets: dict[str, dict[str, Any]], preset: str, values: dict[str, Any] | None, trainer: str) -> T:
    """A landmark trainer's config (``cls``, :class:`SldTrainConfig` or a subclass): ``presets[preset]`` with ``values`` over it."""
    if preset not in presets:
        raise SeglocError(f"unknown {trainer} training preset {preset!r}; valid presets are: {', '.join(presets)}")
    merged = merge_options(presets[preset], dict(values or {}))
    merged["preset"] = preset
    return config_from_dict(cls, merged, where="train")


def train_config(preset: str = "cpu_demo", values: dict[str, Any] | None = None) -> SldTrainConfig:
    """The config of a preset, with ``values`` (a ``train:`` section) over it."""
    return preset_train_config(SldTrainConfig, PRESETS, preset, values, "sld")


def load_train_config(path: str | Path, build: Callable[[str, dict[str, Any]], T] = train_config) -> T:
    """The ``train`` section of a YAML file (``preset: NAME`` picks the defaults) through ``build`` (a trainer's ``train_config``)."""
    from segloc.config import config_section

    values = dict(config_section(path, "train") or {})
    return build(values.pop("preset", "cpu_demo"), values)


def write_train_section(output: Path, config: SldTrainConfig) -> None:
    """``output/config.yaml``: the run's options as a ``train:`` section (atomically)."""
    atomic_write(output / CONFIG_FILE, lambda tmp: Path(tmp).write_text(yaml.safe_dump({"train": config_to_dict(config)}, sort_keys=False)))


# --- data ----------------------------------------------------------------------------------
@dataclass
class LandmarkImages:
    """The mapping images at the network's size, with the landmarks' projections and labels.

    Attributes:
        images: (H, W, 3) uint8 images, longer edge ``max_edge``.
        points: (L, 2) float32 projections of the landmarks in each image (COLMAP convention; NaN behind).
        labels: (I, L) int8 visibility (1, 0, -1).
        train_ids, heldout_ids: image indices of the two splits.
    """

    images: list[np.ndarray]
    points: list[np.ndarray]
    labels: np.ndarray
    train_ids: np.ndarray
    heldout_ids: np.ndarray


def depth_loader(dataset: Dataset) -> Callable[[int], np.ndarray | None]:
    """Image id -> depth map in metres from ``DATASET/depth/<name>`` (uint16 millimetres), None without one."""

    def depth_of(image_id: int) -> np.ndarray | None:
        path = Path(dataset.root) / "depth" / dataset.mapping[image_id].name
        if not path.is_file():
            return None
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0

    return depth_of


def prepare_images(dataset: Dataset, selection: LandmarkSelection, labels: np.ndarray, config: SldTrainConfig) -> LandmarkImages:
    """Load and resize the mapping images, project the landmarks, split off the held-out images."""
    images, points = [], []
    for record in dataset.mapping:
        image = load_image(dataset.image_path(record.name))
        scale = config.max_edge / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        images.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        projected, depth, _ = record.camera.world_to_image(record.cam_from_world, selection.positions)
        projected = projected * np.array([size[0] / record.camera.width, size[1] / record.camera.height])
        projected[~(depth > 0)] = np.nan
        points.append(projected.astype(np.float32))
    ids = np.arange(len(images))
    heldout = ids[config.holdout_every - 1 :: config.holdout_every] if config.holdout_every and len(ids) > 2 else ids[:0]
    train = np.setdiff1d(ids, heldout)
    return LandmarkImages(images, points, labels, train, heldout)


def sample_patch(
    data: LandmarkImages, image_id: int, config: SldTrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One augmented training patch.

    Returns:
        image (h, w, 3) float32 in [0, 1], points (L, 2) float32 in the patch, visible (L,) bool
        (visible in the image and inside the patch), known (L,) bool (visibility known).
    """
    image, labels = data.images[image_id], data.labels[image_id]
    height, width = image.shape[:2]
    out_w, out_h = config.patch_size
    visible = np.flatnonzero((labels == VISIBLE) & np.all(np.isfinite(data.points[image_id]), axis=1))
    if len(visible) and rng.random() < config.positive_fraction:
        center = data.points[image_id][rng.choice(visible)] + rng.uniform(-0.4, 0.4, 2) * np.array([out_w, out_h])
    else:
        center = rng.uniform([0, 0], [width, height])
    angle = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg))
    scale = math.exp(rng.uniform(math.log(config.scale_range[0]), math.log(config.scale_range[1])))
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    affine = np.hstack([rotation, (np.array([out_w / 2, out_h / 2]) - rotation @ center)[:, None]])
    patch = warp_image(image, affine, (out_w, out_h)).astype(np.float32) / 255.0
    if rng.random() < config.photometric_probability:
        patch = photometric_augment(patch, config.photometric, rng)
    finite = np.all(np.isfinite(data.points[image_id]), axis=1)
    moved, inside = transform_points(np.nan_to_num(data.points[image_id]), affine, (out_w, out_h))
    return patch, moved, (labels == VISIBLE) & finite & inside, labels != UNKNOWN


def heatmap_loss_terms(
    heatmaps: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, positive_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted squared error summed, and the weights summed, over the heatmaps of known visibility.

    Pixels under a Gaussian (target > 0.1) weigh ``positive_weight``, others 1; a landmark whose
    visibility in the image is unknown weighs 0. :func:`masked_heatmap_loss` is their ratio; a
    trainer that splits a batch over processes sums both terms over them first.

    Args:
        heatmaps, targets: (B, L, h, w).
        known: (B, L) bool, the landmark's visibility in the image is known (else masked out).
    """
    weights = torch.where(targets > 0.1, positive_weight, 1.0) * known[..., None, None].float()
    return (weights * (heatmaps - targets) ** 2).sum(), weights.sum()


def masked_heatmap_loss(heatmaps: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, positive_weight: float) -> torch.Tensor:
    """Squared error over the heatmaps of known visibility, pixels under a Gaussian weighted by ``positive_weight`` (:func:`heatmap_loss_terms`)."""
    squared, weight = heatmap_loss_terms(heatmaps, targets, known, positive_weight)
    return squared / weight.clamp(min=1.0)


def image_tensor(image: np.ndarray, device: str) -> torch.Tensor:
    """(H, W, 3) uint8 image -> (1, 3, H, W) float tensor in [0, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div(255.0).to(device)


def stack_patches(batch: list[tuple[np.ndarray, ...]], device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sample_patch` results -> images (B, 3, h, w), points (B, L, 2), visible (B, L), known (B, L) on ``device``."""
    images = torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2).to(device)
    points, visible, known = (torch.from_numpy(np.stack([b[k] for b in batch])).to(device) for k in (1, 2, 3))
    return images, points, visible, known


def whole_image_heatmaps(model: torch.nn.Module, data: LandmarkImages, device: str) -> Callable[[int], torch.Tensor]:
    """Image id -> (1, L, h, w) heatmaps of the whole mapping image (call under ``torch.inference_mode``, model in eval mode)."""
    return lambda image_id: model(image_tensor(data.images[image_id], device))


def heldout_metrics(
    heatmaps_of: Callable[[int], torch.Tensor], data: LandmarkImages, ids: np.ndarray, config: SldTrainConfig
) -> dict[str, float]:
    """Recall (visible landmarks detected within 2 x stride pixels), median pixel error and false detections on whole images.

    Args:
        heatmaps_of: image id -> (1, L, h, w) heatmaps of the whole image (e.g. :func:`whole_image_heatmaps`).
    """
    errors, found, total, false = [], 0, 0, 0
    for image_id in ids:
        with torch.inference_mode():
            peaks = heatmap_peaks(heatmaps_of(int(image_id))[0].float().cpu(), OUTPUT_STRIDE)
        labels, points = data.labels[image_id], data.points[image_id]
        height, width = data.images[image_id].shape[:2]
        with np.errstate(invalid="ignore"):
            inside = np.all(points >= 0, axis=1) & (points[:, 0] < width) & (points[:, 1] < height)
        visible = (labels == VISIBLE) & inside
        detected = peaks.values >= config.detection_threshold
        distance = np.linalg.norm(peaks.points - points, axis=1)
        errors.extend(distance[visible & detected].tolist())
        found += int(np.sum(visible & detected & (distance <= 2 * OUTPUT_STRIDE)))
        total += int(visible.sum())
        false += int(np.sum(detected & (labels == 0)))
    return {
        "recall": found / max(total, 1),
        "median_px_error": float(np.median(errors)) if errors else float("nan"),
        "false_detections_per_image": false / max(len(ids), 1),
    }


def plot_curves(path: Path, epochs: list[dict[str, float]]) -> None:
    """Loss, held-out pixel error and recall per epoch as a PNG."""
    x = [record["epoch"] + 1 for record in epochs]
    figure = new_figure(12, 3.5)
    axes = figure.subplots(1, 3)
    for axis, key, title in zip(
        axes, ("loss", "median_px_error", "recall"), ("training loss", "held-out median error (px)", "held-out recall")
    ):
        axis.plot(x, [record.get(key, float("nan")) for record in epochs], marker=".")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].set_yscale("log")
    save_figure(figure, path)


# --- training ------------------------------------------------------------------------------
def landmarks_metadata(selection: LandmarkSelection, config: SldTrainConfig, dataset_dir: str | Path) -> dict[str, Any]:
    """What a checkpoint's metadata holds of the landmarks (:data:`LANDMARKS_METADATA`, read by ``segloc map build --method sld``)."""
    return {
        "positions": selection.positions.round(6).tolist(),
        "scores": selection.scores.round(4).tolist(),
        "max_edge": config.max_edge,
        "stride": OUTPUT_STRIDE,
        "selection": {
            "relaxation": selection.relaxation,
            "config": config_to_dict(config.landmarks),
            "dataset": str(Path(dataset_dir).resolve()),
        },
    }


def build_training_data(dataset: Dataset, config: SldTrainConfig, progress: bool) -> tuple[LandmarkSelection, LandmarkImages]:
    """Core build, landmark selection (L rounded down to a multiple of the networks), labels, images."""
    built = build_core(dataset, config.core, progress)
    selection = select_landmarks(built.core, config.landmarks)
    count = len(selection.point_ids) // config.num_networks * config.num_networks
    if count == 0:
        raise SeglocError(f"{dataset.root}: {len(selection.point_ids)} landmarks for {config.num_networks} networks")
    selection = LandmarkSelection(selection.point_ids[:count], selection.positions[:count], selection.scores[:count], selection.relaxation)
    if config.depth_estimator.path:
        from segloc.depth import completed_depth_loader, load_depth_estimator

        estimator = load_depth_estimator(config.depth_estimator)
        depth_of = completed_depth_loader(dataset, built.core, estimator, config.depth_completion)
        logger.info("sld: visibility from completed depth (%s) where an image has no depth image", config.depth_estimator.path)
    else:
        depth_of = depth_loader(dataset)
    labels = visibility_labels(built.core, selection, depth_of, config.visibility)
    logger.info(
        "sld: %d landmarks (relaxation %s); visibility: %.1f visible, %.1f unknown per image",
        count,
        selection.relaxation,
        float((labels == VISIBLE).sum(1).mean()),
        float((labels == UNKNOWN).sum(1).mean()),
    )
    return selection, prepare_images(dataset, selection, labels, config)


def train_sld(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: SldTrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train the landmark network of a dataset (module docstring); returns ``output_dir/checkpoint``.

    Raises:
        SeglocError: a new run into a non-empty folder, nothing to resume, a saved run of another trainer.
    """
    config = config or SldTrainConfig()
    start_time = time.perf_counter()
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()) and not resume:
        raise SeglocError(f"{output} exists and is not empty; pass --resume to continue its run or choose another folder")
    state = open_run(output, TRAINER_NAME, "an SLD one", config.seed, resume)
    with torch_threads(config.threads):
        return _train(dataset_dir, output, config, state, resume, progress, on_epoch, start_time)


def _train(
    dataset_dir: str | Path,
    output: Path,
    config: SldTrainConfig,
    state: TrainingState,
    resume: bool,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    start_time: float,
) -> Path:
    """The body of :func:`train_sld` once the run's folder and state are settled."""
    from tqdm import tqdm

    output.mkdir(parents=True, exist_ok=True)
    dataset = read_dataset(dataset_dir)
    selection, data = build_training_data(dataset, config, progress)
    num_landmarks = len(selection.point_ids)
    net_config = LandmarkNetConfig(num_landmarks, config.num_networks, pretrained=config.pretrained,
                                   fuse_channels=config.fuse_channels, head_channels=config.head_channels)  # fmt: skip
    model = LandmarkEnsemble(net_config).to(config.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history = resume_last_epoch(output, model, optimizer, state) if resume else LossHistory()
    write_train_section(output, config)
    landmarks_meta = landmarks_metadata(selection, config, dataset_dir)
    write_json(
        output / DATA_FILE, {"num_landmarks": num_landmarks, "relaxation": selection.relaxation, "point_ids": selection.point_ids.tolist()}
    )
    eval_ids = data.heldout_ids if len(data.heldout_ids) else data.train_ids
    best = max((r.get("recall", -1.0) for r in history.epochs), default=-1.0)
    setup_seconds = time.perf_counter() - start_time
    stopped = "completed"
    for epoch in range(state.epochs_done, config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * config.lr_gamma ** (epoch // config.lr_step_epochs)
        rng = np.random.default_rng([config.seed, epoch])
        epoch_start, losses = time.perf_counter(), []
        steps = tqdm(range(config.steps_per_epoch), desc=f"sld epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for _ in steps:
            batch = [sample_patch(data, int(rng.choice(data.train_ids)), config, rng) for _ in range(config.batch_size)]
            images, points, visible, known = stack_patches(batch, config.device)
            heatmaps = model(images)
            targets = gaussian_targets(points, visible, heatmaps.shape[-2:], OUTPUT_STRIDE, config.sigma)
            loss = masked_heatmap_loss(heatmaps, targets, known, config.positive_weight)
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
        state.train_seconds += time.perf_counter() - epoch_start
        model.eval()
        metrics = heldout_metrics(whole_image_heatmaps(model, data, config.device), data, eval_ids, config)
        model.train()
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "steps": len(losses),
            "seconds": time.perf_counter() - epoch_start,
            **metrics,
        }
        history.epochs.append(record)
        state.epochs_done = epoch + 1
        if metrics["recall"] > best or not (output / CHECKPOINT_DIR).is_dir():
            best = max(best, metrics["recall"])
            metadata = {"trainer": TRAINER_NAME, "epoch": epoch + 1, "heldout": metrics, "train_seconds": round(state.train_seconds, 1),
                        LANDMARKS_METADATA: landmarks_meta}  # fmt: skip
            save_checkpoint(model, output / CHECKPOINT_DIR, metadata=metadata, overwrite=True)
        save_epoch_end(output, model, optimizer, state, history, stopped)
        plot_curves(output / CURVES_FILE, history.epochs)
        if on_epoch is not None:
            on_epoch({**record, "epochs": config.epochs, "best_recall": best, "stopped": stopped})
        if stopped == "time_budget":
            break
    else:
        state.stopped = "completed"
        save_training_state(output, state, optimizer)
    logger.info("sld training: setup %.1f s, training %.1f s", setup_seconds, state.train_seconds)
    return output / CHECKPOINT_DIR
