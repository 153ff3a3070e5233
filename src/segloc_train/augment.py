"""Training augmentations that keep 2D-2D correspondences valid (numpy + OpenCV, no torchvision).

Geometric augmentations (resize, random crop, random rescale) are composed into one 2x3 affine
``A`` that maps source pixel coordinates to output pixel coordinates, both in COLMAP's pixel
convention (the centre of the top-left pixel is (0.5, 0.5), the image spans
``[0, width] x [0, height]``): ``q = A[:, :2] @ p + A[:, 2]``. The image is warped with it and
the correspondence points are transformed with it; points that leave the output image are
flagged. Photometric augmentations (colour jitter, blur, a low-light camera, greyscale, noise)
change pixels only.

The low-light camera (:func:`low_light_camera`) imitates how a camera records dusk and night:
the scene gets less light (an exposure drop of ``2^-stops``), a colour cast (white balance
gains: sodium or tungsten lamps are warm, twilight is blue), the sensor adds signal-dependent
shot noise and read noise to the few photons it gets, the camera's gain brings part of the
brightness back (amplifying the noise) and a tone curve (gamma) finishes the image. All of it
runs in linear light: the 8-bit sRGB image is linearised first and encoded again at the end.

The geometric pipeline, for a source image of ``W x H``:

1. resize (deterministic): scale ``s0`` so that the longer edge becomes ``resize_max_edge``
   (aspect ratio kept) -> the *base* image ``W0 x H0``. The output size is ``output_size``,
   or ``W0 x H0`` when it is None.
2. random crop: a window with the output's aspect ratio, whose sides are ``f`` times those of
   the largest such window that fits in the base image, ``f ~ U(crop_scale)``.
3. random rescale: the window's sides are further divided by ``r ~ logU(rescale)``: ``r > 1``
   zooms in, ``r < 1`` zooms out (the window may then exceed the image; outside pixels are 0).
   The window's position is uniform over the positions that keep it inside the base image
   (or, when it is larger, that keep the image inside it); the window is then mapped onto
   the output image.

Without augmentation (``train=False``) the window is the centred largest fitting window
(``f = r = 1``). Every random draw comes from the ``numpy.random.Generator`` passed in, so
results are deterministic given its state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from segloc.data.relight import linear_to_srgb, srgb_to_linear  # one sRGB transfer function for relighting and augmentation
from segloc.errors import SeglocError


@dataclass
class AugmentConfig:
    """Options of :func:`augment_image`.

    Attributes:
        resize_max_edge: longer edge of the base image (pixels); None: keep the source size.
        output_size: (width, height) of every output image (needed to batch images of
            different cameras); None: the base size.
        crop_scale: range of the crop window's side fraction ``f`` (in (0, 1]).
        rescale: range of the extra zoom factor ``r`` (log-uniform; > 0).
        brightness, contrast, saturation: jitter strengths ``j``: factors drawn from
            ``U(max(0, 1 - j), 1 + j)``.
        hue: hue shift drawn from ``U(-hue, hue)``, as a fraction of the hue circle (<= 0.5).
        blur_probability: probability of a Gaussian blur.
        blur_sigma: range of the blur's standard deviation (output pixels).
        greyscale_probability: probability of replacing the image by its grey level (3 channels).
        noise_probability: probability of adding sensor noise (after the blur): zero-mean
            Gaussian noise per pixel and channel, as low light and high gain give. With the
            pseudo-targets taken from the clean view (``SegLocTrainConfig.clean_targets``) the
            photometric defaults are strong (brightness 0.6, contrast 0.5, blur 0.4 up to sigma
            3, noise 0.4 up to 0.06), so that SegLoc localizes under strong appearance change
            (dark, noisy, blurred); without clean targets, noise and strong blur collapse the
            classes. The runs: ``docs/experiments/segloc_training.md``.
        noise_std: range of the noise's standard deviation (fraction of the full range, 1.0).
        motion_blur_probability: probability of a linear motion blur (long exposures of a moving
            camera at dusk and night), after the Gaussian blur.
        motion_blur_length: range of its length (output pixels), direction uniform.
        low_light_probability: probability of the low-light camera (module documentation).
        exposure_stops: range of the exposure drop in stops (the light is divided by 2^stops).
        gain_recovery: range of the fraction of the lost stops the camera's gain restores
            (0: the image stays dark; 1: full brightness, with all the noise amplified).
        white_balance: largest colour cast, as a log gain: red and blue are scaled by
            ``exp(+-t)`` (t uniform in ``[-white_balance, white_balance]``: warm or cool) and
            green by ``exp(u)``, u in ``[-white_balance / 4, white_balance / 4]`` (tint).
        shot_noise: range of the shot noise scale ``a`` (log-uniform): variance ``a * x`` at
            linear signal x (x in [0, 1] after the exposure drop; ``a`` is the inverse of the
            full-well photon count).
        read_noise: range of the read noise standard deviation (linear light, log-uniform).
        gamma: range of the final tone-curve exponent applied to the encoded image (``x^gamma``;
            > 1 darkens the mid-tones, < 1 lifts them).
        seed: base seed of the training-set random streams (see ``SegLocTrainingSet``).
    """

    resize_max_edge: int | None = 512
    output_size: tuple[int, int] | None = None
    crop_scale: tuple[float, float] = (0.7, 1.0)
    rescale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.6
    contrast: float = 0.5
    saturation: float = 0.3
    hue: float = 0.05
    blur_probability: float = 0.4
    blur_sigma: tuple[float, float] = (0.1, 3.0)
    greyscale_probability: float = 0.1
    noise_probability: float = 0.4
    noise_std: tuple[float, float] = (0.01, 0.06)
    motion_blur_probability: float = 0.1
    motion_blur_length: tuple[float, float] = (3.0, 9.0)
    low_light_probability: float = 0.3
    exposure_stops: tuple[float, float] = (1.0, 5.0)
    gain_recovery: tuple[float, float] = (0.0, 1.0)
    white_balance: float = 0.4
    shot_noise: tuple[float, float] = (1e-4, 2e-3)
    read_noise: tuple[float, float] = (2e-4, 3e-3)
    gamma: tuple[float, float] = (0.8, 1.25)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resize_max_edge is not None and self.resize_max_edge < 8:
            raise SeglocError(f"resize_max_edge must be at least 8 pixels or null, got {self.resize_max_edge}")
        if self.output_size is not None and (len(self.output_size) != 2 or min(self.output_size) < 8):
            raise SeglocError(f"output_size must be (width, height) of at least 8 pixels each, or null, got {self.output_size}")
        checks = [
            ("crop_scale", self.crop_scale, 0.0, 1.0),
            ("rescale", self.rescale, 0.0, math.inf),
            ("blur_sigma", self.blur_sigma, 0.0, math.inf),
            ("motion_blur_length", self.motion_blur_length, 0.0, math.inf),
            ("shot_noise", self.shot_noise, 0.0, 1.0),
            ("read_noise", self.read_noise, 0.0, 1.0),
            ("gamma", self.gamma, 0.0, math.inf),
        ]
        for name, bounds, low, high in (
            ("exposure_stops", self.exposure_stops, 0.0, 16.0),
            ("gain_recovery", self.gain_recovery, 0.0, 1.0),
        ):
            if len(bounds) != 2 or not (low <= bounds[0] <= bounds[1] <= high):
                raise SeglocError(f"{name} must be a (min, max) range with {low} <= min <= max <= {high}, got {bounds}")
        if not 0 <= self.white_balance <= 2:
            raise SeglocError(f"white_balance must be a log gain in [0, 2], got {self.white_balance}")
        if len(self.noise_std) != 2 or not (0.0 <= self.noise_std[0] <= self.noise_std[1] <= 1.0):
            raise SeglocError(f"noise_std must be a (min, max) range with 0 <= min <= max <= 1, got {self.noise_std}")
        for name, bounds, low, high in checks:
            if len(bounds) != 2 or not (low < bounds[0] <= bounds[1] <= high):
                raise SeglocError(f"{name} must be a (min, max) range with {low} < min <= max <= {high}, got {bounds}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise SeglocError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise SeglocError(f"hue must be in [0, 0.5] (fraction of the hue circle), got {self.hue}")
        for name in ("blur_probability", "greyscale_probability", "noise_probability", "motion_blur_probability", "low_light_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise SeglocError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")


@dataclass
class AugmentedImage:
    """An augmented image and its transformed points.

    Attributes:
        image: (H, W, 3) float32 RGB in [0, 1].
        points: (N, 2) float32 transformed points (COLMAP convention, output image).
        inside: (N,) bool, the transformed point lies inside the output image; drop the others.
        affine: (2, 3) float64 source-to-output affine (COLMAP convention).
        clean: (H, W, 3) float32 RGB in [0, 1], the same geometry without the photometric
            changes (the view the training's pseudo-targets are computed from); ``image``
            itself when nothing photometric was applied.
    """

    image: np.ndarray
    points: np.ndarray
    inside: np.ndarray
    affine: np.ndarray
    clean: np.ndarray | None = None


# --- geometry -----------------------------------------------------------------------------
def sample_affine(
    source_size: tuple[int, int], config: AugmentConfig, rng: np.random.Generator | None, train: bool = True
) -> tuple[np.ndarray, tuple[int, int]]:
    """Draw the resize + crop + rescale transform for a source image (module documentation).

    Args:
        source_size: (width, height) of the source image.
        config: augmentation options.
        rng: random generator (unused when ``train`` is False).
        train: draw a random crop and rescale; otherwise the centred deterministic transform.

    Returns:
        affine (2, 3) float64 source-to-output (COLMAP convention) and the output (width, height).
    """
    width, height = int(source_size[0]), int(source_size[1])
    if width <= 0 or height <= 0:
        raise SeglocError(f"source image size must be positive, got {width}x{height}")
    scale = 1.0 if config.resize_max_edge is None else config.resize_max_edge / max(width, height)
    base_width, base_height = max(1, round(width * scale)), max(1, round(height * scale))
    out_width, out_height = config.output_size or (base_width, base_height)
    # Largest window with the output's aspect ratio inside the base image.
    fit_width = min(base_width, base_height * out_width / out_height)
    fit_height = fit_width * out_height / out_width
    if train:
        if rng is None:
            raise SeglocError("sample_affine: a random generator is required for training augmentation")
        fraction = rng.uniform(*config.crop_scale)
        zoom = math.exp(rng.uniform(math.log(config.rescale[0]), math.log(config.rescale[1])))
        window_width, window_height = fit_width * fraction / zoom, fit_height * fraction / zoom
        x0 = rng.uniform(min(0.0, base_width - window_width), max(0.0, base_width - window_width))
        y0 = rng.uniform(min(0.0, base_height - window_height), max(0.0, base_height - window_height))
    else:
        window_width, window_height = fit_width, fit_height
        x0, y0 = (base_width - window_width) / 2, (base_height - window_height) / 2
    kx, ky = out_width / window_width, out_height / window_height
    sx, sy = base_width / width, base_height / height  # exact resize scales (rounded base size)
    affine = np.array([[kx * sx, 0.0, -kx * x0], [0.0, ky * sy, -ky * y0]])
    return affine, (int(out_width), int(out_height))


def transform_points(points: np.ndarray, affine: np.ndarray, output_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Apply a (2, 3) affine to points (N, 2) (COLMAP convention).

    Returns:
        points (N, 2) float32 and inside (N,) bool: ``0 <= x < width`` and ``0 <= y < height``.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    moved = points @ affine[:, :2].T + affine[:, 2]
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < output_size[0]) & (moved[:, 1] >= 0) & (moved[:, 1] < output_size[1])
    return moved.astype(np.float32), inside


def warp_image(image: np.ndarray, affine: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Warp an (H, W[, C]) image with a source-to-output affine in COLMAP convention.

    Bilinear interpolation, zeros outside the source. Strong downscaling (below 1/2) first
    resizes with area averaging, to avoid aliasing. Returns an (out_h, out_w[, C]) image of the
    input dtype.
    """
    height, width = image.shape[:2]
    scale_x, scale_y = abs(affine[0, 0]), abs(affine[1, 1])
    if min(scale_x, scale_y) < 0.5:
        small_width, small_height = max(1, round(width * scale_x * 1.5)), max(1, round(height * scale_y * 1.5))
        if small_width < width and small_height < height:
            image = cv2.resize(image, (small_width, small_height), interpolation=cv2.INTER_AREA)
            # cv2.resize maps COLMAP coordinates by the size ratio exactly.
            affine = affine @ np.diag([width / small_width, height / small_height, 1.0])
    # OpenCV's pixel centres are at integers: q_cv = A p_cv + (t + A 0.5 - 0.5).
    opencv_affine = affine.copy()
    opencv_affine[:, 2] += affine[:, :2] @ [0.5, 0.5] - 0.5
    return cv2.warpAffine(
        image, opencv_affine, (int(output_size[0]), int(output_size[1])), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


# --- photometry ---------------------------------------------------------------------------
def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W) luma of an (H, W, 3) RGB float image (ITU-R 601 weights)."""
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _uniform_log(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def low_light_camera(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Record an (H, W, 3) float32 sRGB image in [0, 1] as a camera would at dusk or night (module documentation).

    In linear light: exposure drop ``2^-stops``, white-balance gains, Poisson-Gaussian sensor
    noise (variance ``a x + b^2`` at signal x), then the camera gain ``2^(stops * recovery)``;
    encoded to sRGB and raised to ``gamma``. Every parameter is drawn from ``rng`` in the
    ranges of ``config``.

    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    stops = rng.uniform(*config.exposure_stops)
    recovery = rng.uniform(*config.gain_recovery)
    cast, tint = rng.uniform(-1.0, 1.0, size=2) * config.white_balance
    shot, read = _uniform_log(rng, config.shot_noise), _uniform_log(rng, config.read_noise)
    gamma = _uniform_log(rng, config.gamma)
    gains = np.exp(np.array([cast, tint / 4.0, -cast], dtype=np.float32))
    signal = srgb_to_linear(image) * gains * np.float32(2.0**-stops)
    variance = shot * np.clip(signal, 0.0, None) + read**2
    signal = signal + np.sqrt(variance).astype(np.float32) * rng.standard_normal(signal.shape, dtype=np.float32)
    signal = signal * np.float32(2.0 ** (stops * recovery))
    return linear_to_srgb(signal) ** np.float32(gamma)


def _motion_blur(image: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Blur an (H, W, 3) image along a line of ``length`` pixels at ``angle`` radians (normalised kernel)."""
    size = 2 * math.ceil(length / 2) + 1
    kernel = np.zeros((size, size), np.float32)
    centre, half = size // 2, length / 2
    steps = max(2, 4 * size)
    for t in np.linspace(-half, half, steps):
        kernel[int(round(centre + t * math.sin(angle))), int(round(centre + t * math.cos(angle)))] += 1.0
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101)


