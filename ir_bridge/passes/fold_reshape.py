"""fold-flatten: fold a Flatten (or a flattening Reshape) into the Gemm that reads it.

Rules:

1. A flatten whose input is already 2-D with the batch first is bypassed.
2. A flatten to ``(batch, -1)`` read only by ``Gemm`` nodes without ``flatten`` set is
   removed and each Gemm gets ``flatten=1`` (it flattens its own input), so the MNIST MLP
   is three Gemm nodes.
"""

from __future__ import annotations

from .base import register_pass


def _flatten_axis(node) -> int | None:
    """1 if ``node`` flattens a batch-first tensor to ``(batch, rest)``, else None."""
    if node.op == "Flatten" and node.attrs["axis"] == 1:
        return 1
    if node.op == "Reshape":
        shape = list(node.attrs["shape"])
        t = node.type
        if len(shape) == 2 and shape[0] in (0, -1) and t is not None and t.rank == 2:
            if shape[0] == 0 or shape[1] != -1:
                return 1
    return None


@register_pass("fold-flatten", "Fold Flatten/flattening Reshape into the next Gemm, or drop "
               "it when its input is already 2-D.", after=("eliminate-dropout",))
def fold_flatten(graph, ctx) -> bool:
    changed = False
    for node in list(graph):
        if _flatten_axis(node) is None:
            continue
        src = graph.node(node.inputs[0])
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
