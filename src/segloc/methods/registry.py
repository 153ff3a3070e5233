"""The registry of localization methods: what a method is, and how the rest of the project finds it.

A method is a :class:`Method`: it says how its map layers are built from a dataset (on top of
the shared core build, :func:`segloc.maps.build.build_core`), how its localizer is built from a
map package, which config dataclasses hold its ``map:`` and ``localize:`` options, and what it
can take as a prior. The CLI (``segloc map build``, ``localize``, ``evaluate``, ``demo``), the
benchmarks and the ROS ``localizer_node`` find methods here by name; nothing outside a method's
own package branches on its name.

Methods come from three places, looked up in this order:

1. the ones registered at run time with :func:`register_method` (tests, notebooks);
2. the project's own (:data:`BUILTIN_METHODS`: the module of each, imported on first use so that
   ``segloc --help`` stays fast);
3. plug-in packages, through the ``segloc.methods`` entry-point group: an entry
   ``name = "package.module:OBJECT"`` whose object is a :class:`Method` instance (or a class
   that builds one without arguments)::

       [project.entry-points."segloc.methods"]
       mymethod = "my_package.method:METHOD"

Adding a method is a package under ``segloc/methods/`` (or a plug-in) with one such object; see
``docs/adding_a_method.md``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from segloc.errors import SeglocError

if TYPE_CHECKING:
    from segloc.data.dataset import Dataset
    from segloc.localize.base import Localizer
    from segloc.maps.build import CoreBuild, CoreConfig
    from segloc.maps.package import MapPackage, MapWriter
    from segloc.maps.update import CoreUpdate

logger = logging.getLogger("segloc")

__all__ = [
    "BUILTIN_METHODS",
    "ENTRY_POINT_GROUP",
    "PRIOR_USES",
    "TRAINER_ENTRY_POINT_GROUP",
    "AttackSurface",
    "DemoContext",
    "DemoRun",
    "Method",
    "available_methods",
    "geometry_attack_surface",
    "get_method",
    "load_trainer",
    "register_method",
    "unregister_method",
]

#: The entry-point group plug-in packages register their methods in.
ENTRY_POINT_GROUP = "segloc.methods"
#: The entry-point group of the methods' trainers (packages above the library, e.g. ``segloc_train``):
#: ``name = "module:function"`` with ``function(dataset_dir, output_dir, *, epochs, progress) -> checkpoint``.
TRAINER_ENTRY_POINT_GROUP = "segloc.trainers"

#: The project's own methods: name -> module that defines ``METHOD``.
BUILTIN_METHODS: dict[str, str] = {
    "ninjadesc": "segloc.methods.ninjadesc",
    "reference": "segloc.methods.reference",
    "segloc": "segloc.methods.segloc",
    "sld": "segloc.methods.sld",
}

#: What a localizer does with ``localize(..., prior=cam_from_world)``: ``none`` ignores it,
#: ``restricts`` only narrows its search to the map near it (candidate images, landmarks),
#: ``starts`` starts its estimate from it (refinement, tracking).
PRIOR_USES = ("none", "restricts", "starts")


@dataclass(frozen=True)
class DemoRun:
    """One row of ``segloc demo``'s table: a method's localizer with some ``localize:`` options.

    Attributes:
        name: the row name (unique in the table).
        localize: ``localize:`` options over the method's defaults (e.g. ``{"refine": False}``).
    """

    name: str
    localize: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoContext:
    """What ``segloc demo`` knows when it asks a method for its map options.

    Attributes:
        dataset_dir: the rendered demo dataset.
        output_dir: the demo's output folder (a method may write there, e.g. a training run).
        scene, seed, size: how the dataset was rendered (``segloc synth`` options).
        train: the user asked to train the method's networks again (``--train``).
        train_epochs: epochs of that training.
        checkpoint: a network the user passed (``--checkpoint``), for methods that take one.
        progress: show progress bars.
    """

    dataset_dir: Path
    output_dir: Path
    scene: str
    seed: int
    size: tuple[int, int]
    train: bool = False
    train_epochs: int = 10
    checkpoint: Path | None = None
    progress: bool = True


@dataclass(frozen=True)
class AttackSurface:
    """What an inversion attacker gets from a map file (``segloc audit``, :mod:`segloc.evaluate.audit`).

    The attacker projects the core's 3D points into each mapping camera and rasterises, at each
    projection, the attributes the map stores for that observation; it learns to invert them on
    images of other places, where it computes the same attributes with what the map holds
    (the map's SIFT options, the map's own network).

    Attributes:
        description: one line for ``audit.json``: what the map holds per point.
        observation_attributes: (M, C) float32 attributes of each core observation (a per-point
            attribute repeated over its observations); C may be 0 (geometry only).
        features: ``features(image) -> (points2D (N, 2), attributes (N, C))``: keypoints of an
            (H, W, 3) uint8 RGB image of another place, COLMAP pixel convention, with the same
            C attributes the map would store for them (the attacker's training inputs).
    """

    description: str
    observation_attributes: np.ndarray
    features: Any

    @property
    def num_channels(self) -> int:
        return int(self.observation_attributes.shape[1])


def geometry_attack_surface(package: MapPackage) -> AttackSurface:
    """The attack surface of the ``core`` layer alone: projected 3D points (depth, validity), no attribute channel.

    SIFT keypoints (the map's core options) stand for the points of another place's images.
    """
    from segloc.features.sift import extract_sift
    from segloc.maps.build import core_sift_config
    from segloc.maps.core import read_core

    core = read_core(package)
    sift = core_sift_config(package)

    def features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keypoints = extract_sift(image, sift).keypoints
        return keypoints, np.zeros((len(keypoints), 0), np.float32)

    return AttackSurface(
        "core only: 3D points and their observations, no per-point appearance",
        np.zeros((core.num_observations, 0), np.float32),
        features,
    )


class Method(ABC):
    """A localization method (see the module docstring).

    Subclasses set the class attributes and implement :meth:`build_map` and
    :meth:`load_localizer`; the config helpers and the demo hooks have defaults.

    Attributes:
        name: the registry name (also the ``method`` of the map packages it writes).
        description: one line for ``--help`` and ``segloc map info``.
        map_config_class: dataclass of the ``map:`` section; it must have a ``core`` field
            (:class:`segloc.maps.build.CoreConfig`) unless :meth:`core_config` is overridden.
        localize_config_class: dataclass of the ``localize:`` section.
        prior_use: what the localizer does with a pose prior, one of :data:`PRIOR_USES`.
        tracks: the localizer tracks (:class:`segloc.localize.tracking.Tracker`: refines from
            the pose odometry predicts, relocalizes when that fails); False: the pipeline
            relocalizes every frame.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    map_config_class: ClassVar[type]
    localize_config_class: ClassVar[type]
    prior_use: ClassVar[str] = "none"
    tracks: ClassVar[bool] = False

    # --- configs ---------------------------------------------------------------------------
    def map_config(self, values: dict[str, Any] | Any | None = None) -> Any:
        """The ``map:`` options from a dict (unknown keys and bad values rejected), or the defaults."""
        from segloc.config import config_from_dict

        return config_from_dict(self.map_config_class, values, "map")

    def localize_config(self, values: dict[str, Any] | Any | None = None) -> Any:
        """The ``localize:`` options from a dict (unknown keys and bad values rejected), or the defaults."""
        from segloc.config import config_from_dict

        return config_from_dict(self.localize_config_class, values, "localize")

    def core_config(self, map_config: Any) -> CoreConfig:
        """The options of the shared core build in ``map_config`` (maps whose core configs are equal can share one build)."""
        return map_config.core

    # --- what each method implements ------------------------------------------------------
    @abstractmethod
    def build_map(
        self,
        dataset: Dataset,
        output: Path,
        config: Any,
        *,
        overwrite: bool = False,
        progress: bool = True,
        core: CoreBuild | None = None,
    ) -> Path:
        """Build the method's map package of ``dataset``'s mapping images at ``output``.

        Args:
            dataset: the dataset (mapping images with poses).
            output: the map package folder.
            config: a :attr:`map_config_class` instance (:meth:`map_config`).
            overwrite: replace an existing map at ``output``.
            progress: show progress bars.
            core: the shared core build of ``dataset`` with :meth:`core_config` (another map
                of the same images built it already); None builds it.

        Returns:
            ``output``.
        """

    @abstractmethod
    def load_localizer(self, package: MapPackage, config: Any) -> Localizer:
        """The localizer over an opened map package, with a :attr:`localize_config_class` instance."""

    def derived_options(self, package: MapPackage, config: Any) -> dict[str, float]:
        """The ``localize:`` options the localizer would derive from this map with ``config`` (name -> value).

        For ``segloc map info``; the default, for methods that derive nothing from the map, is {}.
        """
        return {}

    def networks(self, package: MapPackage) -> dict[str, tuple[Any, tuple[int, int]]]:
        """The networks a map of this method runs, for ``segloc export MAP``: name -> (torch module, (width, height) input size).

        The default, for methods whose maps carry no network, is {}.
        """
        return {}

    def attack_surface(self, package: MapPackage) -> AttackSurface:
        """What an inversion attacker gets from this method's map (``segloc audit``).

        The default is the ``core`` layer alone (:func:`geometry_attack_surface`): 3D points with
        their depth in each mapping camera and no attribute channel. That is the whole attack
        surface of a map without per-point appearance, e.g. SLD's (network weights only; its
        core holds the points the evaluator uses). A method whose map stores something per 3D
        point or observation (descriptors, labels) overrides this and returns those attributes.
        """
        return geometry_attack_surface(package)

    # --- incremental updates (segloc map update) -------------------------------------------
    #: The update triangulates the new images and merges / retires / adds core points
    #: (:func:`segloc.maps.update.update_core`); False: it only appends the new images to the
    #: core (a method whose core points are not triangulated points, e.g. SLD's landmarks).
    update_points: ClassVar[bool] = True

    def update_layers(self, package: MapPackage, update: CoreUpdate, writer: MapWriter, *, progress: bool = True) -> None:
        """Bring this method's layers of ``package`` up to date with a core update (``segloc map update``).

        :func:`segloc.maps.update.update_map` has written ``update.core`` into ``writer`` (which
        carries every layer of ``package``); the hook rewrites each of the method's layers that
        depends on the core (per-point or per-observation data, per-image retrieval
        descriptors), from what the map holds plus the new images (``update.features``,
        ``update.load_image``, :meth:`segloc.maps.update.CoreUpdate.observation_values`), and
        records the new core's checksum in them. Networks are not retrained.

        The default: the method cannot update its maps (:meth:`check_updatable` says so).
        """
        self.check_updatable()

    def check_updatable(self) -> None:
        """Raise SeglocError unless this method overrides :meth:`update_layers`."""
        if type(self).update_layers is Method.update_layers:
            raise SeglocError(
                f"method {self.name!r} cannot update its maps incrementally (it has no update_layers hook); "
                f"rebuild the map from all recordings with `segloc map build --method {self.name}`"
            )

    # --- segloc demo ------------------------------------------------------------------------
    def demo_map_config(self, context: DemoContext) -> dict[str, Any]:
        """``map:`` options for ``segloc demo`` on its scene (default: none, the method's defaults)."""
        return {}

    def demo_runs(self) -> list[DemoRun]:
        """The rows this method adds to ``segloc demo``'s table (default: one, with its defaults)."""
        return [DemoRun(self.name)]

    def __repr__(self) -> str:
        return f"<method {self.name!r}: {type(self).__module__}.{type(self).__name__}>"


_lock = threading.Lock()
_registered: dict[str, Method] = {}
_entry_points_loaded = False


def _check_method(method: Any, source: str) -> Method:
    if isinstance(method, type) and issubclass(method, Method):
        method = method()
    if not isinstance(method, Method):
        raise SeglocError(f"{source} is not a segloc.methods.Method (got {type(method).__name__})")
    for attribute in ("name", "description", "map_config_class", "localize_config_class"):
        if not hasattr(method, attribute):
            raise SeglocError(f"method {source} lacks the class attribute {attribute!r}")
    if method.prior_use not in PRIOR_USES:
        raise SeglocError(f"method {method.name!r}: prior_use must be one of {', '.join(PRIOR_USES)}, got {method.prior_use!r}")
    if not isinstance(method.tracks, bool):
        raise SeglocError(f"method {method.name!r}: tracks must be True or False, got {method.tracks!r}")
    return method


def register_method(method: Method | type[Method], replace: bool = False) -> Method:
    """Register a method under its ``name``; returns the registered instance.

    Raises:
        SeglocError: not a :class:`Method`, or the name is taken, by a registered or a built-in
            method (unless ``replace``; a replaced built-in comes back with :func:`unregister_method`).
    """
    method = _check_method(method, repr(method))
    with _lock:
        taken = _registered.get(method.name)
        if not replace and (taken is not None or method.name in BUILTIN_METHODS):
            owner = repr(taken) if taken is not None else f"built in, {BUILTIN_METHODS[method.name]}"
            raise SeglocError(f"a method named {method.name!r} is registered already ({owner}); pass replace=True to replace it")
        _registered[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a method registered with :func:`register_method` (no error when it is not)."""
    with _lock:
        _registered.pop(name, None)


def _load_builtin(name: str) -> Method:
    module = importlib.import_module(BUILTIN_METHODS[name])
    method = _check_method(module.METHOD, f"{BUILTIN_METHODS[name]}:METHOD")
    with _lock:
        _registered.setdefault(name, method)
        return _registered[name]


def _load_entry_points() -> None:
    """Register the plug-ins of the ``segloc.methods`` entry-point group (once; a broken plug-in is logged and skipped)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _registered or entry.name in BUILTIN_METHODS:
            continue
        try:
            method = _check_method(entry.load(), f"entry point {entry.name} = {entry.value}")
        except Exception as exc:  # a broken plug-in must not break the other methods
            logger.warning("method plug-in %s (%s) is unavailable: %s", entry.name, entry.value, exc)
            continue
        if method.name != entry.name:
            logger.warning("method plug-in %s names itself %r; registered as %r", entry.value, method.name, method.name)
        with _lock:
            _registered.setdefault(method.name, method)


def available_methods() -> list[str]:
    """Names of every method: registered, built in and plug-ins (sorted)."""
    _load_entry_points()
    with _lock:
        return sorted(set(_registered) | set(BUILTIN_METHODS))


def get_method(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
        SeglocError: no such method (the message lists those available).
    """
    with _lock:
        method = _registered.get(name)
    if method is not None:
        return method
    if name in BUILTIN_METHODS:
        return _load_builtin(name)
    _load_entry_points()
    with _lock:
        method = _registered.get(name)
    if method is None:
        raise SeglocError(f"unknown method {name!r}; available methods: {', '.join(available_methods())}")
    return method


def load_trainer(name: str) -> Any:
    """The trainer of method ``name`` from the ``segloc.trainers`` entry-point group.

    A trainer is ``train(dataset_dir, output_dir, *, epochs, progress) -> Path`` (the checkpoint
    folder it wrote; it resumes a run left in ``output_dir``). Trainers live above the library
    (``segloc_train``), which is why the library reaches them through entry points.

    Raises:
        SeglocError: no trainer of that name is installed.
    """
    from importlib.metadata import entry_points

    for entry in entry_points(group=TRAINER_ENTRY_POINT_GROUP):
        if entry.name == name:
            return entry.load()
    raise SeglocError(
        f"no trainer for method {name!r} is installed (entry-point group {TRAINER_ENTRY_POINT_GROUP}); "
        "install the project with its training package (pip install -e .) or pass a trained checkpoint"
    )
