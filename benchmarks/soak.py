"""Soak test of the segloc ROS nodes: live images for a long time, with map reloads and bad messages; memory, latency, liveness.

The nodes run as in ``ros_latency.py`` (:func:`ros_latency.live_nodes`: child processes of
:class:`segloc_ros.replay.NodeLauncher`, wall clock, ``--threads`` torch threads each) on its demo
room (:func:`ros_latency.build_scene`: the shipped network, a 50-image SegLoc map):

- ``--launch localizer`` (default): ``localizer_node`` with the SegLoc map, or with
  ``--method reference`` with a reference map of the same room built through the method
  registry (``segloc.methods.get_method("reference")``);
- ``--launch multi``: SegLoc's split nodes, three processes; ``--launch composed``: the three
  in ``localization_container``.

After ``--warmup`` images answered one at a time, for ``--duration`` seconds it publishes the
room's query images in a loop at ``--rate`` Hz (``stamp = now``, with camera_info and the odometry
``odom -> base_link``: :class:`ros_latency.LiveCamera`), and meanwhile

- every ``--reload-every`` seconds a background thread swaps the map of every node, cycling
  through: set ``map_path`` to a copy of the map, call ``~/reload_map``, set ``map_path`` back to
  the original, call ``~/reload_map`` (each loads the map and swaps it in atomically while
  frames flow);
- after every ``--bad-every`` images the next tick publishes one bad message instead of an
  image, rotating through: an image with an unsupported encoding (``32FC1``), an
  ``initialpose`` with a NaN position, an image (with its camera_info) from a camera frame that
  has no extrinsics ``base_link -> frame``. Each must be rejected with a diagnostic ERROR, the
  images answered False on ``segloc/localized``, and no node may die of it.

Every ``--interval`` seconds (default 60) it records a sample of that interval: the RSS of each
node process (``VmRSS`` of ``/proc/<pid>/status``), whether each is alive and still the process
it started as (same pid and start time: no crash, no restart), latency p50/p95/max (image stamp
to the reception of its ``pose``, for the poses received in the interval), images published,
bad messages, poses received, ``segloc/localized`` answers (True / False), and from each node's
latest ``/diagnostics``: frames dropped by its queue, frames processed and its ``errors``
counter (frames that failed, maps that did not load), plus the ERROR-level statuses received
(a standing ERROR repeats every ``diagnostics_period``), and the map reloads done (ok / failed).
The last sample covers the time since the one before; answers still in flight at the end are
not counted.

The summary: per process, RSS at the start (after the warm-up images) and end, its maximum, and
the memory slope in MB/hour (least squares over the samples at and after the end of the first
interval, the warm-up; not the sample of an interrupted run's last, partial interval); latency
p50/p95 overall, in the first and the last complete interval; totals; restarts (processes dead or not the
one started: must be 0); and the verdict:

- ``memory_ok``: every slope below ``--max-slope`` MB/hour (default 10: a leak of 240 MB a day
  fails); ``null`` when those samples span less than ``--min-slope-span`` seconds (default 600:
  a few minutes of RSS say nothing about a leak);
- ``latency_ok``: p95 of the last interval at most ``--max-latency-growth`` (default 1.5) times
  that of the first interval after the warm-up (the first when there is only one);
- ``reloads_ok``: every map reload succeeded; ``no_restarts``: restarts is 0;
- ``pass``: all of them (``memory_ok`` may be ``null``); the exit status is 0 when it passes, 1 when not.

It stops at the end of ``--duration``, when a node process exits, or on Ctrl-C / SIGTERM, and
then stops the nodes (SIGINT through the launcher) and writes what was measured so far. Ctrl-C in
a terminal also reaches the nodes (one process group): their exit after it is no crash.

    python benchmarks/soak.py --duration 3600 --rate 2 --reload-every 30 --bad-every 10 -o soak.json --plot soak.png
    python benchmarks/soak.py --duration 120 --launch multi

Run it with an interpreter that has rclpy (the ROS venv: ``.venv-ros/bin/python``). JSON on
stdout (and ``-o``), progress on stderr::

    {"config": {...}, "processes": {name: {"pid": n, "log": path}}, "start_s": ..., "warmup_frames_sent": n,
     "rss_mb_at_start": {process: MB},
     "intervals": [{"t_s": ..., "duration_s": ..., "interrupted": bool, "rss_mb": {process: MB},
                    "processes": {process: {"pid": n, "alive": bool, "same_process": bool}},
                    "images_published": n, "bad_messages": {kind: n}, "poses_received": n, "localized": {"true": n, "false": n},
                    "latency_s": {"p50": ..., "p95": ..., "max": ...},
                    "frames_dropped": {node: n}, "frames_processed": {node: n}, "errors": {node: n}, "error_statuses": {node: n},
                    "reloads": {"ok": n, "failed": n, "max_s": ...}}, ...],
     "reload_failures": [...], "last_errors": {node: message}, "exit_status": {process: status},
     "summary": {"duration_s": ..., "stopped_because": ..., "memory": {process: {...}}, "latency_s": {...}, "totals": {...},
                 "restarts": 0, "verdict": {...}}}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_latency import LiveCamera, LiveNodes, Scene, _percentile, build_scene, live_nodes, warm_up  # noqa: E402  (the sibling benchmark)

logger = logging.getLogger("segloc.soak")

LAUNCH_MODES = ("localizer", "multi", "composed")
METHODS = ("segloc", "reference")
#: The bad messages, in the order they rotate.
BAD_KINDS = ("unsupported_encoding", "nan_initialpose", "unknown_camera_frame")
#: The frame of the images that have no extrinsics (nothing publishes base_link -> it).
UNKNOWN_CAMERA_FRAME = "soak_camera_without_extrinsics"
#: An encoding the nodes do not read (a depth image's).
UNSUPPORTED_ENCODING = "32FC1"
#: Counters taken from each node's latest /diagnostics, per interval.
NODE_COUNTERS = ("frames_dropped", "frames_processed", "errors")


# --- pure helpers (tested in test/benchmarks/test_soak.py) -------------------------------------
def read_rss_mb(pid: int) -> float | None:
    """Resident set size of process ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``); None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None  # a zombie has no VmRSS


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of ``/proc/<pid>/stat``); None when it is gone.

    With the pid it identifies the process: a pid reused by another process has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[19])  # field 22; fields[0] is field 3


