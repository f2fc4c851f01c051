"""The MDF vocabulary shared by the MDF frontend, the MDF backend and the MDF engine.

Three things live here, so the frontend and the backend (which must not import each other)
agree on them:

* **The ``MdfExpression`` IR op.** An MDF expression string that no IR op expresses (``"x *
  sin(y)"``) becomes one ``MdfExpression`` node: ``expression`` is the text, ``inputs`` the
  names its dynamic operands have in the text (bound to the node's inputs, in order), and
  ``constants`` the names of its constant operands, whose arrays are the params ``c0``,
  ``c1``, …. The kernel compiles the text once with the safe compiler
  :func:`ir_bridge.engine.expr.compile_expression` (never ``eval``) and casts the result to
  float32, the engine's working type. Its shape function is a symbolic interpreter of the
  same allow-listed grammar (:func:`expression_shape`): shapes are computed from the
  operand shapes, with ``None`` for the batch, without evaluating anything.
* **The ONNX function table** (:data:`ONNX_FUNCTIONS`): the ``onnx::`` functions the MDF
  subset uses, with their ONNX input names in order (the reference MDF engine passes
  arguments by these names) and their attributes with ONNX defaults (opset 15, the opset
  the reference engine runs).
* **The object walker** :func:`model_to_dict`: a ``modeci_mdf`` ``Model`` as the plain
  dict its JSON file holds, with numpy arrays kept as arrays (no ``tolist``), so the
  frontend reads files and live objects through one code path and the backend writes
  them compactly.

Importing this module registers the op and its kernel; it imports neither modeci_mdf nor
any deep-learning framework.
"""

from __future__ import annotations

import ast
import math
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ExecutionError
from ..ir.opset import broadcast_shapes
from ..ir.schema import REQUIRED, OpSchema, define_op
from ..ir.types import TensorType
from ..ops import register_kernel
from .expr import MODULE_ALIASES, compile_expression, parse_expression

#: How many named constants one ``MdfExpression`` may bind (params ``c0`` … ``c31``).
MAX_CONSTANTS = 32

# --------------------------------------------------------------------------- ONNX table

