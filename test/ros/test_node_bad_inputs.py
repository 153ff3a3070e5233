"""Bad inputs to a running node, one case per line: each gets a clear diagnostic, localized False where a frame was due, and the node lives on.

One localizer_node (the reference method on the shared scene: fast, and a localizer_node shares
its inputs and outputs with the split nodes through segloc_ros.nodes.camera_input and
segloc_ros.nodes.localizing) receives each bad input in turn; after every case a good frame must
still be localized. The split nodes' own bad inputs (unsupported encodings, missing
camera_info, bad maps, NaN/wrong-frame initialpose, invalid lifecycle requests) are in
test_nodes.py.
"""

from __future__ import annotations

import array
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pytest runs with --import-mode=importlib: siblings are not importable
import node_harness as harness  # noqa: E402
from node_harness import CAMERA_FRAME, NodeProcess  # noqa: E402

LOCALIZER = "localizer_node"
ERROR = 2


def image_msg(frame, stamp_ns: int, **fields):
    """The frame's rgb8 image message at ``stamp_ns``, with some fields replaced."""
    from segloc_ros.conversions import image_msg_from_array

    msg = image_msg_from_array(frame.image, stamp_ns, fields.pop("frame_id", CAMERA_FRAME))
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def camera_info(scene, stamp_ns: int, frame_id: str = CAMERA_FRAME, **fields):
    from segloc_ros.conversions import camera_info_msg_from_camera

    msg = camera_info_msg_from_camera(scene.camera, stamp_ns, frame_id)
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


# (case id, what to send: "image" fields, "camera_info" fields, or "compressed" data; the diagnostic's fragment)
CASES = [
    ("unsupported encoding", {"image": {"encoding": "32FC1"}}, "not supported"),
    ("float depth encoding", {"image": {"encoding": "32FC1", "step": 256 * 4}}, "'32FC1' is not supported"),
    ("data shorter than height x step", {"image": {"data": array.array("B", bytes(100))}}, "has step 768 and 100 bytes; expected"),
    ("image larger than its camera_info", {"camera_info": {"width": 128, "height": 96}}, "does not match its camera"),
    ("zero intrinsics", {"camera_info": {"k": [0.0] * 9}, "frame_id": "zero_camera"}, "no valid intrinsics"),
    ("camera without extrinsics", {"frame_id": "unknown_camera"}, "no camera extrinsics base_link -> unknown_camera"),
    ("garbage compressed image", {"compressed": b"\x00\x01garbage"}, "could not be decoded"),
]


