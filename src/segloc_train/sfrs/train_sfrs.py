"""SFRS training: ``segloc train sfrs DATASET [DATASET ...] -o RUN``.

SFRS (Ge, Wang, Zhu, Zhao, Li, ECCV 2020: self-supervising fine-grained region similarities)
trains NetVLAD (:class:`segloc.models.netvlad.NetVlad`) from poses alone (the GPS-like weak
labels of the paper) over several *generations*:

1. **Images**: every image with a pose of the training datasets, mapping and query images
   (the queries of a synthetic scene are rendered under another condition, so a query's
   positives are day images of its place: the appearance change the network must bridge).
   Evaluate on other scenes than those trained on.
2. **Initialisation**: the backbone from its ImageNet weights, the NetVLAD centroids and alpha
   from k-means of backbone features of the mapping images.
3. **Mining** every epoch (:func:`segloc_train.mining.mine_retrieval_samples`): the current
   network describes every image; a query's positives are within ``positive_radius_m`` and
   ``max_positive_angle_deg`` of its pose, ranked by similarity (best first); its negatives
   are beyond ``negative_radius_m``, the ``num_negatives`` most similar of a random pool of
   ``negative_pool``. Radii left null are ``positive_spacings`` / ``negative_spacings`` times
   the median spacing of the mapping images (:func:`segloc.maps.scale.image_spacing`), so one
   config fits a room (8 cm between images) and a street (66 cm).
4. **Generation 0**: the image-level loss on (query, best positive, hard negatives): SARE with
   independent negatives (``loss: sare_ind``; per negative ``softplus(d(q, p)^2 - d(q, n)^2)``;
   SFRS's baseline is SARE) or a triplet margin loss (``loss: triplet``). The temperatures and
   loss weight default to values recalled from OpenIBL, not checked against its scripts here.
5. **Generations >= 1**: the network of the previous generation, frozen, is the teacher. Each
   of the query's ``num_positives`` best positives is split into its eight regions (2 x 2
   quarters and 4 halves, plus the whole image: 9 descriptors each); the hardest negative
   region is the negative region the teacher finds most similar to the query. The teacher's
   similarities of the query to these ``9 P + 1`` descriptors, through a softmax at the
   generation's temperature ``temperatures[g]``, are the soft targets of the student's same
   similarities (cross-entropy): ``L = L_image + soft_weight * L_soft``. A generation starts
   from the previous one's weights (this project's choice, to save CPU time; not checked against OpenIBL).
6. **Outputs** (:mod:`segloc_train.checkpointing` formats): ``RUN/generation_G/checkpoint``
   at the end of each generation, ``RUN/checkpoint`` (the last save, for ``--resume``),
   ``config.yaml``, ``losses.json``, ``loss_curves.png`` and ``resume/``. Each epoch also
   measures ``recall_at_1`` on the training images (query images against the mapping images
   of their place, a hit within the positive thresholds), the curve of the run's progress.

The BatchNorm statistics of the backbone stay frozen (batches of a few images would corrupt
them); only the last ``network.trainable_blocks`` blocks and NetVLAD learn.
"""

from __future__ import annotations

import dataclasses
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

from segloc.config import check_options, config_to_dict, option
from segloc.data.dataset import ImageRecord, load_image, read_dataset
from segloc.errors import SeglocError
from segloc.models.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from segloc.models.netvlad import NetVlad, NetVladConfig, sample_features
from segloc_train.augment import AugmentConfig, augment_image, photometric_augment
from segloc_train.checkpointing import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOSS_CURVES_FILE,
    LOSSES_FILE,
    LossHistory,
    TrainingState,
    load_optimizer_state,
    open_run,
    plot_loss_curves,
    read_loss_history,
    save_training_state,
    write_loss_history,
)
from segloc_train.loop import epoch_seed, preset_config, read_train_section, torch_threads, training_device, write_train_section
from segloc_train.mining import MiningConfig, RetrievalSample, camera_centers_and_axes, mine_retrieval_samples, pose_candidates

logger = logging.getLogger("segloc")

TRAINER_NAME = "sfrs"
LOSS_TYPES = ("sare_ind", "triplet")
SFRS_LOSS_TERMS = ("total", "image", "soft", "recall_at_1")
SCAN_BATCH_SIZE = 16


