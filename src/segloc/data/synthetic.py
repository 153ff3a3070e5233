"""Synthetic scenes: textured 3D scenes rendered at known poses along robot trajectories.

A scene (``room``, ``corridor``, ``street`` or ``office``; :mod:`segloc.data.scenes`) is a set of
textured rectangles with semantic part labels (:data:`LABELS`), built from a seed. A ground
robot drives loops through it; a camera rigidly mounted on the robot (``base_from_cam``)
records a mapping sequence and, on a laterally offset loop with other speed and heading noise,
a query sequence. Each sequence has its own imaging condition (:class:`AppearanceConfig`:
lighting level and colour, season-like texture change, noise, blur), so mapping and query can
differ; :data:`APPEARANCE_PRESETS` names single conditions and :data:`CONDITIONS` names
(mapping, query) pairs.

Frames: world z up; ``base_link`` with ROS body axes (x forward, y left, z up) on the floor;
the camera with OpenCV axes (x right, y down, z forward).

:func:`generate_scene` writes a dataset folder (:mod:`segloc.data.dataset`) plus::

    labels/<name>.png   uint8 label ids (see LABELS)
    depth/<name>.png    uint16 depth along the optical axis in millimetres, 0 = no surface / > 65.5 m
    scene.json          labels table, config, camera, base_from_cam, per-frame timestamp,
                        world_from_base and odom_from_base, surfaces and lamps

Everything is deterministic from the seed: the same config gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from segloc.config import check_options, config_from_dict, config_to_dict, option
from segloc.data.dataset import ImageRecord, is_dataset_folder, read_dataset, read_image_list, save_image, write_dataset, write_image_list
from segloc.data.render import AppearanceConfig, prepare_scene, render_view
from segloc.data.scenes import SCENE_BUILDERS, LoopPath, build_scene, changed_variant, seasonal_variant
from segloc.data.textures import LABEL_COLORS, LABEL_IDS, LABELS
from segloc.errors import SeglocError
from segloc.fileio import check_output, temp_dir_beside
from segloc.geometry.camera import Camera
from segloc.geometry.similarity import Sim3
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

__all__ = [
    "APPEARANCE_PRESETS",
    "CONDITIONS",
    "LABELS",
    "LABEL_COLORS",
    "LABEL_IDS",
    "SCENES",
    "AppearanceConfig",
    "CameraMountConfig",
    "SceneFrame",
    "SynthConfig",
    "Trajectory",
    "appearance_preset",
    "generate_scene",
    "make_trajectory",
    "read_mapping_groundtruth",
    "read_scene_frames",
    "read_scene_info",
    "synth_config",
    "visual_odometry",
    "write_scene_bag",
]

SCENES: tuple[str, ...] = tuple(SCENE_BUILDERS)
#: The smallest image size (width, height; or height, width) :class:`SynthConfig` renders: at
#: 64x48 a room of 8 mapping images still gives a map, at 48x36 no pair of images has enough
#: matches to triangulate a point.
MIN_IMAGE_SIZE = (64, 48)
FORMAT_VERSION = 1
#: The true mapping poses of a recording whose ``mapping.txt`` holds odometry (``SynthConfig.odometry_drift``).
GROUNDTRUTH_FILE = "mapping_groundtruth.txt"
SPLITS = ("mapping", "query")

APPEARANCE_PRESETS: dict[str, AppearanceConfig] = {
    "day": AppearanceConfig(),
    "overcast": AppearanceConfig(exposure=0.85, color_gain=(0.92, 0.97, 1.08), ambient=0.75, sun=0.05),
    "evening": AppearanceConfig(
        exposure=0.9, color_gain=(1.15, 0.95, 0.7), ambient=0.45, sun=0.5, sun_azimuth_deg=250.0, sun_elevation_deg=8.0, lamps=0.5
    ),
    "night": AppearanceConfig(exposure=1.0, color_gain=(1.0, 0.9, 0.75), ambient=0.08, sun=0.0, lamps=0.8, noise_std=3.0, shot_noise=0.6),
    "autumn": AppearanceConfig(season=1.0),
    "blurry": AppearanceConfig(motion_blur=5.0, defocus_blur=0.8, noise_std=2.0),
    "hard": AppearanceConfig(
        exposure=0.9,
        color_gain=(1.15, 0.95, 0.7),
        ambient=0.45,
        sun=0.5,
        sun_azimuth_deg=250.0,
        sun_elevation_deg=8.0,
        season=0.7,
        noise_std=3.0,
        motion_blur=3.0,
    ),
    "severe": AppearanceConfig(
        exposure=1.0,
        color_gain=(1.0, 0.85, 0.65),
        ambient=0.06,
        sun=0.0,
        lamps=0.7,
        season=1.0,
        noise_std=9.0,
        shot_noise=1.5,
        motion_blur=9.0,
        defocus_blur=2.0,
    ),
}
"""Named imaging conditions: ``day`` (the default), ``overcast``, ``evening`` (warm low sun),
``night`` (lamps only, noisy), ``autumn`` (season change), ``blurry``, ``hard`` (evening light +
season change + noise + motion blur), ``severe`` (a dark, noisy, blurred night after a full
season change: fine image detail is gone, only large structures remain)."""

CONDITIONS: dict[str, tuple[str, str]] = {
    "same": ("day", "day"),
    "lighting": ("day", "evening"),
    "night": ("day", "night"),
    "season": ("day", "autumn"),
    "blur": ("day", "blurry"),
    "hard": ("day", "hard"),
    "severe": ("day", "severe"),
}
"""Named (mapping, query) pairs of :data:`APPEARANCE_PRESETS`."""


def appearance_preset(name: str) -> AppearanceConfig:
    """A copy of the named condition of :data:`APPEARANCE_PRESETS`."""
    if name not in APPEARANCE_PRESETS:
        raise SeglocError(f"unknown appearance preset {name!r}; valid presets are: {', '.join(APPEARANCE_PRESETS)}")
    return replace(APPEARANCE_PRESETS[name])


def _resolve_appearance(value: Any, where: str) -> AppearanceConfig:
    if isinstance(value, AppearanceConfig):
        return value
    if isinstance(value, str):
        return appearance_preset(value)
    if isinstance(value, dict):
        return config_from_dict(AppearanceConfig, value, where)
    raise SeglocError(
        f"{where}: expected a preset name ({', '.join(APPEARANCE_PRESETS)}) or a mapping of appearance options, got {value!r}"
    )


@dataclass
class CameraMountConfig:
    """Where the camera sits on the robot (``base_from_cam``).

    Attributes:
        forward: metres ahead of ``base_link``.
        lateral: metres to the left of ``base_link``.
        height: metres above the floor.
        pitch_deg: downward tilt of the optical axis, degrees.
    """

    forward: float = option(0.3, ge=-0.5, le=0.5, note="the camera sits within 0.5 m of base_link")
    lateral: float = option(0.0, ge=-0.5, le=0.5, note="the camera sits within 0.5 m of base_link")
    height: float = option(1.2, ge=0.1, le=2.4, note="below the ceilings")
    pitch_deg: float = option(5.0, ge=-60, le=60)

    def __post_init__(self) -> None:
        check_options(self, "mount")

    def base_from_cam(self) -> Rigid3:
        """The camera pose on the robot: OpenCV camera axes in ROS body axes."""
        p = np.radians(self.pitch_deg)
        forward_axis = np.array([np.cos(p), 0.0, -np.sin(p)])  # camera z
        down_axis = np.array([-np.sin(p), 0.0, -np.cos(p)])  # camera y
        right_axis = np.cross(down_axis, forward_axis)  # camera x
        rotation = np.stack([right_axis, down_axis, forward_axis], axis=1)
        return Rigid3.from_rotation(rotation, np.array([self.forward, self.lateral, self.height]))


@dataclass
class SynthConfig:
    """Configuration of a synthetic scene and its recordings.

    Attributes:
        scene: one of :data:`SCENES`.
        seed: everything (layout, textures, trajectories, noise) derives from it.
        width, height: image size in pixels.
        fov_deg: horizontal field of view of the PINHOLE camera, degrees.
        num_mapping, num_query: number of mapping and query images.
        frame_rate: images per second (timestamps).
        start_time: timestamp of the first mapping image (seconds); the query recording starts
            an hour later.
        mapping_laps, query_laps: how many times each recording drives around the loop.
        query_offset: lateral offset of the query loop (metres, towards the loop's inside; -0.2 to 0.45).
        query_heading_noise_deg: amplitude of the smooth heading noise of the query robot.
        mapping_heading_noise_deg: the same for the mapping robot.
        speed_variation: relative speed modulation of the query robot, in [0, 1).
        odometry_scale_noise: standard deviation of the relative odometry scale error.
        odometry_yaw_drift_deg: standard deviation of the odometry heading drift, degrees per metre.
        mount: camera mount on the robot.
        mapping_appearance, query_appearance: imaging condition of each recording: a preset
            name of :data:`APPEARANCE_PRESETS` or the options of :class:`AppearanceConfig`.
        recording: which recording of the place this is: 0 (the default) is the first; a later
            one drives other trajectories (their noise is drawn from ``(seed, recording)``) and
            starts ``recording`` days later. Recording 0 renders exactly what it always did.
        change: how much of the place changed since recording 0
            (:func:`segloc.data.scenes.changed_variant`): each poster / notice board is
            re-textured with this probability, each piece of furniture slides along its wall
            with half of it; the same in the mapping and query splits of this recording.
        odometry_drift: None (the default): ``mapping.txt`` holds the true poses. A number:
            ``mapping.txt`` holds the mapping images' poses as a monocular visual odometry gives
            them (:func:`visual_odometry`): in a random frame (rotation, origin, and scale in
            [0.5, 2]), drifting in heading by this many degrees and in scale by this many percent
            per metre travelled; the true poses go to ``mapping_groundtruth.txt`` (same format) and
            the frame to ``scene.json`` (``odometry``). Queries keep their true poses.
    """

    scene: str = "room"
    seed: int = option(0, ge=0)
    width: int = 640
    height: int = 480
    fov_deg: float = option(70.0, ge=10, le=150)
    num_mapping: int = option(150, ge=1)
    num_query: int = option(50, ge=0)
    frame_rate: float = option(10.0, gt=0)
    start_time: float = option(1_700_000_000.0, ge=0)
    mapping_laps: float = option(1.0, gt=0)
    query_laps: float = option(1.0, gt=0)
    query_offset: float = option(0.3, ge=-0.2, le=0.45, note="metres: the robot stays clear of the furniture")
    query_heading_noise_deg: float = option(4.0, ge=0)
    mapping_heading_noise_deg: float = option(1.0, ge=0)
    speed_variation: float = option(0.3, ge=0, lt=1)
    odometry_scale_noise: float = option(0.02, ge=0)
    odometry_yaw_drift_deg: float = option(0.5, ge=0)
    mount: CameraMountConfig = field(default_factory=CameraMountConfig)
    mapping_appearance: AppearanceConfig | str = "day"
    query_appearance: AppearanceConfig | str = "day"
    recording: int = option(0, ge=0)
    change: float = option(0.0, ge=0, le=1, note="0: the place as recording 0 saw it")
    odometry_drift: float | None = option(None, ge=0, le=10, note="degrees and percent per metre; None: true mapping poses")

    def __post_init__(self) -> None:
        if isinstance(self.mount, dict):
            self.mount = config_from_dict(CameraMountConfig, self.mount, "mount")
        self.mapping_appearance = _resolve_appearance(self.mapping_appearance, "mapping_appearance")
        self.query_appearance = _resolve_appearance(self.query_appearance, "query_appearance")
        check_options(self, "synth")
        if self.scene not in SCENES:
            raise SeglocError(f"unknown synthetic scene {self.scene!r}; valid scenes are: {', '.join(SCENES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise SeglocError(f"seed must be a non-negative integer, got {self.seed!r}")
        small, large = sorted(MIN_IMAGE_SIZE)
        if min(self.width, self.height) < small or max(self.width, self.height) < large:
            raise SeglocError(
                f"image size {self.width}x{self.height} is too small: the smallest is {MIN_IMAGE_SIZE[0]}x{MIN_IMAGE_SIZE[1]} "
                f"(or {MIN_IMAGE_SIZE[1]}x{MIN_IMAGE_SIZE[0]}); smaller images hold too few features to build a map"
            )

    def camera(self) -> Camera:
        """The PINHOLE camera (principal point at the image centre)."""
        focal = 0.5 * self.width / np.tan(0.5 * np.radians(self.fov_deg))
        return Camera("PINHOLE", self.width, self.height, (focal, focal, 0.5 * self.width, 0.5 * self.height))


def synth_config(scene: str = "room", condition: str = "same", **overrides: Any) -> SynthConfig:
    """A :class:`SynthConfig` for ``scene`` with the (mapping, query) pair of :data:`CONDITIONS`."""
    if condition not in CONDITIONS:
        raise SeglocError(f"unknown condition {condition!r}; valid conditions are: {', '.join(CONDITIONS)}")
    mapping, query = CONDITIONS[condition]
    values = {"scene": scene, "mapping_appearance": mapping, "query_appearance": query, **overrides}
    return config_from_dict(SynthConfig, values, "synth_config")


# --- trajectories --------------------------------------------------------------------------


@dataclass
class Trajectory:
    """A timed robot recording.

    Attributes:
        timestamps: (N,) seconds.
        world_from_base: N ground-truth poses of ``base_link`` in the world (``map``) frame.
        odom_from_base: N drifting odometry poses (the odom frame starts at the first pose).
    """

    timestamps: np.ndarray
    world_from_base: list[Rigid3]
    odom_from_base: list[Rigid3]


def _smooth_noise(rng: np.random.Generator, phase: np.ndarray, amplitude: float, components: int = 3) -> np.ndarray:
    """Band-limited noise (N,) of the given amplitude: a sum of random sinusoids of ``phase`` (N,)."""
    freqs = rng.uniform(1.0, 4.0, components)
    offsets = rng.uniform(0, 2 * np.pi, components)
    weights = rng.uniform(0.5, 1.0, components)
    signal = np.sum(weights[:, None] * np.sin(freqs[:, None] * phase[None] + offsets[:, None]), axis=0)
    return amplitude * signal / weights.sum()


def _planar_pose(x: float, y: float, yaw: float) -> Rigid3:
    c, s = np.cos(yaw), np.sin(yaw)
    return Rigid3.from_rotation(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.array([x, y, 0.0]))


def _odometry(xy: np.ndarray, yaw: np.ndarray, scale_noise: float, yaw_drift_deg: float, rng: np.random.Generator) -> list[Rigid3]:
    """Integrate the ground-truth planar motion with a scale error and heading drift."""
    scale = 1.0 + rng.normal(0.0, scale_noise)
    drift = np.radians(rng.normal(0.0, yaw_drift_deg))
    ox, oy, oyaw = 0.0, 0.0, 0.0
    poses = [_planar_pose(0.0, 0.0, 0.0)]
    for i in range(1, len(xy)):
        c, s = np.cos(yaw[i - 1]), np.sin(yaw[i - 1])
        delta = xy[i] - xy[i - 1]
        forward, left = c * delta[0] + s * delta[1], -s * delta[0] + c * delta[1]
        step = float(np.hypot(forward, left))
        dyaw = np.angle(np.exp(1j * (yaw[i] - yaw[i - 1]))) + drift * step + rng.normal(0.0, 0.002 * step)
        forward, left = scale * forward + rng.normal(0.0, 0.005 * step), scale * left + rng.normal(0.0, 0.005 * step)
        ox += np.cos(oyaw) * forward - np.sin(oyaw) * left
        oy += np.sin(oyaw) * forward + np.cos(oyaw) * left
        oyaw += dyaw
        poses.append(_planar_pose(ox, oy, oyaw))
    return poses


def _stream(config: SynthConfig, *keys: int) -> list[int]:
    """The random stream ``keys`` of a recording: ``[seed, *keys]`` for recording 0 (as always), ``[seed, *keys, recording]`` after."""
    return [config.seed, *keys] + ([config.recording] if config.recording else [])


def make_trajectory(path: LoopPath, config: SynthConfig, split: str) -> Trajectory:
    """The mapping or query recording of ``config`` along ``path``.

    Mapping: on the loop, constant speed, small heading noise. Query: offset by
    ``query_offset`` towards the inside, starting at a random point, varying speed, larger
    heading noise and lateral wobble.
    """
    if split not in SPLITS:
        raise SeglocError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    query = split == "query"
    count = config.num_query if query else config.num_mapping
    rng = np.random.default_rng(_stream(config, 2, SPLITS.index(split)))
    laps = config.query_laps if query else config.mapping_laps
    tau = np.arange(count) / max(count, 1)
    start = rng.uniform(0.0, 1.0) if query else 0.0
    if query and config.speed_variation > 0:
        cycles = float(rng.integers(1, 4))
        phi = rng.uniform(0, 2 * np.pi)
        wave = config.speed_variation * (np.sin(2 * np.pi * cycles * tau + phi) - np.sin(phi)) / (2 * np.pi * cycles)
        tau = tau + wave
    arc = path.length * (start + laps * tau)
    offset = config.query_offset if query else 0.0
    inner = LoopPath(path.half_x - offset, path.half_y - offset, max(path.radius - offset, 0.0)) if offset else path
    xy, heading = inner.sample(arc * inner.length / path.length)
    phase = 2 * np.pi * laps * tau
    wobble = _smooth_noise(rng, phase * 3, 0.05 if query else 0.01)
    xy = xy + wobble[:, None] * np.stack([-np.sin(heading), np.cos(heading)], axis=1)
    noise_deg = config.query_heading_noise_deg if query else config.mapping_heading_noise_deg
    yaw = heading + np.radians(_smooth_noise(rng, phase * 4, noise_deg))
    start_time = config.start_time + (3600.0 if query else 0.0) + 86400.0 * config.recording
    timestamps = start_time + np.arange(count) / config.frame_rate
    world_from_base = [_planar_pose(x, y, a) for (x, y), a in zip(xy, yaw)]
    odom_from_base = _odometry(xy, yaw, config.odometry_scale_noise, config.odometry_yaw_drift_deg, rng) if count else []
    return Trajectory(timestamps, world_from_base, odom_from_base)


def visual_odometry(cam_from_world: list[Rigid3], drift: float, rng: np.random.Generator) -> tuple[list[Rigid3], Sim3]:
    """A camera trajectory as a drifting monocular visual odometry records it: ``cam_from_odom`` and ``odom_from_world``.

    The true camera motion is integrated with a heading drift about the world's vertical of
    ``drift`` degrees per metre travelled, a scale drift of ``drift`` percent per metre (sign
    drawn) and a small random walk (0.2 % of each step), from the first pose; the drifted
    trajectory is then expressed in a random frame ``odom_from_world`` (uniform rotation,
    origin within a few metres, scale log-uniform in [0.5, 2]).

    Args:
        cam_from_world: (N,) true poses, in recording order.
        drift: degrees (heading) and percent (scale) per metre.
        rng: the random stream.

    Returns:
        (N,) ``cam_from_odom`` and the Sim(3) ``odom_from_world`` the drift-free start is expressed in.
    """
    from segloc.geometry.transforms import axis_angle_to_matrix

    heading_rate = np.radians(drift)
    scale_rate = 0.01 * drift * rng.choice([-1.0, 1.0])
    centers = np.array([pose.center for pose in cam_from_world]).reshape(-1, 3)
    heading, scale = 0.0, 1.0
    drifted = []
    position = centers[0] if len(centers) else np.zeros(3)
    for i, pose in enumerate(cam_from_world):
        if i:
            step = centers[i] - centers[i - 1]
            length = float(np.linalg.norm(step))
            heading += heading_rate * length
            scale *= 1.0 + scale_rate * length
            position = position + scale * axis_angle_to_matrix(np.array([0.0, 0.0, heading])) @ step + rng.normal(0.0, 0.002 * length, 3)
        world_from_cam_rotation = axis_angle_to_matrix(np.array([0.0, 0.0, heading])) @ pose.rotation.T
        drifted.append(Rigid3.from_rotation(world_from_cam_rotation.T, -world_from_cam_rotation.T @ position))
    axis = rng.normal(size=3)
    rotation = axis_angle_to_matrix(axis / np.linalg.norm(axis) * rng.uniform(0.0, np.pi))
    odom_from_world = Sim3.from_rotation(rotation, rng.normal(0.0, 3.0, 3), float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))))
    return [odom_from_world.transform_pose(pose) for pose in drifted], odom_from_world


# --- generation ----------------------------------------------------------------------------


def _pose_list(pose: Rigid3) -> list[float]:
    """[qw, qx, qy, qz, tx, ty, tz]."""
    return [float(v) for v in (*pose.quat_wxyz, *pose.translation)]


def _pose_from_list(values: list[float], where: str) -> Rigid3:
    if len(values) != 7:
        raise SeglocError(f"{where}: expected 7 numbers qw qx qy qz tx ty tz, got {len(values)}")
    return Rigid3(np.asarray(values[:4], float), np.asarray(values[4:], float))


def _scene_description(
    config: SynthConfig, layout, camera: Camera, frames: dict[str, list[dict]], scene=None, change=None, odom_from_world=None
) -> dict[str, Any]:
    """``scene.json``; ``scene``: the scene as this recording saw it (default ``layout.scene``), ``change``: what changed,
    ``odom_from_world``: the frame of odometry mapping poses."""
    scene = scene or layout.scene
    values = config_to_dict(config)
    for key in ("recording", "change"):  # recording 0 of an unchanged place describes itself as it always did
        if not values[key]:
            values.pop(key)
    if values["odometry_drift"] is None:
        values.pop("odometry_drift")
    surfaces = []
    for quad in scene.quads:
        label = int(np.bincount(quad.texture.labels.ravel()).argmax())
        surfaces.append({"name": quad.name, "label": LABELS[label], "corners": quad.corners().round(6).tolist()})
    description = {
        "format": "segloc-synthetic",
        "version": FORMAT_VERSION,
        "scene": config.scene,
        "seed": int(config.seed),
        "config": values,
        "labels": {str(k): v for k, v in LABELS.items()},
        "label_colors": {str(k): list(v) for k, v in LABEL_COLORS.items()},
        "camera": camera.to_dict(),
        "base_from_cam": _pose_list(config.mount.base_from_cam()),
        "pose_format": "qw qx qy qz tx ty tz; world_from_base: base_link in the world (map) frame; odom_from_base: drifting odometry",
        "depth_format": "uint16 PNG, millimetres along the optical axis, 0 = no surface or beyond 65.535 m",
        "frames": frames,
        "loop": {"half_x": layout.path.half_x, "half_y": layout.path.half_y, "radius": layout.path.radius},
        "lamps": layout.scene.lamps.round(6).tolist(),
        "surfaces": surfaces,
    }
    if change is not None and config.change > 0:
        description["change"] = change.to_dict()
    if odom_from_world is not None:
        description["odometry"] = {
            "mapping_poses": "mapping.txt: cam_from_odom (drifting visual odometry); mapping_groundtruth.txt: cam_from_world",
            "drift_per_metre": {"heading_deg": config.odometry_drift, "scale_percent": config.odometry_drift},
            "odom_from_world_at_start": odom_from_world.as_dict(),
        }
    return description


def _depth_millimetres(depth: np.ndarray) -> np.ndarray:
    """(H, W) uint16 millimetres from (H, W) float metres; 0 where none or out of range."""
    mm = np.round(depth.astype(np.float64) * 1000.0)
    return np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)


def generate_scene(config: SynthConfig, out_dir: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Render a synthetic scene's mapping and query recordings into a dataset folder.

    Args:
        config: what to render (see :class:`SynthConfig`).
        out_dir: the dataset folder to write; written atomically (complete or absent).
        overwrite: replace ``out_dir`` if it is a dataset folder (or empty); any other folder is
            refused (:func:`segloc.fileio.check_output`).
        progress: show a progress bar over the frames.

    Returns:
        ``out_dir``, holding ``images/{mapping,query}/NNNNNN.png``, ``mapping.txt``,
        ``query.txt``, ``labels/``, ``depth/`` and ``scene.json`` (and ``mapping_groundtruth.txt``
        with ``odometry_drift``).
    """
    from tqdm import tqdm

    if not isinstance(config, SynthConfig):
        raise SeglocError(f"generate_scene needs a SynthConfig, got {type(config).__name__}")
    out_dir = Path(out_dir)
    check_output(out_dir, "replace", overwrite=overwrite, replaceable=is_dataset_folder, what="dataset folder")
    logger.info("synthetic scene: %s", json.dumps(config_to_dict(config)))
    start = time.perf_counter()
    layout = build_scene(config.scene, config.seed)
    changed_scene, change = changed_variant(layout.scene, config.change, config.seed, config.recording)
    if config.change > 0:
        logger.info("changed place: %d areas re-textured or moved (%d furniture groups moved)", len(change.regions), len(change.moved))
    camera = config.camera()
    base_from_cam = config.mount.base_from_cam()
    appearances = {"mapping": config.mapping_appearance, "query": config.query_appearance}
    prepared = {}
    for split, appearance in appearances.items():
        same = [s for s in prepared if appearances[s] == appearance]
        prepared[split] = (
            prepared[same[0]] if same else prepare_scene(seasonal_variant(changed_scene, appearance.season, config.seed), appearance)
        )
    trajectories = {split: make_trajectory(layout.path, config, split) for split in SPLITS}
    logger.info(
        "built scene %s (%d surfaces, loop %.1f m) in %.1f s",
        config.scene,
        len(layout.scene.quads),
        layout.path.length,
        time.perf_counter() - start,
    )

    work = temp_dir_beside(out_dir, "synth")
    try:
        records: dict[str, list[ImageRecord]] = {split: [] for split in SPLITS}
        frames: dict[str, list[dict]] = {split: [] for split in SPLITS}
        total = config.num_mapping + config.num_query
        with tqdm(total=total, desc=f"render {config.scene}", unit="frame", disable=not progress) as bar:
            for split_index, split in enumerate(SPLITS):
                trajectory = trajectories[split]
                for i, (stamp, world_from_base, odom_from_base) in enumerate(
                    zip(trajectory.timestamps, trajectory.world_from_base, trajectory.odom_from_base)
                ):
                    name = f"{split}/{i:06d}.png"
                    cam_from_world = (world_from_base * base_from_cam).inverse()
                    view = render_view(prepared[split], camera, cam_from_world, np.random.default_rng(_stream(config, 3, split_index, i)))
                    save_image(work / "images" / name, view.image)
                    save_image(work / "labels" / name, view.labels)
                    save_image(work / "depth" / name, _depth_millimetres(view.depth))
                    records[split].append(ImageRecord(name, cam_from_world, camera, float(stamp)))
                    frames[split].append(
                        {
                            "name": name,
                            "timestamp": float(stamp),
                            "world_from_base": _pose_list(world_from_base),
                            "odom_from_base": _pose_list(odom_from_base),
                        }
                    )
                    bar.update(1)
        odom_from_world = None
        mapping_records = records["mapping"]
        if config.odometry_drift is not None:
            cam_from_odom, odom_from_world = visual_odometry(
                [r.cam_from_world for r in mapping_records], config.odometry_drift, np.random.default_rng(_stream(config, 5))
            )
            mapping_records = [ImageRecord(r.name, pose, r.camera, r.timestamp) for r, pose in zip(mapping_records, cam_from_odom)]
        dataset = write_dataset(work / "dataset", mapping_records, records["query"], source_image_dir=work / "images")
        if odom_from_world is not None:
            write_image_list(dataset / GROUNDTRUTH_FILE, records["mapping"])
        os.replace(work / "labels", dataset / "labels")
        os.replace(work / "depth", dataset / "depth")
        (dataset / "scene.json").write_text(
            json.dumps(_scene_description(config, layout, camera, frames, changed_scene, change, odom_from_world), indent=1) + "\n"
        )
        if out_dir.exists():
            os.replace(out_dir, work / "old")
            os.replace(dataset, out_dir)
        else:
            os.replace(dataset, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "wrote %s: %d mapping + %d query frames in %.1f s", out_dir, config.num_mapping, config.num_query, time.perf_counter() - start
    )
    return out_dir


# --- reading back --------------------------------------------------------------------------


@dataclass
class SceneFrame:
    """One recorded frame of a synthetic scene (from ``scene.json``).

    Attributes:
        name: image name under ``images/`` (also under ``labels/`` and ``depth/``).
        timestamp: seconds.
        world_from_base: ground truth of ``base_link`` in the world (``map``) frame.
        odom_from_base: drifting odometry of ``base_link``.
    """

    name: str
    timestamp: float
    world_from_base: Rigid3
    odom_from_base: Rigid3


def read_scene_info(dataset_dir: str | Path) -> dict[str, Any]:
    """The parsed ``scene.json`` of a synthetic dataset folder."""
    path = Path(dataset_dir) / "scene.json"
    if not path.is_file():
        raise SeglocError(f"{dataset_dir} is not a synthetic scene folder: scene.json is missing (generate one with generate_scene)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SeglocError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != "segloc-synthetic":
        raise SeglocError(f"{path} is not a segloc synthetic scene description")
    if info.get("version") != FORMAT_VERSION:
        raise SeglocError(
            f"{path} has format version {info.get('version')}, this code reads version {FORMAT_VERSION}; regenerate the scene"
        )
    return info


def read_scene_frames(dataset_dir: str | Path, split: str = "query") -> tuple[list[SceneFrame], Rigid3]:
    """The frames of one recording and ``base_from_cam`` from a synthetic dataset folder."""
    if split not in SPLITS:
        raise SeglocError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    info = read_scene_info(dataset_dir)
    where = f"{Path(dataset_dir) / 'scene.json'}"
    frames = [
        SceneFrame(
            f["name"], float(f["timestamp"]), _pose_from_list(f["world_from_base"], where), _pose_from_list(f["odom_from_base"], where)
        )
        for f in info["frames"][split]
    ]
    return frames, _pose_from_list(info["base_from_cam"], where)


def read_mapping_groundtruth(dataset_dir: str | Path) -> list[ImageRecord]:
    """The true mapping poses of a synthetic recording: ``mapping_groundtruth.txt`` when its ``mapping.txt`` holds odometry, else ``mapping.txt``."""
    path = Path(dataset_dir) / GROUNDTRUTH_FILE
    return read_image_list(path) if path.is_file() else read_dataset(dataset_dir).mapping


def write_scene_bag(
    dataset_dir: str | Path, bag_path: str | Path, split: str = "query", storage: str | None = None, bag_config: Any = None
) -> Path:
    """Write one recording of a synthetic scene as a rosbag2: images, camera info, odometry, TF, ground truth.

    Args:
        dataset_dir: a folder written by :func:`generate_scene`.
        bag_path: the bag to write (must not exist).
        split: ``mapping`` or ``query``.
        storage: rosbag2 storage plugin (``sqlite3`` or ``mcap``); None keeps the one of ``bag_config``.
        bag_config: a :class:`segloc.data.rosbag.BagWriteConfig` (topics, frames, compression);
            None for the defaults.

    Returns:
        The bag path returned by :func:`segloc.data.rosbag.write_bag`.
    """
    from segloc.data.rosbag import BagFrame, BagWriteConfig, write_bag

    frames, base_from_cam = read_scene_frames(dataset_dir, split)
    dataset = read_dataset(dataset_dir)
    cameras = {r.name: r.camera for r in (dataset.mapping if split == "mapping" else dataset.query)}
    missing = [f.name for f in frames if f.name not in cameras]
    if missing:
        raise SeglocError(f"{dataset_dir}: scene.json lists {len(missing)} {split} frame(s) missing from {split}.txt, e.g. {missing[0]}")
    bag_frames = (BagFrame(f.timestamp, dataset.load_image(f.name), cameras[f.name], f.world_from_base, f.odom_from_base) for f in frames)
    bag_config = bag_config or BagWriteConfig()
    if storage is not None:
        bag_config = replace(bag_config, storage=storage)
    return write_bag(bag_path, bag_frames, base_from_cam, bag_config)
