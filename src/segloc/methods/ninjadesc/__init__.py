"""NinjaDesc: content-concealing descriptors (Ng et al., CVPR 2022) as a localization method.

- :mod:`~segloc.methods.ninjadesc.layer`: the map (``NinjaDescMapConfig``, layers ``ninjadesc``
  and ``ninjadesc_model``, :func:`~segloc.methods.ninjadesc.layer.build_ninjadesc_map`) and its
  attack surface for ``segloc audit``;
- :mod:`~segloc.methods.ninjadesc.localizer`: :class:`NinjaDescLocalizer` (the reference
  pipeline in NinjaDesc space).

The network is :class:`segloc.models.ninjanet.NinjaNet`, trained by ``segloc train ninjadesc``
(``segloc_train.ninjadesc``) adversarially against an inversion attacker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segloc.methods.registry import Method

__all__ = ["METHOD", "NinjaDescMethod"]


class NinjaDescMethod(Method):
    """The registry entry of NinjaDesc."""

    name = "ninjadesc"
    description = "NinjaDesc: RootSIFT or VGG at SIFT keypoints re-encoded by NinjaNet so that the map's descriptors match but resist inversion; 2D-3D matching, PnP"
    prior_use = "restricts"

    @property
    def map_config_class(self) -> type:  # type: ignore[override]
        from segloc.methods.ninjadesc.layer import NinjaDescMapConfig

        return NinjaDescMapConfig

    @property
    def localize_config_class(self) -> type:  # type: ignore[override]
        from segloc.methods.ninjadesc.localizer import NinjaDescLocalizerConfig

        return NinjaDescLocalizerConfig

    def build_map(self, dataset, output: Path, config: Any, *, overwrite: bool = False, progress: bool = True, core=None) -> Path:
        from segloc.methods.ninjadesc.layer import build_ninjadesc_map

        return build_ninjadesc_map(dataset, output, config, overwrite=overwrite, progress=progress, core=core)

    def load_localizer(self, package, config: Any):
        from segloc.methods.ninjadesc.localizer import NinjaDescLocalizer

        return NinjaDescLocalizer.from_map(package, config)

    def networks(self, package) -> dict[str, tuple[Any, tuple[int, int]]]:
        """The map's NinjaNet (``ninjanet``; it takes descriptors, so the size is not used)."""
        from segloc.methods.ninjadesc.layer import read_ninjanet

        return {"ninjanet": (read_ninjanet(package), (0, 0))}

    def update_layers(self, package, update, writer, *, progress: bool = True) -> None:
        """NinjaDesc of the new observations from the map's NinjaNet, VLAD vectors of the new images (same vocabulary)."""
        from segloc.methods.ninjadesc.layer import update_ninjadesc_map

        update_ninjadesc_map(package, update, writer)

    def attack_surface(self, package):
        """The NinjaDesc of every core observation: what an inversion attacker gets from the map."""
        from segloc.methods.ninjadesc.layer import ninjadesc_attack_surface

        return ninjadesc_attack_surface(package)


METHOD = NinjaDescMethod()
