"""Privacy audit: how much of the mapping images an inversion attacker recovers from a map (``segloc audit``).

Threat model (the README's "Privacy audit"): the attacker holds the map file and nothing of the
place. It projects the map's 3D points into every mapping camera (the poses are in the map's
core) and rasterises a sparse image of what the map stores there (:func:`sparse_input`): the
method's attribute channels (:meth:`segloc.methods.registry.Method.attack_surface`: SIFT
descriptors, SegLoc labels, nothing for a map without per-point appearance), the inverse depth
and a validity mask. A U-Net (:class:`segloc.models.inversion.InversionUNet`) turns that into
RGB. It is trained on images of *other* places, where the attacker computes the same attributes
with what the map holds (its SIFT options, its embedded network) at keypoints with known depth
(synthetic scenes carry depth maps; for real places with known poses but no depth, such as the
Strecha scenes, the keypoints the map's own core build triangulates there, :func:`sfm_depth`),
and evaluated on the audited map's mapping images:
SSIM, PSNR, MAE and a perceptual distance per image and in total, in ``audit.json``, with a
contact sheet of originals next to reconstructions.

Training on the audited scene is refused (:func:`check_training_data`); the ``strong`` variant
also trains on the audited dataset's *query* images (never on the mapping images it is scored
on) and is labelled so in ``audit.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from segloc.config import check_options, config_to_dict, option
from segloc.data.dataset import Dataset, ImageRecord, load_image, read_dataset
from segloc.depth.completion import depth_path, measured_depth, sparse_depth
from segloc.errors import SeglocError
from segloc.fileio import atomic_write, check_output
from segloc.maps.build import CoreConfig, build_core, core_config_of
from segloc.maps.core import MapCore

logger = logging.getLogger("segloc")

__all__ = [
    "AUDIT_FORMAT",
    "AUDIT_PRESETS",
    "AUDIT_VERSION",
    "AuditConfig",
    "DEFAULT_TRAINING_SCENES",
    "check_training_data",
    "image_metrics",
    "map_sparse_inputs",
    "run_audit",
    "sparse_input",
    "ssim",
    "train_attacker",
]

AUDIT_FORMAT = "segloc-audit"
AUDIT_VERSION = 1
#: Synthetic scenes (scene, seed) the audit renders as the attacker's training places when none are given.
DEFAULT_TRAINING_SCENES: tuple[tuple[str, int], ...] = (("corridor", 1), ("street", 2), ("room", 5))


@dataclass
class AuditConfig:
    """Options of :func:`run_audit`.

    Attributes:
        max_edge: longer side of the attacker's images, pixels (the mapping images are resized).
        width, depth: the U-Net's (:class:`segloc.models.inversion.InversionUNetConfig`).
        steps: training steps (batches).
        batch_size: images per step.
        learning_rate: Adam's.
        perceptual_weight: weight of the perceptual term next to the MAE.
        time_budget_s: stop training after this many seconds (0: no limit).
        max_images: audit at most this many mapping images, evenly spread (0: all).
        strong: the stronger attacker, also trained on the audited dataset's query images.
        seed: sampling and initialisation.
    """

    max_edge: int = option(160, ge=32)
    width: int = option(16, ge=4)
    depth: int = option(3, ge=1, le=6)
    steps: int = option(400, ge=1)
    batch_size: int = option(4, ge=1)
    learning_rate: float = option(1e-3, gt=0)
    perceptual_weight: float = option(0.05, ge=0)
    time_budget_s: float = option(0.0, ge=0, note="0: no limit")
    max_images: int = option(0, ge=0, note="0: all")
    strong: bool = False
    seed: int = option(0, ge=0)

    def __post_init__(self) -> None:
        check_options(self)


#: Named settings: ``cpu`` runs in minutes on one core, ``full`` is closer to the published attack.
AUDIT_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"max_edge": 160, "width": 16, "steps": 400, "batch_size": 4, "time_budget_s": 360},
    "full": {"max_edge": 320, "width": 32, "depth": 4, "steps": 5000, "batch_size": 8},
}


# --- the attacker's input --------------------------------------------------------------------


def sparse_input(points2D: np.ndarray, depth: np.ndarray, attributes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Rasterise points into the attacker's sparse image.

    Args:
        points2D: (N, 2) pixels in the target image (COLMAP convention: the top-left pixel's
            centre is (0.5, 0.5), so a point lands in pixel ``floor(x), floor(y)``).
        depth: (N,) depth along the optical axis, metres (> 0).
        attributes: (N, C) float32 attributes.
        size: (width, height) of the sparse image.

    Returns:
        (C + 2, H, W) float32: the C attributes, the inverse depth ``1 / (1 + depth)`` and the
        mask (1 where a point landed); where several points share a pixel the nearest wins.
    """
    points2D = np.asarray(points2D, dtype=np.float64).reshape(-1, 2)
    depth = np.asarray(depth, dtype=np.float64).reshape(-1)
    attributes = np.asarray(attributes, dtype=np.float32)
    if len(depth) != len(points2D) or attributes.ndim != 2 or len(attributes) != len(points2D):
        raise SeglocError(f"sparse_input: {len(points2D)} points, {len(depth)} depths and attributes of shape {attributes.shape}")
    width, height = size
    channels = attributes.shape[1]
    image = np.zeros((channels + 2, height, width), np.float32)
    cols, rows = np.floor(points2D[:, 0]).astype(np.int64), np.floor(points2D[:, 1]).astype(np.int64)
    keep = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height) & (depth > 0) & np.isfinite(depth)
    order = np.argsort(-depth[keep], kind="stable")  # far first: the nearest point is written last and wins
    index = np.flatnonzero(keep)[order]
    rows, cols = rows[index], cols[index]
    image[:channels, rows, cols] = attributes[index].T
    image[channels, rows, cols] = (1.0 / (1.0 + depth[index])).astype(np.float32)
    image[channels + 1, rows, cols] = 1.0
    return image


