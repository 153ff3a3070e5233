"""The sfrs map layer and ``localize.retrieval: sfrs`` through the shared hook (here with the reference method)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segloc.config import config_from_dict
from segloc.data import synthetic
from segloc.data.dataset import read_dataset
from segloc.errors import SeglocError
from segloc.evaluate.run import evaluate_map
from segloc.geometry.transforms import pose_error
from segloc.localize.retrieval import load_localizer, split_retrieval_option
from segloc.maps.package import MapPackage
from segloc.maps.sfrs import SFRS_LAYER, SfrsLayerConfig, SfrsRetriever, add_sfrs_layer
from segloc.methods import get_method
from segloc.methods.reference.layer import ReferenceMapConfig, build_reference_map
from segloc.models import save_checkpoint
from segloc.models.netvlad import NetVlad, NetVladConfig, describe_images, sample_features


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A small room, its reference map, and an untrained NetVLAD checkpoint (ImageNet backbone, k-means of the room)."""
    root = tmp_path_factory.mktemp("room")
    config = synthetic.synth_config("room", "lighting", num_mapping=30, num_query=4, width=320, height=240, seed=3)
    dataset = read_dataset(synthetic.generate_scene(config, root / "dataset", progress=False))
    map_config = config_from_dict(ReferenceMapConfig, {"vlad": {"num_clusters": 16, "max_training_descriptors": 20000}})
    map_path = build_reference_map(dataset, root / "map", map_config, progress=False)
    net = NetVlad(NetVladConfig(num_clusters=16)).eval()
    images = [dataset.load_image(r.name) for r in dataset.mapping[::3]]
    with torch.no_grad():
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        net.initialise_clusters(sample_features(net.features(batch), 100, torch.Generator().manual_seed(0)))
    checkpoint = save_checkpoint(net, root / "netvlad", metadata={"image_size": [320, 240]})
    return dataset, map_path, checkpoint


def test_layer_round_trip_and_self_retrieval(room, tmp_path):
    dataset, map_path, checkpoint = room
    out = add_sfrs_layer(map_path, dataset, SfrsLayerConfig(str(checkpoint), whitening_dim=8), tmp_path / "map_sfrs", progress=False)
    package = MapPackage.open(out)
    assert package.has_layer(SFRS_LAYER) and package.has_layer("reference") and package.method == "reference"
    assert not MapPackage.open(map_path).has_layer(SFRS_LAYER)  # the input map is untouched
    retriever = SfrsRetriever.from_map(package)
    assert retriever.descriptors.shape == (30, 8)
    for index in (0, 11, 29):  # a mapping image retrieves itself first
        ids, scores = retriever.retrieve(dataset.load_image(dataset.mapping[index].name), 3)
        assert ids[0] == index and scores[0] == pytest.approx(1.0, abs=1e-3)
    raw = describe_images(retriever.network, [dataset.load_image(dataset.mapping[0].name)], 320)
    np.testing.assert_allclose(
        retriever.describe(dataset.load_image(dataset.mapping[0].name)), retriever.whitening.whiten(raw)[0], atol=1e-5
    )
    with pytest.raises(SeglocError, match="is the input map"):
        add_sfrs_layer(map_path, dataset, SfrsLayerConfig(str(checkpoint)), map_path, progress=False)


def test_sfrs_retrieval_gives_the_method_its_prior(room, tmp_path):
    dataset, map_path, checkpoint = room
    out = add_sfrs_layer(map_path, dataset, SfrsLayerConfig(str(checkpoint)), tmp_path / "map_sfrs", progress=False)
    package = MapPackage.open(out)
    method = get_method("reference")
    localizer = load_localizer(method, package, {"retrieval": "sfrs", "prior_radius": 1.0})
    assert localizer.method == "reference"
    record = dataset.query[0]
    result = localizer.localize(dataset.load_image(record.name), record.camera)
    assert result.success, result.info
    assert list(result.timings)[0] == "sfrs_retrieve" and len(result.info["sfrs_retrieved"]) == 5
    assert pose_error(result.cam_from_world, record.cam_from_world)[0] < 0.05
    metrics = evaluate_map(package, dataset, tmp_path / "eval", localize={"retrieval": "sfrs", "prior_radius": 1.0}, progress=False)
    assert metrics["num_localized"] == len(dataset.query)
    assert "sfrs_retrieve" in json.loads((tmp_path / "eval" / "metrics.json").read_text())["time_per_stage_s"]
    assert split_retrieval_option({"num_candidates": 3}) == ("method", {"num_candidates": 3})
    with pytest.raises(SeglocError, match="must be one of"):
        split_retrieval_option({"retrieval": "netvlad"})
    with pytest.raises(SeglocError, match="no sfrs layer"):
        load_localizer(method, MapPackage.open(map_path), {"retrieval": "sfrs"})


