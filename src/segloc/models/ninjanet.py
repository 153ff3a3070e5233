"""NinjaNet: a small MLP that re-encodes local descriptors so that they match but do not invert (NinjaDesc, Ng et al. 2022).

``C -> hidden -> C``: one hidden block (linear, batch norm, ReLU, dropout 0.1), a linear layer
back to C, and an L2 normalisation, so that NinjaDesc descriptors compare by inner product like
the base descriptors they come from (RootSIFT or VGG, :data:`BASE_DESCRIPTORS`). Trained by
``segloc train ninjadesc`` (utility: triplet loss and second-order similarity on SfM tracks;
privacy: adversarially against an inversion attacker, :mod:`segloc.models.inversion`). Registered as ``ninjanet`` in :data:`segloc.models.registry.MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.features.base_descriptors import BASE_DESCRIPTOR_DIMS

__all__ = ["BASE_DESCRIPTORS", "NinjaNet", "NinjaNetConfig"]

BASE_DESCRIPTORS = tuple(BASE_DESCRIPTOR_DIMS)
"""Base descriptors NinjaNet re-encodes (:mod:`segloc.features.base_descriptors`, computed at SIFT keypoints):

- ``rootsift``: the reference's SIFT, RootSIFT-normalised, 128-d;
- ``vgg``: OpenCV's learned VGG patch descriptor (opencv-contrib, weights in the wheel), 120-d, L2-normalised.
"""


@dataclass
class NinjaNetConfig:
    """Options of :class:`NinjaNet`.

    Attributes:
        base_descriptor: the descriptor it re-encodes (:data:`BASE_DESCRIPTORS`).
        dim: C, the base (and output) dimension: the base descriptor's (128 rootsift, 120 vgg).
        hidden: width of the hidden block.
        dropout: dropout of the hidden block (training only).
    """

    base_descriptor: str = "rootsift"
    dim: int = option(128, ge=1)
    hidden: int = option(1024, ge=1)
    dropout: float = option(0.1, ge=0, le=1)

    def __post_init__(self) -> None:
        check_options(self)
        if self.base_descriptor not in BASE_DESCRIPTORS:
            raise SeglocError(f"unknown base descriptor {self.base_descriptor!r}; valid values are: {', '.join(BASE_DESCRIPTORS)}")
        if self.dim != BASE_DESCRIPTOR_DIMS[self.base_descriptor]:
            raise SeglocError(
                f"NinjaNet over {self.base_descriptor} needs dim {BASE_DESCRIPTOR_DIMS[self.base_descriptor]} (the base's dimension), got {self.dim}"
            )


class NinjaNet(nn.Module):
    """(N, C) base descriptors -> (N, C) L2-normalised NinjaDesc descriptors."""

    config_class = NinjaNetConfig

    def __init__(self, config: NinjaNetConfig | None = None):
        super().__init__()
        self.config = config or NinjaNetConfig()
        c = self.config
        self.hidden = nn.Sequential(nn.Linear(c.dim, c.hidden), nn.BatchNorm1d(c.hidden), nn.ReLU(inplace=True), nn.Dropout(c.dropout))
        self.out = nn.Linear(c.hidden, c.dim)

    def forward(self, descriptors: Tensor) -> Tensor:
        if descriptors.ndim != 2 or descriptors.shape[1] != self.config.dim:
            raise SeglocError(f"NinjaNet expects descriptors (N, {self.config.dim}), got {tuple(descriptors.shape)}")
        return F.normalize(self.out(self.hidden(descriptors)), dim=1)
