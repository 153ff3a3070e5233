"""Camera ingest: undistortion into the pinhole camera (cached per camera) and the size limit."""

import threading

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.localize.ingest import CameraIngest, ingest_size

OPENCV = Camera("OPENCV", 320, 240, (260.0, 255.0, 161.0, 119.5, -0.25, 0.08, 0.001, -0.002))


def textured(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image (low frequencies, so that interpolation differences stay small)."""
    import cv2

    coarse = np.random.default_rng(seed).random((height // 8, width // 8, 3)).astype(np.float32)
    return (cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def test_sizes():
    assert ingest_size(640, 480, 320) == (320, 240)
    assert ingest_size(480, 640, 320) == (240, 320)
    assert ingest_size(641, 479, 320) == (320, 239)
    assert ingest_size(200, 100, 320) == (200, 100) and ingest_size(200, 100, None) == (200, 100) and ingest_size(200, 100, 0) == (200, 100)
    with pytest.raises(SeglocError, match="positive"):
        ingest_size(0, 10, 5)


def test_undistortion_matches_the_camera_and_is_cached():
    image = textured(320, 240)
    ingest = CameraIngest()
    undistorted, camera = ingest(image, OPENCV)
    expected, expected_camera = OPENCV.undistort_image(image)
    assert camera == expected_camera == OPENCV.pinhole() and camera.model == "PINHOLE"
    assert undistorted.shape == expected.shape == image.shape and undistorted.dtype == np.uint8
    # Fixed-point remap tables (1/32 px) against the float tables of Camera.undistort_image.
    difference = np.abs(undistorted.astype(int) - expected.astype(int))
    assert difference.max() <= 3 and difference.mean() < 0.5
    assert ingest.num_cached == 1
    again, _ = ingest(image, OPENCV)
    assert np.array_equal(again, undistorted) and ingest.num_cached == 1


def test_undistortion_puts_points_where_the_pinhole_camera_projects_them():
    """A bright dot drawn where the distorted camera sees a 3D point lands where the pinhole camera projects it."""
    point = np.array([[0.6, -0.4, 2.0]])
    seen = OPENCV.project(point)[0]
    image = np.zeros((240, 320), np.uint8)
    ys, xs = np.mgrid[0:240, 0:320] + 0.5
    image[:] = (255 * np.exp(-((xs - seen[0]) ** 2 + (ys - seen[1]) ** 2) / (2 * 2.0**2))).astype(np.uint8)
    undistorted, camera = CameraIngest()(image, OPENCV)
    expected = camera.project(point)[0]
    weights = undistorted.astype(float)
    centroid = np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
    assert np.linalg.norm(centroid - expected) < 0.2, (centroid, expected, seen)


def test_resize_scales_the_camera():
    image = textured(320, 240)
    processed, camera = CameraIngest(max_edge=160)(image, OPENCV)
    assert processed.shape == (120, 160, 3) and (camera.width, camera.height) == (160, 120)
    assert camera == OPENCV.pinhole().scaled(160, 120)
    # Projections scale with the image: a point seen at (u, v) at full size is seen at (u/2, v/2).
    points = np.array([[0.1, 0.2, 3.0], [-1.0, 0.5, 4.0]])
    assert np.allclose(camera.project(points), OPENCV.pinhole().project(points) / 2)
    # A distortion-free camera is not resampled, only shrunk.
    pinhole = Camera("SIMPLE_PINHOLE", 320, 240, (250.0, 160.0, 120.0))
    same, same_camera = CameraIngest(max_edge=400)(image, pinhole)
    assert same is image and same_camera == pinhole.pinhole()
    ingest = CameraIngest(max_edge=200)
    grey, grey_camera = ingest(image[:, :, 0], pinhole)
    assert grey.shape == (150, 200) and grey_camera.model == "PINHOLE" and ingest.num_cached == 0


def test_cache_is_bounded_and_thread_safe():
    ingest = CameraIngest(max_edge=64, max_cameras=2)
    cameras = [Camera("SIMPLE_RADIAL", 96, 64, (80.0, 48.0, 32.0, k)) for k in (0.01, 0.02, 0.03)]
    image = textured(96, 64)
    results = []

    def run(camera):
        results.append(ingest(image, camera)[1])

    threads = [threading.Thread(target=run, args=(camera,)) for camera in cameras * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 9 and ingest.num_cached == 2
    assert {camera.model for camera in results} == {"PINHOLE"}


def test_errors():
    with pytest.raises(SeglocError, match="does not match its camera of 320x240"):
        CameraIngest()(np.zeros((100, 100, 3), np.uint8), OPENCV)
    with pytest.raises(SeglocError, match="max_edge"):
        CameraIngest(max_edge=-1)


def test_the_pinhole_camera_keeps_the_pose_geometry():
    """Undistortion changes the intrinsics only: a 3D point projects consistently before and after."""
    cam_from_world = Rigid3.identity()
    points = np.array([[0.2, 0.1, 2.0], [-0.3, -0.2, 3.0]])
    _, camera = CameraIngest()(np.zeros((240, 320), np.uint8), OPENCV)
    undistorted_rays = camera.unproject(camera.project(cam_from_world.transform_points(points)))
    distorted_rays = OPENCV.unproject(OPENCV.project(points))
    assert np.allclose(undistorted_rays, distorted_rays, atol=1e-9)
