"""kapture folders (format 1.x), read and written as plain text, without the kapture library.

Files used, all comma-separated with spaces around commas ignored, ``#`` comment lines and a
``# kapture format: 1.1`` header::

    KAPTURE/
      sensors/sensors.txt          sensor_device_id, name, sensor_type, [model, width, height, params...]
      sensors/rigs.txt             rig_device_id, sensor_device_id, qw, qx, qy, qz, tx, ty, tz   (optional)
      sensors/records_camera.txt   timestamp, device_id, image_path
      sensors/trajectories.txt     timestamp, device_id, qw, qx, qy, qz, tx, ty, tz
      sensors/records_data/...     the images, paths relative to this folder

Conventions (kapture format 1.1): trajectories are world-to-device (``device_from_world``,
scalar-first quaternion, as COLMAP), so a camera's line is ``cam_from_world``; rigs.txt lines
are rig-to-sensor (``sensor_from_rig``). Camera models and parameter order are COLMAP's (with
the image size first), in COLMAP's pixel convention. Timestamps are integers whose unit
kapture leaves open (sequence numbers, POSIX seconds, microseconds...): ``timestamp_unit`` says
how many seconds one tick is (default 1).

Rigs: an image whose camera has no trajectory entry at its timestamp gets its pose from the
trajectory of a rig containing the camera: ``cam_from_world = cam_from_rig * rig_from_world``.
Images with no pose at all are skipped with a warning (``missing_pose="skip"``, the default,
because kapture query sets often ship without poses) or raise (``missing_pose="error"``).

Datasets split into ``mapping/`` and ``query/`` kapture folders (as kapture-localization
does) are converted with :func:`kapture_to_dataset`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segloc.data.dataset import ImageRecord, is_dataset_folder, write_dataset
from segloc.errors import SeglocError
from segloc.fileio import check_output, temp_dir_beside
from segloc.geometry.camera import CAMERA_MODELS, Camera
from segloc.geometry.transforms import Rigid3

logger = logging.getLogger("segloc")

KAPTURE_VERSION = "1.1"
_HEADER_PREFIX = "# kapture format:"


@dataclass(frozen=True)
class KaptureRecord:
    """One line of ``records_camera.txt``."""

    timestamp: int
    device_id: str
    image_path: str


@dataclass
class KaptureData:
    """The camera-related content of one kapture folder.

    Attributes:
        root: the kapture folder (holding ``sensors/``).
        cameras: camera sensor id -> camera (COLMAP model and convention).
        rigs: rig id -> camera sensor id -> ``cam_from_rig``.
        records: ``records_camera.txt`` lines in file order.
        trajectories: (timestamp, device id) -> ``device_from_world``.
    """

    root: Path
    cameras: dict[str, Camera]
    rigs: dict[str, dict[str, Rigid3]]
    records: list[KaptureRecord]
    trajectories: dict[tuple[int, str], Rigid3]

    @property
    def image_dir(self) -> Path:
        return self.root / "sensors" / "records_data"


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the data lines of a kapture text file."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if number == 1 and stripped.startswith(_HEADER_PREFIX):
                version = stripped[len(_HEADER_PREFIX) :].strip()
                if not version.startswith("1."):
                    logger.warning("%s: kapture format %s; this reader knows format %s", path, version, KAPTURE_VERSION)
            continue
        rows.append((number, [field.strip() for field in stripped.split(",")]))
    return rows


def _parse_pose(fields: Sequence[str], where: str) -> Rigid3:
    try:
        values = np.array([float(v) for v in fields], dtype=np.float64)
    except ValueError as exc:
        raise SeglocError(f"{where}: malformed number in pose ({exc})") from None
    try:
        return Rigid3(values[:4], values[4:])
    except SeglocError as exc:
        raise SeglocError(f"{where}: {exc}") from None


def _parse_timestamp(field: str, where: str) -> int:
    try:
        return int(field)
    except ValueError:
        raise SeglocError(f"{where}: the timestamp must be an integer, got {field!r}") from None


def _read_sensors(path: Path) -> dict[str, Camera]:
    cameras: dict[str, Camera] = {}
    for number, fields in _lines(path):
        where = f"{path}:{number}"
        if len(fields) < 3:
            raise SeglocError(f"{where}: expected 'sensor_device_id, name, sensor_type, [params...]', got {len(fields)} fields")
        sensor_id, sensor_type = fields[0], fields[2]
        if sensor_type != "camera":
            continue  # depth, lidar, gnss, wifi...: not used here
        if len(fields) < 6:
            raise SeglocError(f"{where}: camera {sensor_id} needs 'model, width, height, params...' after the sensor type")
        model = fields[3]
        if model not in CAMERA_MODELS:
            raise SeglocError(
                f"{where}: camera {sensor_id} has the unsupported camera model {model!r}; supported: {', '.join(CAMERA_MODELS)}"
            )
        try:
            width, height = int(float(fields[4])), int(float(fields[5]))
            params = tuple(float(v) for v in fields[6:])
        except ValueError as exc:
            raise SeglocError(f"{where}: malformed number in camera {sensor_id} ({exc})") from None
        if sensor_id in cameras:
            raise SeglocError(f"{where}: sensor {sensor_id} is defined twice")
        try:
            cameras[sensor_id] = Camera(model, width, height, params)
        except SeglocError as exc:
            raise SeglocError(f"{where}: camera {sensor_id}: {exc}") from None
    return cameras


def _read_rigs(path: Path) -> dict[str, dict[str, Rigid3]]:
    rigs: dict[str, dict[str, Rigid3]] = {}
    if not path.is_file():
        return rigs
    for number, fields in _lines(path):
        where = f"{path}:{number}"
        if len(fields) != 9:
            raise SeglocError(f"{where}: expected 'rig_device_id, sensor_device_id, qw, qx, qy, qz, tx, ty, tz', got {len(fields)} fields")
        rigs.setdefault(fields[0], {})[fields[1]] = _parse_pose(fields[2:], where)
    return rigs


def _read_records(path: Path) -> list[KaptureRecord]:
    records: list[KaptureRecord] = []
    for number, fields in _lines(path):
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise SeglocError(f"{where}: expected 'timestamp, device_id, image_path', got {len(fields)} fields")
        records.append(KaptureRecord(_parse_timestamp(fields[0], where), fields[1], fields[2]))
    return records


def _read_trajectories(path: Path) -> dict[tuple[int, str], Rigid3]:
    trajectories: dict[tuple[int, str], Rigid3] = {}
    if not path.is_file():
        return trajectories
    for number, fields in _lines(path):
        where = f"{path}:{number}"
        if len(fields) != 9:
            raise SeglocError(f"{where}: expected 'timestamp, device_id, qw, qx, qy, qz, tx, ty, tz', got {len(fields)} fields")
        key = (_parse_timestamp(fields[0], where), fields[1])
        if key in trajectories:
            raise SeglocError(f"{where}: a second pose for device {key[1]} at timestamp {key[0]}")
        trajectories[key] = _parse_pose(fields[2:], where)
    return trajectories


def load_kapture(path: str | Path) -> KaptureData:
    """Parse the camera-related files of a kapture folder (no pose matching yet)."""
    root = Path(path)
    sensors = root / "sensors"
    if not (sensors / "sensors.txt").is_file():
        if (root / "mapping" / "sensors").is_dir() or (root / "query" / "sensors").is_dir():
            raise SeglocError(
                f"{root} holds mapping/ and query/ kapture folders; read each of them, or convert both with kapture_to_dataset"
            )
        raise SeglocError(f"{root} is not a kapture folder: sensors/sensors.txt is missing")
    if not (sensors / "records_camera.txt").is_file():
        raise SeglocError(f"{root}: sensors/records_camera.txt is missing (a kapture folder without images)")
    data = KaptureData(
        root=root,
        cameras=_read_sensors(sensors / "sensors.txt"),
        rigs=_read_rigs(sensors / "rigs.txt"),
        records=_read_records(sensors / "records_camera.txt"),
        trajectories=_read_trajectories(sensors / "trajectories.txt"),
    )
    unknown = sorted({r.device_id for r in data.records} - set(data.cameras))
    if unknown:
        raise SeglocError(
            f"{sensors / 'records_camera.txt'}: device(s) {', '.join(unknown)} are not camera sensors in sensors.txt "
            f"(cameras: {', '.join(sorted(data.cameras)) or 'none'})"
        )
    return data


def _record_pose(data: KaptureData, record: KaptureRecord) -> Rigid3 | None:
    pose = data.trajectories.get((record.timestamp, record.device_id))
    if pose is not None:
        return pose
    for rig_id, sensors in data.rigs.items():
        cam_from_rig = sensors.get(record.device_id)
        rig_from_world = data.trajectories.get((record.timestamp, rig_id))
        if cam_from_rig is not None and rig_from_world is not None:
            return cam_from_rig * rig_from_world
    return None


def read_kapture(path: str | Path, timestamp_unit: float = 1.0, missing_pose: str = "skip") -> list[ImageRecord]:
    """Read the posed images of one kapture folder, in ``records_camera.txt`` order.

    Args:
        path: the kapture folder (holding ``sensors/``).
        timestamp_unit: seconds per kapture timestamp tick; records get
            ``timestamp = tick * timestamp_unit``.
        missing_pose: what to do with images that have no pose in ``trajectories.txt`` (neither
            for their camera nor for a rig holding it): ``"skip"`` them with a warning, or
            ``"error"``.

    Returns:
        Records named by their path under ``sensors/records_data/``, with ``cam_from_world``.
    """
    if missing_pose not in ("skip", "error"):
        raise SeglocError(f"missing_pose must be 'skip' or 'error', got {missing_pose!r}")
    data = load_kapture(path)
    records: list[ImageRecord] = []
    unposed: list[str] = []
    for record in data.records:
        cam_from_world = _record_pose(data, record)
        if cam_from_world is None:
            unposed.append(record.image_path)
            continue
        records.append(ImageRecord(record.image_path, cam_from_world, data.cameras[record.device_id], record.timestamp * timestamp_unit))
    if unposed:
        more = f" and {len(unposed) - 3} more" if len(unposed) > 3 else ""
        message = f"{path}: {len(unposed)} of {len(data.records)} image(s) have no pose in sensors/trajectories.txt: {', '.join(unposed[:3])}{more}"
        if missing_pose == "error":
            raise SeglocError(message)
        logger.warning("%s; skipped", message)
    logger.debug("read kapture %s: %d posed images of %d", path, len(records), len(data.records))
    return records


def _format_pose(pose: Rigid3) -> str:
    return ", ".join(repr(float(v)) for v in (*pose.quat_wxyz, *pose.translation))


def write_kapture(
    path: str | Path,
    records: Sequence[ImageRecord],
    image_dir: str | Path | None = None,
    timestamp_unit: float = 1.0,
) -> Path:
    """Write records as a kapture folder (sensors.txt, records_camera.txt, trajectories.txt).

    Each distinct camera becomes a sensor ``cam0``, ``cam1``... Record timestamps (seconds) are
    written as ``round(timestamp / timestamp_unit)`` ticks; records without a timestamp get
    their index. Images are copied from ``image_dir`` (names relative to it) into
    ``sensors/records_data/`` when it is given.

    Returns:
        ``path``.
    """
    root = Path(path)
    sensor_ids: dict[Camera, str] = {}
    record_lines: list[str] = []
    trajectory_lines: list[str] = []
    seen: set[tuple[int, str]] = set()
    for index, record in enumerate(records):
        if "," in record.name:
            raise SeglocError(f"image name {record.name!r} contains a comma, which kapture files cannot store")
        sensor_id = sensor_ids.setdefault(record.camera, f"cam{len(sensor_ids)}")
        tick = index if record.timestamp is None else int(round(record.timestamp / timestamp_unit))
        if (tick, sensor_id) in seen:
            raise SeglocError(
                f"two images of camera {sensor_id} at timestamp tick {tick} (image {record.name}); "
                "kapture needs one pose per (timestamp, device): use a smaller timestamp_unit"
            )
        seen.add((tick, sensor_id))
        record_lines.append(f"{tick}, {sensor_id}, {record.name}\n")
        trajectory_lines.append(f"{tick}, {sensor_id}, {_format_pose(record.cam_from_world)}\n")
    sensor_lines = [
        f"{sensor_id}, , camera, {cam.model}, {cam.width}, {cam.height}, {', '.join(repr(p) for p in cam.params)}\n"
        for cam, sensor_id in sensor_ids.items()
    ]
    header = f"{_HEADER_PREFIX} {KAPTURE_VERSION}\n"
    sensors = root / "sensors"
    sensors.mkdir(parents=True, exist_ok=True)
    (sensors / "sensors.txt").write_text(header + "# sensor_device_id, name, sensor_type, [sensor_params]+\n" + "".join(sensor_lines))
    (sensors / "records_camera.txt").write_text(header + "# timestamp, device_id, image_path\n" + "".join(record_lines))
    (sensors / "trajectories.txt").write_text(header + "# timestamp, device_id, qw, qx, qy, qz, tx, ty, tz\n" + "".join(trajectory_lines))
    if image_dir is not None:
        for record in records:
            source = Path(image_dir) / record.name
            if not source.is_file():
                raise SeglocError(f"image {source} does not exist")
            target = sensors / "records_data" / record.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return root


def kapture_to_dataset(
    mapping_dir: str | Path,
    query_dir: str | Path | None,
    out_dir: str | Path,
    timestamp_unit: float = 1.0,
    overwrite: bool = False,
) -> Path:
    """Write a dataset folder from a mapping kapture folder and an optional query kapture folder.

    Image names are the kapture image paths. If a path occurs in both folders, every name is
    prefixed with its split (``mapping/...``, ``query/...``) so that the two images stay
    distinct. Query images without a pose (ground truth withheld) are skipped with a warning,
    since the dataset format needs a pose on every line.

    Returns:
        ``out_dir``.
    """
    splits = {"mapping": Path(mapping_dir)}
    if query_dir is not None:
        splits["query"] = Path(query_dir)
    out_dir = Path(out_dir)
    inputs = [(folder, f"the {split} kapture folder") for split, folder in splits.items()]
    check_output(out_dir, "replace", inputs=inputs, overwrite=overwrite, replaceable=is_dataset_folder, what="dataset folder")
    records = {split: read_kapture(folder, timestamp_unit=timestamp_unit) for split, folder in splits.items()}
    if not records["mapping"]:
        raise SeglocError(f"the mapping kapture {mapping_dir} has no image with a pose")
    collide = query_dir is not None and bool({r.name for r in records["mapping"]} & {r.name for r in records["query"]})
    if collide:
        logger.info("kapture mapping and query share image paths; prefixing names with mapping/ and query/")
    renamed: dict[str, list[ImageRecord]] = {}
    links = temp_dir_beside(out_dir, "sources")
    try:
        for split, split_records in records.items():
            image_dir = splits[split] / "sensors" / "records_data"
            renamed[split] = []
            for record in split_records:
                name = f"{split}/{record.name}" if collide else record.name
                source = image_dir / record.name
                if not source.is_file():
                    raise SeglocError(f"image {source} listed in {splits[split]} does not exist")
                link = links / name
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(source.resolve(), link)
                renamed[split].append(ImageRecord(name, record.cam_from_world, record.camera, record.timestamp))
        logger.info("kapture -> dataset %s: %d mapping, %d query images", out_dir, len(renamed["mapping"]), len(renamed.get("query", [])))
        return write_dataset(out_dir, renamed["mapping"], renamed.get("query", []), source_image_dir=links, overwrite=overwrite)
    finally:
        shutil.rmtree(links, ignore_errors=True)
