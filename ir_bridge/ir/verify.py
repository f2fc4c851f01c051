"""``verify(graph)``: check every IR invariant and report all violations at once."""

from __future__ import annotations

import networkx as nx
import numpy as np

from ..errors import IRBridgeError, VerificationError
from .schema import REQUIRED, get_schema
from .types import LAYOUTS


def verify(graph) -> None:
    """Raise :class:`VerificationError` listing every broken invariant of ``graph``.

    Checked: the graph is acyclic; every input names an existing node; the networkx edges
    match the nodes' inputs; each op is known, has an allowed number of inputs, all its
    attributes and required params and no unknown ones; layouts are valid; outputs exist;
    every node has a type and that type is what shape inference computes now.
    """
    problems: list[str] = []
    nodes = {n: graph._nodes[n] for n in graph._nodes}
    dag = graph._dag

    def where(node):
        origin = f" (origin {node.origin!r})" if node.origin and node.origin != node.name else ""
        return f"node {node.name!r}{origin}"

    if not nx.is_directed_acyclic_graph(dag):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(dag))
        problems.append(f"cycle {cycle}: a node must not depend on itself")
    if set(dag.nodes) != set(nodes):
        problems.append("networkx nodes differ from the node table: mutate only through Graph")
    if not graph.output_names:
        problems.append("the graph has no outputs: call set_outputs()")
    for o in graph.output_names:
        if o not in nodes:
            problems.append(f"output {o!r} is not a node")

    for node in nodes.values():
        for i in node.inputs:
            if i not in nodes:
                problems.append(f"{where(node)} reads undefined {i!r}")
        expected = {}
        for i in node.inputs:
            expected[i] = expected.get(i, 0) + 1
        actual = {u: d["uses"] for u, _, d in dag.in_edges(node.name, data=True)}
        if expected != actual:
            problems.append(f"{where(node)}: edges {actual} do not match inputs {node.inputs}; "
                            "use Graph.set_inputs")
        try:
            schema = get_schema(node.op)
        except IRBridgeError as exc:
            problems.append(f"{where(node)}: {exc}")
            continue
        n_in = len(node.inputs)
        max_in = schema.max_inputs
        if n_in < schema.min_inputs or (max_in is not None and n_in > max_in):
            problems.append(f"{where(node)}: {node.op} takes {schema.min_inputs}.."
                            f"{max_in if max_in is not None else 'n'} inputs, has {n_in}")
        if schema.const_operand:
            has_const = schema.const_operand in node.params
            if (n_in == 1) != has_const:
                problems.append(f"{where(node)}: {node.op} needs two inputs or one input and "
                                f"param {schema.const_operand!r}")
        for key, default in schema.attrs.items():
            if key not in node.attrs or (default is REQUIRED and node.attrs[key] is REQUIRED):
                problems.append(f"{where(node)}: missing attribute {key!r}")
        unknown = set(node.attrs) - set(schema.attrs)
        if unknown:
            problems.append(f"{where(node)}: unknown attributes {sorted(unknown)}")
        for p in schema.required_params:
            if p not in node.params:
                problems.append(f"{where(node)}: missing param {p!r}")
        for p, value in node.params.items():
            if p not in schema.params:
                problems.append(f"{where(node)}: unknown param {p!r}")
            elif not isinstance(value, np.ndarray):
                problems.append(f"{where(node)}: param {p!r} is not a numpy array")
        if schema.layout_sensitive and node.attrs.get("layout") not in LAYOUTS:
            problems.append(f"{where(node)}: layout {node.attrs.get('layout')!r} not in {LAYOUTS}")
        if node.type is None:
            problems.append(f"{where(node)}: no type; run shape inference")

    if not problems:
        # Types must be what the shape functions say now (a pass may have left them stale).
        for node in graph:
            before = node.type
            try:
                graph._infer_one(node, strict=True)
            except IRBridgeError as exc:
                problems.append(str(exc))
                continue
            if node.type != before:
                problems.append(f"{where(node)}: stale type {before}, inference gives {node.type}")
                node.type = before
    if problems:
        raise VerificationError(problems)
