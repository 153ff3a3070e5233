"""The project's networks as ONNX graphs with named inputs and outputs, and their inference sessions.

Every registered network that runs at inference (:data:`GRAPHS`) takes one input, ``image``
(1, 3, H, W) RGB in [0, 1] for the image networks, and has named outputs:

- ``segmentation`` (:class:`SegmentationLogits`): ``logits0`` ... ``logits3``
  (1, K, H / s_l, W / s_l), coarse to fine;
- ``landmarks`` and ``scene_landmarks`` (:class:`LandmarkHeatmaps`, SLD* and a backbone + head): ``heatmaps`` (1, L, ceil(H / 8), ceil(W / 8));
- ``netvlad`` (:class:`NetVladDescriptor`, SFRS retrieval): ``descriptor`` (1, K * D);
- ``ninjanet`` (:class:`NinjaDescriptors`, NinjaDesc): input ``descriptors`` (N, C) base descriptors (RootSIFT or VGG),
  output ``ninjadesc`` (N, C), N dynamic.

A network whose inputs are multiples of 32 (segmentation, NetVLAD) is exported once with H and
W dynamic (multiples of 32 up to :data:`MAX_SIDE`). The EfficientNet-Lite encoders pad like
TensorFlow's ``same``, which the exporter fixes for the example's size modulo 32, so a network
that runs at other sizes (SLD*'s landmarks, at the map's image size) is exported per input size.
An export is cached under ``<cache>/onnx/<name>-<weights SHA-256>[-WxH].onnx``
(:func:`network_onnx`), so a network is exported once per machine, or shipped inside the map
(``segloc export MAP``: layer ``onnx``, :func:`add_onnx_layer`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segloc.errors import SeglocError
from segloc.runtime.onnx import DynamicAxis, export_onnx
from segloc.runtime.session import InferenceSession, RuntimeConfig, create_session

logger = logging.getLogger("segloc")

__all__ = [
    "GRAPHS",
    "MAX_SIDE",
    "NETWORK_INPUTS",
    "ONNX_LAYER",
    "LandmarkHeatmaps",
    "NetVladDescriptor",
    "NetworkGraph",
    "NinjaDescriptors",
    "SegmentationLogits",
    "add_onnx_layer",
    "export_network",
    "network_graph",
    "network_onnx",
    "network_session",
    "read_onnx_layer",
    "segmentation_output_names",
    "weights_sha256",
]

NETWORK_INPUTS: tuple[str, ...] = ("image",)
ONNX_LAYER = "onnx"
"""The map layer of ONNX exports: ``onnx/<model name>.onnx`` and ``onnx/<model name>_export.json`` (weights SHA-256, names, sizes)."""
MAX_SIDE = 2048
"""The largest image side a dynamic export accepts (pixels)."""
SIZE_STEP = 32


class SegmentationLogits(nn.Module):
    """The segmentation network's inference graph: ``image`` (B, 3, H, W) in [0, 1] -> the logits of every level, coarse to fine."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model(image, with_features=False).logits)


