"""Layouts of the synthetic scenes: a room, a corridor, a street and an office of random shape, built from a seed.

World frame: z up, the floor / ground at z = 0, the scene centred on the origin. Every scene
also says where a ground robot may drive: a closed :class:`LoopPath` (a rounded rectangle,
counter-clockwise) that stays clear of the furniture.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from segloc.data.render import Quad, Scene, Texture
from segloc.data.textures import (
    LABEL_IDS,
    Canvas,
    add_chips,
    apply_season,
    draw_books,
    draw_cabinet_front,
    draw_car_side,
    draw_cardboard,
    draw_door,
    draw_fixtures,
    draw_notice_board,
    draw_poster,
    draw_text,
    draw_window,
    fill_asphalt,
    fill_bricks,
    fill_brushed,
    fill_planks,
    fill_plaster,
    fill_speckled,
    fill_terrazzo,
    fill_tiles,
    fill_vegetation,
    fill_wallpaper,
    jitter_color,
    paint_artwork,
    random_word,
)
from segloc.errors import SeglocError

L = LABEL_IDS
Painter = Callable[[Canvas], None]


@dataclass(frozen=True)
class LoopPath:
    """A counter-clockwise rounded rectangle centred on the origin, in the ground plane.

    Attributes:
        half_x, half_y: half extents of the rectangle (metres).
        radius: radius of the rounded corners, at most ``min(half_x, half_y)``.
    """

    half_x: float
    half_y: float
    radius: float

    def _pieces(self) -> list[tuple[str, np.ndarray, float, float]]:
        """(kind, start point or arc centre, heading at start, length) of the 8 pieces."""
        hx, hy, r = self.half_x, self.half_y, self.radius
        lx, ly = 2 * (hx - r), 2 * (hy - r)
        arc = 0.5 * np.pi * r
        return [
            ("line", np.array([-hx + r, -hy]), 0.0, lx),
            ("arc", np.array([hx - r, -hy + r]), 0.0, arc),
            ("line", np.array([hx, -hy + r]), 0.5 * np.pi, ly),
            ("arc", np.array([hx - r, hy - r]), 0.5 * np.pi, arc),
            ("line", np.array([hx - r, hy]), np.pi, lx),
            ("arc", np.array([-hx + r, hy - r]), np.pi, arc),
            ("line", np.array([-hx, hy - r]), 1.5 * np.pi, ly),
            ("arc", np.array([-hx + r, -hy + r]), 1.5 * np.pi, arc),
        ]

    @property
    def length(self) -> float:
        return float(sum(p[3] for p in self._pieces()))

    def sample(self, arc_length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (N, 2) and headings (N,) (radians, from +x) at arc lengths (N,) (wrapping)."""
        s = np.mod(np.asarray(arc_length, dtype=np.float64), self.length)
        xy, heading = np.zeros((len(s), 2)), np.zeros(len(s))
        start = 0.0
        for kind, anchor, head, length in self._pieces():
            sel = (s >= start) & (s < start + length) if length > 0 else np.zeros(len(s), bool)
            d = s[sel] - start
            if kind == "line":
                xy[sel] = anchor + d[:, None] * np.array([np.cos(head), np.sin(head)])
                heading[sel] = head
            else:
                angle = head - 0.5 * np.pi + d / self.radius
                xy[sel] = anchor + self.radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
                heading[sel] = head + d / self.radius
            start += length
        return xy, np.mod(heading, 2 * np.pi)


@dataclass
class SceneLayout:
    """A built scene and the loop a robot drives in it."""

    scene: Scene
    path: LoopPath


# --- quad helpers --------------------------------------------------------------------------


