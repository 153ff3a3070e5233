"""Depth completion: the per-image regressor, its baselines and the visibility callback."""

from __future__ import annotations

import numpy as np
import pytest

from segloc.config import config_from_dict
from segloc.data.dataset import read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.depth import (
    CompletionConfig,
    complete_depth,
    completed_depth_loader,
    measured_depth,
    nearest_depth,
    scale_aligned_depth,
    sparse_depth,
)
from segloc.errors import SeglocError
from segloc.maps.build import CoreConfig, build_core
from segloc.methods.sld.landmarks import UNKNOWN, LandmarkConfig, select_landmarks, visibility_labels


def _tilted_plane(height: int = 60, width: int = 80) -> np.ndarray:
    """(H, W) metric depth of a tilted plane: 2 m at the top-left to about 5.5 m at the bottom-right."""
    rows, columns = np.mgrid[0:height, 0:width]
    return (2.0 + 2.0 * columns / width + 1.5 * rows / height).astype(np.float32)


def _sparse(depth: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points2D (COLMAP convention), depths and the known mask of a random ``fraction`` of the pixels."""
    rng = np.random.default_rng(seed)
    known = rng.random(depth.shape) < fraction
    rows, columns = np.nonzero(known)
    return np.stack([columns + 0.5, rows + 0.5], axis=1), depth[rows, columns], known


def test_regressor_fills_masked_pixels_of_a_plane_from_a_distorted_mde():
    depth = _tilted_plane()
    mde = 1.0 / depth**0.7 * 3.0  # a monotone (decreasing, nonlinear) distortion of the truth, another scale
    points2D, depths, known = _sparse(depth, 0.10)
    result = complete_depth(mde, points2D, depths)
    masked = ~known
    error = np.abs(result.depth[masked] - depth[masked])
    assert result.covered.sum() == known.sum()
    np.testing.assert_allclose(result.depth[known], depth[known], rtol=1e-6)  # the map's depth is kept
    assert error.mean() < 0.05 and np.sqrt(np.mean(error**2)) < 0.08  # metres, on a 2-5.5 m plane
    assert result.num_holdout == pytest.approx(0.2 * known.sum(), abs=1) and result.holdout_mae < 0.08


def test_regressor_beats_the_scale_aligned_mde_and_nearest_filling_on_a_nonlinear_mde():
    depth = _tilted_plane()
    mde = np.sqrt(depth)  # right order, wrong shape: one scale cannot fix it
    points2D, depths, known = _sparse(depth, 0.05, seed=1)
    masked = ~known

    def mae(estimate: np.ndarray) -> float:
        return float(np.abs(estimate[masked] - depth[masked]).mean())

    completed = mae(complete_depth(mde, points2D, depths).depth)
    assert completed < mae(scale_aligned_depth(mde, points2D, depths, "median"))
    assert completed < mae(nearest_depth(depth.shape, points2D, depths))


def test_scale_alignment_recovers_a_pure_scale():
    depth = _tilted_plane()
    points2D, depths, _ = _sparse(depth, 0.05)
    for method in ("median", "least_squares"):
        np.testing.assert_allclose(scale_aligned_depth(depth / 7.0, points2D, depths, method), depth, rtol=1e-5)


def test_colour_features_and_outside_points():
    depth = _tilted_plane()
    image = np.random.default_rng(0).integers(0, 256, (*depth.shape, 3), dtype=np.uint8)
    points2D, depths, _ = _sparse(depth, 0.1)
    points2D = np.vstack([points2D, [[-5.0, 3.0], [1e4, 2.0]]])  # outside the image: ignored
    depths = np.append(depths, [1.0, 1.0])
    result = complete_depth(depth, points2D, depths, image, CompletionConfig(color_features=True, max_iter=200))
    assert result.depth.shape == depth.shape and np.all(result.depth > 0)


def test_bad_inputs_say_what_is_wrong():
    depth = _tilted_plane()
    with pytest.raises(SeglocError, match="min_points"):
        complete_depth(depth, np.array([[1.0, 1.0]]), np.array([2.0]))
    with pytest.raises(SeglocError, match="sparse pixels but"):
        complete_depth(depth, np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(SeglocError, match="color_features needs the image"):
        points2D, depths, _ = _sparse(depth, 0.1)
        complete_depth(depth, points2D, depths, config=CompletionConfig(color_features=True))
    with pytest.raises(SeglocError, match="hidden_layer_sizes"):
        CompletionConfig(hidden_layer_sizes=())


class DistortedTruth:
    """A stand-in monocular depth estimator: the true depth through a monotone distortion, at a lower resolution."""

    input_size = (80, 60)

    def __init__(self, dataset):
        self.dataset = dataset
        self.calls = 0

    def estimate(self, image: np.ndarray) -> np.ndarray:
        import cv2

        self.calls += 1
        name = next(r.name for r in self.dataset.mapping if np.array_equal(self.dataset.load_image(r.name), image))
        truth = measured_depth(self.dataset, name)
        small = cv2.resize(np.sqrt(np.maximum(truth, 0.1)), self.input_size, interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth")
    config = synth_config("room", num_mapping=12, num_query=0, width=160, height=120, seed=2)
    dataset = read_dataset(generate_scene(config, root / "dataset", progress=False))
    core = build_core(dataset, config_from_dict(CoreConfig, {"pairs": {"num_neighbors": 5}}), progress=False).core
    return dataset, core


def test_sparse_depth_matches_the_rendered_depth(scene):
    dataset, core = scene
    image_id = int(np.argmax(np.bincount(core.observation_image_ids)))
    points2D, depths = sparse_depth(core, image_id)
    truth = measured_depth(dataset, core.images[image_id].name)
    surface = truth[points2D[:, 1].astype(int), points2D[:, 0].astype(int)]
    assert len(depths) >= 20 and np.mean(np.abs(surface - depths) <= 0.05 * depths) > 0.8


def test_completed_depth_gives_the_visibility_labels_of_the_measured_depth(scene):
    dataset, core = scene
    selection = select_landmarks(core, LandmarkConfig(num_landmarks=24))
    measured_labels = visibility_labels(core, selection, lambda i: measured_depth(dataset, core.images[i].name))
    estimator = DistortedTruth(dataset)
    depth_of = completed_depth_loader(dataset, core, estimator, CompletionConfig(max_iter=300), prefer_measured=False)
    completed_labels = visibility_labels(core, selection, depth_of)
    assert estimator.calls == len(core.images)
    known = measured_labels != UNKNOWN
    assert np.mean(completed_labels[known] == measured_labels[known]) > 0.85
    np.testing.assert_array_equal(
        completed_depth_loader(dataset, core, estimator)(0), measured_depth(dataset, core.images[0].name)
    )  # the dataset's own depth image comes first
    assert estimator.calls == len(core.images)
