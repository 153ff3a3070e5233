"""Evaluate localization on a robot recording (rosbag2): offline replay, and the scoring of a live replay.

Both modes score the images of a bag that :func:`segloc.data.rosbag.read_bag` can match to a
ground-truth pose (from ``/tf`` frames or a pose topic, interpolated at each image's header
stamp; see :class:`segloc.data.rosbag.BagReadConfig`), and both go through one function,
:func:`evaluate_records`: the map-overlap check of :mod:`segloc.evaluate.run`, one
:class:`~segloc.evaluate.metrics.QueryResult` per image, :func:`~segloc.evaluate.metrics.summarize`
and :func:`~segloc.evaluate.report.write_report`. The output folder is therefore the one of
``segloc evaluate`` on a dataset folder (``metrics.json``, ``per_query.json``, TUM trajectories,
plots); query names are the record names of ``read_bag`` (``<stamp_ns>.png`` by default), the
metrics' ``dataset`` entry is the bag path, and ``metrics["replay"]`` says how the estimates
were obtained.

Offline (:func:`evaluate_bag`, ``segloc evaluate MAP --bag BAG``): the map's localizer runs on
every image with ground truth, in bag order; images are streamed from the bag, never written to
disk. The bag is read twice: once for the ground truth (to check it against the map before any
localization), once for the pixels.

Live (:func:`evaluate_pose_messages`, used by :mod:`segloc_ros.replay`): the ROS nodes localized
the images while the bag was played; their ``pose`` messages
(``geometry_msgs/PoseWithCovarianceStamped``: the base frame in ``map``, stamped with the
image's stamp) are matched to the images by stamp (:data:`MATCH_TOLERANCE_NS`) and turned into
camera poses with the bag's own camera extrinsics (``base_frame -> camera frame`` from the TF
data, or ``base_from_cam`` of the config), so that both modes compare camera poses with the
same ground truth. An image without a pose message is a failed query (:data:`NO_POSE_REASON`).
In live metrics ``time_s`` (and ``time_per_query_s``) is the wall-clock time from publishing the
image to receiving its pose when the player's publish times are given (0 otherwise), not the
time of one ``localize`` call; ``num_inliers`` is 0 and ``timings`` empty (a pose message
carries neither), and ``info`` holds the pose's standard deviations from its covariance.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from segloc.data.dataset import ImageRecord
from segloc.data.rosbag import (
    BagReadConfig,
    describe_topics,
    open_bag,
    read_bag,
    rigid_from_pose_msg,
    seconds_to_ns,
    stamp_to_ns,
)
from segloc.errors import SeglocError
from segloc.evaluate.metrics import THRESHOLDS, QueryResult, peak_rss_bytes, pose_from_record, summarize
from segloc.evaluate.report import format_summary, write_report
from segloc.evaluate.run import QueryOdometry, as_pipeline, localize_query, overlap_or_raise, scale_entries
from segloc.fileio import check_output
from segloc.geometry.transforms import Rigid3
from segloc.localize.frames import camera_pose_from_base, pose_uncertainty

logger = logging.getLogger("segloc")

POSE_TYPE = "geometry_msgs/msg/PoseWithCovarianceStamped"
#: A pose message belongs to the image whose header stamp is this close (nodes copy the stamp
#: exactly; the tolerance only absorbs the float seconds of ``ImageRecord.timestamp``).
MATCH_TOLERANCE_NS = 1_000
#: Failure reason of an image for which the nodes published no pose.
NO_POSE_REASON = "no pose published for this image"
COMPARISON_KEYS = (
    "num_localized",
    "median_translation_m",
    "median_rotation_deg",
    "median_translation_localized_m",
    "median_rotation_localized_deg",
    "time_per_query_s",
    "time_per_query_median_s",
)


@dataclass
class MapSummary:
    """What a report needs from a map package.

    Attributes:
        path: the map folder.
        method: the method the map was built for.
        bytes: size on disk.
        points3D: (N, 3) map points (the queries are checked against them).
        mapping_centers: (M, 3) camera centres of the map's images (top-view plot).
    """

    path: str
    method: str
    bytes: int
    points3D: np.ndarray
    mapping_centers: np.ndarray

    @classmethod
    def from_package(cls, package: Any) -> MapSummary:
        """From an open :class:`segloc.maps.package.MapPackage` (reads its core layer)."""
        from segloc.maps.core import read_core

        core = read_core(package)
        centers = np.asarray([r.cam_from_world.center for r in core.images], dtype=np.float64).reshape(-1, 3)
        return cls(str(package.path), package.method, package.bytes(), np.asarray(core.points3D, dtype=np.float64), centers)


# --- the evaluation both modes share --------------------------------------------------------
def evaluate_records(
    ground_truth: Sequence[ImageRecord],
    estimate: Callable[[ImageRecord], QueryResult],
    output_dir: str | Path,
    *,
    method: str | None,
    source: str | Path,
    map_summary: MapSummary | None = None,
    min_visible: int = 10,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Score ``estimate(record)`` for every ground-truth record and write the report.

    Args:
        ground_truth: the images with their true ``cam_from_world``, camera and timestamp.
        estimate: the result of one image (``QueryResult.from_estimate``; a SeglocError raised
            for one image should already be a failed result).
        output_dir: the report folder (see :mod:`segloc.evaluate.report`).
        method: the method name stored in the metrics.
        source: what the images came from (the bag), stored as the metrics' ``dataset``.
        map_summary: the map; when given, the ground truth is first checked against its points
            (a clear error when no image sees the map) and its size and cameras go in the report.
        min_visible: fewest map points an image must see at its true pose to overlap the map.
        progress: show a progress bar.
        extra: more metrics entries (they replace computed ones of the same key).
        plots: write the PNG plots.

    Returns:
        The metrics dict, as written to ``metrics.json``.
    """
    if not ground_truth:
        raise SeglocError(f"{source}: no image with a ground-truth pose to evaluate")
    without_overlap = None
    if map_summary is not None:
        without_overlap = overlap_or_raise(ground_truth, map_summary.points3D, min_visible)
    peak_at_start = peak_rss_bytes()
    results = [estimate(record) for record in tqdm(ground_truth, desc=f"evaluate ({method})", unit="image", disable=not progress)]
    metrics = summarize(
        results,
        None if map_summary is None else map_summary.bytes,
        peak_rss_bytes(),
        peak_memory_at_start_bytes=peak_at_start,
        method=method,
        map_path=None if map_summary is None else map_summary.path,
        dataset=source,
        queries_without_overlap=without_overlap,
    )
    metrics.update(extra or {})
    mapping_centers = np.zeros((0, 3)) if map_summary is None else map_summary.mapping_centers
    write_report(output_dir, metrics, results, mapping_centers=mapping_centers, plots=plots)
    logger.debug("evaluation of %s on %s:\n%s", method, source, format_summary(metrics))
    return metrics


