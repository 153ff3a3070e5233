"""A scene-agnostic landmark backbone trained over many scenes (``segloc train sld-backbone SCENES... -o RUN``).

One shared :class:`segloc.models.landmarks.LandmarkBackbone` and one simple head per scene
(:class:`segloc.models.landmarks.MultiSceneLandmarkNet`). The run:

1. prepares every scene as ``segloc train sld`` does (core, landmarks, visibility:
   :func:`segloc_train.sld.train_sld.build_training_data`) and keeps the landmarks and labels in
   ``RUN/scenes/NNN.npz`` (a second process, or a rerun into the folder, reads them back);
2. trains with :class:`SceneBatchSampler`: every batch holds patches of one scene, the batches
   of all scenes are shuffled together, and one epoch is every batch of every scene once (each
   training image of each scene in at least one batch). Patch ``s`` of batch ``b`` in epoch ``e``
   is drawn with the random stream ``(seed, e, b, s)``, so a run's patches do not depend on how
   many processes share the batch;
3. after each epoch, measures every scene's held-out images (recall, median pixel error, as the
   SLD* trainer does) and keeps the network with the best mean recall in ``RUN/checkpoint``
   (its ``backbone`` is what ``segloc train sld-head --backbone RUN`` trains a new scene's head on);
4. writes ``RUN/config.yaml``, ``RUN/losses.json`` (loss per step, per-scene and mean recall per
   epoch), ``RUN/curves.png`` (loss, per-scene and mean recall) and ``RUN/resume/`` (the last
   network with every scene's head, the optimizer, the state: epochs and steps done) after each
   epoch, as ``segloc train sld`` does (:func:`segloc_train.checkpointing.save_epoch_end`).

**Resume.** ``resume=True`` (``--resume``) continues the run in ``RUN`` from its last complete
epoch, up to ``epochs`` (or ``max_steps``): the network, the optimizer, the history (the best
mean recall is the best of its epochs) and the counters come back, the scenes' landmarks from
``RUN/scenes/``, and the sampler's batches and patches, which depend only on ``(seed, epoch,
batch, slot)``, continue as they would have (an epoch cut short by ``max_steps`` or the time
budget counts as done: the resumed run starts the next one). It refuses a folder with nothing to resume, another
trainer's run, and scenes other than the run's (the datasets of ``RUN/scenes/NNN.npz``, in
order). Without ``--resume``, a folder that holds a run is refused; one with only
``RUN/scenes/`` (a run stopped before its first epoch ended) starts again on those scenes.

**More than one process.** Under ``torchrun`` (``WORLD_SIZE`` > 1; ``torchrun --nproc-per-node N -m
segloc train sld-backbone ...``, multi-node flags unchanged) the network is wrapped in
:class:`torch.nn.parallel.DistributedDataParallel` (backend ``gloo`` on the CPU, ``nccl`` on
CUDA, one GPU per local rank); each process takes every ``world_size``-th patch of the global
batch, and the loss is normalised by the global batch's weight (all-reduced), so the gradient
is the one-process gradient of the same global batch. Batch norm runs on each process's share
(converted to :class:`torch.nn.SyncBatchNorm` on CUDA); ``freeze_batchnorm`` keeps the
encoder's batch norm in eval mode, which makes N processes compute exactly what one does.
Rank 0 alone writes files and measures; the time budget is rank 0's clock, shared each step.
Every process reads the same resume state; ``time_budget_s`` stops cleanly with the best network
and the resume state saved.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from segloc.config import option
from segloc.data.dataset import read_dataset
from segloc.errors import SeglocError
from segloc.evaluate.report import new_figure, save_figure
from segloc.fileio import atomic_write
from segloc.methods.sld.heatmaps import gaussian_targets
from segloc.methods.sld.landmarks import LandmarkSelection
from segloc.models.checkpoint import save_checkpoint
from segloc.models.landmarks import OUTPUT_STRIDE, MultiSceneLandmarkNet, MultiSceneLandmarkNetConfig
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
from segloc_train.loop import torch_threads
from segloc_train.sld.train_sld import (
    CURVES_FILE,
    LandmarkImages,
    SldTrainConfig,
    build_training_data,
    heatmap_loss_terms,
    heldout_metrics,
    image_tensor,
    load_train_config,
    prepare_images,
    preset_train_config,
    sample_patch,
    stack_patches,
    write_train_section,
)
from segloc_train.sld.train_sld import (
    PRESETS as SLD_PRESETS,
)

logger = logging.getLogger("segloc")

TRAINER_NAME = "sld_backbone"
SCENES_DIR = "scenes"


@dataclass
class SldBackboneConfig(SldTrainConfig):
    """Options of :func:`train_sld_backbone`: the SLD* trainer's (:class:`SldTrainConfig`; every scene is
    prepared and augmented with them) plus these. ``num_networks`` must be 1 and
    ``steps_per_epoch`` is not used (an epoch is every batch of every scene once).

    Attributes:
        max_steps: stop after this many optimizer steps in all (None: ``epochs`` epochs).
        freeze_batchnorm: keep the encoder's batch norm in eval mode (ImageNet statistics).
    """

    epochs: int = option(20, ge=1)
    max_steps: int | None = option(None, ge=1)
    freeze_batchnorm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_networks != 1:
            raise SeglocError(f"train: the backbone trainer has one network; num_networks must be 1, got {self.num_networks}")


BACKBONE_PRESETS: dict[str, dict[str, Any]] = {
    "cpu_demo": {},
    "paper": {**{key: value for key, value in SLD_PRESETS["paper"].items() if key != "num_networks"}, "epochs": 100, "lr_step_epochs": 30},
}


def backbone_config(preset: str = "cpu_demo", values: dict[str, Any] | None = None) -> SldBackboneConfig:
    """The config of a preset, with ``values`` (a ``train:`` section) over it."""
    return preset_train_config(SldBackboneConfig, BACKBONE_PRESETS, preset, values, "sld-backbone")


# --- the sampler ----------------------------------------------------------------------------------
class SceneBatchSampler:
    """Batches that each hold one scene, shuffled across scenes; an epoch covers every scene's images.

    Scene ``s`` with ``n_s`` training images gets ``ceil(n_s / batch_size)`` batches per epoch: a
    random permutation of its images cut into full batches, the last one topped up from a second
    permutation (so every batch has ``batch_size`` entries and every image is in at least one).

    Args:
        scene_sizes: training images per scene.
        batch_size: entries per batch.
        seed: base seed; epoch ``e``'s order comes from ``(seed, e)``.
    """

    def __init__(self, scene_sizes: Sequence[int], batch_size: int, seed: int = 0):
        if not scene_sizes or min(scene_sizes) < 1:
            raise SeglocError(f"every scene needs at least one training image, got {list(scene_sizes)}")
        if batch_size < 1:
            raise SeglocError(f"batch_size must be >= 1, got {batch_size}")
        self.scene_sizes = [int(n) for n in scene_sizes]
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        """Batches per epoch."""
        return sum(math.ceil(n / self.batch_size) for n in self.scene_sizes)

    def epoch(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """Epoch ``epoch``'s batches in order: ``(scene, indices into that scene's training images)``."""
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for scene, size in enumerate(self.scene_sizes):
            count = math.ceil(size / self.batch_size)
            order = rng.permutation(size)
            while len(order) < count * self.batch_size:
                order = np.concatenate([order, rng.permutation(size)])
            batches.extend((scene, order[k * self.batch_size : (k + 1) * self.batch_size]) for k in range(count))
        return [batches[i] for i in rng.permutation(len(batches))]


# --- processes ------------------------------------------------------------------------------------
@dataclass
class ProcessGroup:
    """This process's place in the run: ``rank`` of ``world_size``, the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the processes (a copy; no gradient)."""
        total = value.detach().clone()
        if self.world_size > 1:
            dist.all_reduce(total)
        return total

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on any process."""
        return bool(self.sum(torch.tensor([float(flag)], device=self.device)).item() > 0)


@contextmanager
def process_group(device: str) -> Iterator[ProcessGroup]:
    """One process (the default), or this process of a ``torchrun`` launch (``WORLD_SIZE`` > 1): the process group is set up and torn down."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield ProcessGroup(0, 1, device)
        return
    cuda = device.startswith("cuda")
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield ProcessGroup(dist.get_rank(), dist.get_world_size(), device)
    finally:
        if owned:
            dist.destroy_process_group()


