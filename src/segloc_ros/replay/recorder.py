"""Recording ROS 2 topics to a rosbag2: :class:`TopicRecorder`.

The recorder subscribes to topics (raw CDR, no deserialisation) and writes each message as it
arrives to a new rosbag2 with the ``rosbags`` writer; the log time is the wall-clock receive
time (``time.time_ns()``). Subscriptions are reliable unless a publisher of the topic offers
only best effort, and volatile (an old latched ``pose`` of a previous run is not recorded).

rclpy is imported when a recorder is made, not with this module.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segloc.errors import SeglocError
from segloc_ros.replay.player import message_class

logger = logging.getLogger("segloc")

#: What the recorder subscribes to by default: topic -> message type (the nodes' outputs).
OUTPUT_TOPICS: dict[str, str] = {
    "pose": "geometry_msgs/msg/PoseWithCovarianceStamped",
    "/tf": "tf2_msgs/msg/TFMessage",
    "segloc/localized": "std_msgs/msg/Bool",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


class TopicRecorder:
    """Writes the messages of some topics, as they arrive, to a new rosbag2 (raw CDR, wall-clock log times).

    Subscription callbacks only queue the bytes with their receive time; one writer thread owns
    the bag (SQLite connections stay in the thread that made them) and writes in arrival order.

    Args:
        node: the rclpy node for the subscriptions; it must be spun.
        path: the rosbag2 folder to create.
        topics: topic (relative names resolve in the node's namespace) -> message type.
        storage: ``sqlite3`` or ``mcap``.
    """

    def __init__(self, node: Any, path: str | Path, topics: Mapping[str, str], storage: str = "sqlite3") -> None:
        from rosbags.typesys import Stores, get_typestore

        if storage not in ("sqlite3", "mcap"):
            raise SeglocError(f"storage must be sqlite3 or mcap, got {storage!r}")
        self.node, self.path, self.storage = node, Path(path), storage
        if self.path.exists():
            raise SeglocError(f"{self.path} exists already; a bag is never overwritten")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._store = get_typestore(Stores.ROS2_JAZZY)
        self.topics = {node.resolve_topic_name(topic): msgtype for topic, msgtype in topics.items()}
        classes = {topic: message_class(msgtype) for topic, msgtype in self.topics.items()}
        unknown = sorted(msgtype for msgtype in self.topics.values() if msgtype not in self._store.types)
        if unknown:
            raise SeglocError(f"cannot record {', '.join(unknown)}: not a message type of the rosbags ROS 2 Jazzy typestore")
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(self.topics, 0)
        self.last_receive: dict[str, float] = {}
        self._queue: queue.SimpleQueue[tuple[str, int, bytes] | None] = queue.SimpleQueue()
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_loop, name="segloc_replay_recorder", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            raise SeglocError(f"cannot write the bag {self.path}: {self._error}") from self._error
        self._subscriptions = [
            node.create_subscription(classes[topic], topic, self._callback(topic), self._qos(topic), raw=True) for topic in self.topics
        ]

    def _write_loop(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        try:
            plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
            writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
            writer.open()
            connections = {topic: writer.add_connection(topic, msgtype, typestore=self._store) for topic, msgtype in self.topics.items()}
        except Exception as exc:
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while (item := self._queue.get()) is not None:
                topic, log_time, raw = item
                writer.write(connections[topic], log_time, raw)
        except Exception as exc:
            self._error = exc
        finally:
            writer.close()

    def _qos(self, topic: str) -> Any:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        offered = [info.qos_profile.reliability for info in self.node.get_publishers_info_by_topic(topic)]
        best_effort = any(reliability == ReliabilityPolicy.BEST_EFFORT for reliability in offered)
        return QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE)

    def _callback(self, topic: str):
        def receive(raw: bytes) -> None:
            self._queue.put((topic, time.time_ns(), raw))
            with self._lock:
                self.counts[topic] += 1
                self.last_receive[topic] = time.monotonic()

        return receive

    def count(self, topic: str) -> int:
        """Messages recorded on ``topic`` so far (relative names resolve as in the constructor)."""
        with self._lock:
            return self.counts.get(self.node.resolve_topic_name(topic), 0)

    def wait_for_publishers(self, topics: Sequence[str], timeout_s: float) -> None:
        """Wait until each of ``topics`` has a publisher.

        Raises:
            SeglocError: one has none after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        waiting = [self.node.resolve_topic_name(t) for t in topics]
        while waiting:
            waiting = [t for t in waiting if self.node.count_publishers(t) < 1]
            if waiting and time.monotonic() > deadline:
                raise SeglocError(
                    f"nothing publishes {', '.join(waiting)} after {timeout_s:g} s: are the nodes running, in this ROS domain?"
                )
            time.sleep(0.05)

    def close(self) -> dict[str, int]:
        """Unsubscribe and finish the bag; returns topic -> messages recorded."""
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise SeglocError(f"writing the bag {self.path} failed: {self._error}") from self._error
        with self._lock:
            counts = dict(self.counts)
        logger.info("recorded %s into %s", ", ".join(f"{n} x {t}" for t, n in counts.items()), self.path)
        return counts
