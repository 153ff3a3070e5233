"""Packing a probability pyramid into one float16 array and back, and the image-message wire layout."""

import types

import numpy as np
import pytest
import torch

from segloc.errors import SeglocError
from segloc.methods.segloc.packing import (
    descriptor_from_image,
    descriptor_image_fields,
    level_sizes,
    pack_descriptor,
    pack_probabilities,
    pack_segmentation,
    packed_probabilities_from_image,
    probabilities_image_fields,
    segmentation_from_packed,
    unpack_descriptor,
    unpack_probabilities,
)
from segloc.models import LEVEL_STRIDES
from segloc.models.segmenter import NetworkSegmenter, Segmentation


def pyramid(num_classes: int, width: int, height: int, seed: int = 0) -> list[torch.Tensor]:
    """Softmax probabilities at strides 32, 16, 8, 4 of a width x height input (H_l = ceil(H / stride))."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(num_classes, -(-height // s), -(-width // s), generator=generator), dim=0) for s in LEVEL_STRIDES]


def message(fields: dict) -> types.SimpleNamespace:
    return types.SimpleNamespace(**fields)


@pytest.mark.parametrize("size", [(256, 192), (320, 240), (100, 61)])
def test_round_trip(size):
    levels = pyramid(7, *size)
    packed = pack_probabilities(levels)
    heights = [level.shape[1] for level in levels]
    assert packed.dtype == np.float16 and packed.shape == (sum(heights), levels[-1].shape[2], 7)
    unpacked = unpack_probabilities(packed)
    assert [tuple(u.shape) for u in unpacked] == [tuple(level.shape) for level in levels]
    for original, restored in zip(levels, unpacked):
        assert restored.dtype == torch.float32 and restored.is_contiguous()
        assert torch.allclose(original, restored, rtol=1e-3, atol=1e-4)  # float16: 11 significant bits


def test_layout_is_stacked_left_aligned_and_zero_padded():
    levels = [torch.full((2, 1, 2), 1.0), torch.full((2, 2, 4), 2.0), torch.full((2, 4, 8), 3.0), torch.full((2, 8, 16), 4.0)]
    packed = pack_probabilities(levels)
    assert packed.shape == (15, 16, 2)
    assert np.all(packed[0, :2] == 1) and np.all(packed[0, 2:] == 0)
    assert np.all(packed[1:3, :4] == 2) and np.all(packed[1:3, 4:] == 0)
    assert np.all(packed[3:7, :8] == 3) and np.all(packed[3:7, 8:] == 0)
    assert np.all(packed[7:] == 4)


def test_level_sizes_and_other_strides():
    assert level_sizes(48, 64) == [(6, 8), (12, 16), (24, 32), (48, 64)]
    assert level_sizes(16, 26) == [(2, 4), (4, 7), (8, 13), (16, 26)]  # ceil, as the network's convolutions
    levels = [torch.rand(3, 5, 6), torch.rand(3, 10, 12)]
    restored = unpack_probabilities(pack_probabilities(levels, (8, 4)), (8, 4))
    assert [tuple(r.shape) for r in restored] == [(3, 5, 6), (3, 10, 12)]
    single = unpack_probabilities(pack_probabilities([torch.rand(4, 9, 11)], (1,)), (1,))
    assert tuple(single[0].shape) == (4, 9, 11)


def test_inconsistent_shapes_are_errors():
    levels = pyramid(5, 128, 96)
    with pytest.raises(SeglocError, match="3 probability level"):
        pack_probabilities(levels[1:])
    with pytest.raises(SeglocError, match="same number of classes"):
        pack_probabilities([levels[0], levels[1], levels[2], levels[3][:4]])
    with pytest.raises(SeglocError, match=r"do not follow the strides .*expected"):
        pack_probabilities([levels[0], levels[1], levels[2][:, :-1], levels[3]])
    with pytest.raises(SeglocError, match=r"\(K, H, W\)"):
        pack_probabilities([level[0] for level in levels])
    with pytest.raises(SeglocError, match="decrease"):
        pack_probabilities(levels, (4, 8, 16, 32))
    with pytest.raises(SeglocError, match="multiple of the finest"):
        level_sizes(8, 8, (12, 8))
    packed = pack_probabilities(levels)
    with pytest.raises(SeglocError, match="does not fit the level strides"):
        unpack_probabilities(np.zeros((10, 5, 5), np.float16))  # finest heights 4 and 5 give 8 and 11 rows
    with pytest.raises(SeglocError, match=r"\(H_total, W_finest, K\)"):
        unpack_probabilities(packed[:, :, 0])


def test_descriptor_round_trip_and_errors():
    descriptor = np.random.default_rng(0).random(25).astype(np.float32)
    row = pack_descriptor(descriptor)
    assert row.shape == (1, 25) and row.dtype == np.float32
    assert np.array_equal(unpack_descriptor(row), descriptor)
    assert np.array_equal(unpack_descriptor(pack_descriptor(torch.from_numpy(descriptor))), descriptor)
    with pytest.raises(SeglocError, match="one row"):
        unpack_descriptor(np.zeros((2, 25)))
    with pytest.raises(SeglocError, match="NaN"):
        pack_descriptor(np.array([1.0, np.nan]))
    with pytest.raises(SeglocError, match="empty"):
        pack_descriptor(np.zeros(0))


def test_segmentation_round_trip_with_a_network():
    from segloc.models import SegmentationNet, segmentation_config

    torch.manual_seed(0)
    config = segmentation_config(
        "cpu", pretrained=False, num_classes=6, feature_dim=8, decoder_channels=(16, 16, 16, 16), head_hidden_dim=8
    )
    segmenter = NetworkSegmenter(SegmentationNet(config).eval(), inference_max_edge=128)
    segmentation = segmenter((np.random.default_rng(1).random((90, 120, 3)) * 255).astype(np.uint8))
    packed, descriptor = pack_segmentation(segmentation)
    restored = segmentation_from_packed(packed, descriptor)
    assert isinstance(restored, Segmentation) and restored.num_classes == 6
    assert restored.input_size == segmentation.input_size == (128, 96)
    assert np.array_equal(restored.descriptor, segmentation.descriptor)
    for a, b in zip(segmentation.probabilities, restored.probabilities):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    assert segmentation_from_packed(packed).descriptor.shape == (0,)


def test_image_fields_round_trip():
    levels = pyramid(9, 96, 64)
    packed = pack_probabilities(levels)
    fields = probabilities_image_fields(packed)
    assert fields["encoding"] == "16UC9" and fields["step"] == packed.shape[1] * 9 * 2
    assert (fields["height"], fields["width"], fields["is_bigendian"]) == (packed.shape[0], packed.shape[1], 0)
    assert np.array_equal(packed_probabilities_from_image(message(fields)), packed)
    # Row padding and big-endian words are read too.
    height, width = packed.shape[:2]
    padded = np.zeros((height, width * 18 + 6), np.uint8)
    padded[:, : width * 18] = np.frombuffer(packed.astype(">f2").tobytes(), np.uint8).reshape(height, -1)
    big = dict(fields, is_bigendian=1, step=width * 18 + 6, data=padded.tobytes())
    assert np.array_equal(packed_probabilities_from_image(message(big)), packed)
    with pytest.raises(SeglocError, match="'32FC1'"):
        packed_probabilities_from_image(message(dict(fields, encoding="32FC1")))
    with pytest.raises(SeglocError, match="inconsistent"):
        packed_probabilities_from_image(message(dict(fields, data=fields["data"][:-2])))
    with pytest.raises(SeglocError, match="float16"):
        probabilities_image_fields(packed.astype(np.float32))

    descriptor = np.linspace(-1, 1, 45).astype(np.float32)
    fields = descriptor_image_fields(descriptor)
    assert (fields["height"], fields["width"], fields["encoding"], fields["step"]) == (1, 45, "32FC1", 180)
    assert np.array_equal(descriptor_from_image(message(fields)), descriptor)
    with pytest.raises(SeglocError, match="one-row 32FC1"):
        descriptor_from_image(message(dict(fields, encoding="mono16")))


def test_retrieval_round_trip_and_bad_messages():
    from types import SimpleNamespace

    from segloc.methods.segloc.packing import retrieval_from_image, retrieval_image_fields

    ids = np.array([12, 3, 40_000_001], np.int64)
    similarities = np.array([0.9, 0.75, -0.25], np.float32)
    fields = retrieval_image_fields(ids, similarities)
    assert (fields["encoding"], fields["height"], fields["width"]) == ("64FC1", 2, 3)
    got_ids, got_similarities = retrieval_from_image(SimpleNamespace(**fields))
    assert got_ids.dtype == np.int64 and got_ids.tolist() == ids.tolist() and np.array_equal(got_similarities, similarities)
    with pytest.raises(SeglocError, match="one similarity per image id"):
        retrieval_image_fields(ids, similarities[:2])
    broken = dict(fields, data=np.array([[0.5, 1.0, 2.0], [0.1, 0.2, 0.3]], "<f8").tobytes())
    with pytest.raises(SeglocError, match="whole image ids"):
        retrieval_from_image(SimpleNamespace(**broken))
    with pytest.raises(SeglocError, match="two-row 64FC1"):
        retrieval_from_image(SimpleNamespace(**dict(fields, encoding="32FC1")))
