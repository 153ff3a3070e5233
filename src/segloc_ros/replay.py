"""Live replay: play a rosbag2 to the segloc nodes, record what they publish, and score it like the offline evaluation.

::

    python -m segloc_ros.replay --bag BAG --map MAP --output OUT [--rate R] [--launch multi|composed|none]
        [--pose-topic /ground_truth/pose | --gt-frames map base_link] [--offline-metrics OFFLINE/metrics.json]

(also installed as ``segloc_replay``). The pieces work alone:

- :class:`BagPlayer` publishes a bag's messages (sqlite3, mcap, or ROS 1 converted to CDR) in
  log-time order with their original content, stamps included, at ``rate`` times the recorded
  speed, and ``/clock`` (rosgraph_msgs/Clock, the bag's log time) before every message and
  ``clock_hz`` times a second in between, so that nodes can run with ``use_sim_time``. QoS as
  the sources of those topics use: images (Image, CompressedImage) best effort
  (``qos_profile_sensor_data``, as camera drivers); ``/tf_static`` and every topic the bag
  recorded as latched: reliable, TRANSIENT_LOCAL, all its messages kept for late subscribers;
  everything else (camera_info, /tf, odometry) reliable with a depth of 100 (a best-effort
  subscriber matches it too); ``/clock`` best effort, depth 1, as ``ros2 bag play`` does.
- :class:`TopicRecorder` subscribes to topics (raw CDR, no deserialisation) and writes each
  message as it arrives to a new rosbag2 with the ``rosbags`` writer; the log time is the
  wall-clock receive time (``time.time_ns()``). Subscriptions are reliable unless a publisher
  of the topic offers only best effort, and volatile (an old latched ``pose`` of a previous run
  is not recorded).
- :class:`NodeLauncher` starts the nodes as child processes, ``multi`` (segmentation_node,
  retrieval_node, pose_refinement_node) or ``composed`` (localization_container), with
  ``FASTRTPS_DEFAULT_PROFILES_FILE=config/fastdds_shm.xml``, ``use_sim_time:=true``, the params
  file and ``map_path``; waits until each lifecycle node reports ``active`` on its
  ``get_state`` service; stops them with SIGINT (then SIGTERM, then SIGKILL). Each node's output
  goes to ``OUT/logs/<name>.log``.
- :func:`run_replay` puts them together: check the bag's ground truth, start the nodes (unless
  ``--launch none``: they run already, e.g. from ``ros2 launch segloc_ros localize.launch.py``),
  wait for them, play the bag, wait for the last outputs (until every played image got its
  ``segloc/localized`` answer, or nothing came for ``idle_timeout`` seconds, or
  ``output_timeout`` passed), stop the nodes, then score the recorded ``pose`` messages with
  :func:`segloc.evaluate.replay.evaluate_pose_messages`, the scoring of ``segloc evaluate --bag``.

Outputs in OUT::

    recorded/          rosbag2 of pose, /tf, segloc/localized, /diagnostics as received
    metrics.json, per_query.json, estimates_tum.txt, groundtruth_tum.txt, *.png
                       the report of segloc evaluate (time_s = image publish -> pose receipt)
    replay.json        what was played and recorded, how the wait ended, the node processes
    comparison.json    live against offline metrics (with --offline-metrics)
    logs/              node output (with --launch multi|composed)
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloc.data.rosbag import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    BagReadConfig,
    open_bag,
    select_camera_info_topic,
    select_image_topic,
)
from segloc.errors import SeglocError
from segloc_ros.nodes import COMPOSED_NODES, CONTAINER_MODULE

logger = logging.getLogger("segloc")

REPO_ROOT = Path(__file__).resolve().parents[2]
FASTDDS_PROFILE = "fastdds_shm.xml"
PARAMS_FILE = "segloc_ros.yaml"
#: What the recorder subscribes to by default: topic -> message type (the nodes' outputs).
OUTPUT_TOPICS: dict[str, str] = {
    "pose": "geometry_msgs/msg/PoseWithCovarianceStamped",
    "/tf": "tf2_msgs/msg/TFMessage",
    "segloc/localized": "std_msgs/msg/Bool",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
#: The lifecycle nodes and the modules that run them (``multi``; ``composed`` runs CONTAINER_MODULE).
NODE_MODULES: dict[str, str] = {node.name: node.module for node in COMPOSED_NODES}
LAUNCH_MODES = ("multi", "composed", "none")
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
STATIC_TOPICS = ("/tf_static",)
DEFAULT_DEPTH = 100
PRIMARY_STATE_ACTIVE = 3  # lifecycle_msgs/msg/State


def config_file(name: str) -> Path | None:
    """A file of the package's ``config/`` folder: in the source tree, else the installed ``share/segloc_ros/config``."""
    candidate = REPO_ROOT / "config" / name
    if candidate.is_file():
        return candidate
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        candidate = Path(get_package_share_directory("segloc_ros")) / "config" / name
    except (PackageNotFoundError, OSError):  # not installed with colcon, or no AMENT_PREFIX_PATH
        return None
    return candidate if candidate.is_file() else None