# --- reading a bag ---------------------------------------------------------------------------
def read_ground_truth(bag: str | Path, config: BagReadConfig | None = None) -> list[ImageRecord]:
    """The images of ``bag`` that have a ground-truth pose, as records (the pixels are dropped).

    Raises:
        SeglocError: from :func:`segloc.data.rosbag.read_bag` (missing topics, frames...), or
            when the bag holds no image message at all.
    """
    records = [record for record, _ in read_bag(bag, config)]
    if not records:
        raise SeglocError(f"{bag}: the image topic has no messages in the selected time window")
    return records


class BagImages:
    """The pixels of a bag's images by record name: the ``load_image`` of a dataset, streamed from the bag.

    Names asked in bag order are served from one pass over the bag; a name asked out of order
    starts the pass again.
    """

    def __init__(self, bag: str | Path, config: BagReadConfig | None = None) -> None:
        self.bag = Path(bag)
        self.config = config or BagReadConfig()
        self._stream = None

    def load_image(self, name: str) -> np.ndarray:
        """(H, W, 3) RGB uint8 pixels of the image ``name``."""
        for _ in range(2):
            if self._stream is None:
                self._stream = read_bag(self.bag, self.config)
            for record, image in self._stream:
                if record.name == name:
                    return image
            self._stream = None
        raise SeglocError(f"{self.bag}: no image named {name}")

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def read_camera_extrinsics(bag: str | Path, config: BagReadConfig | None = None, base_frame: str = "base_link") -> dict[float, Rigid3]:
    """``base_from_cam`` at each image of ``bag`` with ground truth, keyed by the record timestamp.

    The extrinsics are ``base_from_cam`` of the config when set, else the TF transform
    ``base_frame -> camera frame`` (the image header's frame, or ``camera_frame``) of the bag at
    the image stamp: what the nodes use to turn camera poses into base poses.
    """
    config = config or BagReadConfig()
    fixed = config.extrinsics()
    if fixed is not None:
        return {record.timestamp: fixed for record in read_ground_truth(bag, config)}
    tf_config = dataclasses.replace(config, pose_source="tf", world_frame=base_frame)
    try:
        return {record.timestamp: record.cam_from_world.inverse() for record in read_ground_truth(bag, tf_config)}
    except SeglocError as exc:
        raise SeglocError(
            f"the camera extrinsics ({base_frame} -> camera) are needed to compare base poses with the ground truth: {exc}; "
            "set base_from_cam in the 'bag' config section, or base_frame to the robot frame of the TF data"
        ) from None


