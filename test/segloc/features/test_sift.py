"""SIFT extraction: pixel convention, resizing, RootSIFT, bad inputs."""

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.features.sift import SiftConfig, extract_sift, resize_to_max_edge, root_sift


def blob_image(width: int, height: int, center_colmap: tuple[float, float], sigma: float) -> np.ndarray:
    """A dark Gaussian blob on a bright background, centred at COLMAP pixel coordinates."""
    x, y = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)  # pixel centres, COLMAP convention
    r2 = (x - center_colmap[0]) ** 2 + (y - center_colmap[1]) ** 2
    return (230 - 200 * np.exp(-r2 / (2 * sigma**2))).astype(np.uint8)


def textured_image(seed: int = 0, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    import cv2

    image = np.zeros(size, np.float32)
    for scale in (4, 8, 16):
        noise = rng.random((size[0] // scale + 1, size[1] // scale + 1)).astype(np.float32)
        image += cv2.resize(noise, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)[: size[0], : size[1]]
    image = (image - image.min()) / (image.max() - image.min())
    return (255 * image).astype(np.uint8)


def test_blob_keypoint_in_colmap_convention():
    center = (80.25, 60.75)
    features = extract_sift(blob_image(160, 120, center, 4.0), SiftConfig(max_edge=0))
    assert len(features) >= 1
    distances = np.linalg.norm(features.keypoints - np.array(center), axis=1)
    assert distances.min() < 0.2


def test_downscaled_keypoints_map_back_to_full_resolution():
    center = (160.5, 120.5)  # the same blob at twice the resolution, detected at half of it
    features = extract_sift(blob_image(320, 240, center, 8.0), SiftConfig(max_edge=160))
    assert features.image_size == (320, 240)
    distances = np.linalg.norm(features.keypoints - np.array(center), axis=1)
    assert distances.min() < 0.5
    assert features.scales[np.argmin(distances)] > 8  # sizes are in full-resolution pixels too


def test_features_shapes_limits_and_rgb():
    gray = textured_image()
    features = extract_sift(gray, SiftConfig(max_keypoints=100))
    assert 0 < len(features) <= 100
    assert features.keypoints.shape == (len(features), 2) and features.keypoints.dtype == np.float32
    assert features.descriptors.shape == (len(features), 128) and features.descriptors.dtype == np.uint8
    assert np.all(features.keypoints >= 0) and np.all(features.keypoints[:, 0] <= 320) and np.all(features.keypoints[:, 1] <= 240)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(extract_sift(rgb, SiftConfig(max_keypoints=100)).keypoints, features.keypoints)


def test_resize_to_max_edge():
    image = np.zeros((300, 1000), np.uint8)
    resized, (sx, sy) = resize_to_max_edge(image, 500)
    assert resized.shape == (150, 500) and sx == pytest.approx(2.0) and sy == pytest.approx(2.0)
    same, scale = resize_to_max_edge(image, 0)
    assert same is image and scale == (1.0, 1.0)


def test_root_sift():
    descriptors = np.array([[4, 0, 0, 12], [0, 0, 0, 0]], np.uint8)
    values = root_sift(descriptors)
    np.testing.assert_allclose(values[0], [0.5, 0, 0, np.sqrt(0.75)], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(values[0]), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(values[1], 0)


def test_bad_images():
    with pytest.raises(SeglocError, match="uint8"):
        extract_sift(np.zeros((64, 64), np.float32))
    with pytest.raises(SeglocError, match="shape"):
        extract_sift(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(SeglocError, match="too small"):
        extract_sift(np.zeros((8, 8), np.uint8))
    assert len(extract_sift(np.full((64, 64), 128, np.uint8))) == 0  # no texture, no features
