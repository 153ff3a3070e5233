"""Bags: write frames with known poses, read them back (rosbag2 sqlite3 / mcap, ROS 1), bad inputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from segloc.data.dataset import read_dataset
from segloc.data.rosbag import (
    BagFrame,
    BagReadConfig,
    BagReadStats,
    BagWriteConfig,
    _MessageFactory,
    bag_to_dataset,
    camera_from_camera_info,
    camera_info_values,
    image_from_msg,
    read_bag,
    seconds_to_ns,
    write_bag,
)
from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3, axis_angle_to_matrix, interpolate_rigid

CAMERA = Camera("OPENCV", 64, 48, (50.0, 52.0, 32.0, 24.0, 0.01, -0.002, 0.001, 0.0005))
# camera optical axes in the base frame: z forward = base x, x right = base -y, y down = base -z
BASE_FROM_CAM = Rigid3.from_rotation(np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]), [0.2, 0.0, 0.5])
# constant odometry drift: odom_from_world
DRIFT = Rigid3.from_rotation(axis_angle_to_matrix([0, 0, 0.05]), [0.3, -0.1, 0.0])
T0 = 1_000_000.0  # float seconds resolve 0.1 ns here (at epoch scale, 0.24 us)
AXIS = np.array([0.2, -0.1, 1.0]) / np.linalg.norm([0.2, -0.1, 1.0])


def world_from_base(t: float) -> Rigid3:
    """A trajectory that slerp + linear interpolation reproduces exactly (fixed rotation axis, constant rates)."""
    s = t - T0
    return Rigid3.from_rotation(axis_angle_to_matrix(AXIS * 0.4 * s), [0.5 * s, 0.2 * s, 0.1 + 0.05 * s])


def cam_from_world(t: float) -> Rigid3:
    return (world_from_base(t) * BASE_FROM_CAM).inverse()


def smooth_image(i: int) -> np.ndarray:
    y, x = np.mgrid[0:48, 0:64]
    channels = [128 + 90 * np.sin(x / 9 + i + c) * np.cos(y / 7 - c) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def camera_frames(n: int = 10, rate: float = 10.0, start: float = T0, poses: bool = True) -> list[BagFrame]:
    frames = []
    for i in range(n):
        t = start + i / rate
        wfb = world_from_base(t) if poses else None
        frames.append(BagFrame(t, smooth_image(i), CAMERA, wfb, DRIFT * wfb if poses else None))
    return frames


def pose_frames(times: list[float]) -> list[BagFrame]:
    return [BagFrame(t, None, None, world_from_base(t), DRIFT * world_from_base(t)) for t in times]


def assert_pose_close(actual: Rigid3, expected: Rigid3, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(actual.matrix(), expected.matrix(), atol=atol)


def bag_path(tmp_path: Path, ros_version: int) -> Path:
    return tmp_path / ("recording.bag" if ros_version == 1 else "recording")


@pytest.mark.parametrize(
    ("ros_version", "storage", "compression"),
    [(2, "sqlite3", "none"), (2, "mcap", "none"), (2, "sqlite3", "jpeg"), (2, "mcap", "png"), (1, "sqlite3", "none")],
)
def test_round_trip(tmp_path: Path, ros_version: int, storage: str, compression: str) -> None:
    frames = camera_frames()
    config = BagWriteConfig(storage=storage, ros_version=ros_version, compression=compression)
    path = write_bag(bag_path(tmp_path, ros_version), frames, BASE_FROM_CAM, config)
    read_config = BagReadConfig(pose_source="topic", pose_topic="/ground_truth/pose")
    stats = BagReadStats()
    results = list(read_bag(path, read_config, stats))
    assert len(results) == len(frames) == stats.records == stats.image_messages
    for (record, image), frame in zip(results, frames):
        assert record.name == f"{seconds_to_ns(frame.timestamp)}.png"
        assert record.timestamp == pytest.approx(frame.timestamp, abs=1e-9)
        assert_pose_close(record.cam_from_world, cam_from_world(frame.timestamp))
        assert record.camera == CAMERA
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        if compression == "jpeg":
            assert np.abs(image.astype(int) - frame.image).mean() < 3
        else:
            np.testing.assert_array_equal(image, frame.image)


@pytest.mark.parametrize("ros_version", [2, 1])
def test_poses_from_tf_and_odometry(tmp_path: Path, ros_version: int) -> None:
    frames = camera_frames(6)
    config = BagWriteConfig(ground_truth_tf=True, ros_version=ros_version)
    path = write_bag(bag_path(tmp_path, ros_version), frames, BASE_FROM_CAM, config)
    # map -> odom (from ground truth) -> base_link (odometry) -> camera_optical_frame (static)
    for (record, _), frame in zip(read_bag(path, BagReadConfig(pose_source="tf")), frames, strict=True):
        assert_pose_close(record.cam_from_world, cam_from_world(frame.timestamp))
    # the odometry topic as the pose source: odom_from_base * base_from_cam, with the drift
    odom = BagReadConfig(pose_source="topic", pose_topic="/odom", world_frame="odom")
    for (record, _), frame in zip(read_bag(path, odom), frames, strict=True):
        assert_pose_close(record.cam_from_world, (DRIFT * world_from_base(frame.timestamp) * BASE_FROM_CAM).inverse())


@pytest.mark.parametrize("pose_source", ["tf", "topic"])
def test_interpolation_at_a_different_rate(tmp_path: Path, pose_source: str) -> None:
    """Poses at 30 Hz offset by 13 ms, images at 10 Hz: poses are interpolated at the image stamps."""
    images = camera_frames(12, rate=10.0, start=T0 - 0.05, poses=False)  # first image before the first pose
    pose_times = [T0 + 0.013 + k / 30 for k in range(31)]  # up to ~T0 + 1.013: the last image (T0 + 1.05) is after it
    pose_times = [t for t in pose_times if not T0 + 0.55 < t < T0 + 0.75]  # a 0.2 s hole: the image at T0 + 0.65 is rejected
    frames = sorted(images + pose_frames(pose_times), key=lambda f: f.timestamp)
    path = write_bag(tmp_path / "bag", frames, BASE_FROM_CAM, BagWriteConfig(ground_truth_tf=True, storage="mcap"))

    config = BagReadConfig(pose_source=pose_source, pose_topic="/ground_truth/pose", max_time_offset=0.05)
    stats = BagReadStats()
    results = list(read_bag(path, config, stats))
    expected_times = [f.timestamp for f in images if T0 + 0.013 <= f.timestamp <= pose_times[-1] and abs(f.timestamp - T0 - 0.65) > 0.01]
    assert [r.timestamp for r, _ in results] == pytest.approx(expected_times, abs=1e-9)
    assert stats.rejected_outside_pose_range == 2 and stats.rejected_pose_gap == 1
    pose_stamps = [seconds_to_ns(t) for t in pose_times]
    for record, _ in results:
        stamp = int(record.name.removesuffix(".png"))
        k = int(np.searchsorted(pose_stamps, stamp)) - 1  # the samples on either side of the image
        alpha = (stamp - pose_stamps[k]) / (pose_stamps[k + 1] - pose_stamps[k])
        assert 0 < alpha < 1
        interpolated = interpolate_rigid(world_from_base(pose_times[k]), world_from_base(pose_times[k + 1]), alpha)
        assert_pose_close(record.cam_from_world, (interpolated * BASE_FROM_CAM).inverse(), atol=1e-9)
        # the trajectory turns about a fixed axis at a constant rate: interpolation recovers it
        assert_pose_close(record.cam_from_world, cam_from_world(record.timestamp), atol=1e-7)


def test_camera_info_conventions(tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    path = write_bag(tmp_path / "bag", camera_frames(2), BASE_FROM_CAM)
    with AnyReader([path]) as reader:
        connection = next(c for c in reader.connections if c.topic == "/camera/camera_info")
        _, _, raw = next(reader.messages(connections=[connection]))
        info = reader.deserialize(raw, connection.msgtype)
    # ROS puts the top-left pixel centre at (0, 0): cx, cy are 0.5 px smaller than COLMAP's
    np.testing.assert_allclose(info.k, [50, 0, 31.5, 0, 52, 23.5, 0, 0, 1])
    np.testing.assert_allclose(info.p, [50, 0, 31.5, 0, 0, 52, 23.5, 0, 0, 0, 1, 0])
    assert info.distortion_model == "plumb_bob"
    np.testing.assert_allclose(info.d, [0.01, -0.002, 0.001, 0.0005, 0.0])
    assert camera_from_camera_info(info) == CAMERA


@pytest.mark.parametrize(
    ("camera", "expected"),
    [
        (Camera("SIMPLE_PINHOLE", 64, 48, (50, 32, 24)), Camera("PINHOLE", 64, 48, (50, 50, 32, 24))),
        (Camera("SIMPLE_RADIAL", 64, 48, (50, 32, 24, 0.1)), Camera("OPENCV", 64, 48, (50, 50, 32, 24, 0.1, 0, 0, 0))),
        (Camera("RADIAL", 64, 48, (50, 32, 24, 0.1, 0.01)), Camera("OPENCV", 64, 48, (50, 50, 32, 24, 0.1, 0.01, 0, 0))),
        (Camera("FULL_OPENCV", 64, 48, (50, 51, 32, 24, 0.1, 0.01, 0.001, 0.002, 0.003, 0, 0, 0)), None),
        (Camera("FULL_OPENCV", 64, 48, (50, 51, 32, 24, 0.1, 0.01, 0.001, 0.002, 0.003, 0.1, 0.02, 0.003)), None),
    ],
)
def test_camera_info_models(camera: Camera, expected: Camera | None) -> None:
    values = camera_info_values(camera)
    info = SimpleNamespace(**values)
    rational = camera.model == "FULL_OPENCV" and camera.params[-1] != 0
    assert values["distortion_model"] == ("rational_polynomial" if rational else "plumb_bob")
    assert camera_from_camera_info(info) == (expected or camera)


def test_camera_info_unsupported_model() -> None:
    info = SimpleNamespace(**{**camera_info_values(CAMERA), "distortion_model": "equidistant"})
    with pytest.raises(SeglocError, match="'equidistant' is not supported"):
        camera_from_camera_info(info)


def raw_image_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> SimpleNamespace:
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1).view(np.uint8)
    data = np.concatenate([row, np.zeros((height, pad), np.uint8)], axis=1)
    return SimpleNamespace(
        height=height, width=width, encoding=encoding, is_bigendian=int(bigendian), step=data.shape[1], data=data.reshape(-1)
    )


def test_image_encodings() -> None:
    rgb = smooth_image(0)[:5, :7]
    np.testing.assert_array_equal(image_from_msg(raw_image_msg(rgb, "rgb8", pad=3)), rgb)
    np.testing.assert_array_equal(image_from_msg(raw_image_msg(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8")), rgb)
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    np.testing.assert_array_equal(image_from_msg(raw_image_msg(np.concatenate([rgb, alpha], axis=2), "rgba8")), rgb)
    bgra = np.ascontiguousarray(np.concatenate([rgb[:, :, ::-1], alpha], axis=2))
    np.testing.assert_array_equal(image_from_msg(raw_image_msg(bgra, "bgra8")), rgb)
    grey = rgb[:, :, 0].copy()
    np.testing.assert_array_equal(image_from_msg(raw_image_msg(grey, "mono8", pad=1)), np.repeat(grey[:, :, None], 3, axis=2))
    grey16 = grey.astype(np.uint16) * 257
    for bigendian in (False, True):
        pixels = grey16.astype(">u2" if bigendian else "<u2")
        decoded = image_from_msg(raw_image_msg(pixels, "mono16", bigendian=bigendian))
        np.testing.assert_array_equal(decoded[:, :, 0], grey)
    with pytest.raises(SeglocError, match="image encoding 'bayer_rggb8' is not supported; supported encodings: rgb8"):
        image_from_msg(raw_image_msg(grey, "bayer_rggb8"))
    with pytest.raises(SeglocError, match="expected step >= 21"):
        image_from_msg(SimpleNamespace(height=5, width=7, encoding="rgb8", is_bigendian=0, step=7, data=np.zeros(35, np.uint8)))


def test_every_nth_and_time_window(tmp_path: Path) -> None:
    frames = camera_frames(10)
    path = write_bag(tmp_path / "bag", frames, BASE_FROM_CAM)
    config = BagReadConfig(pose_source="topic", pose_topic="/ground_truth/pose", every_nth=3, image_name="frame_{index:06d}.png")
    records = [r for r, _ in read_bag(path, config)]
    assert [r.name for r in records] == ["frame_000000.png", "frame_000001.png", "frame_000002.png", "frame_000003.png"]
    assert [r.timestamp for r in records] == pytest.approx([frames[i].timestamp for i in (0, 3, 6, 9)])
    window = BagReadConfig(pose_source="topic", pose_topic="/ground_truth/pose", start_offset=0.25, end_offset=0.6)
    assert [r.timestamp for r, _ in read_bag(path, window)] == pytest.approx([frames[i].timestamp for i in (3, 4, 5, 6)])


def test_extrinsics_from_config(tmp_path: Path) -> None:
    path = write_bag(tmp_path / "bag", camera_frames(3), BASE_FROM_CAM, BagWriteConfig(tf_static_topic=None))
    config = BagReadConfig(pose_source="topic", pose_topic="/ground_truth/pose")
    with pytest.raises(SeglocError, match="frame 'camera_optical_frame' is not in the TF data.*set base_from_cam"):
        list(read_bag(path, config))
    extrinsics = (*BASE_FROM_CAM.quat_wxyz, *BASE_FROM_CAM.translation)
    config = BagReadConfig(pose_source="topic", pose_topic="/ground_truth/pose", base_from_cam=extrinsics)
    for record, _ in read_bag(path, config):
        assert_pose_close(record.cam_from_world, cam_from_world(record.timestamp))


def write_custom_bag(path: Path, messages: list[tuple[str, str, int, object]]) -> Path:
    """A rosbag2 with arbitrary messages, built with rosbags directly."""
    from rosbags.rosbag2 import Writer

    factory = _MessageFactory(2)
    with Writer(path, version=9) as writer:
        connections = {}
        for topic, msgtype, stamp, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=factory.store)
            writer.write(connections[topic], stamp, factory.serialize(msg, msgtype))
    return path


@pytest.mark.parametrize("msgtype", ["geometry_msgs/msg/PoseWithCovarianceStamped", "geometry_msgs/msg/TransformStamped"])
def test_camera_pose_topic_types(tmp_path: Path, msgtype: str) -> None:
    factory = _MessageFactory(2)
    messages = []
    for frame in camera_frames(4):
        stamp = seconds_to_ns(frame.timestamp)
        world_from_cam = cam_from_world(frame.timestamp).inverse()
        messages.append(("/camera/image_raw", "sensor_msgs/msg/Image", stamp, factory.image(stamp, "cam", frame.image)))
        messages.append(("/camera/camera_info", "sensor_msgs/msg/CameraInfo", stamp, factory.camera_info(stamp, "cam", CAMERA)))
        if msgtype == "geometry_msgs/msg/TransformStamped":
            pose_msg = factory.transform_stamped(stamp, "map", "cam", world_from_cam)
        else:
            pose = factory.types["geometry_msgs/msg/PoseWithCovariance"](pose=factory.pose(world_from_cam), covariance=np.zeros(36))
            pose_msg = factory.types[msgtype](header=factory.header(stamp, "map"), pose=pose)
        messages.append(("/camera/pose", msgtype, stamp, pose_msg))
    path = write_custom_bag(tmp_path / "bag", messages)
    config = BagReadConfig(pose_source="topic", pose_topic_frame="camera")  # the single pose topic is found
    records = [r for r, _ in read_bag(path, config)]
    assert len(records) == 4
    for record in records:
        assert_pose_close(record.cam_from_world, cam_from_world(record.timestamp))


def test_bag_to_dataset(tmp_path: Path) -> None:
    frames = camera_frames(7)
    path = write_bag(tmp_path / "bag", frames, BASE_FROM_CAM)
    config = BagReadConfig(pose_source="topic", pose_topic="/ground_truth/pose")
    out = bag_to_dataset(path, tmp_path / "dataset", config, query_every=3)
    dataset = read_dataset(out)
    assert [r.name for r in dataset.query] == [f"{seconds_to_ns(frames[i].timestamp)}.png" for i in (2, 5)]
    assert len(dataset.mapping) == 5
    for record in dataset.mapping + dataset.query:
        t = int(record.name.removesuffix(".png")) / 1e9
        assert_pose_close(record.cam_from_world, cam_from_world(t))
        assert record.camera == CAMERA
    np.testing.assert_array_equal(dataset.load_image(dataset.mapping[0].name), frames[0].image)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind

    later = write_bag(tmp_path / "later", camera_frames(2, start=T0 + 5), BASE_FROM_CAM)
    out = bag_to_dataset(path, tmp_path / "dataset", config, query_bag=later, overwrite=True)
    dataset = read_dataset(out)
    assert len(dataset.mapping) == 7 and len(dataset.query) == 2
    assert all(r.name.startswith("mapping/") for r in dataset.mapping) and all(r.name.startswith("query/") for r in dataset.query)


# --- bad inputs --------------------------------------------------------------------------------
def test_missing_camera_info(tmp_path: Path) -> None:
    path = write_bag(tmp_path / "bag", camera_frames(2), BASE_FROM_CAM, BagWriteConfig(camera_info_topic=None))
    with pytest.raises(SeglocError, match=r"no sensor_msgs/CameraInfo topic.*topics: /camera/image_raw \(sensor_msgs/msg/Image\)"):
        next(read_bag(path))
    with pytest.raises(SeglocError, match="no CameraInfo topic /cam/info; set camera_info_topic to one of: none"):
        next(read_bag(path, BagReadConfig(camera_info_topic="/cam/info")))


def test_unknown_encoding(tmp_path: Path) -> None:
    factory = _MessageFactory(2)
    stamp = seconds_to_ns(T0)
    image = factory.image(stamp, "camera_optical_frame", smooth_image(0))
    image.encoding = "yuv422"
    frame = camera_frames(1)[0]
    tf = factory.tf([factory.transform_stamped(stamp, "map", "camera_optical_frame", cam_from_world(T0).inverse())])
    path = write_custom_bag(
        tmp_path / "bag",
        [
            ("/tf", "tf2_msgs/msg/TFMessage", stamp, tf),
            ("/image", "sensor_msgs/msg/Image", stamp, image),
            ("/camera_info", "sensor_msgs/msg/CameraInfo", stamp, factory.camera_info(stamp, "camera_optical_frame", frame.camera)),
        ],
    )
    with pytest.raises(SeglocError, match="image encoding 'yuv422' is not supported"):
        list(read_bag(path))


def test_no_image_topic(tmp_path: Path) -> None:
    factory = _MessageFactory(2)
    tf = factory.tf([factory.transform_stamped(0, "map", "base_link", Rigid3.identity())])
    path = write_custom_bag(tmp_path / "bag", [("/tf", "tf2_msgs/msg/TFMessage", 1, tf)])
    with pytest.raises(SeglocError, match=r"no sensor_msgs/Image or CompressedImage topic; topics: /tf \(tf2_msgs/msg/TFMessage\)"):
        next(read_bag(path))


def test_several_image_topics(tmp_path: Path) -> None:
    factory = _MessageFactory(2)
    image = factory.image(1, "cam", smooth_image(0))
    path = write_custom_bag(
        tmp_path / "bag", [("/a/image", "sensor_msgs/msg/Image", 1, image), ("/b/image", "sensor_msgs/msg/Image", 1, image)]
    )
    with pytest.raises(SeglocError, match=r"several image topics \(/a/image, /b/image\); set image_topic"):
        next(read_bag(path))
    with pytest.raises(SeglocError, match="no topic /c/image"):
        next(read_bag(path, BagReadConfig(image_topic="/c/image")))


def test_tf_without_the_world_frame(tmp_path: Path) -> None:
    path = write_bag(tmp_path / "bag", camera_frames(2), BASE_FROM_CAM)  # ground truth not on /tf by default
    with pytest.raises(SeglocError, match="frame 'map' is not in the TF data; known frames: base_link, camera_optical_frame, odom"):
        next(read_bag(path, BagReadConfig(pose_source="tf")))
    with pytest.raises(SeglocError, match="needs pose_topic set; pose topics in the bag: /ground_truth/pose, /odom"):
        next(read_bag(path, BagReadConfig(pose_source="topic")))


def test_no_image_matches_a_pose(tmp_path: Path) -> None:
    frames = camera_frames(3, poses=False) + pose_frames([T0 + 10, T0 + 11])
    path = write_bag(tmp_path / "bag", frames, BASE_FROM_CAM)
    with pytest.raises(SeglocError, match="no image could be matched to a pose .*3 outside the pose time range"):
        list(read_bag(path, BagReadConfig(pose_source="topic", pose_topic="/ground_truth/pose")))


def test_bad_paths_and_configs(tmp_path: Path) -> None:
    with pytest.raises(SeglocError, match="does not exist"):
        next(read_bag(tmp_path / "missing"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(SeglocError, match="metadata.yaml is missing"):
        next(read_bag(tmp_path / "folder"))
    with pytest.raises(SeglocError, match="must end in .bag"):
        write_bag(tmp_path / "x", camera_frames(1), BASE_FROM_CAM, BagWriteConfig(ros_version=1))
    with pytest.raises(SeglocError, match="no frames to write"):
        write_bag(tmp_path / "empty", [], BASE_FROM_CAM)
    assert not (tmp_path / "empty").exists()
    with pytest.raises(SeglocError, match="but a 64x48 camera"):
        write_bag(tmp_path / "size", [BagFrame(T0, np.zeros((10, 10, 3), np.uint8), CAMERA)], BASE_FROM_CAM)
    with pytest.raises(SeglocError, match="pose_source must be 'tf' or 'topic'"):
        BagReadConfig(pose_source="gps")
    with pytest.raises(SeglocError, match="image_name"):
        BagReadConfig(image_name="{frame}.png")


def test_duplicate_stamps_are_skipped(tmp_path: Path) -> None:
    factory = _MessageFactory(2)
    stamp = seconds_to_ns(T0)
    image = factory.image(stamp, "cam", smooth_image(0))
    pose = factory.pose_stamped(stamp, "map", cam_from_world(T0).inverse())
    info = factory.camera_info(stamp, "cam", CAMERA)
    path = write_custom_bag(
        tmp_path / "bag",
        [
            ("/image", "sensor_msgs/msg/Image", stamp, image),
            ("/image", "sensor_msgs/msg/Image", stamp, image),
            ("/info", "sensor_msgs/msg/CameraInfo", stamp, info),
            ("/pose", "geometry_msgs/msg/PoseStamped", stamp, pose),
        ],
    )
    stats = BagReadStats()
    config = BagReadConfig(pose_source="topic", pose_topic_frame="camera")
    assert len(list(read_bag(path, config, stats))) == 1
    assert stats.skipped_duplicate_names == 1 and stats.image_messages == 2


def test_read_config_from_yaml_values() -> None:
    from segloc.config import config_from_dict

    config = config_from_dict(BagReadConfig, {"pose_source": "topic", "base_from_cam": [1, 0, 0, 0, 0.1, 0, 0], "max_time_offset": 1})
    assert config.base_from_cam == (1, 0, 0, 0, 0.1, 0, 0) and config.max_time_offset == 1.0
    np.testing.assert_allclose(config.extrinsics().translation, [0.1, 0, 0])
    with pytest.raises(SeglocError, match="unknown option"):
        config_from_dict(BagReadConfig, {"pose_topc": "/x"})
    with pytest.raises(SeglocError, match="base_from_cam takes 7 numbers"):
        config_from_dict(BagReadConfig, {"base_from_cam": [1, 0, 0, 0]})
