"""Inference backends: one session interface over torch, ONNX Runtime and TensorRT (engines cached).

- :mod:`segloc.runtime.session`: :class:`InferenceSession`, the backends, ``auto`` and :func:`create_session`;
- :mod:`segloc.runtime.onnx`: ONNX export with named inputs and outputs, checked against torch;
- :mod:`segloc.runtime.tensorrt`: the engine cache, rebuild and fallback to ONNX Runtime.

The project's networks are exported and wrapped in sessions by :mod:`segloc.models.export`.
"""

from segloc.runtime.session import (
    BACKEND_CHOICES,
    BACKENDS,
    InferenceSession,
    OnnxRuntimeSession,
    RuntimeConfig,
    SessionStatus,
    TorchSession,
    backend_available,
    create_session,
    resolve_backend,
)

__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "InferenceSession",
    "OnnxRuntimeSession",
    "RuntimeConfig",
    "SessionStatus",
    "TorchSession",
    "backend_available",
    "create_session",
    "resolve_backend",
]
