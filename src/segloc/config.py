"""Strict dataclass configs loaded from YAML: unknown keys and values out of range are errors.

The same YAML file feeds the CLI, the nodes (``config_path`` parameter) and training.

Ranges are declared on the fields, not checked by hand: a field made with :func:`option`
carries its bounds (``max_keypoints: int = option(8192, ge=0, note="0: no limit")``), and
:func:`check_options` checks every field of a config against them; every number must also be
finite (no NaN, no infinity) unless its field says ``finite=False``. :func:`config_from_dict`
checks each value it is given (messages name the YAML path, ``map.core.sift.max_keypoints``),
and each config's ``__post_init__`` calls :func:`check_options`, so configs built in Python are
checked too; a config's own ``__post_init__`` checks (choices, relations between fields) come
after.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from segloc.errors import SeglocError

T = TypeVar("T")


#: The bounds :func:`option` takes, and how each reads in messages.
BOUNDS: dict[str, tuple[str, Any]] = {
    "ge": (">=", lambda value, bound: value >= bound),
    "gt": (">", lambda value, bound: value > bound),
    "le": ("<=", lambda value, bound: value <= bound),
    "lt": ("<", lambda value, bound: value < bound),
}


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = True,
    note: str = "",
) -> Any:
    """A dataclass field whose numbers :func:`check_options` checks: ``ge <= value``, ``gt < value``, ``value <= le``, ``value < lt``.

    Args:
        default, default_factory: as :func:`dataclasses.field`.
        ge, gt, le, lt: the bounds (None: unbounded on that side). For a tuple each element is
            checked; None values (optional fields) are not.
        finite: False allows NaN and infinity (every other number must be finite).
        note: what special values mean, for the message (``"0: no limit"``).
    """
    bounds = {name: bound for name, bound in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if bound is not None}
    metadata = {"bounds": bounds, "finite": finite, "note": note}
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"segloc_option": metadata})


def check_value(field: dataclasses.Field, value: Any, where: str) -> None:
    """Check ``value`` of ``field`` against the field's :func:`option` bounds and finiteness; ``where`` names it in the message.

    Non-numeric values (strings, nested configs) are left to the config's own checks.
    """
    declared = field.metadata.get("segloc_option", {})
    bounds, finite, note = declared.get("bounds", {}), declared.get("finite", True), declared.get("note", "")
    for element in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(element, bool) or not isinstance(element, numbers.Real):
            continue
        if finite and not math.isfinite(element):
            raise SeglocError(f"{where} must be a finite number, got {element}")
        for name, bound in bounds.items():
            symbol, holds = BOUNDS[name]
            if not (math.isnan(element) or holds(element, bound)):
                limits = " and ".join(f"{BOUNDS[n][0]} {b}" for n, b in bounds.items())
                raise SeglocError(f"{where} must be {limits}{f' ({note})' if note else ''}, got {element}")


def check_options(config: Any, where: str | None = None) -> None:
    """Check every field of the dataclass instance ``config`` with :func:`check_value` (call it in ``__post_init__``).

    Raises:
        SeglocError: the first value out of its field's range, or a non-finite number.
    """
    where = where or type(config).__name__
    for field in dataclasses.fields(config):
        check_value(field, getattr(config, field.name), f"{where}.{field.name}")


def config_from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "config", base: T | None = None) -> T:
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys and values out of range.

    Nested dataclass fields are built recursively; tuples and lists are converted to the
    declared type; every value is checked with :func:`check_value` (its field's bounds, finite
    numbers). ``where`` names the place in error messages (``config.matching``).

    Options a dict leaves out keep their defaults, and for a nested section that is the default
    the *enclosing* class gives it (its field's default or default factory, or the value in
    ``base``), not the nested class's own: ``{"pnp": {"pixel_floor": 2}}`` for SLD* keeps SLD*'s
    PnP threshold of 8 px, not :class:`segloc.geometry.pose.PnPConfig`'s 12.

    Args:
        base: an instance whose values the dict overrides (None: ``cls``'s defaults).
    """
    if values is None:
        values = {}
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise SeglocError(f"{where}: expected a mapping of options, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SeglocError(f"{where}: unknown option(s) {', '.join(unknown)}; valid options are: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        default = _nested_default(fields[name], base) if isinstance(value, dict) else None
        if default is not None:
            kwargs[name] = config_from_dict(type(default), value, f"{where}.{name}", base=default)
        else:
            kwargs[name] = _convert(hints.get(name, Any), value, f"{where}.{name}")
        check_value(fields[name], kwargs[name], f"{where}.{name}")
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _nested_default(field: dataclasses.Field, base: Any) -> Any:
    """The default dataclass instance of a nested config field (from ``base``, else the field's default); None otherwise."""
    if base is not None:
        default = getattr(base, field.name)
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = field.default
    return default if dataclasses.is_dataclass(default) and not isinstance(default, type) else None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return config_from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _convert(args[0], value, where)
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise SeglocError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


#: The top-level sections of a segloc YAML config file: one file feeds the CLI, the nodes
#: (``config_path``) and training; a section that is not one of these is an error (a typo would
#: otherwise silently give the defaults).
CONFIG_SECTIONS: tuple[str, ...] = ("map", "localize", "tracking", "synth", "bag", "train", "relight", "gate", "update")


def _read_yaml_mapping(path: Path, expected: str) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file: {}); SeglocError for a missing file, bad YAML or another top level."""
    if not path.is_file():
        raise SeglocError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SeglocError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise SeglocError(f"config file {path}: expected {expected}")
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a segloc YAML config file: a mapping of :data:`CONFIG_SECTIONS` to their options.

    Raises:
        SeglocError: a missing file, invalid YAML, a top level that is not a mapping, or an
            unknown section.
    """
    path = Path(path)
    values = _read_yaml_mapping(path, "a mapping with sections such as 'map' and 'localize' at the top level")
    unknown = sorted(str(key) for key in set(values) - set(CONFIG_SECTIONS))
    if unknown:
        raise SeglocError(f"config file {path}: unknown section(s) {', '.join(unknown)}; valid sections: {', '.join(CONFIG_SECTIONS)}")
    return values


