"""numpy:fuse-add-relu: join ``Add -> Relu`` into one ``numpy.AddRelu`` node.

Residual blocks end in ``relu(x + shortcut)``.  The in-tree ``fuse-activation`` pass fuses
activations into Gemm/Conv only, so the sum and the clamp stay two nodes, and generated
code makes two full-size temporaries.  This pass replaces the pair with one node of a new
op, ``numpy.AddRelu``, which this module declares (schema + numpy kernel) so that the IR
stays verifiable and runnable by the ir_bridge interpreter after the rewrite.

Rules:

1. The ``Relu`` has Keras's defaults (no slope, cap or threshold): that is ``max(s, 0)``.
2. The ``Add`` has no other reader and is not a graph output (its sum must not be needed
   elsewhere).

The new node takes the Add's name and inputs (or its constant ``B``); readers of the
Relu read it.  Only the numpy backend emits ``numpy.AddRelu``: put this pass in a
pipeline for that backend, not for MDF/ONNX/Keras.
"""

from __future__ import annotations

import numpy as np

from ir_bridge.ir import OpSchema, define_op, get_schema
from ir_bridge.ir.opset import broadcast_shapes
from ir_bridge.ops import register_kernel
from ir_bridge.passes import register_pass

from .codegen import ADD_RELU


def _infer(node, types):
    """Same broadcasting as ``Add``."""
    shapes = [t.shape for t in types]
    if len(types) == 1:
        shapes.append(node.params["B"].shape)
    return types[0].with_shape(broadcast_shapes(*shapes))


define_op(OpSchema(ADD_RELU, "``max(a + b, 0)``: Add then default Relu, as one node "
                   "(from the ir_bridge_numpy plugin).", _infer, category="elementwise",
                   min_inputs=1, max_inputs=2, params=("B",), const_operand="B"))


@register_kernel(ADD_RELU)
def _add_relu_kernel(node):
    b = node.params.get("B")
    if b is not None and b.dtype == np.float64:
        b = b.astype(np.float32)

    def add_relu(x, y=None):
        s = x + (b if y is None else y)
        return np.maximum(s, s.dtype.type(0))

    return add_relu


def _is_plain_relu(node) -> bool:
    defaults = get_schema("Relu").attrs
    return node.op == "Relu" and all(node.attrs.get(k) == v for k, v in defaults.items())


@register_pass("numpy:fuse-add-relu", "Join Add -> Relu into one numpy.AddRelu node "
               "(numpy backend only).", after=("eliminate-dropout",))
def fuse_add_relu(graph, ctx) -> bool:
    """Rewrite every eligible ``Add -> Relu`` pair; returns whether any was rewritten."""
    changed = False
    for relu in list(graph):
        if relu.op != "Relu" or relu.name not in graph:
            continue
        add = graph.node(relu.inputs[0])
        if add.op != "Add":
            continue
        if not _is_plain_relu(relu):
            ctx.explain(relu, "it has a slope, cap or threshold")
            continue
        if not graph.has_one_use(add):
            ctx.explain(relu, f"{add.name}'s sum is used elsewhere too")
            continue
        fused = graph.add_node(ADD_RELU, add.inputs, params=add.params,
                               name=graph.unique_name(f"{add.name}_relu"), origin=add.origin)
        graph.replace_all_uses_with(relu, fused)
        graph.remove_node(relu)
        graph.remove_node(add)
        graph.rename(fused, add.name)
        changed = True
    return changed
