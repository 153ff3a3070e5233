"""SegLoc's residual gate, derived from the map's own network.

The label refinement refuses a pose whose median residual ``-log p`` (points in view, finest
level) is above ``refinement.max_final_residual`` (``high_residual``): the labels do not agree
with the query there. What "agree" means depends on the network: a network that spreads its
pixels over many classes (Sinkhorn targets, 100 classes in use) leaves larger residuals at
the *true* pose than one that uses a few classes (DEC targets), so one fixed value refuses
good poses of the first and accepts wrong ones of the second (the measurement:
``docs/experiments/segloc_training.md``, "A residual gate from the map").

So the map measures its network at build time (:func:`calibrate_residuals`). For up to
``residual_calibration_images`` mapping images spread over the map, as if each were a query
taken under the mapping conditions:

- the points are those the localizer would refine with: seen by the image's nearest *other*
  mapping images (the image itself is left out, as a query is never a mapping image), in its
  frustum (:meth:`SegLocLocalizer.select_points`);
- ``true_pose``: the median residual of those points at the image's true pose, with the image's
  own segmentation (:func:`segloc.methods.segloc.refine.residuals_at_pose`): how well labels
  and segmentation agree when the geometry is right;
- ``chance``: the same with the labels shuffled among the points: the residual of labels that
  do not agree with the image at all, with the map's label frequencies.

The map keeps the medians over the images (``segloc/meta.json``: ``residual_calibration``),
and the localizer derives the gate, unless the config sets ``max_final_residual``, as

    ``max_final_residual = true_pose + GATE_FRACTION (chance - true_pose)``

a fixed fraction of the way from "the labels fit" to "the labels do not fit at all".
:data:`GATE_FRACTION` = 0.3 reproduces the hand-set 2.0 on the demo room's DEC network (1.93)
and gives the Sinkhorn network of the same room 3.25; on the other maps measured it refuses
more of the wrong poses than 2.0 did (``docs/experiments/segloc_training.md``). A map without
a calibration (built before it existed, relabelled to another store, or built with
``residual_calibration_images: 0``), or a localizer that uses another number of labels per
point than the calibration did, gets the fixed :data:`FIXED_GATE`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from segloc.methods.segloc.refine import DEFAULT_MAX_FINAL_RESIDUAL, residuals_at_pose

if TYPE_CHECKING:
    from segloc.methods.segloc.localizer import SegLocLocalizer

logger = logging.getLogger("segloc")

__all__ = ["CALIBRATION_KEY", "FIXED_GATE", "GATE_FRACTION", "calibrate_residuals", "residual_gate"]

GATE_FRACTION = 0.3
"""Where the derived gate sits between the true-pose and the chance residual (module docstring)."""
FIXED_GATE = DEFAULT_MAX_FINAL_RESIDUAL
"""``max_final_residual`` without a calibration (2.0: a median label probability below 0.135 fails)."""
CALIBRATION_KEY = "residual_calibration"
"""The entry of the ``segloc`` layer's ``meta.json`` that holds the calibration."""


def calibrate_residuals(
    localizer: SegLocLocalizer,
    load_image: Callable[[str], np.ndarray],
    num_images: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Measure the map's residuals at true poses and by chance (module docstring).

    Args:
        localizer: a localizer of the map (its core, labels and segmenter: the map's network).
        load_image: ``load_image(name) -> (H, W, 3) uint8`` for a mapping image name.
        num_images: at most this many mapping images, evenly spread over the map's order.
        seed: seed of the label shuffle.
        progress: show a progress bar.

    Returns:
        ``{"images", "labels_per_point", "true_pose", "true_pose_p90", "chance", "seconds"}``
        (residuals: medians over the images of each image's median), or None when no image
        has another mapping image near it with enough points in view (a one-image map).
    """
    start = time.perf_counter()
    core, config = localizer.core, localizer.config
    refinement = config.refinement
    picks = np.unique(np.linspace(0, len(core.images) - 1, min(num_images, len(core.images))).round().astype(np.int64))
    rng = np.random.default_rng(seed)
    true_pose: list[float] = []
    chance: list[float] = []
    labels_per_point = 1
    for image_id in tqdm(picks, desc="residual calibration", unit="image", disable=not progress):
        record = core.images[image_id]
        near = localizer.images_near(record.cam_from_world)
        near = near[near != image_id][: config.num_retrieved]
        if len(near) == 0:
            continue
        point_ids = localizer.select_points(near, record.camera, record.cam_from_world)
        if len(point_ids) < refinement.min_points:
            continue
        segmentation = localizer.segment(load_image(record.name))
        labels, weights = localizer.layer.labels(config.labels_top_k, point_ids)
        labels_per_point = 1 if labels.ndim == 1 else labels.shape[1]
        points3D = core.points3D[point_ids]
        fit = residuals_at_pose(
            segmentation.probabilities, record.camera, points3D, labels, record.cam_from_world, refinement, label_weights=weights
        )
        shuffle = rng.permutation(len(point_ids))
        unfit = residuals_at_pose(
            segmentation.probabilities,
            record.camera,
            points3D,
            labels[shuffle],
            record.cam_from_world,
            refinement,
            label_weights=None if weights is None else weights[shuffle],
        )
        if len(fit) >= refinement.min_points:
            true_pose.append(float(np.median(fit)))
            chance.append(float(np.median(unfit)))
    if not true_pose:
        logger.warning("residual calibration: no mapping image has a neighbour with enough points in view; the gate stays fixed")
        return None
    calibration = {
        "images": len(true_pose),
        "labels_per_point": int(labels_per_point),
        "true_pose": round(float(np.median(true_pose)), 4),
        "true_pose_p90": round(float(np.percentile(true_pose, 90)), 4),
        "chance": round(float(np.median(chance)), 4),
        "seconds": round(time.perf_counter() - start, 3),
    }
    logger.info(
        "residual calibration on %d mapping images: median residual %.2f at the true pose, %.2f by chance (derived gate %.2f)",
        calibration["images"],
        calibration["true_pose"],
        calibration["chance"],
        residual_gate(calibration),
    )
    return calibration


def residual_gate(calibration: dict[str, Any]) -> float:
    """``max_final_residual`` from a calibration: ``true_pose + GATE_FRACTION (chance - true_pose)`` (3 significant digits).

    A chance residual at or below the true-pose one (labels that say nothing about the
    image) gives the fixed gate.
    """
    fit, unfit = float(calibration["true_pose"]), float(calibration["chance"])
    if not unfit > fit:
        return FIXED_GATE
    return float(f"{fit + GATE_FRACTION * (unfit - fit):.3g}")
