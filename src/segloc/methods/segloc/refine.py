"""SegLoc pose refinement: align the labels of 3D map points with a query's class probabilities.

A SegLoc map stores sparse 3D points with one segmentation label each (or the top-k labels
with weights). The query image goes through a segmentation network that gives, at a few
decoder levels (coarse to fine), per-pixel class probabilities over K classes. Starting from
an initial ``cam_from_world`` (retrieval, odometry, ``initialpose``, another method),
:func:`refine_pose_with_labels` moves the 6-DoF pose so that each visible point projects where
the query believes its label is, PixLoc-style: Levenberg-Marquardt, level after level.

Cost. For a point ``i`` with labels ``l_ij`` and weights ``w_ij`` (summing to 1) projecting to
``u_i``, the residual is ``r_i = -log(max(sum_j w_ij p(l_ij | u_i), eps))``, where ``p`` is
the bilinearly interpolated probability map of the level. A level minimises
``sum_i rho(r_i^2)`` with a robust loss ``rho`` (Cauchy, Huber or none) over a fixed support:
the points in view (in front, inside the lens' field of view, projecting inside the image
minus a margin) at the pose the level starts from. Fixing the support keeps one objective per
level, so that accepting a step only when it lowers the objective means something; had
dropped-out points a constant cost, the optimiser would trade alignment for keeping points in
view. A support point that leaves the image during the level samples the probability at its
projection clamped to the image border (the objective stays continuous) and has no gradient
across the border; one that goes behind the camera gets the residual ``-log(eps)``.
The points in view at the final pose give the reported cost, residuals and covariance.

Update. The pose is perturbed as in the covariance convention of :mod:`segloc.geometry.pose`:
``delta = (dx, dy, dz, rx, ry, rz)`` with ``world_from_cam' = (Exp(r) R_wc, c + dc)`` (``c``
the camera centre in the world). Jacobians are analytic: the image gradient of the sampled
probability (by default the bilinear interpolation of central differences, which is
continuous; or the exact derivative of the bilinear interpolation) times the projection
Jacobian (lens distortion included, through
:func:`segloc.geometry.camera.distort_normalized` with central differences) times the pose
Jacobian. LM solves ``(H + lambda diag(H)) delta = -g`` with ``H = J^T W J`` and
``g = J^T W r`` (IRLS weights ``W = rho'(r^2)``), accepts a step when it lowers the level's
objective, and adapts ``lambda``.

Covariance (at the final pose of the finest level, same convention; ``covariance`` option):

- ``raw``: ``sigma^2 H^-1`` with ``sigma^2 = sum w r^2 / (n - 6)``. It treats the n points as
  independent measurements with IRLS weights as known inverse variances. Neither holds:
  neighbouring points sample the same blob of a segmentation (their residuals, and the errors
  of the network, are correlated over tens of pixels), and a robust estimate's spread is not
  that of a weighted least-squares one. Measured against the truth it is several times too
  small (``benchmarks/covariance.py``).
- ``calibrated`` (default): the cluster-robust sandwich of an M-estimator,
  ``s * H^-1 B H^-1`` with the bread ``H = J^T W J`` and the meat
  ``B = G / (G - 1) * sum_g (sum_{i in g} w_i r_i J_i)(sum_{i in g} w_i r_i J_i)^T``, where the
  points are grouped into G square image blocks of side ``covariance_block_size`` (a fraction
  of the image's longer side) by where they project at the final pose. Points within a block
  may be arbitrarily correlated, blocks are taken as independent (Liang and Zeger's cluster
  sandwich; the spatial HAC estimators of Conley 1999 are its smooth version). With
  independent points and no robust loss it reduces to ``raw``; with a robust loss each point
  contributes ``(w r)^2`` (its score) instead of ``w r^2``, the standard correction for IRLS.
  With fewer than ``covariance_min_blocks`` occupied blocks the meat is too rank-poor to
  trust, and the covariance is ``raw`` times ``n / G`` (every block one effective
  measurement). ``s`` is ``covariance_scale`` (default 1).

  To it is added the **shared-error term** ``f^2 (P^T P / n)^-1``
  (:func:`segloc.geometry.pose.systematic_pose_covariance`), with ``P`` the (2n, 6) Jacobian of
  the points' projections in pixels of the finest level and ``f`` = ``covariance_pixel_floor``.
  A segmentation's bias is common to the whole image (every block shifts the same way), so no
  within-image statistic sees it and more points do not average it away: the term models it
  as a pose measured with the information of one average point at ``f`` pixels. Its shape
  comes from the geometry (depth, spread of the points), its size from the pixel error, which
  is why one ``f`` transfers between places where one ``s`` does not. Measured with
  ``benchmarks/covariance.py`` (shipped networks, nine cases): the scale ``s`` that brings the
  median NEES to chi-square 6's is 1.5 to 7 on synthetic scenes, 331 on castle and 20 600 on
  castle at dusk, while the floor ``f`` that does the same is 0.03 to 0.07 px on synthetic
  scenes, 0.09 on castle and 0.19 at dusk. The default ``f = 0.2`` px (0.8 px of the segmented image at stride 4) is the fit that
  puts 95 % of the true poses inside the 95 % ellipsoid over four synthetic cases (room under
  evening light and severe night, blurred corridor, office under other light); on castle,
  which the fit never saw, 8 of 9 true poses fall inside, against 0 of 9 without the term.
  Gross failures (a refinement settled in a wrong minimum, metres off) are not noise, and no
  covariance of a useful size covers them.

The shape of either covariance says which directions the labels constrain poorly (typically a
rotation traded against a translation when the scene is nearly planar).

Pixels follow COLMAP's convention: the centre of the top-left pixel is at (0.5, 0.5). The
probability maps are in the (distorted) image of ``camera``; each level is the whole image
resized to (H_l, W_l) and uses ``camera.scaled(W_l, H_l)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera, distort_normalized
from segloc.geometry.pose import systematic_pose_covariance
from segloc.geometry.transforms import Rigid3, axis_angle_to_matrix

logger = logging.getLogger("segloc")

__all__ = [
    "COVARIANCES",
    "DEFAULT_MAX_FINAL_RESIDUAL",
    "FAILURE_REASONS",
    "GRADIENTS",
    "LOSSES",
    "LabelRefinementConfig",
    "LevelHistory",
    "RefinementResult",
    "refine_pose_with_labels",
    "residuals_at_pose",
    "scale_refinement_options",
]

LOSSES = ("cauchy", "huber", "none")
"""Robust losses on the squared residual ``s = r^2`` with scale ``c``: Cauchy
``c^2 log(1 + s / c^2)``, Huber ``s`` up to ``c^2`` then ``2 c sqrt(s) - c^2``, none ``s``."""

COVARIANCE_SCALE = 1.0
"""Default ``covariance_scale`` of the calibrated covariance (no global factor; module docstring)."""

COVARIANCE_PIXEL_FLOOR = 0.2
"""Default ``covariance_pixel_floor``, pixels of the finest level (module docstring: fitted on four
synthetic scene-condition cases, checked on real photographs)."""

DEFAULT_MAX_FINAL_RESIDUAL = 2.0
"""``max_final_residual`` when the config leaves it null and nothing derives it: a median label
probability below 0.135 fails (the SegLoc localizer derives it from the map's network instead,
:mod:`segloc.methods.segloc.residual_gate`)."""

COVARIANCES = ("calibrated", "raw")
"""Covariance models of the refinement (module docstring): ``calibrated`` (cluster sandwich times
``covariance_scale``, plus the shared-error term at ``covariance_pixel_floor``) or ``raw``
(``sigma^2 H^-1``, points taken as independent)."""

GRADIENTS = ("central", "exact")
"""Ways to take the image gradient of the sampled probabilities (see :class:`LabelRefinementConfig`)."""

FAILURE_REASONS = ("too_few_points", "diverged", "high_residual", "insufficient_decrease", "degenerate")
"""Values of :attr:`RefinementResult.failure_reason` (None on success): fewer than
``min_points`` in view (at the start of a level or at the end); the pose moved farther from the
initial one than ``max_translation_change`` / ``max_rotation_change_deg``; the median residual
at the final pose is above ``max_final_residual``; the cost dropped by less than
``min_relative_decrease``; the final Hessian is singular (the points do not constrain 6 DoF)."""


@dataclass
class LabelRefinementConfig:
    """Options of :func:`refine_pose_with_labels`.

    Attributes:
        levels: indices into the list of class-probability maps to use, coarse to fine
            (negative ones count from the end); empty for all of them in the given order. When
            all are negative, those before the first level are dropped, so the default, the
            three finest levels, also works with fewer levels. The coarsest level of the 4-level
            decoder (1/32 of the input, 10 x 8 cells at 320 x 240) is left out by default: with
            a trained network its cost is nearly flat and its minimum often away from the true
            pose, and starting there makes many refinements diverge (the measurement:
            ``docs/experiments/segloc_training.md``).
        num_iterations: Levenberg-Marquardt iterations per level (an iteration is one tried step).
        lambda_init: initial damping of each level; the step solves ``(H + lambda diag(H)) delta = -g``.
        lambda_up: factor on lambda after a rejected step.
        lambda_down: factor on lambda after an accepted step.
        lambda_min: lower bound of lambda.
        lambda_max: a level stops (stalled) when lambda grows past this.
        loss: robust loss on the squared per-point residual, one of :data:`LOSSES`.
        loss_scale: scale ``c`` of the robust loss, in units of the residual ``-log p``.
        probability_floor: probabilities are clamped at this ``eps`` before the log (the
            largest residual is ``-log(eps)``).
        top_k: use at most this many labels per point (those with the largest weights); 0 for
            all the columns given.
        border_margin_px: a projection must be at least this many pixels of the level inside
            the outermost pixel centres to count.
        min_depth: minimum depth along the optical axis (metres) of a point that counts; None
            (the default): derived from the scene's depth (:func:`scale_refinement_options`).
        min_step_rotation: a level converges when an accepted step rotates less than this
            (radians) and translates less than ``min_step_translation``.
        min_step_translation: see ``min_step_rotation`` (metres); None (the default): derived
            from the scene's depth (:func:`scale_refinement_options`).
        min_relative_cost_change: a level converges when an accepted step lowers the
            objective by less than this fraction.
        min_points: fewer points in view at the start of a level or at the final pose is a
            failure (``too_few_points``); a step leaving fewer in view is rejected.
        max_translation_change: a camera centre moving farther than this (metres) from the
            initial one is a failure (``diverged``); None (the default): derived from the map
            by the SegLoc localizer (:mod:`segloc.methods.segloc.defaults`), or from the
            scene's depth when the refinement runs alone (:func:`scale_refinement_options`).
        max_rotation_change_deg: a rotation farther than this (degrees) from the initial one is
            a failure (``diverged``).
        max_final_residual: a median residual ``-log p`` of the points in view at the final
            pose (finest level) above this is a failure (``high_residual``): the labels do not
            agree with the query. None (the default): derived from the map's network by the
            SegLoc localizer (:mod:`segloc.methods.segloc.residual_gate`), or
            :data:`DEFAULT_MAX_FINAL_RESIDUAL` (2.0, a median label probability below 0.135)
            when the refinement runs alone.
        min_relative_decrease: the objective at the finest level must drop by at least this
            fraction from the initial to the final pose (``insufficient_decrease``); 0 disables
            the check (a prior that is already right does not move).
        covariance: the covariance model, one of :data:`COVARIANCES` (module docstring).
        residual_sigma: with ``covariance: raw``, the standard deviation of the residual; None
            estimates it from the final residuals (``sum w r^2 / (n - 6)``). Not used by
            ``calibrated`` (the sandwich takes the spread from the residuals themselves).
        covariance_block_size: with ``calibrated``, side of the square image blocks whose points
            are taken as correlated, as a fraction of the image's longer side (0.125: 8 x 6
            blocks on a 4:3 image).
        covariance_min_blocks: with ``calibrated``, fewer occupied blocks than this gives
            ``raw`` inflated by points per block instead of the sandwich.
        covariance_scale: with ``calibrated``, a factor on the sandwich (fit it with
            ``benchmarks/covariance.py --fit``).
        covariance_pixel_floor: with ``calibrated``, the pixel error shared
            by all the points of the image (pixels of the finest level), which no within-image
            statistic sees; adds :func:`segloc.geometry.pose.systematic_pose_covariance`.
        gradients: image gradient of the probability: ``central`` (bilinear interpolation of
            central differences, continuous across pixels) or ``exact`` (derivative of the
            bilinear interpolation, piecewise constant); see :data:`GRADIENTS`.
    """

    levels: tuple[int, ...] = (-3, -2, -1)
    num_iterations: int = option(60, ge=1)
    lambda_init: float = option(1e-2, gt=0)
    lambda_up: float = option(10.0, gt=1)
    lambda_down: float = option(0.1, gt=0, lt=1)
    lambda_min: float = option(1e-6, gt=0)
    lambda_max: float = option(1e4, gt=0)
    loss: str = "cauchy"
    loss_scale: float = option(0.5, gt=0)
    probability_floor: float = option(1e-4, gt=0, lt=1)
    top_k: int = option(0, ge=0, note="0: all labels")
    border_margin_px: float = option(1.0, ge=0)
    min_depth: float | None = option(None, ge=0, note="null: derived from the scene's depth")
    min_step_rotation: float = option(1e-5, ge=0)
    min_step_translation: float | None = option(None, ge=0, note="null: derived from the scene's depth")
    min_relative_cost_change: float = option(1e-6, ge=0)
    min_points: int = option(30, ge=6, note="a pose has 6 degrees of freedom")
    max_translation_change: float | None = option(None, gt=0, note="null: derived from the map or the scene's depth")
    max_rotation_change_deg: float = option(30.0, gt=0)
    max_final_residual: float | None = option(None, gt=0, note="null: derived from the map's network")
    min_relative_decrease: float = option(0.0, ge=0, lt=1, note="0: no check")
    residual_sigma: float | None = option(None, gt=0, note="null: estimated")
    gradients: str = "central"
    covariance: str = "calibrated"
    covariance_block_size: float = option(0.125, gt=0, le=1)
    covariance_min_blocks: int = option(12, ge=7, note="the meat needs more blocks than the 6 pose parameters")
    covariance_scale: float = option(COVARIANCE_SCALE, gt=0)
    covariance_pixel_floor: float = option(COVARIANCE_PIXEL_FLOOR, ge=0)

    def __post_init__(self) -> None:
        self.levels = tuple(int(i) for i in self.levels)
        check_options(self)
        if self.loss not in LOSSES:
            raise SeglocError(f"label refinement: unknown loss {self.loss!r}; valid losses are: {', '.join(LOSSES)}")
        if self.covariance not in COVARIANCES:
            raise SeglocError(f"label refinement: unknown covariance {self.covariance!r}; valid values are: {', '.join(COVARIANCES)}")
        if self.residual_sigma is not None and self.covariance != "raw":
            raise SeglocError(
                "label refinement: residual_sigma sets the scale of the raw covariance; with covariance: "
                f"{self.covariance} the spread comes from the residuals. Set covariance: raw, or residual_sigma: null"
            )
        if self.gradients not in GRADIENTS:
            raise SeglocError(f"label refinement: unknown gradients {self.gradients!r}; valid values are: {', '.join(GRADIENTS)}")
        if not self.lambda_min <= self.lambda_init <= self.lambda_max:
            raise SeglocError(
                "label refinement: need lambda_min <= lambda_init <= lambda_max, "
                f"got {self.lambda_min}, {self.lambda_init}, {self.lambda_max}"
            )


#: ``min_depth`` as a fraction of the scene depth: 5 cm for a room seen 2.5 m away, the value
#: that worked there (a near plane well in front of every surface the camera maps).
NEAR_PLANE_DEPTHS = 0.02
#: ``min_step_translation`` as a fraction of the scene depth: 0.1 mm for a room seen 2.5 m away
#: (the value that worked there); a camera step this small moves the points' projections by
#: about 4e-5 radians, below a hundredth of a pixel at any image size the network sees.
STEP_DEPTHS = 4e-5
#: ``max_translation_change`` as a fraction of the scene depth ``d`` (the SegLoc localizer takes
#: at least 1.5 mapping-image spacings, :mod:`segloc.methods.segloc.defaults`). A camera moved
#: sideways by 0.7 d shares half of its view at depth d with where it was (a 70 degree field of
#: view is 1.4 d wide there): a start farther than that from the true pose hardly sees the same
#: points, so a refinement that moves farther has left the basin it started in. In the demo
#: room (d = 2.9 m) this gives the 2 m set by hand before; 0.4 d (1.17 m) failed a query whose
#: refinement wandered 1.2 m on its way from a start 0.66 m off to the true pose.
MOVE_DEPTHS = 0.7


def scale_refinement_options(config: LabelRefinementConfig, scene_depth: float) -> LabelRefinementConfig:
    """``config`` with its null scale-dependent options derived from ``scene_depth`` (metres); set ones are kept.

    ``min_depth = NEAR_PLANE_DEPTHS d``, ``min_step_translation = STEP_DEPTHS d`` and
    ``max_translation_change = MOVE_DEPTHS d`` (3 significant digits). The SegLoc localizer
    derives ``max_translation_change`` from the map first (it also depends on the spacing of
    the mapping images, :mod:`segloc.methods.segloc.defaults`); :func:`refine_pose_with_labels`
    calls this with the median depth of the points at the initial pose when it is given a
    config with null options.

    Raises:
        SeglocError: a scene depth that is not a positive number.
    """
    if not (math.isfinite(scene_depth) and scene_depth > 0):
        raise SeglocError(f"the scene depth must be a positive number of metres, got {scene_depth}")
    values = {"min_depth": NEAR_PLANE_DEPTHS, "min_step_translation": STEP_DEPTHS, "max_translation_change": MOVE_DEPTHS}
    changes = {name: float(f"{fraction * scene_depth:.3g}") for name, fraction in values.items() if getattr(config, name) is None}
    return replace(config, **changes) if changes else config


@dataclass
class LevelHistory:
    """What happened at one level of the refinement.

    Lists have one entry per iteration (one tried step), except ``costs`` which starts with
    the objective at the pose the level starts from.

    Attributes:
        level: index into the list of class-probability maps.
        size: (width, height) of the level's maps.
        costs: the level's objective per support point (``sum rho(r^2) / n`` over the n points
            in view where the level started) at the current pose: before the first and after
            every iteration; never increases.
        lambdas: damping used for each tried step.
        step_rotation: norm of each tried step's rotation (radians).
        step_translation: norm of each tried step's translation (metres).
        accepted: whether each step was taken.
        num_support: n, the points in view where the level started.
        num_points: support points still in view at the current pose after each iteration.
        stop_reason: ``converged``, ``max_iterations``, ``stalled`` (lambda past its maximum),
            ``diverged`` or ``too_few_points``.
    """

    level: int
    size: tuple[int, int]
    num_support: int = 0
    costs: list[float] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)
    step_rotation: list[float] = field(default_factory=list)
    step_translation: list[float] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)
    num_points: list[int] = field(default_factory=list)
    stop_reason: str = "max_iterations"


@dataclass
class RefinementResult:
    """The outcome of :func:`refine_pose_with_labels`.

    Attributes:
        cam_from_world: the refined pose; when ``success`` is False, the last estimate, for
            diagnosis only (do not use it as a localization).
        success: whether the refinement ran to the end and passed every check.
        failure_reason: None on success, else one of :data:`FAILURE_REASONS`.
        covariance: (6, 6) covariance in the convention of :mod:`segloc.geometry.pose`
            (camera centre x, y, z in the world, then a rotation vector about the world axes),
            from the Gauss-Newton Hessian at the final pose of the finest level (metres^2,
            radians^2); None on failure.
        num_points_used: points in view at the final pose of the finest level.
        cost: mean robust cost ``rho(r^2)`` of those points.
        median_residual: median residual ``-log p`` of those points.
        history: one :class:`LevelHistory` per level run, coarse to fine.
    """

    cam_from_world: Rigid3
    success: bool
    failure_reason: str | None
    covariance: np.ndarray | None
    num_points_used: int
    cost: float
    median_residual: float
    history: list[LevelHistory]

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary (for ``LocalizationResult.info``)."""
        return {
            "failure_reason": self.failure_reason,
            "num_points_used": self.num_points_used,
            "cost": self.cost,
            "median_residual": self.median_residual,
            "iterations": [len(h.lambdas) for h in self.history],
            "stop_reasons": [h.stop_reason for h in self.history],
        }


