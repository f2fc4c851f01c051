"""Turn an IR graph into the source of a standalone NumPy module plus its weights.

The generated module imports only ``numpy`` (and ``os`` to find its weights).  It holds one
line of straight-line code per IR node inside ``predict(...)``, a handful of helper
functions (only those the model uses), and loads its weights from the ``.npz`` file that
has the same stem, with ``allow_pickle=False``.

Work that depends only on the graph is done here, once, not in the generated code on every
call: convolution weights are laid out as im2col matrices, padding amounts are resolved from
the (static) spatial shapes, average-pool divisors and batch-norm scales are precomputed.

Every spatial op is expected in NHWC, the layout the backend declares; ``api.emit`` runs the
layout pass before handing the graph over.  An op the generator does not know makes
:func:`generate` raise one :class:`~ir_bridge.errors.UnsupportedLayerError` naming every
such node, before anything is written.
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ir_bridge.errors import UnsupportedLayerError
from ir_bridge.ir.opset import same_pads, window_output

from .snippets import HELPER_NEEDS, HELPERS

#: The op name this plugin's ``numpy:fuse-add-relu`` pass introduces.
ADD_RELU = "numpy.AddRelu"

# Names the generated module defines itself; node variables must not shadow them.
_RESERVED = {"np", "os", "math", "sliding_window_view", "predict", "INPUTS", "OUTPUTS",
             "WEIGHTS"}

# ---------------------------------------------------------------- the generator


@dataclass
class GeneratedModule:
    """The result of :func:`generate`: module ``source`` and the ``weights`` it loads."""

    source: str
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


class _Writer:
    """Accumulates the body of ``predict``, the weights and the helpers it needs."""

    def __init__(self, graph):
        self.graph = graph
        self.lines: list[str] = []
        self.weights: dict[str, np.ndarray] = {}
        self.helpers: set[str] = set()
        self.uses_math = False
        self.comment = ""  # the trailing comment of the line being emitted
        self.var: dict[str, str] = {}
        taken = set(_RESERVED)
        for node in graph:
            name = re.sub(r"\W", "_", node.name)
            if not name or name[0].isdigit() or name.startswith("_"):
                name = "v_" + name
            while keyword.iskeyword(name) or name in taken:
                name += "_"
            taken.add(name)
            self.var[node.name] = name

    def helper(self, name: str) -> str:
        """Mark helper ``name`` (and what it calls) as used; returns its name."""
        self.helpers.add(name)
        for need in HELPER_NEEDS.get(name, ()):
            self.helper(need)
        if name == "_conv":
            self.uses_math = True
        return name

    def weight(self, node, key: str, value) -> str:
        """Store ``value`` in the npz under ``<var>.<key>``; returns the expression reading it."""
        value = np.asarray(value)
        if value.dtype == np.float64:
            # The kernels of ir_bridge compute in float32; so does the generated code.
            value = value.astype(np.float32)
        name = f"{self.var[node.name]}.{key}"
        self.weights[name] = np.ascontiguousarray(value)
        return f"WEIGHTS[{name!r}]"

    def emit(self, target: str, expr: str, comment: str) -> None:
        self.lines.append(f"{target} = {expr}  # {comment}")


def _spatial_shape(graph, node) -> tuple[int, ...]:
    """The static spatial dims of ``node``'s first input (NHWC); refuses unknown ones."""
    shape = graph.node(node.inputs[0]).type.shape
    spatial = shape[1:-1]
    if None in spatial:
        raise UnsupportedLayerError(
            f"numpy backend: node {node.name!r} ({node.op}) has unknown spatial dims "
            f"{shape}; the generated code resolves padding at generation time",
            [(node.name, node.op)])
    return tuple(spatial)


