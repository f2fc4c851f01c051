"""The IR node: one op producing one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import TensorType


@dataclass(eq=False, slots=True)
class Node:
    """One op application in a :class:`~ir_bridge.ir.Graph`.

    ``op`` is the canonical op name, ``inputs`` the ordered names of the producing nodes
    (change them only through ``Graph.set_inputs``/``replace_all_uses_with``), ``attrs`` plain
    Python values, ``params`` named numpy weights (never mutated in place: replace the
    array), ``type`` the inferred output type, ``origin`` the source layer's name, and
    ``meta`` free-form facts passes may record.
    """

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    type: TensorType | tuple | None = None
    origin: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        """Number of scalar weights held in ``params``."""
        return int(sum(p.size for p in self.params.values()))

    def format(self) -> str:
        """One fx-style line: ``%name : type = Op[attrs](%a, %b)  # origin``."""
        attrs = {k: v for k, v in self.attrs.items() if v not in (None, {}, "NOTSET")}
        attr_text = ", ".join(f"{k}={v!r}" for k, v in attrs.items())
        params = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.params.items())
        args = ", ".join(f"%{i}" for i in self.inputs)
        text = f"%{self.name} : {self.type} = {self.op}"
        if attr_text:
            text += f"[{attr_text}]"
        text += f"({args})"
        if params:
            text += f" {{{params}}}"
        if self.origin and self.origin != self.name:
            text += f"  # {self.origin}"
        return text

    def __repr__(self) -> str:
        return f"Node({self.format()})"
