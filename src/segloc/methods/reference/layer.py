"""The reference method's map: the core, the ``reference`` layer (SIFT descriptors) and the ``vlad`` layer (retrieval).

:func:`build_reference_map` adds to the shared core build (:func:`segloc.maps.build.build_core`)
the SIFT descriptor of every core observation, aligned with the core observations, and a VLAD
retrieval vocabulary with one global descriptor per mapping image.
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

from segloc.config import config_from_dict, config_to_dict
from segloc.data.dataset import Dataset
from segloc.errors import SeglocError
from segloc.features.retrieval import VladConfig, VladEncoder, train_vocabulary
from segloc.features.sift import SiftConfig, root_sift
from segloc.maps.build import CoreBuild, CoreConfig, core_for
from segloc.maps.core import MapCore, core_checksum, write_core
from segloc.maps.package import MapPackage, MapWriter, check_map_output

logger = logging.getLogger("segloc")


@dataclass
class ReferenceMapConfig:
    """Options of :func:`build_reference_map` (the ``map:`` section of a config file).

    Attributes:
        core: the shared geometry (:class:`segloc.maps.build.CoreConfig`).
        vlad: the retrieval vocabulary and global descriptors.
    """

    core: CoreConfig = field(default_factory=CoreConfig)
    vlad: VladConfig = field(default_factory=VladConfig)


# --- layers -----------------------------------------------------------------------------
REFERENCE_LAYER = "reference"
VLAD_LAYER = "vlad"


@dataclass
class ReferenceLayer:
    """The ``reference`` layer: SIFT descriptors of the core observations.

    Attributes:
        descriptors: (M, 128) uint8 SIFT descriptor of each core observation (same order).
        sift: the extraction options the map was built with (queries must use the same).
    """

    descriptors: np.ndarray
    sift: SiftConfig


@dataclass
class VladLayer:
    """The ``vlad`` layer: retrieval vocabulary and global descriptors.

    Attributes:
        vocabulary: (K, 128) float32 visual words (RootSIFT space).
        global_descriptors: (I, K * 128) float32 VLAD vector of each mapping image.
    """

    vocabulary: np.ndarray
    global_descriptors: np.ndarray


def write_reference_layer(writer: MapWriter, descriptors: np.ndarray, sift: SiftConfig) -> None:
    """Add the ``reference`` layer; the ``core`` layer must be in ``writer`` already.

    Args:
        descriptors: (M, 128) uint8 SIFT descriptors aligned with the core observations.
        sift: the extraction options used.
    """
    descriptors = np.asarray(descriptors)
    if descriptors.dtype != np.uint8 or descriptors.ndim != 2 or descriptors.shape[1] != 128:
        raise SeglocError(f"reference descriptors must be (M, 128) uint8, got {descriptors.shape} {descriptors.dtype}")
    meta = {"feature": "sift", "sift": config_to_dict(sift), "core_points_sha256": core_checksum(writer.manifest["files"])}
    writer.add_arrays(REFERENCE_LAYER, "descriptors", description="SIFT descriptor of each core observation", descriptors=descriptors)
    writer.add_json(REFERENCE_LAYER, "meta", meta)


def read_reference_layer(package: MapPackage, core: MapCore) -> ReferenceLayer:
    """Read the ``reference`` layer and check that it belongs to ``core``."""
    if not package.has_layer(REFERENCE_LAYER):
        raise SeglocError(
            f"map {package.path} has no {REFERENCE_LAYER!r} layer (layers: {', '.join(package.layers)}); "
            "build it with build_reference_map / `segloc map build --method reference`"
        )
    meta = package.read_json(REFERENCE_LAYER, "meta")
    if not isinstance(meta, dict) or meta.get("core_points_sha256") != core_checksum(package.manifest.get("files", {})):
        raise SeglocError(f"map {package.path}: the reference layer was built for another core layer; rebuild the map")
    descriptors = package.read_arrays(REFERENCE_LAYER, "descriptors").get("descriptors")
    if descriptors is None or descriptors.dtype != np.uint8 or descriptors.shape != (core.num_observations, 128):
        shape = None if descriptors is None else (descriptors.shape, str(descriptors.dtype))
        raise SeglocError(f"map {package.path}: reference descriptors {shape} do not match {core.num_observations} observations")
    return ReferenceLayer(descriptors, config_from_dict(SiftConfig, meta.get("sift"), where=f"{package.path} reference/meta.json sift"))


#: Scale of the SIFT values in the attacker's input channels (OpenCV's descriptors are at most 255).
SIFT_ATTACK_SCALE = 1.0 / 64.0


def reference_attack_surface(package: MapPackage) -> Any:
    """What the reference map gives an inversion attacker: the (M, 128) SIFT descriptors of the core observations.

    Returns:
        a :class:`segloc.methods.registry.AttackSurface` whose training features are SIFT with
        the map's own options (descriptors scaled by :data:`SIFT_ATTACK_SCALE`).
    """
    from segloc.features.sift import extract_sift
    from segloc.maps.core import read_core
    from segloc.methods.registry import AttackSurface

    core = read_core(package)
    layer = read_reference_layer(package, core)

    def features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        extracted = extract_sift(image, layer.sift)
        return extracted.keypoints, extracted.descriptors.astype(np.float32) * SIFT_ATTACK_SCALE

    return AttackSurface(
        "SIFT descriptor (128 values) of every observation of every 3D point",
        layer.descriptors.astype(np.float32) * SIFT_ATTACK_SCALE,
        features,
    )


def write_vlad_layer(writer: MapWriter, vocabulary: np.ndarray, global_descriptors: np.ndarray) -> None:
    """Add the ``vlad`` layer: vocabulary (K, 128) and VLAD vectors (I, K * 128), one per mapping image."""
    writer.add_arrays(
        VLAD_LAYER,
        "vlad",
        description="VLAD (RootSIFT) retrieval vocabulary and global descriptors of the mapping images",
        vocabulary=np.asarray(vocabulary, np.float32),
        global_descriptors=np.asarray(global_descriptors, np.float16),
    )


def read_vlad_layer(package: MapPackage, num_images: int) -> VladLayer:
    """Read the ``vlad`` layer of a map with ``num_images`` mapping images."""
    if not package.has_layer(VLAD_LAYER):
        raise SeglocError(f"map {package.path} has no {VLAD_LAYER!r} layer (layers: {', '.join(package.layers)}); rebuild the map")
    arrays = package.read_arrays(VLAD_LAYER, "vlad")
    vocabulary, global_descriptors = arrays.get("vocabulary"), arrays.get("global_descriptors")
    if (
        vocabulary is None
        or global_descriptors is None
        or vocabulary.ndim != 2
        or global_descriptors.shape != (num_images, vocabulary.size)
    ):
        raise SeglocError(
            f"map {package.path}: the vlad layer is malformed (expected a (K, D) vocabulary and {num_images} vectors of K * D)"
        )
    return VladLayer(vocabulary.astype(np.float32), global_descriptors.astype(np.float32))


def build_reference_map(
    dataset: Dataset,
    output: str | Path,
    config: ReferenceMapConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    core: CoreBuild | None = None,
) -> Path:
    """Build the reference (SIFT) map of ``dataset``'s mapping images at ``output``.

    Args:
        dataset: the dataset; its mapping images and poses define the map.
        output: the map package folder to write (layers ``core``, ``reference``, ``vlad``).
        config: building options.
        overwrite: replace an existing map at ``output``.
        progress: show progress bars.
        core: the output of :func:`build_core` for ``dataset`` with ``config``, when another
            map of the same images built it already; None builds it.

    Returns:
        ``output``.
    """
    config = config or ReferenceMapConfig()
    output = Path(output)
    if not dataset.mapping:
        raise SeglocError(f"{dataset.root}: mapping.txt lists no images; a map needs mapping images with poses")
    check_map_output(output, overwrite, dataset.inputs())
    logger.info(
        "building a reference map of %s (%d mapping images); its options go into the map's manifest.json",
        dataset.root,
        len(dataset.mapping),
    )
    logger.debug("map options:\n%s", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    built = core_for(dataset, config.core, progress, core)
    start = time.perf_counter()
    vocabulary, global_descriptors = vlad_descriptors([root_sift(f.descriptors) for f in built.features], config.vlad)
    built.statistics["seconds"]["retrieval"] = time.perf_counter() - start

    created: dict[str, Any] = {"source": str(Path(dataset.root).resolve()), "config": config_to_dict(config)}
    with MapWriter(output, method="reference", frame_id=config.core.frame_id, overwrite=overwrite, created=created) as writer:
        write_core(writer, built.core)
        write_reference_layer(writer, built.observation_descriptors(), config.core.sift)
        write_vlad_layer(writer, vocabulary, global_descriptors)
        seconds = {k: round(v, 3) for k, v in built.statistics["seconds"].items()}
        writer.set_metadata(statistics={**built.statistics, "seconds": seconds})
        writer.commit()
    logger.info("reference map timings: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return output


def update_reference_map(package: MapPackage, update: Any, writer: MapWriter) -> None:
    """Bring the ``reference`` and ``vlad`` layers up to date with a core update (:mod:`segloc.maps.update`).

    The old observations keep their stored SIFT descriptors, the new ones get those of the new
    images' keypoints (extracted by the update with the map's SIFT options); the VLAD
    vocabulary is kept and encodes the new images, whose vectors are appended.
    """
    layer = read_reference_layer(package, update.old_core)
    descriptors = update.observation_values(layer.descriptors, [features.descriptors for features in update.features])
    write_reference_layer(writer, descriptors, layer.sift)
    append_vlad_descriptors(package, writer, [root_sift(features.descriptors) for features in update.features], update.old_core)


def append_vlad_descriptors(package: MapPackage, writer: MapWriter, descriptor_sets: Sequence[np.ndarray], old_core: MapCore) -> None:
    """Rewrite the ``vlad`` layer with the VLAD vectors of new images (their (N_i, D) descriptors) appended; the vocabulary is kept."""
    vlad = read_vlad_layer(package, len(old_core.images))
    encoder = VladEncoder(vlad.vocabulary)
    new = [encoder.encode(descriptors) for descriptors in descriptor_sets]
    write_vlad_layer(writer, vlad.vocabulary, np.concatenate([vlad.global_descriptors, *[v[None] for v in new]]))


def vlad_descriptors(descriptor_sets: Sequence[np.ndarray], config: VladConfig) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary (K, D) learned on the mapping images' descriptors and their VLAD vectors (I, K * D).

    Args:
        descriptor_sets: per mapping image, its (N_i, D) float32 descriptors in the space the
            localizer matches in (RootSIFT for the reference, NinjaDesc for ``ninjadesc``).
        config: vocabulary size, training sample and seed.
    """
    rng = np.random.default_rng(config.seed)
    per_image = max(1, config.max_training_descriptors // max(1, len(descriptor_sets)))
    samples = []
    for descriptors in descriptor_sets:
        count = min(per_image, len(descriptors))
        samples.append(descriptors[rng.choice(len(descriptors), count, replace=False)])
    vocabulary = train_vocabulary(np.concatenate(samples), config.num_clusters, config.kmeans_iterations, config.seed)
    encoder = VladEncoder(vocabulary)
    return vocabulary, np.stack([encoder.encode(descriptors) for descriptors in descriptor_sets])
