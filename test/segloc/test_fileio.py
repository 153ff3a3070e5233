"""Writing an output loses nothing: check_output's rules, and folders with the usual permissions."""

import os

import pytest

from segloc.errors import SeglocError
from segloc.fileio import check_output, describe_missing, temp_dir_beside


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_ours(path) -> bool:
    return (path / "ours.txt").is_file()


@pytest.fixture
def tree(tmp_path):
    """tmp/inputs/dataset/images/a.png, tmp/ours (replaceable), tmp/other (not), tmp/empty, tmp/file.txt."""
    (tmp_path / "inputs" / "dataset" / "images").mkdir(parents=True)
    (tmp_path / "inputs" / "dataset" / "images" / "a.png").write_bytes(b"png")
    for name, marker in (("ours", "ours.txt"), ("other", "notes.txt")):
        (tmp_path / name).mkdir()
        (tmp_path / name / marker).write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    return tmp_path


@pytest.mark.parametrize(
    "output, kind, overwrite, message",
    [
        ("inputs/dataset", "replace", True, "is the dataset folder .*, an input of this command"),
        ("inputs", "replace", True, "replacing map .*inputs would delete the dataset folder"),
        ("inputs/dataset/images", "replace", True, "exists inside the dataset folder"),
        ("inputs/dataset/images", "folder", False, "exists inside the dataset folder"),
        ("inputs/dataset/images/a.png", "file", False, "exists inside the dataset folder"),
        ("ours", "replace", False, "exists already; pass --overwrite"),
        ("other", "replace", True, "is not a map: --overwrite only replaces a map"),
        ("file.txt", "replace", True, "exists and is not a folder"),
        ("file.txt", "folder", False, "exists and is not a folder"),
        ("ours", "file", False, "is a folder: give the path of a file"),
    ],
)
def test_refusals(tree, output, kind, overwrite, message):
    inputs = [(tree / "inputs" / "dataset", "the dataset folder")]
    with pytest.raises(SeglocError, match=message):
        check_output(tree / output, kind, inputs=inputs, overwrite=overwrite, replaceable=is_ours, what="map")


@pytest.mark.parametrize(
    "output, kind, overwrite",
    [
        ("new", "replace", False),
        ("inputs/dataset/new_map", "replace", False),  # a new output changes nothing the command reads
        ("inputs/dataset/poses.txt", "file", False),
        ("ours", "replace", True),
        ("empty", "replace", True),  # nothing to lose
        ("inputs", "folder", False),  # a report beside the inputs deletes nothing
        ("file.txt", "file", False),
    ],
)
def test_allowed(tree, output, kind, overwrite):
    inputs = [(tree / "inputs" / "dataset", "the dataset folder"), (None, "skipped")]
    assert check_output(tree / output, kind, inputs=inputs, overwrite=overwrite, replaceable=is_ours) == tree / output


def test_symbolic_links_are_followed(tree):
    (tree / "link").symlink_to(tree / "inputs" / "dataset")
    with pytest.raises(SeglocError, match="is the dataset folder"):
        check_output(tree / "link", "replace", inputs=[(tree / "inputs" / "dataset", "the dataset folder")], overwrite=True)


def test_temp_dir_beside_has_the_usual_permissions(tmp_path):
    folder = temp_dir_beside(tmp_path / "deep" / "map", "new")
    assert folder.parent == tmp_path / "deep" and folder.name.startswith(".map.new.")
    assert folder.is_dir() and not any(folder.iterdir())
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask()


def test_describe_missing(tmp_path):
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "broken").symlink_to(tmp_path / "gone")
    assert describe_missing(tmp_path) == ""
    assert describe_missing(tmp_path / "nothing") == "does not exist"
    assert describe_missing(tmp_path / "loop1") == "is a symbolic link loop"
    assert describe_missing(tmp_path / "broken").startswith("is a broken symbolic link")


def test_checkpoints_and_tensor_files_have_the_usual_permissions(tmp_path):
    """safetensors writes through a private temporary file (0600); what segloc writes is 0666 & ~umask."""
    import torch

    from segloc.models import SegmentationNet, save_checkpoint, segmentation_config
    from segloc_train.checkpointing import write_tensors

    config = segmentation_config(
        "cpu", pretrained=False, num_classes=4, feature_dim=8, decoder_channels=(16, 16, 16, 16), head_hidden_dim=8
    )
    checkpoint = save_checkpoint(SegmentationNet(config), tmp_path / "checkpoint")
    write_tensors(tmp_path / "prototypes.safetensors", {"prototypes": torch.zeros(4, 8)})
    for path in (*checkpoint.iterdir(), tmp_path / "prototypes.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask(), path
