"""The method registry, and a method from outside the library (toy_method.py) run through the real CLI.

- registration at run time (register, replace, unregister), the checks on what is registered,
  the error for an unknown name;
- plug-ins of the ``segloc.methods`` entry-point group: a temporary ``*.dist-info`` on
  ``sys.path`` (``importlib.metadata`` finds distributions there), a broken plug-in next to a
  good one, and the toy method's own entry point in a fresh process;
- the toy method (the pose of the most similar mapping image) through ``segloc.cli.main``:
  ``map build``, ``map info``, ``evaluate``, ``localize`` and ``demo``, none of which knows it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from segloc.cli import main
from segloc.errors import SeglocError
from segloc.methods import available_methods, get_method, register_method, registry, unregister_method

sys.path.append(str(Path(__file__).resolve().parent))  # pytest runs with --import-mode=importlib: siblings are not importable
import toy_method  # noqa: E402
from toy_method import METHOD as TOY  # noqa: E402
from toy_method import NearestImageMethod, ToyMapConfig, write_entry_point  # noqa: E402


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as if nothing had been registered at run time and no plug-in scanned; put back after the test."""
    builtins = {name: method for name, method in registry._registered.items() if name in registry.BUILTIN_METHODS}
    monkeypatch.setattr(registry, "_registered", builtins)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)


@pytest.fixture
def toy(fresh_registry):
    """The toy method registered at run time."""
    return register_method(TOY)


def write_plugin(folder: Path, distribution: str, entries: dict[str, str], modules: dict[str, str]) -> Path:
    """A distribution ``distribution`` in ``folder`` with ``segloc.methods`` entry points ``{name: "module:object"}`` and module sources."""
    dist_info = folder / f"{distribution}-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (dist_info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}")
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
    return folder


def plugin_source(name: str, prior_use: str = "none") -> str:
    """A module defining ``METHOD``, a method named ``name`` (its build and localizer are the toy's)."""
    return f"""
        import toy_method

        class PluginMethod(toy_method.NearestImageMethod):
            name = {name!r}
            prior_use = {prior_use!r}

        METHOD = PluginMethod()
        """


# --- registration at run time ------------------------------------------------------------------


def test_register_and_unregister(fresh_registry):
    assert register_method(TOY) is TOY
    assert get_method("toy") is TOY
    assert "toy" in available_methods() and {"reference", "segloc"} <= set(available_methods())
    unregister_method("toy")
    with pytest.raises(SeglocError, match="unknown method 'toy'"):
        get_method("toy")
    unregister_method("toy")  # not registered: no error


def test_a_class_is_instantiated(fresh_registry):
    method = register_method(NearestImageMethod)
    assert isinstance(method, NearestImageMethod) and get_method("toy") is method


def test_duplicate_names_are_refused(toy):
    with pytest.raises(SeglocError, match="a method named 'toy' is registered already"):
        register_method(NearestImageMethod())
    replacement = register_method(NearestImageMethod(), replace=True)
    assert get_method("toy") is replacement is not toy


def test_built_in_names_are_refused_unless_replaced(fresh_registry, monkeypatch):
    class Impostor(NearestImageMethod):
        name = "reference"

    monkeypatch.setattr(registry, "_registered", {})  # the built-in not loaded yet: refused all the same
    with pytest.raises(SeglocError, match="'reference' is registered already .*built in"):
        register_method(Impostor)
    impostor = register_method(Impostor, replace=True)
    assert get_method("reference") is impostor
    unregister_method("reference")
    assert type(get_method("reference")).__module__ == "segloc.methods.reference"


def test_unknown_name_lists_the_available_methods(toy):
    with pytest.raises(SeglocError, match="unknown method 'magic'; available methods: ") as error:
        get_method("magic")
    assert {"reference", "segloc", "toy"} <= set(str(error.value).split(": ")[-1].split(", "))


def test_non_methods_are_refused(fresh_registry):
    class NotAMethod:
        name = "fake"

    for thing in (object(), NotAMethod, NotAMethod(), "toy_method:METHOD"):
        with pytest.raises(SeglocError, match="is not a segloc.methods.Method"):
            register_method(thing)
    assert "fake" not in available_methods()


def test_missing_class_attributes_are_refused(fresh_registry):
    hooks = {"build_map": NearestImageMethod.build_map, "load_localizer": NearestImageMethod.load_localizer}
    nameless = type("Nameless", (registry.Method,), hooks)
    with pytest.raises(SeglocError, match="lacks the class attribute 'name'"):
        register_method(nameless)
    undescribed = type("Undescribed", (registry.Method,), {**hooks, "name": "undescribed"})
    with pytest.raises(SeglocError, match="lacks the class attribute 'description'"):
        register_method(undescribed)
    assert "undescribed" not in available_methods()


def test_prior_use_is_checked(fresh_registry):
    class Sometimes(NearestImageMethod):
        prior_use = "sometimes"

    with pytest.raises(SeglocError, match="prior_use must be one of none, restricts, starts, got 'sometimes'"):
        register_method(Sometimes)
    assert TOY.prior_use in registry.PRIOR_USES
    assert get_method("reference").prior_use == "restricts" and get_method("segloc").prior_use == "starts"


