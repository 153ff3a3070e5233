"""Robot recordings: rosbag2 (sqlite3, mcap) and ROS 1 bags, read and written with ``rosbags``.

No ROS installation is needed: the ``rosbags`` package parses and serialises the messages.

Reading (:func:`read_bag`) yields one :class:`ImageRecord` and its RGB pixels per image
message that can be matched to a pose:

- images: ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1, 8UC3, 16UC1)
  or ``sensor_msgs/CompressedImage`` (anything OpenCV decodes: jpeg, png...);
- intrinsics: ``sensor_msgs/CameraInfo`` (``k`` and ``d`` of the raw image; plumb_bob or
  rational_polynomial);
- poses: the TF tree from ``/tf`` and ``/tf_static`` (``world_frame -> camera frame``), or a
  pose topic (``PoseStamped``, ``PoseWithCovarianceStamped``, ``Odometry``,
  ``TransformStamped``) giving ``world_from_base`` (with the camera extrinsics from
  ``/tf_static`` or the config) or ``world_from_cam``.

Poses are interpolated at each image's header stamp (slerp / linear between the two
neighbouring samples, never extrapolated); an image outside the pose time range, or farther
than ``max_time_offset`` from any pose sample, is rejected, counted and logged.

Pixel convention: ROS ``CameraInfo`` (like OpenCV) puts the centre of the top-left pixel at
(0, 0), COLMAP and this project at (0.5, 0.5). Reading adds 0.5 to ``cx, cy``; writing
subtracts 0.5. Focal lengths and distortion are unchanged.

Camera models from ``CameraInfo``: no distortion -> PINHOLE; plumb_bob ``[k1, k2, p1, p2, k3]``
-> OPENCV when ``k3 == 0``, else FULL_OPENCV; rational_polynomial -> FULL_OPENCV. Writing maps
every COLMAP model onto plumb_bob (rational_polynomial when k4..k6 are used), so SIMPLE_*
and RADIAL cameras come back as the equivalent PINHOLE / OPENCV camera.

Writing (:func:`write_bag`) produces the topics a robot with a camera, odometry and a ground
truth system records; see :class:`BagWriteConfig`.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc.data.dataset import ImageRecord, save_image, write_dataset
from segloc.data.tf_buffer import PoseLookupError, PoseSeries, TfBuffer, normalize_frame
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
POSE_TYPES = (
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/PoseWithCovarianceStamped",
    "nav_msgs/msg/Odometry",
    "geometry_msgs/msg/TransformStamped",
)
NS_PER_S = 1_000_000_000

#: Raw image encodings read: encoding -> (channels, dtype, channel order).
RAW_ENCODINGS: dict[str, tuple[int, str, str]] = {
    "rgb8": (3, "uint8", "rgb"),
    "bgr8": (3, "uint8", "bgr"),
    "8UC3": (3, "uint8", "bgr"),
    "rgba8": (4, "uint8", "rgb"),
    "bgra8": (4, "uint8", "bgr"),
    "8UC4": (4, "uint8", "bgr"),
    "mono8": (1, "uint8", "mono"),
    "8UC1": (1, "uint8", "mono"),
    "mono16": (1, "uint16", "mono"),
    "16UC1": (1, "uint16", "mono"),
}


# --- configs and frames -------------------------------------------------------------------
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
    jpeg_quality: int = 95
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


@dataclass
class BagReadConfig:
    """How :func:`read_bag` finds images, intrinsics and poses.

    Attributes:
        image_topic: None: the single Image or CompressedImage topic of the bag.
        camera_info_topic: None: the single CameraInfo topic, or the one next to the image topic.
        pose_source: ``"tf"`` (look up ``world_frame -> camera frame`` in /tf + /tf_static) or
            ``"topic"`` (``pose_topic``).
        pose_topic: PoseStamped / PoseWithCovarianceStamped / Odometry / TransformStamped topic;
            None: the single topic of those types.
        pose_topic_frame: what the pose topic gives: ``"base"`` (``world_from_base``; the camera
            extrinsics come from ``base_from_cam`` or the TF data) or ``"camera"``
            (``world_from_cam``).
        world_frame: the map frame for TF lookups.
        base_frame: the robot frame. With pose topics, None means the message's
            ``child_frame_id`` (Odometry, TransformStamped), else ``base_link``. With TF and
            ``base_from_cam`` set, None means ``base_link``.
        camera_frame: None: the image header's ``frame_id``.
        base_from_cam: fixed camera extrinsics ``(qw, qx, qy, qz, tx, ty, tz)``, used instead of
            the TF data.
        max_time_offset: seconds; an image farther than this from every pose sample is rejected
            (also for each dynamic TF edge).
        every_nth: keep every n-th image message (counted before pose matching).
        start_offset, end_offset: only images whose bag time is within this window, seconds
            from the start of the bag (None: open).
        use_bag_time: match images and poses by bag (receive) time instead of header stamps.
        image_name: record names; format fields ``stamp_ns`` and ``index`` (index of the
            yielded record), e.g. ``"frame_{index:06d}.png"``.
    """

    image_topic: str | None = None
    camera_info_topic: str | None = None
    pose_source: str = "tf"
    pose_topic: str | None = None
    pose_topic_frame: str = "base"
    world_frame: str = "map"
    base_frame: str | None = None
    camera_frame: str | None = None
    base_from_cam: tuple[float, ...] | None = None
    tf_topic: str = "/tf"
    tf_static_topic: str = "/tf_static"
    max_time_offset: float = 0.05
    every_nth: int = 1
    start_offset: float | None = None
    end_offset: float | None = None
    use_bag_time: bool = False
    image_name: str = "{stamp_ns}.png"

    def __post_init__(self) -> None:
        if self.pose_source not in ("tf", "topic"):
            raise SeglocError(f"pose_source must be 'tf' or 'topic', got {self.pose_source!r}")
        if self.pose_topic_frame not in ("base", "camera"):
            raise SeglocError(f"pose_topic_frame must be 'base' or 'camera', got {self.pose_topic_frame!r}")
        if self.every_nth < 1:
            raise SeglocError(f"every_nth must be >= 1, got {self.every_nth}")
        if self.max_time_offset < 0:
            raise SeglocError(f"max_time_offset must be >= 0, got {self.max_time_offset}")
        if self.base_from_cam is not None and len(self.base_from_cam) != 7:
            raise SeglocError(f"base_from_cam takes 7 numbers (qw qx qy qz tx ty tz), got {len(self.base_from_cam)}")
        try:
            self.image_name.format(stamp_ns=0, index=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise SeglocError(f"image_name {self.image_name!r} may only use the fields {{stamp_ns}} and {{index}}: {exc}") from None

    def extrinsics(self) -> Rigid3 | None:
        """``base_from_cam`` as a transform, or None."""
        if self.base_from_cam is None:
            return None
        values = np.asarray(self.base_from_cam, dtype=np.float64)
        return Rigid3(values[:4], values[4:])


@dataclass
class BagReadStats:
    """Counts filled in by :func:`read_bag` while it runs."""

    total_image_messages: int = 0  # image messages in the whole bag, known once the bag is open
    image_messages: int = 0  # image messages in the time window, read so far
    skipped_every_nth: int = 0
    rejected_outside_pose_range: int = 0
    rejected_pose_gap: int = 0
    skipped_duplicate_names: int = 0  # images whose name (stamp) was already yielded
    records: int = 0
    first_rejections: list[str] = field(default_factory=list)


# --- conversions between messages and project types -----------------------------------------
def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (fields ``sec``, ``nanosec``)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def seconds_to_ns(seconds: float) -> int:
    return int(round(float(seconds) * NS_PER_S))


def _rigid_from_xyzw(rotation: Any, translation: Any) -> Rigid3:
    return Rigid3(
        np.array([rotation.w, rotation.x, rotation.y, rotation.z], dtype=np.float64),
        np.array([translation.x, translation.y, translation.z], dtype=np.float64),
    )


def rigid_from_transform_msg(transform: Any) -> Rigid3:
    """``parent_from_child`` from a ``geometry_msgs/Transform``."""
    return _rigid_from_xyzw(transform.rotation, transform.translation)


def rigid_from_pose_msg(pose: Any) -> Rigid3:
    """``frame_from_body`` from a ``geometry_msgs/Pose`` (the body's pose in the header frame)."""
    return _rigid_from_xyzw(pose.orientation, pose.position)


def _camera_info_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(K (9,), D (n,)) of a CameraInfo, ROS 2 (``k``, ``d``) or ROS 1 (``K``, ``D``) field names."""
    k = getattr(msg, "k", None)
    if k is None:
        k = msg.K
    d = getattr(msg, "d", None)
    if d is None:
        d = msg.D
    return np.asarray(k, dtype=np.float64).reshape(-1), np.asarray(d, dtype=np.float64).reshape(-1)


def camera_from_camera_info(msg: Any, image_size: tuple[int, int] | None = None) -> Camera:
    """A COLMAP camera from a ``sensor_msgs/CameraInfo`` (ROS 1 or ROS 2 field names).

    Uses ``k`` and ``d`` (intrinsics of the raw image) and shifts the principal point by +0.5
    px into COLMAP's convention.

    Args:
        msg: the CameraInfo message.
        image_size: (width, height) used when the message's size is 0.
    """
    k, d = _camera_info_arrays(msg)
    width, height = int(msg.width), int(msg.height)
    if (width == 0 or height == 0) and image_size is not None:
        width, height = image_size
    if k.shape != (9,) or k[0] <= 0 or k[4] <= 0:
        raise SeglocError(f"CameraInfo has no valid intrinsics (K = {k.tolist()}); is the camera calibrated?")
    fx, fy, cx, cy = k[0], k[4], k[2] + 0.5, k[5] + 0.5
    model = (msg.distortion_model or "").strip()
    if not np.any(d):
        return Camera("PINHOLE", width, height, (fx, fy, cx, cy))
    if model == "plumb_bob" or (model == "" and len(d) in (4, 5)):
        d = np.concatenate([d, np.zeros(max(0, 5 - len(d)))])
        if len(d) > 5:
            raise SeglocError(f"plumb_bob distortion takes 5 coefficients, got {len(d)}")
        if d[4] == 0:
            return Camera("OPENCV", width, height, (fx, fy, cx, cy, *d[:4]))
        return Camera("FULL_OPENCV", width, height, (fx, fy, cx, cy, *d[:5], 0.0, 0.0, 0.0))
    if model == "rational_polynomial":
        d = np.concatenate([d, np.zeros(max(0, 8 - len(d)))])[:8]
        return Camera("FULL_OPENCV", width, height, (fx, fy, cx, cy, *d))
    raise SeglocError(
        f"CameraInfo distortion model {model!r} is not supported (supported: plumb_bob, rational_polynomial, or no distortion)"
    )


def camera_info_values(camera: Camera) -> dict[str, Any]:
    """CameraInfo field values for a camera: ``width, height, distortion_model, d, k, r, p``.

    The principal point is shifted by -0.5 px into the ROS/OpenCV convention.
    """
    k = camera.opencv_calibration_matrix()
    distortion = camera.opencv_distortion()
    if len(distortion) == 4:
        d = np.concatenate([distortion, [0.0]])
        model = "plumb_bob"
    elif np.any(distortion[5:]):
        d, model = distortion.copy(), "rational_polynomial"
    else:
        d, model = distortion[:5].copy(), "plumb_bob"
    p = np.zeros((3, 4))
    p[:, :3] = k
    return {
        "width": camera.width,
        "height": camera.height,
        "distortion_model": model,
        "d": d.astype(np.float64),
        "k": k.reshape(-1).astype(np.float64),
        "r": np.eye(3).reshape(-1),
        "p": p.reshape(-1),
    }


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    if pixels.dtype == np.uint16:
        pixels = np.round(pixels.astype(np.float64) / 257.0).astype(np.uint8)  # 0..65535 -> 0..255
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        return np.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, axis=2)
    rgb = pixels[:, :, :3]
    if order == "bgr":
        rgb = rgb[:, :, ::-1]
    return np.ascontiguousarray(rgb)


def image_from_msg(msg: Any, msgtype: str = IMAGE_TYPE) -> np.ndarray:
    """(H, W, 3) RGB uint8 pixels of a ``sensor_msgs/Image`` or ``CompressedImage``.

    16-bit images are scaled to 8 bits (``round(v / 257)``), grey images replicated to 3
    channels, alpha dropped.
    """
    import cv2

    if msgtype == COMPRESSED_IMAGE_TYPE:
        fmt = str(msg.format)
        if "compressedDepth" in fmt:
            raise SeglocError(f"CompressedImage format {fmt!r} (a depth image) is not supported; use a colour or grey image topic")
        decoded = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8).reshape(-1), cv2.IMREAD_UNCHANGED)
        if decoded is None:
            raise SeglocError(f"CompressedImage with format {fmt!r} could not be decoded by OpenCV")
        return _to_rgb(decoded, "bgr")  # OpenCV decodes colour images as BGR(A)
    encoding = str(msg.encoding)
    if encoding not in RAW_ENCODINGS:
        raise SeglocError(f"image encoding {encoding!r} is not supported; supported encodings: {', '.join(RAW_ENCODINGS)}")
    channels, dtype_name, order = RAW_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(dtype_name).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if step < row_bytes or data.size < height * step:
        raise SeglocError(
            f"{encoding} image of {width}x{height} has step {step} and {data.size} bytes; expected step >= {row_bytes} and {height * step} bytes"
        )
    rows = data[: height * step].reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels).astype(dtype.newbyteorder("="))
    return _to_rgb(pixels, order)


# --- writing -------------------------------------------------------------------------------
class _MessageFactory:
    """Builds and serialises messages for one ROS version's typestore."""

    def __init__(self, ros_version: int) -> None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        self.ros_version = ros_version
        if ros_version == 2:
            self.store = get_typestore(Stores.ROS2_JAZZY)
        else:
            self.store = get_typestore(Stores.ROS1_NOETIC)
            if TF_TYPE not in self.store.types:  # Noetic's store lacks tf2_msgs
                self.store.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", TF_TYPE))
        self.types = self.store.types

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        if self.ros_version == 2:
            return bytes(self.store.serialize_cdr(msg, msgtype))
        return bytes(self.store.serialize_ros1(msg, msgtype))

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        stamp = self.types["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)
        if self.ros_version == 1:
            return self.types["std_msgs/msg/Header"](seq=0, stamp=stamp, frame_id=frame_id)
        return self.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def _vector(self, values: np.ndarray) -> Any:
        return self.types["geometry_msgs/msg/Vector3"](x=float(values[0]), y=float(values[1]), z=float(values[2]))

    def _quaternion(self, pose: Rigid3) -> Any:
        x, y, z, w = pose.quat_xyzw
        return self.types["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w))

    def pose(self, pose: Rigid3) -> Any:
        t = pose.translation
        point = self.types["geometry_msgs/msg/Point"](x=float(t[0]), y=float(t[1]), z=float(t[2]))
        return self.types["geometry_msgs/msg/Pose"](position=point, orientation=self._quaternion(pose))

    def transform_stamped(self, stamp_ns: int, parent: str, child: str, parent_from_child: Rigid3) -> Any:
        transform = self.types["geometry_msgs/msg/Transform"](
            translation=self._vector(parent_from_child.translation), rotation=self._quaternion(parent_from_child)
        )
        return self.types["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_ns, parent), child_frame_id=child, transform=transform
        )

    def tf(self, transforms: list[Any]) -> Any:
        return self.types[TF_TYPE](transforms=transforms)

    def pose_stamped(self, stamp_ns: int, frame_id: str, pose: Rigid3) -> Any:
        return self.types["geometry_msgs/msg/PoseStamped"](header=self.header(stamp_ns, frame_id), pose=self.pose(pose))

    def odometry(self, stamp_ns: int, odom_frame: str, base_frame: str, odom_from_base: Rigid3) -> Any:
        zero = np.zeros(3)
        twist = self.types["geometry_msgs/msg/Twist"](linear=self._vector(zero), angular=self._vector(zero))
        return self.types["nav_msgs/msg/Odometry"](
            header=self.header(stamp_ns, odom_frame),
            child_frame_id=base_frame,
            pose=self.types["geometry_msgs/msg/PoseWithCovariance"](pose=self.pose(odom_from_base), covariance=np.zeros(36)),
            twist=self.types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
        )

    def camera_info(self, stamp_ns: int, frame_id: str, camera: Camera) -> Any:
        values = camera_info_values(camera)
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        arrays = {"d": values["d"], "k": values["k"], "r": values["r"], "p": values["p"]}
        if self.ros_version == 1:
            arrays = {name.upper(): array for name, array in arrays.items()}
        return self.types[CAMERA_INFO_TYPE](
            header=self.header(stamp_ns, frame_id),
            height=values["height"],
            width=values["width"],
            distortion_model=values["distortion_model"],
            binning_x=0,
            binning_y=0,
            roi=roi,
            **arrays,
        )

    def image(self, stamp_ns: int, frame_id: str, image: np.ndarray) -> Any:
        encoding, channels = ("rgb8", 3) if image.ndim == 3 else ("mono8", 1)
        return self.types[IMAGE_TYPE](
            header=self.header(stamp_ns, frame_id),
            height=image.shape[0],
            width=image.shape[1],
            encoding=encoding,
            is_bigendian=0,
            step=image.shape[1] * channels,
            data=np.ascontiguousarray(image, dtype=np.uint8).reshape(-1),
        )

    def compressed_image(self, stamp_ns: int, frame_id: str, image: np.ndarray, compression: str, jpeg_quality: int) -> Any:
        import cv2

        data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        ext, options = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]) if compression == "jpeg" else (".png", [])
        ok, encoded = cv2.imencode(ext, data, options)
        if not ok:
            raise SeglocError(f"OpenCV could not encode an image as {compression}")
        source = "rgb8" if image.ndim == 3 else "mono8"
        target = "bgr8" if image.ndim == 3 else "mono8"
        return self.types[COMPRESSED_IMAGE_TYPE](
            header=self.header(stamp_ns, frame_id), format=f"{source}; {compression} compressed {target}", data=encoded.reshape(-1)
        )


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


# --- reading -------------------------------------------------------------------------------
@contextmanager
def open_bag(path: Path):
    """Open a rosbag2 folder (or a file in it) or a ROS 1 ``.bag`` with ``rosbags``; yields the reader.

    Raises:
        SeglocError: the path does not exist, is not a bag, or the bag cannot be opened.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    if path.is_file() and path.suffix in (".db3", ".mcap", ".yaml"):
        path = path.parent  # a file inside a rosbag2 folder
    if not path.exists():
        raise SeglocError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise SeglocError(f"{path} is not a rosbag2 folder (metadata.yaml is missing)")
    if path.is_file() and path.suffix != ".bag":
        raise SeglocError(f"{path} is not a bag: expected a rosbag2 folder or a ROS 1 file ending in .bag")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except (AnyReaderError, ValueError, KeyError) as exc:
        raise SeglocError(f"could not open the bag {path}: {exc}") from None
    try:
        yield reader
    finally:
        reader.close()


def _topics_of_type(topics: dict[str, str], msgtypes: Iterable[str]) -> list[str]:
    wanted = set(msgtypes)
    return sorted(name for name, msgtype in topics.items() if msgtype in wanted)


def describe_topics(topics: dict[str, str]) -> str:
    """``name (type), ...`` of a bag's topics, for error messages."""
    return ", ".join(f"{name} ({msgtype})" for name, msgtype in sorted(topics.items())) or "none"


def select_image_topic(topics: dict[str, str], config: BagReadConfig, bag: Path) -> str:
    """The image topic to read: ``config.image_topic``, checked, or the bag's only Image/CompressedImage topic."""
    if config.image_topic is not None:
        if config.image_topic not in topics:
            raise SeglocError(f"{bag}: no topic {config.image_topic}; topics: {describe_topics(topics)}")
        if topics[config.image_topic] not in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE):
            raise SeglocError(f"{bag}: topic {config.image_topic} is a {topics[config.image_topic]}, not an Image or CompressedImage")
        return config.image_topic
    candidates = _topics_of_type(topics, (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE))
    if not candidates:
        raise SeglocError(f"{bag}: no sensor_msgs/Image or CompressedImage topic; topics: {describe_topics(topics)}")
    if len(candidates) > 1:
        raise SeglocError(f"{bag}: several image topics ({', '.join(candidates)}); set image_topic to one of them")
    return candidates[0]


