"""Dusk and night variants of a dataset's queries: segloc.data.relight and `segloc dataset relight`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from segloc.cli import main
from segloc.data.dataset import ImageRecord, read_dataset, write_dataset
from segloc.data.relight import (
    RELIGHT_PRESETS,
    RelightConfig,
    image_rng,
    linear_to_srgb,
    relight_config,
    relight_dataset,
    relight_image,
    srgb_to_linear,
)
from segloc.data.render import add_sensor_noise
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3


def day_photo(seed: int = 0, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """(H, W, 3) uint8: smooth gradients and blocks, mid to bright like a day photograph."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx[..., None] / 9.0 + np.arange(3)) * np.cos(yy[..., None] / 13.0)
    blocks = np.kron(rng.integers(-40, 40, (h // 16, w // 16, 3)), np.ones((16, 16, 1)))
    return np.clip(base + blocks, 0, 255).astype(np.uint8)


def luminance(image: np.ndarray) -> np.ndarray:
    return srgb_to_linear(image / 255.0) @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def test_srgb_curve_round_trips():
    x = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.214, abs=1e-3)


def test_same_seed_same_image_other_seed_other_noise():
    image, config = day_photo(), RELIGHT_PRESETS["night"]
    first = relight_image(image, config, image_rng(0, "a.png"))
    np.testing.assert_array_equal(first, relight_image(image, config, image_rng(0, "a.png")))
    assert not np.array_equal(first, relight_image(image, config, image_rng(1, "a.png")))
    assert not np.array_equal(first, relight_image(image, config, image_rng(0, "b.png")))


def test_dusk_is_darker_than_day_and_night_darker_than_dusk():
    image = day_photo()
    day = luminance(image).mean()
    dusk = luminance(relight_image(image, RELIGHT_PRESETS["dusk"], image_rng(0, "x"))).mean()
    night = luminance(relight_image(image, RELIGHT_PRESETS["night"], image_rng(0, "x"))).mean()
    assert night < dusk < day
    # The image keeps about exposure * gain of its linear light (diffuse flattening and the cast keep the mean).
    config = RELIGHT_PRESETS["dusk"]
    assert dusk == pytest.approx(config.exposure * config.gain * day, rel=0.15)


def relative_noise(config: RelightConfig, level: int = 128) -> float:
    """Standard deviation / mean of the linear light of a flat grey image after relighting (no blur)."""
    flat = np.full((64, 64, 3), level, np.uint8)
    config = replace(config, defocus_blur=0.0, motion_blur=0.0, white_balance=(1.0, 1.0, 1.0))
    linear = srgb_to_linear(relight_image(flat, config, image_rng(0, "flat")) / 255.0)
    return float(linear.std() / linear.mean())


def test_noise_grows_as_light_drops():
    dusk, night = relative_noise(RELIGHT_PRESETS["dusk"]), relative_noise(RELIGHT_PRESETS["night"])
    assert night > 1.5 * dusk > 0
    # The same image brightness (exposure * gain) from less light and more gain is noisier.
    bright = RelightConfig(exposure=0.5, gain=1.0)
    dim = RelightConfig(exposure=0.05, gain=10.0)
    assert relative_noise(dim) > 2.0 * relative_noise(bright)


def test_sensor_noise_has_the_shot_and_read_variance():
    signal = np.full((200, 200), 100.0, np.float32)
    noisy = add_sensor_noise(signal, shot_noise=0.5, read_noise=2.0, rng=np.random.default_rng(0))
    assert noisy.std() == pytest.approx(np.sqrt(0.5 * 100 + 4.0), rel=0.05)
    assert noisy.mean() == pytest.approx(100.0, abs=0.2)


def test_relight_image_refuses_a_grey_image():
    with pytest.raises(SeglocError, match=r"\(H, W, 3\) uint8 RGB"):
        relight_image(np.zeros((8, 8), np.uint8), RELIGHT_PRESETS["dusk"], image_rng(0, "x"))


def test_config_presets_overrides_and_ranges():
    config = relight_config("night", {"exposure": 0.05}, seed=3)
    assert (config.exposure, config.seed, config.gain) == (0.05, 3, RELIGHT_PRESETS["night"].gain)
    with pytest.raises(SeglocError, match="unknown relight condition 'dawn'; valid conditions are: dusk, night"):
        relight_config("dawn")
    with pytest.raises(SeglocError, match="relight.exposure must be > 0 and <= 1"):
        relight_config("dusk", {"exposure": 1.5})
    with pytest.raises(SeglocError, match="relight: unknown option"):
        relight_config("dusk", {"iso": 800})
    with pytest.raises(SeglocError, match="3 values"):
        RelightConfig(white_balance=(1.0, 1.0))


# --- datasets ----------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(Path(folder, name).relative_to(root)): hashlib.sha256(Path(folder, name).read_bytes()).hexdigest()
        for folder, _, files in os.walk(root)
        for name in files
    }


@pytest.fixture()
def day_dataset(tmp_path: Path) -> Path:
    """A dataset of 3 mapping PNGs and 2 query JPEGs with poses and timestamps."""
    camera = Camera("PINHOLE", 128, 96, [100.0, 100.0, 64.0, 48.0])
    records = [
        ImageRecord(name, Rigid3([1.0, 0.0, 0.0, 0.0], [0.5 * i, 0.1, 2.0]), camera, timestamp=10.0 + i)
        for i, name in enumerate(["map/a.png", "map/b.png", "map/c.png", "query/q0.jpg", "query/q1.jpg"])
    ]
    images = {record.name: day_photo(i) for i, record in enumerate(records)}
    return write_dataset(tmp_path / "day", records[:3], records[3:], images=images)


def test_relight_dataset_changes_only_the_query_images(day_dataset: Path, tmp_path: Path):
    before = snapshot(day_dataset)
    out = relight_dataset(day_dataset, tmp_path / "night", relight_config("night"), progress=False)
    assert snapshot(day_dataset) == before  # the input is never modified
    after = snapshot(out)
    source, relit = read_dataset(day_dataset), read_dataset(out)
    assert relit.mapping == source.mapping and relit.query == source.query  # names, poses, cameras, timestamps
    for record in source.mapping:
        assert after[f"images/{record.name}"] == before[f"images/{record.name}"]
    for record in source.query:
        assert after[f"images/{record.name}"] != before[f"images/{record.name}"]
        assert luminance(relit.load_image(record.name)).mean() < 0.5 * luminance(source.load_image(record.name)).mean()
    assert (out / "mapping.txt").read_text() == (day_dataset / "mapping.txt").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_relight_dataset_is_deterministic(day_dataset: Path, tmp_path: Path):
    first = relight_dataset(day_dataset, tmp_path / "a", relight_config("dusk", seed=5), progress=False)
    second = relight_dataset(day_dataset, tmp_path / "b", relight_config("dusk", seed=5), progress=False)
    assert snapshot(first) == snapshot(second)


def test_relight_dataset_refuses_queries_that_are_mapping_images(tmp_path: Path):
    camera = Camera("PINHOLE", 64, 48, [50.0, 50.0, 32.0, 24.0])
    record = ImageRecord("a.png", Rigid3([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0]), camera)
    source = write_dataset(tmp_path / "ds", [record], [record], images={"a.png": day_photo(0, (48, 64))})
    with pytest.raises(SeglocError, match="also mapping images .*would change the map"):
        relight_dataset(source, tmp_path / "out", relight_config("dusk"), progress=False)
    assert not (tmp_path / "out").exists()


def test_relight_dataset_refuses_to_write_over_its_input_or_an_existing_output(day_dataset: Path, tmp_path: Path):
    before = snapshot(day_dataset)
    with pytest.raises(SeglocError, match="is the dataset folder"):
        relight_dataset(day_dataset, day_dataset, relight_config("dusk"), overwrite=True, progress=False)
    out = relight_dataset(day_dataset, tmp_path / "dusk", relight_config("dusk"), progress=False)
    with pytest.raises(SeglocError, match="exists already; pass --overwrite"):
        relight_dataset(day_dataset, out, relight_config("night"), progress=False)
    relight_dataset(day_dataset, out, relight_config("night"), overwrite=True, progress=False)
    assert snapshot(day_dataset) == before


def test_cli_writes_the_variant_and_reports_bad_arguments(day_dataset: Path, tmp_path: Path, capsys):
    assert main(["dataset", "relight", str(day_dataset), "--condition", "dusk", "-o", str(tmp_path / "dusk"), "--no-progress"]) == 0
    assert read_dataset(tmp_path / "dusk").query == read_dataset(day_dataset).query
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # argparse's error
        main(["dataset", "relight", str(day_dataset), "--condition", "fog", "-o", str(tmp_path / "fog")])
    assert exit_info.value.code == 1
    assert "invalid choice: 'fog'" in capsys.readouterr().err
    assert not (tmp_path / "fog").exists()
