"""SegLoc losses: hand-computed values, the COLMAP sampling convention, and each term decreasing on a toy batch."""

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from segloc.config import config_from_dict
from segloc.errors import SeglocError
from segloc.models.segmentation import SegmentationNet, SegmentationOutput, segmentation_config
from segloc_train.segloc.losses import (
    SegLocLossConfig,
    correspondence_consistency_loss,
    cross_entropy_loss,
    feature_consistency_loss,
    multi_similarity_loss,
    points_inside,
    prototypical_cross_contrastive_loss,
    resize_targets,
    sample_at_points,
    segloc_loss,
    select_correspondences,
)

IMAGE = (32, 48)  # (H, W) of the toy images; maps of 8 x 12 cells cover them (stride 4)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def random_points(batch: int, count: int, size=IMAGE) -> torch.Tensor:
    """(B, M, 2) random COLMAP pixel positions inside an image of ``size``."""
    return torch.rand(batch, count, 2) * torch.tensor([size[1], size[0]], dtype=torch.float32)


def optimise(loss_fn: Callable[[], torch.Tensor], parameters: list[torch.Tensor], steps: int = 50, lr: float = 0.05) -> tuple[float, float]:
    """Adam on ``parameters``; returns the loss before and after."""
    optimiser = torch.optim.Adam(parameters, lr=lr)
    initial = loss_fn().item()
    for _ in range(steps):
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimiser.step()
    return initial, loss_fn().item()


# ---------------------------------------------------------------------------------------------
# Sampling convention


def test_sampling_uses_the_colmap_pixel_convention():
    one_hot = torch.zeros(1, 3, 4, 6)
    one_hot[0, 1, 2, 3] = 1.0  # cell row 2, column 3 of a 4 x 6 map covering a 16 x 24 image (4 px per cell)
    centre = torch.tensor([[[3.5 * 4, 2.5 * 4]]])  # (x, y) = (14, 10): the centre of that cell
    torch.testing.assert_close(sample_at_points(one_hot, centre, (16, 24))[0, 0], torch.tensor([0.0, 1.0, 0.0]))
    boundary = torch.tensor([[[12.0, 10.0]]])  # x = 12 is the edge between columns 2 and 3
    torch.testing.assert_close(sample_at_points(one_hot, boundary, (16, 24))[0, 0, 1], torch.tensor(0.5))
    corner = torch.tensor([[[3.0 * 4, 2.0 * 4]]])  # a 0-based-centre convention would put the cell here
    assert sample_at_points(one_hot, corner, (16, 24))[0, 0, 1] < 0.3
    nearest = sample_at_points(one_hot, torch.tensor([[[13.0, 11.9]]]), (16, 24), mode="nearest")
    assert nearest[0, 0, 1] == 1.0
    inside = points_inside(torch.tensor([[[0.0, 0.0], [24.0, 16.0], [24.1, 3.0], [-0.1, 3.0], [float("nan"), 1.0]]]), (16, 24))
    assert inside.tolist() == [[True, True, False, False, False]]


def test_hard_targets_are_read_at_the_pixel_under_the_point():
    labels = torch.full((1, 4, 6), 7)
    labels[0, 2, 3] = 1
    logits = torch.zeros(1, 8, 4, 6, requires_grad=True)
    features = torch.zeros(1, 8, 4, 6)
    prototypes = torch.eye(8)
    point = torch.tensor([[[13.0, 11.0]]])  # inside cell (2, 3) of 4-px cells
    loss = prototypical_cross_contrastive_loss(
        features + logits, features + logits, point, point, (16, 24), prototypes, targets=(labels, labels)
    )
    loss.backward()
    gradient = logits.grad[0, :, 2, 3]  # pulling towards prototype 1 only
    assert gradient[1] < 0 and torch.all(gradient[torch.arange(8) != 1] >= 0)


