"""SegLoc training losses: L = L_CE + L_CC + L_PC + L_PF + L_MS over the decoder levels.

SegLoc (Pietrantoni et al., CVPR 2023) trains its segmentation network on pairs of mapping
images with 2D-2D correspondences. The terms, each a function here:

- :func:`cross_entropy_loss` (L_CE): cross-entropy of the class logits against pseudo-targets
  (prototype assignments in the first epoch, the DEC target distribution afterwards, see
  :mod:`segloc_train.segloc.prototypes`).
- :func:`correspondence_consistency_loss` (L_CC): corresponding pixels should get the same class
  (Larsson et al., "Fine-Grained Segmentation Networks", ICCV 2019): each side's argmax (or
  distribution) is the detached target of a cross-entropy on the other side, symmetrised.
- :func:`prototypical_cross_contrastive_loss` (L_PC): PCL's ProtoNCE (Li et al., ICLR 2021) with
  per-cluster concentrations, crossed between the images: the feature at a point of A is pulled
  to the prototype assigned to its correspondence in B, and vice versa.
- :func:`feature_consistency_loss` (L_PF): InfoNCE over the sampled correspondences: matched
  features are positives, the other correspondences of the batch negatives.
- :func:`multi_similarity_loss` (L_MS): the multi-similarity loss with hard-pair mining (Wang et
  al., CVPR 2019) on global image descriptors pooled from the segmentation (the retrieval
  descriptor of :func:`segloc.models.segmentation.global_descriptor`): the two images of a
  pair are positives, the other images of the batch negatives.

The paper gives the terms but not every constant; where a formula here is a choice (the
symmetrisation of L_CC and L_PC, the negatives of L_PF, the mining margin of L_MS, the level
weighting), the docstring of the function says so.

Points follow the COLMAP convention: (x, y) pixel coordinates in the input image with the
centre of the top-left pixel at (0.5, 0.5). A (H_l, W_l) map is taken to cover an image area of
``image_size = (H, W)`` pixels, so map cell ``(i, j)`` is centred at ``((j + 0.5) W / W_l,
(i + 0.5) H / H_l)``. For the segmentation network the area covered by level ``l`` is
``(stride_l H_l, stride_l W_l)``, the input size when it is a multiple of 32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from segloc.errors import SeglocError
from segloc.models.segmentation import class_probabilities, global_descriptor

logger = logging.getLogger("segloc")

ImageSize = tuple[int, int]


@dataclass
class SegLocLossConfig:
    """Weights and constants of :func:`segloc_loss`.

    Attributes:
        weight_ce: weight of L_CE (0 disables the term; so for every weight).
        weight_cc: weight of L_CC.
        weight_pc: weight of L_PC.
        weight_pf: weight of L_PF.
        weight_ms: weight of L_MS.
        level_weights: relative weight of each decoder level, coarse to fine; a term averages
            its levels with these weights normalised over the levels it uses.
        level_strides: output stride of each level (must match the network's
            ``level_strides``); level ``l`` covers ``stride_l * (H_l, W_l)`` input pixels.
        ce_levels: levels L_CE uses; pseudo-targets are resized to each.
        cc_levels: levels L_CC uses.
        pc_levels: levels L_PC uses; all share the same K prototypes.
        pf_levels: levels L_PF uses.
        correspondence_targets: ``"hard"`` (argmax targets, FGSN) or ``"soft"`` (detached
            distributions) for L_CC.
        prototype_temperature: temperature of L_PC when no concentrations are given.
        feature_temperature: InfoNCE temperature of L_PF.
        feature_negative_radius: in L_PF, correspondences of the same pair closer than this many
            cells of the level (in either image) are not used as negatives of each other.
        ms_alpha: multi-similarity positive scale alpha.
        ms_beta: multi-similarity negative scale beta.
        ms_base: multi-similarity similarity offset lambda.
        ms_margin: multi-similarity mining margin epsilon.
        descriptor_grid: pyramid of the global descriptor L_MS trains (``global_descriptor``).
        num_correspondences: correspondences drawn at random per pair for L_CC, L_PC and L_PF
            (0 keeps all); also bounds the (B M)^2 similarity matrix of L_PF.
    """

    weight_ce: float = 1.0
    weight_cc: float = 1.0
    weight_pc: float = 1.0
    weight_pf: float = 1.0
    weight_ms: float = 1.0
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    level_strides: tuple[int, ...] = (32, 16, 8, 4)
    ce_levels: tuple[int, ...] = (0, 1, 2, 3)
    cc_levels: tuple[int, ...] = (0, 1, 2, 3)
    pc_levels: tuple[int, ...] = (0, 1, 2, 3)
    pf_levels: tuple[int, ...] = (0, 1, 2, 3)
    correspondence_targets: str = "hard"
    prototype_temperature: float = 0.1
    feature_temperature: float = 0.07
    feature_negative_radius: float = 1.0
    ms_alpha: float = 2.0
    ms_beta: float = 50.0
    ms_base: float = 0.5
    ms_margin: float = 0.1
    descriptor_grid: tuple[int, ...] = (1, 2)
    num_correspondences: int = 512

    def __post_init__(self) -> None:
        weights = {name: getattr(self, name) for name in ("weight_ce", "weight_cc", "weight_pc", "weight_pf", "weight_ms")}
        if min(weights.values()) < 0:
            raise SeglocError(f"loss weights must be >= 0 (0 disables a term), got {weights}")
        if len(self.level_weights) != len(self.level_strides) or min(self.level_weights) <= 0:
            raise SeglocError(
                f"level_weights needs one positive weight per level ({len(self.level_strides)}), got {list(self.level_weights)}"
            )
        for name in ("ce_levels", "cc_levels", "pc_levels", "pf_levels"):
            levels = getattr(self, name)
            if not levels or any(not 0 <= level < len(self.level_strides) for level in levels):
                raise SeglocError(f"{name} must hold at least one level index in [0, {len(self.level_strides)}), got {list(levels)}")
        if self.correspondence_targets not in ("hard", "soft"):
            raise SeglocError(f"correspondence_targets must be 'hard' or 'soft', got {self.correspondence_targets!r}")
        for name in ("prototype_temperature", "feature_temperature", "ms_alpha", "ms_beta"):
            if getattr(self, name) <= 0:
                raise SeglocError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_correspondences < 0:
            raise SeglocError(f"num_correspondences must be >= 0 (0 keeps all), got {self.num_correspondences}")


# ---------------------------------------------------------------------------------------------
# Sampling maps at correspondences


def sample_at_points(maps: Tensor, points: Tensor, image_size: ImageSize, mode: str = "bilinear") -> Tensor:
    """Sample dense maps at pixel positions (COLMAP convention) with ``grid_sample``.

    Args:
        maps: (B, C, H_l, W_l) logits, features or probabilities.
        points: (B, M, 2) (x, y) pixels in an image of ``image_size``, top-left pixel centre at (0.5, 0.5).
        image_size: (H, W) pixels of the image area the maps cover.
        mode: ``"bilinear"`` or ``"nearest"``; outside the image the border value is used.

    Returns:
        (B, M, C) sampled values.
    """
    if maps.dim() != 4 or points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != maps.shape[0]:
        raise SeglocError(
            f"expected maps (B, C, H, W) and points (B, M, 2) with the same B, got {tuple(maps.shape)} and {tuple(points.shape)}"
        )
    height, width = image_size
    grid = points.to(maps.dtype) * maps.new_tensor([2.0 / width, 2.0 / height]) - 1.0  # align_corners=False: -1 = outer edge
    sampled = F.grid_sample(maps, grid.unsqueeze(2), mode=mode, padding_mode="border", align_corners=False)  # (B, C, M, 1)
    return sampled.squeeze(3).transpose(1, 2)


def points_inside(points: Tensor, image_size: ImageSize) -> Tensor:
    """(B, M) bool: the (B, M, 2) points lie in the image ``[0, W] x [0, H]`` (COLMAP pixel coordinates)."""
    height, width = image_size
    x, y = points[..., 0], points[..., 1]
    return (x >= 0) & (x <= width) & (y >= 0) & (y <= height) & torch.isfinite(points).all(dim=-1)


def _sample_targets(targets: Tensor, points: Tensor, image_size: ImageSize, num_classes: int) -> tuple[Tensor, Tensor]:
    """Target distributions (B, M, K) and their validity (B, M) at points, from (B, H_t, W_t) labels or (B, K, H_t, W_t) probabilities.

    Hard labels are read at the pixel containing the point (labels < 0 are ignored); soft
    targets are sampled bilinearly and renormalised (zero mass is ignored).
    """
    if targets.dim() == 3 and not targets.is_floating_point():
        _, target_height, target_width = targets.shape
        height, width = image_size
        column = (points[..., 0] * (target_width / width)).floor().long().clamp(0, target_width - 1)
        row = (points[..., 1] * (target_height / height)).floor().long().clamp(0, target_height - 1)
        labels = targets.flatten(1).gather(1, row * target_width + column)  # (B, M)
        valid = (labels >= 0) & (labels < num_classes)
        return F.one_hot(labels.clamp(0, num_classes - 1), num_classes).to(points.dtype), valid
    if targets.dim() == 4 and targets.shape[1] == num_classes:
        sampled = sample_at_points(targets.to(points.dtype), points, image_size).clamp_min(0.0)
        mass = sampled.sum(dim=-1)
        return sampled / mass.clamp_min(1e-12).unsqueeze(-1), mass > 1e-6
    raise SeglocError(
        f"targets must be (B, H, W) long labels or (B, {num_classes}, H, W) probabilities, got {tuple(targets.shape)} {targets.dtype}"
    )


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 (still differentiable) where the mask is empty."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1).to(values.dtype)


def _usable_correspondences(
    points_a: Tensor, points_b: Tensor, valid: Tensor | None, size_a: ImageSize, size_b: ImageSize
) -> tuple[Tensor, Tensor, Tensor]:
    """``(mask, points_a, points_b)``: (B, M) valid and inside both images; unusable points moved to (0, 0) (NaN padding allowed)."""
    if points_a.shape != points_b.shape or points_a.dim() != 3 or points_a.shape[-1] != 2:
        raise SeglocError(f"points_a and points_b must both be (B, M, 2), got {tuple(points_a.shape)} and {tuple(points_b.shape)}")
    mask = points_inside(points_a, size_a) & points_inside(points_b, size_b)
    if valid is not None:
        if valid.shape != points_a.shape[:2]:
            raise SeglocError(f"valid must be (B, M) = {tuple(points_a.shape[:2])}, got {tuple(valid.shape)}")
        mask = mask & valid.bool()
    keep = mask.unsqueeze(-1)
    return mask, torch.where(keep, points_a, 0.0), torch.where(keep, points_b, 0.0)


def select_correspondences(
    points_a: Tensor, points_b: Tensor, valid: Tensor | None, count: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw up to ``count`` valid correspondences per pair at random (no loop over points).

    Args:
        points_a: (B, M, 2) points in image A.
        points_b: (B, M, 2) corresponding points in image B.
        valid: (B, M) bool, or ``None`` for all valid.
        count: correspondences kept per pair; 0 (or >= M) keeps all.
        generator: random generator of the draw.

    Returns:
        ``(points_a, points_b, valid)`` of shapes (B, M', 2), (B, M', 2), (B, M') with
        M' = min(count, M); pairs with fewer valid correspondences are padded with invalid ones.
    """
    if valid is None:
        valid = torch.ones(points_a.shape[:2], dtype=torch.bool, device=points_a.device)
    if count <= 0 or count >= points_a.shape[1]:
        return points_a, points_b, valid.bool()
    scores = torch.rand(valid.shape, generator=generator).to(valid.device)  # drawn on the CPU: reproducible with a CPU generator
    index = (scores + valid.to(scores.dtype)).topk(count, dim=1).indices  # valid ones score in [1, 2)
    gather_points = index.unsqueeze(-1).expand(-1, -1, 2)
    return points_a.gather(1, gather_points), points_b.gather(1, gather_points), valid.bool().gather(1, index)


