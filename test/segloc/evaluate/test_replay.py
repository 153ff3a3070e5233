"""Offline replay (`segloc evaluate --bag`) and the scoring of live-replay pose messages, on a small rendered room."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segloc.cli import main
from segloc.data.rosbag import BagReadConfig, _MessageFactory, seconds_to_ns
from segloc.data.synthetic import read_scene_frames, write_scene_bag
from segloc.errors import SeglocError
from segloc.evaluate import read_tum_trajectory
from segloc.evaluate.replay import (
    NO_POSE_REASON,
    MapSummary,
    PoseMessage,
    compare_metrics,
    evaluate_pose_messages,
    match_poses,
    read_camera_extrinsics,
    read_ground_truth,
    read_pose_messages,
)
from segloc.geometry import Rigid3, axis_angle_to_matrix, pose_error
from segloc.localize.frames import base_pose_from_camera
from segloc.maps.package import MapPackage

GT_TOPIC = "/ground_truth/pose"
REPORT_FILES = ("metrics.json", "per_query.json", "estimates_tum.txt", "groundtruth_tum.txt", "errors_cdf.png", "trajectory_topview.png")


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A 160x120 room: 8 mapping and 5 query images, the query recording as sqlite3 and mcap bags, a reference map."""
    root = tmp_path_factory.mktemp("replay_room")
    dataset, map_dir = root / "room", root / "map"
    argv = ["synth", "-o", str(dataset), "--size", "160x120", "--num-mapping", "8", "--num-query", "5", "--bag", "query", "--no-progress"]
    assert main(argv) == 0
    write_scene_bag(dataset, root / "query_mcap", storage="mcap")
    assert main(["map", "build", str(dataset), "--method", "reference", "-o", str(map_dir), "--no-progress"]) == 0
    return dataset, map_dir, dataset / "query_bag", root / "query_mcap"


@pytest.fixture(scope="module")
def offline(room, tmp_path_factory):
    """`segloc evaluate` on the dataset folder and on the bag (sqlite3): both report folders."""
    dataset, map_dir, bag, _ = room
    out = tmp_path_factory.mktemp("offline")
    assert main(["-q", "evaluate", str(map_dir), str(dataset), "-o", str(out / "dataset"), "--no-progress"]) == 0
    argv = ["-q", "evaluate", str(map_dir), "--bag", str(bag), "--pose-topic", GT_TOPIC, "-o", str(out / "bag"), "--no-progress"]
    assert main(argv) == 0
    return out / "dataset", out / "bag"


def load(folder: Path, name: str):
    return json.loads((folder / name).read_text())


def test_bag_evaluation_matches_the_dataset_evaluation(room, offline):
    dataset, map_dir, bag, _ = room
    from_dataset, from_bag = offline
    for name in REPORT_FILES:
        assert (from_bag / name).stat().st_size > 0, name
    a, b = load(from_dataset, "metrics.json"), load(from_bag, "metrics.json")
    assert b["num_queries"] == a["num_queries"] == 5
    # Same images, cameras and ground truth; the two runs share a process, so RANSAC draws differ (~0.1 mm here).
    assert b["recall"] == a["recall"] and b["num_localized"] == a["num_localized"]
    assert b["median_translation_localized_m"] == pytest.approx(a["median_translation_localized_m"], abs=2e-3)
    assert b["method"] == "reference" and b["dataset"] == str(bag) and b["map_path"] == str(map_dir)
    assert b["map_bytes"] == a["map_bytes"] and b["queries_without_overlap"] == a["queries_without_overlap"]
    assert b["replay"] == {"mode": "offline", "bag": str(bag)}
    per_dataset, per_bag = load(from_dataset, "per_query.json"), load(from_bag, "per_query.json")
    frames, _ = read_scene_frames(dataset, "query")
    assert [q["name"] for q in per_bag] == [f"{seconds_to_ns(f.timestamp)}.png" for f in frames]
    for x, y in zip(per_dataset, per_bag):
        # RANSAC's draws differ between the runs (see above): a point at the inlier threshold may go either way.
        assert x["success"] == y["success"] and abs(x["num_inliers"] - y["num_inliers"]) <= max(2, 0.05 * x["num_inliers"])
        if x["success"]:
            assert y["translation_error_m"] == pytest.approx(x["translation_error_m"], abs=2e-3)
    # TUM trajectories carry the image stamps of the bag (the dataset folder has none: indices).
    stamps, poses = read_tum_trajectory(from_bag / "groundtruth_tum.txt")
    np.testing.assert_allclose(stamps, [f.timestamp for f in frames])
    _, dataset_poses = read_tum_trajectory(from_dataset / "groundtruth_tum.txt")
    for p, q in zip(poses, dataset_poses):
        assert max(pose_error(p, q)) < 1e-5