@dataclass
class SparsePoints:
    """The points of one image before rasterisation: pixels at the attacker's size, depth, attributes."""

    points2D: np.ndarray
    depth: np.ndarray
    attributes: np.ndarray

    def rasterise(self, size: tuple[int, int], flip: bool = False) -> np.ndarray:
        points2D = self.points2D.copy()
        if flip:
            points2D[:, 0] = size[0] - points2D[:, 0]
        return sparse_input(points2D, self.depth, self.attributes, size)


def attack_size(camera_width: int, camera_height: int, max_edge: int) -> tuple[int, int]:
    """(width, height) of the attacker's images: the longer side ``max_edge`` (never upscaled)."""
    scale = min(1.0, max_edge / max(camera_width, camera_height))
    return max(8, round(camera_width * scale)), max(8, round(camera_height * scale))


def map_sparse_inputs(core: MapCore, observation_attributes: np.ndarray, max_edge: int) -> list[SparsePoints]:
    """The points each mapping camera sees, projected with its pose, with the attributes the map stores.

    Args:
        core: the map's core (mapping images with cameras and ``cam_from_world``, 3D points).
        observation_attributes: (M, C) attributes of the core observations.
        max_edge: longer side of the attacker's images.

    Returns:
        one :class:`SparsePoints` per core image, in the attacker's image size.
    """
    if len(observation_attributes) != core.num_observations:
        raise SeglocError(f"{len(observation_attributes)} observation attributes for {core.num_observations} core observations")
    order, offsets = core.observations_by_image()
    result = []
    for image_id, image in enumerate(core.images):
        observations = order[offsets[image_id] : offsets[image_id + 1]]
        camera = image.camera.scaled(*attack_size(image.camera.width, image.camera.height, max_edge))
        points3D = core.points3D[core.observation_point_ids[observations]]
        points2D, depth, visible = camera.world_to_image(image.cam_from_world, points3D)
        result.append(SparsePoints(points2D[visible], depth[visible], observation_attributes[observations][visible]))
    return result


# --- training data ---------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scene_identity(dataset_dir: Path) -> tuple[str, int] | None:
    path = dataset_dir / "scene.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        return str(info["scene"]), int(info["seed"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def check_training_data(audited: Dataset, mapping_names: list[str], training_dirs: list[Path], strong: bool) -> None:
    """Refuse training data that shows the audited scene.

    A training folder is the audited scene when it is the audited dataset folder, a synthetic
    scene with the same scene and seed, or holds a file identical to one of the audited mapping
    images. With ``strong`` the audited scene is allowed (its mapping images never are: they are
    left out of training wherever they appear).

    Raises:
        SeglocError: a training folder shows the audited scene and ``strong`` is False.
    """
    if strong:
        return
    audited_root = Path(audited.root).resolve()
    audited_scene = _scene_identity(audited_root)
    audited_hashes = {_sha256(audited.image_path(name)) for name in mapping_names}
    advice = "the attacker must learn on other places; pass --strong for the stronger attacker that also trains on the audited scene"
    for folder in training_dirs:
        folder_resolved = Path(folder).resolve()
        if folder_resolved == audited_root:
            raise SeglocError(f"training data {folder} is the audited dataset: {advice}")
        scene = _scene_identity(folder_resolved)
        if scene is not None and scene == audited_scene:
            raise SeglocError(f"training data {folder} renders the audited scene ({scene[0]}, seed {scene[1]}): {advice}")
        for path in sorted((folder_resolved / "images").rglob("*")):
            if path.is_file() and _sha256(path) in audited_hashes:
                raise SeglocError(f"training data {folder} holds {path.name}, an image of the audited map: {advice}")


