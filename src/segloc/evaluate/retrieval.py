"""Evaluation of image retrieval itself: recall@k against the mapping images' poses.

A retrieved mapping image counts as correct when it sees the query's place: its camera centre
is within ``max_distance_m`` of the query's ground-truth centre and its optical axis within
``max_angle_deg`` of the query's. Recall@k is the fraction of queries with a correct image
among their k best.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3

RECALL_KS = (1, 5, 10)


def centers_and_axes(poses: Sequence[Rigid3]) -> tuple[np.ndarray, np.ndarray]:
    """Camera centres (N, 3) and optical axes (N, 3) in the world of ``cam_from_world`` poses."""
    if not poses:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.stack([p.center for p in poses]), np.stack([p.rotation[2] for p in poses])


def retrieval_hits(
    query_poses: Sequence[Rigid3], mapping_poses: Sequence[Rigid3], ranked: np.ndarray, max_distance_m: float, max_angle_deg: float
) -> np.ndarray:
    """Which retrieved images (Q, R) see the query's place (see the module documentation).

    Args:
        query_poses: ground-truth ``cam_from_world`` of the Q queries.
        mapping_poses: ``cam_from_world`` of the mapping images.
        ranked: (Q, R) mapping image indices retrieved per query, best first.
        max_distance_m, max_angle_deg: the thresholds.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim != 2 or len(ranked) != len(query_poses):
        raise SeglocError(f"ranked must have one row per query ({len(query_poses)}), got shape {ranked.shape}")
    if not max_distance_m > 0 or not 0 < max_angle_deg <= 180:
        raise SeglocError(
            f"retrieval thresholds must be a positive distance and an angle in (0, 180], got {max_distance_m}, {max_angle_deg}"
        )
    q_centers, q_axes = centers_and_axes(query_poses)
    m_centers, m_axes = centers_and_axes(mapping_poses)
    distances = np.linalg.norm(m_centers[ranked] - q_centers[:, None], axis=2)
    cosines = np.einsum("qrd,qd->qr", m_axes[ranked], q_axes)
    return (distances <= max_distance_m) & (cosines >= np.cos(np.radians(max_angle_deg)) - 1e-12)


def recall_at_k(hits: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """``{"R@k": fraction of rows with a hit among the first k}`` of hits (Q, R)."""
    hits = np.asarray(hits, dtype=bool)
    if len(hits) == 0:
        raise SeglocError("recall of zero queries is undefined")
    return {f"R@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}


PLACE_SPACINGS = 6.0
"""Default distance threshold of :func:`evaluate_retrieval`, in median mapping-image spacings (the SFRS positive radius)."""


def evaluate_retrieval(
    package,
    dataset,
    output_dir,
    max_distance_m: float | None = None,
    max_angle_deg: float = 30.0,
    progress: bool = True,
    limit: int | None = None,
) -> dict:
    """Recall@1/5/10 of the map's ``sfrs`` retrieval on a dataset's queries (``segloc evaluate --retrieval-only``).

    Writes ``metrics.json`` (``recall`` keyed ``R@1`` ..., ``thresholds``, ``num_queries``,
    ``time_per_query_s``) and ``per_query.json`` (the retrieved images and whether each sees
    the query's place) into ``output_dir``.

    Args:
        package: an opened map package with an ``sfrs`` layer.
        dataset: the dataset with the queries (ground-truth poses).
        max_distance_m: distance threshold; None: :data:`PLACE_SPACINGS` median spacings of the
            map's mapping images.
        max_angle_deg: angle threshold.
        limit: only the first ``limit`` queries.

    Returns:
        The metrics dict.
    """
    import time
    from pathlib import Path

    from tqdm import tqdm

    from segloc.evaluate.report import write_json
    from segloc.maps.scale import image_spacing
    from segloc.maps.sfrs import SfrsRetriever

    retriever = SfrsRetriever.from_map(package)
    if max_distance_m is None:
        max_distance_m = PLACE_SPACINGS * (image_spacing(centers_and_axes(retriever.poses)[0]) or 1.0)
    queries = dataset.query[:limit] if limit else dataset.query
    if not queries:
        raise SeglocError(f"{dataset.root} has no query images to evaluate retrieval on")
    ranked, seconds = [], []
    for record in tqdm(queries, desc="retrieval", disable=not progress):
        image = dataset.load_image(record.name)
        start = time.perf_counter()
        ranked.append(retriever.retrieve(image, max(RECALL_KS))[0])
        seconds.append(time.perf_counter() - start)
    width = min(len(r) for r in ranked)
    ranked_array = np.stack([r[:width] for r in ranked])
    hits = retrieval_hits([r.cam_from_world for r in queries], retriever.poses, ranked_array, max_distance_m, max_angle_deg)
    metrics = {
        "retrieval_only": True,
        "source": "sfrs",
        "recall": recall_at_k(hits),
        "thresholds": {"max_distance_m": float(max_distance_m), "max_angle_deg": float(max_angle_deg)},
        "num_queries": len(queries),
        "num_mapping": len(retriever.poses),
        "time_per_query_s": float(np.median(seconds)),
    }
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "metrics.json", metrics)
    per_query = [
        {"name": r.name, "retrieved": [retriever.names[i] for i in row], "sees_the_place": h.tolist()}
        for r, row, h in zip(queries, ranked_array, hits)
    ]
    write_json(output_dir / "per_query.json", per_query)
    return metrics
