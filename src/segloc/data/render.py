"""Ray casting of textured rectangles: the renderer behind the synthetic scenes.

A :class:`Scene` is a list of :class:`Quad`: planar rectangles carrying a :class:`Texture` (an
RGB image and a per-texel label image at a metric texel size). A view is rendered by casting
one ray per pixel centre against every quad (vectorised over the pixels of the quad's
projected bounding box), keeping the nearest hit, and sampling the hit quad's texture at its
(u, v) coordinates: trilinear (mip-mapped) for colour, nearest for labels.

Lighting is static and baked into the textures once per :class:`AppearanceConfig`
(:func:`prepare_scene`): ambient + a directional "sun" + point lamps of the scene, tinted by the
condition's colour gain; a frame then costs ray casting, texture sampling and the sensor
effects (vignetting, defocus and motion blur, shot and read noise).

Quads are one-sided: a quad is seen from the side its normal ``axis_v x axis_u`` points to, so a
texture image appears unmirrored (column index along ``axis_u``, row index along ``axis_v``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

NEAR_PLANE = 0.05  # metres; surfaces closer than this to the camera are clipped
_REMAP_ROW = 4096  # cv2.remap needs maps narrower than 32767 columns


@dataclass(frozen=True)
class Panel:
    """A region of a texture that a season change may repaint (a poster, a sign).

    Attributes:
        kind: what the region shows (``poster``, ``sign``).
        rect: (row0, col0, row1, col1) texel bounds, end exclusive.
    """

    kind: str
    rect: tuple[int, int, int, int]


@dataclass
class Texture:
    """A texture of metric resolution.

    Attributes:
        color: (H, W, 3) uint8 RGB albedo.
        labels: (H, W) uint8 semantic label id of every texel.
        texel_size: metres per texel.
        material: the painter that made the background (``plaster``, ``asphalt``, ...).
        panels: repaintable regions (posters, signs).
    """

    color: np.ndarray
    labels: np.ndarray
    texel_size: float
    material: str = ""
    panels: list[Panel] = field(default_factory=list)


@dataclass
class Quad:
    """A textured rectangle ``origin + a * axis_u + b * axis_v`` with ``a, b`` in [0, 1].

    Attributes:
        origin: (3,) world position of the texture's top-left corner (texel row 0, column 0).
        axis_u: (3,) edge along the texture's columns (its length is the width in metres).
        axis_v: (3,) edge along the texture's rows, orthogonal to ``axis_u``.
        texture: what the rectangle shows.
        name: a readable name (``wall_north``, ``shelf_3_front``).
    """

    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    texture: Texture
    name: str = ""

    @property
    def normal(self) -> np.ndarray:
        """(3,) unit normal of the visible side."""
        n = np.cross(self.axis_v, self.axis_u)
        return n / np.linalg.norm(n)

    def corners(self) -> np.ndarray:
        """(4, 3) corners in the order origin, +u, +u+v, +v."""
        o, u, v = self.origin, self.axis_u, self.axis_v
        return np.stack([o, o + u, o + u + v, o + v])


@dataclass
class Scene:
    """A static 3D scene: textured quads, light sources, what rays hitting nothing see.

    Attributes:
        name: scene kind (``room``, ``corridor``, ``street``, ``office``).
        quads: the surfaces.
        lamps: (K, 4) point lights: world position x, y, z and falloff radius (metres).
        background_label: label of pixels whose ray hits nothing (sky outdoors).
        emissive_label: label of texels that glow with the lamps (lamp panels), or None.
        outdoor: background is a sky gradient rather than black.
    """

    name: str
    quads: list[Quad]
    lamps: np.ndarray
    background_label: int
    emissive_label: int | None = None
    outdoor: bool = False


@dataclass
class AppearanceConfig:
    """Imaging condition of one set of views (mapping or query).

    Attributes:
        exposure: global gain of the image.
        color_gain: (3,) RGB gain (light colour / white balance).
        ambient: uniform light level.
        sun: strength of the directional light (sun outdoors, daylight through windows inside).
        sun_azimuth_deg: direction the sunlight comes from, degrees counter-clockwise from +x.
        sun_elevation_deg: elevation of the sun above the horizon, degrees.
        lamps: strength of the scene's lamps (ceiling lights, street lights).
        lamp_color: (3,) RGB colour of the lamps.
        season: amount of texture change in [0, 1]: vegetation turns autumnal, paint hues
            shift, a share of posters and signs is replaced, leaves and stickers appear.
            Labels and geometry never change.
        noise_std: Gaussian read noise, in 8-bit grey levels.
        shot_noise: signal-dependent noise: standard deviation ``sqrt(shot_noise * level)``.
        motion_blur: length in pixels of a horizontal motion-blur kernel (0: none).
        defocus_blur: Gaussian defocus blur sigma in pixels (0: none).
        vignetting: relative darkening of the image corners in [0, 1).
    """

    exposure: float = option(1.0, ge=0)
    color_gain: tuple[float, float, float] = option((1.0, 1.0, 1.0), ge=0)
    ambient: float = option(0.6, ge=0)
    sun: float = option(0.35, ge=0)
    sun_azimuth_deg: float = 35.0
    sun_elevation_deg: float = option(50.0, ge=-90, le=90)
    lamps: float = option(0.3, ge=0)
    lamp_color: tuple[float, float, float] = option((1.0, 0.92, 0.8), ge=0)
    season: float = option(0.0, ge=0, le=1)
    noise_std: float = option(1.0, ge=0)
    shot_noise: float = option(0.0, ge=0)
    motion_blur: float = option(0.0, ge=0)
    defocus_blur: float = option(0.0, ge=0)
    vignetting: float = option(0.15, ge=0, lt=1)

    def __post_init__(self) -> None:
        self.color_gain = tuple(float(c) for c in self.color_gain)  # type: ignore[assignment]
        self.lamp_color = tuple(float(c) for c in self.lamp_color)  # type: ignore[assignment]
        check_options(self, "appearance")
        if len(self.color_gain) != 3 or len(self.lamp_color) != 3:
            raise SeglocError(f"appearance colour_gain and lamp_color need 3 values (R, G, B), got {self.color_gain} and {self.lamp_color}")


@dataclass
class RenderedView:
    """One rendered frame.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) uint8 label ids.
        depth: (H, W) float32 depth along the optical axis in metres, 0 where no surface.
    """

    image: np.ndarray
    labels: np.ndarray
    depth: np.ndarray


def sun_direction(appearance: AppearanceConfig) -> np.ndarray:
    """(3,) unit vector from the scene towards the sun (world frame, z up)."""
    az, el = np.radians(appearance.sun_azimuth_deg), np.radians(appearance.sun_elevation_deg)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def _irradiance(points: np.ndarray, normal: np.ndarray, lamps: np.ndarray, appearance: AppearanceConfig) -> np.ndarray:
    """RGB light (N, 3) reaching surface points (N, 3) of normal (3,), before exposure."""
    light = np.full((len(points), 3), appearance.ambient + appearance.sun * max(0.0, float(normal @ sun_direction(appearance))))
    if appearance.lamps > 0 and len(lamps):
        received = np.zeros(len(points))
        for x, y, z, radius in lamps:
            to_lamp = np.array([x, y, z]) - points
            dist = np.linalg.norm(to_lamp, axis=1) + 1e-6
            received += np.clip(to_lamp @ normal / dist, 0.0, None) / (1.0 + (dist / radius) ** 2)
        light += appearance.lamps * received[:, None] * np.asarray(appearance.lamp_color)
    return light


def light_texture(quad: Quad, lamps: np.ndarray, appearance: AppearanceConfig, emissive_label: int | None) -> np.ndarray:
    """The quad's texture lit under ``appearance``: (H, W, 3) uint8 RGB after exposure and colour gain."""
    tex = quad.texture
    h, w = tex.labels.shape
    width_m, height_m = np.linalg.norm(quad.axis_u), np.linalg.norm(quad.axis_v)
    step = max(0.1, max(width_m, height_m) / 96)  # light varies slowly: a coarse light map suffices
    nu, nv = max(2, int(np.ceil(width_m / step)) + 1), max(2, int(np.ceil(height_m / step)) + 1)
    a, b = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv))
    points = quad.origin + a.reshape(-1, 1) * quad.axis_u + b.reshape(-1, 1) * quad.axis_v
    light = _irradiance(points, quad.normal, lamps, appearance).reshape(nv, nu, 3).astype(np.float32)
    light = cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)
    gain = np.float32(appearance.exposure) * np.asarray(appearance.color_gain, dtype=np.float32)
    lit = tex.color.astype(np.float32) * (light * gain)
    if emissive_label is not None and appearance.lamps > 0:
        glow = tex.labels == emissive_label
        if glow.any():
            emission = 255.0 * appearance.lamps * 2.0 * np.asarray(appearance.lamp_color, np.float32) * gain
            lit[glow] += emission * (tex.color[glow].astype(np.float32) / 255.0)
    return np.clip(lit + 0.5, 0, 255).astype(np.uint8)


