from dataclasses import dataclass, field

import pytest

from segloc.config import config_from_dict, config_to_dict, load_config
from segloc.errors import SeglocError


@dataclass
class Inner:
    ratio: float = 0.8
    mutual: bool = True


@dataclass
class Outer:
    name: str = "reference"
    size: tuple[int, int] = (640, 480)
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None


def test_nested_and_defaults():
    config = config_from_dict(Outer, {"inner": {"ratio": 1}, "size": [320, 240]})
    assert config.inner.ratio == 1.0 and isinstance(config.inner.ratio, float)
    assert config.size == (320, 240) and config.inner.mutual
    assert config_from_dict(Outer, config_to_dict(config)) == config


@dataclass
class Enclosing:
    """A class whose nested section has other defaults than the nested class's own."""

    inner: Inner = field(default_factory=lambda: Inner(ratio=0.5, mutual=False))
    outer: Outer = field(default_factory=lambda: Outer(name="enclosed", inner=Inner(ratio=0.25)))


def test_a_partial_nested_section_keeps_the_enclosing_class_defaults():
    config = config_from_dict(Enclosing, {"inner": {"ratio": 0.9}, "outer": {"inner": {"mutual": False}}})
    assert config.inner == Inner(ratio=0.9, mutual=False)  # mutual stays the enclosing default, not Inner's True
    assert config.outer.name == "enclosed" and config.outer.inner == Inner(ratio=0.25, mutual=False)
    assert config_from_dict(Enclosing, {}) == Enclosing()
    with pytest.raises(SeglocError, match=r"config.outer.inner: unknown option"):
        config_from_dict(Enclosing, {"outer": {"inner": {"ratoi": 1.0}}})


def test_unknown_keys_are_an_error():
    with pytest.raises(SeglocError, match=r"config.inner: unknown option\(s\) ratoi; valid options are: mutual, ratio"):
        config_from_dict(Outer, {"inner": {"ratoi": 0.7}})


def test_wrong_type():
    with pytest.raises(SeglocError, match="config.name: expected str"):
        config_from_dict(Outer, {"name": 3})


