"""Training of SegLoc's segmentation network (``segloc train segloc``).

- :mod:`~segloc_train.segloc.train_segloc`: the trainer (config, presets, the loop, checkpoints);
- :mod:`~segloc_train.segloc.losses`: the five-term loss;
- :mod:`~segloc_train.segloc.prototypes`: the class prototypes (k-means initialisation, targets).

Shared loop pieces sit beside this package (:mod:`segloc_train.augment`,
:mod:`segloc_train.checkpointing`, :mod:`segloc_train.pairs`, :mod:`segloc_train.mining`,
:mod:`segloc_train.dataset`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["train_for_demo"]


def train_for_demo(dataset_dir: str | Path, output_dir: str | Path, *, epochs: int, progress: bool = True) -> Path:
    """The ``segloc.trainers`` entry of SegLoc: the ``cpu_demo`` preset for ``epochs`` epochs, resuming a run left in ``output_dir``.

    Returns:
        The checkpoint folder.
    """
    from segloc_train.segloc.train_segloc import train_config, train_segloc

    output_dir = Path(output_dir)
    resume = (output_dir / "resume").is_dir()

    def print_epoch(summary: dict) -> None:
        print(
            f"epoch {summary['epoch']}/{summary['epochs']}: loss {summary['total']:.4f}, {summary['classes_used']} classes in use",
            flush=True,
        )

    return train_segloc(
        dataset_dir, output_dir, train_config("cpu_demo", epochs=epochs), resume=resume, progress=progress, on_epoch=print_epoch
    )
