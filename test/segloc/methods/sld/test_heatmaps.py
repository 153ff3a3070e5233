"""Gaussian target heatmaps and the sub-pixel peak: a landmark comes back to well under half an output cell."""

import numpy as np
import torch

from segloc.methods.sld.heatmaps import gaussian_targets, heatmap_peaks


def test_target_peak_recovers_the_landmark_to_subpixel():
    rng = np.random.default_rng(0)
    stride, size = 8, (30, 40)
    points = torch.from_numpy(rng.uniform([16, 16], [304, 224], (1, 50, 2))).float()
    valid = torch.ones(1, 50, dtype=torch.bool)
    for sigma in (1.0, 1.5):
        targets = gaussian_targets(points, valid, size, stride, sigma)
        assert targets.shape == (1, 50, 30, 40)
        assert float(targets.max()) <= 1.0 and float(targets.amax(dim=(2, 3)).min()) > 0.6
        peaks = heatmap_peaks(targets[0], stride, window=2)
        error_cells = np.linalg.norm(peaks.points - points[0].numpy(), axis=1) / stride
        assert error_cells.max() < 0.5, error_cells.max()
        assert np.median(error_cells) < 0.25


def test_invisible_landmarks_have_empty_targets_and_noise_keeps_the_peak():
    points = torch.tensor([[[100.3, 60.7], [50.0, 50.0]]])
    targets = gaussian_targets(points, torch.tensor([[True, False]]), (30, 40), 8, 1.0)
    assert float(targets[0, 1].abs().max()) == 0.0
    noisy = targets[0, :1] + 0.05 * torch.randn(1, 30, 40, generator=torch.Generator().manual_seed(0))
    peaks = heatmap_peaks(noisy, 8)
    assert np.linalg.norm(peaks.points[0] - [100.3, 60.7]) < 0.5 * 8
    assert 0.8 < peaks.values[0] < 1.2


def test_peak_at_the_border_stays_inside():
    heatmap = torch.zeros(1, 10, 10)
    heatmap[0, 0, 9] = 1.0
    peaks = heatmap_peaks(heatmap, 8)
    np.testing.assert_allclose(peaks.points[0], [9.5 * 8, 0.5 * 8])
