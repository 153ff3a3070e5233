"""map_manager for real: a running retrieval_node follows the fleet map store (v1 -> v2, rollback, a pinned version)
without a restart or a lost frame; a corrupt upload and an unreachable store leave the old version in service with an ERROR.

retrieval_node stands for any localizer node: every node of the table swaps its map the same way
(SeglocNode._swap_map, tested per node in test_nodes.py); it is the one that needs no network.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pytest runs with --import-mode=importlib: siblings are not importable
import node_harness as harness  # noqa: E402
from node_harness import NodeProcess  # noqa: E402

from segloc_ros.nodes import node_info  # noqa: E402

RETRIEVAL = "retrieval_node"
MANAGER = "map_manager"
OK, ERROR = 0, 2


def test_map_manager_follows_the_store(scene, client, ros_env, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import UInt32

    from segloc.maps.store import MapStore
    from segloc.methods.segloc.packing import descriptor_image_fields
    from segloc_ros.conversions import header_msg, raw_image_msg
    from segloc_ros.nodes.common import PIPELINE_QOS
    from segloc_ros.nodes.map_manager_node import MAP_VERSION_QOS

    store = MapStore(tmp_path / "store")
    store.publish(scene.map_a)
    cache = tmp_path / "cache"
    diagnostics = client.collect(DiagnosticArray, "/diagnostics", 100)
    retrievals = client.collect(Image, "/segloc/retrieval", PIPELINE_QOS)
    processes = [
        NodeProcess(
            node_info(RETRIEVAL).module, {RETRIEVAL: harness.node_parameters(scene, queue_size=50)}, ros_env, tmp_path, "retrieval"
        ),
        NodeProcess(
            node_info(MANAGER).module,
            {MANAGER: {"store": str(tmp_path / "store"), "cache_dir": str(cache), "localizer_nodes": RETRIEVAL, "poll_period": 0.5}},
            ros_env,
            tmp_path,
            "manager",
        ),
    ]
    try:

        def in_service(version: int, after: int = 0):
            """Wait until retrieval_node runs the pulled ``version`` and the manager says so; the manager's status.

            ``after``: the number of DiagnosticArrays received before the change was caused; only later
            statuses count, so that a status from before (the same version, in service earlier) is not
            taken for the new one.
            """
            path = str(cache / f"v{version:06d}")

            def both() -> object:
                arrays = client.snapshot(diagnostics)[after:]
                node_ok = any(harness.status_values(s).get("map_path") == path for s in harness.diagnostic_statuses(arrays, RETRIEVAL))
                manager = [
                    s
                    for s in harness.diagnostic_statuses(arrays, MANAGER)
                    if harness.status_values(s)["version_in_service"] == str(version)
                ]
                return node_ok and manager and manager[-1]

            return client.wait_for(
                both, 60, lambda: f"version {version} in service" + harness.describe_statuses(diagnostics, MANAGER) + processes[1].log()
            )

        def seen() -> int:
            return len(client.snapshot(diagnostics))

        status = in_service(1)
        assert harness.status_level(status) == OK and harness.status_values(status)["map_path"] == str(cache / "v000001")

        # v1 -> v2 while frames flow: no restart, no frame lost (the queue holds 50).
        descriptor_pub = client.publisher(Image, "/segloc/descriptor", PIPELINE_QOS)
        client.wait_subscribers(descriptor_pub)
        frames = scene.frames
        sent = 0

        def send(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                frame = frames[sent % len(frames)]
                header = header_msg(frame.stamp_ns + sent, harness.CAMERA_FRAME)
                descriptor_pub.publish(raw_image_msg(header, descriptor_image_fields(frame.descriptor)))
                sent += 1
                time.sleep(0.1)

        send(5)
        before = seen()
        store.publish(scene.map_b)
        send(15)
        in_service(2, before)
        send(5)
        client.wait_for(
            lambda: len(client.snapshot(retrievals)) >= sent, 30, lambda: f"{sent} retrievals, got {len(client.snapshot(retrievals))}"
        )
        assert processes[0].alive() and client.lifecycle_state(RETRIEVAL) == "active"

        # Rollback to v1, then a pinned version from a fleet server (segloc/map_version).
        before = seen()
        store.rollback(1)
        in_service(1, before)
        pin = client.publisher(UInt32, "segloc/map_version", MAP_VERSION_QOS)
        before = seen()
        pin.publish(UInt32(data=2))
        in_service(2, before)
        before = seen()
        pin.publish(UInt32(data=0))  # follow the latest (1) again
        in_service(1, before)

        # A corrupt upload: v3's pull fails its checksum; v1 stays, the manager says ERROR.
        v3 = store.publish(scene.map_b)
        rel = next(rel for rel in v3.files if rel.endswith(".npz"))
        object_path = Path(store._object_path(v3.files[rel]["sha256"]))
        good = object_path.read_bytes()
        object_path.write_bytes(good[:-16] + bytes(16))
        before = seen()
        status = client.wait_for(
            lambda: harness.find_status(client.snapshot(diagnostics), MANAGER, ERROR, "does not match its checksum", after=before),
            30,
            lambda: "checksum ERROR" + harness.describe_statuses(diagnostics, MANAGER),
        )
        assert "version 1 stays in service" in status.message and harness.status_values(status)["version_in_service"] == "1"
        assert not (cache / "v000003").exists()

        # The store unreachable: still v1, ERROR.
        shutil.move(tmp_path / "store", tmp_path / "store_away")
        before = seen()
        status = client.wait_for(
            lambda: harness.find_status(client.snapshot(diagnostics), MANAGER, ERROR, "unreachable", after=before),
            30,
            lambda: "unreachable ERROR" + harness.describe_statuses(diagnostics, MANAGER),
        )
        assert "version 1 stays in service" in status.message

        # Store back and repaired: v3 goes into service.
        before = seen()
        shutil.move(tmp_path / "store_away", tmp_path / "store")
        object_path.write_bytes(good)
        in_service(3, before)
        assert processes[0].alive() and processes[1].alive()
    finally:
        codes = {process.name: process.stop() for process in processes}
    assert all(code == 0 for code in codes.values()), f"exit codes after SIGINT: {codes}" + "".join(p.log() for p in processes)
