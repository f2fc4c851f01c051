"""Op schemas: the op set declared once, as data.

An :class:`OpSchema` says how many inputs an op takes, which attributes it has (with
defaults), which named weights (``params``) it may carry, and how its output type follows
from its inputs (the shape function).  The numpy kernel that *is* the op's meaning lives in
:mod:`ir_bridge.ops`, keyed by the same name.  Plugins may declare new ops with
:func:`define_op` and give them a kernel with :func:`ir_bridge.ops.register_kernel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import IRBridgeError


class _Required:
    def __repr__(self) -> str:  # shows up in docs and error messages
        return "<required>"


#: Default value of an attribute that every node of the op must set.
REQUIRED: Any = _Required()

#: Op categories, used by passes and docs.
CATEGORIES = ("source", "nn", "activation", "elementwise", "shape", "noop", "other")


@dataclass(frozen=True)
class OpSchema:
    """The declaration of one IR op.

    ``infer(node, input_types) -> TensorType`` computes the output type; it may raise
    ``ValueError`` with a message naming the mismatch.  ``max_inputs=None`` means variadic.
    ``const_operand`` names a param that may stand in for the last input (``Add`` with a
    constant ``B``).  ``layout_sensitive`` ops carry a ``layout`` attribute the layout pass
    rewrites.
    """

    name: str
    doc: str
    infer: Callable
    category: str = "other"
    min_inputs: int = 1
    max_inputs: int | None = 1
    attrs: Mapping[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    required_params: tuple[str, ...] = ()
    const_operand: str | None = None
    layout_sensitive: bool = False
    onnx: str | None = None

    def fill_attrs(self, attrs: Mapping[str, Any] | None, where: str = "") -> dict[str, Any]:
        """Return ``attrs`` completed with defaults; raise on unknown or missing ones."""
        attrs = dict(attrs or {})
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise IRBridgeError(
                f"{where}op {self.name} has no attribute(s) {unknown}; it takes {sorted(self.attrs)}"
            )
        for key, default in self.attrs.items():
            if key not in attrs:
                if default is REQUIRED:
                    raise IRBridgeError(f"{where}op {self.name} requires attribute {key!r}")
                attrs[key] = _copy_default(default)
        return attrs


def _copy_default(value):
    return dict(value) if isinstance(value, dict) else value


_SCHEMAS: dict[str, OpSchema] = {}


def define_op(schema: OpSchema) -> OpSchema:
    """Register ``schema`` under its name; a second definition of a name is an error."""
    if schema.name in _SCHEMAS:
        raise IRBridgeError(f"op {schema.name!r} is defined twice")
    if schema.category not in CATEGORIES:
        raise IRBridgeError(f"op {schema.name!r}: unknown category {schema.category!r}")
    _SCHEMAS[schema.name] = schema
    return schema


def get_schema(op: str) -> OpSchema:
    """The schema of ``op``; an unknown op raises an error listing the known ones."""
    try:
        return _SCHEMAS[op]
    except KeyError:
        raise IRBridgeError(f"unknown op {op!r}; known ops: {', '.join(sorted(_SCHEMAS))}") from None


def all_schemas() -> dict[str, OpSchema]:
    """Every declared op, by name (a copy)."""
    return dict(_SCHEMAS)
