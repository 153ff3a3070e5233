"""Augmentations: correspondences follow the geometric transform; photometric ones move nothing."""

import cv2
import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc_train.augment import (
    AugmentConfig,
    augment_image,
    linear_to_srgb,
    low_light_camera,
    photometric_augment,
    sample_affine,
    srgb_to_linear,
    transform_points,
    warp_image,
)

GEOMETRY_ONLY = {
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "hue": 0.0,
    "blur_probability": 0.0,
    "greyscale_probability": 0.0,
    "noise_probability": 0.0,
    "motion_blur_probability": 0.0,
    "low_light_probability": 0.0,
}


def smooth_texture(width: int = 200, height: int = 150, sigma: float = 4.0, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 random texture smooth enough for bilinear resampling to preserve it."""
    noise = np.random.default_rng(seed).normal(size=(height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.round(smooth * 255).astype(np.uint8)


def sample_bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, C) float values of an (H, W, C) image at points (N, 2) in COLMAP convention."""
    maps = (np.asarray(points, np.float32) - 0.5).reshape(-1, 1, 2)
    values = cv2.remap(image.astype(np.float32), maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return values.reshape(len(points), -1)


def random_points(rng: np.random.Generator, width: int, height: int, count: int = 400, margin: float = 4.0) -> np.ndarray:
    return np.stack([rng.uniform(margin, width - margin, count), rng.uniform(margin, height - margin, count)], axis=1)


@pytest.mark.parametrize(
    "options",
    [
        {"resize_max_edge": 160, "crop_scale": (0.5, 1.0), "rescale": (0.8, 1.25)},  # down, crop, zoom in and out
        {"resize_max_edge": 300, "crop_scale": (0.6, 0.9), "rescale": (1.0, 1.0), "output_size": (128, 128)},  # up, other aspect
        {"resize_max_edge": 60, "crop_scale": (0.8, 1.0), "rescale": (1.0, 1.0)},  # strong downscale (area pre-resize)
    ],
)
def test_correspondences_survive_crop_and_rescale(options):
    sigma = 8.0 if options["resize_max_edge"] == 60 else 4.0
    image = smooth_texture(sigma=sigma)
    config = AugmentConfig(**options, **GEOMETRY_ONLY)
    rng = np.random.default_rng(0)
    for _ in range(5):
        points = random_points(rng, 200, 150)
        augmented = augment_image(image, points, config, rng)
        height, width = augmented.image.shape[:2]
        if "output_size" in options:
            assert (width, height) == options["output_size"]
        assert augmented.image.dtype == np.float32 and augmented.points.shape == (len(points), 2)
        inside = augmented.inside
        assert inside.sum() > 50
        moved = augmented.points[inside]
        assert np.all((moved >= 0) & (moved < [width, height]))
        # Keep away from the output border, where bilinear sampling reads the padding.
        interior = np.all((moved > 1.0) & (moved < [width - 1.0, height - 1.0]), axis=1)
        original = sample_bilinear(image, points[inside][interior]) / 255.0
        resampled = sample_bilinear(augmented.image, moved[interior])
        error = np.abs(original - resampled)
        # A half-pixel misalignment gives a mean error of about 0.018 here; resampling alone about 0.001.
        assert error.mean() < 0.006 and np.quantile(error, 0.99) < 0.025, (error.mean(), error.max())
        outside = augmented.points[~inside]
        assert np.all(np.any((outside < 0) | (outside >= [width, height]), axis=1))


def test_affine_uses_the_colmap_pixel_convention():
    image = smooth_texture(sigma=2.0)
    config = AugmentConfig(resize_max_edge=160, **GEOMETRY_ONLY)
    affine, size = sample_affine((200, 150), config, None, train=False)
    assert size == (160, 120)
    np.testing.assert_allclose(affine, [[0.8, 0.0, 0.0], [0.0, 0.8, 0.0]])
    # The image corners map to the output corners, pixel centres to pixel centres' positions.
    corners, _ = transform_points(np.array([[0.0, 0.0], [200.0, 150.0]]), affine, size)
    np.testing.assert_allclose(corners, [[0.0, 0.0], [160.0, 120.0]])
    # Same pixels as OpenCV's resize, which aligns pixel areas the same way.
    warped = warp_image(image, affine, size)
    assert np.abs(warped.astype(int) - cv2.resize(image, size, interpolation=cv2.INTER_LINEAR).astype(int)).max() <= 1


def test_points_leaving_the_image_are_flagged():
    points = np.array([[0.5, 0.5], [199.5, 149.5], [100.0, 75.0]])
    config = AugmentConfig(resize_max_edge=None, crop_scale=(0.5, 0.5), rescale=(1.0, 1.0), **GEOMETRY_ONLY)
    augmented = augment_image(smooth_texture(), points, config, np.random.default_rng(3))
    assert augmented.image.shape == (150, 200, 3)  # the half-size window is rescaled to the base size
    np.testing.assert_allclose(augmented.affine[:, :2], 2.0 * np.eye(2))
    assert augmented.inside.tolist() == [False, False, True]  # corners cropped away, centre kept
    # Zooming out: the window exceeds the image, every point stays, the border is black.
    config = AugmentConfig(resize_max_edge=None, crop_scale=(1.0, 1.0), rescale=(0.5, 0.5), **GEOMETRY_ONLY)
    augmented = augment_image(smooth_texture(), points, config, np.random.default_rng(3))
    assert augmented.inside.all() and augmented.image.shape == (150, 200, 3)
    assert augmented.image[0].max() == 0 or augmented.image[-1].max() == 0 or augmented.image[:, 0].max() == 0


def test_photometric_augmentations_do_not_move_points():
    image = smooth_texture()
    points = random_points(np.random.default_rng(1), 200, 150)
    config = AugmentConfig(resize_max_edge=None, crop_scale=(1.0, 1.0), rescale=(1.0, 1.0), blur_probability=1.0, greyscale_probability=0.5)
    for seed in range(4):
        augmented = augment_image(image, points, config, np.random.default_rng(seed))
        np.testing.assert_allclose(augmented.affine, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        np.testing.assert_array_equal(augmented.points, points.astype(np.float32))
        assert augmented.inside.all()
        assert augmented.image.shape == image.shape and not np.allclose(augmented.image, image / 255.0, atol=0.01)
        assert augmented.image.min() >= 0.0 and augmented.image.max() <= 1.0


def test_the_clean_view_has_the_geometry_without_the_photometry():
    image = smooth_texture()
    points = random_points(np.random.default_rng(1), 200, 150)
    strong = AugmentConfig(resize_max_edge=160, blur_probability=1.0, noise_probability=1.0, brightness=0.6)
    for seed in range(3):
        augmented = augment_image(image, points, strong, np.random.default_rng(seed))
        geometry_only = augment_image(
            image, points, AugmentConfig(**{**GEOMETRY_ONLY, "resize_max_edge": 160}), np.random.default_rng(seed)
        )
        # Same draws for the window: the clean view is the geometry-only image of the same seed.
        np.testing.assert_allclose(augmented.affine, geometry_only.affine)
        np.testing.assert_allclose(augmented.clean, geometry_only.image, atol=1e-6)
        assert augmented.clean.shape == augmented.image.shape and np.abs(augmented.clean - augmented.image).mean() > 0.01
    unaugmented = augment_image(image, points, strong, None, train=False)
    assert unaugmented.clean is unaugmented.image


def test_photometric_operations():
    image = smooth_texture().astype(np.float32) / 255.0
    grey = photometric_augment(image, AugmentConfig(**{**GEOMETRY_ONLY, "greyscale_probability": 1.0}), np.random.default_rng(0))
    assert np.allclose(grey[..., 0], grey[..., 1]) and np.allclose(grey[..., 1], grey[..., 2])
    still = AugmentConfig(**GEOMETRY_ONLY)
    np.testing.assert_allclose(photometric_augment(image, still, np.random.default_rng(0)), image, atol=1e-6)
    blurred = photometric_augment(
        image, AugmentConfig(**{**GEOMETRY_ONLY, "blur_probability": 1.0, "blur_sigma": (2.0, 2.0)}), np.random.default_rng(0)
    )
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(image, axis=1)).mean()
    hue_only = AugmentConfig(**{**GEOMETRY_ONLY, "hue": 0.5})
    shifted = photometric_augment(image, hue_only, np.random.default_rng(0))
    assert not np.allclose(shifted, image, atol=0.02)
    # A hue rotation keeps the value (max channel).
    np.testing.assert_allclose(shifted.max(axis=2), image.max(axis=2), atol=1e-4)
    noisy = photometric_augment(
        image, AugmentConfig(**{**GEOMETRY_ONLY, "noise_probability": 1.0, "noise_std": (0.05, 0.05)}), np.random.default_rng(0)
    )
    inner = (image > 0.2) & (image < 0.8)  # away from the clipping at 0 and 1
    assert abs(float((noisy - image)[inner].std()) - 0.05) < 0.005
    assert abs(float((noisy - image)[inner].mean())) < 0.005


def test_bad_noise_options_are_refused():
    with pytest.raises(SeglocError, match="noise_std"):
        AugmentConfig(noise_std=(0.1, 0.05))
    with pytest.raises(SeglocError, match="noise_probability"):
        AugmentConfig(noise_probability=1.5)


def test_deterministic_given_the_generator():
    image, points = smooth_texture(), random_points(np.random.default_rng(2), 200, 150)
    config = AugmentConfig(resize_max_edge=128)
    first = augment_image(image, points, config, np.random.default_rng(7))
    again = augment_image(image, points, config, np.random.default_rng(7))
    other = augment_image(image, points, config, np.random.default_rng(8))
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.points, again.points)
    assert not np.array_equal(first.points, other.points)
    evaluation = augment_image(image, points, config, None, train=False)
    np.testing.assert_array_equal(evaluation.points, augment_image(image, points, config, None, train=False).points)


def test_bad_options():
    with pytest.raises(SeglocError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(SeglocError, match="hue"):
        AugmentConfig(hue=0.7)
    with pytest.raises(SeglocError, match="probability"):
        AugmentConfig(blur_probability=2.0)
    with pytest.raises(SeglocError, match="RGB"):
        augment_image(np.zeros((10, 10), np.uint8), np.zeros((0, 2)), AugmentConfig(), np.random.default_rng(0))
    with pytest.raises(SeglocError, match="random generator"):
        augment_image(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 2)), AugmentConfig(), None)


