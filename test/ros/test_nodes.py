"""The segloc_ros nodes for real: each test starts node processes and talks to them with rclpy from the test process.

The scene (node_harness.build_scene, built once per session) is a small synthetic room with a
SegLoc map whose point labels come from an oracle (the renderer's labels) and whose embedded
network is tiny and untrained. So:

- pose_refinement_node is fed the oracle's probabilities by the test; its poses must be exactly
  what the library computes for the same inputs, close to the ground truth, with the image
  stamps, in ``map``, and ``map -> odom`` must agree with the odometry;
- segmentation_node and the composed container run the untrained network: their outputs are
  checked for stamps, frames, encodings, shapes and agreement with the library, not accuracy.

Each test gets its own ROS domain (conftest.ros_env) and stops its processes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segloc_ros.nodes import NODES

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pytest runs with --import-mode=importlib: siblings are not importable
import node_harness as harness  # noqa: E402
from node_harness import CAMERA_FRAME, NodeProcess, RosClient, Scene  # noqa: E402

SEGMENTATION = "segmentation_node"
RETRIEVAL = "retrieval_node"
REFINEMENT = "pose_refinement_node"
LOCALIZER = "localizer_node"
PLACE_RECOGNITION = "place_recognition_node"
MODULES = {node.name: node.module for node in NODES}
OK, WARN, ERROR = 0, 1, 2


@pytest.fixture
def start_nodes(ros_env, tmp_path):
    """``start_nodes(module, {node: params}, name)`` starts a process; all are stopped (SIGINT) after the test."""
    processes: list[NodeProcess] = []

    def start(module: str, parameters: dict, name: str) -> NodeProcess:
        process = NodeProcess(module, parameters, ros_env, tmp_path, name)
        processes.append(process)
        return process

    yield start
    codes = {process.name: process.stop() for process in processes}
    assert all(code == 0 for code in codes.values()), f"exit codes after SIGINT: {codes}" + "".join(p.log() for p in processes)


def wait_state(client: RosClient, process: NodeProcess, node: str, state: str, timeout: float = 90.0) -> None:
    harness.wait_process_ready(client, process, node)
    deadline = time.monotonic() + timeout
    while (current := client.lifecycle_state(node)) != state:
        if time.monotonic() > deadline or not process.alive():
            raise AssertionError(f"{node} is {current!r}, not {state!r}" + process.log())
        time.sleep(0.2)


def turn(cam_from_world, angle_deg: float, shift):
    """The camera turned about the world's vertical and moved by ``shift`` (metres)."""
    from segloc.geometry.transforms import Rigid3, axis_angle_to_matrix

    world_from_cam = cam_from_world.inverse()
    rotation = axis_angle_to_matrix(np.array([0.0, 0.0, np.radians(angle_deg)])) @ world_from_cam.rotation
    return Rigid3.from_rotation(rotation, world_from_cam.translation + np.asarray(shift, dtype=np.float64)).inverse()


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def static_camera_tf(scene: Scene, stamp: int):
    from segloc_ros.conversions import tf_message, transform_stamped_msg

    return tf_message([transform_stamped_msg(scene.base_from_cam, stamp, "base_link", CAMERA_FRAME)])


def odometry_tf(frame: harness.QueryFrame):
    from segloc_ros.conversions import tf_message, transform_stamped_msg

    return tf_message([transform_stamped_msg(frame.odom_from_base, frame.stamp_ns, "odom", "base_link")])


def pipeline_qos():
    """The QoS of the topics between the segloc nodes (imported here: rclpy only inside tests)."""
    from segloc_ros.nodes.common import PIPELINE_QOS

    return PIPELINE_QOS


def tf_static_qos():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def rgb_image(frame: harness.QueryFrame, frame_id: str = CAMERA_FRAME):
    from segloc_ros.conversions import image_msg_from_array

    return image_msg_from_array(frame.image, frame.stamp_ns, frame_id)


# --- pose_refinement_node ----------------------------------------------------------------------