def test_resize_targets():
    labels = torch.arange(16).reshape(1, 4, 4)
    assert resize_targets(labels, (2, 2)).tolist() == [[[5, 7], [13, 15]]]  # the pixel under each cell centre (nearest-exact)
    soft = torch.softmax(torch.randn(2, 5, 8, 8), dim=1)
    shrunk = resize_targets(soft, (2, 2))
    torch.testing.assert_close(shrunk.sum(dim=1), torch.ones(2, 2, 2))
    torch.testing.assert_close(shrunk[:, :, 0, 0], soft[:, :, :4, :4].mean(dim=(2, 3)))
    assert resize_targets(soft, (16, 16)).shape == (2, 5, 16, 16)


def test_select_correspondences_keeps_valid_ones_first():
    points_a = random_points(2, 10)
    valid = torch.zeros(2, 10, dtype=torch.bool)
    valid[0, :7] = True
    valid[1, 3] = True
    selected_a, selected_b, selected_valid = select_correspondences(points_a, points_a + 1, valid, 4)
    assert selected_a.shape == (2, 4, 2) and selected_valid.shape == (2, 4)
    assert selected_valid.sum(dim=1).tolist() == [4, 1]
    torch.testing.assert_close(selected_b, selected_a + 1)
    assert select_correspondences(points_a, points_a, None, 0)[2].all()


# ---------------------------------------------------------------------------------------------
# L_CE


def test_cross_entropy_hand_computed():
    logits = torch.tensor([[[[0.0, 0.0, 5.0]], [[math.log(3.0), 0.0, 0.0]]]])  # (1, 2, 1, 3)
    targets = torch.tensor([[[1, 0, -1]]])  # the third pixel is ignored
    expected = (-math.log(3 / 4) + math.log(2)) / 2
    torch.testing.assert_close(cross_entropy_loss(logits, targets), torch.tensor(expected))
    soft = torch.tensor([[[[0.5, 1.0, 0.0]], [[0.5, 0.0, 0.0]]]])  # zero mass: ignored
    expected_soft = (-(0.5 * math.log(1 / 4) + 0.5 * math.log(3 / 4)) + math.log(2)) / 2
    torch.testing.assert_close(cross_entropy_loss(logits, soft), torch.tensor(expected_soft))
    only_first = torch.tensor([[[True, False, True]]])
    torch.testing.assert_close(cross_entropy_loss(logits, targets, valid=only_first), torch.tensor(-math.log(3 / 4)))
    with pytest.raises(SeglocError, match="resize them"):
        cross_entropy_loss(logits, torch.zeros(1, 2, 2, dtype=torch.long))


def test_cross_entropy_decreases():
    logits = torch.randn(2, 6, 8, 12, requires_grad=True)
    targets = torch.randint(6, (2, 8, 12))
    initial, final = optimise(lambda: cross_entropy_loss(logits, targets), [logits])
    assert final < 0.3 * initial


# ---------------------------------------------------------------------------------------------
# L_CC


@pytest.mark.parametrize("targets", ["hard", "soft"])
def test_correspondence_consistency_zero_when_aligned_large_when_shuffled(targets):
    labels = torch.randint(5, (2, 8, 12))
    logits = 20.0 * F.one_hot(labels, 5).permute(0, 3, 1, 2).float()  # confident predictions
    columns, rows = torch.meshgrid(torch.arange(12), torch.arange(8), indexing="xy")
    centres = torch.stack([(columns + 0.5) * 4, (rows + 0.5) * 4], dim=-1).reshape(1, -1, 2).repeat(2, 1, 1).float()
    aligned = correspondence_consistency_loss(logits, logits, centres, centres, IMAGE, targets=targets)
    shuffled = correspondence_consistency_loss(logits, logits, centres, centres[:, torch.randperm(96)], IMAGE, targets=targets)
    assert aligned < 1e-3
    assert shuffled > 5.0


