"""The residual gate derived from the map's network (segloc.methods.segloc.residual_gate).

A synthetic room with oracle segmenters (ground-truth labels as probabilities): a sharp one, and
a flat one (most of the mass spread uniformly, as a network with many classes in use leaves it)
whose residuals at the true pose are above the fixed gate.
"""

import numpy as np
import pytest

from segloc.data.dataset import read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.geometry import Rigid3, pose_error
from segloc.maps.package import MapPackage
from segloc.methods import get_method
from segloc.methods.segloc.layer import SegLocMapConfig, build_segloc_map, read_segloc_layer, relabel_segloc_map
from segloc.methods.segloc.localizer import SegLocLocalizer, SegLocLocalizerConfig
from segloc.methods.segloc.refine import LabelRefinementConfig, refine_pose_with_labels, residuals_at_pose
from segloc.methods.segloc.residual_gate import CALIBRATION_KEY, FIXED_GATE, GATE_FRACTION, residual_gate
from segloc.models.segmenter import LabelSegmenter

FLAT_FLOOR = 20.0  # floor / K added to every class before normalising: the true label keeps about 0.1


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    root = tmp_path_factory.mktemp("residual_gate")
    config = synth_config("room", num_mapping=24, num_query=5, width=320, height=240, seed=5)
    return read_dataset(generate_scene(config, root / "dataset", progress=False)), root


@pytest.fixture(scope="module")
def maps(room):
    """Maps of the room (top-1 labels) segmented by a sharp and by a flat oracle, with the oracles."""
    dataset, root = room
    built = {}
    for name, floor in (("sharp", 0.05), ("flat", FLAT_FLOOR)):
        oracle = LabelSegmenter.from_dataset(dataset, strides=(8, 4, 2, 1), sigma=1.0, floor=floor)
        path = build_segloc_map(dataset, root / name, SegLocMapConfig(), progress=False, segmenter=oracle)
        built[name] = (MapPackage.open(path), oracle)
    return built


def test_residual_gate_sits_between_the_true_pose_and_chance():
    assert residual_gate({"true_pose": 0.5, "chance": 5.5}) == pytest.approx(0.5 + GATE_FRACTION * 5.0)
    assert residual_gate({"true_pose": 1.0, "chance": 1.0}) == FIXED_GATE  # labels that say nothing: the fixed gate
    assert residual_gate({"true_pose": 1.0, "chance": 0.5}) == FIXED_GATE


def test_residuals_at_pose_are_those_the_refinement_judges(room, maps):
    dataset, _ = room
    package, oracle = maps["sharp"]
    localizer = SegLocLocalizer.from_map(package, segmenter=oracle)
    query = dataset.query[0]
    segmentation = oracle(dataset.load_image(query.name))
    point_ids = localizer.select_points(None, query.camera, query.cam_from_world)
    labels, _ = localizer.layer.labels(1, point_ids)
    points3D = localizer.core.points3D[point_ids]
    config = localizer.config.refinement
    at_truth = residuals_at_pose(segmentation.probabilities, query.camera, points3D, labels, query.cam_from_world, config)
    moved = Rigid3.from_rotation(query.cam_from_world.rotation, query.cam_from_world.translation + np.array([0.25, 0.1, 0.0]))
    off = residuals_at_pose(segmentation.probabilities, query.camera, points3D, labels, moved, config)
    assert len(at_truth) >= config.min_points and at_truth.mean() < 0.5 * off.mean()  # large single-class walls keep the median low
    # The refinement's own median residual is that of residuals_at_pose at its final pose.
    result = refine_pose_with_labels(segmentation.probabilities, query.camera, points3D, labels, moved, config)
    assert result.success
    final = residuals_at_pose(segmentation.probabilities, query.camera, points3D, labels, result.cam_from_world, config)
    assert np.median(final) == pytest.approx(result.median_residual, rel=1e-9)