#: ``op -> (inputs, attributes)``. An input name ending in ``?`` is optional, ``*`` variadic;
#: attributes map to their ONNX default (``None``: no default / absent).
ONNX_FUNCTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "Gemm": (("A", "B", "C?"), {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}),
    "MatMul": (("A", "B"), {}),
    "Conv": (("X", "W", "B?"), {"auto_pad": "NOTSET", "dilations": None, "group": 1,
                               "kernel_shape": None, "pads": None, "strides": None}),
    "ConvTranspose": (("X", "W", "B?"), {"auto_pad": "NOTSET", "dilations": None, "group": 1,
                                        "kernel_shape": None, "output_padding": None,
                                        "output_shape": None, "pads": None, "strides": None}),
    "MaxPool": (("X",), {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                         "kernel_shape": None, "pads": None, "storage_order": 0,
                         "strides": None}),
    "AveragePool": (("X",), {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0,
                             "kernel_shape": None, "pads": None, "strides": None}),
    "GlobalAveragePool": (("X",), {}),
    "GlobalMaxPool": (("X",), {}),
    "BatchNormalization": (("X", "scale", "B", "input_mean", "input_var"),
                           {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0}),
    "Relu": (("X",), {}),
    "LeakyRelu": (("X",), {"alpha": 0.01}),
    "Elu": (("X",), {"alpha": 1.0}),
    "Selu": (("X",), {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "Sigmoid": (("X",), {}),
    "HardSigmoid": (("X",), {"alpha": 0.2, "beta": 0.5}),
    "HardSwish": (("X",), {}),
    "Tanh": (("input",), {}),
    "Softplus": (("X",), {}),
    "Softsign": (("input",), {}),
    "Exp": (("input",), {}),
    "Erf": (("input",), {}),
    "Sqrt": (("X",), {}),
    "Neg": (("X",), {}),
    "Abs": (("X",), {}),
    "Log": (("input",), {}),
    "Reciprocal": (("X",), {}),
    "Floor": (("X",), {}),
    "Identity": (("input",), {}),
    "Softmax": (("input",), {"axis": -1}),
    "LogSoftmax": (("input",), {"axis": -1}),
    "PRelu": (("X", "slope"), {}),
    "Add": (("A", "B"), {}),
    "Sub": (("A", "B"), {}),
    "Mul": (("A", "B"), {}),
    "Div": (("A", "B"), {}),
    "Pow": (("X", "Y"), {}),
    "Max": (("data_0*",), {}),
    "Min": (("data_0*",), {}),
    "Sum": (("data_0*",), {}),
    "Mean": (("data_0*",), {}),
    "Flatten": (("input",), {"axis": 1}),
    "Reshape": (("data", "shape"), {"allowzero": 0}),
    "Transpose": (("data",), {"perm": None}),
    "Concat": (("inputs*",), {"axis": None}),
    "Pad": (("data", "pads", "constant_value?"), {"mode": "constant"}),
    "Slice": (("data", "starts", "ends", "axes?", "steps?"), {}),
    "Squeeze": (("data", "axes?"), {}),
    "Unsqueeze": (("data", "axes"), {}),
    "Resize": (("X", "roi?", "scales?", "sizes?"),
               {"coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75,
                "exclude_outside": 0, "extrapolation_value": 0.0, "mode": "nearest",
                "nearest_mode": "round_prefer_floor"}),
    "ReduceMean": (("data",), {"axes": None, "keepdims": 1}),
    "ReduceMax": (("data",), {"axes": None, "keepdims": 1}),
    "Gather": (("data", "indices"), {"axis": 0}),
    "Dropout": (("data", "ratio?", "training_mode?"), {"seed": None}),
    "Clip": (("input", "min?", "max?"), {}),
}

#: The opset whose semantics :data:`ONNX_FUNCTIONS` follows (the reference engine's).
ONNX_OPSET = 15

#: ONNX ops whose value, in the reference MDF engine, is a tuple of all their outputs (it
#: asks onnxruntime for the optional ones too); ``value[0]`` is the main output.
TUPLE_VALUED = {"MaxPool": 2, "Dropout": 2, "BatchNormalization": 1}


def onnx_input_names(op: str) -> list[str]:
    """The ONNX input names of ``op`` without the ``?``/``*`` markers."""
    return [n.rstrip("?*") for n in ONNX_FUNCTIONS[op][0]]


# --------------------------------------------------------------------------- shapes

_SAME_SHAPE = {"abs", "sign", "floor", "ceil", "round", "exp", "exp2", "log", "log2", "log10",
               "sqrt", "erf", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh",
               "cosh", "tanh"}
_BROADCAST = {"maximum", "minimum", "power", "pow", "where", "clip"}
_REDUCE = {"sum", "mean", "max", "min"}
Shape = tuple


class _ShapeInterpreter:
    """Computes the shape of an allow-listed expression from the shapes of its names.

    It mirrors :mod:`ir_bridge.engine.expr` node for node and never touches data, so a
    file cannot make shape inference slow or large. ``None`` dims (the batch) propagate;
    a mismatch raises ``ValueError``.
    """

    def __init__(self, shapes: Mapping[str, Shape]):
        self.shapes = shapes

    def shape(self, node: ast.AST) -> Shape:
        if isinstance(node, ast.Constant):
            return ()
        if isinstance(node, ast.Name):
            return tuple(self.shapes[node.id])
        if isinstance(node, ast.Attribute):  # np.pi and friends
            return ()
        if isinstance(node, ast.BinOp):
            a, b = self.shape(node.left), self.shape(node.right)
            if isinstance(node.op, ast.MatMult):
                return matmul_shape(a, b)
            return broadcast_shapes(a, b)
        if isinstance(node, ast.UnaryOp):
            return self.shape(node.operand)
        if isinstance(node, ast.Compare):
            return broadcast_shapes(*[self.shape(n) for n in [node.left, *node.comparators]])
        if isinstance(node, ast.IfExp):
            return broadcast_shapes(self.shape(node.test), self.shape(node.body),
                                    self.shape(node.orelse))
        if isinstance(node, (ast.List, ast.Tuple)):
            return _literal_shape(node)
        if isinstance(node, ast.Subscript):
            return index_shape(self.shape(node.value), _index_value(node.slice))
        if isinstance(node, ast.Call):
            return self.call(node)
        raise ValueError(f"cannot infer the shape of {ast.unparse(node)!r}")

    def call(self, node: ast.Call) -> Shape:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        args = node.args
        if name in _SAME_SHAPE:
            return self.shape(args[0])
        if name in _BROADCAST:
            return broadcast_shapes(*[self.shape(a) for a in args])
        if name in ("matmul", "dot"):
            a, b = self.shape(args[0]), self.shape(args[1])
            return matmul_shape(a, b) if name == "matmul" else dot_shape(a, b)
        if name in _REDUCE:
            axis = ast.literal_eval(args[1]) if len(args) > 1 else kwargs.get("axis")
            return reduce_shape(self.shape(args[0]), axis, bool(kwargs.get("keepdims", False)))
        if name == "transpose":
            axes = ast.literal_eval(args[1]) if len(args) > 1 else kwargs.get("axes")
            return transpose_shape(self.shape(args[0]), axes)
        if name == "reshape":
            return reshape_shape(self.shape(args[0]), ast.literal_eval(args[1]))
        raise ValueError(f"no shape rule for function {name!r}")


def _literal_shape(node: ast.AST) -> Shape:
    if isinstance(node, (ast.List, ast.Tuple)):
        if not node.elts:
            return (0,)
        return (len(node.elts), *_literal_shape(node.elts[0]))
    return ()


def _index_value(node: ast.AST):
    """The Python value of a validated constant index (ints, slices, None, ..., lists)."""
    if isinstance(node, ast.Slice):
        parts = [None if p is None else ast.literal_eval(p)
                 for p in (node.lower, node.upper, node.step)]
        return slice(*parts)
    if isinstance(node, ast.Tuple):
        return tuple(_index_value(e) for e in node.elts)
    return ast.literal_eval(node)


def _known(d) -> bool:
    return d is not None


def matmul_shape(a: Shape, b: Shape) -> Shape:
    """Shape of ``numpy.matmul(a, b)`` (``None`` dims allowed)."""
    if not a or not b:
        raise ValueError("matmul does not take scalars")
    aa = (1, *a) if len(a) == 1 else tuple(a)
    bb = (*b, 1) if len(b) == 1 else tuple(b)
    if _known(aa[-1]) and _known(bb[-2]) and aa[-1] != bb[-2]:
        raise ValueError(f"matmul inner dimensions differ: {a} @ {b}")
    out = [*broadcast_shapes(aa[:-2], bb[:-2]), aa[-2], bb[-1]]
    if len(b) == 1:
        out.pop(-1)
    if len(a) == 1:
        out.pop(-2 if len(b) != 1 else -1)
    return tuple(out)


def dot_shape(a: Shape, b: Shape) -> Shape:
    """Shape of ``numpy.dot(a, b)``."""
    if not a or not b:
        return broadcast_shapes(a, b)
    inner_b = b[0] if len(b) == 1 else b[-2]
    if _known(a[-1]) and _known(inner_b) and a[-1] != inner_b:
        raise ValueError(f"dot inner dimensions differ: {a} . {b}")
    if len(b) == 1:
        return tuple(a[:-1])
    return (*a[:-1], *b[:-2], b[-1])


def _axes(axis, rank: int) -> list[int]:
    if axis is None:
        return list(range(rank))
    axes = list(axis) if isinstance(axis, tuple) else [axis]
    out = []
    for ax in axes:
        if not isinstance(ax, int) or not -rank <= ax < rank:
            raise ValueError(f"axis {ax} out of range for rank {rank}")
        out.append(ax % rank)
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis}")
    return out