def photometric_augment(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter (random order), blur, motion blur, low-light camera, greyscale and sensor noise.

    On an (H, W, 3) float32 RGB image in [0, 1]; each step is drawn with its probability.

    Returns a new (H, W, 3) float32 image in [0, 1]; pixels do not move.
    """
    image = np.asarray(image, dtype=np.float32)
    jitters = {
        "brightness": rng.uniform(max(0.0, 1 - config.brightness), 1 + config.brightness),
        "contrast": rng.uniform(max(0.0, 1 - config.contrast), 1 + config.contrast),
        "saturation": rng.uniform(max(0.0, 1 - config.saturation), 1 + config.saturation),
        "hue": rng.uniform(-config.hue, config.hue),
    }
    for index in rng.permutation(4):
        name = ("brightness", "contrast", "saturation", "hue")[index]
        factor = np.float32(jitters[name])
        if name == "brightness":
            image = image * factor
        elif name == "contrast":
            mean = np.float32(_grey(image).mean())
            image = (image - mean) * factor + mean
        elif name == "saturation":
            grey = _grey(image)[..., None]
            image = (image - grey) * factor + grey
        elif abs(factor) > 0:
            hsv = cv2.cvtColor(np.clip(image, 0.0, 1.0), cv2.COLOR_RGB2HSV)  # float: H in [0, 360)
            hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * factor, 360.0)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        image = np.clip(image, 0.0, 1.0)
    blur, sigma = rng.random() < config.blur_probability, rng.uniform(*config.blur_sigma)
    if blur:
        size = 2 * math.ceil(3 * sigma) + 1
        image = cv2.GaussianBlur(image, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    if rng.random() < config.motion_blur_probability:
        image = _motion_blur(image, rng.uniform(*config.motion_blur_length), rng.uniform(0.0, math.pi))
    if rng.random() < config.low_light_probability:
        image = low_light_camera(image, config, rng)
    if rng.random() < config.greyscale_probability:
        image = np.repeat(_grey(image)[..., None], 3, axis=2)
    noise, std = rng.random() < config.noise_probability, rng.uniform(*config.noise_std)
    if noise and std > 0:
        image = image + rng.normal(0.0, std, image.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)


# --- both ---------------------------------------------------------------------------------
def augment_image(
    image: np.ndarray,
    points: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator | None,
    train: bool = True,
    clean_source: np.ndarray | None = None,
) -> AugmentedImage:
    """Geometric and photometric augmentation of an image and its correspondence points.

    Args:
        image: (H, W, 3) uint8 RGB source image.
        points: (N, 2) points in the source image (COLMAP convention).
        config: augmentation options.
        rng: random generator (unused when ``train`` is False).
        train: random augmentation; otherwise only the deterministic resize (and centred fit to
            ``output_size``), without photometric changes.
        clean_source: optional (H, W, 3) uint8 image of the same view under another condition
            (same size, same pose: e.g. the day image of a night one); the clean view is warped
            from it with the same geometry, so the pseudo-targets of a night view are those of
            its day view. None: the clean view is ``image`` without photometric changes.

    Returns:
        The augmented image (float32 in [0, 1]), the transformed points with their ``inside``
        flags, the affine, and the image before the photometric changes (``clean``).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise SeglocError(f"augment_image expects an (H, W, 3) RGB image, got shape {image.shape}")
    affine, output_size = sample_affine((image.shape[1], image.shape[0]), config, rng, train)
    if clean_source is not None and np.shape(clean_source) != image.shape:
        raise SeglocError(f"clean_source must have the image's shape {image.shape}, got {np.shape(clean_source)}")

    def to_float(warped: np.ndarray) -> np.ndarray:
        return warped.astype(np.float32) / 255.0 if warped.dtype == np.uint8 else warped.astype(np.float32)

    view = to_float(warp_image(image, affine, output_size))
    pixels = photometric_augment(view, config, rng) if train else view
    clean = view if clean_source is None else to_float(warp_image(np.asarray(clean_source), affine, output_size))
    moved, inside = transform_points(points, affine, output_size)
    return AugmentedImage(pixels, moved, inside, affine, clean)
