import shutil
from pathlib import Path

import numpy as np
import pytest

from segloc.data.dataset import ImageRecord, read_dataset, write_dataset
from segloc.errors import SeglocError
from segloc.geometry import Camera, Rigid3

SHARED_CASTLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "strecha_castle"


def make_records(rng, prefix, count):
    camera = Camera("OPENCV", 64, 48, (50.5, 51.25, 32.1, 23.9, 0.01, -0.002, 0.0001, 0.0002))
    return [ImageRecord(f"{prefix}/img_{i:03d}.png", Rigid3(rng.normal(size=4), rng.normal(size=3)), camera) for i in range(count)]


@pytest.fixture
def small_dataset(tmp_path):
    rng = np.random.default_rng(0)
    mapping, query = make_records(rng, "mapping", 3), make_records(rng, "query", 2)
    images = {r.name: rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8) for r in (*mapping, *query)}
    root = write_dataset(tmp_path / "dataset", mapping, query, images=images)
    return root, mapping, query, images


def test_round_trip(small_dataset):
    root, mapping, query, images = small_dataset
    dataset = read_dataset(root)
    assert [r.name for r in dataset.mapping] == [r.name for r in mapping]
    for ours, theirs in zip(dataset.mapping + dataset.query, mapping + query):
        assert np.allclose(ours.cam_from_world.matrix(), theirs.cam_from_world.matrix(), atol=1e-12)
        assert ours.camera == theirs.camera
    assert np.array_equal(dataset.load_image(query[0].name), images[query[0].name])


def test_write_is_atomic_and_refuses_to_overwrite(small_dataset, tmp_path):
    root, mapping, query, images = small_dataset
    with pytest.raises(SeglocError, match="exists already"):
        write_dataset(root, mapping, query, images=images)
    with pytest.raises(SeglocError, match="no pixels"):
        write_dataset(tmp_path / "other", mapping, query, images={})
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def edit_line(root: Path, file: str, old: str, new: str) -> None:
    path = root / file
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize(
    "old, new, message",
    [
        (" OPENCV ", " FISHEYE_Z ", "unknown camera model 'FISHEYE_Z'"),
        (" OPENCV 64 48 ", " OPENCV 64 ", "malformed number|takes 8 parameters"),
        (" OPENCV ", " OPENCV nan ", "malformed number|takes 8 parameters|size"),
    ],
)
def test_malformed_lines_name_file_and_line(small_dataset, old, new, message):
    root = small_dataset[0]
    edit_line(root, "mapping.txt", old, new)
    with pytest.raises(SeglocError, match=rf"mapping.txt:2: .*({message})"):
        read_dataset(root)


