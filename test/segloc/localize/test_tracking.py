"""Tracking in the pipeline: when it is armed, what it predicts, when it falls back and turns off (a fake tracker)."""

import numpy as np
import pytest

from segloc.config import config_from_dict
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3, axis_angle_to_matrix
from segloc.localize.base import LocalizationResult
from segloc.localize.pipeline import LocalizationPipeline
from segloc.localize.tracking import Tracker, TrackingConfig, TrackingState, tracking_mode

CAMERA = Camera("PINHOLE", 64, 48, (50.0, 50.0, 32.0, 24.0))
IMAGE = np.zeros((48, 64, 3), np.uint8)
BASE_FROM_CAM = Rigid3.from_rotation(axis_angle_to_matrix(np.array([-np.pi / 2, 0.0, -np.pi / 2])), np.array([0.2, 0.0, 0.5]))


def planar(x: float, y: float, yaw: float) -> Rigid3:
    return Rigid3.from_rotation(axis_angle_to_matrix(np.array([0.0, 0.0, yaw])), np.array([x, y, 0.0]))


def cam_from_world(world_from_base: Rigid3) -> Rigid3:
    return (world_from_base * BASE_FROM_CAM).inverse()


class FakeTracker:
    """Localizes to the true pose it is told; tracking succeeds only when the prediction is within 0.3 m of it."""

    method = "fake"

    def __init__(self):
        self.truth: Rigid3 | None = None
        self.calls: list[tuple[str, Rigid3 | None]] = []
        self.relocalize = True

    def result(self, info):
        covariance = np.diag([1e-4] * 3 + [1e-6] * 3)
        return LocalizationResult(self.truth, covariance, 100, {"refine": 0.0}, info)

    def localize(self, image, camera, prior=None):
        self.calls.append(("localize", prior))
        if not self.relocalize:
            return LocalizationResult(None, info={"failure_reason": "refinement failed: high_residual"})
        return self.result({})

    def track(self, image, camera, predicted):
        self.calls.append(("track", predicted))
        if np.linalg.norm(predicted.inverse().translation - self.truth.inverse().translation) < 0.3:
            return self.result({"tracking": {"mode": "tracked", "failure": None}})
        result = self.localize(image, camera)
        result.info["tracking"] = {"mode": "relocalized", "failure": "diverged"}
        return result


class NoTracking:
    method = "plain"

    def __init__(self, tracker: FakeTracker):
        self.tracker = tracker

    def localize(self, image, camera, prior=None):
        return self.tracker.localize(image, camera, prior)


def run(pipeline, localizer, world_from_base, odom_from_base, stamp):
    localizer.truth = cam_from_world(world_from_base)
    return pipeline.process(IMAGE, CAMERA, stamp, BASE_FROM_CAM, odometry=(odom_from_base, None))


def test_tracking_config_ranges_and_unknown_keys():
    for values in ({"max_failures": 0}, {"max_position_std": 0.0}, {"max_yaw_std_deg": -1.0}):
        with pytest.raises(SeglocError):
            TrackingConfig(**values)
    with pytest.raises(SeglocError):
        config_from_dict(TrackingConfig, {"max_jump": 1.0}, "tracking")
    assert config_from_dict(TrackingConfig, {"enabled": False}, "tracking").enabled is False


def test_a_confident_pose_arms_tracking_and_the_prediction_follows_odometry():
    localizer = FakeTracker()
    pipeline = LocalizationPipeline(localizer, tracks=True)
    map_from_odom = planar(5.0, -2.0, 0.4)  # odometry drifted from the map
    poses = [planar(0.1 * i, 0.02 * i, 0.01 * i) for i in range(4)]
    decisions = [run(pipeline, localizer, map_from_odom * pose, pose, i) for i, pose in enumerate(poses)]
    assert [d.tracking for d in decisions] == ["localized", "tracked", "tracked", "tracked"]
    assert all(d.published for d in decisions)
    kinds, predictions = zip(*localizer.calls)
    assert kinds == ("localize", "track", "track", "track")
    for predicted, pose in zip(predictions[1:], poses[1:]):
        assert np.allclose(predicted.matrix(), cam_from_world(map_from_odom * pose).matrix(), atol=1e-9)
    assert pipeline.tracking.describe()["frames_tracked"] == 3


