"""The SegLoc trainer and `segloc train segloc` on a tiny synthetic room (12 mapping images, 160x120)."""

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from segloc.config import config_to_dict
from segloc.data import synthetic
from segloc.data.dataset import read_dataset, write_dataset
from segloc.errors import SeglocError
from segloc.models.checkpoint import GENERAL_CHECKPOINT, load_checkpoint, read_checkpoint_info, save_checkpoint
from segloc.models.segmentation import SegmentationNet, segmentation_config
from segloc_train.augment import AugmentConfig
from segloc_train.checkpointing import read_tensors, read_training_state
from segloc_train.cli import add_train_parser
from segloc_train.segloc.train_segloc import (
    SegLocTrainConfig,
    group_condition_variants,
    load_train_config,
    resolve_image_size,
    resolve_init_checkpoint,
    train_config,
    train_config_from_dict,
    train_segloc,
    write_train_config,
)

NUM_CLASSES, FEATURE_DIM = 8, 32

# A tiny network (random encoder, narrow decoder) and few, small steps: seconds per run.
TINY = {
    "network": {
        "pretrained": False,
        "num_classes": NUM_CLASSES,
        "feature_dim": FEATURE_DIM,
        "decoder_channels": [32, 32, 32, 32],
        "head_hidden_dim": 32,
    },
    "augment": {"resize_max_edge": 160},
    "loss": {"num_correspondences": 128},
    "max_correspondences": 256,
    "epochs": 1,
    "steps_per_epoch": 2,
    "prototype_images": 6,
    "prototype_features_per_image": 64,
    "threads": 1,
}


