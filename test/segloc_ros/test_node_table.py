"""The table of the nodes (segloc_ros.nodes.NODES) against what the installed distribution and the launch description do."""

import importlib.metadata
import importlib.util

import pytest

from segloc_ros.launch_description import launch_arguments, node_launches
from segloc_ros.nodes import COMPOSED_NODES, CONTAINER_EXECUTABLE, EXECUTABLES, NODES, node_info, parameter_defaults

PACKAGE = "segloc_ros"


def console_scripts() -> dict[str, str]:
    """Console script -> entry point, as installed (setup.cfg console_scripts; colcon puts them in lib/segloc_ros)."""
    distribution = importlib.metadata.distribution(PACKAGE)
    return {entry.name: entry.value for entry in distribution.entry_points if entry.group == "console_scripts"}


def test_the_installed_console_scripts_are_the_tables_executables():
    scripts = console_scripts()
    missing = {executable: target for executable, target in EXECUTABLES.items() if scripts.get(executable) != target}
    assert not missing, f"not installed as such by {PACKAGE} (setup.cfg console_scripts): {missing}"
    others = {
        name: target
        for name, target in scripts.items()
        if name not in EXECUTABLES and (target.startswith("segloc_ros.nodes.") or target in EXECUTABLES.values())
    }
    assert not others, f"console scripts running nodes that the table does not list: {others}"


def test_every_module_of_the_table_exists():
    for target in EXECUTABLES.values():
        module, _, function = target.partition(":")
        assert function == "main" and importlib.util.find_spec(module) is not None, target


def test_the_launch_description_starts_the_composed_nodes_of_the_table():
    values = {argument.name: argument.default for argument in launch_arguments("/share/segloc_ros")}
    separate = node_launches({**values, "composition": "false"})
    assert [(process.executable, process.name) for process in separate] == [(node.executable, node.name) for node in COMPOSED_NODES]
    (container,) = node_launches({**values, "composition": "true"})
    assert (container.executable, container.name) == (CONTAINER_EXECUTABLE, None)


def test_node_lookup():
    for node in NODES:
        assert node_info(node.name) is node
        assert list(parameter_defaults(node.name)) == [spec.name for spec in node.parameters]
    with pytest.raises(ValueError, match="no segloc_ros node 'mapping_node'; the nodes: segmentation_node, retrieval_node"):
        node_info("mapping_node")
