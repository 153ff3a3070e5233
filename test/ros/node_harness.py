"""Helpers of test_nodes.py: a synthetic scene with SegLoc maps, node processes, and an rclpy client in the test process.

Nothing here imports rclpy at module level (the folder's conftest skips the tests where rclpy is
missing; collection must still work there).

The scene: a small synthetic room (256x192 pixels, a multiple of the coarsest stride 32) and
two SegLoc maps of it:

- map A: 3D points labelled by an *oracle* segmenter (the renderer's ground-truth labels), with
  a tiny randomly initialised network embedded (K = 19 classes like the oracle), so that the
  nodes load it as they would a real map. segmentation_node runs that untrained network (its
  output is plumbing only); pose_refinement_node gets oracle probabilities published by the
  test, so its poses can be checked against the ground truth;
- map B: map A relabelled to one label per point (``top1``), for the map swap test.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

WIDTH, HEIGHT = 256, 192
NUM_MAPPING, NUM_QUERY = 30, 6
CAMERA_FRAME = "camera_optical"
#: Strides of the oracle's levels in image pixels: those of a network (32, 16, 8, 4) run at twice
#: the image size, as NetworkSegmenter does when the map's input size is larger than the image.
ORACLE_STRIDES = (16, 8, 4, 2)
START_TIMEOUT_S = 60.0


# --- the scene ------------------------------------------------------------------------------
@dataclass
class QueryFrame:
    """One query frame: image, stamp, ground truth and the oracle's packed segmentation."""

    name: str
    stamp_ns: int
    image: np.ndarray
    world_from_base: Any
    odom_from_base: Any
    cam_from_world: Any
    probabilities: np.ndarray  # packed (H_total, W_f, K) float16
    descriptor: np.ndarray  # (Dg,) float32


@dataclass
class Scene:
    root: Path
    map_a: Path
    map_b: Path
    camera: Any  # PINHOLE segloc Camera of the images
    base_from_cam: Any
    num_classes: int
    frames: list[QueryFrame]


def tiny_network(num_classes: int):
    import torch

    from segloc.models import SegmentationNet, segmentation_config

    torch.manual_seed(0)
    config = segmentation_config(
        "cpu", pretrained=False, num_classes=num_classes, feature_dim=8, decoder_channels=(16, 16, 16, 16), head_hidden_dim=8
    )
    return SegmentationNet(config).eval()


def build_scene(root: Path) -> Scene:
    """Render the room, build maps A and B (see the module docstring) and the query frames' oracle segmentations."""
    import torch

    from segloc.data.dataset import read_dataset
    from segloc.data.synthetic import LABELS, generate_scene, read_scene_frames, synth_config
    from segloc.maps.core import read_core, write_core
    from segloc.maps.package import MapPackage, MapWriter
    from segloc.methods.segloc.layer import (
        SegLocMapConfig,
        build_segloc_map,
        read_segloc_layer,
        relabel_segloc_map,
        write_segloc_layer,
        write_segloc_model,
    )
    from segloc.methods.segloc.packing import pack_segmentation
    from segloc.models.segmenter import LabelSegmenter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = synth_config("room", num_mapping=NUM_MAPPING, num_query=NUM_QUERY, width=WIDTH, height=HEIGHT, seed=2)
        dataset = read_dataset(generate_scene(config, root / "dataset", progress=False))
        num_classes = len(LABELS)
        oracle = LabelSegmenter.from_dataset(dataset, num_classes, strides=ORACLE_STRIDES, sigma=1.0)
        oracle.inference_max_edge = WIDTH  # recorded in the map: the embedded network runs at the image size
        map_config = SegLocMapConfig(store="full", inference_max_edge=WIDTH, core={"pairs": {"num_neighbors": 5}})
        oracle_map = MapPackage.open(build_segloc_map(dataset, root / "oracle_map", map_config, progress=False, segmenter=oracle))

        core = read_core(oracle_map)
        layer = read_segloc_layer(oracle_map, core)
        meta = {key: layer.meta[key] for key in ("num_levels", "descriptor_grid", "descriptor_dim", "inference_max_edge", "temperature")}
        with MapWriter(root / "map_a", method="segloc", frame_id="map") as writer:
            write_core(writer, core)
            write_segloc_layer(writer, layer.probabilities.astype(np.float32), layer.image_descriptors, "full", meta=meta)
            write_segloc_model(writer, tiny_network(num_classes))
            writer.commit()
        map_b = relabel_segloc_map(root / "map_a", root / "map_b", "top1")

        scene_frames, base_from_cam = read_scene_frames(dataset.root, "query")
        records = {record.name: record for record in dataset.query}
        frames = []
        for frame in scene_frames:
            labels = cv2.imread(str(dataset.root / "labels" / frame.name), cv2.IMREAD_UNCHANGED)
            probabilities, descriptor = pack_segmentation(oracle.segment_labels(labels))
            frames.append(
                QueryFrame(
                    frame.name,
                    int(round(frame.timestamp * 1e9)),
                    dataset.load_image(frame.name),
                    frame.world_from_base,
                    frame.odom_from_base,
                    records[frame.name].cam_from_world,
                    probabilities,
                    descriptor[0],
                )
            )
        return Scene(root, root / "map_a", Path(map_b), config.camera(), base_from_cam, num_classes, frames)
    finally:
        torch.set_num_threads(threads)


