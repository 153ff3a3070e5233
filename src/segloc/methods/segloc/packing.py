"""One array for a segmentation's probability pyramid, and the wire layout of the split SegLoc pipeline.

A :class:`~segloc.models.segmenter.Segmentation` holds class probabilities at several levels,
coarse to fine (strides :data:`segloc.models.LEVEL_STRIDES` = 32, 16, 8, 4 of the network
input). To send them between processes as one image-like message, :func:`pack_probabilities`
stacks the levels vertically, coarse to fine, each left-aligned and zero-padded on the right to
the width of the finest level, channels last, in float16::

    packed: (H_total, W_f, K) float16        H_total = sum of the level heights
    rows [0, H_0)              level 0 (coarsest), columns [0, W_0), zeros in [W_0, W_f)
    rows [H_0, H_0 + H_1)      level 1, columns [0, W_1)
    ...
    last H_f rows              the finest level, all W_f columns

Level sizes follow the network's convention (:mod:`segloc.models.segmentation`):
``H_l = ceil(H / stride_l)`` for an input of height ``H``; from the finest level,
``H_l = ceil(H_f / r_l)`` with ``r_l = stride_l / stride_f`` (exact for inputs that are
multiples of the coarsest stride, which :class:`~segloc.models.segmenter.NetworkSegmenter`
always uses). :func:`unpack_probabilities` recovers the levels from the packed array and the
strides alone: ``H_total`` determines ``H_f``, which is unique.

Float16 keeps probabilities to a relative precision of 2^-11 (0.05 %) and resolves values down
to 6e-8, far below the refinement's probability floor (1e-4).

Wire format (what :func:`probabilities_image_fields` and :func:`descriptor_image_fields` give, the
fields of a ``sensor_msgs/Image``; this module does not import ROS):

- probabilities: ``encoding = "16UC{K}"`` (K channels of 16 bits), ``height = H_total``,
  ``width = W_f``, ``step = W_f * K * 2``; each 16-bit word is an IEEE 754 half-precision float
  (not an integer), little-endian unless ``is_bigendian``;
- descriptor: ``encoding = "32FC1"``, ``height = 1``, ``width = Dg``, float32;
- retrieval (:func:`retrieval_image_fields`): ``encoding = "64FC1"``, ``height = 2``,
  ``width = R``: row 0 the retrieved mapping image ids, row 1 their similarities, best first
  (float64 holds both exactly).
"""

from __future__ import annotations

import array
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segloc.errors import SeglocError
from segloc.models.segmentation import LEVEL_STRIDES
from segloc.models.segmenter import Segmentation

__all__ = [
    "DESCRIPTOR_ENCODING",
    "RETRIEVAL_ENCODING",
    "descriptor_from_image",
    "descriptor_image_fields",
    "level_sizes",
    "pack_descriptor",
    "pack_probabilities",
    "pack_segmentation",
    "packed_probabilities_from_image",
    "probabilities_encoding",
    "probabilities_image_fields",
    "retrieval_from_image",
    "retrieval_image_fields",
    "segmentation_from_packed",
    "unpack_descriptor",
    "unpack_probabilities",
]

DESCRIPTOR_ENCODING = "32FC1"
_PROBABILITIES_ENCODING = re.compile(r"^16UC(\d+)$")


