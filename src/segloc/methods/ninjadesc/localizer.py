"""The NinjaDesc localizer: SIFT keypoints, their base descriptor re-encoded by the map's NinjaNet, VLAD retrieval, 2D-3D matching, PnP.

The reference localizer (:class:`segloc.methods.reference.localizer.ReferenceLocalizer`) with
its descriptor space swapped: the query's base descriptor at its SIFT keypoints (the one the
map's NinjaNet re-encodes: RootSIFT or VGG) goes through NinjaNet (:meth:`describe`) and
the map's points carry NinjaDesc (:meth:`point_descriptors`); retrieval, matching (mutual
nearest neighbours with the ratio test), LO-RANSAC P3P and refinement are the reference's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc.features.sift import LocalFeatures
from segloc.maps.core import MapCore, read_core
from segloc.maps.package import MapPackage
from segloc.methods.ninjadesc.layer import describe, read_ninjadesc_layer, read_ninjanet
from segloc.methods.reference.layer import read_vlad_layer
from segloc.methods.reference.localizer import ReferenceLocalizer, ReferenceLocalizerConfig
from segloc.runtime.session import RuntimeConfig, SessionStatus

logger = logging.getLogger("segloc")

__all__ = ["NinjaDescLocalizer", "NinjaDescLocalizerConfig"]


@dataclass
class NinjaDescLocalizerConfig(ReferenceLocalizerConfig):
    """Options of :class:`NinjaDescLocalizer`: those of the reference localizer (matching, retrieval, PnP, priors), and

    Attributes:
        runtime: how NinjaNet runs (:class:`segloc.runtime.RuntimeConfig`; the ONNX backends use
            the map's ``onnx`` layer when ``segloc export MAP`` stored it).
    """

    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


class NinjaDescLocalizer(ReferenceLocalizer):
    """Localizes images against a ``ninjadesc`` map (layers ``core``, ``ninjadesc``, ``ninjadesc_model``, ``vlad``).

    Args:
        core: the map core.
        descriptors: (M, C) float16 NinjaDesc aligned with the core observations.
        model: the map's NinjaNet.
        others: as :class:`ReferenceLocalizer`.
    """

    method = "ninjadesc"

    def __init__(
        self,
        core: MapCore,
        descriptors: np.ndarray,
        model: Any,
        map_sift,
        vocabulary,
        global_descriptors,
        config=None,
        package: MapPackage | None = None,
    ):
        from segloc.models.export import GRAPHS, network_session, read_onnx_layer

        config = config or NinjaDescLocalizerConfig()
        self.model = model.eval()
        onnx_path = read_onnx_layer(package, self.model) if (package is not None and config.runtime.backend != "torch") else None
        self.session = network_session(self.model, config.runtime, "cpu", onnx_path, graph=GRAPHS["ninjanet"])
        super().__init__(core, descriptors, map_sift, vocabulary, global_descriptors, config)

    def inference_status(self) -> list[SessionStatus]:
        """How NinjaNet runs (backend, engine cache, fallback)."""
        return [self.session.status]

    @classmethod
    def from_map(cls, map_path: str | Path | MapPackage, config: NinjaDescLocalizerConfig | None = None) -> NinjaDescLocalizer:
        """Load the localizer from a map package (a path or an opened package)."""
        package = map_path if isinstance(map_path, MapPackage) else MapPackage.open(map_path)
        core = read_core(package)
        layer = read_ninjadesc_layer(package, core)
        vlad = read_vlad_layer(package, len(core.images))
        logger.info("ninjadesc localizer: map %s with %d images, %d points", package.path, len(core.images), core.num_points)
        return cls(
            core, layer.descriptors, read_ninjanet(package, layer), layer.sift, vlad.vocabulary, vlad.global_descriptors, config, package
        )

    def point_descriptors(self, observations: np.ndarray) -> np.ndarray:
        """(n, C) float32 NinjaDesc of the given observations, as the map stores them."""
        return self._descriptors[observations].astype(np.float32)

    def describe(self, image: np.ndarray, features: LocalFeatures) -> np.ndarray:
        """(N, C) float32 NinjaDesc of a query's SIFT keypoints: the map's base descriptor through the map's NinjaNet."""
        return describe(self.model, features, image, self.sift, self.session)
