"""Model checkpoints in safe formats: safetensors weights plus a JSON manifest.

Layout of a checkpoint folder::

    CHECKPOINT/
      manifest.json          format, format_version, model (registry name), config, weights
                             (file, sha256, bytes), num_parameters, created, segloc_version,
                             metadata (free-form JSON from the trainer: epoch, losses, ...)
      weights.safetensors    the state dict; its header also carries the model name and config

:func:`load_checkpoint` rebuilds the network from the registry with the manifest's config and
loads the weights after checking the checksum, every key and every shape; it can also check
that the config fits what the caller needs (``expected={"num_classes": 100}`` for a map with
100 labels). :func:`load_weights` puts a bare state dict (``.safetensors``, or a ``.pt``/``.pth``
read with ``torch.load(..., weights_only=True)``) into a model the caller built, with the same
checks. Nothing here unpickles objects: a model file never runs code.

Checkpoints are written into a temporary folder beside the target and renamed into place.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import segloc
from segloc.config import config_from_dict, config_to_dict
from segloc.errors import SeglocError
from segloc.fileio import give_usual_permissions, recover_directory, replace_directory, sha256_file, temp_dir_beside
from segloc.models.registry import model_class, model_name_of

logger = logging.getLogger("segloc")

FORMAT_NAME = "segloc-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class CheckpointInfo:
    """The validated manifest of a checkpoint folder.

    Attributes:
        path: the checkpoint folder.
        model: the registry name of the network.
        config: its config as a plain dict (strict-loadable into the model's ``config_class``).
        weights_file: path of the safetensors file.
        sha256: expected SHA-256 of the weights file.
        metadata: free-form JSON saved by the trainer.
        dtype: the precision of the stored floating-point weights (``float32`` or ``float16``).
    """

    path: Path
    model: str
    config: dict[str, Any]
    weights_file: Path
    sha256: str
    metadata: dict[str, Any]
    dtype: str = "float32"


def _safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:
        raise SeglocError("reading and writing checkpoints needs the safetensors package: pip install safetensors") from None
    return safetensors.torch


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
    dtype: str = "float32",
) -> Path:
    """Save ``model``'s weights and config as a checkpoint folder.

    Args:
        model: a registered network with a dataclass ``config`` attribute.
        path: the checkpoint folder to create.
        metadata: JSON-serialisable extras (epoch, losses, dataset name, ...).
        model_name: registry name; found from the model's class when None.
        overwrite: replace an existing checkpoint at ``path``.
        dtype: precision of the floating-point weights in the file: ``float32`` (exact) or
            ``float16`` (half the bytes, for shipping; loading casts them back to the model's
            precision). Integer buffers keep their type.

    Returns:
        ``path``.

    Raises:
        SeglocError: ``path`` exists (without ``overwrite``), the model is not registered or has
            no dataclass config, ``metadata`` is not JSON-serialisable, or an unknown ``dtype``.
    """
    if dtype not in ("float32", "float16"):
        raise SeglocError(f"unknown checkpoint dtype {dtype!r}; valid values are: float32, float16")
    path = Path(path)
    if path.exists() and not overwrite:
        raise SeglocError(f"checkpoint {path} already exists; pass overwrite=True (or --overwrite) to replace it")
    if path.exists() and not (path / MANIFEST).is_file() and not (path.is_dir() and not any(path.iterdir())):
        raise SeglocError(f"{path} exists and is not a checkpoint; refusing to replace it, choose another path")
    name = model_name or model_name_of(model)
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config):
        raise SeglocError(f"cannot save a checkpoint of {type(model).__name__}: it has no dataclass `config` attribute")
    config_values = config_to_dict(config)
    try:
        metadata_json = json.loads(json.dumps(metadata or {}))
    except (TypeError, ValueError) as exc:
        raise SeglocError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None

    import torch

    precision = torch.float16 if dtype == "float16" else torch.float32
    state_dict = {
        key: (tensor.detach().cpu().to(precision) if tensor.is_floating_point() else tensor.detach().cpu()).contiguous()
        for key, tensor in model.state_dict().items()
    }
    staging = temp_dir_beside(path, "new")
    try:
        weights_file = staging / WEIGHTS
        header = {"segloc_format": FORMAT_NAME, "segloc_model": name, "segloc_config": json.dumps(config_values)}
        _safetensors_torch().save_file(state_dict, str(weights_file), metadata=header)
        give_usual_permissions(weights_file)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": name,
            "config": config_values,
            "weights": {"file": WEIGHTS, "sha256": sha256_file(weights_file), "bytes": weights_file.stat().st_size},
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "dtype": dtype,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "segloc_version": segloc.__version__,
            "metadata": metadata_json,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        recover_directory(path)
        replace_directory(staging, path)  # a kill at any point leaves the previous checkpoint or this one, whole
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved %s checkpoint to %s (%.1f MB)", name, path, manifest["weights"]["bytes"] / 1e6)
    return path


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read and validate the manifest of a checkpoint folder (the weights are not read).

    Raises:
        SeglocError: not a checkpoint folder, unreadable manifest, unknown format or version,
            or a model name that is not registered.
    """
    path = Path(path)
    if recover_directory(path):
        logger.warning("checkpoint %s: a writer died while replacing it; the previous checkpoint was put back", path)
    if path.is_file():
        raise SeglocError(
            f"{path} is a file, but a checkpoint is a folder with {MANIFEST} and {WEIGHTS}; "
            "to load a bare state dict into a model you built, use segloc.models.load_weights"
        )
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise SeglocError(f"{path} is not a checkpoint: {manifest_file} does not exist")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SeglocError(f"checkpoint manifest {manifest_file} is not valid JSON ({exc}); the checkpoint is corrupt") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise SeglocError(f"{manifest_file} is not a segloc checkpoint manifest (format should be {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise SeglocError(
            f"checkpoint {path} has format version {version!r}; this segloc reads version {FORMAT_VERSION}: update segloc or re-export it"
        )
    weights = manifest.get("weights")
    missing = [k for k in ("model", "config", "weights") if k not in manifest]
    if missing or not isinstance(weights, dict) or not {"file", "sha256"} <= set(weights) or not isinstance(manifest["config"], dict):
        raise SeglocError(f"checkpoint manifest {manifest_file} is incomplete: it needs model, config and weights (file, sha256)")
    model_class(manifest["model"])  # raises for an unknown model name
    weights_file = path / str(weights["file"])
    if weights_file.parent != path:
        raise SeglocError(f"checkpoint manifest {manifest_file} points outside the checkpoint folder: {weights['file']!r}")
    metadata = manifest.get("metadata") or {}
    return CheckpointInfo(
        path, manifest["model"], manifest["config"], weights_file, str(weights["sha256"]), metadata, str(manifest.get("dtype", "float32"))
    )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors``, or from a torch file with ``weights_only=True``.

    A torch file may hold the state dict itself or a dict with it under ``state_dict`` or
    ``model`` (common trainer layouts). Tensors are returned on the CPU.

    Raises:
        SeglocError: missing, corrupt or unsupported file, or contents that are not tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise SeglocError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            state_dict = _safetensors_torch().load_file(str(path), device="cpu")
        except SeglocError:
            raise
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise SeglocError(f"weights file {path} is not a valid safetensors file ({exc}); it is corrupt or truncated") from None
    elif path.suffix in TORCH_SUFFIXES:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, or a pickle that needs code to unpickle
            raise SeglocError(
                f"cannot read {path} as a torch state dict with weights_only=True ({exc}); save it as a plain state dict of tensors"
            ) from None
        state_dict = loaded
        if isinstance(loaded, dict) and not any(isinstance(v, Tensor) for v in loaded.values()):
            for key in ("state_dict", "model"):
                if isinstance(loaded.get(key), dict):
                    state_dict = loaded[key]
                    break
    else:
        raise SeglocError(f"unsupported weights file {path}: use .safetensors, or a torch state dict ({', '.join(TORCH_SUFFIXES)})")
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state_dict.items()):
        raise SeglocError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state_dict


