"""layout-nchw / layout-nhwc: put every spatial op in one data layout, with few transposes.

Three steps, repeated to a fixpoint:

1. **Convert.** Each layout-sensitive op (Conv, pools…) in the other layout is switched to
   the target layout and wrapped: a Transpose into the target layout before it and one
   back after it.  The graph's meaning is unchanged; the graph inputs and outputs keep
   their layout.
2. **Push and cancel.** A Transpose moves below the op that reads it when the op does not
   care about layout (elementwise ops, activations, BatchNormalization/Softmax with their
   axis remapped, Concat, Pad, Slice, Resize, reductions), per the ``PUSH_THROUGH`` table.
   Two Transposes in a row compose into one, and an identity Transpose disappears, so the
   "back" transpose of one conv meets the "into" transpose of the next and both vanish.
3. **Fold into Dense.** ``Transpose -> Flatten -> Gemm`` (or ``Transpose -> Gemm`` with
   ``flatten``) becomes a permutation of the Gemm's weight rows: no runtime transpose.

A Keras model compiled for NCHW therefore keeps one Transpose at the input and none inside.
"""

from __future__ import annotations

import numpy as np

from ..ir.schema import get_schema
from ..ir.types import NCHW, NHWC, to_nchw_perm, to_nhwc_perm
from .base import register_pass

_UNARY = {"activation", "noop"}
_ELEMENTWISE_UNARY = {"Erf", "Sqrt", "Neg", "Abs", "Log", "Reciprocal", "Floor", "Exp"}
_AXIS_ATTR_OPS = {"Softmax": "axis", "LogSoftmax": "axis", "BatchNormalization": "axis",
                  "Concat": "axis"}


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _is_transpose(node):
    return node.op == "Transpose"


def _convert(graph, target) -> bool:
    changed = False
    for node in list(graph):
        if not get_schema(node.op).layout_sensitive or node.attrs["layout"] == target:
            continue
        rank = graph.node(node.inputs[0]).type.rank
        into = to_nchw_perm(rank) if target == NCHW else to_nhwc_perm(rank)
        t_in = graph.add_node("Transpose", [node.inputs[0]], attrs={"perm": into},
                              name=graph.unique_name(f"{node.name}/to_{target.lower()}"),
                              origin=node.origin)
        graph.set_inputs(node, [t_in.name, *node.inputs[1:]])
        node.attrs["layout"] = target
        fused = node.attrs.get("activation_attrs") or {}
        if "axis" in fused:
            # A fused Softmax's axis counts in the old layout; axis a of the old tensor is
            # axis into.index(a) of the converted one.
            node.attrs["activation_attrs"] = {**fused,
                                              "axis": into.index(fused["axis"] % rank)}
        graph._infer_one(node)
        graph.insert_after(node, "Transpose", attrs={"perm": _inverse(into)},
                           name=graph.unique_name(f"{node.name}/from_{target.lower()}"),
                           origin=node.origin)
        changed = True
    return changed


def _compose(graph) -> bool:
    """Merge Transpose pairs and drop identity Transposes."""
    changed = False
    for node in list(graph):
        if node.name not in graph or not _is_transpose(node):
            continue
        perm = tuple(node.attrs["perm"])
        src = graph.node(node.inputs[0])
        if _is_transpose(src):
            inner = tuple(src.attrs["perm"])
            node.attrs["perm"] = tuple(inner[p] for p in perm)
            graph.set_inputs(node, [src.inputs[0]])
            if not graph.users(src) and not graph.is_output(src):
                graph.remove_node(src)
            perm = tuple(node.attrs["perm"])
            changed = True
        if perm == tuple(range(len(perm))) and not (
                graph.is_output(node) and graph.node(node.inputs[0]).op == "Input"):
            graph.bypass(node)
            changed = True
    return changed


def _remap_axis(axis, perm, rank):
    """The axis of x that axis ``axis`` of ``x.transpose(perm)`` is."""
    return perm[axis % rank]