def generation_dir(output_dir: str | Path, generation: int) -> Path:
    """``RUN/generation_G``: where generation G's checkpoint is kept."""
    return Path(output_dir) / f"generation_{generation}"


@dataclass
class SfrsMiningConfig:
    """Weak labels from the poses (see the module documentation, step 3).

    Attributes:
        positive_radius_m, negative_radius_m: metres; null: derived from the image spacing.
        positive_spacings, negative_spacings: the radii in median image spacings when derived
            (capped: :meth:`resolve`).
        max_positive_angle_deg: positives look within this angle of the query (null: any).
        min_negative_angle_deg: images looking more than this away are negatives at any distance (null: distance only).
        num_positives: positives per query in generations >= 1 (generation 0 uses the best one).
        num_negatives: hard negatives per query.
        negative_pool: random negatives the hard ones are chosen from.
    """

    positive_radius_m: float | None = option(None, gt=0)
    negative_radius_m: float | None = option(None, gt=0)
    positive_spacings: float = option(6.0, gt=0)
    negative_spacings: float = option(25.0, gt=0)
    max_positive_angle_deg: float | None = option(30.0, gt=0, le=180)
    min_negative_angle_deg: float | None = option(None, gt=0, le=180)
    num_positives: int = option(3, ge=1)
    num_negatives: int = option(3, ge=1)
    negative_pool: int = option(100, ge=1)

    def __post_init__(self) -> None:
        check_options(self)

    def resolve(self, mapping_centers: np.ndarray) -> MiningConfig:
        """The metric :class:`MiningConfig` of a place whose mapping camera centres are (N, 3)
        (null radii derived and capped as :meth:`segloc_train.mining.MiningConfig.resolve` does)."""
        return MiningConfig(
            self.positive_radius_m,
            self.negative_radius_m,
            self.max_positive_angle_deg,
            self.min_negative_angle_deg,
            positive_spacings=self.positive_spacings,
            negative_spacings=self.negative_spacings,
        ).resolve(mapping_centers)


def _default_augment() -> AugmentConfig:
    return AugmentConfig(resize_max_edge=224, blur_probability=0.3, noise_probability=0.3)


