"""The SegLoc training set: augmented image pairs with correspondences (and optional triplets).

One sample per :class:`~segloc_train.pairs.ImagePair`. Both images are loaded from the dataset
folder, augmented independently (:mod:`segloc_train.augment`), and the correspondences that stay
inside *both* augmented images are kept. To batch samples with different numbers of
correspondences, each sample holds exactly ``max_correspondences`` rows: when more survive, a
random subset is kept (in point-id order); when fewer, the rows are padded with zeros, point
id -1 and ``valid = False``. With ``max_correspondences = None`` samples keep all their
correspondences and :func:`collate_pairs` pads to the longest in the batch instead.

When triplets (:func:`segloc_train.mining.mine_triplets`, recomputed each epoch and set with
:meth:`SegLocTrainingSet.set_triplets`) are given, image A of a pair is the anchor: the sample
adds the positive and negative images of A's triplet (or of B's, swapping A and B, when A has
none); ``has_triplet`` is False (and the extra images are zeros) when neither has one.

Condition variants (``variant_roots``): dataset folders holding the same mapping images (names,
cameras, poses) rendered or recorded under other conditions (night, another season, another
day). Each image of a training sample is then drawn from the dataset or any variant (uniformly;
A and B independently, so a pair may cross conditions), and its clean view, which the
pseudo-targets come from, is always the dataset's own image: the network learns to give a
pixel the class of the same pixel in the reference condition. The correspondences come from the
geometry (the map core's points), which the variants share.

Randomness: sample ``index`` of epoch ``epoch`` uses ``numpy.random.default_rng([seed, epoch,
index])``, so a sample is the same whatever the worker or the order it is loaded in. Call
:meth:`SegLocTrainingSet.set_epoch` before each epoch (with persistent DataLoader workers the
change does not reach the workers' copies: use non-persistent workers or a sampler that
carries the epoch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from segloc.data.dataset import load_image
from segloc.errors import SeglocError
from segloc.maps.core import MapCore
from segloc_train.augment import AugmentConfig, AugmentedImage, augment_image
from segloc_train.mining import Triplet
from segloc_train.pairs import ImagePair

logger = logging.getLogger("segloc")

IMAGE_KEYS = ("image_a", "image_b", "clean_a", "clean_b", "positive", "negative")
CORRESPONDENCE_KEYS = {"points_a": 0.0, "points_b": 0.0, "point_ids": -1, "valid": False}


class SegLocTrainingSet(Dataset):
    """Augmented mapping-image pairs with their correspondences.

    A sample is a dict:

    - ``image_a``, ``image_b``: (3, H, W) float32 RGB in [0, 1] (augmented);
    - ``points_a``, ``points_b``: (K, 2) float32 correspondence pixels in the augmented images
      (COLMAP convention), ``K = max_correspondences``; rows past ``num_correspondences`` are
      padding;
    - ``point_ids``: (K,) int64 map point id (-1 for padding); ``valid``: (K,) bool;
    - ``num_correspondences``: () int64, correspondences inside both augmented images (before
      subsampling to K);
    - ``image_id_a``, ``image_id_b``: () int64 map image ids; ``name_a``, ``name_b``: str;
      ``affine_a``, ``affine_b``: (2, 3) float32 source-to-augmented affines; ``index``: () int64;
    - with ``clean_views``: ``clean_a``, ``clean_b`` (3, H, W), images A and B with the same
      geometry but without the photometric changes (what the pseudo-targets are computed from);
    - with triplets: ``positive``, ``negative`` (3, H, W), ``triplet_ids`` (3,) int64 (anchor,
      positive, negative map image ids, -1 when none) and ``has_triplet`` () bool.
    """

    def __init__(
        self,
        root: str | Path,
        core: MapCore,
        pairs: Sequence[ImagePair],
        augment: AugmentConfig | None = None,
        max_correspondences: int | None = 1024,
        triplets: Sequence[Triplet] | None = None,
        train: bool = True,
        clean_views: bool = False,
        variant_roots: Sequence[str | Path] = (),
    ) -> None:
        """
        Args:
            root: the dataset folder (images under ``root/images`` named as in ``core.images``).
            core: the map core the pairs were mined from.
            pairs: the training pairs.
            augment: augmentation options (its ``seed`` seeds the sample streams).
            max_correspondences: correspondences per sample (padding / subsampling); None: all.
            triplets: anchor / positive / negative map image ids (see :meth:`set_triplets`).
            train: random augmentation; False: deterministic resize only.
            clean_views: add ``clean_a`` and ``clean_b`` to each sample.
            variant_roots: dataset folders with the same mapping images under other conditions
                (module documentation); used only with ``train``.
        """
        self.root = Path(root)
        self.core = core
        self.pairs = list(pairs)
        self.augment = augment or AugmentConfig()
        self.max_correspondences = max_correspondences
        self.train = train
        self.clean_views = clean_views
        self.variant_roots = [Path(v) for v in variant_roots]
        self.epoch = 0
        if max_correspondences is not None and max_correspondences < 1:
            raise SeglocError(f"max_correspondences must be at least 1 or None, got {max_correspondences}")
        if not (self.root / "images").is_dir():
            raise SeglocError(f"{self.root} is not a dataset folder: images/ is missing")
        for pair in self.pairs:
            if not (0 <= pair.image_id_a < len(core.images) and 0 <= pair.image_id_b < len(core.images)):
                raise SeglocError(f"pair ({pair.image_id_a}, {pair.image_id_b}) refers to images outside the map's {len(core.images)}")
        self.triplets: dict[int, Triplet] | None = None
        if triplets is not None:
            self.set_triplets(triplets)

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Select the random streams of epoch ``epoch``."""
        self.epoch = int(epoch)

    def set_triplets(self, triplets: Sequence[Triplet] | None) -> None:
        """Replace the triplets (map image ids), e.g. after recomputing global descriptors."""
        if triplets is None:
            self.triplets = None
            return
        num_images = len(self.core.images)
        self.triplets = {}
        for triplet in triplets:
            anchor, positive, negative = (int(v) for v in triplet)
            if not all(0 <= v < num_images for v in (anchor, positive, negative)):
                raise SeglocError(f"triplet {tuple(triplet)} refers to images outside the map's {num_images}")
            self.triplets[anchor] = Triplet(anchor, positive, negative)

    def _load(self, image_id: int, root: Path | None = None) -> np.ndarray:
        record = self.core.images[image_id]
        image = load_image((root or self.root) / "images" / record.name)
        if (image.shape[1], image.shape[0]) != (record.camera.width, record.camera.height):
            raise SeglocError(
                f"image {record.name} is {image.shape[1]}x{image.shape[0]} but its camera in the map is "
                f"{record.camera.width}x{record.camera.height}: the map was built from other images"
            )
        return image

    def _augment(self, image_id: int, points: np.ndarray, rng: np.random.Generator) -> AugmentedImage:
        image = self._load(image_id)
        if self.train and self.variant_roots:
            choice = int(rng.integers(len(self.variant_roots) + 1))
            if choice > 0:
                variant = self._load(image_id, self.variant_roots[choice - 1])
                return augment_image(variant, points, self.augment, rng, train=True, clean_source=image)
        return augment_image(image, points, self.augment, rng, train=self.train)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.pairs):
            raise IndexError(f"sample {index} out of range [0, {len(self.pairs)})")
        rng = np.random.default_rng([self.augment.seed, self.epoch, index])
        pair = self.pairs[index]
        id_a, id_b, points_a, points_b = pair.image_id_a, pair.image_id_b, pair.points_a, pair.points_b
        triplet = None
        if self.triplets is not None:
            triplet = self.triplets.get(id_a)
            if triplet is None and id_b in self.triplets:
                triplet = self.triplets[id_b]
                id_a, id_b, points_a, points_b = id_b, id_a, points_b, points_a
        augmented_a = self._augment(id_a, points_a, rng)
        augmented_b = self._augment(id_b, points_b, rng)
        keep = np.flatnonzero(augmented_a.inside & augmented_b.inside)
        num_correspondences = len(keep)
        size = num_correspondences if self.max_correspondences is None else self.max_correspondences
        if len(keep) > size:
            keep = np.sort(rng.choice(keep, size, replace=False))
        count = len(keep)
        sample_points_a, sample_points_b = np.zeros((size, 2), np.float32), np.zeros((size, 2), np.float32)
        point_ids, valid = np.full(size, -1, np.int64), np.zeros(size, bool)
        sample_points_a[:count], sample_points_b[:count] = augmented_a.points[keep], augmented_b.points[keep]
        point_ids[:count], valid[:count] = pair.point_ids[keep], True
        sample: dict[str, Any] = {
            "image_a": _to_tensor(augmented_a.image),
            "image_b": _to_tensor(augmented_b.image),
            "points_a": torch.from_numpy(sample_points_a),
            "points_b": torch.from_numpy(sample_points_b),
            "point_ids": torch.from_numpy(point_ids),
            "valid": torch.from_numpy(valid),
            "num_correspondences": torch.tensor(num_correspondences, dtype=torch.int64),
            "image_id_a": torch.tensor(id_a, dtype=torch.int64),
            "image_id_b": torch.tensor(id_b, dtype=torch.int64),
            "name_a": self.core.images[id_a].name,
            "name_b": self.core.images[id_b].name,
            "affine_a": torch.from_numpy(augmented_a.affine.astype(np.float32)),
            "affine_b": torch.from_numpy(augmented_b.affine.astype(np.float32)),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.clean_views:
            sample["clean_a"], sample["clean_b"] = _to_tensor(augmented_a.clean), _to_tensor(augmented_b.clean)
        if self.triplets is not None:
            sample.update(self._triplet_images(triplet, sample["image_a"].shape, rng))
        return sample

    def _triplet_images(self, triplet: Triplet | None, shape: torch.Size, rng: np.random.Generator) -> dict[str, Any]:
        if triplet is None:
            return {
                "positive": torch.zeros(shape),
                "negative": torch.zeros(shape),
                "triplet_ids": torch.full((3,), -1, dtype=torch.int64),
                "has_triplet": torch.tensor(False),
            }
        no_points = np.zeros((0, 2))
        return {
            "positive": _to_tensor(self._augment(triplet.positive, no_points, rng).image),
            "negative": _to_tensor(self._augment(triplet.negative, no_points, rng).image),
            "triplet_ids": torch.tensor(tuple(triplet), dtype=torch.int64),
            "has_triplet": torch.tensor(True),
        }


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float32 -> (3, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _pad_to(tensor: torch.Tensor, shape: Sequence[int], value: float | bool) -> torch.Tensor:
    """Pad ``tensor`` at the end of each dimension to ``shape`` with ``value``."""
    if tuple(tensor.shape) == tuple(shape):
        return tensor
    padded = torch.full(tuple(shape), value, dtype=tensor.dtype)
    padded[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return padded


def collate_pairs(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples of :class:`SegLocTrainingSet`, padding where sizes differ.

    Images of different sizes are zero-padded at the bottom and right to the largest in the
    batch (pixel coordinates are unchanged); ``image_size_a`` / ``image_size_b`` (B, 2) int64
    hold each image's (width, height) before padding. Correspondence rows are padded to the
    longest in the batch (points 0, point id -1, ``valid`` False). Strings become lists.

    Returns:
        A dict of (B, ...) tensors (``image_a`` (B, 3, H, W), ``points_a`` (B, K, 2), ``valid``
        (B, K), ...), and lists for the names.
    """
    if not samples:
        raise SeglocError("collate_pairs: empty batch")
    batch: dict[str, Any] = {}
    for key in ("image_a", "image_b"):
        batch[f"image_size_{key[-1]}"] = torch.tensor([[s[key].shape[2], s[key].shape[1]] for s in samples], dtype=torch.int64)
    for key, value in samples[0].items():
        values = [sample[key] for sample in samples]
        if isinstance(value, str):
            batch[key] = values
        elif key in IMAGE_KEYS:
            height, width = max(v.shape[1] for v in values), max(v.shape[2] for v in values)
            batch[key] = torch.stack([_pad_to(v, (v.shape[0], height, width), 0.0) for v in values])
        elif key in CORRESPONDENCE_KEYS:
            length = max(v.shape[0] for v in values)
            batch[key] = torch.stack([_pad_to(v, (length, *v.shape[1:]), CORRESPONDENCE_KEYS[key]) for v in values])
        else:
            batch[key] = torch.stack(values)
    return batch