def wall_quad(p0, p1, z0: float, z1: float, canvas: Canvas, name: str) -> Quad:
    """Vertical rectangle from ground point p0 to p1 (2,), seen from the right of p0 -> p1."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    return Quad(np.array([*p0, z1]), np.array([*(p1 - p0), 0.0]), np.array([0.0, 0.0, z0 - z1]), canvas.texture(), name)


def horizontal_quad(x0: float, y0: float, x1: float, y1: float, z: float, canvas: Canvas, name: str, up: bool = True) -> Quad:
    """Horizontal rectangle at height z, seen from above (``up``) or from below."""
    if up:
        return Quad(np.array([x0, y1, z]), np.array([x1 - x0, 0, 0.0]), np.array([0, y0 - y1, 0.0]), canvas.texture(), name)
    return Quad(np.array([x0, y0, z]), np.array([x1 - x0, 0, 0.0]), np.array([0, y1 - y0, 0.0]), canvas.texture(), name)


def box_quads(center, size, yaw: float, texel: float, label: int, painters: dict[str, Painter], name: str, z0: float = 0.0) -> list[Quad]:
    """The 4 sides and the top of a box standing at height z0.

    Args:
        center: (2,) ground position of the box centre.
        size: (3,) extents along the box's x, y and z.
        yaw: heading of the box's x axis (radians).
        painters: painter per face ``front`` (+y), ``back`` (-y), ``left`` (-x), ``right`` (+x),
            ``top``; a face without one uses ``default``.
    """
    sx, sy, sz = size
    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    corners = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]]) / 2 @ rot.T + np.asarray(center, float)
    quads = []
    for face, (i, j) in {"back": (0, 1), "right": (1, 2), "front": (2, 3), "left": (3, 0)}.items():
        width = float(np.linalg.norm(corners[j] - corners[i]))
        canvas = Canvas(width, sz, texel, label)
        painters.get(face, painters["default"])(canvas)
        quads.append(wall_quad(corners[i], corners[j], z0, z0 + sz, canvas, f"{name}_{face}"))
    top = Canvas(sx, sy, texel, label)
    painters.get("top", painters["default"])(top)
    quad = Quad(
        np.array([*corners[3], z0 + sz]),
        np.array([*(corners[2] - corners[3]), 0.0]),
        np.array([*(corners[0] - corners[3]), 0.0]),
        top.texture(),
        f"{name}_top",
    )
    return [*quads, quad]


def _place_intervals(
    rng: np.random.Generator, length: float, widths: list[float], taken: list[tuple[float, float]], gap: float
) -> list[float | None]:
    """Random start positions along [0, length] for items of ``widths`` avoiding ``taken`` intervals."""
    starts: list[float | None] = []
    for width in widths:
        start = None
        for _ in range(30):
            s = rng.uniform(gap, max(gap, length - width - gap))
            if all(s + width + gap <= a or s >= b + gap for a, b in taken) and s + width <= length - gap:
                start = s
                taken.append((s, s + width))
                break
        starts.append(start)
    return starts


# --- scenes --------------------------------------------------------------------------------


def _paint_wall(
    canvas: Canvas, rng: np.random.Generator, length: float, height: float, doors: int, windows: int, posters: int
) -> list[tuple[float, float]]:
    """Plaster wall with a skirting board, doors, windows and posters; returns the door intervals."""
    paint = (rng.uniform(170, 235), rng.uniform(165, 230), rng.uniform(150, 225))
    style = int(rng.integers(0, 3))
    if style == 1:
        fill_wallpaper(canvas, rng, paint)
    else:
        fill_plaster(canvas, rng, paint)
    if style == 2:  # wainscot: a lower band of wood or tiles
        band = rng.uniform(0.9, 1.2)
        r0, c0, r1, c1 = canvas.rect(0, height - band, length, band)
        lower = Canvas(length, band, canvas.texel, L["wall"], shape=(r1 - r0, c1 - c0))
        if rng.random() < 0.5:
            fill_planks(lower, rng, [jitter_color(rng, (150, 110, 70), 20), jitter_color(rng, (120, 85, 55), 20)])
        else:
            fill_tiles(lower, rng, rng.uniform(0.1, 0.2), [jitter_color(rng, paint, 20), (230, 230, 225)])
        canvas.color[r0:r1, c0:c1] = lower.color
    r0, c0, r1, c1 = canvas.rect(0, height - 0.1, length, 0.1)
    fill_strip = Canvas(length, 0.1, canvas.texel, L["wall"], shape=(r1 - r0, c1 - c0))
    fill_planks(fill_strip, rng, [(90, 70, 55), (100, 80, 60)])
    canvas.color[r0:r1, c0:c1] = fill_strip.color
    taken: list[tuple[float, float]] = []
    door_widths = [rng.uniform(0.85, 1.3) for _ in range(doors)]
    door_starts = _place_intervals(rng, length, door_widths, taken, 0.3)
    doors_at = []
    for start, width in zip(door_starts, door_widths):
        if start is not None:
            draw_door(canvas, rng, start, height - 2.1, width, 2.1, L["door"])
            doors_at.append((start, start + width))
    window_widths = [rng.uniform(0.9, 1.8) for _ in range(windows)]
    for start, width in zip(_place_intervals(rng, length, window_widths, taken, 0.3), window_widths):
        if start is not None:
            draw_window(canvas, rng, start, height - 2.2, width, 1.3, L["window"])
    poster_widths = [rng.uniform(0.4, 1.2) for _ in range(posters)]
    for start, width in zip(_place_intervals(rng, length, poster_widths, taken, 0.15), poster_widths):
        if start is not None:
            h = width * rng.uniform(0.6, 1.5)
            draw_poster(canvas, rng, start, height - 1.2 - h * rng.uniform(0.3, 0.8) - 0.3, width, h, L["poster"])
    board_widths = [rng.uniform(0.8, 1.6) for _ in range(int(rng.integers(0, 2)) + int(length / 8))]
    for start, width in zip(_place_intervals(rng, length, board_widths, taken, 0.15), board_widths):
        if start is not None:
            board_h = rng.uniform(0.6, 1.0)
            draw_notice_board(canvas, rng, start, height - 1.0 - board_h - rng.uniform(0.1, 0.4), width, board_h, L["poster"])
    for _ in range(int(length / 3)):
        x = rng.uniform(0, length)
        draw_text(canvas, rng, random_word(rng, 2, 5), x, height - rng.uniform(1.4, 2.2), rng.uniform(0.03, 0.08), (60, 60, 70))
    draw_fixtures(canvas, rng, int(length * 1.2))
    return doors_at


def _paint_table_top(canvas: Canvas, rng: np.random.Generator, color: tuple[int, int, int]) -> None:
    """Wooden table top with a few sheets of paper / prints lying on it."""
    fill_planks(canvas, rng, [color])
    width, depth = canvas.width * canvas.texel, canvas.height * canvas.texel
    for _ in range(int(rng.integers(1, 4))):
        draw_poster(canvas, rng, rng.uniform(0, width * 0.7), rng.uniform(0, depth * 0.5), 0.3, 0.21, L["table"])


def _furniture_piece(
    rng: np.random.Generator,
    kind: str,
    center,
    size,
    yaw: float,
    texel: float,
    tag: str,
    wood=((150, 110, 70), (140, 100, 65)),
) -> list[Quad]:
    """The quads of one piece of furniture standing on the floor.

    Args:
        kind: ``shelf`` (books on the front), ``bookcase`` (books on front and back), ``table``,
            ``cabinet``, ``boxes`` (a stack of 1-3 cardboard boxes of side about ``size[0]``,
            each ``size[2]`` high), ``partition`` (a free-standing screen) or ``pillar``.
        center: (2,) ground position; size: (3,) extents along the piece's x, y and z; yaw:
            heading of its x axis (radians); its front faces +y.
        wood: palette of the shelves' wood.
    """
    if kind in ("shelf", "bookcase"):
        painters = {
            "front": lambda c: draw_books(c, rng, L["shelf"]),
            "default": lambda c: fill_planks(c, rng, list(wood)),
        }
        if kind == "bookcase":
            painters["back"] = painters["front"]
        return box_quads(center, size, yaw, texel, L["shelf"], painters, tag)
    if kind in ("table", "cabinet"):
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        painters = {
            "front": lambda c: draw_cabinet_front(c, rng, color),
            "default": lambda c: fill_brushed(c, rng, color),
        }
        if kind == "table":
            painters["top"] = lambda c: _paint_table_top(c, rng, color)
        return box_quads(center, size, yaw, texel, L["table" if kind == "table" else "shelf"], painters, tag)
    if kind == "partition":
        color = _muted_color(rng)
        painters = {"front": lambda c: _paint_partition(c, rng, color), "back": lambda c: _paint_partition(c, rng, color)}
        painters["default"] = lambda c: fill_brushed(c, rng, (150, 150, 155))
        return box_quads(center, size, yaw, texel, L["wall"], painters, tag)
    if kind == "pillar":
        return box_quads(center, size, yaw, texel, L["wall"], {"default": _pillar_painter(rng)}, tag)
    if kind != "boxes":
        raise SeglocError(f"unknown furniture kind {kind!r}")
    width, _, height = size
    quads: list[Quad] = []
    z = 0.0
    for k in range(int(rng.integers(1, 4))):
        side = width * rng.uniform(0.75, 1.0)
        quads += box_quads(
            center,
            (side, side, height),
            yaw + rng.normal(0, 0.1),
            texel,
            L["box"],
            {"default": lambda c: draw_cardboard(c, rng)},
            f"{tag}_{k}",
            z,
        )
        z += height
    return quads


def _furniture(
    rng: np.random.Generator,
    p0,
    p1,
    free: list[tuple[float, float]],
    texel: float,
    name: str,
    max_depth: float,
    wood=((150, 110, 70), (140, 100, 65)),
) -> list[Quad]:
    """Shelves, tables and boxes against the wall p0 -> p1 (the room to its right), outside the ``free`` intervals (taken)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.linalg.norm(p1 - p0))
    direction = (p1 - p0) / length
    inward = np.array([direction[1], -direction[0]])
    yaw = float(np.arctan2(inward[1], inward[0]) - 0.5 * np.pi)
    kinds = rng.choice(["shelf", "table", "boxes"], size=int(rng.integers(1, 4)))
    sizes = {
        "shelf": (rng.uniform(0.8, 1.6), min(0.35, max_depth), rng.uniform(1.5, 2.1)),
        "table": (rng.uniform(1.0, 1.8), min(0.7, max_depth), 0.75),
    }
    quads: list[Quad] = []
    for i, kind in enumerate(kinds):
        width, depth, height = sizes.get(kind, (rng.uniform(0.35, 0.6), min(0.5, max_depth), rng.uniform(0.3, 0.6)))
        (start,) = _place_intervals(rng, length, [width], free, 0.1)
        if start is None:
            continue
        center = p0 + (start + width / 2) * direction + (depth / 2 + 0.03) * inward
        quads += _furniture_piece(rng, str(kind), center, (width, depth, height), yaw, texel, f"{name}_{kind}{i}", wood)
    return quads


