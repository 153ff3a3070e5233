"""The node plumbing without ROS: the drop-oldest worker, stamp matching, the pruned TF cache, stage times."""

import threading
import time

import numpy as np
import pytest

from segloc.data.tf_buffer import PoseLookupError
from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3
from segloc_ros.nodes.buffers import NS_PER_S, FrameWorker, StageTimes, StampMatcher, TfCache


def test_worker_drops_the_oldest_waiting_frame():
    release = threading.Event()
    handled, errors = [], []

    def handle(frame):
        if frame == 0:
            release.wait(5)
        if frame == 3:
            raise SeglocError("bad frame")
        handled.append(frame)

    worker = FrameWorker("test", handle, lambda frame, exc: errors.append((frame, str(exc))), queue_size=2)
    worker.start()
    assert worker.submit(0)
    time.sleep(0.2)  # frame 0 is in progress, blocked
    assert worker.submit(1) and worker.submit(2)
    assert not worker.submit(3)  # full: frame 1 (the oldest waiting) is dropped
    assert not worker.submit(4)  # and then frame 2
    release.set()
    assert worker.wait_idle(5)
    assert handled == [0, 4] and errors == [(3, "bad frame")]
    assert (worker.received, worker.dropped, worker.processed, worker.failed) == (5, 2, 2, 1)
    assert worker.stop() and not worker.running
    assert worker.submit(5) and worker.wait_idle(0.1) is False  # queued but nobody runs it
    with pytest.raises(SeglocError, match="queue_size"):
        FrameWorker("x", handle, print, 0)


def test_stamp_matcher_pairs_expires_and_ignores_late_parts():
    matcher = StampMatcher(("a", "b"), max_entries=3, max_age_ns=NS_PER_S)
    matcher.add(10, "a", "a10")
    matcher.add(20, "b", "b20")
    assert matcher.take(("a", "b")) == []
    matcher.add(10, "b", "b10")
    assert matcher.take(("a", "b")) == [(10, {"a": "a10", "b": "b10"})]
    matcher.add(10, "a", "again")  # already taken
    assert matcher.late == 1 and len(matcher) == 1
    for stamp in (30, 40, 50):
        matcher.add(stamp, "a", stamp)
    assert matcher.expired == 1 and matcher.expired_missing == {"a": 1}  # stamp 20 (had only b) made room
    matcher.add(2 * NS_PER_S, "a", "new")  # everything more than 1 s older expires
    assert len(matcher) == 1 and matcher.expired == 4 and matcher.expired_missing["b"] == 3
    matcher.add(2 * NS_PER_S + 1, "a", "newer")
    assert [s for s, _ in matcher.take(("a",), limit=1, newest=True)] == [2 * NS_PER_S + 1]
    with pytest.raises(SeglocError, match="unknown part"):
        matcher.add(1, "c", None)


def test_tf_cache_prunes_old_samples_and_waits_for_new_ones():
    cache = TfCache(duration_ns=2 * NS_PER_S)
    base_from_cam = Rigid3(np.array([1.0, 0, 0, 0]), np.array([0.3, 0.0, 1.2]))
    cache.add("base_link", "camera", base_from_cam)
    for i in range(60):  # 6 s of odometry at 10 Hz
        cache.add("/odom", "base_link", Rigid3(np.array([1.0, 0, 0, 0]), np.array([0.1 * i, 0, 0])), i * NS_PER_S // 10)
    assert cache.num_samples <= 31  # about 2 s (+ up to half a duration before a rebuild)
    odom_from_cam = cache.lookup("odom", "camera", 5_850_000_000)  # interpolated between 5.8 s and 5.9 s
    assert np.allclose(odom_from_cam.translation, [5.85 + 0.3, 0.0, 1.2])
    with pytest.raises(PoseLookupError):
        cache.lookup("odom", "base_link", 1 * NS_PER_S)  # pruned
    # A lookup just after the newest sample waits for it.
    threading.Timer(0.2, lambda: cache.add("odom", "base_link", Rigid3(), 6 * NS_PER_S)).start()
    start = time.monotonic()
    assert cache.lookup("odom", "base_link", 6 * NS_PER_S, timeout_s=5.0) == Rigid3()
    assert 0.1 < time.monotonic() - start < 4.0
    with pytest.raises(PoseLookupError):
        cache.lookup("odom", "nowhere", 6 * NS_PER_S, timeout_s=0.05)


def test_stage_times_average_since_the_last_summary():
    times = StageTimes()
    assert times.summary() == {}
    times.add({"segment": 0.1, "publish": 0.01})
    times.add({"segment": 0.3})
    assert times.summary(reset=False) == pytest.approx({"segment": 0.2, "publish": 0.01})
    assert times.summary() == pytest.approx({"segment": 0.2, "publish": 0.01})
    assert times.summary() == pytest.approx({"segment": 0.3, "publish": 0.01})  # no new frame: the last values
