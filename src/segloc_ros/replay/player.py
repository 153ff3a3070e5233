"""Playing a bag to ROS 2 nodes: :class:`BagPlayer` publishes a bag's messages with ``/clock``.

The player publishes a bag's messages (sqlite3, mcap, or ROS 1 converted to CDR) in log-time
order with their original content, stamps included, at ``rate`` times the recorded speed, and
``/clock`` (rosgraph_msgs/Clock, the bag's log time) before every message and ``clock_hz`` times
a second in between, so that nodes can run with ``use_sim_time``. QoS as the sources of those
topics use: images (Image, CompressedImage) best effort (``qos_profile_sensor_data``, as camera
drivers); ``/tf_static`` and every topic the bag recorded as latched: reliable, TRANSIENT_LOCAL,
all its messages kept for late subscribers; everything else (camera_info, /tf, odometry)
reliable with a depth of 100 (a best-effort subscriber matches it too); ``/clock`` best effort,
depth 1, as ``ros2 bag play`` does.

rclpy is imported when a player is made, not with this module.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloc.data.rosbag import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    open_bag,
)
from segloc.errors import SeglocError

logger = logging.getLogger("segloc")

IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
STATIC_TOPICS = ("/tf_static",)
DEFAULT_DEPTH = 100


def message_class(msgtype: str) -> type:
    """The rclpy message class of a type name such as ``sensor_msgs/msg/Image``."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise SeglocError(f"message type {msgtype} is not available to rclpy here ({exc}); is its interface package installed?") from None


@dataclass
class PlaybackStats:
    """What :meth:`BagPlayer.play` published.

    Attributes:
        messages: topic -> messages published.
        image_publish_times_ns: image header stamp -> wall-clock time (``time.time_ns()``) just
            before its message was published.
        skipped_topics: topics not played, with the reason.
        wall_time_s: seconds the playback took.
        bag_time_s: log-time span of the played messages, seconds.
    """

    messages: dict[str, int] = field(default_factory=dict)
    image_publish_times_ns: dict[int, int] = field(default_factory=dict)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    bag_time_s: float = 0.0

    @property
    def images(self) -> int:
        return len(self.image_publish_times_ns)


