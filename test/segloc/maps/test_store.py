"""The map store: publish, versions, pull (checked, atomic), rollback, concurrent publishers, on local and memory filesystems."""

import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from segloc.cli import main
from segloc.errors import SeglocError
from segloc.maps.package import MapPackage, MapWriter
from segloc.maps.store import MapStore, VersionTaken, content_hash


def make_map(path: Path, seed: int, method: str = "reference") -> Path:
    """A small valid map package whose arrays depend on ``seed``."""
    rng = np.random.default_rng(seed)
    with MapWriter(path, method, overwrite=True) as writer:
        writer.add_arrays("layer", "points", points=rng.normal(size=(50, 3)), ids=np.arange(50, dtype=np.int32))
        writer.add_json("layer", "info", {"seed": seed})
        writer.commit()
    return path


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto) on a local port, and the storage options that reach it (skipped without moto and s3fs)."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'segloc_ros[fleet-s3]')")
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'segloc_ros[fleet-s3]')")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    import s3fs

    s3fs.S3FileSystem(**options).mkdir("fleet")
    yield options
    server.stop()


def store_spec(kind: str, tmp_path: Path, request) -> tuple[str, dict]:
    """``(url, storage_options)`` of a new empty store on a local disk, fsspec's memory filesystem or the S3 server."""
    if kind == "local":
        return str(tmp_path / "store"), {}
    if kind == "memory":
        url = f"memory://segloc-test-{uuid.uuid4().hex}"
        import fsspec

        request.addfinalizer(lambda: fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True))
        return url, {}
    return f"s3://fleet/{uuid.uuid4().hex}/site", request.getfixturevalue("s3_server")


@pytest.fixture(params=["local", "memory", "s3"])
def store_url(request, tmp_path):
    return store_spec(request.param, tmp_path, request)


def map_bytes(path: Path) -> dict[str, bytes]:
    return {str(file.relative_to(path)): file.read_bytes() for file in sorted(path.rglob("*")) if file.is_file()}


def test_publish_pull_rollback(store_url, tmp_path):
    store = MapStore(*store_url)
    assert store.version_numbers() == [] and store.latest() is None
    v1 = store.publish(make_map(tmp_path / "m1", 1))
    v2 = store.publish(make_map(tmp_path / "m2", 2), validation={"accepted": True})
    assert (v1.version, v1.parent, v2.version, v2.parent) == (1, None, 2, 1)
    assert store.latest() == 2 and store.version_numbers() == [1, 2]
    assert v2.content_hash == content_hash(MapPackage.open(tmp_path / "m2").manifest["files"]) != v1.content_hash
    assert store.record(2).validation == {"accepted": True}
    assert {"time", "user", "host", "segloc_version", "source"} <= set(v1.created)

    pulled = store.pull(tmp_path / "out")  # the latest
    assert map_bytes(pulled) == map_bytes(tmp_path / "m2")
    with pytest.raises(SeglocError, match="exists already"):
        store.pull(tmp_path / "out", version=1)
    store.pull(tmp_path / "out", version=1, overwrite=True)
    assert map_bytes(tmp_path / "out") == map_bytes(tmp_path / "m1")

    store.rollback(1)
    assert store.latest() == 1 and store.version_numbers() == [1, 2]
    v3 = store.publish(make_map(tmp_path / "m3", 3))
    assert (v3.version, v3.parent) == (3, 1)
    with pytest.raises(SeglocError, match=r"no version 7 \(published: 1, 2, 3\)"):
        store.rollback(7)


def test_identical_content_is_stored_once(tmp_path):
    store = MapStore(tmp_path / "store")
    make_map(tmp_path / "m", 1)
    first = store.publish(tmp_path / "m")
    second = store.publish(tmp_path / "m")
    assert first.content_hash == second.content_hash
    objects = [file for file in (tmp_path / "store" / "objects").rglob("*") if file.is_file()]
    assert len(objects) == len(first.files)  # the second version added no object


def test_corrupt_object_never_reaches_the_output(store_url, tmp_path):
    store = MapStore(*store_url)
    store.publish(make_map(tmp_path / "m1", 1))
    store.pull(tmp_path / "robot")
    v2 = store.publish(make_map(tmp_path / "m2", 2))
    sha = v2.files["layer/points.npz"]["sha256"]
    path = store._object_path(sha)
    data = bytearray(store.fs.cat_file(path))
    data[-10] ^= 0xFF  # same size, other content: a corrupt upload
    store.fs.pipe_file(path, bytes(data))
    with pytest.raises(SeglocError, match="layer/points.npz does not match its checksum"):
        store.pull(tmp_path / "robot", overwrite=True)
    assert map_bytes(tmp_path / "robot") == map_bytes(tmp_path / "m1")  # still version 1, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".robot")] == []  # no staging folder left