def load_weights(model: nn.Module, weights: str | Path | dict[str, Tensor], source: str | None = None) -> None:
    """Load a state dict into ``model`` after checking every key and shape.

    Args:
        model: the network to fill (its config decides the shapes).
        weights: a state dict, or a file for :func:`read_state_dict`.
        source: how to name the weights in error messages (defaults to the file path).

    Raises:
        SeglocError: missing or unexpected keys, or shapes that differ (e.g. another number of
            classes); the message lists the first offenders.
    """
    if not isinstance(weights, dict):
        source = source or str(weights)
        weights = read_state_dict(weights)
    source = source or "the state dict"
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    mismatched = [
        f"{k}: file {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in weights and weights[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es) ({'; '.join(mismatched[:3])}{'; ...' if len(mismatched) > 3 else ''})")
    if problems:
        raise SeglocError(
            f"{source} does not fit {type(model).__name__}: {', '.join(problems)}; "
            "was it saved from another network or another config (num_classes, feature_dim, encoder, decoder_channels)?"
        )
    model.load_state_dict(weights, strict=True)


def load_checkpoint(path: str | Path, expected: dict[str, Any] | None = None, verify_checksum: bool = True) -> nn.Module:
    """Rebuild a network from a checkpoint folder, on the CPU and in eval mode.

    The network is built from the registry with the manifest's config (with ``pretrained``
    switched off: the checkpoint holds every weight), then filled with the checked weights.

    Args:
        path: a folder written by :func:`save_checkpoint`.
        expected: config values the caller relies on, e.g. ``{"num_classes": 100}``.
        verify_checksum: compare the weights file with the manifest's SHA-256.

    Returns:
        The network in eval mode; move it with ``.to(device)``.

    Raises:
        SeglocError: anything wrong with the folder, manifest, checksum, weights, or a config
            that differs from ``expected``.
    """
    info = read_checkpoint_info(path)
    cls = model_class(info.model)
    config = config_from_dict(cls.config_class, info.config, where=f"checkpoint {info.path} config")
    for key, value in (expected or {}).items():
        actual = info.config.get(key, "<absent>")
        wanted = list(value) if isinstance(value, tuple) else value
        if actual != wanted:
            raise SeglocError(
                f"checkpoint {info.path} was trained with {key}={actual!r}, but {wanted!r} is needed here; use a checkpoint that matches"
            )
    if not info.weights_file.is_file():
        raise SeglocError(f"checkpoint {info.path} is incomplete: {info.weights_file.name} is missing")
    if verify_checksum and sha256_file(info.weights_file) != info.sha256:
        raise SeglocError(
            f"checkpoint {info.path}: {info.weights_file.name} does not match the checksum in {MANIFEST}; the file is corrupt or was modified"
        )
    if "pretrained" in {f.name for f in dataclasses.fields(config)}:
        config = dataclasses.replace(config, pretrained=False)
    model = cls(config)
    load_weights(model, info.weights_file, source=f"checkpoint {info.path}")
    logger.info("loaded %s checkpoint %s", info.model, info.path)
    return model.eval()


