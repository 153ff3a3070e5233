"""Depth completion: a per-image regressor from monocular depth (and pixel features) to the map's sparse depth.

As in "Faster training of the Scene Landmark Detection" (Bisanovic et al.), per mapping image:

1. the map's sparse depth: the core's 3D points observed in the image, their depth along the
   optical axis at their observation pixels (:func:`sparse_depth`);
2. a monocular depth estimate of the image (:mod:`segloc.depth.estimator`, relative depth);
3. a scikit-learn ``MLPRegressor(hidden_layer_sizes=(100, 50), max_iter=1000, random_state=0)``
   fitted on 80 % of the sparse pixels, from features (the MDE depth, the normalised pixel
   coordinates u / W and v / H, optionally RGB / 255; standardised) to the metric depth; the
   other 20 % measure it (``holdout_mae``, ``holdout_rmse``);
4. the completed depth map: the map's depth at the pixels it covers, the regressor's
   prediction at every other pixel (:func:`complete_depth`).

Baselines for evaluation: :func:`scale_aligned_depth` (the MDE times one scale from the sparse
depth, median of ratios or least squares) and :func:`nearest_depth` (nearest sparse pixel).

:func:`completed_depth_loader` is the ``depth_of(image_id)`` callback of
:func:`segloc.methods.sld.landmarks.visibility_labels` for datasets without depth images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segloc.config import check_options, option
from segloc.data.dataset import Dataset
from segloc.depth.estimator import DepthEstimator
from segloc.errors import SeglocError
from segloc.maps.core import MapCore

logger = logging.getLogger("segloc")

SCALE_METHODS = ("median", "least_squares")


@dataclass
class CompletionConfig:
    """Options of :func:`complete_depth` (the seed's regressor by default).

    Attributes:
        hidden_layer_sizes: the MLP's hidden layers.
        max_iter: the MLP's iterations (epochs of Adam) at most.
        random_state: seed of the MLP's initialisation and of the 80/20 split.
        holdout_fraction: fraction of the sparse pixels held out to measure the regressor.
        pixel_features: add u / W and v / H to the features.
        color_features: add RGB / 255 to the features (needs the image).
        min_points: fewer sparse pixels than this: no completion (None from the loader).
    """

    hidden_layer_sizes: tuple[int, ...] = (100, 50)
    max_iter: int = option(1000, ge=1)
    random_state: int = 0
    holdout_fraction: float = option(0.2, ge=0, lt=1)
    pixel_features: bool = True
    color_features: bool = False
    min_points: int = option(10, ge=2)

    def __post_init__(self) -> None:
        check_options(self, "depth completion")
        if not self.hidden_layer_sizes or min(self.hidden_layer_sizes) < 1:
            raise SeglocError(f"depth completion: hidden_layer_sizes must be positive layer widths, got {self.hidden_layer_sizes}")


@dataclass
class DepthCompletion:
    """What :func:`complete_depth` returns.

    Attributes:
        depth: (H, W) float32 metric depth: the map's at the covered pixels, the regressor's elsewhere.
        covered: (H, W) bool, the pixels that hold a sparse depth of the map.
        holdout_mae, holdout_rmse: the regressor's error on the held-out sparse pixels (metres;
            NaN without a held-out set).
        num_train, num_holdout: sparse pixels the regressor was fitted on / measured on.
    """

    depth: np.ndarray
    covered: np.ndarray
    holdout_mae: float
    holdout_rmse: float
    num_train: int
    num_holdout: int


def sparse_depth(core: MapCore, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The map's sparse depth in one mapping image.

    Returns:
        points2D (N, 2) float64 observation pixels (COLMAP convention), depth (N,) float64 along
        the optical axis in metres, of the core points observed in the image in front of it.
    """
    if not 0 <= image_id < len(core.images):
        raise SeglocError(f"image id {image_id} is not a mapping image of the core (0 ... {len(core.images) - 1})")
    mask = core.observation_image_ids == image_id
    points_cam = core.images[image_id].cam_from_world.transform_points(core.points3D[core.observation_point_ids[mask]])
    in_front = points_cam[:, 2] > 0
    return core.observation_xy[mask][in_front].astype(np.float64), points_cam[in_front, 2]


