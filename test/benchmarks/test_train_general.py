"""benchmarks/train_general.py on a tiny configuration: two small synthetic places (one under two
conditions), a tiny network, two steps; it prints and writes its JSON summary and a checkpoint."""

import json

import yaml

from segloc.models.checkpoint import read_checkpoint_info

TINY_TRAIN = {
    "network": {"pretrained": False, "num_classes": 8, "feature_dim": 32, "decoder_channels": [32, 32, 32, 32], "head_hidden_dim": 32},
    "augment": {"resize_max_edge": 160},
    "loss": {"num_correspondences": 128},
    "max_correspondences": 256,
    "prototype_images": 6,
    "prototype_features_per_image": 64,
}


def test_trains_one_network_on_several_places_and_conditions(tmp_path, capsys, load_benchmark):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"train": TINY_TRAIN}))
    argv = ["-o", str(tmp_path / "out"), "--scenes", "room", "--seeds", "3", "4", "--conditions", "day", "night"]
    argv += [
        "--num-mapping",
        "12",
        "--mapping-laps",
        "0.25",
        "--size",
        "160x120",
        "--real",
        "--config",
        str(config),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
    ]
    argv += ["--threads", "1", "--no-progress"]
    summary = load_benchmark("train_general").main(argv)
    assert summary["places"] == 2 and summary["datasets"] == 4
    assert len(summary["epochs"]) == 1 and summary["epochs"][0]["steps"] == 2
    assert 1 <= summary["classes_used"] <= 8
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    metadata = read_checkpoint_info(summary["checkpoint"]).metadata
    assert len(metadata["dataset"]) == 2 and len(metadata["condition_variants"]) == 2