def test_pose_refinement_node(scene, client, start_nodes, one_torch_thread):
    """Oracle probabilities + priors + TF in; poses, map -> odom, failures and initialpose handling out."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Bool
    from tf2_msgs.msg import TFMessage

    from segloc.geometry.transforms import pose_error
    from segloc.localize.frames import base_covariance_from_camera, base_pose_from_camera, pose_is_confident
    from segloc.methods.segloc.localizer import SegLocLocalizer, SegLocLocalizerConfig
    from segloc.methods.segloc.packing import probabilities_image_fields, segmentation_from_packed
    from segloc_ros.conversions import (
        camera_from_camera_info,
        camera_info_msg_from_camera,
        pose_and_covariance_from_msg,
        pose_array_msg,
        pose_with_covariance_stamped_msg,
        raw_image_msg,
        rigid_from_transform_stamped_msg,
    )

    tolerance = 0.25
    parameters = harness.node_parameters(scene, transform_tolerance=tolerance, lost_frames_error=2, prior_input="pose_priors")
    process = start_nodes(MODULES[REFINEMENT], {REFINEMENT: parameters}, "refinement")
    poses = client.collect(PoseWithCovarianceStamped, "/pose", 50)
    localized = client.collect(Bool, "/segloc/localized", 50)
    tf_out = client.collect(TFMessage, "/tf", 100)
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    pubs = {
        "probabilities": client.publisher(Image, "/segloc/probabilities", pipeline_qos()),
        "camera_info": client.publisher(CameraInfo, "/segloc/camera_info", pipeline_qos()),
        "priors": client.publisher(PoseArray, "/segloc/pose_priors", pipeline_qos()),
        "initialpose": client.publisher(PoseWithCovarianceStamped, "/initialpose"),
        "tf": client.publisher(TFMessage, "/tf", 100),
    }
    tf_static = client.publisher(TFMessage, "/tf_static", tf_static_qos())
    tf_static.publish(static_camera_tf(scene, scene.frames[0].stamp_ns))
    wait_state(client, process, REFINEMENT, "active")
    for publisher in pubs.values():
        client.wait_subscribers(publisher)

    localizer = SegLocLocalizer.from_map(scene.map_a, SegLocLocalizerConfig(), with_network=False)

    def camera_info(frame):
        return camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME)

    def send(frame, priors=None) -> None:
        """One frame: odometry, camera, probabilities (and priors); waits for the node's verdict on segloc/localized."""
        count = len(client.snapshot(localized))
        pubs["tf"].publish(odometry_tf(frame))
        pubs["camera_info"].publish(camera_info(frame))
        header = camera_info(frame).header
        pubs["probabilities"].publish(raw_image_msg(header, probabilities_image_fields(frame.probabilities)))
        if priors is not None:
            pubs["priors"].publish(pose_array_msg([p.inverse() for p in priors], frame.stamp_ns, "map"))
        client.wait_for(lambda: len(localized) > count, 60, f"segloc/localized for {frame.name}" + process.log())

    def expected(frame, priors):
        """What the library gives for the same inputs: (world_from_base, covariance) or None."""
        camera = camera_from_camera_info(camera_info(frame))
        result = localizer.localize_segmentation(segmentation_from_packed(frame.probabilities), camera, priors)
        if not result.success:
            return None
        world_from_cam = result.cam_from_world.inverse()
        covariance = base_covariance_from_camera(result.covariance, world_from_cam, scene.base_from_cam)
        if not pose_is_confident(covariance, 0.5, 10.0):
            return None
        return base_pose_from_camera(world_from_cam, scene.base_from_cam), covariance

    def pose_at(stamp: int):
        return next((p for p in client.snapshot(poses) if stamp_ns(p.header) == stamp), None)

    def transforms_at(stamp: int):
        return [t for m in client.snapshot(tf_out) for t in m.transforms if stamp_ns(t.header) == stamp and t.child_frame_id == "odom"]

    # 1. Frames with retrieval-like priors (the ground truth moved by 0.14 m and 3 degrees).
    frames = scene.frames
    localized_frames = []
    for frame in frames[:3]:
        priors = [turn(frame.cam_from_world, 3.0, (0.1, -0.1, 0.0))]
        send(frame, priors)
        want = expected(frame, priors)
        # The pose is published before the verdict, but arrives on its own subscription: wait for it when one is due.
        got = pose_at(frame.stamp_ns) if want is None else client.wait_for(lambda frame=frame: pose_at(frame.stamp_ns), 10, "pose")
        if want is None:
            assert got is None and client.snapshot(localized)[-1].data is False
            continue
        localized_frames.append(frame)
        assert got is not None, f"no pose for {frame.name}" + process.log()
        assert got.header.frame_id == "map" and client.snapshot(localized)[-1].data is True
        world_from_base, covariance = pose_and_covariance_from_msg(got)
        assert np.allclose(world_from_base.matrix(), want[0].matrix(), atol=1e-6)
        assert np.allclose(covariance, want[1], rtol=1e-6, atol=1e-12)
        assert np.all(np.linalg.eigvalsh(covariance) > 0)
        t_err, r_err = pose_error(world_from_base.inverse(), frame.world_from_base.inverse())
        assert t_err < 0.3 and r_err < 5.0, (frame.name, t_err, r_err)
        # map -> odom at the image stamp + transform_tolerance, consistent with the odometry at the image stamp.
        client.wait_for(lambda frame=frame: transforms_at(frame.stamp_ns + int(tolerance * 1e9)), 10, "map -> odom")
        (transform,) = transforms_at(frame.stamp_ns + int(tolerance * 1e9))
        assert transform.header.frame_id == "map"
        map_from_odom = rigid_from_transform_stamped_msg(transform)
        assert np.allclose((map_from_odom * frame.odom_from_base).matrix(), world_from_base.matrix(), atol=1e-6)
    assert len(localized_frames) >= 2, "the oracle should localize most frames"

    # 2. Priors far away: no pose, localized False, "localization lost" (WARN, then ERROR), the last map -> odom again.
    last_transform = rigid_from_transform_stamped_msg(
        [t for m in client.snapshot(tf_out) for t in m.transforms if t.child_frame_id == "odom"][-1]
    )
    # Earlier frames may have been lost too (whether an oracle frame with a 3-degree prior converges depends on the
    # CPU's floating point): only the statuses received after each far frame was sent count.
    for frame, level in ((frames[3], WARN), (frames[4], ERROR)):
        far = [turn(frame.cam_from_world, 0.0, (50.0, 40.0, 0.0))]
        seen = len(client.snapshot(diagnostics))
        send(frame, far)
        assert client.snapshot(localized)[-1].data is False and pose_at(frame.stamp_ns) is None
        camera = camera_from_camera_info(camera_info(frame))
        reason = localizer.localize_segmentation(segmentation_from_packed(frame.probabilities), camera, far).info["failure_reason"]
        assert reason
        status = client.wait_for(
            lambda level=level, seen=seen, reason=reason: harness.find_status(
                client.snapshot(diagnostics), REFINEMENT, level, f"localization lost: {reason}", after=seen
            ),
            10,
            lambda: "lost" + harness.describe_statuses(diagnostics, REFINEMENT) + process.log(),
        )
        assert status.message == f"localization lost: {reason}", status.message
        client.wait_for(lambda frame=frame: transforms_at(frame.stamp_ns + int(tolerance * 1e9)), 10, "map -> odom republished")
        republished = rigid_from_transform_stamped_msg(transforms_at(frame.stamp_ns + int(tolerance * 1e9))[0])
        assert np.allclose(republished.matrix(), last_transform.matrix())

    # 3. Bad initial poses are rejected with a diagnostic ERROR; the node stays up.
    good = pose_with_covariance_stamped_msg(frames[5].world_from_base, np.eye(6) * 0.01, 0, "map")
    nan_pose = pose_with_covariance_stamped_msg(frames[5].world_from_base, np.eye(6) * 0.01, 0, "map")
    nan_pose.pose.pose.position.x = float("nan")
    pubs["initialpose"].publish(nan_pose)
    status = client.wait_for(lambda: harness.find_status(diagnostics, REFINEMENT, ERROR, "initialpose rejected"), 10, "NaN rejected")
    assert "non-finite" in status.message, status.message
    wrong_frame = pose_with_covariance_stamped_msg(frames[5].world_from_base, np.eye(6) * 0.01, 0, "odom")
    pubs["initialpose"].publish(wrong_frame)
    client.wait_for(lambda: harness.find_status(diagnostics, REFINEMENT, ERROR, "initialpose rejected: it is in frame 'odom'"), 10, "frame")

    # 4. A good initialpose is the prior of the next frame: no retrieval priors needed.
    pubs["initialpose"].publish(good)
    client.wait_for(lambda: harness.find_status(diagnostics, REFINEMENT, OK, "initialpose accepted"), 10, "initialpose accepted")
    send(frames[5])
    want = expected(frames[5], [(frames[5].world_from_base * scene.base_from_cam).inverse()])
    got = pose_at(frames[5].stamp_ns) if want is None else client.wait_for(lambda: pose_at(frames[5].stamp_ns), 10, "pose")
    assert (got is None) == (want is None), process.log()
    if want is not None:
        assert np.allclose(pose_and_covariance_from_msg(got)[0].matrix(), want[0].matrix(), atol=1e-6)
    published = len(localized_frames) + (want is not None)

    # 5. Without odometry (a runtime parameter change): map -> base_link, equal to the pose.
    assert client.set_parameters(REFINEMENT, {"use_odometry": False})[0].successful
    frame = dataclasses.replace(localized_frames[0], stamp_ns=localized_frames[0].stamp_ns + 1)  # a new stamp, a view that localized
    send(frame, [turn(frame.cam_from_world, 3.0, (0.1, -0.1, 0.0))])
    published += 1
    pose, _ = pose_and_covariance_from_msg(pose_at(frame.stamp_ns))
    stamp = frame.stamp_ns + int(tolerance * 1e9)
    base_tf = lambda: [t for m in tf_out for t in m.transforms if stamp_ns(t.header) == stamp and t.child_frame_id == "base_link"]  # noqa: E731
    (transform,) = client.wait_for(base_tf, 10, "map -> base_link")
    assert transform.header.frame_id == "map" and transforms_at(stamp) == []
    assert np.allclose(rigid_from_transform_stamped_msg(transform).matrix(), pose.matrix(), atol=1e-9)

    assert client.lifecycle_state(REFINEMENT) == "active"
    status = client.wait_for(
        lambda: next(
            (
                s
                for s in harness.diagnostic_statuses(diagnostics, REFINEMENT)
                if harness.status_values(s)["poses_published"] == str(published)
            ),
            None,
        ),
        10,
        lambda: f"{published} poses in diagnostics" + harness.describe_statuses(diagnostics, REFINEMENT),
    )
    assert {"refine_s", "queue_s", "frames_dropped", "frames_expired", "map_path", "last_position_std_m"} <= set(
        harness.status_values(status)
    )
    assert process.alive()


