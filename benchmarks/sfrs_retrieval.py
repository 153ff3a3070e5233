"""Retrieval recall@1/5/10 of SFRS networks against the other global descriptors, on one dataset's queries.

Rows, all measured in this invocation on the same queries and mapping images:

- ``netvlad_imagenet``: NetVLAD on the ImageNet EfficientNet-Lite0 backbone, centroids from
  k-means of the evaluated scene's mapping images, no training (the SFRS starting point);
- one row per ``--checkpoint NAME=PATH`` (e.g. SFRS after generation 0 and after the last one),
  each also with PCA-whitening learnt on the mapping images (``NAME+pca``, ``--whitening-dim``);
- ``segloc_histograms``: SegLoc's class-histogram descriptor (``--segloc-checkpoint``, by default
  the demo's shipped network, which was trained on the room's mapping images);
- ``sift_vlad``: the reference's VLAD of RootSIFT (64 words learnt on the mapping images).

A retrieved mapping image is correct when its camera is within ``--distance`` metres and
``--angle`` degrees of the query's ground truth (:mod:`segloc.evaluate.retrieval`); by default
the distance is the SFRS positive radius of the scene (6 median image spacings, capped), as in
training. Run it on a scene the networks were not trained on.

    python benchmarks/sfrs_retrieval.py --dataset data/room_severe --checkpoint gen0=runs/sfrs/generation_0/checkpoint \
        --checkpoint gen2=runs/sfrs/generation_2/checkpoint --threads 1 -o room_severe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from segloc.data.dataset import load_image, read_dataset
from segloc.evaluate.retrieval import RECALL_KS, recall_at_k, retrieval_hits
from segloc.features.retrieval import VladEncoder, search_inner_product, train_vocabulary
from segloc.features.sift import SiftConfig, extract_sift, root_sift
from segloc.models.checkpoint import DEMO_CHECKPOINT, load_checkpoint, shipped_checkpoint
from segloc.models.netvlad import NetVlad, NetVladConfig, PcaWhitening, describe_images, sample_features
from segloc.models.segmenter import NetworkSegmenter
from segloc_train.mining import camera_centers_and_axes
from segloc_train.sfrs.train_sfrs import SfrsMiningConfig


def netvlad_imagenet(mapping_images: list[np.ndarray], max_edge: int) -> NetVlad:
    """The untrained NetVLAD: ImageNet backbone, k-means centroids of 100 features of every mapping image."""
    model = NetVlad(NetVladConfig()).eval()
    generator = torch.Generator().manual_seed(0)
    features = []
    with torch.no_grad():
        for image in mapping_images[::2]:
            tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
            tensor = torch.nn.functional.interpolate(tensor, scale_factor=max_edge / max(image.shape[:2]), mode="area")
            features.append(sample_features(model.features(tensor), 100, generator))
    model.initialise_clusters(torch.cat(features))
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH", help="a NetVLAD checkpoint (repeatable)")
    parser.add_argument(
        "--segloc-checkpoint", default=None, help=f"SegLoc network for the histogram row (default: shipped {DEMO_CHECKPOINT})"
    )
    parser.add_argument("--max-edge", type=int, default=224, help="NetVLAD input size (longer side); the SFRS cpu preset trains at 224")
    parser.add_argument("--whitening-dim", type=int, default=128, help="PCA-whitening dimension (0: no whitened rows)")
    parser.add_argument("--distance", type=float, help="metres (default: the scene's SFRS positive radius)")
    parser.add_argument("--angle", type=float, default=30.0, help="degrees")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    dataset = read_dataset(args.dataset, require_query=True)
    mapping = [load_image(dataset.image_dir / r.name) for r in dataset.mapping]
    queries = [load_image(dataset.image_dir / r.name) for r in dataset.query]
    distance = args.distance or SfrsMiningConfig().resolve(camera_centers_and_axes(dataset.mapping)[0]).positive_radius_m
    mapping_poses = [r.cam_from_world for r in dataset.mapping]
    query_poses = [r.cam_from_world for r in dataset.query]
    rows: dict[str, dict] = {}

    def score(name: str, database: np.ndarray, described: np.ndarray, seconds: float) -> None:
        ranked, _ = search_inner_product(described, database, max(RECALL_KS))
        hits = retrieval_hits(query_poses, mapping_poses, ranked, distance, args.angle)
        rows[name] = {**recall_at_k(hits), "dimension": int(database.shape[1]), "seconds_per_image": seconds}
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)

    def netvlad_rows(name: str, model: NetVlad) -> None:
        start = time.perf_counter()
        database = describe_images(model, mapping, args.max_edge)
        described = describe_images(model, queries, args.max_edge)
        seconds = (time.perf_counter() - start) / (len(mapping) + len(queries))
        score(name, database, described, seconds)
        if args.whitening_dim:
            whitening = PcaWhitening.fit(database, min(args.whitening_dim, len(database) - 1))
            score(f"{name}+pca", whitening.whiten(database), whitening.whiten(described), seconds)

    netvlad_rows("netvlad_imagenet", netvlad_imagenet(mapping, args.max_edge))
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        netvlad_rows(name, load_checkpoint(path))

    segmenter = NetworkSegmenter.from_checkpoint(args.segloc_checkpoint or shipped_checkpoint(DEMO_CHECKPOINT), inference_max_edge=320)
    start = time.perf_counter()
    database = np.stack([segmenter(image).descriptor for image in mapping])
    described = np.stack([segmenter(image).descriptor for image in queries])
    score("segloc_histograms", database, described, (time.perf_counter() - start) / (len(mapping) + len(queries)))

    start = time.perf_counter()
    sift = SiftConfig()
    mapping_sift = [root_sift(extract_sift(image, sift).descriptors) for image in mapping]
    encoder = VladEncoder(train_vocabulary(np.concatenate(mapping_sift), 64))
    database = np.stack([encoder.encode(d) for d in mapping_sift])
    described = np.stack([encoder.encode(root_sift(extract_sift(image, sift).descriptors)) for image in queries])
    score("sift_vlad", database, described, (time.perf_counter() - start) / (len(mapping) + len(queries)))

    result = {
        "dataset": str(args.dataset),
        "thresholds": {"max_distance_m": distance, "max_angle_deg": args.angle},
        "num_queries": len(queries),
        "num_mapping": len(mapping),
        "methods": rows,
    }
    print(f"| method | {' | '.join(f'R@{k}' for k in RECALL_KS)} | dim | s / image |")
    print(f"|---|{'---|' * len(RECALL_KS)}---|---|")
    for name, row in rows.items():
        recalls = " | ".join(f"{100 * row[f'R@{k}']:.0f}%" for k in RECALL_KS)
        print(f"| {name} | {recalls} | {row['dimension']} | {row['seconds_per_image'] * 1000:.0f} ms |")
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