# --- inputs -------------------------------------------------------------------------------


def _as_probability_maps(class_probabilities: Any) -> list[np.ndarray]:
    """float32 C-contiguous (K, H_l, W_l) arrays from tensors or arrays; checks shapes."""
    if isinstance(class_probabilities, np.ndarray) and class_probabilities.ndim == 3:
        class_probabilities = [class_probabilities]
    if not isinstance(class_probabilities, (list, tuple)) or not class_probabilities:
        raise SeglocError("class_probabilities must be a non-empty list of (K, H, W) maps, one per decoder level, coarse to fine")
    maps = []
    for i, level in enumerate(class_probabilities):
        if hasattr(level, "detach"):  # a torch tensor, possibly on an accelerator
            level = level.detach().to("cpu").float().numpy()
        level = np.ascontiguousarray(level, dtype=np.float32)
        if level.ndim != 3 or min(level.shape) < 1:
            raise SeglocError(f"class_probabilities[{i}] must have shape (K, H, W), got {level.shape}")
        if level.shape[1] < 2 or level.shape[2] < 2:
            raise SeglocError(f"class_probabilities[{i}] is {level.shape[2]}x{level.shape[1]} pixels; a level needs at least 2x2")
        maps.append(level)
    num_classes = {m.shape[0] for m in maps}
    if len(num_classes) != 1:
        raise SeglocError(f"all levels of class_probabilities must have the same number of classes K, got {sorted(num_classes)}")
    return maps