@dataclass
class SfrsTrainConfig:
    """Options of :func:`train_sfrs`; the defaults are the ``cpu`` preset.

    Attributes:
        network: the NetVLAD network.
        mining: weak labels and hard negatives.
        augment: image size (``resize_max_edge``, ``output_size``) and the photometric
            augmentation of the queries (the geometric one is not used: regions follow the image layout).
        generations: generations (0 = image-level loss only).
        epochs_per_generation: epochs of each generation.
        steps_per_epoch: at most this many steps per epoch (null: every mined query once).
        batch_size: queries per step.
        learning_rate, weight_decay: Adam.
        loss: image-level loss, ``sare_ind`` or ``triplet``; margin: the triplet's (squared distances).
        temperatures: softmax temperature of the soft loss per generation (index g; the last
            repeats for later generations; generation 0 has no soft loss).
        soft_weight: weight of the soft loss.
        kmeans_images, kmeans_features_per_image, kmeans_iterations: the centroid initialisation.
        use_query_images: the training datasets' query images are training queries too.
        cache_images: keep the resized images in memory (small scenes).
        seed, device, threads, time_budget_s: as ``segloc train segloc``.
    """

    network: NetVladConfig = field(default_factory=NetVladConfig)
    mining: SfrsMiningConfig = field(default_factory=SfrsMiningConfig)
    augment: AugmentConfig = field(default_factory=_default_augment)
    generations: int = option(3, ge=1)
    epochs_per_generation: int = option(2, ge=1)
    steps_per_epoch: int | None = option(15, ge=1, note="null: every mined query once")
    batch_size: int = option(2, ge=1)
    learning_rate: float = option(1e-4, gt=0)
    weight_decay: float = option(0.0, ge=0)
    loss: str = "sare_ind"
    margin: float = option(0.1, ge=0)
    temperatures: tuple[float, ...] = option((0.07, 0.07, 0.06, 0.05), gt=0)
    soft_weight: float = option(0.5, ge=0)
    kmeans_images: int = option(60, ge=1)
    kmeans_features_per_image: int = option(100, ge=1)
    kmeans_iterations: int = option(20, ge=1)
    use_query_images: bool = True
    cache_images: bool = True
    seed: int = option(0, ge=0)
    device: str = "cpu"
    threads: int | None = option(None, ge=1)
    time_budget_s: float | None = option(None, gt=0)

    def __post_init__(self) -> None:
        check_options(self)
        if self.loss not in LOSS_TYPES:
            raise SeglocError(f"train config: loss must be one of {', '.join(LOSS_TYPES)}, got {self.loss!r}")
        if not self.temperatures:
            raise SeglocError("train config: temperatures needs at least one value")
        if self.device != "cpu" and not (self.device == "cuda" or self.device.startswith("cuda:")):
            raise SeglocError(f"train config: device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    def temperature(self, generation: int) -> float:
        return float(self.temperatures[min(generation, len(self.temperatures) - 1)])

    @property
    def epochs(self) -> int:
        return self.generations * self.epochs_per_generation


SFRS_PRESETS: dict[str, dict[str, Any]] = {
    # Minutes on 2 CPU cores for three synthetic scenes of 200 images at 224 x 168.
    "cpu": {},
    # Closer to OpenIBL's SFRS runs, for a GPU: 4 generations, 10 positives and 10 negatives
    # of 1000, larger images, the whole backbone stage trained.
    "paper": {
        "network": {"trainable_blocks": 6},
        "mining": {"num_positives": 10, "num_negatives": 10, "negative_pool": 1000},
        "augment": {"resize_max_edge": 640},
        "generations": 4,
        "epochs_per_generation": 5,
        "steps_per_epoch": None,
        "batch_size": 4,
        "learning_rate": 1e-5,
        "kmeans_images": 500,
        "cache_images": False,
        "device": "cuda",
    },
}


def sfrs_config_from_dict(values: dict[str, Any] | None, where: str = "train") -> SfrsTrainConfig:
    """A config from a YAML ``train`` section: an optional ``preset`` (``cpu``, ``paper``) plus overrides (strict)."""
    return preset_config(SfrsTrainConfig, SFRS_PRESETS, "cpu", values, where)


def load_sfrs_config(path: str | Path) -> SfrsTrainConfig:
    """The ``train`` section of a YAML file (e.g. a run's ``config.yaml``)."""
    return sfrs_config_from_dict(read_train_section(path), where=f"{path}: train")


def write_sfrs_config(path: str | Path, config: SfrsTrainConfig) -> Path:
    return write_train_section(path, config, "SFRS training config, every option (segloc_train.sfrs.train_sfrs.SfrsTrainConfig).")


# --- images ------------------------------------------------------------------------------
@dataclass
class TrainingImages:
    """The posed images of the training places, resized to the training size.

    Attributes:
        roots: dataset folder of each place.
        records: per place, its images (mapping first, then queries when used).
        num_mapping: per place, how many of its records are mapping images.
        mining: per place, the metric mining thresholds.
    """

    roots: list[Path]
    records: list[list[ImageRecord]]
    num_mapping: list[int]
    mining: list[MiningConfig]
    augment: AugmentConfig
    cache: dict[tuple[int, int], np.ndarray] | None = None

    def image(self, place: int, index: int) -> np.ndarray:
        """(H, W, 3) float32 RGB in [0, 1] at the training size, no augmentation."""
        key = (place, index)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        raw = load_image(self.roots[place] / "images" / self.records[place][index].name)
        resized = augment_image(raw, np.zeros((0, 2)), self.augment, None, train=False).image
        if self.cache is not None:
            self.cache[key] = resized
        return resized

    def batch(self, place: int, indices: Sequence[int]) -> Tensor:
        return torch.from_numpy(np.stack([self.image(place, i).transpose(2, 0, 1) for i in indices]))


def load_training_images(dataset_dirs: Sequence[Path], config: SfrsTrainConfig) -> TrainingImages:
    roots, records, counts, mining = [], [], [], []
    for root in dataset_dirs:
        dataset = read_dataset(root)
        if len(dataset.mapping) < 3:
            raise SeglocError(f"{root}: {len(dataset.mapping)} mapping image(s); SFRS training needs a place with dozens")
        images = list(dataset.mapping) + (list(dataset.query) if config.use_query_images else [])
        centers, _ = camera_centers_and_axes(dataset.mapping)
        roots.append(Path(root))
        records.append(images)
        counts.append(len(dataset.mapping))
        mining.append(config.mining.resolve(centers))
        logger.info(
            "%s: %d images; positives within %.2f m, negatives beyond %.2f m",
            root,
            len(images),
            mining[-1].positive_radius_m,
            mining[-1].negative_radius_m,
        )
    augment = config.augment
    if augment.output_size is None:  # one size for every place, from the first mapping camera, a multiple of 16
        camera = records[0][0].camera
        scale = 1.0 if augment.resize_max_edge is None else augment.resize_max_edge / max(camera.width, camera.height)
        size = tuple(max(32, int(round(v * scale / 16)) * 16) for v in (camera.width, camera.height))
        augment = dataclasses.replace(augment, output_size=size)
    return TrainingImages(roots, records, counts, mining, augment, {} if config.cache_images else None)


# --- losses ------------------------------------------------------------------------------
def image_loss(query: Tensor, positive: Tensor, negatives: Tensor, loss: str, margin: float) -> Tensor:
    """Image-level loss of unit descriptors: query (B, D), positive (B, D), negatives (B, N, D).

    ``sare_ind``: mean of ``softplus(d_p^2 - d_n^2)``; ``triplet``: mean of ``relu(d_p^2 - d_n^2 + margin)``.
    """
    d_pos = (query - positive).pow(2).sum(dim=-1)[:, None]
    d_neg = (query[:, None] - negatives).pow(2).sum(dim=-1)
    return F.softplus(d_pos - d_neg).mean() if loss == "sare_ind" else F.relu(d_pos - d_neg + margin).mean()


def region_similarities(query: Tensor, positives: Tensor, negatives: Tensor, hardest: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Similarities of the query to its positives' regions and to the hardest negative region.

    Args:
        query: (B, D) query descriptors.
        positives: (B, P, 9, D) whole image then eight regions of each positive.
        negatives: (B, N, 9, D) the same of the negatives.
        hardest: (B,) index into the N * 9 negative regions; None: the most similar here.

    Returns:
        logits (B, 9 P + 1) and the hardest index (B,).
    """
    positive = torch.einsum("bd,bprd->bpr", query, positives).flatten(1)
    negative = torch.einsum("bd,bnrd->bnr", query, negatives).flatten(1)
    if hardest is None:
        hardest = negative.argmax(dim=1)
    return torch.cat([positive, negative.gather(1, hardest[:, None])], dim=1), hardest


def soft_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of the student's similarities (B, M) to the teacher's softmax targets (B, M), at ``temperature``."""
    targets = torch.softmax(teacher.detach() / temperature, dim=1)
    return -(targets * torch.log_softmax(student / temperature, dim=1)).sum(dim=1).mean()


def _describe(model: NetVlad, images: Tensor) -> tuple[Tensor, Tensor]:
    """Global (n, D) and whole+region descriptors (n, 9, D) of a batch of images."""
    out = model(images, regions=True)
    return out.descriptor, torch.cat([out.descriptor[:, None], out.regions], dim=1)


def sfrs_loss(
    model: NetVlad, teacher: NetVlad | None, batch: dict[str, Tensor], config: SfrsTrainConfig, generation: int
) -> tuple[Tensor, dict[str, float]]:
    """The loss of a batch: ``query`` (B, 3, H, W), ``positives`` (B, P, 3, H, W), ``negatives`` (B, N, 3, H, W).

    Generation 0 (or no teacher): the image-level loss on the first positive. Later: plus
    ``soft_weight`` times the soft region loss against the teacher's similarities.
    """
    query, positives, negatives = batch["query"], batch["positives"], batch["negatives"]
    b, p, n = query.shape[0], positives.shape[1], negatives.shape[1]
    images = torch.cat([query, positives.flatten(0, 1), negatives.flatten(0, 1)])
    use_soft = teacher is not None and generation > 0 and config.soft_weight > 0
    if use_soft:
        global_desc, all_desc = _describe(model, images)
    else:
        global_desc, all_desc = model(images).descriptor, None
    q = global_desc[:b]
    pos = global_desc[b : b + b * p].view(b, p, -1)
    neg = global_desc[b + b * p :].view(b, n, -1)
    hard = image_loss(q, pos[:, 0], neg, config.loss, config.margin)
    terms = {"image": float(hard.detach())}
    total = hard
    if use_soft:
        with torch.no_grad():
            t_global, t_all = _describe(teacher, images)
            t_logits, hardest = region_similarities(
                t_global[:b], t_all[b : b + b * p].view(b, p, 9, -1), t_all[b + b * p :].view(b, n, 9, -1)
            )
        s_logits, _ = region_similarities(q, all_desc[b : b + b * p].view(b, p, 9, -1), all_desc[b + b * p :].view(b, n, 9, -1), hardest)
        soft = soft_loss(s_logits, t_logits, config.temperature(generation))
        terms["soft"] = float(soft.detach())
        total = total + config.soft_weight * soft
    terms["total"] = float(total.detach())
    return total, terms


def training_step(
    model: NetVlad,
    teacher: NetVlad | None,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    config: SfrsTrainConfig,
    generation: int,
) -> dict[str, float]:
    """One optimizer step on a batch (see :func:`sfrs_loss`); returns the loss terms."""
    optimizer.zero_grad(set_to_none=True)
    loss, terms = sfrs_loss(model, teacher, batch, config, generation)
    if not torch.isfinite(loss):
        raise SeglocError(f"the SFRS loss is not finite ({terms}); lower the learning rate")
    loss.backward()
    optimizer.step()
    return terms


# --- the run -----------------------------------------------------------------------------
def set_training_mode(model: NetVlad) -> NetVlad:
    """Training mode with the backbone's BatchNorm statistics frozen."""
    model.train()
    for module in model.encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    return model


@torch.no_grad()
def describe_places(model: NetVlad, images: TrainingImages, device: torch.device, progress: bool = False) -> list[Tensor]:
    """Global descriptors (I_p, D) of every image of every place (eval mode; restores the mode after)."""
    was_training = model.training
    model.eval()
    out = []
    for place, records in enumerate(images.records):
        chunks = []
        for start in tqdm(range(0, len(records), SCAN_BATCH_SIZE), desc="describe", disable=not progress, leave=False):
            ids = range(start, min(start + SCAN_BATCH_SIZE, len(records)))
            chunks.append(model(images.batch(place, ids).to(device)).descriptor.cpu())
        out.append(torch.cat(chunks))
    if was_training:
        set_training_mode(model)
    return out


def training_recall(images: TrainingImages, descriptors: Sequence[Tensor]) -> float | None:
    """Recall@1 of the places' query images against their mapping images (a hit: within the positive thresholds)."""
    hits = total = 0
    for place, desc in enumerate(descriptors):
        m = images.num_mapping[place]
        if len(desc) == m:
            continue
        centers, axes = camera_centers_and_axes(images.records[place])
        queries = np.arange(m, len(desc))
        positives, _ = pose_candidates(centers, queries, images.mining[place], axes)
        best = (desc[m:] @ desc[:m].T).argmax(dim=1).numpy()
        hits += int(positives[np.arange(len(queries)), best].sum())
        total += len(queries)
    return hits / total if total else None


def initialise_netvlad(model: NetVlad, images: TrainingImages, config: SfrsTrainConfig, device: torch.device) -> None:
    """NetVLAD centroids and alpha from k-means of backbone features of random mapping images."""
    rng = np.random.default_rng([config.seed, 7])
    generator = torch.Generator().manual_seed(config.seed)
    features = []
    per_place = max(1, config.kmeans_images // len(images.roots))
    model.eval()
    with torch.no_grad():
        for place, count in enumerate(images.num_mapping):
            chosen = rng.choice(count, size=min(per_place, count), replace=False)
            for start in range(0, len(chosen), SCAN_BATCH_SIZE):
                feature_map = model.features(images.batch(place, chosen[start : start + SCAN_BATCH_SIZE]).to(device)).cpu()
                features.append(sample_features(feature_map, config.kmeans_features_per_image, generator))
    model.initialise_clusters(torch.cat(features), config.kmeans_iterations, config.seed)


def collate_samples(
    images: TrainingImages, place: int, samples: Sequence[RetrievalSample], num_positives: int, augment: bool, rng: np.random.Generator
) -> dict[str, Tensor]:
    """A batch of samples of one place: positives padded by repeating the last one; queries photometrically augmented."""

    def query_image(index: int) -> np.ndarray:
        image = images.image(place, index)
        return photometric_augment(image, images.augment, rng) if augment else image

    query = np.stack([query_image(s.query).transpose(2, 0, 1) for s in samples])
    positives = [[s.positives[min(i, len(s.positives) - 1)] for i in range(num_positives)] for s in samples]
    return {
        "query": torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)),
        "positives": torch.stack([images.batch(place, ids) for ids in positives]),
        "negatives": torch.stack([images.batch(place, s.negatives) for s in samples]),
    }


def train_sfrs(
    dataset_dirs: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    config: SfrsTrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train NetVLAD with SFRS on the posed images of ``dataset_dirs`` (module documentation).

    Returns:
        The checkpoint of the last generation reached (``RUN/generation_G/checkpoint``), or
        ``RUN/checkpoint`` when the time budget stopped a generation early.

    Raises:
        SeglocError: bad datasets or config, nothing to resume, a resume state that does not fit.
    """
    start_time = time.perf_counter()
    dataset_dirs = [Path(dataset_dirs)] if isinstance(dataset_dirs, (str, Path)) else [Path(d) for d in dataset_dirs]
    output_dir = Path(output_dir)
    if not dataset_dirs:
        raise SeglocError("train_sfrs: no dataset folder given")
    if config is None:
        config = load_sfrs_config(output_dir / CONFIG_FILE) if resume and (output_dir / CONFIG_FILE).is_file() else SfrsTrainConfig()
    state = open_run(output_dir, TRAINER_NAME, "an SFRS one", config.seed, resume)
    if resume:
        saved = load_sfrs_config(output_dir / CONFIG_FILE)
        if config_to_dict(saved.network) != config_to_dict(config.network):
            raise SeglocError(f"cannot resume {output_dir}: its network config differs; resume with --config {output_dir / CONFIG_FILE}")
        if state.epochs_done >= config.epochs:
            logger.info("%s already trained %d of %d epochs; nothing to do", output_dir, state.epochs_done, config.epochs)
            return generation_dir(output_dir, config.generations - 1) / CHECKPOINT_DIR
    device = training_device(config.device)
    with torch_threads(config.threads):
        return _train(dataset_dirs, output_dir, config, state, resume, device, progress, on_epoch, start_time)


def _train(
    dataset_dirs: list[Path],
    output_dir: Path,
    config: SfrsTrainConfig,
    state: TrainingState,
    resume: bool,
    device: torch.device,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    start_time: float,
) -> Path:
    images = load_training_images(dataset_dirs, config)
    config = dataclasses.replace(config, augment=images.augment)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_sfrs_config(output_dir / CONFIG_FILE, config)
    logger.info("SFRS training config: %s", config_to_dict(config))
    torch.manual_seed(config.seed)
    checkpoint_dir = output_dir / CHECKPOINT_DIR
    history = LossHistory()
    if resume:
        info = read_checkpoint_info(checkpoint_dir)
        if info.metadata.get("epoch") != state.epochs_done:
            raise SeglocError(f"cannot resume {output_dir}: the checkpoint and the resume state disagree (an interrupted save)")
        model = load_checkpoint(checkpoint_dir).to(device)
        model.set_trainable(config.network.trainable_blocks)
        history = read_loss_history(output_dir / LOSSES_FILE)
        history.truncate(state.epochs_done)
        logger.info("resuming %s after epoch %d", output_dir, state.epochs_done)
    else:
        model = NetVlad(config.network).to(device)
        initialise_netvlad(model, images, config, device)
    set_training_mode(model)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    if resume and state.epochs_done % config.epochs_per_generation:
        load_optimizer_state(output_dir, optimizer)  # mid-generation; a new generation starts a new optimizer
    teacher: NetVlad | None = None
    checkpoint = checkpoint_dir
    for epoch in range(state.epochs_done, config.epochs):
        generation = epoch // config.epochs_per_generation
        if epoch % config.epochs_per_generation == 0 and epoch > state.epochs_done:
            optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        if generation > 0 and teacher is None:
            teacher = load_checkpoint(generation_dir(output_dir, generation - 1) / CHECKPOINT_DIR).to(device).eval()
        epoch_start = time.perf_counter()
        rng = np.random.default_rng(epoch_seed(config.seed, epoch, 0))
        descriptors = describe_places(model, images, device, progress)
        recall = training_recall(images, descriptors)
        batches = []
        for place, desc in enumerate(descriptors):
            centers, axes = camera_centers_and_axes(images.records[place])
            mined = mine_retrieval_samples(
                centers,
                desc,
                images.mining[place],
                config.mining.num_positives,
                config.mining.num_negatives,
                config.mining.negative_pool,
                rng,
                axes,
            )
            mined = [mined[i] for i in rng.permutation(len(mined))]
            batches += [(place, mined[i : i + config.batch_size]) for i in range(0, len(mined), config.batch_size)]
        if not batches:
            raise SeglocError("no training query has both a positive and enough negatives; widen the mining radii or add images")
        batches = [batches[i] for i in rng.permutation(len(batches))]
        num_steps = len(batches) if config.steps_per_epoch is None else min(len(batches), config.steps_per_epoch)
        num_positives = 1 if generation == 0 else config.mining.num_positives
        records: list[dict[str, float]] = []
        stopped = ""
        bar = tqdm(total=num_steps, desc=f"generation {generation} epoch {epoch + 1}/{config.epochs}", disable=not progress)
        for step in range(num_steps):
            place, chosen = batches[step]
            batch = collate_samples(images, place, chosen, num_positives, True, rng)
            terms = training_step(model, teacher, optimizer, {k: v.to(device) for k, v in batch.items()}, config, generation)
            records.append({"epoch": epoch, "step": state.steps_done, "generation": generation, **terms})
            state.steps_done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{terms['total']:.3f}")
            if config.time_budget_s is not None and time.perf_counter() - start_time > config.time_budget_s:
                stopped = "time_budget"
                break
        bar.close()
        seconds = time.perf_counter() - epoch_start
        state.epochs_done, state.train_seconds = epoch + 1, state.train_seconds + seconds
        means = {key: float(np.mean([r[key] for r in records if key in r])) for key in ("total", "image", "soft") if key in records[0]}
        summary = {"epoch": epoch, "generation": generation, "steps": len(records), "seconds": seconds, **means}
        if recall is not None:
            summary["recall_at_1"] = recall  # of the network at the start of this epoch
        history.steps.extend(records)
        history.epochs.append(summary)
        write_loss_history(output_dir / LOSSES_FILE, history)
        plot_loss_curves(
            output_dir / LOSS_CURVES_FILE, history, title=f"SFRS training: {len(images.roots)} place(s)", terms=SFRS_LOSS_TERMS
        )
        end_of_generation = (epoch + 1) % config.epochs_per_generation == 0
        state.stopped = stopped or ("completed" if epoch + 1 == config.epochs else "")
        metadata = {
            "trainer": TRAINER_NAME,
            "epoch": state.epochs_done,
            "generation": generation,
            "steps": state.steps_done,
            "image_size": list(images.augment.output_size),
            "datasets": [str(root) for root in images.roots],
            "losses": means,
            "train_seconds": state.train_seconds,
            "stopped": state.stopped,
            "config_file": CONFIG_FILE,
        }
        checkpoint = save_checkpoint(model, checkpoint_dir, metadata=metadata, overwrite=True)
        if end_of_generation:
            checkpoint = save_checkpoint(model, generation_dir(output_dir, generation) / CHECKPOINT_DIR, metadata=metadata, overwrite=True)
            teacher = None  # the next generation learns from this one
        save_training_state(output_dir, state, optimizer)
        if on_epoch is not None:
            on_epoch({**summary, "epoch": epoch + 1, "epochs": config.epochs, "stopped": stopped})
        else:
            logger.info("epoch %d/%d (generation %d): %s", epoch + 1, config.epochs, generation, means)
        if stopped:
            logger.info("time budget of %.0f s used up after epoch %d (resume with --resume)", config.time_budget_s, epoch + 1)
            break
    return checkpoint
