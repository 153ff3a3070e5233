"""Anchor / positive / negative mining for SegLoc's metric-learning loss on global descriptors.

Every mapping image is an anchor. Its candidates are chosen from the camera poses; among them
the hardest ones are chosen from the current global descriptors (which the trainer recomputes
every epoch and passes in):

- positives: other images whose camera centre is within ``positive_radius_m`` of the
  anchor's (and, optionally, whose optical axis is within ``max_positive_angle_deg`` of the
  anchor's); the hard positive is the *least* similar of them (cosine similarity);
- negatives: images whose camera centre is farther than ``negative_radius_m`` (>
  ``positive_radius_m``), plus, optionally, images looking the other way (optical axes more
  than ``min_negative_angle_deg`` apart) at any distance; the hard negative is the *most*
  similar of them.

Images between the two radii are neither. Anchors without any positive or negative are
skipped and counted in the log. With ``num_hard_candidates = k > 1`` the positive (negative)
is drawn at random among the k hardest, which softens pure hard mining.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.spatial.distance import cdist, pdist

from segloc.data.dataset import ImageRecord
from segloc.errors import SeglocError
from segloc.maps.scale import image_spacing

logger = logging.getLogger("segloc")


@dataclass
class MiningConfig:
    """Options of :func:`mine_triplets`.

    Attributes:
        positive_radius_m: positives have their camera centre within this distance of the
            anchor's (metres). NetVLAD-style outdoor values are 10 / 25 m; indoors a few metres.
            None: derived from the place (:meth:`resolve`).
        negative_radius_m: negatives are farther than this (metres); must exceed
            ``positive_radius_m``. None: derived from the place.
        max_positive_angle_deg: positives' optical axes differ from the anchor's by at most
            this (degrees); None: no limit.
        min_negative_angle_deg: images whose optical axes differ from the anchor's by more
            than this are negatives at any distance (degrees); None: distance only.
        num_hard_candidates: draw the positive (negative) at random among this many hardest.
        chunk_size: anchors processed at once (bounds memory to chunk_size x N similarities).
        positive_spacings, negative_spacings: a derived radius in median image spacings
            (:func:`segloc.maps.scale.image_spacing`), capped (:meth:`resolve`).
    """

    positive_radius_m: float | None = 10.0
    negative_radius_m: float | None = 25.0
    max_positive_angle_deg: float | None = None
    min_negative_angle_deg: float | None = None
    num_hard_candidates: int = 1
    chunk_size: int = 1024
    positive_spacings: float = 6.0
    negative_spacings: float = 25.0

    def __post_init__(self) -> None:
        for name in ("positive_radius_m", "negative_radius_m"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SeglocError(f"{name} must be positive metres or null (derived from the place), got {value}")
        if (
            self.positive_radius_m is not None
            and self.negative_radius_m is not None
            and not self.negative_radius_m > self.positive_radius_m
        ):
            raise SeglocError(
                f"negative_radius_m ({self.negative_radius_m}) must be larger than positive_radius_m ({self.positive_radius_m}): "
                "images between the two radii are neither positives nor negatives"
            )
        for name in ("max_positive_angle_deg", "min_negative_angle_deg"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 180:
                raise SeglocError(f"{name} must be in (0, 180] degrees or null, got {value}")
        if self.num_hard_candidates < 1 or self.chunk_size < 1:
            raise SeglocError(
                f"num_hard_candidates and chunk_size must be at least 1, got {self.num_hard_candidates} and {self.chunk_size}"
            )
        if not (self.positive_spacings > 0 and self.negative_spacings > 0):
            raise SeglocError(
                f"positive_spacings and negative_spacings must be positive, got {self.positive_spacings}, {self.negative_spacings}"
            )

    @property
    def resolved(self) -> bool:
        """Both radii are metres (nothing left to derive)."""
        return self.positive_radius_m is not None and self.negative_radius_m is not None

    def resolve(self, centers: np.ndarray) -> MiningConfig:
        """This config with null radii derived from a place whose mapping camera centres are (N, 3).

        A null radius is ``positive_spacings`` (``negative_spacings``) times the median image
        spacing, capped so that sparse mapping images still give negatives: the negative
        radius at the median distance between two mapping images, the positive one at half the
        negative one. Radii set in metres are kept.

        Raises:
            SeglocError: the radii, derived or set, leave no gap (negative <= positive).
        """
        if self.resolved:
            return self
        centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
        spacing = image_spacing(centers) or 1.0
        typical = float(np.median(pdist(centers))) if len(centers) > 1 else 1.0
        negative = self.negative_radius_m or min(self.negative_spacings * spacing, typical)
        positive = self.positive_radius_m or min(self.positive_spacings * spacing, 0.5 * negative)
        if not negative > positive:
            raise SeglocError(f"mining: negative_radius_m ({negative:.3g} m) must exceed positive_radius_m ({positive:.3g} m)")
        return dataclasses.replace(self, positive_radius_m=positive, negative_radius_m=negative)


class Triplet(NamedTuple):
    """Image indices of one metric-learning sample (indices into the arrays given to the miner)."""

    anchor: int
    positive: int
    negative: int


def camera_centers_and_axes(images: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """World camera centres (N, 3) and unit optical axes (N, 3) (camera +z in the world) of ``images``."""
    if not images:
        return np.zeros((0, 3)), np.zeros((0, 3))
    centers = np.stack([image.cam_from_world.center for image in images])
    axes = np.stack([image.cam_from_world.rotation[2] for image in images])  # row 2 of R = camera z in world
    return centers, axes


def _as_numpy(descriptors) -> np.ndarray:
    if hasattr(descriptors, "detach"):  # torch tensor
        descriptors = descriptors.detach().to("cpu").float().numpy()
    return np.asarray(descriptors, dtype=np.float32)


def _pick(scores: np.ndarray, allowed: np.ndarray, hardest_first: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """Per row of ``scores`` (n, N), the column among ``allowed`` with the hardest score
    (``hardest_first = +1``: largest, ``-1``: smallest), or one of the k hardest at random; -1
    where a row allows nothing."""
    keyed = np.where(allowed, hardest_first * scores, -np.inf)
    available = allowed.sum(axis=1)
    if k == 1:
        choice = np.argmax(keyed, axis=1)
    else:
        k = min(k, keyed.shape[1])
        top = np.argpartition(-keyed, k - 1, axis=1)[:, :k]  # the k hardest, unordered
        top_keys = np.take_along_axis(keyed, top, axis=1)
        order = np.argsort(-top_keys, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)  # hardest first
        draws = np.floor(rng.random(len(scores)) * np.minimum(available, k)).astype(np.int64)
        choice = top[np.arange(len(scores)), np.minimum(draws, k - 1)]
    return np.where(available > 0, choice, -1)


def pose_candidates(
    centers: np.ndarray, anchors: np.ndarray, config: MiningConfig, optical_axes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which images may be positives and negatives of each anchor, from the camera poses alone.

    Args:
        centers: (N, 3) camera centres in the world frame (metres).
        anchors: (A,) indices of the anchor images.
        config: the radii and angle limits; null radii are derived from ``centers``
            (:meth:`MiningConfig.resolve`).
        optical_axes: (N, 3) unit optical axes; needed when ``config`` sets an angle limit.

    Returns:
        positives (A, N) and negatives (A, N) boolean masks (an anchor is neither of its own).
    """
    config = config.resolve(centers)
    distances = cdist(centers[anchors], centers)
    positives = distances <= config.positive_radius_m
    positives[np.arange(len(anchors)), anchors] = False
    negatives = distances > config.negative_radius_m
    if config.max_positive_angle_deg is not None or config.min_negative_angle_deg is not None:
        if optical_axes is None:
            raise SeglocError("an angle limit is set in the mining config: pass optical_axes (N, 3)")
        angles = np.degrees(np.arccos(np.clip(optical_axes[anchors] @ optical_axes.T, -1.0, 1.0)))
        if config.max_positive_angle_deg is not None:
            positives &= angles <= config.max_positive_angle_deg
        if config.min_negative_angle_deg is not None:
            negatives |= angles > config.min_negative_angle_deg
            negatives[np.arange(len(anchors)), anchors] = False
    return positives, negatives


