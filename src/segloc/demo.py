"""``segloc demo``: render the embedded default scene, build each chosen method's map, evaluate them side by side.

:func:`run_demo` is the whole job as library calls (the CLI only parses its options):

1. render the synthetic scene (:func:`segloc.data.synthetic.generate_scene`), unless it exists;
2. ask each method (:mod:`segloc.methods`) for its ``map:`` options on that scene
   (:meth:`~segloc.methods.registry.Method.demo_map_config`: SegLoc's shipped network, a fresh
   training run, or the user's checkpoint);
3. build the maps; methods whose core options are equal share one core build;
4. evaluate every row the methods ask for (:meth:`~segloc.methods.registry.Method.demo_runs`,
   e.g. SegLoc's pose approximation and its refinement) and write ``comparison.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloc.errors import SeglocError

logger = logging.getLogger("segloc")

__all__ = ["DEFAULT_DEMO_METHODS", "DEFAULT_DEMO_OUTPUT", "DEMO_SIZE", "DemoOptions", "run_demo"]

DEFAULT_DEMO_OUTPUT = Path("outputs/demo")
#: Image size of the demo scene: the size the shipped network was trained at (fast on a CPU).
DEMO_SIZE = (320, 240)
#: The methods the demo compares by default.
DEFAULT_DEMO_METHODS: tuple[str, ...] = ("segloc", "reference", "sld")


@dataclass
class DemoOptions:
    """Options of :func:`run_demo` (``segloc demo --help``).

    Attributes:
        output: the output folder (dataset, maps, evaluations, ``comparison.json``).
        methods: registered method names, compared in this order.
        scene, seed, size, condition: the synthetic scene (``segloc synth`` options).
        checkpoint: a network for the methods that take one (SegLoc).
        train: train the methods' networks on the mapping images first.
        train_epochs: epochs of that training.
        limit: only the first N queries.
        overwrite: render the scene again even when it exists.
        progress: show progress bars.
    """

    output: Path = DEFAULT_DEMO_OUTPUT
    methods: Sequence[str] = field(default_factory=lambda: list(DEFAULT_DEMO_METHODS))
    scene: str = "room"
    seed: int = 0
    size: tuple[int, int] = DEMO_SIZE
    condition: str = "lighting"
    checkpoint: Path | None = None
    train: bool = False
    train_epochs: int = 10
    limit: int | None = None
    overwrite: bool = False
    progress: bool = True


def build_and_report(method: Any, dataset: Any, output: Path, config: Any, *, overwrite: bool, progress: bool, core: Any = None) -> Path:
    """Build ``method``'s map (a :class:`~segloc.methods.registry.Method`) and print its time and size."""
    from segloc.maps.package import MapPackage

    start = time.perf_counter()
    path = method.build_map(dataset, Path(output), config, overwrite=overwrite, progress=progress, core=core)
    print(f"built {method.name} map {path} in {time.perf_counter() - start:.1f} s: {MapPackage.open(path).bytes()} bytes")
    return path


def run_demo(options: DemoOptions) -> dict[str, dict[str, Any]]:
    """Run the demo (module docstring); prints the table and returns ``{row name: metrics}``."""
    from segloc.data.dataset import read_dataset
    from segloc.data.synthetic import CONDITIONS, generate_scene, synth_config
    from segloc.evaluate.report import format_comparison, write_json
    from segloc.evaluate.run import evaluate_map
    from segloc.maps.build import build_core
    from segloc.maps.core import read_core
    from segloc.maps.package import MapPackage
    from segloc.methods import DemoContext, get_method

    if not options.methods:
        raise SeglocError("the demo needs at least one method")
    if options.condition not in CONDITIONS:
        raise SeglocError(f"unknown condition {options.condition!r}; valid conditions are: {', '.join(CONDITIONS)}")
    methods = [get_method(name) for name in dict.fromkeys(options.methods)]
    out = Path(options.output)
    dataset_dir = out / "dataset"
    if not (dataset_dir / "scene.json").is_file() or options.overwrite:
        print(f"[1/4] rendering the synthetic {options.scene!r} scene ({options.condition}) into {dataset_dir}")
        config = synth_config(options.scene, options.condition, seed=options.seed, width=options.size[0], height=options.size[1])
        generate_scene(config, dataset_dir, overwrite=True, progress=options.progress)
    else:
        print(f"[1/4] reusing the synthetic scene in {dataset_dir} (--overwrite renders it again)")
    dataset = read_dataset(dataset_dir)

    context = DemoContext(
        dataset_dir,
        out,
        options.scene,
        options.seed,
        tuple(options.size),
        options.train,
        options.train_epochs,
        options.checkpoint,
        options.progress,
    )
    out.mkdir(parents=True, exist_ok=True)
    map_configs = {}
    for method in methods:
        print(f"[2/4] {method.name}: map options for the demo scene")
        map_configs[method.name] = method.map_config(method.demo_map_config(context))

    cores: list[tuple[Any, Any]] = []  # (core config, CoreBuild) shared by maps whose core options are equal
    maps = {}
    for method in methods:
        config = map_configs[method.name]
        core_config = method.core_config(config)
        shared = sum(method_.core_config(map_configs[method_.name]) == core_config for method_ in methods) > 1
        core = next((built for key, built in cores if key == core_config), None)
        if shared and core is None:
            print("[3/4] building the map geometry the maps share (SIFT, known-pose triangulation)")
            core = build_core(dataset, core_config, progress=options.progress)
            cores.append((core_config, core))
        print(f"[3/4] building the {method.name} map {out / f'map_{method.name}'}")
        maps[method.name] = build_and_report(
            method, dataset, out / f"map_{method.name}", config, overwrite=True, progress=options.progress, core=core
        )

    rows: dict[str, dict[str, Any]] = {}
    for method in methods:
        package = MapPackage.open(maps[method.name])
        num_points = read_core(package).num_points
        for run in method.demo_runs():
            if run.name in rows:
                raise SeglocError(f"two demo rows are named {run.name!r}: methods must name their rows uniquely")
            eval_dir = out / f"eval_{run.name}"
            print(f"[4/4] {run.name}: localizing the queries and evaluating into {eval_dir}")
            metrics = evaluate_map(
                package, dataset, eval_dir, method=method.name, localize=run.localize, progress=options.progress, limit=options.limit
            )
            metrics["num_points"] = num_points
            metrics["map_bytes_per_point"] = round(package.bytes() / max(num_points, 1), 1)
            rows[run.name] = metrics
    write_json(out / "comparison.json", rows)
    print(f"\nside by side on {dataset_dir} (recall in %, errors over all queries, failures count as misses):\n")
    print(format_comparison(rows))
    print(f"\nwrote {out / 'comparison.json'}")
    return rows
