"""segloc_ros.launch_description: which processes localize.launch.py starts for given argument values (no ROS needed)."""

import json

import pytest

from segloc_ros.launch_description import camera_info_topic, launch_arguments, node_launches, pipeline_kind
from segloc_ros.nodes import COMPOSED_NODES, CONTAINER_EXECUTABLE

SHARE = "/opt/ws/install/segloc_ros/share/segloc_ros"


def values(**overrides):
    resolved = {argument.name: argument.default for argument in launch_arguments(SHARE)}
    return {**resolved, **overrides}


def write_map(folder, method: str):
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"method": method}))
    return str(folder)


@pytest.mark.parametrize(
    ("image", "camera_info", "expected"),
    [
        ("/camera/color/image_raw", "", "/camera/color/camera_info"),
        ("/camera/color/image_raw/", "", "/camera/color/camera_info"),
        ("image", "", "camera_info"),
        ("/image_raw", "", "/camera_info"),
        ("cam/image", "", "cam/camera_info"),
        ("/camera/color/image_raw", "/calib/info", "/calib/info"),
    ],
)
def test_camera_info_follows_the_image_topic_unless_given(image, camera_info, expected):
    assert camera_info_topic(image, camera_info) == expected
    (process,) = node_launches(values(image=image, camera_info=camera_info, pipeline="single"))
    assert ("camera_info", expected) in process.remappings and ("image", image.rstrip("/")) in process.remappings


def test_the_pipeline_follows_the_map(tmp_path):
    segloc_map, reference_map = write_map(tmp_path / "a", "segloc"), write_map(tmp_path / "b", "reference")
    assert pipeline_kind("auto", segloc_map) == "split" and pipeline_kind("auto", reference_map) == "single"
    assert pipeline_kind("auto", "") == "split" and pipeline_kind("single", segloc_map) == "single"
    split = node_launches(values(map=segloc_map))
    assert [(p.executable, p.name) for p in split] == [(node.executable, node.name) for node in COMPOSED_NODES]
    (container,) = node_launches(values(map=segloc_map, composition="true"))
    assert container.executable == CONTAINER_EXECUTABLE and container.name is None
    (single,) = node_launches(values(map=reference_map))
    assert (single.executable, single.name) == ("localizer_node", "localizer_node")
    assert single.parameters[0] == f"{SHARE}/config/segloc_ros.yaml" and single.parameters[1]["map_path"] == reference_map
    with pytest.raises(ValueError, match="pipeline must be auto, split or single"):
        node_launches(values(map=segloc_map, pipeline="both"))


def test_a_map_store_adds_the_map_manager_for_the_launched_localizers(tmp_path):
    reference_map = write_map(tmp_path / "b", "reference")
    assert all(p.name != "map_manager" for p in node_launches(values(map=reference_map)))  # no store: no manager
    *_, manager = node_launches(values(map=reference_map, map_store="s3://fleet/site"))
    assert (manager.executable, manager.name) == ("map_manager", "map_manager")
    assert manager.parameters[1]["store"] == "s3://fleet/site" and manager.parameters[1]["localizer_nodes"] == "localizer_node"
    *_, manager = node_launches(values(map_store="/maps/store", composition="true"))
    assert manager.parameters[1]["localizer_nodes"] == ",".join(node.name for node in COMPOSED_NODES)
