"""The parameter specs of the nodes and their checks (no ROS needed; the nodes with their params file: test/ros/test_params_file.py)."""

import pytest

from segloc_ros.nodes import NODES, node_info
from segloc_ros.nodes.params import AVAILABLE_BACKENDS, COMMON_PARAMETERS, ParameterSpec, check_parameter


@pytest.mark.parametrize("node", NODES, ids=lambda node: node.name)
def test_every_parameter_is_described_once_and_its_default_passes_its_check(node):
    names = [spec.name for spec in node.parameters]
    assert len(names) == len(set(names))
    if node.serves_map:
        assert names[: len(COMMON_PARAMETERS)] == [spec.name for spec in COMMON_PARAMETERS]
    for spec in node.parameters:
        assert len(spec.description) > 20, spec.name
        assert check_parameter(spec, spec.default) is None, spec.name


def test_parameter_checks():
    specs = {spec.name: spec for spec in node_info("pose_refinement_node").parameters}
    assert "available backends: torch, onnxruntime, tensorrt, auto" in check_parameter(specs["backend"], "tensorflow")
    assert all(check_parameter(specs["backend"], backend) is None for backend in AVAILABLE_BACKENDS)
    assert "must be >= 1" in check_parameter(specs["queue_size"], 0)
    assert "must be > 0" in check_parameter(specs["max_position_std"], 0.0)
    assert "takes a float" in check_parameter(specs["max_position_std"], 1)
    assert "takes a bool" in check_parameter(specs["publish_tf"], "yes")
    assert check_parameter(specs["tf_timeout"], 0.0) is None
    transport = {spec.name: spec for spec in node_info("segmentation_node").parameters}["image_transport"]
    assert "one of raw, compressed" in check_parameter(transport, "theora")
    assert check_parameter(ParameterSpec("x", "", "free text"), "anything") is None
