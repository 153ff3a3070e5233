"""COLMAP models (text or binary, with or without rigs and frames) through pycolmap.

A COLMAP model's image poses are ``cam_from_world`` with OpenCV axes and its camera parameters
use COLMAP's pixel convention (top-left pixel centre at (0.5, 0.5)), exactly as the dataset
folder does, so the conversion is a copy. Only registered images (with a pose) become records.
In models with multi-camera rigs, each image's ``cam_from_world`` is the composed pose
(``cam_from_rig * rig_from_world``), so rigs need no special handling when reading; the writer
makes one trivial rig per camera.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from segloc.data.dataset import ImageRecord, is_dataset_folder, write_dataset
from segloc.errors import SeglocError
from segloc.fileio import check_output
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

_MODEL_FILES = ("cameras", "images", "points3D")


def _load_reconstruction(path: str | Path):
    import pycolmap

    path = Path(path)
    if not path.is_dir():
        raise SeglocError(f"COLMAP model folder {path} does not exist")
    found = [f"{name}{ext}" for name in _MODEL_FILES for ext in (".txt", ".bin") if (path / f"{name}{ext}").is_file()]
    if not found:
        raise SeglocError(
            f"{path} is not a COLMAP model: expected cameras, images and points3D files (.txt or .bin), "
            f"found {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'}"
        )
    try:
        return pycolmap.Reconstruction(str(path))
    except (ValueError, RuntimeError) as exc:
        raise SeglocError(f"could not read the COLMAP model in {path}: {exc}") from None


def read_colmap_model(path: str | Path) -> list[ImageRecord]:
    """Read the registered images of a COLMAP model (text or binary) as records sorted by name.

    Args:
        path: folder with ``cameras``, ``images``, ``points3D`` (and optionally ``rigs``,
            ``frames``) as ``.txt`` or ``.bin`` files.

    Returns:
        One :class:`ImageRecord` per registered image: ``cam_from_world``, camera in COLMAP
        convention; ``timestamp`` is None (COLMAP stores none).
    """
    reconstruction = _load_reconstruction(path)
    cameras: dict[int, Camera] = {}
    records: list[ImageRecord] = []
    unregistered = 0
    for image in reconstruction.images.values():
        if not image.has_pose:
            unregistered += 1
            continue
        if image.camera_id not in cameras:
            try:
                cameras[image.camera_id] = Camera.from_pycolmap(reconstruction.cameras[image.camera_id])
            except SeglocError as exc:
                raise SeglocError(f"{path}: camera {image.camera_id} of image {image.name}: {exc}") from None
        records.append(ImageRecord(image.name, Rigid3.from_pycolmap(image.cam_from_world()), cameras[image.camera_id]))
    if unregistered:
        logger.info("%s: skipped %d image(s) without a pose (not registered)", path, unregistered)
    records.sort(key=lambda r: r.name)
    logger.debug("read COLMAP model %s: %d images, %d cameras", path, len(records), len(cameras))
    return records


def read_colmap_points3D(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The 3D points of a COLMAP model.

    Returns:
        points3D (N, 3) float64 world coordinates and colors (N, 3) uint8 RGB, ordered by
        point id.
    """
    reconstruction = _load_reconstruction(path)
    ids = sorted(reconstruction.points3D)
    points3D = np.array([reconstruction.points3D[i].xyz for i in ids], dtype=np.float64).reshape(-1, 3)
    colors = np.array([reconstruction.points3D[i].color for i in ids], dtype=np.uint8).reshape(-1, 3)
    return points3D, colors


