"""Following a map store on a robot: pull a new version to local disk and swap it into the running localizers (no ROS here).

:class:`MapFollower` is the core of ``segloc_ros``'s ``map_manager`` node. Each :meth:`MapFollower.update`
(every poll period, or when a fleet server names a version):

1. reads which version should run: the one pinned by :meth:`MapFollower.pin` (a fleet server's
   ``segloc/map_version`` message), else the store's ``latest``;
2. when that is not the version in service, pulls it into ``CACHE/v<NNNNNN>``
   (:meth:`segloc.maps.store.MapStore.pull`: every checksum checked, renamed into place), or
   reuses a complete earlier pull of it;
3. calls ``swap(path)``, which puts the map into every localizer node and returns the nodes
   that refused it with their reasons; when one refused, ``swap`` is called again with the map
   in service, so that all nodes run the same version;
4. on success, removes cached versions beyond ``keep_versions`` (only folders it pulled itself).

Any failure (store unreachable, a corrupt upload, a map the nodes cannot load) leaves the
version in service as it was and says so in the returned :class:`FollowStatus`; the next update
tries again.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segloc.errors import SeglocError
from segloc.maps.package import MapPackage
from segloc.maps.store import MapStore, content_hash

logger = logging.getLogger("segloc")

_CACHED = re.compile(r"^v(\d{6})$")

#: ``swap(map_path)`` -> ``{node: reason}`` of the nodes that refused it (empty: every node runs it).
SwapFunction = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class FollowStatus:
    """What an update found and did.

    Attributes:
        level: ``ok``, ``warn`` (nothing published yet) or ``error`` (the wanted version is not in service).
        message: one line for diagnostics and logs.
        in_service: the version the localizers run (None before the first swap).
        wanted: the version the store (or the pin) asks for (None when unknown: store unreachable or empty).
        map_path: the local folder of the version in service ('' before the first swap).
        changed: this update swapped a new version in.
    """

    level: str
    message: str
    in_service: int | None
    wanted: int | None
    map_path: str
    changed: bool = False


def cached_version_path(cache_dir: str | Path, version: int) -> Path:
    """Where :class:`MapFollower` keeps a pulled version: ``CACHE/v000003``."""
    return Path(cache_dir) / f"v{version:06d}"


class MapFollower:
    """Keeps the localizers on the store's wanted version (see the module docstring).

    Args:
        store: the fleet's map store.
        cache_dir: the local folder for pulled versions (created; only ``v<NNNNNN>`` folders
            inside it are ever removed).
        keep_versions: versions kept on disk, the one in service included (>= 1); older pulls are removed.
    """

    def __init__(self, store: MapStore, cache_dir: str | Path, keep_versions: int = 2):
        if keep_versions < 1:
            raise SeglocError(f"keep_versions must be >= 1, got {keep_versions}")
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.keep_versions = keep_versions
        self.in_service: int | None = None
        self.map_path = ""
        self.pinned: int | None = None

    def pin(self, version: int | None) -> None:
        """Run ``version`` instead of the store's latest (None or 0: follow the latest again)."""
        self.pinned = version or None

    def _status(self, level: str, message: str, wanted: int | None, changed: bool = False) -> FollowStatus:
        return FollowStatus(level, message, self.in_service, wanted, self.map_path, changed)

    def _keeping(self) -> str:
        return f"version {self.in_service} stays in service" if self.in_service is not None else "no map from the store is in service"

    def update(self, swap: SwapFunction) -> FollowStatus:
        """Bring the localizers to the wanted version when they are not on it (one attempt; see the module docstring)."""
        try:
            wanted = self.pinned if self.pinned is not None else self.store.latest()
        except SeglocError as exc:
            return self._status("error", f"{exc}; {self._keeping()}", None)
        if wanted is None and self.in_service is not None:  # it had versions: a folder gone, a bucket emptied or out of reach
            return self._status("error", f"map store {self.store.url} shows no published version (unreachable?); {self._keeping()}", None)
        if wanted is None:
            return self._status("warn", f"map store {self.store.url} has no published version yet; {self._keeping()}", None)
        if wanted == self.in_service:
            return self._status("ok", f"version {wanted} of {self.store.url} in service", wanted)
        try:
            path = self._local_copy(wanted)
        except SeglocError as exc:
            return self._status("error", f"version {wanted} not pulled: {exc}; {self._keeping()}", wanted)
        refused = swap(str(path))
        if refused:
            reasons = "; ".join(f"{node}: {reason}" for node, reason in refused.items())
            if self.map_path:
                restore = swap(self.map_path)  # the nodes that took the new map go back, so that all run one version
                if restore:
                    reasons += "; going back failed on " + ", ".join(restore)
            return self._status("error", f"version {wanted} refused by the localizers ({reasons}); {self._keeping()}", wanted)
        previous = self.in_service
        self.in_service, self.map_path = wanted, str(path)
        self._prune()
        logger.info("map version %d of %s in service (was %s): %s", wanted, self.store.url, previous, path)
        return self._status("ok", f"version {wanted} of {self.store.url} in service (was {previous})", wanted, changed=True)

    def _local_copy(self, version: int) -> Path:
        """The local folder of ``version``: an earlier complete pull whose content matches the record, or a new pull."""
        record = self.store.record(version)
        path = cached_version_path(self.cache_dir, version)
        if path.is_dir():
            try:
                if content_hash(MapPackage.open(path).manifest["files"]) == record.content_hash:
                    return path
            except SeglocError as exc:
                logger.warning("cached map %s is not usable (%s): pulling it again", path, exc)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return self.store.pull(path, version=version, overwrite=path.exists())

    def _prune(self) -> None:
        """Remove pulled versions beyond ``keep_versions`` (the one in service and the newest others are kept)."""
        cached = []
        for entry in self.cache_dir.iterdir():
            match = _CACHED.match(entry.name)
            if match and entry.is_dir() and not entry.is_symlink():
                cached.append((int(match.group(1)), entry))
        others = sorted((item for item in cached if item[0] != self.in_service), reverse=True)
        for _, entry in others[self.keep_versions - 1 :]:
            shutil.rmtree(entry, ignore_errors=True)
            logger.info("removed cached map %s", entry)
