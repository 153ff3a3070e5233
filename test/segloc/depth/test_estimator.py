"""The depth estimator interface: the project's network from a checkpoint, and user ONNX models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from segloc.depth import DepthEstimator, DepthEstimatorConfig, OnnxDepthEstimator, TorchDepthEstimator, load_depth_estimator
from segloc.errors import SeglocError
from segloc.models.checkpoint import save_checkpoint
from segloc.models.depth import DepthNet, DepthNetConfig

INPUT_SIZE = (64, 48)


@pytest.fixture(scope="module")
def depth_net() -> DepthNet:
    torch.manual_seed(0)
    return DepthNet(DepthNetConfig(pretrained=False, decoder_channels=(16, 16, 16, 16))).eval()


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)


class InverseDepthNHW(nn.Module):
    """A user's network in another convention: ImageNet-normalised input, (N, H, W) inverse depth."""

    def __init__(self, depth_net: nn.Module):
        super().__init__()
        self.depth_net = depth_net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 1.0 / self.depth_net(image * self.std + self.mean)[:, 0]


def test_checkpoint_and_onnx_give_the_same_depth(tmp_path, depth_net, image):
    from segloc.runtime.onnx import export_onnx

    save_checkpoint(depth_net, tmp_path / "ckpt", metadata={"input_size": list(INPUT_SIZE)})
    from_checkpoint = load_depth_estimator(DepthEstimatorConfig(source="checkpoint", path=str(tmp_path / "ckpt")))
    assert isinstance(from_checkpoint, DepthEstimator) and from_checkpoint.input_size == INPUT_SIZE
    example = torch.rand(1, 3, INPUT_SIZE[1], INPUT_SIZE[0])
    export_onnx(depth_net, [example], tmp_path / "depth.onnx", ["image"], ["depth"])
    config = DepthEstimatorConfig(source="onnx", path=str(tmp_path / "depth.onnx"), input_size=INPUT_SIZE)
    from_onnx = load_depth_estimator(config)

    expected = from_checkpoint.estimate(image)
    assert expected.shape == image.shape[:2] and expected.dtype == np.float32 and np.all(expected > 0)
    np.testing.assert_allclose(from_onnx.estimate(image), expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(TorchDepthEstimator(depth_net, INPUT_SIZE).estimate(image), expected, rtol=1e-4)


def test_inverse_depth_nhw_onnx_with_imagenet_normalisation(tmp_path, depth_net, image):
    from segloc.runtime.onnx import export_onnx

    user_net = InverseDepthNHW(depth_net).eval()
    example = torch.rand(1, 3, INPUT_SIZE[1], INPUT_SIZE[0])
    export_onnx(user_net, [example], tmp_path / "user.onnx", ["input"], ["disparity"])
    estimator = OnnxDepthEstimator(
        tmp_path / "user.onnx", INPUT_SIZE, output="inverse_depth", input_mean=(0.485, 0.456, 0.406), input_std=(0.229, 0.224, 0.225)
    )
    np.testing.assert_allclose(estimator.estimate(image), TorchDepthEstimator(depth_net, INPUT_SIZE).estimate(image), rtol=1e-3, atol=1e-4)


def test_bad_inputs_say_what_is_wrong(tmp_path, depth_net, image):
    estimator = TorchDepthEstimator(depth_net, INPUT_SIZE)
    with pytest.raises(SeglocError, match="uint8 RGB image"):
        estimator.estimate(image.astype(np.float32))
    with pytest.raises(SeglocError, match="unknown output"):
        DepthEstimatorConfig(output="disparity")
    with pytest.raises(SeglocError, match="give input_size"):
        load_depth_estimator(DepthEstimatorConfig(source="onnx", path=str(tmp_path / "x.onnx")))
    with pytest.raises(SeglocError, match="does not exist"):
        OnnxDepthEstimator(tmp_path / "missing.onnx", INPUT_SIZE)
    save_checkpoint(depth_net, tmp_path / "no_size")
    with pytest.raises(SeglocError, match="does not record its input size"):
        load_depth_estimator(DepthEstimatorConfig(path=str(tmp_path / "no_size")))
    with pytest.raises(SeglocError, match=r"\(1, 1, H, W\) or \(1, H, W\)"):
        TorchDepthEstimator(nn.Conv2d(3, 2, 1), INPUT_SIZE).estimate(image)


def test_depth_network_shapes_and_positive_depth(depth_net):
    batch = torch.rand(2, 3, 40, 56)
    depth = depth_net(batch)
    assert depth.shape == (2, 1, 40, 56) and torch.all(depth > 0)
    torch.testing.assert_close(torch.log(depth), depth_net.log_depth(batch), rtol=1e-4, atol=1e-4)
