"""Conversions between ROS messages and segloc types, for the bag reader and writer and the nodes.

The functions work on any object with the standard fields: messages deserialised by ``rosbags``
(ROS 1 or ROS 2 field names) or rclpy messages. :class:`_MessageFactory` builds and serialises
the messages :func:`segloc.data.rosbag.write_bag` writes.

- stamps: ``builtin_interfaces/Time`` <-> nanoseconds (:func:`stamp_to_ns`, :func:`seconds_to_ns`);
- rigid transforms: ``geometry_msgs/Transform`` and ``Pose`` -> :class:`Rigid3`;
- cameras: ``sensor_msgs/CameraInfo`` <-> :class:`Camera` (:func:`camera_from_camera_info`,
  :func:`camera_info_values`);
- images: ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1, 8UC3, 16UC1)
  or ``sensor_msgs/CompressedImage`` (anything OpenCV decodes: jpeg, png...) -> (H, W, 3) RGB
  uint8 (:func:`image_from_msg`).

Pixel convention: ROS ``CameraInfo`` (like OpenCV) puts the centre of the top-left pixel at
(0, 0), COLMAP and this project at (0.5, 0.5). Reading adds 0.5 to ``cx, cy``; writing
subtracts 0.5. Focal lengths and distortion are unchanged.

Camera models from ``CameraInfo``: no distortion -> PINHOLE; plumb_bob ``[k1, k2, p1, p2, k3]``
-> OPENCV when ``k3 == 0``, else FULL_OPENCV; rational_polynomial -> FULL_OPENCV. Writing maps
every COLMAP model onto plumb_bob (rational_polynomial when k4..k6 are used), so SIMPLE_*
and RADIAL cameras come back as the equivalent PINHOLE / OPENCV camera.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3

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


def _same_camera_info(a: Any, b: Any) -> bool:
    ka, da = _camera_info_arrays(a)
    kb, db = _camera_info_arrays(b)
    return (a.width, a.height, a.distortion_model) == (b.width, b.height, b.distortion_model) and (
        np.array_equal(ka, kb) and np.array_equal(da, db)
    )


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
        from segloc.data.dataset import decode_image

        data = np.asarray(msg.data, dtype=np.uint8).reshape(-1).tobytes()
        decoded = decode_image(data, f"CompressedImage with format {fmt!r}", cv2.IMREAD_UNCHANGED)
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
