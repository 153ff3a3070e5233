"""SegLoc's options in metres derived from the map: on a synthetic room and a synthetic street.

The map cores are made from the scenes' rendered depth (a grid of pixels of each mapping image
back-projected with its depth), without feature matching: the geometry is the scene's, which
is all the derivation reads.
"""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from segloc.config import load_config
from segloc.data.dataset import read_dataset
from segloc.data.synthetic import generate_scene, synth_config
from segloc.errors import SeglocError
from segloc.evaluate.run import scale_entries
from segloc.maps.core import MapCore
from segloc.maps.scale import image_spacing, map_scale
from segloc.methods.segloc.defaults import derive_scale_options
from segloc.methods.segloc.layer import SegLocLayer
from segloc.methods.segloc.localizer import SegLocLocalizer, SegLocLocalizerConfig, SegLocTrackingConfig
from segloc.methods.segloc.refine import LabelRefinementConfig, scale_refinement_options

NUM_MAPPING = 40
SCALE_OPTIONS = (
    "weighted_max_distance",
    "prior_radius",
    "refinement.max_translation_change",
    "refinement.min_depth",
    "refinement.min_step_translation",
    "tracking.max_translation_change",
)


def core_from_depth(dataset_dir, grid=(8, 6)) -> MapCore:
    """A map core of the mapping images: a grid of pixels of each, back-projected with the rendered depth (one observation per point)."""
    dataset = read_dataset(dataset_dir)
    points, image_ids, pixels = [], [], []
    for image_id, record in enumerate(dataset.mapping):
        depth = np.asarray(Image.open(dataset.root / "depth" / record.name).convert("I")).astype(np.float64) / 1000.0
        camera = record.camera
        u, v = np.meshgrid((np.arange(grid[0]) + 0.5) * camera.width / grid[0], (np.arange(grid[1]) + 0.5) * camera.height / grid[1])
        uv = np.stack([u.ravel(), v.ravel()], axis=1)
        z = depth[uv[:, 1].astype(int), uv[:, 0].astype(int)]
        keep = z > 0
        xy = camera.pixels_to_normalized(uv[keep])
        points_cam = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) * z[keep, None]
        points.append(record.cam_from_world.inverse().transform_points(points_cam))
        image_ids.append(np.full(int(keep.sum()), image_id))
        pixels.append(uv[keep])
    points3D = np.concatenate(points)
    return MapCore(
        images=list(dataset.mapping),
        points3D=points3D,
        point_errors=np.zeros(len(points3D)),
        observation_point_ids=np.arange(len(points3D)),
        observation_image_ids=np.concatenate(image_ids),
        observation_xy=np.concatenate(pixels),
    )


@pytest.fixture(scope="module")
def cores(tmp_path_factory):
    """Map cores of a synthetic room and a synthetic street, each mapped with the same number of images along its loop."""
    root = tmp_path_factory.mktemp("derived_defaults")
    cores = {}
    for scene in ("room", "street"):
        config = synth_config(scene, num_mapping=NUM_MAPPING, num_query=0, width=96, height=72, seed=1)
        cores[scene] = core_from_depth(generate_scene(config, root / scene, progress=False))
    return cores


def test_map_scale_of_a_room_and_a_street(cores):
    room, street = map_scale(cores["room"]), map_scale(cores["street"])
    # the loops are about 12 m and 100 m long, mapped with the same number of images
    assert 0.15 < room.image_spacing < 0.6 and 1.5 < street.image_spacing < 4.0
    assert 1.0 < room.scene_depth < 5.0 and street.scene_depth > 1.5 * room.scene_depth
    assert street.extent > 3 * room.extent
    assert (room.num_images, room.num_points) == (NUM_MAPPING, len(cores["room"].points3D))


def test_derived_options_scale_with_the_place(cores):
    derived = {scene: derive_scale_options(SegLocLocalizerConfig(), map_scale(core)) for scene, core in cores.items()}
    for config, values in derived.values():
        assert set(values) == set(SCALE_OPTIONS)
        assert config.weighted_max_distance == values["weighted_max_distance"] and config.prior_radius == values["prior_radius"]
        assert config.refinement.max_translation_change == values["refinement.max_translation_change"]
        assert config.tracking.max_translation_change == values["tracking.max_translation_change"]
    room, street = derived["room"][1], derived["street"][1]
    spacing_ratio = map_scale(cores["street"]).image_spacing / map_scale(cores["room"]).image_spacing
    # the approximation radius follows the spacing of the mapping images
    assert street["weighted_max_distance"] / room["weighted_max_distance"] == pytest.approx(spacing_ratio, rel=0.05)
    # the room lands near the values set by hand for it before (2 m move, 3 m prior radius, 5 cm near plane)
    assert 1.4 < room["refinement.max_translation_change"] < 2.8
    assert room["prior_radius"] == pytest.approx(1.5 * room["refinement.max_translation_change"], rel=0.01)
    assert 0.03 < room["refinement.min_depth"] < 0.08
    assert 0.3 < room["tracking.max_translation_change"] < 0.8  # 0.5 m by hand before
    for name in SCALE_OPTIONS:
        assert street[name] > room[name], name