def test_non_finite_pose(small_dataset):
    root = small_dataset[0]
    lines = (root / "query.txt").read_text().splitlines()
    fields = lines[1].split()
    fields[5] = "nan"
    lines[1] = " ".join(fields)
    (root / "query.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(SeglocError, match=r"query.txt:2: non-finite pose"):
        read_dataset(root)


def test_too_few_fields(small_dataset):
    root = small_dataset[0]
    (root / "query.txt").write_text("query/img_000.png 1 0 0 0\n")
    with pytest.raises(SeglocError, match=r"query.txt:1: expected 'name qw"):
        read_dataset(root)


def test_missing_image_and_missing_files(small_dataset, tmp_path):
    root, mapping = small_dataset[0], small_dataset[1]
    (root / "images" / mapping[1].name).unlink()
    with pytest.raises(SeglocError, match=r"1 mapping image\(s\) missing under images/: mapping/img_001.png"):
        read_dataset(root)
    with pytest.raises(SeglocError, match="mapping.txt is missing"):
        read_dataset(tmp_path)
    with pytest.raises(SeglocError, match="does not exist"):
        read_dataset(tmp_path / "nowhere")


def test_duplicate_names(small_dataset):
    root = small_dataset[0]
    lines = (root / "mapping.txt").read_text().splitlines()
    (root / "mapping.txt").write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(SeglocError, match="listed twice"):
        read_dataset(root)


def test_corrupt_image(small_dataset):
    root, mapping = small_dataset[0], small_dataset[1]
    (root / "images" / mapping[0].name).write_bytes(b"not a png")
    with pytest.raises(SeglocError, match="could not be decoded"):
        read_dataset(root).load_image(mapping[0].name)


@pytest.mark.skipif(not SHARED_CASTLE.is_dir(), reason="../shared/data/strecha_castle is not beside this checkout")
def test_reads_the_shared_castle_dataset(tmp_path):
    dataset = read_dataset(SHARED_CASTLE)
    assert len(dataset.mapping) == 30 and len(dataset.query) == 9
    assert dataset.query[0].camera.model == "PINHOLE"
    image = dataset.load_image(dataset.query[0].name)
    assert image.shape == (683, 1024, 3)
    # Any dataset folder works: a copy with comments and blank lines reads the same.
    copy = tmp_path / "castle"
    shutil.copytree(SHARED_CASTLE, copy)
    (copy / "mapping.txt").write_text("# extra comment\n\n" + (copy / "mapping.txt").read_text())
    assert len(read_dataset(copy).mapping) == 30


def encoded(image: np.ndarray, extension: str, *params: int) -> bytes:
    import cv2

    ok, data = cv2.imencode(extension, image, list(params))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("extension, params", [(".jpg", ()), (".jpg", (2, 1)), (".png", ())])  # 2, 1: progressive JPEG
def test_truncated_images_are_an_error(small_dataset, extension, params):
    """libjpeg only warns about a truncated JPEG and fills the missing rows with grey: the loader refuses it."""
    from segloc.data.dataset import image_data_problem, load_image

    root, _, _, images = small_dataset
    data = encoded(next(iter(images.values())), extension, *params)
    assert image_data_problem(data) is None and image_data_problem(data + b"trailer") is None
    path = root / f"cut{extension}"
    path.write_bytes(data[: int(0.6 * len(data))])
    with pytest.raises(SeglocError, match=rf"image .*cut{extension} is truncated"):
        load_image(path)


def test_a_png_with_a_bad_crc_is_an_error(small_dataset):
    from segloc.data.dataset import load_image

    root, _, _, images = small_dataset
    data = bytearray(encoded(next(iter(images.values())), ".png"))
    data[60] ^= 0xFF  # inside the first chunks
    (root / "bad.png").write_bytes(bytes(data))
    with pytest.raises(SeglocError, match="is corrupt .CRC error in the PNG"):
        load_image(root / "bad.png")


@pytest.mark.parametrize("name", ["../outside.png", "/etc/outside.png", "mapping/../../outside.png"])
def test_names_outside_images_are_refused(small_dataset, name):
    root, mapping = small_dataset[0], small_dataset[1]
    edit_line(root, "mapping.txt", mapping[0].name, name)
    with pytest.raises(SeglocError, match=rf"mapping.txt: image name '{name}' points outside images/"):
        read_dataset(root)


def test_quaternion_norm_is_reported_then_refused(small_dataset, caplog):
    root = small_dataset[0]
    original = (root / "query.txt").read_text()

    def scale_quaternion(factor):
        lines = original.splitlines()
        fields = lines[1].split()
        fields[1:5] = [repr(factor * float(v)) for v in fields[1:5]]
        (root / "query.txt").write_text("\n".join([*lines[:1], " ".join(fields), *lines[2:]]) + "\n")

    scale_quaternion(1.0001)
    read_dataset(root)
    assert "quaternion" not in caplog.text
    scale_quaternion(1.05)
    assert np.isclose(np.linalg.norm(read_dataset(root).query[0].cam_from_world.quat_wxyz), 1.0)
    assert "query.txt: 1 quaternion(s) off unit norm by more than 0.001 (the most, 0.05, on line 2): normalised" in caplog.text
    scale_quaternion(2.0)
    with pytest.raises(SeglocError, match=r"query.txt:2: the quaternion .* has norm 2, more than 0.1 off 1"):
        read_dataset(root)


def test_timestamps_round_trip(tmp_path):
    camera = Camera("PINHOLE", 64, 48, (50, 50, 32, 24))
    mapping = [ImageRecord(f"m{i}.png", Rigid3([1, 0, 0, 0], [i, 0, 0]), camera, 1_700_000_000.1 + i) for i in range(2)]
    query = [ImageRecord("q.png", Rigid3([1, 0, 0, 0], [0, 0, 0]), camera)]  # no timestamp: none written
    images = {r.name: np.zeros((48, 64, 3), np.uint8) for r in (*mapping, *query)}
    dataset = read_dataset(write_dataset(tmp_path / "d", mapping, query, images=images))
    assert [r.timestamp for r in dataset.mapping] == [1_700_000_000.1, 1_700_000_001.1] and dataset.query[0].timestamp is None


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "mapping/img_000.png",
            "mapping/img 000.png",
            "the line has 1 field.s. too many before the camera model OPENCV: image names cannot contain spaces",
        ),
        (" OPENCV 64 48 ", " OPENCV 64 48 1 2 ", "the line has 21 fields, camera model OPENCV takes 19 .plus an optional timestamp."),
    ],
)
def test_too_many_fields(small_dataset, old, new, message):
    root = small_dataset[0]
    edit_line(root, "mapping.txt", old, new)
    with pytest.raises(SeglocError, match=rf"mapping.txt:2: {message}"):
        read_dataset(root)


def test_overwrite_replaces_only_a_dataset_folder(small_dataset, tmp_path):
    root, mapping, query, images = small_dataset
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("precious")
    with pytest.raises(SeglocError, match="is not a dataset folder: --overwrite only replaces a dataset folder"):
        write_dataset(tmp_path / "notes", mapping, query, images=images, overwrite=True)
    with pytest.raises(SeglocError, match="would delete the source image folder"):
        write_dataset(tmp_path, mapping, query, source_image_dir=root / "images", overwrite=True)
    assert (tmp_path / "notes" / "notes.txt").read_text() == "precious" and (root / "images" / mapping[0].name).is_file()
    write_dataset(root, mapping[:1], query, images=images, overwrite=True)
    assert len(read_dataset(root).mapping) == 1