def read_bag_odometry(
    bag: str | Path, config: BagReadConfig | None = None, odom_frame: str = "odom", base_frame: str = "base_link"
) -> QueryOdometry:
    """The odometry (``odom_frame -> base_frame`` in the TF data) and camera extrinsics at each image of ``bag`` with ground truth.

    What offline replay tracks with (:func:`evaluate_bag`), as ``localizer_node`` does from the
    same TF data. Images without odometry at their stamp are left out (they relocalize).

    Raises:
        SeglocError: no camera extrinsics (:func:`read_camera_extrinsics`), or no image with odometry.
    """
    config = config or BagReadConfig()
    records = read_ground_truth(bag, config)
    extrinsics = read_camera_extrinsics(bag, config, base_frame)
    odom_config = dataclasses.replace(config, pose_source="tf", world_frame=odom_frame)
    try:
        odom_from_cam = {record.timestamp: record.cam_from_world.inverse() for record in read_ground_truth(bag, odom_config)}
    except SeglocError as exc:
        raise SeglocError(f"{bag}: no odometry {odom_frame} -> {base_frame} to track with: {exc}; pass --no-tracking") from None
    odometry = QueryOdometry({}, {})
    for record in records:
        if record.timestamp in odom_from_cam and record.timestamp in extrinsics:
            base_from_cam = extrinsics[record.timestamp]
            odometry.odom_from_base[record.name] = odom_from_cam[record.timestamp] * base_from_cam.inverse()
            odometry.base_from_cam[record.name] = base_from_cam
    if not odometry.odom_from_base:
        raise SeglocError(f"{bag}: no image has odometry {odom_frame} -> {base_frame} at its stamp; pass --no-tracking")
    return odometry


