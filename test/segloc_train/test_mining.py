"""Hard positive / hard negative mining on hand-made poses and descriptors."""

import logging

import numpy as np
import pytest
import torch

from segloc.data.dataset import ImageRecord
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc_train.mining import MiningConfig, Triplet, camera_centers_and_axes, mine_triplets

# Image: (x position in metres, descriptor angle in degrees). Cosine similarity to the anchor
# (image 0, angle 0) is cos(angle). Radii: positives <= 2.5 m, negatives > 8 m.
LAYOUT = [
    (0.0, 0.0),  # 0 anchor
    (1.0, 25.0),  # 1 positive, similar (0.91)
    (2.0, 60.0),  # 2 positive, least similar (0.50) -> the hard positive
    (3.0, 120.0),  # 3 between the radii, least similar of all: must not be the positive
    (5.0, 2.0),  # 4 between the radii, most similar of all: must not be the negative
    (10.0, 85.0),  # 5 negative (0.09)
    (20.0, 45.0),  # 6 negative, most similar (0.71) -> the hard negative
    (30.0, 70.0),  # 7 negative (0.34)
    (100.0, 170.0),  # 8 alone: no positive; a negative of the others, never the hardest
]
CONFIG = MiningConfig(positive_radius_m=2.5, negative_radius_m=8.0)


def layout():
    centers = np.array([[x, 0.0, 0.0] for x, _ in LAYOUT])
    angles = np.radians([angle for _, angle in LAYOUT])
    descriptors = np.stack([np.cos(angles), np.sin(angles), np.zeros(len(LAYOUT))], axis=1) * 3.0  # not normalised
    return centers, descriptors


def test_hard_positive_and_hard_negative():
    centers, descriptors = layout()
    triplets = mine_triplets(centers, descriptors, CONFIG, np.random.default_rng(0))
    by_anchor = {t.anchor: t for t in triplets}
    assert by_anchor[0] == Triplet(0, 2, 6)
    assert 8 not in by_anchor  # no positive within 2.5 m
    assert all(isinstance(t, Triplet) and t.anchor != t.positive for t in triplets)
    for t in triplets:
        assert np.linalg.norm(centers[t.anchor] - centers[t.positive]) <= 2.5
        assert np.linalg.norm(centers[t.anchor] - centers[t.negative]) > 8.0


def test_skipped_anchors_are_counted(caplog):
    centers, descriptors = layout()
    with caplog.at_level(logging.INFO, logger="segloc"):
        triplets = mine_triplets(centers, descriptors, CONFIG)
    # Without a positive: 5 (10 m), 6, 7, 8; every other anchor has a negative.
    assert sorted(t.anchor for t in triplets) == [0, 1, 2, 3, 4]
    assert "5 of 9 anchors kept; 4 without a positive" in caplog.text


def test_torch_descriptors_give_the_same_triplets():
    centers, descriptors = layout()
    from_numpy = mine_triplets(centers, descriptors, CONFIG)
    from_torch = mine_triplets(centers, torch.from_numpy(descriptors).float().requires_grad_(), CONFIG)
    assert from_numpy == from_torch


def test_angle_limits():
    centers, descriptors = layout()
    axes = np.tile([0.0, 0.0, 1.0], (len(LAYOUT), 1))
    axes[2] = [1.0, 0.0, 0.0]  # image 2 looks sideways (90 degrees)
    axes[4] = [0.0, 0.0, -1.0]  # image 4 looks back (180 degrees)
    positive_limit = MiningConfig(positive_radius_m=2.5, negative_radius_m=8.0, max_positive_angle_deg=45.0)
    by_anchor = {t.anchor: t for t in mine_triplets(centers, descriptors, positive_limit, optical_axes=axes)}
    assert by_anchor[0] == Triplet(0, 1, 6)  # image 2 no longer a positive
    negative_angle = MiningConfig(positive_radius_m=2.5, negative_radius_m=8.0, min_negative_angle_deg=135.0)
    by_anchor = {t.anchor: t for t in mine_triplets(centers, descriptors, negative_angle, optical_axes=axes)}
    assert by_anchor[0] == Triplet(0, 2, 4)  # image 4 looks the other way: a negative, and the most similar
    with pytest.raises(SeglocError, match="optical_axes"):
        mine_triplets(centers, descriptors, positive_limit)


def test_random_choice_among_the_hardest():
    centers, descriptors = layout()
    config = MiningConfig(positive_radius_m=2.5, negative_radius_m=8.0, num_hard_candidates=2)
    seen_negatives = set()
    for seed in range(20):
        first = mine_triplets(centers, descriptors, config, np.random.default_rng(seed))
        assert first == mine_triplets(centers, descriptors, config, np.random.default_rng(seed))
        anchor_0 = next(t for t in first if t.anchor == 0)
        assert anchor_0.positive in (1, 2) and anchor_0.negative in (6, 7)  # the two hardest of each
        seen_negatives.add(anchor_0.negative)
    assert seen_negatives == {6, 7}


def test_chunked_equals_whole():
    rng = np.random.default_rng(1)
    centers = rng.uniform(0, 30, (200, 3))
    descriptors = rng.normal(size=(200, 16))
    whole = mine_triplets(centers, descriptors, MiningConfig(positive_radius_m=5.0, negative_radius_m=10.0))
    chunked = mine_triplets(centers, descriptors, MiningConfig(positive_radius_m=5.0, negative_radius_m=10.0, chunk_size=7))
    assert whole == chunked and len(whole) > 100