# --- segmentation_node -------------------------------------------------------------------------


def test_pose_refinement_node_from_retrieval(scene, client, start_nodes, one_torch_thread):
    """prior_input retrieval (the default): the split chain's refinement equals the one-process localizer's, pose for pose
    (tracking from odometry included, as the pipeline does it); staleness."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Bool
    from tf2_msgs.msg import TFMessage

    from segloc.localize.pipeline import PublishDecision
    from segloc.localize.tracking import TrackingState, tracking_mode
    from segloc.methods.segloc.localizer import SegLocLocalizer
    from segloc.methods.segloc.packing import probabilities_image_fields, retrieval_image_fields, segmentation_from_packed
    from segloc_ros.conversions import camera_info_msg_from_camera, pose_and_covariance_from_msg, raw_image_msg

    process = start_nodes(MODULES[REFINEMENT], {REFINEMENT: harness.node_parameters(scene)}, "refinement_retrieval")
    poses = client.collect(PoseWithCovarianceStamped, "/pose", 50)
    localized = client.collect(Bool, "/segloc/localized", 50)
    pubs = {
        "probabilities": client.publisher(Image, "/segloc/probabilities", pipeline_qos()),
        "camera_info": client.publisher(CameraInfo, "/segloc/camera_info", pipeline_qos()),
        "retrieval": client.publisher(Image, "/segloc/retrieval", pipeline_qos()),
        "tf": client.publisher(TFMessage, "/tf", 100),
    }
    client.publisher(TFMessage, "/tf_static", tf_static_qos()).publish(static_camera_tf(scene, scene.frames[0].stamp_ns))
    wait_state(client, process, REFINEMENT, "active")
    for publisher in pubs.values():
        client.wait_subscribers(publisher)

    localizer = SegLocLocalizer.from_map(scene.map_a, with_network=False)
    decision = PublishDecision()
    tracking = TrackingState(tracks=True)  # the node's default tracking config
    agreed, modes = 0, []
    for frame in scene.frames[:4]:
        segmentation = segmentation_from_packed(frame.probabilities, frame.descriptor[None, :])
        retrieval = localizer.retrieval(segmentation.descriptor)  # what retrieval_node computes and sends
        count = len(client.snapshot(localized))
        info = camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME)
        pubs["tf"].publish(odometry_tf(frame))
        pubs["camera_info"].publish(info)
        pubs["probabilities"].publish(raw_image_msg(info.header, probabilities_image_fields(frame.probabilities)))
        pubs["retrieval"].publish(raw_image_msg(info.header, retrieval_image_fields(retrieval.image_ids, retrieval.similarities)))
        client.wait_for(lambda count=count: len(localized) > count, 60, f"segloc/localized for {frame.name}" + process.log())
        # The one-process localizer on the same segmentation: tracking from the pose odometry predicts once a confident
        # pose was published, else retrieval on the descriptor, then refinement.
        predicted = tracking.predict(decision.last_map_from_odom, frame.odom_from_base, scene.base_from_cam)
        if predicted is not None:
            result = localizer.track_segmentation(segmentation, scene.camera, predicted, {})
        else:
            result = localizer.localize_segmentation(segmentation, scene.camera)
        want = decision.decide(frame.stamp_ns, result, scene.base_from_cam, odom_from_base=frame.odom_from_base)
        thresholds = (decision.config.max_position_std, decision.config.max_yaw_std_deg)
        tracking.update(predicted is not None, want.published, want.uncertainty, thresholds, result)
        modes.append(tracking_mode(result))
        find = lambda frame=frame: next((p for p in poses if stamp_ns(p.header) == frame.stamp_ns), None)  # noqa: E731
        got = client.wait_for(find, 10, "pose") if want.published else find()
        assert (got is not None) == want.published, (frame.name, want.message)
        if want.published:
            world_from_base, covariance = pose_and_covariance_from_msg(got)
            assert np.allclose(world_from_base.matrix(), want.world_from_base.matrix(), atol=1e-9)
            assert np.allclose(covariance, want.covariance, rtol=1e-9, atol=1e-15)
            agreed += 1
    assert agreed >= 2, "the oracle should localize most frames"
    assert "tracked" in modes, modes  # the chain tracked (and still agreed with the library)

    # The upstream stops (segmentation_node or the camera died): segloc/localized goes False with a WARN, within seconds.
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    count = len(client.snapshot(localized))
    assert client.set_parameters(REFINEMENT, {"stale_timeout": 1.0})[0].successful
    started = time.monotonic()
    client.wait_for(lambda: len(localized) > count, 10, "a stale signal on segloc/localized" + process.log())
    assert client.snapshot(localized)[-1].data is False and time.monotonic() - started < 5.0
    status = client.wait_for(lambda: harness.find_status(diagnostics, REFINEMENT, WARN, "localization stale"), 10, "stale WARN")
    assert "no frame answered" in status.message and process.alive()


def test_pose_refinement_node_with_an_odometry_topic(scene, client, start_nodes, one_torch_thread):
    """With ``odom_topic``, odometry comes from nav_msgs/Odometry (no odom -> base_link on /tf): map -> odom follows it."""
    from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Bool
    from tf2_msgs.msg import TFMessage

    from segloc.methods.segloc.packing import probabilities_image_fields
    from segloc_ros.conversions import (
        camera_info_msg_from_camera,
        header_msg,
        pose_and_covariance_from_msg,
        pose_array_msg,
        pose_msg_from_rigid,
        raw_image_msg,
        rigid_from_transform_stamped_msg,
    )

    process = start_nodes(
        MODULES[REFINEMENT],
        {REFINEMENT: harness.node_parameters(scene, odom_topic="/odom", transform_tolerance=0.0, prior_input="pose_priors")},
        "refinement_odom",
    )
    poses = client.collect(PoseWithCovarianceStamped, "/pose", 10)
    localized = client.collect(Bool, "/segloc/localized", 10)
    tf_out = client.collect(TFMessage, "/tf", 20)
    pubs = {
        "probabilities": client.publisher(Image, "/segloc/probabilities", pipeline_qos()),
        "camera_info": client.publisher(CameraInfo, "/segloc/camera_info", pipeline_qos()),
        "priors": client.publisher(PoseArray, "/segloc/pose_priors"),  # any node, default (volatile) QoS
        "odom": client.publisher(Odometry, "/odom", 100),
    }
    client.publisher(TFMessage, "/tf_static", tf_static_qos()).publish(static_camera_tf(scene, scene.frames[0].stamp_ns))
    wait_state(client, process, REFINEMENT, "active")
    for publisher in pubs.values():
        client.wait_subscribers(publisher)

    for frame in scene.frames[:3]:
        odometry = Odometry(header=header_msg(frame.stamp_ns, "odom"), child_frame_id="base_link")
        odometry.pose.pose = pose_msg_from_rigid(frame.odom_from_base)
        pubs["odom"].publish(odometry)
        info = camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME)
        pubs["camera_info"].publish(info)
        pubs["probabilities"].publish(raw_image_msg(info.header, probabilities_image_fields(frame.probabilities)))
        pubs["priors"].publish(pose_array_msg([turn(frame.cam_from_world, 3.0, (0.1, -0.1, 0.0)).inverse()], frame.stamp_ns, "map"))
        count = len(client.snapshot(localized))
        client.wait_for(lambda count=count: len(localized) > count, 60, f"segloc/localized for {frame.name}" + process.log())
        got = next((m for m in client.snapshot(poses) if stamp_ns(m.header) == frame.stamp_ns), None)
        if got is None:
            continue  # not confident on this frame: nothing to compare
        world_from_base, _ = pose_and_covariance_from_msg(got)
        client.wait_for(
            lambda frame=frame: [t for m in client.snapshot(tf_out) for t in m.transforms if stamp_ns(t.header) == frame.stamp_ns],
            10,
            "map -> odom" + process.log(),
        )
        (transform,) = [t for m in client.snapshot(tf_out) for t in m.transforms if stamp_ns(t.header) == frame.stamp_ns]
        assert (transform.header.frame_id, transform.child_frame_id) == ("map", "odom")
        map_from_odom = rigid_from_transform_stamped_msg(transform)
        assert np.allclose((map_from_odom * frame.odom_from_base).matrix(), world_from_base.matrix(), atol=1e-6)
        return
    raise AssertionError("no frame was localized with odometry from the topic" + process.log())


def test_segmentation_node(scene, client, start_nodes, one_torch_thread):
    """Outputs with the image stamp, bad inputs reported, map swap and reload while running."""
    import array

    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    from segloc.geometry.camera import Camera
    from segloc.localize.ingest import CameraIngest
    from segloc.methods.segloc.localizer import SegLocLocalizer
    from segloc.methods.segloc.packing import descriptor_from_image, packed_probabilities_from_image, unpack_probabilities
    from segloc_ros.conversions import camera_from_camera_info, camera_info_msg_from_camera

    process = start_nodes(MODULES[SEGMENTATION], {SEGMENTATION: harness.node_parameters(scene, max_edge=128)}, "segmentation")
    outputs = {
        "labels": client.collect(Image, "/segloc/labels"),
        "descriptor": client.collect(Image, "/segloc/descriptor"),
        "probabilities": client.collect(Image, "/segloc/probabilities"),
        "camera_info": client.collect(CameraInfo, "/segloc/camera_info"),
    }
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    image_pub = client.publisher(Image, "/image")
    info_pub = client.publisher(CameraInfo, "/camera_info")
    wait_state(client, process, SEGMENTATION, "active")
    client.wait_subscribers(image_pub)
    client.wait_subscribers(info_pub)

    # A slightly distorted camera (the node undistorts into the pinhole camera and halves the size).
    fx, fy, cx, cy = scene.camera.params
    distorted = Camera("OPENCV", scene.camera.width, scene.camera.height, (fx, fy, cx, cy, -0.05, 0.01, 0.0, 0.0))
    frame = scene.frames[0]

    # 1. No camera_info yet: the image is dropped with a WARN.
    image_pub.publish(rgb_image(frame))
    client.wait_for(lambda: harness.find_status(diagnostics, SEGMENTATION, WARN, "no camera_info received yet"), 10, "WARN")

    def segment(frame_stamp: int) -> dict:
        """Publish camera_info and the image at ``frame_stamp`` until all four outputs arrive with that stamp."""
        image = rgb_image(frame)
        image.header.stamp = camera_info_msg_from_camera(distorted, frame_stamp, CAMERA_FRAME).header.stamp
        deadline = time.monotonic() + 60
        while True:
            info_pub.publish(camera_info_msg_from_camera(distorted, frame_stamp, CAMERA_FRAME))
            time.sleep(0.2)
            image_pub.publish(image)
            try:
                return client.wait_for(
                    lambda: (
                        {key: next(m for m in messages if stamp_ns(m.header) == frame_stamp) for key, messages in outputs.items()}
                        if all(any(stamp_ns(m.header) == frame_stamp for m in messages) for messages in outputs.values())
                        else None
                    ),
                    3,
                    "outputs",
                )
            except AssertionError:
                if time.monotonic() > deadline:
                    raise AssertionError("no segmentation outputs" + process.log()) from None

    # 2. The outputs, stamped and framed like the image.
    got = segment(frame.stamp_ns)
    assert all(m.header.frame_id == CAMERA_FRAME for m in got.values())
    camera = camera_from_camera_info(got["camera_info"])
    assert camera.model == "PINHOLE" and (camera.width, camera.height) == (128, 96)
    assert not any(got["camera_info"].d) and np.allclose(camera.params, [fx / 2, fy / 2, cx / 2, cy / 2])
    labels_msg, probabilities_msg = got["labels"], got["probabilities"]
    assert labels_msg.encoding == "mono16" and (labels_msg.width, labels_msg.height) == (64, 48)  # map input 256 px, stride 4
    labels = np.frombuffer(bytes(labels_msg.data), "<u2").reshape(48, 64)
    assert labels.max() < scene.num_classes
    assert probabilities_msg.encoding == f"16UC{scene.num_classes}" and (probabilities_msg.width, probabilities_msg.height) == (64, 90)
    levels = unpack_probabilities(packed_probabilities_from_image(probabilities_msg))
    assert [tuple(level.shape) for level in levels] == [(scene.num_classes, 6 * 2**i, 8 * 2**i) for i in range(4)]
    assert all(torch.allclose(level.sum(0), torch.ones(1), atol=1e-2) for level in levels)
    descriptor = descriptor_from_image(got["descriptor"])
    assert got["descriptor"].encoding == "32FC1" and descriptor.shape == (5 * scene.num_classes,)
    # The same as the library on the same image.
    localizer = SegLocLocalizer.from_map(scene.map_a)
    image, _ = CameraIngest(128)(frame.image, distorted)
    reference = localizer.segment(image)
    assert all(torch.allclose(a, b, atol=2e-3) for a, b in zip(levels, reference.probabilities))
    assert np.allclose(descriptor, reference.descriptor, atol=1e-5)
    assert np.mean(labels == reference.probabilities[-1].argmax(0).numpy()) > 0.98
    # A downstream node discovered after the frame was published (DDS discovery on a busy machine) still gets it.
    late = client.collect(Image, "/segloc/descriptor", pipeline_qos())
    client.wait_for(lambda: any(stamp_ns(m.header) == frame.stamp_ns for m in late), 10, "the frame on a late subscription")

    # 3. Unsupported encodings: a diagnostic ERROR naming the encoding, the frame skipped.
    for encoding, channels, size in (("32FC1", 1, 4), ("bgra16", 4, 2)):
        bad = Image(height=8, width=8, encoding=encoding, step=8 * channels * size, data=array.array("B", bytes(8 * 8 * channels * size)))
        bad.header = rgb_image(frame).header
        image_pub.publish(bad)
        status = client.wait_for(lambda e=encoding: harness.find_status(diagnostics, SEGMENTATION, ERROR, f"'{e}'"), 10, encoding)
        assert "not supported" in status.message

    # 4. A map that does not load is rejected, the old one stays in service.
    results = client.set_parameters(SEGMENTATION, {"map_path": "/nonexistent/segloc_map"})
    assert not results[0].successful and "/nonexistent/segloc_map" in results[0].reason and "still using" in results[0].reason
    client.wait_for(lambda: harness.find_status(diagnostics, SEGMENTATION, ERROR, "map reload failed"), 10, "reload ERROR")
    segment(frame.stamp_ns + 1)
    # Frames still succeed on the old map, but the status stays ERROR until a map loads: an "ok" must not hide it.
    seen = len(client.snapshot(diagnostics))
    client.wait_for(lambda: harness.diagnostic_statuses(client.snapshot(diagnostics)[seen:], SEGMENTATION), 10, "a later status")
    later = harness.diagnostic_statuses(client.snapshot(diagnostics)[seen:], SEGMENTATION)[-1]
    assert harness.status_level(later) == ERROR and "map reload failed" in later.message, later.message

    # 5. A good map swaps in while running; ~/reload_map reloads it.
    results = client.set_parameters(SEGMENTATION, {"map_path": str(scene.map_b)})
    assert results[0].successful, results[0].reason
    client.wait_for(
        lambda: any(
            harness.status_values(s).get("map_path") == str(scene.map_b) for s in harness.diagnostic_statuses(diagnostics, SEGMENTATION)
        ),
        10,
        "the new map in diagnostics",
    )
    segment(frame.stamp_ns + 2)
    response = client.call(Trigger, f"/{SEGMENTATION}/reload_map", Trigger.Request())
    assert response.success and str(scene.map_b) in response.message
    assert client.lifecycle_state(SEGMENTATION) == "active" and process.alive()


# --- lifecycle (retrieval_node) ----------------------------------------------------------------


def test_lifecycle_transitions(scene, client, start_nodes, one_torch_thread):
    """autostart false: configure (a failure, then success), activate, deactivate, cleanup through the lifecycle services."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseArray
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from segloc.methods.segloc.localizer import SegLocLocalizer, SegLocLocalizerConfig
    from segloc.methods.segloc.packing import descriptor_image_fields, retrieval_from_image
    from segloc_ros.conversions import header_msg, raw_image_msg, rigid_from_pose_msg

    process = start_nodes(MODULES[RETRIEVAL], {RETRIEVAL: harness.node_parameters(scene, autostart=False)}, "retrieval")
    priors = client.collect(PoseArray, "/segloc/pose_priors")
    retrievals = client.collect(Image, "/segloc/retrieval")
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    descriptor_pub = client.publisher(Image, "/segloc/descriptor", pipeline_qos())
    wait_state(client, process, RETRIEVAL, "unconfigured")

    def descriptor_msg(frame):
        return raw_image_msg(header_msg(frame.stamp_ns, CAMERA_FRAME), descriptor_image_fields(frame.descriptor))

    results = client.set_parameters(RETRIEVAL, {"backend": "tensorflow"})
    assert not results[0].successful and "available backends: torch" in results[0].reason
    # A missing map is accepted while unconfigured, and makes configure fail (the node stays up, unconfigured).
    assert client.set_parameters(RETRIEVAL, {"map_path": "/nonexistent/map"})[0].successful
    assert not client.change_state(RETRIEVAL, "configure")
    assert client.lifecycle_state(RETRIEVAL) == "unconfigured"
    client.wait_for(lambda: harness.find_status(diagnostics, RETRIEVAL, ERROR, "configure failed"), 10, "configure ERROR")
    assert client.set_parameters(RETRIEVAL, {"map_path": str(scene.map_a)})[0].successful

    assert client.change_state(RETRIEVAL, "configure") and client.lifecycle_state(RETRIEVAL) == "inactive"
    descriptor_pub.publish(descriptor_msg(scene.frames[0]))
    time.sleep(1.0)
    assert client.snapshot(priors) == [], "an inactive node must not process"

    assert client.change_state(RETRIEVAL, "activate") and client.lifecycle_state(RETRIEVAL) == "active"
    # An invalid request (activate an active node) is refused with a WARN; the node stays up and active.
    assert not client.change_state(RETRIEVAL, "activate")
    client.wait_for(lambda: harness.find_status(diagnostics, RETRIEVAL, WARN, "lifecycle transition"), 10, "refused WARN")
    assert process.alive() and client.lifecycle_state(RETRIEVAL) == "active"
    client.wait_subscribers(descriptor_pub)
    localizer = SegLocLocalizer.from_map(scene.map_a, SegLocLocalizerConfig(), with_network=False)
    for frame in scene.frames[:2]:
        descriptor_pub.publish(descriptor_msg(frame))
        message = client.wait_for(lambda s=frame.stamp_ns: next((m for m in priors if stamp_ns(m.header) == s), None), 30, "priors")
        assert message.header.frame_id == "map" and len(message.poses) == 5
        expected = localizer.retrieval(frame.descriptor)
        for pose, start in zip(message.poses, expected.starts):
            assert np.allclose(rigid_from_pose_msg(pose).matrix(), start.inverse().matrix(), atol=1e-9)
        # The retrieval itself (what pose_refinement_node starts from): the library's ids and similarities, exactly.
        retrieval_msg = client.wait_for(
            lambda s=frame.stamp_ns: next((m for m in retrievals if stamp_ns(m.header) == s), None), 30, "retrieval"
        )
        image_ids, similarities = retrieval_from_image(retrieval_msg)
        assert image_ids.tolist() == expected.image_ids.tolist() and np.array_equal(similarities, expected.similarities)
        best = rigid_from_pose_msg(message.poses[0])
        assert np.linalg.norm(best.translation - frame.cam_from_world.center) < 1.0  # the query loop is 0.3 m off the mapping loop

    assert client.change_state(RETRIEVAL, "deactivate") and client.lifecycle_state(RETRIEVAL) == "inactive"
    count = len(client.snapshot(priors))
    descriptor_pub.publish(descriptor_msg(scene.frames[2]))
    time.sleep(1.0)
    assert len(client.snapshot(priors)) == count
    assert client.change_state(RETRIEVAL, "cleanup") and client.lifecycle_state(RETRIEVAL) == "unconfigured"
    response = client.call(Trigger, f"/{RETRIEVAL}/reload_map", Trigger.Request())
    assert not response.success and "not configured" in response.message
    assert process.alive()


