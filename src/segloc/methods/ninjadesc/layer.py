"""The ``ninjadesc`` map: the core, NinjaDesc descriptors per observation, the NinjaNet that makes them, a VLAD retrieval layer.

NinjaDesc (Ng et al., CVPR 2022) re-encodes a base descriptor of each observation's SIFT keypoint
(RootSIFT or VGG, :mod:`segloc.features.base_descriptors`; the NinjaNet's ``base_descriptor``)
with NinjaNet (:mod:`segloc.models.ninjanet`, trained by ``segloc train ninjadesc`` to match like
its base while an inversion attacker fails on it). The map stores only the re-encoded descriptors:

- ``core``: mapping cameras, 3D points, observations (as every map);
- ``ninjadesc/descriptors.npz``: (M, C) float16 NinjaDesc of each core observation (no raw
  SIFT or base descriptor anywhere in the map: a test scans every file);
- ``ninjadesc/meta.json``: the SIFT options (queries extract with them), the base descriptor
  (the NinjaNet's; queries, updates and the audit's attacker compute it), the core checksum;
- ``ninjadesc_model``: the NinjaNet (:mod:`segloc.maps.network`), which queries run too;
- ``vlad``: a VLAD vocabulary learnt on the NinjaDesc descriptors of the mapping images and one
  global descriptor per image (retrieval in NinjaDesc space, as the reference's in RootSIFT).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from segloc.config import config_from_dict, config_to_dict
from segloc.data.dataset import Dataset
from segloc.errors import SeglocError
from segloc.features.base_descriptors import ImageSource, base_descriptors
from segloc.features.retrieval import VladConfig
from segloc.features.sift import LocalFeatures, SiftConfig
from segloc.maps.build import CoreBuild, CoreConfig, core_for
from segloc.maps.core import MapCore, core_checksum, write_core
from segloc.maps.network import read_network_layer, resolve_model_dtype, write_network_layer
from segloc.maps.package import MapPackage, MapWriter, check_map_output
from segloc.methods.reference.layer import vlad_descriptors, write_vlad_layer

logger = logging.getLogger("segloc")

NINJADESC_LAYER = "ninjadesc"
NINJADESC_MODEL_LAYER = "ninjadesc_model"
ENCODE_BATCH = 65536


@dataclass
class NinjaDescMapConfig:
    """Options of :func:`build_ninjadesc_map` (the ``map:`` section of a config file).

    Attributes:
        core: the shared geometry (:class:`segloc.maps.build.CoreConfig`).
        vlad: the retrieval vocabulary and global descriptors (learnt on NinjaDesc).
        checkpoint: the NinjaNet checkpoint (``RUN/checkpoint`` of ``segloc train ninjadesc``).
        model_dtype: precision of the NinjaNet in the map: ``checkpoint``, ``float32`` or ``float16``.
    """

    core: CoreConfig = field(default_factory=CoreConfig)
    vlad: VladConfig = field(default_factory=VladConfig)
    checkpoint: str | None = None
    model_dtype: str = "checkpoint"

    def __post_init__(self) -> None:
        resolve_model_dtype(self.model_dtype, None)  # an unknown value is refused here, not after the build


@dataclass
class NinjaDescLayer:
    """The ``ninjadesc`` layer: (M, C) float16 NinjaDesc of the core observations, the SIFT options queries extract with, the base descriptor."""

    descriptors: np.ndarray
    sift: SiftConfig
    base_descriptor: str


def encode(model: Any, base: np.ndarray, session: Any = None) -> np.ndarray:
    """NinjaDesc (N, C) float32 of (N, C) float32 base descriptors (:func:`describe`): NinjaNet (eval mode, CPU).

    ``session``: an :class:`segloc.runtime.session.InferenceSession` of the NinjaNet
    (:func:`segloc.models.export.network_session`) that runs it instead of torch.
    """
    base = np.ascontiguousarray(base, dtype=np.float32)
    if len(base) == 0:
        return np.zeros((0, model.config.dim), np.float32)
    model = model.eval()
    parts = []
    with torch.inference_mode():
        for start in range(0, len(base), ENCODE_BATCH):
            batch = torch.from_numpy(base[start : start + ENCODE_BATCH])
            out = model(batch) if session is None else session.run({"descriptors": batch})["ninjadesc"]
            parts.append(out.float().cpu().numpy())
    return np.concatenate(parts).astype(np.float32)


def describe(model: Any, features: LocalFeatures, image: ImageSource, sift: SiftConfig, session: Any = None) -> np.ndarray:
    """NinjaDesc (N, C) float32 of an image's SIFT keypoints: the NinjaNet's base descriptor, then NinjaNet.

    Args:
        model: the NinjaNet (its ``config.base_descriptor`` says which base it re-encodes).
        features: the image's SIFT features (extracted with ``sift``).
        image: the image, or a function that loads it (read only by a base that needs pixels: ``vgg``).
        sift: the SIFT options the features were extracted with.
        session: as :func:`encode`.
    """
    return encode(model, base_descriptors(model.config.base_descriptor, features, image, sift.max_edge), session)


def read_ninjadesc_layer(package: MapPackage, core: MapCore) -> NinjaDescLayer:
    """Read the ``ninjadesc`` layer and check it against ``core``."""
    if not package.has_layer(NINJADESC_LAYER):
        raise SeglocError(
            f"map {package.path} has no {NINJADESC_LAYER!r} layer (layers: {', '.join(package.layers)}); build it with --method ninjadesc"
        )
    meta = package.read_json(NINJADESC_LAYER, "meta")
    if not isinstance(meta, dict) or meta.get("core_points_sha256") != core_checksum(package.manifest.get("files", {})):
        raise SeglocError(f"map {package.path}: the ninjadesc layer was built for another core layer; rebuild the map")
    descriptors = package.read_arrays(NINJADESC_LAYER, "descriptors").get("descriptors")
    if descriptors is None or descriptors.ndim != 2 or len(descriptors) != core.num_observations:
        raise SeglocError(f"map {package.path}: ninjadesc descriptors do not match the {core.num_observations} core observations")
    sift = config_from_dict(SiftConfig, meta.get("sift"), where=f"{package.path} ninjadesc/meta.json sift")
    return NinjaDescLayer(descriptors, sift, str(meta.get("base_descriptor", "rootsift")))


def read_ninjanet(package: MapPackage, layer: NinjaDescLayer | None = None) -> Any:
    """The NinjaNet embedded in a map (CPU, eval mode), checked against the ``ninjadesc`` layer's base descriptor when given."""
    model = read_network_layer(package, NINJADESC_MODEL_LAYER, "NinjaNet", "rebuild it with --method ninjadesc")
    if layer is not None and model.config.base_descriptor != layer.base_descriptor:
        raise SeglocError(
            f"map {package.path}: the ninjadesc layer holds NinjaDesc over {layer.base_descriptor} but its NinjaNet re-encodes "
            f"{model.config.base_descriptor}; rebuild the map"
        )
    return model


