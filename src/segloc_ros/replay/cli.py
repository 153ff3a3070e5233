"""The ``segloc_replay`` command line (also ``python -m segloc_ros.replay``): options -> :func:`run_replay`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from segloc.errors import SeglocError
from segloc_ros.replay.recorder import OUTPUT_TOPICS
from segloc_ros.replay.run import LAUNCH_MODES, ReplayOptions, run_replay


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
    parser.add_argument(
        "--map", type=Path, help="the nodes' map (map_path); needed with --launch multi|composed|localizer, else used for the report"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the recorded bag, the report, replay.json")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument(
        "--launch",
        choices=LAUNCH_MODES,
        default="multi",
        help="start the nodes: multi (SegLoc split, one process per node), composed (the three in one container), localizer (localizer_node: the map's method, any), or none (running already)",
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