# --- node processes -------------------------------------------------------------------------
class NodeProcess:
    """A node (or the container) in a child process, with its parameters in a params file and its output in a log file."""

    def __init__(self, module: str, parameters: dict[str, dict[str, Any]], env: dict[str, str], workdir: Path, name: str):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        params_file = workdir / f"{name}.params.yaml"
        # Copies: a dict shared between nodes would become a YAML alias, which rcl's parser refuses.
        params_file.write_text(yaml.safe_dump({node: {"ros__parameters": dict(values)} for node, values in parameters.items()}))
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--ros-args", "--params-file", str(params_file)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def log(self, tail: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return f"\n--- {self.name} log ---\n" + self.log_path.read_text()[-tail:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (what Ctrl-C and ros2 launch send), then SIGKILL if it does not end."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def node_parameters(scene: Scene, **overrides: Any) -> dict[str, Any]:
    """Parameters every node under test gets: map A, one torch thread, fast diagnostics, no staleness signal.

    ``stale_timeout: 0``: a test pausing between frames (checking outputs on a busy machine)
    must not get a "stale" False on segloc/localized in place of a frame's verdict; the tests of
    the staleness signal turn it on. Nodes without the parameter ignore it.
    """
    return {"map_path": str(scene.map_a), "threads": 1, "diagnostics_period": 0.5, "stale_timeout": 0.0, **overrides}


# --- the test process's ROS client ----------------------------------------------------------
class RosClient:
    """An rclpy node in the test process, spun in a background thread, on its own context and domain."""

    def __init__(self, env: dict[str, str], name: str = "segloc_test_client"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTRTPS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION"):
            os.environ[key] = env[key]  # read by the middleware when the context's participant is made
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.RLock()  # wait_for's conditions take snapshots under it
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)

    # messages
    def publisher(self, msg_type: Any, topic: str, qos: Any = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def collect(self, msg_type: Any, topic: str, qos: Any = 10) -> list[Any]:
        """Subscribe; the returned list fills with the messages received."""
        received: list[Any] = []

        def on_message(msg: Any) -> None:
            with self._lock:
                received.append(msg)

        self.node.create_subscription(msg_type, topic, on_message, qos)
        return received

    def snapshot(self, messages: list[Any]) -> list[Any]:
        with self._lock:
            return list(messages)

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str | Callable[[], str] = "") -> Any:
        """Poll ``condition`` until it returns something true; raise AssertionError with ``what`` (or ``what()``) on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                with self._lock:
                    description = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {description or condition}")
            time.sleep(0.05)

    def wait_subscribers(self, publisher: Any, count: int = 1, timeout: float = START_TIMEOUT_S) -> None:
        self.wait_for(lambda: publisher.get_subscription_count() >= count, timeout, f"a subscriber on {publisher.topic_name}")

    # services
    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 30.0, resend_after: float | None = None) -> Any:
        """Call a service; with ``resend_after`` (idempotent services only) a request unanswered that long is sent again.

        Just after discovery, Fast DDS can lose a request whose response path is not matched
        yet: a query (get_state) is then asked again rather than waited for until the timeout.
        """
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} is not available")
            deadline = time.monotonic() + timeout
            future = client.call_async(request)
            sent = time.monotonic()
            while not future.done():
                if time.monotonic() > deadline:
                    raise AssertionError(f"service {name} did not answer within {timeout} s")
                if resend_after is not None and time.monotonic() - sent > resend_after:
                    client.remove_pending_request(future)
                    future, sent = client.call_async(request), time.monotonic()
                time.sleep(0.02)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node: str, values: dict[str, Any], timeout: float = 60.0) -> list[Any]:
        """Set parameters of a remote node; the SetParametersResult list."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
        return list(self.call(SetParameters, f"/{node}/set_parameters", request, timeout).results)

    def lifecycle_state(self, node: str) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"/{node}/get_state", GetState.Request(), resend_after=3.0).current_state.label

    def change_state(self, node: str, transition: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        transition_id = {
            "configure": Transition.TRANSITION_CONFIGURE,
            "activate": Transition.TRANSITION_ACTIVATE,
            "deactivate": Transition.TRANSITION_DEACTIVATE,
            "cleanup": Transition.TRANSITION_CLEANUP,
        }[transition]
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self.call(ChangeState, f"/{node}/change_state", request, timeout=60.0).success)