def _ceiling(
    rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float, z: float, texel: float, lamp_spacing: float
) -> tuple[Quad, list]:
    """Tiled ceiling with lamp panels (label ``lamp``); returns the quad and the lamps (x, y, z, radius)."""
    canvas = Canvas(x1 - x0, y1 - y0, texel, L["ceiling"])
    fill_speckled(canvas, rng, (rng.uniform(215, 240),) * 3, 0.6, 0.004)
    lamps = []
    nx, ny = max(1, int(round((x1 - x0) / lamp_spacing))), max(1, int(round((y1 - y0) / lamp_spacing)))
    for i in range(nx):
        for j in range(ny):
            cx, cy = x0 + (i + 0.5) * (x1 - x0) / nx, y0 + (j + 0.5) * (y1 - y0) / ny
            r0, c0, r1, c1 = canvas.rect(cx - x0 - 0.3, cy - y0 - 0.6, 0.6, 1.2)
            canvas.color[r0:r1, c0:c1] = (250, 248, 235)
            canvas.color[r0:r1, c0 + (c1 - c0) // 2] = (200, 200, 195)
            canvas.labels[r0:r1, c0:c1] = L["lamp"]
            lamps.append((cx, cy, z - 0.1, 2.5))
    return horizontal_quad(x0, y0, x1, y1, z, canvas, "ceiling", up=False), lamps


def build_room(rng: np.random.Generator) -> SceneLayout:
    """An office-like room of about 8 x 6 x 3 m with furniture along the walls."""
    a, b, height, texel = rng.uniform(3.8, 4.2), rng.uniform(2.8, 3.2), 3.0, 0.006
    corners = [(-a, -b), (-a, b), (a, b), (a, -b)]  # clockwise: the room is to the right of each wall
    quads: list[Quad] = []
    for i in range(4):
        p0, p1 = np.array(corners[i]), np.array(corners[(i + 1) % 4])
        length = float(np.linalg.norm(p1 - p0))
        canvas = Canvas(length, height, texel, L["wall"], "plaster")
        doors = _paint_wall(canvas, rng, length, height, int(i in (0, 2)), int(rng.integers(0, 3)), int(rng.integers(3, 6)))
        quads.append(wall_quad(p0, p1, 0.0, height, canvas, f"wall_{i}"))
        quads += _furniture(rng, p0, p1, [(s - 0.3, e + 0.3) for s, e in doors], texel, f"wall{i}", 0.8)
    floor = Canvas(2 * a, 2 * b, texel, L["floor"], "floor")
    if rng.random() < 0.5:
        fill_planks(floor, rng, [(165, 120, 75), (150, 105, 65), (180, 135, 90), (135, 95, 60)])
    else:
        fill_tiles(floor, rng, 0.5, [(200, 195, 185), (120, 115, 110), (170, 160, 150)])
        add_chips(floor, rng, 300.0, 0.004, [(60, 55, 50), (230, 225, 215), (140, 110, 90)])
    draw_poster(floor, rng, rng.uniform(1.5, 3.0), rng.uniform(1.5, 2.5), rng.uniform(2.0, 3.5), rng.uniform(1.5, 2.0), L["floor"], "rug")
    quads.append(horizontal_quad(-a, -b, a, b, 0.0, floor, "floor"))
    ceiling, lamps = _ceiling(rng, -a, -b, a, b, height, texel, 2.5)
    quads.append(ceiling)
    scene = Scene("room", quads, np.array(lamps, float).reshape(-1, 4), L["void"], L["lamp"], outdoor=False)
    return SceneLayout(scene, LoopPath(a - 1.8, b - 1.8, 1.0))


def build_corridor(rng: np.random.Generator) -> SceneLayout:
    """A 25 m corridor, 2.4 m wide: doors, posters, notice boards, benches and cabinets."""
    a, b, height, texel = rng.uniform(12.0, 13.5), 1.2, 2.7, 0.006
    corners = [(-a, -b), (-a, b), (a, b), (a, -b)]
    quads: list[Quad] = []
    for i in range(4):
        p0, p1 = np.array(corners[i]), np.array(corners[(i + 1) % 4])
        length = float(np.linalg.norm(p1 - p0))
        long_wall = length > 5
        canvas = Canvas(length, height, texel, L["wall"], "plaster")
        doors = _paint_wall(
            canvas, rng, length, height, int(length / 4) if long_wall else 1, int(rng.integers(0, 2)), int(length / 2.2) + 1
        )
        quads.append(wall_quad(p0, p1, 0.0, height, canvas, f"wall_{i}"))
        if long_wall:
            quads += _furniture(rng, p0, p1, [(s - 0.3, e + 0.3) for s, e in doors], texel, f"wall{i}", 0.35)
    floor = Canvas(2 * a, 2 * b, texel, L["floor"], "floor")
    fill_terrazzo(floor, rng, (rng.uniform(150, 200),) * 3, [(40, 40, 45), (230, 225, 210), (170, 80, 60), (90, 120, 150), (200, 170, 90)])
    quads.append(horizontal_quad(-a, -b, a, b, 0.0, floor, "floor"))
    ceiling, lamps = _ceiling(rng, -a, -b, a, b, height, texel, 3.0)
    quads.append(ceiling)
    scene = Scene("corridor", quads, np.array(lamps, float).reshape(-1, 4), L["void"], L["lamp"], outdoor=False)
    return SceneLayout(scene, LoopPath(a - 2.0, 0.5, 0.5))


def _paint_facade(canvas: Canvas, rng: np.random.Generator, width: float, height: float) -> None:
    """A building front: bricks / render / concrete, storeys of windows, a shop front with a sign."""
    material = int(rng.integers(0, 3))
    if material == 0:
        fill_bricks(canvas, rng, [(150, 70, 50), (170, 90, 60), (130, 60, 45), (160, 100, 80)])
    elif material == 1:
        fill_plaster(canvas, rng, (rng.uniform(150, 240), rng.uniform(140, 230), rng.uniform(120, 210)))
    else:
        fill_speckled(canvas, rng, (rng.uniform(130, 190),) * 3, rng.uniform(1.2, 2.5), 0.003)
    for _ in range(int(width * height / 12)):  # weathering streaks, tags and small signs
        x, y = rng.uniform(0, width), rng.uniform(0, height - 1.0)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            r0, c0, r1, c1 = canvas.rect(x, y, rng.uniform(0.05, 0.2), rng.uniform(0.5, 2.5))
            canvas.color[r0:r1, c0:c1] = (canvas.color[r0:r1, c0:c1] * rng.uniform(0.6, 0.85)).astype(np.uint8)
        elif kind == 1:
            draw_text(
                canvas,
                rng,
                random_word(rng, 2, 6),
                x,
                height - rng.uniform(0.5, 2.0),
                rng.uniform(0.15, 0.4),
                jitter_color(rng, rng.integers(0, 255, 3), 20),
            )
        else:
            draw_poster(canvas, rng, x, y, rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.5), L["sign"], "sign")
    storey = rng.uniform(2.8, 3.4)
    window_w, window_h = rng.uniform(0.9, 1.6), rng.uniform(1.3, 1.9)
    count = max(1, int(width / (window_w * rng.uniform(1.7, 2.6))))
    xs = (np.arange(count) + 0.5) * width / count - window_w / 2
    for level in range(1, int(height / storey)):
        top = height - (level + 1) * storey + (storey - window_h) * 0.5
        for x in xs + rng.normal(0, 0.05, count):
            if rng.random() < 0.93:
                draw_window(canvas, rng, x, top, window_w, window_h, L["window"])
    shop = rng.uniform(0.4, 0.7) * width
    draw_window(canvas, rng, 0.5, height - 2.6, shop, 2.2, L["window"])
    draw_door(canvas, rng, shop + 1.0, height - 2.3, 1.1, 2.3, L["door"])
    draw_poster(canvas, rng, 0.5, height - 3.4, shop, 0.6, L["sign"], "sign")
    for _ in range(int(rng.integers(0, 4))):
        draw_poster(
            canvas, rng, rng.uniform(shop + 2.2, max(shop + 2.3, width - 1.0)), height - rng.uniform(1.6, 2.2), 0.6, 0.85, L["poster"]
        )


