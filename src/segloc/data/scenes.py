"""Layouts of the synthetic scenes: a room, a corridor and a street, built from a seed.

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


def _furniture(rng: np.random.Generator, p0, p1, free: list[tuple[float, float]], texel: float, name: str, max_depth: float) -> list[Quad]:
    """Shelves, cabinets and boxes against the wall p0 -> p1 (the room to its right)."""
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
        tag = f"{name}_{kind}{i}"
        if kind == "shelf":
            painters = {
                "front": lambda c: draw_books(c, rng, L["shelf"]),
                "default": lambda c: fill_planks(c, rng, [(150, 110, 70), (140, 100, 65)]),
            }
            quads += box_quads(center, (width, depth, height), yaw, texel, L["shelf"], painters, tag)
        elif kind == "table":
            color = tuple(int(v) for v in rng.integers(0, 255, 3))
            painters = {
                "top": lambda c, color=color: _paint_table_top(c, rng, color),
                "front": lambda c, color=color: draw_cabinet_front(c, rng, color),
                "default": lambda c, color=color: fill_brushed(c, rng, color),
            }
            quads += box_quads(center, (width, depth, height), yaw, texel, L["table"], painters, tag)
        else:
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


SCENE_BUILDERS: dict[str, Callable[[np.random.Generator], SceneLayout]] = {
    "room": build_room,
    "corridor": build_corridor,
    "street": build_street,
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
