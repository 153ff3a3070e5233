"""SLD* training on a toy synthetic scene: labels agree with the depth, steps lower the loss, the run writes
its checkpoint, curves and resume state, and the map built from it holds no image data and localizes."""

import importlib.util
import io
import json

import numpy as np
import pytest
import torch

from segloc.data.dataset import read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.errors import SeglocError
from segloc.evaluate.run import evaluate_map
from segloc.maps.build import build_core
from segloc.maps.core import read_core
from segloc.maps.package import MapPackage
from segloc.methods import get_method
from segloc.methods.sld.heatmaps import gaussian_targets
from segloc.methods.sld.landmarks import UNKNOWN, VISIBLE, LandmarkConfig, select_landmarks, visibility_labels
from segloc.methods.sld.layer import SldMapConfig, build_sld_map, read_sld_layer
from segloc.models.checkpoint import WEIGHTS, read_checkpoint_info, read_state_dict
from segloc.models.landmarks import LandmarkEnsemble, LandmarkNetConfig
from segloc_train.sld.train_sld import (
    LandmarkImages,
    depth_loader,
    masked_heatmap_loss,
    sample_patch,
    train_config,
    train_sld,
)

FAST_CORE = {"pairs": {"num_neighbors": 5}}
TINY = {
    "core": FAST_CORE,
    "landmarks": {"num_landmarks": 24},
    "num_networks": 2,
    "fuse_channels": 16,
    "head_channels": 8,
    "max_edge": 160,
    "patch_size": [96, 80],
    "batch_size": 2,
    "holdout_every": 4,
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("sld")
    config = synth_config("room", num_mapping=12, num_query=3, width=160, height=120, seed=2)
    dataset = read_dataset(generate_scene(config, root / "dataset", progress=False))
    return dataset, root


@pytest.fixture(scope="module")
def labelled(toy):
    dataset, _ = toy
    core = build_core(dataset, train_config("cpu_demo", TINY).core, progress=False).core
    selection = select_landmarks(core, LandmarkConfig(num_landmarks=24))
    return core, selection, visibility_labels(core, selection, depth_loader(dataset))


def test_visibility_labels_agree_with_the_synthetic_depth(toy, labelled):
    dataset, _ = toy
    core, selection, labels = labelled
    depth_of = depth_loader(dataset)
    assert labels.shape == (12, 24) and (labels == VISIBLE).sum() > 0
    checked = agreeing = 0
    for image_id, image in enumerate(core.images):
        depth = depth_of(image_id)
        points, z, inside = image.camera.world_to_image(image.cam_from_world, selection.positions)
        for landmark in np.flatnonzero(inside):
            surface = depth[int(points[landmark, 1]), int(points[landmark, 0])]
            if labels[image_id, landmark] == VISIBLE:
                checked += 1
                agreeing += abs(surface - z[landmark]) <= max(0.05 * z[landmark], 0.03)
            elif labels[image_id, landmark] == 0:  # not visible inside the image: something is in front (or it faces away)
                assert surface < z[landmark] + 1e-6 or surface == 0
    assert agreeing >= 0.9 * checked  # observed ones are visible whatever the depth says; they agree with it
    assert (labels == UNKNOWN).mean() < 0.2


def test_training_steps_lower_the_loss(toy, labelled):
    dataset, _ = toy
    core, selection, labels = labelled
    import cv2

    images = [dataset.load_image(r.name) for r in dataset.mapping]
    points = [r.camera.world_to_image(r.cam_from_world, selection.positions)[0].astype(np.float32) for r in dataset.mapping]
    data = LandmarkImages(images, points, labels, np.arange(12), np.zeros(0, np.int64))
    config = train_config("cpu_demo", {**TINY, "photometric_probability": 0.0})
    rng = np.random.default_rng(0)
    batch = [sample_patch(data, i, config, rng) for i in range(4)]
    assert all(b[0].shape == (80, 96, 3) for b in batch) and cv2 is not None
    torch.manual_seed(0)
    model = LandmarkEnsemble(LandmarkNetConfig(24, 2, fuse_channels=16, head_channels=8, pretrained=True)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2)
    p, v, k = (torch.from_numpy(np.stack([b[i] for b in batch])) for i in (1, 2, 3))
    losses = []
    for _ in range(15):
        heatmaps = model(x)
        loss = masked_heatmap_loss(heatmaps, gaussian_targets(p, v, heatmaps.shape[-2:], 8, 1.0), k, 50.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2])


def _image_like(array: np.ndarray) -> bool:
    if array.ndim == 3 and (array.shape[-1] in (1, 3, 4) or array.shape[0] in (1, 3, 4)):
        spatial = array.shape[:2] if array.shape[-1] in (1, 3, 4) else array.shape[1:]
        return min(spatial) >= 16
    return array.ndim == 2 and array.dtype == np.uint8 and min(array.shape) >= 16