def memory_slope_mb_per_hour(times_s: Sequence[float], rss_mb: Sequence[float | None], warmup_s: float) -> float | None:
    """Least-squares slope of RSS over time, in MB per hour, from the samples at or after ``warmup_s``.

    Args:
        times_s: (N,) sample times, seconds.
        rss_mb: (N,) RSS at those times, MB; None (a process gone) is left out.
        warmup_s: samples before this time are left out.

    Returns:
        The slope, or None with fewer than two samples left (or all at one time).
    """
    if len(times_s) != len(rss_mb):
        raise ValueError(f"{len(times_s)} times but {len(rss_mb)} RSS values")
    kept = [(t, m) for t, m in zip(times_s, rss_mb) if m is not None and t >= warmup_s]
    if len(kept) < 2:
        return None
    t, m = np.array(kept, dtype=np.float64).T
    if np.ptp(t) == 0:
        return None
    slope_per_s = np.polyfit(t, m, 1)[0]
    return float(slope_per_s * 3600.0)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """``{"p50", "p95", "max"}`` of latencies in seconds, to 0.1 ms (None when there are none)."""
    values = list(latencies_s)
    summary = {"p50": _percentile(values, 50), "p95": _percentile(values, 95), "max": max(values) if values else None}
    return {key: None if value is None else round(value, 4) for key, value in summary.items()}


