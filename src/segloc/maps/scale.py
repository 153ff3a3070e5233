"""The scale of a mapped place, measured on a map's core: how far apart the mapping images are, how far they see.

A room mapped by a robot and a street mapped by a car differ by an order of magnitude in every
distance a localizer uses (how far apart neighbouring mapping images are, how far a pose
estimate may have to move, which images are "near" a prior). Options in metres therefore
cannot have one default that fits both; methods derive them from the :class:`MapScale` of the
map they localize against (e.g. :func:`segloc.methods.segloc.defaults.derive_scale_options`)
unless a config sets them.

The measures are robust (medians and percentiles), so that a few far points (a triangulated
point on the horizon, a mapping image taken from elsewhere) do not change them:

- ``image_spacing``: the median, over mapping images, of the distance from its camera centre
  to the nearest other camera centre (cameras at the same place, e.g. a robot standing still,
  are left out: their distance is 0). It is how far a query can be from the nearest mapping
  image while still between two of them.
- ``scene_depth``: the median depth (along the optical axis) of the observed 3D points in the
  mapping images that observe them: how far the cameras see.
- ``extent``: the diagonal of the box between the 5th and 95th percentiles of the 3D points
  and camera centres on each axis: the size of the place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from segloc.errors import SeglocError
from segloc.maps.core import MapCore

__all__ = ["MapScale", "map_scale"]

#: Camera centres closer than this (metres) count as one place for ``image_spacing``.
SAME_PLACE = 1e-6
#: Percentiles of the points and camera centres whose box gives ``extent``.
EXTENT_PERCENTILES = (5.0, 95.0)


@dataclass(frozen=True)
class MapScale:
    """The scale of a mapped place (see the module docstring); all distances in metres.

    Attributes:
        image_spacing: median nearest-neighbour distance between mapping camera centres;
            None with fewer than two distinct camera centres.
        scene_depth: median depth of the observed points in the images observing them; None
            without observations in front of a camera.
        extent: diagonal of the robust (5th to 95th percentile) box of the points and camera centres.
        num_images: mapping images.
        num_points: 3D points.
    """

    image_spacing: float | None
    scene_depth: float | None
    extent: float
    num_images: int
    num_points: int

    def as_dict(self) -> dict[str, float | int | None]:
        """The measures as a JSON-serialisable dict (distances rounded to millimetres)."""
        return {key: round(value, 3) if isinstance(value, float) else value for key, value in asdict(self).items()}

    def describe(self) -> str:
        """One line for logs and ``segloc map info``."""

        def metres(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3g} m"

        return (
            f"image spacing {metres(self.image_spacing)}, scene depth {metres(self.scene_depth)}, extent {metres(self.extent)} "
            f"({self.num_images} images, {self.num_points} points)"
        )


def image_spacing(centers: np.ndarray) -> float | None:
    """Median distance from each camera centre (N, 3) to its nearest distinct other one; None with no two distinct centres."""
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    if len(centers) < 2:
        return None
    nearest = np.full(len(centers), np.inf)
    for start in range(0, len(centers), 1024):  # (1024, N) distances at a time: large maps stay in memory
        block = np.linalg.norm(centers[start : start + 1024, None] - centers[None], axis=2)
        block[block <= SAME_PLACE] = np.inf
        nearest[start : start + 1024] = block.min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    return float(np.median(nearest)) if len(nearest) else None


def map_scale(core: MapCore) -> MapScale:
    """The :class:`MapScale` of a map core.

    Raises:
        SeglocError: a core without mapping images.
    """
    if not core.images:
        raise SeglocError("the map has no mapping images: its scale cannot be measured")
    centers = np.stack([image.cam_from_world.center for image in core.images])
    depth = None
    if core.num_observations:
        rotations = np.stack([image.cam_from_world.rotation for image in core.images])
        translations = np.stack([image.cam_from_world.translation for image in core.images])
        image_ids = core.observation_image_ids
        # z of R p + t for each observation: the third row of the observing image's rotation
        depths = np.einsum("ij,ij->i", rotations[image_ids, 2], core.points3D[core.observation_point_ids]) + translations[image_ids, 2]
        depths = depths[depths > 0]
        depth = float(np.median(depths)) if len(depths) else None
    everything = np.concatenate([core.points3D, centers])
    low, high = np.percentile(everything, EXTENT_PERCENTILES, axis=0)
    return MapScale(
        image_spacing=image_spacing(centers),
        scene_depth=depth,
        extent=float(np.linalg.norm(high - low)),
        num_images=len(core.images),
        num_points=core.num_points,
    )
