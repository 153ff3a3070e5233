"""Registering a recording's odometry to a map (segloc.maps.register, `segloc map update --poses odometry`)."""

import json

import numpy as np
import pytest

from segloc.cli import main
from segloc.data import synthetic
from segloc.data.dataset import read_dataset
from segloc.errors import SeglocError
from segloc.geometry.transforms import pose_error
from segloc.maps.core import read_core
from segloc.maps.package import MapPackage
from segloc.maps.register import RegisterConfig, register_recording
from segloc.maps.update import UpdateConfig
from segloc.methods import get_method

FAST = {"core": {"pairs": {"num_neighbors": 5}}}


@pytest.fixture(scope="module")
def odometry_place(tmp_path_factory):
    """v1 of a room, and a later recording of it (changed) whose mapping poses are drifting odometry."""
    root = tmp_path_factory.mktemp("odometry_place")
    common = {"num_mapping": 24, "num_query": 4, "width": 320, "height": 240, "seed": 3}
    rec1 = read_dataset(synthetic.generate_scene(synthetic.synth_config("room", **common), root / "rec1", progress=False))
    config = synthetic.synth_config("room", recording=1, change=0.5, odometry_drift=0.5, **common)
    rec2 = read_dataset(synthetic.generate_scene(config, root / "rec2", progress=False))
    method = get_method("reference")
    v1 = method.build_map(rec1, root / "v1", method.map_config(FAST), progress=False)
    truth = {r.name: r.cam_from_world for r in synthetic.read_mapping_groundtruth(rec2.root)}
    return rec2, v1, truth


def _errors(records, truth) -> np.ndarray:
    """(N, 2) centre (m) and rotation (deg) errors of registered records against the true poses."""
    return np.array([pose_error(r.cam_from_world, truth[r.name]) for r in records])


@pytest.mark.parametrize("window", [0, 12])
def test_registration_recovers_the_true_poses(odometry_place, window):
    rec2, v1, truth = odometry_place
    before = _errors(rec2.mapping, truth)
    assert np.median(before[:, 0]) > 1.0  # odometry: another frame and scale
    registration = register_recording(MapPackage.open(v1), rec2, RegisterConfig(window=window), progress=False)
    errors = _errors(registration.records, truth)
    statistics = registration.statistics
    assert [r.name for r in registration.records] == [r.name for r in rec2.mapping]
    assert statistics["num_localized"] >= 18 and statistics["num_inliers"] >= 12
    assert 0.5 <= statistics["global"]["scale"] <= 2.0
    # Every image gets a pose, those that did not localize or were outliers too; windows absorb the drift.
    limit = 0.05 if window else 0.2
    assert np.median(errors[:, 0]) < 0.03 and errors[:, 0].max() < limit, errors[:, 0]
    assert np.median(errors[:, 1]) < 1.5 and errors[:, 1].max() < (2.5 if window else 5.0), errors[:, 1]
    assert statistics["num_images_from_windows"] == (len(rec2.mapping) if window else 0)
    assert statistics["center_residual_m"]["max"] <= 0.1


def test_registration_refuses_when_too_few_localize_or_agree(odometry_place):
    rec2, v1, _ = odometry_place
    package = MapPackage.open(v1)
    with pytest.raises(SeglocError, match=r"of 24 images .* localized .* fewer than register.min_localized \(25\)"):
        register_recording(package, rec2, RegisterConfig(min_localized=25), progress=False)
    with pytest.raises(SeglocError, match=r"only \d+ agree with the registered trajectory .* register.min_inliers \(24\)"):
        register_recording(package, rec2, RegisterConfig(min_inliers=24, max_center_error_m=0.005), progress=False)
    with pytest.raises(SeglocError, match="window"):
        RegisterConfig(window=4, min_window_inliers=8)
    with pytest.raises(SeglocError, match="update.poses"):
        UpdateConfig(poses="gps")
    assert UpdateConfig(register={"window": 0}).register == RegisterConfig(window=0)


def test_map_update_with_odometry_poses(odometry_place, tmp_path, capsys):
    rec2, v1, truth = odometry_place
    config = tmp_path / "fleet.yaml"
    config.write_text("update:\n  register:\n    window: 12\n")
    argv = ["map", "update", str(v1), str(rec2.root), "-o", str(tmp_path / "v2"), "--poses", "odometry", "--prefix", "rec2/"]
    assert main([*argv, "--config", str(config), "--no-progress"]) == 0
    assert "registered the odometry" in capsys.readouterr().out
    package = MapPackage.open(tmp_path / "v2")
    report = package.manifest["metadata"]["update"]
    assert report["registration"]["num_inliers"] >= 12 and report["registration"]["window"] == 12
    assert package.manifest["created"]["updates"][-1]["options"]["poses"] == "odometry"
    core = read_core(package)
    new = [image for image in core.images if image.name.startswith("rec2/")]
    errors = np.array([pose_error(image.cam_from_world, truth[image.name[len("rec2/") :]]) for image in new])
    assert len(new) == 24 and np.median(errors[:, 0]) < 0.03 and errors[:, 0].max() < 0.05
    assert report["points_added"] > 0
    json.dumps(report)  # the report is plain JSON
