"""Inference backends side by side: time per image of each network, outputs against torch, SegLoc end to end.

Three parts, all measured in this invocation (times on a shared machine drift: compare rows of
one run, never across runs):

1. ``networks``: per network (``segmentation``: SegLoc's, the shipped demo network or
   ``--checkpoint``; ``landmarks``: SLD*'s 100-landmark network, from ``--sld-map`` or with the
   ImageNet encoder and an untrained head, which times the same; ``netvlad``: SFRS's, from
   ``--sfrs-map`` or ImageNet with uninitialised clusters: its times hold, its differences mean
   little) and input size (320x240, 640x480,
   1024x683; rounded to multiples of 32 for the networks that take them), the median time per
   image of torch and of ONNX Runtime (CPU execution provider), each with 1 and 2 threads; the
   backends run in turns (one image each, round robin) so that load from other jobs hits them
   alike. Also the largest absolute difference of the outputs between each backend and torch
   on the same input (segmentation: the class probabilities, softmax of each level's logits;
   landmarks: the heatmaps; netvlad: the descriptor), and the ONNX Runtime speed-up over torch
   at equal threads.
2. ``localization``: ``segloc evaluate`` of the demo room's SegLoc map (``segloc demo``'s
   output folder, ``--demo``) with each backend: recalls, median errors, time per query and
   per stage, and the queries whose verdict at (0.25 m, 2 deg) differs from torch's.
3. TensorRT rows only where ``tensorrt`` imports and CUDA is present (never on a CPU machine).

    python benchmarks/engines.py --demo outputs/demo -o engines.json
    python benchmarks/engines.py --sizes 320x240 640x480 --repeats 20          # networks only

Output: JSON on stdout (and ``-o``)::

    {"machine": {...}, "networks": {"segmentation": {"640x480": {"input": [640, 480],
        "seconds_per_image": {"torch_1t": s, "torch_2t": s, "onnxruntime_1t": s, "onnxruntime_2t": s},
        "onnxruntime_speedup": {"1t": x, "2t": x}, "max_abs_output_difference": {"onnxruntime": d}}}, "landmarks": ..., "netvlad": ...},
     "localization": {"torch": {"recall": {...}, "time_per_query_s": s, ...}, "onnxruntime": {...},
                      "changed_queries": {"onnxruntime": [...]}}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from segloc.models.checkpoint import DEMO_CHECKPOINT, load_checkpoint, shipped_checkpoint
from segloc.models.export import network_graph, network_onnx, network_session
from segloc.models.segmentation import class_probabilities
from segloc.models.segmenter import inference_size
from segloc.runtime.session import RuntimeConfig, backend_available

SIZES = ((320, 240), (640, 480), (1024, 683))
THRESHOLD = "0.25m_2deg"


def machine() -> dict[str, Any]:
    import onnxruntime

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def comparable_outputs(name: str, outputs: dict[str, torch.Tensor], output_names) -> list[torch.Tensor]:
    """What the differences are taken on: the segmentation's class probabilities, other networks' raw outputs."""
    values = [outputs[k].float().cpu() for k in output_names]
    return class_probabilities(values) if name == "segmentation" else values


def time_networks(name: str, model, sizes, threads: list[int], repeats: int, cache: Path) -> dict[str, Any]:
    """Part 1 for one network: round-robin timing and output differences (see the module docstring)."""
    dynamic = network_graph(model).dynamic
    backends = ["torch", "onnxruntime"] + (["tensorrt"] if backend_available("tensorrt", "cuda") else [])
    results = {}
    for width, height in sizes:
        size = inference_size(width, height, None) if dynamic else (width, height)
        onnx = network_onnx(model, cache, (640, 480) if dynamic else size)
        image = torch.rand(1, 3, size[1], size[0], generator=torch.Generator().manual_seed(0))
        sessions = {}
        for backend in backends:
            for count in threads if backend != "tensorrt" else [0]:
                device = "cuda" if backend == "tensorrt" else "cpu"
                runtime = RuntimeConfig(backend, threads=count, precision="fp16", cache_dir=str(cache))
                key = f"{backend}_{count}t" if backend != "tensorrt" else "tensorrt_fp16"
                sessions[key] = (network_session(model, runtime, device, onnx, size), count)
        times: dict[str, list[float]] = {key: [] for key in sessions}
        outputs = {}
        for repeat in range(repeats + 1):  # the first round warms up (allocations, ORT's first run)
            for key, (session, count) in sessions.items():
                if key.startswith("torch"):
                    torch.set_num_threads(count)
                start = time.perf_counter()
                result = session.run({"image": image})
                elapsed = time.perf_counter() - start
                if repeat:
                    times[key].append(elapsed)
                else:
                    outputs[key] = comparable_outputs(name, result, session.output_names)
        seconds = {key: statistics.median(values) for key, values in times.items()}
        reference = outputs[f"torch_{threads[0]}t"]
        differences = {
            key: max(float((a - b).abs().max()) for a, b in zip(reference, values))
            for key, values in outputs.items()
            if not key.startswith("torch")
        }
        results[f"{width}x{height}"] = {
            "input": list(size),
            "seconds_per_image": {name: round(value, 5) for name, value in seconds.items()},
            "onnxruntime_speedup": {f"{t}t": round(seconds[f"torch_{t}t"] / seconds[f"onnxruntime_{t}t"], 2) for t in threads},
            "max_abs_output_difference": differences,
        }
        print(f"{name} {width}x{height} (input {size[0]}x{size[1]}): {results[f'{width}x{height}']}", file=sys.stderr)
    return results


def evaluate_backends(demo: Path, threads: int, cache: Path, limit: int | None) -> dict[str, Any]:
    """Part 2: the demo room's SegLoc map evaluated with each backend in this process."""
    from segloc.data.dataset import read_dataset
    from segloc.evaluate.run import evaluate_map

    dataset = read_dataset(demo / "dataset", require_query=True)
    torch.set_num_threads(threads)
    rows: dict[str, Any] = {}
    verdicts: dict[str, dict[str, bool]] = {}
    backends = ["torch", "onnxruntime"] + (["tensorrt"] if backend_available("tensorrt", "cuda") else [])
    for backend in backends:
        with tempfile.TemporaryDirectory() as report:
            localize = {"runtime": {"backend": backend, "threads": threads, "cache_dir": str(cache)}}
            if backend == "tensorrt":
                localize["device"] = "cuda"
            metrics = evaluate_map(demo / "map_segloc", dataset, report, localize=localize, progress=False, limit=limit)
            records = json.loads((Path(report) / "per_query.json").read_text())
        verdicts[backend] = {
            r["name"]: bool(
                r["success"]
                and r["translation_error_m"] is not None
                and r["translation_error_m"] <= 0.25
                and r["rotation_error_deg"] <= 2.0
            )
            for r in records
        }
        keys = ("recall", "median_translation_m", "median_rotation_deg", "time_per_query_s", "time_per_query_median_s", "num_localized")
        rows[backend] = {key: metrics.get(key) for key in keys}
        rows[backend]["segment_s"] = (metrics.get("time_per_stage_s") or {}).get("segment")
        print(f"localization {backend}: {rows[backend]}", file=sys.stderr)
    rows["changed_queries"] = {
        backend: sorted(name for name, ok in verdicts[backend].items() if ok != verdicts["torch"].get(name)) for backend in backends[1:]
    }
    rows["threads"] = threads
    return rows