def _resolve_pads(attrs, kernel, spatial, *, ceil: bool = True) -> list[tuple[int, int]]:
    """(begin, end) pads per spatial axis, as the IR kernels compute them."""
    n = len(kernel)
    strides = tuple(attrs.get("strides") or (1,) * n)
    dil = tuple(attrs.get("dilations") or (1,) * n)
    pads = tuple(attrs.get("pads") or (0,) * (2 * n))
    auto = attrs.get("auto_pad", "NOTSET")
    out = []
    for i, size in enumerate(spatial):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            b, e = same_pads(size, kernel[i], strides[i], dil[i], upper=auto == "SAME_UPPER")
        elif auto == "VALID":
            b, e = 0, 0
        else:
            b, e = pads[i], pads[n + i]
        if ceil and attrs.get("ceil_mode", 0):
            # Ceil mode keeps a last, partial window: extend the end padding to reach it.
            length = window_output(size, kernel[i], strides[i], dil[i], b, e, "NOTSET",
                                   ceil_mode=1)
            need = (length - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1
            e = max(e, need - size - b)
        out.append((int(b), int(e)))
    return out


def _window_args(attrs, kernel) -> tuple[tuple, tuple]:
    n = len(kernel)
    strides = tuple(int(s) for s in (attrs.get("strides") or (1,) * n))
    dil = tuple(int(d) for d in (attrs.get("dilations") or (1,) * n))
    return strides, dil


def _padded(w: _Writer, x: str, pads, value: str) -> str:
    if not any(b or e for b, e in pads):
        return x
    return f"{w.helper('_pad')}({x}, {tuple(pads)!r}, {value})"


def _check_layout(node) -> None:
    if node.attrs.get("layout", "NHWC") != "NHWC":
        raise UnsupportedLayerError(
            f"numpy backend: node {node.name!r} ({node.op}) is in layout "
            f"{node.attrs['layout']}; emit through ir_bridge.emit so the layout pass runs",
            [(node.name, node.op)])


# ------------------------------------------------ activations (standalone or fused)


def activation_expr(w: _Writer, op: str, attrs: dict, x: str) -> str:
    """The expression applying activation ``op`` with ``attrs`` to the expression ``x``."""
    a = attrs
    if op == "Relu":
        if not a.get("negative_slope") and a.get("max_value") is None and not a.get("threshold"):
            return f"np.maximum({x}, np.float32(0))"
        return (f"{w.helper('_relu')}({x}, {float(a.get('negative_slope') or 0.0)!r}, "
                f"{a.get('max_value')!r}, {float(a.get('threshold') or 0.0)!r})")
    if op == "Sigmoid":
        return f"{w.helper('_sigmoid')}({x})"
    if op == "Tanh":
        return f"np.tanh({x})"
    if op == "Softmax":
        return f"{w.helper('_softmax')}({x}, {int(a.get('axis', -1))})"
    if op == "LogSoftmax":
        return f"{w.helper('_log_softmax')}({x}, {int(a.get('axis', -1))})"
    if op == "LeakyRelu":
        alpha = float(a.get("alpha", 0.01))
        return f"np.where({x} >= 0, {x}, np.float32({alpha!r}) * {x})"
    if op == "Elu":
        alpha = float(a.get("alpha", 1.0))
        return (f"np.where({x} > 0, {x}, np.float32({alpha!r}) * "
                f"np.expm1(np.minimum({x}, 0)))")
    if op == "Softplus":
        return f"(np.maximum({x}, 0) + np.log1p(np.exp(-np.abs({x}))))"
    if op == "Softsign":
        return f"({x} / (1 + np.abs({x})))"
    if op == "HardSigmoid":
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        return (f"np.clip(np.float32({alpha!r}) * {x} + np.float32({beta!r}), "
                f"np.float32(0), np.float32(1))")
    if op == "Swish":
        return f"({x} * {w.helper('_sigmoid')}(np.float32({float(a.get('alpha', 1.0))!r}) * {x}))"
    if op == "Exp":
        return f"np.exp({x})"
    if op == "Clip":
        return f"np.clip({x}, {a.get('min')!r}, {a.get('max')!r})"
    raise KeyError(op)


ACTIVATIONS = ("Relu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "LeakyRelu", "Elu",
               "Softplus", "Softsign", "HardSigmoid", "Swish", "Exp", "Clip")


def _with_activation(w: _Writer, node, expr: str) -> str:
    """``expr`` followed by the node's fused activation, if it has one.

    The pre-activation value is assigned first, so the activation reads a plain name: some
    activations use their operand twice, and an operand like ``x @ W + B`` must be
    neither computed twice nor split by operator precedence.
    """
    act = node.attrs.get("activation")
    if not act:
        return expr
    var = w.var[node.name]
    w.emit(var, expr, w.comment)
    w.comment = f"fused {act}"
    return activation_expr(w, act, node.attrs.get("activation_attrs") or {}, var)


# ---------------------------------------------------------------- per-op emitters
# Each takes (writer, node, input variable names) and returns the expression of the value.


def _gemm(w, node, xs):
    x = xs[0]
    axis = node.attrs["flatten"]
    if axis == 1:
        x = f"{x}.reshape({x}.shape[0], -1)"
    elif axis is not None:
        x = f"{x}.reshape(int(np.prod({x}.shape[:{int(axis)}])), -1)"
    expr = f"{x} @ {w.weight(node, 'W', node.params['W'])}"
    if "B" in node.params:
        expr = f"{expr} + {w.weight(node, 'B', node.params['B'])}"
    return _with_activation(w, node, expr)


def _conv_weight(wt: np.ndarray, group: int) -> np.ndarray:
    """IR conv weight (M, C/group, *kernel) as im2col matrices (group, C/group * K, M/group).

    Rows follow the (channel, *kernel) order of a window view, so ``cols @ w[g]`` is the
    convolution of group ``g``.
    """
    m, cg = wt.shape[:2]
    mg = m // group
    return np.stack([wt[g * mg:(g + 1) * mg].reshape(mg, -1).T for g in range(group)])


def _conv(w, node, xs):
    _check_layout(node)
    wt = node.params["W"]
    kernel = tuple(int(k) for k in wt.shape[2:])
    spatial = _spatial_shape(w.graph, node)
    pads = _resolve_pads(node.attrs, kernel, spatial, ceil=False)
    strides, dil = _window_args(node.attrs, kernel)
    weight = w.weight(node, "W", _conv_weight(wt, int(node.attrs["group"])))
    bias = w.weight(node, "B", node.params["B"]) if "B" in node.params else "None"
    x = _padded(w, xs[0], pads, "0.0")
    expr = f"{w.helper('_conv')}({x}, {weight}, {bias}, {kernel!r}, {strides!r}, {dil!r})"
    return _with_activation(w, node, expr)


def _max_pool(w, node, xs):
    _check_layout(node)
    kernel = tuple(int(k) for k in node.attrs["kernel_shape"])
    spatial = _spatial_shape(w.graph, node)
    pads = _resolve_pads(node.attrs, kernel, spatial)
    strides, dil = _window_args(node.attrs, kernel)
    x = _padded(w, xs[0], pads, "-np.inf")
    axes = tuple(range(-len(kernel), 0))
    return f"{w.helper('_windows')}({x}, {kernel!r}, {strides!r}, {dil!r}).max(axis={axes!r})"


def _average_pool_counts(node, kernel, spatial) -> np.ndarray | None:
    """How many values each output window averages (None: always ``prod(kernel)``)."""
    full = _resolve_pads(node.attrs, kernel, spatial)
    if not any(b or e for b, e in full):
        return None
    n = len(kernel)
    strides, dil = _window_args(node.attrs, kernel)
    ones = np.ones((1, *spatial, 1), dtype=np.float32)
    if node.attrs["count_include_pad"]:
        # Explicit padding counts, the ceil-mode extension beyond it does not.
        base = _resolve_pads(node.attrs, kernel, spatial, ceil=False)
        ones = np.pad(ones, [(0, 0), *base, (0, 0)], constant_values=1.0)
        extra = [(f[0] - b[0], f[1] - b[1]) for f, b in zip(full, base)]
        ones = np.pad(ones, [(0, 0), *extra, (0, 0)], constant_values=0.0)
    else:
        ones = np.pad(ones, [(0, 0), *full, (0, 0)], constant_values=0.0)
    view = np.lib.stride_tricks.sliding_window_view(
        ones, tuple(d * (k - 1) + 1 for k, d in zip(kernel, dil)), axis=tuple(range(1, n + 1)))
    view = view[(slice(None), *(slice(None, None, s) for s in strides), slice(None),
                 *(slice(None, None, d) for d in dil))]
    return view.sum(axis=tuple(range(-n, 0))).astype(np.float32)


def _average_pool(w, node, xs):
    _check_layout(node)
    kernel = tuple(int(k) for k in node.attrs["kernel_shape"])
    spatial = _spatial_shape(w.graph, node)
    pads = _resolve_pads(node.attrs, kernel, spatial)
    strides, _ = _window_args(node.attrs, kernel)
    dil = (1,) * len(kernel)
    x = _padded(w, xs[0], pads, "0.0")
    axes = tuple(range(-len(kernel), 0))
    total = f"{w.helper('_windows')}({x}, {kernel!r}, {strides!r}, {dil!r}).sum(axis={axes!r})"
    counts = _average_pool_counts(node, kernel, spatial)
    if counts is None:
        return f"({total} / np.float32({math.prod(kernel)}))"
    return f"({total} / {w.weight(node, 'counts', counts)})"


def _global_pool(w, node, xs):
    _check_layout(node)
    rank = w.graph.node(node.inputs[0]).type.rank
    axes = tuple(range(1, rank - 1))
    fn = "mean" if node.op == "GlobalAveragePool" else "max"
    return f"{xs[0]}.{fn}(axis={axes!r}, keepdims=True)"


def _batchnorm(w, node, xs):
    p = node.params
    inv = p["scale"].astype(np.float32) / np.sqrt(p["var"].astype(np.float32)
                                                  + np.float32(node.attrs["epsilon"]))
    shift = p["B"].astype(np.float32) - p["mean"].astype(np.float32) * inv
    rank = w.graph.node(node.inputs[0]).type.rank
    shape = [1] * rank
    shape[node.attrs["axis"] % rank] = -1
    scale_expr = w.weight(node, "scale", inv.reshape(shape))
    shift_expr = w.weight(node, "shift", shift.reshape(shape))
    return f"{xs[0]} * {scale_expr} + {shift_expr}"


_BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "Pow": "**"}


