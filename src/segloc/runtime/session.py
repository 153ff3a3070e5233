"""One inference interface over three backends: eager torch, ONNX Runtime and TensorRT.

A session runs a network with named inputs and outputs: :meth:`InferenceSession.run` takes a
mapping ``name -> array`` (numpy or torch, any device) and returns ``name -> torch.Tensor``, so
the code around a network does not change with the backend. :func:`create_session` builds one:

- ``torch``: the ``nn.Module`` itself on the config's device (CPU or CUDA);
- ``onnxruntime``: the network's ONNX file with the CPU execution provider (the CUDA provider
  first when the device is CUDA and the installed onnxruntime has it); ``threads`` sets the
  intra-op threads;
- ``tensorrt``: an engine built from the ONNX file and cached (:mod:`segloc.runtime.tensorrt`);
  an engine that cannot be loaded or built (or no tensorrt package, or no GPU) falls back to
  ONNX Runtime, and the session's
  :class:`SessionStatus` says so at ERROR level (nodes turn it into ``/diagnostics``);
- ``auto``: TensorRT where ``tensorrt`` imports and CUDA is present, else ONNX Runtime where it
  imports, else torch (:func:`resolve_backend`).

The ONNX file is asked for only when a backend needs it (``onnx`` may be a callable that
exports it), so the torch backend never pays an export.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from segloc.config import check_options, option
from segloc.errors import SeglocError

logger = logging.getLogger("segloc")

__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "PRECISIONS",
    "InferenceSession",
    "OnnxRuntimeSession",
    "RuntimeConfig",
    "SessionStatus",
    "TorchSession",
    "backend_available",
    "create_session",
    "default_cache_dir",
    "inference_statuses",
    "with_runtime",
    "resolve_backend",
]

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
"""The inference backends."""

BACKEND_CHOICES: tuple[str, ...] = (*BACKENDS, "auto")
"""What a ``backend`` option accepts: a backend, or ``auto`` (:func:`resolve_backend`)."""

PRECISIONS: tuple[str, ...] = ("fp16", "fp32")
"""TensorRT engine precisions (``fp16`` falls back to fp32 on a GPU without fast fp16)."""


@dataclass
class RuntimeConfig:
    """How a network runs (the ``runtime:`` section of a localize or map config).

    Attributes:
        backend: ``torch``, ``onnxruntime``, ``tensorrt`` or ``auto`` (see the module docstring).
        threads: ONNX Runtime intra-op threads; 0 = ONNX Runtime's default (one per core).
        precision: TensorRT engine precision, ``fp16`` (where the GPU supports it) or ``fp32``.
        workspace_mb: TensorRT builder workspace limit, MiB.
        cache_dir: where exported ONNX files and TensorRT engines are cached; None:
            ``$SEGLOC_CACHE`` or ``~/.cache/segloc``.
    """

    backend: str = "torch"
    threads: int = option(0, ge=0, note="0: ONNX Runtime's default")
    precision: str = "fp16"
    workspace_mb: int = option(1024, ge=1)
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_options(self, "runtime")
        if self.backend not in BACKEND_CHOICES:
            raise SeglocError(f"runtime: unknown backend {self.backend!r}; valid values are: {', '.join(BACKEND_CHOICES)}")
        if self.precision not in PRECISIONS:
            raise SeglocError(f"runtime: unknown precision {self.precision!r}; valid values are: {', '.join(PRECISIONS)}")

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


def default_cache_dir() -> Path:
    """``$SEGLOC_CACHE``, or ``~/.cache/segloc``: exported ONNX files and TensorRT engines."""
    return Path(os.environ.get("SEGLOC_CACHE") or Path.home() / ".cache" / "segloc").expanduser()


@dataclass
class SessionStatus:
    """What a session reports about itself.

    Attributes:
        requested: the backend asked for (``auto`` included).
        backend: the backend in use.
        level: ``ok``, or ``error`` when the session runs on a fallback backend.
        message: one line for logs and diagnostics.
        events: what happened while the session was created (engine cache hit, build, rebuild, fallback).
    """

    requested: str
    backend: str
    level: str = "ok"
    message: str = ""
    events: list[str] = field(default_factory=list)


@runtime_checkable
class InferenceSession(Protocol):
    """A network behind named inputs and outputs.

    Attributes:
        backend: the backend that runs it.
        input_names, output_names: the network's inputs and outputs, in call order.
        status: how the session was created (:class:`SessionStatus`).
    """

    backend: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    status: SessionStatus

    def run(self, inputs: Mapping[str, np.ndarray | Tensor]) -> dict[str, Tensor]:
        """Run on ``inputs`` (every input name, numpy or torch); returns every output as a torch tensor."""
        ...


def _check_inputs(inputs: Mapping[str, Any], names: Sequence[str]) -> None:
    missing = [name for name in names if name not in inputs]
    unknown = [name for name in inputs if name not in names]
    if missing or unknown:
        raise SeglocError(f"session inputs: missing {missing or 'none'}, unknown {unknown or 'none'}; the network takes {', '.join(names)}")


class TorchSession:
    """Eager torch: ``module(*inputs in input_names order)`` returns the outputs in ``output_names`` order.

    Args:
        module: the network (moved to ``device`` and put in eval mode).
        input_names, output_names: the names of its positional inputs and its tuple of outputs.
        device: torch device (``cpu``, ``cuda``, ``cuda:1``).
    """

    backend = "torch"

    def __init__(self, module: nn.Module, input_names: Sequence[str], output_names: Sequence[str], device: str = "cpu"):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)
        self.status = SessionStatus("torch", "torch", message=f"torch on {self.device}")

    @torch.no_grad()
    def run(self, inputs: Mapping[str, np.ndarray | Tensor]) -> dict[str, Tensor]:
        _check_inputs(inputs, self.input_names)
        args = [torch.as_tensor(inputs[name]).to(self.device) for name in self.input_names]
        outputs = self.module(*args)
        outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
        if len(outputs) != len(self.output_names):
            raise SeglocError(
                f"the network returned {len(outputs)} outputs, expected {len(self.output_names)} ({', '.join(self.output_names)})"
            )
        return dict(zip(self.output_names, outputs))


def _is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


class OnnxRuntimeSession:
    """An ONNX file run by ONNX Runtime.

    Args:
        onnx_path: the ONNX model.
        device: ``cpu``, or a CUDA device: the CUDA execution provider comes first when the
            installed onnxruntime has it (the CPU provider stays as ONNX Runtime's fallback).
        threads: intra-op threads, 0 = ONNX Runtime's default.

    Raises:
        SeglocError: onnxruntime is not installed, or the file does not load.
    """

    backend = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: str = "cpu", threads: int = 0):
        try:
            import onnxruntime
        except ImportError:
            raise SeglocError("backend onnxruntime needs the onnxruntime package: pip install 'segloc_ros[export]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if _is_cuda(device) and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            index = torch.device(device).index or 0
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        elif _is_cuda(device):
            logger.warning("onnxruntime: no CUDA execution provider in this onnxruntime build; running on the CPU")
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SeglocError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.providers = tuple(self.session.get_providers())
        self.status = SessionStatus(
            "onnxruntime", "onnxruntime", message=f"onnxruntime ({', '.join(self.providers)}, {threads or 'default'} threads)"
        )

    def run(self, inputs: Mapping[str, np.ndarray | Tensor]) -> dict[str, Tensor]:
        _check_inputs(inputs, self.input_names)
        feed = {}
        for name in self.input_names:
            value = inputs[name]
            feed[name] = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        outputs = self.session.run(list(self.output_names), feed)
        return {name: torch.from_numpy(np.asarray(array)) for name, array in zip(self.output_names, outputs)}


def backend_available(backend: str, device: str = "cpu") -> bool:
    """Whether ``backend`` can run here: torch always; onnxruntime where it imports; tensorrt where it imports and CUDA is present."""
    if backend == "torch":
        return True
    if backend == "onnxruntime":
        return importlib.util.find_spec("onnxruntime") is not None
    if backend == "tensorrt":
        return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    raise SeglocError(f"unknown backend {backend!r}; valid values are: {', '.join(BACKEND_CHOICES)}")


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """The backend ``backend`` means here: ``auto`` becomes tensorrt, onnxruntime or torch, the first available.

    Raises:
        SeglocError: an unknown backend, or one that cannot run here (say which is missing).
    """
    if backend == "auto":
        return next(b for b in BACKENDS[::-1] if backend_available(b, device))
    if not backend_available(backend, device):
        if backend == "onnxruntime":
            raise SeglocError("backend onnxruntime needs the onnxruntime package: pip install 'segloc_ros[export]'")
        raise SeglocError(
            "backend tensorrt needs the tensorrt Python package and a CUDA GPU "
            f"(tensorrt {'found' if importlib.util.find_spec('tensorrt') else 'not installed'}, "
            f"CUDA {'available' if torch.cuda.is_available() else 'not available'}); use onnxruntime or torch here"
        )
    return backend


def create_session(
    config: RuntimeConfig,
    module: nn.Module,
    input_names: Sequence[str],
    output_names: Sequence[str],
    onnx: str | Path | Callable[[], Path],
    device: str = "cpu",
    input_shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None,
) -> InferenceSession:
    """A session for ``module`` with the backend of ``config``.

    Args:
        config: backend, threads, precision and cache (:class:`RuntimeConfig`).
        module: the torch network (the torch backend runs it; the others run its ONNX file).
        input_names, output_names: its named inputs and outputs (those of the ONNX file).
        onnx: the ONNX file, or a callable returning it (called only for onnxruntime and tensorrt).
        device: torch device; CUDA selects the GPU providers of the other backends.
        input_shapes: TensorRT optimisation profile per input, (min, opt, max) shapes.

    Raises:
        SeglocError: a backend that cannot run here, except tensorrt: without the package, a
            GPU, or an engine that builds and loads, the session falls back to ONNX Runtime
            with an ERROR status (a node keeps running, and says why).
    """
    # An explicit tensorrt that cannot run here still gives a working session: ONNX Runtime, at ERROR.
    backend = "tensorrt" if config.backend == "tensorrt" else resolve_backend(config.backend, device)
    if backend == "torch":
        session: InferenceSession = TorchSession(module, input_names, output_names, device)
    else:
        onnx_path = Path(onnx() if callable(onnx) else onnx)
        if backend == "onnxruntime":
            session = OnnxRuntimeSession(onnx_path, device, config.threads)
        else:
            from segloc.runtime.tensorrt import open_tensorrt_session

            session = open_tensorrt_session(onnx_path, config, device, dict(input_shapes or {}))
    session.status.requested = config.backend
    names = (session.input_names, session.output_names)
    if names != (tuple(input_names), tuple(output_names)):
        raise SeglocError(f"the {session.backend} session has inputs/outputs {names}, expected {(tuple(input_names), tuple(output_names))}")
    logger.info("inference: %s", session.status.message)
    return session


def inference_statuses(component: Any) -> list[SessionStatus]:
    """The statuses of the sessions a localizer or pipeline runs: its ``inference_status()``, [] when it has none (no network)."""
    method = getattr(component, "inference_status", None)
    return list(method()) if callable(method) else []


def with_runtime(config: Any, device: str | None = None, backend: str | None = None, threads: int | None = None) -> Any:
    """A copy of a method's config with its ``device`` and ``runtime`` fields overridden (the CLI's and the nodes' options).

    Args:
        config: a localize or map config; one without those fields (a method that runs no
            network) is returned unchanged.
        device: torch device; None keeps the config's.
        backend: a :data:`BACKEND_CHOICES` value; None keeps the config's.
        threads: ONNX Runtime intra-op threads; None or 0 keeps the config's.
    """
    if not dataclasses.is_dataclass(config):
        return config
    names = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    if "device" in names and device is not None:
        changes["device"] = device
    if "runtime" in names and isinstance(config.runtime, RuntimeConfig):
        runtime = config.runtime
        changes["runtime"] = dataclasses.replace(runtime, backend=backend or runtime.backend, threads=threads or runtime.threads)
    return dataclasses.replace(config, **changes) if changes else config
