"""The reference localizer on a synthetic room and, when the shared data is there, on Strecha's castle."""

import time
from pathlib import Path

import numpy as np
import pytest

from segloc.config import config_from_dict
from segloc.data import synthetic
from segloc.data.dataset import read_dataset
from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3, pose_error
from segloc.maps.core import read_core, write_core
from segloc.maps.package import MapPackage, MapWriter
from segloc.methods.reference.layer import ReferenceMapConfig, build_reference_map
from segloc.methods.reference.localizer import ReferenceLocalizer, ReferenceLocalizerConfig

CASTLE = Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "strecha_castle"
FAST_MAP_CONFIG = {"vlad": {"num_clusters": 16, "max_training_descriptors": 20000}}


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    root = tmp_path_factory.mktemp("room")
    config = synthetic.synth_config("room", num_mapping=30, num_query=4, width=480, height=360, seed=3)
    dataset = read_dataset(synthetic.generate_scene(config, root / "dataset", progress=False))
    config = config_from_dict(ReferenceMapConfig, FAST_MAP_CONFIG)
    package = MapPackage.open(build_reference_map(dataset, root / "map", config, progress=False))
    return dataset, package


def test_localizes_the_queries(room):
    dataset, package = room
    localizer = ReferenceLocalizer.from_map(package.path)
    assert localizer.method == "reference"
    for record in dataset.query:
        result = localizer.localize(dataset.load_image(record.name), record.camera)
        assert result.success, result.info
        t_err, r_err = pose_error(result.cam_from_world, record.cam_from_world)
        assert t_err < 0.05 and r_err < 1.0, (record.name, t_err, r_err)
        assert list(result.timings) == ["extract", "retrieve", "match", "pose"]
        assert result.info["failure_reason"] is None and len(result.info["retrieved"]) == 10
        assert result.num_inliers >= 12 and result.info["num_matches"] >= result.num_inliers
        assert result.covariance.shape == (6, 6) and np.all(np.linalg.eigvalsh(result.covariance) > 0)


def test_prior_restricts_the_candidates(room):
    dataset, package = room
    config = ReferenceLocalizerConfig(prior_radius=1.0)
    localizer = ReferenceLocalizer.from_map(package, config)
    record = dataset.query[0]
    image = dataset.load_image(record.name)
    result = localizer.localize(image, record.camera, prior=record.cam_from_world)
    assert result.success
    centers = {r.name: r.cam_from_world.center for r in dataset.mapping}
    assert all(np.linalg.norm(centers[name] - record.cam_from_world.center) <= 1.0 for name in result.info["retrieved"])
    far_away = Rigid3(record.cam_from_world.quat_wxyz, record.cam_from_world.translation + 100.0)
    fallback = localizer.localize(image, record.camera, prior=far_away)  # nothing near: retrieval
    assert fallback.success and len(fallback.info["retrieved"]) == 10


def test_failure_is_a_result_not_an_exception(room):
    dataset, package = room
    localizer = ReferenceLocalizer.from_map(package)
    camera = dataset.query[0].camera
    result = localizer.localize(np.full((camera.height, camera.width, 3), 127, np.uint8), camera)
    assert not result.success and result.cam_from_world is None
    assert "too few 2D-3D matches" in result.info["failure_reason"]
    assert set(result.timings) == {"extract", "retrieve", "match", "pose"}


def test_bad_inputs(room, tmp_path):
    dataset, package = room
    localizer = ReferenceLocalizer.from_map(package)
    camera = dataset.query[0].camera
    with pytest.raises(SeglocError, match="does not match the camera size"):
        localizer.localize(np.zeros((10, 10, 3), np.uint8), camera)
    core = read_core(package)
    with MapWriter(tmp_path / "core_only", method="segloc") as writer:
        write_core(writer, core)
        writer.commit()
    with pytest.raises(SeglocError, match="no 'reference' layer"):
        ReferenceLocalizer.from_map(tmp_path / "core_only")
    with MapWriter(tmp_path / "stale", method="reference", base=package) as writer:
        core.point_errors = core.point_errors + 1  # a rebuilt core: the reference layer no longer matches
        write_core(writer, core)
        writer.commit()
    with pytest.raises(SeglocError, match="another core layer"):
        ReferenceLocalizer.from_map(tmp_path / "stale")
    with pytest.raises(SeglocError, match="unknown option"):
        config_from_dict(ReferenceLocalizerConfig, {"candidates": 3})
    config = config_from_dict(ReferenceLocalizerConfig, {"pnp": {"max_error_px": 6}, "sift": {"max_keypoints": 500}})
    assert config.pnp.max_error_px == 6.0 and config.sift.max_keypoints == 500 and config.sift.max_edge == 1024


@pytest.mark.slow
@pytest.mark.skipif(not CASTLE.is_dir(), reason=f"shared dataset {CASTLE} not found (it sits beside the repository checkout)")
def test_strecha_castle(tmp_path):
    dataset = read_dataset(CASTLE, require_query=True)
    path = build_reference_map(dataset, tmp_path / "castle_map", progress=False)
    localizer = ReferenceLocalizer.from_map(path)
    errors, seconds = [], []
    for record in dataset.query:
        image = dataset.load_image(record.name)
        start = time.perf_counter()
        result = localizer.localize(image, record.camera)
        seconds.append(time.perf_counter() - start)
        assert result.success, (record.name, result.info)
        errors.append(pose_error(result.cam_from_world, record.cam_from_world))
    errors = np.array(errors)
    assert np.all((errors[:, 0] < 0.25) & (errors[:, 1] < 2.0)), errors
    assert np.median(errors[:, 0]) < 0.05 and np.median(errors[:, 1]) < 0.1, errors
