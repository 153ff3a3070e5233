"""The map package: a folder with a manifest and layers of arrays in safe formats.

Layout::

    MAP/
      manifest.json          format, format_version, method, frame_id, created, layers, files
      core/images.json       the mapping images: names, cameras, cam_from_world
      core/points3D.npz      the 3D points and their observations (see segloc.maps.core)
      <layer>/<name>.npz     arrays of one method (reference features, SegLoc labels, ...)
      <layer>/<name>.json    small structured data of one method
      onnx/<network>.onnx    optional ONNX exports of the map's networks (segloc.models.export)

Every file is listed in the manifest with its SHA-256 and size; :meth:`MapPackage.open`
rejects a map whose format version is not :data:`FORMAT_VERSION` or whose checksums fail.
Arrays are read with ``allow_pickle=False``: opening a map never runs code. Packages are
written into a temporary folder beside the target and renamed into place, so a reader never
sees half a map, and a failed write leaves the previous map untouched.

Methods add their own layers: a method's map is ``core`` plus its layers, and a layer can be
added to an existing map with ``MapWriter(path, base=MapPackage.open(path))``.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import segloc
from segloc.errors import SeglocError
from segloc.fileio import check_output, describe_missing, recover_directory, replace_directory, sha256_file, temp_dir_beside

logger = logging.getLogger("segloc")

FORMAT_NAME = "segloc-map"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def is_map_package(path: str | Path) -> bool:
    """Whether ``path`` is a map package folder: its ``manifest.json`` says so (of any format version)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME


def check_map_output(path: str | Path, overwrite: bool = False, inputs=()) -> Path:
    """Check that a map can be written at ``path`` (:func:`segloc.fileio.check_output`): ``overwrite`` replaces only a map package.

    Args:
        path: the map folder to write.
        overwrite: replace an existing map there.
        inputs: ``(path, description)`` of what the build reads (``Dataset.inputs()``): the map
            may not be, hold or lie inside one of them.
    """
    return check_output(path, "replace", inputs=inputs, overwrite=overwrite, replaceable=is_map_package, what="map")


def _check_relative_path(package: Path, rel: Any, manifest_path: Path) -> None:
    """A manifest's file path must stay inside the package: relative, no ``..``, no link leading out."""
    if not isinstance(rel, str) or not rel or "\\" in rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise SeglocError(f"{manifest_path} is corrupt: file path {rel!r} is not a plain path inside the map")
    resolved = (package / rel).resolve()
    if not resolved.is_relative_to(package.resolve()):
        raise SeglocError(f"{manifest_path} is corrupt: file {rel!r} leads outside the map (to {resolved})")


def check_npz_sizes(path: Path) -> None:
    """Refuse an npz whose arrays announce more bytes than their members hold, or that holds objects, before loading it.

    Reads each ``.npy`` member's header only (shape, dtype) and compares the announced size
    with the member's stored size: a file cannot make a reader allocate more than it contains.

    Raises:
        ValueError: an object dtype, or an announced size larger than the member.
    """
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                if dtype.hasobject:
                    raise ValueError(f"{member.filename} holds objects (dtype {dtype}), which maps never store")
                announced = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if announced > member.file_size:
                    raise ValueError(f"{member.filename} announces {shape} {dtype} ({announced} bytes) but holds {member.file_size} bytes")


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise SeglocError(f"invalid layer or file name {name!r}: use plain names without slashes")