def select_camera_info_topic(topics: dict[str, str], image_topic: str, config: BagReadConfig, bag: Path) -> str:
    """The CameraInfo topic that goes with ``image_topic``: ``config.camera_info_topic``, checked, or found."""
    if config.camera_info_topic is not None:
        if topics.get(config.camera_info_topic) != CAMERA_INFO_TYPE:
            raise SeglocError(
                f"{bag}: no CameraInfo topic {config.camera_info_topic}; set camera_info_topic to one of: "
                f"{', '.join(_topics_of_type(topics, [CAMERA_INFO_TYPE])) or 'none'} (topics: {describe_topics(topics)})"
            )
        return config.camera_info_topic
    candidates = _topics_of_type(topics, [CAMERA_INFO_TYPE])
    if not candidates:
        raise SeglocError(
            f"{bag}: no sensor_msgs/CameraInfo topic, so the intrinsics of {image_topic} are unknown; topics: {describe_topics(topics)}"
        )
    if len(candidates) == 1:
        return candidates[0]
    # several cameras: the CameraInfo next to the image topic (image_transport naming)
    namespace = image_topic.removesuffix("/compressed").rsplit("/", 1)[0]
    nearby = [t for t in candidates if t.rsplit("/", 1)[0] == namespace]
    if len(nearby) == 1:
        return nearby[0]
    raise SeglocError(f"{bag}: several CameraInfo topics ({', '.join(candidates)}); set camera_info_topic")


