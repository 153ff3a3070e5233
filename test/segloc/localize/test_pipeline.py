"""The localization pipeline: camera ingest -> any localizer -> the publishing decision."""

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3, axis_angle_to_matrix
from segloc.localize.base import LocalizationResult
from segloc.localize.frames import map_from_odom
from segloc.localize.pipeline import LocalizationPipeline, PublishConfig, PublishDecision

CAMERA = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))
CAM_FROM_WORLD = Rigid3.from_rotation(axis_angle_to_matrix(np.array([0.1, -0.2, 0.05])), np.array([0.3, -0.1, 2.0]))
BASE_FROM_CAM = Rigid3.from_rotation(axis_angle_to_matrix(np.array([-np.pi / 2, 0.0, -np.pi / 2])), np.array([0.2, 0.0, 0.5]))
ODOM_FROM_BASE = Rigid3.from_rotation(axis_angle_to_matrix(np.array([0.0, 0.0, 0.3])), np.array([1.0, 2.0, 0.0]))


def success(std_m: float = 0.01, std_rad: float = 0.002) -> LocalizationResult:
    covariance = np.diag([std_m**2] * 3 + [std_rad**2] * 3)
    return LocalizationResult(CAM_FROM_WORLD, covariance, 50, {"pose": 0.01})


class RecordingLocalizer:
    """A localizer that records what it was given and returns a fixed result."""

    method = "recording"

    def __init__(self, result: LocalizationResult, ingest_max_edge: int | None = None):
        self.result, self.ingest_max_edge, self.calls = result, ingest_max_edge, []

    def localize(self, image, camera, prior=None):
        self.calls.append((np.asarray(image).shape, camera, prior))
        return LocalizationResult(
            self.result.cam_from_world, self.result.covariance, self.result.num_inliers, dict(self.result.timings), {}
        )


def test_publish_config_rejects_out_of_range_values():
    for values in ({"max_position_std": 0.0}, {"max_yaw_std_deg": float("nan")}, {"lost_frames_error": 0}):
        with pytest.raises(SeglocError):
            PublishConfig(**values)


def test_a_confident_pose_is_published_with_map_from_odom():
    decision = PublishDecision().decide(7, success(), BASE_FROM_CAM, odom_from_base=ODOM_FROM_BASE)
    assert decision.published and decision.level == "ok" and decision.message == "localized" and decision.stamp_ns == 7
    world_from_base = CAM_FROM_WORLD.inverse() * BASE_FROM_CAM.inverse()
    assert np.allclose(decision.world_from_base.matrix(), world_from_base.matrix())
    assert decision.transform_kind == "map_from_odom"
    assert np.allclose((decision.transform * ODOM_FROM_BASE).matrix(), world_from_base.matrix())
    assert decision.uncertainty[0] > 0.0 and np.all(np.linalg.eigvalsh(decision.covariance) > 0)


def test_without_odometry_map_from_base_and_a_missing_odometry_warns():
    decision = PublishDecision().decide(1, success(), BASE_FROM_CAM, use_odometry=False)
    assert decision.published and decision.transform_kind == "map_from_base"
    assert np.allclose(decision.transform.matrix(), decision.world_from_base.matrix())
    missing = PublishDecision().decide(1, success(), BASE_FROM_CAM, odom_from_base=None, odometry_error="no odom -> base_link")
    assert missing.published and missing.level == "warn" and "no odom -> base_link" in missing.message and missing.transform is None


