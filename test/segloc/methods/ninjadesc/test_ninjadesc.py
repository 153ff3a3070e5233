"""The ninjadesc method: NinjaNet over RootSIFT or VGG, a map with no raw descriptor, localization as the reference's in NinjaDesc space."""

import importlib.util
import io

import numpy as np
import pytest
import torch

from segloc.data import synthetic
from segloc.data.dataset import read_dataset
from segloc.errors import SeglocError
from segloc.evaluate.run import evaluate_map
from segloc.features.base_descriptors import vgg_descriptors
from segloc.features.sift import extract_sift, root_sift
from segloc.maps.build import CoreConfig, build_core
from segloc.maps.package import MapPackage
from segloc.methods import get_method
from segloc.methods.ninjadesc.layer import encode
from segloc.models import save_checkpoint
from segloc.models.ninjanet import NinjaNet, NinjaNetConfig

VLAD = {"num_clusters": 16, "max_training_descriptors": 20000}
CORE = {"pairs": {"num_neighbors": 5}}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A small room, its core build and an untrained NinjaNet (a random MLP keeps nearest neighbours well enough to test the plumbing)."""
    root = tmp_path_factory.mktemp("ninjadesc")
    config = synthetic.synth_config("room", "lighting", num_mapping=24, num_query=4, width=320, height=240, seed=3)
    dataset = read_dataset(synthetic.generate_scene(config, root / "dataset", progress=False))
    torch.manual_seed(0)
    checkpoint = save_checkpoint(NinjaNet(NinjaNetConfig(hidden=256)).eval(), root / "ninjanet", metadata={"lambda": 0.0})
    method = get_method("ninjadesc")
    core = build_core(dataset, CoreConfig(**{"pairs": method.map_config({"core": CORE}).core.pairs}), progress=False)
    map_path = method.build_map(
        dataset, root / "map", method.map_config({"core": CORE, "vlad": VLAD, "checkpoint": str(checkpoint)}), progress=False, core=core
    )
    return dataset, core, checkpoint, MapPackage.open(map_path)


VGG_CORE = {**CORE, "sift": {"max_keypoints": 400}}  # OpenCV's VGG costs ~1 ms per keypoint


@pytest.fixture(scope="module")
def vgg_scene(scene, tmp_path_factory):
    """The same room mapped (at most 400 keypoints per image) with an untrained NinjaNet over OpenCV's VGG (120-d), and its core build."""
    dataset = scene[0]
    root = tmp_path_factory.mktemp("ninjadesc_vgg")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(NinjaNet(NinjaNetConfig(base_descriptor="vgg", dim=120, hidden=256)).eval(), root / "ninjanet")
    method = get_method("ninjadesc")
    map_config = method.map_config({"core": VGG_CORE, "vlad": VLAD, "checkpoint": str(checkpoint)})
    core = build_core(dataset, map_config.core, progress=False)
    return MapPackage.open(method.build_map(dataset, root / "map", map_config, progress=False, core=core)), core


@pytest.fixture(scope="module")
def vgg_map(vgg_scene):
    return vgg_scene[0]


def _arrays_with_columns(package, columns):
    """``{"layer/file.npz:key": array}`` of every 2-D array of the map with this many columns."""
    found = {}
    for path in package.path.rglob("*.npz"):
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as arrays:
            for key in arrays.files:
                if arrays[key].ndim == 2 and arrays[key].shape[1] == columns:
                    found[f"{path.relative_to(package.path).as_posix()}:{key}"] = arrays[key]
    return found


def test_ninjanet_outputs_unit_vectors_and_checks_its_input():
    net = NinjaNet(NinjaNetConfig(hidden=32)).eval()
    out = net(torch.rand(5, 128))
    assert out.shape == (5, 128) and torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(SeglocError, match="expects descriptors"):
        net(torch.rand(5, 64))
    with pytest.raises(SeglocError, match="unknown base descriptor"):
        NinjaNetConfig(base_descriptor="hardnet")


def test_map_holds_ninjadesc_and_no_raw_descriptor(scene):
    dataset, core, _, package = scene
    assert package.method == "ninjadesc" and set(package.layers) == {"core", "ninjadesc", "ninjadesc_model", "vlad"}
    raw = core.observation_descriptors()
    stored = package.read_arrays("ninjadesc", "descriptors")["descriptors"]
    assert stored.dtype == np.float16 and stored.shape == raw.shape
    np.testing.assert_allclose(
        stored.astype(np.float32), encode(get_method("ninjadesc").load_localizer(package, None).model, root_sift(raw)), atol=2e-3
    )
    # Every 128-column array in the map: the NinjaDesc, the VLAD words learnt on them, NinjaNet's weights; none is SIFT.
    found = _arrays_with_columns(package, 128)
    assert set(found) == {
        "ninjadesc/descriptors.npz:descriptors",
        "vlad/vlad.npz:vocabulary",
        "ninjadesc_model/weights.npz:hidden.0.weight",
    }
    assert all(array.dtype != np.uint8 for array in found.values()), "an array looks like SIFT"
    assert not np.allclose(stored[:100].astype(np.float32), root_sift(raw[:100]), atol=1e-2)


