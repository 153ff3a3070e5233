"""The table builder and argument handling of benchmarks/segloc_conditions.py (no map is built)."""

import pytest


@pytest.fixture(scope="module")
def conditions(load_benchmark):
    return load_benchmark("segloc_conditions")


def summary(recall: list[float], num_queries: int = 10, t: float | None = 0.05, r: float | None = 0.5, seconds: float = 0.3) -> dict:
    keys = ("0.25m_2deg", "0.5m_5deg", "5m_10deg", "5cm_5deg")
    return {
        "recall": dict(zip(keys, recall)),
        "num_queries": num_queries,
        "median_translation_m": t,
        "median_rotation_deg": r,
        "time_per_query_s": seconds,
    }


def test_markdown_tables_count_queries_and_mark_the_best(conditions):
    rows = [
        {
            "scene": "castle",
            "condition": "day",
            "methods": {"SegLoc a": summary([0.8, 0.9, 1.0, 0.1]), "reference": summary([1.0] * 4, t=0.007)},
        },
        {
            "scene": "castle",
            "condition": "night",
            "methods": {"SegLoc a": summary([0.3, 0.4, 0.5, 0.0], t=2.5), "reference": summary([0.0] * 4, t=None, r=None)},
        },
    ]
    text = conditions.markdown_tables(rows)
    lines = text.splitlines()
    assert "| scene | condition | SegLoc a | reference |" in lines
    assert "| castle | day | 8/10 | **10/10** |" in lines
    assert "| castle | night | **3/10** | 0/10 |" in lines
    assert "| castle | day | reference | 10/10 | 10/10 | 10/10 | 10/10 | 7 mm, 0.50° | 0.30 s |" in lines
    assert "| castle | night | SegLoc a | 3/10 | 4/10 | 5/10 | 0/10 | 2.50 m, 0.50° | 0.30 s |" in lines
    assert "| castle | night | reference | 0/10 | 0/10 | 0/10 | 0/10 | - | 0.30 s |" in lines


def test_markdown_tables_leave_a_missing_method_blank(conditions):
    rows = [
        {"scene": "room", "condition": "season", "methods": {"reference": summary([0.0] * 4)}},
        {"scene": "room", "condition": "night", "methods": {"SegLoc b": summary([0.5] * 4)}},
    ]
    lines = conditions.markdown_tables(rows).splitlines()
    assert "| room | season | 0/10 | - |" in lines  # no best when every method localized none
    assert "| room | night | - | **5/10** |" in lines


def test_checkpoints_default_to_the_shipped_networks_and_unknown_names_fail(conditions, tmp_path):
    from segloc.models import SegmentationNet, segmentation_config
    from segloc.models.checkpoint import read_checkpoint_info, save_checkpoint

    shipped = conditions.resolve_checkpoints([])
    assert shipped and all((path / "manifest.json").is_file() for path in shipped.values())
    assert {read_checkpoint_info(path).model for path in shipped.values()} == {"segmentation"}  # no landmark network
    tiny = segmentation_config("cpu", pretrained=False, num_classes=4, feature_dim=8, decoder_channels=(16, 16, 16, 16), head_hidden_dim=8)
    run = save_checkpoint(SegmentationNet(tiny), tmp_path / "run_castle" / "checkpoint")
    assert conditions.resolve_checkpoints([str(run)]) == {"SegLoc run_castle": run.resolve()}
    name = next(iter(shipped.values())).name
    assert list(conditions.resolve_checkpoints([name]).values()) == [shipped[f"SegLoc {name}"]]
    with pytest.raises(SystemExit, match="neither a checkpoint folder nor a shipped network"):
        conditions.resolve_checkpoints(["no_such_network"])


def test_bad_arguments_fail_before_any_work(conditions, tmp_path, capsys):
    with pytest.raises(SystemExit):
        conditions.parse_args(["--no-real", "--no-synthetic", "--work", str(tmp_path)])
    assert "nothing to measure" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        conditions.parse_args(["--dataset", str(tmp_path), "--no-synthetic"])
    assert "not a dataset folder" in capsys.readouterr().err
