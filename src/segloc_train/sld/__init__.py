"""Training of the SLD* landmark network (:mod:`segloc_train.sld.train_sld`), ``segloc train sld``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["train_for_demo"]


def train_for_demo(dataset_dir: str | Path, output_dir: str | Path, *, epochs: int, progress: bool = True) -> Path:
    """The ``segloc.trainers`` entry of SLD*: the ``cpu_demo`` preset for ``epochs`` epochs, resuming a run left in ``output_dir``.

    Returns:
        The checkpoint folder.
    """
    from segloc_train.sld.train_sld import train_config, train_sld

    output_dir = Path(output_dir)
    resume = (output_dir / "resume" / "state.json").is_file()

    def print_epoch(summary: dict) -> None:
        print(
            f"epoch {summary['epoch'] + 1}/{summary['epochs']}: loss {summary['loss']:.5f}, held-out recall {summary['recall']:.3f}",
            flush=True,
        )

    return train_sld(
        dataset_dir, output_dir, train_config("cpu_demo", {"epochs": epochs}), resume=resume, progress=progress, on_epoch=print_epoch
    )