def build_street(rng: np.random.Generator) -> SceneLayout:
    """A 60 m street: building fronts on both sides, road, sidewalks, lamp posts, hedges, cars."""
    half_len, road, walk, texel = 30.0, 4.0, 3.0, 0.015
    front = road + walk
    quads: list[Quad] = []
    for side in (-1, 1):
        x = -half_len
        while x < half_len - 1e-6:
            width = min(half_len - x, rng.uniform(8.0, 14.0))
            height = rng.uniform(8.0, 16.0)
            canvas = Canvas(width, height, texel, L["building"], "facade")
            _paint_facade(canvas, rng, width, height)
            p0, p1 = (np.array([x, side * front]), np.array([x + width, side * front]))
            if side < 0:  # seen from the street: the street must lie to the right of p0 -> p1
                p0, p1 = p1, p0
            quads.append(wall_quad(p0, p1, 0.0, height, canvas, f"facade_{side}_{x:.0f}"))
            x += width
    for end in (-1, 1):
        canvas = Canvas(2 * front, 14.0, texel, L["building"], "facade")
        _paint_facade(canvas, rng, 2 * front, 14.0)
        p0, p1 = np.array([end * half_len, end * front]), np.array([end * half_len, -end * front])
        quads.append(wall_quad(p0, p1, 0.0, 14.0, canvas, f"facade_end_{end}"))
    ground_texel = 0.01
    asphalt = Canvas(2 * half_len, 2 * road, ground_texel, L["road"], "asphalt")
    fill_asphalt(asphalt, rng)
    add_chips(asphalt, rng, 150.0, 0.012, [(150, 150, 150), (45, 45, 48), (120, 110, 100)])
    x = -half_len + rng.uniform(0, 3)
    while x < half_len:
        dash = rng.uniform(2.5, 3.5)
        r0, c0, r1, c1 = asphalt.rect(x + half_len, road - 0.06, dash, 0.12)
        asphalt.color[r0:r1, c0:c1] = np.clip(230 + 12 * rng.standard_normal((r1 - r0, c1 - c0, 1)), 0, 255).astype(np.uint8)
        x += dash + rng.uniform(3.0, 6.0)
    quads.append(horizontal_quad(-half_len, -road, half_len, road, 0.0, asphalt, "road"))
    for side in (-1, 1):
        paving = Canvas(2 * half_len, walk, ground_texel, L["sidewalk"], "paving")
        fill_tiles(paving, rng, 0.4, [(175, 170, 165), (150, 145, 140), (190, 180, 170)], grout=(110, 105, 100))
        add_chips(paving, rng, 200.0, 0.006, [(90, 85, 80), (215, 210, 200), (60, 60, 60)])
        y0, y1 = sorted((side * road, side * front))
        quads.append(horizontal_quad(-half_len, y0, half_len, y1, 0.0, paving, f"sidewalk_{side}"))
    lamps = []
    for side in (-1, 1):
        x = -half_len + rng.uniform(3, 8)
        while x < half_len - 3:
            center = (x, side * (road + 0.4))
            quads += box_quads(
                center,
                (0.14, 0.14, 5.0),
                0.0,
                0.01,
                L["pole"],
                {"default": lambda c: fill_brushed(c, rng, (90, 95, 100))},
                f"pole_{side}_{x:.0f}",
            )
            lamps.append((x, side * (road + 0.8), 5.0, 8.0))
            if rng.random() < 0.5:
                quads += box_quads(
                    (x, side * (road + 0.4)),
                    (0.7, 0.04, 0.6),
                    0.0,
                    0.01,
                    L["sign"],
                    {"default": lambda c: draw_poster(c, rng, 0, 0, 0.7, 0.6, L["sign"], "sign")},
                    f"sign_{x:.0f}",
                    2.3,
                )
            x += rng.uniform(10.0, 15.0)
        x = -half_len + rng.uniform(1, 5)
        while x < half_len - 4:
            length = rng.uniform(1.0, 3.0)
            quads += box_quads(
                (x + length / 2, side * (front - 0.5)),
                (length, 0.6, rng.uniform(0.7, 1.2)),
                0.0,
                0.01,
                L["vegetation"],
                {"default": lambda c: fill_vegetation(c, rng)},
                f"hedge_{x:.0f}",
            )
            x += length + rng.uniform(3.0, 9.0)
        x = -half_len + rng.uniform(4, 10)
        while x < half_len - 8:
            painters = {"default": lambda c: draw_car_side(c, rng), "top": lambda c: fill_brushed(c, rng, (60, 60, 70))}
            quads += box_quads((x, side * (road - 0.9)), (4.2, 1.8, 1.4), 0.0, 0.01, L["vehicle"], painters, f"car_{side}_{x:.0f}", 0.15)
            x += rng.uniform(6.0, 16.0)
    scene = Scene("street", quads, np.array(lamps, float).reshape(-1, 4), L["sky"], None, outdoor=True)
    return SceneLayout(scene, LoopPath(half_len - 6.0, 1.5, 1.5))