def test_srgb_round_trip():
    values = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(values)), values, atol=1e-5)
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.214, abs=1e-3)  # mid grey is a fifth of the light


LOW_LIGHT_ONLY = {**GEOMETRY_ONLY, "low_light_probability": 1.0}


def test_low_light_darkens_and_adds_signal_dependent_noise():
    flat = np.full((120, 160, 3), 0.6, np.float32)
    # No gain recovery, neutral white balance and gamma: only the exposure drop and the noise.
    dark = AugmentConfig(
        **{**LOW_LIGHT_ONLY, "exposure_stops": (3.0, 3.0), "gain_recovery": (0.0, 0.0), "white_balance": 0.0, "gamma": (1.0, 1.0)}
    )
    result = low_light_camera(flat, dark, np.random.default_rng(0))
    assert result.dtype == np.float32 and result.shape == flat.shape
    assert 0.0 <= result.min() and result.max() <= 1.0
    expected = linear_to_srgb(srgb_to_linear(np.float32(0.6)) / 8.0)  # three stops: an eighth of the light
    assert abs(float(result.mean()) - float(expected)) < 0.02
    # Restoring the brightness with gain amplifies the noise: a brighter, noisier image than a day exposure.
    recovered = AugmentConfig(**{**dark.__dict__, "gain_recovery": (1.0, 1.0)})
    bright = low_light_camera(flat, recovered, np.random.default_rng(0))
    assert abs(float(bright.mean()) - 0.6) < 0.05
    day = AugmentConfig(**{**recovered.__dict__, "exposure_stops": (0.0, 0.0)})
    assert bright.std() > 2.0 * low_light_camera(flat, day, np.random.default_rng(0)).std()
    # Shot noise grows with the signal: in linear light a brighter patch is noisier.
    ramp = np.concatenate([np.full((60, 160, 3), 0.2, np.float32), np.full((60, 160, 3), 0.9, np.float32)])
    shot_only = AugmentConfig(**{**recovered.__dict__, "read_noise": (1e-6, 1e-6), "shot_noise": (1e-3, 1e-3)})
    linear = srgb_to_linear(low_light_camera(ramp, shot_only, np.random.default_rng(1)))
    assert linear[60:].std() > 1.5 * linear[:60].std()


