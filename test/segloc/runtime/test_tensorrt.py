"""TensorRT engine cache: keys, load, build, rebuild once, fallback to ONNX Runtime (fake builders on CPU; the real one on a GPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from segloc.runtime.onnx import export_onnx
from segloc.runtime.session import RuntimeConfig, SessionStatus, create_session
from segloc.runtime.tensorrt import EngineCache, EngineError, engine_key, load_or_build_engine, open_tensorrt_session

HAS_ONNX_EXPORT = importlib.util.find_spec("onnxscript") is not None and importlib.util.find_spec("onnxruntime") is not None
NEEDS_ONNX = pytest.mark.skipif(not HAS_ONNX_EXPORT, reason="ONNX export needs onnxscript and onnxruntime")
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
NEEDS_TENSORRT = pytest.mark.skipif(not HAS_TENSORRT, reason="needs the tensorrt package and a CUDA GPU")
SHAPES = {"image": ((1, 3, 32, 32), (1, 3, 64, 96), (1, 3, 128, 128))}


class TinyNet(nn.Module):
    """One conv: ``image`` (1, 3, H, W) -> ``scores`` (1, 4, H, W)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image):
        return self.conv(image).relu()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> tuple[nn.Module, Path]:
    if not HAS_ONNX_EXPORT:
        pytest.skip("ONNX export needs onnxscript and onnxruntime")
    net = TinyNet().eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return net, export_onnx(net, (torch.rand(1, 3, 64, 96),), path, ["image"], ["scores"])


class FakeBackend:
    """Builds b"engine-N"; ``deserialize`` fails on the bytes in ``bad`` (a corrupt file, a rebuild that fails again)."""

    def __init__(self, bad=(b"corrupt",), fail_build: bool = False):
        self.builds = 0
        self.bad = set(bad)
        self.fail_build = fail_build
        self.loaded: list[bytes] = []

    def build(self, onnx_path, key, workspace_mb):
        if self.fail_build:
            raise RuntimeError("out of GPU memory")
        self.builds += 1
        return f"engine-{self.builds}".encode()

    def deserialize(self, engine):
        if engine in self.bad or b"*" in self.bad:
            raise RuntimeError("Serialization assertion: version tag does not match")
        self.loaded.append(engine)
        return engine


def key_for(path: Path, **changes):
    parts = {"gpu_name": "NVIDIA Jetson AGX Orin", "compute_capability": (8, 7), "tensorrt_version": "10.3.0", "precision": "fp16"}
    parts.update(changes)
    shapes = parts.pop("input_shapes", SHAPES)
    return engine_key(path, parts["gpu_name"], parts["compute_capability"], parts["tensorrt_version"], parts["precision"], shapes)


def test_cache_key_changes_with_each_of_its_parts(tmp_path):
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"graph a")
    base = key_for(onnx)
    assert key_for(onnx) == base and key_for(onnx).digest() == base.digest()
    other_onnx = tmp_path / "b.onnx"
    other_onnx.write_bytes(b"graph b")
    variants = [
        key_for(other_onnx),
        key_for(onnx, gpu_name="NVIDIA GeForce RTX 4090"),
        key_for(onnx, compute_capability=(8, 9)),
        key_for(onnx, tensorrt_version="10.4.0"),
        key_for(onnx, precision="fp32"),
        key_for(onnx, input_shapes={"image": ((1, 3, 32, 32), (1, 3, 480, 640), (1, 3, 128, 128))}),
    ]
    digests = {base.digest(), *(variant.digest() for variant in variants)}
    assert len(digests) == 1 + len(variants)
    assert base.onnx_sha256 != variants[0].onnx_sha256 and len(base.onnx_sha256) == 64


def test_missing_engine_is_built_and_stored_then_loaded_from_the_cache(tmp_path):
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"graph")
    cache, backend, key = EngineCache(tmp_path / "engines"), FakeBackend(), key_for(onnx)
    events: list[str] = []
    assert load_or_build_engine(onnx, key, cache, backend, events=events) == b"engine-1"
    assert backend.builds == 1 and cache.path(key).read_bytes() == b"engine-1" and "built" in events[0]
    assert '"gpu_name": "NVIDIA Jetson AGX Orin"' in cache.path(key).with_suffix(".json").read_text()
    events = []
    assert load_or_build_engine(onnx, key, cache, backend, events=events) == b"engine-1"
    assert backend.builds == 1 and events == [f"cached TensorRT engine {cache.path(key).name}"]
    # Another TensorRT version (a JetPack upgrade) is another key: built, the old engine untouched.
    upgraded = key_for(onnx, tensorrt_version="10.7.0")
    assert load_or_build_engine(onnx, upgraded, cache, backend) == b"engine-2"
    assert cache.path(key).read_bytes() == b"engine-1" and not list(cache.directory.glob("*.tmp"))


