"""Live replay: play a rosbag2 to the segloc nodes, record what they publish, and score it like the offline evaluation.

::

    python -m segloc_ros.replay --bag BAG --map MAP --output OUT [--rate R] [--launch multi|composed|localizer|none]
        [--pose-topic /ground_truth/pose | --gt-frames map base_link] [--offline-metrics OFFLINE/metrics.json]

(also installed as ``segloc_replay``). The pieces work alone:

- :mod:`segloc_ros.replay.player`: :class:`BagPlayer` publishes a bag's messages in log-time
  order at ``rate`` times the recorded speed, with ``/clock`` for ``use_sim_time`` nodes.
- :mod:`segloc_ros.replay.recorder`: :class:`TopicRecorder` writes the messages of some topics,
  as they arrive, to a new rosbag2.
- :mod:`segloc_ros.replay.launcher`: :class:`NodeLauncher` starts the nodes as child processes
  (``multi``, ``composed`` or ``localizer``), waits until they are active, stops them.
- :mod:`segloc_ros.replay.run`: :func:`run_replay` puts them together and scores the recorded
  poses with the scoring of ``segloc evaluate --bag``; its docstring lists the outputs.
- :mod:`segloc_ros.replay.cli`: the command line (:func:`main`).

The public names of these modules are re-exported here. Importing this package does not
import rclpy: the player, recorder and replay import it when they run.
"""

from segloc_ros.replay.cli import build_parser, main
from segloc_ros.replay.launcher import (
    CONTAINER_MODULE,
    FASTDDS_PROFILE,
    LAUNCH_PROCESSES,
    LOCALIZER_MODULE,
    NODE_MODULES,
    PARAMS_FILE,
    PRIMARY_STATE_ACTIVE,
    REPO_ROOT,
    NodeLauncher,
    NodeProcess,
    config_file,
)
from segloc_ros.replay.player import DEFAULT_DEPTH, IMAGE_TYPES, STATIC_TOPICS, BagPlayer, PlaybackStats, message_class
from segloc_ros.replay.recorder import OUTPUT_TOPICS, TopicRecorder
from segloc_ros.replay.run import LAUNCH_MODES, ReplayOptions, camera_remaps, camera_topics, run_replay

__all__ = [
    "CONTAINER_MODULE",
    "LAUNCH_PROCESSES",
    "LOCALIZER_MODULE",
    "DEFAULT_DEPTH",
    "FASTDDS_PROFILE",
    "IMAGE_TYPES",
    "LAUNCH_MODES",
    "NODE_MODULES",
    "OUTPUT_TOPICS",
    "PARAMS_FILE",
    "PRIMARY_STATE_ACTIVE",
    "REPO_ROOT",
    "STATIC_TOPICS",
    "BagPlayer",
    "NodeLauncher",
    "NodeProcess",
    "PlaybackStats",
    "ReplayOptions",
    "TopicRecorder",
    "build_parser",
    "camera_remaps",
    "camera_topics",
    "config_file",
    "main",
    "message_class",
    "run_replay",
]
