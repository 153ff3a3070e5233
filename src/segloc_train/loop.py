"""Small pieces every trainer's loop shares: the device, torch threads, per-epoch seeds, presets and the config file."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml

from segloc.config import config_from_dict, config_section, config_to_dict
from segloc.errors import SeglocError
from segloc.fileio import atomic_write

T = TypeVar("T")


def training_device(name: str) -> torch.device:
    """The torch device ``name`` (``cpu``, ``cuda``, ``cuda:N``).

    Raises:
        SeglocError: CUDA asked for but not available.
    """
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SeglocError(f"device {name!r} requested but CUDA is not available in this torch build or machine; use --device cpu")
    return torch.device(name)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None or 0: torch's), then restore the previous count."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for random stream ``stream`` of epoch ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def merge_options(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update: nested mappings are merged, other values replaced (a preset over the defaults)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_config(cls: type[T], presets: Mapping[str, dict[str, Any]], default: str, values: dict[str, Any] | None, where: str) -> T:
    """A trainer's config from a YAML ``train`` section: an optional ``preset`` (``default`` without one) plus overrides.

    The preset and the overrides are merged onto the defaults as dicts, so that a partial nested
    section keeps the trainer's defaults for the rest of it; unknown options and values out of
    range are refused (:func:`segloc.config.config_from_dict`).

    Raises:
        SeglocError: not a mapping, an unknown preset or option, or an invalid value.
    """
    if values is not None and not isinstance(values, dict):
        raise SeglocError(f"{where}: expected a mapping of training options, got {type(values).__name__}")
    values = dict(values or {})
    preset = values.pop("preset", default)
    if preset not in presets:
        raise SeglocError(f"{where}: unknown preset {preset!r}; available presets: {', '.join(presets)}")
    defaults = merge_options(config_to_dict(cls()), presets[preset])
    return config_from_dict(cls, merge_options(defaults, values), where=where)


def read_train_section(path: str | Path) -> dict[str, Any]:
    """The ``train`` section of a YAML file (e.g. a run's ``config.yaml``).

    Raises:
        SeglocError: missing or invalid file, or no ``train`` section.
    """
    values = config_section(path, "train")
    if values is None:
        raise SeglocError(f"config file {path} has no 'train' section; put the training options under 'train:'")
    return values


def write_train_section(path: str | Path, config: Any, description: str) -> Path:
    """Write the full ``config`` under a ``train:`` section, after a comment line ``description`` (readable with ``--config``)."""
    text = yaml.safe_dump({"train": config_to_dict(config)}, sort_keys=False, default_flow_style=None)
    atomic_write(path, lambda tmp: tmp.write_text(f"# {description}\n{text}"))
    return Path(path)
