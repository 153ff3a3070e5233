"""SIFT local features (OpenCV) with RootSIFT, in COLMAP's pixel convention.

Keypoints are returned at the full resolution of the input image with the centre of the
top-left pixel at (0.5, 0.5) (COLMAP), whatever the resolution the detector ran at. Descriptors
are kept as OpenCV computes them, 128 integers in [0, 255] stored as uint8 (lossless); matching
converts them to RootSIFT (:func:`root_sift`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segloc.config import check_options, option
from segloc.errors import SeglocError


@dataclass
class SiftConfig:
    """Options of :func:`extract_sift`.

    Attributes:
        max_edge: the image is downscaled (area interpolation) so that its longer side is at
            most this many pixels before detection; 0 keeps the original size.
        max_keypoints: keep at most this many keypoints (strongest responses first); 0: no limit.
        contrast_threshold: OpenCV's contrast threshold (lower finds more, weaker features).
        edge_threshold: OpenCV's edge-response threshold.
        num_octave_layers: scales per octave.
        sigma: Gaussian blur of the base octave.
        precise_upscale: upsample the first octave so that pixel ``x`` maps to ``2x`` (OpenCV's
            default upscaling shifts keypoints by +0.25 pixel).
    """

    max_edge: int = option(1024, ge=0, note="0: the original size")
    max_keypoints: int = option(8192, ge=0, note="0: no limit")
    contrast_threshold: float = option(0.02, gt=0)
    edge_threshold: float = option(10.0, gt=0)
    num_octave_layers: int = option(3, ge=1)
    sigma: float = option(1.6, gt=0)
    precise_upscale: bool = True

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class LocalFeatures:
    """Keypoints and descriptors of one image.

    Attributes:
        keypoints: (N, 2) float32 pixel coordinates at full resolution, COLMAP convention.
        scales: (N,) float32 keypoint diameters in full-resolution pixels (OpenCV ``size``).
        orientations: (N,) float32 angles in degrees (OpenCV ``angle``).
        descriptors: (N, 128) uint8 SIFT descriptors.
        image_size: (width, height) of the image the keypoints refer to.
    """

    keypoints: np.ndarray
    scales: np.ndarray
    orientations: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.keypoints)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from an (H, W) or (H, W, 3) RGB uint8 image."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise SeglocError(f"expected a uint8 image, got dtype {image.dtype}; convert it to 8 bits per channel")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise SeglocError(f"expected an (H, W) grayscale or (H, W, 3) RGB image, got shape {image.shape}")


def resize_to_max_edge(image: np.ndarray, max_edge: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Downscale ``image`` so that its longer side is at most ``max_edge`` (0: no limit).

    Returns:
        The (possibly) resized image and ``(sx, sy)``, the factors that map resized pixel
        coordinates (COLMAP convention) back to the original: ``x_full = sx * x_resized``.
    """
    import cv2

    height, width = image.shape[:2]
    if max_edge <= 0 or max(height, width) <= max_edge:
        return image, (1.0, 1.0)
    scale = max_edge / max(height, width)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)
    return resized, (width / new_width, height / new_height)


def extract_sift(image: np.ndarray, config: SiftConfig | None = None) -> LocalFeatures:
    """Detect SIFT keypoints and compute their descriptors.

    Args:
        image: (H, W, 3) RGB or (H, W) grayscale uint8 image.
        config: detector options.

    Returns:
        The features, keypoints in full-resolution COLMAP pixel coordinates.
    """
    import cv2

    config = config or SiftConfig()
    gray = to_grayscale(image)
    height, width = gray.shape
    if height < 16 or width < 16:
        raise SeglocError(f"image of size {width}x{height} is too small for feature extraction")
    resized, (sx, sy) = resize_to_max_edge(gray, config.max_edge)
    detector = cv2.SIFT_create(
        nfeatures=max(0, int(config.max_keypoints)),
        nOctaveLayers=config.num_octave_layers,
        contrastThreshold=config.contrast_threshold,
        edgeThreshold=config.edge_threshold,
        sigma=config.sigma,
        enable_precise_upscale=config.precise_upscale,
    )
    cv_keypoints, descriptors = detector.detectAndCompute(resized, None)
    if not cv_keypoints:
        return empty_features((width, height))
    # OpenCV may return slightly more than nfeatures (ties); keep the strongest.
    responses = np.array([kp.response for kp in cv_keypoints], dtype=np.float32)
    order = np.argsort(-responses, kind="stable")
    if config.max_keypoints > 0:
        order = order[: config.max_keypoints]
    xy = np.array([kp.pt for kp in cv_keypoints], dtype=np.float64)[order]
    keypoints = np.stack([(xy[:, 0] + 0.5) * sx, (xy[:, 1] + 0.5) * sy], axis=-1).astype(np.float32)
    scales = np.array([kp.size for kp in cv_keypoints], dtype=np.float32)[order] * np.float32((sx + sy) / 2)
    orientations = np.array([kp.angle for kp in cv_keypoints], dtype=np.float32)[order]
    descriptors = np.clip(np.round(descriptors[order]), 0, 255).astype(np.uint8)
    return LocalFeatures(keypoints, scales, orientations, descriptors, (width, height))


def empty_features(image_size: tuple[int, int]) -> LocalFeatures:
    """Features with no keypoints for an image of ``image_size`` (width, height)."""
    return LocalFeatures(
        np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((0, 128), np.uint8), image_size
    )


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then take the square root.

    Args:
        descriptors: (N, 128) non-negative SIFT descriptors (uint8 or float).

    Returns:
        (N, 128) float32 descriptors of unit L2 norm (rows of zeros stay zero).
    """
    values = np.asarray(descriptors, dtype=np.float32)
    if values.ndim != 2:
        raise SeglocError(f"expected descriptors of shape (N, D), got {values.shape}")
    l1 = np.maximum(values.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(values / l1)
