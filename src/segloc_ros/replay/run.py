"""The whole live replay: :func:`run_replay` plays a bag to the nodes, records their outputs and scores them.

:func:`run_replay` checks the bag's ground truth, starts the nodes (unless ``launch="none"``:
they run already, e.g. from ``ros2 launch segloc_ros localize.launch.py``), waits for them,
plays the bag (:class:`~segloc_ros.replay.player.BagPlayer`) while recording the outputs
(:class:`~segloc_ros.replay.recorder.TopicRecorder`), waits for the last outputs (until every
played image got its ``segloc/localized`` answer, or nothing came for ``idle_timeout`` seconds,
or ``output_timeout`` passed), stops the nodes, then scores the recorded ``pose`` messages with
:func:`segloc.evaluate.replay.evaluate_pose_messages`, the scoring of ``segloc evaluate --bag``.

Outputs in OUT::

    recorded/          rosbag2 of pose, /tf, segloc/localized, /diagnostics as received
    metrics.json, per_query.json, estimates_tum.txt, groundtruth_tum.txt, *.png
                       the report of segloc evaluate (time_s = image publish -> pose receipt)
    replay.json        what was played and recorded, how the wait ended, the node processes
    comparison.json    live against offline metrics (with --offline-metrics), and image by image
                       (``per_image``) when that report has its per_query.json
    logs/              node output (with --launch multi|composed)
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloc.data.rosbag import (
    COMPRESSED_IMAGE_TYPE,
    BagReadConfig,
    open_bag,
    select_camera_info_topic,
    select_image_topic,
)
from segloc.errors import SeglocError
from segloc_ros.replay.launcher import FASTDDS_PROFILE, LAUNCH_PROCESSES, PARAMS_FILE, NodeLauncher, config_file
from segloc_ros.replay.player import BagPlayer
from segloc_ros.replay.recorder import OUTPUT_TOPICS, TopicRecorder

logger = logging.getLogger("segloc")

LAUNCH_MODES = (*LAUNCH_PROCESSES, "none")


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
        compare_per_image,
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
        comparison.update(compare_metrics(metrics, offline))
        offline_queries = options.offline_metrics.parent / "per_query.json"
        if offline_queries.is_file():
            live_queries = json.loads((options.output / "per_query.json").read_text())
            comparison["per_image"] = compare_per_image(live_queries, json.loads(offline_queries.read_text()))
        write_json(options.output / "comparison.json", comparison)
    return metrics
