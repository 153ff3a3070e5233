"""SegLoc tracking on a smooth synthetic sequence with odometry (oracle segmenter): tracked frames, and the fallback."""

import dataclasses

import numpy as np
import pytest

from segloc.config import config_from_dict
from segloc.data.dataset import read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.errors import SeglocError
from segloc.evaluate.run import evaluate_localizer, read_query_odometry
from segloc.geometry import Rigid3
from segloc.localize.pipeline import LocalizationPipeline
from segloc.localize.tracking import TrackingConfig
from segloc.maps.package import MapPackage
from segloc.methods import get_method
from segloc.methods.segloc.layer import SegLocMapConfig, build_segloc_map
from segloc.methods.segloc.localizer import SegLocLocalizer, SegLocLocalizerConfig, SegLocTrackingConfig
from segloc.models.segmenter import LabelSegmenter


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """A room, a smooth query sequence (10 frames over a tenth of the loop, 10 Hz) with odometry, an oracle SegLoc map."""
    root = tmp_path_factory.mktemp("segloc_tracking")
    config = synth_config("room", num_mapping=30, num_query=10, query_laps=0.1, width=320, height=240, seed=5)
    dataset = read_dataset(generate_scene(config, root / "dataset", progress=False))
    oracle = LabelSegmenter.from_dataset(dataset, strides=(16, 8, 4, 2), sigma=1.0)
    path = build_segloc_map(dataset, root / "map", SegLocMapConfig(store="full"), progress=False, segmenter=oracle)
    return dataset, oracle, path, root


def pipeline(sequence, enabled=True):
    dataset, oracle, path, _ = sequence
    localizer = SegLocLocalizer.from_map(path, SegLocLocalizerConfig(), segmenter=oracle)
    method = get_method("segloc")
    return LocalizationPipeline(
        localizer, prior_use=method.prior_use, tracks=method.tracks, tracking_config=TrackingConfig(enabled=enabled)
    )


def test_tracking_config_ranges():
    method = get_method("segloc")
    for values in ({"num_iterations": 0}, {"max_translation_change": 0.0}, {"max_rotation_change_deg": -1.0}, {"max_points": 3}):
        with pytest.raises(SeglocError):
            method.localize_config({"tracking": values})
    with pytest.raises(SeglocError):
        method.localize_config({"tracking": {"max_jump": 1.0}})
    config = method.localize_config({"tracking": {"levels": [-1], "num_iterations": 5}})
    assert config.tracking == SegLocTrackingConfig(levels=(-1,), num_iterations=5)
    assert config_from_dict(TrackingConfig, {"max_failures": 1}, "tracking").max_failures == 1


def test_a_smooth_sequence_tracks_with_the_accuracy_of_relocalization(sequence, tmp_path):
    dataset, _, path, root = sequence
    odometry = read_query_odometry(root / "dataset")
    assert odometry is not None and set(odometry.odom_from_base) == {r.name for r in dataset.query}
    tracked = evaluate_localizer(pipeline(sequence), dataset, tmp_path / "tracked", progress=False, plots=False, odometry=odometry)
    relocalized = evaluate_localizer(pipeline(sequence, enabled=False), dataset, tmp_path / "relocalized", progress=False, plots=False)
    frames = tracked["tracking"]
    assert frames["frames_tracked"] >= 6, frames  # the first frame relocalizes, most of the others track
    assert "tracking" not in relocalized
    # the same accuracy class: as many queries localized, give or take one, and median errors within (0.25 m, 2 deg)
    localized = [m["num_localized"] for m in (tracked, relocalized)]
    assert tracked["num_localized"] >= relocalized["num_localized"] - 1, localized
    assert tracked["median_translation_m"] < 0.25 and tracked["median_rotation_deg"] < 2.0


def test_a_wrong_prediction_falls_back_to_relocalization_and_still_localizes(sequence):
    dataset, _, _, root = sequence
    odometry = read_query_odometry(root / "dataset")
    track = pipeline(sequence)
    queries = list(dataset.query)
    modes = []
    for i, record in enumerate(queries[:3]):
        odom_from_base = odometry.odom_from_base[record.name]
        if i == 2:  # corrupted odometry: the prediction is 100 m above the room, seeing none of it
            odom_from_base = Rigid3(odom_from_base.quat_wxyz, odom_from_base.translation + np.array([0.0, 0.0, 100.0]))
        decision = track.process(
            dataset.load_image(record.name),
            record.camera,
            i,
            odometry.base_from_cam[record.name],
            odometry=(odom_from_base, None),
        )
        modes.append(decision.tracking)
        if i == 2:
            result = decision.result
            assert result.info["tracking"]["mode"] == "relocalized" and result.info["tracking"]["failure"]
            assert result.success and result.info["initialization"] == "retrieval"
            error = np.linalg.norm(result.cam_from_world.center - record.cam_from_world.center)
            assert error < 0.25
            assert "track" in result.timings and "retrieve" in result.timings
    assert modes == ["localized", "tracked", "relocalized"], modes


def test_track_without_refinement_relocalizes(sequence):
    dataset, oracle, path, _ = sequence
    localizer = SegLocLocalizer.from_map(path, dataclasses.replace(SegLocLocalizerConfig(), refine=False), segmenter=oracle)
    record = dataset.query[0]
    result = localizer.track(dataset.load_image(record.name), record.camera, record.cam_from_world)
    assert result.info["initialization"] == "retrieval" and "tracking" not in result.info
    assert isinstance(MapPackage.open(path).method, str)
