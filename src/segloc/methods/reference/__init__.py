"""The reference method: the classical, non-private baseline (SIFT, triangulated map, VLAD retrieval, PnP + RANSAC).

- :mod:`~segloc.methods.reference.layer`: its map (``ReferenceMapConfig``, the ``reference``
  and ``vlad`` layers, :func:`~segloc.methods.reference.layer.build_reference_map`);
- :mod:`~segloc.methods.reference.localizer`: :class:`ReferenceLocalizer` and its config.

``METHOD`` registers it (:mod:`segloc.methods.registry`). The map holds SIFT descriptors: it is
the non-private yardstick the private methods are measured against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segloc.methods.registry import Method

__all__ = ["METHOD", "ReferenceMethod"]


class ReferenceMethod(Method):
    """The registry entry of the reference method."""

    name = "reference"
    description = "classical non-private baseline: SIFT, triangulated map, retrieval, 2D-3D matching, PnP + RANSAC"
    prior_use = "restricts"

    @property
    def map_config_class(self) -> type:  # type: ignore[override]
        from segloc.methods.reference.layer import ReferenceMapConfig

        return ReferenceMapConfig

    @property
    def localize_config_class(self) -> type:  # type: ignore[override]
        from segloc.methods.reference.localizer import ReferenceLocalizerConfig

        return ReferenceLocalizerConfig

    def build_map(self, dataset, output: Path, config: Any, *, overwrite: bool = False, progress: bool = True, core=None) -> Path:
        from segloc.methods.reference.layer import build_reference_map

        return build_reference_map(dataset, output, config, overwrite=overwrite, progress=progress, core=core)

    def load_localizer(self, package, config: Any):
        from segloc.methods.reference.localizer import ReferenceLocalizer

        return ReferenceLocalizer.from_map(package, config)

    def update_layers(self, package, update, writer, *, progress: bool = True) -> None:
        """SIFT of the new observations (the map keeps those of the old ones), VLAD vectors of the new images (same vocabulary)."""
        from segloc.methods.reference.layer import update_reference_map

        update_reference_map(package, update, writer)

    def attack_surface(self, package):
        """The SIFT descriptor of every core observation (128 channels): what InvSfM inverts."""
        from segloc.methods.reference.layer import reference_attack_surface

        return reference_attack_surface(package)


METHOD = ReferenceMethod()