def test_centers_and_axes_from_records():
    camera = Camera("PINHOLE", 64, 48, (50.0, 50.0, 32.0, 24.0))
    # Camera at (1, 2, 3) looking along world +x: camera z = world x, camera x = world -y, camera y = world -z.
    world_from_cam = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    pose = Rigid3.from_rotation(world_from_cam.T, -world_from_cam.T @ [1.0, 2.0, 3.0])
    centers, axes = camera_centers_and_axes([ImageRecord("a.png", pose, camera)])
    np.testing.assert_allclose(centers, [[1.0, 2.0, 3.0]], atol=1e-12)
    np.testing.assert_allclose(axes, [[1.0, 0.0, 0.0]], atol=1e-12)


def test_bad_inputs():
    centers, descriptors = layout()
    with pytest.raises(SeglocError, match="larger than positive_radius_m"):
        MiningConfig(positive_radius_m=5.0, negative_radius_m=5.0)
    with pytest.raises(SeglocError, match="one per image"):
        mine_triplets(centers, descriptors[:-1], CONFIG)
    with pytest.raises(SeglocError, match="NaN"):
        mine_triplets(centers, np.full_like(descriptors, np.nan), CONFIG)


def test_retrieval_samples_respect_the_distance_and_angle_thresholds():
    from segloc_train.mining import mine_retrieval_samples, pose_candidates

    rng = np.random.default_rng(3)
    num = 200
    centers = np.concatenate([rng.uniform(-10, 10, size=(num, 2)), np.zeros((num, 1))], axis=1)
    yaw = rng.uniform(0, 2 * np.pi, num)
    axes = np.stack([np.cos(yaw), np.sin(yaw), np.zeros(num)], axis=1)
    descriptors = rng.normal(size=(num, 16))
    config = MiningConfig(positive_radius_m=3.0, negative_radius_m=6.0, max_positive_angle_deg=40.0)
    samples = mine_retrieval_samples(centers, descriptors, config, 3, 4, 50, np.random.default_rng(0), axes)
    assert len(samples) > num // 2
    unit = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    for sample in samples:
        q = sample.query
        assert 1 <= len(sample.positives) <= 3 and len(sample.negatives) == 4 and q not in sample.positives
        for p in sample.positives:
            assert np.linalg.norm(centers[p] - centers[q]) <= 3.0
            assert np.degrees(np.arccos(np.clip(axes[p] @ axes[q], -1, 1))) <= 40.0 + 1e-9
        for n in sample.negatives:
            assert np.linalg.norm(centers[n] - centers[q]) > 6.0
        # the positives are the most similar of all the pose-positives, best first
        positives, _ = pose_candidates(centers, np.array([q]), config, axes)
        allowed = np.flatnonzero(positives[0])
        similarities = unit[list(sample.positives)] @ unit[q]
        assert np.all(np.diff(similarities) <= 1e-9)
        assert similarities[0] >= (unit[allowed] @ unit[q]).max() - 1e-9
    with pytest.raises(SeglocError, match="optical_axes"):
        mine_retrieval_samples(centers, descriptors, config, 3, 4, 50, np.random.default_rng(0))


@pytest.mark.parametrize("scale", [0.1, 1.0, 40.0])
def test_null_radii_follow_the_place_and_set_radii_are_kept(scale):
    """A loop of 60 cameras 1 unit apart scaled to a room, a street, a valley: the derived radii
    scale with it (6 spacings, 25 spacings capped at the median distance between cameras), and
    mining with null radii gives the triplets of the resolved radii."""
    angles = np.linspace(0.0, 2 * np.pi, 60, endpoint=False)
    radius = 1.0 / (2 * np.sin(np.pi / 60))  # neighbours 1 unit apart
    centers = scale * radius * np.stack([np.cos(angles), np.sin(angles), np.zeros(60)], axis=1)
    derived = MiningConfig(positive_radius_m=None, negative_radius_m=None).resolve(centers)
    median_distance = np.median([np.linalg.norm(a - b) for i, a in enumerate(centers) for b in centers[i + 1 :]])
    assert derived.negative_radius_m == pytest.approx(min(25 * scale, median_distance))
    assert derived.positive_radius_m == pytest.approx(min(6 * scale, 0.5 * derived.negative_radius_m))
    assert derived.resolve(centers) is derived
    partly = MiningConfig(positive_radius_m=None, negative_radius_m=30.0 * scale).resolve(centers)
    assert partly.negative_radius_m == 30.0 * scale and partly.positive_radius_m == pytest.approx(6 * scale)
    descriptors = np.random.default_rng(1).normal(size=(60, 8))
    assert mine_triplets(centers, descriptors, MiningConfig(None, None), np.random.default_rng(0)) == mine_triplets(
        centers, descriptors, derived, np.random.default_rng(0)
    )


def test_derived_radii_without_a_gap_are_refused():
    centers = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    with pytest.raises(SeglocError, match="must exceed"):
        MiningConfig(positive_radius_m=5.0, negative_radius_m=None).resolve(centers)
    with pytest.raises(SeglocError, match="positive metres or null"):
        MiningConfig(positive_radius_m=-1.0, negative_radius_m=None)