# --- office: random footprint, furniture along the walls and free-standing -----------------


@dataclass(frozen=True)
class GroundRect:
    """A rectangle in the ground plane (the footprint of a piece of furniture).

    Attributes:
        center: (2,) position (metres).
        size: (2,) extents along the rectangle's x and y axes (metres).
        yaw: heading of its x axis, radians counter-clockwise from the world +x.
    """

    center: tuple[float, float]
    size: tuple[float, float]
    yaw: float

    def _axes(self) -> np.ndarray:
        """(2, 2) rows: the rectangle's x and y axes in the world."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, s], [-s, c]])

    def corners(self) -> np.ndarray:
        """(4, 2) corners, counter-clockwise."""
        half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * np.asarray(self.size, float) / 2
        return half @ self._axes() + np.asarray(self.center, float)

    def distance(self, points) -> np.ndarray:
        """(N,) distance of ground points (N, 2) to the rectangle, 0 inside."""
        local = (np.asarray(points, float).reshape(-1, 2) - np.asarray(self.center, float)) @ self._axes().T
        outside = np.maximum(np.abs(local) - np.asarray(self.size, float) / 2, 0.0)
        return np.linalg.norm(outside, axis=1)

    def overlaps(self, other: GroundRect, gap: float = 0.0) -> bool:
        """Whether the two rectangles come closer than ``gap`` along some axis (separating axis test)."""
        mine, theirs = GroundRect(self.center, tuple(np.add(self.size, 2 * gap)), self.yaw).corners(), other.corners()
        for axis in (*self._axes(), *other._axes()):
            a, b = mine @ axis, theirs @ axis
            if a.max() <= b.min() or b.max() <= a.min():
                return False
        return True


def _paint_partition(canvas: Canvas, rng: np.random.Generator, color) -> None:
    """Fabric screen of an office partition with pinned sheets or a notice board."""
    fill_speckled(canvas, rng, color, 10.0, 0.01)
    width, height = canvas.width * canvas.texel, canvas.height * canvas.texel
    if rng.random() < 0.5:
        draw_notice_board(canvas, rng, rng.uniform(0.05, width * 0.4), rng.uniform(0.1, 0.4), width * 0.5, height * 0.4, L["poster"])
    for _ in range(int(rng.integers(0, 4))):
        draw_poster(canvas, rng, rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.6), 0.21, 0.3, L["poster"])


def _pillar_painter(rng: np.random.Generator) -> Painter:
    """A painter for the sides of a pillar: plaster, tiles or bricks of a random palette, maybe a poster."""
    style = int(rng.integers(0, 3))
    base = jitter_color(rng, (200, 195, 185), 30)

    def paint(canvas: Canvas) -> None:
        if style == 0:
            fill_plaster(canvas, rng, base)
        elif style == 1:
            fill_tiles(canvas, rng, rng.uniform(0.1, 0.3), [base, jitter_color(rng, base, 40)])
        else:
            fill_bricks(canvas, rng, [jitter_color(rng, (150, 80, 55), 20) for _ in range(3)])
        if rng.random() < 0.4:
            width = canvas.width * canvas.texel
            draw_poster(canvas, rng, 0.1 * width, rng.uniform(0.6, 1.2), 0.8 * width, 0.6 * width, L["poster"])

    return paint


def _muted_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour mixed with a random grey (floors and partition fabric are rarely saturated)."""
    grey = rng.uniform(60, 200)
    return tuple(int(v) for v in 0.65 * grey + 0.35 * rng.uniform(0, 255, 3))


