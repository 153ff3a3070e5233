"""Mutual nearest neighbour + ratio matching on hand-made descriptors."""

import numpy as np
import pytest
import torch

from segloc.errors import SeglocError
from segloc.features.matching import MatcherConfig, match_descriptors


def unit(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_recovers_a_permutation_among_distractors():
    rng = np.random.default_rng(0)
    descriptors0 = unit(rng.normal(size=(60, 32)))
    permutation = rng.permutation(60)
    descriptors1 = unit(np.concatenate([descriptors0[permutation] + 0.05 * rng.normal(size=(60, 32)), rng.normal(size=(40, 32))]))
    matches, distances = match_descriptors(descriptors0, descriptors1)
    assert len(matches) == 60
    np.testing.assert_array_equal(matches[:, 0], np.arange(60))  # sorted by the first index
    np.testing.assert_array_equal(permutation[matches[:, 1]], matches[:, 0])
    assert distances.shape == (60,) and np.all(distances < 0.5)


def test_ratio_test_rejects_ambiguous_matches():
    query = unit([[1.0, 0.0, 0.0]])
    ambiguous = unit([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0]])  # two equally near candidates
    assert len(match_descriptors(query, ambiguous, MatcherConfig(ratio_threshold=0.8))[0]) == 0
    assert len(match_descriptors(query, ambiguous, MatcherConfig(ratio_threshold=1.0))[0]) == 1
    distinct = unit([[1.0, 0.05, 0.0], [0.0, 1.0, 0.0]])
    matches, _ = match_descriptors(query, distinct, MatcherConfig(ratio_threshold=0.8))
    assert matches.tolist() == [[0, 0]]


def test_mutual_check_keeps_the_closer_of_two_rows():
    rows = unit([[1.0, 0.0, 0.0], [1.0, 0.3, 0.0]])  # both nearest to the same column
    columns = unit([[1.0, 0.05, 0.0], [0.0, 0.0, 1.0]])
    matches, _ = match_descriptors(rows, columns, MatcherConfig(ratio_threshold=1.0, mutual=True))
    assert matches.tolist() == [[0, 0]]
    matches, _ = match_descriptors(rows, columns, MatcherConfig(ratio_threshold=1.0, mutual=False))
    assert matches.tolist() == [[0, 0], [1, 0]]


def test_max_distance():
    query = unit([[1.0, 0.0]])
    far = unit([[0.0, 1.0]])  # distance sqrt(2)
    assert len(match_descriptors(query, far, MatcherConfig(max_distance=1.0))[0]) == 0
    assert len(match_descriptors(query, far, MatcherConfig(max_distance=2.0))[0]) == 1


def test_blocks_tensors_and_empty_inputs():
    rng = np.random.default_rng(1)
    descriptors0 = unit(rng.normal(size=(50, 16)))
    descriptors1 = unit(descriptors0[::-1] + 0.3 * rng.normal(size=(50, 16)))
    reference, _ = match_descriptors(descriptors0, descriptors1)
    blocked, _ = match_descriptors(descriptors0, descriptors1, MatcherConfig(block_size=7))
    from_torch, _ = match_descriptors(torch.from_numpy(descriptors0), torch.from_numpy(descriptors1))
    np.testing.assert_array_equal(reference, blocked)
    np.testing.assert_array_equal(reference, from_torch)
    matches, distances = match_descriptors(np.zeros((0, 16), np.float32), descriptors1)
    assert matches.shape == (0, 2) and distances.shape == (0,)
    with pytest.raises(SeglocError, match="dimensions differ"):
        match_descriptors(descriptors0, descriptors1[:, :8])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(2)
    descriptors0 = unit(rng.normal(size=(500, 128)))
    descriptors1 = unit(descriptors0 + 0.2 * rng.normal(size=(500, 128)))
    cpu, _ = match_descriptors(descriptors0, descriptors1)
    cuda, _ = match_descriptors(descriptors0, descriptors1, MatcherConfig(device="cuda"))
    np.testing.assert_array_equal(cpu, cuda)