def _binary(w, node, xs):
    other = xs[1] if len(xs) == 2 else w.weight(node, "B", node.params["B"])
    return f"{xs[0]} {_BINARY[node.op]} {other}"


def _add_relu(w, node, xs):
    # One temporary instead of two: the sum is clamped in place.
    other = xs[1] if len(xs) == 2 else w.weight(node, "B", node.params["B"])
    return f"np.maximum({xs[0]} + {other}, np.float32(0))"


_VARIADIC = {"Max": "np.maximum", "Min": "np.minimum", "Sum": "np.add"}


def _variadic(w, node, xs):
    if node.op == "Mean":
        return f"({' + '.join(xs)}) / np.float32({len(xs)})"
    expr = xs[0]
    for x in xs[1:]:
        expr = f"{_VARIADIC[node.op]}({expr}, {x})"
    return expr


def _unary_math(w, node, xs):
    fn = {"Neg": "np.negative", "Abs": "np.abs", "Sqrt": "np.sqrt", "Log": "np.log",
          "Floor": "np.floor"}[node.op]
    return f"{fn}({xs[0]})"


def _reshape(w, node, xs):
    x = xs[0]
    dims = [f"{x}.shape[{i}]" if int(d) == 0 else str(int(d))
            for i, d in enumerate(node.attrs["shape"])]
    return f"{x}.reshape(({', '.join(dims)}{',' if len(dims) == 1 else ''}))"