def test_mcap_bag_and_limit(room, offline, tmp_path):
    _, map_dir, _, mcap = room
    argv = ["-q", "evaluate", str(map_dir), "--bag", str(mcap), "--pose-topic", GT_TOPIC, "-o", str(tmp_path / "out"), "--no-progress"]
    assert main([*argv, "--limit", "2"]) == 0
    metrics = load(tmp_path / "out", "metrics.json")
    assert metrics["num_queries"] == 2
    assert [q["name"] for q in load(tmp_path / "out", "per_query.json")] == [q["name"] for q in load(offline[1], "per_query.json")[:2]]


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segloc: error: "), lines
    return lines[0]


def test_bad_input(capsys, room, tmp_path):
    dataset, map_dir, bag, _ = room
    out = ["-o", str(tmp_path / "out"), "--no-progress"]
    base = ["evaluate", str(map_dir), *out]
    error = one_line_error(capsys, [*base, "--bag", str(bag), "--image-topic", "/camera/image", "--pose-topic", GT_TOPIC])
    assert "no topic /camera/image" in error and "/camera/image_raw (sensor_msgs/msg/Image)" in error and "/tf_static" in error
    error = one_line_error(capsys, [*base, "--bag", str(bag), "--pose-topic", "/gps"])
    assert "pose topic /gps is missing" in error and f"Pose topics in the bag: {GT_TOPIC}, /odom" in error
    error = one_line_error(capsys, [*base, "--bag", str(bag), "--camera-info-topic", "/camera/info", "--pose-topic", GT_TOPIC])
    assert "no CameraInfo topic /camera/info" in error and "/camera/camera_info" in error
    # The synthetic bag has no map frame on /tf: the default TF ground truth names the frames that exist.
    error = one_line_error(capsys, [*base, "--bag", str(bag)])
    assert "frame 'map' is not in the TF data; known frames: base_link, camera_optical_frame, odom" in error
    error = one_line_error(capsys, [*base, "--bag", str(bag), "--gt-frames", "map", "base_link", "--pose-topic", GT_TOPIC])
    assert "--gt-frames (TF) or --pose-topic, not both" in error
    # DATASET, optional now, must follow MAP directly (argparse matches optional positionals in one go).
    assert "not both" in one_line_error(capsys, ["evaluate", str(map_dir), str(dataset), "--bag", str(bag), *out])
    assert "give a DATASET folder, or --bag BAG" in one_line_error(capsys, base)
    error = one_line_error(capsys, ["evaluate", str(map_dir), str(dataset), "--pose-topic", GT_TOPIC, *out])
    assert "--pose-topic: bag options, they need --bag" in error
    assert f"bag {tmp_path / 'nothing'} does not exist" in one_line_error(capsys, [*base, "--bag", str(tmp_path / "nothing")])
    assert not (tmp_path / "out").exists()


# --- scoring pose messages (the live path) without ROS ---------------------------------------


def base_estimates(folder: Path, bag: Path, config: BagReadConfig) -> list[PoseMessage]:
    """Pose messages that say exactly what the offline run estimated (camera poses turned into base poses)."""
    extrinsics = read_camera_extrinsics(bag, config)
    stamps = {r.name: r.timestamp for r in read_ground_truth(bag, config)}
    poses = []
    for q in load(folder, "per_query.json"):
        if q["success"]:
            est = Rigid3(q["cam_from_world_est"]["quat_wxyz"], q["cam_from_world_est"]["translation"])
            world_from_base = base_pose_from_camera(est.inverse(), extrinsics[stamps[q["name"]]])
            stamp = seconds_to_ns(stamps[q["name"]])
            poses.append(PoseMessage(stamp, world_from_base, np.diag([0.01, 0.01, 0.01, 1e-4, 1e-4, 1e-4]), stamp + 50_000_000))
    return poses


def test_pose_messages_score_like_the_offline_run(room, offline, tmp_path):
    _, map_dir, bag, _ = room
    config = BagReadConfig(pose_source="topic", pose_topic=GT_TOPIC)
    poses = base_estimates(offline[1], bag, config)
    summary = MapSummary.from_package(MapPackage.open(map_dir))
    publish = {p.stamp_ns: p.stamp_ns + 10_000_000 for p in poses}  # published 10 ms after the stamp, received 50 ms after
    live = evaluate_pose_messages(poses, bag, tmp_path / "live", config, publish_times_ns=publish, map_summary=summary)
    offline_metrics = load(offline[1], "metrics.json")
    for name in REPORT_FILES:
        assert (tmp_path / "live" / name).stat().st_size > 0, name
    assert live["recall"] == offline_metrics["recall"] and live["num_localized"] == offline_metrics["num_localized"]
    assert live["median_translation_localized_m"] == pytest.approx(offline_metrics["median_translation_localized_m"], abs=1e-6)
    assert live["method"] == "reference" and live["map_bytes"] == summary.bytes
    assert live["time_per_query_median_s"] == pytest.approx(0.04) or live["num_failed"] >= 3
    assert live["replay"]["mode"] == "live" and live["replay"]["unmatched_pose_messages"] == 0
    failed = [q for q in load(tmp_path / "live", "per_query.json") if not q["success"]]
    assert all(q["failure_reason"] == NO_POSE_REASON for q in failed)
    assert len(failed) == offline_metrics["num_failed"]
    localized = [q for q in load(tmp_path / "live", "per_query.json") if q["success"]]
    assert localized[0]["info"]["position_std_m"] == pytest.approx(0.1)

    comparison = compare_metrics(live, offline_metrics)
    assert comparison["recall_difference_queries"] == dict.fromkeys(offline_metrics["recall"], 0)
    assert comparison["num_queries"] == {"live": 5, "offline": 5}