# --- level geometry -------------------------------------------------------------------------
def _level_ratios(strides: Sequence[int]) -> list[int]:
    """``stride_l / stride_finest`` per level; the strides must decrease and divide each other."""
    strides = [int(s) for s in strides]
    if not strides or min(strides) < 1:
        raise SeglocError(f"level strides must be positive integers, coarse to fine, got {list(strides)}")
    if any(a <= b for a, b in zip(strides, strides[1:])):
        raise SeglocError(f"level strides must decrease from coarse to fine, got {strides}")
    finest = strides[-1]
    if any(s % finest for s in strides):
        raise SeglocError(f"every level stride must be a multiple of the finest one ({finest}), got {strides}")
    return [s // finest for s in strides]


def level_sizes(finest_height: int, finest_width: int, strides: Sequence[int] = LEVEL_STRIDES) -> list[tuple[int, int]]:
    """(height, width) of each level, coarse to fine, for a finest level of ``finest_height`` x ``finest_width``.

    ``H_l = ceil(H_f / r_l)``, ``W_l = ceil(W_f / r_l)`` with ``r_l = stride_l / stride_finest``.
    """
    if finest_height < 1 or finest_width < 1:
        raise SeglocError(f"the finest level must be at least 1x1, got {finest_width}x{finest_height}")
    return [(-(-finest_height // r), -(-finest_width // r)) for r in _level_ratios(strides)]


def _finest_height(total_height: int, strides: Sequence[int]) -> int:
    """The finest level's height whose pyramid is ``total_height`` rows high (unique, as the total grows with it)."""
    ratios = _level_ratios(strides)
    if total_height >= 1:
        # sum(ceil(h / r)) lies in [h * s, h * s + n) with s = sum(1 / r): few candidates to try.
        share = sum(1.0 / r for r in ratios)
        low = max(1, math.floor((total_height - len(ratios)) / share))
        for height in range(low, math.floor(total_height / share) + 1):
            if sum(-(-height // r) for r in ratios) == total_height:
                return height
    raise SeglocError(
        f"a packed probability pyramid of {total_height} rows does not fit the level strides {list(strides)}: "
        "no finest-level height gives that many rows (was it packed with other strides?)"
    )


# --- probabilities ------------------------------------------------------------------------
def _as_array(level: Any) -> np.ndarray:
    if isinstance(level, Tensor):
        return level.detach().to("cpu", torch.float32).numpy()
    return np.asarray(level, dtype=np.float32)


def pack_probabilities(probabilities: Sequence[Tensor | np.ndarray], strides: Sequence[int] = LEVEL_STRIDES) -> np.ndarray:
    """Stack a probability pyramid into one (H_total, W_f, K) float16 array (layout in the module docstring).

    Args:
        probabilities: one (K, H_l, W_l) tensor or array per level, coarse to fine, as in
            :attr:`segloc.models.segmenter.Segmentation.probabilities`.
        strides: the level strides, coarse to fine (one per level).

    Raises:
        SeglocError: a level count other than the number of strides, levels with different K,
            or level sizes that do not follow the strides from the finest level.
    """
    levels = [_as_array(level) for level in probabilities]
    if len(levels) != len(strides):
        raise SeglocError(f"got {len(levels)} probability level(s) for {len(strides)} strides {list(strides)}")
    if any(level.ndim != 3 for level in levels):
        raise SeglocError(f"probability levels must be (K, H, W) arrays, got shapes {[level.shape for level in levels]}")
    num_classes = levels[0].shape[0]
    if num_classes < 1 or any(level.shape[0] != num_classes for level in levels):
        raise SeglocError(f"probability levels must all have the same number of classes, got {[level.shape[0] for level in levels]}")
    finest_height, finest_width = levels[-1].shape[1:]
    expected = level_sizes(finest_height, finest_width, strides)
    actual = [tuple(level.shape[1:]) for level in levels]
    if actual != expected:
        raise SeglocError(
            f"probability level sizes (H, W) {actual} do not follow the strides {list(strides)} from the finest level: expected {expected}"
        )
    packed = np.zeros((sum(h for h, _ in expected), finest_width, num_classes), dtype=np.float16)
    row = 0
    for level in levels:
        height, width = level.shape[1:]
        packed[row : row + height, :width] = level.transpose(1, 2, 0)
        row += height
    return packed


def unpack_probabilities(packed: np.ndarray, strides: Sequence[int] = LEVEL_STRIDES) -> list[Tensor]:
    """The levels of a packed pyramid: (K, H_l, W_l) float32 tensors, coarse to fine (the inverse of :func:`pack_probabilities`).

    Raises:
        SeglocError: not an (H_total, W_f, K) array, or a height that no pyramid with these
            strides has.
    """
    packed = np.asarray(packed)
    if packed.ndim != 3 or min(packed.shape) < 1:
        raise SeglocError(f"a packed probability pyramid is an (H_total, W_finest, K) array, got shape {packed.shape}")
    total_height, finest_width, _ = packed.shape
    sizes = level_sizes(_finest_height(total_height, strides), finest_width, strides)
    levels = []
    row = 0
    for height, width in sizes:
        level = packed[row : row + height, :width].astype(np.float32).transpose(2, 0, 1)
        levels.append(torch.from_numpy(np.ascontiguousarray(level)))
        row += height
    return levels


# --- descriptors and whole segmentations ----------------------------------------------------
def pack_descriptor(descriptor: np.ndarray | Tensor) -> np.ndarray:
    """A global descriptor (Dg,) as a (1, Dg) float32 row (one image row on the wire)."""
    values = _as_array(descriptor).reshape(-1)
    if values.size < 1:
        raise SeglocError("the global descriptor is empty")
    if not np.all(np.isfinite(values)):
        raise SeglocError("the global descriptor has NaN or infinite values")
    return np.ascontiguousarray(values[None, :], dtype=np.float32)


def unpack_descriptor(row: np.ndarray) -> np.ndarray:
    """The (Dg,) float32 descriptor of a (1, Dg) or (Dg,) array (the inverse of :func:`pack_descriptor`)."""
    row = np.asarray(row)
    if row.ndim not in (1, 2) or (row.ndim == 2 and row.shape[0] != 1) or row.size < 1:
        raise SeglocError(f"a packed descriptor is one row (1, Dg), got shape {row.shape}")
    values = row.reshape(-1).astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise SeglocError("the global descriptor has NaN or infinite values")
    return values


def pack_segmentation(segmentation: Segmentation, strides: Sequence[int] = LEVEL_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """``(packed probabilities (H_total, W_f, K) float16, descriptor (1, Dg) float32)`` of a segmentation."""
    return pack_probabilities(segmentation.probabilities, strides), pack_descriptor(segmentation.descriptor)


def segmentation_from_packed(
    packed: np.ndarray, descriptor: np.ndarray | None = None, strides: Sequence[int] = LEVEL_STRIDES
) -> Segmentation:
    """A :class:`Segmentation` from a packed pyramid (and optionally a packed descriptor).

    ``descriptor=None`` gives an empty descriptor (enough for a refinement from pose priors,
    which does not retrieve). ``input_size`` is the network input implied by the finest level,
    ``(W_f * stride_f, H_f * stride_f)``.
    """
    levels = unpack_probabilities(packed, strides)
    values = np.zeros(0, np.float32) if descriptor is None else unpack_descriptor(descriptor)
    finest = int(strides[-1])
    return Segmentation(levels, values, (int(levels[-1].shape[2]) * finest, int(levels[-1].shape[1]) * finest))


# --- wire format: sensor_msgs/Image fields --------------------------------------------------
def probabilities_encoding(num_classes: int) -> str:
    """The image encoding of a packed pyramid with K classes: ``16UC{K}`` (16-bit words holding float16)."""
    if int(num_classes) < 1:
        raise SeglocError(f"the number of classes must be positive, got {num_classes}")
    return f"16UC{int(num_classes)}"


def probabilities_image_fields(packed: np.ndarray) -> dict[str, Any]:
    """``sensor_msgs/Image`` field values (except the header) for a packed pyramid: little-endian float16 words.

    Returns:
        ``height``, ``width``, ``encoding`` (``16UC{K}``), ``is_bigendian`` (0), ``step`` and
        ``data`` (bytes).
    """
    packed = np.asarray(packed)
    if packed.ndim != 3 or packed.dtype != np.float16:
        raise SeglocError(f"expected a packed (H_total, W_finest, K) float16 pyramid, got shape {packed.shape} and dtype {packed.dtype}")
    height, width, num_classes = packed.shape
    data = np.ascontiguousarray(packed, dtype=np.dtype("<f2")).tobytes()
    return {
        "height": height,
        "width": width,
        "encoding": probabilities_encoding(num_classes),
        "is_bigendian": 0,
        "step": width * num_classes * 2,
        "data": data,
    }


def _image_rows(msg: Any, channels: int, itemsize: int, what: str) -> np.ndarray:
    """(height, width * channels * itemsize) uint8 rows of an image message, row padding removed."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * itemsize
    data = msg.data
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        data = np.frombuffer(data, dtype=np.uint8)  # no copy of a large message
    else:
        data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if height < 1 or width < 1 or step < row_bytes or data.size < height * step:
        raise SeglocError(
            f"{what}: a {msg.encoding} image of {width}x{height} with step {step} and {data.size} bytes is inconsistent "
            f"(expected step >= {row_bytes} and {height * step} bytes)"
        )
    return data[: height * step].reshape(height, step)[:, :row_bytes]


def packed_probabilities_from_image(msg: Any) -> np.ndarray:
    """The (H_total, W_f, K) float16 pyramid of an image message with encoding ``16UC{K}`` (any object with Image fields).

    Raises:
        SeglocError: another encoding, or a size that does not match the data.
    """
    match = _PROBABILITIES_ENCODING.match(str(msg.encoding))
    if match is None or int(match.group(1)) < 1:
        raise SeglocError(
            f"segmentation probabilities must be encoded as 16UC<K> (float16 words, K classes), got encoding {msg.encoding!r}"
        )
    num_classes = int(match.group(1))
    rows = _image_rows(msg, num_classes, 2, "segmentation probabilities")
    dtype = np.dtype(">f2" if msg.is_bigendian else "<f2")
    return np.ascontiguousarray(rows).view(dtype).reshape(int(msg.height), int(msg.width), num_classes).astype(np.float16)


def descriptor_image_fields(descriptor: np.ndarray | Tensor) -> dict[str, Any]:
    """``sensor_msgs/Image`` field values (except the header) for a global descriptor: one ``32FC1`` row."""
    row = pack_descriptor(descriptor)
    return {
        "height": 1,
        "width": row.shape[1],
        "encoding": DESCRIPTOR_ENCODING,
        "is_bigendian": 0,
        "step": row.shape[1] * 4,
        "data": row.astype("<f4").tobytes(),
    }


def descriptor_from_image(msg: Any) -> np.ndarray:
    """The (Dg,) float32 descriptor of a one-row ``32FC1`` image message (any object with Image fields)."""
    if str(msg.encoding) != DESCRIPTOR_ENCODING or int(msg.height) != 1:
        raise SeglocError(
            f"a global descriptor must be a one-row {DESCRIPTOR_ENCODING} image, got encoding {msg.encoding!r} and height {msg.height}"
        )
    rows = _image_rows(msg, 1, 4, "global descriptor")
    dtype = np.dtype(">f4" if msg.is_bigendian else "<f4")
    return unpack_descriptor(np.ascontiguousarray(rows).view(dtype).reshape(1, int(msg.width)))


RETRIEVAL_ENCODING = "64FC1"


def retrieval_image_fields(image_ids: np.ndarray, similarities: np.ndarray) -> dict[str, Any]:
    """``sensor_msgs/Image`` field values (except the header) of a retrieval: ids and similarities, a (2, R) ``64FC1`` image.

    Args:
        image_ids: (R,) retrieved mapping image ids, best first.
        similarities: (R,) their similarities.
    """
    image_ids = np.asarray(image_ids).reshape(-1)
    similarities = np.asarray(similarities, dtype=np.float64).reshape(-1)
    if len(image_ids) < 1 or len(image_ids) != len(similarities):
        raise SeglocError(f"a retrieval needs one similarity per image id, got {len(image_ids)} ids and {len(similarities)} similarities")
    if not np.all(np.isfinite(similarities)):
        raise SeglocError("the retrieval similarities have NaN or infinite values")
    rows = np.stack([image_ids.astype(np.float64), similarities]).astype("<f8")
    return {
        "height": 2,
        "width": rows.shape[1],
        "encoding": RETRIEVAL_ENCODING,
        "is_bigendian": 0,
        "step": rows.shape[1] * 8,
        "data": rows.tobytes(),
    }


def retrieval_from_image(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(image_ids (R,) int64, similarities (R,) float32)`` of a (2, R) ``64FC1`` image message (:func:`retrieval_image_fields`)."""
    if str(msg.encoding) != RETRIEVAL_ENCODING or int(msg.height) != 2:
        raise SeglocError(
            f"a retrieval must be a two-row {RETRIEVAL_ENCODING} image, got encoding {msg.encoding!r} and height {msg.height}"
        )
    rows = _image_rows(msg, 1, 8, "retrieval")
    dtype = np.dtype(">f8" if msg.is_bigendian else "<f8")
    values = np.ascontiguousarray(rows).view(dtype).reshape(2, int(msg.width))
    ids = values[0]
    if not np.all(np.isfinite(values)) or np.any(ids != np.round(ids)) or np.any(ids < 0):
        raise SeglocError("a retrieval's first row must hold non-negative whole image ids and its second finite similarities")
    return ids.astype(np.int64), values[1].astype(np.float32)
