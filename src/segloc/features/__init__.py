"""Local features (SIFT), descriptor matching and classical image retrieval (VLAD)."""

from segloc.features.matching import MatcherConfig, match_descriptors, prepare_descriptors
from segloc.features.retrieval import VladConfig, VladEncoder, rank_by_similarity, train_vocabulary
from segloc.features.sift import LocalFeatures, SiftConfig, extract_sift, root_sift

__all__ = [
    "LocalFeatures",
    "MatcherConfig",
    "SiftConfig",
    "VladConfig",
    "VladEncoder",
    "extract_sift",
    "match_descriptors",
    "prepare_descriptors",
    "rank_by_similarity",
    "root_sift",
    "train_vocabulary",
]