def test_correspondence_consistency_ignores_invalid_and_outside_points():
    logits_a, logits_b = torch.randn(1, 4, 8, 12), torch.randn(1, 4, 8, 12)
    points = random_points(1, 6)
    valid = torch.tensor([[True, True, True, False, False, False]])
    outside = points.clone()
    outside[0, 3:] = -5.0  # the invalid ones also lie outside: dropping them changes nothing
    reference = correspondence_consistency_loss(logits_a, logits_b, points[:, :3], points[:, :3], IMAGE)
    torch.testing.assert_close(correspondence_consistency_loss(logits_a, logits_b, points, points, IMAGE, valid=valid), reference)
    torch.testing.assert_close(correspondence_consistency_loss(logits_a, logits_b, outside, outside, IMAGE), reference)
    assert correspondence_consistency_loss(logits_a, logits_b, points, points, IMAGE, valid=torch.zeros(1, 6, dtype=torch.bool)) == 0


def test_nan_padded_correspondences_give_finite_losses_and_gradients():
    features = torch.randn(1, 4, 8, 12, requires_grad=True)
    points = random_points(1, 6)
    points[0, 4:] = float("nan")  # padding
    prototypes = F.normalize(torch.randn(3, 4), dim=1)
    losses = [
        correspondence_consistency_loss(features, features, points, points, IMAGE),
        prototypical_cross_contrastive_loss(features, features, points, points, IMAGE, prototypes),
        feature_consistency_loss(features, features, points, points, IMAGE, negative_radius=2.0),
    ]
    sum(losses).backward()
    assert all(torch.isfinite(loss) for loss in losses)
    assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize("targets", ["hard", "soft"])
def test_correspondence_consistency_decreases(targets):
    logits_a = torch.randn(2, 5, 8, 12, requires_grad=True)
    logits_b = torch.randn(2, 5, 8, 12, requires_grad=True)
    points_a, points_b = random_points(2, 40), random_points(2, 40)

    def loss():
        return correspondence_consistency_loss(logits_a, logits_b, points_a, points_b, IMAGE, targets=targets)

    initial, final = optimise(loss, [logits_a, logits_b])
    # soft targets are detached distributions: the loss falls towards their entropy, not to 0
    assert final < (0.5 if targets == "hard" else 0.9) * initial


# ---------------------------------------------------------------------------------------------
# L_PC and L_PF


def test_prototypical_cross_contrastive_decreases():
    features_a = torch.randn(2, 8, 8, 12, requires_grad=True)
    features_b = torch.randn(2, 8, 8, 12, requires_grad=True)
    prototypes = F.normalize(torch.randn(5, 8), dim=1)
    concentrations = torch.linspace(0.05, 0.15, 5)
    targets = (torch.randint(5, (2, 8, 12)), torch.softmax(3 * torch.randn(2, 5, 4, 6), dim=1))  # hard for A, soft at half resolution for B
    points_a, points_b = random_points(2, 40), random_points(2, 40)

    def loss():
        return prototypical_cross_contrastive_loss(features_a, features_b, points_a, points_b, IMAGE, prototypes, concentrations, targets)

    initial, final = optimise(loss, [features_a, features_b])
    assert final < 0.5 * initial
    # without targets the nearest prototype of the other side's feature is the target
    self_assigned = prototypical_cross_contrastive_loss(features_a, features_b, points_a, points_b, IMAGE, prototypes)
    assert torch.isfinite(self_assigned)
    with pytest.raises(SeglocError, match="prototypes must be"):
        prototypical_cross_contrastive_loss(features_a, features_b, points_a, points_b, IMAGE, torch.randn(5, 3))


def test_feature_consistency_decreases():
    features_a = torch.randn(2, 8, 8, 12, requires_grad=True)
    features_b = torch.randn(2, 8, 8, 12, requires_grad=True)
    points_a, points_b = random_points(2, 30), random_points(2, 30)

    def loss():
        return feature_consistency_loss(features_a, features_b, points_a, points_b, IMAGE, temperature=0.1)

    initial, final = optimise(loss, [features_a, features_b])
    assert final < 0.5 * initial


