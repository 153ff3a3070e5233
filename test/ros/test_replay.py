"""Live replay without the segloc nodes: the player and recorder round-trip a synthetic bag; run_replay scores a stand-in localizer.

The player publishes a rendered room's query bag (images, camera_info, /tf, /tf_static, /odom,
ground truth) in one rclpy context; the recorder, in the same node, writes some of those topics
to a new bag, which must hold the same messages with the same stamps. Then ``run_replay
--launch none`` runs against a stand-in localizer (another context in this process) that
answers each image with its ground-truth pose, perturbed or missing for some images, so the
scores are known. Each test module uses its own ROS domain (``ros_domain_id``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

GT_TOPIC = "/ground_truth/pose"
IMAGE_TOPIC = "/camera/image_raw"


@pytest.fixture(scope="module")
def domain_id() -> int:
    """One random ROS domain for this module (as conftest's ros_domain_id, module-scoped for the shared scene)."""
    import random

    return random.SystemRandom().randint(1, 101)


@pytest.fixture(autouse=True)
def ros_isolation(monkeypatch, fastdds_profile, domain_id):
    """Local discovery, the large-SHM Fast DDS profile and this module's domain for in-process rclpy contexts."""
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", str(fastdds_profile))
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A 160x120 room with a 6-image query bag (sqlite3) and a reference map."""
    from segloc.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("ros_replay")
        argv = ["synth", "-o", str(root / "room"), "--size", "160x120", "--num-mapping", "8", "--num-query", "6", "--bag", "query"]
        assert main([*argv, "--no-progress"]) == 0
        assert main(["map", "build", str(root / "room"), "--method", "reference", "-o", str(root / "map"), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "room", root / "room" / "query_bag", root / "map"


class Session:
    """An rclpy context with one node spun in a background thread."""

    def __init__(self, name: str, domain_id: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def bag_messages(bag: Path, topic: str) -> list[tuple[int, object]]:
    """(log time, message) of one topic, read with rosbags."""
    from segloc.data.rosbag import open_bag

    with open_bag(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(connections=connections)]


def stamp_ns(msg) -> int:
    return int(msg.sec) * 1_000_000_000 + int(msg.nanosec)


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_play_and_record_round_trip(room, tmp_path, domain_id):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    from segloc_ros.replay import BagPlayer, TopicRecorder

    _, bag, _ = room
    session = Session("replay_round_trip", domain_id)
    clock_stamps: list[int] = []
    session.node.create_subscription(
        Clock, "/clock", lambda m: clock_stamps.append(stamp_ns(m.clock)), QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
    )
    recorded = tmp_path / "recorded"
    topics = {
        "/odom": "nav_msgs/msg/Odometry",
        "/tf": "tf2_msgs/msg/TFMessage",
        "/tf_static": "tf2_msgs/msg/TFMessage",
        "ground_truth/pose": "geometry_msgs/msg/PoseStamped",  # relative: resolves to /ground_truth/pose
    }
    try:
        player = BagPlayer(session.node, bag, rate=4.0, clock_hz=100.0)
        recorder = TopicRecorder(session.node, recorded, topics)
        assert player.image_topics == [IMAGE_TOPIC] and "/camera/camera_info" in player.topics
        player.wait_for_subscribers(["/odom", "/tf", "/tf_static", GT_TOPIC], timeout_s=30)
        assert wait_until(lambda: session.node.count_publishers("/clock") >= 1, 10)
        stats = player.play()
        expected = {topic: len(bag_messages(bag, topic)) for topic in ("/odom", "/tf", "/tf_static", GT_TOPIC)}
        assert wait_until(lambda: all(recorder.count(t) >= n for t, n in expected.items()), 20), recorder.counts
        counts = recorder.close()
        player.close()
    finally:
        session.close()

    assert counts == expected and expected["/odom"] == 6 and expected["/tf_static"] == 1
    assert stats.messages[IMAGE_TOPIC] == 6 and stats.messages["/odom"] == 6
    images = bag_messages(bag, IMAGE_TOPIC)
    assert sorted(stats.image_publish_times_ns) == [stamp_ns(m.header.stamp) for _, m in images]
    # 6 frames at 10 Hz = 0.5 s of recording, played 4x faster.
    assert stats.bag_time_s == pytest.approx(0.5) and 0.9 * 0.5 / 4 <= stats.wall_time_s < 5.0
    # /clock runs on the bag's log times, never backwards, ending at the last message.
    assert clock_stamps and clock_stamps == sorted(clock_stamps)
    first_log, last_log = images[0][0], bag_messages(bag, "/odom")[-1][0]
    assert first_log <= clock_stamps[0] and clock_stamps[-1] == max(t for topic in expected for t, _ in bag_messages(bag, topic))
    assert len(clock_stamps) > 6 and last_log <= clock_stamps[-1]

    # The recorded bag holds the same messages (stamps and content), its log times are receive times.
    for topic in ("/odom", GT_TOPIC):
        original, copy = bag_messages(bag, topic), bag_messages(recorded, topic)
        assert [stamp_ns(m.header.stamp) for _, m in copy] == [stamp_ns(m.header.stamp) for _, m in original]
        for (_, a), (_, b) in zip(original, copy):
            pa, pb = (a.pose.pose, b.pose.pose) if topic == "/odom" else (a.pose, b.pose)
            assert (pa.position.x, pa.position.y, pa.orientation.w) == (pb.position.x, pb.position.y, pb.orientation.w)
    for (_, a), (_, b) in zip(bag_messages(bag, "/tf"), bag_messages(recorded, "/tf")):
        assert [(t.header.frame_id, t.child_frame_id, stamp_ns(t.header.stamp)) for t in a.transforms] == [
            (t.header.frame_id, t.child_frame_id, stamp_ns(t.header.stamp)) for t in b.transforms
        ]
        assert a.transforms[0].transform.translation.x == b.transforms[0].transform.translation.x
    receive_times = [t for t, _ in bag_messages(recorded, "/odom")]
    assert receive_times == sorted(receive_times) and abs(receive_times[0] - time.time_ns()) < 120e9
    static = bag_messages(recorded, "/tf_static")[0][1].transforms[0]
    assert (static.header.frame_id, static.child_frame_id) == ("base_link", "camera_optical_frame")


class StandInLocalizer:
    """Answers each image on /camera/image_raw with the scene's ground-truth base pose: 0.1 m off for the 2nd, nothing for the 4th."""

    def __init__(self, dataset: Path, domain_id: int):
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool

        from segloc.data.rosbag import seconds_to_ns
        from segloc.data.synthetic import read_scene_frames
        from segloc.geometry import Rigid3

        frames, _ = read_scene_frames(dataset, "query")
        self.truth = {seconds_to_ns(f.timestamp): f.world_from_base for f in frames}
        self.order = sorted(self.truth)
        self.offset = Rigid3.from_rotation(np.eye(3), np.array([0.1, 0.0, 0.0]))
        self.session = Session("stand_in_localizer", domain_id)
        state = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pose = self.session.node.create_publisher(PoseWithCovarianceStamped, "pose", state)
        self.localized = self.session.node.create_publisher(Bool, "segloc/localized", state)
        self.session.node.create_subscription(Image, IMAGE_TOPIC, self.on_image, qos_profile_sensor_data)
        self.Bool = Bool

    def on_image(self, msg) -> None:
        from segloc_ros.conversions import pose_with_covariance_stamped_msg

        stamp = stamp_ns(msg.header.stamp)
        index = self.order.index(stamp)
        time.sleep(0.02)  # "processing"
        if index == 3:
            self.localized.publish(self.Bool(data=False))
            return
        pose = self.truth[stamp] if index != 1 else self.offset * self.truth[stamp]
        self.pose.publish(pose_with_covariance_stamped_msg(pose, np.diag([0.01, 0.01, 0.01, 1e-4, 1e-4, 1e-4]), stamp, "map"))
        self.localized.publish(self.Bool(data=True))


def test_run_replay_scores_a_stand_in_localizer(room, tmp_path, domain_id):
    from segloc.cli import main as segloc_main
    from segloc.data.rosbag import BagReadConfig
    from segloc_ros.replay import ReplayOptions, run_replay

    dataset, bag, map_dir = room
    offline_dir = tmp_path / "offline"
    argv = ["-q", "evaluate", str(map_dir), "--bag", str(bag), "--pose-topic", GT_TOPIC, "-o", str(offline_dir), "--no-progress"]
    assert segloc_main(argv) == 0
    stand_in = StandInLocalizer(dataset, domain_id)
    try:
        options = ReplayOptions(
            bag=bag,
            output=tmp_path / "live",
            map_path=map_dir,
            bag_config=BagReadConfig(pose_source="topic", pose_topic=GT_TOPIC),
            rate=2.0,
            launch="none",
            offline_metrics=offline_dir / "metrics.json",
            start_timeout=30.0,
            idle_timeout=5.0,
            domain_id=domain_id,
        )
        metrics = run_replay(options)
    finally:
        stand_in.session.close()

    out = tmp_path / "live"
    for name in ("metrics.json", "per_query.json", "estimates_tum.txt", "groundtruth_tum.txt", "errors_cdf.png", "replay.json"):
        assert (out / name).is_file(), name
    assert metrics["num_queries"] == 6 and metrics["num_localized"] == 5
    assert metrics["recall"]["5cm_5deg"] == pytest.approx(4 / 6) and metrics["recall"]["0.25m_2deg"] == pytest.approx(5 / 6)
    assert metrics["failure_reasons"] == {"no pose published for this image": 1}
    assert metrics["replay"]["mode"] == "live" and metrics["replay"]["unmatched_pose_messages"] == 0
    # Latency: published image -> received pose, through DDS and the stand-in's 20 ms.
    assert 0.015 < metrics["time_per_query_median_s"] < 2.0
    per_query = json.loads((out / "per_query.json").read_text())
    assert [q["success"] for q in per_query] == [True, True, True, False, True, True]
    assert per_query[1]["translation_error_m"] > 0.09 and per_query[0]["translation_error_m"] < 1e-6
    replay = json.loads((out / "replay.json").read_text())
    assert replay["played"]["images"] == 6 and replay["stopped_waiting_because"] == "every image answered on /segloc/localized"
    assert replay["recorded"]["messages"]["/pose"] == 5 and replay["recorded"]["messages"]["/segloc/localized"] == 6
    comparison = json.loads((out / "comparison.json").read_text())
    offline = json.loads((offline_dir / "metrics.json").read_text())
    assert comparison["num_queries"] == {"live": 6, "offline": 6}
    assert comparison["recall"]["5cm_5deg"] == {"live": pytest.approx(4 / 6), "offline": offline["recall"]["5cm_5deg"]}
    assert comparison["recall_difference_queries"]["5cm_5deg"] == round(4 - 6 * offline["recall"]["5cm_5deg"])


def test_run_replay_bad_input(room, tmp_path, domain_id):
    from segloc.data.rosbag import BagReadConfig
    from segloc.errors import SeglocError
    from segloc_ros.replay import ReplayOptions, main, run_replay

    _, bag, map_dir = room
    with pytest.raises(SeglocError, match="no topic /camera/image; topics: .*/camera/image_raw"):
        run_replay(ReplayOptions(bag=bag, output=tmp_path / "a", bag_config=BagReadConfig(image_topic="/camera/image"), launch="none"))
    with pytest.raises(SeglocError, match="--launch multi starts the nodes and needs --map"):
        run_replay(ReplayOptions(bag=bag, output=tmp_path / "b"))
    # Nothing publishes the pose: a clear error after the start timeout, and the replay.json of what happened.
    config = BagReadConfig(pose_source="topic", pose_topic=GT_TOPIC)
    options = ReplayOptions(bag=bag, output=tmp_path / "c", bag_config=config, launch="none", start_timeout=1.0, domain_id=domain_id)
    with pytest.raises(SeglocError, match="nothing publishes /pose after 1 s: are the nodes running"):
        run_replay(options)
    assert json.loads((tmp_path / "c" / "replay.json").read_text())["launch"] == "none"
    code = main(["--bag", str(bag), "-o", str(tmp_path / "d"), "--launch", "none", "--pose-topic", "/gps", "--map", str(map_dir)])
    assert code == 1


# --- with the real nodes ---------------------------------------------------------------------


def load_benchmark_module():
    """benchmarks/ros_latency.py, whose build_scene makes a SegLoc map that localizes (shared, not copied)."""
    import importlib.util
    import sys

    name = "segloc_ros_latency_benchmark"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "benchmarks" / "ros_latency.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def live_scene(tmp_path_factory):
    """The demo room's 8-query bag, its SegLoc and SLD* maps (the shipped networks) and a reference map, with each offline evaluation."""
    import torch
    import yaml

    from segloc.cli import main as segloc_main
    from segloc.demo import DEMO_SIZE
    from segloc.methods import DemoContext, get_method

    root = tmp_path_factory.mktemp("live_replay")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the nodes (threads:=1): the same floating-point path offline and live
    try:
        scene = load_benchmark_module().build_scene(root / "scene")
        maps = {"segloc": scene.map, "reference": root / "reference_map", "sld": root / "sld_map"}
        assert (
            segloc_main(["-q", "map", "build", str(scene.dataset), "--method", "reference", "-o", str(maps["reference"]), "--no-progress"])
            == 0
        )
        # SLD*: the demo's shipped landmark network (trained on this room's 150 mapping images), as `segloc demo` takes it.
        context = DemoContext(scene.dataset, root, "room", 0, DEMO_SIZE, progress=False)
        (root / "sld.yaml").write_text(yaml.safe_dump({"map": get_method("sld").demo_map_config(context)}))
        argv = ["-q", "map", "build", str(scene.dataset), "--method", "sld", "--config", str(root / "sld.yaml"), "-o", str(maps["sld"])]
        assert segloc_main([*argv, "--no-progress"]) == 0
        for method, map_path in maps.items():
            argv = [
                "-q",
                "evaluate",
                str(map_path),
                "--bag",
                str(scene.bag),
                "--pose-topic",
                GT_TOPIC,
                "-o",
                str(root / f"offline_{method}"),
            ]
            assert segloc_main([*argv, "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, scene, maps


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launch", "method"),
    [("multi", "segloc"), ("localizer", "segloc"), ("localizer", "reference"), ("localizer", "sld")],
    ids=["split-segloc", "localizer_node-segloc", "localizer_node-reference", "localizer_node-sld"],
)
def test_live_replay_with_the_nodes_agrees_with_offline_per_image(launch, method, live_scene, domain_id):
    """The nodes localize each played image as `segloc evaluate --bag` does: the same poses, image by image (1 mm, 0.01 deg)."""
    from segloc.data.rosbag import BagReadConfig
    from segloc_ros.replay import ReplayOptions, run_replay

    root, scene, maps = live_scene
    offline_dir = root / f"offline_{method}"
    offline = json.loads((offline_dir / "metrics.json").read_text())
    # The shipped networks on the demo room: SegLoc 86 % within (0.25 m, 2 deg) on the demo's 50 queries, SLD* 98 % within
    # (0.5 m, 5 deg); SIFT localizes all.
    threshold = "0.5m_5deg" if method == "sld" else "0.25m_2deg"
    assert offline["num_queries"] == 8 and offline["recall"][threshold] >= 0.6, offline

    out = root / f"live_{launch}_{method}"
    options = ReplayOptions(
        bag=scene.bag,
        output=out,
        map_path=maps[method],
        bag_config=BagReadConfig(pose_source="topic", pose_topic=GT_TOPIC),
        rate=0.1,  # one image a second: no frame waits in a full node queue on a busy 2-core machine
        launch=launch,
        node_parameters=("threads:=1",),
        offline_metrics=offline_dir / "metrics.json",
        start_timeout=180.0,
        idle_timeout=15.0,
        domain_id=domain_id,
    )
    metrics = run_replay(options)
    replay = json.loads((out / "replay.json").read_text())
    logs = "\n".join(f"--- {name}: {(out / 'logs' / f'{name}.log').read_text()[-3000:]}" for name in replay["nodes"])
    comparison = json.loads((out / "comparison.json").read_text())
    assert replay["played"]["images"] == 8 and all(node["exit_status"] == 0 for node in replay["nodes"].values()), logs
    assert metrics["num_queries"] == 8 and metrics["replay"]["unmatched_pose_messages"] == 0
    assert metrics["time_per_query_median_s"] > 0  # image published -> pose received
    per_image = comparison["per_image"]
    # Every image gets the same answer live and offline (no frame is dropped: the nodes hold an image until its camera_info
    # comes), and where both localized, the same pose: the same code on the same inputs.
    assert per_image["images"] == 8 and per_image["only_live"] == [] and per_image["only_offline"] == [], (comparison, logs)
    assert per_image["both_localized"] == offline["num_localized"] and per_image["agree"] == per_image["both_localized"], (comparison, logs)
    assert comparison["recall_difference_queries"]["0.25m_2deg"] == 0, comparison
