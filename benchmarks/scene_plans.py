"""How much the layouts of a synthetic scene kind vary with the seed, and what a layout costs to build.

For each seed, the layout of :func:`segloc.data.scenes.build_scene`: footprint extent, number of
walls (4: a rectangle, 6: an L), ceiling height, loop length, pieces of furniture along the
walls (a stack of boxes counts each box) and standing free, the smallest distance from the robot's loops (mapping loop and the
query loops at the extreme offsets) to any piece of furniture and to the walls, and the build
time. ``--plot`` draws the plans seen from above (walls, furniture tops coloured by label,
the mapping loop solid and the query loops dotted).

    python benchmarks/scene_plans.py --scene office --seeds 0-7 --plot office_plans.png

Output::

    {"scene": ..., "seeds": {"K": {"extent_m": [x, y], "walls": n, "ceiling_m", "loop_m",
     "wall_furniture", "free_standing", "loop_to_furniture_m", "loop_to_walls_m", "build_s"}},
     "summary": {"l_shaped", "free_standing_mean", "build_s_mean", "loop_to_furniture_min_m"}}
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from segloc.data.scenes import SCENE_BUILDERS, LoopPath, SceneLayout, build_scene
from segloc.data.textures import LABEL_COLORS

STRUCTURE = ("wall_", "floor", "ceiling")
QUERY_OFFSETS = (0.0, -0.2, 0.45)  # metres inside the mapping loop: SynthConfig.query_offset's range


def _segment_distance(points: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    d = p1 - p0
    t = np.clip((points - p0) @ d / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - p0 - t[:, None] * d, axis=1)


def _edges_distance(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(N,) distance of ground points (N, 2) to the edges of the polygon ``corners`` (M, 2)."""
    return np.min([_segment_distance(points, corners[i], corners[(i + 1) % len(corners)]) for i in range(len(corners))], axis=0)


def loop_points(path: LoopPath) -> np.ndarray:
    """(N, 2) points of the mapping loop and of the query loops at the extreme offsets."""
    points = []
    for offset in QUERY_OFFSETS:
        loop = LoopPath(path.half_x - offset, path.half_y - offset, max(path.radius - offset, 0.0))
        points.append(loop.sample(np.arange(0.0, loop.length, 0.05))[0])
    return np.concatenate(points)


def layout_stats(layout: SceneLayout) -> dict:
    quads = layout.scene.quads
    walls = [q.corners()[:2, :2] for q in quads if q.name.startswith("wall_")]
    furniture = [q for q in quads if not q.name.startswith(STRUCTURE)]
    corners = np.concatenate([q.corners() for q in quads])
    points = loop_points(layout.path)
    to_furniture = min((float(_edges_distance(points, q.corners()[:, :2]).min()) for q in furniture), default=float("inf"))
    return {
        "extent_m": np.round(np.ptp(corners[:, :2], axis=0), 2).tolist(),
        "walls": len(walls),
        "ceiling_m": round(float(corners[:, 2].max()), 2),
        "loop_m": round(layout.path.length, 2),
        "wall_furniture": sum(q.name.startswith("wall") and q.name.endswith("_top") for q in furniture),
        "free_standing": len({q.name.split("_")[0] for q in furniture if q.name.startswith("island")}),
        "loop_to_furniture_m": round(to_furniture, 2),
        "loop_to_walls_m": round(float(min(_segment_distance(points, p0, p1).min() for p0, p1 in walls)), 2) if walls else None,
    }


def plot_plans(layouts: dict[int, SceneLayout], scene: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(layouts))
    rows = -(-len(layouts) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.ravel()[len(layouts) :]:
        ax.axis("off")
    for ax, (seed, layout) in zip(axes.ravel(), layouts.items()):
        for quad in layout.scene.quads:
            corners = quad.corners()
            if quad.name.startswith("wall_"):
                ax.plot(corners[:2, 0], corners[:2, 1], "k-", lw=2)
            elif not quad.name.startswith(STRUCTURE) and quad.normal[2] > 0.5:
                label = int(np.bincount(quad.texture.labels.ravel()).argmax())
                ax.fill(corners[:, 0], corners[:, 1], color=np.array(LABEL_COLORS[label]) / 255, alpha=0.85)
        for offset in QUERY_OFFSETS:
            p = layout.path
            loop = LoopPath(p.half_x - offset, p.half_y - offset, max(p.radius - offset, 0.0))
            xy = loop.sample(np.linspace(0.0, loop.length, 400))[0]
            ax.plot(xy[:, 0], xy[:, 1], "r-" if offset == 0 else "r:", lw=1)
        ax.set_aspect("equal")
        ax.set_title(f"{scene} seed {seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = (int(v) for v in text.split("-"))
        return list(range(first, last + 1))
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", default="office", choices=list(SCENE_BUILDERS))
    parser.add_argument("--seeds", type=_seeds, default=_seeds("0-7"), help="FIRST-LAST or K,K,... (default 0-7)")
    parser.add_argument("--plot", help="PNG of the plans seen from above")
    parser.add_argument("-o", "--output", help="also write the JSON here")
    args = parser.parse_args()
    layouts, stats = {}, {}
    for seed in args.seeds:
        start = time.perf_counter()
        layouts[seed] = build_scene(args.scene, seed)
        stats[str(seed)] = {**layout_stats(layouts[seed]), "build_s": round(time.perf_counter() - start, 2)}
    values = list(stats.values())
    report = {
        "scene": args.scene,
        "seeds": stats,
        "summary": {
            "l_shaped": sum(v["walls"] == 6 for v in values),
            "free_standing_mean": round(float(np.mean([v["free_standing"] for v in values])), 2),
            "build_s_mean": round(float(np.mean([v["build_s"] for v in values])), 2),
            "loop_to_furniture_min_m": min(v["loop_to_furniture_m"] for v in values),
        },
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    if args.plot:
        plot_plans(layouts, args.scene, args.plot)


if __name__ == "__main__":
    main()
