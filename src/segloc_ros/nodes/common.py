"""What the segloc_ros lifecycle nodes share: parameters, diagnostics, the worker, map loading and reloading, start-up.

:class:`SeglocNode` is an ``rclpy.lifecycle.Node`` that

- declares its :data:`parameters` (:mod:`segloc_ros.nodes.params`) with descriptions and checks
  every change (a rejected change says why);
- on configure checks the parameters, sets the torch threads and loads the map
  (:meth:`SeglocNode.load_map`: the package is opened and checked here, the node's
  :meth:`SeglocNode.make_localizer` builds what it runs from it), then creates its publishers; on activate starts its worker
  thread and subscribes; on deactivate unsubscribes and stops the worker; on cleanup frees
  the map. With ``autostart`` (default) :meth:`SeglocNode.autostart` configures and activates
  at start-up so that ``ros2 run`` works without a lifecycle manager;
- swaps the map atomically when ``map_path`` is set while configured, or on the
  ``~/reload_map`` (std_srvs/Trigger) service: the new map is loaded first, and only replaces
  the old one when that worked; otherwise the change is rejected with the reason, the old map
  stays in service and a diagnostic ERROR is published. A frame in progress finishes with the
  map it started with;
- hands frames from its subscriptions to a :class:`~segloc_ros.nodes.buffers.FrameWorker`: a
  bounded queue (``queue_size``) that drops the oldest waiting frame when full, and counts it;
- publishes ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) every ``diagnostics_period``
  seconds and at once on a problem: one status named ``<node name>: <component>`` whose level
  and message say how the node is doing, with key/values: lifecycle state, map, frame
  counters (received, processed, dropped from the queue, failed), stage times in seconds
  (``<stage>_s``, averaged over the frames since the previous message) and the node's own.

A bad frame (wrong encoding, missing calibration, a shape that does not fit) raises in the
worker; the node publishes a diagnostic ERROR with the message and goes on with the next frame.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import uninstall_signal_handlers
from std_srvs.srv import Trigger

from segloc.errors import SeglocError
from segloc.maps.package import MapPackage
from segloc.runtime.session import SessionStatus, inference_statuses
from segloc_ros.conversions import diagnostic_array_msg, diagnostic_status_msg
from segloc_ros.nodes.buffers import FrameWorker, StageTimes
from segloc_ros.nodes.executor import NodeExecutor
from segloc_ros.nodes.params import ParameterSpec, check_parameter

logger = logging.getLogger("segloc")

__all__ = [
    "PIPELINE_QOS",
    "PRIORS_QOS",
    "SENSOR_QOS",
    "STATE_QOS",
    "TF_QOS",
    "TF_STATIC_QOS",
    "LoadedMap",
    "SeglocNode",
    "forward_library_logging",
    "open_map",
    "run_nodes",
]

#: Camera inputs: best effort, keeps up with reliable and best-effort drivers alike.
SENSOR_QOS = qos_profile_sensor_data
#: Between the segloc nodes: reliable, so that large fragmented messages are resent, not lost; transient
#: local, so that a downstream node whose subscription is discovered late (a busy machine at start-up: DDS
#: discovery can take seconds) or that restarts still gets the last few frames instead of losing them.
#: A publisher into these topics must offer transient local durability too (rclpy warns of the mismatch).
PIPELINE_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: pose_refinement_node's ``segloc/pose_priors`` input, which any node may publish: volatile, so that it matches
#: volatile and transient-local publishers alike.
PRIORS_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
#: Outputs whose last value matters to late subscribers (pose, localized), as AMCL's pose.
STATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: /tf as tf2_ros broadcasts and listens.
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
#: /tf_static as tf2_ros listens (latched).
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: A repeated WARN/ERROR is published at once at most this often (seconds); see SeglocNode.report.
REPEAT_PERIOD_S = 1.0


@dataclass
class LoadedMap:
    """A map in service: its path, what the node runs over it, the package's frame and method.

    Attributes:
        path: the map package folder.
        localizer: what :meth:`SeglocNode.make_localizer` built (a localizer, or a
            :class:`segloc.localize.pipeline.LocalizationPipeline`).
        frame_id: the map's frame.
        method: the method the map was built for.
    """

    path: str
    localizer: Any
    frame_id: str
    method: str = ""
    inference: list[SessionStatus] = dataclasses.field(default_factory=list)

    @property
    def inference_problem(self) -> str | None:
        """Why a network does not run on the backend asked for (a TensorRT fallback), or None."""
        problems = [status.message for status in self.inference if status.level != "ok"]
        return "; ".join(problems) or None


def open_map(map_path: str) -> MapPackage:
    """Open and check a map package for a node.

    Raises:
        SeglocError: an empty or missing path, or a map that does not load (format, checksums).
    """
    if not map_path:
        raise SeglocError("parameter map_path is empty: set it to a map package folder (segloc map build ... -o MAP)")
    if not Path(map_path).is_dir():
        raise SeglocError(f"map {map_path} does not exist (map_path must be a map package folder)")
    return MapPackage.open(map_path)


class _RosLogHandler(logging.Handler):
    """Forwards records of the ``segloc`` logger to a ROS logger."""

    def __init__(self, ros_logger: Any):
        super().__init__()
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.ERROR:
                self._ros_logger.error(message)
            elif record.levelno >= logging.WARNING:
                self._ros_logger.warning(message)
            elif record.levelno >= logging.INFO:
                self._ros_logger.info(message)
            else:
                self._ros_logger.debug(message)
        except Exception:
            self.handleError(record)


def forward_library_logging() -> None:
    """Send the library's ``segloc`` logger to the ROS logger ``segloc`` (once per process)."""
    library = logging.getLogger("segloc")
    if not any(isinstance(handler, _RosLogHandler) for handler in library.handlers):
        library.addHandler(_RosLogHandler(rclpy.logging.get_logger("segloc")))
        library.setLevel(logging.INFO)


