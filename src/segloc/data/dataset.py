"""The dataset folder: the interchange format every reader, map builder and the evaluator accept.

Layout::

    DATASET/
      images/...      image files, names relative to images/
      mapping.txt     one mapping image per line
      query.txt       one query image per line (pose = ground truth, for evaluation)

Line: ``name qw qx qy qz tx ty tz MODEL width height params... [timestamp]``: the pose is
``cam_from_world`` (``x_cam = R(q) x_world + t``, quaternion scalar first), OpenCV axes, COLMAP
camera model names and parameter order; the optional last field is the image's timestamp in
seconds (written for timed sources: rosbags, kapture, synthetic scenes). Lines starting with
``#`` are comments. Names may not contain spaces; in a dataset folder they are relative paths
under ``images/`` (no ``..``, not absolute). A quaternion is normalised when read: one whose
norm is off 1 by more than :data:`QUATERNION_NORM_WARN` is reported, by more than
:data:`QUATERNION_NORM_MAX` refused (the line is probably not in this format).

Images are decoded with OpenCV after a check of the file's structure (:func:`image_data_problem`):
a truncated or corrupt JPEG or PNG is an error, never an image with grey rows.
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from segloc.errors import SeglocError
from segloc.fileio import check_output, describe_missing, temp_dir_beside
from segloc.geometry.camera import CAMERA_MODELS, Camera
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

HEADER = "# name qw qx qy qz tx ty tz MODEL width height params... [timestamp] (world-to-camera, OpenCV axes; timestamp in seconds)\n"

#: A quaternion whose norm is off 1 by more than this is normalised with a warning ...
QUATERNION_NORM_WARN = 1e-3
#: ... and by more than this refused: it is not a rotation written with a few digits.
QUATERNION_NORM_MAX = 0.1


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset: its name under ``images/``, its camera and ``cam_from_world``.

    ``timestamp`` (seconds) is set by readers of timed sources (rosbags, kapture, synthetic
    scenes) and stored as the optional last field of the dataset line; None when unknown.
    """

    name: str
    cam_from_world: Rigid3
    camera: Camera
    timestamp: float | None = None


@dataclass
class Dataset:
    """A dataset folder in memory: its root and the mapping and query records."""

    root: Path
    mapping: list[ImageRecord]
    query: list[ImageRecord]

    @property
    def image_dir(self) -> Path:
        return self.root / "images"

    def image_path(self, name: str) -> Path:
        return self.image_dir / name

    def load_image(self, name: str, grayscale: bool = False) -> np.ndarray:
        """The image ``name`` as (H, W, 3) RGB uint8, or (H, W) uint8 when ``grayscale``."""
        return load_image(self.image_path(name), grayscale=grayscale)

    def inputs(self) -> list[tuple[Path, str]]:
        """``(path, description)`` of the folders this dataset is read from, for :func:`segloc.fileio.check_output`."""
        return [(self.root, "the dataset folder"), (self.image_dir, "the image folder of the dataset")]


def is_dataset_folder(path: str | Path) -> bool:
    """Whether ``path`` is a dataset folder (it holds ``mapping.txt``)."""
    return (Path(path) / "mapping.txt").is_file()


JPEG_START = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_problem(data: bytes) -> str | None:
    """Walk the JPEG markers up to the end-of-image marker (entropy-coded data skipped); what is wrong, or None."""
    size, pos = len(data), 2
    truncated = "truncated (the data ends before the JPEG end-of-image marker)"
    while True:
        if pos >= size:
            return truncated
        if data[pos] != 0xFF:
            return f"corrupt (no JPEG marker at byte {pos})"
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            return truncated
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # end of image
            return None
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            continue
        if pos + 2 > size:
            return truncated
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            return f"corrupt (JPEG segment of length {length} at byte {pos})"
        pos += length
        if pos > size:
            return truncated
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker other than RSTn
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= size:
                    return truncated
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    pos += 2
                elif following == 0xFF:
                    pos += 1
                else:
                    break


