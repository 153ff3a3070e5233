"""Depth network training on a tiny synthetic scene: the loss, one short epoch, resume, and the estimator on the run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from segloc.cli import main
from segloc.data.synthetic import generate_scene, synth_config
from segloc.depth import DepthEstimatorConfig, load_depth_estimator
from segloc.errors import SeglocError
from segloc_train.depth.train_depth import relative_depth_errors, scale_invariant_loss, train_config, train_depth

TINY = {
    "network": {"decoder_channels": [16, 16, 16, 16]},
    "max_edge": 160,
    "patch_size": [96, 64],
    "batch_size": 2,
    "steps_per_epoch": 2,
    "epochs": 1,
    "holdout_every": 4,
    "threads": 1,
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_train")
    return generate_scene(synth_config("room", num_mapping=6, num_query=2, width=160, height=120, seed=3), root / "room", progress=False)


def test_scale_invariant_loss_ignores_one_scale_per_image():
    depth = torch.rand(2, 1, 8, 8) + 0.5
    depth[0, 0, :2] = 0.0  # unknown pixels
    scaled = torch.log(depth.clamp_min(1e-6) * torch.tensor([3.0, 0.2]).view(2, 1, 1, 1))
    assert float(scale_invariant_loss(scaled, depth, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(scale_invariant_loss(scaled, depth, 0.0)) > 0.5
    assert float(scale_invariant_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))) == 0.0


def test_relative_depth_errors_after_median_scaling():
    truth = np.linspace(1.0, 4.0, 100).reshape(10, 10)
    perfect = relative_depth_errors(0.5 * truth, truth)
    assert perfect["abs_rel"] == pytest.approx(0.0, abs=1e-12) and perfect["delta1"] == 1.0
    assert relative_depth_errors(np.ones_like(truth), truth)["abs_rel"] > 0.2


def test_one_short_epoch_writes_a_run_that_resumes_and_loads(tmp_path, scene):
    run = tmp_path / "run"
    epochs = []
    checkpoint = train_depth([scene], run, train_config("cpu", TINY), progress=False, on_epoch=epochs.append)
    assert [e["epoch"] for e in epochs] == [0] and np.isfinite(epochs[0]["loss"]) and 0 <= epochs[0]["delta1"] <= 1
    for name in ("config.yaml", "losses.json", "curves.png", "resume/state.json", "resume/last/manifest.json"):
        assert (run / name).is_file(), name
    estimator = load_depth_estimator(DepthEstimatorConfig(path=str(checkpoint)))
    assert estimator.input_size == (160, 120)
    depth = estimator.estimate(np.zeros((240, 320, 3), np.uint8))
    assert depth.shape == (240, 320) and np.all(depth > 0)

    with pytest.raises(SeglocError, match="not empty"):
        train_depth([scene], run, train_config("cpu", TINY), progress=False)
    train_depth([scene], run, train_config("cpu", {**TINY, "epochs": 2}), resume=True, progress=False, on_epoch=epochs.append)
    history = json.loads((run / "losses.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1] and len(history["steps"]) == 4


def test_cli_trains_and_refuses_datasets_without_depth(tmp_path, scene, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({"train": TINY}))
    assert main(["train", "depth", str(scene), "-o", str(tmp_path / "run"), "--config", str(config), "--no-progress"]) == 0
    assert "epoch 1/1: loss" in capsys.readouterr().out
    no_depth = tmp_path / "no_depth"
    shutil.copytree(scene, no_depth, ignore=shutil.ignore_patterns("depth"))
    assert main(["train", "depth", str(no_depth), "-o", str(tmp_path / "run2"), "--config", str(config), "--no-progress"]) != 0
    assert "has a depth image" in capsys.readouterr().err
