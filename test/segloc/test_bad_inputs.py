"""Bad input to the `segloc` command: exit status 1, one line `segloc: error: ...`, nothing written, nothing lost.

One case per line of CASES: an id, the command line (placeholders below), the fragment the
message must contain, and optionally a setup that breaks the case's copy of the inputs first.
Each case runs in its own folder holding copies of a tiny synthetic dataset (with a query
rosbag2) and of its reference map; the folder's listing and file hashes are the same after the
command as before it: the command wrote nothing and deleted nothing.

Placeholders: {ds} the dataset folder, {map} the map, {bag} the query bag (inside the dataset
folder, as `segloc synth --bag query` writes it), {tmp} the case's folder, {cam} the camera of
the query images as --camera takes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from segloc.cli import main


# --- the inputs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> Path:
    """A rendered room (8 mapping, 4 query images of 160x120, a query bag) and its reference map, built once."""
    root = tmp_path_factory.mktemp("bad_inputs")
    argv = ["synth", "-o", str(root / "ds"), "--size", "160x120", "--num-mapping", "8", "--num-query", "4", "--bag", "query"]
    assert main([*argv, "--no-progress"]) == 0
    assert main(["map", "build", str(root / "ds"), "-o", str(root / "map"), "--no-progress"]) == 0
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> what it is: a file's SHA-256, a link's target, or a folder."""
    listing = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                listing[key] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                listing[key] = "folder"
            else:
                listing[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return listing


# --- setups: each breaks the case's copy of the inputs ------------------------------------------
def edit_list(file: str, edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    """A setup that edits the fields of the first image line of ``file`` (mapping.txt or query.txt)."""

    def setup(tmp: Path) -> None:
        path = tmp / "ds" / file
        lines = path.read_text().splitlines()
        first = next(i for i, line in enumerate(lines) if not line.startswith("#"))
        lines[first] = " ".join(edit(lines[first].split()))
        path.write_text("\n".join(lines) + "\n")

    return setup


def set_field(index: int, value: str) -> Callable[[list[str]], list[str]]:
    return lambda fields: [*fields[:index], value, *fields[index + 1 :]]


def truncate_image(extension: str) -> Callable[[Path], None]:
    """The first mapping image re-encoded as ``extension``, cut at 60 %, and listed under its new name."""

    def setup(tmp: Path) -> None:
        import cv2

        name = "mapping/000000.png"
        image = cv2.imread(str(tmp / "ds" / "images" / name))
        data = cv2.imencode(extension, image)[1].tobytes()
        new_name = name.replace(".png", extension)
        (tmp / "ds" / "images" / new_name).write_bytes(data[: int(0.6 * len(data))])
        edit_list("mapping.txt", set_field(0, new_name))(tmp)

    return setup


def write(relative: str, text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp / relative).write_text(text)

    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for step in setups:
            step(tmp)

    return setup


def edit_manifest(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / "map" / "manifest.json"
        manifest = json.loads(path.read_text())
        edit(manifest)
        path.write_text(json.dumps(manifest))

    return setup


def object_array_in_map(tmp: Path) -> None:
    """core/points3D.npz holds an object array (a pickle) and the manifest's checksum matches it."""
    path = tmp / "map" / "core" / "points3D.npz"
    arrays = dict(np.load(path))
    arrays["points3D"] = np.array([{"code": "runs on load"}, 1], dtype=object)
    np.savez(path, **arrays)
    data = path.read_bytes()

    def update(manifest: dict) -> None:
        manifest["files"]["core/points3D.npz"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    edit_manifest(update)(tmp)


def tamper(relative: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        with open(tmp / relative, "ab") as f:
            f.write(b"tampered")

    return setup


def symlink_loop(tmp: Path) -> None:
    (tmp / "loop1").symlink_to(tmp / "loop2")
    (tmp / "loop2").symlink_to(tmp / "loop1")


def folder_with_notes(relative: str) -> Callable[[Path], None]:
    return write(f"{relative}/notes.txt", "precious")


def dataset_in_parent(tmp: Path) -> None:
    (tmp / "parent").mkdir()
    shutil.move(tmp / "ds", tmp / "parent" / "ds")


def colmap_model(tmp: Path) -> None:
    from segloc.data.colmap import write_colmap_model
    from segloc.data.dataset import read_dataset

    dataset = read_dataset(tmp / "ds")
    write_colmap_model(tmp / "model", [*dataset.mapping, *dataset.query])


def kapture_folder(tmp: Path) -> None:
    from segloc.data.dataset import read_dataset
    from segloc.data.kapture import write_kapture

    dataset = read_dataset(tmp / "ds")
    write_kapture(tmp / "kapture", dataset.mapping, image_dir=tmp / "ds" / "images", timestamp_unit=0.001)


def move_queries(tmp: Path) -> None:
    """Every query camera 500 m away from the room: in another frame than the map."""
    path = tmp / "ds" / "query.txt"
    lines = [line.split() for line in path.read_text().splitlines()]
    moved = [fields if fields[0] == "#" else set_field(5, str(float(fields[5]) + 500.0))(fields) for fields in lines]
    path.write_text("\n".join(" ".join(fields) for fields in moved) + "\n")


def copy_of_images(tmp: Path) -> None:
    (tmp / "A").mkdir()
    shutil.copy(tmp / "ds" / "images" / "query" / "000000.png", tmp / "A" / "000000.png")


# --- the cases -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    argv: str
    message: str
    setup: Callable[[Path], None] | None = None


MAP_CONFIG = "map build {ds} -o {tmp}/new_map --config {tmp}/c.yaml"
MAP_BUILD = "map build {ds} -o {tmp}/new_map --no-progress"
EVALUATE = "evaluate {map} {ds} -o {tmp}/eval --no-progress"

# fmt: off
CASES = [
    # Overwriting: only what the command writes, never an input or a folder holding or inside one.
    Case("map-build-over-its-dataset", "map build {ds} -o {ds} --overwrite", "is the dataset folder"),
    Case("map-build-over-a-folder-holding-its-dataset", "map build {tmp}/parent/ds -o {tmp}/parent --overwrite", "would delete the dataset folder", dataset_in_parent),
    Case("map-build-over-its-images", "map build {ds} -o {ds}/images --overwrite", "is the image folder of the dataset"),
    Case("map-build-over-a-folder-that-is-not-a-map", "map build {ds} -o {tmp}/notes --overwrite", "is not a map: --overwrite only replaces a map", folder_with_notes("notes")),
    Case("map-build-over-a-map-without-overwrite", "map build {ds} -o {map}", "exists already; pass --overwrite"),
    Case("map-build-over-a-file", "map build {ds} -o {ds}/mapping.txt --overwrite", "exists inside the dataset folder"),
    Case("synth-over-a-folder-that-is-not-a-dataset", "synth -o {tmp}/notes --overwrite --size 64x48 --num-mapping 1 --num-query 0", "is not a dataset folder: --overwrite only replaces a dataset folder", folder_with_notes("notes")),
    Case("convert-bag-over-the-dataset-holding-the-bag", "convert bag {bag} -o {ds} --overwrite --pose-topic /ground_truth/pose", "would delete the bag"),
    Case("convert-bag-over-the-bag", "convert bag {bag} -o {bag} --overwrite", "is the bag"),
    Case("convert-colmap-over-the-dataset-holding-the-images", "convert colmap {tmp}/model --images {ds}/images -o {ds} --overwrite", "would delete the image folder", colmap_model),
    Case("convert-colmap-without-images", "convert colmap {tmp}/model -o {tmp}/out", "convert colmap needs --images DIR", colmap_model),
    Case("convert-kapture-over-the-kapture-folder", "convert kapture {tmp}/kapture -o {tmp}/kapture --overwrite", "is the mapping kapture folder", kapture_folder),
    Case("evaluate-into-an-existing-file", "evaluate {map} {ds} -o {tmp}/eval.txt", "report folder .*eval.txt exists and is not a folder", write("eval.txt", "x")),
    Case("evaluate-into-the-dataset", "evaluate {map} {ds} -o {ds}", "is the dataset folder"),
    Case("evaluate-into-the-map", "evaluate {map} {ds} -o {map}/core", "exists inside the map"),
    Case("localize-into-a-folder", "localize {map} --dataset {ds} -o {tmp}/out", "poses file .*out is a folder", folder_with_notes("out")),
    Case("localize-over-the-query-list", "localize {map} --dataset {ds} -o {ds}/query.txt", "exists inside the dataset folder"),
    Case("localize-the-same-image-twice", "localize {map} --image {tmp}/A/000000.png {tmp}/A/000000.png --camera '{cam}' -o {tmp}/poses.txt", "is given twice", copy_of_images),
    # Corrupt and out-of-range input that was accepted silently.
    Case("truncated-jpeg", MAP_BUILD, "mapping/000000.jpg is truncated (the data ends before the JPEG end-of-image marker)", truncate_image(".jpg")),
    Case("truncated-png", MAP_BUILD, "mapping/000000.png is truncated (the data ends before the PNG IEND chunk)", truncate_image(".png")),
    Case("image-name-with-dotdot", MAP_BUILD, "image name '../../outside.png' points outside images/", edit_list("mapping.txt", set_field(0, "../../outside.png"))),
    Case("absolute-image-name", MAP_BUILD, "image name '/etc/hostname' points outside images/", edit_list("mapping.txt", set_field(0, "/etc/hostname"))),
    Case("quaternion-of-norm-2", MAP_BUILD, "has norm 2, more than 0.1 off 1", edit_list("mapping.txt", lambda f: [f[0], *(repr(2 * float(v)) for v in f[1:5]), *f[5:]])),
    Case("negative-max-keypoints", MAP_CONFIG, "map.core.sift.max_keypoints must be >= 0 (0: no limit), got -5", write("c.yaml", "map:\n  core:\n    sift:\n      max_keypoints: -5\n")),
    Case("negative-num-candidates", "evaluate {map} {ds} -o {tmp}/eval --config {tmp}/c.yaml", "localize.num_candidates must be >= 1, got -1", write("c.yaml", "localize:\n  num_candidates: -1\n")),
    Case("nan-max-error", "localize {map} --dataset {ds} --config {tmp}/c.yaml", "localize.pnp.max_error_px must be a finite number, got nan", write("c.yaml", "localize:\n  pnp:\n    max_error_px: .nan\n")),
    Case("negative-max-error", "localize {map} --dataset {ds} --config {tmp}/c.yaml", "localize.pnp.max_error_px must be > 0, got -3.0", write("c.yaml", "localize:\n  pnp:\n    max_error_px: -3\n")),
    Case("infinite-synth-frame-rate", "synth -o {tmp}/new --config {tmp}/c.yaml", "synth.frame_rate must be a finite number", write("c.yaml", "synth:\n  frame_rate: .inf\n")),
    Case("relight-over-its-dataset", "dataset relight {ds} --condition dusk -o {ds} --overwrite", "is the dataset folder"),
    Case("relight-over-an-existing-folder-without-overwrite", "dataset relight {ds} --condition dusk -o {map}", "exists already; pass --overwrite"),
    Case("relight-unknown-condition", "dataset relight {ds} --condition dawn -o {tmp}/new", "argument --condition: invalid choice: 'dawn'"),
    Case("relight-exposure-above-1", "dataset relight {ds} --condition night -o {tmp}/new --config {tmp}/c.yaml", "relight.exposure must be > 0 and <= 1, got 2.0", write("c.yaml", "relight:\n  exposure: 2\n")),
    Case("relight-unknown-option", "dataset relight {ds} --condition night -o {tmp}/new --config {tmp}/c.yaml", "relight: unknown option(s) iso", write("c.yaml", "relight:\n  iso: 800\n")),
    Case("relight-without-queries", "dataset relight {ds} --condition dusk -o {tmp}/new", "no query images", write("ds/query.txt", "# none\n")),
    Case("synth-1x1", "synth -o {tmp}/new --size 1x1", "image size 1x1 is too small: the smallest is 64x48"),
    Case("map-info-object-array", "map info {map}", "points3D.npz could not be read: points3D.npy holds objects", object_array_in_map),
    # Messages that were a traceback or named the wrong thing.
    Case("space-in-image-name", MAP_BUILD, "image names cannot contain spaces", edit_list("mapping.txt", lambda f: ["mapping/000", "000.png", *f[1:]])),
    Case("too-many-fields", MAP_BUILD, "too many fields", edit_list("mapping.txt", lambda f: [*f, "1.0", "2.0"])),
    Case("symlink-loop-map", "map info {tmp}/loop1", "map .*loop1 is a symbolic link loop", symlink_loop),
    Case("db3-file-outside-a-bag", "convert bag {tmp}/x.db3 -o {tmp}/out --no-progress", "x.db3 is a .db3 file outside a rosbag2 folder", write("x.db3", "")),
    Case("missing-arguments", "map build", "the following arguments are required: dataset, -o/--output (see 'segloc map build --help')"),
    Case("invalid-choice", "localize {map} --split train", "argument --split: invalid choice: 'train'"),
    Case("unknown-option", "map info {map} --verbose-please", "unrecognized arguments: --verbose-please"),
    Case("bad-size", "synth -o {tmp}/new --size big", "expected WIDTHxHEIGHT such as 640x480"),
    # Cases that were handled already.
    Case("missing-image", MAP_BUILD, "1 mapping image(s) missing under images/: mapping/missing.png", edit_list("mapping.txt", set_field(0, "mapping/missing.png"))),
    Case("malformed-pose-line", MAP_BUILD, "mapping.txt:2: malformed number", edit_list("mapping.txt", set_field(6, "zero"))),
    Case("too-few-fields", MAP_BUILD, "mapping.txt:2: expected 'name qw qx qy qz", edit_list("mapping.txt", lambda f: f[:5])),
    Case("unknown-camera-model", MAP_BUILD, "unknown camera model 'EQUIRECT'", edit_list("query.txt", set_field(8, "EQUIRECT"))),
    Case("wrong-number-of-camera-params", MAP_BUILD, "camera model PINHOLE takes 4 parameters", edit_list("mapping.txt", lambda f: f[:14])),
    Case("non-finite-pose", MAP_BUILD, "non-finite pose", edit_list("mapping.txt", set_field(5, "inf"))),
    Case("image-listed-twice", MAP_BUILD, "is listed twice", edit_list("mapping.txt", set_field(0, "mapping/000001.png"))),
    Case("empty-mapping-set", MAP_BUILD, "mapping.txt lists no images", write("ds/mapping.txt", "# nothing\n")),
    Case("missing-dataset", "map build {tmp}/nowhere -o {tmp}/new_map", "dataset folder .*nowhere does not exist"),
    Case("not-a-dataset", "map build {map} -o {tmp}/new_map", "is not a dataset folder: mapping.txt is missing"),
    Case("unknown-method", "map build {ds} --method magic -o {tmp}/new_map", "unknown method 'magic'"),
    Case("unknown-config-section", MAP_CONFIG, "unknown section(s) mapp", write("c.yaml", "mapp:\n  x: 1\n")),
    Case("unknown-config-option", MAP_CONFIG, "map: unknown option(s) vlda", write("c.yaml", "map:\n  vlda: {}\n")),
    Case("config-of-the-wrong-type", MAP_CONFIG, "map.core.sift.max_keypoints: expected int", write("c.yaml", "map:\n  core:\n    sift:\n      max_keypoints: many\n")),
    Case("missing-map", "map info {tmp}/nowhere", "map .*nowhere does not exist"),
    Case("not-a-map", "map info {ds}", "is not a segloc map: manifest.json is missing"),
    Case("map-of-another-format-version", EVALUATE, "map format version 99", edit_manifest(lambda m: m.update(format_version=99))),
    Case("map-with-a-bad-checksum", "map info {map}", "checksum of core/points3D.npz does not match", tamper("map/core/points3D.npz")),
    Case("map-with-a-corrupt-manifest", "map info {map}", "manifest.json is corrupt", write("map/manifest.json", "{")),
    Case("pickled-npz-in-a-map", "localize {map} --dataset {ds}", "could not be read: points3D.npy holds objects", object_array_in_map),
    Case("queries-that-overlap-nothing", EVALUATE, "query images overlap nothing in the map", move_queries),
    Case("evaluate-without-queries", EVALUATE, "no query images", write("ds/query.txt", "# none\n")),
    Case("evaluate-limit-0", EVALUATE + " --limit 0", "limit must be at least 1"),
    Case("evaluate-dataset-and-bag", "evaluate {map} {ds} --bag {bag} -o {tmp}/eval", "not both"),
    Case("bag-options-without-bag", EVALUATE + " --pose-topic /x", "--pose-topic: bag options, they need --bag BAG"),
    Case("missing-bag", "convert bag {tmp}/nowhere -o {tmp}/out --no-progress", "bag .*nowhere does not exist"),
    Case("image-without-camera", "localize {map} --image {ds}/images/query/000000.png", "--image needs --camera"),
    Case("camera-of-another-size", "localize {map} --image {ds}/images/query/000000.png --camera 'PINHOLE 640 480 500 500 320 240'", "image is 160x120 but the camera is 640x480"),
    Case("missing-query-image", "localize {map} --image {tmp}/nowhere.png --camera '{cam}'", "image .*nowhere.png does not exist"),
    Case("unknown-image-in-dataset", "localize {map} --dataset {ds} --images nope.png", "images not in query.txt: nope.png"),
    Case("unknown-synthetic-scene", "synth -o {tmp}/new --scene kitchen", "valid scenes are: room, corridor, street"),
    Case("unknown-condition", "synth -o {tmp}/new --condition foggy", "unknown condition 'foggy'; valid conditions are: same, lighting"),
]
# fmt: on


def test_case_ids_are_unique():
    assert len({case.id for case in CASES}) == len(CASES)


def run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, originals: Path, tmp_path: Path, capsys):
    for name in ("ds", "map"):
        shutil.copytree(originals / name, tmp_path / name, symlinks=True)
    if case.setup is not None:
        case.setup(tmp_path)
    camera = next(line for line in (originals / "ds" / "query.txt").read_text().splitlines() if not line.startswith("#"))
    places = {"ds": tmp_path / "ds", "map": tmp_path / "map", "bag": tmp_path / "ds" / "query_bag", "tmp": tmp_path}
    argv = shlex.split(case.argv.format(**places, cam=" ".join(camera.split()[8:15])))
    before = snapshot(tmp_path)
    code, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("segloc: error: "), err
    assert case.message in lines[0] or re_search(case.message, lines[0]), lines[0]
    assert snapshot(tmp_path) == before  # nothing written, nothing lost


def re_search(pattern: str, text: str) -> bool:
    import re

    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False