def reduce_shape(s: Shape, axis, keepdims: bool) -> Shape:
    """Shape of a sum/mean/max/min reduction over ``axis``."""
    axes = set(_axes(axis, len(s)))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(s))
    return tuple(d for i, d in enumerate(s) if i not in axes)


def transpose_shape(s: Shape, axes) -> Shape:
    """Shape of ``numpy.transpose(x, axes)``."""
    if axes is None:
        return tuple(reversed(s))
    perm = _axes(tuple(axes) if isinstance(axes, (tuple, list)) else (axes,), len(s))
    if len(perm) != len(s):
        raise ValueError(f"axes {axes} do not match rank {len(s)}")
    return tuple(s[p] for p in perm)


def reshape_shape(s: Shape, target) -> Shape:
    """Shape of ``numpy.reshape(x, target)`` (numpy semantics: -1 inferred, 0 is 0)."""
    target = tuple(target) if isinstance(target, (tuple, list)) else (target,)
    if any(not isinstance(d, int) or d < -1 for d in target) or target.count(-1) > 1:
        raise ValueError(f"bad reshape target {target}")
    known = math.prod(d for d in target if d != -1)
    if None in s:
        return tuple(None if d == -1 else d for d in target)
    total = math.prod(s)
    if -1 in target:
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {s} into {target}")
        return tuple(total // known if d == -1 else d for d in target)
    if known != total:
        raise ValueError(f"cannot reshape {s} into {target}")
    return target


def index_shape(s: Shape, index) -> Shape:
    """Shape of ``x[index]`` for constant numpy indices (one list index at most)."""
    index = index if isinstance(index, tuple) else (index,)
    consumed = sum(1 for i in index if i is not None and i is not Ellipsis)
    if consumed > len(s):
        raise ValueError(f"too many indices for an array of rank {len(s)}")
    if sum(1 for i in index if i is Ellipsis) > 1:
        raise ValueError("an index can only have a single ellipsis")
    if sum(1 for i in index if isinstance(i, list)) > 1:
        raise ValueError("indexing with several lists is not supported")
    expanded = []
    for i in index:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (len(s) - consumed))
        else:
            expanded.append(i)
    if Ellipsis not in index:
        expanded.extend([slice(None)] * (len(s) - consumed))
    out, dim = [], 0
    for i in expanded:
        if i is None:
            out.append(1)
            continue
        d = s[dim]
        dim += 1
        if isinstance(i, slice):
            out.append(None if d is None else len(range(*i.indices(d))))
        elif isinstance(i, list):
            if d is not None and any(not -d <= v < d for v in i):
                raise ValueError(f"index {i} out of range for axis of size {d}")
            out.append(len(i))
        else:
            if d is not None and not -d <= i < d:
                raise ValueError(f"index {i} out of range for axis of size {d}")
    return tuple(out)


