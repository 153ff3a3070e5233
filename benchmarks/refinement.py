"""Time and accuracy of the SegLoc label refinement on the synthetic room, against PnP on as many points.

For a few query poses near the mapping loop of the synthetic room (640x480, PINHOLE), the
"map" is N points unprojected from the depth of three mapping views with the label of their
pixel; the query's class probabilities are its ground-truth label image, one-hot, resized to
1/8, 1/4, 1/2, 1/1, blurred and mixed with a uniform floor (optionally padded with empty
classes up to ``--num-classes``, e.g. 100 as in SegLoc). Each refinement starts from the truth
perturbed by 10-30 cm and 2-5 degrees. The reference measured in the same run is
:func:`segloc.geometry.pose.estimate_absolute_pose` (LO-RANSAC P3P + refinement) on N exact
2D-3D correspondences with 1 px noise and 20 % outliers.

The refinement runs with the options the SegLoc localizer would use: the ``refinement`` of its
``localize:`` config (from the method registry, :func:`segloc.methods.get_method`), its defaults
or those of ``--config``'s ``localize:`` section (e.g. ``config/segloc_outdoor.yaml``).

    python benchmarks/refinement.py
    python benchmarks/refinement.py --points 1000 5000 --num-classes 100 -o bench_refinement.json
    python benchmarks/refinement.py --config config/segloc_outdoor.yaml

Output::

    {"setup": {...}, "results": {"N": {"refinement": {"time_median_s", "time_p90_s",
     "median_translation_m", "median_rotation_deg", "max_translation_m", "max_rotation_deg",
     "median_displacement_px", "success_rate", "recall_5cm_5deg", "iterations_median"},
     "pnp_reference": {"time_median_s", "median_translation_m", "median_rotation_deg"},
     "time_relative_to_pnp": ratio}}}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from segloc.config import config_section
from segloc.data.render import AppearanceConfig, prepare_scene, render_view
from segloc.data.scenes import build_scene
from segloc.data.synthetic import LABELS, make_trajectory, synth_config
from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3, axis_angle_to_matrix, pose_error
from segloc.geometry.pose import PnPConfig, estimate_absolute_pose
from segloc.methods import get_method
from segloc.methods.segloc.refine import refine_pose_with_labels
from segloc.models.segmenter import label_probability_levels

#: The method whose refinement this measures (its registry name).
METHOD = "segloc"


def perturb(cam_from_world: Rigid3, translation: float, rotation_deg: float, rng: np.random.Generator) -> Rigid3:
    direction, axis = rng.normal(size=3), rng.normal(size=3)
    world_from_cam = cam_from_world.inverse()
    rotation = axis_angle_to_matrix(axis / np.linalg.norm(axis) * np.radians(rotation_deg)) @ world_from_cam.rotation
    return Rigid3.from_rotation(rotation, world_from_cam.translation + direction / np.linalg.norm(direction) * translation).inverse()


def labelled_points(view, camera: Camera, cam_from_world: Rigid3, count: int, rng: np.random.Generator):
    pixels = np.argwhere(view.depth > 0)
    pixels = pixels[rng.choice(len(pixels), min(count, len(pixels)), replace=False)]
    rays = np.concatenate([camera.pixels_to_normalized(pixels[:, ::-1] + 0.5), np.ones((len(pixels), 1))], axis=1)
    points_cam = rays * view.depth[pixels[:, 0], pixels[:, 1]].astype(np.float64)[:, None]
    return cam_from_world.inverse().transform_points(points_cam), view.labels[pixels[:, 0], pixels[:, 1]].astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[1000, 5000], help="numbers of map points N")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--num-classes", type=int, default=len(LABELS), help=f"K (>= {len(LABELS)}); extra classes stay empty")
    parser.add_argument("--queries", type=int, nargs="+", default=[3, 7, 11, 15, 19], help="mapping frames the queries sit near")
    parser.add_argument("--trials", type=int, default=3, help="initial poses per query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, help="YAML config whose 'localize' section (SegLoc's) sets the refinement options")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here too")
    args = parser.parse_args()
    if args.num_classes < len(LABELS):
        parser.error(f"--num-classes must be at least {len(LABELS)}")
    try:
        config = get_method(METHOD).localize_config(config_section(args.config, "localize")).refinement
    except SeglocError as exc:
        parser.error(f"--config: {exc}")

    layout = build_scene("room", args.seed)
    prepared = prepare_scene(layout.scene, AppearanceConfig())
    synth = synth_config("room", num_mapping=24, num_query=0, width=args.width, height=args.height, seed=args.seed)
    camera = synth.camera()
    base_from_cam = synth.mount.base_from_cam()
    poses = [(w * base_from_cam).inverse() for w in make_trajectory(layout.path, synth, "mapping").world_from_base]

    def render(cam_from_world: Rigid3):
        return render_view(prepared, camera, cam_from_world, np.random.default_rng(0))

    results = {}
    for count in args.points:
        rng = np.random.default_rng([args.seed, count])
        rows, pnp_rows = [], []
        for query in args.queries:
            truth = perturb(poses[query], 0.15, 2.0, np.random.default_rng(query))
            levels = label_probability_levels(render(truth).labels, args.num_classes)
            points3D, point_labels = zip(
                *(
                    labelled_points(render(poses[i]), camera, poses[i], -(-count // 3), rng)
                    for i in (query - 1, query, (query + 1) % len(poses))
                )
            )
            points3D, point_labels = np.concatenate(points3D)[:count], np.concatenate(point_labels)[:count]
            for _ in range(args.trials):
                init = perturb(truth, rng.uniform(0.1, 0.3), rng.uniform(2.0, 5.0), rng)
                start = time.perf_counter()
                result = refine_pose_with_labels(levels, camera, points3D, point_labels, init, config)
                elapsed = time.perf_counter() - start
                t_err, r_err = pose_error(result.cam_from_world, truth)
                points2D, _, visible = camera.world_to_image(truth, points3D)
                moved = camera.project(result.cam_from_world.transform_points(points3D[visible]))
                displacement = float(np.median(np.linalg.norm(moved - points2D[visible], axis=1)))
                iterations = sum(len(h.lambdas) for h in result.history)
                rows.append((elapsed, t_err, r_err, displacement, result.success, iterations))

            # The reference: PnP on as many correspondences (those in view), 1 px noise, 20 % outliers.
            points2D, _, visible = camera.world_to_image(truth, points3D)
            points2D, inview3D = points2D[visible], points3D[visible]
            noisy = points2D + rng.normal(size=points2D.shape)
            outliers = rng.random(len(noisy)) < 0.2
            noisy[outliers] = rng.uniform([0, 0], [args.width, args.height], size=(int(outliers.sum()), 2))
            start = time.perf_counter()
            estimate = estimate_absolute_pose(noisy, inview3D, camera, PnPConfig(max_error_px=4.0))
            elapsed = time.perf_counter() - start
            errors = pose_error(estimate.cam_from_world, truth) if estimate else (np.inf, np.inf)
            pnp_rows.append((elapsed, *errors))

        table = np.array(rows, dtype=np.float64)
        pnp = np.array(pnp_rows, dtype=np.float64)
        refinement = {
            "time_median_s": round(float(np.median(table[:, 0])), 4),
            "time_p90_s": round(float(np.percentile(table[:, 0], 90)), 4),
            "median_translation_m": round(float(np.median(table[:, 1])), 4),
            "median_rotation_deg": round(float(np.median(table[:, 2])), 3),
            "max_translation_m": round(float(np.max(table[:, 1])), 4),
            "max_rotation_deg": round(float(np.max(table[:, 2])), 3),
            "median_displacement_px": round(float(np.median(table[:, 3])), 3),
            "success_rate": round(float(np.mean(table[:, 4])), 3),
            "recall_5cm_5deg": round(float(np.mean((table[:, 1] < 0.05) & (table[:, 2] < 5.0))), 3),
            "iterations_median": float(np.median(table[:, 5])),
        }
        reference = {
            "time_median_s": round(float(np.median(pnp[:, 0])), 4),
            "median_translation_m": round(float(np.median(pnp[:, 1])), 4),
            "median_rotation_deg": round(float(np.median(pnp[:, 2])), 3),
        }
        results[str(count)] = {
            "refinement": refinement,
            "pnp_reference": reference,
            "time_relative_to_pnp": round(refinement["time_median_s"] / max(reference["time_median_s"], 1e-9), 3),
        }

    report = {
        "setup": {
            "scene": "room",
            "image": [args.width, args.height],
            "levels": ["1/8", "1/4", "1/2", "1/1"],
            "num_classes": args.num_classes,
            "queries": args.queries,
            "trials_per_query": args.trials,
            "init_perturbation": "10-30 cm, 2-5 deg",
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
        },
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