def test_feature_consistency_negative_radius_and_empty_batch():
    features = torch.randn(1, 4, 8, 12)
    same_point = torch.full((1, 5, 2), 10.0)  # five copies of one correspondence: identical features
    plain = feature_consistency_loss(features, features, same_point, same_point, IMAGE)
    torch.testing.assert_close(plain, torch.tensor(math.log(5.0)))  # the copies are indistinguishable negatives
    excluded = feature_consistency_loss(features, features, same_point, same_point, IMAGE, negative_radius=1.0)
    torch.testing.assert_close(excluded, torch.tensor(0.0))
    learnable = features.clone().requires_grad_(True)
    empty = feature_consistency_loss(learnable, learnable, same_point, same_point, IMAGE, valid=torch.zeros(1, 5, dtype=torch.bool))
    empty.backward()
    assert empty == 0 and torch.isfinite(learnable.grad).all()


# ---------------------------------------------------------------------------------------------
# L_MS


def test_multi_similarity_hand_computed():
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])  # S01 = 0.6, S02 = 0.8, S12 = 0.96
    labels = torch.tensor([0, 0, 1])
    alpha, beta, base = 2.0, 50.0, 0.5
    anchor0 = math.log1p(math.exp(-alpha * (0.6 - base))) / alpha + math.log1p(math.exp(beta * (0.8 - base))) / beta
    anchor1 = math.log1p(math.exp(-alpha * (0.6 - base))) / alpha + math.log1p(math.exp(beta * (0.96 - base))) / beta
    expected = (anchor0 + anchor1 + 0.0) / 3  # anchor 2 has no positive
    torch.testing.assert_close(multi_similarity_loss(embeddings, labels, alpha, beta, base, margin=0.1), torch.tensor(expected))
    # an easy negative (S + margin below the hardest positive) is not mined: the anchors contribute 0
    easy = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])
    assert multi_similarity_loss(3.0 * easy, labels) == 0


def test_multi_similarity_triplets_match_labels():
    anchors, positives, negatives = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7])
    torch.testing.assert_close(
        multi_similarity_loss((anchors, positives, negatives)), multi_similarity_loss(torch.cat([anchors, positives, negatives]), labels)
    )


