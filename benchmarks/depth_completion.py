"""Depth completion against held-out depth: the MLPRegressor completion vs the scale-aligned MDE and nearest-neighbour filling.

Two settings, each over the mapping images of a dataset and its map core
(:func:`segloc.maps.build.build_core`, default options):

- ``synthetic`` (a scene with rendered depth, ``DATASET/depth/``): the inputs are all the core's
  sparse depths of an image (:func:`segloc.depth.sparse_depth`); the ground truth is the rendered
  depth at every pixel the map does not cover (and that has a surface);
- ``castle`` (a real dataset without depth, ``../shared/data/strecha_castle``): per image 20 %
  of the sparse depths (random, seed 0) are held out as the ground truth, the other 80 % are the
  inputs.

Rows (each a depth map from the same inputs):

- ``mde_median``: the monocular depth times the median of (sparse depth / MDE);
- ``mde_least_squares``: times the least-squares scale;
- ``nearest``: the depth of the nearest input pixel (scipy KD-tree);
- ``mlp``: :func:`segloc.depth.complete_depth`, the seed's ``MLPRegressor((100, 50), max_iter=1000,
  random_state=0)`` on MDE depth + normalised u, v, fitted on 80 % of the inputs;
- ``mlp_rgb``: the same with RGB features added;
- ``mlp_without_mde``: the same regressor with a constant MDE (u, v only): what the MDE adds.

Each row gets MAE and RMSE in metres pooled over all ground-truth pixels of all images, the
median of the per-image MAE, and the MLP's own held-out error and seconds per image.

    segloc synth --scene room --seed 1 --size 320x240 --num-mapping 40 --num-query 8 -o outputs/depth/room_s1
    segloc train depth SCENES... -o outputs/depth/mde_cpu --threads 1      # scenes other than room_s1
    python benchmarks/depth_completion.py --checkpoint outputs/depth/mde_cpu/checkpoint \\
        --synthetic outputs/depth/room_s1 --castle ../shared/data/strecha_castle -o depth_completion.json \\
        --plot depth_completion.png

Output (stdout and ``-o``): ``{"checkpoint", "settings": {NAME: {"dataset", "num_images",
"num_ground_truth_pixels", "input_size", "rows": {ROW: {"mae_m", "rmse_m", "median_image_mae_m"}},
"mlp_holdout_mae_m", "mlp_seconds_per_image", "core_seconds"}}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloc.data.dataset import Dataset, read_dataset
from segloc.depth import (
    CompletionConfig,
    DepthEstimatorConfig,
    complete_depth,
    load_depth_estimator,
    measured_depth,
    nearest_depth,
    scale_aligned_depth,
    sparse_depth,
)
from segloc.maps.build import build_core

ROWS = ("mde_median", "mde_least_squares", "nearest", "mlp", "mlp_rgb", "mlp_without_mde")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASTLE = REPO.parent / "shared" / "data" / "strecha_castle"


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def completions(
    mde: np.ndarray, image: np.ndarray, points2D: np.ndarray, depths: np.ndarray, row_names: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict]:
    """The (H, W) depth of each row in ``row_names`` (``mlp`` always) from the same inputs, and the MLP's held-out error and time."""
    start = time.perf_counter()
    mlp = complete_depth(mde, points2D, depths, image)
    seconds = time.perf_counter() - start
    makers = {
        "mde_median": lambda: scale_aligned_depth(mde, points2D, depths, "median"),
        "mde_least_squares": lambda: scale_aligned_depth(mde, points2D, depths, "least_squares"),
        "nearest": lambda: nearest_depth(mde.shape, points2D, depths),
        "mlp": lambda: mlp.depth,
        "mlp_rgb": lambda: complete_depth(mde, points2D, depths, image, CompletionConfig(color_features=True)).depth,
        "mlp_without_mde": lambda: complete_depth(np.ones_like(mde), points2D, depths).depth,
    }
    estimates = {row: makers[row]() for row in ROWS if row in row_names or row == "mlp"}
    return estimates, {"holdout_mae": mlp.holdout_mae, "seconds": seconds, "covered": mlp.covered}


