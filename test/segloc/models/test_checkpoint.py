"""Checkpoints: safetensors + manifest round trip, and clear errors for every kind of bad file."""

import json

import pytest
import torch

from segloc.errors import SeglocError
from segloc.models import (
    SegmentationNet,
    load_checkpoint,
    load_weights,
    read_checkpoint_info,
    read_state_dict,
    save_checkpoint,
    segmentation_config,
)
from segloc.models.checkpoint import FORMAT_VERSION, MANIFEST, WEIGHTS

SMALL = {"pretrained": False, "num_classes": 6, "feature_dim": 16, "head_hidden_dim": 16, "decoder_channels": [32, 24, 16, 16]}


class NotATensor:
    """A pickled object of this class needs code to load: weights_only must refuse it."""


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def trained_net(**overrides) -> SegmentationNet:
    """A small network whose BatchNorm statistics moved away from their initial values."""
    net = SegmentationNet(segmentation_config("cpu", **{**SMALL, **overrides}))
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 3, 64, 64))
    return net.eval()


@pytest.fixture
def checkpoint(tmp_path):
    net = trained_net()
    return net, save_checkpoint(net, tmp_path / "segmentation", metadata={"epoch": 3, "loss": 0.25})


def test_round_trip_gives_identical_outputs(checkpoint):
    net, path = checkpoint
    loaded = load_checkpoint(path, expected={"num_classes": 6, "decoder_channels": (32, 24, 16, 16)})
    assert isinstance(loaded, SegmentationNet) and not loaded.training
    assert loaded.config == segmentation_config("cpu", **SMALL)
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected, got = net(image), loaded(image)
    for a, b in zip(expected.features + expected.logits, got.features + got.logits):
        assert torch.equal(a, b)
    info = read_checkpoint_info(path)
    assert info.model == "segmentation" and info.metadata == {"epoch": 3, "loss": 0.25}
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION and len(manifest["weights"]["sha256"]) == 64
    assert manifest["num_parameters"] == sum(p.numel() for p in net.parameters())
    assert sorted(p.name for p in path.iterdir()) == sorted([MANIFEST, WEIGHTS])


def test_half_precision_checkpoint_is_half_the_size_and_loads_as_float32(checkpoint, tmp_path):
    net, full = checkpoint
    half = save_checkpoint(net, tmp_path / "half", dtype="float16")
    assert json.loads((half / MANIFEST).read_text())["dtype"] == "float16"
    assert (half / WEIGHTS).stat().st_size < 0.55 * (full / WEIGHTS).stat().st_size
    loaded = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected, got = net(image), loaded(image)
    for a, b in zip(expected.logits, got.logits):
        assert torch.allclose(a, b, atol=2e-2 * float(a.abs().max()))
    with pytest.raises(SeglocError, match="dtype"):
        save_checkpoint(net, tmp_path / "bad", dtype="int8")


def test_bare_weights_load_into_a_built_model(checkpoint, tmp_path):
    net, path = checkpoint
    fresh = SegmentationNet(segmentation_config("cpu", **SMALL))
    load_weights(fresh, path / WEIGHTS)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
    torch_file = tmp_path / "weights.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, torch_file)  # a trainer's layout
    load_weights(SegmentationNet(segmentation_config("cpu", **SMALL)), torch_file)


def test_existing_checkpoint_needs_overwrite(checkpoint):
    net, path = checkpoint
    with pytest.raises(SeglocError, match="already exists; pass overwrite=True"):
        save_checkpoint(net, path)
    save_checkpoint(net, path, metadata={"epoch": 4}, overwrite=True)
    assert read_checkpoint_info(path).metadata == {"epoch": 4}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging folders left behind
    (path.parent / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(SeglocError, match="exists and is not a checkpoint; refusing to replace it"):
        save_checkpoint(net, path.parent / "notes.txt", overwrite=True)


def test_modified_weights_fail_the_checksum(checkpoint):
    _, path = checkpoint
    weights = path / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SeglocError, match="does not match the checksum in manifest.json; the file is corrupt or was modified"):
        load_checkpoint(path)


