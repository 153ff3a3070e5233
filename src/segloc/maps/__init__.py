"""Map packages: the format (manifest + layers), the method-independent core layer, map building.

The building functions (:mod:`segloc.maps.build`) load on first use, so that reading a map
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segloc.maps.core import MapCore, read_core, write_core
from segloc.maps.package import FORMAT_VERSION, MapPackage, MapWriter

if TYPE_CHECKING:
    from segloc.maps.build import (
        CoreBuild,
        PairConfig,
        ReferenceLayer,
        ReferenceMapConfig,
        TriangulationConfig,
        VladLayer,
        build_core,
        build_reference_map,
        read_reference_layer,
        read_vlad_layer,
        select_pairs,
        write_reference_layer,
        write_vlad_layer,
    )

_BUILD_NAMES = {
    "CoreBuild",
    "PairConfig",
    "ReferenceLayer",
    "ReferenceMapConfig",
    "TriangulationConfig",
    "VladLayer",
    "build_core",
    "build_reference_map",
    "read_reference_layer",
    "read_vlad_layer",
    "select_pairs",
    "write_reference_layer",
    "write_vlad_layer",
}

__all__ = [
    "FORMAT_VERSION",
    "CoreBuild",
    "MapCore",
    "MapPackage",
    "MapWriter",
    "PairConfig",
    "ReferenceLayer",
    "ReferenceMapConfig",
    "TriangulationConfig",
    "VladLayer",
    "build_core",
    "build_reference_map",
    "read_core",
    "read_reference_layer",
    "read_vlad_layer",
    "select_pairs",
    "write_core",
    "write_reference_layer",
    "write_vlad_layer",
]


def __getattr__(name: str) -> Any:
    if name in _BUILD_NAMES:
        from segloc.maps import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
