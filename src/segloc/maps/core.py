"""The method-independent ``core`` layer of a map: mapping images, 3D points, observations.

Every method's map holds this layer: the mapping images (name, camera, ``cam_from_world``)
and the sparse 3D points with their observations (which mapping image saw which point where).
It carries no appearance (no descriptors, no colours), so that a privacy-preserving map can be
``core`` plus its own layers. Files::

    core/images.json     {"images": [{"name", "camera": {...}, "quat_wxyz", "translation"[, "timestamp"]}]}
    core/points3D.npz    points3D (P, 3) float64, point_errors (P,) float32,
                         observation_point_ids (M,) int32, observation_image_ids (M,) int32,
                         observation_xy (M, 2) float32

Image ids are indices into ``images`` (0-based); point ids are row indices into ``points3D``.
Observation pixels use COLMAP's convention (top-left pixel centre at (0.5, 0.5)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segloc.data.dataset import ImageRecord
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.maps.package import MapPackage, MapWriter

CORE_LAYER = "core"


@dataclass
class MapCore:
    """Mapping images and 3D points with their observations.

    Attributes:
        images: the mapping images; an image id is an index into this list.
        points3D: (P, 3) float64 world coordinates, metres.
        point_errors: (P,) float32 mean reprojection error of each point over its track, pixels.
        observation_point_ids: (M,) int32 point id of each observation.
        observation_image_ids: (M,) int32 image id of each observation.
        observation_xy: (M, 2) float32 pixel coordinates of each observation, COLMAP convention.
    """

    images: list[ImageRecord]
    points3D: np.ndarray
    point_errors: np.ndarray
    observation_point_ids: np.ndarray
    observation_image_ids: np.ndarray
    observation_xy: np.ndarray

    def __post_init__(self) -> None:
        self.points3D = np.asarray(self.points3D, dtype=np.float64).reshape(-1, 3)
        self.point_errors = np.asarray(self.point_errors, dtype=np.float32).reshape(-1)
        self.observation_point_ids = np.asarray(self.observation_point_ids, dtype=np.int32).reshape(-1)
        self.observation_image_ids = np.asarray(self.observation_image_ids, dtype=np.int32).reshape(-1)
        self.observation_xy = np.asarray(self.observation_xy, dtype=np.float32).reshape(-1, 2)
        self.validate()

    def validate(self, where: str = "map core") -> None:
        """Raise SeglocError if shapes disagree, ids are out of range or values are not finite."""
        num_points, num_obs = len(self.points3D), len(self.observation_point_ids)
        if len(self.point_errors) != num_points:
            raise SeglocError(f"{where}: {len(self.point_errors)} point errors for {num_points} points")
        if len(self.observation_image_ids) != num_obs or len(self.observation_xy) != num_obs:
            raise SeglocError(
                f"{where}: observation arrays differ in length ({num_obs} point ids, {len(self.observation_image_ids)} image ids, "
                f"{len(self.observation_xy)} pixels)"
            )
        if num_obs and (self.observation_point_ids.min() < 0 or self.observation_point_ids.max() >= num_points):
            raise SeglocError(f"{where}: observation point ids outside [0, {num_points})")
        if num_obs and (self.observation_image_ids.min() < 0 or self.observation_image_ids.max() >= len(self.images)):
            raise SeglocError(f"{where}: observation image ids outside [0, {len(self.images)})")
        if not (np.all(np.isfinite(self.points3D)) and np.all(np.isfinite(self.observation_xy))):
            raise SeglocError(f"{where}: non-finite 3D points or observation pixels")
        names = [image.name for image in self.images]
        if len(set(names)) != len(names):
            raise SeglocError(f"{where}: duplicate mapping image names")

    # --- queries ------------------------------------------------------------------------
    @property
    def num_points(self) -> int:
        return len(self.points3D)

    @property
    def num_observations(self) -> int:
        return len(self.observation_point_ids)

    def image_id(self, name: str) -> int:
        """The id of the mapping image called ``name``."""
        for image_id, image in enumerate(self.images):
            if image.name == name:
                return image_id
        raise SeglocError(f"the map has no mapping image named {name!r}")

    def track_lengths(self) -> np.ndarray:
        """(P,) int64 number of observations of each point."""
        return np.bincount(self.observation_point_ids, minlength=self.num_points)

    def observations_by_image(self) -> tuple[np.ndarray, np.ndarray]:
        """Observation indices grouped by image.

        Returns:
            order (M,) int64 observation indices sorted by image id (stable), and offsets
            (I + 1,) int64: the observations of image ``i`` are ``order[offsets[i]:offsets[i + 1]]``.
        """
        order = np.argsort(self.observation_image_ids, kind="stable")
        counts = np.bincount(self.observation_image_ids, minlength=len(self.images))
        return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def image_observations(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Point ids (K,) and pixels (K, 2) of the points observed in image ``image_id``."""
        mask = self.observation_image_ids == image_id
        return self.observation_point_ids[mask], self.observation_xy[mask]


