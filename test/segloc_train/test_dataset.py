"""The SegLoc training set and its collate function on a tiny synthetic scene."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from segloc.data import synthetic
from segloc.data.dataset import ImageRecord, read_dataset
from segloc.errors import SeglocError
from segloc.maps.core import MapCore
from segloc_train.augment import AugmentConfig
from segloc_train.dataset import SegLocTrainingSet, collate_pairs
from segloc_train.mining import Triplet
from segloc_train.pairs import mine_pairs

AUGMENT = AugmentConfig(resize_max_edge=128, output_size=(128, 96), crop_scale=(0.7, 1.0), rescale=(0.9, 1.1))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from segloc.maps.build import build_core

    config = synthetic.synth_config("room", "same", num_mapping=12, num_query=0, width=160, height=120, seed=3, mapping_laps=0.25)
    dataset = read_dataset(synthetic.generate_scene(config, tmp_path_factory.mktemp("room") / "dataset", progress=False))
    core = build_core(dataset, progress=False).core
    pairs = mine_pairs(core, progress=False)
    assert len(pairs) >= 4
    return dataset.root, core, pairs


def test_sample_shapes_and_padding(scene):
    root, core, pairs = scene
    training_set = SegLocTrainingSet(root, core, pairs, AUGMENT, max_correspondences=256)
    assert len(training_set) == len(pairs)
    sample = training_set[0]
    for key in ("image_a", "image_b"):
        assert sample[key].shape == (3, 96, 128) and sample[key].dtype == torch.float32
        assert 0.0 <= sample[key].min() and sample[key].max() <= 1.0
    assert sample["points_a"].shape == sample["points_b"].shape == (256, 2)
    assert sample["point_ids"].shape == sample["valid"].shape == (256,)
    assert sample["point_ids"].dtype == torch.int64 and sample["valid"].dtype == torch.bool
    count = int(sample["valid"].sum())
    assert 0 < count == int(sample["num_correspondences"]) <= pairs[0].num_correspondences < 256
    assert sample["valid"][:count].all() and not sample["valid"][count:].any()
    assert (sample["point_ids"][count:] == -1).all() and (sample["points_a"][count:] == 0).all()
    assert sample["name_a"] == core.images[pairs[0].image_id_a].name and sample["affine_a"].shape == (2, 3)
    # Fewer rows than correspondences: a random subset, in point-id order.
    small = SegLocTrainingSet(root, core, pairs, AUGMENT, max_correspondences=16)[0]
    assert small["valid"].all() and int(small["num_correspondences"]) > 16
    assert (torch.diff(small["point_ids"]) > 0).all()


def test_clean_views_share_the_geometry_of_the_augmented_images(scene):
    root, core, pairs = scene
    strong = AugmentConfig(**{**vars(AUGMENT), "blur_probability": 1.0, "noise_probability": 1.0})
    plain = SegLocTrainingSet(root, core, pairs, strong, max_correspondences=256)[1]
    sample = SegLocTrainingSet(root, core, pairs, strong, max_correspondences=256, clean_views=True)[1]
    assert "clean_a" not in plain
    for side in "ab":
        torch.testing.assert_close(sample[f"image_{side}"], plain[f"image_{side}"])  # the same draws
        torch.testing.assert_close(sample[f"affine_{side}"], plain[f"affine_{side}"])
        clean = sample[f"clean_{side}"]
        assert clean.shape == sample[f"image_{side}"].shape and (clean - sample[f"image_{side}"]).abs().mean() > 0.01
    batch = collate_pairs([sample, SegLocTrainingSet(root, core, pairs, strong, max_correspondences=256, clean_views=True)[0]])
    assert batch["clean_a"].shape == batch["image_a"].shape


def test_points_follow_the_augmentation(scene):
    root, core, pairs = scene
    training_set = SegLocTrainingSet(root, core, pairs, AUGMENT, max_correspondences=512)
    for index in range(len(pairs)):
        sample, pair = training_set[index], pairs[index]
        valid = sample["valid"].numpy()
        point_ids = sample["point_ids"].numpy()[valid]
        rows = np.searchsorted(pair.point_ids, point_ids)
        assert np.array_equal(pair.point_ids[rows], point_ids)
        for side, original in (("a", pair.points_a), ("b", pair.points_b)):
            affine = sample[f"affine_{side}"].numpy().astype(np.float64)
            points = sample[f"points_{side}"].numpy()[valid]
            assert np.all((points >= 0) & (points < [128, 96]))
            back = (points - affine[:, 2]) @ np.linalg.inv(affine[:, :2]).T
            np.testing.assert_allclose(back, original[rows], atol=1e-3)


def test_deterministic_per_epoch_and_index(scene):
    root, core, pairs = scene
    training_set = SegLocTrainingSet(root, core, pairs, AUGMENT)
    first, again = training_set[1], training_set[1]
    assert torch.equal(first["image_a"], again["image_a"]) and torch.equal(first["points_a"], again["points_a"])
    other_set = SegLocTrainingSet(root, core, pairs, AUGMENT)
    assert torch.equal(other_set[1]["image_b"], first["image_b"])
    training_set.set_epoch(1)
    assert not torch.equal(training_set[1]["image_a"], first["image_a"])
    evaluation = SegLocTrainingSet(root, core, pairs, AUGMENT, train=False)
    plain = evaluation[1]
    evaluation.set_epoch(5)
    assert torch.equal(evaluation[1]["image_a"], plain["image_a"])


def test_data_loader_batches(scene):
    root, core, pairs = scene
    training_set = SegLocTrainingSet(root, core, pairs, AUGMENT, max_correspondences=128)
    batch = next(iter(DataLoader(training_set, batch_size=3, collate_fn=collate_pairs)))
    assert batch["image_a"].shape == batch["image_b"].shape == (3, 3, 96, 128)
    assert batch["points_a"].shape == (3, 128, 2) and batch["valid"].shape == (3, 128)
    assert batch["image_size_a"].tolist() == [[128, 96]] * 3
    assert batch["num_correspondences"].shape == (3,) and len(batch["name_b"]) == 3
    # Without a fixed count the collate function pads to the longest sample.
    variable = SegLocTrainingSet(root, core, pairs, AugmentConfig(resize_max_edge=None), max_correspondences=None)
    samples = [variable[i] for i in range(3)]
    batch = collate_pairs(samples)
    longest = max(int(s["num_correspondences"]) for s in samples)
    assert batch["point_ids"].shape == (3, longest) and batch["image_a"].shape == (3, 3, 120, 160)
    assert batch["valid"].sum(dim=1).tolist() == [int(s["num_correspondences"]) for s in samples]
    assert (batch["point_ids"][~batch["valid"]] == -1).all()


def test_collate_pads_images_of_different_sizes(scene):
    root, core, pairs = scene
    big = SegLocTrainingSet(root, core, pairs, AugmentConfig(resize_max_edge=128), max_correspondences=32)[0]
    small = SegLocTrainingSet(root, core, pairs, AugmentConfig(resize_max_edge=80), max_correspondences=32)[1]
    batch = collate_pairs([big, small])
    assert batch["image_a"].shape == (2, 3, 96, 128)
    assert batch["image_size_a"].tolist() == [[128, 96], [80, 60]]
    assert torch.equal(batch["image_a"][1, :, :60, :80], small["image_a"]) and batch["image_a"][1, :, 60:].abs().max() == 0


def test_triplets(scene):
    root, core, pairs = scene
    anchor_of_first = pairs[0].image_id_a
    triplets = [Triplet(anchor_of_first, pairs[0].image_id_b, 11)]
    training_set = SegLocTrainingSet(root, core, pairs, AUGMENT, max_correspondences=64, triplets=triplets)
    sample = training_set[0]
    assert bool(sample["has_triplet"]) and sample["triplet_ids"].tolist() == [anchor_of_first, pairs[0].image_id_b, 11]
    assert sample["positive"].shape == sample["negative"].shape == (3, 96, 128) and sample["negative"].abs().sum() > 0
    without = next(i for i, p in enumerate(pairs) if anchor_of_first not in (p.image_id_a, p.image_id_b))
    empty = training_set[without]
    assert not bool(empty["has_triplet"]) and empty["triplet_ids"].tolist() == [-1, -1, -1] and empty["positive"].abs().sum() == 0
    batch = collate_pairs([sample, empty])
    assert batch["positive"].shape == (2, 3, 96, 128) and batch["has_triplet"].tolist() == [True, False]
    # Image B of a pair is used as the anchor when only it has a triplet (A and B swap).
    last = pairs[-1]
    assert last.image_id_a != anchor_of_first
    training_set.set_triplets([*triplets, Triplet(last.image_id_b, last.image_id_a, 0)])
    sample = training_set[len(pairs) - 1]
    assert bool(sample["has_triplet"]) and int(sample["image_id_a"]) == last.image_id_b and int(sample["image_id_b"]) == last.image_id_a
    assert sample["name_a"] == core.images[last.image_id_b].name
    valid = sample["valid"].numpy()
    rows = np.searchsorted(last.point_ids, sample["point_ids"].numpy()[valid])
    affine = sample["affine_a"].numpy().astype(np.float64)
    back = (sample["points_a"].numpy()[valid] - affine[:, 2]) @ np.linalg.inv(affine[:, :2]).T
    np.testing.assert_allclose(back, last.points_b[rows], atol=1e-3)  # image A of the sample is B of the pair
    training_set.set_triplets(None)
    assert "positive" not in training_set[0]


def test_bad_inputs(scene, tmp_path):
    root, core, pairs = scene
    with pytest.raises(SeglocError, match="images/ is missing"):
        SegLocTrainingSet(tmp_path, core, pairs)
    with pytest.raises(SeglocError, match="outside the map"):
        SegLocTrainingSet(root, core, pairs, triplets=[Triplet(0, 1, 99)])
    resized = [ImageRecord(i.name, i.cam_from_world, i.camera.scaled(320, 240)) for i in core.images]
    wrong = MapCore(resized, core.points3D, core.point_errors, core.observation_point_ids, core.observation_image_ids, core.observation_xy)
    with pytest.raises(SeglocError, match="camera in the map is 320x240"):
        SegLocTrainingSet(root, wrong, pairs)[0]