def config_section(path: str | Path | None, section: str) -> dict[str, Any] | None:
    """The options of one section of a config file (:func:`read_config_file`); None without a file or section.

    Raises:
        SeglocError: as :func:`read_config_file`, an unknown ``section`` name, or a section
            that is not a mapping.
    """
    if section not in CONFIG_SECTIONS:
        raise SeglocError(f"unknown config section {section!r}; valid sections: {', '.join(CONFIG_SECTIONS)}")
    if path is None or path == "":
        return None
    values = read_config_file(path).get(section)
    if values is not None and not isinstance(values, dict):
        raise SeglocError(f"config file {path}: section {section!r} must be a mapping of options, got {type(values).__name__}")
    return values


def load_config(cls: type[T], path: str | Path | None = None, section: str | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from a YAML file, then apply ``overrides``; unknown keys and values out of range are errors.

    Args:
        cls: the config dataclass.
        path: the YAML file; None: the defaults (plus ``overrides``).
        section: the top-level section to read (the file is then a segloc config file and its
            other sections are checked too, :func:`read_config_file`); None: the whole file
            holds ``cls``'s options.
        overrides: option values that replace the file's.
    """
    values: dict[str, Any] = {}
    if path is not None and path != "":
        if section is not None:
            values.update(config_section(path, section) or {})
        else:
            values.update(_read_yaml_mapping(Path(path), "a mapping at the top level"))
    if overrides:
        values.update(overrides)
    where = f"{path} {section}" if path and section else str(path) if path else cls.__name__
    return config_from_dict(cls, values, where=where)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain dict (YAML-serialisable) of a config dataclass."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}
