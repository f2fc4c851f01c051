"""Tensor types of the IR: a shape with ``None`` for unknown (batch) dimensions and a dtype."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The two data layouts spatial ops may carry in their ``layout`` attribute.
NHWC = "NHWC"
NCHW = "NCHW"
LAYOUTS = (NHWC, NCHW)

Shape = tuple  # tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class TensorType:
    """The static type of one value: ``shape`` (ints, ``None`` where unknown) and ``dtype``.

    The batch dimension is ``None`` everywhere in a converted model, so one artifact serves
    every batch size.
    """

    shape: Shape
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in self.shape))
        object.__setattr__(self, "dtype", str(np.dtype(self.dtype)))

    @property
    def rank(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def with_shape(self, shape) -> "TensorType":
        """A copy with another shape and the same dtype."""
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


def channel_axis(layout: str, rank: int) -> int:
    """The channel axis of a ``rank``-D tensor in ``layout`` (NHWC: last, NCHW: 1)."""
    return rank - 1 if layout == NHWC else 1


def to_nchw_perm(rank: int) -> tuple[int, ...]:
    """The Transpose ``perm`` that turns a channels-last tensor into channels-first."""
    return (0, rank - 1, *range(1, rank - 1))


def to_nhwc_perm(rank: int) -> tuple[int, ...]:
    """The Transpose ``perm`` that turns a channels-first tensor into channels-last."""
    return (0, *range(2, rank), 1)