# ---------------------------------------------------------------------------------------------
# The loss terms


def cross_entropy_loss(logits: Tensor, targets: Tensor, valid: Tensor | None = None, ignore_index: int = -1) -> Tensor:
    """L_CE: cross-entropy of class logits against pseudo-targets, averaged over the used pixels.

    Args:
        logits: (B, K, H, W) class logits.
        targets: (B, H, W) long labels (``ignore_index`` or any negative label is ignored) or
            (B, K, H, W) soft targets (renormalised per pixel; pixels with zero mass are ignored).
        valid: optional (B, H, W) bool mask of the pixels to use.
        ignore_index: label value to ignore.

    Returns:
        Scalar ``mean_i -sum_k t_ik log softmax(logits_i)_k`` over the used pixels (0 if none).
    """
    if logits.dim() != 4:
        raise SeglocError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    log_probabilities = torch.log_softmax(logits, dim=1)
    if targets.dim() == 3 and not targets.is_floating_point():
        if targets.shape != logits.shape[:1] + logits.shape[2:]:
            raise SeglocError(
                f"hard targets must be (B, H, W) = {(logits.shape[0], *logits.shape[2:])}, got {tuple(targets.shape)}; resize them with resize_targets"
            )
        used = (targets != ignore_index) & (targets >= 0) & (targets < logits.shape[1])
        nll = -log_probabilities.gather(1, targets.clamp(0, logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
    elif targets.shape == logits.shape and targets.is_floating_point():
        soft = targets.detach().to(logits.dtype).clamp_min(0.0)
        mass = soft.sum(dim=1)
        used = mass > 1e-6
        nll = -(soft * log_probabilities).sum(dim=1) / mass.clamp_min(1e-12)
    else:
        raise SeglocError(
            f"targets must be (B, H, W) long labels or soft targets shaped like the logits {tuple(logits.shape)}, got {tuple(targets.shape)} {targets.dtype}"
        )
    if valid is not None:
        used = used & valid.bool()
    return _masked_mean(nll, used)


def correspondence_consistency_loss(
    logits_a: Tensor,
    logits_b: Tensor,
    points_a: Tensor,
    points_b: Tensor,
    image_size: ImageSize,
    valid: Tensor | None = None,
    targets: str = "hard",
    image_size_b: ImageSize | None = None,
) -> Tensor:
    """L_CC: corresponding points should be given the same class (FGSN's correspondence loss).

    The logits are sampled bilinearly at the points; with ``targets="hard"`` the loss is
    ``0.5 (CE(p_a, argmax p_b) + CE(p_b, argmax p_a))`` with detached argmax targets, as in
    FGSN but symmetrised (FGSN uses one direction, from a reference to a target image, which
    a pair of mapping images does not have); with ``"soft"`` the detached distributions are the
    targets. It is ~0 when both sides predict the same class confidently, and also rewards
    confidence (a cross-entropy, not a divergence).

    Args:
        logits_a: (B, K, H_a, W_a) class logits of image A at one level.
        logits_b: (B, K, H_b, W_b) class logits of image B at the same level.
        points_a: (B, M, 2) pixels in image A.
        points_b: (B, M, 2) corresponding pixels in image B.
        image_size: (H, W) image area covered by ``logits_a`` (and ``logits_b`` by default).
        valid: optional (B, M) bool; points outside the images are dropped too.
        targets: ``"hard"`` or ``"soft"``.
        image_size_b: the area covered by ``logits_b`` if it differs.

    Returns:
        Scalar loss (0 when no correspondence is valid).
    """
    size_b = image_size if image_size_b is None else image_size_b
    mask, points_a, points_b = _usable_correspondences(points_a, points_b, valid, image_size, size_b)
    log_a = torch.log_softmax(sample_at_points(logits_a, points_a, image_size), dim=-1)  # (B, M, K)
    log_b = torch.log_softmax(sample_at_points(logits_b, points_b, size_b), dim=-1)
    if targets == "hard":
        a_from_b = -log_a.gather(-1, log_b.detach().argmax(dim=-1, keepdim=True)).squeeze(-1)
        b_from_a = -log_b.gather(-1, log_a.detach().argmax(dim=-1, keepdim=True)).squeeze(-1)
    elif targets == "soft":
        a_from_b = -(log_b.detach().exp() * log_a).sum(dim=-1)
        b_from_a = -(log_a.detach().exp() * log_b).sum(dim=-1)
    else:
        raise SeglocError(f"correspondence targets must be 'hard' or 'soft', got {targets!r}")
    return 0.5 * (_masked_mean(a_from_b, mask) + _masked_mean(b_from_a, mask))


def prototypical_cross_contrastive_loss(
    features_a: Tensor,
    features_b: Tensor,
    points_a: Tensor,
    points_b: Tensor,
    image_size: ImageSize,
    prototypes: Tensor,
    concentrations: Tensor | None = None,
    targets: tuple[Tensor, Tensor] | None = None,
    valid: Tensor | None = None,
    temperature: float = 0.1,
    image_size_b: ImageSize | None = None,
) -> Tensor:
    """L_PC: ProtoNCE between correspondence features and the prototypes, crossed between the images.

    For a correspondence (x_a, x_b) with L2-normalised features v_a, v_b:
    ``-sum_k t_b,k log softmax_k(v_a . c_k / phi_k)`` where ``t_b`` is the cluster assigned at
    x_b, plus the same with A and B swapped, averaged. phi are PCL's concentrations (or one
    ``temperature``). Unlike PCL, all K prototypes are negatives (K = 100 is small) and one
    clustering is used, not several.

    Args:
        features_a: (B, D, H_a, W_a) features of image A at one level.
        features_b: (B, D, H_b, W_b) features of image B.
        points_a: (B, M, 2) pixels in image A.
        points_b: (B, M, 2) corresponding pixels in image B.
        image_size: (H, W) image area covered by ``features_a`` (and by default ``features_b``).
        prototypes: (K, D) prototypes (no gradient flows into them).
        concentrations: optional (K,) per-cluster temperatures phi.
        targets: optional ``(targets_a, targets_b)``, the pseudo-targets of image A and of
            image B, each (B, H', W') long or (B, K, H', W') soft, covering the same area as the
            features of its image. ``None``: the cluster of the nearest prototype to the
            (detached) feature at the corresponding point.
        valid: optional (B, M) bool.
        temperature: used when ``concentrations`` is ``None``.
        image_size_b: the area covered by ``features_b`` if it differs.

    Returns:
        Scalar loss.
    """
    size_b = image_size if image_size_b is None else image_size_b
    if prototypes.dim() != 2 or prototypes.shape[1] != features_a.shape[1]:
        raise SeglocError(
            f"prototypes must be (K, D) with D = {features_a.shape[1]} like the features, got shape {tuple(prototypes.shape)}"
        )
    mask, points_a, points_b = _usable_correspondences(points_a, points_b, valid, image_size, size_b)
    centres = F.normalize(prototypes.detach().to(features_a.dtype), dim=1)
    num_classes = centres.shape[0]
    scale = temperature if concentrations is None else concentrations.detach().to(features_a.dtype).clamp_min(1e-6)
    feature_a = F.normalize(sample_at_points(features_a, points_a, image_size), dim=-1)  # (B, M, D)
    feature_b = F.normalize(sample_at_points(features_b, points_b, size_b), dim=-1)
    log_a = torch.log_softmax(feature_a @ centres.T / scale, dim=-1)  # (B, M, K)
    log_b = torch.log_softmax(feature_b @ centres.T / scale, dim=-1)
    if targets is None:
        target_for_a = F.one_hot(log_b.detach().argmax(dim=-1), num_classes).to(log_a.dtype)
        target_for_b = F.one_hot(log_a.detach().argmax(dim=-1), num_classes).to(log_a.dtype)
        used_a = used_b = mask
    else:
        target_for_b, valid_a = _sample_targets(targets[0], points_a.to(log_a.dtype), image_size, num_classes)
        target_for_a, valid_b = _sample_targets(targets[1], points_b.to(log_a.dtype), size_b, num_classes)
        used_a, used_b = mask & valid_b, mask & valid_a
    loss_a = -(target_for_a * log_a).sum(dim=-1)
    loss_b = -(target_for_b * log_b).sum(dim=-1)
    return 0.5 * (_masked_mean(loss_a, used_a) + _masked_mean(loss_b, used_b))


def feature_consistency_loss(
    features_a: Tensor,
    features_b: Tensor,
    points_a: Tensor,
    points_b: Tensor,
    image_size: ImageSize,
    valid: Tensor | None = None,
    temperature: float = 0.07,
    negative_radius: float = 0.0,
    image_size_b: ImageSize | None = None,
) -> Tensor:
    """L_PF: InfoNCE over correspondences: matched features positive, the other correspondences negative.

    With the N valid correspondences of the whole batch and L2-normalised features,
    ``S_ij = v_a,i . v_b,j / temperature`` and the loss is
    ``0.5 (CE(S, diag) + CE(S^T, diag))``. Correspondences of the same pair closer than
    ``negative_radius`` pixels in image A or in image B are not negatives of each other (they
    see nearly the same feature cell; an addition of this project).

    Args:
        features_a: (B, D, H_a, W_a) features of image A at one level.
        features_b: (B, D, H_b, W_b) features of image B.
        points_a: (B, M, 2) pixels in image A.
        points_b: (B, M, 2) corresponding pixels in image B.
        image_size: (H, W) image area covered by ``features_a`` (and by default ``features_b``).
        valid: optional (B, M) bool.
        temperature: InfoNCE temperature.
        negative_radius: exclusion radius in input pixels (0: every other correspondence is a negative).
        image_size_b: the area covered by ``features_b`` if it differs.

    Returns:
        Scalar loss (0 when no correspondence is valid). Memory grows as N^2.
    """
    size_b = image_size if image_size_b is None else image_size_b
    mask, points_a, points_b = _usable_correspondences(points_a, points_b, valid, image_size, size_b)
    feature_a = F.normalize(sample_at_points(features_a, points_a, image_size), dim=-1)[mask]  # (N, D)
    feature_b = F.normalize(sample_at_points(features_b, points_b, size_b), dim=-1)[mask]
    count = feature_a.shape[0]
    if count == 0:
        return (features_a.sum() + features_b.sum()) * 0.0
    similarity = feature_a @ feature_b.T / temperature  # (N, N)
    if negative_radius > 0:
        pair = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)[mask]
        near = (torch.cdist(points_a[mask], points_a[mask]) < negative_radius) | (
            torch.cdist(points_b[mask], points_b[mask]) < negative_radius
        )
        excluded = near & (pair[:, None] == pair[None, :])
        excluded.fill_diagonal_(False)
        similarity = similarity.masked_fill(excluded, float("-inf"))
    positives = torch.arange(count, device=similarity.device)
    return 0.5 * (F.cross_entropy(similarity, positives) + F.cross_entropy(similarity.T, positives))


def _log1p_sum_exp(values: Tensor, mask: Tensor) -> Tensor:
    """Row-wise ``log(1 + sum_{mask} exp(values))``, stable, 0 (with zero gradient) for empty rows."""
    floor = torch.finfo(values.dtype).min / 4  # a finite -inf: empty rows keep finite gradients
    return F.softplus(torch.logsumexp(values.masked_fill(~mask, floor), dim=1))


def multi_similarity_loss(
    embeddings: Tensor | tuple[Tensor, Tensor, Tensor],
    labels: Tensor | None = None,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    margin: float = 0.1,
) -> Tensor:
    """L_MS: multi-similarity loss with hard-pair mining (Wang et al., CVPR 2019).

    With cosine similarities S_ij, for each anchor i the mined positives are
    ``P_i = {j: y_j = y_i, j != i, S_ij - margin < max_{y_k != y_i} S_ik}`` and the mined negatives
    ``N_i = {k: y_k != y_i, S_ik + margin > min_{y_j = y_i} S_ij}``; then
    ``L = 1/n sum_i [1/alpha log(1 + sum_{P_i} exp(-alpha (S_ij - base)))
    + 1/beta log(1 + sum_{N_i} exp(beta (S_ik - base)))]``, where an anchor whose mined P_i or
    N_i is empty contributes 0 and the sum is divided by all n anchors (as in the authors'
    released code). alpha 2, lambda 0.5 and epsilon 0.1 follow that code; beta is 50 here (the
    code uses 40, other reimplementations 50).

    Args:
        embeddings: (n, D) embeddings with ``labels``, or a triplet ``(anchors, positives,
            negatives)`` of (B, D) each: anchor i and positive i share a label, every negative
            has its own, and all other images of the batch are negatives.
        labels: (n,) integer labels (same label = positive pair); required for a plain batch.
        alpha: positive scale.
        beta: negative scale.
        base: similarity offset lambda.
        margin: mining margin epsilon.

    Returns:
        Scalar loss. Embeddings are L2-normalised here.
    """
    if isinstance(embeddings, (tuple, list)):
        anchors, positives, negatives = embeddings
        if not anchors.shape == positives.shape == negatives.shape or anchors.dim() != 2:
            raise SeglocError(f"anchors, positives and negatives must all be (B, D), got {[tuple(e.shape) for e in embeddings]}")
        count = anchors.shape[0]
        pair = torch.arange(count, device=anchors.device)
        embeddings, labels = torch.cat([anchors, positives, negatives]), torch.cat([pair, pair, pair + count])
    if labels is None or embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise SeglocError(
            f"multi_similarity_loss needs (n, D) embeddings with (n,) labels, got {tuple(embeddings.shape)} and {None if labels is None else tuple(labels.shape)}"
        )
    unit = F.normalize(embeddings, dim=1)
    similarity = unit @ unit.T  # (n, n)
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    negative = ~same
    with torch.no_grad():
        hardest_positive = similarity.masked_fill(~positive, float("inf")).min(dim=1).values
        hardest_negative = similarity.masked_fill(~negative, float("-inf")).max(dim=1).values
        mined_negative = negative & (similarity + margin > hardest_positive[:, None])
        mined_positive = positive & (similarity - margin < hardest_negative[:, None])
        active = (mined_positive.any(dim=1) & mined_negative.any(dim=1)).to(similarity.dtype)
    positive_term = _log1p_sum_exp(-alpha * (similarity - base), mined_positive) / alpha
    negative_term = _log1p_sum_exp(beta * (similarity - base), mined_negative) / beta
    return ((positive_term + negative_term) * active).sum() / len(labels)


# ---------------------------------------------------------------------------------------------
# The combined loss


def resize_targets(targets: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize pseudo-targets to a level's (H_l, W_l).

    Hard (B, H, W) labels use ``nearest-exact`` (the pixel under each cell centre, ignore labels
    kept); soft (B, K, H, W) targets are area-averaged when shrinking and bilinearly
    interpolated otherwise (still distributions over K).
    """
    if tuple(targets.shape[-2:]) == tuple(size):
        return targets
    if targets.dim() == 3 and not targets.is_floating_point():
        return F.interpolate(targets[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()
    if targets.dim() == 4 and targets.is_floating_point():
        if size[0] <= targets.shape[-2] and size[1] <= targets.shape[-1]:
            return F.interpolate(targets, size=size, mode="area")
        return F.interpolate(targets, size=size, mode="bilinear", align_corners=False)
    raise SeglocError(
        f"pseudo-targets must be (B, H, W) long labels or (B, K, H, W) probabilities, got {tuple(targets.shape)} {targets.dtype}"
    )


def _level_targets(targets: Tensor | Sequence[Tensor], level: int, size: tuple[int, int]) -> Tensor:
    """The pseudo-targets of one image at one level: a per-level sequence is indexed, one tensor resized."""
    return resize_targets(targets if isinstance(targets, Tensor) else targets[level], size)


def _level_average(levels: Sequence[int], level_weights: Sequence[float], term: Callable[[int], Tensor]) -> Tensor:
    """``sum_l w_l term(l) / sum_l w_l`` over ``levels``."""
    total = sum(level_weights[level] for level in levels)
    return sum(level_weights[level] / total * term(level) for level in levels)


def segloc_loss(
    outputs_a: Any,
    outputs_b: Any,
    batch: Mapping[str, Tensor],
    prototypes: Tensor | None = None,
    concentrations: Tensor | None = None,
    pseudo_targets: tuple[Tensor | Sequence[Tensor], Tensor | Sequence[Tensor]] | None = None,
    config: SegLocLossConfig | None = None,
    outputs_negative: Any | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The SegLoc training loss of a batch of image pairs: ``sum_t w_t L_t`` over the enabled terms.

    Levels: L_CE, L_CC, L_PC and L_PF are computed at each level of their ``*_levels`` (all
    four by default: the pose refinement uses the class probabilities of every level, and all
    levels share the K classes and the prototypes) and averaged with ``level_weights``
    (equal by default). L_MS uses the finest level's class probabilities, pooled by
    ``global_descriptor`` into the retrieval descriptor. Both images of a pair count equally.

    Args:
        outputs_a: the network's output for images A (``SegmentationOutput``: ``features`` and
            ``logits``, sequences of (B, D, H_l, W_l) and (B, K, H_l, W_l), coarse to fine).
        outputs_b: the same for images B.
        batch: ``points_a``, ``points_b`` (B, M, 2) COLMAP pixel correspondences in the input
            images; optional ``valid`` (B, M) bool (padding); optional ``pair_labels`` (B,)
            (pairs with the same label are positives of each other in L_MS; by default each pair
            is its own place).
        prototypes: (K, D) prototypes; required by L_PC.
        concentrations: optional (K,) PCL concentrations for L_PC.
        pseudo_targets: ``(targets_a, targets_b)``; each (B, H, W) long or (B, K, H, W) soft at
            any resolution (resized to every level), or a sequence with one per level. Required
            by L_CE; L_PC uses them when given, else nearest-prototype assignments.
        config: weights and constants (defaults: :class:`SegLocLossConfig`).
        outputs_negative: optional output for negative images (B of them) for L_MS.
        generator: random generator of the correspondence sampling.

    Returns:
        ``(total, terms)``: the scalar loss to back-propagate and a dict of the detached
        unweighted terms (``ce``, ``cc``, ``pc``, ``pf``, ``ms``) that were computed.
    """
    config = config if config is not None else SegLocLossConfig()
    logits_a, logits_b = outputs_a.logits, outputs_b.logits
    num_levels = len(config.level_strides)
    if len(logits_a) != num_levels or len(logits_b) != num_levels:
        raise SeglocError(f"expected {num_levels} output levels (config.level_strides), got {len(logits_a)} and {len(logits_b)}")
    for key in ("points_a", "points_b"):
        if key not in batch:
            raise SeglocError(f"the training batch has no {key!r}; pairs must carry (B, M, 2) correspondences points_a and points_b")
    points_a, points_b, valid = select_correspondences(
        batch["points_a"], batch["points_b"], batch.get("valid"), config.num_correspondences, generator
    )

    def span(maps: Tensor, level: int) -> ImageSize:
        stride = config.level_strides[level]
        return (stride * maps.shape[-2], stride * maps.shape[-1])

    def features(level: int) -> tuple[Tensor, Tensor]:
        if len(outputs_a.features) != num_levels or len(outputs_b.features) != num_levels:
            raise SeglocError("L_PC and L_PF need the feature maps: run the network with with_features=True")
        return outputs_a.features[level], outputs_b.features[level]

    terms: dict[str, Tensor] = {}
    if config.weight_ce > 0:
        if pseudo_targets is None:
            raise SeglocError("L_CE needs pseudo-targets (targets_a, targets_b); set weight_ce to 0 to train without them")

        def ce(level: int) -> Tensor:
            loss_a = cross_entropy_loss(logits_a[level], _level_targets(pseudo_targets[0], level, tuple(logits_a[level].shape[-2:])))
            loss_b = cross_entropy_loss(logits_b[level], _level_targets(pseudo_targets[1], level, tuple(logits_b[level].shape[-2:])))
            return 0.5 * (loss_a + loss_b)

        terms["ce"] = _level_average(config.ce_levels, config.level_weights, ce)
    if config.weight_cc > 0:
        terms["cc"] = _level_average(
            config.cc_levels,
            config.level_weights,
            lambda level: correspondence_consistency_loss(
                logits_a[level],
                logits_b[level],
                points_a,
                points_b,
                span(logits_a[level], level),
                valid,
                config.correspondence_targets,
                span(logits_b[level], level),
            ),
        )
    if config.weight_pc > 0:
        if prototypes is None:
            raise SeglocError("L_PC needs the (K, D) prototypes; set weight_pc to 0 to train without them")

        def pc(level: int) -> Tensor:
            feature_a, feature_b = features(level)
            level_targets = None
            if pseudo_targets is not None:
                level_targets = (
                    _level_targets(pseudo_targets[0], level, tuple(feature_a.shape[-2:])),
                    _level_targets(pseudo_targets[1], level, tuple(feature_b.shape[-2:])),
                )
            return prototypical_cross_contrastive_loss(
                feature_a,
                feature_b,
                points_a,
                points_b,
                span(feature_a, level),
                prototypes,
                concentrations,
                level_targets,
                valid,
                config.prototype_temperature,
                span(feature_b, level),
            )

        terms["pc"] = _level_average(config.pc_levels, config.level_weights, pc)
    if config.weight_pf > 0:

        def pf(level: int) -> Tensor:
            feature_a, feature_b = features(level)
            radius = config.feature_negative_radius * config.level_strides[level]
            return feature_consistency_loss(
                feature_a,
                feature_b,
                points_a,
                points_b,
                span(feature_a, level),
                valid,
                config.feature_temperature,
                radius,
                span(feature_b, level),
            )

        terms["pf"] = _level_average(config.pf_levels, config.level_weights, pf)
    if config.weight_ms > 0:
        terms["ms"] = _retrieval_loss(outputs_a, outputs_b, outputs_negative, batch.get("pair_labels"), config)
    if not terms:
        raise SeglocError("every loss weight is 0; enable at least one term of SegLocLossConfig")
    weights = {"ce": config.weight_ce, "cc": config.weight_cc, "pc": config.weight_pc, "pf": config.weight_pf, "ms": config.weight_ms}
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {name: value.detach() for name, value in terms.items()}


def _retrieval_loss(
    outputs_a: Any, outputs_b: Any, outputs_negative: Any | None, pair_labels: Tensor | None, config: SegLocLossConfig
) -> Tensor:
    """L_MS on the finest-level global descriptors of A, B (and negatives)."""

    def describe(outputs: Any) -> Tensor:
        return global_descriptor(class_probabilities(outputs.logits[-1]), grid=config.descriptor_grid)

    descriptors = [describe(outputs_a), describe(outputs_b)]
    count = descriptors[0].shape[0]
    if pair_labels is None:
        pair_labels = torch.arange(count, device=descriptors[0].device)
    labels = [pair_labels, pair_labels]
    if outputs_negative is not None:
        descriptors.append(describe(outputs_negative))
        labels.append(pair_labels.max() + 1 + torch.arange(descriptors[-1].shape[0], device=pair_labels.device))
    return multi_similarity_loss(
        torch.cat(descriptors), torch.cat(labels), config.ms_alpha, config.ms_beta, config.ms_base, config.ms_margin
    )