# --- the composed container --------------------------------------------------------------------


def test_localization_container(scene, client, start_nodes):
    """The three nodes in one process (compressed images): priors, a verdict per frame and diagnostics from each node."""
    import cv2
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, CompressedImage
    from std_msgs.msg import Bool
    from tf2_msgs.msg import TFMessage

    from segloc_ros.conversions import camera_info_msg_from_camera, header_msg

    common = harness.node_parameters(scene)
    parameters = {
        SEGMENTATION: {**common, "image_transport": "compressed"},
        RETRIEVAL: common,
        REFINEMENT: common,
    }
    process = start_nodes("segloc_ros.composition", parameters, "container")
    priors = client.collect(PoseArray, "/segloc/pose_priors")
    localized = client.collect(Bool, "/segloc/localized", 50)
    poses = client.collect(PoseWithCovarianceStamped, "/pose", 50)
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    image_pub = client.publisher(CompressedImage, "/image/compressed")
    info_pub = client.publisher(CameraInfo, "/camera_info")
    tf_pub = client.publisher(TFMessage, "/tf", 100)
    tf_static = client.publisher(TFMessage, "/tf_static", tf_static_qos())
    tf_static.publish(static_camera_tf(scene, scene.frames[0].stamp_ns))
    for node in (SEGMENTATION, RETRIEVAL, REFINEMENT):
        wait_state(client, process, node, "active")
    client.wait_subscribers(image_pub)
    client.wait_subscribers(info_pub)
    client.wait_subscribers(tf_pub)

    stamps = []
    for frame in scene.frames[:3]:
        count = len(client.snapshot(localized))
        tf_pub.publish(odometry_tf(frame))
        info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME))
        time.sleep(0.2)
        ok, png = cv2.imencode(".png", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        assert ok
        image_pub.publish(
            CompressedImage(header=header_msg(frame.stamp_ns, CAMERA_FRAME), format="rgb8; png compressed bgr8", data=png.tobytes())
        )
        client.wait_for(lambda count=count: len(localized) > count, 60, f"a verdict on {frame.name}" + process.log())
        stamps.append(frame.stamp_ns)

    got_priors = {stamp_ns(m.header): m for m in client.snapshot(priors)}
    assert set(stamps) <= set(got_priors) and all(got_priors[s].header.frame_id == "map" and got_priors[s].poses for s in stamps)
    for pose in client.snapshot(poses):  # an untrained network: a pose may or may not come, but only for an image
        assert pose.header.frame_id == "map" and stamp_ns(pose.header) in stamps
    for node in (SEGMENTATION, RETRIEVAL, REFINEMENT):
        client.wait_for(lambda node=node: harness.diagnostic_statuses(diagnostics, node), 10, f"diagnostics of {node}")
    status = client.wait_for(
        lambda: next(
            (s for s in harness.diagnostic_statuses(diagnostics, SEGMENTATION) if int(harness.status_values(s)["frames_processed"]) >= 3),
            None,
        ),
        10,
        lambda: "3 frames processed" + harness.describe_statuses(diagnostics, SEGMENTATION),
    )
    values = harness.status_values(status)
    assert values["image_transport"] == "compressed" and "segment_s" in values and values["frames_failed"] == "0"
    assert process.alive()


# --- localizer_node: any method's whole pipeline in one process ----------------------------------


@pytest.mark.parametrize("method", ["reference", "segloc", "sld", "ninjadesc"])
def test_localizer_node(method, scene, reference_map, client, start_nodes, one_torch_thread, request):
    """Images in, the library pipeline's poses out (same code, same numbers), map -> odom, the lost signal, map swaps."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger
    from tf2_msgs.msg import TFMessage

    from segloc.geometry.transforms import pose_error
    from segloc.localize.pipeline import LocalizationPipeline
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method
    from segloc_ros.conversions import camera_info_msg_from_camera, pose_and_covariance_from_msg, rigid_from_transform_stamped_msg

    map_path = {"reference": reference_map, "segloc": scene.map_a}.get(method) or request.getfixturevalue(f"{method}_map")
    tolerance = 0.25
    parameters = harness.node_parameters(scene, map_path=str(map_path), transform_tolerance=tolerance, lost_frames_error=2)
    process = start_nodes(MODULES[LOCALIZER], {LOCALIZER: parameters}, f"localizer_{method}")
    poses = client.collect(PoseWithCovarianceStamped, "/pose", 50)
    localized = client.collect(Bool, "/segloc/localized", 50)
    tf_out = client.collect(TFMessage, "/tf", 100)
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 200)
    image_pub = client.publisher(Image, "/image")
    info_pub = client.publisher(CameraInfo, "/camera_info")
    tf_pub = client.publisher(TFMessage, "/tf", 100)
    client.publisher(TFMessage, "/tf_static", tf_static_qos()).publish(static_camera_tf(scene, scene.frames[0].stamp_ns))
    wait_state(client, process, LOCALIZER, "active")
    for publisher in (image_pub, info_pub, tf_pub):
        client.wait_subscribers(publisher)

    def send(frame, image_msg=None) -> None:
        """Odometry, camera_info, then the image; waits for the node's verdict on segloc/localized."""
        count = len(client.snapshot(localized))
        tf_pub.publish(odometry_tf(frame))
        info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME))
        time.sleep(0.1)
        image_pub.publish(image_msg if image_msg is not None else rgb_image(frame))
        client.wait_for(lambda: len(localized) > count, 60, f"segloc/localized for {frame.name}" + process.log())

    def pose_at(stamp: int):
        return next((p for p in client.snapshot(poses) if stamp_ns(p.header) == stamp), None)

    def odom_transform_at(stamp: int):
        edges = [t for m in client.snapshot(tf_out) for t in m.transforms if stamp_ns(t.header) == stamp and t.child_frame_id == "odom"]
        return edges[-1] if edges else None

    # 1. The node's poses are the library pipeline's on the same inputs (the evaluator runs this pipeline too).
    registered = get_method(method)
    library = LocalizationPipeline(registered.load_localizer(MapPackage.open(map_path), registered.localize_config(None)))
    published = 0
    for frame in scene.frames[:4]:
        send(frame)
        want = library.process(frame.image, scene.camera, frame.stamp_ns, scene.base_from_cam, odometry=(frame.odom_from_base, None))
        # The pose is published before the verdict, but arrives on its own subscription: wait for it when one is due.
        got = client.wait_for(lambda frame=frame: pose_at(frame.stamp_ns), 10, "pose") if want.published else pose_at(frame.stamp_ns)
        assert (got is not None) == want.published, (frame.name, want.message) + (process.log(),)
        assert client.snapshot(localized)[-1].data is want.published
        if not want.published:
            continue
        published += 1
        world_from_base, covariance = pose_and_covariance_from_msg(got)
        assert got.header.frame_id == "map"
        # Same code and inputs; the reference's RANSAC draws differ between the processes (a borderline inlier).
        t_err, r_err = pose_error(world_from_base.inverse(), want.world_from_base.inverse())
        assert t_err < 1e-3 and r_err < 0.01, (frame.name, t_err, r_err)
        assert np.all(np.linalg.eigvalsh(covariance) > 0)
        transform = client.wait_for(lambda s=frame.stamp_ns + int(tolerance * 1e9): odom_transform_at(s), 10, "map -> odom")
        map_from_odom = rigid_from_transform_stamped_msg(transform)
        assert transform.header.frame_id == "map"
        assert max(pose_error((map_from_odom * frame.odom_from_base).inverse(), world_from_base.inverse())) < 1e-3
        if method == "reference":  # SIFT on rendered textures: near the ground truth
            t_gt, r_gt = pose_error(world_from_base.inverse(), frame.world_from_base.inverse())
            assert t_gt < 0.05 and r_gt < 1.0, (frame.name, t_gt, r_gt)
    if method == "reference":
        assert published >= 3, "the reference should localize most frames"

    # 2. A bad image (an encoding no camera gives): no pose, localized False, an ERROR naming the encoding.
    frame = scene.frames[4]
    bad = rgb_image(frame)
    bad.encoding = "32FC1"
    seen = len(client.snapshot(diagnostics))
    send(frame, bad)
    assert client.snapshot(localized)[-1].data is False and pose_at(frame.stamp_ns) is None
    # The periodic diagnostics repeat the previous frame's status too: look for this frame's own message.
    status = client.wait_for(
        lambda: harness.find_status(client.snapshot(diagnostics), LOCALIZER, ERROR, "'32FC1' is not supported", after=seen),
        10,
        lambda: "lost" + harness.describe_statuses(diagnostics, LOCALIZER),
    )
    assert status.message.startswith("localization lost: "), status.message
    assert process.alive() and client.lifecycle_state(LOCALIZER) == "active"
    # A camera whose extrinsics are not on /tf_static: an ERROR saying which transform is missing.
    count, seen = len(client.snapshot(localized)), len(client.snapshot(diagnostics))
    info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns + 5, "other_camera"))
    time.sleep(0.1)
    image_pub.publish(rgb_image(dataclasses.replace(frame, stamp_ns=frame.stamp_ns + 5), frame_id="other_camera"))
    client.wait_for(lambda: len(localized) > count, 60, "a verdict on the other camera" + process.log())
    assert client.snapshot(localized)[-1].data is False
    client.wait_for(
        lambda: harness.find_status(
            client.snapshot(diagnostics), LOCALIZER, ERROR, "no camera extrinsics base_link -> other_camera", after=seen
        ),
        10,
        lambda: "extrinsics ERROR" + harness.describe_statuses(diagnostics, LOCALIZER),
    )

    # 3. Map swaps: ~/reload_map, and a map of the other method: the node takes the method from the map.
    response = client.call(Trigger, f"/{LOCALIZER}/reload_map", Trigger.Request())
    assert response.success, response.message
    other = scene.map_a if method == "reference" else reference_map
    results = client.set_parameters(LOCALIZER, {"map_path": str(other)})
    assert results[0].successful, results[0].reason
    other_method = "segloc" if method == "reference" else "reference"
    client.wait_for(
        lambda: any(
            harness.status_values(s).get("method") == other_method and harness.status_values(s).get("map_path") == str(other)
            for s in harness.diagnostic_statuses(client.snapshot(diagnostics), LOCALIZER)
        ),
        10,
        lambda: "the other map in diagnostics" + harness.describe_statuses(diagnostics, LOCALIZER),
    )
    frame = dataclasses.replace(scene.frames[5], stamp_ns=scene.frames[5].stamp_ns + 1)
    send(frame)
    assert process.alive() and client.lifecycle_state(LOCALIZER) == "active"
    keys = {"method", "poses_published", "frames_processed", "frames_dropped", "image_transport", "consecutive_failures"}
    status = client.wait_for(
        lambda: next(
            (s for s in harness.diagnostic_statuses(client.snapshot(diagnostics), LOCALIZER) if keys <= set(harness.status_values(s))), None
        ),
        10,
        lambda: "diagnostic values" + harness.describe_statuses(diagnostics, LOCALIZER),
    )
    assert harness.status_values(status)["method"] == method