# --- scenes ---------------------------------------------------------------------------------------
@dataclass
class Scene:
    """One training scene: its dataset folder, landmarks and prepared images."""

    root: Path
    selection: LandmarkSelection
    data: LandmarkImages


def _scene_file(output: Path, index: int) -> Path:
    return output / SCENES_DIR / f"{index:03d}.npz"


def check_run_scenes(output: Path, roots: Sequence[Path]) -> None:
    """Refuse to resume ``output`` with scenes other than its run's (``RUN/scenes/NNN.npz`` name them, in order).

    Raises:
        SeglocError: another number of scenes, or another dataset at some index.
    """
    trained = []
    for path in sorted((output / SCENES_DIR).glob("*.npz")):
        with np.load(path, allow_pickle=False) as saved:
            trained.append(str(saved["dataset"]))
    given = [str(Path(root).resolve()) for root in roots]
    if len(trained) != len(given):
        raise SeglocError(
            f"cannot resume {output}: it was trained on {len(trained)} scenes, not {len(given)}; give its scenes in its order"
        )
    for index, (was, now) in enumerate(zip(trained, given)):
        if was != now:
            raise SeglocError(f"cannot resume {output}: its scene {index} is {was}, not {now}; give its scenes in its order")


def prepare_scene(dataset_dir: Path, index: int, output: Path, config: SldBackboneConfig, group: ProcessGroup, progress: bool) -> Scene:
    """A scene's landmarks and labels: built by rank 0 and written to ``RUN/scenes/NNN.npz``, read back by the others."""
    dataset = read_dataset(dataset_dir)
    path = _scene_file(output, index)
    if group.is_main and not path.is_file():
        selection, data = build_training_data(dataset, config, progress)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as stream:
                np.savez(stream, point_ids=selection.point_ids, positions=selection.positions, scores=selection.scores,
                         labels=data.labels, relaxation=np.array(str(selection.relaxation)),
                         dataset=np.array(str(Path(dataset_dir).resolve())))  # fmt: skip

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    group.barrier()
    with np.load(path, allow_pickle=False) as saved:
        if str(saved["dataset"]) != str(Path(dataset_dir).resolve()):
            raise SeglocError(
                f"{path} holds the landmarks of {saved['dataset']}, not of scene {index} ({dataset_dir}); use a new run folder"
            )
        relaxation = str(saved["relaxation"])
        selection = LandmarkSelection(saved["point_ids"], saved["positions"], saved["scores"], relaxation)
        labels = saved["labels"]
    return Scene(Path(dataset_dir), selection, prepare_images(dataset, selection, labels, config))