def mip_pyramid(image: np.ndarray, min_size: int = 4) -> list[np.ndarray]:
    """Successively halved images (level 0 = ``image``) until a side would drop below ``min_size``."""
    levels = [image]
    while min(levels[-1].shape[:2]) >= 2 * min_size:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


class PreparedScene:
    """A scene lit for one appearance: quad geometry as arrays and mip-mapped lit textures."""

    def __init__(self, scene: Scene, appearance: AppearanceConfig):
        self.scene = scene
        self.appearance = appearance
        quads = scene.quads
        self.origins = np.array([q.origin for q in quads], dtype=np.float64).reshape(-1, 3)
        self.axes_u = np.array([q.axis_u for q in quads], dtype=np.float64).reshape(-1, 3)
        self.axes_v = np.array([q.axis_v for q in quads], dtype=np.float64).reshape(-1, 3)
        self.normals = np.array([q.normal for q in quads], dtype=np.float64).reshape(-1, 3)
        self.texel_sizes = np.array([q.texture.texel_size for q in quads], dtype=np.float64)
        self.labels = [q.texture.labels for q in quads]
        self.mips = [mip_pyramid(light_texture(q, scene.lamps, appearance, scene.emissive_label)) for q in quads]
        gain = appearance.exposure * np.asarray(appearance.color_gain)
        level = appearance.ambient + appearance.sun
        self.sky_horizon = np.clip(np.array([200.0, 215.0, 230.0]) * level * gain, 0, 255).astype(np.float32)
        self.sky_zenith = np.clip(np.array([80.0, 130.0, 205.0]) * level * gain, 0, 255).astype(np.float32)


