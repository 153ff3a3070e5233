"""The registry of localization methods: how to build each method's map and its localizer.

Each method names a map builder ``build(dataset, output, config_values, overwrite, progress,
core=None)`` (``core``: a :class:`segloc.maps.build.CoreBuild` of the dataset to reuse instead of
building the geometry again)
and a localizer factory ``localizer(map_package, config_values)``; ``config_values`` is the
method's section of a YAML config (``map:`` for building, ``localize:`` for localizing) and is
validated strictly by the method's own config dataclass. Imports are lazy so that ``segloc
--help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segloc.errors import SeglocError


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    build: Callable[..., Path]
    localizer: Callable[..., Any]


def _build_reference(dataset, output: Path, config_values: dict | None, overwrite: bool, progress: bool, core=None) -> Path:
    from segloc.config import config_from_dict
    from segloc.maps.build import ReferenceMapConfig, build_reference_map

    config = config_from_dict(ReferenceMapConfig, config_values, "map")
    return build_reference_map(dataset, output, config, overwrite=overwrite, progress=progress, core=core)


def _reference_localizer(package, config_values: dict | None):
    from segloc.config import config_from_dict
    from segloc.localize.reference import ReferenceLocalizer, ReferenceLocalizerConfig

    return ReferenceLocalizer.from_map(package, config_from_dict(ReferenceLocalizerConfig, config_values, "localize"))


def _build_segloc(dataset, output: Path, config_values: dict | None, overwrite: bool, progress: bool, core=None) -> Path:
    from segloc.config import config_from_dict
    from segloc.maps.segloc_layer import SegLocMapConfig, build_segloc_map

    config = config_from_dict(SegLocMapConfig, config_values, "map")
    if not config.checkpoint:
        raise SeglocError(
            "method segloc needs its segmentation network: put `checkpoint: PATH/TO/CHECKPOINT` (a checkpoint folder from the "
            "SegLoc trainer) in the `map:` section of a YAML file and pass it with --config"
        )
    return build_segloc_map(dataset, output, config, overwrite=overwrite, progress=progress, core=core)


def _segloc_localizer(package, config_values: dict | None):
    from segloc.config import config_from_dict
    from segloc.localize.segloc import SegLocLocalizer, SegLocLocalizerConfig

    return SegLocLocalizer.from_map(package, config_from_dict(SegLocLocalizerConfig, config_values, "localize"))


METHODS: dict[str, Method] = {
    "reference": Method(
        "reference",
        "classical non-private baseline: SIFT, triangulated map, retrieval, 2D-3D matching, PnP + RANSAC",
        _build_reference,
        _reference_localizer,
    ),
    "segloc": Method(
        "segloc",
        "SegLoc (Pietrantoni et al.): one segmentation label per 3D point, segmentation-pooled retrieval, "
        "label-based pose refinement; the map holds no image and no appearance descriptor",
        _build_segloc,
        _segloc_localizer,
    ),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise SeglocError(f"unknown method {name!r}; available methods: {', '.join(METHODS)}")
    return METHODS[name]
