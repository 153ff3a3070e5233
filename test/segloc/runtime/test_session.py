"""The session interface and backend selection (segloc.runtime.session)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from segloc.errors import SeglocError
from segloc.runtime import session as runtime_session
from segloc.runtime.session import RuntimeConfig, TorchSession, resolve_backend, with_runtime


class TwoOutputs(nn.Module):
    def forward(self, image, scale):
        return image * scale, image.sum()


def test_torch_session_takes_numpy_or_torch_by_name_and_returns_torch():
    session = TorchSession(TwoOutputs(), ["image", "scale"], ["scaled", "total"])
    outputs = session.run({"image": np.ones((2, 3), np.float32), "scale": torch.tensor(2.0)})
    assert set(outputs) == {"scaled", "total"} and all(isinstance(v, torch.Tensor) for v in outputs.values())
    assert torch.equal(outputs["scaled"], torch.full((2, 3), 2.0)) and float(outputs["total"]) == 6.0
    assert session.status.backend == "torch" and session.status.level == "ok"
    with pytest.raises(SeglocError, match=r"missing \['scale'\], unknown \['scal'\]; the network takes image, scale"):
        session.run({"image": np.ones(3, np.float32), "scal": 1.0})


def test_auto_prefers_tensorrt_then_onnxruntime_then_torch(monkeypatch):
    for available, expected in ((("tensorrt", "onnxruntime"), "tensorrt"), (("onnxruntime",), "onnxruntime"), ((), "torch")):
        monkeypatch.setattr(runtime_session, "backend_available", lambda b, d="cpu", a=available: b == "torch" or b in a)
        assert resolve_backend("auto") == expected
    assert resolve_backend("torch") == "torch"


def test_backend_that_cannot_run_says_what_is_missing(monkeypatch):
    with pytest.raises(SeglocError, match="unknown backend 'tensorflow'"):
        runtime_session.backend_available("tensorflow")
    monkeypatch.setattr(runtime_session, "backend_available", lambda b, d="cpu": b == "torch")
    with pytest.raises(SeglocError, match=r"onnxruntime needs the onnxruntime package: pip install 'segloc_ros\[export\]'"):
        resolve_backend("onnxruntime")
    with pytest.raises(SeglocError, match="backend tensorrt needs the tensorrt Python package and a CUDA GPU"):
        resolve_backend("tensorrt")


def test_runtime_config_rejects_bad_values():
    with pytest.raises(SeglocError, match="runtime: unknown backend 'trt'; valid values are: torch, onnxruntime, tensorrt, auto"):
        RuntimeConfig("trt")
    with pytest.raises(SeglocError, match="runtime: unknown precision 'int8'"):
        RuntimeConfig(precision="int8")
    with pytest.raises(SeglocError, match="runtime.threads must be >= 0"):
        RuntimeConfig(threads=-1)


def test_with_runtime_overrides_device_backend_and_threads():
    @dataclasses.dataclass
    class Localize:
        device: str = "cpu"
        runtime: RuntimeConfig = dataclasses.field(default_factory=lambda: RuntimeConfig(threads=3))

    config = with_runtime(Localize(), "cuda", "onnxruntime", 0)
    assert (config.device, config.runtime.backend, config.runtime.threads) == ("cuda", "onnxruntime", 3)
    assert with_runtime(config, None, None, 2).runtime == RuntimeConfig("onnxruntime", threads=2)
    assert with_runtime("not a config", "cuda", "auto", 1) == "not a config"
