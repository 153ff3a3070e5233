"""The parallel map build (segloc.maps.parallel): a local Dask cluster gives the map a serial build gives."""

import importlib.util
import json

import pytest

from segloc.cli import main
from segloc.data import synthetic
from segloc.errors import SeglocError
from segloc.maps.parallel import BuildExecution, parallel_map


def square(value: int) -> int:
    return value * value


def test_serial_map_keeps_order_and_refuses_bad_options():
    assert parallel_map(square, [3, 1, 2], BuildExecution(), progress=False) == [9, 1, 4]
    with pytest.raises(SeglocError, match="workers"):
        BuildExecution(workers=-1)


@pytest.mark.skipif(importlib.util.find_spec("dask") is None, reason="the parallel build needs dask (the distributed extra)")
def test_two_local_workers_build_the_same_map_as_serial(tmp_path):
    # the workers import what they run: a library function, not this test module
    assert parallel_map(abs, [-3, 1, -2, 5], BuildExecution(workers=2), progress=False) == [3, 1, 2, 5]
    config = synthetic.synth_config("room", "lighting", num_mapping=12, num_query=2, width=160, height=120, seed=1)
    dataset = synthetic.generate_scene(config, tmp_path / "dataset", progress=False)
    files = {}
    for name, extra in (("serial", []), ("dask", ["--workers", "2"])):
        argv = ["-q", "map", "build", str(dataset), "--method", "reference", "-o", str(tmp_path / name), "--no-progress", *extra]
        assert main(argv) == 0
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        files[name] = {rel: info["sha256"] for rel, info in manifest["files"].items()}
    assert files["dask"] == files["serial"] and "core/points3D.npz" in files["serial"]


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="a Dask cluster needs dask.distributed (the distributed extra)")
def test_tasks_run_on_a_dask_cluster_by_its_address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert parallel_map(abs, [-4, 2, -1], BuildExecution(scheduler=cluster.scheduler_address), progress=False) == [4, 2, 1]
