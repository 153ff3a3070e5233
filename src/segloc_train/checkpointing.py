"""The files of a training run: resume state, cluster tensors, loss history and loss curves.

A trainer's output folder (see :func:`segloc_train.segloc.train_segloc.train_segloc`)::

    OUT/
      checkpoint/              the network (segloc.models.checkpoint: manifest + safetensors)
      prototypes.safetensors   prototypes (K, D), concentrations (K,), cluster frequencies (K,),
                               global descriptors of the mapping images (I, G)
      config.yaml              the full training config, under a ``train:`` section
      losses.json              loss history: one record per step and one per epoch (rewritten every epoch)
      loss_curves.png          the history as curves, per step and per epoch (with every save)
      resume/
        optimizer.pt           the optimizer's state dict (torch.save; read with weights_only=True)
        state.json             epochs done, steps done, seed, wall time, why training stopped

Nothing here unpickles objects: the optimizer state is read with ``torch.load(...,
weights_only=True)``, tensors are safetensors, everything else JSON or YAML. Every file is
written to a temporary file beside it and renamed into place; ``state.json`` is written last,
so it names the last complete save (its ``epochs_done`` must match the checkpoint's metadata).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from segloc.errors import SeglocError
from segloc.evaluate.report import new_figure, save_figure, write_json
from segloc.fileio import atomic_write

logger = logging.getLogger("segloc")

STATE_FORMAT = "segloc-train-state"
STATE_VERSION = 1
CHECKPOINT_DIR = "checkpoint"
PROTOTYPES_FILE = "prototypes.safetensors"
CONFIG_FILE = "config.yaml"
LOSSES_FILE = "losses.json"
LOSS_CURVES_FILE = "loss_curves.png"
RESUME_DIR = "resume"
LAST_DIR = "last"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"


@dataclass
class TrainingState:
    """Where a training run stands (``resume/state.json``).

    Attributes:
        trainer: the trainer's name (``segloc``).
        epochs_done: completed epochs (an epoch cut short by the time budget counts as done).
        steps_done: optimizer steps so far.
        seed: the run's base seed; every random stream of epoch ``e`` derives from ``(seed, e)``.
        train_seconds: wall time spent in the epochs so far (without setup).
        stopped: why the last session stopped: ``"completed"``, ``"time_budget"``, ``"max_steps"`` or ``""``.
    """

    trainer: str
    epochs_done: int = 0
    steps_done: int = 0
    seed: int = 0
    train_seconds: float = 0.0
    stopped: str = ""


@dataclass
class LossHistory:
    """Per-step and per-epoch loss records (``losses.json``).

    Each record holds ``epoch`` (0-based), the weighted ``total`` and the unweighted terms
    (``ce``, ``cc``, ``pc``, ``pf``, ``ms``); step records add ``step`` (0-based, over the
    whole run), epoch records ``steps`` and ``seconds``. ``run`` holds a trainer's other
    top-level values of the file (``segloc train sld-backbone``: its scenes, world size, seconds),
    read and written with the records.
    """

    steps: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def truncate(self, epochs_done: int) -> None:
        """Forget the records of epochs ``>= epochs_done`` (written after the last complete save)."""
        self.steps = [record for record in self.steps if record["epoch"] < epochs_done]
        self.epochs = [record for record in self.epochs if record["epoch"] < epochs_done]


# --- tensors -----------------------------------------------------------------------------
def write_tensors(path: str | Path, tensors: Mapping[str, Tensor]) -> Path:
    """Write named tensors to a safetensors file, atomically (CPU, contiguous copies)."""
    import safetensors.torch

    path = Path(path)
    cpu = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    atomic_write(path, lambda tmp: safetensors.torch.save_file(cpu, str(tmp)))
    return path


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file written by :func:`write_tensors` (CPU tensors).

    Raises:
        SeglocError: missing or corrupt file.
    """
    import safetensors.torch

    path = Path(path)
    if not path.is_file():
        raise SeglocError(f"{path} does not exist; the training run was not saved completely (train again without --resume)")
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise SeglocError(f"{path} is not a valid safetensors file ({exc}); it is corrupt or truncated") from None