# --- offline replay --------------------------------------------------------------------------
def evaluate_bag(
    localizer: Any,
    bag: str | Path,
    output_dir: str | Path,
    config: BagReadConfig | None = None,
    *,
    map_summary: MapSummary | None = None,
    progress: bool = True,
    limit: int | None = None,
    extra: dict[str, Any] | None = None,
    plots: bool = True,
    odometry: QueryOdometry | None = None,
) -> dict[str, Any]:
    """Localize every image of ``bag`` that has ground truth, write the report, return the metrics.

    Args:
        localizer: any object with ``method`` and ``localize(image, camera)``.
        bag: rosbag2 folder (sqlite3 or mcap) or ROS 1 ``.bag`` file.
        output_dir: the report folder.
        config: topics, frames and ground-truth source; default :class:`BagReadConfig`.
        map_summary: the localizer's map (overlap check, size, cameras in the report).
        progress: show a progress bar.
        limit: only the first ``limit`` images with ground truth.
        extra: more metrics entries (e.g. ``{"method": "segloc"}``).
        plots: write the PNG plots.
        odometry: the images' odometry (:func:`read_bag_odometry`): they run in order as a
            robot's frames, with tracking (:mod:`segloc.evaluate.run`); ``metrics["tracking"]``.

    Raises:
        SeglocError: a bad bag or config (from :func:`segloc.data.rosbag.read_bag`), no image
            with ground truth, or ground truth that overlaps nothing in the map.
    """
    config = config or BagReadConfig()
    if limit is not None and limit < 1:
        raise SeglocError(f"limit must be at least 1, got {limit}")
    map_path = map_summary.path if map_summary is not None else None
    check_output(output_dir, "folder", inputs=[(bag, "the bag"), (map_path, "the map")], what="report folder")
    ground_truth = read_ground_truth(bag, config)[:limit]
    localizer = as_pipeline(localizer)
    method = localizer.method
    logger.info("offline replay of %s: %s on %d images -> %s", bag, method, len(ground_truth), output_dir)
    images = BagImages(bag, config)
    try:
        return evaluate_records(
            ground_truth,
            lambda record: localize_query(localizer, images, record, odometry),
            output_dir,
            method=method,
            source=bag,
            map_summary=map_summary,
            progress=progress,
            extra={
                "replay": {"mode": "offline", "bag": str(bag)},
                **scale_entries(localizer),
                **({"tracking": localizer.tracking.describe()} if odometry is not None else {}),
                **(extra or {}),
            },
            plots=plots,
        )
    finally:
        images.close()


# --- live replay -----------------------------------------------------------------------------
@dataclass
class PoseMessage:
    """One ``pose`` message of the localizer.

    Attributes:
        stamp_ns: header stamp (the image's stamp).
        world_from_base: the base pose in the header frame (``map``).
        covariance: (6, 6) as published (ROS order, row-major).
        receive_time_ns: when it was received (the recorded bag's log time), wall clock.
    """

    stamp_ns: int
    world_from_base: Rigid3
    covariance: np.ndarray
    receive_time_ns: int


def read_pose_messages(bag: str | Path, topic: str = "/pose") -> list[PoseMessage]:
    """The ``PoseWithCovarianceStamped`` messages of ``topic`` in a (recorded) bag, in log-time order.

    Raises:
        SeglocError: no such topic (the message lists the bag's topics), or another type.
    """
    bag = Path(bag)
    with open_bag(bag) as reader:
        topics = {name: info.msgtype for name, info in reader.topics.items() if info.msgtype}
        if topics.get(topic) != POSE_TYPE:
            found = f"a {topics[topic]}" if topic in topics else "missing"
            raise SeglocError(f"{bag}: the pose topic {topic} is {found}; expected {POSE_TYPE}. Topics: {describe_topics(topics)}")
        connections = [c for c in reader.connections if c.topic == topic]
        poses = []
        for connection, log_time, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            covariance = np.asarray(msg.pose.covariance, dtype=np.float64).reshape(6, 6)
            poses.append(PoseMessage(stamp_to_ns(msg.header.stamp), rigid_from_pose_msg(msg.pose.pose), covariance, int(log_time)))
    return poses


