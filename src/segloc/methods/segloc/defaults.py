"""SegLoc's scale-dependent options, derived from the map when the config leaves them null.

Every SegLoc option in metres depends on the place: a room mapped by a robot has mapping
images 8 cm apart and sees its points 2.9 m away (median depth), a street 0.66 m apart and 14 m away,
Strecha's castle (photographs taken on foot) 4 m apart and 34 m away (median depth of its
points). The options below are null by default and derived from the map's
:class:`segloc.maps.scale.MapScale` (``s`` its image spacing, ``d`` its scene depth); an
explicit value in the config always wins.

- ``weighted_max_distance = 1.5 s``: the ``weighted`` approximation averages the best image
  with its neighbours on the mapping path (one spacing away, with 50 % slack for uneven
  spacing), not with views of other places. Castle: 6.05 m (6 m set by hand before).
- ``refinement.max_translation_change = max(1.5 s, 0.7 d)``: a start (a retrieved image's
  pose) is off by at least the distance to the nearest mapping image, and a start farther than
  a fraction of the scene depth hardly sees the same points
  (:data:`segloc.methods.segloc.refine.MOVE_DEPTHS`). Room: 2.04 m (2 m by hand); castle:
  23.7 m (6 m by hand, which is the spacing term, 6.05 m: the two hand-set values are each the
  lower bound of one term, and the larger is kept, a limit that only guards against divergence).
- ``prior_radius = 1.5 max_translation_change``: the mapping images near a prior must cover
  where the refinement may move the camera, with margin (the nearest ``num_retrieved`` of them
  are used). Room: 3.06 m (3 m by hand).
- ``tracking.max_translation_change = 0.25 refinement.max_translation_change``: a tracked frame
  starts from the pose odometry predicts, off by the odometry's drift since the last pose, so it
  may move a quarter of what a relocalization from a retrieved image may. Room: 0.51 m (0.5 m
  set by hand before); street 2.5 m; castle 5.9 m.
- ``refinement.min_depth = 0.02 d`` and ``refinement.min_step_translation = 4e-5 d``
  (:func:`segloc.methods.segloc.refine.scale_refinement_options`): 5.8 cm and 0.12 mm in the
  room (5 cm and 0.1 mm by hand).

Recall with the derived and with the hand-set values on a room, a street and castle:
``docs/experiments/derived_defaults.md``.

The residual gate ``refinement.max_final_residual`` is not a distance but is derived from the
map too, from its network's residuals on its own mapping images
(:mod:`segloc.methods.segloc.residual_gate`); :func:`derive_options` derives both.

When the map cannot measure a quantity (one mapping image: no spacing; no points: no depth),
the formulas use the other one, and with neither the fixed values of a room
(:data:`ROOM_SCALE`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from segloc.maps.scale import MapScale
from segloc.methods.segloc.refine import MOVE_DEPTHS, scale_refinement_options
from segloc.methods.segloc.residual_gate import CALIBRATION_KEY, FIXED_GATE, residual_gate

if TYPE_CHECKING:
    from segloc.methods.segloc.localizer import SegLocLocalizerConfig

__all__ = [
    "APPROXIMATION_SPACINGS",
    "MOVE_SPACINGS",
    "PRIOR_RADIUS_MOVES",
    "ROOM_SCALE",
    "TRACKING_MOVES",
    "derive_options",
    "derive_residual_gate",
    "derive_scale_options",
]

#: ``weighted_max_distance`` in image spacings.
APPROXIMATION_SPACINGS = 1.5
#: ``max_translation_change``: at least this many image spacings (and at least
#: :data:`~segloc.methods.segloc.refine.MOVE_DEPTHS` of the scene depth).
MOVE_SPACINGS = 1.5
#: ``tracking.max_translation_change`` in ``refinement.max_translation_change``.
TRACKING_MOVES = 0.25
#: ``prior_radius`` in ``max_translation_change``.
PRIOR_RADIUS_MOVES = 1.5
#: (image spacing, scene depth) in metres used when the map measures neither (the demo room's).
ROOM_SCALE = (0.08, 2.9)


def _spacing_and_depth(scale: MapScale) -> tuple[float, float]:
    """The map's (image spacing, scene depth), each standing in for the other when one is missing."""
    spacing, depth = scale.image_spacing, scale.scene_depth
    if spacing is None and depth is None:
        return ROOM_SCALE
    ratio = ROOM_SCALE[1] / ROOM_SCALE[0]
    return (spacing if spacing is not None else depth / ratio, depth if depth is not None else spacing * ratio)


