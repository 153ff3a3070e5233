"""The plumbing of the nodes that needs no ROS: a worker with a drop-oldest queue, stamp matching, a pruned TF cache, stage timings.

All of it is thread-safe: ROS callbacks feed it from executor threads while a worker thread
consumes it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from segloc.data.tf_buffer import PoseLookupError, TfBuffer, normalize_frame
from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

__all__ = ["FrameWorker", "StageTimes", "StampMatcher", "TfCache"]

T = TypeVar("T")
NS_PER_S = 1_000_000_000


class FrameWorker(Generic[T]):
    """A thread that handles frames one at a time from a bounded queue that drops the OLDEST frame when full.

    A localizer should work on the newest image: when frames arrive faster than they are
    processed, waiting ones are replaced, never the one being processed.

    Args:
        name: thread name.
        handle: called with each frame in the worker thread.
        on_error: called with the frame and the exception when ``handle`` raises; the worker
            goes on with the next frame.
        queue_size: frames that may wait (at least 1).
    """

    def __init__(self, name: str, handle: Callable[[T], None], on_error: Callable[[T, Exception], None], queue_size: int = 2):
        if queue_size < 1:
            raise SeglocError(f"queue_size must be at least 1, got {queue_size}")
        self.name = name
        self.queue_size = int(queue_size)
        self._handle = handle
        self._on_error = on_error
        self._frames: collections.deque[T] = collections.deque()
        self._condition = threading.Condition()
        self._running = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self.received = 0
        self.dropped = 0
        self.processed = 0
        self.failed = 0

    def start(self) -> None:
        """Start the thread (a no-op when running)."""
        with self._condition:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the frame in progress; waiting frames are discarded (not counted as drops).

        Returns:
            False when the thread did not end within ``timeout`` seconds (it stops after its frame).
        """
        with self._condition:
            self._running = False
            self._frames.clear()
            self._condition.notify_all()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._running

    def submit(self, frame: T) -> bool:
        """Queue a frame; returns False when the oldest waiting frame was dropped to make room."""
        with self._condition:
            self.received += 1
            dropped = len(self._frames) >= self.queue_size
            if dropped:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._condition.notify()
        return not dropped

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no frame is queued or in progress (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._frames or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._running and not self._frames:
                    self._condition.wait()
                if not self._running:
                    return
                frame = self._frames.popleft()
                self._busy = True
            try:
                self._handle(frame)
                self.processed += 1
            except Exception as exc:  # a bad frame must not end the worker
                self.failed += 1
                try:
                    self._on_error(frame, exc)
                except Exception:
                    logger.exception("%s: the error handler failed", self.name)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()


@dataclass
class _Pending:
    parts: dict[str, Any] = field(default_factory=dict)


class StampMatcher:
    """Pairs the parts of a frame (e.g. probabilities, camera_info, priors) that arrive separately with the same stamp.

    Stamps are integer nanoseconds and must match exactly (the nodes copy the image stamp). At
    most ``max_entries`` stamps wait; more, or a stamp more than ``max_age_ns`` behind the newest
    one seen, expire the oldest (counted in :attr:`expired`, and per missing part in
    :attr:`expired_missing`). Parts for a stamp already taken are ignored (counted in :attr:`late`).

    Args:
        parts: the part names.
        max_entries: stamps that may wait at once.
        max_age_ns: how far (in stamp time) behind the newest stamp an entry may wait.
    """

    def __init__(self, parts: Iterable[str], max_entries: int = 10, max_age_ns: int = 2 * NS_PER_S):
        self.parts = tuple(parts)
        if max_entries < 1 or max_age_ns <= 0:
            raise SeglocError(f"the stamp matcher needs max_entries >= 1 and max_age_ns > 0, got {max_entries} and {max_age_ns}")
        self.max_entries = int(max_entries)
        self.max_age_ns = int(max_age_ns)
        self._entries: dict[int, _Pending] = {}
        self._taken: collections.deque[int] = collections.deque(maxlen=4 * self.max_entries)
        self._newest: int | None = None
        self._lock = threading.Lock()
        self.expired = 0
        self.expired_missing: collections.Counter[str] = collections.Counter()
        self.late = 0

    def add(self, stamp_ns: int, part: str, value: Any) -> None:
        """Store ``value`` as ``part`` of the frame at ``stamp_ns`` (a second one replaces the first)."""
        if part not in self.parts:
            raise SeglocError(f"unknown part {part!r}; parts: {', '.join(self.parts)}")
        stamp_ns = int(stamp_ns)
        with self._lock:
            if stamp_ns in self._taken:
                self.late += 1
                return
            self._entries.setdefault(stamp_ns, _Pending()).parts[part] = value
            self._newest = stamp_ns if self._newest is None else max(self._newest, stamp_ns)
            self._expire()

    def _expire(self) -> None:
        assert self._newest is not None
        for stamp in sorted(self._entries):
            if len(self._entries) > self.max_entries or stamp < self._newest - self.max_age_ns:
                entry = self._entries.pop(stamp)
                self.expired += 1
                self.expired_missing.update(part for part in self.parts if part not in entry.parts)

    def take(self, required: Iterable[str], limit: int | None = None, newest: bool = False) -> list[tuple[int, dict[str, Any]]]:
        """Remove and return the frames that have every ``required`` part, oldest first (newest first with
        ``newest``), at most ``limit``."""
        required = tuple(required)
        with self._lock:
            ready = sorted((stamp for stamp, entry in self._entries.items() if all(p in entry.parts for p in required)), reverse=newest)
            if limit is not None:
                ready = ready[:limit]
            taken = []
            for stamp in ready:
                taken.append((stamp, self._entries.pop(stamp).parts))
                self._taken.append(stamp)
            return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._taken.clear()
            self._newest = None


class TfCache:
    """A :class:`segloc.data.tf_buffer.TfBuffer` fed from ``/tf`` and ``/tf_static`` that keeps ``duration_ns`` of history.

    Dynamic transforms older than ``duration_ns`` behind the newest one are dropped (the buffer
    is rebuilt from the kept samples once the oldest is half a duration too old, so the cost is
    spread out). Static transforms are kept for good.
    """

    def __init__(self, duration_ns: int = 10 * NS_PER_S):
        if duration_ns <= 0:
            raise SeglocError(f"the TF history must be positive, got {duration_ns} ns")
        self.duration_ns = int(duration_ns)
        self._static: dict[tuple[str, str], Rigid3] = {}
        self._dynamic: collections.deque[tuple[int, str, str, Rigid3]] = collections.deque()
        self._buffer = TfBuffer()
        self._newest: int | None = None
        self._oldest: int | None = None
        self._condition = threading.Condition()

    def add(self, parent: str, child: str, parent_from_child: Rigid3, stamp_ns: int | None = None) -> None:
        """Add a transform ``parent_from_child``; ``stamp_ns=None`` makes it static."""
        parent, child = normalize_frame(parent), normalize_frame(child)
        with self._condition:
            if stamp_ns is None:
                self._static[(parent, child)] = parent_from_child
                self._buffer.add(parent, child, parent_from_child)
            else:
                stamp_ns = int(stamp_ns)
                self._dynamic.append((stamp_ns, parent, child, parent_from_child))
                self._buffer.add(parent, child, parent_from_child, stamp_ns)
                self._newest = stamp_ns if self._newest is None else max(self._newest, stamp_ns)
                self._oldest = stamp_ns if self._oldest is None else min(self._oldest, stamp_ns)
                self._prune()
            self._condition.notify_all()

    def _prune(self) -> None:
        assert self._newest is not None and self._oldest is not None
        oldest_kept = self._newest - self.duration_ns
        if self._oldest >= oldest_kept - self.duration_ns // 2:
            return
        self._dynamic = collections.deque(sample for sample in self._dynamic if sample[0] >= oldest_kept)
        self._oldest = min(sample[0] for sample in self._dynamic)  # the newest sample is always kept
        buffer = TfBuffer()
        for (parent, child), transform in self._static.items():
            buffer.add(parent, child, transform)
        for stamp, parent, child, transform in self._dynamic:
            buffer.add(parent, child, transform, stamp)
        self._buffer = buffer

    @property
    def num_samples(self) -> int:
        """Dynamic samples held."""
        with self._condition:
            return len(self._dynamic)

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float = 0.0, max_gap_ns: int | None = None) -> Rigid3:
        """``target_from_source`` at ``stamp_ns``, waiting up to ``timeout_s`` for the transforms to arrive.

        Raises:
            PoseLookupError: still not available after the timeout (the reason of the last try).
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._condition:
            while True:
                try:
                    return self._buffer.lookup(target, source, stamp_ns, max_gap_ns)
                except PoseLookupError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise
                    self._condition.wait(remaining)

    def clear(self) -> None:
        with self._condition:
            self._static.clear()
            self._dynamic.clear()
            self._buffer = TfBuffer()
            self._newest = self._oldest = None


class StageTimes:
    """Per-stage seconds, averaged over the frames since the last :meth:`summary` (the last value when none came)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, timings: Mapping[str, float]) -> None:
        with self._lock:
            for stage, seconds in timings.items():
                self._sums[stage] = self._sums.get(stage, 0.0) + float(seconds)
                self._counts[stage] = self._counts.get(stage, 0) + 1
                self._last[stage] = float(seconds)

    def summary(self, reset: bool = True) -> dict[str, float]:
        """``{stage: mean seconds}`` in first-seen order; ``reset`` starts new averages."""
        with self._lock:
            values = {
                stage: self._sums[stage] / self._counts[stage] if self._counts.get(stage) else last for stage, last in self._last.items()
            }
            if reset:
                self._sums.clear()
                self._counts.clear()
            return values