# --- networks the project trained itself, shipped inside the package -----------------------------

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
"""Checkpoint folders shipped with segloc (``segloc/models/weights/<name>``), float16 weights."""

SHIPPED_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "segloc_room320_robust": {
        "description": (
            "SegLoc network (cpu preset, K = 100) trained on the mapping images of the demo scene with the default recipe "
            "of its time: DEC pseudo-targets from the clean views, strong photometric augmentation (the demo's network)"
        ),
        "scene": "room",
        "seed": 0,
        "size": (320, 240),
        "command": (
            "segloc synth --scene room --seed 0 --size 320x240 -o outputs/room320 && "
            "printf 'train:\\n  targets: dec\\n  mining:\\n    positive_radius_m: 1.0\\n    negative_radius_m: 2.5\\n' > dec.yaml && "
            "segloc train segloc outputs/room320 -o outputs/train_room320_robust --config dec.yaml --threads 2 && "
            'python -c "from segloc.models import load_checkpoint, save_checkpoint, read_checkpoint_info; '
            "c = 'outputs/train_room320_robust/checkpoint'; "
            "save_checkpoint(load_checkpoint(c), 'segloc_room320_robust', read_checkpoint_info(c).metadata, dtype='float16')\""
        ),
    },
    "segloc_room320": {
        "description": (
            "SegLoc network (cpu preset, K = 100) trained on the mapping images of the demo scene with mild photometric "
            "augmentation and pseudo-targets from the augmented views (the recipe before clean targets); it localizes "
            "strecha_castle better than the robust one (README, SegLoc results)"
        ),
        "scene": "room",
        "seed": 0,
        "size": (320, 240),
        "command": (
            "segloc synth --scene room --seed 0 --size 320x240 -o outputs/room320 && "
            "printf 'train:\\n  targets: dec\\n  mining:\\n    positive_radius_m: 1.0\\n    negative_radius_m: 2.5\\n  clean_targets: false\\n  augment:\\n    brightness: 0.3\\n    contrast: 0.3\\n"
            "    blur_probability: 0.2\\n    blur_sigma: [0.1, 1.5]\\n    noise_probability: 0.0\\n' > mild.yaml && "
            "segloc train segloc outputs/room320 -o outputs/train_room320 --config mild.yaml --threads 2 && "
            'python -c "from segloc.models import load_checkpoint, save_checkpoint, read_checkpoint_info; '
            "c = 'outputs/train_room320/checkpoint'; "
            "save_checkpoint(load_checkpoint(c), 'segloc_room320', read_checkpoint_info(c).metadata, dtype='float16')\""
        ),
    },
    "segloc_general": {
        "description": (
            "SegLoc network (cpu preset, K = 100) trained across places and conditions: the demo room's network fine-tuned "
            "for 60 CPU minutes (1 thread) on 6 synthetic places (room, corridor, street; seeds 1 and 2; 40 mapping images "
            "each under day, evening, night and autumn, paired across conditions) and two real Strecha scenes (fountain, "
            "entry), Sinkhorn targets; castle and seed 0 of every synthetic scene held out"
        ),
        "scene": None,
        "seed": None,
        "size": (320, 240),
        "command": (
            "printf 'train:\\n  mining:\\n    positive_radius_m: 1.0\\n    negative_radius_m: 2.5\\n' > general.yaml && "
            "python benchmarks/train_general.py -o outputs/general_cpu --scenes room corridor street --seeds 1 2 "
            "--conditions day evening night autumn --num-mapping 40 "
            "--real ../shared/data/strecha_fountain ../shared/data/strecha_entry --init segloc_room320_robust "
            "--config general.yaml --time-budget 3600 --threads 1 && "
            'python -c "from segloc.models import load_checkpoint, save_checkpoint, read_checkpoint_info; '
            "c = 'outputs/general_cpu/train/checkpoint'; "
            "save_checkpoint(load_checkpoint(c), 'segloc_general', read_checkpoint_info(c).metadata, dtype='float16')\""
        ),
    },
    "sld_room320": {
        "description": (
            "SLD* landmark network (cpu_demo preset, 300 landmarks, one network, 20 epochs) trained on the mapping images "
            "and depth of the demo scene (the demo's SLD* network); held-out landmark recall 0.94, 1.9 px"
        ),
        "scene": "room",
        "seed": 0,
        "size": (320, 240),
        "command": (
            "segloc synth --scene room --seed 0 --size 320x240 -o outputs/room320 && "
            "printf 'train:\\n  preset: cpu_demo\\n  landmarks:\\n    num_landmarks: 300\\n  epochs: 20\\n' > sld300.yaml && "
            "segloc train sld outputs/room320 -o outputs/train_sld_room320 --config sld300.yaml --threads 1 && "
            'python -c "from segloc.models import load_checkpoint, save_checkpoint, read_checkpoint_info; '
            "c = 'outputs/train_sld_room320/checkpoint'; "
            "save_checkpoint(load_checkpoint(c), 'sld_room320', read_checkpoint_info(c).metadata, dtype='float16')\""
        ),
    },
}
DEMO_CHECKPOINT = "segloc_room320_robust"
"""The shipped network ``segloc demo`` uses."""
GENERAL_CHECKPOINT = "segloc_general"
"""The shipped SegLoc network trained across many places and conditions
(``benchmarks/train_general.py``): what ``general`` names, the start of per-place fine-tuning
(``--init general``) and the network a SegLoc map is built with when ``map.checkpoint`` is null."""
"""What each shipped checkpoint is, what it was trained on and the command that reproduces it."""