def _as_labels(point_labels: Any, label_weights: Any, num_points: int, num_classes: int, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N, k) int64 and weights (N, k) float64 summing to 1 per point."""
    labels = np.asarray(point_labels.detach().cpu() if hasattr(point_labels, "detach") else point_labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[0] != num_points or labels.shape[1] < 1:
        raise SeglocError(f"point_labels must have shape (N,) or (N, k) with N = {num_points} points, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise SeglocError(f"point_labels must be integers (class ids), got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise SeglocError(
            f"point_labels must be class ids in [0, {num_classes - 1}] (the probability maps have K = {num_classes} classes), "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    if label_weights is None:
        weights = np.ones(labels.shape, dtype=np.float64)
    else:
        weights = np.asarray(label_weights.detach().cpu() if hasattr(label_weights, "detach") else label_weights, dtype=np.float64)
        if weights.ndim == 1:
            weights = weights[:, None]
        if weights.shape != labels.shape:
            raise SeglocError(f"label_weights must have the shape of point_labels {labels.shape}, got {weights.shape}")
        if not np.all(np.isfinite(weights)) or weights.size and weights.min() < 0:
            raise SeglocError("label_weights must be finite and non-negative")
    if top_k and labels.shape[1] > top_k:
        order = np.argsort(-weights, axis=1, kind="stable")[:, :top_k]
        labels = np.take_along_axis(labels, order, axis=1)
        weights = np.take_along_axis(weights, order, axis=1)
    totals = weights.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise SeglocError(f"{int(np.sum(totals <= 0))} point(s) have label weights summing to 0; give each point a positive weight")
    return labels, weights / totals


# --- robust loss --------------------------------------------------------------------------


def _robust(squared: np.ndarray, loss: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """rho(s) and rho'(s) of squared residuals (n,)."""
    if loss == "none":
        return squared, np.ones_like(squared)
    c2 = scale * scale
    if loss == "cauchy":
        return c2 * np.log1p(squared / c2), 1.0 / (1.0 + squared / c2)
    root = np.sqrt(np.maximum(squared, 1e-300))
    inlier = squared <= c2
    return np.where(inlier, squared, 2.0 * scale * root - c2), np.where(inlier, 1.0, scale / root)


