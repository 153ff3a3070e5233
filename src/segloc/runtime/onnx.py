"""ONNX export of a torch network with named inputs and outputs, checked against torch.

:func:`export_onnx` runs the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which
needs ``onnxscript``), with dynamic axes given as multiples of a step (image sides that are
multiples of the coarsest stride), then runs the file with ONNX Runtime on the example inputs
and refuses it when its outputs differ from torch's by more than a tolerance.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from segloc.errors import SeglocError
from segloc.fileio import atomic_write

logger = logging.getLogger("segloc")

__all__ = ["DynamicAxis", "export_onnx", "max_abs_difference"]


@dataclass(frozen=True)
class DynamicAxis:
    """An input axis whose size varies: ``step * n`` for ``minimum <= n <= maximum``."""

    name: str
    step: int = 1
    minimum: int = 1
    maximum: int = 1024


def max_abs_difference(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, float]:
    """Per output name, the largest absolute difference between two runs (shapes must match)."""
    differences = {}
    for name, value in a.items():
        other = torch.as_tensor(b[name]).float().cpu()
        if tuple(other.shape) != tuple(value.shape):
            raise SeglocError(f"output {name}: shapes differ, {tuple(value.shape)} vs {tuple(other.shape)}")
        differences[name] = float((value.float().cpu() - other).abs().max()) if value.numel() else 0.0
    return differences


def export_onnx(
    module: nn.Module,
    example_inputs: Sequence[Tensor],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, DynamicAxis]] | None = None,
    atol: float = 1e-3,
) -> Path:
    """Export ``module`` to ONNX at ``path`` (atomically) and check it against torch on ``example_inputs``.

    Args:
        module: the network; ``module(*inputs)`` returns a tensor or a tuple of tensors, in ``output_names`` order.
        example_inputs: one tensor per input name (their shapes are the exported shapes unless dynamic).
        path: the ``.onnx`` file to write.
        input_names, output_names: names in the ONNX graph.
        dynamic_axes: per input name, its axes that vary (:class:`DynamicAxis`).
        atol: largest accepted absolute difference between ONNX Runtime's and torch's outputs.

    Raises:
        SeglocError: onnxscript or onnxruntime is missing, or the exported outputs differ from torch's.
    """
    for package in ("onnxscript", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise SeglocError(f"ONNX export needs the {package} package: pip install 'segloc_ros[export]'")
    from segloc.runtime.session import OnnxRuntimeSession, TorchSession

    module = module.eval()
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = None
    if dynamic_axes:
        dynamic_shapes = {}
        for name in input_names:
            axes = {}
            for axis, spec in (dynamic_axes.get(name) or {}).items():
                dim = dims.setdefault(spec.name, torch.export.Dim(spec.name, min=spec.minimum, max=spec.maximum))
                axes[axis] = dim * spec.step if spec.step > 1 else dim
            dynamic_shapes[name] = axes or None
    path = Path(path)
    start = time.perf_counter()

    def write(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                module,
                tuple(example_inputs),
                str(tmp),
                dynamo=True,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dynamic_shapes,
                external_data=False,  # one self-contained file (maps and caches move it; networks here are < 2 GB)
                verbose=False,
            )
        inputs = dict(zip(input_names, example_inputs))
        expected = TorchSession(module, input_names, output_names).run(inputs)
        got = OnnxRuntimeSession(tmp).run({name: value.numpy() for name, value in inputs.items()})
        worst = max(max_abs_difference(expected, got).values())
        if worst > atol:
            raise SeglocError(f"the ONNX export of {type(module).__name__} differs from torch by {worst:.2e} (> {atol:g})")
        logger.info(
            "exported %s to %s in %.1f s (max abs difference to torch %.1e)",
            type(module).__name__,
            path,
            time.perf_counter() - start,
            worst,
        )

    atomic_write(path, write)
    return path
