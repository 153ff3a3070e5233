"""The SLD* map: the landmark network(s) and the landmarks' 3D positions, nothing else.

Layers and files:

- ``core``: the mapping images (names, cameras, poses; no pixels) and, as its points, the L
  landmarks only (no observations): the point cloud the core build triangulated is not kept.
  The evaluator checks the queries against these points and draws the mapping cameras.
- ``sld/landmarks.npz``: ``positions`` (L, 3) float64 world positions (the core's points, in the
  heatmap order of the network) and ``scores`` (L,) float32 saliency; ``sld/meta.json``: the
  network's input size (``max_edge``), output stride, and the landmark selection options and
  provenance of the training run.
- ``sld_model/weights.npz``: the network's state dict (float arrays only, read with
  ``allow_pickle=False``); ``sld_model/model.json``: its registry name and config.

The network is trained for the landmarks of one selection (``segloc train sld``, which builds
the core, selects the landmarks and writes a checkpoint whose metadata holds their positions);
:func:`build_sld_map` takes that checkpoint and the dataset's mapping cameras and writes the map.
It needs no core build of its own: the landmarks come from the checkpoint and the cameras from
``mapping.txt`` (a shared core build, given by ``segloc demo``, is only checked to be of the same
images).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from segloc.config import config_to_dict
from segloc.data.dataset import Dataset, ImageRecord
from segloc.errors import SeglocError
from segloc.maps.build import CoreBuild, CoreConfig, core_for
from segloc.maps.core import MapCore, core_checksum, write_core
from segloc.maps.network import read_network_layer, resolve_model_dtype, write_network_layer
from segloc.maps.package import MapPackage, MapWriter, check_map_output

logger = logging.getLogger("segloc")

SLD_LAYER = "sld"
SLD_MODEL_LAYER = "sld_model"
#: What a training run writes into its checkpoint's metadata for the map (see ``segloc_train.sld``).
LANDMARKS_METADATA = "landmarks"


@dataclass
class SldMapConfig:
    """Options of :func:`build_sld_map` (the ``map:`` section of a config file).

    Attributes:
        core: the shared geometry (:class:`segloc.maps.build.CoreConfig`): the map builder needs none
            (the training run built it to select the landmarks); kept for the shared core builds of
            ``segloc demo`` and the map's ``frame_id``.
        checkpoint: the landmark network's checkpoint folder (``RUN/checkpoint`` of ``segloc
            train sld DATASET -o RUN``); its metadata holds the landmarks it was trained for.
        model_dtype: precision of the network's weights in the map: ``checkpoint`` (the
            checkpoint's own; the shipped network is float16), ``float32`` or ``float16``.
    """

    core: CoreConfig = field(default_factory=CoreConfig)
    checkpoint: str | None = None
    model_dtype: str = "checkpoint"

    def __post_init__(self) -> None:
        resolve_model_dtype(self.model_dtype, None)  # an unknown value is refused here, not after the build


@dataclass
class SldLayer:
    """The ``sld`` layer.

    Attributes:
        positions: (L, 3) float64 landmark positions, in heatmap order.
        scores: (L,) float32 saliency scores.
        max_edge: longer image edge the network runs at (pixels).
        stride: the network's output stride.
        meta: the whole ``meta.json``.
    """

    positions: np.ndarray
    scores: np.ndarray
    max_edge: int
    stride: int
    meta: dict[str, Any]


def landmark_core(images: Sequence[ImageRecord], positions: np.ndarray) -> MapCore:
    """The map's core: the mapping images with the landmarks as its only points (no observations)."""
    empty = np.zeros(0, np.int32)
    return MapCore(list(images), positions, np.zeros(len(positions), np.float32), empty, empty, np.zeros((0, 2), np.float32))


