"""Monocular depth estimators behind one interface: ``image (H, W, 3) uint8 -> (H, W) float32 relative depth``.

A :class:`DepthEstimator` resizes the image to the size its network runs at
(``input_size``, width x height), runs the network, turns its output into depth and resizes
that back to the image's size (bilinear). The depth is *relative* (right up to a scale per
image, as monocular depth is); depth completion (:mod:`segloc.depth.completion`) makes it
metric against the map.

Implementations:

- :class:`TorchDepthEstimator`: a torch network, e.g. the project's :class:`segloc.models.depth.DepthNet`
  trained by ``segloc train depth``, or any registered network loaded from a checkpoint folder
  (:func:`segloc.models.checkpoint.load_checkpoint`; a user-supplied checkpoint goes through the
  same loader);
- :class:`OnnxDepthEstimator`: a user-supplied ONNX model run by ONNX Runtime
  (:class:`segloc.runtime.session.OnnxRuntimeSession`).

What a network must take and give (both backends):

- input: one tensor (1, 3, H, W) float32 RGB, ``(rgb / 255 - mean) / std`` with the config's
  ``input_mean`` / ``input_std`` (defaults 0 and 1: plain RGB in [0, 1]); H, W =
  ``input_size`` (an ONNX model exported for a fixed size must be given that size);
- output: its first output, (1, 1, h, w) or (1, h, w), any h, w (resized to the image), holding
  ``depth`` (larger is farther) or ``inverse_depth`` (disparity-like, larger is nearer; the
  ``output`` option says which). Non-positive inverse depths become 0 (no depth).

:func:`load_depth_estimator` builds one from a :class:`DepthEstimatorConfig` (YAML-loadable).
Nothing is downloaded: weights come only from the files given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from torch import nn

from segloc.config import check_options, option
from segloc.errors import SeglocError

logger = logging.getLogger("segloc")

OUTPUT_KINDS = ("depth", "inverse_depth")
"""What a network's output holds."""
SOURCES = ("checkpoint", "onnx")
"""Where an estimator's network comes from."""
INPUT_SIZE_METADATA = "input_size"
"""Checkpoint metadata key of the (width, height) a depth network was trained at (``segloc train depth`` writes it)."""


