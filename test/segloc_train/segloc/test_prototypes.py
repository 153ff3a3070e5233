"""Prototype machinery: initial clustering, per-epoch updates, PCL concentrations, pseudo-targets."""

import math

import pytest
import torch
import torch.nn.functional as F

from segloc.errors import SeglocError
from segloc_train.segloc.prototypes import (
    assign_to_prototypes,
    class_usage,
    cluster_concentrations,
    cluster_frequencies,
    init_prototypes,
    pseudo_targets_from_prototypes,
    sample_feature_vectors,
    sinkhorn_targets,
    split_clusters,
    target_distribution,
    update_prototypes,
)


def separated_clusters(num_clusters: int = 6, dim: int = 16, per_cluster: int = 300, noise: float = 0.05, seed: int = 0):
    """Well-separated clusters on the unit sphere: (true centres (K, D), features (N, D), labels (N,))."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_clusters, dim, generator=generator), dim=1)
    labels = torch.arange(num_clusters).repeat_interleave(per_cluster)
    features = centres[labels] + noise * torch.randn(len(labels), dim, generator=generator)
    return centres, 3.0 * features, labels  # the scale must not matter: features are normalised


def assert_recovers(prototypes: torch.Tensor, centres: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> None:
    similarity = prototypes @ centres.T  # (K, K)
    assert similarity.max(dim=0).values.min() > 0.99, "every true centre has a prototype"
    assignments = assign_to_prototypes(features, prototypes)
    for cluster in range(len(prototypes)):  # each found cluster holds one true cluster
        assert len(torch.unique(labels[assignments == cluster])) == 1


@pytest.mark.parametrize("method", ["kmeans", "meanshift"])
def test_init_prototypes_recovers_separated_clusters(method):
    centres, features, labels = separated_clusters()
    prototypes = init_prototypes(features, 6, method=method, seed=1)
    assert prototypes.shape == (6, 16)
    torch.testing.assert_close(prototypes.norm(dim=1), torch.ones(6))
    assert_recovers(prototypes, centres, features, labels)


def test_init_prototypes_is_reproducible():
    _, features, _ = separated_clusters()
    torch.testing.assert_close(init_prototypes(features, 6, seed=3), init_prototypes(features, 6, seed=3))


def test_init_prototypes_per_meta_class():
    centres, features, labels = separated_clusters(num_clusters=6, per_cluster=200)
    meta_labels = torch.where(labels < 4, 7, 2)  # meta-class 2 holds clusters 4, 5; meta-class 7 holds 0-3
    prototypes = init_prototypes(features, 6, meta_labels=meta_labels, seed=0)
    assert prototypes.shape == (6, 16)
    assert_recovers(prototypes, centres, features, labels)
    # grouped by increasing meta-class: first the 2 of meta-class 2, then the 4 of meta-class 7
    assert set((prototypes[:2] @ centres.T).argmax(dim=1).tolist()) == {4, 5}
    assert set((prototypes[2:] @ centres.T).argmax(dim=1).tolist()) == {0, 1, 2, 3}


def test_split_clusters_is_proportional_with_at_least_one_each():
    assert split_clusters([600, 300, 100], 10) == [6, 3, 1]
    assert split_clusters([1000, 0, 1], 5) == [4, 0, 1]
    assert split_clusters([2, 100], 10) == [1, 9]
    assert sum(split_clusters([5, 17, 230, 40], 100)) == 100
    with pytest.raises(SeglocError, match="at least one cluster per meta-class"):
        split_clusters([10, 10, 10], 2)


def test_init_prototypes_rejects_bad_input():
    features = torch.randn(50, 8)
    with pytest.raises(SeglocError, match="unknown clustering method"):
        init_prototypes(features, 4, method="dbscan")
    with pytest.raises(SeglocError, match="at least K=100"):
        init_prototypes(features, 100)
    with pytest.raises(SeglocError, match="meta_labels must be"):
        init_prototypes(features, 4, meta_labels=torch.zeros(10, dtype=torch.long))
    with pytest.raises(SeglocError, match="NaN"):
        init_prototypes(torch.full((50, 8), float("nan")), 4)


def test_update_prototypes_means_momentum_and_empty_clusters():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    assignments = torch.tensor([0, 0, 1])
    previous = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    updated = update_prototypes(features, assignments, 3, previous=previous)
    torch.testing.assert_close(updated, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)], [0.0, 1.0], [-1.0, 0.0]]))  # cluster 2 is empty
    half = update_prototypes(features, assignments, 3, previous=previous, momentum=0.5)
    torch.testing.assert_close(half[1], F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    soft = update_prototypes(features, F.one_hot(assignments, 3).float(), 3, previous=previous)
    torch.testing.assert_close(soft, updated)
    reseeded = update_prototypes(features, assignments, 3)  # no previous: the empty cluster takes an outlying feature
    assert torch.isfinite(reseeded).all()
    torch.testing.assert_close(reseeded.norm(dim=1), torch.ones(3))
    with pytest.raises(SeglocError, match="assignments must be"):
        update_prototypes(features, torch.tensor([0, 5, 1]), 3)


def test_concentrations_are_positive_and_smaller_for_tighter_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(4, 8)
    spreads = torch.tensor([0.02, 0.05, 0.1, 0.2])
    labels = torch.arange(4).repeat_interleave(200)
    features = centres[labels] + spreads[labels, None] * torch.randn(800, 8, generator=generator)
    prototypes = update_prototypes(features, labels, 4)
    phi = cluster_concentrations(features, labels, prototypes, clamp_quantiles=(0.0, 1.0))
    assert (phi > 0).all()
    assert torch.all(phi[1:] > phi[:-1]), f"phi should grow with the spread: {phi.tolist()}"
    torch.testing.assert_close(phi.mean(), torch.tensor(0.1))
    clamped = cluster_concentrations(features, labels, prototypes)  # default 10-90 % clamping keeps the order
    assert (clamped > 0).all() and torch.all(clamped[1:] >= clamped[:-1])
    # a cluster with a single feature gets the largest concentration of the others
    single = cluster_concentrations(features[:201], labels[:201], prototypes, clamp_quantiles=(0.0, 1.0))
    assert single[1] == single.max() and single[2] == single.max()


def test_pseudo_targets_from_prototypes():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[2.0, 0.1], [0.2, 1.0]]).T.reshape(1, 2, 1, 2)  # pixel 0 near class 0, pixel 1 near class 1
    soft = pseudo_targets_from_prototypes(features, prototypes, temperature=0.1)
    assert soft.shape == (1, 2, 1, 2)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(1, 1, 2))
    assert soft[0, 0, 0, 0] > 0.99 and soft[0, 1, 0, 1] > 0.99
    hard = pseudo_targets_from_prototypes(features, prototypes, hard=True)
    assert hard.tolist() == [[[0, 1]]]
    flat = pseudo_targets_from_prototypes(features, prototypes, concentrations=torch.tensor([10.0, 10.0]))
    assert flat.max() < 0.6  # large concentrations: nearly uniform


def test_target_distribution_sharpens_and_stays_normalised():
    logits = torch.randn(2, 10, 6, 7, generator=torch.Generator().manual_seed(0))
    q = torch.softmax(logits, dim=1)
    p = target_distribution(q)
    assert p.shape == q.shape
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2, 6, 7))

    def entropy(probabilities):
        return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1).mean()

    assert entropy(p) < entropy(q) - 0.1
    # with uniform frequencies it is plain squaring and keeps every argmax
    uniform = target_distribution(q, frequencies=torch.ones(10))
    assert torch.equal(uniform.argmax(dim=1), q.argmax(dim=1))
    torch.testing.assert_close(cluster_frequencies(q).sum(), torch.tensor(2.0 * 6 * 7))
    flat = target_distribution(torch.softmax(logits.flatten(2).transpose(1, 2).reshape(-1, 10), dim=1))  # (N, K) input
    torch.testing.assert_close(flat.sum(dim=1), torch.ones(84))


def test_sample_feature_vectors():
    maps = torch.randn(3, 5, 4, 6)
    assert sample_feature_vectors(maps).shape == (72, 5)
    subset = sample_feature_vectors(maps, per_image=10, generator=torch.Generator().manual_seed(0))
    assert subset.shape == (30, 5)
    all_vectors = maps[0].flatten(1).T
    assert all(any(torch.equal(v, w) for w in all_vectors) for v in subset[:10])


def test_sinkhorn_balances_a_collapsed_assignment():
    # Scores that send 90 % of the pixels to class 0: the argmax would use few of the K classes.
    generator = torch.Generator().manual_seed(0)
    count, num_classes = 4000, 20
    scores = torch.randn(count, num_classes, generator=generator)
    scores[: int(0.9 * count), 0] += 4.0
    targets = sinkhorn_targets(scores / 0.5, iterations=10)
    assert targets.shape == (count, num_classes)
    assert (targets >= 0).all()
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(count))  # each pixel a distribution
    columns = targets.sum(dim=0) / count
    assert (columns - 1.0 / num_classes).abs().max() < 0.1 / num_classes  # marginals near uniform
    assert len(torch.unique(targets.argmax(dim=1))) == num_classes
    # The unbalanced softmax keeps most of the mass on class 0.
    assert torch.softmax(scores / 0.5, dim=1).sum(dim=0)[0] / count > 0.5


def test_sinkhorn_follows_a_class_prior_and_handles_large_scores():
    scores = torch.randn(3000, 4, generator=torch.Generator().manual_seed(1))
    prior = torch.tensor([0.4, 0.3, 0.2, 0.1])
    targets = sinkhorn_targets(scores / 0.5, iterations=20, class_prior=prior * 7.0)  # the prior is normalised
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(3000))
    torch.testing.assert_close(targets.sum(dim=0) / 3000, prior, atol=0.02, rtol=0.0)
    huge = sinkhorn_targets(scores * 1000.0)  # exp(scores) would overflow outside the log domain
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge.sum(dim=1), torch.ones(3000))
    with pytest.raises(SeglocError, match="class_prior"):
        sinkhorn_targets(scores, class_prior=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(SeglocError, match="iterations"):
        sinkhorn_targets(scores, iterations=0)
    with pytest.raises(SeglocError, match="non-empty"):
        sinkhorn_targets(torch.zeros(0, 4))


def test_class_usage_counts_entropy_and_perplexity():
    uniform = class_usage(torch.full((10,), 50), min_fraction=0.05)
    assert uniform["classes_used"] == uniform["classes_present"] == 10
    assert uniform["class_perplexity"] == pytest.approx(10.0)
    assert uniform["class_entropy"] == pytest.approx(math.log(10))
    skewed = class_usage(torch.tensor([970, 20, 10, 0]), min_fraction=0.015)
    assert skewed["classes_used"] == 2 and skewed["classes_present"] == 3
    assert 1.0 < skewed["class_perplexity"] < 1.3
    with pytest.raises(SeglocError, match="no labelled"):
        class_usage(torch.zeros(5), 0.1)