def match_poses(ground_truth: Sequence[ImageRecord], poses: Sequence[PoseMessage]) -> tuple[dict[str, PoseMessage], int, int]:
    """Assign each pose message to the image with its stamp.

    Returns:
        ``(record name -> pose, unmatched, duplicates)``: the last message wins for an image
        with several; ``unmatched`` messages match no image.
    """
    stamps = [seconds_to_ns(r.timestamp) for r in ground_truth]
    order = sorted(range(len(stamps)), key=stamps.__getitem__)
    sorted_stamps = [stamps[i] for i in order]
    matched: dict[str, PoseMessage] = {}
    unmatched = duplicates = 0
    for pose in poses:
        i = bisect.bisect_left(sorted_stamps, pose.stamp_ns)
        near = [j for j in (i - 1, i) if 0 <= j < len(sorted_stamps) and abs(sorted_stamps[j] - pose.stamp_ns) <= MATCH_TOLERANCE_NS]
        if not near:
            unmatched += 1
            continue
        name = ground_truth[order[near[0]]].name
        duplicates += name in matched
        matched[name] = pose
    return matched, unmatched, duplicates


def _pose_info(pose: PoseMessage) -> dict[str, Any]:
    try:
        position_std, yaw_std = pose_uncertainty(pose.covariance)
    except SeglocError as exc:
        return {"covariance": f"invalid ({exc})"}
    return {"position_std_m": position_std, "yaw_std_deg": yaw_std}


