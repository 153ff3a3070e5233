"""What launch/localize.launch.py starts (segloc_ros.launch_description; the launch packages are not needed)."""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from segloc_ros.launch_description import (
    CONTAINER_EXECUTABLE,
    NODE_EXECUTABLES,
    PACKAGE,
    environment,
    launch_arguments,
    node_launches,
    parameter_overrides,
    remappings,
)
from segloc_ros.nodes import NODE_PARAMETERS

ROOT = Path(__file__).resolve().parents[2]
SHARE = "/opt/ws/install/segloc_ros/share/segloc_ros"


def defaults(**values):
    resolved = {argument.name: argument.default for argument in launch_arguments(SHARE)}
    resolved.update(values)
    return resolved


def test_arguments_and_environment():
    arguments = {argument.name: argument for argument in launch_arguments(SHARE)}
    assert list(arguments) == ["map", "params_file", "image", "camera_info", "use_sim_time", "backend", "composition"]
    assert arguments["params_file"].default == f"{SHARE}/config/segloc_ros.yaml"
    assert (arguments["use_sim_time"].default, arguments["composition"].default, arguments["backend"].default) == (
        "false",
        "false",
        "torch",
    )
    assert all(argument.description for argument in arguments.values())
    assert environment(SHARE) == {"FASTRTPS_DEFAULT_PROFILES_FILE": f"{SHARE}/config/fastdds_shm.xml"}
    assert (ROOT / "config" / "segloc_ros.yaml").is_file() and (ROOT / "config" / "fastdds_shm.xml").is_file()


def test_three_processes_by_default():
    processes = node_launches(defaults(map="/maps/office", image="/camera/color/image_raw", camera_info="/camera/color/camera_info"))
    assert [(p.executable, p.name) for p in processes] == [(exe, name) for name, exe in NODE_EXECUTABLES.items()]
    assert set(NODE_EXECUTABLES) == set(NODE_PARAMETERS)
    for process in processes:
        assert process.parameters == [
            f"{SHARE}/config/segloc_ros.yaml",
            {"use_sim_time": False, "backend": "torch", "map_path": "/maps/office"},
        ]
        assert process.remappings == [
            ("image", "/camera/color/image_raw"),
            ("image/compressed", "/camera/color/image_raw/compressed"),
            ("camera_info", "/camera/color/camera_info"),
        ]


def test_composition_is_one_container():
    (process,) = node_launches(defaults(composition="True", use_sim_time="true", params_file="/tmp/p.yaml"))
    assert (process.executable, process.name) == (CONTAINER_EXECUTABLE, None)
    assert process.parameters == ["/tmp/p.yaml", {"use_sim_time": True, "backend": "torch"}]  # no map: the params file's
    assert process.remappings == remappings("image", "camera_info")


def test_bad_values():
    with pytest.raises(ValueError, match="available backends: torch"):
        parameter_overrides("", "false", "tensorrt")
    with pytest.raises(ValueError, match="composition must be true or false"):
        node_launches(defaults(composition="maybe"))
    with pytest.raises(ValueError, match="missing launch argument value"):
        node_launches({"map": ""})


def test_the_launch_file_is_a_thin_wrapper():
    source = (ROOT / "launch" / "localize.launch.py").read_text()
    tree = ast.parse(source)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {"segloc_ros", "launch", "launch.actions", "launch_ros.actions", "ament_index_python.packages"} <= imported
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    assert "SetEnvironmentVariable" in source and "node_launches" in source and "launch_arguments" in source
    assert PACKAGE in (ROOT / "resource" / PACKAGE).as_posix()


def test_package_xml_declares_the_launch_dependencies():
    depends = {element.text for element in ET.parse(ROOT / "package.xml").getroot() if element.tag.endswith("depend")}
    assert {"rclpy", "std_srvs", "launch", "launch_ros", "ament_index_python", "lifecycle_msgs", "diagnostic_msgs", "tf2_msgs"} <= depends