def _pixel_indices(points2D: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns (COLMAP pixel convention: floor) and an inside mask of (N, 2) pixel coordinates."""
    columns = np.floor(points2D[:, 0]).astype(np.int64)
    rows = np.floor(points2D[:, 1]).astype(np.int64)
    inside = (columns >= 0) & (rows >= 0) & (columns < shape[1]) & (rows < shape[0])
    return rows, columns, inside


def _check_sparse(mde: np.ndarray, points2D: np.ndarray, depths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked inputs: (H, W) MDE, and the rows, columns and depths of the finite, positive sparse pixels inside it."""
    mde = np.asarray(mde)
    points2D = np.asarray(points2D, dtype=np.float64).reshape(-1, 2)
    depths = np.asarray(depths, dtype=np.float64).reshape(-1)
    if mde.ndim != 2:
        raise SeglocError(f"depth completion: the monocular depth must be (H, W), got shape {mde.shape}")
    if len(points2D) != len(depths):
        raise SeglocError(f"depth completion: {len(points2D)} sparse pixels but {len(depths)} depths")
    rows, columns, inside = _pixel_indices(points2D, mde.shape)
    keep = inside & np.isfinite(depths) & (depths > 0)
    return mde, rows[keep], columns[keep], depths[keep]


def _features(mde: np.ndarray, rows: np.ndarray, columns: np.ndarray, image: np.ndarray | None, config: CompletionConfig) -> np.ndarray:
    """(N, F) features of the pixels (rows, columns): MDE depth, [u / W, v / H], [RGB / 255]."""
    height, width = mde.shape
    features = [mde[rows, columns].astype(np.float64)[:, None]]
    if config.pixel_features:
        features.append(np.stack([(columns + 0.5) / width, (rows + 0.5) / height], axis=1))
    if config.color_features:
        if image is None:
            raise SeglocError("depth completion: color_features needs the image")
        features.append(image[rows, columns].astype(np.float64) / 255.0)
    return np.concatenate(features, axis=1)


def complete_depth(
    mde: np.ndarray, points2D: np.ndarray, depths: np.ndarray, image: np.ndarray | None = None, config: CompletionConfig | None = None
) -> DepthCompletion:
    """Complete the sparse depth of one image with a regressor on the monocular depth (module docstring).

    Args:
        mde: (H, W) relative depth of the image from a :class:`~segloc.depth.estimator.DepthEstimator`.
        points2D: (N, 2) sparse pixels (COLMAP convention: pixel (c, r) covers [c, c + 1) x [r, r + 1)).
        depths: (N,) metric depth at them (non-finite, non-positive or outside the image: ignored).
        image: (H, W, 3) uint8 RGB, for ``color_features``.
        config: the regressor's options.

    Returns:
        :class:`DepthCompletion`; the map's depth is kept at the covered pixels (several points
        in one pixel: their mean).

    Raises:
        SeglocError: bad shapes, or fewer than ``min_points`` usable sparse pixels.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    config = config or CompletionConfig()
    mde, rows, columns, depths = _check_sparse(mde, points2D, depths)
    if image is not None and np.asarray(image).shape[:2] != mde.shape:
        raise SeglocError(f"depth completion: the image is {np.asarray(image).shape[:2]}, the monocular depth {mde.shape}")
    if len(depths) < config.min_points:
        raise SeglocError(f"depth completion: {len(depths)} usable sparse pixels, fewer than min_points = {config.min_points}")
    height, width = mde.shape
    # One sample per covered pixel: the mean depth of the points in it.
    flat = rows * width + columns
    pixels, inverse = np.unique(flat, return_inverse=True)
    pixel_depth = np.bincount(inverse, weights=depths) / np.bincount(inverse)
    pixel_rows, pixel_columns = pixels // width, pixels % width
    features = _features(mde, pixel_rows, pixel_columns, image, config)

    order = np.random.default_rng(config.random_state).permutation(len(pixels))
    num_holdout = int(round(config.holdout_fraction * len(pixels))) if len(pixels) >= 2 * config.min_points else 0
    holdout, train = order[:num_holdout], order[num_holdout:]
    feature_scaler = StandardScaler().fit(features[train])
    target_mean, target_std = float(pixel_depth[train].mean()), float(pixel_depth[train].std()) or 1.0
    regressor = MLPRegressor(
        hidden_layer_sizes=tuple(config.hidden_layer_sizes), max_iter=config.max_iter, random_state=config.random_state
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        regressor.fit(feature_scaler.transform(features[train]), (pixel_depth[train] - target_mean) / target_std)

    def predict(values: np.ndarray) -> np.ndarray:
        return regressor.predict(feature_scaler.transform(values)) * target_std + target_mean

    mae = rmse = float("nan")
    if num_holdout:
        errors = predict(features[holdout]) - pixel_depth[holdout]
        mae, rmse = float(np.abs(errors).mean()), float(np.sqrt(np.mean(errors**2)))
    all_rows, all_columns = np.divmod(np.arange(height * width), width)
    completed = predict(_features(mde, all_rows, all_columns, image, config)).reshape(height, width)
    minimum = 0.5 * float(pixel_depth.min())  # an MLP extrapolates linearly: keep its depth positive
    completed = np.maximum(completed, minimum)
    completed.flat[pixels] = pixel_depth
    covered = np.zeros((height, width), bool)
    covered.flat[pixels] = True
    return DepthCompletion(completed.astype(np.float32), covered, mae, rmse, len(train), num_holdout)


def scale_aligned_depth(mde: np.ndarray, points2D: np.ndarray, depths: np.ndarray, method: str = "median") -> np.ndarray:
    """The monocular depth times one scale fitted to the sparse depth (a baseline).

    Args:
        mde: (H, W) relative depth.
        points2D, depths: (N, 2) sparse pixels and (N,) their metric depth.
        method: ``median`` (scale = median of depth / MDE) or ``least_squares`` (the scale
            minimising the squared depth error).

    Returns:
        (H, W) float32 metric depth.
    """
    if method not in SCALE_METHODS:
        raise SeglocError(f"unknown scale method {method!r}; valid values are: {', '.join(SCALE_METHODS)}")
    mde, rows, columns, depths = _check_sparse(mde, points2D, depths)
    predicted = mde[rows, columns].astype(np.float64)
    valid = predicted > 0
    if not valid.any():
        raise SeglocError("scale alignment: no sparse pixel has a positive monocular depth")
    predicted, depths = predicted[valid], depths[valid]
    if method == "median":
        scale = float(np.median(depths / predicted))
    else:
        scale = float(predicted @ depths / (predicted @ predicted))
    return (mde * scale).astype(np.float32)


def nearest_depth(shape: tuple[int, int], points2D: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Every pixel of an (H, W) image gets the depth of its nearest sparse pixel (a baseline; scipy's KD-tree).

    Returns:
        (H, W) float32 depth.
    """
    from scipy.spatial import cKDTree

    _, rows, columns, depths = _check_sparse(np.zeros(shape, np.float32), points2D, depths)
    if not len(depths):
        raise SeglocError("nearest-neighbour filling: no sparse pixel inside the image")
    height, width = shape
    all_rows, all_columns = np.divmod(np.arange(height * width), width)
    _, nearest = cKDTree(np.stack([rows, columns], axis=1)).query(np.stack([all_rows, all_columns], axis=1))
    return depths[nearest].reshape(height, width).astype(np.float32)


def depth_path(dataset: Dataset, name: str) -> Path:
    """Where a dataset image's depth map lies: ``DATASET/depth/<name>`` (as ``segloc synth`` writes it)."""
    return Path(dataset.root) / "depth" / name


def measured_depth(dataset: Dataset, name: str) -> np.ndarray | None:
    """Depth in metres (H, W) float32 of a dataset image from :func:`depth_path` (uint16 millimetres, 0: none), or None.

    Raises:
        SeglocError: the file exists but does not read as a single-channel 16-bit image.
    """
    path = depth_path(dataset, name)
    if not path.is_file():
        return None
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
        raise SeglocError(f"depth image {path} is not a single-channel 16-bit PNG in millimetres")
    return raw.astype(np.float32) / 1000.0


def completed_depth_loader(
    dataset: Dataset,
    core: MapCore,
    estimator: DepthEstimator,
    config: CompletionConfig | None = None,
    prefer_measured: bool = True,
) -> Callable[[int], np.ndarray | None]:
    """A ``depth_of(image_id)`` callback for :func:`segloc.methods.sld.landmarks.visibility_labels`.

    Args:
        dataset: the dataset whose mapping images the core holds (same order).
        core: its map core (:func:`segloc.maps.build.build_core`).
        estimator: the monocular depth estimator.
        config: the regressor's options.
        prefer_measured: return the dataset's depth image (``depth/<name>``) where it has one.

    Returns:
        image id -> (H, W) depth in metres at the camera's size (0 where none), or None when the
        image has too few sparse points to complete.

    Raises:
        SeglocError: the core's images are not the dataset's mapping images.
    """
    if [image.name for image in core.images] != [record.name for record in dataset.mapping]:
        raise SeglocError(f"the core given to the depth completion is not that of {dataset.root}'s mapping images")
    config = config or CompletionConfig()

    def depth_of(image_id: int) -> np.ndarray | None:
        record = core.images[image_id]
        if prefer_measured:
            measured = measured_depth(dataset, record.name)
            if measured is not None:
                return measured
        points2D, depths = sparse_depth(core, image_id)
        if len(depths) < config.min_points:
            logger.warning(
                "depth completion: %s has %d sparse points (< %d); its depth stays unknown", record.name, len(depths), config.min_points
            )
            return None
        image = dataset.load_image(record.name)
        if image.shape[:2] != (record.camera.height, record.camera.width):
            raise SeglocError(
                f"{record.name} is {image.shape[1]}x{image.shape[0]}, its camera {record.camera.width}x{record.camera.height}"
            )
        completion = complete_depth(estimator.estimate(image), points2D, depths, image, config)
        logger.debug(
            "completed depth of %s: held-out MAE %.3f m over %d points", record.name, completion.holdout_mae, completion.num_holdout
        )
        return completion.depth

    return depth_of
