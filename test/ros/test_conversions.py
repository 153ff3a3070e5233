"""segloc_ros.conversions against the real rclpy message classes.

Needs rclpy (skipped elsewhere by conftest.py); run with ``.venv-ros/bin/python -m pytest
test/ros/test_conversions.py``. rclpy and the message packages are imported inside the tests
and fixtures only, so that collecting this file never fails without ROS.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3


@pytest.fixture
def conversions() -> ModuleType:
    # Function scope: the autouse rclpy check of conftest.py runs first and skips without ROS.
    return importlib.import_module("segloc_ros.conversions")


def random_pose(rng: np.random.Generator) -> Rigid3:
    return Rigid3(rng.normal(size=4), rng.normal(size=3) * 10)


def wire_round_trip(msg):
    """Serialize and deserialize with rclpy (CDR), as a publisher and subscriber would."""
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


def assert_same_pose(a: Rigid3, b: Rigid3) -> None:
    assert np.allclose(a.quat_wxyz, b.quat_wxyz, rtol=0, atol=1e-12), (a, b)
    assert np.allclose(a.translation, b.translation, rtol=0, atol=1e-12), (a, b)


# --- time -----------------------------------------------------------------------------------
@pytest.mark.parametrize("stamp_ns", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, (2**31 - 1) * 10**9 + 999_999_999])
def test_time_round_trip(conversions, stamp_ns):
    msg = conversions.time_msg_from_ns(stamp_ns)
    assert 0 <= msg.nanosec < 10**9
    assert conversions.stamp_to_ns(msg) == stamp_ns
    assert conversions.stamp_to_ns(wire_round_trip(msg)) == stamp_ns
    assert conversions.ns_from_stamp(msg) == stamp_ns
    assert conversions.ns_from_stamp(stamp_ns) == stamp_ns


def test_stamps_from_rclpy_time_and_errors(conversions):
    from rclpy.time import Time

    assert conversions.ns_from_stamp(Time(nanoseconds=1_700_000_000_000_000_042)) == 1_700_000_000_000_000_042
    assert conversions.ns_from_stamp(np.int64(5)) == 5
    header = conversions.header_msg(Time(seconds=12, nanoseconds=34), "map")
    assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (12, 34, "map")
    with pytest.raises(SeglocError, match="outside the range"):
        conversions.time_msg_from_ns(-1)
    with pytest.raises(SeglocError, match="outside the range"):
        conversions.time_msg_from_ns(2**31 * 10**9)
    with pytest.raises(SeglocError, match="a stamp must be"):
        conversions.ns_from_stamp(1.5)


# --- poses and transforms -------------------------------------------------------------------
def test_pose_and_transform_round_trips(conversions):
    rng = np.random.default_rng(0)
    for _ in range(50):
        pose = random_pose(rng)
        pose_msg = conversions.pose_msg_from_rigid(pose)
        assert_same_pose(conversions.rigid_from_pose_msg(pose_msg), pose)
        assert_same_pose(conversions.rigid_from_pose_msg(wire_round_trip(pose_msg)), pose)
        transform_msg = conversions.transform_msg_from_rigid(pose)
        assert_same_pose(conversions.rigid_from_transform_msg(wire_round_trip(transform_msg)), pose)


def test_quaternion_fields_are_named_not_ordered(conversions):
    # 90 degrees about z: w = z = sqrt(1/2).
    pose = Rigid3([np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)], [1.0, 2.0, 3.0])
    msg = conversions.pose_msg_from_rigid(pose)
    assert msg.orientation.w == pytest.approx(np.cos(np.pi / 4), abs=1e-15)
    assert msg.orientation.z == pytest.approx(np.sin(np.pi / 4), abs=1e-15)
    assert (msg.orientation.x, msg.orientation.y) == (0.0, 0.0)
    assert (msg.position.x, msg.position.y, msg.position.z) == (1.0, 2.0, 3.0)


def test_transform_stamped_and_tf_message(conversions):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    rng = np.random.default_rng(1)
    map_from_odom, odom_from_base = random_pose(rng), random_pose(rng)
    stamp = 1_700_000_000_250_000_000
    edges = [
        conversions.transform_stamped_msg(map_from_odom, stamp, "map", "odom"),
        conversions.transform_stamped_msg(odom_from_base, stamp, "odom", "base_link"),
    ]
    tf = wire_round_trip(conversions.tf_message(edges))
    assert isinstance(tf, TFMessage) and len(tf.transforms) == 2
    first, second = tf.transforms
    assert isinstance(first, TransformStamped)
    assert (first.header.frame_id, first.child_frame_id) == ("map", "odom")
    assert (second.header.frame_id, second.child_frame_id) == ("odom", "base_link")
    assert conversions.stamp_to_ns(first.header.stamp) == stamp
    assert_same_pose(conversions.rigid_from_transform_stamped_msg(first), map_from_odom)
    assert_same_pose(conversions.rigid_from_transform_stamped_msg(second), odom_from_base)
    with pytest.raises(SeglocError, match="two different"):
        conversions.transform_stamped_msg(map_from_odom, stamp, "map", "map")
    with pytest.raises(SeglocError, match="TransformStamped"):
        conversions.tf_message([conversions.transform_msg_from_rigid(map_from_odom)])


def test_pose_array(conversions):
    rng = np.random.default_rng(2)
    poses = [random_pose(rng) for _ in range(4)]
    msg = wire_round_trip(conversions.pose_array_msg(poses, 42, "map"))
    assert msg.header.frame_id == "map" and conversions.stamp_to_ns(msg.header.stamp) == 42
    assert len(msg.poses) == 4
    for pose, pose_msg in zip(poses, msg.poses):
        assert_same_pose(conversions.rigid_from_pose_msg(pose_msg), pose)
    assert conversions.pose_array_msg([], 0, "map").poses == []


def test_pose_with_covariance_layout(conversions):
    from geometry_msgs.msg import PoseWithCovarianceStamped

    rng = np.random.default_rng(3)
    world_from_base = random_pose(rng)
    # Symmetric, with a distinct value per unordered pair: covariance[i, j] = 100 + 10 min(i, j) + max(i, j).
    index = np.arange(6)
    covariance = 100.0 + 10.0 * np.minimum(index[:, None], index[None, :]) + np.maximum(index[:, None], index[None, :])
    covariance[index, index] = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]  # x y z rotX rotY rotZ
    msg = conversions.pose_with_covariance_stamped_msg(world_from_base, covariance, 7 * 10**9 + 5, "map")
    assert isinstance(msg, PoseWithCovarianceStamped)
    msg = wire_round_trip(msg)
    assert msg.header.frame_id == "map" and conversions.stamp_to_ns(msg.header.stamp) == 7 * 10**9 + 5
    flat = np.asarray(msg.pose.covariance)
    assert flat.shape == (36,) and flat.dtype == np.float64
    for i in range(6):
        for j in range(6):
            assert flat[6 * i + j] == covariance[i, j]  # row-major
    assert flat[5] == 105.0 and flat[30] == 105.0 and flat[11] == 115.0  # (x, rotZ), (rotZ, x), (y, rotZ)
    assert flat[0] == 0.01 and flat[7] == 0.02 and flat[14] == 0.03  # x, y, z variances
    assert flat[21] == 0.04 and flat[28] == 0.05 and flat[35] == 0.06  # rotX, rotY, rotZ (yaw) variances
    pose, covariance_back = conversions.pose_and_covariance_from_msg(msg)
    assert_same_pose(pose, world_from_base)
    assert np.array_equal(covariance_back, covariance)
    pose_inner, covariance_inner = conversions.pose_and_covariance_from_msg(msg.pose)
    assert_same_pose(pose_inner, world_from_base) and np.array_equal(covariance_inner, covariance)
    # A ROS-layout (36,) input is accepted; bad covariances are rejected with the reason.
    again = conversions.pose_with_covariance_stamped_msg(world_from_base, flat, 0, "map")
    assert np.array_equal(np.asarray(again.pose.covariance), flat)
    asymmetric = covariance.copy()
    asymmetric[0, 5] += 1.0
    with pytest.raises(SeglocError, match="not symmetric"):
        conversions.pose_with_covariance_stamped_msg(world_from_base, asymmetric, 0, "map")
    with pytest.raises(SeglocError, match="6x6"):
        conversions.pose_with_covariance_stamped_msg(world_from_base, np.eye(3), 0, "map")


# --- cameras --------------------------------------------------------------------------------
def test_camera_info_pixel_convention_shift(conversions):
    from sensor_msgs.msg import CameraInfo

    camera = Camera("PINHOLE", 640, 480, (500.0, 505.0, 320.5, 240.5))
    msg = wire_round_trip(conversions.camera_info_msg_from_camera(camera, 3, "camera_optical_frame"))
    assert isinstance(msg, CameraInfo)
    assert msg.header.frame_id == "camera_optical_frame" and (msg.width, msg.height) == (640, 480)
    assert (msg.k[0], msg.k[2], msg.k[4], msg.k[5]) == (500.0, 320.0, 505.0, 240.0)  # OpenCV convention: -0.5 px
    assert (msg.p[2], msg.p[6]) == (320.0, 240.0)
    assert np.array_equal(np.asarray(msg.r).reshape(3, 3), np.eye(3))
    assert conversions.camera_from_camera_info(msg) == camera
    # A camera driver's CameraInfo with the principal point in OpenCV's convention.
    driver = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    driver.k = np.array([600.0, 0.0, 319.5, 0.0, 600.0, 239.5, 0.0, 0.0, 1.0])
    driver.d = [0.0, 0.0, 0.0, 0.0, 0.0]
    from_driver = conversions.camera_from_camera_info(driver)
    assert from_driver.model == "PINHOLE" and from_driver.principal_point == (320.0, 240.0)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("OPENCV", (500.0, 505.0, 320.25, 240.75, 0.05, -0.01, 0.001, 0.0005)),
        ("FULL_OPENCV", (500.0, 505.0, 320.25, 240.75, 0.05, -0.01, 0.001, 0.0005, 0.002, 0.01, -0.003, 0.0001)),
    ],
)
def test_camera_info_round_trip_with_distortion(conversions, model, params):
    camera = Camera(model, 800, 600, params)
    msg = wire_round_trip(conversions.camera_info_msg_from_camera(camera, 0, "cam"))
    assert msg.distortion_model == ("plumb_bob" if model == "OPENCV" else "rational_polynomial")
    back = conversions.camera_from_camera_info(msg)
    assert back.model == model and (back.width, back.height) == (800, 600)
    assert np.allclose(back.params, params, rtol=0, atol=1e-12)


# --- images ---------------------------------------------------------------------------------
def test_image_encodings_round_trip(conversions):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)

    rgb_msg = wire_round_trip(conversions.image_msg_from_array(rgb, 11, "cam"))
    assert (rgb_msg.encoding, rgb_msg.width, rgb_msg.height, rgb_msg.step, rgb_msg.is_bigendian) == ("rgb8", 7, 5, 21, 0)
    assert bytes(rgb_msg.data[:3]) == bytes(rgb[0, 0])
    assert np.array_equal(conversions.rgb_from_image_msg(rgb_msg), rgb)

    bgr_msg = wire_round_trip(conversions.image_msg_from_array(rgb, 11, "cam", encoding="bgr8"))
    assert bgr_msg.encoding == "bgr8"
    assert bytes(bgr_msg.data[:3]) == bytes(rgb[0, 0, ::-1])  # blue byte first on the wire
    assert np.array_equal(conversions.rgb_from_image_msg(bgr_msg), rgb)

    mono_msg = wire_round_trip(conversions.image_msg_from_array(grey, 11, "cam"))
    assert (mono_msg.encoding, mono_msg.step) == ("mono8", 7)
    assert np.array_equal(conversions.rgb_from_image_msg(mono_msg), np.repeat(grey[:, :, None], 3, axis=2))

    labels = rng.integers(0, 1000, size=(5, 7), dtype=np.uint16)
    label_msg = wire_round_trip(conversions.image_msg_from_array(labels, 11, "cam"))
    assert (label_msg.encoding, label_msg.step) == ("mono16", 14)
    assert np.array_equal(np.frombuffer(bytes(label_msg.data), dtype="<u2").reshape(5, 7), labels)


def test_image_with_padded_rows_and_compressed_image(conversions):
    import cv2
    from sensor_msgs.msg import CompressedImage, Image

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    padded = np.zeros((4, 24), dtype=np.uint8)  # step 24 > 18 bytes of pixels per row
    padded[:, :18] = rgb.reshape(4, 18)
    msg = Image(height=4, width=6, encoding="rgb8", is_bigendian=0, step=24, data=padded.tobytes())
    assert np.array_equal(conversions.rgb_from_image_msg(msg), rgb)

    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    compressed = CompressedImage(format="rgb8; png compressed bgr8", data=png.tobytes())
    assert np.array_equal(conversions.rgb_from_image_msg(wire_round_trip(compressed)), rgb)


def test_image_errors(conversions):
    from sensor_msgs.msg import Image

    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    with pytest.raises(SeglocError, match="needs 1 channel"):
        conversions.image_msg_from_array(rgb, 0, "cam", encoding="mono8")
    with pytest.raises(SeglocError, match="cannot be written"):
        conversions.image_msg_from_array(rgb, 0, "cam", encoding="yuv422")
    with pytest.raises(SeglocError, match="cannot pick an image encoding"):
        conversions.image_msg_from_array(rgb.astype(np.float32), 0, "cam")
    with pytest.raises(SeglocError, match="not supported"):
        conversions.rgb_from_image_msg(Image(height=2, width=3, encoding="yuv422", step=6, data=bytes(12)))
    with pytest.raises(SeglocError, match="expected step"):
        conversions.rgb_from_image_msg(Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(10)))


# --- diagnostics ----------------------------------------------------------------------------
def test_diagnostic_status_and_array(conversions):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    timings = {"extract_s": 0.0123456789, "pose_s": 0.004, "num_inliers": 57, "confident": True}
    status = conversions.diagnostic_status_msg("warn", "segloc: localization", "too few inliers", timings, hardware_id="cam0")
    assert status.level == DiagnosticStatus.WARN
    assert (status.name, status.message, status.hardware_id) == ("segloc: localization", "too few inliers", "cam0")
    assert [(kv.key, kv.value) for kv in status.values] == [
        ("extract_s", "0.0123457"),
        ("pose_s", "0.004"),
        ("num_inliers", "57"),
        ("confident", "true"),
    ]
    assert conversions.diagnostic_status_msg(DiagnosticStatus.ERROR, "n", "m").level == DiagnosticStatus.ERROR
    assert conversions.diagnostic_status_msg(0, "n", "m").values == []
    for name, level in (("OK", DiagnosticStatus.OK), ("error", DiagnosticStatus.ERROR), ("stale", DiagnosticStatus.STALE)):
        assert conversions.diagnostic_level(name) == level
    with pytest.raises(SeglocError, match="diagnostic level"):
        conversions.diagnostic_level("fatal")
    with pytest.raises(SeglocError, match="diagnostic level"):
        conversions.diagnostic_level(4)
    array_msg = wire_round_trip(conversions.diagnostic_array_msg([status], 99))
    assert isinstance(array_msg, DiagnosticArray) and conversions.stamp_to_ns(array_msg.header.stamp) == 99
    assert array_msg.status[0].values[0].value == "0.0123457"
