"""The executor of the segloc_ros node processes: callbacks in a thread pool, without a busy wait.

rclpy's ``MultiThreadedExecutor`` (Jazzy, rclpy 7.1) hands a ready callback to its thread pool
and at once waits for more work; while that callback has not *started* in a pool thread, the
wait returns it again at once, so the spinning thread loops, holding the GIL, until a pool thread
gets to run (ros2/rclpy#1452, fixed upstream in rclpy#1547, not in every Jazzy on a robot). With
``use_sim_time`` the ``/clock`` subscription is ready 50 times a second, and a node whose worker
thread computes (torch, numpy) in Python spends a whole core spinning: measured on a 2-core
machine during a bag replay, localizer_node used 100 % of a core for the whole playback, its
segmentation took 1-3 s instead of 0.05 s, and frames were dropped from its queue.

:class:`NodeExecutor` keeps the multi-threaded behaviour (a slow callback, a map reload, does
not hold up the others) and waits, after handing a callback to the pool, until a pool thread
has started it: the wait set is then built again only when there is new work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rclpy.executors import ConditionReachedException, Executor, ShutdownException, TimeoutException

try:  # rclpy >= 4 (Humble on); older ones raise nothing of the kind
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover - every supported rclpy has it
    ExternalShutdownException = ShutdownException  # type: ignore[misc,assignment]

__all__ = ["NodeExecutor"]

_NOT_SPINNING = (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException)

SPIN_WAIT_S = 0.5
"""Longest single wait of :meth:`NodeExecutor.spin`: the most a missed shutdown wake-up can delay the stop."""


class NodeExecutor(Executor):
    """Runs callbacks in a pool of ``num_threads`` threads; the spinning thread waits until each has started.

    A callback that raises ends :meth:`spin` with its exception (as rclpy's executors do).

    Args:
        num_threads: pool threads (callbacks that may run at the same time).
        context: the rclpy context (the default one when None).
    """

    def __init__(self, num_threads: int, *, context: Any = None):
        super().__init__(context=context)
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="segloc_executor")
        self._handlers: list[Any] = []
        self._handlers_lock = threading.Lock()

    def _spin_once_impl(self, timeout_sec: Any = None, wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except _NOT_SPINNING:
            return
        started = threading.Event()

        def run() -> None:
            started.set()
            handler()

        try:
            self._pool.submit(run)
        except RuntimeError:  # the pool was shut down: the executor is stopping
            return
        with self._handlers_lock:
            self._handlers.append(handler)
        # Until the callback runs, rclpy's wait would hand it out again at once: wait for it to start instead.
        while not started.wait(0.1):
            if getattr(self, "_is_shutdown", False):
                return
        self._raise_from_finished()

    def _raise_from_finished(self) -> None:
        with self._handlers_lock:
            finished = [handler for handler in self._handlers if handler.done()]
            self._handlers = [handler for handler in self._handlers if not handler.done()]
        for handler in finished:
            handler.result()  # a callback's exception, raised in the spinning thread

    def spin(self) -> None:
        """Execute callbacks until shutdown, waiting at most :data:`SPIN_WAIT_S` at a time.

        rclpy's ``spin`` waits without a timeout and relies on a guard condition to wake it at
        shutdown. Once, under load in CI, that wake-up did not come: after SIGINT a
        localizer_node sat in ``rcl_wait`` for 15 s until it got SIGTERM. With a bounded wait
        the loop sees the shut-down context within :data:`SPIN_WAIT_S` whatever happens to the wake-up.
        """
        while self._context.ok() and not getattr(self, "_is_shutdown", False):
            self._spin_once_impl(SPIN_WAIT_S)

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self._spin_once_impl(timeout_sec)

    def spin_once_until_future_complete(self, future: Any, timeout_sec: Any = None) -> None:
        future.add_done_callback(lambda _future: self.wake())
        self._spin_once_impl(timeout_sec, future.done)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Stop spinning and wait for the running callbacks (rclpy's shutdown); the pool takes no more work."""
        done = super().shutdown(timeout_sec)
        self._pool.shutdown(wait=False)
        return done