def prepare_scene(scene: Scene, appearance: AppearanceConfig) -> PreparedScene:
    """Bake the lighting of ``appearance`` into the scene's textures (once per condition)."""
    if not scene.quads:
        raise SeglocError(f"scene {scene.name!r} has no surfaces to render")
    return PreparedScene(scene, appearance)


def _clip_near(points_cam: np.ndarray, near: float) -> np.ndarray:
    """Clip a convex polygon (N, 3) in the camera frame to ``z >= near`` (Sutherland-Hodgman)."""
    clipped = []
    count = len(points_cam)
    for i in range(count):
        current, following = points_cam[i], points_cam[(i + 1) % count]
        inside_c, inside_f = current[2] >= near, following[2] >= near
        if inside_c:
            clipped.append(current)
        if inside_c != inside_f:
            alpha = (near - current[2]) / (following[2] - current[2])
            clipped.append(current + alpha * (following - current))
    return np.array(clipped).reshape(-1, 3)


@dataclass
class RayHits:
    """Nearest surface per pixel.

    Attributes:
        quad_ids: (H, W) int32 index of the quad hit, -1 for none.
        depth: (H, W) float32 depth along the optical axis (inf for none).
        u, v: (H, W) float32 texture coordinates in [0, 1] of the hit.
        cos_incidence: (H, W) float32 ``-normal . ray`` for the unnormalised ray ``(x, y, 1)``.
    """

    quad_ids: np.ndarray
    depth: np.ndarray
    u: np.ndarray
    v: np.ndarray
    cos_incidence: np.ndarray


