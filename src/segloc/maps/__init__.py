"""Map packages: the format (manifest + layers), the method-independent core layer, the shared core build.

Each method adds its own layers (:mod:`segloc.methods`). The core build (:mod:`segloc.maps.build`)
loads on first use, so that reading a map does not import the feature and triangulation code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segloc.maps.core import MapCore, core_checksum, read_core, write_core
from segloc.maps.package import FORMAT_VERSION, MapPackage, MapWriter

if TYPE_CHECKING:
    from segloc.maps.build import CoreBuild, CoreConfig, PairConfig, TriangulationConfig, build_core, core_for, select_pairs

_BUILD_NAMES = {"CoreBuild", "CoreConfig", "PairConfig", "TriangulationConfig", "build_core", "core_for", "select_pairs"}

__all__ = [
    "FORMAT_VERSION",
    "CoreBuild",
    "CoreConfig",
    "MapCore",
    "MapPackage",
    "MapWriter",
    "PairConfig",
    "TriangulationConfig",
    "build_core",
    "core_checksum",
    "core_for",
    "read_core",
    "select_pairs",
    "write_core",
]


def __getattr__(name: str) -> Any:
    if name in _BUILD_NAMES:
        from segloc.maps import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
