"""Fast onboarding: the scene-homogeneous sampler, the multi-scene backbone (one and two processes, resumed), the
feature buffer, and a new scene's head whose checkpoint builds a working SLD map."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from segloc.data.dataset import read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.errors import SeglocError
from segloc.evaluate.run import evaluate_map
from segloc.methods.sld.layer import SldMapConfig, build_sld_map
from segloc.models.checkpoint import WEIGHTS, load_checkpoint, read_state_dict
from segloc.models.landmarks import MultiSceneLandmarkNet, SceneLandmarkNet
from segloc_train.checkpointing import TrainingState, save_training_state
from segloc_train.sld.backbone import SceneBatchSampler, backbone_config, train_sld_backbone
from segloc_train.sld.head import fill_buffer, head_config, load_backbone, train_sld_head
from segloc_train.sld.train_sld import build_training_data, sample_patch, stack_patches

REPO = Path(__file__).resolve().parents[3]
TINY = {
    "core": {"pairs": {"num_neighbors": 5}},
    "landmarks": {"num_landmarks": 24},
    "fuse_channels": 16,
    "head_channels": 8,
    "max_edge": 160,
    "patch_size": [96, 80],
    "batch_size": 4,
    "holdout_every": 4,
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("onboarding")
    return [
        generate_scene(
            synth_config("room", num_mapping=12, num_query=3, width=160, height=120, seed=seed), root / f"scene{seed}", progress=False
        )
        for seed in (2, 3)
    ]


def test_sampler_batches_hold_one_scene_cover_every_image_and_are_shuffled():
    sizes = [5, 9, 3]
    sampler = SceneBatchSampler(sizes, batch_size=4, seed=1)
    batches = sampler.epoch(0)
    assert len(batches) == len(sampler) == 2 + 3 + 1
    for scene, size in enumerate(sizes):
        mine = [indices for s, indices in batches if s == scene]
        assert all(len(indices) == 4 and indices.max() < size for indices in mine)  # one scene each, full batches
        assert set(np.concatenate(mine)) == set(range(size))  # the epoch covers every image of every scene
    order = [scene for scene, _ in batches]
    assert order != sorted(order)  # scenes interleaved, not one after the other
    assert [s for s, _ in sampler.epoch(1)] != order or any(
        not np.array_equal(a, b) for (_, a), (_, b) in zip(sampler.epoch(1), batches)
    )  # a new order each epoch
    assert [s for s, _ in SceneBatchSampler(sizes, 4, seed=1).epoch(0)] == order  # reproducible
    with pytest.raises(SeglocError, match="at least one training image"):
        SceneBatchSampler([4, 0], 2)


def test_buffer_features_match_a_direct_forward_pass(scenes):
    config = head_config("cpu_demo", {**TINY, "patches_per_image": 2, "buffer_batch_size": 3})
    backbone, meta = load_backbone("imagenet", config)
    assert meta == {"source": "imagenet"}
    dataset = read_dataset(scenes[0])
    _, data = build_training_data(dataset, config, progress=False)
    buffer = fill_buffer(backbone, data, config, progress=False)
    assert len(buffer) == 2 * len(data.train_ids)
    assert buffer.features.dtype == torch.float16 and buffer.features.shape[1:] == (16, 10, 12)
    assert buffer.nbytes >= buffer.features.nelement() * 2
    # patch 1 of the third training image, computed directly
    image_id = int(data.train_ids[2])
    patch = sample_patch(data, image_id, config, np.random.default_rng([config.seed, image_id, 1]))
    images, points, visible, _ = stack_patches([patch], "cpu")
    with torch.inference_mode():
        direct = backbone(images)[0]
    stored = buffer.features[2 * 2 + 1].float()
    assert torch.allclose(stored, direct, atol=1e-2 * float(direct.abs().max()) + 1e-3)
    assert torch.equal(buffer.points[5], points[0]) and torch.equal(buffer.visible[5], visible[0])


def test_backbone_run_then_a_new_scenes_head_builds_a_map_that_localizes(scenes, tmp_path):
    run = tmp_path / "backbone"
    config = backbone_config("cpu_demo", {**TINY, "epochs": 2})
    epochs = []
    checkpoint = train_sld_backbone(scenes, run, config, progress=False, on_epoch=epochs.append)
    assert [record["epoch"] for record in epochs] == [0, 1]
    assert len(epochs[0]["scenes"]) == 2 and 0 <= epochs[0]["recall"] <= 1
    history = json.loads((run / "losses.json").read_text())
    assert {step["scene"] for step in history["steps"]} == {0, 1}
    assert (run / "curves.png").is_file() and len(list((run / "scenes").glob("*.npz"))) == 2
    multi = load_checkpoint(checkpoint)
    assert isinstance(multi, MultiSceneLandmarkNet) and len(multi.heads) == 2
    with pytest.raises(SeglocError, match="already holds"):
        train_sld_backbone(scenes, run, config, progress=False)

    # the new scene's head, on the backbone trained without it (here: the first scene's backbone for the second)
    head_run = tmp_path / "head"
    head = head_config("cpu_demo", {**TINY, "backbone": str(run), "epochs": 4, "patches_per_image": 3})
    head_checkpoint = train_sld_head(scenes[1], head_run, head, progress=False)
    model = load_checkpoint(head_checkpoint)
    assert isinstance(model, SceneLandmarkNet) and model.config.num_landmarks == 24
    for name, value in multi.backbone.state_dict().items():  # the backbone was frozen
        assert torch.equal(model.backbone.state_dict()[name], value), name
    history = json.loads((head_run / "losses.json").read_text())
    assert history["buffer"]["patches"] == 3 * 9 and history["buffer"]["bytes"] > 0
    losses = [step["loss"] for step in history["steps"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    with pytest.raises(SeglocError, match="not empty"):
        train_sld_head(scenes[1], head_run, head, progress=False)

    dataset = read_dataset(scenes[1])
    map_path = build_sld_map(dataset, tmp_path / "map", SldMapConfig(checkpoint=str(head_checkpoint)), progress=False)
    metrics = evaluate_map(map_path, dataset, tmp_path / "eval", progress=False)
    assert metrics["method"] == "sld" and metrics["num_queries"] == len(dataset.query)


def test_a_backbone_run_stopped_after_one_epoch_and_resumed_ends_as_one_run_of_two(scenes, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_sld_backbone(scenes, whole, backbone_config("cpu_demo", {**TINY, "epochs": 2}), progress=False)
    train_sld_backbone(scenes, resumed, backbone_config("cpu_demo", {**TINY, "epochs": 1}), progress=False)
    state = json.loads((resumed / "resume" / "state.json").read_text())
    assert state["trainer"] == "sld_backbone" and state["epochs_done"] == 1 and state["stopped"] == "completed"
    epochs = []
    train_sld_backbone(scenes, resumed, backbone_config("cpu_demo", {**TINY, "epochs": 2}), resume=True, progress=False,
                       on_epoch=epochs.append)  # fmt: skip
    assert [record["epoch"] for record in epochs] == [1]  # only the second epoch ran

    one, two = (json.loads((run / "losses.json").read_text()) for run in (whole, resumed))
    assert two["scenes"] == one["scenes"] and two["stopped"] == "completed"
    assert [(s["epoch"], s["step"], s["scene"]) for s in two["steps"]] == [(s["epoch"], s["step"], s["scene"]) for s in one["steps"]]
    # the same patches and the same optimizer state: the same curve and weights, up to the floating point of the machine
    np.testing.assert_allclose([s["loss"] for s in two["steps"]], [s["loss"] for s in one["steps"]], rtol=1e-4)
    assert [e["epoch"] for e in two["epochs"]] == [0, 1]
    np.testing.assert_allclose([e["loss"] for e in two["epochs"]], [e["loss"] for e in one["epochs"]], rtol=1e-4)
    np.testing.assert_allclose([e["recall"] for e in two["epochs"]], [e["recall"] for e in one["epochs"]], atol=0.02)
    weights_one, weights_two = (read_state_dict(run / "resume" / "last" / WEIGHTS) for run in (whole, resumed))
    assert weights_two.keys() == weights_one.keys() and any(name.startswith("heads.1.") for name in weights_one)
    for name, value in weights_one.items():
        assert torch.allclose(weights_two[name].float(), value.float(), rtol=1e-3, atol=1e-5), name
    assert json.loads((resumed / "resume" / "state.json").read_text())["epochs_done"] == 2

    with pytest.raises(SeglocError, match="trained on 2 scenes, not 1"):
        train_sld_backbone(scenes[:1], resumed, backbone_config("cpu_demo", {**TINY, "epochs": 3}), resume=True, progress=False)
    with pytest.raises(SeglocError, match="its scene 0 is"):
        train_sld_backbone(scenes[::-1], resumed, backbone_config("cpu_demo", {**TINY, "epochs": 3}), resume=True, progress=False)


def test_backbone_resume_refuses_an_empty_folder_and_another_trainers_run(scenes, tmp_path):
    config = backbone_config("cpu_demo", TINY)
    with pytest.raises(SeglocError, match="nothing to resume"):
        train_sld_backbone(scenes, tmp_path / "new", config, resume=True, progress=False)
    save_training_state(tmp_path / "sld", TrainingState("sld"), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
    with pytest.raises(SeglocError, match="holds a 'sld' training run"):
        train_sld_backbone(scenes, tmp_path / "sld", config, resume=True, progress=False)


def test_head_refuses_what_is_not_a_backbone(scenes, tmp_path):
    config = head_config("cpu_demo", {**TINY, "backbone": str(tmp_path / "nothing")})
    with pytest.raises(SeglocError, match="no such run"):
        train_sld_head(scenes[0], tmp_path / "out", config, progress=False)
    with pytest.raises(SeglocError, match="num_networks must be 1"):
        head_config("cpu_demo", {**TINY, "num_networks": 2})


def test_two_gloo_processes_give_the_loss_curve_of_one_with_the_same_global_batch(scenes, tmp_path):
    # batch norm frozen: the two processes then compute what one does, up to floating-point order
    values = {**TINY, "epochs": 1, "max_steps": 4, "freeze_batchnorm": True, "threads": 1}
    train_sld_backbone(scenes, tmp_path / "one", backbone_config("cpu_demo", values), progress=False)
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump({"train": values}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "segloc", "train", "sld-backbone",
               *map(str, scenes), "-o", str(tmp_path / "two"), "--config", str(config_file), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "losses.json").read_text())
    two = json.loads((tmp_path / "two" / "losses.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert [s["scene"] for s in two["steps"]] == [s["scene"] for s in one["steps"]]
    loss_one, loss_two = (np.array([s["loss"] for s in run["steps"]]) for run in (one, two))
    assert len(loss_one) == len(loss_two) == 4
    # the first two steps agree closely (same patches, same normalisation, one identical update); Adam's normalised
    # steps amplify floating-point differences after that, so the rest of the curve agrees more loosely
    np.testing.assert_allclose(loss_two[:2], loss_one[:2], rtol=2e-3)
    np.testing.assert_allclose(loss_two, loss_one, rtol=5e-2)
