"""The SegLoc map layer on a small synthetic room: building from a checkpoint, round trip, privacy, top-k variants."""

import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segloc.data.dataset import read_dataset
from segloc.data.synthetic import LABELS, generate_scene, synth_config
from segloc.errors import SeglocError
from segloc.maps.core import read_core
from segloc.maps.package import MapPackage
from segloc.methods import get_method
from segloc.methods.segloc.layer import (
    MODEL_LAYER,
    SEGLOC_LAYER,
    SegLocMapConfig,
    aggregate_point_probabilities,
    build_segloc_map,
    read_segloc_layer,
    read_segloc_model,
    relabel_segloc_map,
    sample_probabilities,
    stored_distribution,
)
from segloc.models import SegmentationNet, save_checkpoint, segmentation_config
from segloc.models.segmenter import NetworkSegmenter, Segmentation

NUM_CLASSES = 8  # of the tiny network
FAST_CORE = {"pairs": {"num_neighbors": 5}}


def tiny_network(num_classes: int = NUM_CLASSES) -> SegmentationNet:
    torch.manual_seed(0)
    config = segmentation_config(
        "cpu", pretrained=False, num_classes=num_classes, feature_dim=8, decoder_channels=(16, 16, 16, 16), head_hidden_dim=8
    )
    return SegmentationNet(config).eval()


