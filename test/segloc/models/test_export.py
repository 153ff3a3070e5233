"""ONNX export of the segmentation network, the segmenter on each backend, and the map's onnx layer."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from segloc.cli import main
from segloc.errors import SeglocError
from segloc.maps.package import MapPackage, MapWriter
from segloc.methods.segloc.layer import write_segloc_model
from segloc.models import SegmentationNet, segmentation_config
from segloc.models import export as export_module
from segloc.models.checkpoint import save_checkpoint
from segloc.models.export import (
    ONNX_LAYER,
    add_onnx_layer,
    export_network,
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
    path = export_network(net, tmp_path_factory.mktemp("export") / "segmentation.onnx", (96, 64))
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

    monkeypatch.setattr(export_module, "export_network", export)
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


# --- every network of the project: SLD*'s landmarks (per input size) and NetVLAD (dynamic) -------


def small_landmarks():
    from segloc.models.landmarks import LandmarkEnsemble, LandmarkNetConfig

    torch.manual_seed(0)
    return LandmarkEnsemble(LandmarkNetConfig(24, 2, pretrained=False, fuse_channels=16, head_channels=8)).eval()


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def test_landmark_network_is_exported_per_input_size_and_matches_torch(tmp_path):
    """SLD* runs at the map's image size (not a multiple of 32): one export per size, outputs as torch's."""
    from segloc.models.export import LandmarkHeatmaps, network_onnx, network_session

    net = small_landmarks()
    size = (120, 90)
    path = network_onnx(net, tmp_path / "cache", size)
    assert path.name.endswith("-120x90.onnx") and network_onnx(net, tmp_path / "cache", size) == path  # cached
    session = network_session(net, RuntimeConfig("onnxruntime", threads=1), onnx_path=path, max_size=size)
    assert session.backend == "onnxruntime" and session.output_names == ("heatmaps",)
    image = torch.rand(1, 3, 90, 120, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = LandmarkHeatmaps(net)(image)
    got = session.run({"image": image.numpy()})["heatmaps"]
    assert got.shape == expected.shape == (1, 24, 12, 15)
    assert relative_difference(expected, got) < 1e-4
    with pytest.raises(SeglocError, match="give the size"):
        add_onnx_layer(tmp_path / "nomap", net, path)


def test_netvlad_export_is_dynamic_and_refuses_other_sizes_than_multiples_of_32(tmp_path):
    from segloc.models.export import network_session
    from segloc.models.netvlad import NetVlad, NetVladConfig, sample_features

    torch.manual_seed(0)
    net = NetVlad(NetVladConfig(pretrained=False, num_clusters=8)).eval()
    with torch.no_grad():
        net.initialise_clusters(sample_features(net.features(torch.rand(2, 3, 96, 128)), 50, torch.Generator().manual_seed(0)))
    with pytest.raises(SeglocError, match="multiples of 32"):
        export_network(net, tmp_path / "bad.onnx", (120, 90))
    path = export_network(net, tmp_path / "netvlad.onnx", (128, 96))
    session = network_session(net, RuntimeConfig("onnxruntime", threads=1), onnx_path=path, max_size=(128, 96))
    for height, width in ((96, 128), (160, 224)):
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            expected = net(image).descriptor
        got = session.run({"image": image.numpy()})["descriptor"]
        assert float(torch.nn.functional.cosine_similarity(expected, got).min()) > 0.9999