def _message_stamp(msg: Any, bag_time: int, use_bag_time: bool) -> int:
    if use_bag_time:
        return bag_time
    header = getattr(msg, "header", None)
    stamp = stamp_to_ns(header.stamp) if header is not None else 0
    return stamp if stamp > 0 else bag_time


class _CameraTrack:
    """CameraInfo messages over time: the camera valid at a stamp is the latest one before it."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.messages: list[Any] = []
        self._cameras: dict[tuple[int, tuple[int, int]], Camera] = {}

    def add(self, stamp: int, msg: Any) -> None:
        if self.messages and _same_camera_info(self.messages[-1], msg):
            return
        self.stamps.append(stamp)
        self.messages.append(msg)

    def camera_at(self, stamp: int, image_size: tuple[int, int]) -> Camera:
        i = max(0, bisect.bisect_right(self.stamps, stamp) - 1)
        camera = self._cameras.get((i, image_size))
        if camera is None:
            camera = self._cameras[(i, image_size)] = camera_from_camera_info(self.messages[i], image_size)
        if (camera.width, camera.height) != image_size:
            raise SeglocError(
                f"CameraInfo says {camera.width}x{camera.height} but the image is {image_size[0]}x{image_size[1]}; "
                "is the CameraInfo topic the one of this image topic?"
            )
        return camera


def _same_camera_info(a: Any, b: Any) -> bool:
    ka, da = _camera_info_arrays(a)
    kb, db = _camera_info_arrays(b)
    return (a.width, a.height, a.distortion_model) == (b.width, b.height, b.distortion_model) and (
        np.array_equal(ka, kb) and np.array_equal(da, db)
    )


class _PoseSource:
    """``world_from_cam`` at a stamp, from the TF tree or a pose topic."""

    def __init__(self, config: BagReadConfig, bag: Path) -> None:
        self.config = config
        self.bag = bag
        self.tf = TfBuffer()
        self.series: PoseSeries | None = None
        self.message_child_frame: str | None = None
        self.frame_checked = False
        self.max_gap = seconds_to_ns(config.max_time_offset)
        self.extrinsics = config.extrinsics()

    def describe(self) -> str:
        if self.series is not None:
            return f"pose topic {self.config.pose_topic}"
        return f"TF {self.config.world_frame} -> camera"

    def add_tf(self, msg: Any, static: bool, bag_time: int) -> None:
        for transform in msg.transforms:
            stamp = None if static else (bag_time if self.config.use_bag_time else stamp_to_ns(transform.header.stamp))
            self.tf.add(transform.header.frame_id, transform.child_frame_id, rigid_from_transform_msg(transform.transform), stamp)

    def add_pose(self, msg: Any, msgtype: str, stamp: int) -> None:
        if self.series is None:
            self.series = PoseSeries(f"pose topic {self.config.pose_topic}")
        if msgtype == "geometry_msgs/msg/TransformStamped":
            pose = rigid_from_transform_msg(msg.transform)
            child = msg.child_frame_id
        elif msgtype == "nav_msgs/msg/Odometry":
            pose = rigid_from_pose_msg(msg.pose.pose)
            child = msg.child_frame_id
        elif msgtype == "geometry_msgs/msg/PoseWithCovarianceStamped":
            pose, child = rigid_from_pose_msg(msg.pose.pose), None
        else:
            pose, child = rigid_from_pose_msg(msg.pose), None
        if child and self.message_child_frame is None:
            self.message_child_frame = normalize_frame(child)
        frame = normalize_frame(msg.header.frame_id)
        if not self.frame_checked and frame and frame != normalize_frame(self.config.world_frame):
            self.frame_checked = True
            logger.warning(
                "%s: poses on %s are in frame %r, not world_frame %r; using them as world poses",
                self.bag,
                self.config.pose_topic,
                frame,
                self.config.world_frame,
            )
        self.series.add(stamp, pose)

    @property
    def needs_camera_frame(self) -> bool:
        """Whether the camera's TF frame is needed (not when the extrinsics or camera poses are given)."""
        if self.extrinsics is not None:
            return False
        return self.config.pose_source == "tf" or self.config.pose_topic_frame == "base"

    def base_frame(self) -> str:
        if self.config.base_frame is not None:
            return self.config.base_frame
        if self.config.pose_source == "topic" and self.message_child_frame:
            return self.message_child_frame
        return "base_link"

    def world_from_cam(self, stamp: int, camera_frame: str) -> Rigid3:
        """Raises PoseLookupError (time-related: the image is rejected) or SeglocError (the setup is wrong)."""
        try:
            if self.config.pose_source == "tf":
                if self.extrinsics is not None:
                    return self.tf.lookup(self.config.world_frame, self.base_frame(), stamp, self.max_gap) * self.extrinsics
                return self.tf.lookup(self.config.world_frame, camera_frame, stamp, self.max_gap)
            assert self.series is not None
            world_from_x = self.series.at(stamp, self.max_gap)
            if self.config.pose_topic_frame == "camera":
                return world_from_x
            base_from_cam = self.extrinsics
            if base_from_cam is None:
                base_from_cam = self.tf.lookup(self.base_frame(), camera_frame, stamp, self.max_gap)
            return world_from_x * base_from_cam
        except PoseLookupError as exc:
            if exc.is_time_related:
                raise
            hint = ""
            if self.config.pose_source == "topic":
                hint = " (the pose topic gives base poses: set base_from_cam, or pose_topic_frame='camera' if they are camera poses)"
            elif exc.reason == "unknown_frame":
                hint = " (check world_frame and camera_frame, or read poses from a topic with pose_source='topic')"
            raise SeglocError(f"{self.bag}: cannot get the camera pose from {self.describe()}: {exc}{hint}") from None