def test_a_wrong_prediction_relocalizes_in_the_same_frame():
    localizer = FakeTracker()
    pipeline = LocalizationPipeline(localizer, tracks=True)
    run(pipeline, localizer, planar(0, 0, 0), planar(0, 0, 0), 0)
    kidnapped = run(pipeline, localizer, planar(3.0, 1.0, 0.5), planar(0.1, 0, 0), 1)  # odometry says 0.1 m, the robot moved 3 m
    assert kidnapped.published and kidnapped.tracking == "relocalized"
    assert [kind for kind, _ in localizer.calls] == ["localize", "track", "localize"]
    assert np.allclose(kidnapped.result.cam_from_world.matrix(), cam_from_world(planar(3.0, 1.0, 0.5)).matrix())
    assert pipeline.tracking.armed  # the relocalization was published: track again from it


def test_consecutive_failures_turn_tracking_off_until_a_relocalization_succeeds():
    localizer = FakeTracker()
    pipeline = LocalizationPipeline(localizer, tracks=True, tracking_config=TrackingConfig(max_failures=2))
    run(pipeline, localizer, planar(0, 0, 0), planar(0, 0, 0), 0)
    localizer.relocalize = False
    for stamp in (1, 2):
        decision = run(pipeline, localizer, planar(2.0 * stamp, 0, 0), planar(0, 0, 0), stamp)
        assert not decision.published
    assert not pipeline.tracking.armed
    localizer.calls.clear()
    run(pipeline, localizer, planar(4.0, 0, 0), planar(0, 0, 0), 3)
    assert [kind for kind, _ in localizer.calls] == ["localize"]  # off: no tracking attempt
    localizer.relocalize = True
    assert run(pipeline, localizer, planar(4.0, 0, 0), planar(0, 0, 0), 4).published
    assert pipeline.tracking.armed


def test_no_tracking_without_odometry_when_disabled_or_for_a_method_that_cannot():
    localizer = FakeTracker()
    pipeline = LocalizationPipeline(localizer, tracks=True)
    run(pipeline, localizer, planar(0, 0, 0), planar(0, 0, 0), 0)
    localizer.calls.clear()
    pipeline.process(IMAGE, CAMERA, 1, BASE_FROM_CAM, odometry=(None, "no odom -> base_link"))
    assert [kind for kind, _ in localizer.calls] == ["localize"]

    disabled = LocalizationPipeline(localizer, tracks=True, tracking_config=TrackingConfig(enabled=False))
    plain = LocalizationPipeline(NoTracking(localizer), tracks=False)
    for other in (disabled, plain):
        localizer.calls.clear()
        for stamp in range(3):
            assert run(other, localizer, planar(0.1 * stamp, 0, 0), planar(0.1 * stamp, 0, 0), stamp).tracking == "localized"
        assert [kind for kind, _ in localizer.calls] == ["localize"] * 3
    assert not isinstance(NoTracking(localizer), Tracker)
    with pytest.raises(SeglocError, match="track"):
        LocalizationPipeline(NoTracking(localizer), tracks=True)


def test_a_pose_less_confident_than_the_tracking_thresholds_does_not_arm():
    state = TrackingState(TrackingConfig(max_position_std=0.05), tracks=True)
    state.update(False, True, (0.1, 1.0), (0.5, 10.0), None)
    assert not state.armed
    state.update(False, True, (0.01, 1.0), (0.5, 10.0), None)
    assert state.armed
    assert tracking_mode(None) == "localized"