def message_class(msgtype: str) -> type:
    """The rclpy message class of a type name such as ``sensor_msgs/msg/Image``."""
    try:
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise SeglocError(f"message type {msgtype} is not available to rclpy here ({exc}); is its interface package installed?") from None


# --- playing ---------------------------------------------------------------------------------
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


# --- recording -------------------------------------------------------------------------------
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


# --- the nodes -------------------------------------------------------------------------------
@dataclass
class NodeProcess:
    """A child process running one node or the container."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class NodeLauncher:
    """Starts the segloc nodes as child processes, waits until they are active, stops them.

    Args:
        mode: ``multi`` (one process per node) or ``composed`` (localization_container).
        map_path: the map (``map_path`` parameter of every node).
        log_dir: where ``<process>.log`` files go.
        params_file: ROS params file keyed by node name (None: none).
        parameters: more ``name:=value`` parameters for every node (e.g. ``threads:=1``).
        remaps: ``from:=to`` topic remappings for every node (e.g. ``image:=/camera/image_raw``).
        use_sim_time: run on the ``/clock`` of the player.
        env: environment of the children (default: this process's); ``FASTRTPS_DEFAULT_PROFILES_FILE``
            is set to ``config/fastdds_shm.xml`` unless it is set already.
    """

    def __init__(
        self,
        mode: str,
        map_path: str | Path,
        log_dir: str | Path,
        params_file: str | Path | None = None,
        parameters: Sequence[str] = (),
        remaps: Sequence[str] = (),
        use_sim_time: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in ("multi", "composed"):
            raise SeglocError(f"launch mode must be multi or composed, got {mode!r}")
        if params_file is not None and not Path(params_file).is_file():
            raise SeglocError(f"params file {params_file} does not exist")
        self.mode, self.map_path, self.log_dir = mode, Path(map_path), Path(log_dir)
        self.params_file = None if params_file is None else Path(params_file)
        self.parameters = [*parameters, f"use_sim_time:={'true' if use_sim_time else 'false'}", f"map_path:={self.map_path}"]
        self.remaps = list(remaps)
        self.env = dict(os.environ if env is None else env)
        profile = config_file(FASTDDS_PROFILE)
        if profile is not None:
            self.env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.processes: list[NodeProcess] = []

    @property
    def node_names(self) -> list[str]:
        return list(NODE_MODULES)

    def _command(self, module: str) -> list[str]:
        command = [sys.executable, "-m", module, "--ros-args"]
        if self.params_file is not None:
            command += ["--params-file", str(self.params_file)]
        for parameter in self.parameters:
            command += ["-p", parameter]
        for remap in self.remaps:
            command += ["-r", remap]
        return command

    def start(self) -> None:
        """Start the processes (returns at once; see :meth:`wait_active`)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        jobs = NODE_MODULES.items() if self.mode == "multi" else [("localization_container", CONTAINER_MODULE)]
        for name, module in jobs:
            log_path = self.log_dir / f"{name}.log"
            with log_path.open("w") as log:
                process = subprocess.Popen(
                    self._command(module), env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self.processes.append(NodeProcess(name, process, log_path))
            logger.info("started %s (pid %d), log %s", name, process.pid, log_path)

    def _check_alive(self) -> None:
        for job in self.processes:
            if job.process.poll() is not None:
                raise SeglocError(f"{job.name} exited with status {job.process.returncode}; the end of {job.log_path}:\n{job.log_tail()}")

    def wait_active(self, node: Any, timeout_s: float) -> None:
        """Wait until every node reports ``active`` on ``/<name>/get_state`` (``node`` must be spun by an executor).

        Raises:
            SeglocError: a process exited, a node came up in another state (configure failed),
                or the timeout passed; with the end of the node's log.
        """
        from lifecycle_msgs.srv import GetState

        deadline = time.monotonic() + timeout_s
        for name in self.node_names:
            client = node.create_client(GetState, f"/{name}/get_state")
            try:
                while True:
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise SeglocError(f"{name} was not active after {timeout_s:g} s; the end of its log:\n{self._log_of(name)}")
                    if not client.wait_for_service(timeout_sec=0.5):
                        continue
                    future = client.call_async(GetState.Request())
                    done = threading.Event()
                    future.add_done_callback(lambda _, done=done: done.set())
                    if not done.wait(timeout=5.0) or future.result() is None:
                        continue
                    state = future.result().current_state
                    if state.id == PRIMARY_STATE_ACTIVE:
                        logger.info("%s is active", name)
                        break
                    raise SeglocError(
                        f"{name} is {state.label}, not active (did configure fail?); the end of its log:\n{self._log_of(name)}"
                    )
            finally:
                node.destroy_client(client)

    def _log_of(self, name: str) -> str:
        job = next((j for j in self.processes if j.name == name), self.processes[0] if self.processes else None)
        return "" if job is None else job.log_tail()

    def stop(self, timeout_s: float = 15.0) -> dict[str, int | None]:
        """Stop the processes (SIGINT, then SIGTERM, then SIGKILL); returns name -> exit status."""
        for job in self.processes:
            if job.process.poll() is None:
                job.process.send_signal(signal.SIGINT)
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0), (None, 5.0)):
            deadline = time.monotonic() + wait
            for job in self.processes:
                try:
                    job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            running = [job for job in self.processes if job.process.poll() is None]
            if not running or sig is None:
                break
            for job in running:
                logger.warning("%s did not stop in time: sending %s", job.name, sig.name)
                job.process.send_signal(sig)
        return {job.name: job.process.poll() for job in self.processes}