def _flatten(w, node, xs):
    axis = int(node.attrs["axis"])
    rank = w.graph.node(node.inputs[0]).type.rank
    axis %= max(rank, 1)
    if axis == 0:
        return f"{xs[0]}.reshape(1, -1)"
    if axis == 1:
        return f"{xs[0]}.reshape({xs[0]}.shape[0], -1)"
    return f"{xs[0]}.reshape(int(np.prod({xs[0]}.shape[:{axis}])), -1)"


def _transpose(w, node, xs):
    return f"{xs[0]}.transpose({tuple(int(p) for p in node.attrs['perm'])!r})"


def _concat(w, node, xs):
    return f"np.concatenate([{', '.join(xs)}], axis={int(node.attrs['axis'])})"


def _pad_op(w, node, xs):
    pads = [int(p) for p in node.attrs["pads"]]
    n = len(pads) // 2
    width = [(pads[i], pads[n + i]) for i in range(n)]
    mode = node.attrs["mode"]
    if mode == "constant":
        return f"np.pad({xs[0]}, {width!r}, constant_values={float(node.attrs['value'])!r})"
    return f"np.pad({xs[0]}, {width!r}, mode={mode!r})"


def _slice(w, node, xs):
    a = node.attrs
    rank = w.graph.node(node.inputs[0]).type.rank
    index = [":"] * rank
    steps = a["steps"] or [1] * len(a["axes"])
    for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], steps):
        index[int(axis) % rank] = f"{int(start)}:{int(end)}:{int(step)}"
    return f"{xs[0]}[{', '.join(index)}]"