def _floor_painter(rng: np.random.Generator) -> Painter:
    """A painter for every floor piece of one room: planks, tiles, terrazzo or carpet of a random palette."""
    style = int(rng.integers(0, 4))
    wood = [jitter_color(rng, (160, 115, 72), 30) for _ in range(4)]
    stone = [_muted_color(rng) for _ in range(3)]
    carpet = _muted_color(rng)
    tile = rng.uniform(0.3, 0.6)

    def paint(canvas: Canvas) -> None:
        if style == 0:
            fill_planks(canvas, rng, wood)
        elif style == 1:
            fill_tiles(canvas, rng, tile, stone)
            add_chips(canvas, rng, 300.0, 0.004, [(60, 55, 50), (230, 225, 215), (140, 110, 90)])
        elif style == 2:
            fill_terrazzo(canvas, rng, carpet, stone)
        else:
            fill_speckled(canvas, rng, carpet, 0.5, 0.02)

    return paint


def _office_footprint(rng: np.random.Generator, a: float, b: float) -> tuple[list[np.ndarray], np.ndarray]:
    """The footprint of an office: the main rectangle [-a, a] x [-b, b] and maybe a wing making an L.

    Returns:
        The rectangles (x0, y0, x1, y1) (main first) and the outline (N, 2), clockwise seen from
        above, so that the room lies to the right of every wall ``outline[i] -> outline[i + 1]``.
    """
    main = np.array([-a, -b, a, b])
    if rng.random() < 0.5:
        return [main], np.array([(-a, -b), (-a, b), (a, b), (a, -b)])
    turn = int(rng.integers(0, 4))  # the wing sits on the +y side, flush with -x, then the room turns
    la, lb = (a, b) if turn % 2 == 0 else (b, a)
    width, depth = rng.uniform(0.35, 0.7) * 2 * la, rng.uniform(2.5, 5.0)
    outline = np.array([(-la, -lb), (-la, lb + depth), (-la + width, lb + depth), (-la + width, lb), (la, lb), (la, -lb)])
    wing = np.array([(-la, lb), (-la + width, lb + depth)])
    if rng.random() < 0.5:  # mirrored: reversing the order keeps the outline clockwise
        outline, wing = outline[::-1] * (-1, 1), wing * (-1, 1)
    rotation = np.linalg.matrix_power(np.array([[0, -1], [1, 0]]), turn)
    outline, wing = outline @ rotation.T, wing @ rotation.T
    return [main, np.array([*wing.min(axis=0), *wing.max(axis=0)])], outline


def _segment_distance(points: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """(N,) distance of points (N, 2) to the segment p0 -> p1 (2,)."""
    direction = p1 - p0
    t = np.clip((points - p0) @ direction / (direction @ direction), 0.0, 1.0)
    return np.linalg.norm(points - (p0 + t[:, None] * direction), axis=1)


#: Free-standing furniture of an office and how often each kind is drawn.
OFFICE_ISLANDS: dict[str, float] = {"table": 0.3, "bookcase": 0.15, "cabinet": 0.15, "boxes": 0.15, "partition": 0.15, "pillar": 0.1}
#: Metres between the robot's loop and any furniture (the query loop runs up to 0.45 m inside,
#: and 0.2 m outside, the camera up to 0.5 m ahead of the robot).
PATH_CLEARANCE = 1.2
#: Metres between free-standing furniture and the walls (a walkway, clear of the wall furniture).
WALL_CLEARANCE = 0.8


def _island_size(rng: np.random.Generator, kind: str, ceiling: float) -> tuple[float, float, float]:
    """Random extents (x, y, z) of a free-standing piece of furniture of ``kind``."""
    if kind == "table":
        return rng.uniform(1.2, 2.0), rng.uniform(0.7, 1.0), rng.uniform(0.72, 0.78)
    if kind == "bookcase":
        return rng.uniform(0.8, 2.0), rng.uniform(0.3, 0.5), rng.uniform(1.2, min(2.2, ceiling - 0.2))
    if kind == "cabinet":
        return rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6), rng.uniform(0.8, 1.9)
    if kind == "boxes":
        side = rng.uniform(0.35, 0.7)
        return side, side, rng.uniform(0.3, 0.6)
    if kind == "partition":
        return rng.uniform(1.2, 2.4), rng.uniform(0.05, 0.08), rng.uniform(1.3, 1.9)
    side = rng.uniform(0.3, 0.6)
    return side, side, ceiling


