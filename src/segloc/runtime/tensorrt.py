"""TensorRT engines built from ONNX files, cached so that a robot never rebuilds one it already has.

An engine is only valid for the ONNX file, the GPU, the TensorRT version, the precision and
the optimisation profiles it was built for, so its cache key is all of them
(:class:`EngineKey`); the file is ``<cache>/engines/<key digest>.engine`` beside a
``.json`` with the key. :func:`load_or_build_engine`:

1. loads the engine of the key when the cache has it (a changed GPU, TensorRT or ONNX file
   is another key: its engine is built, never loaded by mistake);
2. builds and stores (atomically) a missing one;
3. rebuilds once an engine that does not deserialize (a corrupt file, or TensorRT's own
   "version tag does not match"), and raises :class:`EngineError` when that fails too.

:func:`open_tensorrt_session` turns an :class:`EngineError` into a fallback: the session runs
on ONNX Runtime and its status is ERROR with the reason, which the nodes publish on
``/diagnostics``. The builder and the deserializer are passed in (:class:`EngineBackend`), so
the cache and fallback logic is tested without a GPU; :class:`TensorRTBackend` is the real one.

Build engines offline with ``segloc export MAP --backend tensorrt`` (on the robot, or in its
Docker image's build step): the node then finds them in the cache at start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from segloc.errors import SeglocError
from segloc.fileio import atomic_write, sha256_file
from segloc.runtime.session import OnnxRuntimeSession, RuntimeConfig, SessionStatus, _check_inputs

logger = logging.getLogger("segloc")

__all__ = [
    "EngineBackend",
    "EngineCache",
    "EngineError",
    "EngineKey",
    "TensorRTBackend",
    "TensorRTSession",
    "engine_key",
    "load_or_build_engine",
    "open_tensorrt_session",
]

Profiles = Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


class EngineError(SeglocError):
    """A TensorRT engine could be neither loaded nor built."""


@dataclass(frozen=True)
class EngineKey:
    """What a TensorRT engine is valid for.

    Attributes:
        onnx_sha256: SHA-256 of the ONNX file.
        gpu_name: the GPU's name (``NVIDIA Jetson AGX Orin``, ``NVIDIA GeForce RTX 4090``).
        compute_capability: (major, minor).
        tensorrt_version: ``tensorrt.__version__``.
        precision: ``fp16`` or ``fp32`` (what was built: fp16 asked on a GPU without fast fp16 is fp32).
        input_shapes: per input name, the (min, opt, max) shapes of its optimisation profile, sorted by name.
    """

    onnx_sha256: str
    gpu_name: str
    compute_capability: tuple[int, int]
    tensorrt_version: str
    precision: str
    input_shapes: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]

    def digest(self) -> str:
        """A file name for the key: 32 hex digits of the SHA-256 of its JSON."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def engine_key(
    onnx_path: str | Path, gpu_name: str, compute_capability: tuple[int, int], tensorrt_version: str, precision: str, input_shapes: Profiles
) -> EngineKey:
    """The :class:`EngineKey` of an ONNX file (hashed here) for a GPU, TensorRT version, precision and profiles."""
    shapes = tuple(sorted((name, tuple(tuple(int(s) for s in shape) for shape in profile)) for name, profile in input_shapes.items()))
    return EngineKey(sha256_file(onnx_path), gpu_name, tuple(int(c) for c in compute_capability), tensorrt_version, precision, shapes)


class EngineCache:
    """Serialized engines under ``directory``, one file per :class:`EngineKey`, written atomically."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()

    def path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest()}.engine"

    def read(self, key: EngineKey) -> bytes | None:
        """The stored engine of ``key``, or None."""
        path = self.path(key)
        return path.read_bytes() if path.is_file() else None

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Store ``engine`` for ``key`` (the key beside it as JSON); a reader never sees half a file."""
        path = self.path(key)
        atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(key.to_json(), indent=1)))
        atomic_write(path, lambda tmp: tmp.write_bytes(engine))
        return path


class EngineBackend(Protocol):
    """Builds and loads serialized engines (the real one: :class:`TensorRTBackend`)."""

    def build(self, onnx_path: Path, key: EngineKey, workspace_mb: int) -> bytes:
        """Build the engine of ``onnx_path`` for ``key`` (its precision and profiles); returns it serialized."""
        ...

    def deserialize(self, engine: bytes) -> Any:
        """Load a serialized engine; raise on failure."""
        ...


def load_or_build_engine(
    onnx_path: Path, key: EngineKey, cache: EngineCache, backend: EngineBackend, workspace_mb: int = 1024, events: list[str] | None = None
) -> Any:
    """The engine of ``key``: loaded from ``cache``, or built and stored (see the module docstring).

    Args:
        events: receives one line per step (cache hit, build and its time, rebuild).

    Raises:
        EngineError: the build failed, or a rebuilt engine does not deserialize either.
    """
    events = events if events is not None else []
    path = cache.path(key)

    def build(reason: str) -> bytes:
        start = time.perf_counter()
        try:
            engine = backend.build(onnx_path, key, workspace_mb)
        except Exception as exc:
            raise EngineError(f"TensorRT engine build from {onnx_path} failed ({reason}): {exc}") from exc
        cache.store(key, engine)
        events.append(f"built TensorRT engine {path.name} in {time.perf_counter() - start:.1f} s ({reason})")
        logger.info("tensorrt: %s", events[-1])
        return engine

    serialized = cache.read(key)
    if serialized is None:
        serialized = build("no cached engine for this ONNX file, GPU, TensorRT version, precision and input shapes")
    else:
        events.append(f"cached TensorRT engine {path.name}")
    try:
        return backend.deserialize(serialized)
    except Exception as first:
        events.append(f"engine {path.name} did not deserialize ({first}); rebuilding it once")
        logger.warning("tensorrt: %s", events[-1])
        serialized = build("the cached engine did not deserialize")
        try:
            return backend.deserialize(serialized)
        except Exception as second:
            raise EngineError(f"the rebuilt TensorRT engine {path.name} does not deserialize either: {second}") from second


