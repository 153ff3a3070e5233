"""Landmark heatmaps: Gaussian targets for training and sub-pixel peaks for localization.

Pixel conventions: image points use COLMAP's (the top-left pixel's centre at (0.5, 0.5)); the
heatmap cell ``(i, j)`` (row, column) of a network of output stride ``s`` covers the image pixels
``[s j, s (j + 1)) x [s i, s (i + 1))``, so its centre is at ``(s (j + 0.5), s (i + 0.5))``. A
point ``p`` therefore sits at the fractional cell ``p / s - 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def gaussian_targets(points: Tensor, valid: Tensor, size: tuple[int, int], stride: int, sigma: float) -> Tensor:
    """Target heatmaps: a Gaussian of peak 1 at each valid landmark's projection, 0 elsewhere.

    Args:
        points: (B, L, 2) image points (COLMAP convention) of the landmarks.
        valid: (B, L) bool, the landmark is visible (others get an all-zero heatmap).
        size: (h, w) of the heatmaps.
        stride: the network's output stride.
        sigma: the Gaussian's standard deviation in heatmap cells.

    Returns:
        (B, L, h, w) float32.
    """
    h, w = size
    centers = points.float() / stride - 0.5  # fractional cell coordinates (x, y)
    rows = torch.arange(h, dtype=torch.float32, device=points.device)
    columns = torch.arange(w, dtype=torch.float32, device=points.device)
    gy = torch.exp(-((rows[None, None, :] - centers[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, L, h)
    gx = torch.exp(-((columns[None, None, :] - centers[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, L, w)
    targets = gy[..., :, None] * gx[..., None, :]
    return targets * valid[..., None, None].float()


@dataclass
class Peaks:
    """The peak of each landmark's heatmap.

    Attributes:
        points: (L, 2) float64 image points (COLMAP convention) of the refined peaks.
        values: (L,) float64 heatmap value at the peak (the detection score v).
    """

    points: np.ndarray
    values: np.ndarray


def heatmap_peaks(heatmaps: Tensor | np.ndarray, stride: int, window: int = 2) -> Peaks:
    """Sub-pixel peak of each heatmap: the maximum, refined by the weighted mean of the positive values around it.

    Args:
        heatmaps: (L, h, w) heatmaps of one image.
        stride: the network's output stride (heatmap cells to image pixels).
        window: half-size of the refinement window, cells (a (2 window + 1)^2 window).

    Returns:
        the peaks in image pixels and their values.
    """
    maps = torch.as_tensor(heatmaps).float()
    num, h, w = maps.shape
    values, flat = maps.reshape(num, -1).max(dim=1)
    row, column = flat // w, flat % w
    offsets = torch.arange(-window, window + 1)
    rows = (row[:, None] + offsets[None]).clamp(0, h - 1)  # (L, k)
    columns = (column[:, None] + offsets[None]).clamp(0, w - 1)
    patch = maps[torch.arange(num)[:, None, None], rows[:, :, None], columns[:, None, :]]  # (L, k, k)
    inside_rows = (row[:, None] + offsets[None] >= 0) & (row[:, None] + offsets[None] < h)
    inside_columns = (column[:, None] + offsets[None] >= 0) & (column[:, None] + offsets[None] < w)
    weights = patch.clamp(min=0) * (inside_rows[:, :, None] & inside_columns[:, None, :]).float()
    total = weights.sum(dim=(1, 2)).clamp(min=1e-12)
    y = (weights * rows[:, :, None].float()).sum(dim=(1, 2)) / total
    x = (weights * columns[:, None, :].float()).sum(dim=(1, 2)) / total
    flat_peak = weights.sum(dim=(1, 2)) <= 1e-12
    y = torch.where(flat_peak, row.float(), y)
    x = torch.where(flat_peak, column.float(), x)
    points = torch.stack([(x + 0.5) * stride, (y + 0.5) * stride], dim=1)
    return Peaks(points.double().numpy(), values.double().numpy())