def summarize(errors: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    """Pooled MAE / RMSE and the median per-image MAE of each row's error arrays."""
    summary = {}
    for row, per_image in errors.items():
        pooled = np.concatenate(per_image) if per_image else np.zeros(0)
        summary[row] = {
            "mae_m": round(float(np.abs(pooled).mean()), 4),
            "rmse_m": round(float(np.sqrt(np.mean(pooled**2))), 4),
            "median_image_mae_m": round(float(np.median([np.abs(e).mean() for e in per_image if len(e)])), 4),
        }
    return summary


def evaluate(
    dataset: Dataset, estimator, max_images: int | None, holdout: float | None, plot: Path | None, row_names: Sequence[str] = ROWS
) -> dict[str, Any]:
    """One setting: ``holdout`` None compares with the rendered depth, else with that fraction of held-out sparse depths."""
    from tqdm import tqdm

    start = time.perf_counter()
    core = build_core(dataset, progress=False).core
    core_seconds = time.perf_counter() - start
    ids = np.arange(len(core.images))
    if max_images and len(ids) > max_images:
        ids = ids[np.linspace(0, len(ids) - 1, max_images).round().astype(int)]
    errors: dict[str, list[np.ndarray]] = {row: [] for row in ROWS if row in row_names or row == "mlp"}
    holdout_maes, seconds, plotted = [], [], False
    for image_id in tqdm(ids, desc=f"complete {Path(dataset.root).name}"):
        record = core.images[image_id]
        points2D, depths = sparse_depth(core, int(image_id))
        image = dataset.load_image(record.name)
        if holdout is None:
            truth_map = measured_depth(dataset, record.name)
            inputs = (points2D, depths)
        else:
            order = np.random.default_rng([0, int(image_id)]).permutation(len(depths))
            held = order[: int(round(holdout * len(depths)))]
            kept = order[len(held) :]
            inputs = (points2D[kept], depths[kept])
        if len(inputs[1]) < 2 * CompletionConfig().min_points:
            continue
        mde = estimator.estimate(image)
        estimates, mlp = completions(mde, image, *inputs, row_names)
        holdout_maes.append(mlp["holdout_mae"])
        seconds.append(mlp["seconds"])
        if holdout is None:
            mask = ~mlp["covered"] & (truth_map > 0)
            truth = truth_map[mask]
            for row, estimate in estimates.items():
                errors[row].append(estimate[mask] - truth)
            if plot is not None and not plotted:
                _plot(plot, image, truth_map, mde, estimates, mlp["covered"])
                plotted = True
        else:
            held_columns = np.floor(points2D[held, 0]).astype(int)
            held_rows = np.floor(points2D[held, 1]).astype(int)
            free = ~mlp["covered"][held_rows, held_columns]  # a held-out point sharing a pixel with an input keeps the input's depth
            for row, estimate in estimates.items():
                errors[row].append(estimate[held_rows[free], held_columns[free]] - depths[held][free])
    return {
        "dataset": str(dataset.root),
        "num_images": len(holdout_maes),
        "num_ground_truth_pixels": int(sum(len(e) for e in errors["mlp"])),
        "input_size": list(estimator.input_size),
        "rows": summarize(errors),
        "mlp_holdout_mae_m": round(float(np.nanmean(holdout_maes)), 4),
        "mlp_seconds_per_image": round(float(np.mean(seconds)), 2),
        "core_seconds": round(core_seconds, 1),
    }


def _plot(path: Path, image: np.ndarray, truth: np.ndarray, mde: np.ndarray, estimates: dict[str, np.ndarray], covered: np.ndarray) -> None:
    """One image: RGB with the map's pixels, ground truth, MDE, and each completion with its absolute error."""
    from segloc.evaluate.report import new_figure, save_figure

    shown = [row for row in ("mde_median", "nearest", "mlp") if row in estimates]
    figure = new_figure(15, 6.5)
    axes = figure.subplots(2, 4)
    limits = {"vmin": float(truth[truth > 0].min()), "vmax": float(truth.max()), "cmap": "turbo"}
    axes[0, 0].imshow(image)
    rows, columns = np.nonzero(covered)
    axes[0, 0].scatter(columns, rows, s=2, c="white")
    axes[0, 0].set_title(f"image, {covered.sum()} map pixels")
    axes[1, 0].imshow(mde, cmap="turbo")
    axes[1, 0].set_title("MDE (relative)")
    axes[0, 1].imshow(truth, **limits)
    axes[0, 1].set_title("ground truth (m)")
    for column, row in enumerate([r for r in shown if r != "mde_median"], start=2):
        axes[0, column].imshow(estimates[row], **limits)
        axes[0, column].set_title(row)
    for column, row in enumerate(shown, start=1):
        error = np.where(truth > 0, np.abs(estimates[row] - truth), 0)
        handle = axes[1, column].imshow(error, cmap="magma", vmin=0, vmax=0.5)
        axes[1, column].set_title(f"|error| {row}, MAE {error[(truth > 0) & ~covered].mean():.3f} m")
    figure.colorbar(handle, ax=axes[1, 1:].tolist(), shrink=0.8, label="m")
    for axis in axes.flat:
        axis.set_axis_off()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="depth network checkpoint (segloc train depth RUN/checkpoint)")
    parser.add_argument("--onnx", action="store_true", help="the --checkpoint path is an ONNX file instead (give --input-size)")
    parser.add_argument(
        "--input-size", type=_size, help="WIDTHxHEIGHT the network runs at on the synthetic scene (default: the checkpoint's)"
    )
    parser.add_argument("--synthetic", type=Path, help="synthetic dataset with depth/ (not one the network was trained on)")
    parser.add_argument("--castle", type=Path, default=DEFAULT_CASTLE if DEFAULT_CASTLE.is_dir() else None, help="real dataset folder")
    parser.add_argument("--no-castle", action="store_true", help="skip the real dataset")
    parser.add_argument("--castle-input-size", type=_size, default=(512, 352), help="WIDTHxHEIGHT the network runs at on castle")
    parser.add_argument("--max-images", type=int, default=None, help="at most this many mapping images per setting (evenly spaced)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="the rows to compute (mlp always)")
    parser.add_argument("--plot", type=Path, help="PNG of one synthetic image: ground truth, MDE and the completions with their errors")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def estimator(size):
        source = "onnx" if args.onnx else "checkpoint"
        return load_depth_estimator(DepthEstimatorConfig(source=source, path=str(args.checkpoint), input_size=size))

    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "settings": {}}
    if args.synthetic is not None:
        report["settings"]["synthetic"] = evaluate(
            read_dataset(args.synthetic), estimator(args.input_size), args.max_images, None, args.plot, args.rows
        )
    if args.castle is not None and not args.no_castle:
        report["settings"]["castle"] = evaluate(
            read_dataset(args.castle), estimator(args.castle_input_size), args.max_images, 0.2, None, args.rows
        )
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
