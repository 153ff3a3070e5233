"""VLAD vocabulary, encoding and ranking."""

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.features.retrieval import VladEncoder, rank_by_similarity, train_vocabulary


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centers = np.eye(8, dtype=np.float32)[:3] * 5
    data = np.concatenate([c + 0.1 * rng.normal(size=(200, 8)) for c in centers]).astype(np.float32)
    vocabulary = train_vocabulary(data, 3, iterations=10, seed=0)
    assert vocabulary.shape == (3, 8)
    nearest = np.linalg.norm(vocabulary[:, None] - centers[None], axis=-1).min(axis=0)
    assert np.all(nearest < 0.05)
    assert train_vocabulary(data[:2], 5).shape == (2, 8)  # fewer descriptors than clusters
    with pytest.raises(SeglocError, match="without descriptors"):
        train_vocabulary(np.zeros((0, 8), np.float32), 3)


def test_vlad_ranks_the_same_image_first():
    rng = np.random.default_rng(1)
    patterns = np.abs(rng.normal(size=(40, 16)))  # local appearances shared between images
    images = []
    for _ in range(5):
        subset = rng.choice(40, 12, replace=False)  # the patterns this place shows
        chosen = patterns[subset[rng.integers(12, size=300)]]
        descriptors = np.abs(chosen + 0.2 * rng.normal(size=(300, 16))).astype(np.float32)
        images.append(descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True))
    encoder = VladEncoder(train_vocabulary(np.concatenate(images), 8, seed=0))
    database = np.stack([encoder.encode(d) for d in images])
    assert database.shape == (5, 8 * 16)
    np.testing.assert_allclose(np.linalg.norm(database, axis=1), 1.0, rtol=1e-5)
    for index, descriptors in enumerate(images):
        subset = descriptors[rng.permutation(len(descriptors))[:200]]  # another view: a subset
        order, scores = rank_by_similarity(encoder.encode(subset), database, 3)
        assert order[0] == index and len(order) == 3 and scores[0] >= scores[1]
    np.testing.assert_array_equal(encoder.encode(np.zeros((0, 16), np.float32)), 0)
    with pytest.raises(SeglocError, match="do not match"):
        encoder.encode(np.zeros((3, 4), np.float32))
