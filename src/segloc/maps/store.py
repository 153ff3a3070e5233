"""A map store: the published versions of one map, on any fsspec filesystem (a local folder by default).

Layout (``STORE`` is a local path or an fsspec URL: ``memory://fleet``, ``s3://bucket/maps/site``)::

    STORE/
      store.json                  format, format_version
      objects/ab/ab12...ef        every map file once, named by its SHA-256 (content-addressed, never rewritten)
      versions/000001.json        a version record: version, parent, content hash, method, frame,
                                  creation info, the map's files (path -> sha256, bytes), validation report
      latest.json                 {"version": N, ...}: the version robots should run

A version is published by uploading the files it lacks to ``objects/`` and then creating its
record with an exclusive create (``open(..., "xb")``: ``O_EXCL`` on a local disk, a conditional
write on object stores that support one): of concurrent publishers of the same version number
exactly one wins, the others get a :class:`VersionTaken` error and change nothing but a few
content-addressed objects that are either shared or unreferenced. Records are never rewritten,
so a version is immutable. ``latest.json`` is written to a temporary name and moved over the old
one (a rename on a local disk, one PUT on an object store), so readers see the old pointer or the
new one. :meth:`MapStore.pull` checks every file against its record's SHA-256 and the map's own
manifest before renaming the complete map into place: a corrupt upload never reaches a robot.

The content hash of a version is the SHA-256 of its manifest's ``files`` table (path, SHA-256 and
size of each file, sorted), so two builds of the same content have the same hash whatever their
creation times.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import json
import logging
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import segloc
from segloc.errors import SeglocError
from segloc.fileio import recover_directory, replace_directory, sha256_file, temp_dir_beside
from segloc.maps.package import MANIFEST, MapPackage, check_map_output

logger = logging.getLogger("segloc")

STORE_FORMAT = "segloc-map-store"
STORE_FORMAT_VERSION = 1
RECORD_FORMAT = "segloc-map-version"
LATEST = "latest.json"
_RECORD_NAME = re.compile(r"^(\d{6})\.json$")


class VersionTaken(SeglocError):
    """Another publisher created this version number first."""


def content_hash(manifest_files: dict[str, dict[str, Any]]) -> str:
    """SHA-256 of a map manifest's ``files`` table (each path with its SHA-256 and size, sorted by path)."""
    table = [[rel, info["sha256"], int(info["bytes"])] for rel, info in sorted(manifest_files.items())]
    return hashlib.sha256(json.dumps(table, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class MapVersion:
    """One published version (its record in ``versions/``).

    Attributes:
        version: the version number (1, 2, ...).
        parent: the version that was latest when it was published (None for the first).
        content_hash: :func:`content_hash` of the map's files.
        method, frame_id: the map's method and frame.
        created: ``time`` of publication, ``user``, ``host``, ``segloc_version``, ``source`` (the
            map folder published) and the map manifest's own ``created``.
        files: every file of the map, ``manifest.json`` included: path -> ``{"sha256", "bytes"}``.
        validation: the validation gate's report (:mod:`segloc.maps.gate`), or None when published without one.
    """

    version: int
    parent: int | None
    content_hash: str
    method: str
    frame_id: str
    created: dict[str, Any]
    files: dict[str, dict[str, Any]]
    validation: dict[str, Any] | None = None

    @property
    def bytes(self) -> int:
        return int(sum(info["bytes"] for info in self.files.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "version": self.version,
            "parent": self.parent,
            "content_hash": self.content_hash,
            "method": self.method,
            "frame_id": self.frame_id,
            "created": self.created,
            "files": self.files,
            "validation": self.validation,
        }

    @classmethod
    def from_dict(cls, values: Any, where: str) -> MapVersion:
        try:
            if values.get("format") != RECORD_FORMAT:
                raise ValueError(f"format is {values.get('format')!r}, not {RECORD_FORMAT!r}")
            files = values["files"]
            for rel, info in files.items():
                if not isinstance(info.get("sha256"), str) or not isinstance(info.get("bytes"), int):
                    raise ValueError(f"file {rel!r} needs 'sha256' and 'bytes'")
            if MANIFEST not in files:
                raise ValueError(f"it lists no {MANIFEST}")
            return cls(
                version=int(values["version"]),
                parent=None if values["parent"] is None else int(values["parent"]),
                content_hash=str(values["content_hash"]),
                method=str(values["method"]),
                frame_id=str(values["frame_id"]),
                created=dict(values["created"]),
                files=dict(files),
                validation=values.get("validation"),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SeglocError(f"version record {where} is corrupt: {exc}") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class MapStore:
    """The versions of one map in a folder or fsspec URL.

    Args:
        url: a local path (the default kind) or any fsspec URL (``memory://``, ``s3://``, ...).
        storage_options: passed to the fsspec filesystem (credentials, ``endpoint_url``, ...).
    """

    def __init__(self, url: str | Path, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.url = str(url)
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise SeglocError(f"map store {self.url}: {exc}") from None
        self.root = root.rstrip("/") or "/"

    def __repr__(self) -> str:
        return f"MapStore({self.url!r})"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts]) if self.root != "/" else "/" + "/".join(parts)

    def _object_path(self, sha256: str) -> str:
        return self._path("objects", sha256[:2], sha256)

    def _record_path(self, version: int) -> str:
        return self._path("versions", f"{version:06d}.json")

    def _read_json(self, path: str, what: str) -> Any:
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SeglocError(f"map store {self.url} is unreachable: {exc}") from None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SeglocError(f"map store {self.url}: {what} is corrupt: {exc}") from None

    def _write_atomically(self, path: str, data: bytes) -> None:
        """Write ``data`` to a temporary name beside ``path`` and move it over ``path`` (readers see the old file or the new one)."""
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        try:
            self.fs.mv(tmp, path)
        except BaseException:
            try:
                self.fs.rm(tmp)
            except OSError:  # already gone, or the store out of reach: the original error says more
                pass
            raise

    def _check_format(self, create: bool) -> None:
        info = self._read_json(self._path("store.json"), "store.json")
        if info is None:
            if not create:
                return
            self.fs.makedirs(self.root, exist_ok=True)
            try:
                with self.fs.open(self._path("store.json"), "xb") as f:
                    f.write(json.dumps({"format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION}).encode())
            except FileExistsError:  # another publisher created it
                pass
            return
        if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
            raise SeglocError(f"{self.url} is not a segloc map store (store.json says {info!r})")
        if info.get("format_version") != STORE_FORMAT_VERSION:
            raise SeglocError(
                f"map store {self.url} has format version {info.get('format_version')}, this segloc reads {STORE_FORMAT_VERSION}"
            )

    # --- reading ------------------------------------------------------------------------
    def version_numbers(self) -> list[int]:
        """The published version numbers, ascending."""
        self._check_format(create=False)
        self.fs.invalidate_cache(self._path("versions"))  # object-store filesystems cache listings; other publishers add versions
        try:
            names = self.fs.ls(self._path("versions"), detail=False)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SeglocError(f"map store {self.url} is unreachable: {exc}") from None
        numbers = (_RECORD_NAME.match(name.rstrip("/").rsplit("/", 1)[-1]) for name in names)
        return sorted(int(match.group(1)) for match in numbers if match)

    def record(self, version: int) -> MapVersion:
        """The record of ``version``.

        Raises:
            SeglocError: no such version (the message lists the published ones), or a corrupt record.
        """
        values = self._read_json(self._record_path(version), f"the record of version {version}")
        if values is None:
            published = self.version_numbers()
            listed = ", ".join(map(str, published)) or "none"
            raise SeglocError(f"map store {self.url} has no version {version} (published: {listed})")
        record = MapVersion.from_dict(values, f"{version} of {self.url}")
        if record.version != version:
            raise SeglocError(f"version record {version} of {self.url} is corrupt: it says version {record.version}")
        return record

    def versions(self) -> list[MapVersion]:
        """Every published version's record, ascending."""
        return [self.record(number) for number in self.version_numbers()]

    def latest(self) -> int | None:
        """The version ``latest.json`` points to; None in a store where nothing was published."""
        self._check_format(create=False)
        pointer = self._read_json(self._path(LATEST), LATEST)
        if pointer is None:
            return None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), int):
            raise SeglocError(f"map store {self.url}: {LATEST} is corrupt (no version number): {pointer!r}")
        return pointer["version"]

    # --- writing ------------------------------------------------------------------------
    def publish(
        self,
        map_path: str | Path,
        *,
        validation: dict[str, Any] | None = None,
        parent: int | None | str = "latest",
        set_latest: bool = True,
    ) -> MapVersion:
        """Publish the map at ``map_path`` as the next version (one more than the highest published).

        Args:
            map_path: a map package folder; it is opened with its checksums verified and every
                file read as the localizers read it first.
            validation: the gate's report stored with the version.
            parent: the version this one replaces; ``"latest"``: the store's latest.
            set_latest: move ``latest`` to the new version.

        Returns:
            the new version's record.

        Raises:
            VersionTaken: another publisher created the same version number first (nothing of
                this publication is visible; publish again to get the next number).
            SeglocError: the map is invalid, or its method or frame differ from the store's.
        """
        package = MapPackage.open(map_path)
        package.check_contents()
        self._check_format(create=True)
        numbers = self.version_numbers()
        if parent == "latest":
            parent = self.latest()
        if numbers:
            previous = self.record(numbers[-1])
            if (previous.method, previous.frame_id) != (package.method, package.frame_id):
                raise SeglocError(
                    f"map {map_path} is a {package.method} map in frame {package.frame_id!r}, but store {self.url} holds "
                    f"{previous.method} maps in frame {previous.frame_id!r}: publish it to another store"
                )
        version = numbers[-1] + 1 if numbers else 1
        files = {rel: dict(info) for rel, info in package.manifest["files"].items()}
        manifest_file = package.path / MANIFEST
        files[MANIFEST] = {"sha256": sha256_file(manifest_file), "bytes": manifest_file.stat().st_size}
        for rel, info in files.items():
            self._upload_object(package.path / rel, info)
        record = MapVersion(
            version=version,
            parent=parent,
            content_hash=content_hash(package.manifest["files"]),
            method=package.method,
            frame_id=package.frame_id,
            created={
                "time": _now(),
                "user": getpass.getuser(),
                "host": socket.gethostname(),
                "segloc_version": segloc.__version__,
                "source": str(Path(map_path).resolve()),
                "map_created": package.manifest.get("created", {}),
            },
            files=files,
            validation=validation,
        )
        token = uuid.uuid4().hex
        body = json.dumps({**record.to_dict(), "publisher": token}, indent=1).encode()
        self.fs.makedirs(self._path("versions"), exist_ok=True)
        try:
            with self.fs.open(self._record_path(version), "xb") as f:
                f.write(body)
        except FileExistsError:
            raise VersionTaken(f"map store {self.url}: version {version} was published by another publisher first; publish again") from None
        written = self._read_json(self._record_path(version), f"the record of version {version}")
        if not isinstance(written, dict) or written.get("publisher") != token:  # a filesystem whose exclusive create is not atomic
            raise VersionTaken(f"map store {self.url}: version {version} was published by another publisher first; publish again")
        if set_latest:
            self._set_latest(version, "publish")
        logger.info(
            "published %s as version %d of %s (%d bytes, content %s)", map_path, version, self.url, record.bytes, record.content_hash[:12]
        )
        return record

    def _upload_object(self, file: Path, info: dict[str, Any]) -> None:
        """Upload one map file into ``objects/`` unless an object of its hash and size is there."""
        target = self._object_path(info["sha256"])
        try:
            if self.fs.exists(target) and self.fs.size(target) == info["bytes"]:
                return
        except OSError as exc:
            raise SeglocError(f"map store {self.url} is unreachable: {exc}") from None
        self._write_atomically(target, file.read_bytes())

    def _set_latest(self, version: int, reason: str) -> None:
        pointer = {"version": version, "time": _now(), "reason": reason, "user": getpass.getuser(), "host": socket.gethostname()}
        self._write_atomically(self._path(LATEST), json.dumps(pointer, indent=1).encode())

    def rollback(self, version: int) -> MapVersion:
        """Point ``latest`` at the published ``version`` again (after its files are checked to be in the store)."""
        record = self.record(version)
        for rel, info in record.files.items():
            target = self._object_path(info["sha256"])
            if not self.fs.exists(target) or self.fs.size(target) != info["bytes"]:
                raise SeglocError(
                    f"map store {self.url}: version {version} cannot be rolled back to, its file {rel} is missing or truncated"
                )
        self._set_latest(version, "rollback")
        logger.info("map store %s: latest is version %d again", self.url, version)
        return record

    def pull(self, output: str | Path, version: int | None = None, overwrite: bool = False) -> Path:
        """Download a version (the latest by default) into the map folder ``output``, checked and renamed into place.

        Every file is checked against the record's SHA-256 and size, and the result is opened
        as a map (its own manifest's checksums, every file read) in a temporary folder beside
        ``output`` before that folder replaces ``output``: a corrupt or incomplete version
        leaves ``output`` as it was.

        Raises:
            SeglocError: an empty store, an unknown version, a file that fails its checksum, or
                an ``output`` that exists (without ``overwrite``) or is not a map.
        """
        output = Path(output)
        check_map_output(output, overwrite)
        if version is None:
            version = self.latest()
            if version is None:
                raise SeglocError(f"map store {self.url} has no published version to pull")
        record = self.record(version)
        staging = temp_dir_beside(output, "pull")
        try:
            for rel, info in record.files.items():
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise SeglocError(f"version record {version} of {self.url} is corrupt: file path {rel!r} leads outside the map")
                try:
                    data = self.fs.cat_file(self._object_path(info["sha256"]))
                except FileNotFoundError:
                    raise SeglocError(f"map store {self.url}: version {version} is incomplete, {rel} is missing") from None
                except OSError as exc:
                    raise SeglocError(f"map store {self.url} is unreachable: {exc}") from None
                if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
                    raise SeglocError(f"map store {self.url}: version {version} is corrupt, {rel} does not match its checksum")
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_bytes(data)
            package = MapPackage.open(staging)
            package.check_contents()
            if content_hash(package.manifest["files"]) != record.content_hash:
                raise SeglocError(f"map store {self.url}: version {version} is corrupt, its content hash does not match its record")
            recover_directory(output)
            replace_directory(staging, output)
        except BaseException:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("pulled version %d of %s into %s", version, self.url, output)
        return output