def _png_problem(data: bytes) -> str | None:
    """Walk the PNG chunks up to ``IEND``, checking each chunk's CRC; what is wrong, or None."""
    view, size, pos = memoryview(data), len(data), len(PNG_SIGNATURE)
    while pos + 8 <= size:
        length = int.from_bytes(view[pos : pos + 4], "big")
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > size:
            break
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            return f"corrupt (CRC error in the PNG {kind.decode('latin-1')} chunk at byte {pos})"
        if kind == b"IEND":
            return None
        pos = end
    return "truncated (the data ends before the PNG IEND chunk)"


def image_data_problem(data: bytes) -> str | None:
    """What is wrong with the encoded image ``data``: a truncated or corrupt JPEG or PNG; None when its structure is sound.

    JPEG: the markers are walked to the end-of-image marker (data after it, as some cameras
    append, is ignored); PNG: the chunks to ``IEND``, with their CRCs. Other formats are left to
    the decoder. (libjpeg only warns about a truncated file and fills the missing rows with grey.)
    """
    if data.startswith(JPEG_START):
        return _jpeg_problem(data)
    if data.startswith(PNG_SIGNATURE):
        return _png_problem(data)
    return None


def decode_image(data: bytes, where: str, flags: int | None = None) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) with OpenCV after :func:`image_data_problem`; OpenCV's channel order (BGR).

    Args:
        data: the file's bytes.
        where: the image's name in messages.
        flags: ``cv2.IMREAD_*`` flags (default ``IMREAD_COLOR``).

    Raises:
        SeglocError: the data is truncated, corrupt, or not an image OpenCV decodes.
    """
    import cv2

    problem = image_data_problem(data)
    if problem:
        raise SeglocError(f"{where} is {problem}: replace the file")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR if flags is None else flags)
    if image is None:
        raise SeglocError(f"{where} could not be decoded (corrupt or not an image file)")
    return image


def load_image(path: str | Path, grayscale: bool = False) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB uint8, or (H, W) uint8 when ``grayscale``; a truncated or corrupt file is an error."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise SeglocError(f"image {path} {describe_missing(path) or 'is not a file'}")
    image = decode_image(path.read_bytes(), f"image {path}", cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR)
    return image if grayscale else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) RGB or (H, W) uint8 image; the extension picks the codec."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), data):
        raise SeglocError(f"could not write image {path}")


def _parse_image_line(line: str, where: str) -> tuple[ImageRecord, float]:
    """The record of one dataset line and how far its quaternion's norm is off 1."""
    fields = line.split()
    if len(fields) < 11:
        raise SeglocError(
            f"{where}: expected 'name qw qx qy qz tx ty tz MODEL width height params... [timestamp]', got {len(fields)} fields: "
            f"{line.strip()!r}"
        )
    name, model = fields[0], fields[8]
    if model not in CAMERA_MODELS:
        shifted = next((i for i in range(9, len(fields)) if fields[i] in CAMERA_MODELS), None)
        if shifted is not None:
            raise SeglocError(
                f"{where}: the line has {shifted - 8} field(s) too many before the camera model {fields[shifted]}: "
                f"image names cannot contain spaces (name {' '.join(fields[: shifted - 7])!r}?)"
            )
        raise SeglocError(f"{where}: unknown camera model {model!r}; supported: {', '.join(CAMERA_MODELS)}")
    expected = 11 + len(CAMERA_MODELS[model])
    if len(fields) > expected + 1:
        raise SeglocError(
            f"{where}: the line has {len(fields)} fields, camera model {model} takes {expected} (plus an optional timestamp): "
            f"too many fields in {line.strip()!r}"
        )
    try:
        pose = np.array([float(v) for v in fields[1:8]])
        width, height = int(fields[9]), int(fields[10])
        params = tuple(float(v) for v in fields[11:expected])
        timestamp = float(fields[expected]) if len(fields) > expected else None
    except ValueError as exc:
        raise SeglocError(f"{where}: malformed number ({exc}) in {line.strip()!r}") from None
    if not np.all(np.isfinite(pose)):
        raise SeglocError(f"{where}: non-finite pose for image {name}: {fields[1:8]}")
    if timestamp is not None and not np.isfinite(timestamp):
        raise SeglocError(f"{where}: non-finite timestamp {fields[expected]} for image {name}")
    norm = float(np.linalg.norm(pose[:4]))
    if abs(norm - 1.0) > QUATERNION_NORM_MAX:
        raise SeglocError(
            f"{where}: the quaternion qw qx qy qz = {' '.join(fields[1:5])} of image {name} has norm {norm:.4g}, more than "
            f"{QUATERNION_NORM_MAX} off 1: not a rotation; is the line in the order name qw qx qy qz tx ty tz ...?"
        )
    try:
        record = ImageRecord(name, Rigid3(pose[:4], pose[4:]), Camera(model, width, height, params), timestamp)
    except SeglocError as exc:
        raise SeglocError(f"{where}: {exc}") from None
    return record, abs(norm - 1.0)


