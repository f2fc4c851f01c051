"""fold-flatten: fold a Flatten (or a flattening Reshape) into the Gemm that reads it.

Rules:

1. A flatten whose input is already 2-D with the batch first is bypassed.
2. A flatten to ``(batch, -1)`` read only by ``Gemm`` nodes without ``flatten`` set is
   removed and each Gemm gets ``flatten=1`` (it flattens its own input), so the MNIST MLP
   is three Gemm nodes.
"""

from __future__ import annotations

import math

from .base import register_pass


def _flatten_axis(node, src) -> int | None:
    """1 if ``node`` flattens a batch-first tensor to ``(batch, rest)``, else None."""
    if node.op == "Flatten" and node.attrs["axis"] == 1:
        return 1
    if node.op == "Reshape" and src.type is not None:
        shape = list(node.attrs["shape"])
        rest = src.type.shape[1:]
        known = None if None in rest else math.prod(rest)
        # (0, -1) keeps the batch by definition; (-1, k) or (0, k) only when k is all of
        # the non-batch elements (otherwise it would fold rows into the batch).
        if len(shape) == 2 and (shape == [0, -1] or (shape[0] in (0, -1) and shape[1] == known)):
            return 1
    return None


@register_pass("fold-flatten", "Fold Flatten/flattening Reshape into the next Gemm, or drop "
               "it when its input is already 2-D.", after=("eliminate-dropout",))
def fold_flatten(graph, ctx) -> bool:
    changed = False
    for node in list(graph):
        if node.op not in ("Flatten", "Reshape"):
            continue
        src = graph.node(node.inputs[0])
        if _flatten_axis(node, src) is None:
            continue
        if src.type is not None and src.type.rank == 2 and not graph.is_output(node):
            graph.bypass(node)
            changed = True
            continue
        users = graph.users(node)
        if graph.is_output(node) or not users:
            ctx.explain(node, "its value is a graph output")
            continue
        blockers = [u.name for u in users if u.op != "Gemm" or u.attrs["flatten"] is not None]
        if blockers:
            ctx.explain(node, f"read by {blockers}, not only by plain Gemm nodes")
            continue
        for user in users:
            user.attrs["flatten"] = 1
        graph.bypass(node)
        changed = True
    return changed