def shipped_checkpoint_for_scene(name: str, scene: str, seed: int, size: tuple[int, int]) -> Path:
    """The shipped checkpoint ``name``, checked to be trained on the scene ``segloc synth`` renders with these options.

    Raises:
        SeglocError: it was trained on another scene (the message says to pass ``--train``),
            or it is not shipped.
    """
    shipped = SHIPPED_CHECKPOINTS.get(name)
    if shipped is None:
        raise SeglocError(f"no shipped checkpoint named {name!r}; shipped: {', '.join(SHIPPED_CHECKPOINTS)}")
    if (scene, seed, tuple(size)) != (shipped["scene"], shipped["seed"], tuple(shipped["size"])):
        raise SeglocError(
            f"the shipped network {name} was trained on the {shipped['scene']!r} scene (seed {shipped['seed']}, "
            f"{shipped['size'][0]}x{shipped['size'][1]}); for another scene pass --train (or --checkpoint CKPT)"
        )
    return shipped_checkpoint(name)


def resolve_checkpoint(name: str | Path, what: str = "checkpoint") -> Path:
    """The checkpoint folder ``name`` stands for: an existing folder, the name of a shipped network
    (:data:`SHIPPED_CHECKPOINTS`), or ``general`` (:data:`GENERAL_CHECKPOINT`).

    Args:
        name: a folder path or a shipped network's name.
        what: what the checkpoint is for, in error messages (e.g. ``map.checkpoint``).

    Raises:
        SeglocError: no such folder or shipped network, or the general network is not shipped.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    shipped = GENERAL_CHECKPOINT if str(name) == "general" else str(name)
    if shipped in SHIPPED_CHECKPOINTS:
        return shipped_checkpoint(shipped)
    if shipped == GENERAL_CHECKPOINT:
        raise SeglocError(
            f"{what}: the general SegLoc network ({GENERAL_CHECKPOINT}) is not shipped with this version of segloc; train one "
            f"(benchmarks/train_general.py) and pass its checkpoint folder, or one of: {', '.join(SHIPPED_CHECKPOINTS)}"
        )
    raise SeglocError(
        f"{what} {str(name)!r} is neither a checkpoint folder nor a shipped network ({', '.join(SHIPPED_CHECKPOINTS)}, general)"
    )


def shipped_checkpoint(name: str) -> Path:
    """The folder of a checkpoint shipped with segloc (see :data:`SHIPPED_CHECKPOINTS`).

    Raises:
        SeglocError: an unknown name, or the folder is missing from this installation.
    """
    if name not in SHIPPED_CHECKPOINTS:
        raise SeglocError(f"no shipped checkpoint named {name!r}; shipped: {', '.join(SHIPPED_CHECKPOINTS)}")
    path = SHIPPED_DIR / name
    if not (path / MANIFEST).is_file():
        raise SeglocError(f"the shipped checkpoint {name} is missing from {SHIPPED_DIR} (an incomplete installation?)")
    return path