# --- one level ----------------------------------------------------------------------------


def _max_normalized_radius(camera: Camera) -> float:
    """Largest radius of undistorted normalized coordinates that a point may have to count.

    20 % beyond the image corners, and no farther than where the distortion stops being
    monotonic along the axes and diagonals: a distortion polynomial outside its calibrated
    range can fold far off-axis points back into the image.
    """
    w, h = camera.width, camera.height
    border = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, 0], [w / 2, h], [0, h / 2], [w, h / 2]], dtype=np.float64)
    limit = 1.2 * float(np.max(np.linalg.norm(camera.pixels_to_normalized(border), axis=1)))
    radii = np.linspace(0.0, limit, 513)[1:]
    for angle in np.arange(8) * (np.pi / 4):
        xd, yd = distort_normalized(camera.model, camera.params, radii * np.cos(angle), radii * np.sin(angle))
        folds = np.nonzero(np.diff(np.hypot(xd, yd)) <= 0)[0]
        if len(folds):
            limit = min(limit, float(radii[folds[0]]))
    return limit


class _Level:
    """The probability maps of one level with its camera, ready for sampling."""

    def __init__(self, index: int, probabilities: np.ndarray, camera: Camera, config: LabelRefinementConfig):
        self.index = index
        self.num_classes, self.height, self.width = probabilities.shape
        self.flat = probabilities.reshape(-1)
        self.camera = camera.scaled(self.width, self.height)
        (self.fx, self.fy), (self.cx, self.cy) = self.camera.focal, self.camera.principal_point
        self.distorted = self.camera.has_distortion
        self.max_radius2 = _max_normalized_radius(self.camera) ** 2 if self.distorted else math.inf
        # Array coordinates: x = u - 0.5; bilinear sampling needs x in [0, W - 1].
        margin = config.border_margin_px
        self.x_range = (margin, self.width - 1 - margin)
        self.y_range = (margin, self.height - 1 - margin)