#: A keypoint of a training image takes the depth of a triangulated observation this close (pixels, full size).
SFM_DEPTH_TOLERANCE_PX = 0.5


def sfm_depth(
    dataset: Dataset, records: list[ImageRecord], core_config: CoreConfig, progress: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Sparse depth of images without depth maps: the SfM points their known poses triangulate.

    The images are triangulated together exactly as a map's core is built
    (:func:`segloc.maps.build.build_core`, with the audited map's core options), so the
    attacker's training points on a real place are the points a map of that place would hold.

    Args:
        dataset: the place (a dataset folder; ``records`` need not be its mapping images).
        records: the images, with their poses (at least 2).
        core_config: the core options (the audited map's, :func:`segloc.maps.build.core_config_of`).

    Returns:
        image name -> (points2D (N, 2) observation pixels, depth (N,) metres) of its triangulated points.

    Raises:
        SeglocError: fewer than 2 images, or no point could be triangulated.
    """
    if len(records) < 2:
        raise SeglocError(
            f"{dataset.root}: {len(records)} image(s) without a depth map; the attacker triangulates such a place from its "
            "known poses and needs at least 2 images (or depth maps in depth/, as `segloc synth` writes)"
        )
    logger.info("%s: no depth maps; triangulating its %d images with their known poses for the attacker", dataset.root, len(records))
    try:
        build = build_core(Dataset(dataset.root, list(records), []), core_config, progress=progress)
    except SeglocError as error:
        raise SeglocError(f"{dataset.root} has no depth maps and cannot be triangulated for the attacker: {error}") from error
    if build.core.num_points == 0:
        raise SeglocError(f"{dataset.root}: no point triangulated from its {len(records)} images; it cannot train the attacker")
    return {image.name: sparse_depth(build.core, image_id) for image_id, image in enumerate(build.core.images)}


def keypoint_depth(keypoints: np.ndarray, points2D: np.ndarray, depth: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Depth of each keypoint from the sparse point at its position.

    Args:
        keypoints: (K, 2) pixels.
        points2D, depth: (N, 2) pixels and (N,) depths of the sparse points.
        tolerance_px: the largest distance between a keypoint and its sparse point.

    Returns:
        (K,) depth in metres, 0 where no sparse point lies within ``tolerance_px``.
    """
    from scipy.spatial import cKDTree

    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    result = np.zeros(len(keypoints))
    if len(depth) == 0 or len(keypoints) == 0:
        return result
    distance, nearest = cKDTree(np.asarray(points2D, dtype=np.float64).reshape(-1, 2)).query(keypoints, distance_upper_bound=tolerance_px)
    found = np.isfinite(distance)
    result[found] = np.asarray(depth, dtype=np.float64)[nearest[found]]
    return result


@dataclass
class TrainingImage:
    """One training pair: the attacker's sparse points and the RGB target (3, H, W) float32 in [0, 1].

    ``triangulated``: the points' depth comes from SfM (:func:`sfm_depth`), not a depth map.
    """

    points: SparsePoints
    rgb: np.ndarray
    source: str
    triangulated: bool = False


def _resized_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


def training_images(
    surface: Any,
    datasets: list[Dataset],
    records: list[list[ImageRecord]],
    excluded_hashes: set[str],
    max_edge: int,
    points_per_image: int,
    seed: int,
    progress: bool = True,
    core_config: CoreConfig | None = None,
) -> list[TrainingImage]:
    """Training pairs from images of other places: keypoints with the map's attributes and their depth.

    The depth of a keypoint is the depth map's (``depth/NAME``, as ``segloc synth`` writes) or,
    for the images of a place that has none, that of the SfM point triangulated at it
    (:func:`sfm_depth` over those images; keypoints that are not triangulated are left out, as a
    map leaves them out).

    Args:
        surface: the map's :class:`segloc.methods.registry.AttackSurface`.
        datasets, records: for each training dataset, the images to use.
        excluded_hashes: SHA-256 of images never to train on (the audited mapping images).
        max_edge: the attacker's image size.
        points_per_image: keep at most this many keypoints (the audited map's density).
        seed: the keypoint subsampling.
        core_config: the core options to triangulate images without depth maps with (the
            audited map's); None: such an image is an error.

    Raises:
        SeglocError: an image has no depth map and ``core_config`` is None, or its place cannot
            be triangulated.
    """
    rng = np.random.default_rng(seed)
    result = []
    usable = [[r for r in rs if _sha256(d.image_path(r.name)) not in excluded_hashes] for d, rs in zip(datasets, records)]
    sparse: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
    for dataset, dataset_records in zip(datasets, usable):
        without = [r for r in dataset_records if not depth_path(dataset, r.name).is_file()]
        if without and core_config is None:
            raise SeglocError(
                f"{dataset.root}: {without[0].name} has no depth map (depth/{without[0].name}); the attacker's training places need "
                "depth maps, as the synthetic scenes of `segloc synth` carry, or the map's core options to triangulate them"
            )
        sparse.append(sfm_depth(dataset, without, core_config, progress) if without else {})
    with tqdm(total=sum(len(r) for r in usable), desc="attacker training inputs", unit="image", disable=not progress) as bar:
        for dataset, dataset_records, dataset_sparse in zip(datasets, usable, sparse):
            for record in dataset_records:
                bar.update(1)
                image = load_image(dataset.image_path(record.name))
                keypoints, attributes = surface.features(image)
                height, width = image.shape[:2]
                if record.name in dataset_sparse:
                    depth = keypoint_depth(keypoints, *dataset_sparse[record.name], SFM_DEPTH_TOLERANCE_PX)
                else:
                    depth_map = measured_depth(dataset, record.name)
                    cols = np.clip(np.floor(keypoints[:, 0]).astype(np.int64), 0, width - 1)
                    rows = np.clip(np.floor(keypoints[:, 1]).astype(np.int64), 0, height - 1)
                    depth = depth_map[rows, cols]
                valid = np.flatnonzero(depth > 0)
                if len(valid) > points_per_image:
                    valid = np.sort(rng.choice(valid, points_per_image, replace=False))
                size = attack_size(width, height, max_edge)
                scale = np.array([size[0] / width, size[1] / height])
                points = SparsePoints(keypoints[valid] * scale, depth[valid], attributes[valid])
                source = f"{dataset.root}:{record.name}"
                result.append(TrainingImage(points, _resized_rgb(image, size), source, record.name in dataset_sparse))
    if not result:
        raise SeglocError("no training images for the attacker (all were excluded or none were given)")
    return result


# --- metrics ---------------------------------------------------------------------------------


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of RGB images in [0, 1].

    Args:
        prediction, target: (B, 3, H, W).

    Returns:
        (B,) SSIM averaged over channels and valid window positions.
    """
    c1, c2 = 0.01**2, 0.03**2
    channels = prediction.shape[1]
    window = _gaussian_window().to(prediction)[None, None].repeat(channels, 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    mu_x, mu_y = blur(prediction), blur(target)
    sigma_x = blur(prediction * prediction) - mu_x**2
    sigma_y = blur(target * target) - mu_y**2
    sigma_xy = blur(prediction * target) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return value.mean(dim=(1, 2, 3))


def image_metrics(prediction: torch.Tensor, target: torch.Tensor, perceptual: Any) -> list[dict[str, float]]:
    """SSIM, PSNR (dB), MAE and perceptual distance of each image of (B, 3, H, W) batches in [0, 1]."""
    with torch.no_grad():
        mse = (prediction - target).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
        values = {
            "ssim": ssim(prediction, target),
            "psnr": 10 * torch.log10(1.0 / mse),
            "mae": (prediction - target).abs().mean(dim=(1, 2, 3)),
            "perceptual": perceptual.distance(prediction, target),
        }
    return [{key: float(v[i]) for key, v in values.items()} for i in range(prediction.shape[0])]


# --- training --------------------------------------------------------------------------------


def _batch(images: list[TrainingImage], indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = [], []
    for i in indices:
        item = images[i]
        size = (item.rgb.shape[2], item.rgb.shape[1])
        flip = bool(rng.integers(2))
        inputs.append(item.points.rasterise(size, flip))
        targets.append(item.rgb[:, :, ::-1] if flip else item.rgb)
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.ascontiguousarray(np.stack(targets)))


def train_attacker(
    images: list[TrainingImage],
    num_channels: int,
    config: AuditConfig,
    perceptual: Any,
    progress: bool = True,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the inversion U-Net on ``images`` with MAE + ``perceptual_weight`` x perceptual loss.

    Returns:
        the network (eval mode) and a summary: steps, seconds, stopped_by (``steps`` or
        ``time_budget``), first and final loss (mean of the last 20 steps).
    """
    from segloc.models.inversion import InversionUNet, InversionUNetConfig

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = InversionUNet(InversionUNetConfig(in_channels=num_channels + 2, width=config.width, depth=config.depth))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    stopped_by = "steps"
    batch_size = min(config.batch_size, len(images))
    with tqdm(range(config.steps), desc="train attacker", unit="step", disable=not progress) as bar:
        for _ in bar:
            if config.time_budget_s and time.perf_counter() - start > config.time_budget_s:
                stopped_by = "time_budget"
                break
            sparse, target = _batch(images, rng.choice(len(images), batch_size, replace=False), rng)
            prediction = model(sparse)
            loss = F.l1_loss(prediction, target)
            if config.perceptual_weight > 0:
                loss = loss + config.perceptual_weight * perceptual.loss(prediction, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    model.eval()
    summary = {
        "steps": len(losses),
        "seconds": round(time.perf_counter() - start, 1),
        "stopped_by": stopped_by,
        "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
    }
    return model, summary


# --- the audit -------------------------------------------------------------------------------


def _contact_sheet(
    path: Path, names: list[str], originals: list[np.ndarray], reconstructions: list[np.ndarray], scores: list[float]
) -> None:
    """PNG: one row per audited image, original | reconstruction, with its SSIM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(names)
    figure, axes = plt.subplots(rows, 2, figsize=(6, 2.2 * rows), squeeze=False)
    for row, (name, original, reconstruction, score) in enumerate(zip(names, originals, reconstructions, scores)):
        for column, (image, title) in enumerate(((original, name), (reconstruction, f"reconstruction, SSIM {score:.2f}"))):
            axes[row, column].imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
            axes[row, column].set_title(title, fontsize=8)
            axes[row, column].axis("off")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)


def _mean(per_image: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([row[key] for row in per_image]))


def run_audit(
    map_path: str | Path,
    dataset_dir: str | Path,
    output: str | Path,
    config: AuditConfig | None = None,
    training_dirs: list[str | Path] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit a map against an inversion attacker (see the module docstring); writes ``output``/audit.json.

    Args:
        map_path: the map package.
        dataset_dir: the dataset folder the map was built from (its mapping images are the
            attacker's targets; never its training data).
        output: the report folder (``audit.json``, ``contact_sheet.png``, ``attacker/``, and
            ``training_scenes/`` when the default training places are rendered there).
        config: options.
        training_dirs: dataset folders of other places (with depth maps, or posed images that are
            triangulated with the map's core options, :func:`sfm_depth`); None renders
            :data:`DEFAULT_TRAINING_SCENES` (those that are not the audited scene) into
            ``output``/training_scenes.
        progress: progress bars.

    Returns:
        the content of ``audit.json``.
    """
    from segloc.maps.core import read_core
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method
    from segloc.models.checkpoint import save_checkpoint
    from segloc.models.inversion import PerceptualFeatures

    config = config or AuditConfig()
    output = Path(output)
    explicit = [Path(p) for p in training_dirs or []]
    inputs = [(map_path, "the map"), (dataset_dir, "the dataset folder"), *[(p, "training data") for p in explicit]]
    check_output(output, "folder", inputs=inputs, what="audit folder")
    package = MapPackage.open(map_path)
    method = get_method(package.method)
    core = read_core(package)
    audited = read_dataset(dataset_dir)
    mapping_names = [image.name for image in core.images]
    missing = [name for name in mapping_names if not audited.image_path(name).is_file()]
    if missing:
        raise SeglocError(f"{dataset_dir} lacks {len(missing)} mapping image(s) of the map (first: {missing[0]}); pass the map's dataset")
    check_training_data(audited, mapping_names, explicit, config.strong)
    surface = method.attack_surface(package)
    logger.info("audit of %s (method %s): the attacker gets %s", map_path, package.method, surface.description)

    # Targets: the map's own mapping images.
    targets = map_sparse_inputs(core, surface.observation_attributes, config.max_edge)
    image_ids = np.arange(len(core.images))
    if config.max_images and config.max_images < len(image_ids):
        image_ids = np.unique(np.linspace(0, len(image_ids) - 1, config.max_images).round().astype(int))
    points_per_image = max(1, int(np.mean([len(targets[i].depth) for i in range(len(targets))])))

    # Training places.
    if training_dirs is None:
        training_dirs = _default_training_scenes(output, audited, core, progress)
    datasets = [read_dataset(p) for p in training_dirs]
    records = [d.mapping + d.query for d in datasets]
    if config.strong:
        datasets.append(audited)
        records.append(list(audited.query))
    excluded = {_sha256(audited.image_path(name)) for name in mapping_names}
    training = training_images(
        surface, datasets, records, excluded, config.max_edge, points_per_image, config.seed, progress, core_config_of(package)
    )
    perceptual = PerceptualFeatures()
    model, training_summary = train_attacker(training, surface.num_channels, config, perceptual, progress)
    save_checkpoint(model, output / "attacker", {"map": str(map_path), "strong": config.strong}, overwrite=True)

    per_image, originals, reconstructions = [], [], []
    for image_id in tqdm(image_ids, desc="reconstruct", unit="image", disable=not progress):
        record = core.images[image_id]
        image = load_image(audited.image_path(record.name))
        size = attack_size(image.shape[1], image.shape[0], config.max_edge)
        target = torch.from_numpy(_resized_rgb(image, size))[None]
        with torch.no_grad():
            reconstruction = model(torch.from_numpy(targets[image_id].rasterise(size))[None])
        metrics = image_metrics(reconstruction, target, perceptual)[0]
        per_image.append({"name": record.name, "points": len(targets[image_id].depth), **metrics})
        originals.append(target[0].numpy())
        reconstructions.append(reconstruction[0].numpy())
    report = {
        "format": AUDIT_FORMAT,
        "version": AUDIT_VERSION,
        "map": str(map_path),
        "method": package.method,
        "dataset": str(dataset_dir),
        "variant": "strong" if config.strong else "standard",
        "variant_note": (
            "attacker also trained on the audited dataset's query images (never on the scored mapping images)"
            if config.strong
            else "attacker trained on other places only"
        ),
        "attack_surface": {"description": surface.description, "channels": surface.num_channels},
        "image_size": list(attack_size(core.images[0].camera.width, core.images[0].camera.height, config.max_edge)),
        "perceptual_features": "ImageNet EfficientNet-Lite0 (strides 4 and 8); VGG16 weights are unavailable",
        "config": config_to_dict(config),
        "training": {
            "datasets": [str(p) for p in training_dirs],
            "images": len(training),
            "triangulated_images": sum(item.triangulated for item in training),
            **training_summary,
        },
        "per_image": per_image,
        "total": {key: _mean(per_image, key) for key in ("ssim", "psnr", "mae", "perceptual")} | {"images": len(per_image)},
    }
    sheet = list(range(0, len(per_image), max(1, len(per_image) // 6)))[:6]
    _contact_sheet(
        output / "contact_sheet.png",
        [per_image[i]["name"] for i in sheet],
        [originals[i] for i in sheet],
        [reconstructions[i] for i in sheet],
        [per_image[i]["ssim"] for i in sheet],
    )
    atomic_write(output / "audit.json", lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n"))
    return report


def _default_training_scenes(output: Path, audited: Dataset, core: MapCore, progress: bool) -> list[Path]:
    """Render :data:`DEFAULT_TRAINING_SCENES` (all but the audited one) at the audited images' size; reuses earlier renders."""
    from segloc.data.dataset import is_dataset_folder
    from segloc.data.synthetic import generate_scene, synth_config

    audited_scene = _scene_identity(Path(audited.root).resolve())
    camera = core.images[0].camera
    folders = []
    for scene, seed in DEFAULT_TRAINING_SCENES:
        if (scene, seed) == audited_scene:
            continue
        folder = output / "training_scenes" / f"{scene}_{seed}"
        if not is_dataset_folder(folder):
            generate_scene(
                synth_config(scene, seed=seed, width=camera.width, height=camera.height, num_mapping=40, num_query=0),
                folder,
                progress=progress,
            )
        folders.append(folder)
    return folders
