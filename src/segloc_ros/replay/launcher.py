"""Starting and stopping the segloc nodes as child processes: :class:`NodeLauncher`.

The launcher starts the nodes, ``multi`` (SegLoc split: segmentation_node, retrieval_node,
pose_refinement_node), ``composed`` (the three in localization_container) or ``localizer``
(localizer_node: any method's whole pipeline in one process), with
``FASTRTPS_DEFAULT_PROFILES_FILE=config/fastdds_shm.xml``, ``use_sim_time:=true``, the params
file and ``map_path``; waits until each lifecycle node reports ``active`` on its ``get_state``
service; stops them with SIGINT (then SIGTERM, then SIGKILL). Each node's output goes to
``<log_dir>/<name>.log``. :func:`config_file` finds the package's config files (source tree or
installed share folder).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segloc.errors import SeglocError
from segloc_ros.nodes import COMPOSED_NODES, CONTAINER_EXECUTABLE, CONTAINER_MODULE, node_info

logger = logging.getLogger("segloc")

REPO_ROOT = Path(__file__).resolve().parents[3]
FASTDDS_PROFILE = "fastdds_shm.xml"
PARAMS_FILE = "segloc_ros.yaml"
#: The split SegLoc nodes and the modules that run them (from the node table, segloc_ros.nodes.NODES).
NODE_MODULES: dict[str, str] = {node.name: node.module for node in COMPOSED_NODES}
LOCALIZER_MODULE = node_info("localizer_node").module
#: Launch mode -> (process name, module, the lifecycle nodes it runs) of each process.
LAUNCH_PROCESSES: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "multi": [(name, module, (name,)) for name, module in NODE_MODULES.items()],
    "composed": [(CONTAINER_EXECUTABLE, CONTAINER_MODULE, tuple(NODE_MODULES))],
    "localizer": [("localizer_node", LOCALIZER_MODULE, ("localizer_node",))],
}
PRIMARY_STATE_ACTIVE = 3  # lifecycle_msgs/msg/State


def config_file(name: str) -> Path | None:
    """A file of the package's ``config/`` folder: in the source tree, else the installed ``share/segloc_ros/config``."""
    candidate = REPO_ROOT / "config" / name
    if candidate.is_file():
        return candidate
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        candidate = Path(get_package_share_directory("segloc_ros")) / "config" / name
    except (PackageNotFoundError, OSError):  # not installed with colcon, or no AMENT_PREFIX_PATH
        return None
    return candidate if candidate.is_file() else None