def expression_shape(text: str, shapes: Mapping[str, Shape]) -> Shape:
    """The shape of expression ``text`` given the shapes of its names.

    ``text`` must already have passed :func:`compile_expression` (the grammar is not checked
    again here). Raises ``ValueError`` when the shapes do not fit together.
    """
    tree = parse_expression(text)
    return _ShapeInterpreter(shapes).shape(tree.body)


def free_names(text: str) -> list[str]:
    """Names an expression reads, in order of first appearance (module prefixes excluded)."""
    tree = parse_expression(text)
    seen: dict[str, None] = {}
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            skip.add(id(node.value))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            skip.add(id(node.func))
    # ast.walk is breadth-first; order by source position so the order is the reading order.
    names = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in skip
                    and n.id not in MODULE_ALIASES), key=lambda n: (n.lineno, n.col_offset))
    for n in names:
        seen.setdefault(n.id)
    return list(seen)


# --------------------------------------------------------------------------- the op


def _expression_infer(node, types):
    names = list(node.attrs["inputs"])
    consts = list(node.attrs["constants"])
    if len(types) != len(names):
        raise ValueError(f"{len(types)} inputs for the {len(names)} names {names}")
    shapes = {n: t.shape for n, t in zip(names, types)}
    for i, name in enumerate(consts):
        shapes[name] = node.params[f"c{i}"].shape
    return TensorType(expression_shape(node.attrs["expression"], shapes), "float32")


define_op(OpSchema(
    "MdfExpression",
    "An MDF expression string over the node's inputs (``inputs`` names them) and constants "
    "(``constants`` names params c0, c1, …), run by the safe expression compiler; the "
    "result is float32.",
    _expression_infer, category="other", min_inputs=1, max_inputs=None,
    attrs={"expression": REQUIRED, "inputs": REQUIRED, "constants": ()},
    params=tuple(f"c{i}" for i in range(MAX_CONSTANTS))))


@register_kernel("MdfExpression")
def _mdf_expression_kernel(node) -> Callable:
    names = list(node.attrs["inputs"])
    consts = {name: node.params[f"c{i}"] for i, name in enumerate(node.attrs["constants"])}
    expr = compile_expression(node.attrs["expression"], names=[*names, *consts])
    where = f"node {node.name!r}" + (f" (from {node.origin!r})"
                                      if node.origin and node.origin != node.name else "")

    def mdf_expression(*xs):
        env = dict(consts)
        env.update(zip(names, xs))
        try:
            y = expr.evaluate(env)
        except ExecutionError as exc:
            raise ExecutionError(f"{where}: {exc}") from exc
        return y if y.dtype == np.float32 else y.astype(np.float32)

    return mdf_expression


# --------------------------------------------------------------------------- object walker


def _unstructure(value, array_hook):
    if isinstance(value, np.ndarray):
        return array_hook(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _unstructure(v, array_hook) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unstructure(v, array_hook) for v in value]
    return value


