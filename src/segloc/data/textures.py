"""Procedural textures with semantic labels for the synthetic scenes.

Every painter draws into a :class:`Canvas` (colour and label images at a metric texel size,
coordinates in metres from the top-left corner) from a seeded ``numpy`` generator, so a scene
is reproducible from its seed. Textures are varied and non-periodic (multi-scale noise,
per-plank / per-tile / per-brick colours, random posters with shapes and glyphs, books,
windows with reflections) so that local features (SIFT) find many distinctive keypoints.

:data:`LABELS` is the one table of semantic part labels (id -> name) of the synthetic scenes.
"""

from __future__ import annotations

import string

import cv2
import numpy as np

from segloc.data.render import Panel, Texture

LABELS: dict[int, str] = {
    0: "void",
    1: "floor",
    2: "wall",
    3: "ceiling",
    4: "door",
    5: "window",
    6: "poster",
    7: "shelf",
    8: "box",
    9: "table",
    10: "lamp",
    11: "road",
    12: "sidewalk",
    13: "building",
    14: "sky",
    15: "pole",
    16: "vegetation",
    17: "sign",
    18: "vehicle",
}
"""Semantic part labels of the synthetic scenes: id (the value in ``labels/*.png``) -> name."""

LABEL_IDS: dict[str, int] = {name: i for i, name in LABELS.items()}

LABEL_COLORS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (128, 64, 128),
    2: (102, 102, 156),
    3: (190, 153, 153),
    4: (250, 170, 30),
    5: (0, 130, 180),
    6: (220, 20, 60),
    7: (150, 100, 50),
    8: (230, 150, 140),
    9: (120, 80, 40),
    10: (255, 255, 160),
    11: (90, 90, 90),
    12: (244, 35, 232),
    13: (70, 70, 70),
    14: (70, 130, 180),
    15: (153, 153, 153),
    16: (107, 142, 35),
    17: (220, 220, 0),
    18: (0, 0, 142),
}
"""RGB display colour of every label (for visualisation only)."""

_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
)
_GLYPHS = string.ascii_uppercase + string.digits + string.ascii_lowercase


def fractal_noise(
    rng: np.random.Generator, height: int, width: int, scale: float, octaves: int = 5, persistence: float = 0.55
) -> np.ndarray:
    """(H, W) float32 multi-scale value noise, zero mean, about unit standard deviation.

    Args:
        scale: size of the largest features, in texels; each octave halves it.
    """
    total = np.zeros((height, width), np.float32)
    amplitude, norm, cell = 1.0, 0.0, float(scale)
    for _ in range(octaves):
        if cell < 1.5:
            break
        grid = rng.standard_normal((int(np.ceil(height / cell)) + 2, int(np.ceil(width / cell)) + 2)).astype(np.float32)
        up = cv2.resize(grid, (int(grid.shape[1] * cell), int(grid.shape[0] * cell)), interpolation=cv2.INTER_CUBIC)
        total += amplitude * up[:height, :width]
        norm += amplitude**2
        amplitude *= persistence
        cell /= 2
    return total / np.float32(max(np.sqrt(norm), 1e-6))


def random_word(rng: np.random.Generator, low: int = 3, high: int = 9) -> str:
    return "".join(rng.choice(list(_GLYPHS), size=int(rng.integers(low, high + 1))))


def jitter_color(rng: np.random.Generator, color, amount: float) -> tuple[int, int, int]:
    """``color`` (3,) plus Gaussian noise of std ``amount`` per channel, clipped to 0-255."""
    return tuple(int(c) for c in np.clip(np.asarray(color) + rng.normal(0, amount, 3), 0, 255))


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A uniformly random RGB colour."""
    return tuple(int(c) for c in rng.integers(0, 256, 3))


class Canvas:
    """Colour and label images of a texture being painted; positions in metres from the top-left.

    Attributes:
        color: (H, W, 3) uint8 RGB.
        labels: (H, W) uint8 label ids.
        texel: metres per texel.
    """

    def __init__(self, width_m: float, height_m: float, texel: float, label: int, material: str = "", shape: tuple[int, int] | None = None):
        self.texel = texel
        if shape is None:
            shape = (max(4, int(round(height_m / texel))), max(4, int(round(width_m / texel))))
        self.height, self.width = shape
        self.color = np.zeros((self.height, self.width, 3), np.uint8)
        self.labels = np.full((self.height, self.width), label, np.uint8)
        self.material = material
        self.panels: list[Panel] = []

    def px(self, metres: float) -> int:
        return int(round(metres / self.texel))

    def rect(self, x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) texels of a rectangle in metres, clipped to the canvas (may be empty)."""
        c0, r0 = min(max(0, self.px(x)), self.width), min(max(0, self.px(y)), self.height)
        return r0, c0, min(self.height, max(r0 + 1, self.px(y + h))), min(self.width, max(c0 + 1, self.px(x + w)))

    def texture(self) -> Texture:
        return Texture(self.color, self.labels, self.texel, self.material, list(self.panels))


# --- materials: fill a whole canvas --------------------------------------------------------