def test_train_build_map_and_localize(toy, tmp_path):
    dataset, _ = toy
    config = train_config("cpu_demo", {**TINY, "epochs": 2, "steps_per_epoch": 2})
    checkpoint = train_sld(dataset.root, tmp_path / "run", config, progress=False)
    for name in ("checkpoint/manifest.json", "curves.png", "losses.json", "config.yaml", "resume/state.json", "landmarks.json"):
        assert (tmp_path / "run" / name).is_file(), name
    history = json.loads((tmp_path / "run" / "losses.json").read_text())
    assert len(history["epochs"]) == 2 and len(history["steps"]) == 4
    with pytest.raises(SeglocError, match="--resume"):
        train_sld(dataset.root, tmp_path / "run", config, progress=False)
    resumed = train_sld(
        dataset.root, tmp_path / "run", train_config("cpu_demo", {**TINY, "epochs": 3, "steps_per_epoch": 2}), resume=True, progress=False
    )
    assert len(json.loads((tmp_path / "run" / "losses.json").read_text())["epochs"]) == 3 and resumed == checkpoint

    with pytest.raises(SeglocError, match="segloc train sld"):
        build_sld_map(dataset, tmp_path / "nomap", SldMapConfig(core=FAST_CORE), progress=False)
    method = get_method("sld")
    map_config = method.map_config({"core": FAST_CORE, "checkpoint": str(checkpoint)})
    package = MapPackage.open(method.build_map(dataset, tmp_path / "map", map_config, progress=False))
    assert package.method == "sld" and set(package.layers) == {"core", "sld", "sld_model"}
    layer = read_sld_layer(package)
    core = read_core(package)
    np.testing.assert_allclose(core.points3D, layer.positions)
    assert core.num_points == 24 and core.num_observations == 0  # the landmarks are the only points

    # the map holds no image, no descriptor and no point cloud beyond the landmarks
    state_dict = method.load_localizer(package, method.localize_config()).model.state_dict()
    allowed = {"core/points3D.npz": {"points3D", "point_errors", "observation_point_ids", "observation_image_ids", "observation_xy"},
               "sld/landmarks.npz": {"positions", "scores"}}  # fmt: skip
    for rel in sorted(p.relative_to(package.path).as_posix() for p in package.path.rglob("*") if p.is_file()):
        data = (package.path / rel).read_bytes()
        assert not data.startswith((b"\x89PNG", b"\xff\xd8\xff")), rel
        if rel.endswith(".json"):
            assert len(data) < 64 * 1024, rel
            continue
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            if rel == "sld_model/weights.npz":
                assert set(arrays.files) == set(state_dict)
                continue
            assert set(arrays.files) == allowed[rel], rel
            for key in arrays.files:
                assert len(arrays[key]) <= 24 and not _image_like(arrays[key]), f"{rel}:{key}"

    metrics = evaluate_map(package.path, dataset, tmp_path / "eval", progress=False)
    assert metrics["num_queries"] == 3
    assert {"detect", "pose"} <= set(metrics["time_per_stage_s"])

    # `segloc export MAP` stores the landmark network's ONNX export (at the map's image size) in the
    # map; with the onnxruntime backend the localizer runs that file and finds the same poses.
    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnxruntime") is None:
        return  # the export extra is not installed: the torch path above is the whole test
    from segloc.cli import main
    from segloc.models.export import read_onnx_layer
    from segloc.runtime.session import RuntimeConfig

    assert main(["export", str(package.path)]) == 0
    package = MapPackage.open(package.path)
    networks = method.networks(package)
    model, size = networks["landmarks"]
    assert read_onnx_layer(package, model, size) is not None and read_onnx_layer(package, model, (size[0] + 8, size[1])) is None
    cache = RuntimeConfig("onnxruntime", threads=1, cache_dir=str(tmp_path / "cache"))
    torch_localizer = method.load_localizer(package, method.localize_config())
    onnx_localizer = method.load_localizer(
        package, method.localize_config({"runtime": {"backend": "onnxruntime", "threads": 1, "cache_dir": cache.cache_dir}})
    )
    for record in dataset.query:
        image = dataset.load_image(record.name)
        size = torch_localizer.input_size(record.camera)
        heatmaps = torch_localizer.heatmaps(image, size)
        assert float((onnx_localizer.heatmaps(image, size) - heatmaps).abs().max()) < 1e-4 * float(heatmaps.abs().max())
        want, got = torch_localizer.localize(image, record.camera), onnx_localizer.localize(image, record.camera)
        assert [d[0] for d in got.info["detections"]] == [d[0] for d in want.info["detections"]]
        if want.info["detections"]:
            np.testing.assert_allclose(np.array(got.info["detections"])[:, 1:3], np.array(want.info["detections"])[:, 1:3], atol=0.05)
    assert [s.backend for s in onnx_localizer.inference_status()] == ["onnxruntime"]
    assert not (tmp_path / "cache" / "onnx").exists()  # the map's export was used, nothing exported again


