import importlib.util
import json
import os

import numpy as np
import pytest

from segloc.errors import SeglocError
from segloc.maps.package import FORMAT_VERSION, MapPackage, MapWriter


def write_map(path, **kwargs):
    with MapWriter(path, method="reference", created={"dataset": "test"}, **kwargs) as writer:
        writer.add_arrays("core", "points3D", xyz=np.arange(12, dtype=np.float64).reshape(4, 3))
        writer.add_json("core", "images", [{"name": "a.png"}])
        return writer.commit()


def test_round_trip(tmp_path):
    package = write_map(tmp_path / "map")
    again = MapPackage.open(tmp_path / "map")
    assert again.method == "reference" and again.frame_id == "map"
    assert np.array_equal(again.read_arrays("core", "points3D")["xyz"], np.arange(12).reshape(4, 3))
    assert again.read_json("core", "images") == [{"name": "a.png"}]
    assert again.bytes() == package.bytes() > 0
    assert again.bytes(["core"]) == again.bytes()
    manifest = json.loads((tmp_path / "map" / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert set(manifest["files"]) == {"core/points3D.npz", "core/images.json"}
    assert all(len(info["sha256"]) == 64 for info in manifest["files"].values())


def test_corrupt_file_is_detected(tmp_path):
    write_map(tmp_path / "map")
    path = tmp_path / "map" / "core" / "points3D.npz"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SeglocError, match="checksum of core/points3D.npz does not match"):
        MapPackage.open(tmp_path / "map")


def test_other_format_version_is_refused(tmp_path):
    write_map(tmp_path / "map")
    manifest_path = tmp_path / "map" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SeglocError, match=f"map format version {FORMAT_VERSION + 1}"):
        MapPackage.open(tmp_path / "map")


def test_not_a_map(tmp_path):
    with pytest.raises(SeglocError, match="manifest.json is missing"):
        MapPackage.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(SeglocError, match="corrupt"):
        MapPackage.open(tmp_path)


def test_missing_file_and_missing_layer(tmp_path):
    write_map(tmp_path / "map")
    with pytest.raises(SeglocError, match="has no layer 'segloc'"):
        MapPackage.open(tmp_path / "map").read_arrays("segloc", "labels")
    (tmp_path / "map" / "core" / "images.json").unlink()
    with pytest.raises(SeglocError, match="images.json is listed in the manifest but missing"):
        MapPackage.open(tmp_path / "map")


