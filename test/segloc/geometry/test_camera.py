import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3

CAMERAS = [
    Camera("SIMPLE_PINHOLE", 640, 480, (500, 320, 240)),
    Camera("PINHOLE", 640, 480, (500, 510, 320, 240)),
    Camera("SIMPLE_RADIAL", 640, 480, (500, 320, 240, 0.05)),
    Camera("RADIAL", 640, 480, (500, 320, 240, 0.05, -0.01)),
    Camera("OPENCV", 640, 480, (500, 510, 320, 240, 0.05, -0.02, 0.001, -0.002)),
    Camera("FULL_OPENCV", 640, 480, (500, 510, 320, 240, 0.05, -0.02, 0.001, -0.002, 0.01, 0.02, 0.01, 0.005)),
]


@pytest.fixture
def points_cam():
    rng = np.random.default_rng(0)
    return rng.uniform(-0.6, 0.6, size=(200, 3)) * [1, 0.8, 0] + [0, 0, 2.0]


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: c.model)
def test_projection_matches_pycolmap(camera, points_cam):
    ours = camera.project(points_cam)
    theirs = camera.to_pycolmap().img_from_cam(points_cam)
    assert np.allclose(ours, theirs, atol=1e-9)


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: c.model)
def test_unproject_inverts_project(camera, points_cam):
    rays = camera.unproject(camera.project(points_cam))
    expected = points_cam / np.linalg.norm(points_cam, axis=1, keepdims=True)
    assert np.allclose(rays, expected, atol=1e-9)


def test_points_behind_the_camera_are_not_visible():
    camera = CAMERAS[1]
    points2D, depth, visible = camera.world_to_image(Rigid3.identity(), np.array([[0, 0, 2.0], [0, 0, -2.0], [100, 0, 1.0]]))
    assert visible.tolist() == [True, False, False]
    assert np.allclose(points2D[0], [320, 240])
    assert depth[1] == -2.0


def test_scaled_camera_matches_resized_pixels(points_cam):
    camera = CAMERAS[4]
    half = camera.scaled(320, 240)
    assert np.allclose(half.project(points_cam), camera.project(points_cam) / 2)


def test_undistort_image_moves_a_point_to_its_pinhole_position():
    camera = Camera("OPENCV", 200, 150, (120, 120, 100, 75, -0.3, 0.08, 0.0, 0.0))
    point_cam = np.array([[0.55, 0.4, 1.0]])
    u, v = camera.project(point_cam)[0]
    image = np.zeros((150, 200), np.uint8)
    image[int(v) - 1 : int(v) + 2, int(u) - 1 : int(u) + 2] = 255
    undistorted, pinhole = camera.undistort_image(image)
    expected = pinhole.project(point_cam)[0]
    ys, xs = np.nonzero(undistorted > 60)
    assert abs(xs.mean() + 0.5 - expected[0]) < 1.0 and abs(ys.mean() + 0.5 - expected[1]) < 1.0


def test_opencv_calibration_shifts_half_a_pixel():
    k = CAMERAS[1].opencv_calibration_matrix()
    assert k[0, 2] == 319.5 and k[1, 2] == 239.5


@pytest.mark.parametrize(
    "args, message",
    [
        (("FISHEYE_X", 10, 10, (1, 2, 3)), "unknown camera model"),
        (("PINHOLE", 10, 10, (1, 2, 3)), "takes 4 parameters"),
        (("PINHOLE", 0, 10, (1, 1, 2, 3)), "size must be positive"),
        (("PINHOLE", 10, 10, (1, np.inf, 2, 3)), "finite"),
        (("SIMPLE_PINHOLE", 10, 10, (-5, 2, 3)), "focal length"),
    ],
)
def test_bad_cameras(args, message):
    with pytest.raises(SeglocError, match=message):
        Camera(*args)