def segmentation_output_names(model: nn.Module) -> tuple[str, ...]:
    """``logits0`` (coarsest) ... ``logits{L-1}`` (finest)."""
    return tuple(f"logits{level}" for level in range(len(model.level_strides)))


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a network's class, config and float32 weights: the identity of its exports."""
    digest = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    digest.update(json.dumps(getattr(config, "__dict__", {}), sort_keys=True, default=str).encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


class LandmarkHeatmaps(nn.Module):
    """The SLD* landmark ensemble's inference graph: ``image`` (B, 3, H, W) in [0, 1] -> ``heatmaps`` (B, L, h, w)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image)


class NetVladDescriptor(nn.Module):
    """NetVLAD's inference graph: ``image`` (B, 3, H, W) in [0, 1] -> ``descriptor`` (B, K * D), L2-normalised."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image).descriptor


class NinjaDescriptors(nn.Module):
    """NinjaNet's inference graph: ``descriptors`` (N, C) base descriptors (RootSIFT 128, VGG 120) -> ``ninjadesc`` (N, C), L2-normalised."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, descriptors: Tensor) -> Tensor:
        return self.model(descriptors)


@dataclass(frozen=True)
class NetworkGraph:
    """How a registered network is exported and run by name.

    Attributes:
        graph: wraps the network in its inference graph (the input -> the outputs, in order).
        outputs: the output names of a network.
        dynamic: H and W dynamic multiples of 32 in one export; False: one export per input size.
        vector_dim: for a network over descriptors (input ``descriptors`` (N, C), N dynamic; no
            image size): its C; None for an image network (input ``image``).
    """

    graph: Callable[[nn.Module], nn.Module]
    outputs: Callable[[nn.Module], tuple[str, ...]]
    dynamic: bool = True
    vector_dim: Callable[[nn.Module], int] | None = None

    @property
    def input_name(self) -> str:
        return "descriptors" if self.vector_dim is not None else "image"


#: The inference graph of each registered network that runs at inference (by registry name); a network that lands adds its own.
GRAPHS: dict[str, NetworkGraph] = {
    "segmentation": NetworkGraph(SegmentationLogits, segmentation_output_names),
    "landmarks": NetworkGraph(LandmarkHeatmaps, lambda model: ("heatmaps",), dynamic=False),
    "scene_landmarks": NetworkGraph(LandmarkHeatmaps, lambda model: ("heatmaps",), dynamic=False),
    "netvlad": NetworkGraph(NetVladDescriptor, lambda model: ("descriptor",)),
    "ninjanet": NetworkGraph(NinjaDescriptors, lambda model: ("ninjadesc",), vector_dim=lambda model: int(model.config.dim)),
}

#: Rows of the example input of a descriptor network's export, and of its TensorRT profile (min, opt, max).
VECTOR_ROWS = (1, 4096, 65536)


def network_graph(model: nn.Module) -> NetworkGraph:
    """The :class:`NetworkGraph` of a registered network.

    Raises:
        SeglocError: a network without one.
    """
    from segloc.models.registry import model_name_of

    name = model_name_of(model)
    if name not in GRAPHS:
        raise SeglocError(f"network {name!r} has no inference graph for ONNX export; exportable networks: {', '.join(GRAPHS)}")
    return GRAPHS[name]


def _check_size(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if network_graph(model).vector_dim is not None:  # no image: the size does not apply
        return width, height
    if network_graph(model).dynamic and (width % SIZE_STEP or height % SIZE_STEP):
        raise SeglocError(f"the export of a dynamic-size network needs a size in multiples of {SIZE_STEP}, got {width}x{height}")
    if min(width, height) < 1 or max(width, height) > MAX_SIDE:
        raise SeglocError(f"an export size must lie between 1 and {MAX_SIDE} pixels per side, got {width}x{height}")
    return width, height


def export_network(model: nn.Module, path: str | Path, size: tuple[int, int] = (640, 480)) -> Path:
    """Export a registered network to ``path``, checked against torch on a (1, 3, H, W) input of ``size`` (width, height).

    Args:
        model: a network of :data:`GRAPHS` (put in eval mode, on the CPU).
        size: the example input's (width, height): a real size the map uses (multiples of 32
            for a dynamic network, whose H and W then vary in multiples of 32 up to
            :data:`MAX_SIDE`; a per-size network is exported at exactly this size).

    Raises:
        SeglocError: a network without a graph, a bad size, or an export that differs from torch.
    """
    spec = network_graph(model)
    width, height = _check_size(model, size)
    generator = torch.Generator().manual_seed(0)
    graph = spec.graph(model.cpu().eval())
    if spec.vector_dim is not None:  # unit descriptors, N rows dynamic
        example = torch.nn.functional.normalize(torch.rand(256, spec.vector_dim(model), generator=generator), dim=1)
        axes = {spec.input_name: {0: DynamicAxis("n", 1, 1, VECTOR_ROWS[-1])}}
        return export_onnx(graph, (example,), path, (spec.input_name,), spec.outputs(model), axes)
    image = torch.rand(1, 3, height, width, generator=generator)
    axes = {
        "image": {2: DynamicAxis("h32", SIZE_STEP, 1, MAX_SIDE // SIZE_STEP), 3: DynamicAxis("w32", SIZE_STEP, 1, MAX_SIDE // SIZE_STEP)}
    }
    return export_onnx(graph, (image,), path, NETWORK_INPUTS, spec.outputs(model), axes if spec.dynamic else None)


def network_onnx(model: nn.Module, cache_dir: str | Path, size: tuple[int, int] = (640, 480)) -> Path:
    """The cached ONNX export of ``model`` (exported now when the cache lacks it).

    The file is ``<cache_dir>/onnx/<name>-<weights SHA-256>.onnx``, with ``-WxH`` for a network
    exported per input size.
    """
    from segloc.models.registry import model_name_of

    suffix = "" if network_graph(model).dynamic else f"-{int(size[0])}x{int(size[1])}"
    path = Path(cache_dir).expanduser() / "onnx" / f"{model_name_of(model)}-{weights_sha256(model)[:32]}{suffix}.onnx"
    if not path.is_file():
        export_network(model, path, size)
    return path


def network_session(
    model: nn.Module,
    runtime: RuntimeConfig,
    device: str = "cpu",
    onnx_path: str | Path | None = None,
    max_size: tuple[int, int] = (640, 480),
    graph: NetworkGraph | None = None,
) -> InferenceSession:
    """An :class:`segloc.runtime.session.InferenceSession` of a network (input ``image``, its :class:`NetworkGraph`'s outputs).

    Args:
        model: the network.
        runtime: backend, threads, precision, cache.
        device: torch device (CUDA selects the GPU providers).
        onnx_path: its ONNX file (the map's layer); None: the cached export (:func:`network_onnx`).
        max_size: (width, height) of the largest input expected (a dynamic network: the
            TensorRT profile's optimum, and the larger side squared its maximum), or the one input
            size of a per-size network.
        graph: the network's :class:`NetworkGraph` (a caller that knows which kind of network it
            runs passes its entry of :data:`GRAPHS`, so that the torch backend also runs a
            stand-in module); None: the registered network's.
    """
    spec = graph or network_graph(model)
    onnx: Path | Callable[[], Path] = Path(onnx_path) if onnx_path else (lambda: network_onnx(model, runtime.cache_path, max_size))
    width, height = (int(v) for v in max_size)
    if spec.vector_dim is not None:
        dim = spec.vector_dim(model)
        profiles = {spec.input_name: tuple((rows, dim) for rows in VECTOR_ROWS)}
    elif spec.dynamic:
        side = max(width, height)
        profiles = {"image": ((1, 3, SIZE_STEP, SIZE_STEP), (1, 3, height, width), (1, 3, side, side))}
    else:
        profiles = {"image": ((1, 3, height, width),) * 3}
    return create_session(runtime, spec.graph(model), (spec.input_name,), spec.outputs(model), onnx, device, profiles)


def add_onnx_layer(map_path: str | Path, model: nn.Module, onnx_path: str | Path, size: tuple[int, int] | None = None) -> Path:
    """Store ``onnx_path``, the export of a network the map runs, in the map's ``onnx`` layer (the map is rewritten atomically).

    The layer's JSON records the SHA-256 of the weights it was exported from
    (:func:`weights_sha256`), so a map whose network changes never runs a stale export, and
    for a per-size network the input ``size`` (width, height) it was exported at.
    """
    from segloc.maps.package import MapPackage, MapWriter
    from segloc.models.registry import model_name_of

    spec = network_graph(model)
    if not spec.dynamic and size is None:
        raise SeglocError(f"the export of {model_name_of(model)} is per input size: give the size it was exported at")
    package = MapPackage.open(map_path)
    name = model_name_of(model)
    info = {
        "weights_sha256": weights_sha256(model),
        "inputs": [spec.input_name],
        "outputs": list(spec.outputs(model)),
        "input_size": None if spec.dynamic else [int(v) for v in size],
    }
    with MapWriter(package.path, package.method, package.frame_id, base=package) as writer:
        writer.add_file(ONNX_LAYER, name, ".onnx", Path(onnx_path).read_bytes(), description="ONNX exports of the map's networks")
        writer.add_json(ONNX_LAYER, f"{name}_export", info)
        writer.commit()
    return package.path / ONNX_LAYER / f"{name}.onnx"


def read_onnx_layer(package: Any, model: nn.Module, size: tuple[int, int] | None = None) -> Path | None:
    """The map's ONNX export of ``model`` (layer ``onnx``) for inputs of ``size`` (width, height; a per-size network's).

    None when the map has none, one of other weights (logged), or of another input size.
    """
    from segloc.models.registry import model_name_of

    name = model_name_of(model)
    if not package.has_layer(ONNX_LAYER) or not any(Path(rel).stem == name for rel in package.layers[ONNX_LAYER]["files"]):
        return None
    info = package.read_json(ONNX_LAYER, f"{name}_export") if (package.path / ONNX_LAYER / f"{name}_export.json").is_file() else None
    if not isinstance(info, dict) or info.get("weights_sha256") != weights_sha256(model):
        logger.warning("map %s: its ONNX export of %s is of other weights than its network; exporting it again", package.path, name)
        return None
    exported = info.get("input_size")
    if exported is not None and (size is None or [int(v) for v in size] != list(exported)):
        logger.info("map %s: its ONNX export of %s is for %s inputs, not %s; using the cache", package.path, name, exported, size)
        return None
    return package.path / ONNX_LAYER / f"{name}.onnx"