@dataclass
class _Evaluation:
    """Objective, residuals and Jacobian at one pose and level, over a support of n points."""

    objective: float  # sum of rho(r^2) over the support
    support: np.ndarray  # (n,) indices into the points
    in_view: np.ndarray  # (n,) bool: projects inside the image (minus the margin)
    residuals: np.ndarray  # (n,) r = -log p
    robust_cost: np.ndarray  # (n,) rho(r^2)
    weights: np.ndarray  # (n,) rho'(r^2)
    jacobian: np.ndarray | None  # (n, 6) dr / d(dc, r)
    image_points: np.ndarray | None = None  # (n, 2) array coordinates (x, y) in the level, clamped to the image
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the level

    @property
    def num_in_view(self) -> int:
        return int(np.count_nonzero(self.in_view))


class _Problem:
    """The points, their labels and the loss: evaluates the objective at a pose."""

    def __init__(self, points3D: np.ndarray, labels: np.ndarray, weights: np.ndarray, config: LabelRefinementConfig):
        self.points3D = points3D
        self.labels = labels
        self.weights = weights
        self.config = config

    def evaluate(
        self,
        level: _Level,
        rotation_wc: np.ndarray,
        center: np.ndarray,
        support: np.ndarray | None = None,
        with_jacobian: bool = True,
    ) -> _Evaluation:
        """Objective at ``world_from_cam = (rotation_wc, center)``; Jacobian over ``(dc, r)``.

        With ``support`` None, the support is the set of points in view at this pose. With a
        fixed support (the points in view where a level started), a point that leaves the
        image samples the probability at its projection clamped to the image, so that the
        objective stays continuous, and has no gradient across the border; a point behind the
        camera or out of the lens' field of view gets the residual of the probability floor.
        """
        config = self.config
        fixed_support = support is not None
        if support is None:
            support = np.arange(len(self.points3D))
        offsets = self.points3D[support] - center  # (n, 3) world
        points_cam = offsets @ rotation_wc  # rows of R_cw (X - c), as R_cw = R_wc^T
        projectable = points_cam[:, 2] > max(config.min_depth, 1e-12)
        z = np.where(projectable, points_cam[:, 2], 1.0)
        x = np.where(projectable, points_cam[:, 0] / z, 0.0)
        y = np.where(projectable, points_cam[:, 1] / z, 0.0)
        if level.distorted:
            projectable &= x * x + y * y < level.max_radius2
            x, y = np.where(projectable, x, 0.0), np.where(projectable, y, 0.0)
            xd, yd = distort_normalized(level.camera.model, level.camera.params, x, y)
        else:
            xd, yd = x, y
        ax = level.fx * xd + level.cx - 0.5  # array coordinates of the level
        ay = level.fy * yd + level.cy - 0.5
        inside_x = (ax >= level.x_range[0]) & (ax <= level.x_range[1])
        inside_y = (ay >= level.y_range[0]) & (ay <= level.y_range[1])
        in_view = projectable & inside_x & inside_y
        if not fixed_support:
            keep = np.nonzero(in_view)[0]
            support, offsets, in_view = support[keep], offsets[keep], in_view[keep]
            projectable, inside_x, inside_y = in_view, in_view, in_view
            ax, ay, x, y, z = ax[keep], ay[keep], x[keep], y[keep], z[keep]
        else:
            ax = np.clip(ax, *level.x_range)
            ay = np.clip(ay, *level.y_range)

        # Bilinear sampling of p(label) (sum over the top-k labels) and of its image gradient.
        x0 = np.minimum(np.floor(ax).astype(np.int64), level.width - 2)
        y0 = np.minimum(np.floor(ay).astype(np.int64), level.height - 2)
        tx, ty = (ax - x0)[:, None], (ay - y0)[:, None]
        channel = self.labels[support] * (level.height * level.width)  # (n, k)
        label_weights = self.weights[support]

        def gather(dx: int, dy: int) -> np.ndarray:
            """p(label) at pixel (x0 + dx, y0 + dy), clamped to the image: (n, k)."""
            cols = np.clip(x0 + dx, 0, level.width - 1) if dx in (-1, 2) else x0 + dx
            rows = np.clip(y0 + dy, 0, level.height - 1) if dy in (-1, 2) else y0 + dy
            return level.flat[channel + (rows * level.width + cols)[:, None]].astype(np.float64)

        p00, p01, p10, p11 = gather(0, 0), gather(1, 0), gather(0, 1), gather(1, 1)
        top = p00 + tx * (p01 - p00)
        bottom = p10 + tx * (p11 - p10)
        probability = np.where(projectable, np.sum(label_weights * (top + ty * (bottom - top)), axis=1), 0.0)
        floored = probability <= config.probability_floor
        residuals = -np.log(np.maximum(probability, config.probability_floor))
        robust_cost, robust_weights = _robust(residuals * residuals, config.loss, config.loss_scale)
        objective = float(robust_cost.sum())
        if not with_jacobian:
            return _Evaluation(objective, support, in_view, residuals, robust_cost, robust_weights, None)

        if config.gradients == "exact":  # derivative of the bilinear interpolation: piecewise constant across cells
            dp_dx = np.sum(label_weights * ((1.0 - ty) * (p01 - p00) + ty * (p11 - p10)), axis=1)
            dp_dy = np.sum(label_weights * (bottom - top), axis=1)
        else:  # bilinear interpolation of central differences: continuous, smoother steps
            gx_top = (1.0 - tx) * (p01 - gather(-1, 0)) + tx * (gather(2, 0) - p00)
            gx_bottom = (1.0 - tx) * (p11 - gather(-1, 1)) + tx * (gather(2, 1) - p10)
            gy_left = (1.0 - ty) * (p10 - gather(0, -1)) + ty * (gather(0, 2) - p00)
            gy_right = (1.0 - ty) * (p11 - gather(1, -1)) + ty * (gather(1, 2) - p01)
            dp_dx = 0.5 * np.sum(label_weights * ((1.0 - ty) * gx_top + ty * gx_bottom), axis=1)
            dp_dy = 0.5 * np.sum(label_weights * ((1.0 - tx) * gy_left + tx * gy_right), axis=1)
        scale = np.where(floored, 0.0, -1.0 / np.maximum(probability, config.probability_floor))
        grad_xd = np.where(inside_x, scale * dp_dx * level.fx, 0.0)  # dr / d(distorted normalized x)
        grad_yd = np.where(inside_y, scale * dp_dy * level.fy, 0.0)
        if level.distorted:
            grad_x, grad_y = self._through_distortion(level.camera, x, y, grad_xd, grad_yd)
        else:
            grad_x, grad_y = grad_xd, grad_yd
        inv_z = 1.0 / z
        grad_cam = np.stack([grad_x * inv_z, grad_y * inv_z, -(grad_x * x + grad_y * y) * inv_z], axis=1)  # dr / d(points_cam)
        # points_cam = R_cw Exp(-r) (X - c - dc): d/d(dc) = -R_cw, d/dr = R_cw [X - c]_x.
        grad_world = grad_cam @ rotation_wc.T  # rows of grad_cam^T R_cw
        jacobian = np.concatenate([-grad_world, np.cross(grad_world, offsets)], axis=1)
        image_points = np.stack([ax, ay], axis=1)
        return _Evaluation(
            objective, support, in_view, residuals, robust_cost, robust_weights, jacobian, image_points, (level.width, level.height)
        )

    @staticmethod
    def _through_distortion(camera: Camera, x: np.ndarray, y: np.ndarray, grad_xd: np.ndarray, grad_yd: np.ndarray):
        """Chain (dr/dxd, dr/dyd) through the distortion Jacobian (central differences)."""
        step = 1e-6
        xp, yp = distort_normalized(camera.model, camera.params, x + step, y)
        xm, ym = distort_normalized(camera.model, camera.params, x - step, y)
        d_xd_dx, d_yd_dx = (xp - xm) / (2 * step), (yp - ym) / (2 * step)
        xp, yp = distort_normalized(camera.model, camera.params, x, y + step)
        xm, ym = distort_normalized(camera.model, camera.params, x, y - step)
        d_xd_dy, d_yd_dy = (xp - xm) / (2 * step), (yp - ym) / (2 * step)
        return grad_xd * d_xd_dx + grad_yd * d_yd_dx, grad_xd * d_xd_dy + grad_yd * d_yd_dy


