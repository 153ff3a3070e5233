"""Retrieval recall: a retrieved mapping image counts when it is within the distance and angle of the query."""

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.evaluate.retrieval import recall_at_k, retrieval_hits
from segloc.geometry.transforms import Rigid3


def _pose(x: float, yaw_deg: float) -> Rigid3:
    """A camera at (x, 0, 0) looking along the world direction at ``yaw_deg`` in the x-y plane."""
    yaw = np.radians(yaw_deg)
    axis = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    rotation = np.stack([np.cross(down, axis), down, axis])  # rows: camera x, y, z in the world
    return Rigid3.from_rotation(rotation, -rotation @ np.array([x, 0.0, 0.0]))


def test_hits_need_both_distance_and_angle():
    mapping = [_pose(0.0, 0.0), _pose(0.4, 0.0), _pose(0.1, 90.0), _pose(3.0, 0.0)]
    queries = [_pose(0.05, 10.0)]
    hits = retrieval_hits(queries, mapping, np.array([[3, 2, 1, 0]]), max_distance_m=0.5, max_angle_deg=30.0)
    assert hits.tolist() == [[False, False, True, True]]  # far; turned away; near; near
    assert recall_at_k(hits, (1, 3, 4)) == {"R@1": 0.0, "R@3": 1.0, "R@4": 1.0}
    with pytest.raises(SeglocError, match="one row per query"):
        retrieval_hits(queries, mapping, np.zeros((2, 1), np.int64), 0.5, 30.0)