def _pinhole_intrinsics(camera: Camera) -> tuple[float, float, float, float]:
    if camera.model not in ("PINHOLE", "SIMPLE_PINHOLE") or camera.has_distortion:
        raise SeglocError(f"the synthetic renderer needs a PINHOLE or SIMPLE_PINHOLE camera, got {camera.model}")
    (fx, fy), (cx, cy) = camera.focal, camera.principal_point
    return fx, fy, cx, cy


def cast_rays(prepared: PreparedScene, camera: Camera, cam_from_world: Rigid3) -> RayHits:
    """Intersect the ray of every pixel centre with the scene's quads, keeping the nearest hit."""
    fx, fy, cx, cy = _pinhole_intrinsics(camera)
    h, w = camera.height, camera.width
    xs = ((np.arange(w) + 0.5 - cx) / fx).astype(np.float32)
    ys = ((np.arange(h) + 0.5 - cy) / fy).astype(np.float32)
    rotation = cam_from_world.rotation
    origins = prepared.origins @ rotation.T + cam_from_world.translation
    axes_u, axes_v, normals = prepared.axes_u @ rotation.T, prepared.axes_v @ rotation.T, prepared.normals @ rotation.T

    hits = RayHits(
        np.full((h, w), -1, np.int32),
        np.full((h, w), np.inf, np.float32),
        np.zeros((h, w), np.float32),
        np.zeros((h, w), np.float32),
        np.ones((h, w), np.float32),
    )
    for k in range(len(origins)):
        o, a_u, a_v, n = origins[k], axes_u[k], axes_v[k], normals[k]
        plane_offset = float(n @ o)  # negative when the camera sees the front side
        if plane_offset >= -1e-9:
            continue
        polygon = _clip_near(np.stack([o, o + a_u, o + a_u + a_v, o + a_v]), NEAR_PLANE)
        if len(polygon) < 3:
            continue
        px = fx * polygon[:, 0] / polygon[:, 2] + cx
        py = fy * polygon[:, 1] / polygon[:, 2] + cy
        c0, c1 = max(0, int(np.floor(px.min())) - 1), min(w, int(np.ceil(px.max())) + 1)
        r0, r1 = max(0, int(np.floor(py.min())) - 1), min(h, int(np.ceil(py.max())) + 1)
        if c1 <= c0 or r1 <= r0:
            continue
        x, y = xs[None, c0:c1], ys[r0:r1, None]
        denom = n[0] * x + (n[1] * y + np.float32(n[2]))  # n . (x, y, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.float32(plane_offset) / denom
        g_u, g_v = a_u / (a_u @ a_u), a_v / (a_v @ a_v)
        u = t * (g_u[0] * x + (g_u[1] * y + np.float32(g_u[2]))) - np.float32(g_u @ o)
        v = t * (g_v[0] * x + (g_v[1] * y + np.float32(g_v[2]))) - np.float32(g_v @ o)
        depth_view = hits.depth[r0:r1, c0:c1]
        closer = (t > NEAR_PLANE) & (t < depth_view) & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
        if not closer.any():
            continue
        np.copyto(depth_view, t, where=closer)
        np.copyto(hits.quad_ids[r0:r1, c0:c1], np.int32(k), where=closer)
        np.copyto(hits.u[r0:r1, c0:c1], u, where=closer)
        np.copyto(hits.v[r0:r1, c0:c1], v, where=closer)
        np.copyto(hits.cos_incidence[r0:r1, c0:c1], -denom, where=closer)
    return hits


