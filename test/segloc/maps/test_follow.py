"""MapFollower: pulls the wanted version, swaps it in, keeps the old one on any failure, prunes its cache."""

import shutil
import sys
from pathlib import Path

import numpy as np

from segloc.maps.follow import MapFollower, cached_version_path
from segloc.maps.package import MapWriter
from segloc.maps.store import MapStore

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: siblings are not importable
from test_store import make_map, map_bytes  # noqa: E402


class Localizers:
    """Stand-in for the localizer nodes: records what they run; refuses paths listed in ``refuse``."""

    def __init__(self):
        self.path = ""
        self.refuse: set[str] = set()
        self.calls: list[str] = []

    def swap(self, path: str) -> dict[str, str]:
        self.calls.append(path)
        if path in self.refuse:
            return {"localizer_node": "map does not load"}
        self.path = path
        return {}


def test_follows_latest_pin_and_rollback(tmp_path):
    store = MapStore(tmp_path / "store")
    follower = MapFollower(store, tmp_path / "cache", keep_versions=2)
    nodes = Localizers()
    status = follower.update(nodes.swap)
    assert status.level == "warn" and "no published version" in status.message and nodes.calls == []

    store.publish(make_map(tmp_path / "m1", 1))
    status = follower.update(nodes.swap)
    assert (status.level, status.in_service, status.changed) == ("ok", 1, True)
    assert nodes.path == str(cached_version_path(tmp_path / "cache", 1))
    assert map_bytes(Path(nodes.path)) == map_bytes(tmp_path / "m1")
    assert follower.update(nodes.swap).changed is False and len(nodes.calls) == 1  # nothing new: no swap

    store.publish(make_map(tmp_path / "m2", 2))
    store.publish(make_map(tmp_path / "m3", 3))
    assert follower.update(nodes.swap).in_service == 3
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["v000001", "v000003"]  # keep_versions 2

    store.rollback(1)
    status = follower.update(nodes.swap)
    assert status.in_service == 1 and nodes.path.endswith("v000001")
    follower.pin(2)  # a fleet server names version 2
    assert follower.update(nodes.swap).in_service == 2
    follower.pin(0)
    assert follower.update(nodes.swap).in_service == 1  # the latest again


def test_failures_keep_the_version_in_service(tmp_path):
    store = MapStore(tmp_path / "store")
    follower = MapFollower(store, tmp_path / "cache")
    nodes = Localizers()
    store.publish(make_map(tmp_path / "m1", 1))
    follower.update(nodes.swap)
    v1_path = nodes.path

    # A corrupt upload: the pull fails its checksum, nothing is swapped.
    v2 = store.publish(make_map(tmp_path / "m2", 2))
    object_path = Path(store._object_path(v2.files["layer/points.npz"]["sha256"]))
    good = object_path.read_bytes()
    object_path.write_bytes(good[:-10] + bytes(10))
    status = follower.update(nodes.swap)
    assert status.level == "error" and "does not match its checksum" in status.message and "version 1 stays in service" in status.message
    assert nodes.path == v1_path and status.in_service == 1 and status.wanted == 2
    assert not cached_version_path(tmp_path / "cache", 2).exists()

    # The object repaired; the localizers refuse the map: they go back to version 1.
    object_path.write_bytes(good)
    nodes.refuse.add(str(cached_version_path(tmp_path / "cache", 2)))
    status = follower.update(nodes.swap)
    assert status.level == "error" and "refused by the localizers (localizer_node: map does not load)" in status.message
    assert nodes.calls[-1] == v1_path and nodes.path == v1_path and follower.in_service == 1

    # The store unreachable (moved away): version 1 stays.
    shutil.move(tmp_path / "store", tmp_path / "store_moved")
    status = follower.update(nodes.swap)
    assert status.level == "error" and "version 1 stays in service" in status.message
    assert nodes.path == v1_path

    # Back, accepted; an already pulled version is reused, not downloaded again.
    shutil.move(tmp_path / "store_moved", tmp_path / "store")
    nodes.refuse.clear()
    assert follower.update(nodes.swap).in_service == 2


def test_prune_removes_only_its_own_pulls(tmp_path):
    store = MapStore(tmp_path / "store")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "notes.txt").write_text("the user's")
    with MapWriter(tmp_path / "cache" / "my_map", "reference") as writer:
        writer.add_arrays("layer", "x", x=np.zeros(3))
        writer.commit()
    follower = MapFollower(store, tmp_path / "cache", keep_versions=1)
    nodes = Localizers()
    for seed in (1, 2, 3):
        store.publish(make_map(tmp_path / f"m{seed}", seed))
        follower.update(nodes.swap)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["my_map", "notes.txt", "v000003"]
