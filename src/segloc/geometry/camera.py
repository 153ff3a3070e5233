"""COLMAP camera models: projection, unprojection, undistortion.

Pixel convention: COLMAP's, the centre of the top-left pixel is at (0.5, 0.5), so
``u = fx * x + cx`` with ``cx`` in that convention; the pixel holding ``(u, v)`` has array
index ``(floor(v), floor(u))``. OpenCV puts the top-left centre at (0, 0):
:meth:`Camera.opencv_calibration_matrix` shifts the principal point by -0.5 for it.

Parameter order follows COLMAP:

=================  ======================================
SIMPLE_PINHOLE     f, cx, cy
PINHOLE            fx, fy, cx, cy
SIMPLE_RADIAL      f, cx, cy, k
RADIAL             f, cx, cy, k1, k2
OPENCV             fx, fy, cx, cy, k1, k2, p1, p2
FULL_OPENCV        fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6
=================  ======================================

The distortion functions use elementwise arithmetic only, so they accept numpy arrays and torch
tensors alike (for differentiable projection in pose refinement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3

CAMERA_MODELS: dict[str, tuple[str, ...]] = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "FULL_OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
}


def _distortion_coefficients(model: str, params) -> dict[str, float]:
    names = CAMERA_MODELS[model]
    values = dict(zip(names, params))
    return {k: v for k, v in values.items() if k not in ("f", "fx", "fy", "cx", "cy")}


def distort_normalized(model: str, params, x, y):
    """Apply the lens distortion of ``model`` to normalized coordinates (x, y) = (X/Z, Y/Z).

    Works elementwise on numpy arrays or torch tensors of any shape. Returns (xd, yd).
    """
    d = _distortion_coefficients(model, params)
    if model in ("SIMPLE_PINHOLE", "PINHOLE"):
        return x, y
    r2 = x * x + y * y
    if model == "SIMPLE_RADIAL":
        radial = 1 + d["k"] * r2
        return x * radial, y * radial
    if model == "RADIAL":
        radial = 1 + d["k1"] * r2 + d["k2"] * r2 * r2
        return x * radial, y * radial
    if model == "OPENCV":
        radial = 1 + d["k1"] * r2 + d["k2"] * r2 * r2
    else:  # FULL_OPENCV
        r4, r6 = r2 * r2, r2 * r2 * r2
        radial = (1 + d["k1"] * r2 + d["k2"] * r4 + d["k3"] * r6) / (1 + d["k4"] * r2 + d["k5"] * r4 + d["k6"] * r6)
    xy = x * y
    xd = x * radial + 2 * d["p1"] * xy + d["p2"] * (r2 + 2 * x * x)
    yd = y * radial + d["p1"] * (r2 + 2 * y * y) + 2 * d["p2"] * xy
    return xd, yd


@dataclass(frozen=True)
class Camera:
    """A COLMAP camera: model name, image size (pixels) and parameters in COLMAP order."""

    model: str
    width: int
    height: int
    params: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODELS:
            raise SeglocError(f"unknown camera model {self.model!r}; supported models: {', '.join(CAMERA_MODELS)}")
        params = tuple(float(p) for p in np.asarray(self.params, dtype=np.float64).reshape(-1))
        expected = CAMERA_MODELS[self.model]
        if len(params) != len(expected):
            raise SeglocError(f"camera model {self.model} takes {len(expected)} parameters ({' '.join(expected)}), got {len(params)}")
        if not all(np.isfinite(params)):
            raise SeglocError(f"camera parameters must be finite, got {params}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise SeglocError(f"camera size must be positive, got {self.width}x{self.height}")
        focal = params[:2] if self.model in ("PINHOLE", "OPENCV", "FULL_OPENCV") else params[:1]
        if min(focal) <= 0:
            raise SeglocError(f"focal length must be positive, got {focal}")
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    # --- intrinsics ---------------------------------------------------------------------
    @property
    def focal(self) -> tuple[float, float]:
        """(fx, fy) in pixels."""
        if self.model in ("PINHOLE", "OPENCV", "FULL_OPENCV"):
            return self.params[0], self.params[1]
        return self.params[0], self.params[0]

    @property
    def principal_point(self) -> tuple[float, float]:
        """(cx, cy) in pixels, COLMAP convention."""
        if self.model in ("PINHOLE", "OPENCV", "FULL_OPENCV"):
            return self.params[2], self.params[3]
        return self.params[1], self.params[2]

    @property
    def has_distortion(self) -> bool:
        return any(abs(v) > 0 for v in _distortion_coefficients(self.model, self.params).values())

    def calibration_matrix(self) -> np.ndarray:
        """(3, 3) K in COLMAP's pixel convention."""
        (fx, fy), (cx, cy) = self.focal, self.principal_point
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def opencv_calibration_matrix(self) -> np.ndarray:
        """(3, 3) K in OpenCV's pixel convention (top-left pixel centre at (0, 0))."""
        k = self.calibration_matrix()
        k[0, 2] -= 0.5
        k[1, 2] -= 0.5
        return k

    def opencv_distortion(self) -> np.ndarray:
        """Distortion vector for OpenCV functions (k1, k2, p1, p2[, k3, k4, k5, k6])."""
        d = _distortion_coefficients(self.model, self.params)
        if self.model in ("SIMPLE_PINHOLE", "PINHOLE"):
            return np.zeros(4)
        if self.model == "SIMPLE_RADIAL":
            return np.array([d["k"], 0.0, 0.0, 0.0])
        if self.model == "RADIAL":
            return np.array([d["k1"], d["k2"], 0.0, 0.0])
        if self.model == "OPENCV":
            return np.array([d["k1"], d["k2"], d["p1"], d["p2"]])
        return np.array([d[k] for k in ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")])

    # --- projection ---------------------------------------------------------------------
    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) of camera-frame points (N, 3). Points with z <= 0 give NaN."""
        points_cam = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        z = points_cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(z > 0, points_cam[:, 0] / z, np.nan)
            y = np.where(z > 0, points_cam[:, 1] / z, np.nan)
        return self.normalized_to_pixels(np.stack([x, y], axis=-1))

    def normalized_to_pixels(self, normalized: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) from normalized undistorted coordinates (N, 2), applying distortion."""
        normalized = np.asarray(normalized, dtype=np.float64).reshape(-1, 2)
        xd, yd = distort_normalized(self.model, self.params, normalized[:, 0], normalized[:, 1])
        (fx, fy), (cx, cy) = self.focal, self.principal_point
        return np.stack([fx * xd + cx, fy * yd + cy], axis=-1)

    def pixels_to_normalized(self, points2D: np.ndarray, iterations: int = 50) -> np.ndarray:
        """Normalized undistorted coordinates (N, 2) of pixels (N, 2) (inverts the distortion).

        Uses Newton iterations with a numeric Jacobian, as COLMAP does.
        """
        points2D = np.asarray(points2D, dtype=np.float64).reshape(-1, 2)
        (fx, fy), (cx, cy) = self.focal, self.principal_point
        xd = (points2D[:, 0] - cx) / fx
        yd = (points2D[:, 1] - cy) / fy
        if not self.has_distortion:
            return np.stack([xd, yd], axis=-1)
        x, y = xd.copy(), yd.copy()
        eps = 1e-9
        for _ in range(iterations):
            fx_, fy_ = distort_normalized(self.model, self.params, x, y)
            rx, ry = fx_ - xd, fy_ - yd
            ax, ay = distort_normalized(self.model, self.params, x + eps, y)
            bx, by = distort_normalized(self.model, self.params, x, y + eps)
            j00, j10 = (ax - fx_) / eps, (ay - fy_) / eps
            j01, j11 = (bx - fx_) / eps, (by - fy_) / eps
            det = j00 * j11 - j01 * j10
            det = np.where(np.abs(det) < 1e-15, 1e-15, det)
            dx = (j11 * rx - j01 * ry) / det
            dy = (-j10 * rx + j00 * ry) / det
            x, y = x - dx, y - dy
            if np.max(np.abs(dx) + np.abs(dy), initial=0.0) < 1e-12:
                break
        return np.stack([x, y], axis=-1)

    def unproject(self, points2D: np.ndarray) -> np.ndarray:
        """Unit-norm viewing rays (N, 3) in the camera frame for pixels (N, 2)."""
        xy = self.pixels_to_normalized(points2D)
        rays = np.concatenate([xy, np.ones((len(xy), 1))], axis=-1)
        return rays / np.linalg.norm(rays, axis=-1, keepdims=True)

    def world_to_image(self, cam_from_world: Rigid3, points3D: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project world points (N, 3).

        Returns:
            points2D (N, 2) pixels, depth (N,) along the optical axis, visible (N,) bool: in
            front of the camera and inside the image.
        """
        points_cam = cam_from_world.transform_points(points3D)
        points2D = self.project(points_cam)
        depth = points_cam[:, 2]
        with np.errstate(invalid="ignore"):
            visible = (
                (depth > 0)
                & (points2D[:, 0] >= 0)
                & (points2D[:, 0] <= self.width)
                & (points2D[:, 1] >= 0)
                & (points2D[:, 1] <= self.height)
            )
        return points2D, depth, visible

    # --- derived cameras ----------------------------------------------------------------
    def scaled(self, width: int, height: int) -> Camera:
        """The same camera for the image resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        params = list(self.params)
        names = CAMERA_MODELS[self.model]
        for i, name in enumerate(names):
            if name == "f":
                params[i] *= (sx + sy) / 2
            elif name in ("fx", "cx"):
                params[i] *= sx
            elif name in ("fy", "cy"):
                params[i] *= sy
        return Camera(self.model, width, height, tuple(params))

    def pinhole(self) -> Camera:
        """The distortion-free PINHOLE camera with the same size, focal and principal point."""
        (fx, fy), (cx, cy) = self.focal, self.principal_point
        return Camera("PINHOLE", self.width, self.height, (fx, fy, cx, cy))

    def undistort_image(self, image: np.ndarray, target: Camera | None = None) -> tuple[np.ndarray, Camera]:
        """Resample ``image`` (H, W[, C]) taken by this camera into a pinhole ``target`` camera.

        Returns the undistorted image and the target camera (default: :meth:`pinhole`).
        """
        import cv2

        if image.shape[0] != self.height or image.shape[1] != self.width:
            raise SeglocError(f"image of size {image.shape[1]}x{image.shape[0]} does not match the camera size {self.width}x{self.height}")
        target = target or self.pinhole()
        if not self.has_distortion and target == self.pinhole():
            return image, target
        u, v = np.meshgrid(np.arange(target.width) + 0.5, np.arange(target.height) + 0.5)
        normalized = target.pixels_to_normalized(np.stack([u.ravel(), v.ravel()], axis=-1))
        source = self.normalized_to_pixels(normalized) - 0.5  # to OpenCV's pixel convention
        map_x = source[:, 0].reshape(target.height, target.width).astype(np.float32)
        map_y = source[:, 1].reshape(target.height, target.width).astype(np.float32)
        undistorted = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return undistorted, target

    # --- conversions --------------------------------------------------------------------
    def to_pycolmap(self):
        import pycolmap

        return pycolmap.Camera(model=self.model, width=self.width, height=self.height, params=list(self.params))

    @classmethod
    def from_pycolmap(cls, camera) -> Camera:
        return cls(camera.model.name, camera.width, camera.height, tuple(camera.params))

    def to_dict(self) -> dict:
        return {"model": self.model, "width": self.width, "height": self.height, "params": list(self.params)}

    @classmethod
    def from_dict(cls, values: dict) -> Camera:
        return cls(values["model"], values["width"], values["height"], tuple(values["params"]))