class BagPlayer:
    """Publishes a bag's messages in log-time order at ``rate`` times the recorded speed, with ``/clock``.

    Args:
        node: the rclpy node that owns the publishers (it needs no spinning).
        bag: rosbag2 folder (sqlite3 or mcap) or ROS 1 ``.bag`` file.
        rate: playback speed factor (2 = twice as fast as recorded).
        topics: only these topics (None: all with a message type rclpy knows).
        clock: publish ``/clock``.
        clock_hz: ``/clock`` messages per wall-clock second between the bag's messages.
    """

    def __init__(
        self, node: Any, bag: str | Path, rate: float = 1.0, topics: Sequence[str] | None = None, clock: bool = True, clock_hz: float = 50.0
    ) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rosbags.interfaces import QosDurability
        from rosgraph_msgs.msg import Clock

        if not rate > 0:
            raise SeglocError(f"the playback rate must be > 0, got {rate}")
        if not clock_hz > 0:
            raise SeglocError(f"clock_hz must be > 0, got {clock_hz}")
        self.node, self.bag, self.rate, self.clock_hz = node, Path(bag), float(rate), float(clock_hz)
        self.stats = PlaybackStats()
        self._publishers: dict[str, Any] = {}
        self._image_topics: set[str] = set()
        with open_bag(self.bag) as reader:
            available = {c.topic: c for c in reader.connections}
            counts: dict[str, int] = {}
            for connection in reader.connections:
                counts[connection.topic] = counts.get(connection.topic, 0) + max(0, connection.msgcount)
        missing = sorted(set(topics or ()) - set(available))
        if missing:
            listing = ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(available.items()))
            raise SeglocError(f"{self.bag}: no topic {', '.join(missing)} to play; topics: {listing}")
        for topic, connection in sorted(available.items()):
            if topics is not None and topic not in topics:
                continue
            try:
                msg_class = message_class(connection.msgtype)
            except SeglocError as exc:
                self.stats.skipped_topics[topic] = str(exc)
                logger.warning("%s: not playing %s: %s", self.bag, topic, exc)
                continue
            offered = getattr(connection.ext, "offered_qos_profiles", None) or []
            latched = topic in STATIC_TOPICS or any(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
            if connection.msgtype in IMAGE_TYPES:
                qos = qos_profile_sensor_data
                self._image_topics.add(topic)
            elif latched:
                depth = max(1, counts.get(topic, 1))
                qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            else:
                qos = QoSProfile(depth=DEFAULT_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
            self._publishers[topic] = node.create_publisher(msg_class, topic, qos)
        if not self._publishers:
            raise SeglocError(f"{self.bag}: nothing to play")
        self._clock_publisher = None
        if clock:
            self._clock_class = Clock
            self._clock_publisher = node.create_publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))

    @property
    def topics(self) -> list[str]:
        return sorted(self._publishers)

    @property
    def image_topics(self) -> list[str]:
        return sorted(self._image_topics)

    def wait_for_subscribers(self, topics: Sequence[str], timeout_s: float) -> None:
        """Wait until each of ``topics`` (played ones) has a subscriber, so that its first messages are not lost.

        Raises:
            SeglocError: a topic still has no subscriber after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        waiting = [t for t in topics if t in self._publishers]
        while waiting:
            waiting = [t for t in waiting if self._publishers[t].get_subscription_count() < 1]
            if waiting and time.monotonic() > deadline:
                raise SeglocError(
                    f"no subscriber on {', '.join(waiting)} after {timeout_s:g} s: are the nodes running, in this ROS domain?"
                )
            time.sleep(0.05)

    def _publish_clock(self, stamp_ns: int) -> None:
        if self._clock_publisher is not None:
            from segloc_ros.conversions import time_msg_from_ns

            self._clock_publisher.publish(self._clock_class(clock=time_msg_from_ns(stamp_ns)))

    def _wait_until(self, due: float, start_wall: float, first_ns: int, until_ns: int) -> None:
        """Sleep until the monotonic time ``due``, publishing /clock (capped at ``until_ns``) ``clock_hz`` times a second."""
        period = 1.0 / self.clock_hz
        while (remaining := due - time.monotonic()) > 0:
            time.sleep(min(remaining, period))
            if self._clock_publisher is not None and time.monotonic() < due:
                self._publish_clock(min(until_ns, first_ns + int((time.monotonic() - start_wall) * self.rate * 1e9)))

    def play(self) -> PlaybackStats:
        """Publish every message once, in log-time order; returns (and keeps in ``stats``) what was published."""
        stats = self.stats
        start_wall = time.monotonic()
        first_ns = last_ns = None
        with open_bag(self.bag) as reader:
            connections = [c for c in reader.connections if c.topic in self._publishers]
            for connection, log_time, raw in reader.messages(connections=connections):
                if first_ns is None:
                    first_ns = log_time
                last_ns = log_time
                self._wait_until(start_wall + (log_time - first_ns) / 1e9 / self.rate, start_wall, first_ns, log_time)
                self._publish_clock(log_time)
                data = bytes(raw) if reader.is2 else bytes(reader.typestore.ros1_to_cdr(raw, connection.msgtype))
                if connection.topic in self._image_topics:
                    stamp = reader.deserialize(raw, connection.msgtype).header.stamp
                    stats.image_publish_times_ns[int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)] = time.time_ns()
                self._publishers[connection.topic].publish(data)
                stats.messages[connection.topic] = stats.messages.get(connection.topic, 0) + 1
        stats.wall_time_s = time.monotonic() - start_wall
        stats.bag_time_s = 0.0 if first_ns is None else (last_ns - first_ns) / 1e9
        logger.info(
            "played %d messages of %s in %.1f s (%.1f s of recording)",
            sum(stats.messages.values()),
            self.bag,
            stats.wall_time_s,
            stats.bag_time_s,
        )
        return stats

    def close(self) -> None:
        for publisher in self._publishers.values():
            self.node.destroy_publisher(publisher)
        if self._clock_publisher is not None:
            self.node.destroy_publisher(self._clock_publisher)
        self._publishers = {}
        self._clock_publisher = None