def test_explicit_values_win(cores):
    scale = map_scale(cores["street"])
    config = SegLocLocalizerConfig(
        weighted_max_distance=2.0, prior_radius=3.0, refinement=LabelRefinementConfig(max_translation_change=0.5, min_depth=0.1)
    )
    resolved, derived = derive_scale_options(config, scale)
    assert (resolved.weighted_max_distance, resolved.prior_radius) == (2.0, 3.0)
    assert (resolved.refinement.max_translation_change, resolved.refinement.min_depth) == (0.5, 0.1)
    assert set(derived) == {"refinement.min_step_translation", "tracking.max_translation_change"}
    assert resolved.tracking.max_translation_change == pytest.approx(0.25 * 0.5)  # follows the explicit move
    # the prior radius derived from an explicit move follows it
    resolved, derived = derive_scale_options(SegLocLocalizerConfig(refinement=LabelRefinementConfig(max_translation_change=4.0)), scale)
    assert derived["prior_radius"] == pytest.approx(6.0)
    everything = SegLocLocalizerConfig(
        weighted_max_distance=1.0,
        prior_radius=1.0,
        refinement=LabelRefinementConfig(max_translation_change=1.0, min_depth=0.05, min_step_translation=1e-4),
        tracking=SegLocTrackingConfig(max_translation_change=0.3),
    )
    assert derive_scale_options(everything, scale) == (everything, {})


def test_yaml_null_means_derived_and_ranges_are_checked(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("localize:\n  prior_radius: null\n  weighted_max_distance: 4\n  refinement:\n    max_translation_change: null\n")
    config = load_config(SegLocLocalizerConfig, path, section="localize")
    assert config.prior_radius is None and config.refinement.max_translation_change is None
    assert config.weighted_max_distance == 4.0
    for text, match in (
        ("localize:\n  prior_radius: -1\n", "prior_radius must be >= 0"),
        ("localize:\n  refinement:\n    max_translation_change: 0\n", "max_translation_change must be > 0"),
        ("localize:\n  refinement:\n    min_depth: .nan\n", "min_depth must be a finite number"),
    ):
        path.write_text(text)
        with pytest.raises(SeglocError, match=match):
            load_config(SegLocLocalizerConfig, path, section="localize")


def test_refinement_alone_derives_from_the_scene_depth():
    config = scale_refinement_options(LabelRefinementConfig(), 10.0)
    near = scale_refinement_options(LabelRefinementConfig(), 2.5)
    assert config.max_translation_change == pytest.approx(4 * near.max_translation_change, rel=0.01)
    assert config.min_depth == pytest.approx(4 * near.min_depth, rel=0.01)
    assert near.min_depth == pytest.approx(0.05) and near.min_step_translation == pytest.approx(1e-4)
    kept = LabelRefinementConfig(max_translation_change=1.0)
    assert scale_refinement_options(kept, 10.0).max_translation_change == 1.0
    with pytest.raises(SeglocError, match="scene depth"):
        scale_refinement_options(LabelRefinementConfig(), 0.0)


def test_image_spacing_ignores_cameras_at_one_place():
    centers = np.array([[0.0, 0, 0], [0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 0, 0]])
    assert image_spacing(centers) == pytest.approx(1.0)
    assert image_spacing(centers[:1]) is None and image_spacing(np.zeros((3, 3))) is None


def test_localizer_logs_and_reports_what_it_derived(cores, caplog):
    core = cores["street"]
    num_classes = 4
    layer = SegLocLayer(
        point_labels=np.zeros(core.num_points, dtype=np.int64),
        topk_labels=None,
        topk_weights=None,
        probabilities=None,
        image_descriptors=np.eye(len(core.images), 8, dtype=np.float32),
        meta={"num_classes": num_classes, "store": "top1"},
    )
    segmenter = SimpleNamespace(num_classes=num_classes)
    with caplog.at_level(logging.INFO, logger="segloc"):
        localizer = SegLocLocalizer(core, layer, segmenter, SegLocLocalizerConfig(prior_radius=3.0))
    messages = [record.getMessage() for record in caplog.records if "derived from the map" in record.getMessage()]
    assert len(messages) == 1 and "refinement.max_translation_change" in messages[0] and "prior_radius" not in messages[0]
    assert localizer.config.prior_radius == 3.0
    assert localizer.config.refinement.max_translation_change == localizer.derived_options["refinement.max_translation_change"]
    entries = scale_entries(localizer)
    assert entries["derived_options"] == localizer.derived_options
    assert entries["map_scale"]["image_spacing"] == pytest.approx(map_scale(core).image_spacing, abs=1e-3)
    # the images near a pose use the derived radius (the explicit one here)
    assert len(localizer.images_near(core.images[0].cam_from_world)) >= 1


def test_map_info_prints_the_scale_and_the_derived_options(cores, tmp_path, capsys):
    from segloc.cli import main
    from segloc.maps.core import write_core
    from segloc.maps.package import MapWriter

    with MapWriter(tmp_path / "map", method="segloc") as writer:
        write_core(writer, cores["street"])
        writer.commit()
    config = tmp_path / "config.yaml"
    config.write_text("localize:\n  prior_radius: 5.0\n")
    assert main(["map", "info", str(tmp_path / "map"), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    scale = map_scale(cores["street"])
    assert f"image spacing {scale.image_spacing:.3g} m" in out
    derived = next(line for line in out.splitlines() if line.startswith("derived localize options"))
    assert "refinement.max_translation_change" in derived and "weighted_max_distance" in derived and "prior_radius" not in derived
