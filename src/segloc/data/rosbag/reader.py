"""Reading robot recordings: rosbag2 (sqlite3, mcap) and ROS 1 bags, with ``rosbags``.

:func:`read_bag` yields one :class:`ImageRecord` and its RGB pixels per image message that can
be matched to a pose; :func:`bag_to_dataset` writes them as a dataset folder. Read:

- images: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (encodings in
  :mod:`segloc.data.rosbag.messages`);
- intrinsics: ``sensor_msgs/CameraInfo`` (``k`` and ``d`` of the raw image; plumb_bob or
  rational_polynomial);
- poses: the TF tree from ``/tf`` and ``/tf_static`` (``world_frame -> camera frame``), or a
  pose topic (``PoseStamped``, ``PoseWithCovarianceStamped``, ``Odometry``,
  ``TransformStamped``) giving ``world_from_base`` (with the camera extrinsics from
  ``/tf_static`` or the config) or ``world_from_cam``.

Poses are interpolated at each image's header stamp (slerp / linear between the two
neighbouring samples, never extrapolated); an image outside the pose time range, or farther
than ``max_time_offset`` from any pose sample, is rejected, counted and logged.

Also here: :func:`open_bag` and the topic selection (:func:`select_image_topic`,
:func:`select_camera_info_topic`) that the evaluation and the live replay share.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc.config import check_options, option
from segloc.data.dataset import ImageRecord, is_dataset_folder, save_image, write_dataset
from segloc.data.rosbag.messages import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    NS_PER_S,
    POSE_TYPES,
    TF_TYPE,
    _same_camera_info,
    camera_from_camera_info,
    image_from_msg,
    rigid_from_pose_msg,
    rigid_from_transform_msg,
    seconds_to_ns,
    stamp_to_ns,
)
from segloc.data.tf_buffer import PoseLookupError, PoseSeries, TfBuffer, normalize_frame
from segloc.errors import SeglocError
from segloc.fileio import check_output, describe_missing, temp_dir_beside
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")


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
    max_time_offset: float = option(0.05, ge=0)
    every_nth: int = option(1, ge=1)
    start_offset: float | None = option(None, ge=0, note="null: from the start")
    end_offset: float | None = option(None, ge=0, note="null: to the end")
    use_bag_time: bool = False
    image_name: str = "{stamp_ns}.png"

    def __post_init__(self) -> None:
        check_options(self, "bag")
        if self.pose_source not in ("tf", "topic"):
            raise SeglocError(f"pose_source must be 'tf' or 'topic', got {self.pose_source!r}")
        if self.pose_topic_frame not in ("base", "camera"):
            raise SeglocError(f"pose_topic_frame must be 'base' or 'camera', got {self.pose_topic_frame!r}")
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


@contextmanager
def open_bag(path: Path):
    """Open a rosbag2 folder (or a file in it) or a ROS 1 ``.bag`` with ``rosbags``; yields the reader.

    Raises:
        SeglocError: the path does not exist, is not a bag, or the bag cannot be opened.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    if describe_missing(path):
        raise SeglocError(f"bag {path} {describe_missing(path)}")
    if path.is_file() and path.suffix in (".db3", ".mcap", ".yaml"):
        if not (path.parent / "metadata.yaml").is_file():
            raise SeglocError(
                f"{path} is a {path.suffix} file outside a rosbag2 folder (no metadata.yaml beside it): "
                "pass the rosbag2 folder that holds metadata.yaml and the storage files"
            )
        path = path.parent  # a file inside a rosbag2 folder
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
    progress: bool = True,
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
        overwrite: replace an existing dataset folder ``out_dir`` (never another folder, nor a bag).
        progress: show a progress bar.

    Returns:
        ``out_dir``.
    """
    from tqdm import tqdm

    config = config or BagReadConfig()
    if query_every < 0:
        raise SeglocError(f"query_every must be >= 0, got {query_every}")
    out_dir = Path(out_dir)
    sources = [(Path(bag), "mapping")]
    if query_bag is not None:
        sources.append((Path(query_bag), "query"))
    inputs = [(source, "the bag") for source, _ in sources]
    check_output(out_dir, "replace", inputs=inputs, overwrite=overwrite, replaceable=is_dataset_folder, what="dataset folder")
    staging = temp_dir_beside(out_dir, "images")
    mapping: list[ImageRecord] = []
    query: list[ImageRecord] = []
    try:
        for source, split in sources:
            split_config = config if query_bag is None else dataclasses.replace(config, image_name=f"{split}/{config.image_name}")
            stats = BagReadStats()
            with tqdm(desc=f"{source.name} -> {out_dir.name}", unit="image", disable=not progress) as bar:
                for i, (record, image) in enumerate(read_bag(source, split_config, stats)):
                    if bar.total is None and stats.total_image_messages:
                        bar.total = -(-stats.total_image_messages // config.every_nth)
                    save_image(staging / record.name, image)
                    is_query = split == "query" or (query_every > 0 and i % query_every == query_every - 1)
                    (query if is_query else mapping).append(record)
                    bar.update()
        logger.info("bag -> dataset %s: %d mapping, %d query images", out_dir, len(mapping), len(query))
        return write_dataset(out_dir, mapping, query, source_image_dir=staging, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