def _rotation_angle(rotation: np.ndarray) -> float:
    """Angle (radians) of a rotation matrix (3, 3)."""
    return float(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)))


def _normal_equations(evaluation: _Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """H = J^T W J (6, 6) and g = J^T W r (6,)."""
    jacobian = evaluation.jacobian
    weighted = jacobian * evaluation.weights[:, None]
    return weighted.T @ jacobian, weighted.T @ evaluation.residuals


def _covariance(evaluation: _Evaluation, config: LabelRefinementConfig, systematic: Callable[[], np.ndarray | None]) -> np.ndarray | None:
    """The covariance (6, 6) of the model ``config.covariance`` (module docstring), or None if H is singular.

    ``evaluation`` is at the final pose with the points in view as its support; ``systematic``
    gives the shared-error term at ``config.covariance_pixel_floor`` (None when degenerate).
    """
    n = len(evaluation.support)
    if n <= 6 or evaluation.jacobian is None:
        return None
    hessian, _ = _normal_equations(evaluation)
    if not np.all(np.isfinite(hessian)) or np.linalg.cond(hessian) > 1e14:
        return None
    inverse = np.linalg.inv(hessian)
    if config.covariance == "raw":
        covariance = _raw_variance(evaluation, config.residual_sigma) * inverse
    else:
        covariance = config.covariance_scale * _sandwich(evaluation, inverse, config)
        if config.covariance_pixel_floor > 0:
            shared = systematic()
            if shared is None:
                return None
            covariance = covariance + shared
    covariance = 0.5 * (covariance + covariance.T)
    return covariance if np.all(np.isfinite(covariance)) and np.all(np.linalg.eigvalsh(covariance) > 0) else None


def _raw_variance(evaluation: _Evaluation, residual_sigma: float | None) -> float:
    """sigma^2 of the raw covariance: given, or ``sum w r^2 / (n - 6)``."""
    if residual_sigma is not None:
        return residual_sigma**2
    n = len(evaluation.support)
    return max(float(evaluation.weights @ evaluation.residuals**2) / (n - 6), 1e-6)


def _image_blocks(image_points: np.ndarray, image_size: tuple[int, int], block_size: float) -> np.ndarray:
    """Block index (n,) of image points on a grid of square blocks.

    Args:
        image_points: (n, 2) array coordinates (x, y) in an image of ``image_size`` (width, height).
        block_size: side of a block as a fraction of the image's longer side.

    Returns:
        (n,) int64 ids, equal for points in the same block.
    """
    side = max(block_size * max(image_size), 1e-9)
    columns = int(math.ceil(image_size[0] / side)) + 1
    cells = np.floor(np.asarray(image_points, dtype=np.float64) / side).astype(np.int64)
    return cells[:, 1] * columns + cells[:, 0]


def _sandwich(evaluation: _Evaluation, inverse_hessian: np.ndarray, config: LabelRefinementConfig) -> np.ndarray:
    """Cluster-robust ``H^-1 B H^-1`` over image blocks; raw times n / G with too few blocks."""
    blocks = _image_blocks(evaluation.image_points, evaluation.image_size, config.covariance_block_size)
    _, block_of_point = np.unique(blocks, return_inverse=True)
    num_blocks = int(block_of_point.max()) + 1
    n = len(blocks)
    if num_blocks < config.covariance_min_blocks:
        return _raw_variance(evaluation, None) * (n / num_blocks) * inverse_hessian
    scores = evaluation.jacobian * (evaluation.weights * evaluation.residuals)[:, None]  # (n, 6) w r J
    block_scores = np.zeros((num_blocks, 6))
    np.add.at(block_scores, block_of_point, scores)
    meat = (num_blocks / (num_blocks - 1)) * (block_scores.T @ block_scores)
    return inverse_hessian @ meat @ inverse_hessian


def _run_level(
    problem: _Problem,
    level: _Level,
    rotation_wc: np.ndarray,
    center: np.ndarray,
    moved_too_far: Callable[[np.ndarray, np.ndarray], bool],
    record: LevelHistory,
) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt at one level from ``world_from_cam = (rotation_wc, center)``; fills ``record``.

    The support is fixed to the points in view at the start, so that the objective compared
    between steps is one function of the pose. Returns the final (rotation_wc, center).
    """
    config = problem.config
    start = problem.evaluate(level, rotation_wc, center)
    support = start.support
    record.num_support = len(support)
    record.costs.append(start.objective / max(len(support), 1))
    if len(support) < config.min_points:
        record.stop_reason = "too_few_points"
        return rotation_wc, center
    evaluation = start
    damping = config.lambda_init
    for _ in range(config.num_iterations):
        hessian, gradient = _normal_equations(evaluation)
        diagonal = np.diag(hessian) + 1e-12 * max(float(np.max(np.diag(hessian))), 1e-12)
        try:
            step = np.linalg.solve(hessian + damping * np.diag(diagonal), -gradient)
        except np.linalg.LinAlgError:
            step = np.full(6, np.nan)
        step_translation, step_rotation = float(np.linalg.norm(step[:3])), float(np.linalg.norm(step[3:]))
        record.lambdas.append(damping)
        record.step_translation.append(step_translation)
        record.step_rotation.append(step_rotation)
        candidate = None
        if np.all(np.isfinite(step)):
            rotation_new = axis_angle_to_matrix(step[3:]) @ rotation_wc
            center_new = center + step[:3]
            candidate = problem.evaluate(level, rotation_new, center_new, support)
            if not (candidate.objective < evaluation.objective and candidate.num_in_view >= config.min_points):
                candidate = None
        record.accepted.append(candidate is not None)
        if candidate is None:
            damping *= config.lambda_up
            record.costs.append(record.costs[-1])
            record.num_points.append(evaluation.num_in_view)
            if damping > config.lambda_max:
                record.stop_reason = "stalled"
                break
            continue
        decrease = (evaluation.objective - candidate.objective) / max(evaluation.objective, 1e-300)
        rotation_wc, center, evaluation = rotation_new, center_new, candidate
        damping = max(damping * config.lambda_down, config.lambda_min)
        record.costs.append(evaluation.objective / len(support))
        record.num_points.append(evaluation.num_in_view)
        if moved_too_far(rotation_wc, center):
            record.stop_reason = "diverged"
            break
        if (step_rotation < config.min_step_rotation and step_translation < config.min_step_translation) or (
            decrease < config.min_relative_cost_change
        ):
            record.stop_reason = "converged"
            break
    logger.debug(
        "label refinement level %d (%dx%d): cost %.4f -> %.4f in %d iterations, %d of %d points in view, %s",
        level.index,
        level.width,
        level.height,
        record.costs[0],
        record.costs[-1],
        len(record.lambdas),
        evaluation.num_in_view,
        len(support),
        record.stop_reason,
    )
    return rotation_wc, center


# --- the refinement -----------------------------------------------------------------------


def refine_pose_with_labels(
    class_probabilities: Any,
    camera: Camera,
    points3D: np.ndarray,
    point_labels: np.ndarray,
    cam_from_world_init: Rigid3,
    config: LabelRefinementConfig | None = None,
    *,
    label_weights: np.ndarray | None = None,
) -> RefinementResult:
    """Refine ``cam_from_world`` so that labelled 3D points land on pixels of their class.

    Args:
        class_probabilities: list of per-level class probabilities (K, H_l, W_l), torch
            tensors or numpy arrays, coarse to fine (e.g. 1/8, 1/4, 1/2, 1/1 of the image);
            softmax outputs in the (distorted) image of ``camera``. Kept in float32; the
            pose math is float64.
        camera: the full-resolution camera of the query image (any COLMAP model); each level
            uses ``camera.scaled(W_l, H_l)``.
        points3D: (N, 3) world points of the map, ideally those seen by the retrieved images
            (occluded points act as outliers for the robust loss).
        point_labels: (N,) class ids, or (N, k) top-k class ids per point.
        cam_from_world_init: the initial pose.
        config: options; defaults to :class:`LabelRefinementConfig`.
        label_weights: (N, k) non-negative weights of the top-k labels (normalised to sum 1
            per point); None for equal weights. The residual of a point is
            ``-log(sum_j w_j p(label_j))``.

    Returns:
        A :class:`RefinementResult`; check ``success`` before using the pose.

    Raises:
        SeglocError: on inputs of the wrong shape, labels outside [0, K), bad weights or an
            invalid level index.

    Example:
        >>> result = refine_pose_with_labels(levels, camera, points3D, labels, prior)  # doctest: +SKIP
        >>> if result.success:
        ...     cam_from_world, covariance = result.cam_from_world, result.covariance
    """
    config = config or LabelRefinementConfig()
    maps = _as_probability_maps(class_probabilities)
    num_classes = maps[0].shape[0]
    points3D = np.asarray(points3D.detach().cpu() if hasattr(points3D, "detach") else points3D, dtype=np.float64)
    if points3D.ndim != 2 or points3D.shape[1] != 3:
        raise SeglocError(f"points3D must have shape (N, 3), got {points3D.shape}")
    if not np.all(np.isfinite(points3D)):
        raise SeglocError("points3D contains non-finite coordinates; drop those points first")
    labels, weights = _as_labels(point_labels, label_weights, len(points3D), num_classes, config.top_k)
    if not isinstance(cam_from_world_init, Rigid3):
        raise SeglocError(f"cam_from_world_init must be a Rigid3, got {type(cam_from_world_init).__name__}")
    level_indices = _level_indices(config, len(maps))
    if None in (config.min_depth, config.min_step_translation, config.max_translation_change):
        config = scale_refinement_options(config, _scene_depth(points3D, cam_from_world_init))
    problem = _Problem(points3D, labels, weights, config)
    world_from_cam = cam_from_world_init.inverse()
    rotation_init, center_init = world_from_cam.rotation, world_from_cam.translation.copy()
    max_rotation = math.radians(config.max_rotation_change_deg)

    def moved_too_far(rotation_wc: np.ndarray, center: np.ndarray) -> bool:
        return bool(
            np.linalg.norm(center - center_init) > config.max_translation_change
            or _rotation_angle(rotation_wc @ rotation_init.T) > max_rotation
        )

    rotation_wc, center = rotation_init, center_init
    history: list[LevelHistory] = []
    failure: str | None = None
    for index in level_indices:
        level = _Level(index, maps[index], camera, config)
        record = LevelHistory(level=index, size=(level.width, level.height))
        history.append(record)
        rotation_wc, center = _run_level(problem, level, rotation_wc, center, moved_too_far, record)
        if record.stop_reason in ("too_few_points", "diverged"):
            failure = record.stop_reason
            break

    # The final checks and the covariance use the points in view at the final pose.
    cam_from_world = Rigid3.from_rotation(rotation_wc.T, -rotation_wc.T @ center)
    final = problem.evaluate(level, rotation_wc, center)
    num_used = len(final.support)
    cost = float(final.robust_cost.mean()) if num_used else float("nan")
    median_residual = float(np.median(final.residuals)) if num_used else float("nan")
    covariance = None
    if failure is None:
        if num_used < config.min_points:
            failure = "too_few_points"
        elif median_residual > (DEFAULT_MAX_FINAL_RESIDUAL if config.max_final_residual is None else config.max_final_residual):
            failure = "high_residual"
        elif config.min_relative_decrease > 0 and (
            _mean_cost(problem.evaluate(level, rotation_init, center_init, with_jacobian=False)) * (1.0 - config.min_relative_decrease)
            < cost
        ):
            failure = "insufficient_decrease"
        else:
            covariance = _covariance(
                final,
                config,
                lambda: systematic_pose_covariance(
                    cam_from_world, level.camera, problem.points3D[final.support], config.covariance_pixel_floor
                ),
            )
            if covariance is None:
                failure = "degenerate"
    if failure is not None:
        logger.debug("label refinement failed (%s): %d points in view, median residual %.3f", failure, num_used, median_residual)
    return RefinementResult(cam_from_world, failure is None, failure, covariance, num_used, cost, median_residual, history)


def _level_indices(config: LabelRefinementConfig, num_levels: int) -> tuple[int, ...]:
    """The indices (non-negative, coarse to fine) of the levels ``config.levels`` selects among ``num_levels``."""
    level_indices = config.levels or tuple(range(num_levels))
    if all(i < 0 for i in level_indices):  # "the n finest levels": all of them when there are fewer
        level_indices = tuple(i for i in level_indices if i >= -num_levels) or (-1,)
    bad = [i for i in level_indices if not -num_levels <= i < num_levels]
    if bad:
        raise SeglocError(
            f"config.levels {list(config.levels)} refers to level(s) {bad}, but class_probabilities has {num_levels} level(s)"
        )
    return tuple(i % num_levels for i in level_indices)


def residuals_at_pose(
    class_probabilities: Any,
    camera: Camera,
    points3D: np.ndarray,
    point_labels: np.ndarray,
    cam_from_world: Rigid3,
    config: LabelRefinementConfig | None = None,
    *,
    label_weights: np.ndarray | None = None,
) -> np.ndarray:
    """The residuals ``-log p`` of the points in view at ``cam_from_world``, at the finest level the refinement uses.

    These are the residuals whose median :func:`refine_pose_with_labels` compares with
    ``max_final_residual`` at its final pose, here at a given pose (no optimisation): at a true
    pose they measure how well the labels agree with a segmentation when the geometry is right.

    Args:
        class_probabilities, camera, points3D, point_labels, config, label_weights: as for
            :func:`refine_pose_with_labels`.
        cam_from_world: the pose.

    Returns:
        (n,) float64 residuals of the n points in view (empty when none is).
    """
    config = config or LabelRefinementConfig()
    maps = _as_probability_maps(class_probabilities)
    points3D = np.asarray(points3D, dtype=np.float64).reshape(-1, 3)
    labels, weights = _as_labels(point_labels, label_weights, len(points3D), maps[0].shape[0], config.top_k)
    index = _level_indices(config, len(maps))[-1]
    if config.min_depth is None:
        config = scale_refinement_options(config, _scene_depth(points3D, cam_from_world))
    world_from_cam = cam_from_world.inverse()
    level = _Level(index, maps[index], camera, config)
    evaluation = _Problem(points3D, labels, weights, config).evaluate(
        level, world_from_cam.rotation, world_from_cam.translation, with_jacobian=False
    )
    return evaluation.residuals


def _scene_depth(points3D: np.ndarray, cam_from_world: Rigid3) -> float:
    """Median depth (metres) of the points (N, 3) in front of the camera; their median distance when none is (1 m without points)."""
    points_cam = cam_from_world.transform_points(points3D)
    in_front = points_cam[points_cam[:, 2] > 0, 2]
    if len(in_front):
        return float(np.median(in_front))
    distances = np.linalg.norm(points_cam, axis=1)
    distances = distances[distances > 0]
    return float(np.median(distances)) if len(distances) else 1.0


def _mean_cost(evaluation: _Evaluation) -> float:
    return float(evaluation.robust_cost.mean()) if len(evaluation.support) else math.inf