def _squeeze(w, node, xs):
    rank = w.graph.node(node.inputs[0]).type.rank
    axes = tuple(int(a) % rank for a in node.attrs["axes"])
    return f"np.squeeze({xs[0]}, axis={axes!r})"


def _unsqueeze(w, node, xs):
    rank = w.graph.node(node.inputs[0]).type.rank + len(node.attrs["axes"])
    axes = tuple(sorted(int(a) % rank for a in node.attrs["axes"]))
    return f"np.expand_dims({xs[0]}, {axes!r})"


def _matmul(w, node, xs):
    return f"np.matmul({xs[0]}, {xs[1]})"


def _identity(w, node, xs):
    return xs[0]


def _constant(w, node, xs):
    return w.weight(node, "value", node.params["value"])


def _activation(w, node, xs):
    return activation_expr(w, node.op, node.attrs, xs[0])


EMITTERS = {
    "Gemm": _gemm, "MatMul": _matmul, "Conv": _conv,
    "MaxPool": _max_pool, "AveragePool": _average_pool,
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
    "BatchNormalization": _batchnorm,
    **{op: _binary for op in _BINARY}, ADD_RELU: _add_relu,
    **{op: _variadic for op in ("Max", "Min", "Sum", "Mean")},
    **{op: _unary_math for op in ("Neg", "Abs", "Sqrt", "Log", "Floor")},
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose, "Concat": _concat,
    "Pad": _pad_op, "Slice": _slice, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Identity": _identity, "Dropout": _identity, "Constant": _constant,
    **{op: _activation for op in ACTIVATIONS},
}


def supported_ops() -> list[str]:
    """The IR ops the numpy backend emits, sorted."""
    return sorted(EMITTERS)


def _refuse(graph) -> None:
    """Raise one error naming every node the generator cannot emit."""
    bad = []
    for node in graph:
        if node.op == "Input":
            continue
        if node.op not in EMITTERS:
            bad.append((node.name, node.op))
        elif node.attrs.get("activation") and node.attrs["activation"] not in ACTIVATIONS:
            bad.append((node.name, f"{node.op}+{node.attrs['activation']}"))
    if bad:
        listed = ", ".join(f"{op} (node {name!r})" for name, op in bad)
        raise UnsupportedLayerError(
            f"the numpy backend cannot emit {listed}; it supports: {', '.join(supported_ops())}",
            bad)


def _last_uses(nodes, outputs) -> dict[str, list[str]]:
    """For each node, the values whose last reader it is (so the code can ``del`` them)."""
    last: dict[str, str] = {}
    for node in nodes:
        for i in node.inputs:
            last[i] = node.name
    frees: dict[str, list[str]] = {}
    for value, reader in last.items():
        if value not in outputs:
            frees.setdefault(reader, []).append(value)
    return frees


