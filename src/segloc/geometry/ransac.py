"""Confidence-guided sampling for absolute pose RANSAC: PROSAC over correspondences ranked by weight (poselib).

:func:`segloc.geometry.pose.estimate_absolute_pose` samples uniformly (pycolmap's LO-RANSAC) unless
its config says ``sampling: prosac``; then it calls :func:`prosac_absolute_pose` here with one
weight per correspondence (higher: more likely right, e.g. SLD*'s detection confidence ``v^2``).

PROSAC (Chum and Matas, CVPR 2005) draws each minimal P3P sample from the top ``n`` correspondences
sorted by decreasing weight, the ``n``-th always in it, and grows ``n`` on a schedule that reaches
all correspondences after ``T_N`` samples (here ``max_iterations``); past ``T_N`` it samples
uniformly. Only the order of the weights matters, not their values; ties keep the input order.
The solver, scoring (MSAC on the reprojection error), local optimisation and seeded
random numbers are poselib's LO-RANSAC (``progressive_sampling``); the stopping rule is its usual
one, from the inlier ratio of the best pose (as in pycolmap), so the gain is that a pose
is found in fewer samples: with a small ``max_iterations`` PROSAC succeeds where uniform sampling
runs out; with the default budget both run about as many iterations.

:func:`prosac_absolute_pose` takes pycolmap's ``RANSACOptions`` so that both samplers read the same
threshold, confidence, trial bounds and seed, and it skips poselib's final refinement: the
caller refines on the inliers with pycolmap, as it does after uniform sampling.
"""

from __future__ import annotations

import math

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3

#: ``PnPConfig.sampling`` values: ``uniform`` (pycolmap LO-RANSAC) and ``prosac`` (this module).
SAMPLINGS = ("uniform", "prosac")

#: Correspondences in a minimal sample (P3P).
P3P_SAMPLE_SIZE = 3


def check_weights(weights: np.ndarray, count: int) -> np.ndarray:
    """Check per-correspondence weights: (count,) finite, non-negative, not all zero.

    Returns:
        (count,) float64.

    Raises:
        SeglocError: what is wrong with ``weights``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (count,):
        raise SeglocError(f"expected one weight per correspondence, shape ({count},), got {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise SeglocError("correspondence weights contain NaN or infinity")
    if np.any(weights < 0):
        raise SeglocError(f"correspondence weights must be >= 0, got a minimum of {weights.min()}")
    if count and not np.any(weights > 0):
        raise SeglocError("correspondence weights are all zero: no correspondence is trusted; pass weights=None for no ranking")
    return weights


def ransac_trials(inlier_ratio: float, confidence: float, multiplier: float, sample_size: int = P3P_SAMPLE_SIZE) -> float:
    """Samples needed to draw one all-inlier sample with probability ``confidence``, times ``multiplier`` (as COLMAP counts them)."""
    miss_probability = 1.0 - inlier_ratio**sample_size
    if miss_probability <= 0:
        return 1.0
    if miss_probability >= 1 or confidence >= 1:
        return math.inf
    return math.ceil(math.log(1.0 - confidence) / math.log(miss_probability) * multiplier)


def prosac_absolute_pose(
    points2D: np.ndarray,
    points3D: np.ndarray,
    camera: Camera,
    weights: np.ndarray | None,
    options,
) -> dict | None:
    """PROSAC LO-RANSAC P3P (poselib) over correspondences ranked by decreasing ``weights``; no final refinement.

    Args:
        points2D: (N, 2) pixels, COLMAP convention; points3D: (N, 3) world points (both checked
            by the caller).
        camera: the camera of the image (any COLMAP model of :mod:`segloc.geometry.camera`).
        weights: (N,) confidences (:func:`check_weights`); None ranks by the input order.
        options: ``pycolmap.RANSACOptions``: ``max_error`` (pixels), ``confidence``,
            ``min_num_trials``, ``max_num_trials`` (also PROSAC's ``T_N``), capped as pycolmap does
            by the trials ``min_inlier_ratio`` needs, ``dyn_num_trials_multiplier``, and
            ``random_seed`` (-1: a new seed each call).

    Returns:
        None when no pose has an inlier, else a dict as pycolmap's: ``cam_from_world``
        (``pycolmap.Rigid3d``), ``num_inliers``, ``inlier_mask`` (N,) bool in the input order,
        and ``iterations`` (samples drawn).
    """
    try:
        import poselib
    except ImportError as exc:
        raise SeglocError(
            "PnP sampling 'prosac' needs poselib: pip install 'segloc_ros[prosac]' (or poselib), or set sampling: uniform"
        ) from exc

    order = np.argsort(-weights, kind="stable") if weights is not None else np.arange(len(points2D))
    max_trials = min(options.max_num_trials, ransac_trials(options.min_inlier_ratio, options.confidence, options.dyn_num_trials_multiplier))
    max_trials = max(int(max_trials), 1)
    seed = options.random_seed if options.random_seed >= 0 else int(np.random.default_rng().integers(0, 2**31))
    ransac_options = {
        "max_reproj_error": options.max_error,
        "success_prob": options.confidence,
        "min_iterations": min(options.min_num_trials, max_trials),
        "max_iterations": max_trials,
        "dyn_num_trials_mult": options.dyn_num_trials_multiplier,
        "seed": seed,
        "progressive_sampling": True,
        "max_prosac_iterations": max_trials,
    }
    pose, info = poselib.estimate_absolute_pose(
        np.ascontiguousarray(points2D[order]),
        np.ascontiguousarray(points3D[order]),
        camera.to_dict(),
        ransac_options,
        {"max_iterations": 0},
    )
    if info["num_inliers"] == 0:
        return None
    inlier_mask = np.zeros(len(points2D), dtype=bool)
    inlier_mask[order] = np.asarray(info["inliers"], dtype=bool)
    cam_from_world = Rigid3(np.asarray(pose.q, dtype=np.float64), np.asarray(pose.t, dtype=np.float64))  # poselib: q is w, x, y, z
    return {
        "cam_from_world": cam_from_world.to_pycolmap(),
        "num_inliers": int(inlier_mask.sum()),
        "inlier_mask": inlier_mask,
        "iterations": int(info["iterations"]),
    }
