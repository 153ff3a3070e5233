"""Networks found by name, hloc-style: ``build_model("segmentation", config)``.

Each entry maps a name to ``"module:Class"``; the module is imported only when the model is
built, so listing models stays cheap. A registered class follows one small protocol:

- a class attribute ``config_class``: a dataclass of its options (strict YAML, see
  :mod:`segloc.config`);
- ``__init__(config)`` taking an instance of it, and a ``config`` attribute holding it.

Networks added later (retrieval, scene landmarks, NinjaNet, inversion) register with
:func:`register_model` or by a line in :data:`MODELS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from torch import nn

from segloc.config import config_from_dict
from segloc.errors import SeglocError

MODELS: dict[str, str] = {
    "segmentation": "segloc.models.segmentation:SegmentationNet",
    "landmarks": "segloc.models.landmarks:LandmarkEnsemble",
    "landmark_backbone": "segloc.models.landmarks:LandmarkBackbone",
    "scene_landmarks": "segloc.models.landmarks:SceneLandmarkNet",
    "multi_scene_landmarks": "segloc.models.landmarks:MultiSceneLandmarkNet",
    "inversion_unet": "segloc.models.inversion:InversionUNet",
    "netvlad": "segloc.models.netvlad:NetVlad",
    "ninjanet": "segloc.models.ninjanet:NinjaNet",
    "depth": "segloc.models.depth:DepthNet",
}


def register_model(name: str, target: str, replace: bool = False) -> None:
    """Register ``target`` (``"package.module:Class"``) under ``name``.

    Raises:
        SeglocError: ``name`` is taken (unless ``replace``) or ``target`` is not ``module:Class``.
    """
    if name in MODELS and not replace and MODELS[name] != target:
        raise SeglocError(f"model name {name!r} is already registered for {MODELS[name]}")
    if target.count(":") != 1:
        raise SeglocError(f"model target {target!r} must read 'package.module:Class'")
    MODELS[name] = target


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def model_class(name: str) -> type[nn.Module]:
    """The class registered under ``name`` (imports its module).

    Raises:
        SeglocError: unknown name, or a registration that does not import.
    """
    if name not in MODELS:
        raise SeglocError(f"unknown model {name!r}; available models: {', '.join(available_models())}")
    module_name, class_name = MODELS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SeglocError(f"model {name!r}: cannot import {module_name} ({exc}); is a dependency missing?") from None
    cls = getattr(module, class_name, None)
    if cls is None or not dataclasses.is_dataclass(getattr(cls, "config_class", None)):
        raise SeglocError(f"model {name!r}: {MODELS[name]} is not a network class with a dataclass config_class")
    return cls


def model_name_of(model: nn.Module) -> str:
    """The registered name of ``model``'s class.

    Raises:
        SeglocError: the class is not registered.
    """
    target = f"{type(model).__module__}:{type(model).__qualname__}"
    for name, registered in MODELS.items():
        if registered == target:
            return name
    raise SeglocError(f"{target} is not a registered model; register it with segloc.models.register_model")


def build_model(name: str, config: Any = None) -> nn.Module:
    """Build the network registered under ``name``.

    Args:
        name: a registered name (``segmentation``, ...).
        config: an instance of the model's ``config_class``, a dict of its options (validated
            strictly, e.g. a YAML section), or None for the defaults.

    Returns:
        The network, in training mode as ``nn.Module`` s are built.

    Raises:
        SeglocError: unknown name or invalid options.
    """
    cls = model_class(name)
    return cls(config_from_dict(cls.config_class, config, where=f"model {name}"))