def test_the_map_records_its_calibration_and_the_localizer_derives_the_gate(maps):
    for package, oracle in maps.values():
        calibration = read_segloc_layer(package).meta[CALIBRATION_KEY]
        assert calibration["images"] >= 8 and calibration["labels_per_point"] == 1
        assert 0 < calibration["true_pose"] < calibration["chance"]
        localizer = SegLocLocalizer.from_map(package, segmenter=oracle)
        assert localizer.config.refinement.max_final_residual == residual_gate(calibration)
        assert localizer.derived_options["refinement.max_final_residual"] == residual_gate(calibration)
        # what `segloc map info` prints is what the localizer uses
        assert get_method("segloc").derived_options(package, SegLocLocalizerConfig()) == localizer.derived_options
    flat, sharp = (read_segloc_layer(maps[name][0]).meta[CALIBRATION_KEY] for name in ("flat", "sharp"))
    assert flat["true_pose"] > FIXED_GATE > sharp["true_pose"]  # the flat network fits its own labels worse than 2.0 allows
    assert residual_gate(flat) > flat["true_pose_p90"]


def test_a_set_gate_wins_and_a_map_without_a_fitting_calibration_gets_the_fixed_one(room, maps, tmp_path):
    dataset, _ = room
    package, oracle = maps["sharp"]
    explicit = SegLocLocalizerConfig(refinement=LabelRefinementConfig(max_final_residual=1.25))
    localizer = SegLocLocalizer.from_map(package, explicit, segmenter=oracle)
    assert localizer.config.refinement.max_final_residual == 1.25
    assert "refinement.max_final_residual" not in localizer.derived_options

    uncalibrated = build_segloc_map(
        dataset, tmp_path / "none", SegLocMapConfig(residual_calibration_images=0), progress=False, segmenter=oracle
    )
    assert CALIBRATION_KEY not in read_segloc_layer(MapPackage.open(uncalibrated)).meta
    assert SegLocLocalizer.from_map(uncalibrated, segmenter=oracle).config.refinement.max_final_residual == FIXED_GATE

    # measured with one label per point: a localizer (or a relabelled map) using three gets the fixed gate
    full = build_segloc_map(
        dataset, tmp_path / "full", SegLocMapConfig(store="full", residual_calibration_images=4), progress=False, segmenter=oracle
    )
    assert read_segloc_layer(MapPackage.open(full)).meta[CALIBRATION_KEY]["labels_per_point"] > 3
    three = SegLocLocalizer.from_map(full, SegLocLocalizerConfig(labels_top_k=3), segmenter=oracle)
    assert three.config.refinement.max_final_residual == FIXED_GATE
    relabelled = relabel_segloc_map(full, tmp_path / "top3", store="topk", top_k=3)
    assert SegLocLocalizer.from_map(relabelled, segmenter=oracle).config.refinement.max_final_residual == FIXED_GATE


def test_the_derived_gate_accepts_the_flat_networks_poses_where_the_fixed_one_refuses_them(room, maps):
    dataset, _ = room
    package, oracle = maps["flat"]
    fixed = SegLocLocalizer.from_map(
        package, SegLocLocalizerConfig(refinement=LabelRefinementConfig(max_final_residual=FIXED_GATE)), segmenter=oracle
    )
    derived = SegLocLocalizer.from_map(package, segmenter=oracle)
    accepted = {"fixed": 0, "derived": 0}
    close = 0
    for query in dataset.query:
        image = dataset.load_image(query.name)
        for name, localizer in (("fixed", fixed), ("derived", derived)):
            result = localizer.localize(image, query.camera)
            accepted[name] += result.success
            if result.success and name == "derived":
                translation, rotation = pose_error(result.cam_from_world, query.cam_from_world)
                close += translation < 0.5 and rotation < 5.0
    # the fixed gate refuses every pose of this network, the derived one accepts them, and they are close
    # (a flat segmentation is an imprecise one: errors of a few degrees)
    assert accepted == {"fixed": 0, "derived": len(dataset.query)}
    assert close >= len(dataset.query) - 1