def parse_image_line(line: str, where: str) -> ImageRecord:
    """Parse one ``name qw qx qy qz tx ty tz MODEL width height params... [timestamp]`` line (format: module docstring)."""
    record, norm_error = _parse_image_line(line, where)
    if norm_error > QUATERNION_NORM_WARN:
        logger.warning("%s: quaternion norm off 1 by %.3g (more than %g): normalised", where, norm_error, QUATERNION_NORM_WARN)
    return record


def format_image_line(record: ImageRecord) -> str:
    """One dataset line for ``record`` (full float precision; the timestamp last when known)."""
    if not record.name or any(c.isspace() for c in record.name):
        raise SeglocError(f"image name {record.name!r} is empty or contains white space, which the dataset format cannot store")
    q, t, cam = record.cam_from_world.quat_wxyz, record.cam_from_world.translation, record.camera
    values = " ".join(repr(float(v)) for v in (*q, *t))
    params = " ".join(repr(float(p)) for p in cam.params)
    stamp = "" if record.timestamp is None else f" {float(record.timestamp)!r}"
    return f"{record.name} {values} {cam.model} {cam.width} {cam.height} {params}{stamp}"


def read_image_list(path: str | Path) -> list[ImageRecord]:
    """Read a ``mapping.txt`` / ``query.txt`` file; errors name the file and line.

    Quaternions off unit norm by more than :data:`QUATERNION_NORM_WARN` are normalised with one
    warning for the file; by more than :data:`QUATERNION_NORM_MAX`, refused.
    """
    path = Path(path)
    if not path.is_file():
        raise SeglocError(f"image list {path} {describe_missing(path) or 'is not a file'}")
    records: list[ImageRecord] = []
    seen: set[str] = set()
    off_norm: list[tuple[float, int]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        record, norm_error = _parse_image_line(line, f"{path}:{number}")
        if record.name in seen:
            raise SeglocError(f"{path}:{number}: image {record.name} is listed twice")
        if norm_error > QUATERNION_NORM_WARN:
            off_norm.append((norm_error, number))
        seen.add(record.name)
        records.append(record)
    if off_norm:
        worst, line_number = max(off_norm)
        logger.warning(
            "%s: %d quaternion(s) off unit norm by more than %g (the most, %.3g, on line %d): normalised; check the poses",
            path,
            len(off_norm),
            QUATERNION_NORM_WARN,
            worst,
            line_number,
        )
    return records


def write_image_list(path: str | Path, records: Iterable[ImageRecord]) -> None:
    path = Path(path)
    path.write_text(HEADER + "".join(format_image_line(r) + "\n" for r in records))


def check_image_names(records: Iterable[ImageRecord], where: str) -> None:
    """Refuse image names that point outside ``images/``: absolute paths and paths with ``..``."""
    for record in records:
        parts = PurePosixPath(record.name).parts
        if PurePosixPath(record.name).is_absolute() or ".." in parts:
            raise SeglocError(
                f"{where}: image name {record.name!r} points outside images/: names are paths relative to images/ without '..'; "
                "copy or link the image under images/"
            )


def read_dataset(root: str | Path, check_images: bool = True, require_query: bool = False) -> Dataset:
    """Read a dataset folder.

    Args:
        root: the folder holding ``images/``, ``mapping.txt`` and (optionally) ``query.txt``.
        check_images: raise if an image file listed is missing.
        require_query: raise if ``query.txt`` is missing or empty (evaluation needs queries).
    """
    root = Path(root)
    if not root.is_dir():
        raise SeglocError(f"dataset folder {root} {describe_missing(root) or 'is a file, not a folder'}")
    if not (root / "mapping.txt").is_file():
        raise SeglocError(f"{root} is not a dataset folder: mapping.txt is missing (expected images/, mapping.txt, query.txt)")
    mapping = read_image_list(root / "mapping.txt")
    query = read_image_list(root / "query.txt") if (root / "query.txt").is_file() else []
    check_image_names(mapping, str(root / "mapping.txt"))
    check_image_names(query, str(root / "query.txt"))
    if require_query and not query:
        raise SeglocError(f"{root}: no query images (query.txt is missing or empty)")
    if check_images:
        for kind, records in (("mapping", mapping), ("query", query)):
            missing = [r.name for r in records if not (root / "images" / r.name).is_file()]
            if missing:
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                raise SeglocError(f"{root}: {len(missing)} {kind} image(s) missing under images/: {', '.join(missing[:3])}{more}")
    logger.debug("read dataset %s: %d mapping, %d query images", root, len(mapping), len(query))
    return Dataset(root, mapping, query)


def write_dataset(
    root: str | Path,
    mapping: Sequence[ImageRecord],
    query: Sequence[ImageRecord],
    images: dict[str, np.ndarray] | None = None,
    source_image_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a dataset folder atomically (a temporary folder renamed into place).

    Image pixels come from ``images`` (name -> (H, W[, 3]) RGB uint8 array) or are copied from
    ``source_image_dir`` (names relative to it). ``overwrite`` replaces an existing dataset folder
    (or empty folder) at ``root``, never another folder, nor one holding ``source_image_dir``
    (:func:`segloc.fileio.check_output`). Returns ``root``.
    """
    root = Path(root)
    check_output(
        root,
        "replace",
        inputs=[(source_image_dir, "the source image folder")],
        overwrite=overwrite,
        replaceable=is_dataset_folder,
        what="dataset folder",
    )
    names = [r.name for r in (*mapping, *query)]
    check_image_names([*mapping, *query], f"dataset {root}")
    tmp = temp_dir_beside(root, "new")
    try:
        (tmp / "images").mkdir()
        for name in dict.fromkeys(names):
            target = tmp / "images" / name
            if images is not None and name in images:
                save_image(target, images[name])
            elif source_image_dir is not None:
                source = Path(source_image_dir) / name
                if not source.is_file():
                    raise SeglocError(f"image {source} does not exist")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
            else:
                raise SeglocError(f"no pixels given for image {name}")
        write_image_list(tmp / "mapping.txt", mapping)
        write_image_list(tmp / "query.txt", query)
        if root.exists():
            old = temp_dir_beside(root, "old")
            os.replace(root, old / "dataset")
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def merge_datasets(parts: Sequence[tuple[Dataset, str]], root: str | Path, overwrite: bool = False) -> Path:
    """Write one dataset folder holding the mapping and query images of several (e.g. two recordings of a place).

    Args:
        parts: ``(dataset, prefix)`` pairs: each image is renamed ``prefix + name`` (the
            prefixes :func:`segloc.maps.update.update_map` gives a recording's images, so that a
            rebuild from the merged folder and an updated map name the same images alike).
        root: the dataset folder to write (atomically, :func:`write_dataset`).
        overwrite: replace an existing dataset folder at ``root``.
    """
    mapping, query, images = [], [], {}
    for dataset, prefix in parts:
        for records, target in ((dataset.mapping, mapping), (dataset.query, query)):
            for record in records:
                target.append(ImageRecord(prefix + record.name, record.cam_from_world, record.camera, record.timestamp))
                images[prefix + record.name] = dataset.load_image(record.name)
    return write_dataset(root, mapping, query, images=images, overwrite=overwrite)