def test_ninjanet_over_vgg_needs_its_dimension():
    with pytest.raises(SeglocError, match="needs dim 120"):
        NinjaNetConfig(base_descriptor="vgg")  # 128, RootSIFT's
    net = NinjaNet(NinjaNetConfig(base_descriptor="vgg", dim=120, hidden=16)).eval()
    assert net(torch.rand(3, 120)).shape == (3, 120)


def test_a_vgg_map_records_its_base_holds_no_raw_vgg_and_localizes(scene, vgg_scene, tmp_path):
    dataset = scene[0]
    vgg_map, core = vgg_scene
    assert vgg_map.read_json("ninjadesc", "meta")["base_descriptor"] == "vgg"
    localizer = get_method("ninjadesc").load_localizer(vgg_map, None)
    assert localizer.model.config.base_descriptor == "vgg"
    # Queries are described with the map's base: VGG at their SIFT keypoints, through the map's NinjaNet.
    image = dataset.load_image(dataset.query[0].name)
    sift = extract_sift(image, localizer.sift)
    np.testing.assert_allclose(
        localizer.describe(image, sift), encode(localizer.model, vgg_descriptors(image, sift, localizer.sift.max_edge))
    )
    # The stored NinjaDesc of image 0's observations are NinjaNet(VGG) of its keypoints; no 120-column array is raw VGG.
    mask = core.core.observation_image_ids == 0
    raw = vgg_descriptors(
        dataset.load_image(core.core.images[0].name), core.features[0], localizer.sift.max_edge, core.observation_keypoint_ids[mask]
    )
    stored = vgg_map.read_arrays("ninjadesc", "descriptors")["descriptors"]
    np.testing.assert_allclose(stored[mask].astype(np.float32), encode(localizer.model, raw), atol=2e-3)
    found = _arrays_with_columns(vgg_map, 120)
    assert set(found) == {
        "ninjadesc/descriptors.npz:descriptors",
        "vlad/vlad.npz:vocabulary",
        "ninjadesc_model/weights.npz:hidden.0.weight",
    }
    assert not _arrays_with_columns(vgg_map, 128)
    assert not np.allclose(stored[mask].astype(np.float32), raw, atol=1e-2)
    surface = get_method("ninjadesc").attack_surface(vgg_map)
    assert surface.num_channels == 120
    metrics = evaluate_map(vgg_map.path, dataset, tmp_path / "eval", progress=False)
    assert metrics["num_queries"] == 4 and metrics["recall"]["0.25m_2deg"] >= 0.75, metrics["failure_reasons"]


def test_a_ninjanet_of_another_base_than_the_layer_is_refused(scene, vgg_scene):
    from segloc.maps.core import read_core
    from segloc.methods.ninjadesc.layer import read_ninjadesc_layer, read_ninjanet

    vgg_map = vgg_scene[0]
    package = scene[3]
    rootsift_layer = read_ninjadesc_layer(package, read_core(package))
    assert read_ninjanet(package, rootsift_layer).config.base_descriptor == "rootsift"
    vgg_layer = read_ninjadesc_layer(vgg_map, read_core(vgg_map))
    with pytest.raises(SeglocError, match="holds NinjaDesc over vgg but its NinjaNet re-encodes rootsift"):
        read_ninjanet(package, vgg_layer)
    with pytest.raises(SeglocError, match="holds NinjaDesc over rootsift but its NinjaNet re-encodes vgg"):
        read_ninjanet(vgg_map, rootsift_layer)


def test_localizes_in_ninjadesc_space(scene, tmp_path):
    dataset, _, _, package = scene
    localizer = get_method("ninjadesc").load_localizer(package, None)
    image = dataset.load_image(dataset.query[0].name)
    sift = extract_sift(image, localizer.sift)
    np.testing.assert_allclose(localizer.describe(image, sift), encode(localizer.model, root_sift(sift.descriptors)))
    metrics = evaluate_map(package.path, dataset, tmp_path / "eval", progress=False)
    assert metrics["num_queries"] == 4 and metrics["recall"]["0.25m_2deg"] >= 0.75, metrics["failure_reasons"]