def counter_deltas(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Per node, how much a cumulative counter grew since ``before`` (a node new in ``now`` counts from 0)."""
    return {name: value - before.get(name, 0) for name, value in now.items()}


# --- the map and its copy --------------------------------------------------------------------
def build_reference_map(scene: Scene, work: Path) -> Path:
    """A reference map of the scene's mapping images, built through the method registry (reused when ``work`` has it)."""
    from segloc.data.dataset import read_dataset
    from segloc.methods import get_method

    path = work / "reference_map"
    if not (path / "manifest.json").is_file():
        method = get_method("reference")
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON
            method.build_map(read_dataset(scene.dataset), path, method.map_config(), overwrite=True, progress=False)
    return path


def map_copy(map_path: Path) -> Path:
    """A copy of the map beside it (``<map>_copy``), made again when the map's manifest changed: the other map_path of the reloads."""
    copy = map_path.with_name(f"{map_path.name}_copy")
    manifest = map_path / "manifest.json"
    if not (copy / "manifest.json").is_file() or (copy / "manifest.json").read_bytes() != manifest.read_bytes():
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(map_path, copy)
    return copy


# --- what happens during the soak ------------------------------------------------------------
def _call(client: Any, request: Any, timeout_s: float) -> Any:
    """Call a service and wait for the response (``node`` is spun by another thread); raises TimeoutError."""
    if not client.wait_for_service(timeout_sec=timeout_s):
        raise TimeoutError(f"service {client.srv_name} is not available")
    future = client.call_async(request)
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout_s) or future.result() is None:
        raise TimeoutError(f"service {client.srv_name} did not answer in {timeout_s:g} s")
    return future.result()


@dataclass
class ReloadEvent:
    """One map swap of one node."""

    t_s: float  # since the soak started
    node: str
    action: str
    ok: bool
    seconds: float
    message: str


class MapReloader:
    """A thread that swaps the map of every node every ``period_s`` seconds (see the module docstring for the cycle)."""

    def __init__(self, node: Any, node_names: Sequence[str], map_path: Path, copy_path: Path, period_s: float, timeout_s: float = 120.0):
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        self.node, self.period_s, self.timeout_s = node, period_s, timeout_s
        self.actions = [("map_path", str(copy_path)), ("reload_map", None), ("map_path", str(map_path)), ("reload_map", None)]
        self.set_parameters = {name: node.create_client(SetParameters, f"/{name}/set_parameters") for name in node_names}
        self.reload_map = {name: node.create_client(Trigger, f"/{name}/reload_map") for name in node_names}
        self._events: list[ReloadEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak_map_reloader", daemon=True)
        self._t0 = time.monotonic()

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout_s * len(self.reload_map) + 5.0)

    def take(self) -> list[ReloadEvent]:
        """The swaps done since the last call."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(self.period_s):
            action, value = self.actions[step % len(self.actions)]
            step += 1
            for name in self.reload_map:
                if self._stop.is_set():
                    return
                started = time.monotonic()
                try:
                    ok, message = self._swap(name, action, value)
                except Exception as exc:  # a timeout, a node gone: recorded, the soak goes on
                    ok, message = False, f"{type(exc).__name__}: {exc}"
                event = ReloadEvent(
                    started - self._t0, name, action if value is None else f"map_path:={value}", ok, time.monotonic() - started, message
                )
                if not ok:
                    logger.error("map swap of %s (%s) failed: %s", name, event.action, message)
                with self._lock:
                    self._events.append(event)

    def _swap(self, name: str, action: str, value: str | None) -> tuple[bool, str]:
        if action == "reload_map":
            from std_srvs.srv import Trigger

            response = _call(self.reload_map[name], Trigger.Request(), self.timeout_s)
            return response.success, response.message
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        request = SetParameters.Request(
            parameters=[Parameter(name=action, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))]
        )
        result = _call(self.set_parameters[name], request, self.timeout_s).results[0]
        return result.successful, result.reason or f"map_path set to {value}"


class BadMessages:
    """Publishes the bad messages of :data:`BAD_KINDS` through the soak's camera (and an ``initialpose`` publisher)."""

    def __init__(self, node: Any, camera: LiveCamera):
        from geometry_msgs.msg import PoseWithCovarianceStamped

        self.camera = camera
        self.initialpose = node.create_publisher(PoseWithCovarianceStamped, "initialpose", 5)
        self.counts = dict.fromkeys(BAD_KINDS, 0)

    def publish(self, number: int, index: int) -> str:
        """Publish bad message ``number`` (rotating through the kinds) with query frame ``index``; returns its kind."""
        kind = BAD_KINDS[number % len(BAD_KINDS)]
        if kind == "unsupported_encoding":
            self.camera.publish(index, image_msg=_unsupported_image_msg)
        elif kind == "unknown_camera_frame":
            self.camera.publish(index, camera_frame=UNKNOWN_CAMERA_FRAME)
        else:
            self.initialpose.publish(_nan_initialpose_msg(time.time_ns()))
        self.counts[kind] += 1
        return kind