def _office_islands(
    rng: np.random.Generator, rooms: list[np.ndarray], loop_points: np.ndarray, ceiling: float, texel: float, wood: list
) -> list[Quad]:
    """Free-standing furniture inside the rectangles ``rooms``, clear of the walls, of each other and of the loop.

    Args:
        rooms: rectangles (x0, y0, x1, y1) of the footprint.
        loop_points: (N, 2) densely sampled loop of the robot.
        wood: palette of the shelves' wood.
    """
    regions = [room + np.array([1, 1, -1, -1]) * WALL_CLEARANCE for room in rooms]
    regions = [r for r in regions if r[2] > r[0] and r[3] > r[1]]
    areas = np.array([(r[2] - r[0]) * (r[3] - r[1]) for r in regions])
    count = int(rng.integers(3, 5 + int(sum((r[2] - r[0]) * (r[3] - r[1]) for r in rooms) / 8)))
    kinds, weights = list(OFFICE_ISLANDS), np.array(list(OFFICE_ISLANDS.values()))
    placed: list[GroundRect] = []
    quads: list[Quad] = []
    for i in range(count):
        kind = str(rng.choice(kinds, p=weights / weights.sum()))
        size = _island_size(rng, kind, ceiling)
        for _ in range(80):
            region = regions[int(rng.choice(len(regions), p=areas / areas.sum()))]
            axis_aligned = kind == "pillar" or rng.random() < 0.6
            yaw = float(rng.integers(0, 4) * 0.5 * np.pi + rng.normal(0, 0.03) if axis_aligned else rng.uniform(0, np.pi))
            center = rng.uniform(region[:2], region[2:])
            reach = 1.2 if kind == "boxes" else 1.0  # a stack's boxes turn a little
            rect = GroundRect((float(center[0]), float(center[1])), (size[0] * reach, size[1] * reach), yaw)
            corners = rect.corners()
            if (
                np.all((corners >= region[:2]) & (corners <= region[2:]))
                and rect.distance(loop_points).min() >= PATH_CLEARANCE
                and not any(rect.overlaps(other, 0.5) for other in placed)
            ):
                placed.append(rect)
                quads += _furniture_piece(rng, kind, center, size, yaw, texel, f"island{i}_{kind}", wood)
                break
    return quads