NETWORKS = ("segmentation", "landmarks", "netvlad")


def load_network(name: str, args: argparse.Namespace) -> torch.nn.Module:
    """The network ``name`` of part 1, in eval mode (see the module docstring)."""
    from segloc.maps.package import MapPackage

    if name == "segmentation":
        return load_checkpoint(args.checkpoint or shipped_checkpoint(DEMO_CHECKPOINT)).eval()
    if name == "landmarks":
        if args.sld_map is not None:
            from segloc.methods.sld.layer import read_sld_model

            return read_sld_model(MapPackage.open(args.sld_map))
        from segloc.models.landmarks import LandmarkEnsemble, LandmarkNetConfig

        return LandmarkEnsemble(LandmarkNetConfig(num_landmarks=100)).eval()
    if args.sfrs_map is not None:
        from segloc.maps.sfrs import SfrsRetriever

        return SfrsRetriever.from_map(MapPackage.open(args.sfrs_map)).network
    from segloc.models.netvlad import NetVlad, NetVladConfig

    return NetVlad(NetVladConfig()).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help=f"segmentation network (default: the shipped {DEMO_CHECKPOINT})")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS, help="networks to time (default: all)")
    parser.add_argument("--sld-map", type=Path, help="an sld map whose landmark network is timed (default: 100 landmarks, untrained head)")
    parser.add_argument("--sfrs-map", type=Path, help="a map with an sfrs layer whose NetVLAD is timed (default: ImageNet, 64 clusters)")
    parser.add_argument("--sizes", nargs="+", default=[f"{w}x{h}" for w, h in SIZES], help="WIDTHxHEIGHT input sizes")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts of both backends (default 1 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed images per backend and size (default 10)")
    parser.add_argument("--demo", type=Path, help="a `segloc demo` output folder (map_segloc/, dataset/): adds the localization part")
    parser.add_argument("--limit", type=int, help="with --demo: only the first N queries")
    parser.add_argument("--cache", type=Path, help="ONNX cache folder (default: a temporary one)")
    parser.add_argument("-o", "--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes]
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache or Path(scratch)
        result: dict[str, Any] = {"machine": machine(), "networks": {}}
        for name in args.networks:
            model = load_network(name, args)
            result["networks"][name] = time_networks(name, model, sizes, args.threads, args.repeats, cache)
        if args.demo is not None:
            result["localization"] = evaluate_backends(args.demo, args.threads[0], cache, args.limit)
    result["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