def write_sld_layer(writer: MapWriter, positions: np.ndarray, scores: np.ndarray, meta: dict[str, Any]) -> None:
    """Add the ``sld`` layer; the ``core`` layer (with the landmarks as points) must be in ``writer`` already."""
    positions = np.asarray(positions, np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(scores) != len(positions):
        raise SeglocError(f"landmarks must be (L, 3) positions with L scores, got {positions.shape} and {len(scores)}")
    writer.add_arrays(
        SLD_LAYER,
        "landmarks",
        description="3D positions and saliency of the scene landmarks, in the network's heatmap order",
        positions=positions,
        scores=np.asarray(scores, np.float32),
    )
    writer.add_json(SLD_LAYER, "meta", {**meta, "core_points_sha256": core_checksum(writer.manifest["files"])})


def read_sld_layer(package: MapPackage) -> SldLayer:
    """Read the ``sld`` layer and check it against the core."""
    if not package.has_layer(SLD_LAYER):
        raise SeglocError(
            f"map {package.path} has no {SLD_LAYER!r} layer (layers: {', '.join(package.layers)}); build it with --method sld"
        )
    meta = package.read_json(SLD_LAYER, "meta")
    if not isinstance(meta, dict) or meta.get("core_points_sha256") != core_checksum(package.manifest.get("files", {})):
        raise SeglocError(f"map {package.path}: the sld layer was built for another core layer; rebuild the map")
    arrays = package.read_arrays(SLD_LAYER, "landmarks")
    positions, scores = arrays.get("positions"), arrays.get("scores")
    if positions is None or scores is None or positions.ndim != 2 or positions.shape[1] != 3 or len(scores) != len(positions):
        raise SeglocError(f"map {package.path}: sld/landmarks.npz needs positions (L, 3) and scores (L,)")
    try:
        max_edge, stride = int(meta["max_edge"]), int(meta["stride"])
    except (KeyError, TypeError, ValueError):
        raise SeglocError(f"map {package.path}: sld/meta.json needs max_edge and stride") from None
    return SldLayer(positions.astype(np.float64), scores.astype(np.float32), max_edge, stride, meta)


def write_sld_model(writer: MapWriter, model: Any, dtype: str, source: dict[str, Any]) -> None:
    """Add the ``sld_model`` layer (:func:`segloc.maps.network.write_network_layer`): the network's registry name, config and weights."""
    write_network_layer(writer, SLD_MODEL_LAYER, model, dtype, source, "the scene landmark network's weights")


def read_sld_model(package: MapPackage) -> Any:
    """The landmark network embedded in a map, on the CPU, in eval mode, float32."""
    return read_network_layer(package, SLD_MODEL_LAYER, "landmark network", "rebuild it with --method sld")


def checkpoint_landmarks(info: Any) -> dict[str, Any]:
    """The landmarks a checkpoint was trained for (its ``metadata["landmarks"]``), checked.

    Returns:
        ``positions`` (L, 3) float64, ``scores`` (L,), ``max_edge``, ``stride`` and the rest of the entry.
    """
    entry = info.metadata.get(LANDMARKS_METADATA)
    if not isinstance(entry, dict) or "positions" not in entry or "max_edge" not in entry:
        raise SeglocError(
            f"checkpoint {info.path} holds no landmarks in its metadata: it was not written by `segloc train sld`; "
            "train the landmark network with `segloc train sld DATASET -o RUN` and pass map: checkpoint: RUN/checkpoint"
        )
    positions = np.asarray(entry["positions"], np.float64)
    num_landmarks = int(info.config.get("num_landmarks", -1))
    if positions.ndim != 2 or positions.shape != (num_landmarks, 3):
        raise SeglocError(f"checkpoint {info.path}: {positions.shape} landmark positions for a network of {num_landmarks} heatmaps")
    scores = np.asarray(entry.get("scores", np.zeros(len(positions))), np.float32)
    return {**entry, "positions": positions, "scores": scores}


def build_sld_map(
    dataset: Dataset,
    output: str | Path,
    config: SldMapConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    core: CoreBuild | None = None,
) -> Path:
    """Build the SLD* map of ``dataset``'s mapping images at ``output`` from a trained landmark network.

    Raises:
        SeglocError: no checkpoint, or one not written by the SLD trainer.
    """
    from segloc.models.checkpoint import load_checkpoint, read_checkpoint_info

    config = config or SldMapConfig()
    output = Path(output)
    if not config.checkpoint:
        raise SeglocError(
            "the sld map needs its trained landmark network: run `segloc train sld DATASET -o RUN` "
            "(preset cpu_demo for a CPU), then pass map: checkpoint: RUN/checkpoint (a --config file)"
        )
    if not dataset.mapping:
        raise SeglocError(f"{dataset.root}: mapping.txt lists no images; a map needs mapping images with poses")
    check_map_output(output, overwrite, dataset.inputs())
    info = read_checkpoint_info(config.checkpoint)
    landmarks = checkpoint_landmarks(info)
    model = load_checkpoint(config.checkpoint)
    logger.info("building an sld map of %s with %d landmarks from %s", dataset.root, len(landmarks["positions"]), info.path)
    logger.debug("map options:\n%s", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    if core is not None:  # a shared build: check it is of these images; its points are not used
        core_for(dataset, config.core, progress, core)
    statistics: dict[str, Any] = {"num_images": len(dataset.mapping), "num_landmarks": len(landmarks["positions"]), "seconds": {}}
    start = time.perf_counter()
    meta = {
        "max_edge": int(landmarks["max_edge"]),
        "stride": int(landmarks.get("stride", 8)),
        "selection": landmarks.get("selection", {}),
        "checkpoint": {"path": str(Path(config.checkpoint).resolve()), "sha256": info.sha256},
    }
    created: dict[str, Any] = {"source": str(Path(dataset.root).resolve()), "config": config_to_dict(config)}
    with MapWriter(output, method="sld", frame_id=config.core.frame_id, overwrite=overwrite, created=created) as writer:
        write_core(writer, landmark_core(dataset.mapping, landmarks["positions"]))
        write_sld_layer(writer, landmarks["positions"], landmarks["scores"], meta)
        write_sld_model(
            writer,
            model,
            resolve_model_dtype(config.model_dtype, info.dtype),
            {"checkpoint": meta["checkpoint"], "trainer": info.metadata.get("trainer")},
        )
        statistics["seconds"]["sld"] = round(time.perf_counter() - start, 3)
        writer.set_metadata(statistics={**statistics, "training_seconds": info.metadata.get("train_seconds")})
        writer.commit()
    return output