class GroundTruthLabels:
    """A segmenter returning the one-hot ground-truth labels of the synthetic images (one full-resolution level)."""

    num_classes = len(LABELS)
    descriptor_grid = (1,)

    def __init__(self, dataset):
        self.labels = {}
        for record in dataset.mapping:
            key = dataset.load_image(record.name).tobytes()
            self.labels[key] = cv2.imread(str(dataset.root / "labels" / record.name), cv2.IMREAD_UNCHANGED)

    def __call__(self, image: np.ndarray) -> Segmentation:
        labels = self.labels[np.ascontiguousarray(image).tobytes()]
        one_hot = (labels[None] == np.arange(self.num_classes)[:, None, None]).astype(np.float32)
        histogram = one_hot.mean(axis=(1, 2))
        return Segmentation([torch.from_numpy(one_hot)], histogram / np.linalg.norm(histogram), labels.shape[::-1])


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A 320x240 synthetic room (16 mapping images), a tiny network checkpoint and its SegLoc map (full distributions)."""
    root = tmp_path_factory.mktemp("segloc_layer")
    config = synth_config("room", num_mapping=16, num_query=0, width=320, height=240, seed=1)
    dataset = read_dataset(generate_scene(config, root / "dataset", progress=False))
    checkpoint = save_checkpoint(tiny_network(), root / "checkpoint")
    map_config = SegLocMapConfig(checkpoint=str(checkpoint), inference_max_edge=320, store="full", core=FAST_CORE)
    path = build_segloc_map(dataset, root / "map_full", map_config, progress=False)
    return dataset, checkpoint, MapPackage.open(path), root


def test_sampling_follows_the_colmap_pixel_convention():
    level = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # K=2, H=3, W=4
    # Same size as the image: the centre of pixel (col 2, row 1) is (2.5, 1.5).
    assert np.allclose(sample_probabilities(level, [[2.5, 1.5]], (4, 3)), level[:, 1, 2])
    # An image twice as large: its pixel centre (5.0, 3.0) is the level's pixel centre (2.5, 1.5).
    assert np.allclose(sample_probabilities(level, [[5.0, 3.0]], (8, 6)), level[:, 1, 2])
    # Half-way between two level pixel centres, and clamped outside the image.
    assert np.allclose(sample_probabilities(level, [[2.0, 1.5]], (4, 3)), (level[:, 1, 1] + level[:, 1, 2]) / 2)
    assert np.allclose(sample_probabilities(level, [[-3.0, 100.0]], (4, 3)), level[:, 2, 0])


def test_point_labels_agree_with_the_ground_truth(room):
    dataset, _, package, _ = room
    core = read_core(package)
    probabilities, descriptors, sizes, num_levels = aggregate_point_probabilities(
        core, GroundTruthLabels(dataset), dataset.load_image, False
    )
    assert probabilities.shape == (core.num_points, len(LABELS)) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert descriptors.shape == (len(core.images), len(LABELS)) and num_levels == 1 and set(sizes) == {(320, 240)}
    # The label of each observation's pixel, voted over the observations of each point.
    votes = np.zeros_like(probabilities)
    for image_id, record in enumerate(core.images):
        labels = cv2.imread(str(dataset.root / "labels" / record.name), cv2.IMREAD_UNCHANGED)
        point_ids, xy = core.image_observations(image_id)
        np.add.at(votes, (point_ids, labels[xy[:, 1].astype(int), xy[:, 0].astype(int)]), 1.0)
    agree = np.argmax(probabilities, axis=1) == np.argmax(votes, axis=1)
    assert agree.mean() > 0.95, agree.mean()


def test_round_trip_and_embedded_network(room):
    dataset, checkpoint, package, _ = room
    core = read_core(package)
    layer = read_segloc_layer(package, core)
    assert package.method == "segloc" and set(package.layers) == {"core", SEGLOC_LAYER, MODEL_LAYER}
    assert layer.store == "full" and layer.num_classes == NUM_CLASSES and layer.max_top_k == NUM_CLASSES
    assert layer.point_labels.shape == (core.num_points,) and layer.probabilities.shape == (core.num_points, NUM_CLASSES)
    assert np.array_equal(layer.point_labels, np.argmax(layer.probabilities.astype(np.float32), axis=1))
    assert layer.image_descriptors.shape == (len(core.images), 5 * NUM_CLASSES)  # pyramid (1, 2): 1 + 4 cells of K
    assert np.allclose(np.linalg.norm(layer.image_descriptors, axis=1), 1.0, atol=1e-2)
    assert layer.meta["num_levels"] == 4 and layer.meta["inference_sizes"] == ["320x256"] and layer.meta["inference_max_edge"] == 320
    labels, weights = layer.labels(3, np.array([0, 5]))
    assert labels.shape == weights.shape == (2, 3) and np.all(np.diff(weights, axis=1) <= 0)
    assert np.array_equal(labels[:, 0], layer.point_labels[[0, 5]])
    # The embedded network gives what the checkpoint gives.
    source = NetworkSegmenter.from_checkpoint(checkpoint, inference_max_edge=320)
    embedded = NetworkSegmenter(read_segloc_model(package), inference_max_edge=320)
    image = dataset.load_image(dataset.mapping[3].name)
    expected, actual = source(image), embedded(image)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(expected.probabilities, actual.probabilities))
    assert np.allclose(expected.descriptor, layer.image_descriptors[3], atol=2e-3)  # stored in float16
    description = package.read_json(MODEL_LAYER, "model")
    assert description["model"] == "segmentation" and description["source"]["checkpoint"] == str(Path(checkpoint).resolve())


def test_embedded_weights_keep_the_checkpoint_precision(room, tmp_path):
    from segloc.maps.build import CoreBuild

    dataset, _, package, _ = room
    half = save_checkpoint(tiny_network(), tmp_path / "half", dtype="float16")
    core = CoreBuild(read_core(package), [], np.zeros(0, np.int64), {"seconds": {}})
    sizes = {}
    for dtype, expected in (("checkpoint", np.float16), ("float32", np.float32)):
        config = SegLocMapConfig(checkpoint=str(half), inference_max_edge=320, model_dtype=dtype)
        built = MapPackage.open(build_segloc_map(dataset, tmp_path / dtype, config, progress=False, core=core))
        weights = built.read_arrays(MODEL_LAYER, "weights")
        assert {array.dtype for array in weights.values() if np.issubdtype(array.dtype, np.floating)} == {np.dtype(expected)}
        assert built.read_json(MODEL_LAYER, "model")["source"]["dtype"] == "float16"
        sizes[dtype] = built.bytes([MODEL_LAYER])
        # Either way the embedded network gives what the float16 checkpoint gives.
        image = dataset.load_image(dataset.mapping[0].name)
        expected_output = NetworkSegmenter.from_checkpoint(half, inference_max_edge=320)(image)
        actual_output = NetworkSegmenter(read_segloc_model(built), inference_max_edge=320)(image)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(expected_output.probabilities, actual_output.probabilities))
    assert sizes["checkpoint"] < 0.6 * sizes["float32"]


def _image_like(array: np.ndarray) -> bool:
    """Two spatial dimensions of 16 or more pixels with 1 to 4 channels, or any 2D uint8 raster."""
    shape = array.shape
    if array.ndim == 3 and (shape[-1] in (1, 3, 4) or shape[0] in (1, 3, 4)):
        spatial = shape[:2] if shape[-1] in (1, 3, 4) else shape[1:]
        return min(spatial) >= 16
    return array.ndim == 2 and array.dtype == np.uint8 and min(shape) >= 16


def test_the_map_holds_no_image_and_no_appearance_descriptor(room):
    dataset, _, package, _ = room
    core = read_core(package)
    allowed = {
        "core/points3D.npz": {"points3D", "point_errors", "observation_point_ids", "observation_image_ids", "observation_xy"},
        "segloc/labels.npz": {"point_labels", "point_probabilities"},
        "segloc/descriptors.npz": {"image_descriptors"},
    }
    state_dict = tiny_network().state_dict()
    files = sorted(p.relative_to(package.path).as_posix() for p in package.path.rglob("*") if p.is_file())
    assert files == sorted([*package.manifest["files"], "manifest.json"])
    assert not any(package.has_layer(layer) for layer in ("reference", "vlad"))
    for rel in files:
        data = (package.path / rel).read_bytes()
        assert not data.startswith((b"\x89PNG", b"\xff\xd8\xff")), f"{rel} is an image file"
        if rel.endswith(".json"):
            json.loads(data)
            assert len(data) < 64 * 1024, f"{rel} is large: {len(data)} bytes"
            continue
        assert rel.endswith(".npz"), rel
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            if rel == "segloc_model/weights.npz":  # the network: exactly its state dict, floats and counters
                assert set(arrays.files) == set(state_dict)
                assert all(arrays[k].shape == tuple(state_dict[k].shape) for k in arrays.files)
                continue
            assert set(arrays.files) == allowed[rel], rel
            for key in arrays.files:
                array = arrays[key]
                assert not (array.dtype == np.uint8 and array.ndim == 2 and array.shape[1] in (64, 128, 256)), f"{rel}:{key}"
                assert not _image_like(array), f"{rel}:{key} looks like an image: {array.shape} {array.dtype}"
    layer = read_segloc_layer(package, core)
    assert layer.image_descriptors.shape[1] == 5 * layer.num_classes  # pooled class histograms, nothing else
    assert zipfile.is_zipfile(package.path / "segloc" / "labels.npz")


def test_top_k_variants_and_their_sizes(room):
    _, _, package, root = room
    core = read_core(package)
    full = read_segloc_layer(package, core)
    sizes = {"full": package.bytes([SEGLOC_LAYER])}
    for store, top_k in (("top1", 1), ("topk", 1), ("topk", 3), ("topk", 5)):
        name = store if store == "top1" else f"topk{top_k}"
        variant = MapPackage.open(relabel_segloc_map(package, root / f"map_{name}", store, top_k))
        layer = read_segloc_layer(variant, read_core(variant))
        sizes[name] = variant.bytes([SEGLOC_LAYER])
        assert variant.bytes(["core"]) == package.bytes(["core"]) and variant.bytes([MODEL_LAYER]) == package.bytes([MODEL_LAYER])
        assert np.array_equal(layer.point_labels, full.point_labels) and layer.probabilities is None
        assert layer.meta["store"] == store and layer.meta["derived_from"]["store"] == "full"
        if store == "topk":
            expected_labels, expected_weights = full.labels(top_k) if top_k > 1 else (full.point_labels[:, None], None)
            assert layer.topk_labels.shape == (core.num_points, top_k) and layer.max_top_k == top_k
            assert np.array_equal(layer.topk_labels, expected_labels)
            if expected_weights is not None:
                assert np.allclose(layer.topk_weights, expected_weights, atol=1e-3)
        else:
            assert layer.topk_labels is None and layer.max_top_k == 1
    assert sizes["top1"] < sizes["topk1"] < sizes["topk3"] < sizes["topk5"] < sizes["full"], sizes
    # Labels (1 byte) + top-k ids (1 byte each) + top-k weights (2 bytes each) per point, plus npz headers.
    points = core.num_points
    label_bytes = {name: MapPackage.open(root / f"map_{name}").bytes() for name in ("top1", "topk3")}
    assert 0 < (label_bytes["topk3"] - label_bytes["top1"]) - 9 * points < 2048
    # A top-k map gives smaller variants, not larger ones.
    topk3 = MapPackage.open(root / "map_topk3")
    assert read_segloc_layer(MapPackage.open(relabel_segloc_map(topk3, root / "map_from3", "topk", 2))).topk_labels.shape[1] == 2
    with pytest.raises(SeglocError, match="rebuild it with store: full"):
        relabel_segloc_map(topk3, root / "map_bad", "topk", 5)
    with pytest.raises(SeglocError, match="cannot give full"):
        relabel_segloc_map(topk3, root / "map_bad", "full")
    with pytest.raises(SeglocError, match="stores 3 label"):
        read_segloc_layer(topk3).labels(4)


def test_building_needs_a_checkpoint(room, tmp_path, monkeypatch):
    from segloc.models import checkpoint as checkpoints

    dataset = room[0]
    unshipped = {name: entry for name, entry in checkpoints.SHIPPED_CHECKPOINTS.items() if name != checkpoints.GENERAL_CHECKPOINT}
    monkeypatch.setattr(checkpoints, "SHIPPED_CHECKPOINTS", unshipped)
    with pytest.raises(SeglocError, match="checkpoint: PATH"):
        build_segloc_map(dataset, tmp_path / "map", SegLocMapConfig())
    with pytest.raises(SeglocError, match="general SegLoc network .* is not shipped"):
        build_segloc_map(dataset, tmp_path / "map", SegLocMapConfig(checkpoint="general"))
    with pytest.raises(SeglocError, match="neither a checkpoint folder nor a shipped network"):
        build_segloc_map(dataset, tmp_path / "map", SegLocMapConfig(checkpoint=str(tmp_path / "missing")))
    with pytest.raises(SeglocError, match="exists already"):
        build_segloc_map(dataset, room[2].path, SegLocMapConfig(checkpoint=str(room[1])))
    assert not (tmp_path / "map").exists()


def test_without_a_checkpoint_the_map_is_built_with_the_shipped_general_network(room, tmp_path, monkeypatch):
    from segloc.maps.build import CoreBuild
    from segloc.models import checkpoint as checkpoints

    dataset, _, package, _ = room
    general = save_checkpoint(tiny_network(), tmp_path / "weights" / checkpoints.GENERAL_CHECKPOINT, {"image_size": [320, 240]})
    monkeypatch.setattr(checkpoints, "SHIPPED_DIR", tmp_path / "weights")
    monkeypatch.setattr(checkpoints, "SHIPPED_CHECKPOINTS", {checkpoints.GENERAL_CHECKPOINT: {"description": "a test network"}})
    core = CoreBuild(read_core(package), [], np.zeros(0, np.int64), {"seconds": {}})
    for name, checkpoint in (("null", None), ("general", "general"), ("named", checkpoints.GENERAL_CHECKPOINT)):
        config = SegLocMapConfig(checkpoint=checkpoint, residual_calibration_images=0, core=FAST_CORE)
        built = MapPackage.open(build_segloc_map(dataset, tmp_path / name, config, progress=False, core=core))
        source = built.read_json(MODEL_LAYER, "model")["source"]
        assert source["checkpoint"] == str(general.resolve())
        assert source["metadata"]["image_size"] == [320, 240]


def test_config_is_strict():
    from segloc.config import config_from_dict

    config = config_from_dict(
        SegLocMapConfig, {"checkpoint": "ckpt", "store": "topk", "top_k": 10, "core": {"pairs": {"num_neighbors": 4}}}
    )
    assert config.top_k == 10 and config.core.pairs.num_neighbors == 4
    with pytest.raises(SeglocError, match="unknown option"):
        config_from_dict(SegLocMapConfig, {"checkpoint": "ckpt", "labels": 3})
    with pytest.raises(SeglocError, match="unknown store"):
        SegLocMapConfig(store="top2")
    with pytest.raises(SeglocError, match="model_dtype"):
        SegLocMapConfig(model_dtype="int8")


def test_layer_of_another_core_is_rejected(room, tmp_path):
    from segloc.maps.core import write_core
    from segloc.maps.package import MapWriter

    package = room[2]
    core = read_core(package)
    core.points3D = core.points3D + 1.0
    with MapWriter(tmp_path / "map", method="segloc", base=package) as writer:
        write_core(writer, core)  # new core checksum, old segloc layer
        writer.commit()
    with pytest.raises(SeglocError, match="another core layer"):
        read_segloc_layer(MapPackage.open(tmp_path / "map"))
    with pytest.raises(SeglocError, match="has no 'segloc' layer"):
        read_segloc_layer(MapPackage(package.path, {**package.manifest, "layers": {}}))


def test_stored_distribution_keeps_what_each_store_mode_keeps():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    np.testing.assert_array_equal(stored_distribution(probabilities, "top1", 1), [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(stored_distribution(probabilities, "topk", 2), [[0, 0.6, 0.3], [0.5, 0, 0.3]])
    np.testing.assert_allclose(stored_distribution(probabilities, "full", 3), probabilities)


def test_attack_surface_is_the_stored_labels_of_each_observation(room):
    """The audit's attacker gets the point distributions the map stores, and makes the same from other images with the map's network."""
    dataset, _, package, _ = room
    core = read_core(package)
    surface = get_method("segloc").attack_surface(package)
    layer = read_segloc_layer(package, core)
    assert surface.num_channels == NUM_CLASSES and "store full" in surface.description
    np.testing.assert_allclose(surface.observation_attributes, layer.probabilities[core.observation_point_ids].astype(np.float32))
    keypoints, attributes = surface.features(dataset.load_image(dataset.mapping[0].name))
    assert len(keypoints) > 10 and attributes.shape == (len(keypoints), NUM_CLASSES)
    np.testing.assert_allclose(attributes.sum(axis=1), 1.0, atol=1e-3)


def test_update_labels_the_added_points_and_keeps_the_old_ones(room):
    """`segloc map update` through SegLoc's hook: the map's own network segments the new images only."""
    from segloc.maps.update import update_map
    from segloc.methods.segloc.localizer import SegLocLocalizer

    _, _, package, root = room
    config = synth_config("room", num_mapping=8, num_query=0, width=320, height=240, seed=1, recording=1, change=0.5)
    recording = generate_scene(config, root / "recording2", progress=False)
    report = update_map(package.path, recording, root / "map_updated", progress=False)
    updated = MapPackage.open(root / "map_updated")
    old_core, core = read_core(package), read_core(updated)
    old_layer, layer = read_segloc_layer(package, old_core), read_segloc_layer(updated, core)  # checksums checked
    assert len(core.images) == 24 and layer.image_descriptors.shape == (24, old_layer.image_descriptors.shape[1])
    assert np.allclose(layer.image_descriptors[:16], old_layer.image_descriptors, atol=1e-3)
    assert layer.probabilities.shape == (core.num_points, old_layer.num_classes) and layer.store == "full"
    # Kept old points are the first rows, in order, with what the map stored for them.
    kept = core.num_points - report["points_added"]
    assert report["points_added"] > 0 and kept == old_core.num_points - report["points_retired"]
    assert np.allclose(layer.probabilities[:kept].sum(axis=1), 1.0, atol=1e-2)
    assert np.allclose(layer.probabilities[kept:].astype(np.float32).sum(axis=1), 1.0, atol=1e-2)
    assert updated.manifest["created"]["updates"][0]["prefix"] == "update1/"
    assert updated.has_layer("segloc_model") and updated.file_path("segloc_model", "weights") is not None
    localizer = SegLocLocalizer.from_map(updated)
    assert len(localizer.core.images) == 24
