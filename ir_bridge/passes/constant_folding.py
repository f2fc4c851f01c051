"""constant-folding: evaluate what does not depend on a graph input.

Rules:

1. A node whose inputs are all ``Constant`` nodes is computed now (with its ``ops/``
   kernel, so folding means exactly what running means) and becomes a ``Constant``.
2. ``Add``/``Sub``/``Mul``/``Div``/``Pow`` reading a ``Constant`` as second operand take it
   as their constant param ``B``.
3. A ``Gemm`` or ``MatMul`` whose weight comes from a ``Constant``: ``MatMul(x, C)`` with a
   2-D ``C`` becomes ``Gemm(x)`` with ``W=C``.
"""

from __future__ import annotations

import numpy as np

from ..ir.schema import get_schema
from ..ops import kernel_for
from .base import register_pass

#: Do not materialise constants larger than this many elements (keeps files small).
MAX_FOLD_ELEMENTS = 1 << 24


@register_pass("constant-folding", "Evaluate subgraphs that depend on no graph input; move "
               "constant operands into params.")
def constant_folding(graph, ctx) -> bool:
    changed = False
    for node in list(graph):
        if node.op in ("Constant", "Input") or not node.inputs:
            continue
        srcs = [graph.node(i) for i in node.inputs]
        if all(s.op == "Constant" for s in srcs):
            if node.type is not None and not isinstance(node.type, tuple):
                size = int(np.prod([d or 0 for d in node.type.shape]))
                if size > MAX_FOLD_ELEMENTS:
                    ctx.explain(node, f"result has {size} elements")
                    continue
            value = kernel_for(node)(*[s.params["value"] for s in srcs])
            const = graph.add_node("Constant", params={"value": np.asarray(value)},
                                   origin=node.origin)
            graph.replace_all_uses_with(node, const)
            graph.remove_node(node)
            graph.rename(const, node.name)
            changed = True
            continue
        schema = get_schema(node.op)
        if schema.const_operand and len(srcs) == 2 and srcs[1].op == "Constant":
            node.params[schema.const_operand] = srcs[1].params["value"]
            graph.set_inputs(node, [srcs[0].name])
            changed = True
        elif (node.op == "MatMul" and srcs[1].op == "Constant"
              and srcs[1].params["value"].ndim == 2):
            gemm = graph.add_node("Gemm", [srcs[0].name],
                                  params={"W": srcs[1].params["value"]}, origin=node.origin)
            graph.replace_all_uses_with(node, gemm)
            graph.remove_node(node)
            graph.rename(gemm, node.name)
            changed = True
    return changed
