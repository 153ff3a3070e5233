"""A toy localization method, ``toy``, that lives outside the library: the shape of a plug-in, for tests.

Its map is the shared core (:func:`segloc.maps.build.build_core`, through
:func:`segloc.maps.build.core_for`) plus one small layer, ``toy``: a tiny grey thumbnail of every
mapping image (``thumbnail_size`` x ``thumbnail_size``, zero mean, unit norm). Its localizer
returns the pose of the mapping image whose thumbnail is the most similar to the query's, with a
fixed covariance of the mapping images' spacing, as a :class:`segloc.localize.base.LocalizationResult`. It ignores priors (``prior_use = "none"``).

Three ways to make it known, as for any method (``docs/adding_a_method.md``):

- ``register_method(METHOD)`` in this process (the tests of ``test_registry.py``);
- an entry point of the ``segloc.methods`` group: :func:`write_entry_point` writes a
  distribution (``*.dist-info`` with ``entry_points.txt``) into a folder; with that folder on
  ``sys.path`` or ``PYTHONPATH``, a fresh process (``segloc`` CLI, a ROS node) finds ``toy``
  through :func:`segloc.methods.get_method` without any code of its own;
- (for the project's own methods) a line of ``BUILTIN_METHODS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloc.config import config_to_dict
from segloc.errors import SeglocError
from segloc.features.retrieval import rank_by_similarity
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.localize.base import LocalizationResult
from segloc.maps.build import CoreConfig, core_for
from segloc.maps.core import MapCore, read_core, write_core
from segloc.maps.package import MapPackage, MapWriter
from segloc.methods import ENTRY_POINT_GROUP, Method

__all__ = ["METHOD", "NAME", "NearestImageLocalizer", "NearestImageMethod", "ToyLocalizerConfig", "ToyMapConfig", "write_entry_point"]

NAME = "toy"
LAYER = "toy"


@dataclass
class ToyMapConfig:
    """The ``map:`` section of the toy method.

    Attributes:
        core: the shared geometry (every method's map has it).
        thumbnail_size: side of the grey thumbnail kept per mapping image (pixels).
    """

    core: CoreConfig = field(default_factory=CoreConfig)
    thumbnail_size: int = 4

    def __post_init__(self) -> None:
        if self.thumbnail_size < 1:
            raise SeglocError(f"toy map: thumbnail_size must be at least 1, got {self.thumbnail_size}")


@dataclass
class ToyLocalizerConfig:
    """The ``localize:`` section of the toy method.

    Attributes:
        min_similarity: below this similarity (cosine, in [-1, 1]) of the best image, no pose.
    """

    min_similarity: float = -1.0


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """(size * size,) float32 zero-mean unit-norm grey thumbnail of an (H, W, 3) RGB uint8 image."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).reshape(-1)
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 0 else small


class NearestImageLocalizer:
    """The pose of the most similar mapping image (thumbnail dot product)."""

    method = NAME

    def __init__(self, core: MapCore, thumbnails: np.ndarray, config: ToyLocalizerConfig):
        if thumbnails.shape[0] != len(core.images):
            raise SeglocError(f"toy map: {thumbnails.shape[0]} thumbnails for {len(core.images)} mapping images")
        self.core, self.thumbnails, self.config = core, thumbnails, config
        self.size = int(round(np.sqrt(thumbnails.shape[1])))

    @classmethod
    def from_map(cls, package: MapPackage, config: ToyLocalizerConfig) -> NearestImageLocalizer:
        return cls(read_core(package), package.read_arrays(LAYER, "thumbnails")["thumbnails"].astype(np.float32), config)

    def localize(self, image: np.ndarray, camera: Camera, prior: Rigid3 | None = None) -> LocalizationResult:
        start = time.perf_counter()
        query = thumbnail(image, self.size)
        describe = time.perf_counter() - start
        indices, scores = rank_by_similarity(query, self.thumbnails, 1)
        timings = {"describe": describe, "retrieve": time.perf_counter() - start - describe}
        best, similarity = int(indices[0]), float(scores[0])
        info = {"retrieved": self.core.images[best].name, "similarity": similarity}
        if similarity < self.config.min_similarity:
            return LocalizationResult(None, timings=timings, info={**info, "failure_reason": "no similar mapping image"})
        # A nearest-image pose is as good as the mapping images' spacing: say so (0.3 m, 5 degrees), so a robot may publish it.
        covariance = np.diag([0.3**2] * 3 + [np.radians(5.0) ** 2] * 3)
        return LocalizationResult(self.core.images[best].cam_from_world, covariance, num_inliers=1, timings=timings, info=info)


class NearestImageMethod(Method):
    """The registry entry of the toy method."""

    name = NAME
    description = "toy: the pose of the mapping image with the most similar grey thumbnail (tests only)"
    map_config_class = ToyMapConfig
    localize_config_class = ToyLocalizerConfig
    prior_use = "none"

    def build_map(self, dataset, output: Path, config: ToyMapConfig, *, overwrite: bool = False, progress: bool = True, core=None) -> Path:
        output = Path(output)
        if output.exists() and not overwrite:
            raise SeglocError(f"{output} exists already; pass --overwrite to replace it")
        built = core_for(dataset, config.core, progress, core)
        thumbnails = np.stack([thumbnail(dataset.load_image(record.name), config.thumbnail_size) for record in built.core.images])
        created = {"source": str(Path(dataset.root).resolve()), "config": config_to_dict(config)}
        with MapWriter(output, method=self.name, frame_id=config.core.frame_id, overwrite=overwrite, created=created) as writer:
            write_core(writer, built.core)
            writer.add_arrays(LAYER, "thumbnails", description="grey thumbnail of each mapping image", thumbnails=thumbnails)
            writer.commit()
        return output

    def load_localizer(self, package: MapPackage, config: Any) -> NearestImageLocalizer:
        return NearestImageLocalizer.from_map(package, config)


METHOD = NearestImageMethod()

#: The module the entry point's shim loads (this file), by path: it is not on sys.path by default.
SHIM_MODULE = "segloc_toy_method_plugin"


def write_entry_point(folder: str | Path, name: str = NAME) -> Path:
    """Make ``METHOD`` a ``segloc.methods`` plug-in for processes with ``folder`` on their ``PYTHONPATH``.

    Writes into ``folder`` a distribution ``segloc_toy_method-0.1.dist-info`` (``METADATA`` and
    ``entry_points.txt`` with ``name = segloc_toy_method_plugin:METHOD``) and the small module
    it names, which loads this file as the module ``toy_method`` (the tests' directory is not
    importable). ``importlib.metadata`` finds distributions on ``sys.path``, so in another
    process::

        env["PYTHONPATH"] = os.pathsep.join([str(write_entry_point(tmp_path)), env.get("PYTHONPATH", "")])

    and ``segloc.methods.get_method("toy")`` there returns the toy method. In this process,
    put ``folder`` on ``sys.path`` and reset the registry's entry-point scan.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    dist_info = folder / "segloc_toy_method-0.1.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: segloc-toy-method\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {SHIM_MODULE}:METHOD\n")
    (folder / f"{SHIM_MODULE}.py").write_text(
        '"""Written by toy_method.write_entry_point: the toy method of the segloc tests as a plug-in."""\n'
        "import importlib.util\n"
        "import sys\n\n"
        'if "toy_method" not in sys.modules:\n'
        f'    _spec = importlib.util.spec_from_file_location("toy_method", {str(Path(__file__).resolve())!r})\n'
        "    _module = importlib.util.module_from_spec(_spec)\n"
        '    sys.modules["toy_method"] = _module  # dataclasses look their module up there\n'
        "    _spec.loader.exec_module(_module)\n"
        'METHOD = sys.modules["toy_method"].METHOD\n'
    )
    return folder
