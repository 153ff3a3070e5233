"""Writing robot recordings: rosbag2 (sqlite3, mcap) and ROS 1 bags, with ``rosbags``.

:func:`write_bag` writes :class:`BagFrame` time steps as the topics a robot with a camera,
odometry and a ground truth system records; see :class:`BagWriteConfig`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segloc.config import check_options, option
from segloc.data.rosbag.messages import CAMERA_INFO_TYPE, COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, TF_TYPE, _MessageFactory, seconds_to_ns
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")


@dataclass
class BagFrame:
    """One time step of a recording to write.

    Attributes:
        timestamp: seconds (header stamps and bag times are ``round(timestamp * 1e9)`` ns; a float
            resolves about 0.24 us at today's epoch seconds, 0.1 ns at 1e6 s).
        image: (H, W, 3) RGB uint8 (or (H, W) grey); None writes only the poses of this step
            (e.g. odometry or ground truth at a higher rate than the camera).
        camera: the camera of ``image`` (COLMAP convention); required with an image.
        world_from_base: ground truth pose of the base frame in the world (map) frame.
        odom_from_base: odometry pose of the base frame (may drift).
    """

    timestamp: float
    image: np.ndarray | None
    camera: Camera | None
    world_from_base: Rigid3 | None = None
    odom_from_base: Rigid3 | None = None


@dataclass
class BagWriteConfig:
    """What :func:`write_bag` publishes, and where.

    Topics set to None are not written. Per frame: the image on ``image_topic``
    (``sensor_msgs/Image`` rgb8, or ``CompressedImage`` when ``compression`` is jpeg or png),
    ``CameraInfo``, ``odom -> base`` on ``/tf`` and ``nav_msgs/Odometry`` on ``/odom`` (when the
    frame has odometry), the ground truth ``world_from_base`` as a ``PoseStamped`` in the world
    frame; once: ``base -> camera`` on ``/tf_static``. With ``ground_truth_tf`` the ground truth
    also goes on ``/tf``: as ``map -> odom`` when frames have odometry (the transform a
    localizer would publish, keeping one parent per frame), else as ``map -> base_link``.
    """

    image_topic: str | None = None  # None: /camera/image_raw, or /camera/image_raw/compressed when compressed
    camera_info_topic: str | None = "/camera/camera_info"
    compression: str = "none"  # none | jpeg | png
    jpeg_quality: int = option(95, ge=0, le=100)
    tf_topic: str | None = "/tf"
    tf_static_topic: str | None = "/tf_static"
    odom_topic: str | None = "/odom"
    ground_truth_topic: str | None = "/ground_truth/pose"
    ground_truth_tf: bool = False
    world_frame: str = "map"
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    camera_frame: str = "camera_optical_frame"
    storage: str = "sqlite3"  # sqlite3 | mcap (ROS 2 only)
    ros_version: int = 2  # 2, or 1 for a ROS 1 .bag file

    def __post_init__(self) -> None:
        check_options(self)
        if self.compression not in ("none", "jpeg", "png"):
            raise SeglocError(f"compression must be none, jpeg or png, got {self.compression!r}")
        if self.storage not in ("sqlite3", "mcap"):
            raise SeglocError(f"storage must be sqlite3 or mcap, got {self.storage!r}")
        if self.ros_version not in (1, 2):
            raise SeglocError(f"ros_version must be 1 or 2, got {self.ros_version!r}")

    @property
    def resolved_image_topic(self) -> str:
        if self.image_topic is not None:
            return self.image_topic
        return "/camera/image_raw" if self.compression == "none" else "/camera/image_raw/compressed"


def _latched_qos() -> list[Any]:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [
        Qos(
            QosHistory.KEEP_LAST,
            1,
            QosReliability.RELIABLE,
            QosDurability.TRANSIENT_LOCAL,
            zero,
            zero,
            QosLiveliness.AUTOMATIC,
            zero,
            False,
        )
    ]


@contextmanager
def _bag_writer(path: Path, config: BagWriteConfig, factory: _MessageFactory):
    """Yields ``add(topic, msgtype, latched) -> write(stamp_ns, msg)`` for ROS 1 or ROS 2 writers."""
    if config.ros_version == 1:
        from rosbags.rosbag1 import Writer as Writer1

        writer: Any = Writer1(path)
    else:
        from rosbags.rosbag2 import StoragePlugin
        from rosbags.rosbag2 import Writer as Writer2

        plugin = StoragePlugin.MCAP if config.storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer2(path, version=Writer2.VERSION_LATEST, storage_plugin=plugin)

    def add(topic: str, msgtype: str, latched: bool = False):
        if config.ros_version == 1:
            connection = writer.add_connection(topic, msgtype, typestore=factory.store, latching=1 if latched else None)
        else:
            qos = _latched_qos() if latched else ()
            connection = writer.add_connection(topic, msgtype, typestore=factory.store, offered_qos_profiles=qos)

        def write(stamp_ns: int, msg: Any) -> None:
            writer.write(connection, stamp_ns, factory.serialize(msg, msgtype))

        return write

    with writer:
        yield add


def write_bag(path: str | Path, frames: Iterable[BagFrame], base_from_cam: Rigid3, config: BagWriteConfig | None = None) -> Path:
    """Write frames as a rosbag2 folder (sqlite3 or mcap) or a ROS 1 ``.bag`` file.

    Header stamps and bag message times are the frame timestamps. ``base_from_cam`` (the camera
    extrinsics, camera frame with optical axes) goes on ``/tf_static`` at the first frame's
    stamp. See :class:`BagWriteConfig` for the topics.

    Args:
        path: a new rosbag2 folder, or a new file ending in ``.bag`` for ROS 1.
        frames: the time steps, in time order (iterated once, lazily).
        base_from_cam: the camera pose in the base frame.
        config: topics, frames, storage; default :class:`BagWriteConfig`.

    Returns:
        ``path``.
    """
    config = config or BagWriteConfig()
    path = Path(path)
    if path.exists():
        raise SeglocError(f"{path} exists already; a bag is never overwritten")
    if config.ros_version == 1 and path.suffix != ".bag":
        raise SeglocError(f"a ROS 1 bag path must end in .bag, got {path}")
    if config.ros_version == 2 and path.suffix == ".bag":
        raise SeglocError(f"{path}: a rosbag2 is a folder; '.bag' names a ROS 1 bag (set ros_version=1)")
    factory = _MessageFactory(config.ros_version)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        with _bag_writer(path, config, factory) as add:
            image_topic = config.resolved_image_topic
            image_type = IMAGE_TYPE if config.compression == "none" else COMPRESSED_IMAGE_TYPE
            write_image = add(image_topic, image_type)
            write_info = add(config.camera_info_topic, CAMERA_INFO_TYPE) if config.camera_info_topic else None
            write_tf = add(config.tf_topic, TF_TYPE) if config.tf_topic else None
            write_static = add(config.tf_static_topic, TF_TYPE, latched=True) if config.tf_static_topic else None
            write_odom = add(config.odom_topic, "nav_msgs/msg/Odometry") if config.odom_topic else None
            write_truth = add(config.ground_truth_topic, "geometry_msgs/msg/PoseStamped") if config.ground_truth_topic else None
            has_odometry: bool | None = None
            for frame in frames:
                stamp = seconds_to_ns(frame.timestamp)
                if stamp < 0:
                    raise SeglocError(f"frame timestamp {frame.timestamp} is negative")
                if count == 0 and write_static is not None:
                    static = factory.transform_stamped(stamp, config.base_frame, config.camera_frame, base_from_cam)
                    write_static(stamp, factory.tf([static]))
                count += 1
                if frame.image is not None:
                    _write_image(frame, stamp, config, factory, write_image, write_info)
                transforms = []
                if frame.odom_from_base is not None:
                    transforms.append(factory.transform_stamped(stamp, config.odom_frame, config.base_frame, frame.odom_from_base))
                    if write_odom is not None:
                        write_odom(stamp, factory.odometry(stamp, config.odom_frame, config.base_frame, frame.odom_from_base))
                if frame.world_from_base is not None:
                    if write_truth is not None:
                        write_truth(stamp, factory.pose_stamped(stamp, config.world_frame, frame.world_from_base))
                    if config.ground_truth_tf:
                        frame_has_odometry = frame.odom_from_base is not None
                        if has_odometry is not None and has_odometry != frame_has_odometry:
                            raise SeglocError(
                                "with ground_truth_tf, either every frame with ground truth has odometry or none has "
                                "(the ground truth goes on /tf as map -> odom or map -> base_link, never both)"
                            )
                        has_odometry = frame_has_odometry
                        if frame_has_odometry:
                            world_from_odom = frame.world_from_base * frame.odom_from_base.inverse()
                            transforms.append(factory.transform_stamped(stamp, config.world_frame, config.odom_frame, world_from_odom))
                        else:
                            transforms.append(
                                factory.transform_stamped(stamp, config.world_frame, config.base_frame, frame.world_from_base)
                            )
                if transforms and write_tf is not None:
                    write_tf(stamp, factory.tf(transforms))
            if count == 0:
                raise SeglocError("no frames to write")
    except BaseException:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
        raise
    logger.info("wrote %d frames to %s", count, path)
    return path


def _write_image(frame: BagFrame, stamp: int, config: BagWriteConfig, factory: _MessageFactory, write_image, write_info) -> None:
    image = np.asarray(frame.image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise SeglocError(f"frame images must be (H, W, 3) RGB or (H, W) grey uint8, got {image.shape} {image.dtype}")
    if frame.camera is None:
        raise SeglocError(f"the frame at {frame.timestamp} s has an image but no camera")
    if (frame.camera.width, frame.camera.height) != (image.shape[1], image.shape[0]):
        raise SeglocError(
            f"the frame at {frame.timestamp} s has a {image.shape[1]}x{image.shape[0]} image but a "
            f"{frame.camera.width}x{frame.camera.height} camera"
        )
    if config.compression == "none":
        write_image(stamp, factory.image(stamp, config.camera_frame, image))
    else:
        write_image(stamp, factory.compressed_image(stamp, config.camera_frame, image, config.compression, config.jpeg_quality))
    if write_info is not None:
        write_info(stamp, factory.camera_info(stamp, config.camera_frame, frame.camera))