def test_attack_surface_is_the_stored_ninjadesc(scene):
    dataset, _, _, package = scene
    surface = get_method("ninjadesc").attack_surface(package)
    assert surface.num_channels == 128 and "NinjaDesc" in surface.description
    keypoints, attributes = surface.features(dataset.load_image(dataset.mapping[0].name))
    assert len(keypoints) == len(attributes) and np.allclose(np.linalg.norm(attributes, axis=1), 1.0, atol=1e-4)


def test_map_build_refuses_a_missing_or_foreign_checkpoint(scene, tmp_path):
    dataset, core, _, _ = scene
    method = get_method("ninjadesc")
    with pytest.raises(SeglocError, match="needs a trained NinjaNet"):
        method.build_map(dataset, tmp_path / "a", method.map_config({"core": CORE}), progress=False, core=core)
    from segloc.models import SegmentationNet, segmentation_config

    other = save_checkpoint(SegmentationNet(segmentation_config("cpu", pretrained=False, num_classes=4)), tmp_path / "seg")
    with pytest.raises(SeglocError, match="needs a ninjanet checkpoint"):
        method.build_map(dataset, tmp_path / "b", method.map_config({"core": CORE, "checkpoint": str(other)}), progress=False, core=core)


@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="the onnxruntime backend needs onnxruntime and onnxscript (ONNX export)",
)
@pytest.mark.parametrize("base", ["rootsift", "vgg"])
def test_ninjanet_runs_on_onnxruntime_from_the_maps_export(scene, vgg_map, base, tmp_path):
    import shutil

    from segloc.cli import main

    dataset, _, _, package = scene
    package = vgg_map if base == "vgg" else package
    copy = tmp_path / "map"
    shutil.copytree(package.path, copy)
    assert main(["export", str(copy)]) == 0
    exported = MapPackage.open(copy)
    assert "onnx" in exported.layers
    method = get_method("ninjadesc")
    runtime = {"runtime": {"backend": "onnxruntime", "threads": 1, "cache_dir": str(tmp_path / "cache")}}
    onnx, torch_localizer = method.load_localizer(exported, method.localize_config(runtime)), method.load_localizer(exported, None)
    assert [s.backend for s in onnx.inference_status()] == ["onnxruntime"]
    image = dataset.load_image(dataset.query[0].name)
    sift = extract_sift(image, onnx.sift)
    np.testing.assert_allclose(onnx.describe(image, sift), torch_localizer.describe(image, sift), atol=1e-5)
    assert not (tmp_path / "cache" / "onnx").exists()  # the map's export was used


@pytest.mark.parametrize("base", ["rootsift", "vgg"])
def test_map_update_encodes_the_new_observations_with_the_maps_ninjanet(scene, vgg_map, base, tmp_path):
    from segloc.maps.core import read_core
    from segloc.maps.update import update_map
    from segloc.methods.ninjadesc.layer import read_ninjadesc_layer, read_ninjanet
    from segloc.methods.reference.layer import read_vlad_layer

    dataset, _, _, package = scene
    package = vgg_map if base == "vgg" else package
    config = synthetic.synth_config(
        "room", "lighting", num_mapping=6, num_query=0, width=320, height=240, seed=3, recording=1, mapping_laps=0.25
    )
    recording = read_dataset(synthetic.generate_scene(config, tmp_path / "recording2", progress=False))
    update_map(package.path, recording.root, tmp_path / "updated", progress=False)
    updated = MapPackage.open(tmp_path / "updated")
    core = read_core(updated)
    layer = read_ninjadesc_layer(updated, core)  # the layer belongs to the new core
    assert len(read_vlad_layer(updated, len(core.images)).global_descriptors) == 30
    assert layer.base_descriptor == base
    # A new observation's NinjaDesc is the map's NinjaNet applied to the map's base descriptor of its keypoint in the new image.
    observation = np.flatnonzero(core.observation_image_ids >= 24)[0]
    image_id = core.observation_image_ids[observation]
    image = recording.load_image(recording.mapping[image_id - 24].name)
    sift = extract_sift(image, layer.sift)
    keypoint = np.argmin(np.linalg.norm(sift.keypoints - core.observation_xy[observation], axis=1))
    raw = vgg_descriptors(image, sift, layer.sift.max_edge, [keypoint]) if base == "vgg" else root_sift(sift.descriptors[[keypoint]])
    expected = encode(read_ninjanet(updated), raw)[0]
    assert np.allclose(layer.descriptors[observation].astype(np.float32), expected, atol=2e-3)
