"""Robot recordings: rosbag2 (sqlite3, mcap) and ROS 1 bags, read and written with ``rosbags``.

No ROS installation is needed: the ``rosbags`` package parses and serialises the messages.

- :mod:`segloc.data.rosbag.messages`: conversions between ROS messages and segloc types
  (stamps, transforms, ``CameraInfo`` <-> :class:`~segloc.geometry.Camera`, image decoding),
  and the message factory the writer uses.
- :mod:`segloc.data.rosbag.reader`: :func:`read_bag` (images matched to poses from TF or a pose
  topic), :func:`bag_to_dataset`, :func:`open_bag` and the topic selection.
- :mod:`segloc.data.rosbag.writer`: :func:`write_bag` (camera, odometry, ground truth, TF).

The public names of the three modules are re-exported here.
"""

from segloc.data.rosbag.messages import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    NS_PER_S,
    POSE_TYPES,
    RAW_ENCODINGS,
    TF_TYPE,
    _MessageFactory,  # noqa: F401 (not public; tests build messages with it)
    camera_from_camera_info,
    camera_info_values,
    image_from_msg,
    rigid_from_pose_msg,
    rigid_from_transform_msg,
    seconds_to_ns,
    stamp_to_ns,
)
from segloc.data.rosbag.reader import (
    BagReadConfig,
    BagReadStats,
    bag_to_dataset,
    describe_topics,
    open_bag,
    read_bag,
    select_camera_info_topic,
    select_image_topic,
)
from segloc.data.rosbag.writer import BagFrame, BagWriteConfig, write_bag

__all__ = [
    "CAMERA_INFO_TYPE",
    "COMPRESSED_IMAGE_TYPE",
    "IMAGE_TYPE",
    "NS_PER_S",
    "POSE_TYPES",
    "RAW_ENCODINGS",
    "TF_TYPE",
    "BagFrame",
    "BagReadConfig",
    "BagReadStats",
    "BagWriteConfig",
    "bag_to_dataset",
    "camera_from_camera_info",
    "camera_info_values",
    "describe_topics",
    "image_from_msg",
    "open_bag",
    "read_bag",
    "rigid_from_pose_msg",
    "rigid_from_transform_msg",
    "seconds_to_ns",
    "select_camera_info_topic",
    "select_image_topic",
    "stamp_to_ns",
    "write_bag",
]
