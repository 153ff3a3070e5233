"""The project's networks as ONNX graphs with named inputs and outputs, and their inference sessions.

The segmentation network (:class:`segloc.models.segmentation.SegmentationNet`) is exported as
:class:`SegmentationLogits`: input ``image`` (1, 3, H, W) RGB in [0, 1], outputs ``logits0`` ...
``logits3`` (1, K, H / s_l, W / s_l), coarse to fine; H and W are dynamic multiples of 32 up to
:data:`MAX_SIDE`. An exported file is cached under ``<cache>/onnx/<weights SHA-256>.onnx``
(:func:`segmentation_onnx`), so a network is exported once per machine, or shipped inside
the map (``segloc export MAP``: layer ``onnx``, :func:`add_onnx_layer`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segloc.errors import SeglocError
from segloc.runtime.onnx import DynamicAxis, export_onnx
from segloc.runtime.session import InferenceSession, RuntimeConfig, create_session

logger = logging.getLogger("segloc")

__all__ = [
    "EXPORTERS",
    "ONNX_LAYER",
    "add_onnx_layer",
    "read_onnx_layer",
    "MAX_SIDE",
    "SEGMENTATION_INPUTS",
    "SegmentationLogits",
    "export_network",
    "export_segmentation_onnx",
    "segmentation_onnx",
    "segmentation_output_names",
    "segmentation_session",
    "weights_sha256",
]

SEGMENTATION_INPUTS: tuple[str, ...] = ("image",)
ONNX_LAYER = "onnx"
"""The map layer of ONNX exports: ``onnx/<model name>.onnx`` and ``onnx/<model name>_export.json`` (weights SHA-256, names)."""
MAX_SIDE = 2048
"""The largest image side the exported segmentation graph accepts (pixels)."""
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


def export_segmentation_onnx(model: nn.Module, path: str | Path, size: tuple[int, int] = (640, 480), dynamic: bool = True) -> Path:
    """Export the segmentation network to ``path``, checked against torch on a (1, 3, H, W) input of ``size`` (width, height).

    Args:
        model: a :class:`segloc.models.segmentation.SegmentationNet` (put in eval mode, on the CPU).
        size: the example input's (width, height), multiples of 32: a real size the map uses.
        dynamic: H and W dynamic (multiples of 32 up to :data:`MAX_SIDE`); False: fixed at ``size``.
    """
    width, height = size
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, height, width, generator=generator)
    axes = {
        "image": {2: DynamicAxis("h32", SIZE_STEP, 1, MAX_SIDE // SIZE_STEP), 3: DynamicAxis("w32", SIZE_STEP, 1, MAX_SIDE // SIZE_STEP)}
    }
    graph = SegmentationLogits(model.cpu().eval())
    return export_onnx(graph, (image,), path, SEGMENTATION_INPUTS, segmentation_output_names(model), axes if dynamic else None)


def segmentation_onnx(model: nn.Module, cache_dir: str | Path, size: tuple[int, int] = (640, 480)) -> Path:
    """The cached ONNX export of ``model`` (exported now when the cache lacks it): ``<cache_dir>/onnx/<weights SHA-256>.onnx``."""
    path = Path(cache_dir).expanduser() / "onnx" / f"segmentation-{weights_sha256(model)[:32]}.onnx"
    if not path.is_file():
        export_segmentation_onnx(model, path, size)
    return path


def segmentation_session(
    model: nn.Module,
    runtime: RuntimeConfig,
    device: str = "cpu",
    onnx_path: str | Path | None = None,
    max_size: tuple[int, int] = (640, 480),
) -> InferenceSession:
    """An :class:`segloc.runtime.session.InferenceSession` of the segmentation network (inputs and outputs as :class:`SegmentationLogits`).

    Args:
        model: the network.
        runtime: backend, threads, precision, cache.
        device: torch device (CUDA selects the GPU providers).
        onnx_path: its ONNX file (the map's layer); None: the cached export (:func:`segmentation_onnx`).
        max_size: (width, height) of the largest input expected: the TensorRT profile's
            optimum and (the larger side squared) maximum.
    """
    onnx: Path | Callable[[], Path] = Path(onnx_path) if onnx_path else (lambda: segmentation_onnx(model, runtime.cache_path, max_size))
    side = max(max_size)
    profiles = {"image": ((1, 3, SIZE_STEP, SIZE_STEP), (1, 3, max_size[1], max_size[0]), (1, 3, side, side))}
    return create_session(runtime, SegmentationLogits(model), SEGMENTATION_INPUTS, segmentation_output_names(model), onnx, device, profiles)


def add_onnx_layer(map_path: str | Path, model: nn.Module, onnx_path: str | Path) -> Path:
    """Store ``onnx_path``, the export of the network a map embeds, in the map's ``onnx`` layer (the map is rewritten atomically).

    The layer's JSON records the SHA-256 of the weights it was exported from
    (:func:`weights_sha256`), so a map whose network changes never runs a stale export.
    """
    from segloc.maps.package import MapPackage, MapWriter
    from segloc.models.registry import model_name_of

    package = MapPackage.open(map_path)
    name = model_name_of(model)
    info = {
        "weights_sha256": weights_sha256(model),
        "inputs": list(SEGMENTATION_INPUTS),
        "outputs": list(segmentation_output_names(model)),
    }
    with MapWriter(package.path, package.method, package.frame_id, base=package) as writer:
        writer.add_file(ONNX_LAYER, name, ".onnx", Path(onnx_path).read_bytes(), description="ONNX exports of the map's networks")
        writer.add_json(ONNX_LAYER, f"{name}_export", info)
        writer.commit()
    return package.path / ONNX_LAYER / f"{name}.onnx"


def read_onnx_layer(package: Any, model: nn.Module) -> Path | None:
    """The map's ONNX export of ``model`` (layer ``onnx``); None when it has none, or one of other weights (logged)."""
    from segloc.models.registry import model_name_of

    name = model_name_of(model)
    if not package.has_layer(ONNX_LAYER) or not any(Path(rel).stem == name for rel in package.layers[ONNX_LAYER]["files"]):
        return None
    info = package.read_json(ONNX_LAYER, f"{name}_export") if (package.path / ONNX_LAYER / f"{name}_export.json").is_file() else None
    if not isinstance(info, dict) or info.get("weights_sha256") != weights_sha256(model):
        logger.warning("map %s: its ONNX export of %s is of other weights than its network; exporting it again", package.path, name)
        return None
    return package.path / ONNX_LAYER / f"{name}.onnx"


#: The ONNX exporter of each registered network (by registry name); a network that lands adds its own.
EXPORTERS: dict[str, Callable[[nn.Module, Path, tuple[int, int]], Path]] = {"segmentation": export_segmentation_onnx}


def export_network(model: nn.Module, path: str | Path, size: tuple[int, int]) -> Path:
    """Export a registered network with its exporter (:data:`EXPORTERS`), checked against torch at ``size`` (width, height).

    Raises:
        SeglocError: a network that has no exporter.
    """
    from segloc.models.registry import model_name_of

    name = model_name_of(model)
    if name not in EXPORTERS:
        raise SeglocError(f"network {name!r} has no ONNX exporter; exportable networks: {', '.join(EXPORTERS)}")
    return EXPORTERS[name](model, Path(path), size)