def write_colmap_model(
    path: str | Path,
    records: Sequence[ImageRecord],
    points3D: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    binary: bool = False,
) -> Path:
    """Write records (and optionally 3D points without tracks) as a COLMAP model.

    Identical cameras share one camera id; each camera gets a trivial rig and each image a
    trivial frame (COLMAP >= 3.12 layout, which older readers ignore).

    Args:
        path: output folder (created; existing model files in it are overwritten).
        records: images with ``cam_from_world`` and camera; names must be unique.
        points3D: (N, 3) world points, written with empty tracks.
        colors: (N, 3) uint8 RGB colours of the points (default black).
        binary: write ``.bin`` files instead of ``.txt``.

    Returns:
        ``path``.
    """
    import pycolmap

    path = Path(path)
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise SeglocError(f"image names must be unique in a COLMAP model; duplicated: {', '.join(duplicates[:5])}")
    reconstruction = pycolmap.Reconstruction()
    camera_ids: dict[Camera, int] = {}
    for image_id, record in enumerate(records, start=1):
        camera_id = camera_ids.get(record.camera)
        if camera_id is None:
            camera_id = camera_ids[record.camera] = len(camera_ids) + 1
            camera = record.camera.to_pycolmap()
            camera.camera_id = camera_id
            reconstruction.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=record.name, camera_id=camera_id, image_id=image_id)
        reconstruction.add_image_with_trivial_frame(image, record.cam_from_world.to_pycolmap())
    if points3D is not None:
        points3D = np.asarray(points3D, dtype=np.float64)
        if points3D.ndim != 2 or points3D.shape[1] != 3:
            raise SeglocError(f"points3D must have shape (N, 3), got {points3D.shape}")
        if colors is None:
            colors = np.zeros_like(points3D, dtype=np.uint8)
        colors = np.asarray(colors, dtype=np.uint8)
        if colors.shape != points3D.shape:
            raise SeglocError(f"colors must have the shape of points3D {points3D.shape}, got {colors.shape}")
        for xyz, color in zip(points3D, colors):
            reconstruction.add_point3D(xyz, pycolmap.Track(), color)
    path.mkdir(parents=True, exist_ok=True)
    if binary:
        reconstruction.write_binary(str(path))
    else:
        reconstruction.write_text(str(path))
    return path


def _read_name_list(path: Path) -> list[str]:
    """Image names from a list file: the first field of each non-comment line."""
    if not path.is_file():
        raise SeglocError(f"query list {path} does not exist")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def colmap_to_dataset(
    model_dir: str | Path,
    image_dir: str | Path,
    out_dir: str | Path,
    query_names: Iterable[str] | str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a dataset folder from a COLMAP model and its images.

    Args:
        model_dir: the COLMAP model folder.
        image_dir: folder the model's image names are relative to.
        out_dir: dataset folder to write.
        query_names: images that go to ``query.txt`` (the others to ``mapping.txt``): names, or
            the path of a text file with one name per line (extra fields after the name, as in
            hloc's query lists with intrinsics, are ignored). None: no queries.
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``out_dir``.
    """
    inputs = [(model_dir, "the COLMAP model folder"), (image_dir, "the image folder")]
    if isinstance(query_names, (str, Path)):
        inputs.append((query_names, "the query list"))
    check_output(out_dir, "replace", inputs=inputs, overwrite=overwrite, replaceable=is_dataset_folder, what="dataset folder")
    records = read_colmap_model(model_dir)
    if not records:
        raise SeglocError(f"the COLMAP model in {model_dir} has no registered images")
    if query_names is None:
        queries: set[str] = set()
    elif isinstance(query_names, (str, Path)):
        queries = set(_read_name_list(Path(query_names)))
    else:
        queries = set(query_names)
    missing = sorted(queries - {r.name for r in records})
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise SeglocError(f"{len(missing)} query image(s) are not registered in {model_dir}: {', '.join(missing[:5])}{more}")
    mapping = [r for r in records if r.name not in queries]
    query = [r for r in records if r.name in queries]
    logger.info("COLMAP %s -> dataset %s: %d mapping, %d query images", model_dir, out_dir, len(mapping), len(query))
    return write_dataset(out_dir, mapping, query, source_image_dir=image_dir, overwrite=overwrite)
