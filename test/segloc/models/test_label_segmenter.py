"""The ground-truth segmenter: label images in, the probabilities a perfect network would give out."""

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.models.segmenter import LabelSegmenter, Segmenter, label_probability_levels


def label_image(width: int = 64, height: int = 48) -> np.ndarray:
    labels = np.zeros((height, width), np.uint8)
    labels[:, width // 2 :] = 1
    labels[height // 2 :, : width // 4] = 2
    return labels


def test_levels_are_distributions_peaked_on_the_labels():
    labels = label_image()
    levels = label_probability_levels(labels, num_classes=4, strides=(8, 4, 1), sigma=1.0, floor=0.05)
    assert [level.shape for level in levels] == [(4, 6, 8), (4, 12, 16), (4, 48, 64)]
    for level in levels:
        assert level.dtype == np.float32
        np.testing.assert_allclose(level.sum(axis=0), 1.0, atol=1e-5)
    finest = levels[-1]
    assert (finest.argmax(axis=0)[labels != 3] == labels[labels != 3]).mean() > 0.95
    assert finest[3].max() < 0.02  # a class nobody has gets the floor only
    # Ids outside [0, K) only get the floor.
    outside = label_probability_levels(np.full((16, 16), 9), num_classes=4, strides=(1,))[0]
    np.testing.assert_allclose(outside, 0.25, atol=1e-6)
    with pytest.raises(SeglocError, match="label image"):
        label_probability_levels(np.zeros((4, 4, 3)), 4)


def test_the_segmenter_finds_images_by_content():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    labels = [label_image(), 3 - label_image()]
    segmenter = LabelSegmenter(list(zip(images, labels)), num_classes=4, strides=(4, 2))
    assert isinstance(segmenter, Segmenter)
    for image, truth in zip(images, labels):
        segmentation = segmenter(image.copy())
        assert segmentation.num_classes == 4 and segmentation.input_size == (64, 48)
        assert [tuple(level.shape) for level in segmentation.probabilities] == [(4, 12, 16), (4, 24, 32)]
        assert segmentation.descriptor.shape == (5 * 4,) and abs(np.linalg.norm(segmentation.descriptor) - 1.0) < 1e-5
        np.testing.assert_allclose(segmentation.probabilities[-1].numpy(), label_probability_levels(truth, 4, (4, 2))[-1])
    with pytest.raises(SeglocError, match="does not know this image"):
        segmenter(np.zeros((48, 64, 3), np.uint8))


def test_from_dataset_needs_the_label_images(tmp_path):
    from types import SimpleNamespace

    dataset = SimpleNamespace(
        root=tmp_path, mapping=[SimpleNamespace(name="mapping/0.png")], query=[], load_image=lambda name: np.zeros((8, 8, 3), np.uint8)
    )
    with pytest.raises(SeglocError, match="labels"):
        LabelSegmenter.from_dataset(dataset)
