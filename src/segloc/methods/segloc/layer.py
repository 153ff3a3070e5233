"""The SegLoc map: the ``core`` layer, one segmentation label per 3D point, and the network.

SegLoc (Pietrantoni et al., CVPR 2023) keeps no image and no appearance descriptor in its map.
:func:`build_segloc_map`:

1. builds the ``core`` layer with :func:`segloc.maps.build.build_core` (SIFT + triangulation
   with the known poses; the SIFT descriptors are used for matching only and are not written);
2. segments every mapping image (:mod:`segloc.models.segmenter`);
3. samples the finest class probabilities at each observation of each 3D point (bilinear,
   pixel coordinates scaled to the level, COLMAP convention) and averages them over the
   point's observations;
4. stores per point the argmax label and, depending on ``store``, the top-k labels with their
   mean probabilities or the whole distribution (the storage/accuracy trade-off of the paper's
   Fig. A.4), and per mapping image the global descriptor pooled from its segmentation;
5. copies the network's weights into the map (layer ``segloc_model``), so that one package is
   all a robot needs.

Files::

    core/...                      see segloc.maps.core
    segloc/labels.npz             point_labels (P,) uint8 (uint16 if K > 256): argmax label;
                                  store "topk": point_topk_labels (P, k) uint8/uint16 and
                                  point_topk_weights (P, k) float16 (mean probabilities, largest first);
                                  store "full": point_probabilities (P, K) float16
    segloc/descriptors.npz        image_descriptors (I, Dg) float16, one per core image
    segloc/meta.json              num_classes, store, top_k, num_levels, descriptor_grid,
                                  inference_max_edge, inference sizes, temperature,
                                  core_points_sha256, statistics
    segloc_model/weights.npz      the network's state dict (float32 or float16 floats)
    segloc_model/model.json       registry name, config, source checkpoint, weights dtype
    onnx/segmentation.onnx        optional (``segloc export MAP``): the network's ONNX export
    onnx/segmentation_export.json the SHA-256 of the weights it was exported from, input/output names

:func:`relabel_segloc_map` derives the top-1 or top-k variants from a map that holds more
(the full distribution, or a larger k) without segmenting again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from tqdm import tqdm

from segloc.config import check_options, config_from_dict, config_to_dict, option
from segloc.data.dataset import Dataset
from segloc.errors import SeglocError
from segloc.maps.build import CoreBuild, CoreConfig, core_for
from segloc.maps.core import MapCore, core_checksum, write_core
from segloc.maps.network import read_network_layer, resolve_model_dtype, write_network_layer
from segloc.maps.package import MapPackage, MapWriter, check_map_output
from segloc.runtime.session import RuntimeConfig

if TYPE_CHECKING:
    from segloc.models.segmenter import Segmenter

logger = logging.getLogger("segloc")

__all__ = [
    "MODEL_LAYER",
    "SEGLOC_LAYER",
    "STORE_MODES",
    "SegLocLayer",
    "SegLocMapConfig",
    "aggregate_point_probabilities",
    "build_segloc_map",
    "read_segloc_layer",
    "read_segloc_model",
    "relabel_segloc_map",
    "sample_probabilities",
    "segloc_attack_surface",
    "stored_distribution",
    "stored_point_distribution",
    "update_segloc_map",
    "write_segloc_layer",
    "write_segloc_model",
]

SEGLOC_LAYER = "segloc"
MODEL_LAYER = "segloc_model"
STORE_MODES = ("top1", "topk", "full")


@dataclass
class SegLocMapConfig:
    """Options of :func:`build_segloc_map` (the ``map:`` section of a config file).

    Attributes:
        checkpoint: the segmentation network, a checkpoint folder
            (:func:`segloc.models.checkpoint.save_checkpoint`) or the name of a shipped one
            (``general`` among them); None: the shipped general network where this version
            ships one (:func:`map_checkpoint`), else an error unless a segmenter is passed to
            :func:`build_segloc_map`.
        inference_max_edge: longer side of the network input (pixels); queries use the same
            unless the localizer overrides it. None: the size the network was trained at (the
            longer side of the checkpoint's ``metadata.image_size``, written by the SegLoc
            trainer), or the images' own size for checkpoints that do not say; 0: the images'
            own size. A network segments best at the scale it was trained at.
        temperature: softmax temperature of the class probabilities.
        device: torch device for the segmentation (``cpu``, ``cuda``).
        runtime: the inference backend of the segmentation (:class:`segloc.runtime.RuntimeConfig`).
        store: what each 3D point keeps: ``top1`` (the argmax label), ``topk`` (the ``top_k``
            most probable labels and their mean probabilities) or ``full`` (the K-class
            distribution); see :data:`STORE_MODES`.
        top_k: k for ``store: topk``.
        residual_calibration_images: mapping images on which the map measures its network's
            residuals at the true pose and by chance, from which the localizer derives its
            residual gate (:mod:`segloc.methods.segloc.residual_gate`; each costs one more
            segmentation); 0: no calibration, the localizer uses the fixed gate.
        embed_model: copy the network into the map (layer ``segloc_model``).
        model_dtype: precision of the embedded weights: ``checkpoint`` (that of the
            checkpoint's file: the shipped float16 networks stay 6.6 MB, a float32 checkpoint
            stays exact), ``float32`` or ``float16`` (half the bytes of float32).
        core: options of the shared core build (:class:`segloc.maps.build.CoreConfig`).
    """

    checkpoint: str | None = None
    inference_max_edge: int | None = option(None, ge=0, note="0: the images' own size, null: the training size")
    temperature: float = option(1.0, gt=0)
    device: str = "cpu"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    store: str = "top1"
    top_k: int = option(3, ge=1)
    residual_calibration_images: int = option(16, ge=0, note="0: no calibration, the fixed residual gate")
    embed_model: bool = True
    model_dtype: str = "checkpoint"
    core: CoreConfig = field(default_factory=CoreConfig)

    def __post_init__(self) -> None:
        if isinstance(self.core, dict):
            self.core = config_from_dict(CoreConfig, self.core, "map.core")
        if isinstance(self.runtime, dict):
            self.runtime = config_from_dict(RuntimeConfig, self.runtime, "map.runtime")
        check_options(self)
        if self.store not in STORE_MODES:
            raise SeglocError(f"segloc map: unknown store {self.store!r}; valid values are: {', '.join(STORE_MODES)}")
        resolve_model_dtype(self.model_dtype, None)  # an unknown value is refused here, not after the build


@dataclass
class SegLocLayer:
    """The ``segloc`` layer as read from a map.

    Attributes:
        point_labels: (P,) int64 argmax label of each core point.
        topk_labels: (P, k) int64 most probable labels, most probable first; None unless stored.
        topk_weights: (P, k) float32 their mean probabilities; None unless stored.
        probabilities: (P, K) float16 mean class distribution; None unless stored (kept in
            float16: it is the largest array of the map).
        image_descriptors: (I, Dg) float32 global descriptor of each core image.
        meta: the layer's ``meta.json`` (num_classes, store, descriptor_grid, inference sizes...).
    """

    point_labels: np.ndarray
    topk_labels: np.ndarray | None
    topk_weights: np.ndarray | None
    probabilities: np.ndarray | None
    image_descriptors: np.ndarray
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def store(self) -> str:
        return str(self.meta["store"])

    @property
    def max_top_k(self) -> int:
        """The most labels per point this layer can give: 1, k or K."""
        if self.probabilities is not None:
            return self.num_classes
        if self.topk_labels is not None:
            return self.topk_labels.shape[1]
        return 1

    def labels(self, top_k: int | None = None, point_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and weights) of points for the refinement.

        Args:
            top_k: labels per point; None for all that are stored (1, k or K).
            point_ids: (N,) the points wanted; None for all.

        Returns:
            labels (N,) int64 when one label per point (weights None), else labels (N, k)
            int64 and weights (N, k) float32 (mean probabilities, largest first).

        Raises:
            SeglocError: ``top_k`` is larger than what the layer stores.
        """
        top_k = self.max_top_k if top_k is None else int(top_k)
        if top_k < 1 or top_k > self.max_top_k:
            raise SeglocError(
                f"the map stores {self.max_top_k} label(s) per point (store {self.store!r}), {top_k} were asked for; "
                "rebuild the map with store: topk and a larger top_k, or store: full"
            )
        select = slice(None) if point_ids is None else np.asarray(point_ids, dtype=np.int64)
        if top_k == 1:
            return self.point_labels[select], None
        if self.probabilities is not None:
            return top_k_of_distribution(self.probabilities[select].astype(np.float32), top_k)
        return self.topk_labels[select, :top_k], self.topk_weights[select, :top_k]