def _rounded(value: float) -> float:
    """``value`` to 3 significant digits: derived options read as a person would set them, and are reported as used."""
    return float(f"{value:.3g}")


def derive_scale_options(config: SegLocLocalizerConfig, scale: MapScale) -> tuple[SegLocLocalizerConfig, dict[str, float]]:
    """Fill the null scale-dependent options of ``config`` from the map's scale (see the module docstring).

    Args:
        config: the localizer's options; options it sets are kept.
        scale: the map's scale (:func:`segloc.maps.scale.map_scale`).

    Returns:
        The config with every scale-dependent option set, and the derived ones as
        ``{dotted name under localize: value}`` (empty when the config set them all).
    """
    spacing, depth = _spacing_and_depth(scale)
    derived: dict[str, float] = {}
    refinement = config.refinement
    if refinement.max_translation_change is None:
        move = _rounded(max(MOVE_SPACINGS * spacing, MOVE_DEPTHS * depth))
        refinement = dataclasses.replace(refinement, max_translation_change=move)
        derived["refinement.max_translation_change"] = move
    before = refinement
    refinement = scale_refinement_options(refinement, depth)
    for name in ("min_depth", "min_step_translation"):
        if getattr(before, name) is None:
            derived[f"refinement.{name}"] = getattr(refinement, name)
    changes: dict[str, Any] = {"refinement": refinement}
    if config.weighted_max_distance is None:
        changes["weighted_max_distance"] = derived["weighted_max_distance"] = _rounded(APPROXIMATION_SPACINGS * spacing)
    if config.tracking.max_translation_change is None:
        move = _rounded(TRACKING_MOVES * refinement.max_translation_change)
        changes["tracking"] = dataclasses.replace(config.tracking, max_translation_change=move)
        derived["tracking.max_translation_change"] = move
    if config.prior_radius is None:
        changes["prior_radius"] = derived["prior_radius"] = _rounded(PRIOR_RADIUS_MOVES * refinement.max_translation_change)
    return dataclasses.replace(config, **changes), derived


def derive_residual_gate(config: SegLocLocalizerConfig, layer_meta: dict[str, Any]) -> tuple[SegLocLocalizerConfig, dict[str, float]]:
    """Fill a null ``refinement.max_final_residual`` from the map's residual calibration.

    Args:
        config: the localizer's options; a set gate is kept.
        layer_meta: the ``segloc`` layer's ``meta.json`` (``top_k``: the labels per point it
            stores; ``residual_calibration``: see :mod:`segloc.methods.segloc.residual_gate`).

    Returns:
        The config with the gate set, and ``{"refinement.max_final_residual": value}`` (empty
        when the config set it). The gate is :func:`~segloc.methods.segloc.residual_gate.residual_gate`
        of the calibration when the map has one measured with the labels per point this config
        uses, else :data:`~segloc.methods.segloc.residual_gate.FIXED_GATE`.
    """
    if config.refinement.max_final_residual is not None:
        return config, {}
    calibration = layer_meta.get(CALIBRATION_KEY)
    labels_used = config.labels_top_k or int(layer_meta.get("top_k") or 1)
    if isinstance(calibration, dict) and int(calibration.get("labels_per_point", 0)) == labels_used:
        gate = residual_gate(calibration)
    else:
        gate = FIXED_GATE
    refinement = dataclasses.replace(config.refinement, max_final_residual=gate)
    return dataclasses.replace(config, refinement=refinement), {"refinement.max_final_residual": gate}


def derive_options(
    config: SegLocLocalizerConfig, scale: MapScale, layer_meta: dict[str, Any]
) -> tuple[SegLocLocalizerConfig, dict[str, float]]:
    """Every option the SegLoc localizer derives from the map: :func:`derive_scale_options`, then :func:`derive_residual_gate`."""
    config, derived = derive_scale_options(config, scale)
    config, gate = derive_residual_gate(config, layer_meta)
    return config, {**derived, **gate}
