"""Clean-up passes: shape inference, inference no-op elimination, dead-code elimination.

eliminate-dropout rules:

1. ``Dropout`` (Dropout, SpatialDropout, GaussianNoise, GaussianDropout, AlphaDropout: all
   identities at inference) is bypassed.
2. ``Identity`` (Keras ``Activation('linear')``) is bypassed.
3. A node that is a graph output and reads a graph input directly stays, so the graph
   keeps a distinct output.
"""

from __future__ import annotations

from .base import register_pass

NOOP_OPS = frozenset(["Dropout", "Identity"])


@register_pass("shape-inference", "Recompute every node's output type from the op schemas.")
def shape_inference(graph, ctx) -> bool:
    """Types are recomputed by the manager after every pass; this pass only asks for it."""
    graph.infer_shapes()
    return False


@register_pass("eliminate-dropout",
               "Remove inference no-ops: Dropout-like layers, GaussianNoise, Identity.")
def eliminate_dropout(graph, ctx) -> bool:
    changed = False
    for node in list(graph):
        if node.op not in NOOP_OPS:
            continue
        src = graph.node(node.inputs[0])
        if graph.is_output(node) and src.op == "Input":
            ctx.explain(node, "it maps a graph input straight to a graph output")
            continue
        graph.bypass(node)
        changed = True
    return changed


@register_pass("dead-code", "Remove nodes whose values reach no graph output.")
def dead_code(graph, ctx) -> bool:
    live = set(graph.output_names)
    for node in reversed(list(graph)):
        if node.name in live:
            live.update(node.inputs)
    dead = [n for n in reversed(list(graph)) if n.name not in live and n.op != "Input"]
    for node in dead:
        graph.remove_node(node)
    return bool(dead)
