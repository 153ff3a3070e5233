"""SegLoc (Pietrantoni et al., CVPR 2023): one segmentation label per 3D point, segmentation-pooled retrieval, label-based refinement.

- :mod:`~segloc.methods.segloc.layer`: its map (``SegLocMapConfig``, the ``segloc`` layer of
  labels and per-image descriptors, the embedded network ``segloc_model``,
  :func:`~segloc.methods.segloc.layer.build_segloc_map`);
- :mod:`~segloc.methods.segloc.localizer`: :class:`SegLocLocalizer` (segment, retrieve,
  approximate, refine) and its config;
- :mod:`~segloc.methods.segloc.refine`: the label-based Levenberg-Marquardt pose refinement;
- :mod:`~segloc.methods.segloc.packing`: the wire layout of segmentations between the split
  pipeline's processes.

The network (:mod:`segloc.models.segmentation`) and the segmenters
(:mod:`segloc.models.segmenter`) live in :mod:`segloc.models`, found by name. ``METHOD``
registers the method (:mod:`segloc.methods.registry`); its trainer is ``segloc train segloc``
(:mod:`segloc_train.segloc`), reached through the ``segloc.trainers`` entry-point group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segloc.methods.registry import DemoContext, DemoRun, Method, load_trainer

__all__ = ["METHOD", "SegLocMethod"]


class SegLocMethod(Method):
    """The registry entry of SegLoc."""

    name = "segloc"
    description = (
        "SegLoc (Pietrantoni et al.): one segmentation label per 3D point, segmentation-pooled retrieval, "
        "label-based pose refinement; the map holds no image and no appearance descriptor"
    )
    prior_use = "starts"
    tracks = True

    @property
    def map_config_class(self) -> type:  # type: ignore[override]
        from segloc.methods.segloc.layer import SegLocMapConfig

        return SegLocMapConfig

    @property
    def localize_config_class(self) -> type:  # type: ignore[override]
        from segloc.methods.segloc.localizer import SegLocLocalizerConfig

        return SegLocLocalizerConfig

    def build_map(self, dataset, output: Path, config: Any, *, overwrite: bool = False, progress: bool = True, core=None) -> Path:
        from segloc.methods.segloc.layer import build_segloc_map

        return build_segloc_map(dataset, output, config, overwrite=overwrite, progress=progress, core=core)

    def load_localizer(self, package, config: Any):
        from segloc.methods.segloc.localizer import SegLocLocalizer

        return SegLocLocalizer.from_map(package, config)

    def update_layers(self, package, update, writer, *, progress: bool = True) -> None:
        """Segment the new images with the map's network: labels of the added points, descriptors of the new images."""
        from segloc.methods.segloc.layer import update_segloc_map

        update_segloc_map(package, update, writer, progress)

    def attack_surface(self, package):
        """The label distribution of every 3D point as stored (one-hot top-1, top-k weights or full; K channels)."""
        from segloc.methods.segloc.layer import segloc_attack_surface

        return segloc_attack_surface(package)

    def derived_options(self, package, config: Any) -> dict[str, float]:
        """The options :class:`SegLocLocalizer` derives from the map (scale, residual gate) with ``config`` (see :mod:`.defaults`)."""
        from segloc.maps.core import read_core
        from segloc.maps.scale import map_scale
        from segloc.methods.segloc.defaults import derive_options
        from segloc.methods.segloc.layer import SEGLOC_LAYER

        meta = package.read_json(SEGLOC_LAYER, "meta") if package.has_layer(SEGLOC_LAYER) else {}
        return derive_options(config, map_scale(read_core(package)), meta)[1]

    def networks(self, package) -> dict[str, tuple[Any, tuple[int, int]]]:
        """The embedded segmentation network at the map's largest query input size (``segmentation``: (net, (W, H)))."""
        from segloc.methods.segloc.layer import SEGLOC_LAYER, read_segloc_model

        meta = package.read_json(SEGLOC_LAYER, "meta") if package.has_layer(SEGLOC_LAYER) else {}
        sizes = [tuple(int(v) for v in size.split("x")) for size in meta.get("inference_sizes") or []]
        size = max(sizes, key=lambda wh: wh[0] * wh[1]) if sizes else (640, 480)
        return {"segmentation": (read_segloc_model(package), size)}

    def demo_map_config(self, context: DemoContext) -> dict[str, Any]:
        """The demo's network: ``--checkpoint``, a fresh training run (``--train``), or the shipped one."""
        return {"checkpoint": str(Path(demo_checkpoint(context)).resolve())}

    def demo_runs(self) -> list[DemoRun]:
        return [DemoRun("approximation", {"refine": False}), DemoRun("segloc")]


def demo_checkpoint(context: DemoContext) -> Path:
    """The segmentation network of ``segloc demo``: the user's, a new training run, or the shipped one.

    Raises:
        SeglocError: the shipped network was trained on another scene than the demo's, or
            ``--train`` without the SegLoc trainer installed.
    """
    from segloc.models.checkpoint import DEMO_CHECKPOINT, SHIPPED_CHECKPOINTS, shipped_checkpoint_for_scene

    if context.checkpoint is not None:
        print(f"segmentation network: {context.checkpoint}")
        return context.checkpoint
    if context.train:
        train = load_trainer("segloc")
        run_dir = context.output_dir / "train_segloc"
        print(f"training the SegLoc network on the mapping images into {run_dir} ({context.train_epochs} epochs)")
        return train(context.dataset_dir, run_dir, epochs=context.train_epochs, progress=context.progress)
    path = shipped_checkpoint_for_scene(DEMO_CHECKPOINT, context.scene, context.seed, context.size)
    shipped = SHIPPED_CHECKPOINTS[DEMO_CHECKPOINT]
    print(f"segmentation network: the shipped one, {path} (--train trains it again; reproduce it with: {shipped['command']})")
    return path


METHOD = SegLocMethod()