def _image_to_dict(image: ImageRecord) -> dict:
    values = {
        "name": image.name,
        "camera": image.camera.to_dict(),
        "quat_wxyz": [float(v) for v in image.cam_from_world.quat_wxyz],
        "translation": [float(v) for v in image.cam_from_world.translation],
    }
    if image.timestamp is not None:
        values["timestamp"] = float(image.timestamp)
    return values


def _image_from_dict(values: dict, where: str) -> ImageRecord:
    try:
        return ImageRecord(
            str(values["name"]),
            Rigid3(np.asarray(values["quat_wxyz"], dtype=np.float64), np.asarray(values["translation"], dtype=np.float64)),
            Camera.from_dict(values["camera"]),
            None if values.get("timestamp") is None else float(values["timestamp"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SeglocError(f"{where}: malformed image entry ({type(exc).__name__}: {exc})") from None


def core_checksum(manifest_files: dict) -> str:
    """SHA-256 of ``core/points3D.npz`` in a manifest's ``files``: a layer that refers to the core's points records it.

    Raises:
        SeglocError: the core layer is not in ``manifest_files`` (it must be written first).
    """
    info = manifest_files.get("core/points3D.npz")
    if info is None:
        raise SeglocError("the core layer must be written before the layers that refer to its points")
    return info["sha256"]


def write_core(writer: MapWriter, core: MapCore) -> None:
    """Add the ``core`` layer (``core/images.json``, ``core/points3D.npz``) to a map being written."""
    core.validate()
    writer.add_json(CORE_LAYER, "images", {"images": [_image_to_dict(image) for image in core.images]}, description="mapping images")
    writer.add_arrays(
        CORE_LAYER,
        "points3D",
        description="3D points and their observations in the mapping images",
        points3D=core.points3D.astype(np.float64),
        point_errors=core.point_errors.astype(np.float32),
        observation_point_ids=core.observation_point_ids.astype(np.int32),
        observation_image_ids=core.observation_image_ids.astype(np.int32),
        observation_xy=core.observation_xy.astype(np.float32),
    )


def read_core(package: MapPackage) -> MapCore:
    """Read and validate the ``core`` layer of an opened map."""
    where = f"map {package.path}, layer core"
    if not package.has_layer(CORE_LAYER):
        raise SeglocError(f"map {package.path} has no core layer (layers: {', '.join(package.layers) or 'none'}); rebuild the map")
    listing = package.read_json(CORE_LAYER, "images")
    if not isinstance(listing, dict) or not isinstance(listing.get("images"), list):
        raise SeglocError(f"{where}: images.json must hold {{'images': [...]}}")
    images = [_image_from_dict(values, where) for values in listing["images"]]
    arrays = package.read_arrays(CORE_LAYER, "points3D")
    required = ("points3D", "point_errors", "observation_point_ids", "observation_image_ids", "observation_xy")
    missing = [key for key in required if key not in arrays]
    if missing:
        raise SeglocError(f"{where}: points3D.npz lacks {', '.join(missing)}")
    points3D = arrays["points3D"]
    if points3D.ndim != 2 or points3D.shape[1] != 3:
        raise SeglocError(f"{where}: points3D has shape {points3D.shape}, expected (P, 3)")
    if arrays["observation_xy"].ndim != 2 or arrays["observation_xy"].shape[1] != 2:
        raise SeglocError(f"{where}: observation_xy has shape {arrays['observation_xy'].shape}, expected (M, 2)")
    for key in ("point_errors", "observation_point_ids", "observation_image_ids"):
        if arrays[key].ndim != 1:
            raise SeglocError(f"{where}: {key} has shape {arrays[key].shape}, expected a vector")
    for key in ("observation_point_ids", "observation_image_ids"):
        if not np.issubdtype(arrays[key].dtype, np.integer):
            raise SeglocError(f"{where}: {key} has dtype {arrays[key].dtype}, expected integers")
    try:
        return MapCore(
            images,
            points3D,
            arrays["point_errors"],
            arrays["observation_point_ids"],
            arrays["observation_image_ids"],
            arrays["observation_xy"],
        )
    except SeglocError as exc:
        raise SeglocError(f"map {package.path} is invalid: {exc}") from None
