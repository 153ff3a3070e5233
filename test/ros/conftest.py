"""Shared set-up for the ROS 2 tests in test/ros: skip without rclpy, isolated DDS settings for child processes.

These tests need an interpreter that can import rclpy: either the ROS venv made by
``bash test/ros/setup_ros_env.sh .venv-ros`` (community ROS 2 Jazzy wheels from PyPI, never on a
robot) or a Python with a sourced system ROS 2 (``source /opt/ros/jazzy/setup.bash``). Anywhere
else (the main dev venv) every test in this folder is skipped with the reason.

Test modules here import rclpy, the message packages and the modules that import them (the
segloc_ros nodes, conversions, replay) lazily, with plain imports inside tests or helpers: the
autouse fixture below skips first where rclpy is missing, and anywhere else an import error of
the project's own modules fails the test instead of skipping it.
"""

from __future__ import annotations

import functools
import os
import random
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_shm.xml"
SETUP_HINT = (
    "create the ROS test venv with `bash test/ros/setup_ros_env.sh .venv-ros` and run "
    "`.venv-ros/bin/python -m pytest test/ros`, or source a system ROS 2 Jazzy (/opt/ros/jazzy/setup.bash) first"
)


@functools.cache
def rclpy_import_error() -> str | None:
    """Try to import rclpy once; return None when it works, else the error as text."""
    try:
        import rclpy  # noqa: F401
    except Exception as exc:  # ImportError, or OSError/RuntimeError from a broken C library path
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(autouse=True)
def _require_rclpy() -> None:
    """Skip every test in this folder when rclpy cannot be imported by the running interpreter."""
    error = rclpy_import_error()
    if error is not None:
        pytest.skip(f"ROS 2 tests need rclpy, which {sys.executable} cannot import ({error}); {SETUP_HINT}")


@pytest.fixture
def fastdds_profile() -> Path:
    """Path of the Fast DDS profile with large shared-memory segments (config/fastdds_shm.xml)."""
    assert FASTDDS_PROFILE.is_file(), f"missing Fast DDS profile {FASTDDS_PROFILE}"
    return FASTDDS_PROFILE


@pytest.fixture
def ros_domain_id() -> int:
    """A random ROS domain ID in [1, 101], so that concurrent test runs on a shared machine rarely meet."""
    return random.SystemRandom().randint(1, 101)