def test_localizer_node_runs_a_plugin_method(scene, client, ros_env, tmp_path, one_torch_thread):
    """A method defined in a test file (test/segloc/methods/toy_method.py), known to the node only through an entry point."""
    import importlib.util
    import os

    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Bool
    from tf2_msgs.msg import TFMessage

    from segloc.data.dataset import read_dataset
    from segloc.geometry.transforms import pose_error
    from segloc.localize.pipeline import LocalizationPipeline
    from segloc.maps.package import MapPackage
    from segloc_ros.conversions import camera_info_msg_from_camera, pose_and_covariance_from_msg

    path = Path(__file__).resolve().parents[1] / "segloc" / "methods" / "toy_method.py"
    spec = importlib.util.spec_from_file_location("toy_method", path)
    toy = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("toy_method", toy)
    spec.loader.exec_module(toy)
    method = toy.METHOD
    toy_map = method.build_map(read_dataset(scene.root / "dataset"), tmp_path / "toy_map", method.map_config(None), progress=False)

    env = dict(ros_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(toy.write_entry_point(tmp_path / "plugin")), env.get("PYTHONPATH", "")) if p)
    process = NodeProcess(MODULES[LOCALIZER], {LOCALIZER: harness.node_parameters(scene, map_path=str(toy_map))}, env, tmp_path, "toy")
    try:
        poses = client.collect(PoseWithCovarianceStamped, "/pose", 20)
        localized = client.collect(Bool, "/segloc/localized", 20)
        image_pub, info_pub = client.publisher(Image, "/image"), client.publisher(CameraInfo, "/camera_info")
        tf_pub = client.publisher(TFMessage, "/tf", 100)
        client.publisher(TFMessage, "/tf_static", tf_static_qos()).publish(static_camera_tf(scene, scene.frames[0].stamp_ns))
        wait_state(client, process, LOCALIZER, "active")
        for publisher in (image_pub, info_pub, tf_pub):
            client.wait_subscribers(publisher)
        library = LocalizationPipeline(method.load_localizer(MapPackage.open(toy_map), method.localize_config(None)))
        for frame in scene.frames[:2]:
            count = len(client.snapshot(localized))
            tf_pub.publish(odometry_tf(frame))
            info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME))
            image_pub.publish(rgb_image(frame))
            client.wait_for(lambda count=count: len(localized) > count, 60, f"a verdict on {frame.name}" + process.log())
            want = library.process(frame.image, scene.camera, frame.stamp_ns, scene.base_from_cam, odometry=(frame.odom_from_base, None))
            assert want.published, want.message
            got = client.wait_for(lambda frame=frame: next((p for p in poses if stamp_ns(p.header) == frame.stamp_ns), None), 10, "pose")
            assert got is not None, (want.message, process.log())
            assert max(pose_error(pose_and_covariance_from_msg(got)[0].inverse(), want.world_from_base.inverse())) < 1e-6
        assert process.alive()
    finally:
        code = process.stop()
    assert code == 0, process.log()


