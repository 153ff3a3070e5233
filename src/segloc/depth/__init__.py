"""Monocular depth estimation and depth completion against the map's sparse depth.

- :mod:`segloc.depth.estimator`: the :class:`DepthEstimator` interface (image -> relative
  depth), over a torch checkpoint (the project's :class:`segloc.models.depth.DepthNet` or a
  user's) or a user's ONNX model;
- :mod:`segloc.depth.completion`: the per-image ``MLPRegressor`` from monocular depth and pixel
  features to the map's sparse depth, its baselines, and the ``depth_of`` callback for SLD*
  visibility labels (:func:`completed_depth_loader`).
"""

from segloc.depth.completion import (
    CompletionConfig,
    DepthCompletion,
    complete_depth,
    completed_depth_loader,
    measured_depth,
    nearest_depth,
    scale_aligned_depth,
    sparse_depth,
)
from segloc.depth.estimator import (
    DepthEstimator,
    DepthEstimatorConfig,
    OnnxDepthEstimator,
    TorchDepthEstimator,
    load_depth_estimator,
)

__all__ = [
    "CompletionConfig",
    "DepthCompletion",
    "DepthEstimator",
    "DepthEstimatorConfig",
    "OnnxDepthEstimator",
    "TorchDepthEstimator",
    "complete_depth",
    "completed_depth_loader",
    "load_depth_estimator",
    "measured_depth",
    "nearest_depth",
    "scale_aligned_depth",
    "sparse_depth",
]