def _select_pose_topic(topics: dict[str, str], config: BagReadConfig, bag: Path) -> str:
    if config.pose_topic is not None:
        if topics.get(config.pose_topic) not in POSE_TYPES:
            found = topics.get(config.pose_topic, "missing")
            raise SeglocError(
                f"{bag}: pose topic {config.pose_topic} is {found}; expected one of {', '.join(POSE_TYPES)}. "
                f"Pose topics in the bag: {', '.join(_topics_of_type(topics, POSE_TYPES)) or 'none'}"
            )
        return config.pose_topic
    candidates = _topics_of_type(topics, POSE_TYPES)
    if len(candidates) != 1:
        raise SeglocError(f"{bag}: pose_source='topic' needs pose_topic set; pose topics in the bag: {', '.join(candidates) or 'none'}")
    return candidates[0]


def read_bag(
    path: str | Path, config: BagReadConfig | None = None, stats: BagReadStats | None = None
) -> Iterator[tuple[ImageRecord, np.ndarray]]:
    """Yield ``(record, image)`` for each image of a bag that can be matched to a pose.

    Reads CameraInfo, TF and pose messages first (small), then streams the images lazily in
    time order, so large bags are not held in memory.

    Args:
        path: rosbag2 folder (sqlite3 or mcap) or ROS 1 ``.bag`` file.
        config: topics, frames and matching options; default :class:`BagReadConfig`.
        stats: filled with counts while iterating (rejections are also logged at the end).

    Yields:
        ``ImageRecord(name, cam_from_world, camera, timestamp)`` with ``timestamp`` in seconds
        (image header stamp), and the (H, W, 3) RGB uint8 image.

    Raises:
        SeglocError: missing or ambiguous topics, an unsupported encoding or camera model, TF
            frames that are not connected, or no image matched to any pose. As this is a
            generator, the errors about the bag's layout come with the first ``next()``.
    """
    config = config or BagReadConfig()
    stats = stats if stats is not None else BagReadStats()
    bag = Path(path)
    with open_bag(bag) as reader:
        topics = {name: info.msgtype for name, info in reader.topics.items() if info.msgtype}
        image_topic = select_image_topic(topics, config, bag)
        info_topic = select_camera_info_topic(topics, image_topic, config, bag)
        pose_topic = _select_pose_topic(topics, config, bag) if config.pose_source == "topic" else None
        if pose_topic is not None and config.pose_topic is None:
            config = dataclasses.replace(config, pose_topic=pose_topic)
        if config.pose_source == "tf" and config.tf_topic not in topics and config.tf_static_topic not in topics:
            raise SeglocError(
                f"{bag}: no {config.tf_topic} or {config.tf_static_topic} topic for pose_source='tf'; "
                f"use pose_source='topic' with one of: {', '.join(_topics_of_type(topics, POSE_TYPES)) or 'no pose topics either'}"
            )

        # Pass 1: intrinsics and poses (small messages).
        poses = _PoseSource(config, bag)
        cameras = _CameraTrack()
        wanted = {info_topic, config.tf_static_topic}
        if config.pose_source == "topic":
            wanted.add(pose_topic)
        if poses.needs_camera_frame or config.pose_source == "tf":
            wanted.add(config.tf_topic)  # the extrinsics may be published on /tf too
        connections = [c for c in reader.connections if c.topic in wanted]
        for connection, bag_time, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == info_topic:
                cameras.add(_message_stamp(msg, bag_time, config.use_bag_time), msg)
            elif connection.msgtype == TF_TYPE and connection.topic in (config.tf_topic, config.tf_static_topic):
                poses.add_tf(msg, static=connection.topic == config.tf_static_topic, bag_time=bag_time)
            elif connection.topic == pose_topic:
                poses.add_pose(msg, connection.msgtype, _message_stamp(msg, bag_time, config.use_bag_time))
        if not cameras.messages:
            raise SeglocError(f"{bag}: the CameraInfo topic {info_topic} has no messages")
        if config.pose_source == "topic" and (poses.series is None or len(poses.series) == 0):
            raise SeglocError(f"{bag}: the pose topic {pose_topic} has no messages")

        # Pass 2: images, streamed.
        start = reader.start_time + seconds_to_ns(config.start_offset) if config.start_offset is not None else None
        stop = reader.start_time + seconds_to_ns(config.end_offset) + 1 if config.end_offset is not None else None
        image_connections = [c for c in reader.connections if c.topic == image_topic]
        stats.total_image_messages = sum(max(0, c.msgcount) for c in image_connections)
        index = 0
        names: set[str] = set()
        for number, (connection, bag_time, raw) in enumerate(reader.messages(connections=image_connections, start=start, stop=stop)):
            stats.image_messages += 1
            if number % config.every_nth:
                stats.skipped_every_nth += 1
                continue
            msg = reader.deserialize(raw, connection.msgtype)
            stamp = _message_stamp(msg, bag_time, config.use_bag_time)
            camera_frame = (
                config.camera_frame or normalize_frame(msg.header.frame_id) or normalize_frame(cameras.messages[0].header.frame_id)
            )
            if not camera_frame and poses.needs_camera_frame:
                raise SeglocError(f"{bag}: the images on {image_topic} have no header frame_id; set camera_frame")
            try:
                world_from_cam = poses.world_from_cam(stamp, camera_frame)
            except PoseLookupError as exc:
                if exc.reason == "gap":
                    stats.rejected_pose_gap += 1
                else:
                    stats.rejected_outside_pose_range += 1
                if len(stats.first_rejections) < 3:
                    stats.first_rejections.append(str(exc))
                continue
            name = config.image_name.format(stamp_ns=stamp, index=index)
            if name in names:
                stats.skipped_duplicate_names += 1
                logger.warning("%s: a second image named %s (same stamp); skipped", bag, name)
                continue
            names.add(name)
            image = image_from_msg(msg, connection.msgtype)
            camera = cameras.camera_at(stamp, (image.shape[1], image.shape[0]))
            record = ImageRecord(name, world_from_cam.inverse(), camera, stamp / NS_PER_S)
            index += 1
            stats.records += 1
            yield record, image
        _log_summary(bag, stats, config, poses)