def test_store_refuses_another_method_and_bad_records(tmp_path):
    store = MapStore(tmp_path / "store")
    store.publish(make_map(tmp_path / "m1", 1))
    with pytest.raises(SeglocError, match="is a segloc map in frame 'map', but store .* holds reference maps"):
        store.publish(make_map(tmp_path / "other", 1, method="segloc"))
    (tmp_path / "store" / "versions" / "000001.json").write_text("{broken")
    with pytest.raises(SeglocError, match="the record of version 1 is corrupt"):
        store.versions()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "store.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(SeglocError, match="is not a segloc map store"):
        MapStore(tmp_path / "plain").versions()


def test_unreachable_store_is_a_clear_error(tmp_path):
    with pytest.raises(SeglocError, match="no published version"):
        MapStore(tmp_path / "missing").pull(tmp_path / "out")
    with pytest.raises(SeglocError, match="map store"):
        MapStore("nosuchprotocol://x").versions()


@pytest.mark.parametrize("kind", ["local", "memory", "s3"])
def test_concurrent_publishers_one_wins_per_version(kind, tmp_path, request):
    url, options = store_spec(kind, tmp_path, request)
    store = MapStore(url, options)
    store.publish(make_map(tmp_path / "base", 0))
    maps = [make_map(tmp_path / f"m{i}", i + 1) for i in range(6)]

    def publish(path):
        try:
            return MapStore(url, options).publish(path).version
        except VersionTaken:
            return None

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(publish, maps))
    won = [v for v in results if v is not None]
    assert len(won) == len(set(won)) >= 1  # never two winners of one number
    assert store.version_numbers() == [1, *sorted(won)]
    for version in store.version_numbers():  # every published version is whole
        out = store.pull(tmp_path / f"check{version}", version=version)
        source = maps[results.index(version)] if version != 1 else tmp_path / "base"
        assert map_bytes(out) == map_bytes(source)


def test_concurrent_publisher_processes(tmp_path):
    store_path = tmp_path / "store"
    MapStore(store_path).publish(make_map(tmp_path / "base", 0))
    maps = [make_map(tmp_path / f"m{i}", i + 1) for i in range(4)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "segloc.cli", "-q", "map", "publish", str(path), str(store_path)], stderr=subprocess.PIPE, text=True
        )
        for path in maps
    ]
    errors = [process.communicate()[1] for process in processes]
    codes = [process.returncode for process in processes]
    assert set(codes) <= {0, 1} and 0 in codes
    for code, err in zip(codes, errors):
        if code:
            assert "was published by another publisher first" in err
    store = MapStore(store_path)
    assert store.version_numbers() == list(range(1, 2 + codes.count(0)))
    for version in store.version_numbers():
        MapPackage.open(store.pull(tmp_path / f"check{version}", version=version)).check_contents()


def test_cli(tmp_path, capsys):
    store = str(tmp_path / "store")
    make_map(tmp_path / "m1", 1)
    make_map(tmp_path / "m2", 2)
    assert main(["map", "publish", str(tmp_path / "m1"), store]) == 0
    assert main(["map", "publish", str(tmp_path / "m2"), store]) == 0
    assert main(["map", "rollback", store, "1"]) == 0
    capsys.readouterr()
    assert main(["map", "versions", store]) == 0
    out = capsys.readouterr().out
    assert "latest: version 1" in out and out.count("\n") == 4
    assert main(["map", "pull", store, "-o", str(tmp_path / "latest")]) == 0
    assert map_bytes(tmp_path / "latest") == map_bytes(tmp_path / "m1")
    assert main(["map", "pull", store, "--version", "2", "-o", str(tmp_path / "v2")]) == 0
    assert map_bytes(tmp_path / "v2") == map_bytes(tmp_path / "m2")
    assert main(["map", "pull", store, "--version", "5", "-o", str(tmp_path / "v5")]) == 1
    assert "has no version 5 (published: 1, 2)" in capsys.readouterr().err