def evaluate_pose_messages(
    poses: Sequence[PoseMessage],
    bag: str | Path,
    output_dir: str | Path,
    config: BagReadConfig | None = None,
    *,
    base_frame: str = "base_link",
    publish_times_ns: Mapping[int, int] | None = None,
    map_summary: MapSummary | None = None,
    method: str | None = None,
    ground_truth: Sequence[ImageRecord] | None = None,
    extrinsics: Mapping[float, Rigid3] | None = None,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Score a localizer's recorded ``pose`` messages against the ground truth of the bag that was played.

    Args:
        poses: the pose messages (:func:`read_pose_messages`).
        bag: the bag that was played (ground truth, camera extrinsics).
        output_dir: the report folder.
        config: how to read the ground truth (as for :func:`evaluate_bag`); header stamps only
            (``use_bag_time`` would not match the stamps of the pose messages).
        base_frame: the robot frame whose pose the messages give.
        publish_times_ns: image header stamp -> wall-clock time the image was published; gives
            each image's latency (``time_s``).
        map_summary: the nodes' map (overlap check, size, cameras in the report).
        method: the method name stored in the metrics (default: the map's).
        ground_truth, extrinsics: :func:`read_ground_truth` and :func:`read_camera_extrinsics` of
            ``bag`` when the caller has them already (None: read here).
        progress: show a progress bar.
        extra: more metrics entries.
        plots: write the PNG plots.
    """
    config = config or BagReadConfig()
    if config.use_bag_time:
        raise SeglocError("live replay matches the nodes' poses to images by header stamp: use_bag_time must be false")
    ground_truth = read_ground_truth(bag, config) if ground_truth is None else ground_truth
    extrinsics = read_camera_extrinsics(bag, config, base_frame) if extrinsics is None else extrinsics
    matched, unmatched, duplicates = match_poses(ground_truth, poses)
    if unmatched:
        logger.warning("%d of %d pose messages match no image of %s with ground truth", unmatched, len(poses), bag)
    publish_times_ns = publish_times_ns or {}

    def estimate(record: ImageRecord) -> QueryResult:
        pose = matched.get(record.name)
        if pose is None:
            return QueryResult.from_estimate(
                record.name, record.cam_from_world, None, timestamp=record.timestamp, failure_reason=NO_POSE_REASON
            )
        base_from_cam = extrinsics.get(record.timestamp)
        if base_from_cam is None:
            raise SeglocError(f"{bag}: no camera extrinsics at the image {record.name}")
        published = publish_times_ns.get(pose.stamp_ns)
        latency = 0.0 if published is None else (pose.receive_time_ns - published) / 1e9
        cam_from_world = camera_pose_from_base(pose.world_from_base, base_from_cam).inverse()
        return QueryResult.from_estimate(
            record.name, record.cam_from_world, cam_from_world, info=_pose_info(pose), timestamp=record.timestamp, time_s=latency
        )

    replay = {
        "mode": "live",
        "bag": str(bag),
        "pose_messages": len(poses),
        "unmatched_pose_messages": unmatched,
        "duplicate_pose_messages": duplicates,
        "latency_measured": bool(publish_times_ns),
    }
    return evaluate_records(
        ground_truth,
        estimate,
        output_dir,
        method=method or (None if map_summary is None else map_summary.method),
        source=bag,
        map_summary=map_summary,
        progress=progress,
        extra={"replay": replay, **(extra or {})},
        plots=plots,
    )


def compare_metrics(live: dict[str, Any], offline: dict[str, Any]) -> dict[str, Any]:
    """Live against offline metrics of the same bag: recall per threshold, medians, times.

    ``recall_difference_queries`` is ``live - offline`` in queries (recall times the number of
    queries), so "within one query" reads as an absolute value of at most 1.
    """
    if live["num_queries"] != offline["num_queries"]:
        logger.warning(
            "live replay scored %d images, the offline run %d: were they run on the same bag and ground truth?",
            live["num_queries"],
            offline["num_queries"],
        )
    recall = {}
    difference = {}
    for key in THRESHOLDS:
        a, b = live["recall"].get(key), offline["recall"].get(key)
        recall[key] = {"live": a, "offline": b}
        if a is not None and b is not None:
            difference[key] = int(round(a * live["num_queries"] - b * offline["num_queries"]))
    return {
        "num_queries": {"live": live["num_queries"], "offline": offline["num_queries"]},
        "recall": recall,
        "recall_difference_queries": difference,
        **{key: {"live": live.get(key), "offline": offline.get(key)} for key in COMPARISON_KEYS},
    }


#: Per-image agreement between live and offline poses of the same image: at most this far apart.
AGREEMENT_TRANSLATION_M = 1e-3
AGREEMENT_ROTATION_DEG = 0.01


def _record_pose(record: Mapping[str, Any]) -> Rigid3 | None:
    return pose_from_record(record.get("cam_from_world_est"))


def compare_per_image(live: Sequence[Mapping[str, Any]], offline: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Live against offline, image by image: do the same images get the same poses?

    Args:
        live, offline: per-query records (``per_query.json`` of each report), matched by name.

    Returns:
        ``images`` (names in both), ``both_localized``, ``only_live`` and ``only_offline``
        (names localized on one side only: a frame dropped by a full node queue, or refused by
        the robot's confidence gate), ``agree`` (images localized on both sides whose poses are
        within :data:`AGREEMENT_TRANSLATION_M` and :data:`AGREEMENT_ROTATION_DEG`), and the
        largest and median translation (m) and rotation (deg) differences of the poses.
    """
    from segloc.geometry.transforms import pose_error

    offline_by_name = {record["name"]: record for record in offline}
    names = [record["name"] for record in live if record["name"] in offline_by_name]
    live_by_name = {record["name"]: record for record in live}
    differences: list[tuple[float, float]] = []
    only_live, only_offline = [], []
    for name in names:
        a, b = _record_pose(live_by_name[name]), _record_pose(offline_by_name[name])
        if a is not None and b is not None:
            differences.append(pose_error(a, b))
        elif a is not None:
            only_live.append(name)
        elif b is not None:
            only_offline.append(name)
    translation = np.array([d[0] for d in differences], np.float64)
    rotation = np.array([d[1] for d in differences], np.float64)
    agree = int(np.sum((translation <= AGREEMENT_TRANSLATION_M) & (rotation <= AGREEMENT_ROTATION_DEG)))
    return {
        "images": len(names),
        "both_localized": len(differences),
        "agree": agree,
        "tolerance": {"translation_m": AGREEMENT_TRANSLATION_M, "rotation_deg": AGREEMENT_ROTATION_DEG},
        "only_live": only_live,
        "only_offline": only_offline,
        "max_translation_difference_m": float(translation.max()) if len(translation) else None,
        "median_translation_difference_m": float(np.median(translation)) if len(translation) else None,
        "max_rotation_difference_deg": float(rotation.max()) if len(rotation) else None,
        "median_rotation_difference_deg": float(np.median(rotation)) if len(rotation) else None,
    }