def test_configs_are_strict(toy):
    assert toy.map_config({"thumbnail_size": 8}) == ToyMapConfig(thumbnail_size=8)
    assert toy.map_config() == ToyMapConfig() and toy.core_config(ToyMapConfig()) == ToyMapConfig().core
    with pytest.raises(SeglocError, match="map: unknown option.s. bogus; valid options are: core, thumbnail_size"):
        toy.map_config({"bogus": 1})
    with pytest.raises(SeglocError, match="localize.min_similarity: expected float"):
        toy.localize_config({"min_similarity": "high"})


# --- plug-ins ------------------------------------------------------------------------------------


def test_an_entry_point_plugin_is_found(fresh_registry, tmp_path, monkeypatch):
    write_plugin(tmp_path, "segloc_plugin_found", {"plugged": "plugged_method:METHOD"}, {"plugged_method": plugin_source("plugged")})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "plugged_method", raising=False)
    assert "plugged" in available_methods()
    method = get_method("plugged")
    assert type(method).__module__ == "plugged_method" and method.name == "plugged"
    sys.modules.pop("plugged_method", None)


def test_get_method_scans_the_plugins_by_itself(fresh_registry, tmp_path, monkeypatch):
    write_plugin(tmp_path, "segloc_plugin_direct", {"direct": "direct_method:METHOD"}, {"direct_method": plugin_source("direct")})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_method("direct").name == "direct"  # no available_methods() first
    sys.modules.pop("direct_method", None)