def test_truncated_weights_are_a_clear_error(checkpoint):
    _, path = checkpoint
    weights = path / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(SeglocError, match="is not a valid safetensors file .*corrupt or truncated"):
        load_checkpoint(path, verify_checksum=False)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: "{not json", r"manifest.json is not valid JSON .*the checkpoint is corrupt"),
        (lambda m: {**m, "format": "something-else"}, "is not a segloc checkpoint manifest"),
        (
            lambda m: {**m, "format_version": FORMAT_VERSION + 1},
            f"has format version {FORMAT_VERSION + 1}; this segloc reads version {FORMAT_VERSION}",
        ),
        (lambda m: {k: v for k, v in m.items() if k != "config"}, "manifest .* is incomplete: it needs model, config and weights"),
        (lambda m: {**m, "model": "landmarks_v9"}, "unknown model 'landmarks_v9'; available models: .*segmentation"),
        (lambda m: {**m, "config": {**m["config"], "num_clases": 5}}, r"config: unknown option\(s\) num_clases"),
        (lambda m: {**m, "weights": {**m["weights"], "file": "../elsewhere.safetensors"}}, "points outside the checkpoint folder"),
    ],
    ids=["invalid-json", "format", "version", "incomplete", "unknown-model", "unknown-option", "path-escape"],
)
def test_bad_manifest_is_a_clear_error(checkpoint, edit, message):
    _, path = checkpoint
    manifest = json.loads((path / MANIFEST).read_text())
    edited = edit(manifest)
    (path / MANIFEST).write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(SeglocError, match=message):
        load_checkpoint(path)


def test_not_a_checkpoint_folder(tmp_path, checkpoint):
    _, path = checkpoint
    with pytest.raises(SeglocError, match="is not a checkpoint: .*manifest.json does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(SeglocError, match="is a file, but a checkpoint is a folder .* use segloc.models.load_weights"):
        load_checkpoint(path / WEIGHTS)
    (path / WEIGHTS).unlink()
    with pytest.raises(SeglocError, match="is incomplete: weights.safetensors is missing"):
        load_checkpoint(path)


def test_wrong_number_of_classes(checkpoint):
    _, path = checkpoint
    with pytest.raises(SeglocError, match="was trained with num_classes=6, but 100 is needed here"):
        load_checkpoint(path, expected={"num_classes": 100})
    with pytest.raises(
        SeglocError,
        match=r"shape mismatch\(es\) \(heads.0.classifier.3.weight: file \(6, 16, 1, 1\) vs model \(100, 16, 1, 1\).*num_classes",
    ):
        load_weights(SegmentationNet(segmentation_config("cpu", **{**SMALL, "num_classes": 100})), path / WEIGHTS)


def test_missing_and_unexpected_keys(checkpoint, tmp_path):
    net, _ = checkpoint
    state_dict = net.state_dict()
    partial = {k: v for k, v in state_dict.items() if not k.startswith("heads.3.")}
    with pytest.raises(SeglocError, match=r"missing key\(s\) \(heads.3.classifier.0.weight"):
        load_weights(net, partial, source="my weights")
    with pytest.raises(SeglocError, match=r"my weights does not fit SegmentationNet: 1 unexpected key\(s\) \(extra.weight\)"):
        load_weights(net, {**state_dict, "extra.weight": torch.zeros(1)}, source="my weights")


def test_bad_weight_files(tmp_path):
    net = SegmentationNet(segmentation_config("cpu", **SMALL))
    pickled = tmp_path / "model.pth"
    torch.save({"object": NotATensor()}, pickled)
    with pytest.raises(SeglocError, match="cannot read .*model.pth as a torch state dict with weights_only=True"):
        load_weights(net, pickled)
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(SeglocError, match="cannot read .*model.pt as a torch state dict"):
        read_state_dict(garbage)
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(SeglocError, match="does not hold a state dict"):
        read_state_dict(not_a_dict)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(SeglocError, match="unsupported weights file .*model.onnx: use .safetensors"):
        read_state_dict(tmp_path / "model.onnx")
    with pytest.raises(SeglocError, match="weights file .*missing.safetensors does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(SeglocError, match="metadata must be JSON-serialisable"):
        save_checkpoint(trained_net(), tmp_path / "ckpt", metadata={"tensor": torch.zeros(1)})
    assert not any(tmp_path.iterdir())


def test_shipped_checkpoints_load():
    from segloc.models.checkpoint import GENERAL_CHECKPOINT, SHIPPED_CHECKPOINTS, shipped_checkpoint

    for name, entry in SHIPPED_CHECKPOINTS.items():
        path = shipped_checkpoint(name)
        info = read_checkpoint_info(path)
        assert json.loads((path / MANIFEST).read_text())["dtype"] == "float16"
        if entry["scene"] is None:  # trained across places: the general network
            assert name == GENERAL_CHECKPOINT and "benchmarks/train_general.py" in entry["command"]
        else:  # trained on the demo scene
            assert entry["command"].startswith("segloc synth") and (entry["scene"], entry["seed"]) == ("room", 0)
        net = load_checkpoint(path)
        if info.model == "segmentation":  # the demo's SegLoc networks
            assert tuple(info.metadata["image_size"]) and isinstance(net, SegmentationNet)
            assert net.config.num_classes == info.metadata["num_classes"]
        else:  # the demo's SLD* landmark network: one heatmap per landmark it was trained for
            assert info.model == "landmarks" and net.config.num_landmarks == len(info.metadata["landmarks"]["positions"])
    with pytest.raises(SeglocError, match="no shipped checkpoint"):
        shipped_checkpoint("nonexistent")
