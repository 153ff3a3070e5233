"""The pure helpers of benchmarks/soak.py: memory slope, /proc readings, counters, the summary and its verdict (no ROS)."""

import argparse
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def soak(load_benchmark):
    return load_benchmark("soak")


def test_memory_slope_is_mb_per_hour_after_the_warmup(soak):
    times = [60.0, 120.0, 180.0, 240.0]
    rss = [500.0, 100.0, 100.6, 101.2]  # the warm-up sample (t=60 < 120) is left out
    assert soak.memory_slope_mb_per_hour(times, rss, warmup_s=120.0) == pytest.approx(36.0)
    assert soak.memory_slope_mb_per_hour(times, [100.0] * 4, warmup_s=0.0) == pytest.approx(0.0)


def test_memory_slope_least_squares_skips_gone_samples(soak):
    times = [0.0, 3600.0, 7200.0, 10800.0]
    rss = [100.0, 112.0, None, 128.0]  # fit of (0, 100), (3600, 112), (10800, 128)
    assert soak.memory_slope_mb_per_hour(times, rss, warmup_s=0.0) == pytest.approx(64 / 7)


@pytest.mark.parametrize(
    ("times", "rss", "warmup_s"),
    [
        ([], [], 0.0),
        ([10.0], [1.0], 0.0),
        ([10.0, 20.0], [1.0, None], 0.0),
        ([10.0, 20.0], [1.0, 2.0], 15.0),
        ([5.0, 5.0], [1.0, 2.0], 0.0),
    ],
)
def test_memory_slope_needs_two_times(soak, times, rss, warmup_s):
    assert soak.memory_slope_mb_per_hour(times, rss, warmup_s) is None


def test_memory_slope_checks_lengths(soak):
    with pytest.raises(ValueError, match="2 times but 1 RSS"):
        soak.memory_slope_mb_per_hour([0.0, 1.0], [1.0], 0.0)


def test_proc_readings_of_a_live_and_a_gone_process(soak):
    assert soak.read_rss_mb(os.getpid()) > 1.0
    assert soak.process_start_ticks(os.getpid()) == soak.process_start_ticks(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its /proc entry is gone
    assert soak.read_rss_mb(child.pid) is None
    assert soak.process_start_ticks(child.pid) is None


def test_counters_and_latencies(soak):
    assert soak.counter_deltas({"a": 5, "b": 2}, {"a": 3}) == {"a": 2, "b": 2}
    assert soak.latency_summary([]) == {"p50": None, "p95": None, "max": None}
    assert soak.latency_summary([0.1, 0.2, 0.3]) == {"p50": 0.2, "p95": pytest.approx(0.29), "max": 0.3}


def _interval(t_s, rss_mb, p95, alive=True, interrupted=False):
    return {
        "t_s": t_s,
        "interrupted": interrupted,
        "rss_mb": {"localizer_node": rss_mb},
        "processes": {"localizer_node": {"pid": 1, "alive": alive, "same_process": alive}},
        "images_published": 120,
        "bad_messages": dict.fromkeys(("unsupported_encoding", "nan_initialpose", "unknown_camera_frame"), 4),
        "poses_received": 120,
        "localized": {"true": 120, "false": 8},
        "latency_s": {"p50": p95 / 2, "p95": p95, "max": p95},
        "frames_dropped": {"localizer_node": 0},
        "frames_processed": {"localizer_node": 128},
        "errors": {"localizer_node": 0},
        "error_statuses": {"localizer_node": 10},
        "reloads": {"ok": 2, "failed": 0, "max_s": 0.2},
    }


def _summarize(soak, intervals, **overrides):
    args = argparse.Namespace(interval=60.0, max_slope=10.0, min_slope_span=600.0, max_latency_growth=1.5)
    vars(args).update(overrides)
    result = {"intervals": intervals, "rss_mb_at_start": {"localizer_node": 400.0}, "reload_failures": []}
    return soak.summarize(result, [0.3] * 10, "duration", args)


def test_summary_of_a_steady_hour_passes(soak):
    intervals = [_interval(60.0 * (i + 1), 500.0 + 0.1 * (i % 2), 0.4) for i in range(60)]  # 400 MB at the start: the warm-up
    summary = _summarize(soak, intervals)
    assert summary["memory"]["localizer_node"] == {
        "start_mb": 400.0,
        "end_mb": 500.1,
        "max_mb": 500.1,
        "slope_mb_per_hour": 0.01,
    }  # the zig-zag ends high
    assert summary["totals"]["images_published"] == 7200
    assert summary["totals"]["bad_messages"]["nan_initialpose"] == 240
    assert summary["restarts"] == 0
    assert summary["verdict"]["memory_ok"] is True and summary["verdict"]["pass"] is True


def test_summary_verdicts_fail_on_a_leak_a_crash_or_slower_answers(soak):
    leak = [_interval(60.0 * (i + 1), 500.0 + i, 0.4) for i in range(20)]  # 1 MB a minute
    assert _summarize(soak, leak)["memory"]["localizer_node"]["slope_mb_per_hour"] == pytest.approx(60.0)
    assert _summarize(soak, leak)["verdict"]["memory_ok"] is False
    short = leak[:3]  # 2 minutes after the warm-up: too short to judge
    assert _summarize(soak, short)["verdict"]["memory_ok"] is None
    assert _summarize(soak, short)["verdict"]["pass"] is True
    crash = [_interval(60.0, 500.0, 0.4), _interval(120.0, None, 0.4, alive=False)]
    assert _summarize(soak, crash)["restarts"] == 1
    assert _summarize(soak, crash)["verdict"]["no_restarts"] is False
    slower = [_interval(60.0, 500.0, 0.9), _interval(120.0, 500.0, 0.4), _interval(180.0, 500.0, 0.7)]
    verdict = _summarize(soak, slower)["verdict"]
    assert verdict["latency_p95_growth"] == pytest.approx(1.75)  # against the first interval after the warm-up
    assert verdict["latency_ok"] is False and verdict["pass"] is False


def test_an_interrupted_last_interval_counts_in_totals_not_in_the_slope(soak):
    intervals = [_interval(60.0 * (i + 1), 500.0, 0.4) for i in range(12)]
    intervals.append(_interval(730.0, 900.0, 0.4, alive=False, interrupted=True))  # Ctrl-C reached the nodes too
    summary = _summarize(soak, intervals)
    assert summary["memory"]["localizer_node"]["slope_mb_per_hour"] == pytest.approx(0.0)
    assert summary["restarts"] == 0
    assert summary["totals"]["images_published"] == 13 * 120