# --- the whole replay ------------------------------------------------------------------------
@dataclass
class ReplayOptions:
    """Options of :func:`run_replay` (the command line's)."""

    bag: Path
    output: Path
    map_path: Path | None = None
    bag_config: BagReadConfig = field(default_factory=BagReadConfig)
    rate: float = 1.0
    launch: str = "multi"
    params_file: Path | None = None
    node_parameters: tuple[str, ...] = ()
    base_frame: str = "base_link"
    pose_topic: str = "pose"
    localized_topic: str = "segloc/localized"
    record_topics: dict[str, str] = field(default_factory=lambda: dict(OUTPUT_TOPICS))
    play_topics: tuple[str, ...] | None = None
    offline_metrics: Path | None = None
    start_timeout: float = 120.0
    idle_timeout: float = 10.0
    output_timeout: float = 300.0
    domain_id: int | None = None
    overwrite: bool = False
    plots: bool = True


def camera_topics(bag: str | Path, config: BagReadConfig) -> tuple[str, str, str]:
    """``(image topic, its type, camera_info topic)`` of a bag, chosen as the ground-truth reader chooses them."""
    bag = Path(bag)
    with open_bag(bag) as reader:
        topics = {name: info.msgtype for name, info in reader.topics.items() if info.msgtype}
    image_topic = select_image_topic(topics, config, bag)
    return image_topic, topics[image_topic], select_camera_info_topic(topics, image_topic, config, bag)


def camera_remaps(image_topic: str, image_type: str, camera_info_topic: str) -> tuple[list[str], list[str]]:
    """Remappings and parameters that connect the nodes' ``image`` / ``camera_info`` inputs to a bag's camera topics."""
    if image_type == COMPRESSED_IMAGE_TYPE:
        return [f"image/compressed:={image_topic}", f"camera_info:={camera_info_topic}"], ["image_transport:=compressed"]
    return [f"image:={image_topic}", f"camera_info:={camera_info_topic}"], []


def _wait_for_outputs(recorder: TopicRecorder, localized: str, pose: str, images: int, options: ReplayOptions) -> str:
    """Wait after playback until every image is answered on ``localized``, outputs stop, or time runs out; says which."""
    started = time.monotonic()
    while True:
        if recorder.count(localized) >= images:
            return f"every image answered on {localized}"
        last = max([recorder.last_receive.get(t, started) for t in (localized, pose)] + [started])
        if time.monotonic() - last > options.idle_timeout:
            return f"no output for {options.idle_timeout:g} s"
        if time.monotonic() - started > options.output_timeout:
            return f"output_timeout of {options.output_timeout:g} s passed"
        time.sleep(0.1)