# --- sampling and aggregation ---------------------------------------------------------------


def sample_probabilities(level: np.ndarray, points2D: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Bilinearly sample class probabilities at pixels of the original image.

    Args:
        level: (K, H_l, W_l) class probabilities covering the whole image.
        points2D: (N, 2) pixel coordinates in the original image (COLMAP convention: the
            centre of the top-left pixel is (0.5, 0.5)).
        image_size: (width, height) of the original image.

    Returns:
        (N, K) float32 probabilities; positions outside the pixel centres are clamped to the
        border.
    """
    level = np.asarray(level, dtype=np.float32)
    points2D = np.asarray(points2D, dtype=np.float64).reshape(-1, 2)
    if level.ndim != 3:
        raise SeglocError(f"class probabilities must have shape (K, H, W), got {level.shape}")
    num_classes, height, width = level.shape
    # Level pixel coordinates (same convention), then array indices (centre of pixel j at j).
    x = np.clip(points2D[:, 0] * width / image_size[0] - 0.5, 0.0, width - 1.0)
    y = np.clip(points2D[:, 1] * height / image_size[1] - 0.5, 0.0, height - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(width - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(height - 2, 0))
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    tx, ty = (x - x0)[:, None].astype(np.float32), (y - y0)[:, None].astype(np.float32)
    flat = level.reshape(num_classes, -1)

    def gather(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return flat[:, rows * width + cols].T  # (N, K)

    top = gather(y0, x0) * (1 - tx) + gather(y0, x1) * tx
    bottom = gather(y1, x0) * (1 - tx) + gather(y1, x1) * tx
    return (top * (1 - ty) + bottom * ty).astype(np.float32)


def aggregate_point_probabilities(
    core: MapCore,
    segment: Segmenter,
    load_image: Callable[[str], np.ndarray],
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], int]:
    """Segment every core image and average the class probabilities of each point over its observations.

    Args:
        core: the map core (images, points, observations).
        segment: a :class:`segloc.models.segmenter.Segmenter`.
        load_image: ``load_image(name) -> (H, W, 3) uint8`` for a core image name.
        progress: show a progress bar.

    Returns:
        point probabilities (P, K) float32 (rows sum to 1; a point without observations gets
        the uniform distribution), image descriptors (I, Dg) float32, the network input size
        (width, height) of each image, and the number of levels.
    """
    order, offsets = core.observations_by_image()
    sums: np.ndarray | None = None
    descriptors: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    num_levels = 0
    for image_id, record in enumerate(tqdm(core.images, desc="segment", unit="image", disable=not progress)):
        image = load_image(record.name)
        if image.shape[:2] != (record.camera.height, record.camera.width):
            raise SeglocError(
                f"mapping image {record.name} is {image.shape[1]}x{image.shape[0]}, but its camera is "
                f"{record.camera.width}x{record.camera.height}; fix mapping.txt"
            )
        segmentation = segment(image)
        finest = segmentation.probabilities[-1]
        finest = finest.detach().cpu().numpy() if hasattr(finest, "detach") else np.asarray(finest)
        if sums is None:
            sums = np.zeros((core.num_points, finest.shape[0]), np.float32)
            num_levels = len(segmentation.probabilities)
        elif finest.shape[0] != sums.shape[1]:
            raise SeglocError(f"the segmenter returned {finest.shape[0]} classes for {record.name}, {sums.shape[1]} before")
        observations = order[offsets[image_id] : offsets[image_id + 1]]
        if len(observations):
            sampled = sample_probabilities(finest, core.observation_xy[observations], (record.camera.width, record.camera.height))
            np.add.at(sums, core.observation_point_ids[observations], sampled)
        descriptors.append(np.asarray(segmentation.descriptor, np.float32).reshape(-1))
        sizes.append(tuple(int(v) for v in segmentation.input_size))
    assert sums is not None  # a core has at least one image
    totals = sums.sum(axis=1, keepdims=True)
    probabilities = np.where(totals > 0, sums / np.maximum(totals, 1e-30), 1.0 / sums.shape[1]).astype(np.float32)
    return probabilities, np.stack(descriptors), sizes, num_levels


def top_k_of_distribution(probabilities: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` most probable labels (P, k) int64, most probable first, and their probabilities (P, k) float32."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    top_k = min(int(top_k), probabilities.shape[1])
    if top_k < probabilities.shape[1]:
        candidates = np.argpartition(-probabilities, top_k - 1, axis=1)[:, :top_k]
    else:
        candidates = np.broadcast_to(np.arange(probabilities.shape[1]), probabilities.shape)
    values = np.take_along_axis(probabilities, candidates, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1).astype(np.int64), np.take_along_axis(values, order, axis=1)


# --- layers -----------------------------------------------------------------------------


def _label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.uint16


def _label_arrays(point_labels: np.ndarray, store: str, top_k: int, probabilities: np.ndarray | None, topk: tuple | None) -> dict:
    """The arrays of ``segloc/labels.npz`` for a store mode, from a distribution or from top-k labels."""
    label_dtype = point_labels.dtype
    arrays: dict[str, np.ndarray] = {"point_labels": point_labels}
    if store == "topk":
        labels, weights = topk if topk is not None else top_k_of_distribution(probabilities, top_k)
        arrays["point_topk_labels"] = labels[:, :top_k].astype(label_dtype)
        arrays["point_topk_weights"] = weights[:, :top_k].astype(np.float16)
    elif store == "full":
        arrays["point_probabilities"] = probabilities.astype(np.float16)
    return arrays


def write_segloc_layer(
    writer: MapWriter,
    probabilities: np.ndarray,
    image_descriptors: np.ndarray,
    store: str = "top1",
    top_k: int = 3,
    meta: dict[str, Any] | None = None,
) -> None:
    """Add the ``segloc`` layer; the ``core`` layer must be in ``writer`` already.

    Args:
        probabilities: (P, K) mean class probabilities of the core points.
        image_descriptors: (I, Dg) global descriptors of the core images.
        store: ``top1``, ``topk`` or ``full`` (see :class:`SegLocMapConfig`).
        top_k: k for ``topk``.
        meta: more entries for ``meta.json`` (descriptor_grid, inference sizes, ...).
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise SeglocError(f"point probabilities must have shape (P, K) with K >= 2, got {probabilities.shape}")
    if store not in STORE_MODES:
        raise SeglocError(f"unknown store {store!r}; valid values are: {', '.join(STORE_MODES)}")
    num_classes = probabilities.shape[1]
    if store == "topk" and not 1 <= top_k < num_classes:
        raise SeglocError(f"top_k must be in [1, {num_classes - 1}] for K = {num_classes} classes (use store: full for all), got {top_k}")
    point_labels = np.argmax(probabilities, axis=1).astype(_label_dtype(num_classes))
    arrays = _label_arrays(point_labels, store, top_k, probabilities, None)
    _write_label_file(writer, arrays)
    writer.add_arrays(
        SEGLOC_LAYER,
        "descriptors",
        description="SegLoc point labels and segmentation-pooled global descriptors",
        image_descriptors=np.asarray(image_descriptors, np.float16),
    )
    max_probability = probabilities.max(axis=1)
    values = {
        **(meta or {}),
        "num_classes": num_classes,
        "store": store,
        "top_k": _labels_per_point(store, top_k, num_classes),
        "core_points_sha256": core_checksum(writer.manifest["files"]),
        "statistics": {
            "num_points": int(len(point_labels)),
            "num_labels_used": int(len(np.unique(point_labels))),
            "mean_max_probability": float(max_probability.mean()) if len(max_probability) else None,
        },
    }
    writer.add_json(SEGLOC_LAYER, "meta", values)


def _layer_in_memory(probabilities: np.ndarray, image_descriptors: np.ndarray, store: str, top_k: int) -> SegLocLayer:
    """The :class:`SegLocLayer` that :func:`write_segloc_layer` writes, without writing it (what a localizer would read)."""
    num_classes = probabilities.shape[1]
    point_labels = np.argmax(probabilities, axis=1)
    arrays = _label_arrays(point_labels, store, top_k, probabilities, None)
    topk_labels, topk_weights = arrays.get("point_topk_labels"), arrays.get("point_topk_weights")
    return SegLocLayer(
        point_labels.astype(np.int64),
        None if topk_labels is None else topk_labels.astype(np.int64),
        None if topk_weights is None else topk_weights.astype(np.float32),
        arrays.get("point_probabilities"),
        np.asarray(image_descriptors, np.float32),
        {"num_classes": num_classes, "store": store, "top_k": _labels_per_point(store, top_k, num_classes)},
    )


def _labels_per_point(store: str, top_k: int, num_classes: int) -> int:
    """The labels per point a layer with ``store`` keeps (meta.json's ``top_k``): 1, k or K."""
    return top_k if store == "topk" else (1 if store == "top1" else num_classes)


def _write_label_file(writer: MapWriter, arrays: dict[str, np.ndarray]) -> None:
    writer.add_arrays(SEGLOC_LAYER, "labels", description="SegLoc point labels and segmentation-pooled global descriptors", **arrays)


def read_segloc_layer(package: MapPackage, core: MapCore | None = None) -> SegLocLayer:
    """Read the ``segloc`` layer of an opened map, checking it against the ``core`` layer.

    Args:
        package: the map.
        core: its core (only the numbers of points and images are checked); None skips that.

    Raises:
        SeglocError: no such layer, a layer built for another core, or malformed arrays.
    """
    where = f"map {package.path}, layer {SEGLOC_LAYER}"
    if not package.has_layer(SEGLOC_LAYER):
        raise SeglocError(
            f"map {package.path} has no {SEGLOC_LAYER!r} layer (layers: {', '.join(package.layers) or 'none'}); "
            "build it with `segloc map build DATASET --method segloc --config CONFIG` (map: checkpoint: PATH)"
        )
    meta = package.read_json(SEGLOC_LAYER, "meta")
    if not isinstance(meta, dict) or not {"num_classes", "store"} <= set(meta):
        raise SeglocError(f"{where}: meta.json lacks num_classes or store")
    if meta.get("core_points_sha256") != core_checksum(package.manifest.get("files", {})):
        raise SeglocError(f"{where}: the layer was built for another core layer; rebuild the map")
    labels = package.read_arrays(SEGLOC_LAYER, "labels")
    descriptors = package.read_arrays(SEGLOC_LAYER, "descriptors").get("image_descriptors")
    num_classes = int(meta["num_classes"])
    point_labels = labels.get("point_labels")
    if point_labels is None or point_labels.ndim != 1 or not np.issubdtype(point_labels.dtype, np.integer):
        raise SeglocError(f"{where}: labels.npz needs point_labels, a (P,) integer array")
    num_points = len(point_labels)
    if core is not None and num_points != core.num_points:
        raise SeglocError(f"{where}: {num_points} labels for {core.num_points} core points; rebuild the map")
    if num_points and int(point_labels.max()) >= num_classes:
        raise SeglocError(f"{where}: labels outside [0, {num_classes})")
    if descriptors is None or descriptors.ndim != 2 or (core is not None and len(descriptors) != len(core.images)):
        raise SeglocError(f"{where}: descriptors.npz needs image_descriptors, one (Dg,) row per core image")
    topk_labels, topk_weights = labels.get("point_topk_labels"), labels.get("point_topk_weights")
    if (topk_labels is None) != (topk_weights is None):
        raise SeglocError(f"{where}: point_topk_labels and point_topk_weights go together")
    if topk_labels is not None:
        if topk_labels.ndim != 2 or topk_labels.shape != topk_weights.shape or len(topk_labels) != num_points:
            raise SeglocError(f"{where}: point_topk_labels and point_topk_weights must both be (P, k) with P = {num_points}")
        if topk_labels.size and int(topk_labels.max()) >= num_classes:
            raise SeglocError(f"{where}: top-k labels outside [0, {num_classes})")
        topk_labels, topk_weights = topk_labels.astype(np.int64), topk_weights.astype(np.float32)
    probabilities = labels.get("point_probabilities")
    if probabilities is not None and probabilities.shape != (num_points, num_classes):
        raise SeglocError(f"{where}: point_probabilities has shape {probabilities.shape}, expected ({num_points}, {num_classes})")
    return SegLocLayer(point_labels.astype(np.int64), topk_labels, topk_weights, probabilities, descriptors.astype(np.float32), meta)


def stored_distribution(probabilities: np.ndarray, store: str, top_k: int) -> np.ndarray:
    """What a map with ``store`` keeps of class distributions (N, K), as (N, K) float32: one-hot, top-k weights or all."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if store == "full":
        return probabilities
    k = 1 if store == "top1" else top_k
    labels, weights = top_k_of_distribution(probabilities, k)
    kept = np.zeros_like(probabilities)
    rows = np.arange(len(probabilities))[:, None]
    kept[rows, labels] = 1.0 if store == "top1" else weights
    return kept


def stored_point_distribution(layer: SegLocLayer) -> np.ndarray:
    """(P, K) float32 what the layer keeps of each point's distribution: one-hot (top1), the top-k weights at their labels, or all."""
    if layer.probabilities is not None:
        return layer.probabilities.astype(np.float32)
    labels, weights = layer.labels()
    rows = np.arange(len(layer.point_labels))
    distribution = np.zeros((len(rows), layer.num_classes), np.float32)
    if weights is None:
        distribution[rows, labels] = 1.0
    else:
        distribution[rows[:, None], labels] = weights
    return distribution


def segloc_attack_surface(package: MapPackage) -> Any:
    """What a SegLoc map gives an inversion attacker: each 3D point's labels as stored, K channels.

    A top-1 map gives a one-hot vector per point, a top-k map the k mean probabilities at their
    labels, a full map the distribution. The attacker makes its training inputs with the network
    embedded in the map (layer ``segloc_model``): SIFT keypoints (the core's options) of another
    place's image, labelled as :func:`build_segloc_map` would.

    Returns:
        a :class:`segloc.methods.registry.AttackSurface`.
    """
    from segloc.features.sift import extract_sift
    from segloc.maps.build import core_sift_config
    from segloc.maps.core import read_core
    from segloc.methods.registry import AttackSurface
    from segloc.models.segmenter import NetworkSegmenter

    core = read_core(package)
    layer = read_segloc_layer(package, core)
    top_k = int(layer.meta.get("top_k") or 1)
    point_attributes = stored_point_distribution(layer)
    sift = core_sift_config(package)
    segmenter = None

    def features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal segmenter
        if segmenter is None:  # the network is read on first use: the audit of the map's own points does not need it
            meta = layer.meta
            segmenter = NetworkSegmenter(read_segloc_model(package), meta.get("inference_max_edge"), "cpu", meta.get("temperature") or 1.0)
        keypoints = extract_sift(image, sift).keypoints
        finest = segmenter(image).probabilities[-1].numpy()
        sampled = sample_probabilities(finest, keypoints, (image.shape[1], image.shape[0]))
        return keypoints, stored_distribution(sampled, layer.store, top_k)

    return AttackSurface(
        f"SegLoc labels of every 3D point (store {layer.store}, K = {layer.num_classes})",
        point_attributes[core.observation_point_ids],
        features,
    )


# --- the embedded network -----------------------------------------------------------------


def write_segloc_model(writer: MapWriter, model: Any, dtype: str = "float32", source: dict[str, Any] | None = None) -> None:
    """Add the ``segloc_model`` layer (:func:`segloc.maps.network.write_network_layer`): the network's registry name, config and weights.

    Args:
        writer: the map being written.
        model: a registered network (:mod:`segloc.models.registry`) with a dataclass ``config``.
        dtype: ``float32`` or ``float16`` for the floating-point weights (integer buffers stay).
        source: provenance (checkpoint path and SHA-256, trainer metadata).
    """
    write_network_layer(writer, MODEL_LAYER, model, dtype, source, "the segmentation network (weights and config)")


def read_segloc_model(package: MapPackage) -> Any:
    """Rebuild the network embedded in a map, on the CPU and in eval mode (float32 weights).

    Raises:
        SeglocError: no ``segloc_model`` layer, an unknown model, or weights that do not fit.
    """
    return read_network_layer(
        package, MODEL_LAYER, "segmentation network", "rebuild it with embed_model: true, or give the localizer a segmenter"
    )


# --- building -------------------------------------------------------------------------------


def map_checkpoint(config: SegLocMapConfig) -> Path:
    """The checkpoint folder a map is built with: ``config.checkpoint`` (a folder or a shipped
    network's name, :func:`segloc.models.checkpoint.resolve_checkpoint`), or the shipped general
    network when it is null.

    Raises:
        SeglocError: no such checkpoint, or null while no general network is shipped.
    """
    from segloc.models.checkpoint import GENERAL_CHECKPOINT, SHIPPED_CHECKPOINTS, resolve_checkpoint

    if config.checkpoint:
        return resolve_checkpoint(config.checkpoint, "segloc map: map.checkpoint")
    if GENERAL_CHECKPOINT not in SHIPPED_CHECKPOINTS:
        raise SeglocError(
            "building a SegLoc map needs a segmentation network: set `checkpoint: PATH` (a checkpoint folder written by "
            "the SegLoc trainer or segloc.models.save_checkpoint, or a shipped network's name) in the `map:` section of the "
            "config, e.g. `segloc map build DATASET --method segloc --config cfg.yaml -o MAP`"
        )
    logger.info("segloc map: map.checkpoint is null, using the shipped general network %s", GENERAL_CHECKPOINT)
    return resolve_checkpoint(GENERAL_CHECKPOINT, "segloc map: map.checkpoint")


def _segmenter_from_config(config: SegLocMapConfig, checkpoint: Path):
    from segloc.models.segmenter import NetworkSegmenter

    max_edge = config.inference_max_edge
    if max_edge is None:
        from segloc.models.checkpoint import read_checkpoint_info

        trained_size = read_checkpoint_info(checkpoint).metadata.get("image_size")
        max_edge = int(max(trained_size)) if trained_size else 0
        logger.info(
            "segloc map: segmenting at %s (the checkpoint's training size)", f"longer side {max_edge} px" if max_edge else "the image size"
        )
    return NetworkSegmenter.from_checkpoint(checkpoint, max_edge, config.device, config.temperature, runtime=config.runtime)


def build_segloc_map(
    dataset: Dataset,
    output: str | Path,
    config: SegLocMapConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    segmenter: Segmenter | None = None,
    core: CoreBuild | None = None,
) -> Path:
    """Build the SegLoc map of ``dataset``'s mapping images at ``output`` (see the module docstring).

    Args:
        dataset: the dataset; its mapping images and poses define the map.
        output: the map package folder to write (layers ``core``, ``segloc``, ``segloc_model``).
        config: building options; ``config.checkpoint`` names the network unless ``segmenter``
            is given.
        overwrite: replace an existing map at ``output``.
        progress: show progress bars.
        segmenter: a :class:`segloc.models.segmenter.Segmenter` to use instead of the
            checkpoint (tests, oracles). A :class:`NetworkSegmenter` is embedded in the map;
            other segmenters are not (the localizer then needs one passed in).
        core: the geometry of ``dataset``'s mapping images built already (e.g. by the
            same :func:`segloc.maps.build.build_core` call that a reference map of the dataset
            uses); None builds it with ``config.core``.

    Returns:
        ``output``.

    Raises:
        SeglocError: no checkpoint and no segmenter, an existing output without
            ``overwrite``, no mapping images, or anything wrong in the core build.
    """
    from segloc.methods.segloc.localizer import SegLocLocalizer
    from segloc.methods.segloc.residual_gate import CALIBRATION_KEY, calibrate_residuals
    from segloc.models.segmenter import NetworkSegmenter

    config = config or SegLocMapConfig()
    output = Path(output)
    if not dataset.mapping:
        raise SeglocError(f"{dataset.root}: mapping.txt lists no images; a map needs mapping images with poses")
    check_map_output(output, overwrite, dataset.inputs())
    source: dict[str, Any] = {}
    if segmenter is None:
        checkpoint = map_checkpoint(config)
        segmenter = _segmenter_from_config(config, checkpoint)
        from segloc.fileio import sha256_file
        from segloc.models.checkpoint import read_checkpoint_info

        info = read_checkpoint_info(checkpoint)
        source = {
            "checkpoint": str(checkpoint.resolve()),
            "sha256": sha256_file(info.weights_file),
            "dtype": info.dtype,
            "metadata": info.metadata,
        }
    logger.info(
        "building a SegLoc map of %s (%d mapping images); its options go into the map's manifest.json", dataset.root, len(dataset.mapping)
    )
    logger.debug("map options:\n%s", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    built = core_for(dataset, config.core, progress, core)
    start = time.perf_counter()
    probabilities, descriptors, sizes, num_levels = aggregate_point_probabilities(built.core, segmenter, dataset.load_image, progress)
    built.statistics["seconds"]["segment"] = time.perf_counter() - start
    labels_used = len(np.unique(np.argmax(probabilities, axis=1)))
    logger.info("labelled %d points with %d of %d classes", len(probabilities), labels_used, probabilities.shape[1])

    meta: dict[str, Any] = {
        "num_levels": num_levels,
        "descriptor_grid": list(getattr(segmenter, "descriptor_grid", ())),
        "descriptor_dim": int(descriptors.shape[1]),
        "inference_max_edge": getattr(segmenter, "inference_max_edge", None),
        "inference_sizes": sorted({f"{w}x{h}" for w, h in sizes}),
        "temperature": getattr(segmenter, "temperature", None),
        "segmenter": type(segmenter).__name__,
    }
    if config.residual_calibration_images:
        start = time.perf_counter()
        layer = _layer_in_memory(probabilities, descriptors, config.store, config.top_k)
        calibration = calibrate_residuals(
            SegLocLocalizer(built.core, layer, segmenter), dataset.load_image, config.residual_calibration_images, progress=progress
        )
        if calibration is not None:
            meta[CALIBRATION_KEY] = calibration
        built.statistics["seconds"]["residual_calibration"] = time.perf_counter() - start
    created: dict[str, Any] = {"source": str(Path(dataset.root).resolve()), "config": config_to_dict(config)}
    with MapWriter(output, method="segloc", frame_id=config.core.frame_id, overwrite=overwrite, created=created) as writer:
        write_core(writer, built.core)
        write_segloc_layer(writer, probabilities, descriptors, config.store, config.top_k, meta)
        if config.embed_model and isinstance(segmenter, NetworkSegmenter):
            write_segloc_model(writer, segmenter.model, resolve_model_dtype(config.model_dtype, source.get("dtype")), source)
        elif config.embed_model:
            logger.warning(
                "the segmenter (%s) is not a network: the map holds no model; localize with a segmenter", type(segmenter).__name__
            )
        seconds = {k: round(v, 3) for k, v in built.statistics["seconds"].items()}
        writer.set_metadata(statistics={**built.statistics, "seconds": seconds})
        writer.commit()
    logger.info("SegLoc map timings: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return output


def update_segloc_map(package: MapPackage, update: Any, writer: MapWriter, progress: bool = True) -> None:
    """Bring the ``segloc`` layer up to date with a core update (:mod:`segloc.maps.update`).

    The new images are segmented by the network embedded in the map (``segloc_model``, at the
    map's inference size and temperature; the network is not retrained); an added point gets the
    mean class probabilities over its new observations, stored as the map stores (top-1, top-k or
    full); an old point keeps what the map stored for it (also when new observations joined
    it: they confirm its position, the label stays that of the sessions that built it); the new
    images' global descriptors are appended.

    Raises:
        SeglocError: the map holds no network (built with ``embed_model: false``).
    """
    from segloc.models.segmenter import DESCRIPTOR_GRID, NetworkSegmenter

    layer = read_segloc_layer(package, update.old_core)
    meta = layer.meta
    model = read_segloc_model(package)
    segmenter = NetworkSegmenter(
        model, meta.get("inference_max_edge"), "cpu", meta.get("temperature") or 1.0, meta.get("descriptor_grid") or DESCRIPTOR_GRID
    )
    core, new = update.core, update.new_observations
    new_images_core = MapCore(
        update.new_images,
        core.points3D,
        core.point_errors,
        core.observation_point_ids[new],
        core.observation_image_ids[new] - update.num_old_images,
        core.observation_xy[new],
    )
    probabilities, descriptors, sizes, _ = aggregate_point_probabilities(new_images_core, segmenter, update.load_image, progress)
    kept = update.point_old_ids >= 0
    probabilities[kept] = stored_point_distribution(layer)[update.point_old_ids[kept]]
    derived = ("num_classes", "store", "top_k", "core_points_sha256", "statistics")
    new_meta = {key: value for key, value in meta.items() if key not in derived}
    new_meta["inference_sizes"] = sorted(set(meta.get("inference_sizes") or []) | {f"{w}x{h}" for w, h in sizes})
    write_segloc_layer(
        writer,
        probabilities,
        np.concatenate([layer.image_descriptors, descriptors]),
        layer.store,
        int(meta.get("top_k") or 3) if layer.store == "topk" else 3,
        new_meta,
    )


def relabel_segloc_map(
    map_path: str | Path | MapPackage,
    output: str | Path,
    store: str = "topk",
    top_k: int = 3,
    overwrite: bool = False,
) -> Path:
    """Write a copy of a SegLoc map that keeps fewer labels per point (no segmentation runs).

    ``full`` maps give any variant; ``topk`` maps give ``top1`` or a smaller k. The other
    layers (core, descriptors, network) are copied unchanged.

    Args:
        map_path: the source map (a path or an opened package).
        output: where the new map goes (may not be the source).
        store: ``top1``, ``topk`` or ``full``.
        top_k: k for ``topk``.
        overwrite: replace an existing map at ``output``.

    Returns:
        ``output``.
    """
    package = map_path if isinstance(map_path, MapPackage) else MapPackage.open(map_path)
    output = Path(output)
    if output.resolve() == package.path.resolve():
        raise SeglocError(f"relabel_segloc_map writes a new map: choose an output other than {package.path}")
    check_map_output(output, overwrite, [(package.path, "the source map")])
    layer = read_segloc_layer(package)
    if store not in STORE_MODES:
        raise SeglocError(f"unknown store {store!r}; valid values are: {', '.join(STORE_MODES)}")
    num_classes = layer.num_classes
    wanted = _labels_per_point(store, top_k, num_classes)
    if store == "topk" and not 1 <= top_k < num_classes:
        raise SeglocError(f"top_k must be in [1, {num_classes - 1}] for K = {num_classes} classes, got {top_k}")
    if wanted > layer.max_top_k:
        raise SeglocError(
            f"map {package.path} stores {layer.max_top_k} label(s) per point (store {layer.store!r}); it cannot give {store} "
            f"with {wanted}: rebuild it with store: full"
        )
    point_labels = layer.point_labels.astype(_label_dtype(num_classes))
    topk = layer.labels(top_k) if store == "topk" and top_k > 1 else None
    if store == "topk" and top_k == 1:
        weights = (
            layer.topk_weights[:, :1]
            if layer.topk_weights is not None
            else np.take_along_axis(layer.probabilities, layer.point_labels[:, None], axis=1).astype(np.float32)
        )
        topk = (layer.point_labels[:, None], weights)
    probabilities = None if layer.probabilities is None else layer.probabilities.astype(np.float32)
    arrays = _label_arrays(point_labels, store, top_k, probabilities, topk)
    meta = {**layer.meta, "store": store, "top_k": wanted, "derived_from": {"map": str(package.path), "store": layer.store}}
    with MapWriter(output, method=package.method, frame_id=package.frame_id, base=package, overwrite=overwrite) as writer:
        _write_label_file(writer, arrays)
        writer.add_json(SEGLOC_LAYER, "meta", meta)
        writer.set_metadata(**package.manifest.get("metadata", {}))
        writer.commit()
    return output