def test_white_balance_gives_a_colour_cast():
    grey = np.full((40, 40, 3), 0.5, np.float32)
    config = AugmentConfig(
        **{**LOW_LIGHT_ONLY, "exposure_stops": (0.0, 0.0), "shot_noise": (1e-9, 1e-9), "read_noise": (1e-9, 1e-9), "white_balance": 0.6}
    )
    casts = [low_light_camera(grey, config, np.random.default_rng(seed)).mean(axis=(0, 1)) for seed in range(20)]
    red_minus_blue = np.array([c[0] - c[2] for c in casts])
    assert red_minus_blue.max() > 0.05 and red_minus_blue.min() < -0.05  # warm and cool casts both occur


def test_photometric_augment_is_deterministic_in_range_and_keeps_shape():
    image = smooth_texture().astype(np.float32) / 255.0
    config = AugmentConfig(low_light_probability=1.0, motion_blur_probability=1.0)
    first = photometric_augment(image, config, np.random.default_rng(5))
    assert first.dtype == np.float32 and first.shape == image.shape
    assert 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first, photometric_augment(image, config, np.random.default_rng(5)))
    assert not np.array_equal(first, photometric_augment(image, config, np.random.default_rng(6)))


def test_motion_blur_smooths_along_its_direction():
    stripes = np.zeros((64, 64, 3), np.float32)
    stripes[:, ::4] = 1.0  # vertical stripes: a vertical blur keeps them, another direction smears them
    config = AugmentConfig(**{**GEOMETRY_ONLY, "motion_blur_probability": 1.0, "motion_blur_length": (7.0, 7.0)})
    blurred = [photometric_augment(stripes, config, np.random.default_rng(seed)) for seed in range(8)]
    assert min(np.abs(np.diff(b, axis=1)).mean() for b in blurred) < np.abs(np.diff(stripes, axis=1)).mean()
    assert all(abs(float(b.mean()) - float(stripes.mean())) < 0.02 for b in blurred)  # the kernel keeps the brightness


def test_bad_low_light_options_are_refused():
    for options, match in (
        ({"exposure_stops": (3.0, 1.0)}, "exposure_stops"),
        ({"gain_recovery": (0.0, 1.5)}, "gain_recovery"),
        ({"white_balance": -0.1}, "white_balance"),
        ({"shot_noise": (0.0, 0.1)}, "shot_noise"),
        ({"gamma": (1.2, 0.8)}, "gamma"),
        ({"low_light_probability": 1.5}, "low_light_probability"),
    ):
        with pytest.raises(SeglocError, match=match):
            AugmentConfig(**options)