def generate(graph, *, weights_name: str | None = None) -> GeneratedModule:
    """Generate the standalone module for ``graph`` (spatial ops in NHWC).

    ``weights_name`` fixes the weights file the module loads; by default it loads the
    ``.npz`` beside itself with the same stem, so renaming both files together keeps
    it working.  Returns a :class:`GeneratedModule`; raises ``UnsupportedLayerError`` naming
    every op it cannot emit.
    """
    _refuse(graph)
    w = _Writer(graph)
    nodes = list(graph)
    outputs = list(graph.output_names)
    frees = _last_uses(nodes, set(outputs))
    args = [w.var[n.name] for n in graph.inputs]
    for node in graph.inputs:
        shape = tuple(node.type.shape)
        w.lines.append(f"{w.var[node.name]} = {w.helper('_check_input')}("
                       f"{w.var[node.name]}, {shape!r}, {node.type.dtype!r}, {node.name!r})")
    for node in nodes:
        if node.op == "Input":
            continue
        xs = [w.var[i] for i in node.inputs]
        origin = f" (layer {node.origin})" if node.origin and node.origin != node.name else ""
        w.comment = f"{node.op} {node.name}{origin}"
        expr = EMITTERS[node.op](w, node, xs)
        w.emit(w.var[node.name], expr, w.comment)
        dead = [w.var[v] for v in frees.get(node.name, []) if w.graph.node(v).op != "Input"]
        if dead:
            # Release intermediates at their last use, as the IR interpreter does.
            w.lines.append(f"del {', '.join(dead)}")
    result = [w.var[o] for o in outputs]
    returned = result[0] if len(result) == 1 else f"({', '.join(result)},)"
    w.lines.append(f"return {returned}")
    return GeneratedModule(_assemble(graph, w, args, weights_name), w.weights,
                           [n.name for n in graph.inputs], outputs)


def _assemble(graph, w: _Writer, args: list[str], weights_name: str | None) -> str:
    inputs = tuple((n.name, tuple(n.type.shape), n.type.dtype) for n in graph.inputs)
    outputs = tuple(graph.output_names)
    out_doc = "the output array" if len(outputs) == 1 else f"a tuple of {len(outputs)} arrays"
    in_doc = ", ".join(f"{n} {dtype}[{', '.join('batch' if d is None else str(d) for d in s)}]"
                       for n, s, dtype in inputs)
    weights_path = ("os.path.splitext(os.path.abspath(__file__))[0] + '.npz'"
                    if weights_name is None else
                    f"os.path.join(os.path.dirname(os.path.abspath(__file__)), {weights_name!r})")
    head = [
        f'"""{graph.name}: generated by ir_bridge_numpy from the ir_bridge IR.',
        "",
        "Plain numpy: it needs neither ir_bridge nor a deep-learning framework. The weights",
        "live in the .npz file beside this module and are read with allow_pickle=False.",
        "",
        f"predict({', '.join(args)}) takes {in_doc} and returns {out_doc}.",
        '"""',
        "",
        "import math" if w.uses_math else None,
        "import os",
        "",
        "import numpy as np",
        "from numpy.lib.stride_tricks import sliding_window_view"
        if "_windows" in w.helpers else None,
        "",
        f"INPUTS = {inputs!r}",
        f"OUTPUTS = {outputs!r}",
        "",
        f"with np.load({weights_path}, allow_pickle=False) as _npz:",
        "    WEIGHTS = {key: _npz[key] for key in _npz.files}",
    ]
    lines = [ln for ln in head if ln is not None]
    for name in sorted(w.helpers):
        lines += ["", "", HELPERS[name].strip("\n")]
    lines += ["", "", f"def predict({', '.join(args)}):",
              f'    """Run {graph.name} on one batch; returns {out_doc}."""']
    lines += [f"    {ln}" for ln in w.lines]
    return "\n".join(lines) + "\n"