def load_ninjanet_checkpoint(checkpoint: str | Path) -> tuple[Any, Any]:
    """``(model, info)`` of a NinjaNet checkpoint.

    Raises:
        SeglocError: no such checkpoint, or one of another network.
    """
    from segloc.models.checkpoint import load_checkpoint, read_checkpoint_info

    info = read_checkpoint_info(checkpoint)
    if info.model != "ninjanet":
        raise SeglocError(
            f"{checkpoint} holds a {info.model!r} network; the ninjadesc map needs a ninjanet checkpoint (segloc train ninjadesc)"
        )
    return load_checkpoint(checkpoint).eval(), info


def build_ninjadesc_map(
    dataset: Dataset,
    output: str | Path,
    config: NinjaDescMapConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    core: CoreBuild | None = None,
) -> Path:
    """Build the NinjaDesc map of ``dataset``'s mapping images at ``output`` (module docstring).

    Raises:
        SeglocError: no checkpoint, or one that is not a NinjaNet, bad inputs.
    """
    config = config or NinjaDescMapConfig()
    output = Path(output)
    if not config.checkpoint:
        raise SeglocError(
            "the ninjadesc map needs a trained NinjaNet: run `segloc train ninjadesc DATASET... -o RUN` on other places, "
            "then pass map: checkpoint: RUN/checkpoint (a --config file)"
        )
    if not dataset.mapping:
        raise SeglocError(f"{dataset.root}: mapping.txt lists no images; a map needs mapping images with poses")
    check_map_output(output, overwrite, dataset.inputs())
    model, info = load_ninjanet_checkpoint(config.checkpoint)
    logger.info("building a ninjadesc map of %s (%d mapping images) with %s", dataset.root, len(dataset.mapping), info.path)
    logger.debug("map options:\n%s", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    built = core_for(dataset, config.core, progress, core)
    start = time.perf_counter()
    per_image = [
        describe(model, features, lambda name=image.name: dataset.load_image(name), config.core.sift)
        for image, features in zip(built.core.images, built.features)
    ]
    descriptors = built.observation_values(per_image)  # each keypoint encoded once
    built.statistics["seconds"]["ninjadesc"] = time.perf_counter() - start
    start = time.perf_counter()
    vocabulary, global_descriptors = vlad_descriptors(per_image, config.vlad)
    built.statistics["seconds"]["retrieval"] = time.perf_counter() - start

    source = {"checkpoint": {"path": str(Path(config.checkpoint).resolve()), "sha256": info.sha256}, "trainer": info.metadata}
    created: dict[str, Any] = {"source": str(Path(dataset.root).resolve()), "config": config_to_dict(config)}
    with MapWriter(output, method="ninjadesc", frame_id=config.core.frame_id, overwrite=overwrite, created=created) as writer:
        write_core(writer, built.core)
        meta = {
            "feature": "ninjadesc",
            "base_descriptor": model.config.base_descriptor,
            "sift": config_to_dict(config.core.sift),
            "core_points_sha256": core_checksum(writer.manifest["files"]),
        }
        writer.add_arrays(
            NINJADESC_LAYER, "descriptors", description="NinjaDesc of each core observation", descriptors=descriptors.astype(np.float16)
        )
        writer.add_json(NINJADESC_LAYER, "meta", meta)
        dtype = resolve_model_dtype(config.model_dtype, info.dtype)
        write_network_layer(writer, NINJADESC_MODEL_LAYER, model, dtype, source, "NinjaNet, the descriptor re-encoder queries run")
        write_vlad_layer(writer, vocabulary, global_descriptors)
        seconds = {k: round(v, 3) for k, v in built.statistics["seconds"].items()}
        writer.set_metadata(statistics={**built.statistics, "seconds": seconds})
        writer.commit()
    logger.info("ninjadesc map timings: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return output


def update_ninjadesc_map(package: MapPackage, update: Any, writer: MapWriter) -> None:
    """Bring the ``ninjadesc`` and ``vlad`` layers up to date with a core update (:mod:`segloc.maps.update`).

    The new images' keypoints are encoded once with the map's NinjaNet; the old observations keep
    their stored NinjaDesc; the VLAD vocabulary (NinjaDesc space) is kept and encodes the new images.
    """
    from segloc.methods.reference.layer import append_vlad_descriptors

    layer = read_ninjadesc_layer(package, update.old_core)
    model = read_ninjanet(package, layer)
    per_image = [
        describe(model, features, lambda name=image.name: update.load_image(name), layer.sift)
        for image, features in zip(update.new_images, update.features)
    ]
    descriptors = update.observation_values(layer.descriptors, [values.astype(np.float16) for values in per_image])
    writer.add_arrays(NINJADESC_LAYER, "descriptors", description="NinjaDesc of each core observation", descriptors=descriptors)
    meta = package.read_json(NINJADESC_LAYER, "meta")
    writer.add_json(NINJADESC_LAYER, "meta", {**meta, "core_points_sha256": core_checksum(writer.manifest["files"])})
    append_vlad_descriptors(package, writer, per_image, update.old_core)


def ninjadesc_attack_surface(package: MapPackage) -> Any:
    """What a NinjaDesc map gives an inversion attacker: the (M, C) NinjaDesc of the core observations.

    The attacker's training images (other places) get the same: the map's SIFT options, the
    map's base descriptor at those keypoints, then the map's own NinjaNet (it is in the map file).
    """
    from segloc.features.sift import extract_sift
    from segloc.maps.core import read_core
    from segloc.methods.registry import AttackSurface

    core = read_core(package)
    layer = read_ninjadesc_layer(package, core)
    model = read_ninjanet(package, layer)

    def features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        extracted = extract_sift(image, layer.sift)
        return extracted.keypoints, describe(model, extracted, image, layer.sift)

    return AttackSurface(
        f"NinjaDesc ({layer.descriptors.shape[1]} values) of every observation of every 3D point",
        layer.descriptors.astype(np.float32),
        features,
    )