def _unsupported_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """A well-formed ``32FC1`` image of the frame's size: an encoding the nodes refuse."""
    from sensor_msgs.msg import Image

    from segloc_ros.conversions import header_msg

    height, width = rgb.shape[:2]
    data = np.zeros((height, width), dtype=np.float32).tobytes()
    return Image(
        header=header_msg(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=UNSUPPORTED_ENCODING,
        is_bigendian=0,
        step=width * 4,
        data=data,
    )


def _nan_initialpose_msg(stamp_ns: int) -> Any:
    """An ``initialpose`` in ``map`` whose position is NaN (the covariance is fine)."""
    from geometry_msgs.msg import PoseWithCovarianceStamped

    from segloc_ros.conversions import header_msg

    msg = PoseWithCovarianceStamped(header=header_msg(stamp_ns, "map"))
    msg.pose.pose.position.x = float("nan")
    msg.pose.pose.orientation.w = 1.0
    msg.pose.covariance = list(np.diag([0.25, 0.25, 0.25, 0.07, 0.07, 0.07]).reshape(36))
    return msg


class ProcessWatch:
    """The node processes of a launcher: RSS, and whether each is still the process it started as."""

    def __init__(self, live: LiveNodes):
        self.jobs = list(live.launcher.processes)
        self.start_ticks = {job.name: process_start_ticks(job.process.pid) for job in self.jobs}

    def rss_mb(self) -> dict[str, float | None]:
        return {job.name: read_rss_mb(job.process.pid) for job in self.jobs}

    def states(self) -> dict[str, dict[str, Any]]:
        states = {}
        for job in self.jobs:
            alive = job.process.poll() is None
            same = alive and process_start_ticks(job.process.pid) == self.start_ticks[job.name]
            states[job.name] = {"pid": job.process.pid, "alive": alive, "same_process": same}
        return states

    def exited(self) -> list[str]:
        """Processes that ended, with their status."""
        return [f"{job.name} exited with status {job.process.returncode}" for job in self.jobs if job.process.poll() is not None]


class IntervalSampler:
    """Turns the cumulative counts of the soak into one record per interval."""

    def __init__(self, camera: LiveCamera, watch: ProcessWatch, reloader: MapReloader | None, bad: BadMessages, t0: float):
        self.camera, self.watch, self.reloader, self.bad, self.t0 = camera, watch, reloader, bad, t0
        self.images = 0  # good images published (the soak loop counts them)
        self.latencies_s: list[float] = []  # every latency, for the overall percentiles
        self.reload_failures: list[dict[str, Any]] = []
        self._last_t = 0.0
        self._images = 0
        self._bad = dict(bad.counts)
        self._answers, self._counters = self._cumulative()  # the warm-up's counts are not the first interval's

    def _cumulative(self) -> tuple[tuple[int, int], dict[str, dict[str, int]]]:
        """``(answers, not localized)`` on segloc/localized and the nodes' counters, as received so far."""
        with self.camera.lock:
            answers = (self.camera.answers, self.camera.not_localized)
            error_statuses = dict(self.camera.error_statuses)
        counters = {key: self.camera.node_counter(key) for key in NODE_COUNTERS}
        counters["error_statuses"] = error_statuses
        return answers, counters

    def sample(self, interrupted: bool = False) -> dict[str, Any]:
        t = time.monotonic() - self.t0
        rss = self.watch.rss_mb()
        processes = self.watch.states()
        latencies = sorted((received - stamp) / 1e9 for stamp, received in self.camera.take_poses().items())
        self.latencies_s.extend(latencies)
        answers, counters = self._cumulative()
        reloads = self.reloader.take() if self.reloader is not None else []
        self.reload_failures.extend(vars(event) for event in reloads if not event.ok)
        answered, not_localized = answers[0] - self._answers[0], answers[1] - self._answers[1]
        record = {
            "t_s": round(t, 3),
            "duration_s": round(t - self._last_t, 3),
            "interrupted": interrupted,
            "rss_mb": {name: None if mb is None else round(mb, 2) for name, mb in rss.items()},
            "processes": processes,
            "images_published": self.images - self._images,
            "bad_messages": {kind: n - self._bad[kind] for kind, n in self.bad.counts.items()},
            "poses_received": len(latencies),
            "localized": {"true": answered - not_localized, "false": not_localized},
            "latency_s": latency_summary(latencies),
            **{key: counter_deltas(counters[key], self._counters[key]) for key in counters},
            "reloads": {
                "ok": sum(event.ok for event in reloads),
                "failed": sum(not event.ok for event in reloads),
                "max_s": _round(max((event.seconds for event in reloads), default=None), 3),
            },
        }
        self._last_t, self._images, self._bad, self._answers, self._counters = t, self.images, dict(self.bad.counts), answers, counters
        return record


# --- the run ----------------------------------------------------------------------------------
def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_soak(args: argparse.Namespace, map_path: Path, scene: Scene, domain_id: int) -> dict[str, Any]:
    """Start the nodes, soak them, stop them; returns the JSON record (see the module docstring)."""
    copy_path = map_copy(map_path) if args.reload_every > 0 else None
    result: dict[str, Any] = {
        "config": {
            "launch": args.launch,
            "method": args.method,
            "map": str(map_path),
            "map_copy": None if copy_path is None else str(copy_path),
            "duration_s": args.duration,
            "rate_hz": args.rate,
            "interval_s": args.interval,
            "reload_every_s": args.reload_every,
            "bad_every": args.bad_every,
            "threads": args.threads,
            "warmup_images": args.warmup,
            "domain_id": domain_id,
        },
        "intervals": [],
    }
    intervals: list[dict[str, Any]] = result["intervals"]
    stopped_because = "duration"
    logger.info("starting %s (map %s, ROS domain %d)", args.launch, map_path, domain_id)
    with live_nodes(
        args.launch, map_path, scene, args.work / "logs" / args.launch, args.threads, domain_id, args.start_timeout, "segloc_soak"
    ) as live:
        camera = live.camera
        watch = ProcessWatch(live)
        result["processes"] = {job.name: {"pid": job.process.pid, "log": str(job.log_path)} for job in watch.jobs}
        result["start_s"] = live.start_s
        logger.info("nodes active after %.1f s; %d warm-up image(s)", live.start_s, args.warmup)
        result["warmup_frames_sent"] = warm_up(camera, args.warmup)
        result["rss_mb_at_start"] = {name: None if mb is None else round(mb, 2) for name, mb in watch.rss_mb().items()}
        camera.take_poses()
        bad = BadMessages(live.node, camera)
        reloader = None
        if copy_path is not None:
            reloader = MapReloader(live.node, live.launcher.node_names, map_path, copy_path, args.reload_every)
        t0 = time.monotonic()
        sampler = IntervalSampler(camera, watch, reloader, bad, t0)
        if reloader is not None:
            reloader.start(t0)
        period, end = 1.0 / args.rate, t0 + args.duration
        next_tick, next_sample, tick = t0, t0 + args.interval, 0
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_sample:
                    intervals.append(sampler.sample())
                    _log_interval(intervals[-1])
                    next_sample += args.interval
                if now >= next_tick:
                    if args.bad_every > 0 and tick % (args.bad_every + 1) == args.bad_every:
                        bad.publish(tick // (args.bad_every + 1), tick)
                    else:
                        camera.publish(tick)
                        sampler.images += 1
                    tick += 1
                    next_tick += period
                exited = watch.exited()
                if exited:
                    stopped_because = "; ".join(exited)
                    logger.error("stopping: %s", stopped_because)
                    break
                time.sleep(max(0.0, min(next_tick, next_sample, end) - time.monotonic()))
            intervals.append(sampler.sample())
            _log_interval(intervals[-1])
        except KeyboardInterrupt:
            stopped_because = "interrupted (Ctrl-C or SIGTERM)"
            logger.warning("interrupted: stopping the nodes, writing what was measured")
            intervals.append(sampler.sample(interrupted=True))
        finally:
            if reloader is not None:
                reloader.stop()
                sampler.reload_failures.extend(vars(event) for event in reloader.take() if not event.ok)
        result["reload_failures"] = sampler.reload_failures
        with camera.lock:
            result["last_errors"] = dict(camera.last_error)
    result["exit_status"] = live.exit_status
    result["summary"] = summarize(result, sampler.latencies_s, stopped_because, args)
    return result


def _log_interval(record: dict[str, Any]) -> None:
    latency = record["latency_s"]
    logger.info(
        "t=%.0f s: %d images, %d poses, p50 %s s, p95 %s s, RSS %s MB, dropped %s, reloads %d ok %d failed",
        record["t_s"],
        record["images_published"],
        record["poses_received"],
        "-" if latency["p50"] is None else f"{latency['p50']:.3f}",
        "-" if latency["p95"] is None else f"{latency['p95']:.3f}",
        ", ".join(f"{name} {mb}" for name, mb in record["rss_mb"].items()),
        sum(record["frames_dropped"].values()),
        record["reloads"]["ok"],
        record["reloads"]["failed"],
    )


def summarize(result: dict[str, Any], latencies_s: list[float], stopped_because: str, args: argparse.Namespace) -> dict[str, Any]:
    """The summary and verdict of a soak record (see the module docstring)."""
    intervals = result["intervals"]
    complete = [record for record in intervals if not record["interrupted"]]
    times = [record["t_s"] for record in complete]
    warmup_s = min(args.interval, times[-1]) if times else 0.0
    memory = {}
    for name, start_mb in result.get("rss_mb_at_start", {}).items():
        series = [record["rss_mb"].get(name) for record in complete]
        known = [mb for mb in series if mb is not None]
        memory[name] = {
            "start_mb": start_mb,
            "end_mb": known[-1] if known else None,
            "max_mb": max(known) if known else None,
            "slope_mb_per_hour": _round(memory_slope_mb_per_hour(times, series, warmup_s), 2),
        }
    slope_times = [t for t in times if t >= warmup_s]
    slope_span_s = slope_times[-1] - slope_times[0] if len(slope_times) >= 2 else 0.0
    sums: dict[str, Any] = {
        "images_published": sum(r["images_published"] for r in intervals),
        "bad_messages": {kind: sum(r["bad_messages"][kind] for r in intervals) for kind in BAD_KINDS},
        "poses_received": sum(r["poses_received"] for r in intervals),
        "localized_true": sum(r["localized"]["true"] for r in intervals),
        "localized_false": sum(r["localized"]["false"] for r in intervals),
        "reloads_ok": sum(r["reloads"]["ok"] for r in intervals),
        "reloads_failed": len(result.get("reload_failures", [])),
    }
    for key in (*NODE_COUNTERS, "error_statuses"):
        sums[key] = {}
        for record in intervals:
            for name, n in record[key].items():
                sums[key][name] = sums[key].get(name, 0) + n
    last_states = complete[-1]["processes"] if complete else {}
    restarts = sum(not state["same_process"] for state in last_states.values())
    first, last = (complete[0]["latency_s"], complete[-1]["latency_s"]) if complete else ({}, {})
    baseline = complete[1]["latency_s"] if len(complete) > 1 else first
    growth = last["p95"] / baseline["p95"] if last.get("p95") is not None and baseline.get("p95") else None
    slopes = [m["slope_mb_per_hour"] for m in memory.values()]
    memory_ok = None
    if slope_span_s >= args.min_slope_span and slopes and all(s is not None for s in slopes):
        memory_ok = all(s < args.max_slope for s in slopes)
    verdict = {
        "max_slope_mb_per_hour": args.max_slope,
        "min_slope_span_s": args.min_slope_span,
        "slope_span_s": slope_span_s,
        "memory_ok": memory_ok,
        "max_latency_p95_growth": args.max_latency_growth,
        "latency_p95_growth": _round(growth, 3),
        "latency_ok": growth is not None and growth <= args.max_latency_growth,
        "reloads_ok": sums["reloads_failed"] == 0,
        "no_restarts": restarts == 0 and bool(last_states),
    }
    verdict["pass"] = verdict["memory_ok"] is not False and all(verdict[k] for k in ("latency_ok", "reloads_ok", "no_restarts"))
    return {
        "duration_s": intervals[-1]["t_s"] if intervals else 0.0,
        "stopped_because": stopped_because,
        "memory": memory,
        "latency_s": {"overall": latency_summary(latencies_s), "first_interval": first, "last_interval": last},
        "totals": sums,
        "restarts": restarts,
        "verdict": verdict,
    }


def plot_soak(result: dict[str, Any], path: Path) -> None:
    """RSS per process, latency p50/p95 and poses per interval over time, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    intervals = result["intervals"]
    minutes = [record["t_s"] / 60.0 for record in intervals]
    fig, (ax_rss, ax_latency, ax_poses) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for name, start_mb in result.get("rss_mb_at_start", {}).items():
        ax_rss.plot([0.0, *minutes], [start_mb, *(r["rss_mb"].get(name) for r in intervals)], marker="o", label=name)
    ax_rss.set_ylabel("RSS (MB)")
    ax_rss.legend(fontsize="small")
    for key, style in (("p50", "-o"), ("p95", "--s")):
        ax_latency.plot(minutes, [r["latency_s"][key] for r in intervals], style, label=key)
    ax_latency.set_ylabel("latency (s)")
    ax_latency.set_ylim(bottom=0)
    ax_latency.legend(fontsize="small")
    ax_poses.plot(minutes, [r["images_published"] for r in intervals], "-o", label="images published")
    ax_poses.plot(minutes, [r["poses_received"] for r in intervals], "-s", label="poses received")
    ax_poses.set_ylabel("per interval")
    ax_poses.set_ylim(bottom=0)
    ax_poses.set_xlabel("time (min)")
    ax_poses.legend(fontsize="small")
    config = result["config"]
    fig.suptitle(f"soak: {config['launch']} ({config['method']}), {config['rate_hz']:g} Hz")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of soak after the warm-up (default 3600)")
    parser.add_argument("--rate", type=float, default=2.0, help="images (and bad messages) per second (default 2)")
    parser.add_argument("--launch", choices=LAUNCH_MODES, default="localizer", help="which nodes (default localizer: localizer_node)")
    parser.add_argument("--method", choices=METHODS, default="segloc", help="the map's method, with --launch localizer (default segloc)")
    parser.add_argument("--reload-every", type=float, default=30.0, help="seconds between map swaps; 0 = none (default 30)")
    parser.add_argument("--bad-every", type=int, default=10, help="one bad message after every N images; 0 = none (default 10)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per sample; the first is the warm-up (default 60)")
    parser.add_argument("--warmup", type=int, default=2, help="images answered one at a time before the soak (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per node process and for building maps (default 1)")
    parser.add_argument("--max-slope", type=float, default=10.0, help="largest memory slope that passes, MB/hour (default 10)")
    parser.add_argument(
        "--min-slope-span", type=float, default=600.0, help="seconds the slope's samples must span to judge it (default 600)"
    )
    parser.add_argument(
        "--max-latency-growth", type=float, default=1.5, help="largest last/first p95 latency ratio that passes (default 1.5)"
    )
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--domain-id", type=int, help="ROS domain (default: random in 1..101)")
    parser.add_argument("--work", type=Path, default=Path("outputs/soak"), help="scene, maps and node logs (reused)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    parser.add_argument("--plot", type=Path, help="write a PNG of RSS, latency and poses over time")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.launch != "localizer" and args.method != "segloc":
        parser.error(f"--launch {args.launch} runs SegLoc's split nodes: --method {args.method} needs --launch localizer")
    for name in ("duration", "rate", "interval"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0")
    if args.reload_every < 0 or args.bad_every < 0:
        parser.error("--reload-every and --bad-every must be >= 0")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    scene = build_scene(args.work)
    map_path = build_reference_map(scene, args.work) if args.method == "reference" else scene.map
    domain_id = args.domain_id if args.domain_id is not None else random.SystemRandom().randint(1, 101)
    try:
        result = run_soak(args, map_path, scene, domain_id)
    except KeyboardInterrupt:
        logger.warning("interrupted before the soak started: nothing measured")
        return 130
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    if args.plot:
        plot_soak(result, args.plot)
        logger.info("plot: %s", args.plot)
    return 0 if result["summary"]["verdict"]["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