# --- training -------------------------------------------------------------------------------------
def plot_backbone_curves(path: Path, epochs: list[dict[str, Any]], names: list[str]) -> None:
    """Training loss, and held-out recall per scene and their mean, per epoch, as a PNG."""
    x = [record["epoch"] + 1 for record in epochs]
    figure = new_figure(10, 3.5)
    loss_axis, recall_axis = figure.subplots(1, 2)
    loss_axis.plot(x, [record["loss"] for record in epochs], marker=".")
    loss_axis.set_yscale("log")
    loss_axis.set_title("training loss")
    for index, name in enumerate(names):
        recall_axis.plot(x, [record["scenes"][index]["recall"] for record in epochs], alpha=0.5, label=name)
    recall_axis.plot(x, [record["recall"] for record in epochs], color="black", linewidth=2, label="mean")
    recall_axis.set_title("held-out recall per scene")
    recall_axis.set_ylim(0, 1)
    if len(names) <= 12:
        recall_axis.legend(fontsize=6)
    for axis in (loss_axis, recall_axis):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    save_figure(figure, path)


def train_sld_backbone(
    scene_dirs: Sequence[str | Path],
    output_dir: str | Path,
    config: SldBackboneConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train the shared landmark backbone over ``scene_dirs`` (module docstring); returns ``output_dir/checkpoint``.

    Args:
        config: training options; None: the defaults, or with ``resume`` the run's ``config.yaml``.
        resume: continue the run saved in ``output_dir`` (same scenes, same order), up to ``config.epochs``.

    Raises:
        SeglocError: no scenes, a scene listed twice, a new run into a folder that holds one,
            nothing to resume, another trainer's run, or other scenes than the run's.
    """
    output = Path(output_dir)
    if config is None:
        config = (
            load_train_config(output / CONFIG_FILE, backbone_config) if resume and (output / CONFIG_FILE).is_file() else SldBackboneConfig()
        )
    roots = [Path(scene) for scene in scene_dirs]
    if not roots:
        raise SeglocError("sld-backbone: give at least one scene (dataset folder)")
    resolved = [root.resolve() for root in roots]
    if len(set(resolved)) != len(resolved):
        raise SeglocError("sld-backbone: a scene is listed twice")
    # before the processes meet (torchrun): no process has written anything yet
    state = open_run(output, TRAINER_NAME, "an SLD backbone one", config.seed, resume)
    if resume:
        check_run_scenes(output, roots)
    with torch_threads(config.threads), process_group(config.device) as group:
        return _train_backbone(roots, output, config, state, resume, group, progress and group.is_main, on_epoch)


def _train_backbone(
    roots: list[Path],
    output: Path,
    config: SldBackboneConfig,
    state: TrainingState,
    resume: bool,
    group: ProcessGroup,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> Path:
    from torch.nn.parallel import DistributedDataParallel
    from tqdm import tqdm

    start_time = time.perf_counter()
    device = group.device
    scenes = [prepare_scene(root, index, output, config, group, progress) for index, root in enumerate(roots)]
    names = [root.name for root in roots]
    torch.manual_seed(config.seed)
    net_config = MultiSceneLandmarkNetConfig(tuple(len(scene.selection.point_ids) for scene in scenes), pretrained=config.pretrained,
                                             fuse_channels=config.fuse_channels, head_channels=config.head_channels)  # fmt: skip
    model = MultiSceneLandmarkNet(net_config).to(device).train()
    if group.world_size > 1 and device.startswith("cuda") and not config.freeze_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history = resume_last_epoch(output, model, optimizer, state) if resume else LossHistory()
    history.run.update(scenes=[str(root) for root in roots], world_size=group.world_size)
    if group.is_main:
        write_train_section(output, config)
    network = DistributedDataParallel(model, find_unused_parameters=True) if group.world_size > 1 else model

    def set_train_mode() -> None:
        model.train()
        if config.freeze_batchnorm:
            for module in model.backbone.encoder.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    sampler = SceneBatchSampler([len(scene.data.train_ids) for scene in scenes], config.batch_size, config.seed)
    setup_seconds = time.perf_counter() - start_time
    best, stopped = max((record["recall"] for record in history.epochs), default=-1.0), "completed"
    logger.info("sld backbone: %d scenes, %d batches per epoch, %d process(es), setup %.1f s, from epoch %d", len(scenes), len(sampler),
                group.world_size, setup_seconds, state.epochs_done)  # fmt: skip
    for epoch in range(state.epochs_done, config.epochs):
        if config.max_steps is not None and state.steps_done >= config.max_steps:
            stopped = "max_steps"
            break
        for param_group in optimizer.param_groups:
            param_group["lr"] = config.learning_rate * config.lr_gamma ** (epoch // config.lr_step_epochs)
        set_train_mode()
        epoch_start, losses = time.perf_counter(), []
        batches = sampler.epoch(epoch)
        for batch_index, (scene_index, indices) in enumerate(tqdm(batches, desc=f"backbone epoch {epoch + 1}/{config.epochs}",
                                                                  disable=not progress, leave=False)):  # fmt: skip
            data = scenes[scene_index].data
            mine = range(group.rank, len(indices), group.world_size)
            patches = [sample_patch(data, int(data.train_ids[indices[slot]]), config,
                                    np.random.default_rng([config.seed, epoch, batch_index, slot])) for slot in mine]  # fmt: skip
            images, points, visible, known = stack_patches(patches, device)
            heatmaps = network(images, scene_index)
            targets = gaussian_targets(points, visible, heatmaps.shape[-2:], OUTPUT_STRIDE, config.sigma)
            squared, weight = heatmap_loss_terms(heatmaps, targets, known, config.positive_weight)
            total_weight = group.sum(weight).clamp(min=1.0)
            # DDP averages the processes' gradients: scaling by world_size makes it the gradient of the global batch's loss.
            loss = squared / total_weight * group.world_size
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float((group.sum(squared) / total_weight).item()))
            history.steps.append({"epoch": epoch, "step": state.steps_done, "scene": scene_index, "loss": losses[-1]})
            state.steps_done += 1
            over_time = bool(config.time_budget_s) and time.perf_counter() - start_time > config.time_budget_s
            if group.any(over_time and group.is_main):
                stopped = "time_budget"
            elif config.max_steps is not None and state.steps_done >= config.max_steps:
                stopped = "max_steps"
            if stopped != "completed":
                break
        state.train_seconds += time.perf_counter() - epoch_start
        state.epochs_done = epoch + 1
        if group.is_main:
            record = _measure_epoch(model, scenes, names, config, device, epoch, losses, time.perf_counter() - epoch_start)
            history.epochs.append(record)
            if record["recall"] > best or not (output / CHECKPOINT_DIR).is_dir():
                best = max(best, record["recall"])
                metadata = {
                    "trainer": TRAINER_NAME,
                    "epoch": epoch + 1,
                    "steps": state.steps_done,
                    "heldout": {"recall": record["recall"], "scenes": record["scenes"]},
                    "scenes": [
                        {"dataset": str(root.resolve()), "num_landmarks": len(scene.selection.point_ids)}
                        for root, scene in zip(roots, scenes)
                    ],  # fmt: skip
                    "train_seconds": round(state.train_seconds, 1),
                    "world_size": group.world_size,
                }
                save_checkpoint(model, output / CHECKPOINT_DIR, metadata=metadata, overwrite=True)
            history.run.update(seconds={"setup": round(setup_seconds, 2), "train": round(state.train_seconds, 2)}, stopped=stopped)
            save_epoch_end(output, model, optimizer, state, history, stopped)
            plot_backbone_curves(output / CURVES_FILE, history.epochs, names)
            if on_epoch is not None:
                on_epoch({**record, "epochs": config.epochs, "best_recall": best, "stopped": stopped})
        group.barrier()
        if stopped != "completed":
            break
    if group.is_main:
        state.stopped = stopped
        save_training_state(output, state, optimizer)
    logger.info("sld backbone: setup %.1f s, training %.1f s (%d steps), best mean held-out recall %.3f", setup_seconds, state.train_seconds,
                state.steps_done, best)  # fmt: skip
    return output / CHECKPOINT_DIR


def _measure_epoch(
    model: MultiSceneLandmarkNet, scenes: list[Scene], names: list[str], config: SldBackboneConfig, device: str, epoch: int,
    losses: list[float], seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """Held-out recall and pixel error of every scene, and their mean."""
    model.eval()
    per_scene = []
    for index, (scene, name) in enumerate(zip(scenes, names)):
        data = scene.data
        ids = data.heldout_ids if len(data.heldout_ids) else data.train_ids

        def heatmaps_of(image_id: int, data: LandmarkImages = data, index: int = index) -> torch.Tensor:
            return model(image_tensor(data.images[image_id], device), index)

        per_scene.append({"scene": name, **heldout_metrics(heatmaps_of, data, ids, config)})
    model.train()
    return {
        "epoch": epoch,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "steps": len(losses),
        "seconds": seconds,
        "recall": float(np.mean([record["recall"] for record in per_scene])),
        "scenes": per_scene,
    }
