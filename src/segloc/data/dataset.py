"""The dataset folder: the interchange format every reader, map builder and the evaluator accept.

Layout::

    DATASET/
      images/...      image files, names relative to images/
      mapping.txt     one mapping image per line
      query.txt       one query image per line (pose = ground truth, for evaluation)

Line: ``name qw qx qy qz tx ty tz MODEL width height params...``: the pose is
``cam_from_world`` (``x_cam = R(q) x_world + t``, quaternion scalar first), OpenCV axes, COLMAP
camera model names and parameter order. Lines starting with ``#`` are comments. Names may not
contain spaces.
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segloc.errors import SeglocError
from segloc.fileio import check_output, describe_missing, temp_dir_beside
from segloc.geometry.camera import CAMERA_MODELS, Camera
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

HEADER = "# name qw qx qy qz tx ty tz MODEL width height params... (world-to-camera, OpenCV axes)\n"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset: its name under ``images/``, its camera and ``cam_from_world``.

    ``timestamp`` (seconds) is set by readers of timed sources (rosbags, kapture); the dataset
    folder's text format does not store it.
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


def parse_image_line(line: str, where: str) -> ImageRecord:
    """Parse one ``name qw qx qy qz tx ty tz MODEL width height params...`` line."""
    fields = line.split()
    if len(fields) < 11:
        raise SeglocError(
            f"{where}: expected 'name qw qx qy qz tx ty tz MODEL width height params...', got {len(fields)} fields: {line.strip()!r}"
        )
    name, model = fields[0], fields[8]
    if model not in CAMERA_MODELS:
        raise SeglocError(f"{where}: unknown camera model {model!r}; supported: {', '.join(CAMERA_MODELS)}")
    try:
        pose = np.array([float(v) for v in fields[1:8]])
        width, height = int(fields[9]), int(fields[10])
        params = tuple(float(v) for v in fields[11:])
    except ValueError as exc:
        raise SeglocError(f"{where}: malformed number ({exc}) in {line.strip()!r}") from None
    if not np.all(np.isfinite(pose)):
        raise SeglocError(f"{where}: non-finite pose for image {name}: {fields[1:8]}")
    try:
        return ImageRecord(name, Rigid3(pose[:4], pose[4:]), Camera(model, width, height, params))
    except SeglocError as exc:
        raise SeglocError(f"{where}: {exc}") from None


def format_image_line(record: ImageRecord) -> str:
    """One dataset line for ``record`` (full float precision)."""
    if any(c.isspace() for c in record.name):
        raise SeglocError(f"image name {record.name!r} contains white space, which the dataset format cannot store")
    q, t, cam = record.cam_from_world.quat_wxyz, record.cam_from_world.translation, record.camera
    values = " ".join(repr(float(v)) for v in (*q, *t))
    params = " ".join(repr(float(p)) for p in cam.params)
    return f"{record.name} {values} {cam.model} {cam.width} {cam.height} {params}"


def read_image_list(path: str | Path) -> list[ImageRecord]:
    """Read a ``mapping.txt`` / ``query.txt`` file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SeglocError(f"image list {path} does not exist")
    records: list[ImageRecord] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        record = parse_image_line(line, f"{path}:{number}")
        if record.name in seen:
            raise SeglocError(f"{path}:{number}: image {record.name} is listed twice")
        seen.add(record.name)
        records.append(record)
    return records


def write_image_list(path: str | Path, records: Iterable[ImageRecord]) -> None:
    path = Path(path)
    path.write_text(HEADER + "".join(format_image_line(r) + "\n" for r in records))


def read_dataset(root: str | Path, check_images: bool = True, require_query: bool = False) -> Dataset:
    """Read a dataset folder.

    Args:
        root: the folder holding ``images/``, ``mapping.txt`` and (optionally) ``query.txt``.
        check_images: raise if an image file listed is missing.
        require_query: raise if ``query.txt`` is missing or empty (evaluation needs queries).
    """
    root = Path(root)
    if not root.is_dir():
        raise SeglocError(f"dataset folder {root} does not exist")
    if not (root / "mapping.txt").is_file():
        raise SeglocError(f"{root} is not a dataset folder: mapping.txt is missing (expected images/, mapping.txt, query.txt)")
    mapping = read_image_list(root / "mapping.txt")
    query = read_image_list(root / "query.txt") if (root / "query.txt").is_file() else []
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
