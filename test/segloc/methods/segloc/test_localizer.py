"""The SegLoc localizer on a synthetic room, with an oracle segmenter (ground-truth labels) and a tiny network.

The oracle turns each image's ground-truth label image into class probabilities at four
levels (strides 16, 8, 4, 2; one-hot, area-resized, blurred, mixed with a uniform floor) and
pools the finest into the global descriptor, as a segmentation network would.
"""

import json

import numpy as np
import pytest
import torch

from segloc.config import config_from_dict
from segloc.data.dataset import read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.errors import SeglocError
from segloc.geometry import Rigid3, axis_angle_to_matrix, pose_error
from segloc.maps.core import read_core, write_core
from segloc.maps.package import MapPackage, MapWriter
from segloc.methods import get_method
from segloc.methods.segloc.layer import (
    MODEL_LAYER,
    SegLocMapConfig,
    build_segloc_map,
    read_segloc_layer,
    write_segloc_layer,
    write_segloc_model,
)
from segloc.methods.segloc.localizer import SegLocLocalizer, SegLocLocalizerConfig, approximate_pose, pose_to_list
from segloc.methods.segloc.refine import LabelRefinementConfig
from segloc.models import SegmentationNet, save_checkpoint, segmentation_config
from segloc.models.segmenter import DESCRIPTOR_GRID, LabelSegmenter, NetworkSegmenter, inference_size

WIDTH, HEIGHT = 480, 360


