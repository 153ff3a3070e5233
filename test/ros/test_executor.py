"""NodeExecutor, the executor of the node processes: multi-threaded, without rclpy's busy wait (ros2/rclpy#1452)."""

from __future__ import annotations

import os
import threading
import time

import pytest


@pytest.fixture
def ros_context(ros_env):
    import rclpy

    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTRTPS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION"):
        os.environ[key] = ros_env[key]
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    yield context
    rclpy.try_shutdown(context=context)


class Spinning:
    """An executor spun in a background thread; counts what its wait hands out; keeps what spin raised."""

    def __init__(self, executor):
        self.executor = executor
        self.dispatched = 0
        self.error: BaseException | None = None
        wait = executor.wait_for_ready_callbacks

        def counting_wait(*args, **kwargs):
            ready = wait(*args, **kwargs)
            self.dispatched += 1
            return ready

        executor.wait_for_ready_callbacks = counting_wait
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass
        except BaseException as exc:  # noqa: BLE001 - kept for the test to look at
            self.error = exc

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)


def wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_each_message_is_handed_out_once_while_another_thread_holds_the_gil(ros_context):
    """A node's worker computing in Python must not turn the executor into a busy loop (one dispatch per message)."""
    import rclpy
    from std_msgs.msg import String

    from segloc_ros.nodes.executor import NodeExecutor

    node = rclpy.create_node("executor_under_test", context=ros_context, start_parameter_services=False)
    source = rclpy.create_node("executor_source", context=ros_context, start_parameter_services=False)
    received: list[str] = []
    node.create_subscription(String, "busy_topic", lambda msg: received.append(msg.data), 100)
    publisher = source.create_publisher(String, "busy_topic", 100)
    executor = NodeExecutor(num_threads=3, context=ros_context)
    executor.add_node(node)
    spinning = Spinning(executor)
    computing = threading.Event()
    computing.set()

    def python_worker() -> None:  # the GIL-heavy part of a frame (refinement in numpy, Python loops)
        total = 0
        while computing.is_set():
            for i in range(10_000):
                total += i * i

    worker = threading.Thread(target=python_worker, daemon=True)
    worker.start()
    try:
        assert wait_until(lambda: publisher.get_subscription_count() >= 1), "the subscription was not discovered"
        messages = 100
        for i in range(messages):
            publisher.publish(String(data=str(i)))
            time.sleep(0.01)
        assert wait_until(lambda: len(received) == messages), f"received {len(received)} of {messages}"
        # rclpy's MultiThreadedExecutor (Jazzy) hands a message out again and again until a pool thread starts it:
        # hundreds of dispatches per message with a Python thread computing. Here: once per message (plus discovery).
        assert spinning.dispatched <= messages + 20, f"{spinning.dispatched} dispatches for {messages} messages"
        assert spinning.error is None
    finally:
        computing.clear()
        worker.join(timeout=5)
        spinning.stop()
        node.destroy_node()
        source.destroy_node()


def test_a_slow_callback_does_not_hold_up_the_others(ros_context):
    """Multi-threaded: a map reload that takes seconds in one callback group; messages of another keep coming."""
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from std_msgs.msg import String

    from segloc_ros.nodes.executor import NodeExecutor

    node = rclpy.create_node("executor_slow", context=ros_context, start_parameter_services=False)
    source = rclpy.create_node("executor_slow_source", context=ros_context, start_parameter_services=False)
    slow_started, slow_release = threading.Event(), threading.Event()
    received: list[str] = []

    def slow(msg: String) -> None:
        slow_started.set()
        slow_release.wait(20.0)

    node.create_subscription(String, "slow_topic", slow, 10, callback_group=MutuallyExclusiveCallbackGroup())
    node.create_subscription(
        String, "fast_topic", lambda msg: received.append(msg.data), 10, callback_group=MutuallyExclusiveCallbackGroup()
    )
    slow_publisher = source.create_publisher(String, "slow_topic", 10)
    fast_publisher = source.create_publisher(String, "fast_topic", 10)
    executor = NodeExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    spinning = Spinning(executor)
    try:
        assert wait_until(lambda: slow_publisher.get_subscription_count() >= 1 and fast_publisher.get_subscription_count() >= 1)
        slow_publisher.publish(String(data="reload"))
        assert slow_started.wait(20.0), "the slow callback did not start"
        for i in range(5):
            fast_publisher.publish(String(data=str(i)))
        assert wait_until(lambda: len(received) == 5), f"received {len(received)} of 5 while the slow callback ran"
        assert not slow_release.is_set()  # the slow callback was still running throughout
    finally:
        slow_release.set()
        spinning.stop()
        node.destroy_node()
        source.destroy_node()
    assert spinning.error is None


def test_a_callback_that_raises_ends_spin_with_its_exception(ros_context):
    import rclpy
    from std_msgs.msg import String

    from segloc_ros.nodes.executor import NodeExecutor

    node = rclpy.create_node("executor_raises", context=ros_context, start_parameter_services=False)
    source = rclpy.create_node("executor_raises_source", context=ros_context, start_parameter_services=False)

    def broken(msg: String) -> None:
        raise ValueError(f"bad message {msg.data}")

    node.create_subscription(String, "raise_topic", broken, 10)
    publisher = source.create_publisher(String, "raise_topic", 10)
    executor = NodeExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    spinning = Spinning(executor)
    try:
        assert wait_until(lambda: publisher.get_subscription_count() >= 1)
        publisher.publish(String(data="x"))
        # spin raises on its next turn; the guard condition of the finished callback wakes it
        assert wait_until(lambda: not spinning.thread.is_alive()), "spin did not end"
        assert isinstance(spinning.error, ValueError) and "bad message x" in str(spinning.error)
    finally:
        spinning.stop()
        node.destroy_node()
        source.destroy_node()


def test_spin_ends_after_shutdown_even_when_the_wake_up_is_lost(ros_context):
    """spin waits at most SPIN_WAIT_S at a time: a shut-down context ends it even if nothing wakes its wait."""
    import rclpy

    from segloc_ros.nodes.executor import SPIN_WAIT_S, NodeExecutor

    class LostWakeUp(NodeExecutor):
        def wake(self) -> None:  # the context's shutdown calls this to end the wait: here it does nothing
            pass

    node = rclpy.create_node("executor_lost_wake", context=ros_context, start_parameter_services=False)
    executor = LostWakeUp(num_threads=2, context=ros_context)
    executor.add_node(node)
    spinning = Spinning(executor)
    try:
        time.sleep(2 * SPIN_WAIT_S)  # spin is waiting: nothing to do
        assert spinning.thread.is_alive()
        start = time.monotonic()
        ros_context.shutdown()
        assert wait_until(lambda: not spinning.thread.is_alive(), 10 * SPIN_WAIT_S), "spin did not end after shutdown"
        assert time.monotonic() - start < 10 * SPIN_WAIT_S and spinning.error is None
    finally:
        executor.shutdown()
        node.destroy_node()


def test_num_threads_must_be_positive(ros_context):
    from segloc_ros.nodes.executor import NodeExecutor

    with pytest.raises(ValueError, match="num_threads"):
        NodeExecutor(num_threads=0, context=ros_context)
