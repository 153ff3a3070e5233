"""Image retrieval with VLAD over RootSIFT (Jegou et al. 2010; Arandjelovic & Zisserman 2013).

A vocabulary of ``K`` visual words is learned by k-means on RootSIFT descriptors of the mapping
images. An image's VLAD vector sums, per word, the residuals of the descriptors assigned to
it, L2-normalises each word's block (intra-normalisation), then the whole (K * 128,) vector.
Images are compared by the dot product of their VLAD vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segloc.config import check_options, option
from segloc.errors import SeglocError


@dataclass
class VladConfig:
    """Options of the VLAD vocabulary.

    Attributes:
        num_clusters: visual words ``K``; the global descriptor has ``K * 128`` dimensions.
        max_training_descriptors: descriptors sampled (evenly over the images) for k-means.
        kmeans_iterations: Lloyd iterations.
        seed: random seed of the sampling and initialisation.
    """

    num_clusters: int = option(64, ge=1)
    max_training_descriptors: int = option(100000, ge=1)
    kmeans_iterations: int = option(20, ge=1)
    seed: int = option(0, ge=0)

    def __post_init__(self) -> None:
        check_options(self)


def _assign(data: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index (N,) of the nearest centre (K, D) of each row of ``data`` (N, D)."""
    return np.argmax(data @ centers.T - 0.5 * (centers * centers).sum(axis=1), axis=1)


def _cluster_sums(data: np.ndarray, assignment: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums (K, D) of the rows of ``data`` (N, D) and the cluster sizes (K,)."""
    from scipy.sparse import csr_matrix

    n = len(data)
    membership = csr_matrix((np.ones(n, np.float32), (assignment, np.arange(n))), shape=(k, n))
    return np.asarray(membership @ data, dtype=np.float32), np.bincount(assignment, minlength=k)


def train_vocabulary(descriptors: np.ndarray, num_clusters: int, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """k-means (k-means++ seeding, Lloyd iterations) on descriptors.

    Args:
        descriptors: (N, D) float descriptors, e.g. RootSIFT.
        num_clusters: number of centroids ``K`` (reduced to ``N`` when fewer descriptors).
        iterations: Lloyd iterations.
        seed: random seed.

    Returns:
        (K, D) float32 centroids.
    """
    data = np.ascontiguousarray(descriptors, dtype=np.float32)
    if data.ndim != 2:
        raise SeglocError(f"expected descriptors of shape (N, D), got {data.shape}")
    n = len(data)
    if n == 0:
        raise SeglocError("cannot learn a retrieval vocabulary without descriptors: no features were found in the mapping images")
    k = max(1, min(int(num_clusters), n))
    rng = np.random.default_rng(seed)
    # k-means++ seeding on at most 20000 descriptors.
    pool = data[rng.permutation(n)[: min(n, 20000)]]
    centers = [pool[rng.integers(len(pool))]]
    closest = ((pool - centers[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = float(closest.sum())
        index = rng.choice(len(pool), p=closest / total) if total > 0 else rng.integers(len(pool))
        centers.append(pool[index])
        closest = np.minimum(closest, ((pool - centers[-1]) ** 2).sum(axis=1))
    centroids = np.stack(centers).astype(np.float32)
    for _ in range(iterations):
        assignment = _assign(data, centroids)
        sums, counts = _cluster_sums(data, assignment, k)
        empty = counts == 0
        centroids = np.where(empty[:, None], centroids, sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if empty.any():  # re-seed empty clusters with the descriptors farthest from their centre
            errors = ((data - centroids[assignment]) ** 2).sum(axis=1)
            centroids[empty] = data[np.argsort(-errors)[: int(empty.sum())]]
    return centroids


class VladEncoder:
    """Computes VLAD vectors with a fixed vocabulary (numpy, CPU: one small product per image).

    Args:
        vocabulary: (K, D) float32 centroids from :func:`train_vocabulary`.
    """

    def __init__(self, vocabulary: np.ndarray):
        vocabulary = np.ascontiguousarray(vocabulary, dtype=np.float32)
        if vocabulary.ndim != 2 or len(vocabulary) == 0:
            raise SeglocError(f"a VLAD vocabulary must have shape (K, D) with K > 0, got {vocabulary.shape}")
        self.vocabulary = vocabulary

    @property
    def dimension(self) -> int:
        return self.vocabulary.size

    def encode(self, descriptors: np.ndarray | torch.Tensor) -> np.ndarray:
        """VLAD vector of one image.

        Args:
            descriptors: (N, D) RootSIFT descriptors of the image.

        Returns:
            (K * D,) float32 unit-norm vector (zeros when there are no descriptors).
        """
        k, dim = self.vocabulary.shape
        data = descriptors.detach().cpu().numpy() if isinstance(descriptors, torch.Tensor) else descriptors
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != dim:
            raise SeglocError(f"descriptors of shape {data.shape} do not match a vocabulary of dimension {dim}")
        if len(data) == 0:
            return np.zeros(k * dim, np.float32)
        sums, counts = _cluster_sums(data, _assign(data, self.vocabulary), k)
        vlad = sums - counts[:, None].astype(np.float32) * self.vocabulary
        vlad /= np.maximum(np.linalg.norm(vlad, axis=1, keepdims=True), 1e-12)  # intra-normalisation
        vlad = vlad.reshape(-1)
        return (vlad / max(float(np.linalg.norm(vlad)), 1e-12)).astype(np.float32)


def rank_by_similarity(query: np.ndarray, database: np.ndarray, num_results: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_results`` database entries most similar to ``query`` (dot product).

    Args:
        query: (D,) global descriptor.
        database: (N, D) global descriptors.
        num_results: how many to return (at most N).

    Returns:
        indices (R,) int64 into ``database``, best first, and their similarities (R,) float32.
    """
    database = np.asarray(database, dtype=np.float32)
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    if database.ndim != 2 or database.shape[1] != len(query):
        raise SeglocError(f"global descriptors of shape {database.shape} do not match a query of dimension {len(query)}")
    scores = database @ query
    order = np.argsort(-scores, kind="stable")[: max(0, int(num_results))]
    return order.astype(np.int64), scores[order]


def search_inner_product(queries: np.ndarray, database: np.ndarray, num_results: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_results`` database rows of largest inner product with each query row.

    Uses an exact faiss index (``IndexFlatIP``) when the optional ``faiss-cpu`` package is
    installed (``pip install segloc_ros[retrieval]``), a numpy matrix product otherwise; both
    give the same ranking.

    Args:
        queries: (Q, D) descriptors.
        database: (N, D) descriptors.
        num_results: results per query (at most N).

    Returns:
        indices (Q, R) int64, best first, and their inner products (Q, R) float32.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise SeglocError(f"descriptors of shape {queries.shape} cannot be searched in a database of shape {database.shape}")
    count = max(0, min(int(num_results), len(database)))
    if count == 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatIP(database.shape[1])
        index.add(database)
        scores, indices = index.search(queries, count)
        return indices.astype(np.int64), scores.astype(np.float32)
    scores = queries @ database.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    return order.astype(np.int64), np.take_along_axis(scores, order, axis=1)