def _wood(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """A random palette of two wood tones."""
    base = jitter_color(rng, (150, 110, 70), 30)
    return [base, jitter_color(rng, base, 12)]


def build_office(rng: np.random.Generator) -> SceneLayout:
    """An office whose layout varies with the seed.

    A rectangle of 5-14 m x 4-10 m, in half the seeds with a wing of 2.5-5 m on one side that
    makes it an L; a ceiling 2.5-4 m high; walls, floor and furniture in random palettes of the
    painters of :mod:`segloc.data.textures`; shelves, tables and boxes along the walls; tables,
    bookcases, cabinets, stacks of boxes, partitions and pillars of random sizes and headings
    standing free in the middle and in the wing. The loop runs in the main rectangle, at least
    :data:`PATH_CLEARANCE` from every piece of furniture.
    """
    texel = 0.006
    ceiling = rng.uniform(2.5, 4.0)
    a, b = rng.uniform(2.5, 7.0), rng.uniform(2.0, 5.0)
    rooms, outline = _office_footprint(rng, a, b)
    # loop to walls 1.6-3.2 m (wide margins leave room for furniture outside the loop), the loop
    # at least 40 % of the room's extent (and 0.6 m: the query loop runs up to 0.45 m inside it)
    margin_x, margin_y = rng.uniform(1.6, 3.2, 2)
    half_x, half_y = max(a - margin_x, 0.4 * a, 0.6), max(b - margin_y, 0.4 * b, 0.6)
    path = LoopPath(half_x, half_y, rng.uniform(0.4, 1.0) * min(half_x, half_y))
    loop_points = path.sample(np.arange(0.0, path.length, 0.05))[0]
    wood = _wood(rng)
    quads: list[Quad] = []
    for i in range(len(outline)):
        p0, p1 = outline[i].astype(float), outline[(i + 1) % len(outline)].astype(float)
        length = float(np.linalg.norm(p1 - p0))
        canvas = Canvas(length, ceiling, texel, L["wall"], "plaster")
        doors = int(length > 2.5 and rng.random() < 0.6)
        windows, posters = int(rng.integers(0, 1 + int(length // 3))), int(rng.integers(1, 3 + int(length // 3)))
        doors_at = _paint_wall(canvas, rng, length, ceiling, doors, windows, posters)
        quads.append(wall_quad(p0, p1, 0.0, ceiling, canvas, f"wall_{i}"))
        depth = min(0.6, float(_segment_distance(loop_points, p0, p1).min()) - PATH_CLEARANCE - 0.05)
        if depth >= 0.3:
            taken = [(s - 0.3, e + 0.3) for s, e in doors_at] + [(0.0, depth + 0.2), (length - depth - 0.2, length)]
            for k in range(1 + int(length // 6)):
                quads += _furniture(rng, p0, p1, taken, texel, f"wall{i}_{k}", depth, wood)
    quads += _office_islands(rng, rooms, loop_points, ceiling, texel, wood)
    paint_floor = _floor_painter(rng)
    lamps: list = []
    spacing = rng.uniform(2.2, 3.2)
    for k, (x0, y0, x1, y1) in enumerate(rooms):
        floor = Canvas(x1 - x0, y1 - y0, texel, L["floor"], "floor")
        paint_floor(floor)
        if k == 0 and rng.random() < 0.5:
            draw_poster(
                floor, rng, rng.uniform(0.5, a), rng.uniform(0.5, b), rng.uniform(1.5, 3.0), rng.uniform(1.0, 2.0), L["floor"], "rug"
            )
        quads.append(horizontal_quad(x0, y0, x1, y1, 0.0, floor, f"floor_{k}"))
        top, room_lamps = _ceiling(rng, x0, y0, x1, y1, ceiling, texel, spacing)
        quads.append(Quad(top.origin, top.axis_u, top.axis_v, top.texture, f"ceiling_{k}"))
        lamps += room_lamps
    scene = Scene("office", quads, np.array(lamps, float).reshape(-1, 4), L["void"], L["lamp"], outdoor=False)
    return SceneLayout(scene, path)


SCENE_BUILDERS: dict[str, Callable[[np.random.Generator], SceneLayout]] = {
    "room": build_room,
    "corridor": build_corridor,
    "street": build_street,
    "office": build_office,
}
"""Scene name -> builder taking a seeded generator."""


def build_scene(name: str, seed: int) -> SceneLayout:
    """Build scene ``name`` (one of :data:`SCENE_BUILDERS`) from ``seed``."""
    return SCENE_BUILDERS[name](np.random.default_rng([seed, 0]))


def seasonal_variant(scene: Scene, amount: float, seed: int) -> Scene:
    """The same scene with every texture passed through :func:`apply_season` (geometry and labels kept)."""
    if amount <= 0:
        return scene
    quads = []
    for k, quad in enumerate(scene.quads):
        texture = apply_season(quad.texture, amount, np.random.default_rng([seed, 1, k]))
        quads.append(Quad(quad.origin, quad.axis_u, quad.axis_v, texture, quad.name))
    return Scene(scene.name, quads, scene.lamps, scene.background_label, scene.emissive_label, scene.outdoor)


#: Furniture groups (:func:`_furniture`): a shelf, a table or a stack of boxes, all of whose quads move together.
_FURNITURE_GROUP = re.compile(r"^(wall\d+_(?:shelf|table|boxes)\d+)_")
#: The walls of the room and the corridor (their painted plaster or wallpaper may be redone).
_WALL = re.compile(r"^wall_\d+$")


@dataclass(frozen=True)
class SceneChange:
    """What :func:`changed_variant` changed.

    Attributes:
        regions: ``(what, corners)`` of each changed area: ``what`` is ``repainted wall_0``,
            ``new poster on wall_0`` or ``moved wall0_shelf1_front``; ``corners`` (4, 3) world
            corners of the area as recording 0 saw it (a repainted wall: the whole wall, whose
            doors, windows and posters may be unchanged; a moved quad: where it was).
        moved: furniture group -> shift along its wall (metres).
    """

    regions: tuple[tuple[str, np.ndarray], ...]
    moved: dict[str, float]

    def to_dict(self) -> dict:
        return {"regions": [{"what": what, "corners": corners.round(6).tolist()} for what, corners in self.regions], "moved": self.moved}


def _rect_corners(quad: Quad, rect: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """(4, 3) world corners of texels ``rect`` (row0, col0, row1, col1) of a quad whose texture has ``shape`` (H, W)."""
    r0, c0, r1, c1 = rect
    height, width = shape
    return np.stack(
        [quad.origin + (c / width) * quad.axis_u + (r / height) * quad.axis_v for r, c in ((r0, c0), (r0, c1), (r1, c1), (r1, c0))]
    )


def changed_variant(scene: Scene, amount: float, seed: int, recording: int) -> tuple[Scene, SceneChange]:
    """The scene as a later recording finds it: part of it re-textured, some furniture moved.

    With probability ``amount`` each: a wall's paint (plaster or wallpaper texels, not its doors,
    windows or posters) is redone with another colour and grain, and each repaintable panel
    (posters, notice boards; :class:`segloc.data.render.Panel`) gets a new artwork; with
    probability ``amount / 2`` each furniture group (a shelf, a table, a stack of boxes against a
    wall) slides along its wall by 0.3 to 0.6 m, either way. Labels stay. Everything is drawn
    from ``(seed, recording)``: the same arguments give the same scene. ``amount <= 0`` returns
    ``scene`` itself.

    Returns:
        The changed scene and what changed (:class:`SceneChange`).
    """
    if amount <= 0:
        return scene, SceneChange((), {})
    groups = sorted({match.group(1) for quad in scene.quads if (match := _FURNITURE_GROUP.match(quad.name))})
    shifts: dict[str, float] = {}
    for index, group in enumerate(groups):
        rng = np.random.default_rng([seed, 6, recording, index])
        if rng.random() < 0.5 * amount:
            shifts[group] = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.6))
    quads, regions = [], []
    for k, quad in enumerate(scene.quads):
        rng = np.random.default_rng([seed, 5, recording, k])
        texture = quad.texture
        repaint_wall = bool(_WALL.match(quad.name)) and rng.random() < amount
        new_panels = [panel for panel in texture.panels if rng.random() < amount]
        if repaint_wall or new_panels:
            color = texture.color.copy()
            if repaint_wall:
                canvas = Canvas(0, 0, texture.texel_size, 0, shape=texture.labels.shape)
                fill_plaster(canvas, rng, (rng.uniform(150, 240), rng.uniform(140, 235), rng.uniform(130, 230)))
                paint = texture.labels == L["wall"]
                color[paint] = canvas.color[paint]
                regions.append((f"repainted {quad.name}", quad.corners()))
            for panel in new_panels:
                r0, c0, r1, c1 = panel.rect
                color[r0:r1, c0:c1] = paint_artwork(rng, r1 - r0, c1 - c0, texture.texel_size)
                regions.append((f"new {panel.kind} on {quad.name}", _rect_corners(quad, panel.rect, texture.labels.shape)))
            texture = Texture(color, texture.labels, texture.texel_size, texture.material, list(texture.panels))
        origin = quad.origin
        match = _FURNITURE_GROUP.match(quad.name)
        if match and match.group(1) in shifts:
            front = next(q for q in scene.quads if q.name.startswith(match.group(1)) and q.name.endswith("_front"))
            along = front.axis_u / np.linalg.norm(front.axis_u)  # horizontal, parallel to the wall
            origin = origin + shifts[match.group(1)] * along
            regions.append((f"moved {quad.name}", quad.corners()))
        quads.append(Quad(origin, quad.axis_u, quad.axis_v, texture, quad.name))
    changed = Scene(scene.name, quads, scene.lamps, scene.background_label, scene.emissive_label, scene.outdoor)
    return changed, SceneChange(tuple(regions), shifts)
