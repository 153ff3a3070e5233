"""config/segloc_ros.yaml lists every node parameter with its declared default; the parameter checks (no ROS needed)."""

from pathlib import Path

import pytest
import yaml

from segloc_ros.nodes import NODE_PARAMETERS, parameter_defaults
from segloc_ros.nodes.params import AVAILABLE_BACKENDS, COMMON_PARAMETERS, ParameterSpec, check_parameter

PARAMS_FILE = Path(__file__).resolve().parents[2] / "config" / "segloc_ros.yaml"


def test_params_file_matches_the_declared_defaults():
    values = yaml.safe_load(PARAMS_FILE.read_text())
    assert set(values) == set(NODE_PARAMETERS)
    for node, specs in NODE_PARAMETERS.items():
        assert set(values[node]) == {"ros__parameters"}, node
        in_file = values[node]["ros__parameters"]
        assert list(in_file) == [spec.name for spec in specs], f"{node}: parameters missing, extra or out of order"
        for spec in specs:
            # Same value and same type: rclpy refuses 1 for a double parameter.
            assert in_file[spec.name] == spec.default and type(in_file[spec.name]) is type(spec.default), (node, spec.name)


def test_every_parameter_is_described_and_valid_by_default():
    for node, specs in NODE_PARAMETERS.items():
        names = [spec.name for spec in specs]
        assert len(names) == len(set(names)), node
        assert names[: len(COMMON_PARAMETERS)] == [spec.name for spec in COMMON_PARAMETERS]
        for spec in specs:
            assert len(spec.description) > 20, spec.name
            assert check_parameter(spec, spec.default) is None, spec.name
    assert parameter_defaults("pose_refinement_node")["base_frame"] == "base_link"


def test_parameter_checks():
    specs = {spec.name: spec for spec in NODE_PARAMETERS["pose_refinement_node"]}
    assert "available backends: " + ", ".join(AVAILABLE_BACKENDS) in check_parameter(specs["backend"], "tensorrt")
    assert "must be >= 1" in check_parameter(specs["queue_size"], 0)
    assert "must be > 0" in check_parameter(specs["max_position_std"], 0.0)
    assert "takes a float" in check_parameter(specs["max_position_std"], 1)
    assert "takes a bool" in check_parameter(specs["publish_tf"], "yes")
    assert check_parameter(specs["tf_timeout"], 0.0) is None
    transport = {spec.name: spec for spec in NODE_PARAMETERS["segmentation_node"]}["image_transport"]
    assert "one of raw, compressed" in check_parameter(transport, "theora")
    assert check_parameter(ParameterSpec("x", "", "free text"), "anything") is None


@pytest.mark.parametrize("node", sorted(NODE_PARAMETERS))
def test_nodes_declare_these_parameters(node):
    """The node classes use the specs (read from source: importing the nodes needs rclpy)."""
    source = (Path(__file__).resolve().parents[2] / "src" / "segloc_ros" / "nodes" / f"{node}.py").read_text()
    constant = {"segmentation_node": "SEGMENTATION", "retrieval_node": "RETRIEVAL", "pose_refinement_node": "POSE_REFINEMENT"}[node]
    assert f"parameters = {constant}_PARAMETERS" in source and f"node_name = {constant}_NODE" in source
