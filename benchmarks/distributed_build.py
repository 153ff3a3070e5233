"""Map building on Dask against the serial build: time of the core build (features, pair matching) and identical map files.

Builds the reference map of one dataset serially and with ``--workers`` local Dask processes
(:mod:`segloc.maps.parallel`), in this invocation, and prints JSON: per run the wall time of
each core step and of the whole build, and whether every map file's SHA-256 equals the serial
build's. Triangulation (pycolmap) stays serial in every run, and each task gets its inputs
pickled to a worker process: those two bound the speed-up (Amdahl), on top of the cores.

    segloc synth -o data/room --scene room --seed 0 --size 320x240
    python benchmarks/distributed_build.py --dataset data/room --workers 1 2 -o distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from segloc.data.dataset import read_dataset
from segloc.maps.build import build_core
from segloc.maps.package import MapPackage
from segloc.maps.parallel import BuildExecution
from segloc.methods import get_method


def build(dataset, output: Path, workers: int) -> dict:
    method = get_method("reference")
    config = method.map_config({})
    start = time.perf_counter()
    core = build_core(dataset, method.core_config(config), progress=False, execution=BuildExecution(workers))
    core_seconds = time.perf_counter() - start
    method.build_map(dataset, output, config, overwrite=True, progress=False, core=core)
    total = time.perf_counter() - start
    files = {rel: info["sha256"] for rel, info in MapPackage.open(output).manifest["files"].items()}
    steps = {key: round(value, 2) for key, value in core.statistics["seconds"].items()}
    return {"workers": workers, "core_seconds": round(core_seconds, 2), "core_steps_s": steps, "total_s": round(total, 2), "files": files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="dataset folder (mapping images with poses)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local Dask worker counts (default 1 2)")
    parser.add_argument("-o", "--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    dataset = read_dataset(args.dataset)
    with tempfile.TemporaryDirectory() as scratch:
        serial = build(dataset, Path(scratch) / "serial", 0)
        runs = [serial]
        for workers in args.workers:
            run = build(dataset, Path(scratch) / f"workers_{workers}", workers)
            run["same_files_as_serial"] = run["files"] == serial["files"]
            run["speedup_core"] = round(serial["core_seconds"] / run["core_seconds"], 2)
            runs.append(run)
    for run in runs:
        run.pop("files")
    result = {"dataset": str(args.dataset), "images": len(dataset.mapping), "cores": os.cpu_count(), "runs": runs}
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
