"""A network embedded in a map: one layer with a registered network's name, config and weights (no pickles).

Files of the layer ``L`` (SegLoc's ``segloc_model``, SLD*'s ``sld_model``):

- ``L/model.json``: ``{"model": registry name, "config": the network's dataclass config,
  "dtype": float32 | float16, "source": provenance (checkpoint path and SHA-256, trainer)}``;
- ``L/weights.npz``: the state dict, floating-point arrays at ``dtype``, integer buffers as they are.

The map's manifest holds the files' checksums, like every layer's (:mod:`segloc.maps.package`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from segloc.config import config_from_dict, config_to_dict
from segloc.errors import SeglocError
from segloc.maps.package import MapPackage, MapWriter

__all__ = ["MODEL_DTYPES", "read_network_layer", "resolve_model_dtype", "write_network_layer"]

MODEL_DTYPES = ("float32", "float16")
"""Precisions of the floating-point weights a map stores."""


def resolve_model_dtype(option: str, checkpoint_dtype: str | None) -> str:
    """The precision to store: ``option`` (``checkpoint``, ``float32`` or ``float16``), ``checkpoint`` meaning the checkpoint's own.

    Raises:
        SeglocError: an unknown option.
    """
    if option not in ("checkpoint", *MODEL_DTYPES):
        raise SeglocError(f"unknown model_dtype {option!r}; valid values are: checkpoint, {', '.join(MODEL_DTYPES)}")
    return (checkpoint_dtype or "float32") if option == "checkpoint" else option


def write_network_layer(
    writer: MapWriter, layer: str, model: Any, dtype: str = "float32", source: dict[str, Any] | None = None, description: str = ""
) -> None:
    """Add layer ``layer`` holding ``model`` (a registered network with a dataclass ``config``) at ``dtype``.

    Raises:
        SeglocError: an unknown ``dtype`` or an unregistered network.
    """
    from segloc.models.registry import model_name_of

    if dtype not in MODEL_DTYPES:
        raise SeglocError(f"unknown model_dtype {dtype!r}; valid values are: {', '.join(MODEL_DTYPES)}")
    name = model_name_of(model)
    weights = {}
    for key, tensor in model.state_dict().items():
        array = tensor.detach().cpu().numpy()
        weights[key] = array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array
    writer.add_arrays(layer, "weights", description=description or f"the {name} network's weights", **weights)
    writer.add_json(layer, "model", {"model": name, "config": config_to_dict(model.config), "dtype": dtype, "source": source or {}})


def read_network_layer(package: MapPackage, layer: str, what: str, missing: str) -> Any:
    """Rebuild the network of layer ``layer``, on the CPU, in eval mode, with float32 weights.

    Args:
        package: the opened map.
        layer: the layer's name.
        what: the network, for messages (``segmentation network``).
        missing: what to tell the user when the map has no such layer.

    Raises:
        SeglocError: no such layer (``missing``), an unknown model, or weights that do not fit.
    """
    import torch

    from segloc.models.checkpoint import load_weights
    from segloc.models.registry import model_class

    if not package.has_layer(layer):
        raise SeglocError(f"map {package.path} holds no {what} (no {layer!r} layer); {missing}")
    description = package.read_json(layer, "model")
    if not isinstance(description, dict) or "model" not in description or not isinstance(description.get("config"), dict):
        raise SeglocError(f"map {package.path}: {layer}/model.json needs model and config")
    cls = model_class(description["model"])
    config = config_from_dict(cls.config_class, description["config"], where=f"map {package.path} {layer}/model.json config")
    if "pretrained" in {f.name for f in dataclasses.fields(config)}:
        config = dataclasses.replace(config, pretrained=False)
    model = cls(config)
    own = model.state_dict()
    weights = {
        key: torch.from_numpy(np.array(array, copy=True)).to(own[key].dtype if key in own else torch.float32)
        for key, array in package.read_arrays(layer, "weights").items()
    }
    load_weights(model, weights, source=f"the network of map {package.path}")
    return model.eval()
