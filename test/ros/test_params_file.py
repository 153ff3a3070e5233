"""Node parameters from params files, for real: config/segloc_ros.yaml gives exactly the declared defaults; a bad value is refused.

Each node of segloc_ros.nodes.NODES runs in its own process with ``--params-file``; the test reads
its parameters over its parameter services (list_parameters, get_parameters).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from segloc_ros.nodes import NODES, node_info

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pytest runs with --import-mode=importlib: siblings are not importable
import node_harness as harness  # noqa: E402
from node_harness import CommandProcess, NodeProcess  # noqa: E402

PARAMS_FILE = harness.REPO_ROOT / "config" / "segloc_ros.yaml"
#: What rclpy declares in every node by itself.
ROS_OWN_PARAMETERS = {"use_sim_time", "start_type_description_service"}
ERROR = 2


@pytest.fixture
def processes():
    """A list to put started processes in; all are stopped (SIGINT) after the test, and must exit with 0."""
    started: list[NodeProcess] = []
    yield started
    codes = {process.name: process.stop() for process in started}
    assert all(code == 0 for code in codes.values()), f"exit codes after SIGINT: {codes}" + "".join(p.log() for p in started)


def test_the_params_file_gives_every_node_exactly_its_declared_defaults(client, processes, ros_env, tmp_path):
    sections = yaml.safe_load(PARAMS_FILE.read_text())
    for node in NODES:
        command = [sys.executable, "-m", node.module, "--ros-args", "--params-file", str(PARAMS_FILE)]
        processes.append(CommandProcess(command, ros_env, tmp_path, node.name))
    assert set(sections) == {node.name for node in NODES}, f"{PARAMS_FILE.name} needs one section per node, no other"
    for node, process in zip(NODES, processes):
        harness.wait_process_ready(client, process, node.name)
        declared = harness.list_parameters(client, node.name) - ROS_OWN_PARAMETERS
        assert declared == {spec.name for spec in node.parameters}, node.name
        # rclpy ignores a params file's values for parameters a node does not declare: the file lists exactly these.
        assert set(sections[node.name]["ros__parameters"]) == declared, f"{PARAMS_FILE.name}: {node.name} lists other parameters"
        values = harness.get_parameters(client, node.name, [spec.name for spec in node.parameters])
        defaults = node.parameter_defaults()
        assert values == defaults, node.name
        assert {name: type(value) for name, value in values.items()} == {name: type(value) for name, value in defaults.items()}, node.name


def test_an_out_of_range_value_in_a_params_file_is_refused_with_the_reason(scene, client, processes, ros_env, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    node = node_info("retrieval_node")
    reason = "parameter queue_size must be >= 1, got 0"
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    process = NodeProcess(node.module, {node.name: harness.node_parameters(scene, queue_size=0)}, ros_env, tmp_path, node.name)
    processes.append(process)

    # The node comes up but does not configure, and says why: at start-up and on a later configure.
    status = client.wait_for(
        lambda: harness.find_status(diagnostics, node.name, ERROR, reason),
        60,
        lambda: reason + harness.describe_statuses(diagnostics, node.name),
    )
    assert "configure failed" in status.message and harness.status_values(status)["state"] == "unconfigured"
    assert client.lifecycle_state(node.name) == "unconfigured"
    assert not client.change_state(node.name, "configure")
    # The same value over the parameter service is refused with the reason; a good one is taken, and the node configures.
    (result,) = client.set_parameters(node.name, {"queue_size": -1})
    assert not result.successful and result.reason == "parameter queue_size must be >= 1, got -1"
    (result,) = client.set_parameters(node.name, {"queue_size": 2})
    assert result.successful
    assert client.change_state(node.name, "configure") and client.lifecycle_state(node.name) == "inactive"
