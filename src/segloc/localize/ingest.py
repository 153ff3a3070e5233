"""Camera ingest: a raw camera image and its calibration in, an undistorted, size-limited pinhole image out.

What a camera node hands the localizer is an image of any size taken by a camera of any COLMAP
model (from ``CameraInfo``). :class:`CameraIngest` prepares it:

1. a distorted camera's image is resampled into the distortion-free pinhole camera with the
   same size, focal lengths and principal point (:meth:`segloc.geometry.camera.Camera.pinhole`,
   the target :meth:`~segloc.geometry.camera.Camera.undistort_image` uses); the remap tables
   depend only on the camera, so they are computed once per camera and cached (an image stream
   has one camera; a few are kept for multi-camera or re-calibrated streams);
2. the image is shrunk (``INTER_AREA``) so that its longer side is at most ``max_edge`` pixels,
   keeping the aspect ratio (sides rounded to whole pixels), and the camera is scaled with it
   (:meth:`~segloc.geometry.camera.Camera.scaled`).

The result is the image the segmentation network sees (before its own resize to multiples of
32) and the PINHOLE camera that goes with it, in COLMAP's pixel convention.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import cv2
import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.camera import Camera

__all__ = ["CameraIngest", "ingest_size", "undistortion_maps"]


def ingest_size(width: int, height: int, max_edge: int | None) -> tuple[int, int]:
    """(width, height) with the longer side at most ``max_edge`` (None or 0: unchanged), aspect ratio kept."""
    if width <= 0 or height <= 0:
        raise SeglocError(f"image size must be positive, got {width}x{height}")
    if not max_edge or max(width, height) <= max_edge:
        return width, height
    scale = max_edge / max(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def undistortion_maps(camera: Camera, target: Camera) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` tables that resample an image of ``camera`` into ``target``, in OpenCV's fixed-point format.

    For each target pixel centre the source position is found through normalized coordinates
    (``target.pixels_to_normalized`` then ``camera.normalized_to_pixels``), as
    :meth:`Camera.undistort_image` does, then shifted by -0.5 px into OpenCV's convention.

    Returns:
        The two maps of :func:`cv2.convertMaps` (``CV_16SC2`` coordinates and ``CV_16UC1``
        interpolation indices), for :func:`cv2.remap` with ``INTER_LINEAR``.
    """
    u, v = np.meshgrid(np.arange(target.width) + 0.5, np.arange(target.height) + 0.5)
    normalized = target.pixels_to_normalized(np.stack([u.ravel(), v.ravel()], axis=-1))
    source = camera.normalized_to_pixels(normalized) - 0.5
    map_x = source[:, 0].reshape(target.height, target.width).astype(np.float32)
    map_y = source[:, 1].reshape(target.height, target.width).astype(np.float32)
    return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)


class CameraIngest:
    """Undistorts and shrinks camera images (see the module docstring); safe to call from several threads.

    Args:
        max_edge: the longest side of the output, pixels; None or 0 keeps the size.
        max_cameras: undistortion tables kept (least recently used dropped first).

    Example:
        >>> ingest = CameraIngest(max_edge=640)
        >>> image, camera = ingest(raw, Camera("OPENCV", 1280, 960, params))  # doctest: +SKIP
        >>> camera.model, camera.width, camera.height  # doctest: +SKIP
        ('PINHOLE', 640, 480)
    """

    def __init__(self, max_edge: int | None = None, max_cameras: int = 4):
        if max_edge is not None and max_edge < 0:
            raise SeglocError(f"max_edge must be positive (or 0 to keep the image size), got {max_edge}")
        if max_cameras < 1:
            raise SeglocError(f"max_cameras must be at least 1, got {max_cameras}")
        self.max_edge = max_edge
        self.max_cameras = max_cameras
        self._maps: OrderedDict[Camera, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def _cached_maps(self, camera: Camera, target: Camera) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            maps = self._maps.get(camera)
            if maps is not None:
                self._maps.move_to_end(camera)
                return maps
        maps = undistortion_maps(camera, target)  # outside the lock: a few tens of ms for a VGA camera
        with self._lock:
            self._maps[camera] = maps
            while len(self._maps) > self.max_cameras:
                self._maps.popitem(last=False)
        return maps

    @property
    def num_cached(self) -> int:
        """Cameras whose undistortion tables are cached."""
        with self._lock:
            return len(self._maps)

    def __call__(self, image: np.ndarray, camera: Camera) -> tuple[np.ndarray, Camera]:
        """The processed image (H', W'[, C]) and its PINHOLE camera.

        Args:
            image: (H, W) or (H, W, C) image taken by ``camera`` (any dtype OpenCV remaps).
            camera: its camera, any COLMAP model, of the image's size.

        Raises:
            SeglocError: an image whose size is not the camera's.
        """
        image = np.asarray(image)
        if image.ndim not in (2, 3) or (image.shape[1], image.shape[0]) != (camera.width, camera.height):
            raise SeglocError(
                f"image of shape {image.shape} does not match its camera of {camera.width}x{camera.height} "
                "(is the camera_info of another resolution or binning?)"
            )
        target = camera.pinhole()
        if camera.has_distortion:
            map_xy, map_interpolation = self._cached_maps(camera, target)
            image = cv2.remap(image, map_xy, map_interpolation, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        size = ingest_size(target.width, target.height, self.max_edge)
        if size != (target.width, target.height):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            target = target.scaled(*size)
        return image, target