@pytest.fixture
def ros_env(fastdds_profile: Path, ros_domain_id: int) -> dict[str, str]:
    """Environment for ROS child processes: own domain, localhost-only discovery, Fast DDS with the large-SHM profile.

    The child processes are started with ``sys.executable``; in the PyPI ROS venv the interpreter's
    start-up hook has already set LD_LIBRARY_PATH, and children inherit it.
    """
    env = dict(os.environ)
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; conflicts with the discovery range below
    env.update(
        {
            "ROS_DOMAIN_ID": str(ros_domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
            "FASTRTPS_DEFAULT_PROFILES_FILE": str(fastdds_profile),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="session")
def scene(tmp_path_factory):
    """The small synthetic room of node_harness.build_scene (maps A and B, oracle query frames), built once per session."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import node_harness

    if rclpy_import_error() is not None:  # no scene to build where the tests are skipped anyway
        pytest.skip(f"rclpy is not available: {rclpy_import_error()}")
    return node_harness.build_scene(tmp_path_factory.mktemp("segloc_ros_scene"))


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory):
    """``colcon_install(symlink_install)``: the install space of this checkout built with colcon (node_harness.colcon_build), once per session each."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import node_harness

    installs: dict[bool, Path] = {}

    def build(symlink_install: bool) -> Path:
        if symlink_install not in installs:
            workspace = tmp_path_factory.mktemp("colcon_symlink_ws" if symlink_install else "colcon_ws")
            installs[symlink_install] = node_harness.colcon_build(workspace, symlink_install)
        return installs[symlink_install]

    return build


@pytest.fixture
def client(ros_env):
    """A node_harness.RosClient in the test's ROS domain, closed after the test."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from node_harness import RosClient

    ros = RosClient(ros_env)
    yield ros
    ros.close()


@pytest.fixture(scope="session")
def sld_map(scene) -> Path:
    """An SLD* map of the scene: a tiny landmark network trained for a few steps (the node test checks the plumbing, not accuracy)."""
    from segloc.data.dataset import read_dataset
    from segloc.methods import get_method
    from segloc_train.sld.train_sld import train_config, train_sld

    small = {"landmarks": {"num_landmarks": 24}, "fuse_channels": 16, "head_channels": 8, "patch_size": [96, 80], "batch_size": 2}
    config = train_config("cpu_demo", {**small, "core": {"pairs": {"num_neighbors": 5}}, "epochs": 1, "steps_per_epoch": 3, "threads": 1})
    checkpoint = train_sld(scene.root / "dataset", scene.root / "train_sld", config, progress=False)
    method = get_method("sld")
    map_config = method.map_config({"core": {"pairs": {"num_neighbors": 5}}, "checkpoint": str(checkpoint)})
    return method.build_map(read_dataset(scene.root / "dataset"), scene.root / "map_sld", map_config, progress=False)


@pytest.fixture(scope="session")
def sfrs_map(scene, reference_map) -> Path:
    """The reference map with an sfrs layer: an untrained NetVLAD (ImageNet backbone, 8 clusters from k-means of the scene)."""
    import numpy as np
    import torch

    from segloc.data.dataset import read_dataset
    from segloc.maps.sfrs import SfrsLayerConfig, add_sfrs_layer
    from segloc.models import save_checkpoint
    from segloc.models.netvlad import NetVlad, NetVladConfig, sample_features

    dataset = read_dataset(scene.root / "dataset")
    net = NetVlad(NetVladConfig(num_clusters=8)).eval()
    with torch.no_grad():
        images = np.stack([dataset.load_image(r.name) for r in dataset.mapping[::3]])
        features = net.features(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
        net.initialise_clusters(sample_features(features, 50, torch.Generator().manual_seed(0)))
    checkpoint = save_checkpoint(net, scene.root / "netvlad", metadata={"image_size": list(images.shape[2:0:-1])})
    return add_sfrs_layer(reference_map, dataset, SfrsLayerConfig(str(checkpoint)), scene.root / "map_sfrs", progress=False)


@pytest.fixture(scope="session")
def ninjadesc_map(scene) -> Path:
    """A NinjaDesc map of the scene with an untrained NinjaNet (the node test checks the plumbing, not privacy)."""
    import torch

    from segloc.data.dataset import read_dataset
    from segloc.methods import get_method
    from segloc.models import save_checkpoint
    from segloc.models.ninjanet import NinjaNet, NinjaNetConfig

    torch.manual_seed(0)
    checkpoint = save_checkpoint(NinjaNet(NinjaNetConfig(hidden=256)).eval(), scene.root / "ninjanet")
    method = get_method("ninjadesc")
    config = method.map_config(
        {
            "core": {"pairs": {"num_neighbors": 5}},
            "vlad": {"num_clusters": 16, "max_training_descriptors": 20000},
            "checkpoint": str(checkpoint),
        }
    )
    return method.build_map(read_dataset(scene.root / "dataset"), scene.root / "map_ninjadesc", config, progress=False)


@pytest.fixture(scope="session")
def reference_map(scene) -> Path:
    """A reference (SIFT) map of the scene's mapping images, built once through the method registry."""
    from segloc.data.dataset import read_dataset
    from segloc.methods import get_method

    method = get_method("reference")
    config = method.map_config({"core": {"pairs": {"num_neighbors": 5}}, "vlad": {"num_clusters": 16, "max_training_descriptors": 20000}})
    return method.build_map(read_dataset(scene.root / "dataset"), scene.root / "map_reference", config, progress=False)