def _remap_points(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interpolation: int) -> np.ndarray:
    """Sample ``image`` (H, W[, C]) at N scattered points (cv2 pixel coordinates): (N[, C])."""
    n = len(map_x)
    rows = max(1, -(-n // _REMAP_ROW))
    width = n if rows == 1 else _REMAP_ROW
    maps = np.zeros((2, rows * width), np.float32)
    maps[0, :n], maps[1, :n] = map_x, map_y
    sampled = cv2.remap(image, maps[0].reshape(rows, width), maps[1].reshape(rows, width), interpolation, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(rows * width, *image.shape[2:])[:n]


def shade_hits(prepared: PreparedScene, camera: Camera, cam_from_world: Rigid3, hits: RayHits) -> tuple[np.ndarray, np.ndarray]:
    """Colour (H, W, 3) float32 and labels (H, W) uint8 of the hits; the background gets the sky."""
    fx, fy, cx, cy = _pinhole_intrinsics(camera)
    h, w = camera.height, camera.width
    ids = hits.quad_ids.ravel()
    color = np.zeros((h * w, 3), np.float32)
    labels = np.full(h * w, prepared.scene.background_label, np.uint8)
    order = np.argsort(ids, kind="stable")
    counts = np.bincount(ids + 1, minlength=len(prepared.mips) + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    cols = (np.arange(w, dtype=np.float32) + 0.5 - cx) / fx
    rows = (np.arange(h, dtype=np.float32) + 0.5 - cy) / fy
    focal = 0.5 * (fx + fy)
    depth, u, v, cosine = (a.ravel() for a in (hits.depth, hits.u, hits.v, hits.cos_incidence))
    for k in np.nonzero(counts[1:])[0]:
        pixels = order[starts[k + 1] : starts[k + 2]]
        ray_norm = np.sqrt(cols[pixels % w] ** 2 + rows[pixels // w] ** 2 + 1.0)
        cos_theta = np.maximum(cosine[pixels] / ray_norm, 0.05)
        # Texel footprint of the pixel: distance / focal across, stretched by the obliquity.
        footprint = depth[pixels] * ray_norm / (focal * prepared.texel_sizes[k] * np.sqrt(cos_theta))
        mips = prepared.mips[k]
        level = np.clip(np.log2(np.maximum(footprint, 1.0)), 0, len(mips) - 1)
        base = np.minimum(level.astype(np.int32), len(mips) - 2) if len(mips) > 1 else np.zeros(len(level), np.int32)
        frac = (level - base).astype(np.float32)[:, None]
        pu, pv = u[pixels], v[pixels]
        sampled = np.empty((len(pixels), 3), np.float32)
        for lev in np.unique(base):
            sel = np.nonzero(base == lev)[0]
            fine = mips[lev]
            value = _remap_points(fine, pu[sel] * fine.shape[1] - 0.5, pv[sel] * fine.shape[0] - 0.5, cv2.INTER_LINEAR)
            value = value.astype(np.float32)
            if lev + 1 < len(mips):
                coarse = mips[lev + 1]
                value_c = _remap_points(coarse, pu[sel] * coarse.shape[1] - 0.5, pv[sel] * coarse.shape[0] - 0.5, cv2.INTER_LINEAR)
                value += frac[sel] * (value_c.astype(np.float32) - value)
            sampled[sel] = value
        color[pixels] = sampled
        label_tex = prepared.labels[k]
        labels[pixels] = _remap_points(label_tex, pu * label_tex.shape[1] - 0.5, pv * label_tex.shape[0] - 0.5, cv2.INTER_NEAREST)
    background = order[: starts[1]]
    if len(background):
        if prepared.scene.outdoor:
            rays = np.stack([cols[background % w], rows[background // w], np.ones(len(background), np.float32)], axis=1)
            up = (rays @ cam_from_world.rotation.astype(np.float32))[:, 2] / np.linalg.norm(rays, axis=1)
            blend = np.sqrt(np.clip(up, 0.0, 1.0))[:, None]
            color[background] = prepared.sky_horizon + blend * (prepared.sky_zenith - prepared.sky_horizon)
    return color.reshape(h, w, 3), labels.reshape(h, w)


def apply_blur(color: np.ndarray, defocus_sigma: float, motion_length: float) -> np.ndarray:
    """Defocus (Gaussian, sigma in pixels) then horizontal motion blur (box of ``motion_length`` pixels) of a float image (H, W[, C]).

    Returns a float32 image of the same shape; 0 switches a blur off (a motion blur shorter
    than one pixel is none).
    """
    color = np.asarray(color, np.float32)
    if defocus_sigma > 0:
        color = cv2.GaussianBlur(color, (0, 0), defocus_sigma)
    if motion_length >= 1:
        length = int(round(motion_length))
        kernel = np.full((1, length), 1.0 / length, np.float32)
        color = cv2.filter2D(color, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return color


def add_sensor_noise(signal: np.ndarray, shot_noise: float, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent shot noise and signal-independent read noise on a linear sensor signal (H, W[, C]).

    The standard deviation at a pixel of level ``s`` is ``sqrt(shot_noise * max(s, 0) + read_noise**2)``
    (Poisson photon noise in its Gaussian approximation plus read noise), in the units of
    ``signal``: with ``signal`` in levels of a full scale ``F`` whose full well holds ``N``
    electrons, ``shot_noise = F / N`` and ``read_noise = read_electrons * F / N``. Returns float32,
    unclipped; the draws come from ``rng`` (shot noise first, then read noise).
    """
    signal = np.asarray(signal, np.float32)
    if shot_noise > 0:
        signal = signal + np.sqrt(np.float32(shot_noise) * np.maximum(signal, 0)) * rng.standard_normal(signal.shape, np.float32)
    if read_noise > 0:
        signal = signal + np.float32(read_noise) * rng.standard_normal(signal.shape, np.float32)
    return signal


def apply_sensor_effects(color: np.ndarray, appearance: AppearanceConfig, rng: np.random.Generator) -> np.ndarray:
    """Vignetting, blur and noise on a float image (H, W, 3) in 8-bit levels; returns uint8."""
    h, w = color.shape[:2]
    if appearance.vignetting > 0:
        yy, xx = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32), indexing="ij")
        color = color * (1.0 - np.float32(appearance.vignetting) * 0.5 * (xx * xx + yy * yy))[..., None]
    color = apply_blur(color, appearance.defocus_blur, appearance.motion_blur)
    color = add_sensor_noise(color, appearance.shot_noise, appearance.noise_std, rng)
    return np.clip(color + 0.5, 0, 255).astype(np.uint8)


def render_view(prepared: PreparedScene, camera: Camera, cam_from_world: Rigid3, rng: np.random.Generator) -> RenderedView:
    """Render RGB, labels and depth of the view ``cam_from_world`` of a prepared scene.

    Args:
        prepared: the scene lit for an appearance (:func:`prepare_scene`).
        camera: a PINHOLE or SIMPLE_PINHOLE camera.
        cam_from_world: the pose of the view (OpenCV camera axes).
        rng: the source of the sensor noise (seed it per frame for reproducible images).

    Returns:
        The image (H, W, 3) uint8, labels (H, W) uint8 and depth (H, W) float32 metres.
    """
    hits = cast_rays(prepared, camera, cam_from_world)
    color, labels = shade_hits(prepared, camera, cam_from_world, hits)
    image = apply_sensor_effects(color, prepared.appearance, rng)
    depth = np.where(np.isfinite(hits.depth), hits.depth, 0).astype(np.float32)
    return RenderedView(image, labels, depth)