def mine_triplets(
    centers: np.ndarray,
    global_descriptors,
    config: MiningConfig | None = None,
    rng: np.random.Generator | None = None,
    optical_axes: np.ndarray | None = None,
) -> list[Triplet]:
    """Hard positive and hard negative of every anchor image (see the module documentation).

    Args:
        centers: (N, 3) camera centres in the world frame (``world_from_cam`` translations),
            metres; :func:`camera_centers_and_axes` gives them for image records.
        global_descriptors: (N, D) numpy array or torch tensor of the images' global
            descriptors (L2-normalised here; cosine similarity).
        config: mining options; null radii are derived from ``centers`` (:meth:`MiningConfig.resolve`).
        rng: random generator, used when ``num_hard_candidates > 1``.
        optical_axes: (N, 3) unit optical axes in the world frame; required when an angle
            limit is set.

    Returns:
        One :class:`Triplet` per anchor that has both a positive and a negative, by anchor index.
    """
    config = config or MiningConfig()
    rng = rng if rng is not None else np.random.default_rng(0)
    centers = np.asarray(centers, dtype=np.float64)
    descriptors = _as_numpy(global_descriptors)
    if centers.ndim != 2 or centers.shape[1] != 3:
        raise SeglocError(f"centers must have shape (N, 3), got {centers.shape}")
    config = config.resolve(centers)
    if descriptors.ndim != 2 or len(descriptors) != len(centers):
        raise SeglocError(f"global_descriptors must have shape (N, D) with N = {len(centers)} (one per image), got {descriptors.shape}")
    if not np.all(np.isfinite(descriptors)):
        raise SeglocError("global_descriptors contain NaN or inf values; check the network's output")
    use_angles = config.max_positive_angle_deg is not None or config.min_negative_angle_deg is not None
    if use_angles:
        if optical_axes is None:
            raise SeglocError("an angle limit is set in the mining config: pass optical_axes (N, 3)")
        optical_axes = np.asarray(optical_axes, dtype=np.float64)
        if optical_axes.shape != centers.shape:
            raise SeglocError(f"optical_axes must have shape {centers.shape}, got {optical_axes.shape}")
        optical_axes = optical_axes / np.linalg.norm(optical_axes, axis=1, keepdims=True)
    descriptors = descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)

    num_images = len(centers)
    triplets: list[Triplet] = []
    without_positive = without_negative = 0
    for start in range(0, num_images, config.chunk_size):
        anchors = np.arange(start, min(start + config.chunk_size, num_images))
        similarities = descriptors[anchors] @ descriptors.T
        positives, negatives = pose_candidates(centers, anchors, config, optical_axes if use_angles else None)
        positive = _pick(similarities, positives, -1.0, config.num_hard_candidates, rng)
        negative = _pick(similarities, negatives, +1.0, config.num_hard_candidates, rng)
        without_positive += int(np.sum(positive < 0))
        without_negative += int(np.sum((negative < 0) & (positive >= 0)))
        valid = (positive >= 0) & (negative >= 0)
        triplets.extend(Triplet(int(a), int(p), int(n)) for a, p, n in zip(anchors[valid], positive[valid], negative[valid]))
    logger.info(
        "triplet mining: %d of %d anchors kept; %d without a positive within %.1f m, %d more without a negative beyond %.1f m",
        len(triplets),
        num_images,
        without_positive,
        config.positive_radius_m,
        without_negative,
        config.negative_radius_m,
    )
    return triplets


