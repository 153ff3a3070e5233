"""ONNX export of the segmentation network, the segmenter on each backend, and the map's onnx layer."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from segloc.cli import main
from segloc.maps.package import MapPackage, MapWriter
from segloc.methods.segloc.layer import write_segloc_model
from segloc.models import SegmentationNet, segmentation_config
from segloc.models import export as export_module
from segloc.models.checkpoint import save_checkpoint
from segloc.models.export import (
    ONNX_LAYER,
    add_onnx_layer,
    export_segmentation_onnx,
    read_onnx_layer,
    weights_sha256,
)
from segloc.models.segmenter import NetworkSegmenter
from segloc.runtime.session import OnnxRuntimeSession, RuntimeConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="ONNX export needs onnxscript and onnxruntime",
)

SMALL = {"pretrained": False, "num_classes": 6, "feature_dim": 16, "head_hidden_dim": 16, "decoder_channels": [32, 24, 16, 16]}


def small_net() -> SegmentationNet:
    torch.manual_seed(0)
    return SegmentationNet(segmentation_config("cpu", **SMALL)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    net = small_net()
    path = export_segmentation_onnx(net, tmp_path_factory.mktemp("export") / "segmentation.onnx", (96, 64))
    return net, path


def test_export_has_named_inputs_and_outputs_and_dynamic_sizes_that_match_torch(exported):
    net, path = exported
    session = OnnxRuntimeSession(path, threads=1)
    assert session.input_names == ("image",) and session.output_names == ("logits0", "logits1", "logits2", "logits3")
    for height, width in ((64, 96), (128, 160), (96, 96)):  # sizes other than the exported one: H, W are dynamic
        image = torch.rand(1, 3, height, width)
        got = session.run({"image": image.numpy()})
        with torch.no_grad():
            expected = net(image, with_features=False).logits
        for level, (name, value) in enumerate(got.items()):
            assert tuple(value.shape) == (1, 6, height // net.level_strides[level], width // net.level_strides[level])
            torch.testing.assert_close(value, expected[level], atol=1e-4, rtol=1e-4, msg=name)


def test_segmenter_gives_the_same_probabilities_on_every_backend(exported, tmp_path, monkeypatch):
    net, path = exported
    image = (np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)
    reference = NetworkSegmenter(net, inference_max_edge=128)(image)
    onnx = NetworkSegmenter(net, 128, runtime=RuntimeConfig("onnxruntime", threads=1), onnx_path=path)
    assert onnx.session.status.backend == "onnxruntime"
    got = onnx(image)
    assert got.input_size == reference.input_size
    worst = max(float((a - b).abs().max()) for a, b in zip(reference.probabilities, got.probabilities))
    assert worst < 1e-4
    np.testing.assert_allclose(got.descriptor, reference.descriptor, atol=1e-4)
    # Without a file the export is cached by the weights' hash: made once, then reused.
    exports = []

    def export(model, target, size):
        exports.append(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        return target

    monkeypatch.setattr(export_module, "export_segmentation_onnx", export)
    cache = RuntimeConfig("onnxruntime", threads=1, cache_dir=str(tmp_path / "cache"))
    first = NetworkSegmenter(net, 128, runtime=cache)
    second = NetworkSegmenter(net, 128, runtime=cache)
    assert len(exports) == 1 and weights_sha256(net)[:32] in exports[0].name
    assert torch.allclose(first(image).probabilities[-1], second(image).probabilities[-1])
    other = small_net()
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    NetworkSegmenter(other, 128, runtime=cache)
    assert len(exports) == 2 and exports[1] != exports[0]  # other weights, another export


def write_map(path, net) -> MapPackage:
    with MapWriter(path, method="segloc") as writer:
        write_segloc_model(writer, net)
        return writer.commit()


def test_onnx_layer_lives_in_the_map_with_its_checksum(exported, tmp_path):
    net, path = exported
    package = write_map(tmp_path / "map", net)
    stored = add_onnx_layer(package.path, net, path)
    reopened = MapPackage.open(package.path)  # checksums verified
    reopened.check_contents()
    assert stored == package.path / ONNX_LAYER / "segmentation.onnx" and stored.read_bytes() == path.read_bytes()
    assert f"{ONNX_LAYER}/segmentation.onnx" in reopened.manifest["files"] and reopened.has_layer("segloc_model")
    assert read_onnx_layer(reopened, net) == stored
    changed = small_net()
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    assert read_onnx_layer(reopened, changed) is None  # a stale export is never used
    stored.write_bytes(b"tampered")
    with pytest.raises(Exception, match="checksum|sha256|SHA-256"):
        MapPackage.open(package.path)


@pytest.mark.slow
def test_cli_export_of_a_checkpoint_and_into_a_map(tmp_path, capsys):
    net = small_net()
    checkpoint = save_checkpoint(net, tmp_path / "checkpoint", metadata={"image_size": [96, 64]})
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "net.onnx")]) == 0
    assert "exported" in capsys.readouterr().out and (tmp_path / "net.onnx").is_file()
    assert main(["export", str(checkpoint)]) == 1
    assert "give -o FILE.onnx" in capsys.readouterr().err
    package = write_map(tmp_path / "map", net)
    image = tmp_path / "query.png"
    import cv2

    cv2.imwrite(str(image), (np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8))
    assert main(["export", str(package.path), "--size", "96x64", "--check-image", str(image), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "stored in the map as onnx/segmentation.onnx" in out and "torch vs onnxruntime" in out
    difference = float(out.split("torch vs onnxruntime: ")[1].split()[0])
    assert difference < 1e-4
    info = json.loads((package.path / ONNX_LAYER / "segmentation_export.json").read_text())
    assert info["weights_sha256"] == weights_sha256(net) and info["inputs"] == ["image"]
    if importlib.util.find_spec("tensorrt") is None:
        assert main(["export", str(package.path), "--backend", "tensorrt"]) == 1
        assert "backend tensorrt needs the tensorrt Python package" in capsys.readouterr().err