# --- resume state ------------------------------------------------------------------------
def save_training_state(output_dir: str | Path, state: TrainingState, optimizer: torch.optim.Optimizer) -> Path:
    """Write ``resume/optimizer.pt`` then ``resume/state.json`` (the commit marker) into ``output_dir``."""
    resume_dir = Path(output_dir) / RESUME_DIR
    resume_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(resume_dir / OPTIMIZER_FILE, lambda tmp: torch.save(optimizer.state_dict(), tmp))
    values = {"format": STATE_FORMAT, "version": STATE_VERSION, **vars(state)}
    return write_json(resume_dir / STATE_FILE, values)


def read_training_state(output_dir: str | Path) -> TrainingState:
    """Read ``resume/state.json`` of a training run.

    Raises:
        SeglocError: no state (nothing to resume), or an unreadable or foreign file.
    """
    path = Path(output_dir) / RESUME_DIR / STATE_FILE
    if not path.is_file():
        raise SeglocError(f"nothing to resume in {output_dir}: {path} does not exist; train without --resume first")
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SeglocError(f"{path} is not valid JSON ({exc}); the resume state is corrupt, train again without --resume") from None
    if not isinstance(values, dict) or values.get("format") != STATE_FORMAT:
        raise SeglocError(f"{path} is not a segloc training state (format should be {STATE_FORMAT!r})")
    if values.get("version") != STATE_VERSION:
        raise SeglocError(f"{path} has version {values.get('version')!r}; this segloc reads version {STATE_VERSION}")
    known = set(TrainingState.__dataclass_fields__)
    try:
        return TrainingState(**{key: value for key, value in values.items() if key in known})
    except TypeError as exc:
        raise SeglocError(f"{path} is incomplete ({exc}); train again without --resume") from None


def open_run(output_dir: str | Path, trainer: str, description: str, seed: int, resume: bool) -> TrainingState:
    """The state a training run in ``output_dir`` starts from: a new one, or the saved one with ``resume``.

    Args:
        output_dir: the run's folder.
        trainer: the trainer's name, recorded in the state (``segloc``, ``sfrs``).
        description: how errors name such a run (``a SegLoc one``).
        seed: the new run's seed.
        resume: continue the run saved in ``output_dir``.

    Raises:
        SeglocError: nothing to resume, a saved run of another trainer, or a new run into a
            folder that already holds one (never overwritten).
    """
    output_dir = Path(output_dir)
    if resume:
        state = read_training_state(output_dir)
        if state.trainer != trainer:
            raise SeglocError(f"cannot resume {output_dir}: it holds a {state.trainer!r} training run, not {description}")
        return state
    if (output_dir / CHECKPOINT_DIR).exists():
        raise SeglocError(f"{output_dir} already holds a training run; pass --resume to continue it, or choose another output folder")
    return TrainingState(trainer, seed=seed)


