"""Segmentation inference for SegLoc: an RGB image in, class probabilities per level and a global descriptor out.

A :class:`Segmenter` is anything callable as ``segmenter(image) -> Segmentation``; map building
(:func:`segloc.methods.segloc.layer.build_segloc_map`) and the localizer
(:class:`segloc.methods.segloc.localizer.SegLocLocalizer`) only rely on that. :class:`NetworkSegmenter`
wraps a :class:`segloc.models.segmentation.SegmentationNet`:

1. the image is resized, keeping its aspect ratio, so that its longer side is
   ``inference_max_edge`` pixels, each side rounded to a multiple of 32 (the coarsest stride,
   so that every level covers exactly the whole image; the aspect ratio changes by at most a
   few percent and both axes are scaled separately, as :meth:`segloc.geometry.Camera.scaled`
   does);
2. the network runs in eval mode without gradients, through an inference session of the
   configured backend (torch, ONNX Runtime or TensorRT: :mod:`segloc.runtime`);
3. the logits of each level become probabilities (softmax with a temperature), and the
   finest level is pooled into the global descriptor
   (:func:`segloc.models.segmentation.global_descriptor`).

Each probability level covers the whole image: level ``l`` of size (W_l, H_l) is the image
resized to that size, so a pixel ``(x, y)`` of the original image (COLMAP convention, the
centre of the top-left pixel at (0.5, 0.5)) falls at ``(x W_l / W, y H_l / H)`` of the level,
in the same convention. This is what :func:`segloc.methods.segloc.refine.refine_pose_with_labels`
expects (``camera.scaled(W_l, H_l)`` per level).

:class:`LabelSegmenter` is the ground-truth counterpart for scenes that come with label images
(the synthetic scenes' ``labels/`` folder): it measures the pipeline without a trained network
(tests, ``benchmarks/segloc_table.py --oracle``, the refinement's upper bound).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from segloc.errors import SeglocError
from segloc.models.segmentation import class_probabilities, global_descriptor
from segloc.runtime.session import RuntimeConfig

logger = logging.getLogger("segloc")

__all__ = [
    "DESCRIPTOR_GRID",
    "LabelSegmenter",
    "NetworkSegmenter",
    "Segmentation",
    "Segmenter",
    "inference_size",
    "label_probability_levels",
]

DESCRIPTOR_GRID: tuple[int, ...] = (1, 2)
"""Spatial pyramid of the global descriptor: a whole-image class histogram and 2 x 2 cells,
so ``Dg = 5 K``."""

SIZE_MULTIPLE = 32
"""Network input sides are multiples of this (the coarsest level's stride)."""


@dataclass
class Segmentation:
    """What a segmenter returns for one image.

    Attributes:
        probabilities: class probabilities per level, coarse to fine, each a (K, H_l, W_l)
            float32 tensor on the CPU summing to 1 over K; every level covers the whole image.
        descriptor: (Dg,) float32 unit-norm global descriptor pooled from the finest level.
        input_size: (width, height) of the image the network saw.
    """

    probabilities: list[Tensor]
    descriptor: np.ndarray
    input_size: tuple[int, int]

    @property
    def num_classes(self) -> int:
        return int(self.probabilities[0].shape[0])


@runtime_checkable
class Segmenter(Protocol):
    """Turns an (H, W, 3) uint8 RGB image into a :class:`Segmentation`.

    Attributes:
        num_classes: K.
        descriptor_grid: the pyramid of the global descriptor (see :data:`DESCRIPTOR_GRID`).
    """

    num_classes: int
    descriptor_grid: tuple[int, ...]

    def __call__(self, image: np.ndarray) -> Segmentation: ...


def inference_size(width: int, height: int, max_edge: int | None) -> tuple[int, int]:
    """The network input size (width, height) for an image of ``width`` x ``height``.

    The longer side becomes ``max_edge`` (None or 0: the image's own size), the other keeps the
    aspect ratio; both are rounded to the nearest multiple of 32 (at least 32).
    """
    if width <= 0 or height <= 0:
        raise SeglocError(f"image size must be positive, got {width}x{height}")
    scale = 1.0 if not max_edge else max_edge / max(width, height)

    def rounded(side: int) -> int:
        return max(SIZE_MULTIPLE, int(round(side * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE)

    return rounded(width), rounded(height)


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array; grayscale (H, W) is repeated to 3 channels."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SeglocError(f"the segmenter takes (H, W, 3) uint8 RGB images, got shape {image.shape} and dtype {image.dtype}")
    return image


class NetworkSegmenter:
    """A segmentation network run on single images (see the module docstring).

    Args:
        model: a :class:`segloc.models.segmentation.SegmentationNet` (or any module with the
            same output: an object with ``logits``, a tuple of (B, K, H_l, W_l) coarse to fine).
        inference_max_edge: the longer side of the network input, pixels; None or 0 keeps the
            image's size (rounded to multiples of 32).
        device: torch device to run on (``cpu``, ``cuda``).
        temperature: softmax temperature of the class probabilities (< 1 sharpens).
        descriptor_grid: pyramid of the global descriptor.
        runtime: the inference backend (:class:`segloc.runtime.session.RuntimeConfig`); None: torch.
        onnx_path: the network's ONNX export (a map's ``onnx`` layer) for the ONNX Runtime
            and TensorRT backends; None: exported once and cached (:func:`segloc.models.export.network_onnx`).

    Attributes:
        session: the :class:`segloc.runtime.session.InferenceSession` that runs the network;
            ``session.status`` says which backend runs it and why (a TensorRT fallback is an error).

    Example:
        >>> segmenter = NetworkSegmenter.from_checkpoint("checkpoints/segloc", inference_max_edge=640)  # doctest: +SKIP
        >>> segmentation = segmenter(image)  # (480, 640, 3) uint8
        >>> [tuple(p.shape) for p in segmentation.probabilities]  # doctest: +SKIP
        [(100, 15, 20), (100, 30, 40), (100, 60, 80), (100, 120, 160)]
    """

    def __init__(
        self,
        model: nn.Module,
        inference_max_edge: int | None = 640,
        device: str | torch.device = "cpu",
        temperature: float = 1.0,
        descriptor_grid: Sequence[int] = DESCRIPTOR_GRID,
        runtime: RuntimeConfig | None = None,
        onnx_path: str | Path | None = None,
    ):
        from segloc.models.export import GRAPHS, network_session, segmentation_output_names

        if temperature <= 0:
            raise SeglocError(f"the softmax temperature must be positive, got {temperature}")
        if inference_max_edge is not None and inference_max_edge < 0:
            raise SeglocError(f"inference_max_edge must be positive (or 0/None for the image size), got {inference_max_edge}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.inference_max_edge = inference_max_edge
        self.temperature = float(temperature)
        self.descriptor_grid = tuple(int(g) for g in descriptor_grid)
        config = getattr(model, "config", None)
        self.num_classes = int(getattr(config, "num_classes", 0))
        if self.num_classes < 2:
            raise SeglocError(f"{type(model).__name__} does not say its number of classes (config.num_classes)")
        self.runtime = runtime or RuntimeConfig()
        self.output_names = segmentation_output_names(model)
        largest = inference_size(4, 3, inference_max_edge) if inference_max_edge else (1024, 768)
        self.session = network_session(self.model, self.runtime, str(self.device), onnx_path, largest, GRAPHS["segmentation"])

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        inference_max_edge: int | None = 640,
        device: str | torch.device = "cpu",
        temperature: float = 1.0,
        descriptor_grid: Sequence[int] = DESCRIPTOR_GRID,
        runtime: RuntimeConfig | None = None,
    ) -> NetworkSegmenter:
        """Load the network of a checkpoint folder (:func:`segloc.models.checkpoint.load_checkpoint`)."""
        from segloc.models.checkpoint import load_checkpoint

        return cls(load_checkpoint(path), inference_max_edge, device, temperature, descriptor_grid, runtime)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Segmentation:
        """Segment ``image`` (H, W, 3) uint8 RGB; see :class:`Segmentation` for the output."""
        image = check_image(image)
        height, width = image.shape[:2]
        size = inference_size(width, height, self.inference_max_edge)
        if size != (width, height):
            interpolation = cv2.INTER_AREA if size[0] < width else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interpolation)
        batch = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
        logits = self.session.run({"image": batch})
        levels = class_probabilities([logits[name] for name in self.output_names], self.temperature)
        descriptor = global_descriptor(levels[-1], self.descriptor_grid)[0]
        probabilities = [level[0].float().cpu() for level in levels]
        if probabilities[0].shape[0] != self.num_classes:
            raise SeglocError(f"the network returned {probabilities[0].shape[0]} classes, its config says {self.num_classes}")
        return Segmentation(probabilities, descriptor.float().cpu().numpy(), size)


def label_probability_levels(
    labels: np.ndarray,
    num_classes: int,
    strides: Sequence[int] = (8, 4, 2, 1),
    sigma: float = 1.5,
    floor: float = 0.05,
) -> list[np.ndarray]:
    """Class probabilities that a perfect network would give, from a ground-truth label image.

    Per stride ``s``, coarse to fine: the one-hot labels area-resized to (W / s, H / s), blurred
    (Gaussian, ``sigma`` pixels of the level), plus ``floor / K`` everywhere, normalised over K.

    Args:
        labels: (H, W) integer class ids; ids outside [0, K) get no class (only the floor).
        num_classes: K.
        strides: image pixels per level pixel, coarse to fine.
        sigma: blur of each level.
        floor: probability mass spread over all classes.

    Returns:
        One (K, H / s, W / s) float32 array per stride.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise SeglocError(f"a label image must be (H, W), got shape {labels.shape}")
    height, width = labels.shape
    one_hot = (labels[None] == np.arange(num_classes)[:, None, None]).astype(np.float32)
    levels = []
    for stride in strides:
        size = (width // stride, height // stride)
        maps = np.stack([cv2.GaussianBlur(cv2.resize(c, size, interpolation=cv2.INTER_AREA), (0, 0), sigma) for c in one_hot])
        maps += floor / num_classes
        levels.append(maps / maps.sum(axis=0, keepdims=True))
    return levels


class LabelSegmenter:
    """A :class:`Segmenter` that returns the ground truth: images are looked up by content among known ones.

    Args:
        labels_by_image: pairs (image (H, W, 3) uint8, its label image (H, W)).
        num_classes: K.
        strides, sigma, floor: see :func:`label_probability_levels`.
        descriptor_grid: the pyramid of the global descriptor.

    Attributes:
        inference_max_edge, temperature: None and 1.0 (what maps record about their segmenter).

    Raises:
        SeglocError: (when called) an image that is not one of the known ones.
    """

    inference_max_edge = None
    temperature = 1.0

    def __init__(
        self,
        labels_by_image: Sequence[tuple[np.ndarray, np.ndarray]],
        num_classes: int,
        strides: Sequence[int] = (8, 4, 2, 1),
        sigma: float = 1.5,
        floor: float = 0.05,
        descriptor_grid: Sequence[int] = DESCRIPTOR_GRID,
    ) -> None:
        self.num_classes = int(num_classes)
        self.strides, self.sigma, self.floor = tuple(strides), float(sigma), float(floor)
        self.descriptor_grid = tuple(descriptor_grid)
        self.labels = {self._key(image): np.asarray(labels) for image, labels in labels_by_image}

    @classmethod
    def from_dataset(cls, dataset, num_classes: int | None = None, **options) -> LabelSegmenter:
        """The label images ``labels/<name>`` of a dataset's mapping and query images (synthetic scenes have them).

        Args:
            dataset: a :class:`segloc.data.dataset.Dataset`.
            num_classes: K; None for the synthetic scenes' label count.
            options: ``strides``, ``sigma``, ``floor``, ``descriptor_grid``.

        Raises:
            SeglocError: a label image is missing.
        """
        if num_classes is None:
            from segloc.data.textures import LABELS

            num_classes = len(LABELS)
        pairs = []
        for record in [*dataset.mapping, *dataset.query]:
            path = dataset.root / "labels" / record.name
            if not path.is_file():
                raise SeglocError(f"{path} is missing: a ground-truth segmenter needs the dataset's label images (labels/)")
            pairs.append((dataset.load_image(record.name), cv2.imread(str(path), cv2.IMREAD_UNCHANGED)))
        return cls(pairs, num_classes, **options)

    @staticmethod
    def _key(image: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()

    def segment_labels(self, labels: np.ndarray) -> Segmentation:
        """The segmentation of a label image (H, W)."""
        levels = [
            torch.from_numpy(level) for level in label_probability_levels(labels, self.num_classes, self.strides, self.sigma, self.floor)
        ]
        descriptor = global_descriptor(levels[-1][None], self.descriptor_grid)[0]
        return Segmentation(levels, descriptor.numpy(), (labels.shape[1], labels.shape[0]))

    def __call__(self, image: np.ndarray) -> Segmentation:
        key = self._key(check_image(image))
        if key not in self.labels:
            raise SeglocError("the label segmenter does not know this image (it only segments the images it was given)")
        return self.segment_labels(self.labels[key])
