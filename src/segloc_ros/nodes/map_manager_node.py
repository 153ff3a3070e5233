"""map_manager: keeps the robot's localizer nodes on the fleet map store's version, without restarting them.

A thin lifecycle shell over :class:`segloc.maps.follow.MapFollower`. Every ``poll_period``
seconds (and at once on ``~/reload_map``, std_srvs/Trigger, or a ``segloc/map_version`` message)
it asks the store which version should run, pulls a new one into ``cache_dir`` (checksums
checked, renamed into place) and sets the ``map_path`` parameter of each node of
``localizer_nodes`` through its parameter service.

Why the parameter service and not a topic the localizers follow: the localizer nodes already
swap a map atomically when ``map_path`` changes, loading it first and refusing the change with
the reason when it does not load (:meth:`segloc_ros.nodes.common.SeglocNode._swap_map`); the
reply tells the manager, synchronously and per node, whether the version is in service, so it
can put the nodes that took it back on the old version when another refused it, and
``ros2 param get`` shows on every node which map it runs. A topic would need the same loading
code in every node plus an acknowledgement channel.

``segloc/map_version`` (std_msgs/UInt32, reliable, transient local: a fleet server's last word
reaches a manager started later) pins a version: the manager runs that one instead of the
store's latest until a message with 0 says "follow the latest" again.

``/diagnostics``: one status ``map_manager: map store`` with the version in service, the
version wanted, the map folder and the store; ERROR while the wanted version is not in service
(store unreachable, a corrupt upload, a map the localizers refuse), the old one still running.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from rcl_interfaces.srv import SetParameters
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import UInt32
from std_srvs.srv import Trigger

from segloc.maps.follow import FollowStatus, MapFollower
from segloc.maps.store import MapStore
from segloc_ros.conversions import diagnostic_array_msg, diagnostic_status_msg
from segloc_ros.nodes.common import SeglocNode, run_nodes
from segloc_ros.nodes.params import MAP_MANAGER_NODE, MAP_MANAGER_PARAMETERS

__all__ = ["MAP_VERSION_QOS", "MapManagerNode", "main"]

#: segloc/map_version: the fleet server's last message reaches a manager that starts later.
MAP_VERSION_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def default_cache_dir() -> Path:
    """``$ROS_HOME/segloc_maps`` (``~/.ros/segloc_maps`` without ROS_HOME), where ``cache_dir: ''`` pulls to."""
    return Path(os.environ.get("ROS_HOME") or Path.home() / ".ros") / "segloc_maps"


class MapManagerNode(SeglocNode):
    """Follows the fleet map store (see the module docstring); it loads no map itself."""

    node_name = MAP_MANAGER_NODE
    parameters = MAP_MANAGER_PARAMETERS
    component = "map store"

    def __init__(self, node_name: str | None = None, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._follower: MapFollower | None = None
        self._localizers: dict[str, Any] = {}
        self._client_group = ReentrantCallbackGroup()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._version_subscription: Any = None
        self._last: FollowStatus | None = None
        self._update_lock = threading.Lock()  # the poll thread and ~/reload_map update one at a time

    # --- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._check_parameters()
            if not self.param("store"):
                raise ValueError("parameter store is empty: set it to the fleet's map store (a folder or an fsspec URL)")
            nodes = [name.strip() for name in self.param("localizer_nodes").split(",") if name.strip()]
            if not nodes:
                raise ValueError("parameter localizer_nodes names no node: give the nodes whose map_path to set")
            cache_dir = Path(self.param("cache_dir")) if self.param("cache_dir") else default_cache_dir()
            self._follower = MapFollower(MapStore(self.param("store")), cache_dir, self.param("keep_versions"))
        except Exception as exc:
            self._errors += 1
            self.report("error", f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._localizers = {
            name: self.create_client(SetParameters, f"/{name.lstrip('/')}/set_parameters", callback_group=self._client_group)
            for name in nodes
        }
        self._state = "inactive"
        self.report("ok", f"configured: store {self.param('store')}, localizers {', '.join(nodes)}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop.clear()
        self._wake.set()  # look at the store at once
        self._thread = threading.Thread(target=self._follow, name="map_manager_follow", daemon=True)
        self._thread.start()
        self._version_subscription = self.create_subscription(
            UInt32, "segloc/map_version", self._on_map_version, MAP_VERSION_QOS, callback_group=self.input_group
        )
        self._state = "active"
        self.report("ok", "active")
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        if self._version_subscription is not None:
            self.destroy_subscription(self._version_subscription)
            self._version_subscription = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.param("set_timeout") + 5.0)
            self._thread = None

    def _release(self) -> None:
        for client in self._localizers.values():
            self.destroy_client(client)
        self._localizers = {}
        self._follower = None
        self._state = "unconfigured"

    # --- following the store --------------------------------------------------------------------
    def _on_map_version(self, msg: UInt32) -> None:
        if self._follower is not None:
            self._follower.pin(int(msg.data))
            self.get_logger().info(f"segloc/map_version: {'follow the latest' if msg.data == 0 else f'run version {msg.data}'}")
            self._wake.set()

    def _on_reload_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """``~/reload_map``: look at the store now (answers once that update is done)."""
        if self._state != "active":
            response.success, response.message = False, f"the node is {self._state}: activate it first"
            return response
        status = self._update()
        response.success = status.level != "error"
        response.message = status.message
        return response

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.param("poll_period"))
            self._wake.clear()
            if not self._stop.is_set():
                self._update()

    def _update(self) -> FollowStatus:
        follower = self._follower
        assert follower is not None
        with self._update_lock:
            status = follower.update(self._swap)
        self._last = status
        self.report(status.level, status.message)
        return status

    def _swap(self, map_path: str) -> dict[str, str]:
        """Set ``map_path`` on every localizer node; ``{node: reason}`` of those that refused it or did not answer."""
        request = SetParameters.Request(parameters=[Parameter("map_path", value=map_path).to_parameter_msg()])
        timeout = self.param("set_timeout")
        pending = {}
        refused: dict[str, str] = {}
        for name, client in self._localizers.items():
            if not client.wait_for_service(timeout_sec=min(timeout, 5.0)):
                refused[name] = "its parameter service is not available (is the node running?)"
                continue
            pending[name] = client.call_async(request)
        deadline = time.monotonic() + timeout
        for name, future in pending.items():
            while not future.done() and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.02)
            if not future.done():
                self._localizers[name].remove_pending_request(future)
                refused[name] = f"no answer within {timeout:g} s"
                continue
            (result,) = future.result().results
            if not result.successful:
                refused[name] = result.reason
        return refused

    # --- diagnostics ----------------------------------------------------------------------------
    def publish_diagnostics(self, reset_timings: bool = True) -> None:
        level, message = self.status
        status = self._last
        follower = self._follower
        values: dict[str, Any] = {
            "state": self._state,
            "store": self.param("store"),
            "version_in_service": "" if follower is None or follower.in_service is None else follower.in_service,
            "version_wanted": "" if status is None or status.wanted is None else status.wanted,
            "pinned_version": "" if follower is None or follower.pinned is None else follower.pinned,
            "map_path": follower.map_path if follower is not None else "",
            "localizer_nodes": ",".join(self._localizers),
            "errors": self._errors,
        }
        diagnostic = diagnostic_status_msg(level, f"{self.get_name()}: {self.component}", message, values)
        self._diagnostics_publisher.publish(diagnostic_array_msg([diagnostic], self.get_clock().now()))


def main(args: list[str] | None = None) -> int:
    """``ros2 run segloc_ros map_manager``."""
    return run_nodes([MapManagerNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
