"""Base descriptors at SIFT keypoints: RootSIFT, OpenCV's VGG (shape, norm, determinism, geometry), missing contrib."""

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.features.base_descriptors import BASE_DESCRIPTOR_DIMS, base_descriptors, vgg_descriptors
from segloc.features.sift import SiftConfig, extract_sift, resize_to_max_edge, root_sift

from .test_sift import textured_image


@pytest.fixture(scope="module")
def image_and_features():
    image = textured_image(3)
    return image, extract_sift(image, SiftConfig(max_keypoints=300))


def test_vgg_is_120_unit_values_per_keypoint_and_deterministic(image_and_features):
    image, features = image_and_features
    first = base_descriptors("vgg", features, image)
    assert BASE_DESCRIPTOR_DIMS["vgg"] == 120 and first.shape == (len(features), 120) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, base_descriptors("vgg", features, lambda: image))
    ids = np.array([7, 2, 40])
    np.testing.assert_allclose(vgg_descriptors(image, features, 0, ids), first[ids], atol=1e-6)
    assert vgg_descriptors(image, features, 0, []).shape == (0, 120)


def test_rootsift_is_the_features_own_rootsift(image_and_features):
    _, features = image_and_features
    np.testing.assert_array_equal(base_descriptors("rootsift", features), root_sift(features.descriptors))
    np.testing.assert_array_equal(base_descriptors("rootsift", features, keypoint_ids=[3, 1]), root_sift(features.descriptors[[3, 1]]))


def test_vgg_describes_the_patch_the_detector_saw():
    """Keypoints of a downscaled detection (max_edge) get the descriptors of the same keypoints found on the small image."""
    image = textured_image(5, (240, 320))
    full = extract_sift(image, SiftConfig(max_edge=160, max_keypoints=200))
    small_image, _ = resize_to_max_edge(image, 160)
    small = extract_sift(small_image, SiftConfig(max_edge=0, max_keypoints=200))
    np.testing.assert_allclose(full.keypoints, 2 * small.keypoints, atol=1e-3)
    np.testing.assert_allclose(vgg_descriptors(image, full, 160), vgg_descriptors(small_image, small, 0), atol=1e-4)


def test_vgg_matches_across_a_rotation():
    """The keypoints' angles are used: a rotated image's VGG descriptors match the original's at the same points."""
    image = textured_image(7, (200, 200))
    rotated = np.ascontiguousarray(np.rot90(image))  # (x, y) -> (y, 200 - x) in COLMAP pixels
    a, b = (extract_sift(i, SiftConfig(max_keypoints=400)) for i in (image, rotated))
    da, db = base_descriptors("vgg", a, image), base_descriptors("vgg", b, rotated)
    nearest = np.argmax(da @ db.T, axis=1)
    expected = np.stack([a.keypoints[:, 1], 200 - a.keypoints[:, 0]], axis=1)
    correct = np.linalg.norm(b.keypoints[nearest] - expected, axis=1) < 2.0
    assert correct.mean() > 0.5, correct.mean()


def test_bad_inputs_and_opencv_without_contrib(image_and_features, monkeypatch):
    import cv2

    image, features = image_and_features
    with pytest.raises(SeglocError, match="unknown base descriptor"):
        base_descriptors("hardnet", features, image)
    with pytest.raises(SeglocError, match="computed from the image"):
        base_descriptors("vgg", features)
    with pytest.raises(SeglocError, match="size"):
        vgg_descriptors(image[:100], features, 0)
    monkeypatch.delattr(cv2, "xfeatures2d")
    with pytest.raises(SeglocError, match="opencv-contrib-python-headless"):
        base_descriptors("vgg", features, image)
