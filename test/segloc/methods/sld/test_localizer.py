"""PnP from detected landmarks: heatmaps rendered at a known pose give that pose back; priors restrict the landmarks."""

import numpy as np
import pytest
import torch
from torch import nn

from segloc.geometry.camera import Camera
from segloc.geometry.pose import PnPConfig
from segloc.geometry.transforms import Rigid3
from segloc.methods.sld.heatmaps import gaussian_targets
from segloc.methods.sld.localizer import SldLocalizer, SldLocalizerConfig

CAMERA = Camera("PINHOLE", 320, 240, (250.0, 250.0, 160.0, 120.0))


class RenderedHeatmaps(nn.Module):
    """A stand-in network: the Gaussian heatmaps of the landmarks at a fixed pose (plus a little noise)."""

    def __init__(self, positions, cam_from_world, noise=0.0):
        super().__init__()
        points, depth, inside = CAMERA.world_to_image(cam_from_world, positions)
        points = torch.from_numpy(np.nan_to_num(points)).float()[None]
        heatmaps = gaussian_targets(points, torch.from_numpy(inside)[None], (30, 40), 8, 1.0)
        heatmaps += noise * torch.rand(heatmaps.shape, generator=torch.Generator().manual_seed(0))
        self.register_buffer("heatmaps", heatmaps)

    def forward(self, image):
        assert image.shape[-2:] == (240, 320) and float(image.max()) <= 1.0
        return self.heatmaps


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    positions = np.column_stack([rng.uniform(-3, 3, 150), rng.uniform(-2, 2, 150), rng.uniform(4, 9, 150)])
    truth = Rigid3.from_rotation(np.eye(3), np.array([0.1, -0.05, 0.2]))
    return positions, truth


def test_pnp_from_detections_recovers_the_pose(scene):
    positions, truth = scene
    localizer = SldLocalizer(RenderedHeatmaps(positions, truth, noise=0.05), positions, max_edge=320, stride=8)
    image = np.zeros((240, 320, 3), np.uint8)
    result = localizer.localize(image, CAMERA)
    assert result.cam_from_world is not None, result.info
    assert np.linalg.norm(result.cam_from_world.center - truth.center) < 0.05
    assert result.num_inliers >= 0.8 * result.info["num_detections"]
    assert result.covariance.shape == (6, 6) and np.all(np.linalg.eigvalsh(result.covariance) > 0)
    assert set(result.timings) == {"detect", "pose"}
    assert result.info["mean_weight"] > 0.5


def test_prosac_sampling_gets_the_detection_confidences(scene, monkeypatch):
    import segloc.methods.sld.localizer as localizer_module

    real = localizer_module.estimate_absolute_pose
    weights_seen = []

    def spy(points2D, points3D, camera, config, weights=None):
        weights_seen.append(weights)
        return real(points2D, points3D, camera, config, weights)

    monkeypatch.setattr(localizer_module, "estimate_absolute_pose", spy)
    positions, truth = scene
    config = SldLocalizerConfig(pnp=PnPConfig(max_error_px=8.0, min_inliers=6, sampling="prosac"))
    localizer = SldLocalizer(RenderedHeatmaps(positions, truth, noise=0.05), positions, 320, 8, config)
    result = localizer.localize(np.zeros((240, 320, 3), np.uint8), CAMERA)
    assert result.cam_from_world is not None, result.info
    assert np.linalg.norm(result.cam_from_world.center - truth.center) < 0.05
    scores = np.array([detection[3] for detection in result.info["detections"]])
    assert len(weights_seen) == 1 and np.allclose(weights_seen[0], scores**2, atol=2e-3)


def test_an_image_at_another_size_is_resized_and_scaled_back(scene):
    positions, truth = scene
    big = CAMERA.scaled(640, 480)
    localizer = SldLocalizer(RenderedHeatmaps(positions, truth), positions, max_edge=320, stride=8)
    result = localizer.localize(np.zeros((480, 640, 3), np.uint8), big)
    assert result.cam_from_world is not None
    assert np.linalg.norm(result.cam_from_world.center - truth.center) < 0.05


def test_failures_and_prior_restriction(scene):
    positions, truth = scene
    model = RenderedHeatmaps(positions, truth)
    strict = SldLocalizer(model, positions, 320, 8, SldLocalizerConfig(detection_threshold=2.0))
    result = strict.localize(np.zeros((240, 320, 3), np.uint8), CAMERA)
    assert result.cam_from_world is None and result.info["failure_reason"].startswith("too few landmarks detected")
    # a prior looking the other way leaves no landmark to detect
    away = Rigid3.from_rotation(np.diag([-1.0, 1.0, -1.0]), np.zeros(3))
    with_prior = SldLocalizer(model, positions, 320, 8, SldLocalizerConfig(use_prior=True))
    assert len(with_prior.landmarks_seen_by(away, CAMERA)) == 0
    assert with_prior.localize(np.zeros((240, 320, 3), np.uint8), CAMERA, prior=away).cam_from_world is None
    assert with_prior.localize(np.zeros((240, 320, 3), np.uint8), CAMERA, prior=truth).cam_from_world is not None