def test_localizer_node_takes_its_prior_from_sfrs(scene, sfrs_map, client, start_nodes, tmp_path, one_torch_thread):
    """localize.retrieval: sfrs in the node's config file: the prior of each frame comes from the map's sfrs layer, as offline."""
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Bool
    from tf2_msgs.msg import TFMessage

    from segloc.config import config_section
    from segloc.geometry.transforms import pose_error
    from segloc.localize.pipeline import LocalizationPipeline
    from segloc.localize.retrieval import load_localizer
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method
    from segloc_ros.conversions import camera_info_msg_from_camera, pose_and_covariance_from_msg

    map_path = sfrs_map
    config = tmp_path / "sfrs.yaml"
    config.write_text("localize:\n  retrieval: sfrs\n  prior_radius: 1.0\n")

    method = get_method("reference")
    localizer = load_localizer(method, MapPackage.open(map_path), config_section(str(config), "localize"))
    library = LocalizationPipeline(localizer, prior_use=method.prior_use, tracks=method.tracks)
    parameters = harness.node_parameters(scene, map_path=str(map_path), config_path=str(config))
    process = start_nodes(MODULES[LOCALIZER], {LOCALIZER: parameters}, "localizer_sfrs")
    poses = client.collect(PoseWithCovarianceStamped, "/pose", 20)
    localized = client.collect(Bool, "/segloc/localized", 20)
    image_pub, info_pub = client.publisher(Image, "/image"), client.publisher(CameraInfo, "/camera_info")
    tf_pub = client.publisher(TFMessage, "/tf", 100)
    client.publisher(TFMessage, "/tf_static", tf_static_qos()).publish(static_camera_tf(scene, scene.frames[0].stamp_ns))
    wait_state(client, process, LOCALIZER, "active")
    for publisher in (image_pub, info_pub, tf_pub):
        client.wait_subscribers(publisher)
    for frame in scene.frames[:2]:
        count = len(client.snapshot(localized))
        tf_pub.publish(odometry_tf(frame))
        info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME))
        time.sleep(0.1)
        image_pub.publish(rgb_image(frame))
        client.wait_for(lambda count=count: len(localized) > count, 60, f"a verdict on {frame.name}" + process.log())
        want = library.process(frame.image, scene.camera, frame.stamp_ns, scene.base_from_cam, odometry=(frame.odom_from_base, None))
        assert want.published, want.message
        assert "sfrs_retrieve" in want.result.timings and want.result.info["sfrs_retrieved"]
        got = client.wait_for(lambda frame=frame: next((p for p in poses if stamp_ns(p.header) == frame.stamp_ns), None), 10, "pose")
        assert max(pose_error(pose_and_covariance_from_msg(got)[0].inverse(), want.world_from_base.inverse())) < 1e-6
    assert process.alive()


