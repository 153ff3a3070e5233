"""Online localization pipelines: the common result type and interface, and the localizers.

The localizers load on first use, so that importing the interface does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segloc.localize.base import LocalizationResult, Localizer

if TYPE_CHECKING:
    from segloc.localize.reference import ReferenceLocalizer, ReferenceLocalizerConfig

_LAZY = {
    "ReferenceLocalizer": "segloc.localize.reference",
    "ReferenceLocalizerConfig": "segloc.localize.reference",
    "LabelRefinementConfig": "segloc.localize.refine",
    "RefinementResult": "segloc.localize.refine",
    "refine_pose_with_labels": "segloc.localize.refine",
}

__all__ = [
    "LabelRefinementConfig",
    "LocalizationResult",
    "Localizer",
    "ReferenceLocalizer",
    "ReferenceLocalizerConfig",
    "RefinementResult",
    "refine_pose_with_labels",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
