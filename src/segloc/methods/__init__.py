"""Localization methods, one package each (``reference/``, ``segloc/``), and their registry.

Each method package holds its config, its map layer, its localizer and its own helpers, and
defines ``METHOD``, its :class:`~segloc.methods.registry.Method`. Everything else finds methods
through :func:`get_method` and :func:`available_methods` (:mod:`segloc.methods.registry`).
Importing this package imports no method.
"""

from segloc.methods.registry import (
    BUILTIN_METHODS,
    ENTRY_POINT_GROUP,
    PRIOR_USES,
    TRAINER_ENTRY_POINT_GROUP,
    AttackSurface,
    DemoContext,
    DemoRun,
    Method,
    available_methods,
    get_method,
    load_trainer,
    register_method,
    unregister_method,
)

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
    "get_method",
    "load_trainer",
    "register_method",
    "unregister_method",
]