def test_yaml_file_with_section_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("map:\n  name: x\n  inner:\n    ratio: 0.9\n")
    config = load_config(Outer, path, section="map", overrides={"limit": 5})
    assert (config.name, config.inner.ratio, config.limit) == ("x", 0.9, 5)
    with pytest.raises(SeglocError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
    path.write_text("a: [")
    with pytest.raises(SeglocError, match="not valid YAML"):
        load_config(Outer, path)


def test_one_loader_checks_every_section_of_a_config_file(tmp_path):
    """CLI, nodes and training read sections through config_section: a misspelt section is an error, never defaults."""
    from segloc.config import CONFIG_SECTIONS, config_section, read_config_file

    path = tmp_path / "c.yaml"
    path.write_text("map:\n  name: x\nlocalise:\n  num_retrieved: 3\n")
    for read in (lambda: read_config_file(path), lambda: config_section(path, "map"), lambda: load_config(Outer, path, section="map")):
        with pytest.raises(SeglocError, match=r"unknown section\(s\) localise; valid sections: map, localize"):
            read()
    path.write_text("map:\n  name: x\n")
    assert config_section(path, "map") == {"name": "x"} and config_section(path, "localize") is None
    assert config_section(None, "map") is None and config_section("", "map") is None
    assert load_config(Outer, path, section="localize") == Outer()  # the section is absent: the defaults
    with pytest.raises(SeglocError, match="unknown config section 'mapping'"):
        config_section(path, "mapping")
    path.write_text("map: 3\n")
    with pytest.raises(SeglocError, match="must be a mapping"):
        config_section(path, "map")
    path.write_text("- map\n")
    with pytest.raises(SeglocError, match="expected a mapping"):
        read_config_file(path)
    assert set(CONFIG_SECTIONS) >= {"map", "localize", "synth", "bag", "train"}


# --- ranges ------------------------------------------------------------------------------
def config_classes():
    from segloc.data.render import AppearanceConfig
    from segloc.data.rosbag import BagReadConfig, BagWriteConfig
    from segloc.data.synthetic import CameraMountConfig, SynthConfig
    from segloc.features.matching import MatcherConfig
    from segloc.features.retrieval import VladConfig
    from segloc.features.sift import SiftConfig
    from segloc.geometry.pose import PnPConfig
    from segloc.localize.pipeline import PublishConfig
    from segloc.maps.build import CoreConfig, PairConfig, TriangulationConfig
    from segloc.methods.reference.layer import ReferenceMapConfig
    from segloc.methods.reference.localizer import ReferenceLocalizerConfig
    from segloc.methods.segloc.layer import SegLocMapConfig
    from segloc.methods.segloc.localizer import SegLocLocalizerConfig
    from segloc.methods.segloc.refine import LabelRefinementConfig
    from segloc.models.segmentation import SegmentationNetConfig

    return [
        SiftConfig, MatcherConfig, VladConfig, PnPConfig, PairConfig, TriangulationConfig, CoreConfig, ReferenceMapConfig,
        ReferenceLocalizerConfig, SegLocMapConfig, SegLocLocalizerConfig, LabelRefinementConfig, SynthConfig, CameraMountConfig,
        AppearanceConfig, BagReadConfig, BagWriteConfig, PublishConfig, SegmentationNetConfig,
    ]  # fmt: skip


#: Numeric fields that take any finite value (or whose config checks them by hand).
UNBOUNDED = {
    "AppearanceConfig.sun_azimuth_deg",
    "BagWriteConfig.ros_version",
    "LabelRefinementConfig.levels",
    "SegmentationNetConfig.num_classes",
    "SegmentationNetConfig.feature_dim",
    "SegmentationNetConfig.decoder_channels",
    "SegmentationNetConfig.head_hidden_dim",
    "SegmentationNetConfig.input_mean",
    "SegmentationNetConfig.input_std",
    "SynthConfig.width",
    "SynthConfig.height",
}


def numeric_fields(cls):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for option_field in dataclasses.fields(cls):
        hint = hints[option_field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if any(a in (int, float) for a in args) or (typing.get_origin(hint) is tuple and float in typing.get_args(hint)):
            yield option_field, hint


def test_every_numeric_config_field_declares_its_range():
    missing = [
        f"{cls.__name__}.{option_field.name}"
        for cls in config_classes()
        for option_field, _ in numeric_fields(cls)
        if not option_field.metadata.get("segloc_option", {}).get("bounds") and f"{cls.__name__}.{option_field.name}" not in UNBOUNDED
    ]
    assert missing == []


def test_every_float_option_refuses_nan_and_infinity_from_yaml_and_from_python():
    import typing

    checked = 0
    for cls in config_classes():
        for option_field, hint in numeric_fields(cls):
            if typing.get_origin(hint) is tuple or float not in (typing.get_args(hint) or (hint,)):
                continue
            for value in (float("nan"), float("inf")):
                with pytest.raises(SeglocError, match=rf"x\.{option_field.name} must be a finite number"):
                    config_from_dict(cls, {option_field.name: value}, "x")
                with pytest.raises(SeglocError, match=rf"{cls.__name__}\.{option_field.name} must be a finite number|finite"):
                    cls(**{option_field.name: value})
            checked += 1
    assert checked > 60


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("map", {"core": {"sift": {"max_keypoints": -5}}}, r"map.core.sift.max_keypoints must be >= 0 \(0: no limit\), got -5"),
        ("map", {"core": {"triangulation": {"min_track_length": 1}}}, r"map.core.triangulation.min_track_length must be >= 2"),
        ("localize", {"num_candidates": -1}, r"localize.num_candidates must be >= 1, got -1"),
        ("localize", {"pnp": {"max_error_px": -3}}, r"localize.pnp.max_error_px must be > 0, got -3"),
        ("localize", {"pnp": {"confidence": 1.5}}, r"localize.pnp.confidence must be > 0 and <= 1, got 1.5"),
        ("localize", {"matcher": {"ratio_threshold": 0}}, r"localize.matcher.ratio_threshold must be > 0 and <= 1 \(1: no ratio test\)"),
    ],
)
def test_reference_options_out_of_range(section, values, message):
    from segloc.methods import get_method

    method = get_method("reference")
    build = method.map_config if section == "map" else method.localize_config
    with pytest.raises(SeglocError, match=message):
        build(values)


def test_option_bounds_in_python_and_defaults():
    from dataclasses import dataclass

    from segloc.config import check_options, option

    @dataclass
    class Ranged:
        count: int = option(3, ge=1)
        ratio: float | None = option(None, gt=0, lt=1, note="null: none")
        pair: tuple[float, float] = option((0.5, 0.5), ge=0)
        free: float = option(float("inf"), finite=False)

        def __post_init__(self):
            check_options(self)

    assert Ranged().count == 3 and Ranged(ratio=0.5).ratio == 0.5
    with pytest.raises(SeglocError, match=r"Ranged.count must be >= 1, got 0"):
        Ranged(count=0)
    with pytest.raises(SeglocError, match=r"Ranged.ratio must be > 0 and < 1 \(null: none\), got 1.0"):
        Ranged(ratio=1.0)
    with pytest.raises(SeglocError, match=r"cfg.pair must be >= 0, got -1"):
        config_from_dict(Ranged, {"pair": [0.5, -1]}, "cfg")
    assert config_from_dict(Ranged, {"free": float("nan")}).free != 0