@dataclass
class NodeProcess:
    """A child process running one node or the container."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class NodeLauncher:
    """Starts the segloc nodes as child processes, waits until they are active, stops them.

    Args:
        mode: ``multi`` (one process per split SegLoc node), ``composed`` (localization_container)
            or ``localizer`` (localizer_node); see :data:`LAUNCH_PROCESSES`.
        map_path: the map (``map_path`` parameter of every node).
        log_dir: where ``<process>.log`` files go.
        params_file: ROS params file keyed by node name (None: none).
        parameters: more ``name:=value`` parameters for every node (e.g. ``threads:=1``).
        remaps: ``from:=to`` topic remappings for every node (e.g. ``image:=/camera/image_raw``).
        use_sim_time: run on the ``/clock`` of the player.
        env: environment of the children (default: this process's); ``FASTRTPS_DEFAULT_PROFILES_FILE``
            is set to ``config/fastdds_shm.xml`` unless it is set already.
    """

    def __init__(
        self,
        mode: str,
        map_path: str | Path,
        log_dir: str | Path,
        params_file: str | Path | None = None,
        parameters: Sequence[str] = (),
        remaps: Sequence[str] = (),
        use_sim_time: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in LAUNCH_PROCESSES:
            raise SeglocError(f"launch mode must be one of {', '.join(LAUNCH_PROCESSES)}, got {mode!r}")
        if params_file is not None and not Path(params_file).is_file():
            raise SeglocError(f"params file {params_file} does not exist")
        self.mode, self.map_path, self.log_dir = mode, Path(map_path), Path(log_dir)
        self.params_file = None if params_file is None else Path(params_file)
        self.parameters = [*parameters, f"use_sim_time:={'true' if use_sim_time else 'false'}", f"map_path:={self.map_path}"]
        self.remaps = list(remaps)
        self.env = dict(os.environ if env is None else env)
        profile = config_file(FASTDDS_PROFILE)
        if profile is not None:
            self.env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.processes: list[NodeProcess] = []

    @property
    def node_names(self) -> list[str]:
        """The lifecycle nodes the processes of this mode run."""
        return [node for _, _, nodes in LAUNCH_PROCESSES[self.mode] for node in nodes]

    def _command(self, module: str) -> list[str]:
        command = [sys.executable, "-m", module, "--ros-args"]
        if self.params_file is not None:
            command += ["--params-file", str(self.params_file)]
        for parameter in self.parameters:
            command += ["-p", parameter]
        for remap in self.remaps:
            command += ["-r", remap]
        return command

    def start(self) -> None:
        """Start the processes (returns at once; see :meth:`wait_active`)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, module, _ in LAUNCH_PROCESSES[self.mode]:
            log_path = self.log_dir / f"{name}.log"
            with log_path.open("w") as log:
                process = subprocess.Popen(
                    self._command(module), env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self.processes.append(NodeProcess(name, process, log_path))
            logger.info("started %s (pid %d), log %s", name, process.pid, log_path)

    def _check_alive(self) -> None:
        for job in self.processes:
            if job.process.poll() is not None:
                raise SeglocError(f"{job.name} exited with status {job.process.returncode}; the end of {job.log_path}:\n{job.log_tail()}")

    def wait_active(self, node: Any, timeout_s: float) -> None:
        """Wait until every node reports ``active`` on ``/<name>/get_state`` (``node`` must be spun by an executor).

        Raises:
            SeglocError: a process exited, a node came up in another state (configure failed),
                or the timeout passed; with the end of the node's log.
        """
        from lifecycle_msgs.srv import GetState

        deadline = time.monotonic() + timeout_s
        for name in self.node_names:
            client = node.create_client(GetState, f"/{name}/get_state")
            try:
                while True:
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise SeglocError(f"{name} was not active after {timeout_s:g} s; the end of its log:\n{self._log_of(name)}")
                    if not client.wait_for_service(timeout_sec=0.5):
                        continue
                    future = client.call_async(GetState.Request())
                    done = threading.Event()
                    future.add_done_callback(lambda _, done=done: done.set())
                    if not done.wait(timeout=5.0) or future.result() is None:
                        continue
                    state = future.result().current_state
                    if state.id == PRIMARY_STATE_ACTIVE:
                        logger.info("%s is active", name)
                        break
                    raise SeglocError(
                        f"{name} is {state.label}, not active (did configure fail?); the end of its log:\n{self._log_of(name)}"
                    )
            finally:
                node.destroy_client(client)

    def _log_of(self, name: str) -> str:
        job = next((j for j in self.processes if j.name == name), self.processes[0] if self.processes else None)
        return "" if job is None else job.log_tail()

    def stop(self, timeout_s: float = 15.0) -> dict[str, int | None]:
        """Stop the processes (SIGINT, then SIGTERM, then SIGKILL); returns name -> exit status."""
        for job in self.processes:
            if job.process.poll() is None:
                job.process.send_signal(signal.SIGINT)
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0), (None, 5.0)):
            deadline = time.monotonic() + wait
            for job in self.processes:
                try:
                    job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            running = [job for job in self.processes if job.process.poll() is None]
            if not running or sig is None:
                break
            for job in running:
                logger.warning("%s did not stop in time: sending %s", job.name, sig.name)
                job.process.send_signal(sig)
        return {job.name: job.process.poll() for job in self.processes}
