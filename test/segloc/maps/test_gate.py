"""The validation gate: a map built from a recording with wrong poses is refused; a good one is published with its report."""

import dataclasses

import numpy as np
import pytest

from segloc.cli import main
from segloc.config import config_from_dict
from segloc.data import synthetic
from segloc.data.dataset import read_dataset, write_dataset
from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3
from segloc.maps.gate import GateConfig, gate_config, validate_candidate
from segloc.maps.store import MapStore
from segloc.methods.reference.layer import ReferenceMapConfig, build_reference_map

FAST_MAP_CONFIG = {"vlad": {"num_clusters": 16, "max_training_descriptors": 20000}}


def wrong_poses(record, rng):
    """The pose of a recording registered in the wrong frame: shifted by ~1 m, with 10 cm of noise per image."""
    shift = np.array([0.8, 0.0, 0.6]) + rng.normal(scale=0.1, size=3)
    world_from_cam = record.cam_from_world.inverse()
    moved = Rigid3(world_from_cam.quat_wxyz, world_from_cam.translation + shift).inverse()
    return dataclasses.replace(record, cam_from_world=moved)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    config = synthetic.synth_config("room", num_mapping=30, num_query=6, width=320, height=240, seed=3)
    dataset = read_dataset(synthetic.generate_scene(config, root / "dataset", progress=False))
    map_config = config_from_dict(ReferenceMapConfig, FAST_MAP_CONFIG)
    good = build_reference_map(dataset, root / "good", map_config, progress=False)
    rng = np.random.default_rng(0)
    bad_dataset = read_dataset(
        write_dataset(
            root / "bad_dataset", [wrong_poses(r, rng) for r in dataset.mapping], dataset.query, source_image_dir=dataset.image_dir
        )
    )
    bad = build_reference_map(bad_dataset, root / "bad", map_config, progress=False)
    return root, dataset, good, bad


@pytest.mark.slow
def test_gate_refuses_a_map_with_wrong_poses(scene, capsys):
    root, dataset, good, bad = scene
    store = MapStore(root / "store")
    first = validate_candidate(good, store, [dataset.root], progress=False)
    assert first["accepted"] and first["baseline_version"] is None
    assert first["datasets"][0]["candidate"]["recall"]["0.5m_5deg"] >= 0.8
    store.publish(good, validation=first)

    report = validate_candidate(bad, store, [dataset.root], progress=False)
    assert not report["accepted"] and report["baseline_version"] == 1
    entry = report["datasets"][0]
    assert entry["candidate"]["recall"]["0.5m_5deg"] < entry["baseline"]["recall"]["0.5m_5deg"] - 0.05
    assert "by more than the tolerance" in report["reason"]

    capsys.readouterr()
    code = main(["map", "publish", str(bad), str(root / "store"), "--gate-dataset", str(dataset.root), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "the validation gate refused" in captured.err and "refused:" in captured.out
    assert store.version_numbers() == [1] and store.latest() == 1  # nothing published

    code = main(["map", "publish", str(good), str(root / "store"), "--gate-dataset", str(dataset.root), "--no-progress"])
    assert code == 0 and store.latest() == 2
    validation = store.record(2).validation
    assert validation["accepted"] and validation["baseline_version"] == 1 and validation["datasets"][0]["baseline"] is not None


@pytest.mark.slow
def test_gate_minimum_recall_applies_to_the_first_version(scene):
    root, dataset, _, bad = scene
    report = validate_candidate(bad, MapStore(root / "empty_store"), [dataset.root], GateConfig(min_recall=0.5), progress=False)
    assert not report["accepted"] and "< the minimum 0.500" in report["reason"]


def test_gate_config_is_checked():
    with pytest.raises(SeglocError, match="gate.recall_threshold must be one of"):
        gate_config({"recall_threshold": "1m"})
    with pytest.raises(SeglocError, match="gate.max_recall_drop must be >= 0.0 and <= 1.0"):
        gate_config({"max_recall_drop": 2})
    with pytest.raises(SeglocError, match="unknown"):
        gate_config({"tolerance": 0.1})