def test_pose_messages_from_a_recorded_bag(room, tmp_path):
    """Read PoseWithCovarianceStamped from a bag; a perturbed, a missing, a duplicate and an unmatched message."""
    from rosbags.rosbag2 import Writer

    dataset, _, bag, _ = room
    config = BagReadConfig(pose_source="topic", pose_topic=GT_TOPIC)
    frames, _ = read_scene_frames(dataset, "query")
    factory = _MessageFactory(2)
    types = factory.types

    def pose_msg(stamp_ns: int, world_from_base: Rigid3):
        covariance = np.diag([0.04, 0.04, 0.04, 1e-3, 1e-3, 1e-3]).reshape(-1)
        return types["geometry_msgs/msg/PoseWithCovarianceStamped"](
            header=factory.header(stamp_ns, "map"),
            pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=factory.pose(world_from_base), covariance=covariance),
        )

    turned = Rigid3.from_rotation(axis_angle_to_matrix(np.array([0.0, 0.0, np.radians(1.0)])), np.array([0.1, 0.0, 0.0]))
    messages = [(seconds_to_ns(f.timestamp), f.world_from_base) for f in frames]
    messages[1] = (messages[1][0], turned * frames[1].world_from_base)  # 0.1 m and 1 deg off
    del messages[3]  # no pose for the fourth image
    messages.append((messages[0][0], frames[0].world_from_base))  # the first image again
    messages.append((messages[0][0] + 7_000_000, frames[0].world_from_base))  # 7 ms after an image: matches none
    recorded = tmp_path / "recorded"
    with Writer(recorded, version=9) as writer:
        connection = writer.add_connection("/pose", "geometry_msgs/msg/PoseWithCovarianceStamped", typestore=factory.store)
        for i, (stamp, pose) in enumerate(messages):
            writer.write(
                connection, 2_000_000_000 + i, factory.serialize(pose_msg(stamp, pose), "geometry_msgs/msg/PoseWithCovarianceStamped")
            )

    poses = read_pose_messages(recorded, "/pose")
    assert [p.stamp_ns for p in poses] == [s for s, _ in messages] and poses[0].receive_time_ns == 2_000_000_000
    matched, unmatched, duplicates = match_poses(read_ground_truth(bag, config), poses)
    assert (len(matched), unmatched, duplicates) == (4, 1, 1)

    metrics = evaluate_pose_messages(poses, bag, tmp_path / "live", config, plots=False)
    per_query = load(tmp_path / "live", "per_query.json")
    assert [q["success"] for q in per_query] == [True, True, True, False, True]
    assert per_query[3]["failure_reason"] == NO_POSE_REASON
    assert per_query[0]["translation_error_m"] < 1e-6 and per_query[2]["rotation_error_deg"] < 1e-4
    assert per_query[1]["rotation_error_deg"] == pytest.approx(1.0, abs=1e-4) and per_query[1]["translation_error_m"] > 0.05
    assert metrics["recall"]["5cm_5deg"] == pytest.approx(0.6) and metrics["recall"]["0.5m_5deg"] == pytest.approx(0.8)
    assert metrics["replay"]["unmatched_pose_messages"] == 1 and metrics["replay"]["duplicate_pose_messages"] == 1
    assert metrics["time_per_query_s"] == 0.0 and metrics["replay"]["latency_measured"] is False


def test_pose_message_errors(room, tmp_path):
    _, _, bag, _ = room
    with pytest.raises(
        SeglocError, match=r"the pose topic /pose is missing; expected geometry_msgs/msg/PoseWithCovarianceStamped\. Topics: .*/odom"
    ):
        read_pose_messages(bag, "/pose")
    with pytest.raises(SeglocError, match="the pose topic /odom is a nav_msgs/msg/Odometry"):
        read_pose_messages(bag, "/odom")
    config = BagReadConfig(pose_source="topic", pose_topic=GT_TOPIC, use_bag_time=True)
    with pytest.raises(SeglocError, match="use_bag_time must be false"):
        evaluate_pose_messages([], bag, tmp_path / "out", config)
    config = BagReadConfig(pose_source="topic", pose_topic=GT_TOPIC)
    with pytest.raises(SeglocError, match=r"camera extrinsics \(robot -> camera\).*frame 'robot' is not in the TF data"):
        read_camera_extrinsics(bag, config, base_frame="robot")
    fixed = read_camera_extrinsics(bag, BagReadConfig(pose_source="topic", pose_topic=GT_TOPIC, base_from_cam=(1, 0, 0, 0, 0, 0, 1)))
    assert len(fixed) == 5 and all(np.allclose(e.translation, [0, 0, 1]) for e in fixed.values())