class SeglocNode(LifecycleNode):
    """Base of the segloc_ros lifecycle nodes (see the module docstring).

    Subclasses set :attr:`node_name`, :attr:`parameters`, :attr:`component` and
    :attr:`needs_network`, and implement :meth:`create_outputs`, :meth:`create_inputs` and
    :meth:`process`; they may extend :meth:`destroy_outputs`, :meth:`destroy_inputs`,
    :meth:`extra_diagnostics` and :meth:`load_map`.
    """

    node_name: ClassVar[str]
    parameters: ClassVar[tuple[ParameterSpec, ...]]
    component: ClassVar[str]
    needs_network: ClassVar[bool] = False

    def __init__(self, node_name: str | None = None, **kwargs: Any):
        super().__init__(node_name or self.node_name, **kwargs)
        self._specs = {spec.name: spec for spec in self.parameters}
        for spec in self.parameters:
            constraints = []
            if spec.choices:
                constraints.append(f"one of: {', '.join(spec.choices)}")
            if spec.positive:
                constraints.append("> 0")
            if spec.minimum is not None:
                constraints.append(f">= {spec.minimum:g}")
            descriptor = ParameterDescriptor(description=spec.description, additional_constraints="; ".join(constraints))
            self.declare_parameter(spec.name, spec.default, descriptor)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._map_lock = threading.Lock()
        self._map: LoadedMap | None = None
        self._state = "unconfigured"
        self._worker: FrameWorker | None = None
        self._status_lock = threading.Lock()
        self._status: tuple[str, str] = ("ok", "unconfigured")
        self._map_problem: str | None = None
        self._last_immediate = 0.0
        self._errors = 0
        self.timings = StageTimes()
        #: Subscriptions go into their own group, so that a map reload (a service or parameter
        #: callback) does not hold up incoming messages in a multi-threaded executor.
        self.input_group = MutuallyExclusiveCallbackGroup()
        self._guard_lifecycle_requests()
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(self.param("diagnostics_period"), self.publish_diagnostics)
        self.create_service(Trigger, "~/reload_map", self._on_reload_map)

    def _guard_lifecycle_requests(self) -> None:
        """An invalid lifecycle request (``activate`` on an active node) is refused with a WARN, not raised.

        rclpy's ``~/change_state`` service raises RCLError for a transition the current state
        does not have; raised out of the executor it would end the process (in
        localization_container, all three nodes). The request is answered ``success: false``.
        """
        for service in self.services:
            if not service.srv_name.endswith("/change_state"):
                continue
            original = service.callback

            def guarded(request: Any, response: Any, original: Any = original) -> Any:
                try:
                    return original(request, response)
                except _rclpy.RCLError as exc:
                    transition = request.transition.label or f"id {request.transition.id}"
                    self.report("warn", f"lifecycle transition {transition} refused: not possible from the {self._state} state ({exc})")
                    response.success = False
                    return response

            service.callback = guarded

    # --- parameters -------------------------------------------------------------------------
    def param(self, name: str) -> Any:
        """The current value of a parameter."""
        return self.get_parameter(name).value

    def _check_parameters(self) -> None:
        for spec in self.parameters:
            reason = check_parameter(spec, self.param(spec.name))
            if reason:
                raise SeglocError(reason)

    def _on_set_parameters(self, parameters: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        values = {p.name: p.value for p in parameters}
        for name, value in values.items():
            spec = self._specs.get(name)
            reason = check_parameter(spec, value) if spec is not None else None
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if "map_path" in values and self._state != "unconfigured":
            config_path = values.get("config_path", self.param("config_path"))
            reason = self._swap_map(values["map_path"], config_path)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, parameters: list[rclpy.parameter.Parameter]) -> None:
        for parameter in parameters:
            if parameter.name == "diagnostics_period":
                self._diagnostics_timer.timer_period_ns = int(parameter.value * 1e9)

    # --- the map ----------------------------------------------------------------------------
    def make_localizer(self, package: MapPackage, config_path: str) -> Any:
        """What the node runs over an opened map (on configure and map reload); raises on any problem."""
        raise NotImplementedError

    def load_map(self, map_path: str, config_path: str | None = None) -> LoadedMap:
        """Load a map (not yet in service); raises on any problem."""
        package = open_map(map_path)
        config_path = self.param("config_path") if config_path is None else config_path
        localizer = self.make_localizer(package, config_path)
        loaded = LoadedMap(str(map_path), localizer, package.frame_id, package.method, inference_statuses(localizer))
        if loaded.inference_problem:
            self.get_logger().error(loaded.inference_problem)
        if loaded.frame_id != self._map_frame():
            self.get_logger().warning(
                f"map {map_path} has its poses in frame {loaded.frame_id!r}; they are published in {self._map_frame()!r}"
            )
        return loaded

    def _map_frame(self) -> str:
        return self.param("map_frame") if "map_frame" in self._specs else "map"

    @property
    def current_map(self) -> LoadedMap | None:
        with self._map_lock:
            return self._map

    def _swap_map(self, map_path: str, config_path: str | None = None) -> str | None:
        """Load ``map_path`` and put it in service; the reason when it could not be loaded (the old map stays)."""
        old = self.current_map
        try:
            loaded = self.load_map(map_path, config_path)
        except Exception as exc:
            reason = f"map {map_path!r} not loaded: {exc}; still using {old.path if old else 'no map'}"
            self._errors += 1
            with self._status_lock:
                self._map_problem = f"map reload failed: {reason}"
            self.report("error", f"map reload failed: {reason}")
            return reason
        with self._map_lock:
            self._map = loaded
        with self._status_lock:
            self._map_problem = None
        self.report("ok", f"map {map_path} in service")
        return None

    def _on_reload_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self._state == "unconfigured":
            response.success, response.message = False, "the node is not configured: configure it first (the map loads then)"
            return response
        path = self.param("map_path")
        reason = self._swap_map(path)
        response.success = reason is None
        response.message = reason or f"reloaded map {path}"
        return response

    # --- lifecycle --------------------------------------------------------------------------
    def autostart(self) -> None:
        """Configure and activate when the ``autostart`` parameter is true (a failure leaves the node up, unconfigured)."""
        if not self.param("autostart"):
            self.get_logger().info("autostart is false: waiting for lifecycle transitions (configure, activate)")
            return
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._check_parameters()
            threads = self.param("threads")
            if threads > 0:
                import torch

                torch.set_num_threads(threads)
            loaded = self.load_map(self.param("map_path"))
        except Exception as exc:
            self._errors += 1
            self.report("error", f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        with self._map_lock:
            self._map = loaded
        self._worker = FrameWorker(f"{self.get_name()}_worker", self._process_frame, self._frame_failed, self.param("queue_size"))
        try:
            self.create_outputs()
        except Exception as exc:
            return self._transition_failed("configure", exc)
        self._state = "inactive"
        self.report("ok", f"configured: map {loaded.path}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._worker is not None
        self._worker.start()
        try:
            self.create_inputs()
        except Exception as exc:
            return self._transition_failed("activate", exc)
        self._state = "active"
        self.report("ok", "active")
        return TransitionCallbackReturn.SUCCESS

    def _transition_failed(self, transition: str, exc: Exception) -> TransitionCallbackReturn:
        """Log an unexpected error of a transition (rclpy would swallow it) and go to error processing."""
        self._errors += 1
        logger.error("%s: %s failed", self.get_name(), transition, exc_info=exc)
        self.report("error", f"{transition} failed: {type(exc).__name__}: {exc}")
        return TransitionCallbackReturn.ERROR

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._state = "inactive"
        self.report("ok", "inactive")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.report("ok", "unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        self.report("error", f"a lifecycle transition failed (from {state.label}); the node is unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        if self._state == "active":
            self.destroy_inputs()
        if self._worker is not None:
            self._worker.stop()

    def _release(self) -> None:
        if self._state in ("inactive", "active"):
            self.destroy_outputs()
        self._worker = None
        with self._map_lock:
            self._map = None
        self._state = "unconfigured"

    def shutdown_processing(self) -> None:
        """Stop the worker and drop subscriptions (process exit)."""
        self._stop_processing()

    # --- what the nodes implement -----------------------------------------------------------
    def create_outputs(self) -> None:
        """Create the publishers (on configure)."""
        raise NotImplementedError

    def destroy_outputs(self) -> None:
        """Destroy what :meth:`create_outputs` made (on cleanup)."""

    def create_inputs(self) -> None:
        """Create the subscriptions (on activate), in :attr:`input_group`; they call :meth:`submit`."""
        raise NotImplementedError

    def destroy_inputs(self) -> None:
        """Destroy what :meth:`create_inputs` made (on deactivate)."""

    def process(self, frame: Any, loaded: LoadedMap) -> None:
        """Handle one frame in the worker thread with the map in service."""
        raise NotImplementedError

    def extra_diagnostics(self) -> dict[str, Any]:
        """Node-specific diagnostic values."""
        return {}

    # --- frames -----------------------------------------------------------------------------
    def submit(self, frame: Any) -> None:
        """Queue a frame for the worker (from a subscription callback)."""
        if self._worker is not None and self._state == "active":
            self._worker.submit(frame)

    def _process_frame(self, frame: Any) -> None:
        loaded = self.current_map
        if loaded is not None:
            self.process(frame, loaded)

    def _frame_failed(self, frame: Any, exc: Exception) -> None:
        self._errors += 1
        if isinstance(exc, SeglocError):  # a bad input (PoseLookupError included): its message says what to do
            self.report("error", f"frame skipped: {exc}")
        else:
            logger.error("%s: unexpected error in the worker", self.get_name(), exc_info=exc)
            self.report("error", f"frame skipped: unexpected {type(exc).__name__}: {exc}")

    # --- diagnostics ------------------------------------------------------------------------
    def report(self, level: str, message: str) -> None:
        """Set the node's status; logged when it changes, published at once when it changes.

        A repeated problem (WARN or ERROR with the same message, e.g. every image of a camera
        without camera_info) is published at once at most every :data:`REPEAT_PERIOD_S`; the
        periodic diagnostics carry it in between.
        """
        now = time.monotonic()
        with self._status_lock:
            changed = (level, message) != self._status
            repeat = level != "ok" and now - self._last_immediate >= REPEAT_PERIOD_S
            self._status = (level, message)
            if changed or repeat:
                self._last_immediate = now
        if changed:
            ros_logger = self.get_logger()
            # One call site per severity: rclpy refuses one site logging at several severities.
            if level == "error":
                ros_logger.error(message)
            elif level == "warn":
                ros_logger.warning(message)
            else:
                ros_logger.info(message)
        if changed or repeat:
            self.publish_diagnostics(reset_timings=False)

    @property
    def status(self) -> tuple[str, str]:
        """The node's level and message: the latest report, with a failed map reload kept at ERROR until a map loads.

        A network running on a fallback backend (a TensorRT engine that did not load) keeps the
        node at ERROR while that map is in service: it runs, slower than configured.

        A failed reload leaves the old map in service, so frames still succeed; their "ok" must
        not hide that the requested map is not the one in service.
        """
        with self._status_lock:
            level, message = self._status
            if self._map_problem is not None and self._map_problem != message:
                level, message = "error", f"{self._map_problem}; {message}"
        loaded = self.current_map
        problem = loaded.inference_problem if loaded is not None else None
        if problem is not None and problem not in message:
            level, message = "error", f"{problem}; {message}"
        return level, message

    def publish_diagnostics(self, reset_timings: bool = True) -> None:
        """Publish the node's status on /diagnostics."""
        level, message = self.status
        worker = self._worker
        loaded = self.current_map
        values: dict[str, Any] = {
            "state": self._state,
            "map_path": loaded.path if loaded else "",
            "backend": self.param("backend"),
            "inference_backend": ", ".join(status.backend for status in loaded.inference) if loaded else "",
            "inference": "; ".join(status.message for status in loaded.inference) if loaded else "",
            "device": self.param("device"),
            "frames_received": worker.received if worker else 0,
            "frames_processed": worker.processed if worker else 0,
            "frames_dropped": worker.dropped if worker else 0,
            "frames_failed": worker.failed if worker else 0,
            "errors": self._errors,
        }
        values.update(self.extra_diagnostics())
        values.update({f"{stage}_s": seconds for stage, seconds in self.timings.summary(reset_timings).items()})
        status = diagnostic_status_msg(level, f"{self.get_name()}: {self.component}", message, values, hardware_id=self.param("device"))
        self._diagnostics_publisher.publish(diagnostic_array_msg([status], self.get_clock().now()))


def run_nodes(node_classes: list[type[SeglocNode]], args: list[str] | None = None) -> int:
    """Run nodes in this process with one multi-threaded :class:`NodeExecutor` until shutdown (Ctrl-C, SIGTERM).

    Each node is created (reading its parameters by node name from ``--ros-args``, e.g. a
    ``--params-file``), then autostarted (configure + activate when ``autostart`` is true).
    """
    rclpy.init(args=args)
    forward_library_logging()
    nodes: list[SeglocNode] = []
    executor = NodeExecutor(num_threads=2 + len(node_classes))
    try:
        for node_class in node_classes:
            node = node_class()
            nodes.append(node)
            executor.add_node(node)
        for node in nodes:
            node.autostart()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # rclpy handles SIGINT in a thread of its own that triggers every executor's guard condition;
        # stop (join) it before anything is destroyed, or a late trigger can hit a freed guard
        # condition (seen once in CI: localizer_node died with SIGSEGV in rcl_trigger_guard_condition
        # after the launch system's SIGINT). rclpy.shutdown() does the same; try_shutdown() does not.
        uninstall_signal_handlers()
        for node in nodes:
            node.shutdown_processing()
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
