"""launch/localize.launch.py through the real launch system (launch.LaunchService, what ``ros2 launch`` runs).

The package is built with ``colcon build --symlink-install`` as README.md's "On a robot" does
(conftest's colcon_install; test_colcon.py checks the build), and the launch runs in the
environment of ``source install/setup.bash``: launch_ros finds the package through
AMENT_PREFIX_PATH and starts the executables colcon installed in lib/segloc_ros. The launch file
is started with a small SegLoc map (node_harness.build_scene) and remapped camera topics, with
and without composition; the test process talks to the nodes with rclpy while the service runs,
then stops the service as Ctrl-C on ``ros2 launch`` does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from segloc_ros.nodes import COMPOSED_NODES, CONTAINER_EXECUTABLE

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pytest runs with --import-mode=importlib: siblings are not importable
import node_harness as harness  # noqa: E402
from node_harness import CAMERA_FRAME, RosClient  # noqa: E402

IMAGE_TOPIC = "/test_camera/color/image_raw"
CAMERA_INFO_TOPIC = "/test_camera/color/camera_info"


@pytest.fixture
def launch_file(ros_env, colcon_install, tmp_path, monkeypatch) -> Path:
    """The launch file in the colcon install space; this process's environment set for the launch (and restored after it).

    The launch processes inherit os.environ: conftest's ROS settings (own domain, localhost
    discovery, Fast DDS profile), what ``source install/setup.bash`` sets (AMENT_PREFIX_PATH and
    PYTHONPATH with the workspace first), and ROS logs in the test's folder. monkeypatch restores
    what the launch file (SetEnvironmentVariable) and RosClient change in os.environ.
    """
    install = colcon_install(True)
    for key, value in {**ros_env, **harness.install_space_environment(install, ros_env)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "ros_log"))
    return install / harness.PACKAGE / "share" / harness.PACKAGE / "launch" / "localize.launch.py"


def test_localize_launch_runs_localizer_node_for_another_method_and_poses_arrive(scene, reference_map, launch_file, ros_env):
    """``pipeline:=auto`` with a reference map starts localizer_node; images over the remapped topics give poses with their stamps."""
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from segloc_ros.conversions import camera_info_msg_from_camera, image_msg_from_array, tf_message, transform_stamped_msg

    client = RosClient(ros_env)
    poses = client.collect(PoseWithCovarianceStamped, "/pose", 20)
    image_pub, info_pub = client.publisher(Image, IMAGE_TOPIC), client.publisher(CameraInfo, CAMERA_INFO_TOPIC)
    tf_pub = client.publisher(TFMessage, "/tf", 100)
    static_qos = harness_static_qos()
    static_pub = client.publisher(TFMessage, "/tf_static", static_qos)
    stamps = []

    def check(running) -> None:
        harness.wait_lifecycle_state(client, "localizer_node", "active", 120, alive=running)
        static_pub.publish(tf_message([transform_stamped_msg(scene.base_from_cam, 0, "base_link", CAMERA_FRAME)]))
        for publisher in (image_pub, info_pub, tf_pub):
            client.wait_subscribers(publisher)
        for frame in scene.frames[:2]:
            tf_pub.publish(tf_message([transform_stamped_msg(frame.odom_from_base, frame.stamp_ns, "odom", "base_link")]))
            info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME))
            time.sleep(0.1)
            image_pub.publish(image_msg_from_array(frame.image, frame.stamp_ns, CAMERA_FRAME))
            stamps.append(frame.stamp_ns)
            client.wait_for(
                lambda frame=frame: any(p.header.stamp.sec * 10**9 + p.header.stamp.nanosec == frame.stamp_ns for p in poses),
                60,
                f"a pose for {frame.name}",
            )

    try:
        result = harness.run_launch(launch_file, {"map": str(reference_map), "image": IMAGE_TOPIC}, check)  # camera_info: beside image
    finally:
        client.close()
    assert len(stamps) == 2 and all(p.header.frame_id == "map" for p in poses)
    assert [name.rpartition("-")[0] for name in result.exit_codes] == ["localizer_node"], result.exit_codes
    assert all(code == 0 for code in result.exit_codes.values()) and result.return_code == 0


def harness_static_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.mark.parametrize("composition", ["false", "true"])
def test_localize_launch_starts_the_nodes_and_stops_them(scene, launch_file, ros_env, composition):
    """The nodes reach ``active`` with the map argument, get images on the remapped topics, and exit cleanly on shutdown."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image

    from segloc_ros.conversions import camera_info_msg_from_camera, image_msg_from_array

    arguments = {"map": str(scene.map_a), "image": IMAGE_TOPIC, "camera_info": CAMERA_INFO_TOPIC, "composition": composition}
    segmentation = COMPOSED_NODES[0].name
    seen: dict[str, object] = {}
    # Before the launch: RosClient sets the middleware's variables in os.environ, and the launch
    # file's own (the Fast DDS profile) must be what the processes get.
    client = RosClient(ros_env)
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    processed_cameras = client.collect(CameraInfo, "/segloc/camera_info")
    image_pub = client.publisher(Image, IMAGE_TOPIC)
    info_pub = client.publisher(CameraInfo, CAMERA_INFO_TOPIC)

    def check(running) -> None:
        for node in COMPOSED_NODES:
            harness.wait_lifecycle_state(client, node.name, "active", 120, alive=running)
        seen["parameters"] = {
            node.name: harness.get_parameters(client, node.name, [spec.name for spec in node.parameters]) for node in COMPOSED_NODES
        }
        client.wait_subscribers(image_pub)
        client.wait_subscribers(info_pub)
        frame = scene.frames[0]
        deadline = time.monotonic() + 60
        while not client.snapshot(processed_cameras):  # camera_info first: an image without it is dropped
            info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME))
            time.sleep(0.2)
            image_pub.publish(image_msg_from_array(frame.image, frame.stamp_ns, CAMERA_FRAME))
            assert time.monotonic() < deadline and running(), "no segloc/camera_info from an image on the remapped topic"
            time.sleep(1.0)
        seen["camera_info"] = client.snapshot(processed_cameras)[0]
        seen["segmentation"] = client.wait_for(
            lambda: next(
                (
                    harness.status_values(status)
                    for status in harness.diagnostic_statuses(diagnostics, segmentation)
                    if int(harness.status_values(status)["frames_received"]) >= 1
                ),
                None,
            ),
            10,
            lambda: "frames_received >= 1" + harness.describe_statuses(diagnostics, segmentation),
        )

    try:
        result = harness.run_launch(launch_file, arguments, check)
    finally:
        client.close()

    # Every node got the map argument over the params file's defaults, and read the remapped camera.
    for node in COMPOSED_NODES:
        assert seen["parameters"][node.name] == {**node.parameter_defaults(), "map_path": str(scene.map_a)}, node.name
    assert seen["camera_info"].header.stamp.sec * 10**9 + seen["camera_info"].header.stamp.nanosec == scene.frames[0].stamp_ns
    assert seen["segmentation"]["state"] == "active" and seen["segmentation"]["map_path"] == str(scene.map_a)
    # One process per node, or one container, each the executable colcon installed; all ended with 0 on the
    # shutdown, and so did the service.
    executables = [node.executable for node in COMPOSED_NODES] if composition == "false" else [CONTAINER_EXECUTABLE]
    assert sorted(name.rpartition("-")[0] for name in result.exit_codes) == sorted(executables), result.exit_codes
    lib = launch_file.parents[3] / "lib" / harness.PACKAGE
    assert sorted(command[0] for command in result.commands.values()) == sorted(str(lib / name) for name in executables)
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    assert result.return_code == 0
    profile = launch_file.parents[1] / "config" / "fastdds_shm.xml"
    assert all(env["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(profile) for env in result.environments.values())


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"composition": "maybe"}, "launch argument composition must be true or false, got 'maybe'"),
        ({"backend": "tensorflow"}, "backend 'tensorflow' is not available; available backends: torch, onnxruntime, tensorrt, auto"),
    ],
)
def test_a_bad_launch_argument_stops_the_launch_before_any_process(launch_file, arguments, reason):
    """The launch fails with the reason in its log; nothing is started."""
    import launch.logging

    def check(running) -> None:
        deadline = time.monotonic() + 30
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)

    result = harness.run_launch(launch_file, arguments, check)
    assert result.return_code != 0 and result.exit_codes == {}
    launch_log = Path(launch.logging.launch_config.log_dir) / "launch.log"  # what ros2 launch logs, screen output aside
    assert reason in launch_log.read_text()