def tiny_network(num_classes: int = 6) -> SegmentationNet:
    torch.manual_seed(0)
    config = segmentation_config(
        "cpu", pretrained=False, num_classes=num_classes, feature_dim=8, decoder_channels=(16, 16, 16, 16), head_hidden_dim=8
    )
    return SegmentationNet(config).eval()


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A 480x360 synthetic room (30 mapping images, 6 queries), its oracle, and a SegLoc map with full distributions."""
    root = tmp_path_factory.mktemp("segloc_localize")
    config = synth_config("room", num_mapping=30, num_query=6, width=WIDTH, height=HEIGHT, seed=3)
    dataset = read_dataset(generate_scene(config, root / "dataset", progress=False))
    oracle = LabelSegmenter.from_dataset(dataset, strides=(16, 8, 4, 2), sigma=1.0)
    path = build_segloc_map(dataset, root / "map", SegLocMapConfig(store="full"), progress=False, segmenter=oracle)
    return dataset, oracle, MapPackage.open(path), root


@pytest.fixture(scope="module")
def images(room):
    dataset = room[0]
    return {record.name: dataset.load_image(record.name) for record in dataset.query}


def localize_all(localizer, dataset, images, **kwargs):
    return [localizer.localize(images[record.name], record.camera, **kwargs) for record in dataset.query]


def errors(results, dataset) -> np.ndarray:
    """(Q, 2) translation (m) and rotation (deg) errors, infinite for failures."""
    return np.array(
        [pose_error(r.cam_from_world, q.cam_from_world) if r.success else (np.inf, np.inf) for r, q in zip(results, dataset.query)]
    )


def turn(cam_from_world: Rigid3, angle_deg: float, shift=(0.0, 0.0, 0.0), axis=(0.0, 0.0, 1.0)) -> Rigid3:
    """The camera turned about a world axis (default: the vertical) and moved by ``shift`` (metres)."""
    world_from_cam = cam_from_world.inverse()
    rotation = axis_angle_to_matrix(np.asarray(axis, dtype=np.float64) * np.radians(angle_deg)) @ world_from_cam.rotation
    return Rigid3.from_rotation(rotation, world_from_cam.translation + np.asarray(shift)).inverse()


# --- localization with the oracle ------------------------------------------------------------


def test_refinement_improves_on_the_approximation(room, images):
    dataset, oracle, package, _ = room
    approximation = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(refine=False, labels_top_k=1), segmenter=oracle)
    refined = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(labels_top_k=1), segmenter=oracle)
    before = errors(localize_all(approximation, dataset, images), dataset)
    results = localize_all(refined, dataset, images)
    after = errors(results, dataset)
    assert np.all(np.isfinite(before)) and np.median(before[:, 0]) > 0.15  # the query loop is 0.3 m off the mapping loop
    assert sum(r.success for r in results) >= len(results) - 1, [r.info["failure_reason"] for r in results]
    # Measured: approximation median 0.29 m / 2.2 deg; refined median 0.055 m / 0.93 deg, worst 0.11 m / 2.0 deg.
    assert np.median(after[:, 0]) < 0.08 and np.median(after[:, 1]) < 1.5, after
    assert np.median(after[:, 0]) < 0.3 * np.median(before[:, 0])
    assert np.mean((after[:, 0] < 0.15) & (after[:, 1] < 3.0)) >= 0.8, after
    for result in results:
        assert list(result.timings) == ["segment", "retrieve", "approximate", "refine"]
        assert result.info["initialization"] == "retrieval" and len(result.info["retrieved"]) == 5
        assert result.info["similarities"] == sorted(result.info["similarities"], reverse=True)
        if result.success:
            assert result.info["failure_reason"] is None and result.covariance.shape == (6, 6)
            assert result.num_inliers == result.info["refinement"]["num_points_used"] >= 30
            assert 30 <= result.info["num_points"] <= 4000


def test_retrieval_only_is_the_top1_pose(room, images):
    dataset, oracle, package, _ = room
    localizer = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(refine=False), segmenter=oracle)
    core = read_core(package)
    result = localizer.localize(images[dataset.query[0].name], dataset.query[0].camera)
    best = core.images[core.image_id(result.info["retrieved"][0])].cam_from_world
    assert result.success and result.cam_from_world == best and result.covariance is None
    assert result.info["approximation"] == pose_to_list(best) and len(result.info["approximation"]) == 7
    assert list(result.timings) == ["segment", "retrieve", "approximate"] and result.info["refinement"] is None
    weighted = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(refine=False, approximation="weighted"), segmenter=oracle)
    other = weighted.localize(images[dataset.query[0].name], dataset.query[0].camera)
    assert other.success and pose_error(other.cam_from_world, best)[0] < 2.0


def test_the_stages_give_the_one_process_result(room, images):
    """segment -> retrieval -> localize_segmentation(retrieval=...) (the split nodes) equals localize (one process), exactly."""
    dataset, oracle, package, _ = room
    localizer = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(), segmenter=oracle)
    without_network = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(), with_network=False)
    with pytest.raises(SeglocError, match="without its network"):
        without_network.segment(images[dataset.query[0].name])
    for record in dataset.query[:3]:
        whole = localizer.localize(images[record.name], record.camera)
        segmentation = localizer.segment(images[record.name])
        # The probabilities have the wire precision (float16) in one process as across processes.
        assert all(torch.equal(level, level.half().float()) for level in segmentation.probabilities)
        retrieval = localizer.retrieval(segmentation.descriptor)
        again = without_network.retrieval_from_ids(retrieval.image_ids, retrieval.similarities)
        assert [s.matrix().tolist() for s in again.starts] == [s.matrix().tolist() for s in retrieval.starts]
        split = without_network.localize_segmentation(segmentation, record.camera, retrieval=again)
        assert split.success == whole.success and split.info["retrieved"] == whole.info["retrieved"]
        # A retrieval made elsewhere (the sfrs layer's) takes the same path: its images give the starts.
        outside = localizer.localize_retrieved(images[record.name], record.camera, retrieval.image_ids, retrieval.similarities)
        assert outside.success == whole.success and outside.info["retrieved"] == whole.info["retrieved"]
        if whole.success:
            assert np.array_equal(split.cam_from_world.matrix(), whole.cam_from_world.matrix())
            assert np.array_equal(outside.cam_from_world.matrix(), whole.cam_from_world.matrix())
    with pytest.raises(SeglocError, match="one similarity per retrieved image"):
        localizer.retrieval_from_ids(np.array([0, 1]), np.array([0.5]))
    with pytest.raises(SeglocError, match="must be in"):
        localizer.retrieval_from_ids(np.array([10_000]), np.array([0.5]))


def test_weighted_approximation():
    a = Rigid3.from_rotation(np.eye(3), np.zeros(3))  # looking along the world's z axis
    b = turn(a, 20.0, (1.0, 0.0, 0.0), axis=(1.0, 0.0, 0.0))
    far = turn(a, 0.0, (10.0, 0.0, 0.0))
    assert approximate_pose([a, b], np.array([0.9, 0.8]), "top1") == a
    mean = approximate_pose([a, b, far], np.array([0.5, 0.5, 0.9]), "weighted", max_distance=2.0)
    assert np.allclose(mean.center, [0.5, 0.0, 0.0]) and abs(pose_error(mean, a)[1] - 10.0) < 1e-6
    # Images looking elsewhere (more than max_angle_deg away) are left out.
    assert approximate_pose([a, b], np.array([0.5, 0.5]), "weighted", max_angle_deg=10.0) == a
    with pytest.raises(SeglocError, match="no retrieved image"):
        approximate_pose([], np.zeros(0))


def test_prior_skips_retrieval(room, images):
    dataset, oracle, package, _ = room
    localizer = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(labels_top_k=1), segmenter=oracle)
    successes = 0
    for record in dataset.query:
        prior = turn(record.cam_from_world, 3.0, (0.1, -0.1, 0.0))
        result = localizer.localize(images[record.name], record.camera, prior=prior)
        assert list(result.timings) == ["segment", "refine"]
        assert result.info["initialization"] == "prior" and result.info["retrieved"] == []
        assert result.info["approximation"] == pose_to_list(prior)
        if result.success:
            successes += 1
            t_err, r_err = pose_error(result.cam_from_world, record.cam_from_world)
            assert t_err < 0.12 and r_err < 2.0, (record.name, t_err, r_err)
    assert successes >= len(dataset.query) - 1


def test_far_off_prior_reports_failure(room, images):
    dataset, oracle, package, _ = room
    localizer = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(labels_top_k=1), segmenter=oracle)
    record = dataset.query[0]
    for prior in (turn(record.cam_from_world, 0.0, (60.0, 40.0, 0.0)), turn(record.cam_from_world, 120.0)):
        result = localizer.localize(images[record.name], record.camera, prior=prior)
        assert not result.success and result.cam_from_world is None and result.covariance is None
        assert result.info["failure_reason"], result.info
    outside = localizer.localize(images[record.name], record.camera, prior=turn(record.cam_from_world, 0.0, (0.0, 0.0, 50.0)))
    assert outside.info["failure_reason"] in ("too few map points in view of the initial pose", "refinement failed: diverged")


def test_a_failed_refinement_publishes_no_pose(room, images):
    dataset, oracle, package, _ = room
    strict = SegLocLocalizerConfig(labels_top_k=1, refinement=LabelRefinementConfig(max_final_residual=1e-3), num_initializations=2)
    localizer = SegLocLocalizer.from_map(package, strict, segmenter=oracle)
    result = localizer.localize(images[dataset.query[1].name], dataset.query[1].camera)
    assert not result.success and result.info["failure_reason"] == "refinement failed: high_residual"
    assert result.info["refinement"]["attempts"] == 2 and "refine" in result.timings


def test_lowest_cost_selection_refines_from_every_start_and_keeps_the_cheapest(room, images):
    dataset, oracle, package, _ = room
    record = dataset.query[1]
    first = SegLocLocalizer.from_map(
        package, SegLocLocalizerConfig(num_initializations=3, initialization_selection="first_success"), segmenter=oracle
    )
    best = SegLocLocalizer.from_map(
        package, SegLocLocalizerConfig(num_initializations=3, initialization_selection="lowest_cost"), segmenter=oracle
    )
    result_first = first.localize(images[record.name], record.camera)
    result_best = best.localize(images[record.name], record.camera)
    assert result_first.success and result_best.success
    assert result_first.info["refinement"]["attempts"] == 1 and result_best.info["refinement"]["attempts"] == 3
    assert result_best.info["refinement"]["cost"] <= result_first.info["refinement"]["cost"]
    costs = result_best.info["refinement"]["start_costs"]
    assert len(costs) == 3 and costs[0] == pytest.approx(result_first.info["refinement"]["cost"])
    successful = [(cost, index) for index, cost in enumerate(costs) if cost is not None]
    assert result_best.info["refinement"]["start"] == min(successful)[1]
    assert result_best.info["refinement"]["cost"] == min(successful)[0]
    with pytest.raises(SeglocError, match="initialization_selection"):
        SegLocLocalizerConfig(initialization_selection="best")


def test_label_variants(room, images):
    dataset, oracle, package, _ = room
    record = dataset.query[2]
    for top_k in (1, 3, None):
        localizer = SegLocLocalizer.from_map(package, SegLocLocalizerConfig(labels_top_k=top_k), segmenter=oracle)
        result = localizer.localize(images[record.name], record.camera, prior=turn(record.cam_from_world, 2.0, (0.05, 0.0, 0.0)))
        assert result.success, (top_k, result.info)
        assert pose_error(result.cam_from_world, record.cam_from_world)[0] < 0.1


# --- configuration, maps without a network, the registry ---------------------------------------


def test_config_is_strict_and_checked(room):
    _, oracle, package, _ = room
    config = config_from_dict(SegLocLocalizerConfig, {"num_retrieved": 3, "refinement": {"loss": "huber"}, "labels_top_k": 3})
    assert config.refinement.loss == "huber" and config.labels_top_k == 3
    with pytest.raises(SeglocError, match="unknown option"):
        config_from_dict(SegLocLocalizerConfig, {"retrieved": 3})
    with pytest.raises(SeglocError, match="unknown approximation"):
        SegLocLocalizerConfig(approximation="mean")
    with pytest.raises(SeglocError, match="holds no segmentation network"):
        SegLocLocalizer.from_map(package)  # built with an oracle: no network in the map
    with pytest.raises(SeglocError, match="K = 19"):
        SegLocLocalizer.from_map(package, segmenter=NetworkSegmenter(tiny_network(), inference_max_edge=64))


def test_maps_share_a_core_built_once(room, tmp_path):
    from segloc.maps.build import build_core
    from segloc.methods.reference.layer import build_reference_map

    dataset, oracle, package, _ = room
    built = build_core(dataset, progress=False)
    seconds = dict(built.statistics["seconds"])
    segloc_map = build_segloc_map(dataset, tmp_path / "segloc", SegLocMapConfig(store="full"), progress=False, segmenter=oracle, core=built)
    reference_map = build_reference_map(dataset, tmp_path / "reference", progress=False, core=built)
    assert built.statistics["seconds"] == seconds  # each map added its timings to its own copy
    own, shared, reference = (read_core(MapPackage.open(p)) for p in (package.path, segloc_map, reference_map))
    np.testing.assert_array_equal(shared.points3D, own.points3D)
    np.testing.assert_array_equal(reference.points3D, own.points3D)
    np.testing.assert_array_equal(read_segloc_layer(MapPackage.open(segloc_map)).point_labels, read_segloc_layer(package).point_labels)
    other = read_dataset(
        generate_scene(synth_config("room", num_mapping=4, num_query=0, width=160, height=120, seed=5), tmp_path / "other", progress=False)
    )
    with pytest.raises(SeglocError, match="not that of"):
        build_segloc_map(other, tmp_path / "wrong", SegLocMapConfig(), progress=False, segmenter=oracle, core=built)
    with pytest.raises(SeglocError, match="not that of"):
        build_reference_map(other, tmp_path / "wrong_reference", progress=False, core=built)


def test_registry_and_missing_checkpoint(room, tmp_path):
    dataset = room[0]
    method = get_method("segloc")
    with pytest.raises(SeglocError, match="neither a checkpoint folder nor a shipped network"):
        method.build_map(dataset, tmp_path / "map", method.map_config({"checkpoint": str(tmp_path / "missing")}), progress=False)
    with pytest.raises(SeglocError, match="unknown option"):
        method.map_config({"chekpoint": "x"})
    assert not (tmp_path / "map").exists()


def test_cli_map_build_without_checkpoint_uses_the_shipped_general_network(room, tmp_path, capsys):
    """What a user with a new place gets: no network of their own, the library's defaults, a map
    that localizes (the general network never saw this room: seed 3, 480x360)."""
    from segloc.cli import main
    from segloc.models.checkpoint import GENERAL_CHECKPOINT, shipped_checkpoint

    map_dir, out = tmp_path / "map", tmp_path / "eval"
    assert main(["map", "build", str(room[0].root), "--method", "segloc", "-o", str(map_dir), "--no-progress"]) == 0
    source = MapPackage.open(map_dir).read_json(MODEL_LAYER, "model")["source"]
    assert source["checkpoint"] == str(shipped_checkpoint(GENERAL_CHECKPOINT).resolve())
    assert main(["evaluate", str(map_dir), str(room[0].root), "-o", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recall"]["0.5m_5deg"] >= 4 / 6, metrics["recall"]


# --- the network path -----------------------------------------------------------------------------


def test_network_segmenter_shapes(tmp_path):
    net = tiny_network(num_classes=6)
    segmenter = NetworkSegmenter(net, inference_max_edge=128)
    image = (np.random.default_rng(0).random((150, 200, 3)) * 255).astype(np.uint8)
    segmentation = segmenter(image)
    assert segmentation.input_size == inference_size(200, 150, 128) == (128, 96)
    assert [tuple(p.shape) for p in segmentation.probabilities] == [(6, 3, 4), (6, 6, 8), (6, 12, 16), (6, 24, 32)]
    assert all(p.dtype == torch.float32 and torch.allclose(p.sum(0), torch.ones(1)) for p in segmentation.probabilities)
    assert segmentation.descriptor.shape == (30,) and segmentation.descriptor.dtype == np.float32
    assert abs(np.linalg.norm(segmentation.descriptor) - 1.0) < 1e-5
    assert inference_size(640, 480, None) == (640, 480) and inference_size(100, 50, 0) == (96, 64)
    sharper = NetworkSegmenter(net, inference_max_edge=128, temperature=0.5)(image)
    assert sharper.probabilities[-1].max() >= segmentation.probabilities[-1].max()
    loaded = NetworkSegmenter.from_checkpoint(save_checkpoint(net, tmp_path / "ckpt"), inference_max_edge=128)
    assert torch.allclose(loaded(image).probabilities[-1], segmentation.probabilities[-1], atol=1e-6)
    with pytest.raises(SeglocError, match="uint8 RGB"):
        segmenter(image.astype(np.float32))
    with pytest.raises(SeglocError, match="temperature"):
        NetworkSegmenter(net, temperature=0.0)


def test_localizer_with_the_embedded_network(room, images, tmp_path):
    """A map with a (tiny, untrained) network in it: the localizer loads the network from the map and runs."""
    dataset, _, package, _ = room
    core = read_core(package)
    rng = np.random.default_rng(0)
    net = tiny_network(num_classes=6)
    probabilities = rng.dirichlet(np.ones(6), size=core.num_points)  # labels do not matter here
    descriptors = rng.random((len(core.images), 30))
    meta = {"descriptor_grid": list(DESCRIPTOR_GRID), "inference_max_edge": 96, "temperature": 1.0, "num_levels": 4}
    with MapWriter(tmp_path / "map", method="segloc") as writer:
        write_core(writer, core)
        write_segloc_layer(writer, probabilities, descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True), "topk", 2, meta)
        write_segloc_model(writer, net, "float16")
        writer.commit()
    method = get_method("segloc")
    localizer = method.load_localizer(MapPackage.open(tmp_path / "map"), method.localize_config({"num_retrieved": 3, "labels_top_k": 2}))
    assert isinstance(localizer, SegLocLocalizer) and localizer.segmenter.inference_max_edge == 96
    record = dataset.query[0]
    result = localizer.localize(images[record.name], record.camera)
    assert len(result.info["retrieved"]) == 3 and set(result.timings) >= {"segment", "retrieve", "approximate", "refine"}
    assert result.success or result.info["failure_reason"]
    with pytest.raises(SeglocError, match="does not match the camera"):
        localizer.localize(images[record.name][:100], record.camera)
