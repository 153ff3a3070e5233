"""NinjaDesc training: ``segloc train ninjadesc DATASET [DATASET ...] -o RUN``.

NinjaDesc (Ng, Kim, Lee, Lim, Rahman, Huang, Schoenberger, CVPR 2022) re-encodes a base
descriptor (``base_descriptor``: RootSIFT or VGG at SIFT keypoints,
:mod:`segloc.features.base_descriptors`) with NinjaNet (:class:`segloc.models.ninjanet.NinjaNet`) so that the
descriptors still match but an inversion attacker (:class:`segloc.models.inversion.InversionUNet`,
the audit's, :mod:`segloc.evaluate.audit`) recovers less of the images. Trained on our own data:

1. **Data** per training dataset (synthetic scenes of ``segloc synth``; never the scene you audit):
   the core build (:func:`segloc.maps.build.build_core`: SIFT, tracks triangulated with the known
   poses). *Utility*: the base descriptors of the core observations, grouped by 3D point
   (UBC patches, the paper's, are not available here: patch triplets are mined from our SfM
   tracks); every ``holdout_every``-th point with two observations or more is held out for
   validation. *Privacy*: per mapping image, its core points projected with its pose
   (:func:`segloc.evaluate.audit.map_sparse_inputs`) at the attacker's size, their depth, the
   observations' descriptors and the resized RGB image (the target). Which projections survive
   rasterisation (inside the image, the nearest wins per pixel) is precomputed, so the sparse
   image is built in torch differentiably in the descriptor channels (:func:`rasterise`).
2. **Losses**: utility ``L_util`` = triplet margin loss with the hardest in-batch negative
   (HardNet) + ``sos_weight`` x the second-order similarity regulariser (SOSNet, Tian et al. 2019);
   ``L_recon`` = MAE + ``perceptual_weight`` x perceptual loss (EfficientNet-Lite0 features,
   :class:`segloc.models.inversion.PerceptualFeatures`) of the attacker's reconstruction.
3. **Schedule**: utility initialisation (``L_util`` only, ``utility_init_steps``); attacker
   initialisation on the (detached) initial NinjaDesc sparse images (``attacker_init_steps``);
   then ``epochs`` x ``steps_per_epoch`` alternating steps: NinjaNet on ``L_util - lambda_recon x
   L_recon`` with the attacker frozen (parameters and batch-norm statistics restored), then the
   attacker on ``L_recon`` with NinjaNet's outputs detached (computed in eval mode: what a map
   stores). Equal learning rates. ``lambda_recon = 0`` is utility training only (the attacker
   still trains, to report its loss).
4. **Model selection**: FPR@95 on held-out positive and negative pairs, each epoch, and the mean
   matching accuracy; the raw base descriptor's once, as the baseline. A held-out negative pairs a point with
   its nearest held-out neighbour in 3D (random pairs are too easy); the positives are SfM track
   observations, hence SIFT-matched pairs: the baseline is favoured. The best epoch's NinjaNet is
   ``RUN/checkpoint``; ``RUN/attacker`` holds the attacker's last weights (for reference),
   ``RUN/resume/ninjanet`` the last NinjaNet (for ``--resume``).

Outputs: ``RUN/checkpoint``, ``RUN/attacker``, ``RUN/config.yaml``, ``RUN/losses.json``,
``RUN/curves.png`` (L_util, L_recon and FPR@95 per epoch) and ``RUN/resume/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from segloc.config import check_options, option
from segloc.data.dataset import Dataset, read_dataset
from segloc.errors import SeglocError
from segloc.evaluate.audit import _resized_rgb, attack_size, map_sparse_inputs
from segloc.evaluate.report import new_figure, save_figure
from segloc.features.base_descriptors import BASE_DESCRIPTOR_DIMS, base_descriptors
from segloc.maps.build import CoreBuild, CoreConfig, build_core
from segloc.models.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from segloc.models.inversion import InversionUNet, InversionUNetConfig, PerceptualFeatures
from segloc.models.ninjanet import BASE_DESCRIPTORS, NinjaNet, NinjaNetConfig
from segloc_train.checkpointing import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOSSES_FILE,
    RESUME_DIR,
    LossHistory,
    TrainingState,
    load_optimizer_state,
    open_run,
    read_loss_history,
    save_training_state,
    write_loss_history,
)
from segloc_train.loop import epoch_seed, preset_config, read_train_section, torch_threads, training_device, write_train_section

logger = logging.getLogger("segloc")

TRAINER_NAME = "ninjadesc"
ATTACKER_DIR = "attacker"
CURVES_FILE = "curves.png"
LAST_NINJANET_DIR = "ninjanet"  # under RESUME_DIR


@dataclass
class NinjaDescTrainConfig:
    """Options of :func:`train_ninjadesc`; the defaults are the ``cpu`` preset.

    Attributes:
        base_descriptor: the descriptor NinjaNet re-encodes (:data:`segloc.models.ninjanet.BASE_DESCRIPTORS`:
            ``rootsift`` or ``vgg``); the utility triplets and the privacy data use it.
        hidden, dropout: NinjaNet's (:class:`segloc.models.ninjanet.NinjaNetConfig`).
        batch_size: triplets (3D points) per utility batch.
        margin: the triplet loss's margin (L2 distances of unit descriptors, in [0, 2]).
        sos_weight: weight of the second-order similarity regulariser.
        sos_neighbours: k, the nearest neighbours the SOS regulariser compares.
        image_batch_size: images per attacker batch.
        max_edge: longer side of the attacker's images, pixels.
        attacker_width, attacker_depth: the attacker U-Net's (:class:`segloc.models.inversion.InversionUNetConfig`).
        perceptual_weight: weight of the perceptual term of L_recon next to the MAE.
        learning_rate: Adam's, for both networks (equal, as in the paper).
        lambda_recon: lambda: NinjaNet minimises ``L_util - lambda_recon * L_recon``.
        utility_init_steps: NinjaNet steps on L_util alone before the attacker exists.
        attacker_init_steps: attacker steps on the initial NinjaDesc before the joint training.
        epochs, steps_per_epoch: the joint adversarial training (one step: a NinjaNet step and an attacker step).
        holdout_every: every N-th 3D point (with >= 2 observations) is held out for validation.
        max_validation_pairs: at most this many held-out positive (and as many negative) pairs.
        core: the core build of each training dataset (SIFT, matching, triangulation).
        seed: sampling and initialisation.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads (null: torch's).
        time_budget_s: stop cleanly after this much wall time, setup included (null: none).
    """

    base_descriptor: str = "rootsift"
    hidden: int = option(512, ge=1)
    dropout: float = option(0.1, ge=0, le=1)
    batch_size: int = option(256, ge=2)
    margin: float = option(1.0, gt=0)
    sos_weight: float = option(1.0, ge=0)
    sos_neighbours: int = option(8, ge=1)
    image_batch_size: int = option(4, ge=1)
    max_edge: int = option(160, ge=32)
    attacker_width: int = option(16, ge=4)
    attacker_depth: int = option(3, ge=1, le=6)
    perceptual_weight: float = option(0.05, ge=0)
    learning_rate: float = option(1e-3, gt=0)
    lambda_recon: float = option(1.0, ge=0)
    utility_init_steps: int = option(300, ge=0)
    attacker_init_steps: int = option(150, ge=0)
    epochs: int = option(4, ge=1)
    steps_per_epoch: int = option(40, ge=0)
    holdout_every: int = option(10, ge=2)
    max_validation_pairs: int = option(5000, ge=10)
    core: CoreConfig = field(default_factory=CoreConfig)
    seed: int = option(0, ge=0)
    device: str = "cpu"
    threads: int | None = option(None, ge=1)
    time_budget_s: float | None = option(None, gt=0)

    def __post_init__(self) -> None:
        check_options(self)
        if self.base_descriptor not in BASE_DESCRIPTORS:
            raise SeglocError(f"unknown base_descriptor {self.base_descriptor!r}; valid values are: {', '.join(BASE_DESCRIPTORS)}")


#: Named settings: ``cpu`` (minutes on one core for two small synthetic scenes) and ``paper`` (GPU-sized).
NINJADESC_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": {
        "hidden": 1024,
        "batch_size": 1024,
        "image_batch_size": 8,
        "max_edge": 320,
        "attacker_width": 32,
        "attacker_depth": 4,
        "utility_init_steps": 5000,
        "attacker_init_steps": 3000,
        "epochs": 20,
        "steps_per_epoch": 500,
        "device": "cuda",
    },
}


def ninjadesc_config_from_dict(values: dict[str, Any] | None, where: str = "train") -> NinjaDescTrainConfig:
    """A config from a YAML ``train`` section: an optional ``preset`` (``cpu``, ``paper``) plus overrides (strict)."""
    return preset_config(NinjaDescTrainConfig, NINJADESC_PRESETS, "cpu", values, where)


def load_ninjadesc_config(path: str | Path) -> NinjaDescTrainConfig:
    """The ``train`` section of a YAML file (e.g. a run's ``config.yaml``)."""
    return ninjadesc_config_from_dict(read_train_section(path), where=f"{path}: train")


def write_ninjadesc_config(path: str | Path, config: NinjaDescTrainConfig) -> Path:
    return write_train_section(
        path, config, "NinjaDesc training config, every option (segloc_train.ninjadesc.train_ninjadesc.NinjaDescTrainConfig)."
    )


# --- the attacker's input, differentiable ----------------------------------------------------
@dataclass
class RasterPlan:
    """Which points of one image land in the attacker's sparse image, and where.

    Attributes:
        size: (width, height) of the sparse image.
        index: (K,) int64 indices (into the image's points) of the points that survive
            rasterisation: inside the image, the nearest of those sharing a pixel.
        pixels: (K,) int64 flat pixel index ``row * width + col`` of each survivor.
        inverse_depth: (K,) float32 ``1 / (1 + depth)`` of each survivor.
    """

    size: tuple[int, int]
    index: np.ndarray
    pixels: np.ndarray
    inverse_depth: np.ndarray


def raster_plan(points2D: np.ndarray, depth: np.ndarray, size: tuple[int, int]) -> RasterPlan:
    """The survivors of :func:`segloc.evaluate.audit.sparse_input` for these points (same pixels, same winners).

    Args:
        points2D: (N, 2) pixels at the sparse image's size (COLMAP convention).
        depth: (N,) depth, metres.
        size: (width, height).
    """
    points2D = np.asarray(points2D, dtype=np.float64).reshape(-1, 2)
    depth = np.asarray(depth, dtype=np.float64).reshape(-1)
    width, height = size
    cols, rows = np.floor(points2D[:, 0]).astype(np.int64), np.floor(points2D[:, 1]).astype(np.int64)
    keep = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height) & (depth > 0) & np.isfinite(depth)
    order = np.flatnonzero(keep)[np.argsort(-depth[keep], kind="stable")]  # sparse_input's write order: the last write wins
    pixels = rows[order] * width + cols[order]
    _, last = np.unique(pixels[::-1], return_index=True)
    winners = order[::-1][last]
    return RasterPlan(
        (width, height),
        winners,
        (rows[winners] * width + cols[winners]).astype(np.int64),
        (1.0 / (1.0 + depth[winners])).astype(np.float32),
    )


def rasterise(attributes: Tensor, plan: RasterPlan) -> Tensor:
    """The attacker's sparse image (C + 2, H, W) of the survivors' attributes (K, C), differentiable in ``attributes``.

    Channels as :func:`segloc.evaluate.audit.sparse_input`: the C attributes, the inverse depth
    and the mask; zeros where no point landed.
    """
    width, height = plan.size
    if attributes.ndim != 2 or len(attributes) != len(plan.index):
        raise SeglocError(f"rasterise: {len(plan.index)} survivors but attributes of shape {tuple(attributes.shape)}")
    inverse_depth = torch.from_numpy(plan.inverse_depth).to(attributes)
    values = torch.cat([attributes.T, inverse_depth[None], torch.ones_like(inverse_depth)[None]])
    image = attributes.new_zeros(attributes.shape[1] + 2, height * width)
    image = image.index_copy(1, torch.from_numpy(plan.pixels).to(attributes.device), values)
    return image.reshape(-1, height, width)


# --- data -------------------------------------------------------------------------------------
def observation_base_descriptors(build: CoreBuild, dataset: Dataset, config: NinjaDescTrainConfig) -> np.ndarray:
    """(M, C) float32 base descriptor (``config.base_descriptor``) of each core observation, computed at the observed keypoints only."""
    start = time.perf_counter()
    core = build.core
    values = np.zeros((core.num_observations, BASE_DESCRIPTOR_DIMS[config.base_descriptor]), np.float32)
    for image_index, (image, features) in enumerate(zip(core.images, build.features)):
        mask = core.observation_image_ids == image_index
        if mask.any():
            values[mask] = base_descriptors(
                config.base_descriptor,
                features,
                lambda name=image.name: dataset.load_image(name),
                config.core.sift.max_edge,
                build.observation_keypoint_ids[mask],
            )
    logger.info("%s of %d observations of %s in %.1f s", config.base_descriptor, len(values), dataset.root, time.perf_counter() - start)
    return values


@dataclass
class PrivacyImage:
    """One mapping image for the attacker: its surviving observations and the RGB target (3, H, W) in [0, 1]."""

    observations: np.ndarray
    plan: RasterPlan
    rgb: np.ndarray
    source: str


@dataclass
class NinjaDescData:
    """Training data of all datasets (observations indexed globally).

    Attributes:
        descriptors: (M, C) float32 base descriptor of every core observation.
        train_tracks: observation indices of each training 3D point (>= 2 observations each).
        validation_tracks: the same for the held-out points.
        validation_points: (V, 3) world position of each held-out point.
        validation_places: (V,) int64 index of each held-out point's dataset.
        images: the privacy data, one entry per mapping image.
        roots: the dataset folders.
    """

    descriptors: np.ndarray
    train_tracks: list[np.ndarray]
    validation_tracks: list[np.ndarray]
    validation_points: np.ndarray
    validation_places: np.ndarray
    images: list[PrivacyImage]
    roots: list[Path]


def load_training_data(dataset_dirs: Sequence[Path], config: NinjaDescTrainConfig, progress: bool = True) -> NinjaDescData:
    """Build each dataset's core and gather the utility and privacy data (module documentation, step 1).

    Raises:
        SeglocError: a dataset without triangulated points, or too few points in total.
    """
    descriptors, train_tracks, validation_tracks, validation_points, validation_places, images = [], [], [], [], [], []
    offset = 0
    for root in dataset_dirs:
        dataset = read_dataset(root)
        build = build_core(dataset, config.core, progress=progress)
        core = build.core
        if core.num_observations == 0:
            raise SeglocError(f"{root}: the core build triangulated no points; NinjaDesc trains on SfM tracks")
        descriptors.append(observation_base_descriptors(build, dataset, config))
        order = np.argsort(core.observation_point_ids, kind="stable")
        counts = np.bincount(core.observation_point_ids, minlength=len(core.points3D))
        tracks = np.split(order + offset, np.cumsum(counts)[:-1])
        multi = [track for track in tracks if len(track) >= 2]
        held_out = multi[:: config.holdout_every]
        validation_tracks += held_out
        validation_points += [core.points3D[core.observation_point_ids[track[0] - offset]] for track in held_out]
        validation_places += [len(descriptors) - 1] * len(held_out)
        train_tracks += [track for i, track in enumerate(multi) if i % config.holdout_every]
        projected = map_sparse_inputs(core, np.arange(core.num_observations)[:, None], config.max_edge)
        for image, points in zip(tqdm(core.images, desc=f"attacker targets {root.name}", disable=not progress), projected):
            size = attack_size(image.camera.width, image.camera.height, config.max_edge)
            plan = raster_plan(points.points2D, points.depth, size)
            if len(plan.index) == 0:
                continue
            observations = points.attributes[plan.index, 0].astype(np.int64) + offset
            rgb = _resized_rgb(dataset.load_image(image.name), size)
            images.append(PrivacyImage(observations, plan, rgb, f"{root}:{image.name}"))
        offset += core.num_observations
    if len(train_tracks) < 2 or len(validation_tracks) < 2:
        raise SeglocError(
            f"{len(train_tracks)} training and {len(validation_tracks)} held-out 3D points with two observations or more; "
            "give more or larger training scenes"
        )
    if not images:
        raise SeglocError("no mapping image sees a triangulated point; nothing for the attacker")
    return NinjaDescData(
        np.concatenate(descriptors),
        train_tracks,
        validation_tracks,
        np.array(validation_points, dtype=np.float64).reshape(-1, 3),
        np.array(validation_places, dtype=np.int64),
        images,
        [Path(r) for r in dataset_dirs],
    )


# --- losses -----------------------------------------------------------------------------------
def _distances(a: Tensor, b: Tensor) -> Tensor:
    return (2 - 2 * a @ b.T).clamp_min(1e-8).sqrt()  # unit vectors


def triplet_hardest_loss(anchors: Tensor, positives: Tensor, margin: float) -> Tensor:
    """HardNet's triplet margin loss: each pair against its hardest in-batch negative (L2-normalised (B, C) inputs)."""
    distance = _distances(anchors, positives)
    positive = distance.diag()
    eye = torch.eye(len(anchors), dtype=torch.bool, device=anchors.device)
    masked = distance.masked_fill(eye, float("inf"))
    hardest = torch.minimum(masked.min(dim=1).values, masked.min(dim=0).values)
    return F.relu(margin + positive - hardest).mean()


def sos_regulariser(anchors: Tensor, positives: Tensor, neighbours: int) -> Tensor:
    """Second-order similarity (SOSNet): mean over i of sqrt(sum over the kNN j of (d(a_i, a_j) - d(p_i, p_j))^2).

    The neighbours of i are the union of its ``neighbours`` nearest anchors and nearest
    positives (itself excluded).
    """
    d_a, d_p = _distances(anchors, anchors), _distances(positives, positives)
    k = min(neighbours, len(anchors) - 1)
    eye = torch.eye(len(anchors), dtype=torch.bool, device=anchors.device)
    mask = torch.zeros_like(eye)
    with torch.no_grad():
        for d in (d_a, d_p):
            mask.scatter_(1, d.masked_fill(eye, float("inf")).topk(k, dim=1, largest=False).indices, True)
    return (((d_a - d_p) ** 2) * mask).sum(dim=1).add(1e-8).sqrt().mean()


def utility_loss(anchors: Tensor, positives: Tensor, config: NinjaDescTrainConfig) -> Tensor:
    """L_util: the hardest-negative triplet loss + ``sos_weight`` x the SOS regulariser."""
    loss = triplet_hardest_loss(anchors, positives, config.margin)
    if config.sos_weight > 0:
        loss = loss + config.sos_weight * sos_regulariser(anchors, positives, config.sos_neighbours)
    return loss


def reconstruction_loss(prediction: Tensor, target: Tensor, perceptual: PerceptualFeatures | None, weight: float) -> Tensor:
    """L_recon: MAE + ``weight`` x the perceptual loss."""
    loss = F.l1_loss(prediction, target)
    if perceptual is not None and weight > 0:
        loss = loss + weight * perceptual.loss(prediction, target)
    return loss


# --- validation -------------------------------------------------------------------------------
def fpr_at_95(positive_distances: np.ndarray, negative_distances: np.ndarray) -> float:
    """False-positive rate at the distance threshold that accepts 95 % of the positive pairs.

    The threshold is the smallest positive distance with at least 95 % of the positives at or
    below it; FPR is the fraction of negative distances at or below it.
    """
    positive = np.sort(np.asarray(positive_distances, dtype=np.float64))
    negative = np.asarray(negative_distances, dtype=np.float64)
    if not len(positive) or not len(negative):
        raise SeglocError("FPR@95 needs positive and negative pairs")
    threshold = positive[int(np.ceil(0.95 * len(positive))) - 1]
    return float(np.mean(negative <= threshold))


@dataclass
class ValidationPairs:
    """Held-out pairs: (P, 2) positive and (P, 2) negative observation-index pairs."""

    positives: np.ndarray
    negatives: np.ndarray


def validation_pairs(tracks: Sequence[np.ndarray], points: np.ndarray, places: np.ndarray, max_pairs: int, seed: int) -> ValidationPairs:
    """One positive pair per held-out point (two of its observations) and one hard negative pair per positive.

    The negative pairs an observation of the point with one of the nearest other held-out 3D
    point of the same place (spatial neighbours share surfaces and textures: random pairs of a
    scene are too easy to separate to select a model on).

    Args:
        tracks: observation indices of each held-out point (>= 2 each).
        points: (V, 3) their world positions.
        places: (V,) their dataset index (negatives never pair two places).
        max_pairs: at most this many pairs of each kind.
        seed: the sampling.

    Raises:
        SeglocError: a place with a single held-out point.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng([seed, 11])
    neighbour = np.empty(len(tracks), np.int64)
    for place in np.unique(places):
        members = np.flatnonzero(places == place)
        if len(members) < 2:
            raise SeglocError(f"dataset {place} has {len(members)} held-out point; negatives need two or more")
        _, nearest = cKDTree(points[members]).query(points[members], k=2)
        neighbour[members] = members[nearest[:, 1]]
    chosen = rng.permutation(len(tracks))[:max_pairs]
    positives = np.array([rng.choice(tracks[i], 2, replace=False) for i in chosen], dtype=np.int64)
    negatives = np.array([[rng.choice(tracks[i]), rng.choice(tracks[neighbour[i]])] for i in chosen], dtype=np.int64)
    return ValidationPairs(positives, negatives)


def matching_metrics(descriptors: np.ndarray, pairs: ValidationPairs) -> dict[str, float]:
    """FPR@95 and the mean matching accuracy (MMA) of unit descriptors (M, C) on the held-out pairs.

    MMA: the fraction of anchors (first observation of a positive pair) whose nearest
    neighbour among all the pairs' second observations is their own.
    """
    descriptors = np.asarray(descriptors, dtype=np.float32)

    def distance(pairs_: np.ndarray) -> np.ndarray:
        return np.linalg.norm(descriptors[pairs_[:, 0]] - descriptors[pairs_[:, 1]], axis=1)

    anchors, positives = descriptors[pairs.positives[:, 0]], descriptors[pairs.positives[:, 1]]
    nearest = (anchors @ positives.T).argmax(axis=1)
    return {
        "fpr95": fpr_at_95(distance(pairs.positives), distance(pairs.negatives)),
        "mma": float(np.mean(nearest == np.arange(len(anchors)))),
    }


@torch.no_grad()
def encode(model: NinjaNet, descriptors: Tensor, chunk: int = 65536) -> Tensor:
    """NinjaDesc (M, C) of base descriptors (M, C) in eval mode (restores the mode after)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(descriptors[i : i + chunk]) for i in range(0, len(descriptors), chunk)])
    model.train(was_training)
    return out


