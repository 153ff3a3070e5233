"""Time-indexed poses and a small pure-Python TF tree with interpolated lookups.

Stamps are integer nanoseconds, as ROS stores them, so that an image stamped exactly at a pose
sample gets that sample bit for bit. Between two samples a pose is interpolated with
:func:`segloc.geometry.interpolate_rigid` (slerp on rotation, linear on translation); there is
no extrapolation: a stamp before the first or after the last sample is rejected, and so is a
stamp farther than ``max_gap_ns`` from the nearest sample.

TF semantics (REP-105, tf2): a ``TransformStamped`` with ``header.frame_id = parent`` and
``child_frame_id = child`` is ``parent_from_child`` (it maps points in the child frame into the
parent frame). Each frame has at most one parent; :meth:`TfBuffer.lookup` walks the tree from
both frames up to their common ancestor.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.transforms import Rigid3, interpolate_rigid

#: Reasons a lookup can fail. Time-related reasons depend on the stamp (an image outside the
#: pose range); structural reasons mean the query can never succeed for any stamp.
TIME_REASONS = ("outside_range", "gap")
STRUCTURAL_REASONS = ("empty", "unknown_frame", "not_connected", "ambiguous_parent")


class PoseLookupError(SeglocError):
    """A pose could not be found for a stamp; ``reason`` is one of TIME_REASONS or STRUCTURAL_REASONS."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def is_time_related(self) -> bool:
        return self.reason in TIME_REASONS


def normalize_frame(frame_id: str) -> str:
    """Frame id without the leading slash ROS 1 allowed (``/base_link`` -> ``base_link``)."""
    return frame_id.strip().lstrip("/")


def format_stamp(stamp_ns: int) -> str:
    return f"{stamp_ns / 1e9:.9f} s"


class PoseSeries:
    """Poses ``a_from_b`` sampled at integer-nanosecond stamps, looked up with interpolation.

    Samples may be added in any order; a second sample at the same stamp replaces the first.
    """

    def __init__(self, name: str = "poses") -> None:
        self.name = name
        self._stamps: list[int] = []
        self._poses: list[Rigid3] = []
        self._sorted = True

    def add(self, stamp_ns: int, pose: Rigid3) -> None:
        stamp_ns = int(stamp_ns)
        if self._stamps and stamp_ns <= self._stamps[-1]:  # out of order, or a repeated stamp to deduplicate
            self._sorted = False
        self._stamps.append(stamp_ns)
        self._poses.append(pose)

    def _sort(self) -> None:
        if self._sorted:
            return
        order = sorted(range(len(self._stamps)), key=lambda i: (self._stamps[i], i))
        stamps: list[int] = []
        poses: list[Rigid3] = []
        for i in order:
            if stamps and stamps[-1] == self._stamps[i]:
                poses[-1] = self._poses[i]  # the later sample at the same stamp wins
            else:
                stamps.append(self._stamps[i])
                poses.append(self._poses[i])
        self._stamps, self._poses, self._sorted = stamps, poses, True

    def __len__(self) -> int:
        self._sort()
        return len(self._stamps)

    @property
    def stamps(self) -> np.ndarray:
        """(N,) int64 sorted sample stamps in nanoseconds."""
        self._sort()
        return np.asarray(self._stamps, dtype=np.int64)

    @property
    def time_range(self) -> tuple[int, int]:
        """(first, last) sample stamps in nanoseconds."""
        self._sort()
        if not self._stamps:
            raise PoseLookupError(f"{self.name}: no pose samples", "empty")
        return self._stamps[0], self._stamps[-1]

    def at(self, stamp_ns: int, max_gap_ns: int | None = None) -> Rigid3:
        """The pose at ``stamp_ns``, interpolated between the two neighbouring samples.

        Args:
            stamp_ns: query stamp, nanoseconds.
            max_gap_ns: reject the stamp if the nearest sample is farther than this (None: no limit).

        Raises:
            PoseLookupError: no samples, the stamp is outside the sample range, or too far from
                any sample.
        """
        first, last = self.time_range
        stamp_ns = int(stamp_ns)
        if stamp_ns < first or stamp_ns > last:
            raise PoseLookupError(
                f"{self.name}: stamp {format_stamp(stamp_ns)} is outside the pose samples' range "
                f"[{format_stamp(first)}, {format_stamp(last)}] (no extrapolation)",
                "outside_range",
            )
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if self._stamps[i] == stamp_ns:
            return self._poses[i]
        t0, t1 = self._stamps[i - 1], self._stamps[i]
        nearest = min(stamp_ns - t0, t1 - stamp_ns)
        if max_gap_ns is not None and nearest > max_gap_ns:
            raise PoseLookupError(
                f"{self.name}: stamp {format_stamp(stamp_ns)} is {nearest / 1e9:.4f} s from the nearest pose sample "
                f"(max {max_gap_ns / 1e9:.4f} s)",
                "gap",
            )
        alpha = (stamp_ns - t0) / (t1 - t0)
        return interpolate_rigid(self._poses[i - 1], self._poses[i], alpha)