class TensorRTBackend:
    """The real :class:`EngineBackend`: the ``tensorrt`` Python package (needs a CUDA GPU)."""

    def __init__(self) -> None:
        try:
            import tensorrt
        except ImportError:
            raise EngineError("the tensorrt Python package is not installed") from None
        self.trt = tensorrt
        self.logger = tensorrt.Logger(tensorrt.Logger.WARNING)

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    def build(self, onnx_path: Path, key: EngineKey, workspace_mb: int) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode of TensorRT >= 10
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        if key.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, (minimum, optimum, maximum) in key.input_shapes:
            profile.set_shape(name, minimum, optimum, maximum)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
        return bytes(serialized)

    def deserialize(self, engine: bytes) -> Any:
        runtime = self.trt.Runtime(self.logger)
        loaded = runtime.deserialize_cuda_engine(engine)
        if loaded is None:
            raise EngineError("TensorRT could not deserialize the engine (corrupt, or built by another TensorRT version or GPU)")
        return loaded


def _supports_fast_fp16(compute_capability: tuple[int, int]) -> bool:
    return compute_capability >= (5, 3)


class TensorRTSession:
    """Runs a deserialized engine on torch CUDA tensors (TensorRT >= 10 tensor API).

    Args:
        engine: a ``tensorrt.ICudaEngine``.
        device: the CUDA device.
        status: how it was obtained (cache hit or build).
    """

    backend = "tensorrt"

    def __init__(self, engine: Any, device: str, status: SessionStatus):
        import tensorrt as trt

        self.engine = engine
        self.context = engine.create_execution_context()
        self.device = torch.device(device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._dtypes = {n: torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(n)))).dtype for n in names}
        self.status = status

    def run(self, inputs: Mapping[str, np.ndarray | Tensor]) -> dict[str, Tensor]:
        _check_inputs(inputs, self.input_names)
        stream = torch.cuda.current_stream(self.device)
        keep = []
        for name in self.input_names:
            tensor = torch.as_tensor(inputs[name]).to(self.device, self._dtypes[name]).contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise SeglocError("TensorRT inference failed (execute_async_v3 returned false)")
        stream.synchronize()
        return {name: tensor.float() for name, tensor in outputs.items()}


def open_tensorrt_session(
    onnx_path: Path,
    config: RuntimeConfig,
    device: str,
    input_shapes: Profiles,
    backend: EngineBackend | None = None,
    gpu: tuple[str, tuple[int, int]] | None = None,
    tensorrt_version: str | None = None,
    make_session: Any = None,
) -> Any:
    """A TensorRT session for ``onnx_path``, or an ONNX Runtime one with an ERROR status when no engine loads.

    Args:
        onnx_path: the network.
        config: precision, workspace and cache folder (engines go to ``<cache>/engines``).
        device: the CUDA device.
        input_shapes: the optimisation profile, per input (min, opt, max).
        backend, gpu, tensorrt_version, make_session: replacements of the real TensorRT
            builder, the GPU's (name, compute capability), TensorRT's version and the
            engine -> session step (tests without a GPU); None: the real ones.
    """
    events: list[str] = []
    try:
        backend = backend or TensorRTBackend()
        if gpu is None:
            if not torch.cuda.is_available():
                raise EngineError("no CUDA GPU is available to this process")
            index = torch.device(device).index or 0
            gpu = (torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index))
        version = tensorrt_version or getattr(backend, "version", "unknown")
        precision = config.precision if config.precision == "fp32" or _supports_fast_fp16(gpu[1]) else "fp32"
        key = engine_key(onnx_path, gpu[0], gpu[1], version, precision, input_shapes)
        engine = load_or_build_engine(onnx_path, key, EngineCache(config.cache_path / "engines"), backend, config.workspace_mb, events)
        status = SessionStatus("tensorrt", "tensorrt", "ok", f"tensorrt {version} {precision} on {gpu[0]}: {events[-1]}", events)
        return (make_session or TensorRTSession)(engine, device, status)
    except Exception as exc:
        reason = f"{exc}" if isinstance(exc, SeglocError) else f"{type(exc).__name__}: {exc}"
        events.append(f"falling back to onnxruntime: {reason}")
        logger.error("tensorrt: %s", events[-1])
        session = OnnxRuntimeSession(onnx_path, device, config.threads)
        session.status = SessionStatus(
            "tensorrt", "onnxruntime", "error", f"TensorRT unavailable, running on onnxruntime instead: {reason}", events
        )
        return session