def load_optimizer_state(output_dir: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Load ``resume/optimizer.pt`` into ``optimizer`` (``torch.load(..., weights_only=True)``).

    Raises:
        SeglocError: missing or unreadable file, or a state that does not fit the optimizer
            (another network or another config).
    """
    path = Path(output_dir) / RESUME_DIR / OPTIMIZER_FILE
    if not path.is_file():
        raise SeglocError(f"{path} does not exist; the resume state is incomplete, train again without --resume")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state_dict)
    except (RuntimeError, ValueError, KeyError, OSError, EOFError) as exc:
        raise SeglocError(f"cannot load the optimizer state {path} ({exc}); was the run trained with another network config?") from None


def resume_last_epoch(
    output_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState
) -> LossHistory:
    """Continue a run saved by :func:`save_epoch_end`: load ``resume/last`` into ``model``, the optimizer state, and the history.

    Returns:
        ``losses.json`` without the records of epochs after the last complete save.

    Raises:
        SeglocError: a missing or unfitting network or optimizer state (another config), or an unreadable history.
    """
    from segloc.models.checkpoint import WEIGHTS, load_weights

    last = Path(output_dir) / RESUME_DIR / LAST_DIR
    load_weights(model, last / WEIGHTS, source=str(last))
    load_optimizer_state(output_dir, optimizer)
    history = read_loss_history(Path(output_dir) / LOSSES_FILE)
    history.truncate(state.epochs_done)
    return history


def save_epoch_end(
    output_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    history: LossHistory,
    stopped: str,
) -> None:
    """After an epoch: ``resume/last`` (the network), ``losses.json``, then ``resume/state.json`` (the commit marker).

    ``state.stopped`` becomes ``"time_budget"`` when ``stopped`` says so, else ``""`` (the run
    goes on; the trainer marks it ``"completed"`` after its last epoch).
    """
    from segloc.models.checkpoint import save_checkpoint

    save_checkpoint(model, Path(output_dir) / RESUME_DIR / LAST_DIR, metadata={"epoch": state.epochs_done}, overwrite=True)
    state.stopped = stopped if stopped == "time_budget" else ""
    write_loss_history(Path(output_dir) / LOSSES_FILE, history)
    save_training_state(output_dir, state, optimizer)


# --- losses ------------------------------------------------------------------------------
def read_loss_history(path: str | Path) -> LossHistory:
    """Read ``losses.json`` (an empty history when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return LossHistory()
    try:
        values = json.loads(path.read_text())
        steps, epochs = list(values["steps"]), list(values["epochs"])  # first: a file that is not a mapping fails here
        return LossHistory(steps, epochs, {key: value for key, value in values.items() if key not in ("steps", "epochs")})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SeglocError(f"{path} is not a loss history ({exc}); delete it or train again without --resume") from None


def write_loss_history(path: str | Path, history: LossHistory) -> Path:
    """Write ``losses.json`` atomically (non-finite values as null): ``history.run``'s values, then the records."""
    return write_json(path, {**history.run, "steps": history.steps, "epochs": history.epochs})


LOSS_TERMS = ("total", "ce", "cc", "pc", "pf", "ms")


def _series(records: Sequence[dict[str, Any]], x_key: str, term: str) -> tuple[list[float], list[float]]:
    pairs = [(r[x_key], r[term]) for r in records if r.get(term) is not None and math.isfinite(r[term])]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_loss_curves(path: str | Path, history: LossHistory, title: str = "SegLoc training", terms: Sequence[str] = LOSS_TERMS) -> Path:
    """Plot the total loss and each term (``terms``, the record keys to draw) per step (left) and per epoch (middle) into a PNG.

    Per-step curves are drawn faintly with a running mean over ~5% of the steps on top. When
    the epochs carry class-usage diagnostics (``classes_used``, ``class_perplexity``) a third
    panel (right) plots them per epoch: a falling curve is a collapse of the classes.
    """
    usage = any("classes_used" in record for record in history.epochs)
    figure = new_figure(16.0 if usage else 11.0, 4.2)
    panels = figure.subplots(1, 3 if usage else 2)
    step_axes, epoch_axes = panels[0], panels[1]
    if usage:
        for key, label, color in (("classes_used", "classes in use", "tab:blue"), ("class_perplexity", "perplexity", "tab:orange")):
            epochs, values = _series(history.epochs, "epoch", key)
            panels[2].plot([e + 1 for e in epochs], values, marker="o", color=color, linewidth=1.6, label=label)
        panels[2].set(xlabel="epoch", ylabel="classes", title="class usage (epoch-end scan)")
        panels[2].set_ylim(bottom=0)
        panels[2].grid(alpha=0.3)
        panels[2].legend(fontsize=8)
    colors = dict(zip(terms, ("black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    window = max(1, len(history.steps) // 20)
    for term in terms:
        steps, values = _series(history.steps, "step", term)
        if steps:
            step_axes.plot(steps, values, color=colors[term], alpha=0.25, linewidth=0.8)
            smooth = torch.tensor(values, dtype=torch.float64).unfold(0, window, 1).mean(dim=1).tolist() if len(values) >= window else []
            step_axes.plot(steps[window - 1 :], smooth, color=colors[term], linewidth=1.6, label=term)
        epochs, values = _series(history.epochs, "epoch", term)
        if epochs:
            epoch_axes.plot([e + 1 for e in epochs], values, marker="o", color=colors[term], linewidth=1.6, label=term)
    step_axes.set(xlabel="step", ylabel="loss", title=f"per step (running mean of {window})")
    epoch_axes.set(xlabel="epoch", ylabel="mean loss", title="per epoch")
    for axes in (step_axes, epoch_axes):
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=8)
    figure.suptitle(title)
    return save_figure(figure, Path(path))
