"""Human-readable views of a graph: the ``inspect`` table."""

from __future__ import annotations


def summary_rows(graph) -> list[tuple[str, str, str, str, int]]:
    """One ``(name, op, origin, output type, params)`` row per node, in topological order."""
    rows = []
    for node in graph:
        op = node.op
        act = node.attrs.get("activation")
        if act:
            op = f"{op}+{act}"
        layout = node.attrs.get("layout")
        if layout:
            op = f"{op} ({layout})"
        rows.append((node.name, op, node.origin or "", str(node.type), node.num_params))
    return rows


def summary(graph) -> str:
    """A text table like Keras's ``model.summary()``, with totals."""
    rows = summary_rows(graph)
    head = ("node", "op", "origin", "output", "params")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]

    def fmt(r):
        cells = [str(c).ljust(w) for c, w in zip(r[:4], widths)]
        return "  ".join(cells + [str(r[4]).rjust(widths[4])])

    rule = "-" * len(fmt(head))
    lines = [f"Graph {graph.name!r}", rule, fmt(head), rule, *map(fmt, rows), rule]
    lines.append(f"nodes: {len(rows)}   params: {graph.count_params():,}")
    return "\n".join(lines)
