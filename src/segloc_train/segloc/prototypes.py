"""Cluster prototypes for SegLoc training: initial clustering, per-epoch updates, concentrations, pseudo-targets.

SegLoc (Pietrantoni et al., CVPR 2023) learns K self-supervised classes. The recipe here:

1. :func:`init_prototypes` clusters dense features sampled from a random subset of mapping
   images into K prototypes: spherical k-means (k-means++ seeding, torch matmuls) or mean
   shift. With ``meta_labels`` (one meta-class per feature, from a pretrained semantic model)
   the K clusters are split across the meta-classes in proportion to their feature counts and
   each meta-class is clustered on its own; without them the clustering is global. The paper
   clusters per meta-class; the global fallback is this project's deviation for scenes where
   no semantic model is supplied.
2. In the first epoch the pseudo-targets come from prototype similarity
   (:func:`pseudo_targets_from_prototypes`); afterwards from the DEC target distribution of the
   network's own predictions (:func:`target_distribution`, Xie et al. 2016).
3. After each epoch :func:`update_prototypes` recomputes the prototypes from the features and
   their assignments and :func:`cluster_concentrations` the per-cluster concentrations phi_k of
   prototypical contrastive learning (PCL, Li et al. 2021), the temperatures of L_PC.

All similarities are cosine similarities: features are L2-normalised before clustering and
prototypes are unit vectors, so k-means is *spherical* k-means (assignment by the largest dot
product, centre = normalised mean).

Example:
    >>> features = torch.nn.functional.normalize(torch.randn(5000, 32), dim=1)
    >>> prototypes = init_prototypes(features, 10, seed=0)  # (10, 32), unit rows
    >>> assignments = assign_to_prototypes(features, prototypes)  # (5000,)
    >>> phi = cluster_concentrations(features, assignments, prototypes)  # (10,), mean 0.1
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from segloc.errors import SeglocError

logger = logging.getLogger("segloc")

_CHUNK_ROWS = 65536  # rows of the (N, K) similarity matrix computed at once


def _check_features(features: Tensor, name: str = "features") -> None:
    if features.dim() != 2 or features.shape[0] == 0:
        raise SeglocError(f"{name} must be a non-empty (N, D) tensor of feature vectors, got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise SeglocError(f"{name} contain NaN or infinite values; check the network outputs before clustering")


def sample_feature_vectors(feature_maps: Tensor, per_image: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Flatten dense feature maps into feature vectors, optionally a random subset per image.

    Args:
        feature_maps: (B, D, H, W) dense features (e.g. the finest ``features[l]`` of the network).
        per_image: number of pixels drawn at random (without replacement) from each image;
            ``None`` keeps all H * W.
        generator: random generator for the pixel draw.

    Returns:
        (B * min(per_image, H * W), D) feature vectors (not normalised).
    """
    if feature_maps.dim() != 4:
        raise SeglocError(f"feature maps must be (B, D, H, W), got shape {tuple(feature_maps.shape)}")
    batch, dim, height, width = feature_maps.shape
    vectors = feature_maps.flatten(2).transpose(1, 2)  # (B, H*W, D)
    if per_image is not None and per_image < height * width:
        scores = torch.rand(batch, height * width, generator=generator, device=feature_maps.device)
        index = scores.topk(per_image, dim=1).indices  # (B, per_image)
        vectors = vectors.gather(1, index.unsqueeze(-1).expand(-1, -1, dim))
    return vectors.reshape(-1, dim)


def assign_to_prototypes(features: Tensor, prototypes: Tensor) -> Tensor:
    """Index of the most similar prototype (cosine similarity) for each feature.

    Args:
        features: (N, D) feature vectors (normalised or not; the norm does not change the argmax).
        prototypes: (K, D) prototypes.

    Returns:
        (N,) long cluster indices in [0, K).
    """
    prototypes = F.normalize(prototypes, dim=1)
    return torch.cat([(chunk @ prototypes.T).argmax(dim=1) for chunk in features.split(_CHUNK_ROWS)])