def test_lost_frames_warn_then_error_and_keep_the_last_map_from_odom():
    decisions = PublishDecision(PublishConfig(lost_frames_error=2))
    first = decisions.decide(1, success(), BASE_FROM_CAM, odom_from_base=ODOM_FROM_BASE)
    failure = LocalizationResult(None, info={"failure_reason": "refinement failed: diverged"})
    lost = decisions.decide(2, failure, BASE_FROM_CAM, odom_from_base=ODOM_FROM_BASE)
    assert not lost.published and lost.level == "warn" and lost.message == "localization lost: refinement failed: diverged"
    assert lost.transform is first.transform  # the TF tree stays connected while odometry carries the robot
    assert decisions.decide(3, failure, BASE_FROM_CAM).level == "error"
    assert decisions.decide(4, success(), BASE_FROM_CAM, odom_from_base=ODOM_FROM_BASE).level == "ok"
    assert decisions.consecutive_failures == 0
    assert decisions.lost(5, "bad image", error=True).level == "error"  # a bad input is an error at once
    assert decisions.lost(6, "x", use_odometry=False).transform is None  # never an old map -> base


def test_unconfident_or_covariance_free_poses_are_not_published():
    decisions = PublishDecision(PublishConfig(max_position_std=0.05))
    loose = decisions.decide(1, success(std_m=0.2), BASE_FROM_CAM, odom_from_base=ODOM_FROM_BASE)
    assert not loose.published and loose.message.startswith("localization lost: pose not confident: position std")
    no_covariance = LocalizationResult(CAM_FROM_WORLD, None, 10)
    assert "no covariance" in decisions.decide(2, no_covariance, BASE_FROM_CAM).message


def test_pipeline_ingests_then_localizes():
    distorted = Camera("OPENCV", 640, 480, (500.0, 500.0, 320.0, 240.0, -0.1, 0.01, 0.0, 0.0))
    localizer = RecordingLocalizer(success(), ingest_max_edge=320)
    pipeline = LocalizationPipeline(localizer)
    result = pipeline.localize(np.zeros((480, 640, 3), np.uint8), distorted)
    shape, camera, prior = localizer.calls[-1]
    assert shape == (240, 320, 3) and camera.model == "PINHOLE" and (camera.width, camera.height) == (320, 240) and prior is None
    assert list(result.timings) == ["ingest", "pose"] and pipeline.method == "recording"
    # max_edge overrides the localizer's size; a prior (cam_from_world) is passed on.
    pipeline = LocalizationPipeline(localizer, max_edge=0)
    pipeline.localize(np.zeros((480, 640, 3), np.uint8), CAMERA, prior=CAM_FROM_WORLD)
    assert localizer.calls[-1][0] == (480, 640, 3) and localizer.calls[-1][2] is CAM_FROM_WORLD


def test_pipeline_process_uses_the_initial_pose_and_turns_bad_inputs_into_lost_frames():
    localizer = RecordingLocalizer(success())
    pipeline = LocalizationPipeline(localizer)
    world_from_base = CAM_FROM_WORLD.inverse() * BASE_FROM_CAM.inverse()
    calls = []

    def odometry():
        calls.append(len(localizer.calls))  # asked after the localizer ran
        return ODOM_FROM_BASE, None

    decision = pipeline.process(
        np.zeros((480, 640, 3), np.uint8), CAMERA, 3, BASE_FROM_CAM, odometry=odometry, prior_world_from_base=world_from_base
    )
    assert decision.published and calls == [1]
    assert np.allclose(localizer.calls[-1][2].matrix(), CAM_FROM_WORLD.matrix())
    assert np.allclose(
        (decision.transform * ODOM_FROM_BASE).matrix(), map_from_odom(world_from_base, ODOM_FROM_BASE).matrix() @ ODOM_FROM_BASE.matrix()
    )
    bad = pipeline.process(np.zeros((10, 10, 3), np.uint8), CAMERA, 4, BASE_FROM_CAM)
    assert not bad.published and bad.level == "error" and "does not match its camera" in bad.message


def test_a_method_that_takes_no_prior_is_not_given_one():
    localizer = RecordingLocalizer(success())
    LocalizationPipeline(localizer, prior_use="none").localize(np.zeros((480, 640, 3), np.uint8), CAMERA, prior=CAM_FROM_WORLD)
    assert localizer.calls[-1][2] is None