def test_multi_similarity_decreases():
    embeddings = torch.randn(12, 16, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(3)
    initial, final = optimise(lambda: multi_similarity_loss(embeddings, labels), [embeddings])
    assert final < 0.3 * initial


# ---------------------------------------------------------------------------------------------
# The combined loss


def toy_outputs(batch: int, num_classes: int, dim: int, size=(64, 96)) -> SegmentationOutput:
    """Learnable random SegmentationOutput levels at strides 32, 16, 8, 4 of an image of ``size``."""
    shapes = [(size[0] // stride, size[1] // stride) for stride in (32, 16, 8, 4)]
    features = tuple(torch.randn(batch, dim, *shape, requires_grad=True) for shape in shapes)
    logits = tuple(torch.randn(batch, num_classes, *shape, requires_grad=True) for shape in shapes)
    return SegmentationOutput(features, logits)


def toy_batch(batch: int, count: int, size=(64, 96)) -> dict:
    points_a = random_points(batch, count, size)
    return {"points_a": points_a, "points_b": (points_a + torch.tensor([3.0, -2.0])).clamp(1, 60), "valid": torch.rand(batch, count) > 0.2}


def test_segloc_loss_combines_the_terms_and_decreases():
    outputs_a, outputs_b = toy_outputs(2, 6, 8), toy_outputs(2, 6, 8)
    negatives = toy_outputs(2, 6, 8)
    batch = toy_batch(2, 64)
    prototypes = F.normalize(torch.randn(6, 8), dim=1)
    pseudo_targets = (torch.randint(6, (2, 16, 24)), torch.randint(6, (2, 16, 24)))
    config = SegLocLossConfig(num_correspondences=32)
    total, terms = segloc_loss(outputs_a, outputs_b, batch, prototypes, None, pseudo_targets, config, outputs_negative=negatives)
    assert set(terms) == {"ce", "cc", "pc", "pf", "ms"}
    torch.testing.assert_close(total.detach(), sum(terms.values()))
    parameters = [*outputs_a.features, *outputs_a.logits, *outputs_b.features, *outputs_b.logits]

    def loss():
        return segloc_loss(
            outputs_a, outputs_b, batch, prototypes, None, pseudo_targets, config, negatives, torch.Generator().manual_seed(1)
        )[0]

    initial, final = optimise(loss, parameters, steps=40)
    assert final < 0.6 * initial

    weighted = SegLocLossConfig(weight_cc=0.0, weight_pf=2.0, num_correspondences=32)
    total, terms = segloc_loss(
        outputs_a, outputs_b, batch, prototypes, None, pseudo_targets, weighted, generator=torch.Generator().manual_seed(2)
    )
    assert "cc" not in terms
    torch.testing.assert_close(total.detach(), terms["ce"] + terms["pc"] + 2.0 * terms["pf"] + terms["ms"])


def test_segloc_loss_explains_missing_inputs():
    outputs_a, outputs_b = toy_outputs(1, 4, 8), toy_outputs(1, 4, 8)
    batch = toy_batch(1, 8)
    with pytest.raises(SeglocError, match="L_CE needs pseudo-targets"):
        segloc_loss(outputs_a, outputs_b, batch, torch.randn(4, 8))
    with pytest.raises(SeglocError, match="L_PC needs"):
        segloc_loss(outputs_a, outputs_b, batch, config=SegLocLossConfig(weight_ce=0.0))
    with pytest.raises(SeglocError, match="points_b"):
        segloc_loss(outputs_a, outputs_b, {"points_a": batch["points_a"]}, config=SegLocLossConfig(weight_ce=0, weight_pc=0))
    no_features = SegmentationOutput((), outputs_a.logits)
    with pytest.raises(SeglocError, match="with_features=True"):
        segloc_loss(no_features, no_features, batch, config=SegLocLossConfig(weight_ce=0, weight_pc=0))


def test_loss_config_is_strict():
    config = config_from_dict(SegLocLossConfig, {"weight_ms": 0, "pc_levels": [3], "num_correspondences": 128})
    assert config.weight_ms == 0.0 and config.pc_levels == (3,)
    with pytest.raises(SeglocError, match="unknown option"):
        config_from_dict(SegLocLossConfig, {"weight_xx": 1.0})
    with pytest.raises(SeglocError, match="loss weights"):
        SegLocLossConfig(weight_cc=-1.0)
    with pytest.raises(SeglocError, match="level index"):
        SegLocLossConfig(cc_levels=(4,))
    with pytest.raises(SeglocError, match="'hard' or 'soft'"):
        SegLocLossConfig(correspondence_targets="argmax")


def test_segloc_loss_trains_the_segmentation_network():
    network = SegmentationNet(
        segmentation_config("cpu", pretrained=False, num_classes=6, feature_dim=16, head_hidden_dim=16, decoder_channels=[32, 24, 16, 16])
    )
    images_a, images_b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    outputs_a, outputs_b = network(images_a), network(images_b)
    batch = toy_batch(2, 50, size=(64, 64))
    prototypes = F.normalize(torch.randn(6, 16), dim=1)
    pseudo_targets = (torch.randint(6, (2, 64, 64)), torch.softmax(torch.randn(2, 6, 16, 16), dim=1))
    total, terms = segloc_loss(outputs_a, outputs_b, batch, prototypes, torch.full((6,), 0.1), pseudo_targets)
    total.backward()
    gradients = [p.grad for p in network.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert all(torch.isfinite(value) for value in terms.values())
