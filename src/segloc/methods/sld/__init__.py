"""SLD*: scene landmark detection (Do et al., CVPR 2022 / 3DV 2024); the map is a network plus landmark positions.

- :mod:`~segloc.methods.sld.landmarks`: landmark selection on the core's triangulated points and
  the visibility labels of the mapping images;
- :mod:`~segloc.methods.sld.heatmaps`: Gaussian target heatmaps and sub-pixel peaks;
- :mod:`~segloc.methods.sld.layer`: the map (``SldMapConfig``, the ``sld`` and ``sld_model``
  layers, :func:`~segloc.methods.sld.layer.build_sld_map`);
- :mod:`~segloc.methods.sld.localizer`: :class:`SldLocalizer` and its config.

The network (:mod:`segloc.models.landmarks`) is trained by ``segloc train sld`` (``segloc_train.sld``).
The map holds no image, descriptor or point cloud: the mapping cameras, the landmarks' 3D
positions and the network's weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segloc.methods.registry import DemoContext, Method, load_trainer

__all__ = ["DEMO_CHECKPOINT", "METHOD", "SldMethod"]

DEMO_CHECKPOINT = "sld_room320"
"""The shipped landmark network ``segloc demo`` uses (:data:`segloc.models.checkpoint.SHIPPED_CHECKPOINTS`)."""


class SldMethod(Method):
    """The registry entry of SLD*."""

    name = "sld"
    description = "SLD*: scene landmark heatmaps from a CNN ensemble, PnP + RANSAC; the map is the network and L landmark positions"
    prior_use = "restricts"
    update_points = False  # the core's points are the network's landmarks, in its heatmap order

    @property
    def map_config_class(self) -> type:  # type: ignore[override]
        from segloc.methods.sld.layer import SldMapConfig

        return SldMapConfig

    @property
    def localize_config_class(self) -> type:  # type: ignore[override]
        from segloc.methods.sld.localizer import SldLocalizerConfig

        return SldLocalizerConfig

    def build_map(self, dataset, output: Path, config: Any, *, overwrite: bool = False, progress: bool = True, core=None) -> Path:
        from segloc.methods.sld.layer import build_sld_map

        return build_sld_map(dataset, output, config, overwrite=overwrite, progress=progress, core=core)

    def load_localizer(self, package, config: Any):
        from segloc.methods.sld.localizer import SldLocalizer

        return SldLocalizer.from_map(package, config)

    def update_layers(self, package, update, writer, *, progress: bool = True) -> None:
        """The new mapping cameras join the core; the landmarks and the network stay as trained.

        An SLD map is network weights: the network predicts its L landmarks in a fixed heatmap
        order, so no landmark can be retired or added without training it again (``segloc train
        sld`` on the new recordings, then ``segloc map build``). A landmark on a changed surface
        keeps being predicted where the network learnt to see it; RANSAC treats it as an outlier.
        """
        from segloc.methods.sld.layer import read_sld_layer, write_sld_layer

        layer = read_sld_layer(package)
        meta = {key: value for key, value in layer.meta.items() if key != "core_points_sha256"}
        write_sld_layer(writer, layer.positions, layer.scores, meta)

    def demo_map_config(self, context: DemoContext) -> dict[str, Any]:
        """The demo's landmark network: a fresh training run (``--train``) or the shipped one (``--checkpoint`` is SegLoc's)."""
        from segloc.models.checkpoint import SHIPPED_CHECKPOINTS, shipped_checkpoint_for_scene

        if context.train:
            train = load_trainer("sld")
            run_dir = context.output_dir / "train_sld"
            print(f"training the SLD* landmark network on the mapping images into {run_dir} ({context.train_epochs} epochs)")
            checkpoint = train(context.dataset_dir, run_dir, epochs=context.train_epochs, progress=context.progress)
        else:
            checkpoint = shipped_checkpoint_for_scene(DEMO_CHECKPOINT, context.scene, context.seed, context.size)
            print(f"landmark network: the shipped one, {checkpoint} (reproduce it with: {SHIPPED_CHECKPOINTS[DEMO_CHECKPOINT]['command']})")
        return {"checkpoint": str(Path(checkpoint).resolve())}

    def networks(self, package) -> dict[str, tuple[Any, tuple[int, int]]]:
        """The landmark network at the size the map's mapping camera gives it (``landmarks``: (net, (W, H)))."""
        from segloc.maps.core import read_core
        from segloc.methods.sld.layer import read_sld_layer, read_sld_model
        from segloc.methods.sld.localizer import network_input_size

        camera = read_core(package).images[0].camera
        return {"landmarks": (read_sld_model(package), network_input_size(camera, read_sld_layer(package).max_edge))}


METHOD = SldMethod()
