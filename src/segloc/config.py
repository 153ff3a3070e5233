"""Strict dataclass configs loaded from YAML: unknown keys are an error.

The same YAML file feeds the CLI, the nodes (``config_path`` parameter) and training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from segloc.errors import SeglocError

T = TypeVar("T")


def config_from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys.

    Nested dataclass fields are built recursively; tuples and lists are converted to the
    declared type. ``where`` names the place in error messages (``config.matching``).
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
        kwargs[name] = _convert(hints.get(name, Any), value, f"{where}.{name}")
    return cls(**kwargs)


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


def load_config(cls: type[T], path: str | Path | None = None, section: str | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from a YAML file (optionally one top-level ``section`` of it), then apply ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SeglocError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SeglocError(f"config file {path} is not valid YAML: {exc}") from None
        if section is not None:
            loaded = loaded.get(section, {}) if isinstance(loaded, dict) else loaded
        if not isinstance(loaded, dict):
            raise SeglocError(f"config file {path}: expected a mapping at the top level")
        values.update(loaded)
    if overrides:
        values.update(overrides)
    return config_from_dict(cls, values, where=str(path) if path else cls.__name__)


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