class RetrievalSample(NamedTuple):
    """One query of retrieval training: its best positives and hardest negatives (image indices).

    Attributes:
        query: the anchor image.
        positives: the positives most similar to the query, most similar first.
        negatives: the hardest negatives (most similar first) of a random pool.
    """

    query: int
    positives: tuple[int, ...]
    negatives: tuple[int, ...]


def mine_retrieval_samples(
    centers: np.ndarray,
    global_descriptors,
    config: MiningConfig,
    num_positives: int,
    num_negatives: int,
    negative_pool: int,
    rng: np.random.Generator,
    optical_axes: np.ndarray | None = None,
) -> list[RetrievalSample]:
    """NetVLAD/SFRS-style mining: for every anchor, the ``num_positives`` positives most similar to it
    (weak labels: a nearby pose does not guarantee the same view, the best-matching one is taken)
    and the ``num_negatives`` most similar negatives among ``negative_pool`` drawn at random.

    Positives and negatives come from :func:`pose_candidates` (``config``'s radii and angles);
    the descriptors (N, D), recomputed by the trainer every epoch, rank them (cosine similarity).
    Anchors without a positive or with fewer than ``num_negatives`` negatives are skipped.

    Returns:
        One :class:`RetrievalSample` per kept anchor.
    """
    centers = np.asarray(centers, dtype=np.float64)
    descriptors = _as_numpy(global_descriptors)
    if centers.ndim != 2 or centers.shape[1] != 3 or descriptors.ndim != 2 or len(descriptors) != len(centers):
        raise SeglocError(
            f"centers (N, 3) and global_descriptors (N, D) must describe the same images, got {centers.shape} and {descriptors.shape}"
        )
    if min(num_positives, num_negatives, negative_pool) < 1:
        raise SeglocError("num_positives, num_negatives and negative_pool must be at least 1")
    descriptors = descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
    samples: list[RetrievalSample] = []
    for start in range(0, len(centers), config.chunk_size):
        anchors = np.arange(start, min(start + config.chunk_size, len(centers)))
        positives, negatives = pose_candidates(centers, anchors, config, optical_axes)
        similarities = descriptors[anchors] @ descriptors.T
        for row, anchor in enumerate(anchors):
            candidates = np.flatnonzero(positives[row])
            pool = np.flatnonzero(negatives[row])
            if len(candidates) == 0 or len(pool) < num_negatives:
                continue
            pool = rng.choice(pool, size=min(negative_pool, len(pool)), replace=False)
            best = candidates[np.argsort(-similarities[row, candidates], kind="stable")[:num_positives]]
            hardest = pool[np.argsort(-similarities[row, pool], kind="stable")[:num_negatives]]
            samples.append(RetrievalSample(int(anchor), tuple(int(i) for i in best), tuple(int(i) for i in hardest)))
    logger.info("retrieval mining: %d of %d anchors kept", len(samples), len(centers))
    return samples
