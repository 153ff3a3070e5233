"""Conversions between ROS 2 messages (rclpy) and segloc types: the one module where they live.

Nodes import message conversions from here only. The field-level conversions that also serve
the rosbag reader (which parses messages with ``rosbags``, without ROS) live in
:mod:`segloc.data.rosbag` and work on any object with the standard fields; they are re-exported
here unchanged: :func:`stamp_to_ns`, :func:`rigid_from_pose_msg`,
:func:`rigid_from_transform_msg`, :func:`camera_from_camera_info`. This module adds what needs
the rclpy message classes: building messages, and picking the right reader for a message type.

Conventions:

- Stamps: a ``stamp`` argument is an ``int`` (nanoseconds since the epoch), a
  ``builtin_interfaces/Time`` or an ``rclpy.time.Time``.
- Poses: :class:`~segloc.geometry.transforms.Rigid3` ``parent_from_child`` is the pose of
  the child in the parent (header) frame; ROS quaternion fields are named, so no order issue.
- Covariances: (6, 6) in segloc's convention (:mod:`segloc.localize.frames`), which is ROS's
  ``PoseWithCovariance`` order ``(x, y, z, rotX, rotY, rotZ)`` with fixed (parent) axes;
  messages hold them as 36 row-major float64 values.
- Pixels: segloc cameras use COLMAP's convention (top-left pixel centre at (0.5, 0.5)),
  ``CameraInfo`` OpenCV's (0, 0); the principal point shifts by 0.5 px both ways.
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import (
    Point,
    Pose,
    PoseArray,
    PoseWithCovariance,
    PoseWithCovarianceStamped,
    Quaternion,
    Transform,
    TransformStamped,
    Vector3,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from segloc.data.rosbag import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    NS_PER_S,
    camera_from_camera_info,
    camera_info_values,
    image_from_msg,
    rigid_from_pose_msg,
    rigid_from_transform_msg,
    stamp_to_ns,
)
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.localize.frames import check_pose_covariance

__all__ = [
    "raw_image_msg",
    "WRITE_ENCODINGS",
    "camera_from_camera_info",
    "camera_info_msg_from_camera",
    "diagnostic_array_msg",
    "diagnostic_level",
    "diagnostic_status_msg",
    "header_msg",
    "image_msg_from_array",
    "ns_from_stamp",
    "pose_and_covariance_from_msg",
    "pose_array_msg",
    "pose_msg_from_rigid",
    "pose_with_covariance_stamped_msg",
    "rgb_from_image_msg",
    "rigid_from_pose_msg",
    "rigid_from_transform_msg",
    "rigid_from_transform_stamped_msg",
    "stamp_to_ns",
    "tf_message",
    "time_msg_from_ns",
    "transform_msg_from_rigid",
    "transform_stamped_msg",
]

_INT32_MAX = 2**31 - 1

#: Encodings :func:`image_msg_from_array` writes: encoding -> (channels, dtype). Reading accepts
#: more (:data:`segloc.data.rosbag.RAW_ENCODINGS`).
WRITE_ENCODINGS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "uint8"),
    "bgr8": (3, "uint8"),
    "mono8": (1, "uint8"),
    "8UC1": (1, "uint8"),
    "mono16": (1, "uint16"),
    "16UC1": (1, "uint16"),
}

_DIAGNOSTIC_LEVELS = {
    "ok": DiagnosticStatus.OK,
    "warn": DiagnosticStatus.WARN,
    "error": DiagnosticStatus.ERROR,
    "stale": DiagnosticStatus.STALE,
}


# --- time and headers -----------------------------------------------------------------------
def time_msg_from_ns(stamp_ns: int) -> Time:
    """A ``builtin_interfaces/Time`` from nanoseconds since the epoch (the inverse of :func:`stamp_to_ns`).

    Raises:
        SeglocError: a negative stamp, or one past 2038 (``sec`` is an int32).
    """
    stamp_ns = int(stamp_ns)
    sec, nanosec = divmod(stamp_ns, NS_PER_S)
    if stamp_ns < 0 or sec > _INT32_MAX:
        raise SeglocError(f"stamp {stamp_ns} ns is outside the range of builtin_interfaces/Time (0 to {_INT32_MAX} s)")
    return Time(sec=sec, nanosec=nanosec)


def ns_from_stamp(stamp: Any) -> int:
    """Nanoseconds of a stamp given as ``int`` nanoseconds, ``builtin_interfaces/Time`` or ``rclpy.time.Time``."""
    if isinstance(stamp, (int, np.integer)):
        return int(stamp)
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return stamp_to_ns(stamp)
    if hasattr(stamp, "nanoseconds"):  # rclpy.time.Time
        return int(stamp.nanoseconds)
    raise SeglocError(f"a stamp must be int nanoseconds, builtin_interfaces/Time or rclpy.time.Time, got {type(stamp).__name__}")


def header_msg(stamp: Any, frame_id: str) -> Header:
    """A ``std_msgs/Header`` with ``stamp`` (see the module docstring) and ``frame_id``."""
    return Header(stamp=time_msg_from_ns(ns_from_stamp(stamp)), frame_id=str(frame_id))


# --- images ---------------------------------------------------------------------------------
def rgb_from_image_msg(msg: Image | CompressedImage) -> np.ndarray:
    """(H, W, 3) RGB uint8 pixels of a ``sensor_msgs/Image`` or ``CompressedImage``.

    Delegates to :func:`segloc.data.rosbag.image_from_msg` (encodings, row padding, 16-bit
    scaling, grey to 3 channels).

    Raises:
        SeglocError: unsupported encoding, inconsistent size, or undecodable compressed data.
    """
    msgtype = COMPRESSED_IMAGE_TYPE if isinstance(msg, CompressedImage) else IMAGE_TYPE
    return image_from_msg(msg, msgtype)


def image_msg_from_array(pixels: np.ndarray, stamp: Any, frame_id: str, encoding: str | None = None) -> Image:
    """A ``sensor_msgs/Image`` from an array, e.g. a debug view or a label image.

    Args:
        pixels: (H, W, 3) uint8 RGB, or (H, W) / (H, W, 1) uint8 or uint16 single-channel
            (labels, grey).
        stamp: the header stamp.
        frame_id: the header frame, usually the camera's optical frame.
        encoding: one of :data:`WRITE_ENCODINGS`; None: ``rgb8`` for 3 channels, ``mono8`` /
            ``mono16`` for one channel of uint8 / uint16. ``bgr8`` reorders the RGB input.

    Returns:
        The message, little-endian, rows unpadded (``step = width * channels * bytes``).

    Raises:
        SeglocError: a shape or dtype that does not fit the encoding.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    channels = 1 if pixels.ndim == 2 else (pixels.shape[2] if pixels.ndim == 3 else -1)
    if encoding is None:
        if channels == 3 and pixels.dtype == np.uint8:
            encoding = "rgb8"
        elif channels == 1 and pixels.dtype in (np.uint8, np.uint16):
            encoding = "mono8" if pixels.dtype == np.uint8 else "mono16"
        else:
            raise SeglocError(
                f"cannot pick an image encoding for an array of shape {pixels.shape} and dtype {pixels.dtype}; expected (H, W, 3) uint8 or (H, W) uint8/uint16"
            )
    if encoding not in WRITE_ENCODINGS:
        raise SeglocError(f"image encoding {encoding!r} cannot be written; supported: {', '.join(WRITE_ENCODINGS)}")
    expected_channels, dtype_name = WRITE_ENCODINGS[encoding]
    if channels != expected_channels or pixels.dtype != np.dtype(dtype_name):
        raise SeglocError(
            f"encoding {encoding} needs {expected_channels} channel(s) of {dtype_name}, got an array of shape {pixels.shape} and dtype {pixels.dtype}"
        )
    if encoding == "bgr8":
        pixels = pixels[:, :, ::-1]
    pixels = np.ascontiguousarray(pixels, dtype=np.dtype(dtype_name).newbyteorder("<"))
    height, width = pixels.shape[:2]
    data = array.array("B")
    data.frombytes(pixels.tobytes())  # array.array: rclpy takes it without a per-byte check
    return Image(
        header=header_msg(stamp, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * expected_channels * pixels.dtype.itemsize,
        data=data,
    )


# --- cameras --------------------------------------------------------------------------------
def camera_info_msg_from_camera(camera: Camera, stamp: Any, frame_id: str) -> CameraInfo:
    """A ``sensor_msgs/CameraInfo`` for a segloc camera (principal point shifted by -0.5 px).

    Field values from :func:`segloc.data.rosbag.camera_info_values`: plumb_bob (or
    rational_polynomial) distortion, ``r`` identity, ``p = [K | 0]``. The inverse is
    :func:`camera_from_camera_info`.
    """
    values = camera_info_values(camera)
    return CameraInfo(
        header=header_msg(stamp, frame_id),
        width=int(values["width"]),
        height=int(values["height"]),
        distortion_model=values["distortion_model"],
        d=array.array("d", np.asarray(values["d"], dtype=np.float64).tolist()),
        k=np.asarray(values["k"], dtype=np.float64),
        r=np.asarray(values["r"], dtype=np.float64),
        p=np.asarray(values["p"], dtype=np.float64),
    )


# --- poses and transforms -------------------------------------------------------------------
def _quaternion_msg(rigid: Rigid3) -> Quaternion:
    w, x, y, z = (float(v) for v in rigid.quat_wxyz)
    return Quaternion(x=x, y=y, z=z, w=w)


def pose_msg_from_rigid(frame_from_body: Rigid3) -> Pose:
    """A ``geometry_msgs/Pose`` (the body's pose in the header frame); inverse of :func:`rigid_from_pose_msg`."""
    x, y, z = (float(v) for v in frame_from_body.translation)
    return Pose(position=Point(x=x, y=y, z=z), orientation=_quaternion_msg(frame_from_body))


def transform_msg_from_rigid(parent_from_child: Rigid3) -> Transform:
    """A ``geometry_msgs/Transform``; inverse of :func:`rigid_from_transform_msg`."""
    x, y, z = (float(v) for v in parent_from_child.translation)
    return Transform(translation=Vector3(x=x, y=y, z=z), rotation=_quaternion_msg(parent_from_child))


def transform_stamped_msg(parent_from_child: Rigid3, stamp: Any, parent_frame: str, child_frame: str) -> TransformStamped:
    """A ``geometry_msgs/TransformStamped`` for the TF edge ``parent_frame -> child_frame``.

    Args:
        parent_from_child: maps child-frame points into the parent frame, e.g. ``map_from_odom``
            for the edge ``map -> odom``.
        stamp: the header stamp (for a localizer: the image's stamp).
        parent_frame, child_frame: TF frame names (``header.frame_id``, ``child_frame_id``).
    """
    if not parent_frame or not child_frame or parent_frame == child_frame:
        raise SeglocError(f"a TF edge needs two different, non-empty frame names, got {parent_frame!r} -> {child_frame!r}")
    return TransformStamped(
        header=header_msg(stamp, parent_frame),
        child_frame_id=str(child_frame),
        transform=transform_msg_from_rigid(parent_from_child),
    )


def rigid_from_transform_stamped_msg(msg: TransformStamped) -> Rigid3:
    """``parent_from_child`` of a ``TransformStamped`` (frames and stamp stay in ``msg``)."""
    return rigid_from_transform_msg(msg.transform)


def tf_message(transforms: Iterable[TransformStamped]) -> TFMessage:
    """A ``tf2_msgs/TFMessage`` (what ``/tf`` and ``/tf_static`` carry) from transforms."""
    transforms = list(transforms)
    if not all(isinstance(t, TransformStamped) for t in transforms):
        raise SeglocError("tf_message takes geometry_msgs/TransformStamped messages (see transform_stamped_msg)")
    return TFMessage(transforms=transforms)


def pose_with_covariance_stamped_msg(
    frame_from_body: Rigid3, covariance: np.ndarray, stamp: Any, frame_id: str
) -> PoseWithCovarianceStamped:
    """A ``geometry_msgs/PoseWithCovarianceStamped`` (the localizer's ``pose`` output).

    Args:
        frame_from_body: pose of the body in ``frame_id``, e.g. ``world_from_base`` in ``map``.
        covariance: (6, 6) covariance in segloc's convention = ROS order (x, y, z, rotX, rotY,
            rotZ) about the fixed ``frame_id`` axes; written as 36 row-major values.
        stamp: the header stamp (the image's stamp).
        frame_id: the header frame, e.g. ``map``.

    Raises:
        SeglocError: a covariance that is not a finite symmetric 6x6 matrix.
    """
    covariance = check_pose_covariance(covariance, "the pose covariance to publish")
    return PoseWithCovarianceStamped(
        header=header_msg(stamp, frame_id),
        pose=PoseWithCovariance(pose=pose_msg_from_rigid(frame_from_body), covariance=covariance.reshape(36).copy()),
    )


def pose_and_covariance_from_msg(msg: PoseWithCovariance | PoseWithCovarianceStamped) -> tuple[Rigid3, np.ndarray]:
    """``(frame_from_body, covariance (6, 6))`` of a pose with covariance (e.g. ``initialpose``, ``Odometry.pose``).

    The covariance is returned as stored, reshaped row-major; it is not validated (RViz's
    ``initialpose`` and many drivers publish partly zero matrices).
    """
    if isinstance(msg, PoseWithCovarianceStamped):
        msg = msg.pose
    return rigid_from_pose_msg(msg.pose), np.asarray(msg.covariance, dtype=np.float64).reshape(6, 6).copy()


def pose_array_msg(poses: Sequence[Rigid3], stamp: Any, frame_id: str) -> PoseArray:
    """A ``geometry_msgs/PoseArray`` (e.g. ``segloc/pose_priors``: retrieved ``world_from_cam`` poses in ``map``)."""
    return PoseArray(header=header_msg(stamp, frame_id), poses=[pose_msg_from_rigid(pose) for pose in poses])


# --- diagnostics ----------------------------------------------------------------------------
def diagnostic_level(level: int | str | bytes) -> bytes:
    """The ``DiagnosticStatus.level`` byte of ``"ok" | "warn" | "error" | "stale"`` (any case), 0-3, or a level byte."""
    if isinstance(level, str) and level.lower() in _DIAGNOSTIC_LEVELS:
        return _DIAGNOSTIC_LEVELS[level.lower()]
    if isinstance(level, (int, np.integer)) and not isinstance(level, bool) and 0 <= int(level) <= 3:
        return bytes([int(level)])
    if isinstance(level, bytes) and level in _DIAGNOSTIC_LEVELS.values():
        return level
    raise SeglocError(f"diagnostic level must be one of ok, warn, error, stale (or 0-3), got {level!r}")


def _diagnostic_value(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".6g")
    return str(value)


def diagnostic_status_msg(
    level: int | str | bytes,
    name: str,
    message: str,
    values: Mapping[str, Any] | None = None,
    hardware_id: str = "",
) -> DiagnosticStatus:
    """A ``diagnostic_msgs/DiagnosticStatus``.

    Args:
        level: ``"ok" | "warn" | "error" | "stale"``, 0-3 or a level byte.
        name: the component, e.g. ``"segloc_localizer: localization"``.
        message: one-line summary (for an error: what was wrong and what to do).
        values: key/values in insertion order, e.g. per-stage timings
            ``{"extract_s": 0.012, "pose_s": 0.004, "num_inliers": 57}``; floats are written
            with 6 significant digits, booleans as true/false, others with ``str``.
        hardware_id: the device, if any.
    """
    key_values = [KeyValue(key=str(key), value=_diagnostic_value(value)) for key, value in (values or {}).items()]
    return DiagnosticStatus(
        level=diagnostic_level(level), name=str(name), message=str(message), hardware_id=str(hardware_id), values=key_values
    )


def diagnostic_array_msg(statuses: Iterable[DiagnosticStatus], stamp: Any) -> DiagnosticArray:
    """A ``diagnostic_msgs/DiagnosticArray`` (what ``/diagnostics`` carries); the header frame is empty."""
    return DiagnosticArray(header=header_msg(stamp, ""), status=list(statuses))


def raw_image_msg(header: Any, fields: dict[str, Any]) -> Image:
    """A sensor_msgs/Image with ``header`` and the field values of :mod:`segloc.methods.segloc.packing` (data as bytes)."""
    data = array.array("B")
    data.frombytes(fields["data"])  # array.array: rclpy takes it without a per-byte check
    return Image(
        header=header,
        height=fields["height"],
        width=fields["width"],
        encoding=fields["encoding"],
        is_bigendian=fields["is_bigendian"],
        step=fields["step"],
        data=data,
    )
