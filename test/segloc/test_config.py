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