def diagnostic_statuses(arrays: list[Any], node: str) -> list[Any]:
    """The DiagnosticStatus messages of ``node`` in received DiagnosticArrays, in order."""
    return [status for array in arrays for status in array.status if status.name.startswith(f"{node}:")]


def status_values(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def status_level(status: Any) -> int:
    """The level of a DiagnosticStatus as an int (rclpy gives a one-byte ``bytes``)."""
    return status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)


def find_status(arrays: list[Any], node: str, level: int, text: str, after: int = 0) -> Any:
    """The first status of ``node`` at ``level`` whose message contains ``text`` (None if none).

    ``after``: skip the first ``after`` DiagnosticArrays (those received before the event being
    checked, ``len(arrays)`` taken before causing it), so that an earlier status with the same
    text (e.g. a previous frame's "localization lost") is not taken for the new one.
    """
    return next((s for s in diagnostic_statuses(arrays[after:], node) if status_level(s) == level and text in s.message), None)


def describe_statuses(arrays: list[Any], node: str, last: int = 10) -> str:
    """The last statuses of ``node``, one per line, for assertion messages."""
    lines = [f"{status_level(s)} {s.message}" for s in diagnostic_statuses(arrays, node)[-last:]]
    return "\n" + "\n".join(lines)


def wait_process_ready(client: RosClient, process: NodeProcess, node: str, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until ``node`` answers get_state (the process has started and created its services)."""
    from lifecycle_msgs.srv import GetState

    client_handle = client.node.create_client(GetState, f"/{node}/get_state")
    try:
        deadline = time.monotonic() + timeout
        while not client_handle.wait_for_service(timeout_sec=0.5):
            if not process.alive():
                raise AssertionError(f"{process.name} exited with {process.process.returncode}" + process.log())
            if time.monotonic() > deadline:
                raise AssertionError(f"{node} did not start within {timeout} s" + process.log())
    finally:
        client.node.destroy_client(client_handle)


# --- processes with a command line of the test's choosing ----------------------------------
class CommandProcess(NodeProcess):
    """A ROS process started with ``command`` as given (e.g. a node with the project's own params file); output in a log file."""

    def __init__(self, command: list[str], env: dict[str, str], workdir: Path, name: str):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True)


# --- remote parameters and lifecycle states --------------------------------------------------
def list_parameters(client: RosClient, node: str) -> set[str]:
    """The names of the parameters ``node`` has declared (its ~/list_parameters service)."""
    from rcl_interfaces.srv import ListParameters

    return set(client.call(ListParameters, f"/{node}/list_parameters", ListParameters.Request()).result.names)


def get_parameters(client: RosClient, node: str, names: list[str]) -> dict[str, Any]:
    """``{name: value}`` of parameters of ``node`` (its ~/get_parameters service), values as Python types (None: not set)."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    response = client.call(GetParameters, f"/{node}/get_parameters", GetParameters.Request(names=list(names)))
    return {name: parameter_value_to_python(value) for name, value in zip(names, response.values)}


def wait_lifecycle_state(
    client: RosClient,
    node: str,
    state: str,
    timeout: float = START_TIMEOUT_S,
    alive: Callable[[], bool] = lambda: True,
    log: Callable[[], str] = lambda: "",
) -> None:
    """Wait until ``node`` answers get_state with ``state``; AssertionError (with ``log()``) on timeout or when ``alive()`` turns false."""
    from lifecycle_msgs.srv import GetState

    handle = client.node.create_client(GetState, f"/{node}/get_state")
    try:
        deadline = time.monotonic() + timeout
        while not handle.wait_for_service(timeout_sec=0.5):
            if not alive() or time.monotonic() > deadline:
                raise AssertionError(f"{node} did not start within {timeout:.0f} s" + log())
    finally:
        client.node.destroy_client(handle)
    while (current := client.lifecycle_state(node)) != state:
        if not alive() or time.monotonic() > deadline:
            raise AssertionError(f"{node} is {current!r}, not {state!r}, after {timeout:.0f} s" + log())
        time.sleep(0.2)


# --- segloc_ros built with colcon, as on a robot, and launch.LaunchService -------------------
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "segloc_ros"
COLCON_TIMEOUT_S = 300.0


def colcon_build(workspace: Path, symlink_install: bool) -> Path:
    """Build this checkout in a new colcon workspace as README.md's "On a robot" does; return its install space.

    ``workspace/src/segloc_ros`` is a symlink to the checkout (a clone in a workspace); colcon
    crawls no further than a package's root, so the checkout's venvs, build folders and
    ``test/ros/tf2_msgs`` stay out of the build, and it writes only into the workspace
    (build/, install/, log/). colcon runs with this interpreter (``python -m colcon``), which
    is then the one of the installed console scripts, as the system python is on a robot; its
    user configuration (``COLCON_HOME``) is a folder of the workspace. AssertionError with
    colcon's output when the build fails or writes to stderr.
    """
    assert importlib.util.find_spec("colcon") is not None, (
        f"colcon is not installed for {sys.executable}: run `bash test/ros/setup_ros_env.sh VENV` again (step 5 installs it), "
        "or, with a system ROS 2, install python3-colcon-common-extensions"
    )
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / PACKAGE).symlink_to(REPO_ROOT, target_is_directory=True)
    command = [sys.executable, "-m", "colcon", "build"] + (["--symlink-install"] if symlink_install else [])
    env = {**os.environ, "COLCON_HOME": str(workspace / ".colcon")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a robot; with it setuptools warns on stderr that it compiles nothing
    result = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, timeout=COLCON_TIMEOUT_S)
    output = f"\n--- {' '.join(command[1:])}: stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"colcon build failed with {result.returncode}" + output
    # What a build writes to stderr (a setuptools warning) is shown to everyone who builds the package.
    assert not result.stderr.strip(), "colcon build wrote to stderr" + output
    return workspace / "install"


def install_space_environment(install: Path, env: dict[str, str]) -> dict[str, str]:
    """What ``source install/setup.bash`` changes in ``env``: the variables it sets (AMENT_PREFIX_PATH, PYTHONPATH, ...).

    Where ``env`` has no AMENT_PREFIX_PATH (the PyPI ROS venv, which needs no setup script), this
    interpreter's prefix stands for the underlay a robot sources first (/opt/ros/jazzy).
    """
    env = dict(env)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    result = subprocess.run(
        ["bash", "-c", 'source "$1/setup.bash" && env -0', "bash", str(install)], env=env, stdout=subprocess.PIPE, check=True, timeout=60
    )
    sourced = dict(line.split("=", 1) for line in result.stdout.decode().split("\0") if "=" in line)
    return {key: value for key, value in sourced.items() if env.get(key) != value and key not in ("_", "SHLVL", "PWD", "OLDPWD")}


@dataclass
class LaunchResult:
    """How a launch ended: the service's return code; each process's exit code, command line and environment, by process name."""

    return_code: int
    exit_codes: dict[str, int]
    commands: dict[str, list[str]]
    environments: dict[str, dict[str, str]]


def run_launch(launch_file: Path, arguments: dict[str, str], check: Callable[[Callable[[], bool]], None]) -> LaunchResult:
    """Run ``launch_file`` with ``arguments`` through ``launch.LaunchService`` (what ``ros2 launch`` runs), with ``check`` beside it.

    The service runs in this thread, which must be the main thread (launch requires it);
    ``check(running)`` runs in another one (``running()`` is false once the service has ended
    by itself) and the service is shut down (SIGINT to the processes, as Ctrl-C on
    ``ros2 launch``) when it returns or raises. What ``check`` raised is raised here, after the
    shutdown. The processes inherit this process's environment (``os.environ``).
    """
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    exit_codes: dict[str, int] = {}
    commands: dict[str, list[str]] = {}
    environments: dict[str, dict[str, str]] = {}

    def on_exit(event: Any, context: Any) -> None:
        exit_codes[event.action.name] = event.returncode
        commands[event.action.name] = list(event.cmd)
        environments[event.action.name] = dict(event.env)

    description = LaunchDescription(
        [
            RegisterEventHandler(OnProcessExit(on_exit=on_exit)),
            IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)), launch_arguments=list(arguments.items())),
        ]
    )
    service = LaunchService()
    service.include_launch_description(description)
    ended = threading.Event()
    errors: list[BaseException] = []

    def run_check() -> None:
        try:
            check(lambda: not ended.is_set())
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)
        finally:
            while not ended.is_set():  # shutdown() does nothing until the service runs
                service.shutdown()
                ended.wait(0.2)

    thread = threading.Thread(target=run_check, daemon=True)
    thread.start()
    try:
        return_code = service.run()
    finally:
        ended.set()
        thread.join(timeout=30)
    if errors:
        raise errors[0]
    return LaunchResult(return_code, exit_codes, commands, environments)
