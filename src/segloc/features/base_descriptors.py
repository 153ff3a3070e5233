"""Base descriptors at SIFT keypoints: what NinjaNet (:mod:`segloc.models.ninjanet`) re-encodes.

- ``rootsift``: the keypoints' own SIFT descriptors, RootSIFT-normalised (:func:`segloc.features.sift.root_sift`), 128-d;
- ``vgg``: OpenCV's learned VGG patch descriptor (Simonyan, Vedaldi, Zisserman, TPAMI 2014;
  ``cv2.xfeatures2d.VGG_create``, weights compiled into opencv-contrib) computed at the SIFT
  keypoints (position, size and angle) on the image SIFT detected them in, 120-d, L2-normalised.

Both return (N, C) float32 rows of unit norm, one per keypoint, in the keypoints' order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segloc.errors import SeglocError
from segloc.features.sift import LocalFeatures, resize_to_max_edge, root_sift, to_grayscale

__all__ = ["BASE_DESCRIPTOR_DIMS", "base_descriptors", "vgg_descriptors"]

BASE_DESCRIPTOR_DIMS: dict[str, int] = {"rootsift": 128, "vgg": 120}
"""Dimension C of each base descriptor."""

VGG_SCALE_FACTOR = 6.25
"""OpenCV's recommended ``scale_factor`` of VGG for SIFT keypoints."""

ImageSource = np.ndarray | Callable[[], np.ndarray] | None


def _vgg_extractor():
    import cv2

    create = getattr(getattr(cv2, "xfeatures2d", None), "VGG_create", None)
    if create is None:
        raise SeglocError(
            f"the vgg base descriptor needs OpenCV's contrib modules (cv2.xfeatures2d.VGG_create), which OpenCV "
            f"{cv2.__version__} at {cv2.__file__} lacks: install opencv-contrib-python-headless in place of "
            "opencv-python-headless (pip uninstall opencv-python-headless && pip install opencv-contrib-python-headless), "
            "or use a NinjaNet over rootsift"
        )
    return create(scale_factor=VGG_SCALE_FACTOR)


def vgg_descriptors(image: np.ndarray, features: LocalFeatures, max_edge: int, keypoint_ids: Sequence[int] | None = None) -> np.ndarray:
    """(N, 120) float32 L2-normalised VGG descriptors at SIFT keypoints.

    Args:
        image: (H, W, 3) RGB or (H, W) grayscale uint8, the image ``features`` were extracted from.
        features: SIFT features of ``image`` (full-resolution COLMAP pixels, sizes and angles).
        max_edge: the SIFT options' ``max_edge``: VGG runs on the image SIFT detected in, so
            that a keypoint's size means the same patch.
        keypoint_ids: describe only these keypoints (None: all), in this order.

    Raises:
        SeglocError: OpenCV without the contrib modules, an image of another size than the features'.
    """
    import cv2

    gray = to_grayscale(image)
    if (gray.shape[1], gray.shape[0]) != tuple(features.image_size):
        raise SeglocError(f"image of size {gray.shape[1]}x{gray.shape[0]} but features of an image of size {features.image_size}")
    ids = np.arange(len(features)) if keypoint_ids is None else np.asarray(keypoint_ids, dtype=np.int64).reshape(-1)
    extractor = _vgg_extractor()
    if len(ids) == 0:
        return np.zeros((0, BASE_DESCRIPTOR_DIMS["vgg"]), np.float32)
    resized, (sx, sy) = resize_to_max_edge(gray, max_edge)
    xy = features.keypoints[ids].astype(np.float64) / [sx, sy] - 0.5  # COLMAP full resolution -> OpenCV at the detector's size
    sizes = features.scales[ids].astype(np.float64) / ((sx + sy) / 2)
    keypoints = [cv2.KeyPoint(float(x), float(y), float(s), float(a)) for (x, y), s, a in zip(xy, sizes, features.orientations[ids])]
    described, descriptors = extractor.compute(resized, keypoints)
    if descriptors is None or len(described) != len(keypoints):
        raise SeglocError(f"OpenCV's VGG described {len(described)} of {len(keypoints)} keypoints")
    descriptors = np.asarray(descriptors, dtype=np.float32)
    return descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)


def base_descriptors(
    name: str, features: LocalFeatures, image: ImageSource = None, max_edge: int = 0, keypoint_ids: Sequence[int] | None = None
) -> np.ndarray:
    """(N, C) float32 base descriptors ``name`` (:data:`BASE_DESCRIPTOR_DIMS`) at the keypoints of ``features``.

    Args:
        name: ``rootsift`` or ``vgg``.
        features: the image's SIFT features.
        image: the image, or a function that loads it (called only by a base that reads pixels: ``vgg``).
        max_edge: the SIFT options' ``max_edge`` (``vgg``: see :func:`vgg_descriptors`).
        keypoint_ids: describe only these keypoints (None: all), in this order.

    Raises:
        SeglocError: an unknown name, ``vgg`` without an image or without OpenCV's contrib modules.
    """
    if name not in BASE_DESCRIPTOR_DIMS:
        raise SeglocError(f"unknown base descriptor {name!r}; valid values are: {', '.join(BASE_DESCRIPTOR_DIMS)}")
    if name == "rootsift":
        return root_sift(features.descriptors if keypoint_ids is None else features.descriptors[np.asarray(keypoint_ids, np.int64)])
    if image is None:
        raise SeglocError(f"the {name} base descriptor is computed from the image; none was given")
    return vgg_descriptors(image() if callable(image) else image, features, max_edge, keypoint_ids)