def run_replay(options: ReplayOptions) -> dict[str, Any]:
    """Play the bag to the nodes, record their outputs, score them; returns the metrics (see the module docstring)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from segloc.evaluate.replay import (
        MapSummary,
        compare_metrics,
        evaluate_pose_messages,
        read_camera_extrinsics,
        read_ground_truth,
        read_pose_messages,
    )
    from segloc.evaluate.report import write_json
    from segloc.maps.package import MapPackage

    if options.launch not in LAUNCH_MODES:
        raise SeglocError(f"launch must be one of {', '.join(LAUNCH_MODES)}, got {options.launch!r}")
    if options.launch != "none" and options.map_path is None:
        raise SeglocError(f"--launch {options.launch} starts the nodes and needs --map")
    offline = None
    if options.offline_metrics is not None:
        if not options.offline_metrics.is_file():
            raise SeglocError(f"offline metrics {options.offline_metrics} do not exist (the metrics.json of segloc evaluate --bag)")
        offline = json.loads(options.offline_metrics.read_text())
    recorded_bag = options.output / "recorded"
    if recorded_bag.exists():
        if not options.overwrite:
            raise SeglocError(f"{recorded_bag} exists already: pass --overwrite to replace it")
        import shutil

        shutil.rmtree(recorded_bag)
    # What can be wrong with the inputs fails here, before any node starts.
    image_topic, image_type, camera_info_topic = camera_topics(options.bag, options.bag_config)
    ground_truth = read_ground_truth(options.bag, options.bag_config)
    extrinsics = read_camera_extrinsics(options.bag, options.bag_config, options.base_frame)
    map_summary = None if options.map_path is None else MapSummary.from_package(MapPackage.open(options.map_path))
    profile = config_file(FASTDDS_PROFILE)
    if profile is not None:
        os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))

    launcher = None
    if options.launch != "none":
        params_file = options.params_file if options.params_file is not None else config_file(PARAMS_FILE)
        remaps, parameters = camera_remaps(image_topic, image_type, camera_info_topic)
        launcher = NodeLauncher(
            options.launch, options.map_path, options.output / "logs", params_file, [*parameters, *options.node_parameters], remaps
        )
        if options.domain_id is not None:
            launcher.env["ROS_DOMAIN_ID"] = str(options.domain_id)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=options.domain_id)
    node = rclpy.create_node("segloc_replay", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="segloc_replay_spin", daemon=True)
    spinner.start()
    pose_topic, localized_topic = node.resolve_topic_name(options.pose_topic), node.resolve_topic_name(options.localized_topic)
    report: dict[str, Any] = {
        "bag": str(options.bag),
        "map": None if options.map_path is None else str(options.map_path),
        "rate": options.rate,
        "launch": options.launch,
        "image_topic": image_topic,
    }
    recorder = player = stats = None
    try:
        if launcher is not None:
            launcher.start()
            report["nodes"] = {job.name: {"command": job.process.args, "log": str(job.log_path)} for job in launcher.processes}
            launcher.wait_active(node, options.start_timeout)
        player = BagPlayer(node, options.bag, options.rate, options.play_topics)
        recorder = TopicRecorder(node, recorded_bag, {options.pose_topic: OUTPUT_TOPICS["pose"], **options.record_topics})
        recorder.wait_for_publishers([pose_topic], options.start_timeout)
        player.wait_for_subscribers([image_topic], options.start_timeout)
        stats = player.play()
        images = stats.messages.get(image_topic, 0)
        waited = time.monotonic()
        report["stopped_waiting_because"] = _wait_for_outputs(recorder, localized_topic, pose_topic, images, options)
        report["waited_after_playback_s"] = time.monotonic() - waited
        report["played"] = {
            "messages": stats.messages,
            "images": images,
            "wall_time_s": stats.wall_time_s,
            "bag_time_s": stats.bag_time_s,
            "skipped_topics": stats.skipped_topics,
        }
    finally:
        if recorder is not None:
            report["recorded"] = {"path": str(recorded_bag), "messages": recorder.close()}
        if player is not None:
            player.close()
        if launcher is not None:
            for name, status in launcher.stop().items():
                report.setdefault("nodes", {}).setdefault(name, {})["exit_status"] = status
        executor.shutdown()
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        options.output.mkdir(parents=True, exist_ok=True)
        write_json(options.output / "replay.json", report)

    metrics = evaluate_pose_messages(
        read_pose_messages(recorded_bag, pose_topic),
        options.bag,
        options.output,
        options.bag_config,
        base_frame=options.base_frame,
        publish_times_ns=stats.image_publish_times_ns,
        map_summary=map_summary,
        ground_truth=ground_truth,
        extrinsics=extrinsics,
        plots=options.plots,
    )
    if offline is not None:
        comparison = {"live_metrics": str(options.output / "metrics.json"), "offline_metrics": str(options.offline_metrics)}
        write_json(options.output / "comparison.json", {**comparison, **compare_metrics(metrics, offline)})
    return metrics


# --- command line ----------------------------------------------------------------------------
def _topic_and_type(text: str) -> tuple[str, str]:
    topic, sep, msgtype = text.partition(":")
    if not sep or not topic or msgtype.count("/") != 2:
        raise argparse.ArgumentTypeError(f"expected TOPIC:package/msg/Type, e.g. /odom:nav_msgs/msg/Odometry, got {text!r}")
    return topic, msgtype


def build_parser() -> argparse.ArgumentParser:
    from segloc.cli import add_bag_read_arguments

    parser = argparse.ArgumentParser(
        prog="segloc_replay",
        description="Play a rosbag2 to the segloc nodes, record their outputs, and evaluate them like `segloc evaluate --bag`.",
    )
    parser.add_argument("--bag", type=Path, required=True, help="the rosbag2 to play (images, camera_info, /tf, /tf_static, ground truth)")
    parser.add_argument("--map", type=Path, help="the nodes' map (map_path); needed with --launch multi|composed, else used for the report")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the recorded bag, the report, replay.json")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument(
        "--launch",
        choices=LAUNCH_MODES,
        default="multi",
        help="start the nodes: multi-process, composed container, or none (running already)",
    )
    parser.add_argument("--params-file", type=Path, help="ROS params file of the nodes (default config/segloc_ros.yaml)")
    parser.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE", help="more parameters for every node")
    parser.add_argument(
        "--offline-metrics", type=Path, help="metrics.json of `segloc evaluate --bag` on the same bag: writes comparison.json"
    )
    parser.add_argument("--base-frame", default="base_link", help="the robot frame whose pose the nodes publish (default base_link)")
    parser.add_argument("--play-topics", nargs="+", help="only play these topics (default all)")
    parser.add_argument("--record", action="append", type=_topic_and_type, metavar="TOPIC:TYPE", help="record this topic too (repeatable)")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds for the nodes to become active (default 120)")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="stop waiting this long after the last output (default 10)")
    parser.add_argument("--output-timeout", type=float, default=300.0, help="wait at most this long after playback (default 300)")
    parser.add_argument("--domain-id", type=int, help="ROS domain of the replay and the nodes it starts (default: ROS_DOMAIN_ID)")
    parser.add_argument("--config", type=Path, help="YAML config with a 'bag' section (how to read the ground truth)")
    add_bag_read_arguments(parser, "")
    parser.add_argument("--gt-frames", nargs=2, metavar=("WORLD", "BASE"), help="ground truth from the TF data: WORLD -> camera frame")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT/recorded")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    from segloc.cli import bag_read_config_from_args
    from segloc.evaluate.report import format_summary

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        record = dict(OUTPUT_TOPICS)
        record.update(dict(args.record or []))
        options = ReplayOptions(
            bag=args.bag,
            output=args.output,
            map_path=args.map,
            bag_config=bag_read_config_from_args(args),
            rate=args.rate,
            launch=args.launch,
            params_file=args.params_file,
            node_parameters=tuple(args.node_param),
            base_frame=args.base_frame,
            record_topics=record,
            play_topics=None if args.play_topics is None else tuple(args.play_topics),
            offline_metrics=args.offline_metrics,
            start_timeout=args.start_timeout,
            idle_timeout=args.idle_timeout,
            output_timeout=args.output_timeout,
            domain_id=args.domain_id,
            overwrite=args.overwrite,
            plots=not args.no_plots,
        )
        metrics = run_replay(options)
    except SeglocError as exc:
        print(f"segloc_replay: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("segloc_replay: interrupted", file=sys.stderr)
        return 130
    print(format_summary(metrics))
    print(f"wrote {args.output}/metrics.json, replay.json" + (" and comparison.json" if args.offline_metrics else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