@dataclass
class _Edge:
    """The transform ``parent_from_child`` of one tree edge: static, or sampled over time."""

    parent: str
    child: str
    static: Rigid3 | None = None
    series: PoseSeries | None = None

    def at(self, stamp_ns: int, max_gap_ns: int | None) -> Rigid3:
        if self.static is not None:
            return self.static
        assert self.series is not None
        return self.series.at(stamp_ns, max_gap_ns)

    def describe(self) -> str:
        if self.static is not None:
            return f"{self.parent} -> {self.child} (static)"
        assert self.series is not None
        first, last = self.series.time_range
        return f"{self.parent} -> {self.child} ({len(self.series)} samples, {format_stamp(first)} .. {format_stamp(last)})"


@dataclass
class TfBuffer:
    """A TF tree filled from ``/tf`` and ``/tf_static``; looks up ``target_from_source`` at a stamp.

    Example:
        >>> buffer = TfBuffer()
        >>> buffer.add("base_link", "camera", base_from_cam)            # static
        >>> buffer.add("map", "base_link", world_from_base, stamp_ns=t)  # dynamic
        >>> world_from_cam = buffer.lookup("map", "camera", stamp_ns=t)
    """

    _edges: dict[str, dict[str, _Edge]] = field(default_factory=dict)  # child -> parent -> edge

    def add(self, parent: str, child: str, parent_from_child: Rigid3, stamp_ns: int | None = None) -> None:
        """Add one transform; ``stamp_ns=None`` makes it static (valid at all times)."""
        parent, child = normalize_frame(parent), normalize_frame(child)
        if parent == child:
            raise SeglocError(f"a transform from frame {parent!r} to itself is not allowed")
        edge = self._edges.setdefault(child, {}).get(parent)
        if edge is None:
            edge = _Edge(parent, child)
            self._edges[child][parent] = edge
        if stamp_ns is None:
            edge.static = parent_from_child
        else:
            if edge.series is None:
                edge.series = PoseSeries(f"transform {parent} -> {child}")
            edge.series.add(stamp_ns, parent_from_child)

    @property
    def frames(self) -> set[str]:
        names = set(self._edges)
        for parents in self._edges.values():
            names.update(parents)
        return names

    def describe(self) -> str:
        """One line per edge, for error messages."""
        edges = [e.describe() for parents in self._edges.values() for e in parents.values()]
        return "; ".join(sorted(edges)) if edges else "(empty)"

    def _parent_edge(self, frame: str) -> _Edge | None:
        parents = self._edges.get(frame)
        if not parents:
            return None
        if len(parents) > 1:
            raise PoseLookupError(
                f"frame {frame!r} has several parents in the TF data ({', '.join(sorted(parents))}); a TF tree allows one parent per frame",
                "ambiguous_parent",
            )
        return next(iter(parents.values()))

    def _chain(self, frame: str) -> list[_Edge]:
        """Edges from ``frame`` up to its root (child to parent)."""
        chain: list[_Edge] = []
        seen = {frame}
        edge = self._parent_edge(frame)
        while edge is not None:
            chain.append(edge)
            if edge.parent in seen:
                raise PoseLookupError(f"the TF data has a cycle through frame {edge.parent!r}", "not_connected")
            seen.add(edge.parent)
            edge = self._parent_edge(edge.parent)
        return chain

    def lookup(self, target: str, source: str, stamp_ns: int, max_gap_ns: int | None = None) -> Rigid3:
        """``target_from_source`` at ``stamp_ns``: maps points in ``source`` into ``target``.

        Dynamic edges are interpolated at the stamp (see :meth:`PoseSeries.at`), static edges
        hold at all times.

        Raises:
            PoseLookupError: unknown frame, frames in different trees, a frame with several
                parents, or a stamp outside / too far from a dynamic edge's samples.
        """
        target, source = normalize_frame(target), normalize_frame(source)
        if target == source:
            return Rigid3.identity()
        known = self.frames
        for frame in (target, source):
            if frame not in known:
                listing = ", ".join(sorted(known)) if known else "none (no TF data)"
                raise PoseLookupError(f"frame {frame!r} is not in the TF data; known frames: {listing}", "unknown_frame")
        source_chain, target_chain = self._chain(source), self._chain(target)
        source_path = [source] + [e.parent for e in source_chain]
        target_path = [target] + [e.parent for e in target_chain]
        common = next((f for f in source_path if f in set(target_path)), None)
        if common is None:
            raise PoseLookupError(
                f"frames {target!r} and {source!r} are not connected in the TF data "
                f"(their roots are {target_path[-1]!r} and {source_path[-1]!r}); edges: {self.describe()}",
                "not_connected",
            )
        ancestor_from_source = Rigid3.identity()
        for edge in source_chain[: source_path.index(common)]:
            ancestor_from_source = edge.at(stamp_ns, max_gap_ns) * ancestor_from_source
        ancestor_from_target = Rigid3.identity()
        for edge in target_chain[: target_path.index(common)]:
            ancestor_from_target = edge.at(stamp_ns, max_gap_ns) * ancestor_from_target
        return ancestor_from_target.inverse() * ancestor_from_source
