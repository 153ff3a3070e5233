"""Everything that writes survives a SIGKILL at any point: the previous map or checkpoint stays whole and loadable.

A child process writes a map package (or a model checkpoint) over and over, each version
numbered; the test kills it (SIGKILL) at random points and then opens what is at the path: it
must load with valid checksums and be one of the versions written. Both ways of replacing a
folder are exercised: the atomic swap (Linux renameat2 RENAME_EXCHANGE) and the two-rename
fallback, whose window between the renames is also checked deterministically.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.fileio import previous_path, recover_directory, replace_directory
from segloc.maps.package import MapPackage, MapWriter

SRC = Path(__file__).resolve().parents[2] / "src"
KILLS = 10

MAP_WRITER = """
import sys
import numpy as np
sys.path.insert(0, {src!r})
import segloc.fileio
if {fallback!r}:
    segloc.fileio._exchange = lambda a, b: False  # the two-rename path
from segloc.maps.package import MapWriter
rng = np.random.default_rng(0)
version = 0
print("ready", flush=True)
while True:
    version += 1
    with MapWriter({path!r}, method="crash_test", overwrite=True) as writer:
        writer.add_arrays("layer", "values", values=rng.random(200_000), version=np.array([version]))
        writer.add_json("layer", "meta", {{"version": version}})
        writer.set_metadata(version=version)
        writer.commit()
"""

CHECKPOINT_WRITER = """
import sys
sys.path.insert(0, {src!r})
import torch
import segloc.fileio
if {fallback!r}:
    segloc.fileio._exchange = lambda a, b: False
from segloc.models.checkpoint import save_checkpoint
from segloc.models.segmentation import SegmentationNet, segmentation_config
torch.manual_seed(0)
model = SegmentationNet(segmentation_config("cpu", pretrained=False, num_classes=4, feature_dim=8, decoder_channels=(16, 16, 16, 16), head_hidden_dim=8))
version = 0
print("ready", flush=True)
while True:
    version += 1
    save_checkpoint(model, {path!r}, metadata={{"version": version}}, overwrite=True)
"""


def kill_at_random_points(script: str, check, seed: int, kills: int = KILLS) -> list[int]:
    """Run ``script`` and SIGKILL it at ``kills`` random points; ``check()`` after each kill returns the version found."""
    rng = random.Random(seed)
    versions = []
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        versions.append(check())
    return versions


@pytest.mark.slow
@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_a_map_survives_a_kill_at_any_point(tmp_path, fallback):
    path = tmp_path / "map"
    script = textwrap.dedent(MAP_WRITER).format(src=str(SRC), fallback=fallback, path=str(path))

    def check() -> int:
        if not path.exists() and not previous_path(path).exists():
            return 0  # killed before the first version was committed: nothing to lose yet
        package = MapPackage.open(path)  # checksums verified; puts back a map a kill left aside
        arrays = package.read_arrays("layer", "values")
        assert package.manifest["metadata"]["version"] == int(arrays["version"][0]) == package.read_json("layer", "meta")["version"]
        return int(arrays["version"][0])

    versions = kill_at_random_points(script, check, seed=1 + fallback)
    assert sum(version > 0 for version in versions) >= KILLS // 2, versions  # most kills hit a replacement, not the first write


@pytest.mark.slow
@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_a_checkpoint_survives_a_kill_at_any_point(tmp_path, fallback):
    from segloc.models.checkpoint import load_checkpoint, read_checkpoint_info

    path = tmp_path / "checkpoint"
    script = textwrap.dedent(CHECKPOINT_WRITER).format(src=str(SRC), fallback=fallback, path=str(path))

    def check() -> int:
        if not path.exists() and not previous_path(path).exists():
            return 0
        info = read_checkpoint_info(path)
        load_checkpoint(path)  # weights verified against the manifest's checksum
        return int(info.metadata["version"])

    versions = kill_at_random_points(script, check, seed=3 + fallback, kills=6)  # each start imports torch: fewer kills
    assert sum(version > 0 for version in versions) >= 3, versions


def test_a_kill_between_the_two_renames_leaves_the_previous_map(tmp_path):
    """The fallback's only window: the previous map renamed aside, the new one not yet in place."""
    path = tmp_path / "map"
    with MapWriter(path, method="crash_test") as writer:
        writer.add_arrays("layer", "values", values=np.arange(3))
        writer.commit()
    os.replace(path, previous_path(path))  # what replace_directory does first; the process dies here
    assert MapPackage.open(path).read_arrays("layer", "values")["values"].tolist() == [0, 1, 2]
    assert not previous_path(path).exists()
    assert not recover_directory(path)  # nothing left to recover


def test_replace_directory_swaps_whole_folders(tmp_path):
    target, staging = tmp_path / "target", tmp_path / "staging"
    target.mkdir()
    (target / "old").write_text("old")
    staging.mkdir()
    (staging / "new").write_text("new")
    replace_directory(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["new"] and not staging.exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    replace_directory(fresh, tmp_path / "created")
    assert (tmp_path / "created").is_dir()
    with pytest.raises(SeglocError, match="does not exist"):
        MapPackage.open(tmp_path / "nothing")