def test_a_run_stopped_after_one_epoch_and_resumed_ends_as_one_run_of_two(toy, tmp_path):
    dataset, _ = toy
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    tiny = {**TINY, "steps_per_epoch": 3}
    torch.manual_seed(0)  # the heads' initialisation (train_sld does not seed torch)
    train_sld(dataset.root, whole, train_config("cpu_demo", {**tiny, "epochs": 2}), progress=False)
    torch.manual_seed(0)
    train_sld(dataset.root, resumed, train_config("cpu_demo", {**tiny, "epochs": 1}), progress=False)
    state = json.loads((resumed / "resume" / "state.json").read_text())
    assert state["trainer"] == "sld" and state["epochs_done"] == 1 and state["steps_done"] == 3 and state["stopped"] == "completed"
    epochs = []
    train_sld(dataset.root, resumed, train_config("cpu_demo", {**tiny, "epochs": 2}), resume=True, progress=False, on_epoch=epochs.append)
    assert [record["epoch"] for record in epochs] == [1]  # only the second epoch ran

    one, two = (json.loads((run / "losses.json").read_text()) for run in (whole, resumed))
    assert list(two) == list(one) == ["steps", "epochs"]
    for history in (one, two):
        assert [(s["epoch"], s["step"]) for s in history["steps"]] == [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5)]
    # the same patches, weights and optimizer state: the same curve, up to the floating point of the machine
    np.testing.assert_allclose([s["loss"] for s in two["steps"]], [s["loss"] for s in one["steps"]], rtol=1e-4)
    assert [e["epoch"] for e in two["epochs"]] == [0, 1]
    np.testing.assert_allclose([e["loss"] for e in two["epochs"]], [e["loss"] for e in one["epochs"]], rtol=1e-4)
    np.testing.assert_allclose([e["recall"] for e in two["epochs"]], [e["recall"] for e in one["epochs"]], atol=0.02)
    weights_one, weights_two = (read_state_dict(run / "resume" / "last" / WEIGHTS) for run in (whole, resumed))
    assert weights_two.keys() == weights_one.keys()
    for name, value in weights_one.items():
        assert torch.allclose(weights_two[name].float(), value.float(), rtol=1e-3, atol=1e-5), name
    assert read_checkpoint_info(resumed / "resume" / "last").metadata["epoch"] == 2
    state = json.loads((resumed / "resume" / "state.json").read_text())
    assert state["epochs_done"] == 2 and state["steps_done"] == 6 and state["stopped"] == "completed"
    assert read_checkpoint_info(resumed / "checkpoint").metadata["epoch"] == read_checkpoint_info(whole / "checkpoint").metadata["epoch"]
    assert (resumed / "curves.png").is_file()


def test_a_depth_estimator_gives_the_visibility_of_images_without_depth(toy, tmp_path):
    """Without depth images, the trainer labels visibility from a monocular network's completed depth, mostly as the rendered depth does."""
    import shutil

    from segloc.models.checkpoint import save_checkpoint
    from segloc.models.depth import DepthNet, DepthNetConfig
    from segloc_train.sld.train_sld import build_training_data

    dataset, _ = toy
    bare = tmp_path / "no_depth"
    shutil.copytree(dataset.root, bare, ignore=shutil.ignore_patterns("depth"))
    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(pretrained=False, decoder_channels=(16, 16, 16, 16))).eval()
    save_checkpoint(net, tmp_path / "mde", metadata={"input_size": [80, 64]})
    with_depth = train_config("cpu_demo", TINY)
    _, truth = build_training_data(dataset, with_depth, progress=False)
    _, geometry_only = build_training_data(read_dataset(bare), with_depth, progress=False)
    completed = train_config(
        "cpu_demo", {**TINY, "depth_estimator": {"path": str(tmp_path / "mde")}, "depth_completion": {"max_iter": 200}}
    )
    _, estimated = build_training_data(read_dataset(bare), completed, progress=False)
    # the label quality of completed depth is tested in test/segloc/depth; here: the trainer uses it, and it does no harm
    assert (estimated.labels == UNKNOWN).sum() <= (geometry_only.labels == UNKNOWN).sum()
    known = (estimated.labels != UNKNOWN) & (truth.labels != UNKNOWN)
    assert (estimated.labels[known] == truth.labels[known]).mean() > 0.8
    missing = train_config("cpu_demo", {**TINY, "depth_estimator": {"path": str(tmp_path / "no_such_network")}})
    with pytest.raises(SeglocError, match="no_such_network"):
        build_training_data(read_dataset(bare), missing, progress=False)