@runtime_checkable
class DepthEstimator(Protocol):
    """A monocular depth estimator.

    Attributes:
        input_size: (width, height) the network runs at.
    """

    input_size: tuple[int, int]

    def estimate(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) RGB uint8 -> (H, W) float32 relative depth (> 0; 0 where the network gives none)."""
        ...


@dataclass
class DepthEstimatorConfig:
    """How to load a depth estimator (:func:`load_depth_estimator`).

    Attributes:
        source: ``checkpoint`` (a segloc checkpoint folder) or ``onnx`` (an ``.onnx`` file).
        path: the checkpoint folder or ONNX file.
        input_size: (width, height) the network runs at; None: the checkpoint's training size
            (its ``input_size`` metadata), required for ONNX.
        output: ``depth`` or ``inverse_depth``, what the network's output holds (the project's
            network: ``depth``).
        input_mean, input_std: normalisation of RGB in [0, 1] before the network (the
            project's network normalises itself: keep 0 and 1).
        device: torch device of a checkpoint's network.
        threads: ONNX Runtime intra-op threads (0: its default).
    """

    source: str = "checkpoint"
    path: str = ""
    input_size: tuple[int, int] | None = None
    output: str = "depth"
    input_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    input_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    device: str = "cpu"
    threads: int = option(0, ge=0)

    def __post_init__(self) -> None:
        check_options(self, "depth estimator")
        if self.source not in SOURCES:
            raise SeglocError(f"depth estimator: unknown source {self.source!r}; valid values are: {', '.join(SOURCES)}")
        if self.output not in OUTPUT_KINDS:
            raise SeglocError(f"depth estimator: unknown output {self.output!r}; valid values are: {', '.join(OUTPUT_KINDS)}")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 8):
            raise SeglocError(f"depth estimator: input_size must be (width, height), each >= 8, got {self.input_size}")
        if len(self.input_mean) != 3 or len(self.input_std) != 3 or min(self.input_std) <= 0:
            raise SeglocError(
                f"depth estimator: input_mean and input_std need 3 values each, std > 0; got {self.input_mean}, {self.input_std}"
            )


def _output_to_depth(output: np.ndarray, kind: str, where: str) -> np.ndarray:
    """(1, 1, h, w) or (1, h, w) network output -> (h, w) float32 depth."""
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 4 and output.shape[:2] == (1, 1):
        output = output[0, 0]
    elif output.ndim == 3 and output.shape[0] == 1:
        output = output[0]
    else:
        raise SeglocError(f"{where}: the network's output has shape {output.shape}; a depth network must give (1, 1, H, W) or (1, H, W)")
    if not np.all(np.isfinite(output)):
        raise SeglocError(f"{where}: the network's output holds non-finite values")
    if kind == "inverse_depth":
        with np.errstate(divide="ignore"):
            return np.where(output > 0, 1.0 / np.maximum(output, 1e-12), 0.0).astype(np.float32)
    return np.maximum(output, 0.0)


class _ResizingEstimator:
    """The shared body: resize, normalise, run, convert, resize back. Subclasses define :meth:`_run`."""

    def __init__(self, input_size: tuple[int, int], output: str, input_mean, input_std, where: str):
        if output not in OUTPUT_KINDS:
            raise SeglocError(f"{where}: unknown output {output!r}; valid values are: {', '.join(OUTPUT_KINDS)}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.output = output
        self.input_mean = np.asarray(input_mean, np.float32).reshape(1, 3, 1, 1)
        self.input_std = np.asarray(input_std, np.float32).reshape(1, 3, 1, 1)
        self.where = where

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def estimate(self, image: np.ndarray) -> np.ndarray:
        """Relative depth of an RGB image.

        Args:
            image: (H, W, 3) RGB uint8.

        Returns:
            (H, W) float32 relative depth, > 0 (0 where an inverse-depth network gives <= 0).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SeglocError(f"{self.where}: expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        resized = cv2.resize(image, self.input_size, interpolation=cv2.INTER_AREA) if (width, height) != self.input_size else image
        batch = resized.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        batch = np.ascontiguousarray((batch - self.input_mean) / self.input_std)
        depth = _output_to_depth(self._run(batch), self.output, self.where)
        if depth.shape != (height, width):
            depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_LINEAR)
        return depth


class TorchDepthEstimator(_ResizingEstimator):
    """A torch depth network (see the module docstring for its input and output).

    Args:
        model: the network; ``model(batch)`` on (1, 3, H, W) returns the depth tensor.
        input_size: (width, height) it runs at.
        output: ``depth`` or ``inverse_depth``.
        input_mean, input_std: normalisation before the network (0, 1: none).
        device: torch device.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int], output: str = "depth",
                 input_mean=(0.0, 0.0, 0.0), input_std=(1.0, 1.0, 1.0), device: str = "cpu"):  # fmt: skip
        super().__init__(input_size, output, input_mean, input_std, f"depth network {type(model).__name__}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def _run(self, batch: np.ndarray) -> np.ndarray:
        output = self.model(torch.from_numpy(batch).to(self.device))
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.float().cpu().numpy()


class OnnxDepthEstimator(_ResizingEstimator):
    """A depth network in an ONNX file, run by ONNX Runtime (one input, its first output is the depth).

    Args:
        path: the ``.onnx`` file.
        input_size: (width, height) it runs at (the size it was exported for, if fixed).
        output: ``depth`` or ``inverse_depth``.
        input_mean, input_std: normalisation before the network.
        threads: intra-op threads (0: ONNX Runtime's default).

    Raises:
        SeglocError: the file does not load (or onnxruntime is missing), or the model has not one input.
    """

    def __init__(self, path: str | Path, input_size: tuple[int, int], output: str = "depth",
                 input_mean=(0.0, 0.0, 0.0), input_std=(1.0, 1.0, 1.0), threads: int = 0):  # fmt: skip
        from segloc.runtime.session import OnnxRuntimeSession

        path = Path(path)
        if not path.is_file():
            raise SeglocError(f"ONNX depth model {path} does not exist")
        super().__init__(input_size, output, input_mean, input_std, f"ONNX depth model {path}")
        self.session = OnnxRuntimeSession(path, threads=threads)
        if len(self.session.input_names) != 1:
            raise SeglocError(f"{self.where} has inputs {self.session.input_names}; a depth model takes one image (1, 3, H, W)")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        outputs = self.session.run({self.session.input_names[0]: batch})
        return outputs[self.session.output_names[0]].numpy()


def load_depth_estimator(config: DepthEstimatorConfig) -> DepthEstimator:
    """The estimator ``config`` describes (a checkpoint folder or an ONNX file).

    Raises:
        SeglocError: no path, a missing or invalid file, or no input size where none can be found.
    """
    if not config.path:
        raise SeglocError("depth estimator: give the path of a checkpoint folder or an ONNX file")
    path = Path(config.path)
    if config.source == "onnx":
        if config.input_size is None:
            raise SeglocError(f"depth estimator: give input_size (width, height) for the ONNX model {path}")
        return OnnxDepthEstimator(path, config.input_size, config.output, config.input_mean, config.input_std, config.threads)
    from segloc.models.checkpoint import load_checkpoint, read_checkpoint_info

    input_size = config.input_size or read_checkpoint_info(path).metadata.get(INPUT_SIZE_METADATA)
    if input_size is None:
        raise SeglocError(f"depth estimator: checkpoint {path} does not record its input size; give input_size (width, height)")
    model = load_checkpoint(path)
    return TorchDepthEstimator(model, tuple(input_size), config.output, config.input_mean, config.input_std, config.device)