@pytest.mark.parametrize(("case", "bad", "fragment"), CASES, ids=[case[0] for case in CASES])
def test_a_bad_input_is_an_error_diagnostic_and_the_node_goes_on(case, bad, fragment, scene, reference_map, client, ros_env, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from std_msgs.msg import Bool
    from tf2_msgs.msg import TFMessage

    from segloc_ros.conversions import header_msg, tf_message, transform_stamped_msg

    transport = "compressed" if "compressed" in bad else "raw"
    parameters = harness.node_parameters(scene, map_path=str(reference_map), image_transport=transport)
    process = NodeProcess(f"segloc_ros.nodes.{LOCALIZER}", {LOCALIZER: parameters}, ros_env, tmp_path, "bad_inputs")
    try:
        localized = client.collect(Bool, "/segloc/localized", 20)
        diagnostics = client.collect(DiagnosticArray, "/diagnostics", 200)
        image_pub = client.publisher(
            CompressedImage if transport == "compressed" else Image, f"/image{'/compressed' if transport == 'compressed' else ''}"
        )
        info_pub, tf_pub = client.publisher(CameraInfo, "/camera_info"), client.publisher(TFMessage, "/tf", 100)
        static = tf_message([transform_stamped_msg(scene.base_from_cam, 0, "base_link", frame) for frame in (CAMERA_FRAME, "zero_camera")])
        client.publisher(TFMessage, "/tf_static", harness_tf_static_qos()).publish(static)
        wait_active(client, process)
        for publisher in (image_pub, info_pub, tf_pub):
            client.wait_subscribers(publisher)
        frame = scene.frames[0]

        def send(stamp_ns: int, image, info) -> None:
            count = len(client.snapshot(localized))
            tf_pub.publish(tf_message([transform_stamped_msg(frame.odom_from_base, stamp_ns, "odom", "base_link")]))
            info_pub.publish(info)
            time.sleep(0.1)
            image_pub.publish(image)
            client.wait_for(lambda: len(localized) > count, 60, f"a verdict ({case})" + process.log())

        seen = len(client.snapshot(diagnostics))
        stamp = frame.stamp_ns
        frame_id = bad.get("frame_id", CAMERA_FRAME)
        if "compressed" in bad:
            image = CompressedImage(header=header_msg(stamp, frame_id), format="jpeg", data=array.array("B", bad["compressed"]))
        else:
            image = image_msg(frame, stamp, frame_id=frame_id, **bad.get("image", {}))
        send(stamp, image, camera_info(scene, stamp, frame_id, **bad.get("camera_info", {})))
        assert client.snapshot(localized)[-1].data is False, case
        status = client.wait_for(
            lambda: harness.find_status(client.snapshot(diagnostics), LOCALIZER, ERROR, fragment, after=seen),
            10,
            lambda: f"ERROR with {fragment!r}" + harness.describe_statuses(diagnostics, LOCALIZER),
        )
        assert status.message.startswith("localization lost: "), status.message
        # The node goes on: a good frame afterwards is localized.
        if transport == "raw":
            good = dataclasses.replace(frame, stamp_ns=stamp + 1)
            send(good.stamp_ns, image_msg(good, good.stamp_ns), camera_info(scene, good.stamp_ns))
            assert client.snapshot(localized)[-1].data is True, process.log()
        assert process.alive() and client.lifecycle_state(LOCALIZER) == "active"
    finally:
        code = process.stop()
    assert code == 0, process.log()


def wait_active(client, process, timeout: float = 90.0) -> None:
    """Wait until the node answers and is active (service calls outside wait_for: its conditions run under the client's lock)."""
    harness.wait_process_ready(client, process, LOCALIZER)
    deadline = time.monotonic() + timeout
    while client.lifecycle_state(LOCALIZER) != "active":
        assert time.monotonic() < deadline and process.alive(), "not active" + process.log()
        time.sleep(0.2)


def harness_tf_static_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_a_nan_or_foreign_initialpose_is_refused(scene, reference_map, client, ros_env, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped

    from segloc_ros.conversions import pose_with_covariance_stamped_msg

    process = NodeProcess(
        f"segloc_ros.nodes.{LOCALIZER}",
        {LOCALIZER: harness.node_parameters(scene, map_path=str(reference_map))},
        ros_env,
        tmp_path,
        "initialpose",
    )
    try:
        diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
        publisher = client.publisher(PoseWithCovarianceStamped, "/initialpose")
        wait_active(client, process)
        client.wait_subscribers(publisher)
        pose = pose_with_covariance_stamped_msg(scene.frames[0].world_from_base, np.eye(6) * 0.01, 0, "map")
        pose.pose.pose.position.x = float("nan")
        publisher.publish(pose)
        client.wait_for(lambda: harness.find_status(diagnostics, LOCALIZER, ERROR, "initialpose rejected"), 10, "NaN refused")
        publisher.publish(pose_with_covariance_stamped_msg(scene.frames[0].world_from_base, np.eye(6) * 0.01, 0, "odom"))
        client.wait_for(lambda: harness.find_status(diagnostics, LOCALIZER, ERROR, "it is in frame 'odom'"), 10, "frame refused")
        assert process.alive()
    finally:
        code = process.stop()
    assert code == 0, process.log()