def test_cli_adds_the_layer_and_evaluates_with_it(room, tmp_path, capsys):
    from segloc.cli import main

    dataset, map_path, checkpoint = room
    out = tmp_path / "map_sfrs"
    assert (
        main(["map", "add-sfrs", str(map_path), str(dataset.root), "--checkpoint", str(checkpoint), "-o", str(out), "--no-progress"]) == 0
    )
    config = tmp_path / "sfrs.yaml"
    config.write_text("localize:\n  retrieval: sfrs\n  prior_radius: 1.0\n")
    assert main(["map", "info", str(out), "--config", str(config)]) == 0
    assert "layer sfrs" in capsys.readouterr().out
    assert main(["evaluate", str(out), str(dataset.root), "-o", str(tmp_path / "eval"), "--config", str(config), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_localized"] == len(dataset.query) and "sfrs_retrieve" in metrics["time_per_stage_s"]


def test_retrieval_only_evaluation_writes_recalls_and_thresholds(room, tmp_path, capsys):
    from segloc.cli import main

    dataset, map_path, checkpoint = room
    out = add_sfrs_layer(map_path, dataset, SfrsLayerConfig(str(checkpoint)), tmp_path / "map_sfrs", progress=False)
    argv = ["evaluate", str(out), str(dataset.root), "-o", str(tmp_path / "r"), "--retrieval-only", "--retrieval-distance", "0.6"]
    assert main([*argv, "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics["recall"]) == {"R@1", "R@5", "R@10"} and metrics["thresholds"] == {"max_distance_m": 0.6, "max_angle_deg": 30.0}
    assert metrics["recall"]["R@1"] <= metrics["recall"]["R@5"] <= metrics["recall"]["R@10"] and metrics["num_queries"] == 4
    assert "sfrs retrieval, 4 queries" in capsys.readouterr().out


@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="the onnxruntime backend needs onnxruntime and onnxscript (ONNX export)",
)
def test_retrieval_network_runs_on_onnxruntime_from_the_maps_export(room, tmp_path):
    """`segloc export MAP` stores the sfrs layer's NetVLAD; with the onnxruntime backend the retriever runs it, as torch does."""
    from segloc.cli import main
    from segloc.runtime.session import RuntimeConfig

    dataset, map_path, checkpoint = room
    out = add_sfrs_layer(map_path, dataset, SfrsLayerConfig(str(checkpoint)), tmp_path / "map_sfrs", progress=False)
    assert main(["export", str(out)]) == 0  # the reference map runs no network of its own: only netvlad
    package = MapPackage.open(out)
    assert {Path(rel).stem for rel in package.layers["onnx"]["files"]} >= {"netvlad"}
    runtime = RuntimeConfig("onnxruntime", threads=1, cache_dir=str(tmp_path / "cache"))
    torch_retriever, onnx_retriever = SfrsRetriever.from_map(package), SfrsRetriever.from_map(package, runtime=runtime)
    assert onnx_retriever.inference_status()[0].backend == "onnxruntime"
    for record in dataset.query:
        image = dataset.load_image(record.name)
        want, got = torch_retriever.describe(image), onnx_retriever.describe(image)
        assert float(np.dot(want, got) / np.linalg.norm(want) / np.linalg.norm(got)) > 0.9999
        assert onnx_retriever.retrieve(image, 3)[0][0] == torch_retriever.retrieve(image, 3)[0][0]
    assert not (tmp_path / "cache" / "onnx").exists()  # the map's export was used
    # --backend (the node's backend parameter) also runs the retrieval network of a method without a network of its own.
    localizer = load_localizer(get_method("reference"), package, {"retrieval": "sfrs", "prior_radius": 1.0}, backend="onnxruntime")
    assert [s.backend for s in localizer.inference_status()] == ["onnxruntime"]


def test_pose_priors_from_retrieval_alone(room, tmp_path):
    """The first prior is the best image's pose (top1) or a similarity-weighted mean near it; the rest are the next images' poses."""
    dataset, map_path, checkpoint = room
    out = add_sfrs_layer(map_path, dataset, SfrsLayerConfig(str(checkpoint)), tmp_path / "map_sfrs", progress=False)
    retriever = SfrsRetriever.from_map(MapPackage.open(out))
    image = dataset.load_image(dataset.mapping[11].name)
    top1 = retriever.pose_priors(image, 5, "top1")
    assert top1.image_ids[0] == 11 and len(top1.poses) == 5
    assert top1.poses[0] == retriever.poses[11] and top1.poses[1:] == [retriever.poses[int(i)] for i in top1.image_ids[1:]]
    weighted = retriever.pose_priors(image, 5, "weighted")
    assert weighted.poses[1:] == top1.poses[1:]
    distance, angle = pose_error(weighted.poses[0], retriever.poses[11])
    assert 0 < distance <= 1.5 * retriever.image_spacing and angle < 30.0  # a mean of the neighbours, not the best image itself
    with pytest.raises(SeglocError, match="unknown approximation"):
        retriever.pose_priors(image, 5, "median")


def test_map_update_describes_the_new_images_with_the_layers_network(room, tmp_path):
    from segloc.maps.update import update_map

    dataset, map_path, checkpoint = room
    with_sfrs = add_sfrs_layer(map_path, dataset, SfrsLayerConfig(str(checkpoint), whitening_dim=8), tmp_path / "map_sfrs", progress=False)
    config = synthetic.synth_config("room", "lighting", num_mapping=6, num_query=0, width=320, height=240, seed=3, recording=1)
    recording = synthetic.generate_scene(config, tmp_path / "recording2", progress=False)
    update_map(with_sfrs, recording, tmp_path / "updated", progress=False)
    before = SfrsRetriever.from_map(MapPackage.open(with_sfrs))
    after = SfrsRetriever.from_map(MapPackage.open(tmp_path / "updated"))  # the layer belongs to the new core
    assert after.descriptors.shape == (36, before.descriptors.shape[1])
    assert np.array_equal(after.descriptors[:30], before.descriptors)
    new = read_dataset(recording)
    assert np.allclose(after.describe(new.load_image(new.mapping[2].name)), after.descriptors[32], atol=1e-4)


def test_a_localizer_with_its_own_retrieval_stage_gets_the_retrieved_images_others_the_weighted_prior():
    """RetrievalPriorLocalizer: a RetrievalConsumer (SegLoc) runs its pipeline from SFRS's images and similarities;
    any other localizer gets the first pose prior (the weighted mean); a prior the caller gives wins."""
    from segloc.geometry.camera import Camera
    from segloc.geometry.transforms import Rigid3
    from segloc.localize.base import LocalizationResult
    from segloc.localize.retrieval import RetrievalConsumer, RetrievalPriorLocalizer
    from segloc.maps.sfrs import SfrsPriors

    weighted, second = Rigid3(translation=np.array([0.5, 0.0, 0.0])), Rigid3(translation=np.array([1.0, 0.0, 0.0]))

    class Retriever:
        names = ["a", "b", "c"]

        def pose_priors(self, image, num_results):
            return SfrsPriors(np.array([2, 0]), np.array([0.9, 0.7]), [weighted, second])

    calls = []

    class Plain:
        def localize(self, image, camera, prior=None):
            calls.append(("prior", prior))
            return LocalizationResult(prior)

    class Consumer(Plain):
        def localize_retrieved(self, image, camera, image_ids, similarities):
            calls.append(("retrieved", image_ids.tolist(), similarities.tolist()))
            return LocalizationResult(second)

    assert isinstance(Consumer(), RetrievalConsumer) and not isinstance(Plain(), RetrievalConsumer)
    image, camera = np.zeros((4, 4, 3), np.uint8), Camera("PINHOLE", 4, 4, (4.0, 4.0, 2.0, 2.0))
    result = RetrievalPriorLocalizer(Consumer(), Retriever()).localize(image, camera)
    assert calls[-1] == ("retrieved", [2, 0], [0.9, 0.7]) and result.info["sfrs_retrieved"] == ["c", "a"]
    RetrievalPriorLocalizer(Plain(), Retriever()).localize(image, camera)
    assert calls[-1] == ("prior", weighted)
    given = Rigid3(translation=np.array([0.0, 2.0, 0.0]))
    RetrievalPriorLocalizer(Consumer(), Retriever()).localize(image, camera, given)
    assert calls[-1] == ("prior", given)