def _put(d: dict, key: str, value, array_hook, default=None) -> None:
    """Set ``d[key]`` unless ``value`` is None, empty, or the field's default."""
    if value is None or (isinstance(value, (list, dict, tuple)) and not len(value)):
        return
    if default is not None and isinstance(value, str) and value == default:
        return
    d[key] = _unstructure(value, array_hook)


def model_to_dict(model, array_hook: Callable[[np.ndarray], Any] = lambda a: a) -> dict:
    """A ``modeci_mdf`` Model as the dict its JSON file holds (``{id: {...}}``).

    Fields at their default are left out, as modelspec does; numpy arrays are passed to
    ``array_hook`` (kept as arrays by default). Only the MDF core classes are walked: a
    ``ConditionSet`` is unstructured with modelspec's own ``to_dict``.
    """
    graphs = {}
    for g in model.graphs:
        gd: dict = {}
        nodes = {}
        for n in g.nodes:
            nd: dict = {}
            ports = {}
            for p in n.input_ports:
                pd: dict = {}
                _put(pd, "metadata", p.metadata, array_hook)
                _put(pd, "default_value", p.default_value, array_hook)
                _put(pd, "shape", list(p.shape) if p.shape else None, array_hook)
                _put(pd, "type", p.type, array_hook)
                _put(pd, "reduce", p.reduce, array_hook, default="overwrite")
                ports[p.id] = pd
            _put(nd, "metadata", n.metadata, array_hook)
            _put(nd, "input_ports", ports, array_hook)
            funcs = {}
            for f in n.functions:
                fd: dict = {}
                _put(fd, "metadata", f.metadata, array_hook)
                if isinstance(f.function, dict):
                    fd["function"] = _unstructure(f.function, array_hook)
                elif f.function is not None:
                    fd["function"] = {f.function: _unstructure(f.args or {}, array_hook)}
                elif f.args:
                    fd["args"] = _unstructure(f.args, array_hook)
                _put(fd, "value", f.value, array_hook)
                funcs[f.id] = fd
            _put(nd, "functions", funcs, array_hook)
            params = {}
            for p in n.parameters:
                pd = {}
                _put(pd, "metadata", p.metadata, array_hook)
                for key in ("value", "default_initial_value", "time_derivative", "function",
                            "args"):
                    val = getattr(p, key)
                    if val is not None:
                        pd[key] = _unstructure(val, array_hook)
                if p.conditions:
                    pd["conditions"] = [c.to_dict() if hasattr(c, "to_dict") else c
                                        for c in p.conditions]
                params[p.id] = pd
            _put(nd, "parameters", params, array_hook)
            outs = {}
            for p in n.output_ports:
                pd = {}
                _put(pd, "metadata", p.metadata, array_hook)
                _put(pd, "value", p.value, array_hook)
                _put(pd, "shape", list(p.shape) if p.shape else None, array_hook)
                _put(pd, "type", p.type, array_hook)
                outs[p.id] = pd
            _put(nd, "output_ports", outs, array_hook)
            nodes[n.id] = nd
        _put(gd, "metadata", g.metadata, array_hook)
        gd["nodes"] = nodes
        edges = {}
        for e in g.edges:
            ed: dict = {}
            _put(ed, "metadata", e.metadata, array_hook)
            ed.update(sender=e.sender, receiver=e.receiver, sender_port=e.sender_port,
                      receiver_port=e.receiver_port)
            _put(ed, "parameters", e.parameters, array_hook)
            edges[e.id] = ed
        _put(gd, "edges", edges, array_hook)
        _put(gd, "parameters", g.parameters, array_hook)
        if g.conditions is not None:
            cond = g.conditions.to_dict() if hasattr(g.conditions, "to_dict") else g.conditions
            gd["conditions"] = cond
        graphs[g.id] = gd
    md: dict = {}
    _put(md, "metadata", model.metadata, array_hook)
    md["format"] = model.format
    md["generating_application"] = model.generating_application
    _put(md, "onnx_opset_version", model.onnx_opset_version, array_hook)
    md["graphs"] = graphs
    return {model.id: md}


__all__ = ["ONNX_FUNCTIONS", "ONNX_OPSET", "TUPLE_VALUED", "MAX_CONSTANTS", "onnx_input_names",
           "expression_shape", "free_names", "matmul_shape", "dot_shape", "reduce_shape",
           "transpose_shape", "reshape_shape", "index_shape", "model_to_dict"]