def _log_summary(bag: Path, stats: BagReadStats, config: BagReadConfig, poses: _PoseSource) -> None:
    rejected = stats.rejected_outside_pose_range + stats.rejected_pose_gap
    logger.info(
        "%s: %d images with poses from %d image messages (%d skipped by every_nth=%d, %d rejected)",
        bag,
        stats.records,
        stats.image_messages,
        stats.skipped_every_nth,
        config.every_nth,
        rejected,
    )
    if rejected:
        logger.warning(
            "%s: rejected %d image(s) without a pose: %d outside the pose time range, %d farther than %.3f s from a pose sample; e.g. %s",
            bag,
            rejected,
            stats.rejected_outside_pose_range,
            stats.rejected_pose_gap,
            config.max_time_offset,
            " | ".join(stats.first_rejections),
        )
    if stats.records == 0 and rejected:
        raise SeglocError(
            f"{bag}: no image could be matched to a pose from {poses.describe()} "
            f"({stats.rejected_outside_pose_range} outside the pose time range, {stats.rejected_pose_gap} too far from a pose sample); "
            f"e.g. {stats.first_rejections[0]}"
        )


def bag_to_dataset(
    bag: str | Path,
    out_dir: str | Path,
    config: BagReadConfig | None = None,
    query_every: int = 0,
    query_bag: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a dataset folder from a bag (images, intrinsics, ground truth poses).

    Args:
        bag: the recording (see :func:`read_bag`).
        out_dir: dataset folder to write.
        config: reading options.
        query_every: with N > 0, every N-th image with a pose (the N-th, 2N-th...) goes to
            ``query.txt``, the others to ``mapping.txt``; 0: all mapping.
        query_bag: a second recording whose images all become queries (e.g. a later run of the
            same route); names are then prefixed ``mapping/`` and ``query/``.
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``out_dir``.
    """
    from tqdm import tqdm

    config = config or BagReadConfig()
    if query_every < 0:
        raise SeglocError(f"query_every must be >= 0, got {query_every}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SeglocError(f"{out_dir} exists already; pass overwrite to replace it")
    sources = [(Path(bag), "mapping")]
    if query_bag is not None:
        sources.append((Path(query_bag), "query"))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.images.", dir=out_dir.parent))
    mapping: list[ImageRecord] = []
    query: list[ImageRecord] = []
    try:
        for source, split in sources:
            split_config = config if query_bag is None else dataclasses.replace(config, image_name=f"{split}/{config.image_name}")
            stats = BagReadStats()
            with tqdm(desc=f"{source.name} -> {out_dir.name}", unit="image") as progress:
                for i, (record, image) in enumerate(read_bag(source, split_config, stats)):
                    if progress.total is None and stats.total_image_messages:
                        progress.total = -(-stats.total_image_messages // config.every_nth)
                    save_image(staging / record.name, image)
                    is_query = split == "query" or (query_every > 0 and i % query_every == query_every - 1)
                    (query if is_query else mapping).append(record)
                    progress.update()
        logger.info("bag -> dataset %s: %d mapping, %d query images", out_dir, len(mapping), len(query))
        return write_dataset(out_dir, mapping, query, source_image_dir=staging, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
