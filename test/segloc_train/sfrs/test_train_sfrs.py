"""SFRS training: the losses, one step lowering them, presets, and a tiny run with its outputs and resume."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from segloc.data import synthetic
from segloc.errors import SeglocError
from segloc.models import load_checkpoint, read_checkpoint_info
from segloc.models.netvlad import NetVlad, NetVladConfig, sample_features
from segloc_train.sfrs.train_sfrs import (
    SfrsMiningConfig,
    SfrsTrainConfig,
    generation_dir,
    image_loss,
    region_similarities,
    set_training_mode,
    sfrs_config_from_dict,
    sfrs_loss,
    soft_loss,
    train_sfrs,
    training_step,
)


def _batch(seed=0, b=2, p=2, n=3, size=(64, 96)):
    g = torch.Generator().manual_seed(seed)
    return {
        "query": torch.rand(b, 3, *size, generator=g),
        "positives": torch.rand(b, p, 3, *size, generator=g),
        "negatives": torch.rand(b, n, 3, *size, generator=g),
    }


def _net():
    """The ImageNet backbone (a random EfficientNet gives near-constant features) with k-means clusters of its features."""
    torch.manual_seed(0)
    net = NetVlad(NetVladConfig(num_clusters=8)).eval()
    with torch.no_grad():
        net.initialise_clusters(sample_features(net.features(_batch(seed=5)["negatives"].flatten(0, 1)), 50), seed=0)
    return set_training_mode(net)


def test_image_loss_prefers_the_positive():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]]), dim=1)
    close, far = torch.tensor([[0.9, 0.1]]), torch.tensor([[[0.0, 1.0]]])
    close = torch.nn.functional.normalize(close, dim=1)
    for loss in ("sare_ind", "triplet"):
        assert image_loss(q, close, far, loss, 0.1) < image_loss(q, far[:, 0], close[:, None], loss, 0.1)


def test_soft_loss_is_smallest_when_the_student_matches_the_teacher():
    teacher = torch.tensor([[0.9, 0.5, 0.1]])
    assert soft_loss(teacher, teacher, 0.07) < soft_loss(torch.tensor([[0.1, 0.5, 0.9]]), teacher, 0.07)
    q = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    positives, negatives = torch.randn(2, 3, 9, 4), torch.randn(2, 2, 9, 4)
    logits, hardest = region_similarities(q, positives, negatives)
    assert logits.shape == (2, 3 * 9 + 1)
    negative = torch.einsum("bd,bnrd->bnr", q, negatives).flatten(1)
    torch.testing.assert_close(logits[:, -1], negative.max(dim=1).values)


@pytest.mark.parametrize("generation", [0, 1])
def test_one_training_step_lowers_the_loss(generation):
    net = _net()
    teacher = None
    if generation:  # the previous generation: another network, whose similarities the student learns
        teacher = copy.deepcopy(net).eval()
        with torch.no_grad():
            teacher.netvlad.centroids.add_(0.3 * torch.randn_like(teacher.netvlad.centroids))
    config = SfrsTrainConfig()
    batch = _batch()
    before = sfrs_loss(net, teacher, batch, config, generation)[1]
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=config.learning_rate)
    terms = training_step(net, teacher, optimizer, batch, config, generation)
    assert terms["total"] == pytest.approx(before["total"], rel=1e-4)
    assert ("soft" in terms) == bool(generation)
    after = sfrs_loss(net, teacher, batch, config, generation)[1]
    assert after["total"] < before["total"]


def test_presets_and_strict_config():
    cpu = sfrs_config_from_dict(None)
    assert cpu == SfrsTrainConfig()
    paper = sfrs_config_from_dict({"preset": "paper", "generations": 2})
    assert paper.generations == 2 and paper.mining.num_negatives == 10 and paper.device == "cuda"
    assert cpu.temperature(1) == 0.07 and cpu.temperature(9) == 0.05
    with pytest.raises(SeglocError, match="unknown option"):
        sfrs_config_from_dict({"generationz": 2})
    with pytest.raises(SeglocError, match="loss must be one of"):
        sfrs_config_from_dict({"loss": "contrastive"})
    with pytest.raises(SeglocError, match="unknown preset"):
        sfrs_config_from_dict({"preset": "huge"})


def test_derived_radii_fit_the_image_spacing():
    line = np.stack([np.arange(100) * 0.1, np.zeros(100), np.zeros(100)], axis=1)  # 10 cm apart, 10 m long
    mining = SfrsMiningConfig().resolve(line)
    assert mining.positive_radius_m == pytest.approx(0.6) and mining.negative_radius_m == pytest.approx(2.5)
    sparse = SfrsMiningConfig().resolve(line[::10])  # 1 m apart: capped by the median distance
    assert sparse.negative_radius_m < 10 and sparse.positive_radius_m <= sparse.negative_radius_m / 2


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    config = synthetic.synth_config("room", "lighting", num_mapping=16, num_query=4, width=160, height=120, seed=3)
    return synthetic.generate_scene(config, tmp_path_factory.mktemp("room") / "dataset", progress=False)


def test_tiny_run_writes_a_checkpoint_per_generation_and_resumes(scene, tmp_path):
    config = sfrs_config_from_dict(
        {"generations": 2, "epochs_per_generation": 1, "steps_per_epoch": 2, "kmeans_images": 8, "augment": {"resize_max_edge": 96}}
    )
    run = tmp_path / "run"
    checkpoint = train_sfrs(scene, run, config, progress=False)
    assert checkpoint == generation_dir(run, 1) / "checkpoint"
    for generation in (0, 1):
        info = read_checkpoint_info(generation_dir(run, generation) / "checkpoint")
        assert info.model == "netvlad" and info.metadata["generation"] == generation
    history = json.loads((run / "losses.json").read_text())
    assert [e["generation"] for e in history["epochs"]] == [0, 1] and "soft" in history["epochs"][1]
    assert (run / "loss_curves.png").stat().st_size > 0
    with pytest.raises(SeglocError, match="already holds a training run"):
        train_sfrs(scene, run, config, progress=False)
    more = sfrs_config_from_dict(
        {**{"generations": 3, "epochs_per_generation": 1, "steps_per_epoch": 2}, "augment": {"resize_max_edge": 96}}
    )
    resumed = train_sfrs(scene, run, more, resume=True, progress=False)
    assert resumed == generation_dir(run, 2) / "checkpoint"
    net = load_checkpoint(resumed)
    assert net(torch.rand(1, 3, 64, 96)).descriptor.shape == (1, net.dimension)


def test_time_budget_stops_cleanly_and_resume_continues(scene, tmp_path):
    config = sfrs_config_from_dict(
        {"generations": 2, "epochs_per_generation": 2, "steps_per_epoch": 2, "kmeans_images": 8, "augment": {"resize_max_edge": 96}}
    )
    run = tmp_path / "run"
    checkpoint = train_sfrs(scene, run, dataclasses.replace(config, time_budget_s=1e-3), progress=False)
    assert checkpoint == run / "checkpoint" and not generation_dir(run, 0).exists()  # generation 0 is not over
    state = json.loads((run / "resume" / "state.json").read_text())
    assert state["stopped"] == "time_budget" and state["epochs_done"] == 1 and state["steps_done"] == 1
    assert train_sfrs(scene, run, config, resume=True, progress=False) == generation_dir(run, 1) / "checkpoint"