def test_engine_that_does_not_deserialize_is_rebuilt_once(tmp_path):
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"graph")
    cache, backend, key = EngineCache(tmp_path / "engines"), FakeBackend(), key_for(onnx)
    cache.store(key, b"corrupt")
    events: list[str] = []
    assert load_or_build_engine(onnx, key, cache, backend, events=events) == b"engine-1"
    assert backend.builds == 1 and cache.read(key) == b"engine-1"
    assert "did not deserialize" in events[1] and "rebuilding it once" in events[1]
    # A rebuild that fails to load too raises (after exactly one rebuild), it does not loop.
    cache.store(key, b"corrupt")
    always_bad = FakeBackend(bad=(b"*",))
    with pytest.raises(EngineError, match="rebuilt TensorRT engine .* does not deserialize either"):
        load_or_build_engine(onnx, key, cache, always_bad)
    assert always_bad.builds == 1


@NEEDS_ONNX
@pytest.mark.parametrize("failure", ["corrupt engine, rebuild fails to load", "build fails", "no tensorrt"])
def test_no_loadable_engine_falls_back_to_onnxruntime_with_an_error(failure, tiny_onnx, tmp_path):
    net, onnx = tiny_onnx
    config = RuntimeConfig("tensorrt", threads=1, cache_dir=str(tmp_path / "cache"))
    options = {"gpu": ("NVIDIA Jetson AGX Orin", (8, 7)), "tensorrt_version": "10.3.0", "make_session": lambda engine, device, status: None}
    if failure == "corrupt engine, rebuild fails to load":
        key = engine_key(onnx, "NVIDIA Jetson AGX Orin", (8, 7), "10.3.0", "fp16", SHAPES)
        EngineCache(config.cache_path / "engines").store(key, b"corrupt")
        options["backend"] = FakeBackend(bad=(b"*",))
    elif failure == "build fails":
        options["backend"] = FakeBackend(fail_build=True)
    if failure == "no tensorrt" and HAS_TENSORRT:
        pytest.skip("tensorrt and a GPU are present here")
    session = open_tensorrt_session(onnx, config, "cpu", SHAPES, **({} if failure == "no tensorrt" else options))
    assert session.backend == "onnxruntime"
    status: SessionStatus = session.status
    assert (status.requested, status.backend, status.level) == ("tensorrt", "onnxruntime", "error")
    assert "running on onnxruntime instead" in status.message and "falling back" in status.events[-1]
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = net(image)
    torch.testing.assert_close(session.run({"image": image})["scores"], expected, atol=1e-5, rtol=1e-5)


@NEEDS_ONNX
def test_fake_engine_goes_through_the_session_factory(tiny_onnx, tmp_path):
    _, onnx = tiny_onnx
    config = RuntimeConfig("tensorrt", cache_dir=str(tmp_path / "cache"))
    made = []

    def make_session(engine, device, status):
        made.append((engine, status))
        return "session"

    options = {"backend": FakeBackend(), "gpu": ("NVIDIA GeForce GTX 1050", (6, 1)), "tensorrt_version": "10.3.0"}
    assert open_tensorrt_session(onnx, config, "cuda", SHAPES, make_session=make_session, **options) == "session"
    engine, status = made[0]
    assert engine == b"engine-1" and status.level == "ok" and status.backend == "tensorrt" and "fp16" in status.message
    old_gpu = {**options, "gpu": ("Tesla K80", (3, 7))}  # no fast fp16: the engine is fp32, under its own key
    open_tensorrt_session(onnx, config, "cuda", SHAPES, make_session=make_session, **old_gpu)
    assert "fp32" in made[1][1].message and "built" in made[1][1].events[0]


@NEEDS_TENSORRT
def test_real_tensorrt_engine_matches_torch_is_cached_and_rebuilt_when_corrupt(tiny_onnx, tmp_path):
    net, onnx = tiny_onnx
    config = RuntimeConfig("tensorrt", precision="fp32", cache_dir=str(tmp_path / "cache"))
    session = create_session(config, net, ["image"], ["scores"], onnx, "cuda", SHAPES)
    assert session.backend == "tensorrt" and session.status.level == "ok" and "built" in session.status.events[0]
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = net(image)
    torch.testing.assert_close(session.run({"image": image})["scores"].cpu(), expected, atol=1e-3, rtol=1e-3)
    again = create_session(config, net, ["image"], ["scores"], onnx, "cuda", SHAPES)
    assert again.status.events[0].startswith("cached TensorRT engine")
    engines = list((config.cache_path / "engines").glob("*.engine"))
    engines[0].write_bytes(b"not an engine")
    rebuilt = create_session(config, net, ["image"], ["scores"], onnx, "cuda", SHAPES)
    assert rebuilt.backend == "tensorrt" and any("rebuilding it once" in e for e in rebuilt.status.events)
