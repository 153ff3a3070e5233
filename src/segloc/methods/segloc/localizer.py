"""The SegLoc localizer: segmentation, retrieval, pose approximation, label-based refinement.

For a query image (Pietrantoni et al., CVPR 2023):

1. ``segment``: class probabilities per decoder level and the segmentation-pooled global
   descriptor (:mod:`segloc.models.segmenter`; by default the network embedded in the map,
   at the map's inference size);
2. ``retrieve``: the ``num_retrieved`` mapping images with the most similar global
   descriptors (dot product);
3. ``approximate``: a first pose, that of the best image (``top1``) or a similarity-weighted
   average of the retrieved poses close to it (``weighted``); with ``refine: false`` this
   is the result (the "retrieval only" baseline);
4. ``refine``: the 3D points the retrieved images observe that fall in (a widened frustum
   of) the first pose, at most ``max_points`` of them, are aligned with the query's class
   probabilities by :func:`segloc.methods.segloc.refine.refine_pose_with_labels`.

Given a pose ``prior`` (odometry, ``initialpose``, another method), steps 2 and 3 are skipped:
the points come from the mapping images near the prior (or, when none is near, from the whole
map), and the refinement starts from the prior.

Tracking (:meth:`SegLocLocalizer.track`, :mod:`segloc.localize.tracking`): from a pose odometry
predicts, one refinement with the cheaper schedule of ``localize.tracking`` (fewer levels and
iterations, fewer points, a tighter bound on how far it may move from the prediction); when it
fails, the same frame's segmentation is relocalized (steps 2 to 4).

A refinement that fails its checks (too few points, divergence, a high residual, a degenerate
Hessian) returns no pose (``cam_from_world=None``) and says why in ``info["failure_reason"]``:
a robot is better off without a pose than with a confident wrong one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.features.retrieval import rank_by_similarity
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.localize.base import LocalizationResult
from segloc.localize.priors import APPROXIMATIONS, approximate_pose
from segloc.maps.core import MapCore, read_core
from segloc.maps.package import MapPackage
from segloc.maps.scale import map_scale
from segloc.methods.segloc.defaults import derive_options
from segloc.methods.segloc.layer import SegLocLayer, read_segloc_layer, read_segloc_model
from segloc.methods.segloc.refine import LabelRefinementConfig, RefinementResult, refine_pose_with_labels
from segloc.models.export import read_onnx_layer
from segloc.models.segmenter import DESCRIPTOR_GRID, NetworkSegmenter, Segmentation, Segmenter
from segloc.runtime.session import RuntimeConfig, SessionStatus

logger = logging.getLogger("segloc")

__all__ = [
    "APPROXIMATIONS",
    "INITIALIZATION_SELECTIONS",
    "Retrieval",
    "SegLocLocalizer",
    "SegLocLocalizerConfig",
    "SegLocTrackingConfig",
    "approximate_pose",
    "pose_to_list",
    "wire_precision",
]

INITIALIZATION_SELECTIONS = ("first_success", "lowest_cost")


@dataclass
class SegLocTrackingConfig:
    """The tracked refinement of :meth:`SegLocLocalizer.track` (the ``tracking:`` part of ``localize:``).

    Its options replace those of ``localize.refinement`` for the one refinement from the
    predicted pose; the checks (points in view, residual, Hessian) are the refinement's.

    Attributes:
        levels: decoder levels to refine on, coarse to fine (see
            :class:`~segloc.methods.segloc.refine.LabelRefinementConfig`); the prediction is
            close, so the coarse levels are skipped.
        num_iterations: Levenberg-Marquardt iterations per level.
        max_points: at most this many points (null: ``localize.max_points``).
        max_translation_change: the tracked pose may move at most this far from the
            prediction (metres; at most ``refinement.max_translation_change``): farther is a
            failed tracking, and the frame relocalizes. Null: derived from the map's scale
            (:mod:`segloc.methods.segloc.defaults`).
        max_rotation_change_deg: the same for the rotation (degrees).
    """

    levels: tuple[int, ...] = (-2, -1)
    num_iterations: int = option(20, ge=1)
    max_points: int | None = option(2000, ge=6, note="null: localize.max_points")
    max_translation_change: float | None = option(None, gt=0, note="null: derived from the map")
    max_rotation_change_deg: float = option(10.0, gt=0)

    def __post_init__(self) -> None:
        self.levels = tuple(int(i) for i in self.levels)
        check_options(self)


@dataclass
class SegLocLocalizerConfig:
    """Options of :class:`SegLocLocalizer` (the ``localize:`` section of a config file).

    Attributes:
        num_retrieved: mapping images retrieved per query; their points feed the refinement.
        approximation: the first pose: ``top1`` (the best image's) or ``weighted`` (average of
            the retrieved poses within ``weighted_max_distance`` of the best one, weighted by
            similarity; rotations by the weighted quaternion mean).
        weighted_max_distance: see ``approximation`` (metres); None (the default): derived from
            the map (:mod:`segloc.methods.segloc.defaults`), as are the other null options in metres.
        weighted_max_angle_deg: see ``approximation`` (degrees between optical axes).
        refine: run the label-based refinement; False returns the approximation ("retrieval only").
        refinement: options of :func:`segloc.methods.segloc.refine.refine_pose_with_labels`.
        labels_top_k: labels per point for the refinement; None for all the map stores (1 for
            ``top1`` maps, k for ``topk``, K for ``full``).
        max_points: at most this many points go into the refinement (a seeded random subset).
        frustum_margin: points are kept when they project within this fraction of the image
            size around the image at the initial pose (the pose will move).
        num_initializations: refine from up to this many starts: the approximation, then the
            poses of the next retrieved images (or the next priors given); 1: the first only.
        initialization_selection: how the starts are used: ``first_success`` refines from the
            next start only when the previous refinement failed and keeps the first success;
            ``lowest_cost`` refines from every start and keeps the successful refinement with
            the lowest final cost (mean robust cost of its points in view), which recovers
            queries whose first start converges to a wrong local minimum, at up to
            ``num_initializations`` times the refinement time. The default is three starts,
            lowest cost (its gain on the demo room: ``docs/experiments/segloc_training.md``).
        inference_max_edge: network input size for queries; None for the map's.
        temperature: softmax temperature for queries; None for the map's.
        device: torch device of the embedded network.
        runtime: its inference backend (``torch``, ``onnxruntime``, ``tensorrt``, ``auto``),
            threads and engine cache (:class:`segloc.runtime.RuntimeConfig`); the ONNX backends
            use the map's ``onnx`` layer when it has one (``segloc export MAP``).
        prior_radius: with a prior, the points of the mapping images within this distance of
            it (metres; None: derived from the map) ...
        prior_max_angle_deg: ... whose optical axes differ by at most this angle are used;
            when none qualifies, every map point in the prior's frustum is.
        seed: seed of the point subsampling (results are deterministic).
        tracking: the cheaper refinement of tracking (:class:`SegLocTrackingConfig`).
    """

    num_retrieved: int = option(5, ge=1)
    approximation: str = "top1"
    weighted_max_distance: float | None = option(None, ge=0, note="null: derived from the map")
    weighted_max_angle_deg: float = option(30.0, ge=0, le=180)
    refine: bool = True
    refinement: LabelRefinementConfig = field(default_factory=LabelRefinementConfig)
    labels_top_k: int | None = option(None, ge=1, note="null: all the map stores")
    max_points: int = option(4000, ge=6)
    frustum_margin: float = option(0.25, ge=0)
    num_initializations: int = option(3, ge=1)
    initialization_selection: str = "lowest_cost"
    inference_max_edge: int | None = option(None, ge=0, note="0: the image size, null: the map's")
    temperature: float | None = option(None, gt=0, note="null: the map's")
    device: str = "cpu"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    prior_radius: float | None = option(None, ge=0, note="null: derived from the map")
    prior_max_angle_deg: float = option(60.0, ge=0, le=180)
    seed: int = option(0, ge=0)
    tracking: SegLocTrackingConfig = field(default_factory=SegLocTrackingConfig)

    def __post_init__(self) -> None:
        check_options(self)
        if self.approximation not in APPROXIMATIONS:
            raise SeglocError(
                f"segloc localizer: unknown approximation {self.approximation!r}; valid values are: {', '.join(APPROXIMATIONS)}"
            )
        if self.initialization_selection not in INITIALIZATION_SELECTIONS:
            raise SeglocError(
                f"segloc localizer: unknown initialization_selection {self.initialization_selection!r}; "
                f"valid values are: {', '.join(INITIALIZATION_SELECTIONS)}"
            )


@dataclass
class Retrieval:
    """The retrieval stage's output: what the refinement starts from.

    Attributes:
        starts: ``cam_from_world`` starts, best first: the approximation, then the poses of
            retrieved images (see :meth:`SegLocLocalizer.retrieval_from_ids`).
        image_ids: (R,) int64 retrieved mapping image ids, best first; their points feed the
            refinement.
        similarities: (R,) float32 descriptor similarities of those images.
    """

    starts: list[Rigid3]
    image_ids: np.ndarray
    similarities: np.ndarray


def wire_precision(segmentation: Segmentation) -> Segmentation:
    """The segmentation with its probabilities rounded to float16, the precision they cross processes in.

    The split pipeline sends probabilities between processes as float16
    (:mod:`segloc.methods.segloc.packing`); rounding them the same way in one process makes
    the refinement see identical inputs whether the stages run in one process or three, so
    that offline evaluation measures what the robot's nodes compute.
    """
    levels = [torch.as_tensor(level).to(torch.float16).to(torch.float32) for level in segmentation.probabilities]
    return Segmentation(levels, segmentation.descriptor, segmentation.input_size)


def pose_to_list(cam_from_world: Rigid3) -> list[float]:
    """``[qw, qx, qy, qz, tx, ty, tz]`` of a ``cam_from_world`` (quaternion scalar first)."""
    return [float(v) for v in (*cam_from_world.quat_wxyz, *cam_from_world.translation)]


class _SegmentationsFromElsewhere:
    """The segmenter of a localizer loaded without its network (the split pipeline's retrieval and refinement processes)."""

    inference_max_edge = None

    def __init__(self, num_classes: int, descriptor_grid: tuple[int, ...]):
        self.num_classes = num_classes
        self.descriptor_grid = descriptor_grid

    def __call__(self, image: Any) -> Segmentation:
        raise SeglocError("this localizer was loaded without its network (with_network=False): it refines segmentations made elsewhere")


class SegLocLocalizer:
    """Localizes images against a SegLoc map (layers ``core``, ``segloc``, ``segloc_model``).

    The options in metres the config leaves null are derived from the map's scale, and a null
    residual gate from the map's residual calibration
    (:func:`segloc.methods.segloc.defaults.derive_options`); they are logged once.

    Args:
        core: the map core.
        layer: the ``segloc`` layer (labels, descriptors).
        segmenter: the query segmenter; it must give the map's K classes and descriptor size.
        config: localization options.

    Attributes:
        config: the options used: the given ones with every derived option filled in.
        map_scale: the map's :class:`segloc.maps.scale.MapScale`.
        derived_options: the options derived from it, ``{name under localize: value}``.
    """

    method = "segloc"

    def __init__(self, core: MapCore, layer: SegLocLayer, segmenter: Segmenter, config: SegLocLocalizerConfig | None = None):
        self.map_scale = map_scale(core)
        config, self.derived_options = derive_options(config or SegLocLocalizerConfig(), self.map_scale, layer.meta)
        self.config = config
        if self.derived_options:
            logger.info(
                "segloc localizer: options derived from the map (%s): %s",
                self.map_scale.describe(),
                ", ".join(f"{name} {value:g}" for name, value in self.derived_options.items()),
            )
        self.core = core
        self.layer = layer
        self.segmenter = segmenter
        if getattr(segmenter, "num_classes", layer.num_classes) != layer.num_classes:
            raise SeglocError(f"the segmenter gives {segmenter.num_classes} classes, but the map's labels have K = {layer.num_classes}")
        if config.labels_top_k is not None and config.labels_top_k > layer.max_top_k:
            raise SeglocError(
                f"localize.labels_top_k is {config.labels_top_k}, but the map stores {layer.max_top_k} label(s) per point "
                f"(store {layer.store!r}); lower it or rebuild the map with more labels"
            )
        order, self._offsets = core.observations_by_image()
        self._point_ids = core.observation_point_ids[order].astype(np.int64)
        self._centers = np.stack([image.cam_from_world.center for image in core.images])
        self._axes = np.stack([image.cam_from_world.rotation[2] for image in core.images])

    @classmethod
    def from_map(
        cls,
        map_path: str | Path | MapPackage,
        config: SegLocLocalizerConfig | None = None,
        segmenter: Segmenter | None = None,
        with_network: bool = True,
    ) -> SegLocLocalizer:
        """Load the localizer from a map package (a path or an opened package).

        Args:
            map_path: the map.
            config: localization options.
            segmenter: the query segmenter; None builds one from the network in the map, at
                the map's inference size and temperature unless ``config`` overrides them.
            with_network: False loads neither the network nor a segmenter: the localizer
                retrieves and refines segmentations computed elsewhere (the split pipeline's
                retrieval and refinement processes); :meth:`segment` then raises.
        """
        config = config or SegLocLocalizerConfig()
        package = map_path if isinstance(map_path, MapPackage) else MapPackage.open(map_path)
        core = read_core(package)
        layer = read_segloc_layer(package, core)
        if segmenter is None and not with_network:
            segmenter = _SegmentationsFromElsewhere(layer.num_classes, tuple(layer.meta.get("descriptor_grid") or DESCRIPTOR_GRID))
        if segmenter is None:
            meta = layer.meta
            max_edge = config.inference_max_edge if config.inference_max_edge is not None else meta.get("inference_max_edge")
            temperature = config.temperature if config.temperature is not None else (meta.get("temperature") or 1.0)
            grid = meta.get("descriptor_grid") or DESCRIPTOR_GRID
            model = read_segloc_model(package)
            onnx_path = read_onnx_layer(package, model) if config.runtime.backend != "torch" else None
            segmenter = NetworkSegmenter(model, max_edge, config.device, temperature, grid, config.runtime, onnx_path)
        logger.info(
            "segloc localizer: map %s with %d images, %d points (store %s, K = %d)",
            package.path,
            len(core.images),
            core.num_points,
            layer.store,
            layer.num_classes,
        )
        return cls(core, layer, segmenter, config)

    def inference_status(self) -> list[SessionStatus]:
        """How the segmentation network runs (backend, engine cache, fallback); [] without a network here."""
        session = getattr(self.segmenter, "session", None)
        return [session.status] if session is not None else []

    # --- stages -------------------------------------------------------------------------
    def retrieve(self, descriptor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The most similar mapping images: ids (R,) int64 best first, similarities (R,) float32."""
        if np.asarray(descriptor).size != self.layer.image_descriptors.shape[1]:
            raise SeglocError(
                f"the query descriptor has {np.asarray(descriptor).size} values, the map's {self.layer.image_descriptors.shape[1]}: "
                "the segmenter does not match the map (another network or descriptor grid?)"
            )
        return rank_by_similarity(descriptor, self.layer.image_descriptors, self.config.num_retrieved)

    def images_near(self, cam_from_world: Rigid3) -> np.ndarray:
        """Mapping image ids near a pose (``prior_radius``, ``prior_max_angle_deg``), nearest first."""
        distances = np.linalg.norm(self._centers - cam_from_world.center, axis=1)
        cos_angles = self._axes @ cam_from_world.rotation[2]
        near = np.flatnonzero((distances <= self.config.prior_radius) & (cos_angles >= np.cos(np.radians(self.config.prior_max_angle_deg))))
        return near[np.argsort(distances[near], kind="stable")]

    def select_points(
        self, image_ids: np.ndarray | None, camera: Camera, cam_from_world: Rigid3, max_points: int | None = None
    ) -> np.ndarray:
        """Point ids (N,) for the refinement: seen by ``image_ids`` (None: any), in the widened frustum of the pose.

        At most ``max_points`` (default: the config's) are kept (a random subset with the
        configured seed), sorted.
        """
        max_points = max_points or self.config.max_points
        if image_ids is None:
            candidates = np.arange(self.core.num_points)
        else:
            ranges = [self._point_ids[self._offsets[i] : self._offsets[i + 1]] for i in image_ids]
            candidates = np.unique(np.concatenate(ranges)) if ranges else np.zeros(0, np.int64)
        if len(candidates) == 0:
            return candidates
        points_cam = cam_from_world.transform_points(self.core.points3D[candidates])
        depth = points_cam[:, 2]
        in_front = depth > self.config.refinement.min_depth
        pixels = camera.project(points_cam[in_front])
        margin_x, margin_y = self.config.frustum_margin * camera.width, self.config.frustum_margin * camera.height
        with np.errstate(invalid="ignore"):
            inside = (
                (pixels[:, 0] >= -margin_x)
                & (pixels[:, 0] <= camera.width + margin_x)
                & (pixels[:, 1] >= -margin_y)
                & (pixels[:, 1] <= camera.height + margin_y)
            )
        candidates = candidates[in_front][inside]
        if len(candidates) > max_points:
            rng = np.random.default_rng(self.config.seed)
            candidates = np.sort(rng.choice(candidates, max_points, replace=False))
        return candidates

    # --- the pipeline -------------------------------------------------------------------
    @property
    def ingest_max_edge(self) -> int | None:
        """The longest image side the segmenter works at (camera ingest may shrink images to it first); None: any."""
        return getattr(self.segmenter, "inference_max_edge", None) or None

    def segment(self, image: np.ndarray) -> Segmentation:
        """Class probabilities and global descriptor of ``image`` (H, W, 3) RGB uint8, checked against the map's K.

        The probabilities are rounded to the wire precision (:func:`wire_precision`), in one
        process as in the split pipeline.
        """
        segmentation = self.segmenter(image)
        if segmentation.num_classes != self.layer.num_classes:
            raise SeglocError(f"the segmenter gave {segmentation.num_classes} classes, the map has K = {self.layer.num_classes}")
        return wire_precision(segmentation)

    def retrieval(self, descriptor: np.ndarray, timings: dict[str, float] | None = None) -> Retrieval:
        """The retrieval stage: the most similar mapping images and the refinement's starts.

        ``timings`` (optional) receives ``retrieve`` and ``approximate`` in seconds.
        """
        start = time.perf_counter()
        image_ids, similarities = self.retrieve(descriptor)
        middle = time.perf_counter()
        retrieval = self.retrieval_from_ids(image_ids, similarities)
        if timings is not None:
            timings["retrieve"], timings["approximate"] = middle - start, time.perf_counter() - middle
        return retrieval

    def retrieval_from_ids(self, image_ids: np.ndarray, similarities: np.ndarray) -> Retrieval:
        """The :class:`Retrieval` of retrieved image ids and similarities (e.g. received from a retrieval process).

        The starts are the approximation (:func:`approximate_pose`), then the poses of the
        retrieved images: from the second image on with the ``top1`` approximation (the best
        image's pose), from the first with ``weighted`` (the best image's own pose is then a
        start of its own).

        Raises:
            SeglocError: no ids, ids outside the map, or a different number of similarities.
        """
        image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        similarities = np.asarray(similarities, dtype=np.float32).reshape(-1)
        if len(image_ids) == 0 or len(image_ids) != len(similarities):
            raise SeglocError(
                f"a retrieval needs one similarity per retrieved image, got {len(image_ids)} ids and {len(similarities)} values"
            )
        if image_ids.min() < 0 or image_ids.max() >= len(self.core.images):
            raise SeglocError(f"retrieved image ids must be in [0, {len(self.core.images)}) for this map, got {image_ids.tolist()}")
        poses = [self.core.images[i].cam_from_world for i in image_ids]
        config = self.config
        approximation = approximate_pose(
            poses, similarities, config.approximation, config.weighted_max_distance, config.weighted_max_angle_deg
        )
        starts = [approximation, *(poses if config.approximation == "weighted" else poses[1:])]
        return Retrieval(starts, image_ids, similarities)

    def localize(self, image: np.ndarray, camera: Camera, prior: Rigid3 | None = None) -> LocalizationResult:
        """Localize ``image`` (H, W, 3) RGB uint8 taken by ``camera``.

        Args:
            image: the query image.
            camera: its camera (any COLMAP model).
            prior: an optional ``cam_from_world`` guess; retrieval is skipped and the
                refinement starts from it.

        Returns:
            The result. ``timings``: ``segment``, ``retrieve`` and ``approximate`` (without a
            prior), ``refine`` (with the point selection; absent with ``refine: false``).
            ``info``: ``initialization`` (``retrieval``, ``prior``, or ``tracking`` from :meth:`track`), ``retrieved`` (mapping
            image names, best first) and ``similarities``, ``approximation`` (the first pose,
            ``[qw, qx, qy, qz, tx, ty, tz]`` of ``cam_from_world``), ``num_points`` (points
            given to the refinement), ``refinement`` (the summary of the kept refinement, or
            of the last one tried when none succeeded, see
            :meth:`segloc.methods.segloc.refine.RefinementResult.info`, with ``attempts``, the
            refinements run, ``start``, the index of its start, and ``start_costs``, the final
            cost of each start's refinement or None where it failed),
            ``failure_reason`` (None on success).
        """
        segmentation, timings = self._segment_for(image, camera)
        return self.localize_segmentation(segmentation, camera, prior, timings)

    def localize_retrieved(self, image: np.ndarray, camera: Camera, image_ids: np.ndarray, similarities: np.ndarray) -> LocalizationResult:
        """Localize ``image`` from a retrieval made elsewhere (e.g. the map's ``sfrs`` layer, :mod:`segloc.localize.retrieval`).

        The approximation and the refinement's starts come from ``image_ids`` (R,) (core order,
        best first) and their ``similarities`` (R,) as from this map's own retrieval
        (:meth:`retrieval_from_ids`); the result is as :meth:`localize`'s without a prior.
        """
        segmentation, timings = self._segment_for(image, camera)
        return self.localize_segmentation(segmentation, camera, None, timings, self.retrieval_from_ids(image_ids, similarities))

    def _segment_for(self, image: np.ndarray, camera: Camera) -> tuple[Segmentation, dict[str, float]]:
        """The segmentation of an (H, W, 3) image that must fit ``camera``, and ``{"segment": seconds}``."""
        image = np.asarray(image)
        if image.ndim < 2 or (image.shape[1], image.shape[0]) != (camera.width, camera.height):
            raise SeglocError(f"image of shape {image.shape} does not match the camera size {camera.width}x{camera.height}")
        start = time.perf_counter()
        segmentation = self.segment(image)
        timings = {"segment": time.perf_counter() - start}
        return segmentation, timings

    def localize_segmentation(
        self,
        segmentation: Segmentation,
        camera: Camera,
        prior: Rigid3 | Sequence[Rigid3] | None = None,
        timings: dict[str, float] | None = None,
        retrieval: Retrieval | None = None,
    ) -> LocalizationResult:
        """The pipeline after segmentation (what a separate refinement process runs).

        Args:
            segmentation: the query's, from :meth:`segment` (or received from another process).
            camera: the query camera, at the size of the image that was segmented.
            prior: None (retrieval with the segmentation's descriptor), one ``cam_from_world``
                guess, or several best first (e.g. a retrieval process's output); with priors
                the refinement starts from the first (then the next, up to
                ``num_initializations``) and uses the points of the mapping images near the first.
            timings: stage timings measured so far (e.g. ``segment``), extended in place.
            retrieval: the retrieval stage's output when it ran elsewhere (a retrieval
                process, :meth:`retrieval_from_ids`); with ``prior`` None and no retrieval,
                retrieval runs here on the segmentation's descriptor. Either way the result is
                the same for the same inputs.

        Returns:
            As :meth:`localize`.
        """
        config = self.config
        timings = {} if timings is None else timings
        info = self._new_info("retrieval" if prior is None else "prior")
        self._check_segmentation(segmentation)

        if prior is not None and retrieval is not None:
            raise SeglocError("give pose priors or a retrieval to refine from, not both")
        if prior is None:
            if retrieval is None:
                retrieval = self.retrieval(segmentation.descriptor, timings)
            starts = list(retrieval.starts)
            info["retrieved"] = [self.core.images[i].name for i in retrieval.image_ids]
            info["similarities"] = [round(float(s), 6) for s in retrieval.similarities]
            point_images: np.ndarray | None = retrieval.image_ids
        else:
            starts = _checked_priors(prior)
            point_images = self._images_for_prior(starts[0])
        approximation = starts[0]
        starts = starts[: config.num_initializations]
        info["approximation"] = pose_to_list(approximation)
        if not config.refine:
            return LocalizationResult(approximation, None, 0, timings, info)

        start = time.perf_counter()
        estimate = self._refine_from(
            segmentation, camera, starts, point_images, config.refinement, config.max_points, config.initialization_selection, info
        )
        timings["refine"] = time.perf_counter() - start

        if estimate is None:
            logger.debug("segloc: no pose (%s)", info["failure_reason"])
            return LocalizationResult(None, timings=timings, info=info)
        return LocalizationResult(estimate.cam_from_world, estimate.covariance, estimate.num_points_used, timings, info)

    # --- tracking ------------------------------------------------------------------------
    def track(self, image: np.ndarray, camera: Camera, predicted: Rigid3) -> LocalizationResult:
        """Track ``image`` (H, W, 3) RGB uint8 from the ``predicted`` ``cam_from_world`` (:class:`segloc.localize.tracking.Tracker`).

        Segments the image, then :meth:`track_segmentation`. ``timings``: ``segment``,
        ``track`` (the tracked refinement with its point selection), and after a failed
        tracking those of a relocalization (``retrieve``, ``approximate``, ``refine``).
        """
        segmentation, timings = self._segment_for(image, camera)
        return self.track_segmentation(segmentation, camera, predicted, timings)

    def track_segmentation(
        self,
        segmentation: Segmentation,
        camera: Camera,
        predicted: Rigid3,
        timings: dict[str, float] | None = None,
        retrieval: Retrieval | None = None,
    ) -> LocalizationResult:
        """Refine once from ``predicted`` with ``localize.tracking``'s schedule; relocalize when that fails.

        Args:
            segmentation, camera, timings: as :meth:`localize_segmentation`.
            predicted: the ``cam_from_world`` odometry predicts.
            retrieval: the frame's retrieval when it ran elsewhere (the split pipeline), for
                the relocalization after a failed tracking; None: retrieval runs here then.

        Returns:
            As :meth:`localize`, with ``info["initialization"]`` ``tracking`` (or ``retrieval``
            after the fallback) and ``info["tracking"]``: ``mode`` (``tracked`` or
            ``relocalized``) and ``failure`` (why tracking failed, None when it did not).
            With ``refine: false`` there is nothing to track: the frame relocalizes.
        """
        config = self.config
        timings = {} if timings is None else timings
        self._check_segmentation(segmentation)
        (predicted,) = _checked_priors(predicted)
        if not config.refine:
            return self.localize_segmentation(segmentation, camera, None, timings, retrieval=retrieval)
        tracking = config.tracking
        refinement = dataclasses.replace(
            config.refinement,
            levels=tracking.levels,
            num_iterations=tracking.num_iterations,
            max_translation_change=min(tracking.max_translation_change, config.refinement.max_translation_change),
            max_rotation_change_deg=min(tracking.max_rotation_change_deg, config.refinement.max_rotation_change_deg),
        )
        info = self._new_info("tracking")
        info["approximation"] = pose_to_list(predicted)
        start = time.perf_counter()
        point_images = self._images_for_prior(predicted)
        estimate = self._refine_from(
            segmentation, camera, [predicted], point_images, refinement, tracking.max_points or config.max_points, "first_success", info
        )
        timings["track"] = time.perf_counter() - start
        if estimate is not None:
            info["tracking"] = {"mode": "tracked", "failure": None}
            return LocalizationResult(estimate.cam_from_world, estimate.covariance, estimate.num_points_used, timings, info)
        logger.debug("segloc: tracking failed (%s), relocalizing", info["failure_reason"])
        result = self.localize_segmentation(segmentation, camera, None, timings, retrieval=retrieval)
        result.info["tracking"] = {"mode": "relocalized", "failure": info["failure_reason"]}
        return result

    # --- helpers -------------------------------------------------------------------------
    @staticmethod
    def _new_info(initialization: str) -> dict[str, Any]:
        return {
            "initialization": initialization,
            "retrieved": [],
            "similarities": [],
            "approximation": None,
            "num_points": 0,
            "refinement": None,
            "failure_reason": None,
        }

    def _check_segmentation(self, segmentation: Segmentation) -> None:
        if segmentation.num_classes != self.layer.num_classes:
            raise SeglocError(f"the segmentation has {segmentation.num_classes} classes, the map has K = {self.layer.num_classes}")

    def _images_for_prior(self, cam_from_world: Rigid3) -> np.ndarray | None:
        """The mapping images whose points feed a refinement from a prior: the nearest ``num_retrieved``, None (any) when none is near."""
        near = self.images_near(cam_from_world)
        return near[: self.config.num_retrieved] if len(near) else None

    def _refine_from(
        self,
        segmentation: Segmentation,
        camera: Camera,
        starts: list[Rigid3],
        point_images: np.ndarray | None,
        refinement: LabelRefinementConfig,
        max_points: int,
        selection: str,
        info: dict[str, Any],
    ) -> RefinementResult | None:
        """Refine from each start (``selection``, see ``initialization_selection``); the kept refinement, None when none succeeded.

        Fills ``info``'s ``num_points``, ``refinement`` and ``failure_reason`` (see :meth:`localize`).
        """
        estimate = None
        attempts = 0
        keep_best = selection == "lowest_cost"
        start_costs: list[float | None] = []  # final cost of each start's refinement, None when it failed
        for index, initial in enumerate(starts):
            attempts += 1
            point_ids = self.select_points(point_images, camera, initial, max_points)
            start_costs.append(None)
            if len(point_ids) < refinement.min_points:
                if estimate is None:
                    info["num_points"] = int(len(point_ids))
                    info["failure_reason"] = "too few map points in view of the initial pose"
                continue
            labels, weights = self.layer.labels(self.config.labels_top_k, point_ids)
            result = refine_pose_with_labels(
                segmentation.probabilities,
                camera,
                self.core.points3D[point_ids],
                labels,
                initial,
                refinement,
                label_weights=weights,
            )
            start_costs[-1] = result.cost if result.success else None
            if result.success and (estimate is None or result.cost < estimate.cost):
                estimate = result
                info["num_points"] = int(len(point_ids))
                info["refinement"] = {**result.info(), "attempts": attempts, "start": index}
                info["failure_reason"] = None
            elif estimate is None:
                info["num_points"] = int(len(point_ids))
                info["refinement"] = {**result.info(), "attempts": attempts, "start": index}
                info["failure_reason"] = f"refinement failed: {result.failure_reason}"
            if estimate is not None and not keep_best:
                break
        if info["refinement"] is not None:
            info["refinement"]["attempts"] = attempts
            info["refinement"]["start_costs"] = start_costs
        return estimate


def _checked_priors(prior: Rigid3 | Sequence[Rigid3]) -> list[Rigid3]:
    """``prior`` as a non-empty list of finite ``cam_from_world`` (SeglocError otherwise)."""
    starts = [prior] if isinstance(prior, Rigid3) else list(prior)
    if not starts or not all(isinstance(p, Rigid3) for p in starts):
        raise SeglocError(f"the prior must be a Rigid3 cam_from_world or a non-empty list of them, got {prior!r:.80}")
    if not all(np.all(np.isfinite(p.matrix())) for p in starts):
        raise SeglocError("the pose prior is not finite (NaN or infinity)")
    return starts