def tiny_config(**overrides) -> SegLocTrainConfig:
    values = {**TINY, **overrides}
    return train_config("cpu_demo", **values)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The dataset folder and a reference map built from it (its core gives the pairs)."""
    from segloc.methods.reference.layer import build_reference_map

    config = synthetic.synth_config("room", "same", num_mapping=12, num_query=2, width=160, height=120, seed=3, mapping_laps=0.25)
    root = synthetic.generate_scene(config, tmp_path_factory.mktemp("room") / "dataset", progress=False)
    map_dir = build_reference_map(read_dataset(root), tmp_path_factory.mktemp("map") / "map", progress=False)
    return root, map_dir


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="segloc")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_presets_and_strict_config(tmp_path):
    demo, paper = train_config("cpu_demo"), train_config("paper")
    assert demo == SegLocTrainConfig()
    for config in (demo, paper):
        assert config.learning_rate == 2e-3 and config.weight_decay == 1e-4 and config.network.num_classes == 100
        assert config.prototype_init == "kmeans"
    assert paper.network.encoder == "efficientnet_lite2" and paper.device == "cuda" and paper.pairs.max_relative_rotation_deg == 25
    # Nested overrides merge into the preset; unknown keys are errors that list the valid ones.
    assert train_config("paper", network={"num_classes": 20}).network.encoder == "efficientnet_lite2"
    with pytest.raises(SeglocError, match="unknown option.*bogus.*valid options"):
        train_config(bogus=1)
    with pytest.raises(SeglocError, match=r"network: unknown option.*colour"):
        train_config(network={"colour": 3})
    with pytest.raises(SeglocError, match="unknown preset 'gpu'.*cpu_demo, paper"):
        train_config("gpu")
    with pytest.raises(SeglocError, match="multiples of 32.*160, 128"):
        train_config(augment={"output_size": [160, 120]})
    with pytest.raises(SeglocError, match="prototype_init"):
        train_config(prototype_init="dbscan")
    # config.yaml round trip; a file without a train section says so.
    path = write_train_config(tmp_path / "config.yaml", tiny_config())
    assert load_train_config(path) == tiny_config()
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"map": {}}))
    with pytest.raises(SeglocError, match="no 'train' section"):
        load_train_config(tmp_path / "other.yaml")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    with pytest.raises(SeglocError, match="typo.yaml: train: unknown option.*epochz"):
        load_train_config(tmp_path / "typo.yaml")


def test_cli_one_epoch_writes_every_output(scene, tmp_path, capsys):
    root, _ = scene
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump({"train": {"preset": "cpu_demo", **TINY, "epochs": 5}}))
    out = tmp_path / "run"
    # No --map: the core is built from the dataset here.
    assert run_cli(["train", "segloc", str(root), "-o", str(out), "--config", str(config_file), "--epochs", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1: loss " in printed and f"wrote checkpoint {out / 'checkpoint'}" in printed

    for name in ("checkpoint/manifest.json", "config.yaml", "losses.json", "loss_curves.png", "prototypes.safetensors"):
        assert (out / name).is_file(), name
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = load_train_config(out / "config.yaml")
    assert saved.epochs == 1 and saved.augment.output_size == (160, 128)  # resolved: multiples of 32
    assert config_to_dict(saved.network) == config_to_dict(tiny_config().network)
    losses = json.loads((out / "losses.json").read_text())
    assert [record["step"] for record in losses["steps"]] == [0, 1] and len(losses["epochs"]) == 1
    assert set(losses["epochs"][0]) >= {"total", "ce", "cc", "pc", "pf", "ms", "seconds", "steps"}
    tensors = read_tensors(out / "prototypes.safetensors")
    assert tensors["prototypes"].shape == (NUM_CLASSES, FEATURE_DIM) and tensors["concentrations"].shape == (NUM_CLASSES,)
    assert tensors["global_descriptors"].shape == (12, NUM_CLASSES * 5)

    info = read_checkpoint_info(out / "checkpoint")
    assert info.metadata["epoch"] == 1 and info.metadata["steps"] == 2 and info.metadata["image_size"] == [160, 128]
    network = load_checkpoint(out / "checkpoint", expected={"num_classes": NUM_CLASSES})
    with torch.no_grad():
        output = network(torch.rand(1, 3, 128, 160))
    assert [tuple(level.shape) for level in output.logits] == [
        (1, NUM_CLASSES, 4, 5),
        (1, NUM_CLASSES, 8, 10),
        (1, 8, 16, 20),
        (1, 8, 32, 40),
    ]
    state = read_training_state(out)
    assert state.epochs_done == 1 and state.steps_done == 2 and state.stopped == "completed"

    # Training into the same folder again without --resume is refused.
    with pytest.raises(SeglocError, match="already holds a training run; pass --resume"):
        run_cli(["train", "segloc", str(root), "-o", str(out), "--config", str(config_file), "--no-progress"])


@pytest.mark.slow
def test_total_loss_decreases(scene, tmp_path):
    root, map_dir = scene
    # No augmentation randomness: the loss changes only because the network learns.
    still = {"crop_scale": [1.0, 1.0], "rescale": [1.0, 1.0], "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    still |= {"blur_probability": 0.0, "greyscale_probability": 0.0, "noise_probability": 0.0, "resize_max_edge": 160}
    config = tiny_config(augment=still, epochs=3, steps_per_epoch=4, checkpoint_every=3)
    train_segloc(root, tmp_path / "run", config, core_map=map_dir, progress=False)
    losses = json.loads((tmp_path / "run" / "losses.json").read_text())
    totals = [record["total"] for record in losses["epochs"]]
    assert len(totals) == 3 and totals[-1] < totals[0], totals
    steps = [record["total"] for record in losses["steps"]]
    assert sum(steps[-3:]) < sum(steps[:3]), steps


@pytest.mark.slow
def test_resume_continues_and_reproduces_the_uninterrupted_run(scene, tmp_path):
    root, map_dir = scene
    config = tiny_config(epochs=2)
    straight = train_segloc(root, tmp_path / "straight", config, core_map=map_dir, progress=False)

    train_segloc(root, tmp_path / "split", tiny_config(epochs=1), core_map=map_dir, progress=False)
    assert read_training_state(tmp_path / "split").epochs_done == 1
    seen = []
    resumed = train_segloc(root, tmp_path / "split", config, core_map=map_dir, resume=True, progress=False, on_epoch=seen.append)
    assert [summary["epoch"] for summary in seen] == [2]  # only the missing epoch ran
    state = read_training_state(tmp_path / "split")
    assert state.epochs_done == 2 and state.steps_done == 4
    losses = json.loads((tmp_path / "split" / "losses.json").read_text())
    assert [record["step"] for record in losses["steps"]] == [0, 1, 2, 3] and [r["epoch"] for r in losses["epochs"]] == [0, 1]

    # The resumed run loaded the optimizer state: weights and Adam moments match the straight run.
    weights_straight = load_checkpoint(straight).state_dict()
    weights_resumed = load_checkpoint(resumed).state_dict()
    for key, value in weights_straight.items():
        torch.testing.assert_close(weights_resumed[key], value, rtol=1e-5, atol=1e-6, msg=key)
    optimizer_straight = torch.load(tmp_path / "straight" / "resume" / "optimizer.pt", weights_only=True)
    optimizer_resumed = torch.load(tmp_path / "split" / "resume" / "optimizer.pt", weights_only=True)
    assert optimizer_resumed["state"][0]["step"] == optimizer_straight["state"][0]["step"] == 4
    for index, moments in optimizer_straight["state"].items():
        torch.testing.assert_close(optimizer_resumed["state"][index]["exp_avg_sq"], moments["exp_avg_sq"], rtol=1e-4, atol=1e-9)

    # Resuming a finished run does nothing; the CLI resumes with the run's own config.yaml.
    assert train_segloc(root, tmp_path / "split", None, core_map=map_dir, resume=True, progress=False) == resumed
    assert read_training_state(tmp_path / "split").steps_done == 4
    with pytest.raises(SeglocError, match="nothing to resume"):
        train_segloc(root, tmp_path / "empty", config, core_map=map_dir, resume=True, progress=False)
    with pytest.raises(SeglocError, match="network config differs"):
        train_segloc(root, tmp_path / "split", tiny_config(epochs=3, network={"num_classes": 6}), core_map=map_dir, resume=True)


def test_time_budget_stops_cleanly(scene, tmp_path):
    root, map_dir = scene
    summaries = []
    train_segloc(
        root, tmp_path / "run", tiny_config(epochs=5, time_budget_s=1e-3), core_map=map_dir, progress=False, on_epoch=summaries.append
    )
    assert len(summaries) == 1 and summaries[0]["steps"] == 1 and summaries[0]["stopped"] == "time_budget"
    state = read_training_state(tmp_path / "run")
    assert state.epochs_done == 1 and state.stopped == "time_budget"
    assert read_checkpoint_info(tmp_path / "run" / "checkpoint").metadata["stopped"] == "time_budget"


def test_meta_class_prototypes_from_a_semantic_model(scene, tmp_path, caplog):
    root, map_dir = scene
    semantic = SegmentationNet(segmentation_config("cpu", pretrained=False, num_classes=3, decoder_channels=[16, 16, 16, 16]))
    save_checkpoint(semantic.eval(), tmp_path / "semantic")
    config = tiny_config(semantic_checkpoint=str(tmp_path / "semantic"), steps_per_epoch=1)
    with caplog.at_level("INFO", logger="segloc"):
        train_segloc(root, tmp_path / "run", config, core_map=map_dir, progress=False)
    assert "prototypes per meta-class" in caplog.text
    assert read_tensors(tmp_path / "run" / "prototypes.safetensors")["prototypes"].shape == (NUM_CLASSES, FEATURE_DIM)


def test_initial_weights_from_another_checkpoint(scene, tmp_path, caplog):
    root, map_dir = scene
    config = tiny_config(steps_per_epoch=1)
    source = SegmentationNet(config.network)
    save_checkpoint(source.eval(), tmp_path / "other_scene")
    with caplog.at_level("INFO", logger="segloc"):
        train_segloc(
            root, tmp_path / "run", tiny_config(steps_per_epoch=1, init_checkpoint=str(tmp_path / "other_scene")), map_dir, progress=False
        )
    assert "initial weights from" in caplog.text
    # One Adam step moves every trained weight a little: the run started from the source weights.
    trained = load_checkpoint(tmp_path / "run" / "checkpoint").state_dict()
    start = source.state_dict()
    moved = [float((trained[k] - start[k]).abs().max()) for k in start if start[k].is_floating_point() and "running" not in k]
    assert max(moved) < 0.05
    other = SegmentationNet(segmentation_config("cpu", pretrained=False, num_classes=3, decoder_channels=[16, 16, 16, 16]))
    save_checkpoint(other.eval(), tmp_path / "other_config")
    with pytest.raises(SeglocError, match="num_classes|decoder_channels"):
        train_segloc(root, tmp_path / "run2", tiny_config(init_checkpoint=str(tmp_path / "other_config")), map_dir, progress=False)


def test_pseudo_targets_come_from_the_clean_views(scene):
    """The reference network sees images A and B before their photometric augmentation."""
    from segloc.maps.core import read_core
    from segloc.maps.package import MapPackage
    from segloc_train.dataset import SegLocTrainingSet, collate_pairs
    from segloc_train.pairs import mine_pairs
    from segloc_train.segloc.train_segloc import training_step

    root, map_dir = scene
    config = tiny_config(augment={"resize_max_edge": 160, "blur_probability": 1.0, "noise_probability": 1.0})
    core = read_core(MapPackage.open(map_dir))
    pairs = mine_pairs(core, progress=False)[:2]
    model = SegmentationNet(config.network)
    prototypes = torch.nn.functional.normalize(torch.randn(NUM_CLASSES, FEATURE_DIM, generator=torch.Generator().manual_seed(0)), dim=1)
    concentrations = torch.full((NUM_CLASSES,), 0.1)

    class Spy(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.inputs = net, []

        def forward(self, images):
            self.inputs.append(images.clone())
            return self.net(images)

    for clean in (True, False):
        training_set = SegLocTrainingSet(
            root, core, pairs, resolve_image_size(config, core).augment, config.max_correspondences, clean_views=clean
        )
        batch = collate_pairs([training_set[0], training_set[1]])
        reference = Spy(SegmentationNet(config.network).eval())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        terms = training_step(model, optimizer, batch, reference, prototypes, concentrations, None, True, config)
        assert torch.isfinite(torch.tensor(terms["total"]))
        (seen,) = reference.inputs
        expected = torch.cat([batch["clean_a"], batch["clean_b"]]) if clean else torch.cat([batch["image_a"], batch["image_b"]])
        torch.testing.assert_close(seen, expected)
        if clean:
            assert (seen - torch.cat([batch["image_a"], batch["image_b"]])).abs().mean() > 0.01


def test_a_partial_section_keeps_the_trainer_defaults_for_the_rest():
    config = train_config_from_dict({"augment": {"blur_probability": 0.5}, "network": {"num_classes": 50}})
    assert config.augment.blur_probability == 0.5
    assert config.augment.resize_max_edge == SegLocTrainConfig().augment.resize_max_edge == 320  # not AugmentConfig's 512
    assert config.network.num_classes == 50 and config.network.feature_dim == SegLocTrainConfig().network.feature_dim
    assert train_config_from_dict({"preset": "paper", "augment": {"blur_probability": 0.5}}).augment.resize_max_edge == 1024


def test_bad_inputs(scene, tmp_path):
    root, map_dir = scene
    # One mapping image: no pairs possible.
    dataset = read_dataset(root)
    single = write_dataset(tmp_path / "single", dataset.mapping[:1], [], source_image_dir=root / "images")
    with pytest.raises(SeglocError, match="1 mapping image.*needs pairs of overlapping mapping images"):
        train_segloc(single, tmp_path / "out", tiny_config(), progress=False)
    # Pair criteria nothing meets: the message says what to relax.
    strict = tiny_config(pairs={"min_correspondences": 100000, "min_correspondences_floor": 100000})
    with pytest.raises(SeglocError, match="no training pairs.*relax train.pairs"):
        train_segloc(root, tmp_path / "out", strict, core_map=map_dir, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(SeglocError, match="CUDA is not available.*--device cpu"):
            train_segloc(root, tmp_path / "out", tiny_config(device="cuda"), core_map=map_dir, progress=False)
    with pytest.raises(SeglocError, match="is not a segloc map"):
        train_segloc(root, tmp_path / "out", tiny_config(), core_map=tmp_path, progress=False)


CASTLE = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "strecha_castle"


@pytest.mark.slow
@pytest.mark.skipif(not CASTLE.is_dir(), reason="../shared/data/strecha_castle is not beside this checkout")
def test_real_scene_training_keeps_the_classes_in_use(tmp_path):
    """A short training on 12 castle images (512 px, K=100, the default network, hard Sinkhorn targets)
    keeps classes in use: at least 6 of the 100 classes each hold a tenth of a uniform share of the
    pixels after each of two short epochs (measured: 17 then 10, perplexity 10 then 6.5), and the
    label histogram's perplexity stays >= 3. A collapse, as the issue saw on a real 30-image scene,
    leaves about 4 (docs/experiments/segloc_training.md). The floor guards against that collapse,
    not against the slower decline that longer castle runs still show."""
    dataset = read_dataset(CASTLE)
    records = dataset.mapping[:12]
    images = {record.name: cv2.resize(dataset.load_image(record.name), (512, 342), interpolation=cv2.INTER_AREA) for record in records}
    small = [dataclasses.replace(record, camera=record.camera.scaled(512, 342)) for record in records]
    root = write_dataset(tmp_path / "castle", small, [], images=images)
    config = train_config(
        "cpu_demo",
        targets="sinkhorn",
        sinkhorn_hard=True,
        augment={"resize_max_edge": 256},
        pairs={"min_bbox_overlap": 0.5},
        epochs=2,
        steps_per_epoch=3,
        prototype_features_per_image=128,
        threads=2,
    )
    summaries = []
    train_segloc(root, tmp_path / "run", config, progress=False, on_epoch=summaries.append)
    assert [s["classes_used"] for s in summaries] and all(s["classes_used"] >= 6 for s in summaries), summaries
    history = json.loads((tmp_path / "run" / "losses.json").read_text())
    assert all(epoch["class_perplexity"] >= 3 for epoch in history["epochs"])
    assert read_checkpoint_info(tmp_path / "run" / "checkpoint").metadata["classes_used"] >= 6


def test_several_datasets_and_condition_variants(scene, tmp_path, caplog):
    root, _ = scene
    # The same poses under night light: a condition variant, paired across conditions.
    night = synthetic.synth_config(
        "room", "same", num_mapping=12, num_query=2, width=160, height=120, seed=3, mapping_laps=0.25, mapping_appearance="night"
    )
    night_root = synthetic.generate_scene(night, tmp_path / "night", progress=False)
    other = synthetic.synth_config("room", "same", num_mapping=12, num_query=2, width=160, height=120, seed=5, mapping_laps=0.25)
    other_root = synthetic.generate_scene(other, tmp_path / "other", progress=False)
    assert group_condition_variants([root, night_root, other_root]) == [(root, [night_root]), (other_root, [])]
    with caplog.at_level("INFO", logger="segloc"):
        assert run_cli(["train", "segloc", str(root), str(night_root), str(other_root), "-o", str(tmp_path / "run"), "--no-progress",
                        "--config", str(write_tiny_config(tmp_path))]) == 0  # fmt: skip
    assert "condition variants" in caplog.text
    metadata = read_checkpoint_info(tmp_path / "run" / "checkpoint").metadata
    assert metadata["dataset"] == [str(root), str(other_root)] and metadata["condition_variants"] == [str(night_root)]
    # One global descriptor per mapping image of both places.
    assert read_tensors(tmp_path / "run" / "prototypes.safetensors")["global_descriptors"].shape[0] == 24
    with pytest.raises(SeglocError, match="one place"):
        train_segloc([root, other_root], tmp_path / "run2", tiny_config(), core_map=scene[1], progress=False)


def test_variant_images_are_augmented_with_the_clean_view_of_the_reference_condition(scene, tmp_path):
    from segloc_train.dataset import SegLocTrainingSet
    from segloc_train.pairs import mine_pairs

    root, map_dir = scene
    variant = tmp_path / "dark"
    dataset = read_dataset(root)
    dark = {r.name: (dataset.load_image(r.name) // 4).astype("uint8") for r in dataset.mapping}
    write_dataset(variant, dataset.mapping, [], images=dark)
    from segloc.maps.core import read_core
    from segloc.maps.package import MapPackage

    core = read_core(MapPackage.open(map_dir))
    pairs = mine_pairs(core, tiny_config().pairs, progress=False)
    still = {**{k: 0.0 for k in ("brightness", "contrast", "saturation", "hue")}, "blur_probability": 0.0, "greyscale_probability": 0.0,
             "noise_probability": 0.0, "motion_blur_probability": 0.0, "low_light_probability": 0.0}  # fmt: skip
    augment = AugmentConfig(resize_max_edge=160, output_size=(160, 128), **still)
    training_set = SegLocTrainingSet(root, core, pairs, augment, 64, clean_views=True, variant_roots=[variant])
    darker = 0
    for index in range(min(len(training_set), 6)):
        sample = training_set[index]
        for side in "ab":
            image, clean = sample[f"image_{side}"], sample[f"clean_{side}"]
            if float(image.mean()) < 0.5 * float(clean.mean()):
                darker += 1  # drawn from the variant: its clean view is the bright reference image
            else:
                torch.testing.assert_close(image, clean)
    assert darker > 0


def test_init_names_resolve_through_the_shipped_registry(tmp_path):
    from segloc.models.checkpoint import SHIPPED_CHECKPOINTS

    name = next(iter(SHIPPED_CHECKPOINTS))
    assert resolve_init_checkpoint(name).name == name
    assert resolve_init_checkpoint(tmp_path) == tmp_path
    if GENERAL_CHECKPOINT not in SHIPPED_CHECKPOINTS:
        with pytest.raises(SeglocError, match="not shipped"):
            resolve_init_checkpoint("general")
    else:
        assert resolve_init_checkpoint("general").name == GENERAL_CHECKPOINT
    with pytest.raises(SeglocError, match="neither"):
        resolve_init_checkpoint(str(tmp_path / "missing"))


def write_tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"train": {**TINY, "steps_per_epoch": 2}}))
    return path