def test_place_recognition_node_serves_sfrs_priors_and_retrieval(scene, sfrs_map, client, start_nodes, one_torch_thread):
    """Images in; segloc/pose_priors and segloc/retrieval out, those of the library's sfrs retriever on the same image."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseArray
    from sensor_msgs.msg import CameraInfo, Image

    from segloc.geometry.transforms import pose_error
    from segloc.maps.package import MapPackage
    from segloc.maps.sfrs import SfrsRetriever
    from segloc.methods.segloc.packing import retrieval_from_image
    from segloc_ros.conversions import camera_info_msg_from_camera, rigid_from_pose_msg

    parameters = harness.node_parameters(scene, map_path=str(sfrs_map), num_results=4, num_priors=3)
    process = start_nodes(MODULES[PLACE_RECOGNITION], {PLACE_RECOGNITION: parameters}, "place_recognition")
    priors = client.collect(PoseArray, "/segloc/pose_priors")
    retrievals = client.collect(Image, "/segloc/retrieval")
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    image_pub, info_pub = client.publisher(Image, "/image"), client.publisher(CameraInfo, "/camera_info")
    wait_state(client, process, PLACE_RECOGNITION, "active")
    client.wait_subscribers(image_pub)
    retriever = SfrsRetriever.from_map(MapPackage.open(sfrs_map))
    for frame in scene.frames[:2]:
        info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME))
        time.sleep(0.1)
        image_pub.publish(rgb_image(frame))
        got = client.wait_for(
            lambda frame=frame: next((m for m in client.snapshot(priors) if stamp_ns(m.header) == frame.stamp_ns), None),
            30,
            lambda frame=frame: f"pose priors for {frame.name}" + process.log(),
        )
        want = retriever.pose_priors(frame.image, 4, "weighted")
        assert got.header.frame_id == "map" and len(got.poses) == 3
        for pose_msg, cam_from_world in zip(got.poses, want.poses):
            assert max(pose_error(rigid_from_pose_msg(pose_msg), cam_from_world.inverse())) < 1e-5
        retrieval = next(m for m in client.snapshot(retrievals) if stamp_ns(m.header) == frame.stamp_ns)
        ids, similarities = retrieval_from_image(retrieval)
        assert list(ids) == list(want.image_ids) and np.allclose(similarities, want.similarities, atol=1e-5)
    status = client.wait_for(
        lambda: next(
            (
                s
                for s in harness.diagnostic_statuses(client.snapshot(diagnostics), PLACE_RECOGNITION)
                if harness.status_values(s).get("best_similarity", "none") != "none"
            ),
            None,
        ),
        10,
        "a diagnostic status with best_similarity",
    )
    assert float(harness.status_values(status)["best_similarity"]) > 0 and process.alive()


# --- inference backends (segmentation_node) -------------------------------------------------------


@pytest.mark.slow  # exports the scene's network to ONNX (tens of seconds on a busy machine)
@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
    reason="backend onnxruntime needs onnxruntime and onnxscript (ONNX export)",
)
def test_segmentation_node_backend_parameter(scene, client, start_nodes, tmp_path, one_torch_thread):
    """backend onnxruntime runs the network through ONNX Runtime (same outputs as the library's torch);
    backend tensorrt where TensorRT cannot run falls back to ONNX Runtime with an ERROR diagnostic, not a crash."""
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    from segloc.localize.ingest import CameraIngest
    from segloc.maps.package import MapPackage
    from segloc.methods.segloc.layer import read_segloc_model
    from segloc.methods.segloc.localizer import SegLocLocalizer
    from segloc.methods.segloc.packing import packed_probabilities_from_image, unpack_probabilities
    from segloc.models.export import network_onnx
    from segloc_ros.conversions import camera_info_msg_from_camera

    # The export, done offline as `segloc export` would: the node's configure then only loads it
    # (an export at configure takes tens of seconds on a busy machine, with the node unresponsive).
    network_onnx(read_segloc_model(MapPackage.open(scene.map_a)), tmp_path / "cache", (128, 96))
    config = tmp_path / "segloc.yaml"
    config.write_text(f"localize:\n  runtime:\n    cache_dir: {tmp_path / 'cache'}\n")
    parameters = harness.node_parameters(scene, max_edge=128, backend="onnxruntime", config_path=str(config))
    process = start_nodes(MODULES[SEGMENTATION], {SEGMENTATION: parameters}, "segmentation")
    probabilities = client.collect(Image, "/segloc/probabilities")
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    image_pub = client.publisher(Image, "/image")
    info_pub = client.publisher(CameraInfo, "/camera_info")
    wait_state(client, process, SEGMENTATION, "active")
    client.wait_subscribers(image_pub)
    status = client.wait_for(
        lambda: next(
            (s for s in harness.diagnostic_statuses(diagnostics, SEGMENTATION) if harness.status_values(s).get("inference_backend")), None
        ),
        20,
        "a status with the inference backend",
    )
    assert harness.status_values(status)["inference_backend"] == "onnxruntime" and harness.status_level(status) == OK

    frame = scene.frames[0]
    got = None
    deadline = time.monotonic() + 60
    while got is None and time.monotonic() < deadline:
        info_pub.publish(camera_info_msg_from_camera(scene.camera, frame.stamp_ns, CAMERA_FRAME))
        time.sleep(0.2)
        image_pub.publish(rgb_image(frame))
        time.sleep(0.5)
        got = next((m for m in client.snapshot(probabilities) if stamp_ns(m.header) == frame.stamp_ns), None)
    assert got is not None, "no probabilities from the onnxruntime backend" + process.log()
    levels = unpack_probabilities(packed_probabilities_from_image(got))
    image, _ = CameraIngest(128)(frame.image, scene.camera)
    reference = SegLocLocalizer.from_map(scene.map_a).segment(image)  # torch
    assert all(torch.allclose(a, b, atol=2e-3) for a, b in zip(levels, reference.probabilities))

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        return  # the fallback below needs a machine where TensorRT cannot run
    seen = len(client.snapshot(diagnostics))
    results = client.set_parameters(SEGMENTATION, {"backend": "tensorrt"})
    assert results[0].successful, results[0].reason
    response = client.call(Trigger, f"/{SEGMENTATION}/reload_map", Trigger.Request())
    assert response.success, response.message
    status = client.wait_for(lambda: harness.find_status(diagnostics, SEGMENTATION, ERROR, "TensorRT unavailable", seen), 20, "ERROR")
    values = harness.status_values(status)
    assert values["inference_backend"] == "onnxruntime" and values["backend"] == "tensorrt"
    assert "running on onnxruntime instead" in status.message
    assert client.lifecycle_state(SEGMENTATION) == "active" and process.alive()
