"""One numpy kernel per IR op: the executable meaning of the op set.

A kernel *factory* takes a node and returns a function of the node's input arrays, so
per-node work (weight reshapes, padding plans) happens once, when a plan is compiled, not
on every batch.  ``kernel_for(node)`` also applies a fused ``activation``.
"""

from __future__ import annotations

from typing import Callable

from ..errors import IRBridgeError

Kernel = Callable[..., object]
KernelFactory = Callable[[object], Kernel]

_FACTORIES: dict[str, KernelFactory] = {}


def register_kernel(*ops: str):
    """Decorator: register a kernel factory ``factory(node) -> fn(*inputs)`` for ``ops``."""

    def wrap(factory: KernelFactory) -> KernelFactory:
        for op in ops:
            if op in _FACTORIES:
                raise IRBridgeError(f"a kernel for op {op!r} is registered twice")
            _FACTORIES[op] = factory
        return factory

    return wrap


def has_kernel(op: str) -> bool:
    """Whether ``op`` has a registered kernel."""
    return op in _FACTORIES


def kernel_for(node) -> Kernel:
    """Build the function computing ``node`` from its input arrays, fused activation included."""
    try:
        factory = _FACTORIES[node.op]
    except KeyError:
        raise IRBridgeError(f"node {node.name!r}: no kernel for op {node.op!r}") from None
    fn = factory(node)
    act = node.attrs.get("activation")
    if act:
        act_fn = activation_kernel(act, node.attrs.get("activation_attrs") or {})

        def fused(*xs, _fn=fn, _act=act_fn):
            return _act(_fn(*xs))

        return fused
    return fn


def activation_kernel(op: str, attrs: dict) -> Kernel:
    """The kernel of unary activation ``op`` with ``attrs`` (used for fused activations)."""
    from ..ir.schema import get_schema

    from ..ir.node import Node

    schema = get_schema(op)
    return _FACTORIES[op](Node("activation", op, attrs=schema.fill_attrs(attrs)))


from . import elementwise, nn, shape  # noqa: E402,F401  (register the built-in kernels)

__all__ = ["register_kernel", "kernel_for", "activation_kernel", "has_kernel"]