def test_a_broken_plugin_is_skipped_with_a_warning(fresh_registry, tmp_path, monkeypatch, caplog):
    write_plugin(
        tmp_path,
        "segloc_plugins_mixed",
        {
            "broken": "broken_method:METHOD",
            "missing": "no_such_module_anywhere:METHOD",
            "wrong": "wrong_method:METHOD",
            "badprior": "badprior_method:METHOD",
            "good": "good_method:METHOD",
        },
        {
            "broken_method": "raise RuntimeError('this plug-in is broken')\n",
            "wrong_method": "METHOD = 42\n",
            "badprior_method": plugin_source("badprior", prior_use="often"),
            "good_method": plugin_source("good"),
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="segloc"):
        names = available_methods()
    assert "good" in names and {"reference", "segloc"} <= set(names)
    assert not {"broken", "missing", "wrong", "badprior"} & set(names)
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "method plug-in broken (broken_method:METHOD) is unavailable: this plug-in is broken" in warnings
    assert "method plug-in missing" in warnings and "method plug-in wrong" in warnings and "is not a segloc.methods.Method" in warnings
    assert "prior_use must be one of" in warnings
    assert get_method("good").name == "good"
    with pytest.raises(SeglocError, match="unknown method 'broken'"):
        get_method("broken")
    for module in ("good_method", "badprior_method", "wrong_method"):
        sys.modules.pop(module, None)


def test_a_plugin_cannot_shadow_a_built_in(fresh_registry, tmp_path, monkeypatch):
    write_plugin(tmp_path, "segloc_plugin_shadow", {"reference": "shadow_method:METHOD"}, {"shadow_method": plugin_source("reference")})
    monkeypatch.syspath_prepend(str(tmp_path))
    available_methods()
    assert type(get_method("reference")).__module__ == "segloc.methods.reference"
    assert "shadow_method" not in sys.modules  # not even imported


def test_the_toy_entry_point_in_a_fresh_process(tmp_path):
    """write_entry_point makes the toy a plug-in that another process (the CLI, a ROS node) finds with no code of its own."""
    folder = write_entry_point(tmp_path / "plugins")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)}
    code = (
        "from segloc.methods import available_methods, get_method; m = get_method('toy'); "
        "print(m.name, type(m).__name__, m.prior_use, 'toy' in available_methods())"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["toy", "NearestImageMethod", "none", "True"]
    result = subprocess.run([sys.executable, "-m", "segloc.cli", "map", "build", "--help"], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "toy" in result.stdout.replace("\n", " ")
    # Without the folder on the path there is no toy.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "unknown method 'toy'" in result.stderr


def test_the_toy_entry_point_in_this_process(fresh_registry, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_entry_point(tmp_path)))
    assert get_method("toy") is toy_method.METHOD  # the shim reuses the module this test imported
    sys.modules.pop(toy_method.SHIM_MODULE, None)


# --- the toy method through the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A tiny room, mapping and queries in the same conditions (12 + 4 images, 160 x 120)."""
    root = tmp_path_factory.mktemp("toy_room")
    argv = ["-q", "synth", "-o", str(root / "room"), "--size", "160x120", "--num-mapping", "12", "--num-query", "4", "--condition", "same"]
    assert main([*argv, "--no-progress"]) == 0
    return root / "room"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_toy_through_the_cli(toy, room, tmp_path, capsys):
    from segloc.data.dataset import read_dataset
    from segloc.maps.package import MapPackage

    map_dir = tmp_path / "map"
    code, out, err = run_cli(capsys, "map", "build", str(room), "--method", "toy", "-o", str(map_dir), "--no-progress")
    assert code == 0, err
    assert f"built toy map {map_dir}" in out
    package = MapPackage.open(map_dir)  # manifest and checksums valid
    assert package.method == "toy" and set(package.layers) == {"core", "toy"}
    assert package.read_arrays("toy", "thumbnails")["thumbnails"].shape == (12, 16)

    code, out, err = run_cli(capsys, "map", "info", str(map_dir))
    assert code == 0, err
    assert "method toy" in out and "layer toy" in out and "layer core" in out

    # evaluate: the method comes from the map's manifest.
    code, out, err = run_cli(capsys, "evaluate", str(map_dir), str(room), "-o", str(tmp_path / "eval"), "--no-progress")
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["method"] == "toy" and metrics["num_queries"] == metrics["num_localized"] == 4
    assert set(metrics["recall"]) == {"0.25m_2deg", "0.5m_5deg", "5m_10deg", "5cm_5deg"}
    assert set(metrics["time_per_stage_s"]) == {"ingest", "describe", "retrieve"}  # the robot's pipeline: camera ingest first
    assert metrics["map_bytes"] == package.bytes()
    # A pose of a mapping image: coarse, but near the queries of a same-condition scene (measured: 3 of 4 within 0.5 m, 5 deg).
    assert metrics["recall"]["0.5m_5deg"] >= 0.5 and metrics["recall"]["5m_10deg"] >= 0.5
    assert metrics["recall"]["5cm_5deg"] <= metrics["recall"]["0.5m_5deg"]
    assert (tmp_path / "eval" / "per_query.json").is_file()

    # localize: the mapping images find themselves, exactly.
    poses = tmp_path / "poses.txt"
    code, out, err = run_cli(capsys, "localize", str(map_dir), "--dataset", str(room), "--split", "mapping", "-o", str(poses))
    assert code == 0, err
    assert "localized 12 of 12 images" in out
    estimated = read_dataset(room).mapping
    lines = [line.split() for line in poses.read_text().splitlines() if not line.startswith("#")]
    assert [fields[0] for fields in lines] == [record.name for record in estimated]
    for fields, record in zip(lines, estimated):
        assert np.allclose([float(v) for v in fields[5:8]], record.cam_from_world.translation, atol=1e-6)

    code, out, err = run_cli(capsys, "localize", str(map_dir), "--dataset", str(room), "-o", str(tmp_path / "queries.txt"))
    assert code == 0, err
    assert "localized 4 of 4 images" in out and len((tmp_path / "queries.txt").read_text().splitlines()) == 5


def test_the_toy_config_through_the_cli(toy, room, tmp_path, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text("map:\n  thumbnail_size: 8\nlocalize:\n  min_similarity: 1.5\n")
    code, _, err = run_cli(capsys, "map", "build", str(room), "--method", "toy", "-o", str(tmp_path / "map"), "--config", str(config))
    assert code == 0, err
    assert json.loads((tmp_path / "map" / "manifest.json").read_text())["created"]["config"]["thumbnail_size"] == 8
    # No similarity reaches 1.5: every query fails, with the localizer's reason.
    code, out, err = run_cli(capsys, "evaluate", str(tmp_path / "map"), str(room), "-o", str(tmp_path / "eval"), "--config", str(config))
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_localized"] == 0 and "no similar mapping image" in json.dumps(metrics["failure_reasons"])

    config.write_text("map:\n  thumbnail: 8\n")
    code, _, err = run_cli(capsys, "map", "build", str(room), "--method", "toy", "-o", str(tmp_path / "map2"), "--config", str(config))
    assert code == 1 and "map: unknown option(s) thumbnail; valid options are: core, thumbnail_size" in err


def test_the_demo_compares_the_toy_with_the_reference(toy, tmp_path, capsys):
    """``segloc demo --method toy,reference`` on a small rendering of the demo room (150 + 50 images at 160 x 120, 4 queries)."""
    out_dir = tmp_path / "demo"
    argv = ["demo", "-o", str(out_dir), "--method", "toy,reference", "--size", "160x120", "--condition", "same", "--limit", "4"]
    code, out, err = run_cli(capsys, *argv, "--no-progress")
    assert code == 0, err
    rows = json.loads((out_dir / "comparison.json").read_text())
    assert list(rows) == ["toy", "reference"] and "side by side" in out
    assert rows["toy"]["method"] == "toy" and rows["toy"]["num_queries"] == 4
    assert rows["toy"]["recall"]["5m_10deg"] >= 0.5  # measured: 4 of 4
    assert rows["reference"]["recall"]["0.25m_2deg"] >= rows["toy"]["recall"]["0.25m_2deg"]
    # The two maps' core options are equal: one core build serves both.
    assert "building the map geometry the maps share" in out
    manifests = [json.loads((out_dir / f"map_{name}" / "manifest.json").read_text()) for name in ("toy", "reference")]
    assert manifests[0]["method"] == "toy" and manifests[1]["method"] == "reference"
    assert manifests[0]["files"]["core/points3D.npz"] == manifests[1]["files"]["core/points3D.npz"]
