"""Every YAML file under config/ loads into the config dataclasses (docs match the code)."""

from pathlib import Path

import pytest

from segloc.config import CONFIG_SECTIONS, load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def test_reference_yaml_matches_the_defaults():
    from segloc.methods.reference.layer import ReferenceMapConfig
    from segloc.methods.reference.localizer import ReferenceLocalizerConfig

    path = CONFIG_DIR / "reference.yaml"
    assert load_config(ReferenceMapConfig, path, section="map") == ReferenceMapConfig()
    assert load_config(ReferenceLocalizerConfig, path, section="localize") == ReferenceLocalizerConfig()


def test_ninjadesc_yaml_matches_the_defaults():
    from segloc.methods.ninjadesc.layer import NinjaDescMapConfig
    from segloc.methods.ninjadesc.localizer import NinjaDescLocalizerConfig

    path = CONFIG_DIR / "ninjadesc.yaml"
    assert load_config(NinjaDescMapConfig, path, section="map") == NinjaDescMapConfig()
    assert load_config(NinjaDescLocalizerConfig, path, section="localize") == NinjaDescLocalizerConfig()


def test_sld_yaml_matches_the_defaults():
    from segloc.methods.sld.layer import SldMapConfig
    from segloc.methods.sld.localizer import SldLocalizerConfig
    from segloc_train.sld.train_sld import load_train_config, train_config

    path = CONFIG_DIR / "sld.yaml"
    assert load_config(SldMapConfig, path, section="map") == SldMapConfig()
    assert load_config(SldLocalizerConfig, path, section="localize") == SldLocalizerConfig()
    assert load_train_config(path) == train_config("cpu_demo")


def test_synth_yaml_is_the_demo_scene():
    from segloc.data.synthetic import SynthConfig, synth_config
    from segloc.demo import DEMO_SIZE

    config = load_config(SynthConfig, CONFIG_DIR / "synth_room.yaml", section="synth")
    assert config == synth_config("room", "lighting", width=DEMO_SIZE[0], height=DEMO_SIZE[1])


def is_ros_params_file(values: dict) -> bool:
    """A ROS 2 parameters file: node name -> {ros__parameters: {...}} (checked in test/segloc_ros)."""
    return all(isinstance(section, dict) and set(section) == {"ros__parameters"} for section in values.values())


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_is_valid_yaml_with_known_sections(path):
    import yaml

    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict) and values
    assert is_ros_params_file(values) or set(values) <= set(CONFIG_SECTIONS), sorted(values)


def test_segloc_yaml_matches_the_defaults():
    from segloc.methods.segloc.layer import SegLocMapConfig
    from segloc.methods.segloc.localizer import SegLocLocalizerConfig

    path = CONFIG_DIR / "segloc.yaml"
    assert load_config(SegLocMapConfig, path, section="map") == SegLocMapConfig()
    assert load_config(SegLocLocalizerConfig, path, section="localize") == SegLocLocalizerConfig()


def test_outdoor_yaml_loads():
    from segloc.methods.segloc.layer import SegLocMapConfig
    from segloc.methods.segloc.localizer import SegLocLocalizerConfig

    path = CONFIG_DIR / "segloc_outdoor.yaml"
    assert load_config(SegLocMapConfig, path, section="map").inference_max_edge == 1024
    localize = load_config(SegLocLocalizerConfig, path, section="localize")
    # its distances are derived from the map (null), as config/segloc.yaml's
    assert (localize.approximation, localize.weighted_max_distance, localize.refinement.max_translation_change) == ("weighted", None, None)


def test_fleet_yaml_matches_the_defaults():
    from segloc.maps.gate import GateConfig

    assert load_config(GateConfig, CONFIG_DIR / "fleet.yaml", section="gate") == GateConfig()


def test_fleet_yaml_update_section_matches_the_defaults():
    from segloc.maps.update import UpdateConfig

    assert load_config(UpdateConfig, CONFIG_DIR / "fleet.yaml", section="update") == UpdateConfig()