# --- the steps ------------------------------------------------------------------------------
class _Optimizers:
    """NinjaNet's and the attacker's optimizers, saved and loaded as one state dict."""

    def __init__(self, ninjanet: torch.optim.Optimizer, attacker: torch.optim.Optimizer):
        self.ninjanet, self.attacker = ninjanet, attacker

    def state_dict(self) -> dict[str, Any]:
        return {"ninjanet": self.ninjanet.state_dict(), "attacker": self.attacker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ninjanet.load_state_dict(state["ninjanet"])
        self.attacker.load_state_dict(state["attacker"])


@dataclass
class Trainer:
    """The two networks, their optimizers and the data one training step draws from."""

    ninjanet: NinjaNet
    attacker: InversionUNet
    optimizers: _Optimizers
    data: NinjaDescData
    descriptors: Tensor
    perceptual: PerceptualFeatures | None
    config: NinjaDescTrainConfig
    device: torch.device

    def utility_batch(self, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """Base descriptors of (B, C) anchors and positives: two observations each of B distinct training points."""
        tracks = self.data.train_tracks
        chosen = rng.choice(len(tracks), min(self.config.batch_size, len(tracks)), replace=False)
        pairs = np.array([rng.choice(tracks[i], 2, replace=False) for i in chosen])
        return self.descriptors[pairs[:, 0]], self.descriptors[pairs[:, 1]]

    def image_batch(self, rng: np.random.Generator) -> list[PrivacyImage]:
        images = self.data.images
        return [images[i] for i in rng.choice(len(images), min(self.config.image_batch_size, len(images)), replace=False)]

    def sparse_images(self, batch: list[PrivacyImage], train_ninjanet: bool) -> tuple[Tensor, Tensor]:
        """Sparse NinjaDesc images (B, C + 2, H, W) and RGB targets (B, 3, H, W) of a batch of images of one size.

        With ``train_ninjanet`` the descriptors come from NinjaNet in training mode with
        gradients; otherwise in eval mode, detached (what a map stores).
        """
        base = self.descriptors[torch.from_numpy(np.concatenate([image.observations for image in batch])).to(self.device)]
        encoded = self.ninjanet(base) if train_ninjanet else encode(self.ninjanet, base)
        chunks = torch.split(encoded, [len(image.observations) for image in batch])
        sparse = torch.stack([rasterise(chunk, image.plan) for chunk, image in zip(chunks, batch)])
        target = torch.from_numpy(np.stack([image.rgb for image in batch])).to(self.device)
        return sparse, target

    def batch_by_size(self, rng: np.random.Generator) -> list[PrivacyImage]:
        """An image batch whose images share the first drawn image's size (datasets may differ in size)."""
        batch = self.image_batch(rng)
        return [image for image in batch if image.plan.size == batch[0].plan.size]

    def utility_step(self, rng: np.random.Generator) -> dict[str, float]:
        """One NinjaNet step on L_util alone (the utility initialisation)."""
        self.ninjanet.train()
        anchors, positives = self.utility_batch(rng)
        loss = utility_loss(self.ninjanet(anchors), self.ninjanet(positives), self.config)
        _step(self.optimizers.ninjanet, loss, "L_util")
        return {"util": loss.item()}

    def attacker_step(self, rng: np.random.Generator) -> dict[str, float]:
        """One attacker step on L_recon; NinjaNet's outputs are computed in eval mode and detached (NinjaNet unchanged)."""
        self.attacker.train()
        sparse, target = self.sparse_images(self.batch_by_size(rng), train_ninjanet=False)
        if rng.integers(2):  # horizontal flip of input and target alike
            sparse, target = sparse.flip(-1), target.flip(-1)
        loss = reconstruction_loss(self.attacker(sparse), target, self.perceptual, self.config.perceptual_weight)
        _step(self.optimizers.attacker, loss, "L_recon")
        return {"recon": loss.item()}

    def ninjanet_step(self, rng: np.random.Generator) -> dict[str, float]:
        """One NinjaNet step on L_util - lambda_recon x L_recon; the attacker's parameters and statistics stay as they were."""
        self.ninjanet.train()
        self.attacker.train()
        anchors, positives = self.utility_batch(rng)
        util = utility_loss(self.ninjanet(anchors), self.ninjanet(positives), self.config)
        loss = util
        recon = torch.zeros(())
        buffers = {name: value.clone() for name, value in self.attacker.named_buffers()}
        for parameter in self.attacker.parameters():
            parameter.requires_grad_(False)
        try:
            if self.config.lambda_recon > 0:
                sparse, target = self.sparse_images(self.batch_by_size(rng), train_ninjanet=True)
                recon = reconstruction_loss(self.attacker(sparse), target, self.perceptual, self.config.perceptual_weight)
                loss = util - self.config.lambda_recon * recon
            _step(self.optimizers.ninjanet, loss, "the NinjaNet loss")
        finally:
            for parameter in self.attacker.parameters():
                parameter.requires_grad_(True)
            with torch.no_grad():  # the attacker's batch-norm statistics as they were
                for name, value in self.attacker.named_buffers():
                    value.copy_(buffers[name])
        return {"util": util.item(), "ninja_recon": recon.item()}


def _step(optimizer: torch.optim.Optimizer, loss: Tensor, name: str) -> None:
    if not torch.isfinite(loss):
        raise SeglocError(f"{name} is not finite ({loss.item()}); lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def build_trainer(data: NinjaDescData, config: NinjaDescTrainConfig, device: torch.device) -> Trainer:
    """Fresh networks and optimizers for ``data`` (seeded by ``config.seed``)."""
    torch.manual_seed(config.seed)
    dim = BASE_DESCRIPTOR_DIMS[config.base_descriptor]
    ninjanet_config = NinjaNetConfig(base_descriptor=config.base_descriptor, dim=dim, hidden=config.hidden, dropout=config.dropout)
    ninjanet = NinjaNet(ninjanet_config).to(device)
    attacker_config = InversionUNetConfig(in_channels=dim + 2, width=config.attacker_width, depth=config.attacker_depth)
    attacker = InversionUNet(attacker_config).to(device)
    optimizers = _Optimizers(
        torch.optim.Adam(ninjanet.parameters(), lr=config.learning_rate), torch.optim.Adam(attacker.parameters(), lr=config.learning_rate)
    )
    perceptual = PerceptualFeatures().to(device) if config.perceptual_weight > 0 else None
    descriptors = torch.from_numpy(data.descriptors).to(device)
    return Trainer(ninjanet, attacker, optimizers, data, descriptors, perceptual, config, device)


# --- the run ----------------------------------------------------------------------------------
def plot_curves(path: Path, history: LossHistory, baseline_fpr95: float, baseline_name: str = "RootSIFT") -> Path:
    """L_util, L_recon (the attacker's) and FPR@95 per epoch, with the raw base descriptor's FPR@95."""
    figure = new_figure(12.0, 4.0)
    axes = figure.subplots(1, 3)
    epochs = [record["epoch"] + 1 for record in history.epochs]
    for ax, key, title in zip(axes, ("util", "recon", "fpr95"), ("L_util (NinjaNet)", "L_recon (attacker)", "held-out FPR@95")):
        ax.plot(epochs, [record.get(key) for record in history.epochs], marker="o", linewidth=1.6, label="NinjaDesc")
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
    axes[2].axhline(baseline_fpr95, color="tab:red", linestyle="--", label=baseline_name)
    axes[2].legend(fontsize=8)
    figure.suptitle("NinjaDesc training")
    return save_figure(figure, path)


def train_ninjadesc(
    dataset_dirs: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    config: NinjaDescTrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train NinjaNet adversarially against an inversion attacker on ``dataset_dirs`` (module documentation).

    Returns:
        ``RUN/checkpoint``: the NinjaNet of the epoch with the best held-out FPR@95.

    Raises:
        SeglocError: bad datasets or config, nothing to resume, a new run into a folder holding one.
    """
    start_time = time.perf_counter()
    dataset_dirs = [Path(dataset_dirs)] if isinstance(dataset_dirs, (str, Path)) else [Path(d) for d in dataset_dirs]
    output_dir = Path(output_dir)
    if not dataset_dirs:
        raise SeglocError("train_ninjadesc: no dataset folder given")
    if config is None:
        config = (
            load_ninjadesc_config(output_dir / CONFIG_FILE) if resume and (output_dir / CONFIG_FILE).is_file() else NinjaDescTrainConfig()
        )
    state = open_run(output_dir, TRAINER_NAME, "a NinjaDesc one", config.seed, resume)
    if resume and state.epochs_done >= config.epochs:
        logger.info("%s already trained %d of %d epochs; nothing to do", output_dir, state.epochs_done, config.epochs)
        return output_dir / CHECKPOINT_DIR
    device = training_device(config.device)
    with torch_threads(config.threads):
        return _train(dataset_dirs, output_dir, config, state, resume, device, progress, on_epoch, start_time)


def _over_budget(config: NinjaDescTrainConfig, start_time: float) -> bool:
    return config.time_budget_s is not None and time.perf_counter() - start_time > config.time_budget_s


def _run_steps(name: str, steps: int, step: Callable[[np.random.Generator], dict[str, float]], rng, config, start_time, progress) -> list:
    records = []
    with tqdm(range(steps), desc=name, disable=not progress) as bar:
        for _ in bar:
            if _over_budget(config, start_time):
                break
            records.append(step(rng))
            bar.set_postfix({key: f"{value:.3f}" for key, value in records[-1].items()})
    return records


def _train(
    dataset_dirs: list[Path],
    output_dir: Path,
    config: NinjaDescTrainConfig,
    state: TrainingState,
    resume: bool,
    device: torch.device,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    start_time: float,
) -> Path:
    data = load_training_data(dataset_dirs, config, progress)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_ninjadesc_config(output_dir / CONFIG_FILE, config)
    trainer = build_trainer(data, config, device)
    pairs = validation_pairs(
        data.validation_tracks, data.validation_points, data.validation_places, config.max_validation_pairs, config.seed
    )
    baseline = matching_metrics(data.descriptors, pairs)
    logger.info(
        "%d training and %d held-out 3D points, %d attacker images; raw %s held-out FPR@95 %.4f, MMA %.4f",
        len(data.train_tracks),
        len(data.validation_tracks),
        len(data.images),
        config.base_descriptor,
        baseline["fpr95"],
        baseline["mma"],
    )
    checkpoint_dir, attacker_dir, last_dir = (
        output_dir / CHECKPOINT_DIR,
        output_dir / ATTACKER_DIR,
        output_dir / RESUME_DIR / LAST_NINJANET_DIR,
    )
    history = LossHistory()
    best_fpr95 = float("inf")
    if resume:
        if read_checkpoint_info(last_dir).metadata.get("epoch") != state.epochs_done:
            raise SeglocError(f"cannot resume {output_dir}: the last NinjaNet and the resume state disagree (an interrupted save)")
        trainer.ninjanet.load_state_dict(load_checkpoint(last_dir).state_dict())
        trainer.attacker.load_state_dict(load_checkpoint(attacker_dir).state_dict())
        load_optimizer_state(output_dir, trainer.optimizers)
        history = read_loss_history(output_dir / LOSSES_FILE)
        history.truncate(state.epochs_done)
        best_fpr95 = float(read_checkpoint_info(checkpoint_dir).metadata["fpr95"])
        logger.info("resuming %s after epoch %d", output_dir, state.epochs_done)
    else:
        rng = np.random.default_rng(epoch_seed(config.seed, 0, 1))  # stream 1: the initialisation
        init = _run_steps("utility initialisation", config.utility_init_steps, trainer.utility_step, rng, config, start_time, progress)
        history.steps += [{"epoch": -1, "phase": "utility_init", **r} for r in init]
        attack = _run_steps("attacker initialisation", config.attacker_init_steps, trainer.attacker_step, rng, config, start_time, progress)
        history.steps += [{"epoch": -1, "phase": "attacker_init", **r} for r in attack]
        state.steps_done = len(init) + len(attack)
    checkpoint = checkpoint_dir
    for epoch in range(state.epochs_done, config.epochs):
        epoch_start = time.perf_counter()
        rng = np.random.default_rng(epoch_seed(config.seed, epoch, 0))
        records: list[dict[str, float]] = []
        stopped = ""
        bar = tqdm(total=config.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
        for _ in range(config.steps_per_epoch):
            if _over_budget(config, start_time):
                stopped = "time_budget"
                break
            record = {"epoch": epoch, "step": state.steps_done, **trainer.ninjanet_step(rng), **trainer.attacker_step(rng)}
            records.append(record)
            state.steps_done += 1
            bar.update(1)
            bar.set_postfix(util=f"{record['util']:.3f}", recon=f"{record['recon']:.3f}")
        bar.close()
        if not stopped and _over_budget(config, start_time):
            stopped = "time_budget"
        metrics = matching_metrics(encode(trainer.ninjanet, trainer.descriptors).cpu().numpy(), pairs)
        seconds = time.perf_counter() - epoch_start
        state.epochs_done, state.train_seconds = epoch + 1, state.train_seconds + seconds
        means = {key: float(np.mean([r[key] for r in records])) for key in ("util", "recon", "ninja_recon")} if records else {}
        if not records:  # the budget ran out before this epoch's first step: the last losses of the initialisation
            for key in ("util", "recon"):
                values = [r[key] for r in history.steps if key in r]
                if values:
                    means[key] = float(np.mean(values[-20:]))
        summary = {"epoch": epoch, "steps": len(records), "seconds": seconds, **means, **metrics}
        history.steps.extend(records)
        history.epochs.append(summary)
        write_loss_history(output_dir / LOSSES_FILE, history)
        plot_curves(output_dir / CURVES_FILE, history, baseline["fpr95"], config.base_descriptor)
        state.stopped = stopped or ("completed" if epoch + 1 == config.epochs else "")
        metadata = {
            "trainer": TRAINER_NAME,
            "epoch": state.epochs_done,
            "steps": state.steps_done,
            "lambda": config.lambda_recon,
            "fpr95": metrics["fpr95"],
            "mma": metrics["mma"],
            "base_descriptor": config.base_descriptor,
            "base_fpr95": baseline["fpr95"],
            "base_mma": baseline["mma"],
            "attacker_recon": means.get("recon"),
            "validation_pairs": len(pairs.positives),
            "datasets": [str(root) for root in data.roots],
            "train_seconds": state.train_seconds,
            "stopped": state.stopped,
            "config_file": CONFIG_FILE,
        }
        if metrics["fpr95"] < best_fpr95 or not checkpoint_dir.exists():
            best_fpr95 = metrics["fpr95"]
            save_checkpoint(trainer.ninjanet, checkpoint_dir, metadata=metadata, overwrite=True)
        save_checkpoint(trainer.attacker, attacker_dir, metadata=metadata, overwrite=True)
        save_checkpoint(trainer.ninjanet, last_dir, metadata=metadata, overwrite=True)
        save_training_state(output_dir, state, trainer.optimizers)
        if on_epoch is not None:
            on_epoch(
                {
                    **summary,
                    "epoch": epoch + 1,
                    "epochs": config.epochs,
                    "stopped": stopped,
                    "base": {"name": config.base_descriptor, **baseline},
                    "best_fpr95": best_fpr95,
                }
            )
        else:
            logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, summary)
        if stopped:
            logger.info("time budget of %.0f s used up after epoch %d (resume with --resume)", config.time_budget_s, epoch + 1)
            break
    return checkpoint
