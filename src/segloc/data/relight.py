"""Dusk and night variants of a dataset's query photographs, by a simple physical camera model.

A day photograph is turned into the photograph the same camera would have taken in less light
(:func:`relight_image`), in linear light, as a sensor records it:

1. undo the sRGB transfer curve (IEC 61966-2-1) to get linear scene radiance in [0, 1];
2. flatten the shading: without direct sun the light is diffuse, so lit and shadowed parts
   come closer (``contrast``: each pixel moves towards the image's mean luminance);
3. tint by the colour of the light relative to the white the camera balanced for
   (``white_balance``, RGB gains normalised to keep the luminance: a blue twilight, the
   orange of sodium or warm-white street lamps);
4. drop the light reaching the sensor (``exposure``: the fraction of the day's photon count
   collected in one exposure);
5. blur the optical image: defocus (a lens opened wide) and motion (a longer exposure);
6. add the sensor's noise to the collected signal: photon shot noise (a full well of
   ``full_well`` electrons at full scale) and read noise (``read_noise`` electrons), the noise
   model of the synthetic renderer (:func:`segloc.data.render.add_sensor_noise`);
7. amplify by the camera's ``gain`` (ISO), which raises the noise with the signal, and clip at
   full scale;
8. re-apply the sRGB curve and quantise to 8 bits.

The image gets ``exposure * gain`` of its linear light (darker when below 1), a lower
signal-to-noise ratio the less light is collected, a colour cast, less contrast and some blur.
:data:`RELIGHT_PRESETS` names ``dusk`` and ``night``. The noise is drawn from a generator seeded
by ``(seed, image name)``: the same seed gives the same images, whatever the order.

:func:`relight_dataset` writes a new dataset folder whose query images are relit and whose
mapping images are copied byte for byte; ``mapping.txt`` and ``query.txt`` (poses, cameras) are
the input's. The input is never modified and the output is written atomically.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segloc.config import check_options, config_from_dict, config_to_dict, option
from segloc.data.dataset import is_dataset_folder, read_dataset, write_dataset
from segloc.data.render import add_sensor_noise, apply_blur
from segloc.errors import SeglocError
from segloc.fileio import check_output

logger = logging.getLogger("segloc")

__all__ = ["RELIGHT_PRESETS", "RelightConfig", "linear_to_srgb", "relight_config", "relight_dataset", "relight_image", "srgb_to_linear"]

#: Rec. 709 / sRGB luminance weights of linear R, G, B.
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], np.float32)
FULL_SCALE = 255.0  # the sensor signal's unit: 8-bit levels of linear light at full scale


@dataclass
class RelightConfig:
    """A low-light imaging condition applied to a day photograph (:func:`relight_image`).

    Attributes:
        exposure: fraction of the day's light the sensor collects in one exposure (scene light
            times exposure time), in (0, 1].
        gain: the camera's amplification after the sensor (ISO relative to the day's); the image
            keeps ``exposure * gain`` of its linear light.
        contrast: 1 keeps the shading; smaller values pull each pixel's linear light towards
            the image's mean luminance (diffuse light, no sun): 0 would leave a flat image.
        white_balance: (3,) RGB gains of the light's colour relative to the white the camera
            balanced for; normalised to unit luminance, so they change the hue and not the brightness.
        full_well: electrons a pixel collects at full scale (small sensors: 4000-10000).
        read_noise: read noise in electrons (2-5 for a CMOS sensor).
        defocus_blur: Gaussian defocus sigma in pixels (0: none).
        motion_blur: length in pixels of a horizontal motion blur (0: none).
        seed: seed of the noise (with each image's name).
    """

    exposure: float = option(1.0, gt=0, le=1)
    gain: float = option(1.0, ge=1, le=64)
    contrast: float = option(1.0, ge=0, le=1)
    white_balance: tuple[float, float, float] = option((1.0, 1.0, 1.0), gt=0, le=10)
    full_well: float = option(6000.0, ge=100)
    read_noise: float = option(3.0, ge=0, le=100)
    defocus_blur: float = option(0.0, ge=0, le=20)
    motion_blur: float = option(0.0, ge=0, le=100)
    seed: int = option(0, ge=0)

    def __post_init__(self) -> None:
        self.white_balance = tuple(float(c) for c in self.white_balance)  # type: ignore[assignment]
        check_options(self, "relight")
        if len(self.white_balance) != 3:
            raise SeglocError(f"relight.white_balance needs 3 values (R, G, B), got {self.white_balance}")


RELIGHT_PRESETS: dict[str, RelightConfig] = {
    # Blue hour, about 1.7 stops darker than the day photograph: a bluish sky light, diffuse
    # shading, the camera at 3x gain, a slightly open lens and a handheld 1/30 s.
    "dusk": RelightConfig(exposure=0.1, gain=3.0, contrast=0.7, white_balance=(0.85, 0.97, 1.25), defocus_blur=0.7, motion_blur=2.0),
    # Street lamps, about 3.3 stops darker: sodium / warm-white light, strong diffuse flattening,
    # 5x gain on 2 % of the day's light, a wide-open lens and a longer exposure.
    "night": RelightConfig(exposure=0.02, gain=5.0, contrast=0.5, white_balance=(1.3, 0.95, 0.55), defocus_blur=1.2, motion_blur=4.0),
}
"""Named low-light conditions: ``dusk`` and ``night`` (the day photograph is the input)."""


def relight_config(condition: str, values: dict[str, Any] | None = None, seed: int | None = None) -> RelightConfig:
    """The preset ``condition`` of :data:`RELIGHT_PRESETS` with ``values`` (a ``relight:`` config section) and ``seed`` overriding it."""
    if condition not in RELIGHT_PRESETS:
        raise SeglocError(f"unknown relight condition {condition!r}; valid conditions are: {', '.join(RELIGHT_PRESETS)}")
    values = {**config_to_dict(RELIGHT_PRESETS[condition]), **(values or {})}
    if seed is not None:
        values["seed"] = seed
    return config_from_dict(RelightConfig, values, "relight")


def srgb_to_linear(image: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] (any shape; clipped) to linear light (IEC 61966-2-1), float32."""
    x = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] (any shape; clipped) to sRGB-encoded values in [0, 1], float32."""
    x = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The noise generator of image ``name``: seeded by ``(seed, crc32(name))``, independent of the order of images."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def relight_image(image: np.ndarray, config: RelightConfig, rng: np.random.Generator) -> np.ndarray:
    """The photograph ``image`` as the camera would record it under ``config`` (module docstring, steps 1-8).

    Args:
        image: (H, W, 3) uint8 RGB, sRGB-encoded (a camera JPEG or PNG).
        config: the low-light condition.
        rng: source of the sensor noise.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SeglocError(f"relight_image needs an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    linear = srgb_to_linear(image.astype(np.float32) / 255.0)
    if config.contrast < 1:
        mean = float((linear @ LUMA_WEIGHTS).mean())
        linear = np.float32(config.contrast) * linear + np.float32((1.0 - config.contrast) * mean)
    white = np.asarray(config.white_balance, np.float32)
    linear = linear * (white / float(white @ LUMA_WEIGHTS))
    signal = apply_blur(linear * np.float32(config.exposure * FULL_SCALE), config.defocus_blur, config.motion_blur)
    per_electron = FULL_SCALE / config.full_well  # signal levels per electron
    signal = add_sensor_noise(signal, per_electron, config.read_noise * per_electron, rng)
    linear = np.clip(signal * np.float32(config.gain / FULL_SCALE), 0.0, 1.0)
    return np.clip(linear_to_srgb(linear) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def relight_dataset(source: str | Path, output: str | Path, config: RelightConfig, overwrite: bool = False, progress: bool = True) -> Path:
    """Write a copy of dataset ``source`` at ``output`` whose query images are relit under ``config``.

    Mapping images are copied unchanged, ``mapping.txt`` and ``query.txt`` (poses, cameras,
    timestamps) are the input's; the folder is written atomically
    (:func:`segloc.data.dataset.write_dataset`) and ``source`` is never modified. A relit image
    keeps its name, so its format (JPEG quality 95 or PNG) follows the extension.

    Raises:
        SeglocError: ``source`` is not a dataset folder or has no queries; a query image is also
            a mapping image (relighting it would change the map); ``output`` is ``source``,
            inside it, or exists (without ``overwrite``, or is not a dataset folder).
    """
    from tqdm import tqdm

    dataset = read_dataset(source, require_query=True)
    shared = sorted({r.name for r in dataset.query} & {r.name for r in dataset.mapping})
    if shared:
        raise SeglocError(
            f"dataset {source}: {len(shared)} query image(s) are also mapping images ({', '.join(shared[:3])}...): "
            "relighting them would change the map; give the queries their own image files"
        )
    check_output(output, "replace", inputs=dataset.inputs(), overwrite=overwrite, replaceable=is_dataset_folder, what="dataset folder")
    images = {}
    names = list(dict.fromkeys(r.name for r in dataset.query))
    for name in tqdm(names, desc="relight", disable=not progress):
        images[name] = relight_image(dataset.load_image(name), config, image_rng(config.seed, name))
    root = write_dataset(output, dataset.mapping, dataset.query, images=images, source_image_dir=dataset.image_dir, overwrite=overwrite)
    logger.info("relit %d query images of %s into %s (%s)", len(names), source, root, config)
    return root