def test_failed_write_leaves_the_old_map(tmp_path):
    write_map(tmp_path / "map")
    with pytest.raises(RuntimeError):
        with MapWriter(tmp_path / "map", method="reference", overwrite=True) as writer:
            writer.add_arrays("core", "points3D", xyz=np.zeros((1, 3)))
            raise RuntimeError("crash while building")
    assert MapPackage.open(tmp_path / "map").read_arrays("core", "points3D")["xyz"].shape == (4, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map"]


def test_refuses_to_overwrite_without_flag(tmp_path):
    write_map(tmp_path / "map")
    with pytest.raises(SeglocError, match="exists already"):
        MapWriter(tmp_path / "map", method="reference")


def test_add_a_layer_to_an_existing_map(tmp_path):
    base = write_map(tmp_path / "map")
    with MapWriter(tmp_path / "map", method="segloc", base=base) as writer:
        writer.add_arrays("segloc", "labels", point_labels=np.array([1, 2, 3, 4], dtype=np.uint8))
        writer.commit()
    package = MapPackage.open(tmp_path / "map")
    assert set(package.layers) == {"core", "segloc"}
    assert package.read_arrays("segloc", "labels")["point_labels"].tolist() == [1, 2, 3, 4]


def test_object_arrays_and_bad_names_are_refused(tmp_path):
    with MapWriter(tmp_path / "map", method="reference") as writer:
        with pytest.raises(SeglocError, match="dtype object"):
            writer.add_arrays("core", "things", values=np.array([{"a": 1}], dtype=object))
        with pytest.raises(SeglocError, match="invalid layer or file name"):
            writer.add_json("../escape", "x", {})


def test_pickled_npz_is_not_loaded(tmp_path):
    package = write_map(tmp_path / "map")
    path = tmp_path / "map" / "core" / "points3D.npz"
    np.savez(path, xyz=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(SeglocError, match="could not be read"):
        MapPackage(package.path, package.manifest).read_arrays("core", "points3D")


def test_check_contents_reads_every_file_as_the_readers_do(tmp_path):
    package = write_map(tmp_path / "map")
    package.check_contents()
    np.savez(tmp_path / "map" / "core" / "points3D.npz", xyz=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(SeglocError, match="points3D.npz could not be read: xyz.npy holds objects"):
        MapPackage.open(tmp_path / "map", verify_checksums=False).check_contents()
    (tmp_path / "map" / "core" / "images.json").write_text("{")
    with pytest.raises(SeglocError, match="images.json is corrupt"):
        MapPackage(package.path, package.manifest).read_json("core", "images")


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="checking an ONNX graph needs the onnx package")
def test_onnx_files_are_stored_with_checksums_and_must_parse(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    package = write_map(tmp_path / "map")
    with MapWriter(package.path, package.method, base=package) as writer:
        writer.add_file("onnx", "relu", ".onnx", helper.make_model(graph).SerializeToString())
        package = writer.commit()
    package = MapPackage.open(package.path)
    assert package.manifest["files"]["onnx/relu.onnx"]["bytes"] == (package.path / "onnx" / "relu.onnx").stat().st_size
    package.check_contents()
    assert onnx.load_model(str(package.file_path("onnx", "relu"))).graph.node[0].op_type == "Relu"
    with MapWriter(package.path, package.method, base=package) as writer:
        writer.add_file("onnx", "broken", ".onnx", b"not a protobuf")
        package = writer.commit()
    with pytest.raises(SeglocError, match="broken.onnx is not a valid ONNX graph"):
        package.check_contents()


def test_overwrite_replaces_only_a_map(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("precious")
    with pytest.raises(SeglocError, match="is not a map: --overwrite only replaces a map"):
        write_map(tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "notes.txt").read_text() == "precious"
    # A map of another format version is still a map: rebuilding it in place works.
    write_map(tmp_path / "map")
    manifest = json.loads((tmp_path / "map" / "manifest.json").read_text())
    (tmp_path / "map" / "manifest.json").write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    assert write_map(tmp_path / "map", overwrite=True).manifest["format_version"] == FORMAT_VERSION
    (tmp_path / "empty").mkdir()
    write_map(tmp_path / "empty", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "map", "notes"]  # no temporary folders left


def test_open_says_why_a_path_is_not_a_map(tmp_path):
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "file").write_text("x")
    for path, message in (
        (tmp_path / "loop1", "map .*loop1 is a symbolic link loop"),
        (tmp_path / "nothing", "map .*nothing does not exist"),
        (tmp_path / "file", "is a file, not a segloc map"),
    ):
        with pytest.raises(SeglocError, match=message):
            MapPackage.open(path)


def test_a_written_map_has_the_usual_permissions(tmp_path):
    write_map(tmp_path / "map")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "map").stat().st_mode & 0o777 == 0o777 & ~mask


def _small_map(tmp_path):
    with MapWriter(tmp_path / "map", method="test") as writer:
        writer.add_arrays("layer", "values", values=np.arange(10.0))
        writer.commit()
    return tmp_path / "map"


def _rewrite_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("rel", ["../outside.npz", "/etc/passwd", "layer/../../outside.npz", "layer\\values.npz"])
def test_manifest_paths_never_leave_the_package(tmp_path, rel):
    path = _small_map(tmp_path)
    (tmp_path / "outside.npz").write_bytes((path / "layer" / "values.npz").read_bytes())

    def point_outside(manifest):
        info = manifest["files"].pop("layer/values.npz")
        manifest["files"][rel] = info
        manifest["layers"]["layer"]["files"] = [rel]

    _rewrite_manifest(path, point_outside)
    with pytest.raises(SeglocError, match="not a plain path inside the map|leads outside the map"):
        MapPackage.open(path)


def test_a_link_inside_the_package_may_not_lead_out(tmp_path):
    path = _small_map(tmp_path)
    outside = tmp_path / "outside.npz"
    outside.write_bytes((path / "layer" / "values.npz").read_bytes())
    (path / "layer" / "values.npz").unlink()
    (path / "layer" / "values.npz").symlink_to(outside)
    with pytest.raises(SeglocError, match="leads outside the map"):
        MapPackage.open(path)


def test_a_layer_file_missing_from_the_file_list_is_refused(tmp_path):
    path = _small_map(tmp_path)
    _rewrite_manifest(path, lambda manifest: manifest["layers"]["layer"]["files"].append("layer/extra.npz"))
    with pytest.raises(SeglocError, match="not among its files"):
        MapPackage.open(path)


def test_a_forged_array_size_is_refused_before_any_allocation(tmp_path):
    """An npy header announcing 10^12 float64 values in a few bytes: refused from the header, no memory used."""
    import hashlib
    import io
    import tracemalloc
    import zipfile

    path = _small_map(tmp_path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    forged = io.BytesIO()
    with zipfile.ZipFile(forged, "w") as archive:
        archive.writestr("values.npy", header.getvalue() + bytes(64))
    npz = path / "layer" / "values.npz"
    npz.write_bytes(forged.getvalue())

    def new_checksum(manifest):
        manifest["files"]["layer/values.npz"] = {"sha256": hashlib.sha256(npz.read_bytes()).hexdigest(), "bytes": npz.stat().st_size}

    _rewrite_manifest(path, new_checksum)
    package = MapPackage.open(path)  # the checksums match: the file is what the manifest says
    tracemalloc.start()
    try:
        with pytest.raises(SeglocError, match=r"announces \(1000000, 1000000\) float64 \(8000000000000 bytes\) but holds"):
            package.read_arrays("layer", "values")
        assert tracemalloc.get_traced_memory()[1] < 50_000_000
    finally:
        tracemalloc.stop()
