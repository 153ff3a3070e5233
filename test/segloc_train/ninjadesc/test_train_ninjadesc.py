"""NinjaDesc training: the differentiable rasteriser, the losses, the alternating step, FPR@95 and a tiny run."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from segloc.data import synthetic
from segloc.errors import SeglocError
from segloc.evaluate.audit import sparse_input
from segloc.models import load_checkpoint, read_checkpoint_info
from segloc.models.ninjanet import NinjaNet, NinjaNetConfig
from segloc_train.ninjadesc.train_ninjadesc import (
    NinjaDescData,
    NinjaDescTrainConfig,
    PrivacyImage,
    ValidationPairs,
    build_trainer,
    fpr_at_95,
    matching_metrics,
    ninjadesc_config_from_dict,
    raster_plan,
    rasterise,
    train_ninjadesc,
    utility_loss,
    validation_pairs,
)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _points(rng, n, size):
    """Random points, some outside the image, some sharing pixels, some behind the camera."""
    width, height = size
    points2D = rng.uniform([-3, -3], [width + 3, height + 3], size=(n, 2))
    points2D[: n // 4] = points2D[n // 4 : 2 * (n // 4)] + rng.uniform(-0.3, 0.3, size=(n // 4, 2))  # collisions
    depth = rng.uniform(0.5, 10.0, size=n)
    depth[::17] = -1.0
    return points2D, depth


def test_the_torch_rasteriser_equals_sparse_input_and_passes_gradients():
    rng = np.random.default_rng(0)
    size = (23, 17)
    points2D, depth = _points(rng, 300, size)
    attributes = rng.normal(size=(300, 5)).astype(np.float32)
    plan = raster_plan(points2D, depth, size)
    values = torch.from_numpy(attributes[plan.index]).requires_grad_(True)
    image = rasterise(values, plan)
    expected = sparse_input(points2D, depth, attributes, size)
    assert image.shape == expected.shape
    np.testing.assert_allclose(image.detach().numpy(), expected, rtol=1e-6, atol=1e-7)
    assert 0 < len(plan.index) < 300 and len(set(plan.pixels.tolist())) == len(plan.pixels)
    weights = torch.rand(image.shape[0] - 2, *image.shape[1:])
    (image[:-2] * weights).sum().backward()
    flat = weights.reshape(5, -1)[:, torch.from_numpy(plan.pixels)].T
    torch.testing.assert_close(values.grad, flat)


def test_the_utility_loss_lowers_on_a_toy_set():
    torch.manual_seed(0)
    centres = torch.nn.functional.normalize(torch.rand(64, 128), dim=1)
    anchors = torch.nn.functional.normalize(centres + 0.05 * torch.randn(64, 128), dim=1)
    positives = torch.nn.functional.normalize(centres + 0.05 * torch.randn(64, 128), dim=1)
    model = NinjaNet(NinjaNetConfig(hidden=64))
    config = NinjaDescTrainConfig(batch_size=64, sos_weight=1.0, sos_neighbours=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.eval()
    before = utility_loss(model(anchors), model(positives), config).item()
    model.train()
    for _ in range(60):
        loss = utility_loss(model(anchors), model(positives), config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    after = utility_loss(model(anchors), model(positives), config).item()
    assert after < 0.7 * before


def _toy_trainer(lambda_recon):
    rng = np.random.default_rng(1)
    size = (16, 12)
    descriptors = np.abs(rng.normal(size=(200, 128))).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    tracks = [np.array([2 * i, 2 * i + 1]) for i in range(100)]
    images = []
    for i in range(3):
        observations = rng.choice(200, 40, replace=False)
        plan = raster_plan(*_points(rng, 40, size), size)
        images.append(PrivacyImage(observations[plan.index], plan, rng.uniform(size=(3, 12, 16)).astype(np.float32), f"toy{i}"))
    data = NinjaDescData(descriptors, tracks[:90], tracks[90:], rng.normal(size=(10, 3)), np.zeros(10, np.int64), images, [])
    config = NinjaDescTrainConfig(
        hidden=32, batch_size=16, image_batch_size=2, attacker_width=4, attacker_depth=1, perceptual_weight=0, lambda_recon=lambda_recon
    )
    return build_trainer(data, config, torch.device("cpu"))


def _state(module):
    return {name: value.clone() for name, value in module.state_dict().items()}


def _changed(before, module):
    return [name for name, value in module.state_dict().items() if not torch.equal(before[name], value)]


def test_one_alternating_step_updates_only_the_intended_network():
    trainer = _toy_trainer(lambda_recon=2.5)
    ninjanet, attacker = _state(trainer.ninjanet), _state(trainer.attacker)
    trainer.ninjanet_step(np.random.default_rng(0))
    assert _changed(attacker, trainer.attacker) == []  # parameters and batch-norm statistics
    assert "out.weight" in _changed(ninjanet, trainer.ninjanet)
    ninjanet, attacker = _state(trainer.ninjanet), _state(trainer.attacker)
    trainer.attacker_step(np.random.default_rng(0))
    assert _changed(ninjanet, trainer.ninjanet) == []
    assert any(name.endswith("weight") for name in _changed(attacker, trainer.attacker))


def test_the_privacy_term_reaches_ninjanet_through_the_sparse_image():
    updates = []
    for lambda_recon in (0.0, 2.5):
        trainer = _toy_trainer(lambda_recon)
        before = trainer.ninjanet.out.weight.detach().clone()
        trainer.ninjanet_step(np.random.default_rng(0))
        updates.append(trainer.ninjanet.out.weight.detach() - before)
    assert not torch.allclose(updates[0], updates[1])


def test_fpr_at_95_on_known_distances():
    positives = np.arange(20.0)  # 95 % of them at or below 18
    negatives = np.array([5, 17, 18, 19, 30, 40, 50, 60, 70, 80], dtype=float)
    assert fpr_at_95(positives, negatives) == pytest.approx(0.3)
    assert fpr_at_95(positives, negatives + 100) == 0.0
    descriptors = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2, 3]]
    pairs = ValidationPairs(np.array([[0, 1], [2, 3]]), np.array([[0, 4], [2, 5]]))
    assert matching_metrics(descriptors, pairs) == {"fpr95": 0.0, "mma": 1.0}


def test_held_out_negatives_pair_spatial_neighbours_of_the_same_place():
    tracks = [np.array([2 * i, 2 * i + 1]) for i in range(6)]
    points = np.array([[0, 0, 0], [0.1, 0, 0], [5, 0, 0], [5.3, 0, 0], [0, 0, 0.05], [9, 9, 9]], dtype=float)
    places = np.array([0, 0, 0, 0, 1, 1])
    pairs = validation_pairs(tracks, points, places, 100, seed=0)
    assert len(pairs.positives) == len(pairs.negatives) == 6
    assert all(a // 2 == b // 2 for a, b in pairs.positives)
    partner = {a // 2: b // 2 for a, b in pairs.negatives}
    assert partner == {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}  # point 4 is nearest point 0 but of another place


def test_bad_options_are_refused():
    assert ninjadesc_config_from_dict({"preset": "paper"}).hidden == 1024
    with pytest.raises(SeglocError, match="unknown option"):
        ninjadesc_config_from_dict({"lamda": 1})
    with pytest.raises(SeglocError, match="lambda_recon"):
        ninjadesc_config_from_dict({"lambda_recon": -1})
    with pytest.raises(SeglocError, match="unknown preset"):
        ninjadesc_config_from_dict({"preset": "gpu"})
    with pytest.raises(SeglocError, match="unknown base_descriptor 'sift'; valid values are: rootsift, vgg"):
        ninjadesc_config_from_dict({"base_descriptor": "sift"})


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    config = synthetic.synth_config("room", "lighting", num_mapping=12, num_query=2, width=160, height=120)
    return synthetic.generate_scene(config, tmp_path_factory.mktemp("ninjadesc") / "room", progress=False)


TINY = NinjaDescTrainConfig(
    hidden=32,
    batch_size=32,
    image_batch_size=2,
    max_edge=64,
    attacker_width=4,
    attacker_depth=1,
    perceptual_weight=0,
    utility_init_steps=3,
    attacker_init_steps=2,
    epochs=1,
    steps_per_epoch=2,
    holdout_every=5,
    threads=1,
)


def test_tiny_run_writes_a_unit_norm_ninjanet_and_resumes(scene, tmp_path):
    run = tmp_path / "run"
    epochs = []
    checkpoint = train_ninjadesc(scene, run, TINY, progress=False, on_epoch=epochs.append)
    assert checkpoint == run / "checkpoint" and len(epochs) == 1
    model = load_checkpoint(checkpoint)
    assert isinstance(model, NinjaNet) and model.config.hidden == 32
    out = model(torch.rand(10, 128))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(10))
    metadata = read_checkpoint_info(checkpoint).metadata
    assert metadata["lambda"] == 1.0 and 0 <= metadata["fpr95"] <= 1 and 0 <= metadata["mma"] <= 1
    assert 0 <= metadata["base_fpr95"] <= 1 and metadata["attacker_recon"] > 0
    assert read_checkpoint_info(run / "attacker").model == "inversion_unet"
    losses = json.loads((run / "losses.json").read_text())
    assert len(losses["epochs"]) == 1 and {"util", "recon", "fpr95", "mma"} <= set(losses["epochs"][0])
    assert (run / "curves.png").stat().st_size > 0 and (run / "config.yaml").is_file()
    with pytest.raises(SeglocError, match="already holds a training run"):
        train_ninjadesc(scene, run, TINY, progress=False)
    train_ninjadesc(scene, run, dataclasses.replace(TINY, epochs=2), resume=True, progress=False, on_epoch=epochs.append)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert len(json.loads((run / "losses.json").read_text())["epochs"]) == 2


def test_the_command_line_trains_with_the_given_lambda(scene, tmp_path, capsys):
    from segloc.cli import main
    from segloc_train.ninjadesc.train_ninjadesc import write_ninjadesc_config

    write_ninjadesc_config(tmp_path / "tiny.yaml", TINY)
    run = tmp_path / "run"
    assert (
        main(["train", "ninjadesc", str(scene), "-o", str(run), "--config", str(tmp_path / "tiny.yaml"), "--lambda", "0", "--no-progress"])
        == 0
    )
    assert "held-out FPR@95" in capsys.readouterr().out
    assert read_checkpoint_info(run / "checkpoint").metadata["lambda"] == 0.0
    assert main(["train", "ninjadesc", str(scene), "-o", str(tmp_path / "bad"), "--lambda", "-1", "--no-progress"]) != 0
    assert "lambda_recon must be >= 0" in capsys.readouterr().err


def test_the_command_line_trains_over_vgg(scene, tmp_path, capsys):
    from segloc.cli import main
    from segloc.maps.build import CoreConfig
    from segloc_train.ninjadesc.train_ninjadesc import load_training_data, write_ninjadesc_config

    write_ninjadesc_config(tmp_path / "tiny.yaml", TINY)
    run = tmp_path / "run"
    command = ["train", "ninjadesc", str(scene), "-o", str(run), "--config", str(tmp_path / "tiny.yaml"), "--no-progress"]
    assert main([*command, "--base-descriptor", "vgg"]) == 0
    assert "(raw vgg " in capsys.readouterr().out
    model = load_checkpoint(run / "checkpoint")
    assert (model.config.base_descriptor, model.config.dim) == ("vgg", 120)
    assert read_checkpoint_info(run / "checkpoint").metadata["base_descriptor"] == "vgg"
    assert model.eval()(torch.rand(4, 120)).shape == (4, 120)
    # The utility data are VGG at the observed keypoints; the attacker sees 120 channels (+ depth and mask).
    config = dataclasses.replace(TINY, base_descriptor="vgg", core=CoreConfig())
    data = load_training_data([scene], config, progress=False)
    assert data.descriptors.shape[1] == 120 and np.allclose(np.linalg.norm(data.descriptors, axis=1), 1, atol=1e-5)
    assert build_trainer(data, config, torch.device("cpu")).attacker.config.in_channels == 122
    assert main(["train", "ninjadesc", str(scene), "-o", str(tmp_path / "bad"), "--base-descriptor", "hardnet", "--no-progress"]) != 0
    assert "unknown base_descriptor 'hardnet'" in capsys.readouterr().err
