"""Pose throughput and latency of the segloc ROS nodes: the multi-process chain against the composed container, in one run.

For each mode (``multi``: segmentation_node, retrieval_node and pose_refinement_node in three
processes; ``composed``: the three in localization_container; ``localizer``: localizer_node, the
whole pipeline in one process) and each tracking setting (``--tracking on off``: the
``tracking:`` section of the nodes' config file, :mod:`segloc.localize.tracking`), this script starts the nodes
(:class:`segloc_ros.replay.NodeLauncher`, wall-clock time, one torch thread per process by
default), waits until they are active, sends a few warm-up images, then publishes ``--images``
query images of a small synthetic room at ``--rate`` Hz, each with ``header.stamp = now``
(wall clock, taken just before publishing), its camera_info and the odometry ``odom ->
base_link`` at that stamp (``base_link -> camera`` once on ``/tf_static``), and records every
``pose`` (and ``segloc/localized``) message the nodes publish.

What is measured, per mode:

- ``latency_s`` (median, p95, max, mean): from an image's stamp to the reception of the ``pose``
  with that stamp in this process: publishing and transporting the image (DDS, shared memory),
  the nodes' queues, segmentation, descriptor and probabilities transport, retrieval, pose
  refinement, and the ``pose`` transport back. Not included: camera exposure and driver.
  Images that got no pose (not localized, or dropped by a full node queue) have no latency;
- ``pose_rate_hz``: ``pose`` messages received divided by the time from publishing the first
  measured image to receiving the last pose; with ``--rate`` above what the nodes sustain this
  is their throughput (the excess frames are dropped by the nodes' queues and counted in
  ``frames_dropped`` from their ``/diagnostics``), below it the input rate bounds it;
- counts: images published, poses received, images answered on ``segloc/localized`` (True or
  False: the others never reached the end of the chain), and False answers;
- ``stages_s``: the last node's per-stage times from its latest ``/diagnostics`` (``segment_s``,
  ``track_s``, ``retrieve_s``, ``refine_s``, ...) and its frame counts per mode
  (``frames_tracked``, ``frames_relocalized``, ``frames_localized``);
- ``lost``: every ``--kidnap-every``-th measured frame the odometry jumps (100 m up, kept from
  then on, as after a wheel slip or a teleport): tracking fails on that frame and it relocalizes
  in the same frame; ``latency_s`` of those frames is the relocalization time when lost
  (tracking attempt included), ``latency_others_s`` that of the other frames.

Modes are keyed ``MODE`` (tracking off) and ``MODE+tracking``.

Everything runs on this machine's cores, the benchmark process included; on a shared machine
compare the two modes of one invocation (``composed_vs_multi``), not absolute numbers across
runs. The localization map is a SegLoc map of the demo room built with the shipped network
(:func:`build_scene`), so the nodes run the real network at its real size (320 x 240).

    python benchmarks/ros_latency.py --work outputs/ros_latency -o ros_latency.json
    python benchmarks/ros_latency.py --images 60 --rate 5 --modes composed
    python benchmarks/ros_latency.py --modes localizer --tracking on off --rate 15 --threads 2

Run it with an interpreter that has rclpy (the ROS venv: ``.venv-ros/bin/python``).
``benchmarks/soak.py`` runs the same nodes on the same scene for hours with these pieces:
:func:`build_scene`, :func:`live_nodes` (start, wait until active, stop), :class:`LiveCamera`
(publishing, poses, ``segloc/localized`` and ``/diagnostics`` received) and :func:`warm_up`.

Output (stdout and ``-o``)::

    {"scene": {...}, "images": N, "rate_hz": R, "threads": T, "warmup_images": W,
     "modes": {"multi" | "composed": {"images_published": n, "poses_received": n, "images_answered": n, "not_localized": n,
               "pose_rate_hz": ..., "latency_s": {"median": ..., "p95": ..., "max": ..., "mean": ...},
               "frames_dropped": {node: n}, "start_s": ...}},
     "composed_vs_multi": {"latency_median_ratio": ..., "latency_p95_ratio": ..., "pose_rate_ratio": ...}}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The method whose nodes are measured (segmentation_node, retrieval_node and pose_refinement_node are SegLoc's split pipeline).
METHOD = "segloc"
CAMERA_TOPIC, CAMERA_INFO_TOPIC = "/camera/image_raw", "/camera/camera_info"
CAMERA_FRAME, BASE_FRAME, ODOM_FRAME = "camera_optical_frame", "base_link", "odom"
#: The node that publishes the pose in each launch mode (its /diagnostics carry the stage times).
LAUNCH_LAST_NODE = {"multi": "pose_refinement_node", "composed": "pose_refinement_node", "localizer": "localizer_node"}


# --- the scene ------------------------------------------------------------------------------
@dataclass
class Scene:
    """A rendered room, its query recording as a rosbag2, and a SegLoc map."""

    dataset: Path
    bag: Path
    map: Path


def build_scene(work: Path, num_mapping: int = 50, num_query: int = 8, condition: str = "lighting") -> Scene:
    """Render the demo room (seed 0, 320 x 240), build its SegLoc map with the demo's network, write the query bag.

    The map is built through the method registry with the ``map:`` options SegLoc gives
    ``segloc demo`` for this room (:meth:`segloc.methods.Method.demo_map_config`: the shipped
    network, ``segloc_room320_robust``, trained with ``segloc train segloc`` on the 150 mapping
    images of this room); this scene samples the same room with fewer mapping images, so the
    benchmark runs the real network at its real size. Reuses what ``work`` holds already. Call
    with torch limited to the threads you want (the map build runs in this process).
    """
    from segloc.data.dataset import read_dataset
    from segloc.data.synthetic import generate_scene, synth_config, write_scene_bag
    from segloc.demo import DEMO_SIZE
    from segloc.methods import DemoContext, get_method

    work.mkdir(parents=True, exist_ok=True)
    scene = Scene(work / "dataset", work / "query_bag", work / "map")
    if not (scene.dataset / "scene.json").is_file():
        width, height = DEMO_SIZE
        config = synth_config("room", condition, num_mapping=num_mapping, num_query=num_query, width=width, height=height, seed=0)
        generate_scene(config, scene.dataset, overwrite=True, progress=False)
    dataset = read_dataset(scene.dataset)
    if not scene.bag.exists():
        write_scene_bag(scene.dataset, scene.bag)
    if not (scene.map / "manifest.json").is_file():
        method = get_method(METHOD)
        context = DemoContext(scene.dataset, work, "room", 0, DEMO_SIZE, progress=False)
        with contextlib.redirect_stdout(sys.stderr):  # the method says which network it picked; stdout is for the JSON
            map_config = method.map_config(method.demo_map_config(context))
        method.build_map(dataset, scene.map, map_config, overwrite=True, progress=False)
    return scene


# --- measuring --------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class LiveCamera:
    """Publishes query frames with ``stamp = now`` (image, camera_info, odometry on /tf) and collects the nodes' answers."""

    def __init__(self, node: Any, scene: Scene):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import Bool
        from tf2_msgs.msg import TFMessage

        from segloc.data.dataset import read_dataset
        from segloc.data.synthetic import read_scene_frames

        dataset = read_dataset(scene.dataset)
        cameras = {r.name: r.camera for r in dataset.query}
        frames, self.base_from_cam = read_scene_frames(scene.dataset, "query")
        self.frames = [(dataset.load_image(f.name), cameras[f.name], f.odom_from_base) for f in frames]
        self.node = node
        self.lock = threading.Lock()
        self.poses: dict[int, int] = {}  # pose stamp -> receive time (ns)
        self.answers = 0  # segloc/localized messages (one per processed image)
        self.not_localized = 0
        self.diagnostics: dict[str, dict[str, str]] = {}  # node -> key/values of its latest /diagnostics status
        self.error_statuses: dict[str, int] = {}  # node -> ERROR-level /diagnostics statuses received (a standing ERROR repeats)
        self.last_error: dict[str, str] = {}  # node -> message of its latest ERROR status
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.image = node.create_publisher(Image, CAMERA_TOPIC, qos_profile_sensor_data)
        self.camera_info = node.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, reliable)
        self.tf = node.create_publisher(TFMessage, "/tf", reliable)
        self.tf_static = node.create_publisher(TFMessage, "/tf_static", latched)
        node.create_subscription(PoseWithCovarianceStamped, "pose", self._on_pose, reliable)
        node.create_subscription(Bool, "segloc/localized", self._on_localized, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)

    def _on_pose(self, msg: Any) -> None:
        received = time.time_ns()
        with self.lock:
            self.poses[int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)] = received

    def _on_localized(self, msg: Any) -> None:
        with self.lock:
            self.answers += 1
            self.not_localized += not msg.data

    def _on_diagnostics(self, msg: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus

        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "frames_dropped" not in values:
                continue  # not a segloc node
            name = status.name.split(":")[0]
            with self.lock:
                self.diagnostics[name] = values
                if status.level == DiagnosticStatus.ERROR:
                    self.error_statuses[name] = self.error_statuses.get(name, 0) + 1
                    self.last_error[name] = status.message

    def node_counter(self, key: str) -> dict[str, int]:
        """Node -> an integer value of its latest /diagnostics (``frames_dropped``, ``frames_processed``, ``errors``, ...)."""
        with self.lock:
            return {name: int(values[key]) for name, values in self.diagnostics.items() if key in values}

    def reset(self) -> None:
        with self.lock:
            self.poses.clear()
            self.answers = self.not_localized = 0

    def publish_static(self) -> None:
        from segloc_ros.conversions import tf_message, transform_stamped_msg

        self.tf_static.publish(tf_message([transform_stamped_msg(self.base_from_cam, time.time_ns(), BASE_FRAME, CAMERA_FRAME)]))

    def publish(
        self,
        index: int,
        camera_frame: str = CAMERA_FRAME,
        image_msg: Callable[[np.ndarray, int, str], Any] | None = None,
        odom_offset: Any = None,
    ) -> int:
        """Publish frame ``index`` (cycling) stamped now; returns the stamp.

        Args:
            index: the query frame (modulo their number).
            camera_frame: the ``frame_id`` of the image and its camera_info.
            image_msg: makes the Image from ``(rgb (H, W, 3) uint8, stamp ns, frame_id)``
                (default :func:`segloc_ros.conversions.image_msg_from_array`, ``rgb8``).
            odom_offset: a Rigid3 applied to the odometry (``offset * odom_from_base``): a jump.
        """
        from segloc_ros.conversions import camera_info_msg_from_camera, image_msg_from_array, tf_message, transform_stamped_msg

        image, camera, odom_from_base = self.frames[index % len(self.frames)]
        if odom_offset is not None:
            odom_from_base = odom_offset * odom_from_base
        stamp = time.time_ns()
        self.tf.publish(tf_message([transform_stamped_msg(odom_from_base, stamp, ODOM_FRAME, BASE_FRAME)]))
        self.camera_info.publish(camera_info_msg_from_camera(camera, stamp, camera_frame))
        self.image.publish((image_msg or image_msg_from_array)(image, stamp, camera_frame))
        return stamp

    def take_poses(self) -> dict[int, int]:
        """The poses received since the last call (or reset), removed: image stamp -> receive time, both in ns."""
        with self.lock:
            poses, self.poses = self.poses, {}
        return poses

    def answered(self) -> int:
        """Images answered on segloc/localized since the last reset."""
        with self.lock:
            return self.answers


def _wait(condition, timeout_s: float, idle_s: float, progress) -> None:
    """Poll until ``condition()``, ``timeout_s`` passes, or ``progress()`` stays the same for ``idle_s``."""
    deadline, last, last_change = time.monotonic() + timeout_s, progress(), time.monotonic()
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
        now = progress()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > idle_s:
            return


@dataclass
class LiveNodes:
    """The nodes of one launch mode, running and active, and the camera of this process that talks to them."""

    launcher: Any  # segloc_ros.replay.NodeLauncher: its processes (names, pids, logs)
    node: Any  # this process's rclpy node (spun by a background executor)
    camera: LiveCamera
    start_s: float  # from starting the processes to every node active
    exit_status: dict[str, int | None] = field(default_factory=dict)  # filled when the nodes are stopped


@contextlib.contextmanager
def live_nodes(
    mode: str,
    map_path: Path,
    scene: Scene,
    log_dir: Path,
    threads: int,
    domain_id: int,
    start_timeout: float,
    node_name: str,
    parameters: tuple[str, ...] = (),
) -> Iterator[LiveNodes]:
    """Start the nodes of ``mode`` on ``map_path``, wait until they are active and listen to the camera; stop them on exit.

    The nodes run as :class:`segloc_ros.replay.NodeLauncher` children (``multi``, ``composed`` or
    ``localizer``) on the wall clock, with ``threads`` torch threads each, the package's params
    file, their camera inputs remapped to :data:`CAMERA_TOPIC` and :data:`CAMERA_INFO_TOPIC`,
    in ROS domain ``domain_id``, and ``parameters`` (``name:=value``) for every node. On exit they get SIGINT (then SIGTERM, SIGKILL) and
    :attr:`LiveNodes.exit_status` says how they ended. rclpy's signal handlers are not
    installed: Ctrl-C is a KeyboardInterrupt of the caller, whose ROS node stays usable.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from segloc_ros.replay import PARAMS_FILE, NodeLauncher, camera_remaps, config_file

    remaps, remap_parameters = camera_remaps(CAMERA_TOPIC, "sensor_msgs/msg/Image", CAMERA_INFO_TOPIC)
    launcher = NodeLauncher(
        mode,
        map_path,
        log_dir,
        config_file(PARAMS_FILE),
        [*remap_parameters, *parameters, f"threads:={threads}"],
        remaps,
        use_sim_time=False,
    )
    launcher.env["ROS_DOMAIN_ID"] = str(domain_id)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(node_name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    session = None
    try:
        camera = LiveCamera(node, scene)
        start = time.monotonic()
        launcher.start()
        launcher.wait_active(node, start_timeout)
        start_s = time.monotonic() - start
        deadline = time.monotonic() + start_timeout
        while camera.image.get_subscription_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        camera.publish_static()
        session = LiveNodes(launcher, node, camera, start_s)
        yield session
    finally:
        exit_status = launcher.stop()
        if session is not None:
            session.exit_status = exit_status
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def warm_up(camera: LiveCamera, images: int, answer_timeout_s: float = 15.0, timeout_s: float = 120.0) -> int:
    """Send frames one at a time until ``images`` of them were answered on ``segloc/localized``; returns the frames sent.

    The first inferences are slow (allocation, caches). A frame not answered within
    ``answer_timeout_s`` is given up and the next one sent: just after start-up the nodes may not
    have discovered each other yet, and a message between them is lost. Gives up after ``timeout_s``.
    """
    answered = sent = 0
    deadline = time.monotonic() + timeout_s
    while answered < images and time.monotonic() < deadline:
        camera.reset()
        camera.publish(sent)
        sent += 1
        _wait(lambda: camera.answered() >= 1, answer_timeout_s, answer_timeout_s, camera.answered)
        answered += camera.answered() >= 1
    if answered < images:
        print(f"warm-up: {answered} of {sent} frames answered in {timeout_s:g} s", file=sys.stderr, flush=True)
    camera.reset()
    return sent


def _latency_summary(latencies: list[float]) -> dict[str, float | None]:
    latencies = sorted(latencies)
    return {
        "median": _percentile(latencies, 50),
        "p95": _percentile(latencies, 95),
        "max": latencies[-1] if latencies else None,
        "mean": float(np.mean(latencies)) if latencies else None,
    }


def tracking_config(work: Path, enabled: bool) -> Path:
    """A segloc config file whose ``tracking:`` section turns tracking on or off (the nodes' ``config_path``)."""
    path = work / f"tracking_{'on' if enabled else 'off'}.yaml"
    path.write_text(f"tracking:\n  enabled: {'true' if enabled else 'false'}\n")
    return path


def measure_mode(mode: str, scene: Scene, args: argparse.Namespace, domain_id: int, tracking: bool = False) -> dict[str, Any]:
    from segloc.geometry.transforms import Rigid3

    name = f"{mode}+tracking" if tracking else mode
    parameters = (f"config_path:={tracking_config(args.work, tracking)}",)
    with live_nodes(
        mode,
        scene.map,
        scene,
        args.work / "logs" / name,
        args.threads,
        domain_id,
        args.start_timeout,
        "segloc_latency_benchmark",
        parameters,
    ) as live:
        camera = live.camera
        warm_up(camera, args.warmup)
        stamps, kidnapped = [], set()
        offset = None
        period, first_publish = 1.0 / args.rate, time.time_ns()
        next_time = time.monotonic()
        for i in range(args.images):
            if args.kidnap_every and i and i % args.kidnap_every == 0:
                jump = Rigid3(np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 0.0, 100.0]))
                offset = jump if offset is None else jump * offset
                stamps.append(camera.publish(i, odom_offset=offset))
                kidnapped.add(stamps[-1])
            else:
                stamps.append(camera.publish(i, odom_offset=offset))
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        _wait(lambda: camera.answered() >= len(stamps), args.output_timeout, args.idle_timeout, camera.answered)
        time.sleep(1.5)  # the next /diagnostics (1 Hz) carries the last frames' stage times
        with camera.lock:
            received = {s: camera.poses[s] for s in stamps if s in camera.poses}
            answers, not_localized = camera.answers, camera.not_localized
            last_node = LAUNCH_LAST_NODE.get(mode, "")
            diagnostics = dict(camera.diagnostics.get(last_node, {}))
        dropped = camera.node_counter("frames_dropped")
    latencies = sorted((received[s] - s) / 1e9 for s in received)
    span = (max(received.values()) - first_publish) / 1e9 if received else None
    stages = {}
    for key, value in diagnostics.items():
        if key.endswith("_s") or key.startswith("frames_"):
            with contextlib.suppress(ValueError):
                stages[key] = float(value)
    return {
        "stages_s": stages,
        "lost": {
            "frames": len(kidnapped),
            "latency_s": _latency_summary([(received[s] - s) / 1e9 for s in kidnapped if s in received]),
            "latency_others_s": _latency_summary([(received[s] - s) / 1e9 for s in received if s not in kidnapped]),
        },
        "images_published": len(stamps),
        "poses_received": len(received),
        "images_answered": answers,
        "not_localized": not_localized,
        "pose_rate_hz": len(received) / span if span else 0.0,
        "latency_s": {
            "median": _percentile(latencies, 50),
            "p95": _percentile(latencies, 95),
            "max": latencies[-1] if latencies else None,
            "mean": float(np.mean(latencies)) if latencies else None,
        },
        "frames_dropped": dropped,
        "start_s": live.start_s,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("outputs/ros_latency"), help="scene, map and node logs (reused)")
    parser.add_argument("--images", type=int, default=40, help="measured images per mode (default 40)")
    parser.add_argument("--rate", type=float, default=5.0, help="images per second (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured images first, one at a time (default 3)")
    parser.add_argument("--modes", nargs="+", choices=["multi", "composed", "localizer"], default=["multi", "composed"])
    parser.add_argument(
        "--tracking", nargs="+", choices=["on", "off"], default=["off"], help="tracking settings to measure each mode with (default off)"
    )
    parser.add_argument(
        "--kidnap-every", type=int, default=0, help="every N-th measured frame the odometry jumps (the lost case; default 0: never)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per node process and for building the scene (default 1)")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--idle-timeout", type=float, default=15.0, help="stop waiting for answers after this long without one")
    parser.add_argument("--output-timeout", type=float, default=120.0)
    parser.add_argument("--domain-id", type=int, help="ROS domain (default: random in 1..101)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    scene = build_scene(args.work)
    domain_id = args.domain_id if args.domain_id is not None else random.SystemRandom().randint(1, 101)
    result: dict[str, Any] = {
        "scene": {"dataset": str(scene.dataset), "map": str(scene.map)},
        "images": args.images,
        "rate_hz": args.rate,
        "threads": args.threads,
        "warmup_images": args.warmup,
        "modes": {},
    }
    result["kidnap_every"] = args.kidnap_every
    for mode in args.modes:
        for setting in args.tracking:
            name = f"{mode}+tracking" if setting == "on" else mode
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            result["modes"][name] = measure_mode(mode, scene, args, domain_id, tracking=setting == "on")
    if {"multi", "composed"} <= set(result["modes"]):
        multi, composed = result["modes"]["multi"], result["modes"]["composed"]
        result["composed_vs_multi"] = {
            "latency_median_ratio": _ratio(composed["latency_s"]["median"], multi["latency_s"]["median"]),
            "latency_p95_ratio": _ratio(composed["latency_s"]["p95"], multi["latency_s"]["p95"]),
            "pose_rate_ratio": _ratio(composed["pose_rate_hz"], multi["pose_rate_hz"]),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
