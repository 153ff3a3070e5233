"""The ``sfrs`` map layer: SFRS/NetVLAD retrieval that any method's map can carry.

Files of the layer:

- ``sfrs/descriptors.npz``: ``descriptors`` (I, d) float32, one global descriptor per mapping
  image in core image order (whitened when the layer has a whitening);
- ``sfrs/whitening.npz`` (optional): the PCA-whitening learnt on the mapping images
  (:class:`segloc.models.netvlad.PcaWhitening`);
- ``sfrs/network.npz``: the NetVLAD state dict (arrays named by parameter; no pickles);
- ``sfrs/meta.json``: the network config, the input size (``max_edge``), the checkpoint it came
  from, the whitening dimension and ``core_points_sha256`` (the core it was built with).

The descriptors are NetVLAD vectors of the mapping images: appearance summaries that a
privacy-preserving map would not otherwise hold (whether they can be inverted is not measured
here); a map without the layer holds none. :func:`add_sfrs_layer` writes a copy of a map with
the layer; :class:`SfrsRetriever` serves it (``localize.retrieval: sfrs``, see
:mod:`segloc.localize.retrieval`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segloc.config import check_options, config_from_dict, config_to_dict, option
from segloc.data.dataset import Dataset, load_image
from segloc.errors import SeglocError
from segloc.features.retrieval import search_inner_product
from segloc.geometry.transforms import Rigid3
from segloc.localize.priors import approximate_pose
from segloc.maps.core import core_checksum, read_core
from segloc.maps.package import MapPackage, MapWriter
from segloc.maps.scale import image_spacing
from segloc.models.checkpoint import load_checkpoint, load_weights, read_checkpoint_info
from segloc.models.export import read_onnx_layer
from segloc.models.netvlad import NetVlad, NetVladConfig, PcaWhitening, describe_images
from segloc.runtime.session import RuntimeConfig, SessionStatus

logger = logging.getLogger("segloc")

SFRS_LAYER = "sfrs"


@dataclass
class SfrsLayerConfig:
    """Options of :func:`add_sfrs_layer`.

    Attributes:
        checkpoint: a ``netvlad`` checkpoint folder (``segloc train sfrs``'s ``RUN/generation_G/checkpoint``).
        whitening_dim: PCA-whitening dimension learnt on the mapping images; 0: none (raw
            NetVLAD vectors; on 150 mapping images whitening lost recall in our runs).
        max_edge: longer side of the network input; None: the checkpoint's training size.
    """

    checkpoint: str = ""
    whitening_dim: int = option(0, ge=0, note="0: no whitening")
    max_edge: int | None = option(None, ge=32)

    def __post_init__(self) -> None:
        check_options(self)


def sfrs_networks(package: MapPackage) -> dict[str, tuple[NetVlad, tuple[int, int]]]:
    """The NetVLAD network of a map's ``sfrs`` layer at its input size (``netvlad``: (net, (W, H))), for ``segloc export``; {} without the layer."""
    from segloc.models.segmenter import inference_size

    if not package.has_layer(SFRS_LAYER):
        return {}
    retriever = SfrsRetriever.from_map(package)
    return {"netvlad": (retriever.network, inference_size(4, 3, retriever.max_edge))}


def add_sfrs_layer(
    map_path: str | Path, dataset: Dataset, config: SfrsLayerConfig, output: str | Path, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write ``output``: the map at ``map_path`` plus an ``sfrs`` layer of ``dataset``'s mapping images.

    Raises:
        SeglocError: no checkpoint, not a NetVLAD checkpoint, mapping images that are not the
            map's, ``output`` equal to the map without ``overwrite``.
    """
    if not config.checkpoint:
        raise SeglocError("sfrs layer: give the NetVLAD checkpoint (checkpoint: RUN/generation_G/checkpoint)")
    package = MapPackage.open(map_path)
    if Path(output).resolve() == package.path.resolve() and not overwrite:
        raise SeglocError(f"{output} is the input map; write the map with its sfrs layer elsewhere, or pass --overwrite to replace it")
    core = read_core(package)
    names = [image.name for image in core.images]
    if names != [record.name for record in dataset.mapping]:
        raise SeglocError(f"the dataset's mapping images are not those of map {map_path}; pass the dataset the map was built from")
    info = read_checkpoint_info(config.checkpoint)
    if info.model != "netvlad":
        raise SeglocError(f"{config.checkpoint} holds a {info.model!r} network; the sfrs layer needs a netvlad checkpoint")
    network = load_checkpoint(config.checkpoint)
    max_edge = config.max_edge or int(max(info.metadata.get("image_size") or [640]))
    images = [load_image(dataset.image_dir / name) for name in tqdm(names, desc="sfrs images", disable=not progress, leave=False)]
    descriptors = describe_images(network, images, max_edge)
    whitening = PcaWhitening.fit(descriptors, config.whitening_dim) if config.whitening_dim else None
    if whitening is not None:
        descriptors = whitening.whiten(descriptors)
    with MapWriter(output, method=package.method, frame_id=package.frame_id, base=package, overwrite=overwrite) as writer:
        writer.remove_layer(SFRS_LAYER)
        writer.add_arrays(
            SFRS_LAYER, "descriptors", description="SFRS/NetVLAD retrieval: one descriptor per mapping image", descriptors=descriptors
        )
        if whitening is not None:
            writer.add_arrays(SFRS_LAYER, "whitening", **whitening.to_arrays())
        writer.add_arrays(SFRS_LAYER, "network", **{k: v.detach().cpu().numpy() for k, v in network.state_dict().items()})
        meta = {
            "model_config": config_to_dict(network.config),
            "max_edge": max_edge,
            "checkpoint": str(config.checkpoint),
            "whitening_dim": config.whitening_dim,
            "core_points_sha256": core_checksum(writer.manifest["files"]),
        }
        writer.add_json(SFRS_LAYER, "meta", meta)
        writer.commit()
    logger.info("sfrs layer: %d mapping images, descriptors of dimension %d", len(names), descriptors.shape[1])
    return Path(output)


def update_sfrs_layer(package: MapPackage, update, writer: MapWriter, progress: bool = True) -> None:
    """Bring a map's ``sfrs`` layer up to date with a core update (:mod:`segloc.maps.update`).

    The new images are described by the layer's own network (not retrained), whitened with the
    layer's whitening when it has one (learnt on the old images, kept), and appended.
    """
    retriever = SfrsRetriever.from_map(package)
    names = [image.name for image in update.new_images]
    images = [update.load_image(name) for name in tqdm(names, desc="sfrs images", disable=not progress, leave=False)]
    descriptors = describe_images(retriever.network, images, retriever.max_edge)
    if retriever.whitening is not None:
        descriptors = retriever.whitening.whiten(descriptors)
    writer.add_arrays(
        SFRS_LAYER,
        "descriptors",
        description="SFRS/NetVLAD retrieval: one descriptor per mapping image",
        descriptors=np.concatenate([retriever.descriptors, descriptors]).astype(np.float32),
    )
    meta = package.read_json(SFRS_LAYER, "meta")
    writer.add_json(SFRS_LAYER, "meta", {**meta, "core_points_sha256": core_checksum(writer.manifest["files"])})


PRIOR_SPACINGS = 1.5
"""The ``weighted`` prior averages the retrieved poses within this many image spacings of the best one (as SegLoc's approximation)."""


@dataclass
class SfrsPriors:
    """Pose priors of one query from the ``sfrs`` layer.

    Attributes:
        image_ids: (R,) retrieved mapping image ids (core order), best first.
        similarities: (R,) their descriptor similarities.
        poses: ``cam_from_world`` priors, best first: the approximation (the best image's pose,
            or the weighted mean), then the poses of the next retrieved images.
    """

    image_ids: np.ndarray
    similarities: np.ndarray
    poses: list[Rigid3]


class SfrsRetriever:
    """Retrieval from a map's ``sfrs`` layer: the mapping images most similar to a query image.

    Attributes:
        poses: ``cam_from_world`` of the mapping images (core order).
        names: their names.
        session: the :class:`segloc.runtime.session.InferenceSession` that runs the network
            (the ``runtime`` backend; torch by default).
    """

    def __init__(
        self,
        network: NetVlad,
        descriptors: np.ndarray,
        whitening: PcaWhitening | None,
        max_edge: int,
        poses: list[Rigid3],
        names: list[str],
        device: str = "cpu",
        runtime: RuntimeConfig | None = None,
        onnx_path: str | Path | None = None,
    ):
        from segloc.models.export import GRAPHS, network_session
        from segloc.models.segmenter import inference_size

        if len(descriptors) != len(poses):
            raise SeglocError(f"the sfrs layer has {len(descriptors)} descriptors for {len(poses)} mapping images; rebuild it")
        self.network, self.descriptors, self.whitening = network.to(device).eval(), np.asarray(descriptors, np.float32), whitening
        self.max_edge, self.poses, self.names, self.device = max_edge, poses, names, device
        spacing = image_spacing(np.stack([pose.center for pose in poses])) if len(poses) > 1 else None
        self.image_spacing = float(spacing) if spacing else 1.0
        self.session = network_session(
            self.network, runtime or RuntimeConfig(), device, onnx_path, inference_size(4, 3, max_edge), GRAPHS["netvlad"]
        )

    def inference_status(self) -> list[SessionStatus]:
        """How the NetVLAD network runs (backend, engine cache, fallback)."""
        return [self.session.status]

    @classmethod
    def from_map(cls, package: MapPackage, device: str = "cpu", runtime: RuntimeConfig | None = None) -> SfrsRetriever:
        """Load the layer of an opened map; ``runtime`` picks the network's backend (the map's ``onnx`` layer is used when it holds the export).

        Raises:
            SeglocError: the map has no ``sfrs`` layer, or one built with another core.
        """
        if not package.has_layer(SFRS_LAYER):
            raise SeglocError(
                f"map {package.path} has no sfrs layer; add one with `segloc map add-sfrs MAP DATASET --checkpoint CKPT -o OUT`"
            )
        meta = package.read_json(SFRS_LAYER, "meta")
        if meta.get("core_points_sha256") != core_checksum(package.manifest["files"]):
            raise SeglocError(f"the sfrs layer of {package.path} was built for another core; rebuild it")
        network = NetVlad(config_from_dict(NetVladConfig, {**meta["model_config"], "pretrained": False}, where="sfrs layer network"))
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in package.read_arrays(SFRS_LAYER, "network").items()}
        load_weights(network, state, source=f"the sfrs layer of {package.path}")
        whitening = PcaWhitening.from_arrays(package.read_arrays(SFRS_LAYER, "whitening")) if meta.get("whitening_dim") else None
        core = read_core(package)
        descriptors = package.read_arrays(SFRS_LAYER, "descriptors")["descriptors"]
        runtime = runtime or RuntimeConfig()
        onnx_path = read_onnx_layer(package, network) if runtime.backend != "torch" else None
        return cls(
            network,
            descriptors,
            whitening,
            int(meta["max_edge"]),
            [i.cam_from_world for i in core.images],
            [i.name for i in core.images],
            device,
            runtime,
            onnx_path,
        )

    def describe(self, image: np.ndarray) -> np.ndarray:
        """The query's descriptor (d,) (whitened when the layer is)."""
        descriptor = describe_images(self.network, [image], self.max_edge, self.device, session=self.session)
        return (self.whitening.whiten(descriptor) if self.whitening is not None else descriptor)[0]

    def retrieve(self, image: np.ndarray, num_results: int) -> tuple[np.ndarray, np.ndarray]:
        """Mapping image ids (R,) best first and their similarities (R,) for an (H, W, 3) uint8 RGB image."""
        ids, scores = search_inner_product(self.describe(image)[None], self.descriptors, num_results)
        return ids[0], scores[0]

    def pose_priors(self, image: np.ndarray, num_results: int = 5, approximation: str = "weighted") -> SfrsPriors:
        """Pose priors of a query from retrieval alone (no method behind it): for a start-up without ``initialpose``.

        Args:
            image: (H, W, 3) uint8 RGB.
            num_results: mapping images retrieved.
            approximation: the first prior: ``top1`` (the best image's pose) or ``weighted``
                (the similarity-weighted mean of the retrieved poses within 1.5 image spacings
                and 30 degrees of the best one; :func:`segloc.localize.priors.approximate_pose`).
        """
        ids, similarities = self.retrieve(image, num_results)
        retrieved = [self.poses[int(i)] for i in ids]
        first = approximate_pose(retrieved, similarities, approximation, max_distance=PRIOR_SPACINGS * self.image_spacing)
        return SfrsPriors(ids, similarities, [first, *retrieved[1:]])