def _push_one(graph, t, user) -> bool:
    """Move Transpose ``t`` below ``user`` if the table allows; True when done."""
    perm = tuple(t.attrs["perm"])
    rank = len(perm)
    schema = get_schema(user.op)
    srcs = [graph.node(i) for i in user.inputs]
    if schema.category in _UNARY or user.op in _ELEMENTWISE_UNARY:
        if user.op == "PRelu":
            slope = user.params["slope"]
            if slope.ndim > 1 or (slope.ndim == 1 and slope.size > 1):
                full = slope.reshape((1,) * (rank - slope.ndim) + slope.shape)
                user.params["slope"] = np.ascontiguousarray(full.transpose(_inverse(perm)))
        elif user.op in _AXIS_ATTR_OPS:
            user.attrs["axis"] = _remap_axis(user.attrs["axis"], perm, rank)
        new_inputs = [t.inputs[0]]
    elif user.op in ("BatchNormalization", "Concat"):
        if not all(_is_transpose(s) and tuple(s.attrs["perm"]) == perm for s in srcs):
            return False
        user.attrs["axis"] = _remap_axis(user.attrs["axis"], perm, rank)
        new_inputs = [s.inputs[0] for s in srcs]
    elif schema.category == "elementwise":
        if not all(_is_transpose(s) and tuple(s.attrs["perm"]) == perm for s in srcs):
            return False
        if schema.const_operand and schema.const_operand in user.params:
            b = user.params[schema.const_operand]
            if b.ndim > rank:
                return False
            full = b.reshape((1,) * (rank - b.ndim) + b.shape)
            user.params[schema.const_operand] = np.ascontiguousarray(
                full.transpose(_inverse(perm)))
        new_inputs = [s.inputs[0] for s in srcs]
    elif user.op == "Pad":
        pads = list(user.attrs["pads"])
        inv = _inverse(perm)
        user.attrs["pads"] = [pads[inv[a]] for a in range(rank)] + \
                             [pads[rank + inv[a]] for a in range(rank)]
        new_inputs = [t.inputs[0]]
    elif user.op == "Resize":
        inv = _inverse(perm)
        user.attrs["scales"] = [user.attrs["scales"][inv[a]] for a in range(rank)]
        new_inputs = [t.inputs[0]]
    elif user.op == "Slice":
        user.attrs["axes"] = [_remap_axis(a, perm, rank) for a in user.attrs["axes"]]
        new_inputs = [t.inputs[0]]
    elif user.op in ("ReduceMean", "ReduceMax") and user.attrs["keepdims"]:
        user.attrs["axes"] = [_remap_axis(a, perm, rank) for a in user.attrs["axes"]]
        new_inputs = [t.inputs[0]]
    else:
        return False
    graph.set_inputs(user, new_inputs)
    graph._infer_one(user)
    graph.insert_after(user, "Transpose", attrs={"perm": perm},
                       name=graph.unique_name(f"{user.name}/transpose"), origin=user.origin)
    return True


def _push(graph) -> bool:
    changed = False
    for t in list(graph):
        if t.name not in graph or not _is_transpose(t):
            continue
        for user in graph.users(t):
            if _push_one(graph, t, user):
                changed = True
        if t.name in graph and not graph.users(t) and not graph.is_output(t):
            graph.remove_node(t)
    return changed


def _flatten_rows(graph, t, w) -> np.ndarray | None:
    """``w`` with rows permuted so flattening ``t``'s input replaces flattening ``t``."""
    perm = tuple(t.attrs["perm"])
    src_shape = graph.node(t.inputs[0]).type.shape
    if perm[0] != 0 or None in src_shape[1:]:
        return None
    inner = [p - 1 for p in perm[1:]]
    idx = np.arange(int(np.prod(src_shape[1:]))).reshape(src_shape[1:]).transpose(inner).ravel()
    out = np.empty_like(w)
    out[idx] = w
    return out


def _fold_into_gemm(graph) -> bool:
    changed = False
    for t in list(graph):
        if t.name not in graph or not _is_transpose(t) or graph.is_output(t):
            continue
        for user in graph.users(t):
            if user.op == "Gemm" and user.attrs["flatten"] == 1:
                w = _flatten_rows(graph, t, user.params["W"])
                if w is not None:
                    user.params["W"] = w
                    graph.set_inputs(user, [t.inputs[0]])
                    changed = True
            elif (user.op == "Flatten" and user.attrs["axis"] == 1 and not graph.is_output(user)
                  and graph.users(user)
                  and all(g.op == "Gemm" and g.attrs["flatten"] is None
                          for g in graph.users(user))):
                weights = [_flatten_rows(graph, t, g.params["W"]) for g in graph.users(user)]
                if all(w is not None for w in weights):
                    for g, w in zip(graph.users(user), weights):
                        g.params["W"] = w
                    graph.set_inputs(user, [t.inputs[0]])
                    changed = True
        if not graph.users(t) and not graph.is_output(t):
            graph.remove_node(t)
    return changed


def convert_layout(graph, target: str) -> bool:
    """Put ``graph`` in ``target`` layout (NCHW or NHWC); returns whether it changed."""
    changed = _convert(graph, target)
    if not changed and not any(_is_transpose(n) for n in graph):
        return False
    for _ in range(4 * len(graph) + 8):
        step = _compose(graph)
        step |= _push(graph)
        step |= _fold_into_gemm(graph)
        graph.infer_shapes()
        changed |= step
        if not step:
            break
    return changed


@register_pass("layout-nchw", "Convert spatial ops to NCHW (ONNX, MDF); cancel transposes; "
               "fold the one before Flatten->Dense into the weights.", once=True)
def layout_nchw(graph, ctx) -> bool:
    return convert_layout(graph, NCHW)


@register_pass("layout-nhwc", "Convert spatial ops to NHWC (Keras); cancel transposes; "
               "fold the one before Flatten->Dense into the weights.", once=True)
def layout_nhwc(graph, ctx) -> bool:
    return convert_layout(graph, NHWC)