class MapPackage:
    """A map package opened for reading (validated on open)."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path, verify_checksums: bool = True) -> MapPackage:
        """Open and validate the map at ``path``.

        Raises SeglocError if it is not a map package, has another format version, lists a
        missing file, or (with ``verify_checksums``) a file whose checksum or size differs.
        """
        path = Path(path)
        if recover_directory(path):
            logger.warning("map %s: a writer died while replacing it; the previous map was put back", path)
        manifest_path = path / MANIFEST
        if describe_missing(path):
            raise SeglocError(f"map {path} {describe_missing(path)}")
        if not path.is_dir():
            raise SeglocError(f"{path} is a file, not a segloc map (a map is a folder holding {MANIFEST})")
        if not manifest_path.is_file():
            reason = describe_missing(manifest_path) or "is not a file"
            raise SeglocError(f"{path} is not a segloc map: {MANIFEST} {'is missing' if reason == 'does not exist' else reason}")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SeglocError(f"{manifest_path} is corrupt: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise SeglocError(
                f"{path} is not a segloc map (manifest format is {manifest.get('format') if isinstance(manifest, dict) else None!r})"
            )
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise SeglocError(
                f"{path} has map format version {version}, this segloc ({segloc.__version__}) reads version {FORMAT_VERSION}: rebuild the map with `segloc map build`"
            )
        files = manifest.get("files", {})
        if not isinstance(files, dict) or not isinstance(manifest.get("layers", {}), dict):
            raise SeglocError(f"{manifest_path} is corrupt: 'files' and 'layers' must be mappings")
        for layer, layer_info in manifest.get("layers", {}).items():
            for rel in layer_info.get("files", []) if isinstance(layer_info, dict) else [None]:
                if rel not in files:
                    raise SeglocError(f"{manifest_path} is corrupt: layer {layer!r} lists {rel!r}, which is not among its files")
        for rel, info in files.items():
            _check_relative_path(path, rel, manifest_path)
            if not isinstance(info, dict) or not isinstance(info.get("bytes"), int) or not isinstance(info.get("sha256"), str):
                raise SeglocError(f"{manifest_path} is corrupt: the entry of {rel!r} needs 'bytes' and 'sha256'")
            file = path / rel
            if not file.is_file():
                raise SeglocError(f"map {path} is incomplete: {rel} is listed in the manifest but missing")
            if verify_checksums:
                if file.stat().st_size != info["bytes"] or sha256_file(file) != info["sha256"]:
                    raise SeglocError(f"map {path} is corrupt: checksum of {rel} does not match the manifest")
        return cls(path, manifest)

    # --- content ------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def frame_id(self) -> str:
        return self.manifest["frame_id"]

    @property
    def layers(self) -> dict[str, dict[str, Any]]:
        return self.manifest.get("layers", {})

    def has_layer(self, layer: str) -> bool:
        return layer in self.layers

    def file_path(self, layer: str, name: str) -> Path:
        if layer not in self.layers:
            raise SeglocError(
                f"map {self.path} has no layer {layer!r} (layers: {', '.join(self.layers) or 'none'}); was it built with the right --method?"
            )
        for rel in self.layers[layer]["files"]:
            if Path(rel).stem == name:
                return self.path / rel
        raise SeglocError(f"map {self.path}: layer {layer!r} has no file {name!r}")

    def read_arrays(self, layer: str, name: str) -> dict[str, np.ndarray]:
        """The arrays of ``layer/name.npz``, read without pickles, each checked against its file before memory is used.

        Raises:
            SeglocError: a file that is not an npz, an object array, or an array whose header
                announces more data than its member holds (a forged shape is refused before
                any allocation).
        """
        path = self.file_path(layer, name)
        try:
            check_npz_sizes(path)
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise SeglocError(f"map file {path} could not be read: {exc}") from None

    def read_json(self, layer: str, name: str) -> Any:
        path = self.file_path(layer, name)
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SeglocError(f"map file {path} is corrupt: {exc}") from None

    def check_contents(self) -> None:
        """Read every file of every layer as the readers do: arrays with :meth:`read_arrays` (no pickles), JSON with :meth:`read_json`.

        :meth:`open` checks the manifest and the checksums; this also finds files that match
        their checksums but that no reader accepts (an object array, a file that is not an npz).

        Raises:
            SeglocError: the first file that cannot be read, or a file of another kind.
        """
        for layer, info in self.layers.items():
            for rel in info.get("files", []):
                suffix = Path(rel).suffix
                if suffix == ".npz":
                    self.read_arrays(layer, Path(rel).stem)
                elif suffix == ".json":
                    self.read_json(layer, Path(rel).stem)
                elif suffix == ".onnx":
                    self.check_onnx(rel)
                else:
                    raise SeglocError(f"map {self.path}: {rel} is neither .npz, .json nor .onnx, which the map format does not store")

    def check_onnx(self, rel: str) -> None:
        """An ONNX graph (a protobuf: data, not code) must parse; checked with the onnx package where it is installed."""
        try:
            import onnx
        except ImportError:
            return
        try:
            onnx.load_model(str(self.path / rel), load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise SeglocError(f"map file {self.path / rel} is not a valid ONNX graph: {exc}") from None

    def bytes(self, layers: list[str] | None = None) -> int:
        """Bytes on disk of the listed files (of ``layers`` only, when given)."""
        files = self.manifest.get("files", {})
        if layers is None:
            return int(sum(info["bytes"] for info in files.values()))
        total = 0
        for layer in layers:
            for rel in self.layers.get(layer, {}).get("files", []):
                total += files[rel]["bytes"]
        return int(total)


class MapWriter:
    """Builds a map package in a temporary folder; :meth:`commit` renames it into place.

    Use as a context manager: an exception inside the block discards the temporary folder.

    Args:
        path: where the map goes.
        method: the method the map serves (``reference``, ``segloc``, ...).
        frame_id: the frame the map's poses are in (ROS ``map`` by default).
        base: an opened map whose layers are carried over (to add or replace layers).
        overwrite: replace an existing map at ``path``.
        created: extra provenance (source dataset, config) stored under ``created``.
    """

    def __init__(
        self,
        path: str | Path,
        method: str,
        frame_id: str = "map",
        base: MapPackage | None = None,
        overwrite: bool = False,
        created: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        if base is None or base.path.resolve() != self.path.resolve():
            check_map_output(self.path, overwrite)
        self._tmp = temp_dir_beside(self.path, "new")
        self.manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "method": method,
            "frame_id": frame_id,
            "created": {
                "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "segloc_version": segloc.__version__,
                **(created or {}),
            },
            "layers": {},
            "files": {},
        }
        if base is not None:
            for layer, info in base.layers.items():
                for rel in info["files"]:
                    (self._tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(base.path / rel, self._tmp / rel)
                    self.manifest["files"][rel] = dict(base.manifest["files"][rel])
                self.manifest["layers"][layer] = json.loads(json.dumps(info))
            self.manifest["created"]["base"] = base.manifest.get("created", {})
        self._committed = False

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._committed:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _register(self, layer: str, rel: str, description: str | None) -> None:
        info = self.manifest["layers"].setdefault(layer, {"files": []})
        if description:
            info["description"] = description
        if rel not in info["files"]:
            info["files"].append(rel)
        file = self._tmp / rel
        self.manifest["files"][rel] = {"sha256": sha256_file(file), "bytes": file.stat().st_size}

    def _target(self, layer: str, name: str, suffix: str) -> tuple[str, Path]:
        _check_name(layer)
        _check_name(name)
        # Replacing a file of the same stem with another suffix drops the old one.
        for rel in list(self.manifest["layers"].get(layer, {}).get("files", [])):
            if Path(rel).stem == name:
                self.manifest["layers"][layer]["files"].remove(rel)
                self.manifest["files"].pop(rel, None)
                (self._tmp / rel).unlink(missing_ok=True)
        rel = f"{layer}/{name}{suffix}"
        (self._tmp / layer).mkdir(exist_ok=True)
        return rel, self._tmp / rel

    def add_arrays(self, layer: str, name: str, description: str | None = None, compress: bool = False, **arrays: np.ndarray) -> None:
        """Store named arrays as ``layer/name.npz`` (object arrays are refused)."""
        for key, value in arrays.items():
            if np.asarray(value).dtype == object:
                raise SeglocError(f"array {layer}/{name}:{key} has dtype object, which the map format does not store")
        rel, target = self._target(layer, name, ".npz")
        buffer = io.BytesIO()
        (np.savez_compressed if compress else np.savez)(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
        target.write_bytes(buffer.getvalue())
        self._register(layer, rel, description)

    def add_json(self, layer: str, name: str, value: Any, description: str | None = None) -> None:
        """Store a JSON-serialisable value as ``layer/name.json``."""
        rel, target = self._target(layer, name, ".json")
        target.write_text(json.dumps(value, indent=1))
        self._register(layer, rel, description)

    def add_file(self, layer: str, name: str, suffix: str, data: bytes, description: str | None = None) -> None:
        """Store raw bytes as ``layer/name<suffix>`` (an ONNX graph: never code that runs on load)."""
        rel, target = self._target(layer, name, suffix)
        target.write_bytes(data)
        self._register(layer, rel, description)

    def read_json(self, layer: str, name: str) -> Any:
        """A JSON file of the map being written (``layer/name.json``, carried over from ``base`` or added)."""
        rel = f"{layer}/{name}.json"
        if rel not in self.manifest["files"]:
            raise SeglocError(f"the map being written has no {rel}")
        return json.loads((self._tmp / rel).read_text())

    def remove_layer(self, layer: str) -> None:
        for rel in self.manifest["layers"].pop(layer, {}).get("files", []):
            self.manifest["files"].pop(rel, None)
            (self._tmp / rel).unlink(missing_ok=True)

    def set_metadata(self, **values: Any) -> None:
        """Extra top-level information (JSON-serialisable) stored under ``metadata``."""
        self.manifest.setdefault("metadata", {}).update(values)

    def commit(self) -> MapPackage:
        """Write the manifest and rename the package into place atomically."""
        (self._tmp / MANIFEST).write_text(json.dumps(self.manifest, indent=1))
        recover_directory(self.path)
        replace_directory(self._tmp, self.path)  # a kill at any point leaves the previous map or this one, whole
        self._committed = True
        logger.info(
            "wrote map %s (%s, %d bytes)", self.path, self.manifest["method"], sum(f["bytes"] for f in self.manifest["files"].values())
        )
        return MapPackage(self.path, self.manifest)