def _best_similarity(features: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """(N,) largest dot product with any centre and (N,) its index, computed in row chunks."""
    values, indices = [], []
    for chunk in features.split(_CHUNK_ROWS):
        best = (chunk @ centres.T).max(dim=1)
        values.append(best.values)
        indices.append(best.indices)
    return torch.cat(values), torch.cat(indices)


def _kmeans_plus_plus(
    points: Tensor,
    num_clusters: int,
    generator: torch.Generator,
    existing: Tensor | None = None,
    max_points: int = 20000,
    greedy: bool = True,
) -> Tensor:
    """Greedy k-means++ seeding on unit vectors (squared distance ``2 - 2 cos``).

    Each step draws ``2 + 3 ln K`` candidates with probability proportional to the squared
    distance to the nearest chosen centre and keeps the one that lowers the total squared
    distance most (the greedy variant of Arthur & Vassilvitskii 2007; the usual ``2 + ln K``
    candidates leave ~7 of 100 well-separated 256-d clusters unseeded, because points of an
    already covered cluster keep a third of the weight of an uncovered one). The seeding runs
    on at most ``max_points`` random points; Lloyd iterations then use all of them.

    Args:
        points: (N, D) unit vectors.
        num_clusters: number of new centres to draw.
        generator: random generator.
        existing: (E, D) centres already chosen; they shape the draw but are not returned.
        max_points: subsample size for the seeding.
        greedy: draw several candidates per step; ``False`` draws one (plain k-means++, cheaper).

    Returns:
        (num_clusters, D) centres drawn from ``points``.
    """
    if points.shape[0] > max_points:
        points = points[torch.randperm(points.shape[0], generator=generator)[:max_points]]
    count = points.shape[0]
    trials = 2 + int(3 * math.log(max(num_clusters, 1))) if greedy else 1
    if existing is not None and existing.shape[0] > 0:
        min_distance = (2.0 - 2.0 * _best_similarity(points, existing)[0]).clamp_min(0.0)
    else:
        min_distance = points.new_ones(count)  # the first centre is drawn uniformly
    chosen = []
    for _ in range(num_clusters):
        cumulative = min_distance.cumsum(0)
        if float(cumulative[-1]) <= 0.0:  # every point coincides with a centre: draw uniformly
            candidates = torch.randint(count, (trials,), generator=generator)
        else:
            draws = torch.rand(trials, generator=generator, dtype=cumulative.dtype) * cumulative[-1]
            candidates = torch.searchsorted(cumulative, draws, right=True).clamp_max(count - 1)  # zero-weight points never drawn
        candidate_distance = torch.minimum(min_distance[:, None], (2.0 - 2.0 * points @ points[candidates].T).clamp_min(0.0))  # (n, trials)
        best = int(candidate_distance.sum(dim=0).argmin())
        chosen.append(points[candidates[best]])
        min_distance = candidate_distance[:, best]
    return torch.stack(chosen) if chosen else points.new_zeros(0, points.shape[1])


def _spherical_kmeans(
    points: Tensor, num_clusters: int, generator: torch.Generator, max_iterations: int = 50, tolerance: float = 1e-3
) -> Tensor:
    """Lloyd iterations of spherical k-means from a greedy k-means++ seeding.

    Args:
        points: (N, D) unit vectors, N >= num_clusters.
        num_clusters: K.
        generator: random generator of the seeding.
        max_iterations: upper bound on Lloyd iterations.
        tolerance: stop when fewer than this fraction of the points change cluster, or when the
            mean similarity to the assigned centre improves by less than ``tolerance / 100``.

    Returns:
        (K, D) unit centres. A cluster that empties is re-seeded with the point farthest from its centre.
    """
    count = points.shape[0]
    start = time.perf_counter()
    centres = _kmeans_plus_plus(points, num_clusters, generator)
    logger.debug("k-means++ seeding of %d centres in %.2f s", num_clusters, time.perf_counter() - start)
    assignments: Tensor | None = None
    previous_objective = -math.inf
    for iteration in range(max_iterations):
        similarity, new_assignments = _best_similarity(points, centres)
        changed = count if assignments is None else int((new_assignments != assignments).sum())
        objective = float(similarity.mean())
        assignments = new_assignments
        sums = points.new_zeros(num_clusters, points.shape[1]).index_add_(0, assignments, points)
        empty = torch.bincount(assignments, minlength=num_clusters) == 0
        centres = F.normalize(sums, dim=1)
        if empty.any():
            farthest = similarity.topk(int(empty.sum()), largest=False).indices
            centres[empty] = points[farthest]
        logger.debug("k-means iteration %d: mean similarity %.5f, %d points changed cluster", iteration, objective, changed)
        converged = changed < tolerance * count or objective - previous_objective < 0.01 * tolerance
        if converged and not empty.any():
            break
        previous_objective = objective
    return centres


def _estimate_bandwidth(points: Tensor, neighbours: int, generator: torch.Generator, num_queries: int = 1000) -> float:
    """Mean Euclidean distance from up to ``num_queries`` points to their ``neighbours``-th nearest neighbour."""
    queries = points[torch.randperm(points.shape[0], generator=generator)[:num_queries]]
    neighbours = max(1, min(neighbours, points.shape[0] - 1))
    kth_similarity = (queries @ points.T).topk(neighbours + 1, dim=1).values[:, -1]  # +1: the query itself
    return float((2.0 - 2.0 * kth_similarity).clamp_min(0.0).sqrt().mean())


def _mean_shift(
    points: Tensor,
    num_clusters: int,
    generator: torch.Generator,
    bandwidth: float | None = None,
    max_points: int = 20000,
    max_iterations: int = 50,
) -> Tensor:
    """Flat-kernel mean shift on the unit sphere, returning exactly K modes.

    Mean shift finds its own number of modes, while SegLoc needs exactly K classes: the modes
    are ranked by population (points within the bandwidth), near-duplicates (closer than the
    bandwidth) merged, the K most populated kept, and missing ones filled by k-means++ draws
    away from the kept modes.

    Args:
        points: (N, D) unit vectors.
        num_clusters: K.
        generator: random generator (subsampling, seeds).
        bandwidth: kernel radius (Euclidean distance between unit vectors, in [0, 2]); ``None``
            estimates it as the mean distance to the (n / 2K)-th nearest neighbour: about the
            median distance inside a cluster of average population, so that a mode's kernel
            stays within its cluster.
        max_points: density estimated on at most this many random points (cost ~ seeds x points).
        max_iterations: upper bound on mean-shift iterations.

    Returns:
        (K, D) unit modes.
    """
    if points.shape[0] > max_points:
        points = points[torch.randperm(points.shape[0], generator=generator)[:max_points]]
    count = points.shape[0]
    if bandwidth is None:
        bandwidth = _estimate_bandwidth(points, count // (2 * num_clusters), generator)
    bandwidth = max(float(bandwidth), 1e-6)
    threshold = 1.0 - 0.5 * bandwidth**2  # |a - b| < bandwidth  <=>  a . b > threshold for unit vectors
    seeds = _kmeans_plus_plus(points, min(count, 4 * num_clusters), generator, greedy=False)  # spread seeds: every cluster gets some
    for _ in range(max_iterations):
        within = ((seeds @ points.T) >= threshold).to(points.dtype)  # (S, n)
        population = within.sum(dim=1)
        shifted = torch.where(population[:, None] > 0, F.normalize(within @ points, dim=1), seeds)
        shift = float((shifted - seeds).norm(dim=1).max())
        seeds = shifted
        if shift < 1e-3 * bandwidth:
            break
    population = ((seeds @ points.T) >= threshold).sum(dim=1)
    kept: list[Tensor] = []
    for index in population.argsort(descending=True).tolist():  # loop over <= 4K seeds
        if len(kept) == num_clusters:
            break
        if not kept or float((torch.stack(kept) @ seeds[index]).max()) < threshold:
            kept.append(seeds[index])
    modes = torch.stack(kept)
    logger.debug("mean shift: bandwidth %.4f, %d distinct modes kept of %d seeds", bandwidth, len(kept), seeds.shape[0])
    if len(kept) < num_clusters:
        modes = torch.cat([modes, _kmeans_plus_plus(points, num_clusters - len(kept), generator, existing=modes)])
    return modes


def split_clusters(counts: list[int], num_clusters: int) -> list[int]:
    """Split K clusters across meta-classes in proportion to their feature counts.

    Every meta-class with features gets at least one cluster and never more clusters than
    features; each further cluster goes to the meta-class whose clusters currently hold the
    most features each (the D'Hondt rule), which approximates proportional shares.

    Args:
        counts: number of sampled features of each meta-class.
        num_clusters: K.

    Returns:
        Number of clusters per meta-class (0 where the count is 0), summing to K.
    """
    present = [c for c in counts if c > 0]
    if num_clusters < len(present):
        raise SeglocError(
            f"cannot split {num_clusters} clusters across {len(present)} meta-classes; use at least one cluster per meta-class"
        )
    if sum(counts) < num_clusters:
        raise SeglocError(f"only {sum(counts)} features for {num_clusters} clusters; sample more features")
    allocation = [1 if c > 0 else 0 for c in counts]
    for _ in range(num_clusters - sum(allocation)):
        open_classes = [i for i, c in enumerate(counts) if 0 < allocation[i] < c]
        best = max(open_classes, key=lambda i: counts[i] / allocation[i])
        allocation[best] += 1
    return allocation


def init_prototypes(
    features: Tensor,
    num_clusters: int,
    method: str = "kmeans",
    meta_labels: Tensor | None = None,
    seed: int = 0,
    max_iterations: int = 50,
    bandwidth: float | None = None,
) -> Tensor:
    """Initial prototypes: cluster sampled dense features into K unit vectors.

    Args:
        features: (N, D) dense features sampled from a random subset of mapping images
            (see :func:`sample_feature_vectors`); L2-normalised here.
        num_clusters: K, the number of classes (100 in SegLoc).
        method: ``"kmeans"`` (spherical k-means, k-means++ seeding) or ``"meanshift"``
            (flat-kernel mean shift, K most populated modes; see :func:`_mean_shift`).
        meta_labels: optional (N,) integer meta-class of each feature (from a pretrained semantic
            segmentation); the K clusters are split across meta-classes with
            :func:`split_clusters` and each meta-class clustered separately. ``None``: one
            global clustering (this project's fallback when no semantic model is supplied).
        seed: seed of every random draw, for reproducible prototypes.
        max_iterations: k-means / mean-shift iteration cap.
        bandwidth: mean-shift radius (``None`` estimates it).

    Returns:
        (K, D) L2-normalised prototypes; with ``meta_labels`` grouped by increasing meta-class.
    """
    _check_features(features)
    if method not in ("kmeans", "meanshift"):
        raise SeglocError(f"unknown clustering method {method!r}; use 'kmeans' or 'meanshift'")
    if num_clusters < 1 or features.shape[0] < num_clusters:
        raise SeglocError(f"need at least K={num_clusters} >= 1 features to build K prototypes, got {features.shape[0]}")
    start = time.perf_counter()
    points = F.normalize(features.detach().float(), dim=1)
    generator = torch.Generator(device=points.device).manual_seed(seed)
    cluster = _spherical_kmeans if method == "kmeans" else _mean_shift
    options = {"max_iterations": max_iterations} if method == "kmeans" else {"max_iterations": max_iterations, "bandwidth": bandwidth}
    if meta_labels is None:
        prototypes = cluster(points, num_clusters, generator, **options)
    else:
        if meta_labels.shape != (points.shape[0],):
            raise SeglocError(f"meta_labels must be (N,) = ({points.shape[0]},) like the features, got shape {tuple(meta_labels.shape)}")
        classes, counts = torch.unique(meta_labels, return_counts=True)
        allocation = split_clusters(counts.tolist(), num_clusters)
        logger.info("prototypes per meta-class: %s", dict(zip(classes.tolist(), allocation)))
        prototypes = torch.cat([cluster(points[meta_labels == c], k, generator, **options) for c, k in zip(classes.tolist(), allocation)])
    logger.info(
        "initial prototypes: %s of %d features (D=%d) into K=%d in %.2f s", method, *points.shape, num_clusters, time.perf_counter() - start
    )
    return F.normalize(prototypes, dim=1)


def update_prototypes(
    features: Tensor, assignments: Tensor, num_clusters: int, previous: Tensor | None = None, momentum: float = 0.0
) -> Tensor:
    """Recompute prototypes as the normalised mean of their assigned features (once per epoch).

    ``c_k = normalise(momentum * previous_k + (1 - momentum) * normalise(mean of features in k))``.

    Args:
        features: (N, D) features of the epoch (L2-normalised here).
        assignments: (N,) long cluster indices (e.g. the pseudo-targets' argmax), or (N, K)
            soft assignment weights.
        num_clusters: K.
        previous: (K, D) prototypes before the update; clusters with no feature keep them.
            Without ``previous`` an empty cluster takes the feature farthest from its cluster.
        momentum: weight of ``previous`` in [0, 1); 0 replaces the prototypes.

    Returns:
        (K, D) L2-normalised prototypes.
    """
    _check_features(features)
    if not 0.0 <= momentum < 1.0:
        raise SeglocError(f"prototype momentum must be in [0, 1), got {momentum}")
    points = F.normalize(features.detach().float(), dim=1)
    assignments = assignments.detach()
    if assignments.dim() == 1 and not assignments.is_floating_point():
        if assignments.shape[0] != points.shape[0] or (
            assignments.numel() and (assignments.min() < 0 or assignments.max() >= num_clusters)
        ):
            raise SeglocError(
                f"assignments must be (N,) = ({points.shape[0]},) indices in [0, {num_clusters}), got shape {tuple(assignments.shape)}"
            )
        sums = points.new_zeros(num_clusters, points.shape[1]).index_add_(0, assignments, points)
        mass = torch.bincount(assignments, minlength=num_clusters).to(points.dtype)
        hard = assignments
    elif assignments.shape == (points.shape[0], num_clusters):
        weights = assignments.to(points.dtype)
        sums, mass, hard = weights.T @ points, weights.sum(dim=0), weights.argmax(dim=1)
    else:
        raise SeglocError(
            f"assignments must be (N,) indices or (N, K) weights with N={points.shape[0]}, K={num_clusters}; got shape {tuple(assignments.shape)}"
        )
    means = F.normalize(sums, dim=1)
    empty = mass <= 1e-12
    if previous is not None:
        if previous.shape != means.shape:
            raise SeglocError(f"previous prototypes must be (K, D) = {tuple(means.shape)}, got shape {tuple(previous.shape)}")
        previous = F.normalize(previous.detach().to(points), dim=1)
        prototypes = F.normalize(momentum * previous + (1.0 - momentum) * means, dim=1)
        prototypes[empty] = previous[empty]
    else:
        prototypes = means
        if empty.any():
            logger.warning("%d of %d clusters are empty; re-seeding them with outlying features", int(empty.sum()), num_clusters)
            similarity = (points * means[hard]).sum(dim=1)
            prototypes[empty] = points[similarity.topk(int(empty.sum()), largest=False).indices]
    return prototypes


def cluster_concentrations(
    features: Tensor,
    assignments: Tensor,
    prototypes: Tensor,
    alpha: float = 10.0,
    mean_concentration: float = 0.1,
    clamp_quantiles: tuple[float, float] = (0.1, 0.9),
) -> Tensor:
    """PCL concentrations phi_k: per-cluster temperatures, small for tight clusters.

    ``phi_k = sum_{v in k} ||v - c_k|| / (n_k log(n_k + alpha))`` on L2-normalised features
    (Li et al., "Prototypical Contrastive Learning", ICLR 2021). As in PCL, clusters with fewer
    than two features get the largest phi of the others, the values are clamped between the
    ``clamp_quantiles`` of the distribution, and then scaled to have mean ``mean_concentration``
    (PCL's temperature tau = 0.1).

    Args:
        features: (N, D) features (L2-normalised here).
        assignments: (N,) long cluster indices in [0, K).
        prototypes: (K, D) prototypes.
        alpha: smoothing of the denominator (PCL: 10); keeps small clusters from getting tiny phi.
        mean_concentration: mean of the returned values.
        clamp_quantiles: (low, high) quantiles to clamp to; ``(0, 1)`` disables clamping.

    Returns:
        (K,) positive concentrations.
    """
    _check_features(features)
    num_clusters = prototypes.shape[0]
    if assignments.shape != (features.shape[0],) or assignments.is_floating_point():
        raise SeglocError(f"assignments must be (N,) = ({features.shape[0]},) long indices, got shape {tuple(assignments.shape)}")
    points = F.normalize(features.detach().float(), dim=1)
    centres = F.normalize(prototypes.detach().to(points), dim=1)
    distance = (points - centres[assignments]).norm(dim=1)
    distance_sums = points.new_zeros(num_clusters).index_add_(0, assignments, distance)
    counts = torch.bincount(assignments, minlength=num_clusters).to(points.dtype)
    populated = counts >= 2
    if not populated.any():
        logger.warning("no cluster has two features; using the mean concentration %.3f for all", mean_concentration)
        return points.new_full((num_clusters,), mean_concentration)
    phi = distance_sums / (counts * torch.log(counts + alpha)).clamp_min(1e-12)
    phi = torch.where(populated, phi, phi[populated].max())
    low, high = torch.quantile(phi[populated], torch.tensor(clamp_quantiles, dtype=phi.dtype))
    phi = phi.clamp(float(low), float(high)).clamp_min(1e-6)
    return phi * (mean_concentration / phi.mean())


def pseudo_targets_from_prototypes(
    features: Tensor, prototypes: Tensor, concentrations: Tensor | None = None, temperature: float = 0.1, hard: bool = False
) -> Tensor:
    """First-epoch pseudo-targets: soft or hard assignment of each pixel to the prototypes.

    ``q_k = softmax_k(cos(v, c_k) / phi_k)`` with the concentrations phi, or with a single
    ``temperature`` when ``concentrations`` is ``None``. No gradient flows.

    Args:
        features: (B, D, H, W) dense features.
        prototypes: (K, D) prototypes.
        concentrations: optional (K,) per-cluster temperatures.
        temperature: the temperature used without concentrations.
        hard: return the argmax labels instead of the distribution.

    Returns:
        (B, K, H, W) probabilities summing to 1 over K, or (B, H, W) long labels with ``hard``.
    """
    if features.dim() != 4 or prototypes.dim() != 2 or features.shape[1] != prototypes.shape[1]:
        raise SeglocError(
            f"expected features (B, D, H, W) and prototypes (K, D) with the same D, got {tuple(features.shape)} and {tuple(prototypes.shape)}"
        )
    with torch.no_grad():
        similarity = torch.einsum("bdhw,kd->bkhw", F.normalize(features, dim=1), F.normalize(prototypes.to(features), dim=1))
        if concentrations is not None:
            logits = similarity / concentrations.to(features).clamp_min(1e-6).view(1, -1, 1, 1)
        else:
            logits = similarity / temperature
        return logits.argmax(dim=1) if hard else torch.softmax(logits, dim=1)


def cluster_frequencies(probabilities: Tensor) -> Tensor:
    """Soft cluster frequencies ``f_k = sum_i q_ik`` of (B, K, H, W) or (N, K) probabilities; returns (K,).

    Accumulate it over an epoch to pass dataset-level frequencies to :func:`target_distribution`.
    """
    return probabilities.detach().transpose(0, 1).reshape(probabilities.shape[1], -1).sum(dim=1)


def target_distribution(probabilities: Tensor, frequencies: Tensor | None = None, power: float = 2.0) -> Tensor:
    """DEC target distribution: sharpen predictions and balance clusters (pseudo-targets after the first epoch).

    ``p_ik = (q_ik^power / f_k) / sum_k' (q_ik'^power / f_k')`` with ``f_k = sum_i q_ik`` (Xie et al.,
    "Unsupervised Deep Embedding for Clustering Analysis", ICML 2016; power 2 there). Squaring
    emphasises confident assignments; dividing by the frequency keeps large clusters from
    absorbing everything. No gradient flows.

    Args:
        probabilities: (B, K, H, W) (or (N, K)) class probabilities q, e.g. softmax of the logits.
        frequencies: optional (K,) f_k accumulated over a larger set (see
            :func:`cluster_frequencies`); by default computed over ``probabilities`` itself.
        power: sharpening exponent (> 1 sharpens).

    Returns:
        Target probabilities p of the same shape, summing to 1 over K.
    """
    if probabilities.dim() < 2:
        raise SeglocError(f"probabilities must be (B, K, H, W) or (N, K), got shape {tuple(probabilities.shape)}")
    q = probabilities.detach().clamp_min(0.0)
    if frequencies is None:
        frequencies = cluster_frequencies(q)
    shape = (1, -1) + (1,) * (q.dim() - 2)
    weights = q.pow(power) / frequencies.to(q).clamp_min(1e-12).view(shape)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-30)


def sinkhorn_targets(log_potentials: Tensor, iterations: int = 3, class_prior: Tensor | None = None) -> Tensor:
    """Balanced soft assignment of N pixels to K classes (Sinkhorn-Knopp equipartition, as in SwAV).

    Finds ``Q = diag(u) exp(S) diag(v)`` whose rows sum to 1 (each pixel is one unit of mass)
    and whose columns approach ``N * prior_k`` (each class receives its share of the pixels),
    by alternating column and row normalisations (Caron et al., "Unsupervised Learning of
    Visual Features by Contrasting Cluster Assignments", NeurIPS 2020; Cuturi 2013). ``S`` is
    the score divided by the entropic regularisation epsilon: the caller passes
    ``scores / epsilon``; a smaller epsilon gives sharper assignments. A few iterations (SwAV:
    3) balance the classes approximately; the last step normalises the rows, so every pixel's
    target is a distribution. Computed in the log domain (no overflow for large scores). No
    gradient flows.

    Args:
        log_potentials: (N, K) scores over epsilon, e.g. ``log p / epsilon`` or ``cos / epsilon``.
        iterations: number of (column, row) normalisation rounds, >= 1.
        class_prior: optional (K,) target class proportions (positive, normalised here);
            None: uniform (equipartition).

    Returns:
        (N, K) targets, rows summing to 1, column sums near ``N * prior``.
    """
    if log_potentials.dim() != 2 or log_potentials.shape[0] == 0:
        raise SeglocError(f"log_potentials must be a non-empty (N, K) tensor, got shape {tuple(log_potentials.shape)}")
    if iterations < 1:
        raise SeglocError(f"sinkhorn iterations must be at least 1, got {iterations}")
    count, num_classes = log_potentials.shape
    with torch.no_grad():
        log_q = log_potentials.detach().float()
        if class_prior is None:
            log_prior = log_q.new_full((num_classes,), -math.log(num_classes))
        else:
            if class_prior.shape != (num_classes,) or not bool((class_prior > 0).all()):
                raise SeglocError(f"class_prior must be ({num_classes},) positive proportions, got {tuple(class_prior.shape)}")
            prior = class_prior.detach().to(log_q)
            log_prior = torch.log(prior / prior.sum())
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)  # rows sum to 1 from the start
        for _ in range(iterations):
            log_q = log_q + (log_prior + math.log(count) - torch.logsumexp(log_q, dim=0))[None, :]  # columns: N * prior
            log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)  # rows: 1
        return log_q.exp()


def class_usage(label_counts: Tensor, min_fraction: float) -> dict[str, float]:
    """How many classes a label map uses: diagnostics of collapse.

    Args:
        label_counts: (K,) number of pixels labelled with each class (e.g. over every mapping image).
        min_fraction: a class is *in use* when it holds at least this fraction of the pixels.

    Returns:
        ``classes_used`` (classes at or above ``min_fraction``), ``classes_present`` (any pixel),
        ``class_entropy`` (nats, of the label histogram) and ``class_perplexity`` (its
        exponential: the number of equally used classes with the same entropy; K when uniform,
        1 when collapsed to one class).
    """
    counts = label_counts.detach().double().flatten()
    total = float(counts.sum())
    if total <= 0:
        raise SeglocError("class_usage: no labelled pixels")
    shares = counts / total
    nonzero = shares[shares > 0]
    entropy = float(-(nonzero * nonzero.log()).sum())
    return {
        "classes_used": int((shares >= min_fraction).sum()),
        "classes_present": int((counts > 0).sum()),
        "class_entropy": entropy,
        "class_perplexity": math.exp(entropy),
    }