def _shaded(rng: np.random.Generator, shape: tuple[int, int], base, amplitude: float, scale: float) -> np.ndarray:
    """(H, W, 3) float32 ``base`` colour modulated by tinted multi-scale noise."""
    h, w = shape
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    noise = fractal_noise(rng, h, w, scale)
    return np.asarray(base, np.float32) + amplitude * noise[..., None] * tint


def fill_plaster(canvas: Canvas, rng: np.random.Generator, base) -> None:
    """Painted plaster: smooth blotches, fine grain and stains."""
    img = _shaded(rng, canvas.color.shape[:2], base, 14.0, canvas.px(0.8))
    img += 9.0 * fractal_noise(rng, canvas.height, canvas.width, canvas.px(0.15), octaves=4)[..., None]
    canvas.color[:] = np.clip(img, 0, 255).astype(np.uint8)
    add_stains(canvas, rng, int(canvas.width * canvas.height * canvas.texel**2 * 3.0))
    shade = np.asarray(base, np.float32)
    palette = [shade * 0.7, shade * 0.55, np.minimum(shade * 1.2, 255)]
    add_chips(canvas, rng, 25.0, 0.008, palette, jitter=10.0)
    add_chips(canvas, rng, 60.0, 0.004, palette, jitter=10.0)


def fill_wallpaper(canvas: Canvas, rng: np.random.Generator, base) -> None:
    """Wallpaper: a tinted ground strewn with small motifs (dots, leaves, strokes, diamonds) at random."""
    fill_plaster(canvas, rng, base)
    base = np.asarray(base, np.float32)
    palette = [
        np.clip(base * rng.uniform(0.4, 0.8, 3), 0, 255),
        np.clip(base * rng.uniform(0.8, 1.2, 3) - 60, 0, 255),
        rng.uniform(0, 255, 3),
    ]
    count = int(canvas.width * canvas.height * canvas.texel**2 * rng.uniform(80, 160))
    for _ in range(count):
        p = (int(rng.integers(0, canvas.width)), int(rng.integers(0, canvas.height)))
        size = max(1, canvas.px(rng.uniform(0.008, 0.04)))
        color = jitter_color(rng, palette[int(rng.integers(len(palette)))], 15)
        kind = int(rng.integers(0, 4))
        if kind == 0:
            cv2.circle(canvas.color, p, size, color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.ellipse(canvas.color, p, (size, max(1, size // 3)), float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
        elif kind == 2:
            angle = rng.uniform(0, np.pi)
            q = (int(p[0] + 2 * size * np.cos(angle)), int(p[1] + 2 * size * np.sin(angle)))
            cv2.line(canvas.color, p, q, color, max(1, size // 3), cv2.LINE_AA)
        else:
            diamond = np.array([[0, -size], [size, 0], [0, size], [-size, 0]]) + np.array(p)
            cv2.fillPoly(canvas.color, [diamond.astype(np.int32)], color, cv2.LINE_AA)


def add_stains(canvas: Canvas, rng: np.random.Generator, count: int) -> None:
    """Faint ellipses, scuffs and specks of dirt (colour only)."""
    overlay = canvas.color.copy()
    for _ in range(count):
        center = (int(rng.integers(0, canvas.width)), int(rng.integers(0, canvas.height)))
        axes = (max(1, canvas.px(rng.uniform(0.01, 0.12))), max(1, canvas.px(rng.uniform(0.01, 0.08))))
        shade = jitter_color(rng, canvas.color[center[1], center[0]].astype(int) + rng.integers(-60, 40), 15)
        cv2.ellipse(overlay, center, axes, float(rng.uniform(0, 180)), 0, 360, shade, -1, cv2.LINE_AA)
    cv2.addWeighted(overlay, 0.55, canvas.color, 0.45, 0, dst=canvas.color)


def add_chips(
    canvas: Canvas, rng: np.random.Generator, per_m2: float, radius: float, palette, jitter: float = 20.0, only_label: int | None = None
) -> None:
    """Scatter small sharp-edged chips (gravel, terrazzo grains, sand) of about ``radius`` metres.

    Chip colours come from ``palette`` with a brightness jitter; ``only_label`` restricts them to
    texels of that label. Vectorised: coloured impulses dilated by a disc; a larger chip wins where chips overlap.
    """
    h, w = canvas.height, canvas.width
    count = int(per_m2 * h * w * canvas.texel**2)
    if count == 0:
        return
    r = max(1, canvas.px(radius))
    rows, cols = rng.integers(0, h, count), rng.integers(0, w, count)
    colors = np.asarray(palette, np.float32)[rng.integers(0, len(palette), count)] + rng.normal(0, jitter, (count, 1))
    impulses = np.zeros((h, w, 3), np.uint8)
    impulses[rows, cols] = np.clip(colors, 1, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[rows, cols] = 255
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    if rng.random() < 0.5:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, max(1, r) + 1))
    impulses, mask = cv2.dilate(impulses, kernel), cv2.dilate(mask, kernel) > 0
    if only_label is not None:
        mask &= canvas.labels == only_label
    canvas.color[mask] = impulses[mask]


def fill_terrazzo(canvas: Canvas, rng: np.random.Generator, base, palette) -> None:
    """Terrazzo: a cement ground with stone chips of several sizes and colours, and seams."""
    canvas.color[:] = np.clip(_shaded(rng, canvas.color.shape[:2], base, 10.0, canvas.px(1.5)), 0, 255).astype(np.uint8)
    for per_m2, radius in ((60.0, 0.012), (250.0, 0.006), (900.0, 0.003)):
        add_chips(canvas, rng, per_m2, radius, palette)
    step = canvas.px(rng.uniform(1.2, 2.0))
    canvas.color[::step] = (canvas.color[::step] * 0.6).astype(np.uint8)


def fill_planks(canvas: Canvas, rng: np.random.Generator, palette) -> None:
    """Wooden planks along x: staggered random lengths, per-plank colour, grain, dark joints."""
    h, w = canvas.height, canvas.width
    streaks = cv2.resize(rng.standard_normal((h, max(2, w // 25))).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    streaks += 0.5 * fractal_noise(rng, h, w, canvas.px(0.3))
    img = np.zeros((h, w, 3), np.float32)
    y = 0
    while y < h:
        ph = canvas.px(rng.uniform(0.1, 0.2))
        x = -int(rng.integers(0, canvas.px(1.2)))
        while x < w:
            pw = canvas.px(rng.uniform(0.5, 1.6))
            base = np.asarray(jitter_color(rng, palette[int(rng.integers(len(palette)))], 14), np.float32)
            x0, x1, y1 = max(0, x), min(w, x + pw), min(h, y + ph)
            img[y:y1, x0:x1] = base * (1 + 0.09 * streaks[y:y1, x0:x1, None])
            img[y:y1, x0 : min(w, x0 + 1)] *= 0.55
            x += pw
        img[y : min(h, y + 1)] *= 0.5
        y += ph
    canvas.color[:] = np.clip(img, 0, 255).astype(np.uint8)


def fill_tiles(canvas: Canvas, rng: np.random.Generator, size: float, palette, grout=(150, 150, 145)) -> None:
    """Square tiles: per-tile colour from a palette, wear, grout lines, some cracked tiles."""
    h, w = canvas.height, canvas.width
    step = max(3, canvas.px(size))
    img = np.empty((h, w, 3), np.float32)
    img[:] = grout
    for r in range(0, h, step):
        for c in range(0, w, step):
            base = jitter_color(rng, palette[int(rng.integers(len(palette)))], 12)
            img[r + 1 : r + step - 1, c + 1 : c + step - 1] = base
    img += 9.0 * fractal_noise(rng, h, w, canvas.px(0.5))[..., None]
    img += 5.0 * fractal_noise(rng, h, w, max(2, canvas.px(0.03)), octaves=2)[..., None]
    canvas.color[:] = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(w * h / step**2 * 0.15)):
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        q = (p[0] + int(rng.integers(-step, step)), p[1] + int(rng.integers(-step, step)))
        cv2.line(canvas.color, p, q, (70, 65, 60), 1, cv2.LINE_AA)
    add_stains(canvas, rng, int(w * h * canvas.texel**2 * 1.5))


def fill_speckled(canvas: Canvas, rng: np.random.Generator, base, tile: float, density: float) -> None:
    """Acoustic ceiling tiles / terrazzo: base colour, tile seams, random dark specks."""
    img = _shaded(rng, canvas.color.shape[:2], base, 8.0, canvas.px(1.0))
    step = max(3, canvas.px(tile))
    img[::step] *= 0.7
    img[:, ::step] *= 0.7
    canvas.color[:] = np.clip(img, 0, 255).astype(np.uint8)
    count = int(canvas.width * canvas.height * density)
    xs, ys = rng.integers(0, canvas.width, count), rng.integers(0, canvas.height, count)
    radii, shades = rng.integers(1, 3, count), rng.integers(40, 140, count)
    for x, y, r, s in zip(xs, ys, radii, shades):
        cv2.circle(canvas.color, (int(x), int(y)), int(r), (int(s), int(s), int(s)), -1)


def fill_asphalt(canvas: Canvas, rng: np.random.Generator) -> None:
    """Asphalt: grey multi-scale noise, gravel specks, tar repairs, cracks."""
    h, w = canvas.height, canvas.width
    img = _shaded(rng, (h, w), (92, 92, 95), 14.0, canvas.px(3.0))
    img += 12.0 * rng.standard_normal((h, w, 1)).astype(np.float32)
    canvas.color[:] = np.clip(img, 0, 255).astype(np.uint8)
    area = w * h * canvas.texel**2
    for _ in range(int(area * 0.05)):
        center = np.array([rng.integers(0, w), rng.integers(0, h)])
        points = center + rng.integers(-canvas.px(1.0), canvas.px(1.0), (int(rng.integers(4, 8)), 2))
        cv2.fillPoly(canvas.color, [cv2.convexHull(points.astype(np.int32))], jitter_color(rng, (55, 55, 58), 8), cv2.LINE_AA)
    for _ in range(int(area * 0.08)):
        p = np.array([rng.integers(0, w), rng.integers(0, h)], np.float64)
        path = [p.copy()]
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(5, 25))):
            heading += rng.normal(0, 0.6)
            p += canvas.px(rng.uniform(0.05, 0.3)) * np.array([np.cos(heading), np.sin(heading)])
            path.append(p.copy())
        cv2.polylines(canvas.color, [np.array(path, np.int32)], False, (40, 40, 42), 1, cv2.LINE_AA)
    add_stains(canvas, rng, int(area * 0.3))


def fill_bricks(canvas: Canvas, rng: np.random.Generator, palette) -> None:
    """Brick wall: running bond with per-brick colour and size jitter, mortar, weathering."""
    h, w = canvas.height, canvas.width
    img = np.empty((h, w, 3), np.float32)
    img[:] = jitter_color(rng, (175, 170, 160), 10)
    row_h, brick_w = max(3, canvas.px(0.075)), max(4, canvas.px(0.225))
    palette = np.asarray(palette, np.float32)
    per_row = w // max(1, brick_w - 1) + 3
    for i, r in enumerate(range(0, h, row_h)):
        c = -(brick_w // 2) * (i % 2) - int(rng.integers(0, 3))
        widths = brick_w + rng.integers(-1, 2, per_row)
        colors = palette[rng.integers(0, len(palette), per_row)] + rng.normal(0, 16, (per_row, 3)).astype(np.float32)
        for bw, color in zip(widths.tolist(), colors):
            if c >= w:
                break
            img[r : r + row_h - 1, max(0, c) : max(0, c + bw - 1)] = color
            c += bw
    img += 10.0 * fractal_noise(rng, h, w, canvas.px(2.0))[..., None]
    canvas.color[:] = np.clip(img, 0, 255).astype(np.uint8)
    add_stains(canvas, rng, int(w * h * canvas.texel**2 * 0.3))


def fill_vegetation(canvas: Canvas, rng: np.random.Generator) -> None:
    """Foliage: overlapping leaves of varied greens over a dark base."""
    h, w = canvas.height, canvas.width
    canvas.color[:] = np.clip(_shaded(rng, (h, w), (35, 60, 25), 10.0, canvas.px(0.4)), 0, 255).astype(np.uint8)
    count = int(w * h / max(1.0, canvas.px(0.035)) ** 2 * 1.5)
    xs, ys = rng.integers(0, w, count), rng.integers(0, h, count)
    sizes = rng.uniform(0.015, 0.05, count)
    angles = rng.uniform(0, 180, count)
    palette = np.array([(50, 100, 30), (80, 130, 45), (40, 85, 40), (110, 150, 60), (65, 115, 55)], np.float64)
    colors = np.clip(palette[rng.integers(0, len(palette), count)] + rng.normal(0, 18, (count, 3)), 0, 255).astype(int).tolist()
    majors = np.maximum(1, np.round(sizes / canvas.texel)).astype(int).tolist()
    for x, y, major, a, color in zip(xs.tolist(), ys.tolist(), majors, angles.tolist(), colors):
        cv2.ellipse(canvas.color, (x, y), (major, max(1, major // 2)), a, 0, 360, color, -1)


def fill_brushed(canvas: Canvas, rng: np.random.Generator, base) -> None:
    """Brushed metal / painted steel: streaks along the rows plus blotches."""
    h, w = canvas.height, canvas.width
    streaks = cv2.resize(rng.standard_normal((max(2, h // 12), w)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    img = _shaded(rng, (h, w), base, 10.0, max(2, canvas.px(0.3))) + 8.0 * streaks[..., None]
    canvas.color[:] = np.clip(img, 0, 255).astype(np.uint8)


# --- objects drawn on top of a material -----------------------------------------------------


def draw_text(
    canvas: Canvas, rng: np.random.Generator, text: str, x: float, y: float, height: float, color, font: int | None = None
) -> None:
    """Glyphs of ``height`` metres with their baseline at (x, y + height)."""
    font = _FONTS[int(rng.integers(len(_FONTS)))] if font is None else font
    scale = max(0.15, canvas.px(height) / 22.0)
    thickness = max(1, int(round(scale * rng.uniform(1.0, 2.5))))
    org = (canvas.px(x), canvas.px(y + height))
    cv2.putText(canvas.color, text, org, font, scale, color, thickness, cv2.LINE_AA)


def paint_artwork(rng: np.random.Generator, height: int, width: int, texel: float) -> np.ndarray:
    """A random poster / painting (H, W, 3) uint8: gradient ground, shapes, blobs and glyphs."""
    sub = Canvas(width * texel, height * texel, texel, 0, shape=(height, width))
    c0, c1 = np.asarray(random_color(rng), np.float32), np.asarray(random_color(rng), np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = c0 + ramp * (c1 - c0) + 25.0 * fractal_noise(rng, height, width, max(4, min(height, width) / 2))[..., None]
    sub.color[:] = np.clip(img, 0, 255).astype(np.uint8)
    size = min(height, width)
    for _ in range(int(rng.integers(0, 3))):  # "photos": colourised multi-scale noise in a frame
        ph, pw = int(height * rng.uniform(0.2, 0.6)), int(width * rng.uniform(0.2, 0.8))
        if ph < 4 or pw < 4:
            continue
        r0, c0 = int(rng.integers(0, height - ph + 1)), int(rng.integers(0, width - pw + 1))
        field_ = np.clip(0.5 + 0.3 * fractal_noise(rng, ph, pw, max(3, min(ph, pw) / 3)), 0, 1)[..., None]
        lo, hi = np.asarray(random_color(rng), np.float32), np.asarray(random_color(rng), np.float32)
        sub.color[r0 : r0 + ph, c0 : c0 + pw] = np.clip(lo + field_ * (hi - lo), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(10, 30))):
        kind = int(rng.integers(0, 5))
        color = random_color(rng)
        p = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        s = max(2, int(size * rng.uniform(0.03, 0.3)))
        if kind == 0:
            cv2.circle(sub.color, p, s, color, -1 if rng.random() < 0.7 else max(1, s // 6), cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(sub.color, p, (p[0] + s, p[1] + int(s * rng.uniform(0.3, 1.5))), color, -1)
        elif kind == 2:
            points = (np.array(p) + rng.integers(-s, s + 1, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(sub.color, [points], color, cv2.LINE_AA)
        elif kind == 3:
            cv2.ellipse(sub.color, p, (s, max(1, s // 3)), float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
        else:
            q = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(sub.color, p, q, color, max(1, s // 5), cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):
        line_h = size * rng.uniform(0.06, 0.14) * texel
        x, y = rng.uniform(0.03, 0.4) * width * texel, rng.uniform(0.0, 0.85) * height * texel
        draw_text(sub, rng, random_word(rng, 3, 10), x, y, line_h, random_color(rng))
    if rng.random() < 0.7:  # a paragraph of small print
        line_h, color = max(0.012, size * texel * rng.uniform(0.025, 0.045)), random_color(rng)
        x0, y = rng.uniform(0.03, 0.3) * width * texel, rng.uniform(0.3, 0.7) * height * texel
        font = _FONTS[int(rng.integers(len(_FONTS)))]
        while y < height * texel * 0.95:
            words = " ".join(random_word(rng, 1, 7) for _ in range(int(rng.integers(2, 6))))
            draw_text(sub, rng, words, x0, y, line_h, color, font)
            y += line_h * rng.uniform(1.5, 2.2)
    cv2.rectangle(sub.color, (0, 0), (width - 1, height - 1), random_color(rng), max(1, size // 40))
    return sub.color


def draw_poster(canvas: Canvas, rng: np.random.Generator, x: float, y: float, w: float, h: float, label: int, kind: str = "poster") -> None:
    """A random artwork labelled ``label`` and registered as a repaintable panel."""
    r0, c0, r1, c1 = canvas.rect(x, y, w, h)
    if r1 - r0 < 4 or c1 - c0 < 4:
        return
    canvas.color[r0:r1, c0:c1] = paint_artwork(rng, r1 - r0, c1 - c0, canvas.texel)
    canvas.labels[r0:r1, c0:c1] = label
    canvas.panels.append(Panel(kind, (r0, c0, r1, c1)))


def draw_notice_board(canvas: Canvas, rng: np.random.Generator, x: float, y: float, w: float, h: float, label: int) -> None:
    """A cork board with pinned sheets of print, photos and coloured pins (one repaintable panel)."""
    r0, c0, r1, c1 = canvas.rect(x, y, w, h)
    if r1 - r0 < 8 or c1 - c0 < 8:
        return
    board = Canvas(w, h, canvas.texel, label, shape=(r1 - r0, c1 - c0))
    fill_speckled(board, rng, (165, 120, 75), 10.0, 0.02)
    for _ in range(int(rng.integers(4, 12))):
        sw, sh = rng.uniform(0.12, 0.3), rng.uniform(0.1, 0.3)
        sx, sy = rng.uniform(0, max(0.01, w - sw)), rng.uniform(0, max(0.01, h - sh))
        sr0, sc0, sr1, sc1 = board.rect(sx, sy, sw, sh)
        if sr1 - sr0 >= 4 and sc1 - sc0 >= 4:
            board.color[sr0:sr1, sc0:sc1] = paint_artwork(rng, sr1 - sr0, sc1 - sc0, canvas.texel)
        pin = (int((sc0 + sc1) / 2), sr0 + 2)
        cv2.circle(board.color, pin, max(1, board.px(0.008)), random_color(rng), -1, cv2.LINE_AA)
    cv2.rectangle(board.color, (0, 0), (board.width - 1, board.height - 1), (120, 90, 60), max(1, board.px(0.02)))
    canvas.color[r0:r1, c0:c1] = board.color
    canvas.labels[r0:r1, c0:c1] = label
    canvas.panels.append(Panel("poster", (r0, c0, r1, c1)))


def draw_fixtures(canvas: Canvas, rng: np.random.Generator, count: int) -> None:
    """Sockets, switches, plates and cable ducts on a wall (colour only, the wall's label)."""
    width_m, height_m = canvas.width * canvas.texel, canvas.height * canvas.texel
    for _ in range(count):
        kind = int(rng.integers(0, 3))
        x = rng.uniform(0.1, width_m - 0.2)
        if kind == 0:  # socket / switch
            y = height_m - rng.choice([0.3, 1.05])
            r0, c0, r1, c1 = canvas.rect(x, y, 0.08, 0.08)
            canvas.color[r0:r1, c0:c1] = jitter_color(rng, (235, 235, 228), 6)
            cv2.rectangle(canvas.color, (c0, r0), (c1 - 1, r1 - 1), (150, 150, 145), 1)
            cv2.circle(canvas.color, ((c0 + c1) // 2, (r0 + r1) // 2), max(1, canvas.px(0.02)), (90, 90, 90), 1, cv2.LINE_AA)
        elif kind == 1:  # small plate with a number or word
            y = height_m - rng.uniform(1.4, 1.8)
            r0, c0, r1, c1 = canvas.rect(x, y, 0.18, 0.09)
            canvas.color[r0:r1, c0:c1] = jitter_color(rng, random_color(rng), 10)
            draw_text(canvas, rng, random_word(rng, 2, 4).upper(), x + 0.015, y + 0.015, 0.05, random_color(rng))
        else:  # cable duct
            y = height_m - rng.uniform(0.2, 2.4)
            r0, c0, r1, c1 = canvas.rect(x, y, rng.uniform(0.5, 2.5), 0.03)
            canvas.color[r0:r1, c0:c1] = jitter_color(rng, (225, 225, 220), 8)


def draw_cabinet_front(canvas: Canvas, rng: np.random.Generator, base) -> None:
    """Cabinet / desk front: painted panel, drawers or doors with handles, a few stickers."""
    fill_brushed(canvas, rng, base)
    width_m, height_m = canvas.width * canvas.texel, canvas.height * canvas.texel
    columns, rows = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    edge = jitter_color(rng, np.asarray(base) * 0.5, 10)
    for i in range(columns):
        for j in range(rows):
            x, y = (i + 0.06) * width_m / columns, (j + 0.08) * height_m / rows
            r0, c0, r1, c1 = canvas.rect(x, y, 0.88 * width_m / columns, 0.84 * height_m / rows)
            cv2.rectangle(canvas.color, (c0, r0), (c1 - 1, r1 - 1), edge, max(1, canvas.px(0.008)))
            handle = canvas.rect(x + 0.44 * width_m / columns - 0.05, y + 0.12 * height_m / rows, 0.1, 0.015)
            canvas.color[handle[0] : handle[2], handle[1] : handle[3]] = (200, 200, 205)
    for _ in range(int(rng.integers(0, 4))):
        draw_poster(canvas, rng, rng.uniform(0, width_m * 0.8), rng.uniform(0, height_m * 0.8), 0.1, 0.07, int(canvas.labels[0, 0]), "sign")


def draw_door(canvas: Canvas, rng: np.random.Generator, x: float, y: float, w: float, h: float, label: int) -> None:
    """A door: frame, leaf with inset panels or glass, handle, number plate."""
    r0, c0, r1, c1 = canvas.rect(x, y, w, h)
    if r1 - r0 < 4 or c1 - c0 < 4:
        return
    leaf = Canvas(w, h, canvas.texel, label, shape=(r1 - r0, c1 - c0))
    if rng.random() < 0.5:
        fill_planks(leaf, rng, [jitter_color(rng, (140, 95, 55), 25)])
    else:
        fill_brushed(leaf, rng, random_color(rng))
    frame = max(2, leaf.px(0.05))
    cv2.rectangle(leaf.color, (0, 0), (leaf.width - 1, leaf.height - 1), jitter_color(rng, (90, 85, 80), 30), frame)
    for k in range(int(rng.integers(1, 4))):
        top = leaf.px(0.15 + k * (h - 0.3) / 3)
        cv2.rectangle(leaf.color, (leaf.px(0.12), top), (leaf.width - leaf.px(0.12), top + leaf.px((h - 0.5) / 3.5)), random_color(rng), 2)
    handle = (leaf.width - leaf.px(0.12), leaf.px(h * 0.52))
    cv2.circle(leaf.color, handle, max(2, leaf.px(0.03)), (200, 200, 190), -1, cv2.LINE_AA)
    draw_text(leaf, rng, random_word(rng, 2, 4).upper(), 0.2, 0.25, 0.06, (230, 230, 220))
    canvas.color[r0:r1, c0:c1] = leaf.color
    canvas.labels[r0:r1, c0:c1] = label


def draw_window(canvas: Canvas, rng: np.random.Generator, x: float, y: float, w: float, h: float, label: int) -> None:
    """A window: frame, mullions, glass with sky reflection, blobs and maybe curtains."""
    r0, c0, r1, c1 = canvas.rect(x, y, w, h)
    hh, ww = r1 - r0, c1 - c0
    if hh < 4 or ww < 4:
        return
    top, bottom = (
        np.asarray(jitter_color(rng, (150, 175, 200), 25), np.float32),
        np.asarray(jitter_color(rng, (45, 55, 70), 15), np.float32),
    )
    ramp = np.linspace(0, 1, hh, dtype=np.float32)[:, None, None]
    glass = top + ramp * (bottom - top) + 18.0 * fractal_noise(rng, hh, ww, max(3, min(hh, ww) / 2))[..., None]
    glass = np.clip(glass, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        center = (int(rng.integers(0, ww)), int(rng.integers(0, hh)))
        cv2.circle(glass, center, max(1, int(min(hh, ww) * rng.uniform(0.05, 0.3))), random_color(rng), -1, cv2.LINE_AA)
    glass = cv2.GaussianBlur(glass, (0, 0), max(0.8, min(hh, ww) / 40))
    for _ in range(int(rng.integers(2, 8))):  # silhouettes seen through the glass
        bx, bw = int(rng.integers(0, ww)), max(2, int(ww * rng.uniform(0.05, 0.25)))
        by = int(hh * rng.uniform(0.3, 0.9))
        cv2.rectangle(glass, (bx, by), (bx + bw, hh), jitter_color(rng, (70, 75, 85), 25), -1)
    if rng.random() < 0.4:  # blinds
        y, slat = 0, max(2, canvas.px(0.04))
        stop = int(hh * rng.uniform(0.2, 0.8))
        while y < stop:
            cv2.line(glass, (0, y), (ww, y), (200, 200, 195), max(1, slat // 2))
            y += slat
    if rng.random() < 0.5:
        curtain = jitter_color(rng, random_color(rng), 10)
        cv2.rectangle(glass, (0, 0), (int(ww * rng.uniform(0.1, 0.35)), hh), curtain, -1)
    frame_color, frame = jitter_color(rng, (235, 235, 230) if rng.random() < 0.6 else (60, 50, 45), 12), max(1, canvas.px(0.05))
    cv2.rectangle(glass, (0, 0), (ww - 1, hh - 1), frame_color, frame)
    split = int(ww * rng.uniform(0.35, 0.65))
    cv2.line(glass, (split, 0), (split, hh), frame_color, max(1, frame // 2))
    if rng.random() < 0.5:
        cv2.line(glass, (0, int(hh * 0.3)), (ww, int(hh * 0.3)), frame_color, max(1, frame // 2))
    canvas.color[r0:r1, c0:c1] = glass
    canvas.labels[r0:r1, c0:c1] = label


def draw_books(canvas: Canvas, rng: np.random.Generator, label: int) -> None:
    """Bookshelf front: wooden frame, boards, books of random widths, heights, colours and bands."""
    fill_planks(canvas, rng, [jitter_color(rng, (150, 110, 70), 20)])
    board = max(2, canvas.px(0.025))
    levels = int(np.clip(round(canvas.height * canvas.texel / 0.38), 2, 7))
    shelf_h = canvas.height // levels
    for k in range(levels):
        top, floor = k * shelf_h + board, (k + 1) * shelf_h - board
        cv2.rectangle(canvas.color, (board, top), (canvas.width - board, floor), jitter_color(rng, (50, 35, 25), 8), -1)
        c = board + int(rng.integers(0, 4))
        while c < canvas.width - board - 2:
            bw = max(2, canvas.px(rng.uniform(0.018, 0.07)))
            if rng.random() < 0.08:
                c += bw * 3
                continue
            bh = int((floor - top) * rng.uniform(0.55, 0.97))
            color = random_color(rng)
            right = min(c + bw, canvas.width - board)
            cv2.rectangle(canvas.color, (c, floor - bh), (right - 1, floor), color, -1)
            if rng.random() < 0.6:
                band = floor - bh + int(bh * rng.uniform(0.1, 0.7))
                cv2.rectangle(canvas.color, (c, band), (right - 1, band + max(1, bh // 12)), random_color(rng), -1)
            c += bw
    canvas.labels[:] = label


def draw_cardboard(canvas: Canvas, rng: np.random.Generator) -> None:
    """Cardboard box side: kraft colour, tape, printed words and symbols."""
    canvas.color[:] = np.clip(_shaded(rng, canvas.color.shape[:2], jitter_color(rng, (180, 140, 95), 15), 10.0, canvas.px(0.2)), 0, 255)
    width_m, height_m = canvas.width * canvas.texel, canvas.height * canvas.texel
    r0, c0, r1, c1 = canvas.rect(width_m * rng.uniform(0.3, 0.6), 0, 0.05, height_m)
    canvas.color[r0:r1, c0:c1] = jitter_color(rng, (200, 180, 140), 20)
    for _ in range(int(rng.integers(1, 4))):
        draw_text(canvas, rng, random_word(rng, 3, 8), width_m * rng.uniform(0.02, 0.4), height_m * rng.uniform(0, 0.8), 0.04, (40, 30, 25))
    if rng.random() < 0.6:
        draw_poster(
            canvas, rng, width_m * 0.1, height_m * 0.5, min(0.15, width_m * 0.4), min(0.1, height_m * 0.3), int(canvas.labels[0, 0]), "sign"
        )


def draw_car_side(canvas: Canvas, rng: np.random.Generator) -> None:
    """Car side: painted body with reflections, dark window band, wheels, plate text."""
    w_m, h_m = canvas.width * canvas.texel, canvas.height * canvas.texel
    fill_brushed(canvas, rng, random_color(rng))
    r0, c0, r1, c1 = canvas.rect(0.1 * w_m, 0.05 * h_m, 0.8 * w_m, 0.3 * h_m)
    canvas.color[r0:r1, c0:c1] = jitter_color(rng, (40, 45, 55), 10)
    for _ in range(3):
        cv2.line(
            canvas.color,
            (c0 + int(rng.integers(0, c1 - c0)), r0),
            (c0 + int(rng.integers(0, c1 - c0)), r1),
            (120, 130, 145),
            2,
            cv2.LINE_AA,
        )
    for cx in (0.2, 0.8):
        center = (canvas.px(cx * w_m), canvas.px(0.85 * h_m))
        cv2.circle(canvas.color, center, canvas.px(0.3), (25, 25, 25), -1, cv2.LINE_AA)
        cv2.circle(canvas.color, center, canvas.px(0.17), (160, 160, 165), -1, cv2.LINE_AA)
    draw_text(canvas, rng, random_word(rng, 5, 7).upper(), 0.42 * w_m, 0.5 * h_m, 0.08, (20, 20, 20), cv2.FONT_HERSHEY_SIMPLEX)


# --- season change -------------------------------------------------------------------------

_AUTUMNAL = ("vegetation",)
_REPAINTED = ("wall", "building", "door", "vehicle")
_LITTERED = ("floor", "road", "sidewalk")
_STICKERED = ("wall", "building", "pole")


def apply_season(texture: Texture, amount: float, rng: np.random.Generator) -> Texture:
    """A seasonal variant of ``texture``: same labels and size, changed colours.

    Foliage turns autumnal and paint hues shift in proportion to ``amount`` (in [0, 1]); each
    poster or sign panel is replaced with probability ``0.6 * amount``; leaves litter floors and
    roads and stickers appear on walls, their number growing with ``amount``.
    """
    if amount <= 0:
        return texture
    labels = texture.labels
    hsv = cv2.cvtColor(texture.color, cv2.COLOR_RGB2HSV)
    hue, sat = hsv[..., 0].astype(np.float32), hsv[..., 1].astype(np.float32)
    autumnal = np.isin(labels, [LABEL_IDS[n] for n in _AUTUMNAL])
    hue[autumnal] += amount * (14.0 - hue[autumnal])  # OpenCV hue 0-180: green ~60 -> orange ~14
    repainted = np.isin(labels, [LABEL_IDS[n] for n in _REPAINTED])
    hue[repainted] = np.mod(hue[repainted] + 16.0 * amount, 180.0)
    sat[repainted] = np.minimum(sat[repainted] + 40.0 * amount, 255.0)
    hsv[..., 0], hsv[..., 1] = np.round(hue).astype(np.uint8), np.round(sat).astype(np.uint8)
    canvas = Canvas(0, 0, texture.texel_size, 0, texture.material, shape=labels.shape)
    canvas.color, canvas.labels, canvas.panels = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), labels, list(texture.panels)
    for panel in texture.panels:
        if rng.random() < 0.6 * amount:
            r0, c0, r1, c1 = panel.rect
            canvas.color[r0:r1, c0:c1] = paint_artwork(rng, r1 - r0, c1 - c0, texture.texel_size)
    base_label = int(np.bincount(labels.ravel()).argmax())
    area = labels.size * texture.texel_size**2
    overlay = canvas.color.copy()
    if LABELS[base_label] in _LITTERED:
        palette = [(200, 120, 30), (170, 80, 25), (220, 180, 60), (120, 70, 35)]
        for _ in range(int(area * 4.0 * amount)):
            center = (int(rng.integers(0, canvas.width)), int(rng.integers(0, canvas.height)))
            major = max(1, canvas.px(rng.uniform(0.02, 0.06)))
            color = jitter_color(rng, palette[int(rng.integers(len(palette)))], 20)
            cv2.ellipse(overlay, center, (major, max(1, major // 2)), float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
    elif LABELS[base_label] in _STICKERED:
        stickers = Canvas(0, 0, texture.texel_size, 0, shape=labels.shape)
        stickers.color = overlay
        for _ in range(int(area * 0.4 * amount)):
            x, y = rng.uniform(0, canvas.width * canvas.texel), rng.uniform(0, canvas.height * canvas.texel)
            r0, c0, r1, c1 = canvas.rect(x, y, rng.uniform(0.08, 0.3), rng.uniform(0.06, 0.2))
            overlay[r0:r1, c0:c1] = random_color(rng)
            draw_text(stickers, rng, random_word(rng, 2, 6), x, y, 0.04, random_color(rng))
    on_material = labels == base_label
    canvas.color[on_material] = overlay[on_material]
    return Texture(canvas.color, labels, texture.texel_size, texture.material, list(texture.panels))
