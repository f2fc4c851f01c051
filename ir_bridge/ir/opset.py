"""The canonical op table of the IR, with ONNX names and semantics where ONNX has the op.

Conventions that differ from ONNX, all deliberate:

* Weights are node ``params``, not inputs: ``Gemm.W`` is ``(K, N)`` and multiplies the
  *last* axis of an input of any rank (Keras ``Dense`` semantics; ONNX ``Gemm`` is the 2-D
  case).  ``Conv.W`` is ``(M, C/group, *kernel)`` and ``ConvTranspose.W`` is
  ``(C, M/group, *kernel)`` whatever the data layout.
* Spatial ops carry ``layout`` (``NHWC`` or ``NCHW``); ``pads`` are ONNX-style
  ``[begin..., end...]`` over the spatial axes only.
* ``Gemm``/``Conv``/``ConvTranspose`` take a fused ``activation`` (an activation op name)
  with its ``activation_attrs``; the frontends never set it, ``fuse-activation`` does.
* ``Relu`` takes Keras's ``negative_slope``/``max_value``/``threshold``; with the defaults it
  is ONNX ``Relu``.
* Binary arithmetic may take its second operand as the constant param ``B``.
"""

from __future__ import annotations

import math

from .schema import REQUIRED, OpSchema, define_op
from .types import TensorType

_FUSED = {"activation": None, "activation_attrs": {}}


# ---------------------------------------------------------------- shape helpers


def _first(_node, types):
    return types[0]


def broadcast_shapes(*shapes):
    """Numpy broadcasting over shapes whose dims may be ``None`` (unknown)."""
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ValueError(f"shapes {list(shapes)} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def operand_shapes(node, types):
    """Shapes of a binary op's operands: its inputs, plus the constant param ``B`` if used."""
    shapes = [t.shape for t in types]
    if len(types) == 1 and "B" in node.params:
        shapes.append(node.params["B"].shape)
    return shapes


def _broadcast(node, types):
    return types[0].with_shape(broadcast_shapes(*operand_shapes(node, types)))


def _norm_axis(axis, rank):
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def _spatial(node, t):
    """(batch, channels, spatial dims) of an input type in the node's layout."""
    if t.rank < 3:
        raise ValueError(f"expects a batch, channel and spatial axes, got {t}")
    if node.attrs["layout"] == "NHWC":
        return t.shape[0], t.shape[-1], list(t.shape[1:-1])
    return t.shape[0], t.shape[1], list(t.shape[2:])


def _assemble(node, batch, channels, spatial):
    if node.attrs["layout"] == "NHWC":
        return (batch, *spatial, channels)
    return (batch, channels, *spatial)


def _ints(value, n, name):
    value = tuple(int(v) for v in value) if value is not None else None
    if value is not None and len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries, expected {n}")
    return value


def window_output(size, k, stride, dil, pad_begin, pad_end, auto_pad, ceil_mode=0):
    """Output length of a sliding window along one axis (None stays None)."""
    if size is None:
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return -(-size // stride)
    eff = dil * (k - 1) + 1
    span = size + pad_begin + pad_end - eff
    if span < 0:
        raise ValueError(f"window {eff} larger than padded input {size + pad_begin + pad_end}")
    return (-(-span // stride) if ceil_mode else span // stride) + 1


def same_pads(size, k, stride, dil, upper=True):
    """The (begin, end) pads of SAME padding for one axis (extra pad at the end if upper)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dil * (k - 1) + 1 - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def _window(node, types, kernel, channels_out):
    batch, _, spatial = _spatial(node, types[0])
    n = len(spatial)
    a = node.attrs
    strides = _ints(a["strides"], n, "strides") or (1,) * n
    dil = _ints(a.get("dilations"), n, "dilations") or (1,) * n
    pads = _ints(a["pads"], 2 * n, "pads") or (0,) * (2 * n)
    out = [
        window_output(spatial[i], kernel[i], strides[i], dil[i], pads[i], pads[n + i],
                      a["auto_pad"], a.get("ceil_mode", 0))
        for i in range(n)
    ]
    return types[0].with_shape(_assemble(node, batch, channels_out, out))


def _conv(node, types):
    w = node.params["W"]
    _, c, spatial = _spatial(node, types[0])
    if w.ndim != len(spatial) + 2:
        raise ValueError(f"weight of rank {w.ndim} for {len(spatial)} spatial axes")
    g = node.attrs["group"]
    if c is not None and c != w.shape[1] * g:
        raise ValueError(f"input has {c} channels, weight expects {w.shape[1] * g}")
    if "B" in node.params and node.params["B"].shape != (w.shape[0],):
        raise ValueError(f"bias shape {node.params['B'].shape} != ({w.shape[0]},)")
    return _window(node, types, w.shape[2:], w.shape[0])


def _conv_transpose(node, types):
    w = node.params["W"]
    batch, c, spatial = _spatial(node, types[0])
    n = len(spatial)
    g, a = node.attrs["group"], node.attrs
    if c is not None and c != w.shape[0]:
        raise ValueError(f"input has {c} channels, weight expects {w.shape[0]}")
    strides = _ints(a["strides"], n, "strides") or (1,) * n
    dil = _ints(a["dilations"], n, "dilations") or (1,) * n
    pads = _ints(a["pads"], 2 * n, "pads") or (0,) * (2 * n)
    opad = _ints(a["output_padding"], n, "output_padding") or (0,) * n
    out = [
        None if s is None else
        strides[i] * (s - 1) + opad[i] + (w.shape[2 + i] - 1) * dil[i] + 1 - pads[i] - pads[n + i]
        for i, s in enumerate(spatial)
    ]
    return types[0].with_shape(_assemble(node, batch, w.shape[1] * g, out))


def _pool(node, types):
    _, c, spatial = _spatial(node, types[0])
    kernel = _ints(node.attrs["kernel_shape"], len(spatial), "kernel_shape")
    return _window(node, types, kernel, c)


def _global_pool(node, types):
    batch, c, spatial = _spatial(node, types[0])
    return types[0].with_shape(_assemble(node, batch, c, [1] * len(spatial)))


def _gemm(node, types):
    w = node.params["W"]
    if node.attrs["flatten"] is not None:
        types = [_flatten(_AxisOnly(node.attrs["flatten"]), types)]
    k = types[0].shape[-1]
    if w.ndim != 2 or (k is not None and k != w.shape[0]):
        raise ValueError(f"input last dim {k} does not match weight {w.shape}")
    if "B" in node.params and node.params["B"].shape != (w.shape[1],):
        raise ValueError(f"bias shape {node.params['B'].shape} != ({w.shape[1]},)")
    return types[0].with_shape((*types[0].shape[:-1], w.shape[1]))


def _matmul(node, types):
    a, b = types[0].shape, types[1].shape
    if len(a) < 2 or len(b) < 2:
        raise ValueError("MatMul operands must have rank >= 2")
    if a[-1] is not None and b[-2] is not None and a[-1] != b[-2]:
        raise ValueError(f"MatMul inner dims differ: {a} @ {b}")
    batch = broadcast_shapes(a[:-2], b[:-2])
    return types[0].with_shape((*batch, a[-2], b[-1]))


def _channel_param_check(node, types, names):
    t = types[0]
    axis = _norm_axis(node.attrs["axis"], t.rank)
    c = t.shape[axis]
    for name in names:
        p = node.params.get(name)
        if p is not None and c is not None and p.shape != (c,):
            raise ValueError(f"param {name} has shape {p.shape}, expected ({c},)")
    return t


def _batchnorm(node, types):
    return _channel_param_check(node, types, ("scale", "B", "mean", "var"))


def _layernorm(node, types):
    t = types[0]
    axis = _norm_axis(node.attrs["axis"], t.rank)
    norm_shape = t.shape[axis:]
    for name in ("scale", "B"):
        p = node.params.get(name)
        if p is not None and None not in norm_shape and p.shape != tuple(norm_shape):
            raise ValueError(f"param {name} has shape {p.shape}, expected {tuple(norm_shape)}")
    return t


def _axis_check(node, types):
    _norm_axis(node.attrs["axis"], types[0].rank)
    return types[0]


def _prelu(node, types):
    broadcast_shapes(types[0].shape, node.params["slope"].shape)
    return types[0]


def _reshape(node, types):
    src = types[0].shape
    shape = [int(d) for d in node.attrs["shape"]]
    out = [src[i] if d == 0 else d for i, d in enumerate(shape)]
    if out.count(-1) > 1:
        raise ValueError(f"Reshape shape {shape} has more than one -1")
    if -1 in out:
        known = [d for d in out if d != -1]
        total = None if None in src else math.prod(src)
        if total is None or None in known:
            # The batch is unknown: infer -1 from the non-batch dims when the batch is kept.
            rest_src = src[1:] if src and src[0] is None and out and out[0] is None else None
            if rest_src is not None and None not in rest_src:
                rest = [d for d in out[1:] if d != -1]
                out[out.index(-1)] = math.prod(rest_src) // max(math.prod(rest), 1)
            else:
                out[out.index(-1)] = None
        else:
            out[out.index(-1)] = total // max(math.prod(known), 1)
    elif None not in src and None not in out and math.prod(src) != math.prod(out):
        raise ValueError(f"cannot reshape {src} into {tuple(out)}")
    return types[0].with_shape(out)


class _AxisOnly:
    """Stands in for a Flatten node inside ``Gemm``'s shape function."""

    def __init__(self, axis):
        self.attrs = {"axis": axis}


def _flatten(node, types):
    s = types[0].shape
    axis = _norm_axis(node.attrs["axis"], len(s)) if s else 0

    def prod(dims):
        return None if None in dims else math.prod(dims)

    return types[0].with_shape((prod(s[:axis]), prod(s[axis:])))


def _transpose(node, types):
    perm = node.attrs["perm"]
    s = types[0].shape
    if sorted(perm) != list(range(len(s))):
        raise ValueError(f"perm {perm} is not a permutation of rank {len(s)}")
    return types[0].with_shape(tuple(s[p] for p in perm))


def _concat(node, types):
    rank = types[0].rank
    axis = _norm_axis(node.attrs["axis"], rank)
    out = list(types[0].shape)
    for t in types[1:]:
        if t.rank != rank:
            raise ValueError("Concat inputs differ in rank")
        for i, (a, b) in enumerate(zip(out, t.shape)):
            if i == axis:
                out[i] = None if a is None or b is None else a + b
            elif a is not None and b is not None and a != b:
                raise ValueError(f"Concat inputs differ on axis {i}: {a} vs {b}")
            elif a is None:
                out[i] = b
    return types[0].with_shape(out)


def _pad(node, types):
    s = types[0].shape
    pads = _ints(node.attrs["pads"], 2 * len(s), "pads")
    n = len(s)
    return types[0].with_shape(
        tuple(None if d is None else d + pads[i] + pads[n + i] for i, d in enumerate(s))
    )


def _slice(node, types):
    s = list(types[0].shape)
    a = node.attrs
    steps = a["steps"] or [1] * len(a["axes"])
    for start, end, axis, step in zip(a["starts"], a["ends"], a["axes"], steps):
        axis = _norm_axis(axis, len(s))
        if s[axis] is not None:
            s[axis] = len(range(*slice(start, end, step).indices(s[axis])))
        elif start >= 0 and end >= 0 and step == 1 and end < 2**62:
            s[axis] = max(end - start, 0)
    return types[0].with_shape(s)


def _squeeze(node, types):
    s = types[0].shape
    axes = {_norm_axis(a, len(s)) for a in node.attrs["axes"]}
    for a in axes:
        if s[a] not in (1, None):
            raise ValueError(f"cannot squeeze axis {a} of size {s[a]}")
    return types[0].with_shape(tuple(d for i, d in enumerate(s) if i not in axes))


def _unsqueeze(node, types):
    s = list(types[0].shape)
    rank = len(s) + len(node.attrs["axes"])
    for a in sorted(_norm_axis(a, rank) for a in node.attrs["axes"]):
        s.insert(a, 1)
    return types[0].with_shape(s)


def _resize(node, types):
    s = types[0].shape
    scales = node.attrs["scales"]
    if len(scales) != len(s):
        raise ValueError(f"scales {scales} do not match rank {len(s)}")
    return types[0].with_shape(
        tuple(None if d is None else int(math.floor(d * f)) for d, f in zip(s, scales))
    )


def _gather(node, types):
    data = node.params["data"]
    axis = _norm_axis(node.attrs["axis"], data.ndim)
    out = data.shape[:axis] + types[0].shape + data.shape[axis + 1:]
    return TensorType(out, str(data.dtype))


def _input(node, _types):
    return TensorType(tuple(node.attrs["shape"]), node.attrs["dtype"])


def _constant(node, _types):
    v = node.params["value"]
    return TensorType(v.shape, str(v.dtype))


def _reduce(node, types):
    s = types[0].shape
    axes = {_norm_axis(a, len(s)) for a in node.attrs["axes"]}
    if node.attrs["keepdims"]:
        return types[0].with_shape(tuple(1 if i in axes else d for i, d in enumerate(s)))
    return types[0].with_shape(tuple(d for i, d in enumerate(s) if i not in axes))


def _getitem(node, types):
    if not isinstance(types[0], tuple):
        raise ValueError("GetItem needs a tuple-valued input")
    return types[0][node.attrs["index"]]


# ---------------------------------------------------------------- the table

_WINDOW = {"layout": REQUIRED, "strides": None, "pads": None, "auto_pad": "NOTSET"}

define_op(OpSchema("Input", "A graph input; ``shape`` has None for the batch.", _input,
                   category="source", min_inputs=0, max_inputs=0,
                   attrs={"shape": REQUIRED, "dtype": "float32"}))
define_op(OpSchema("Constant", "A computed constant (not a layer weight) held in ``value``.",
                   _constant, category="source", min_inputs=0, max_inputs=0,
                   params=("value",), required_params=("value",)))
define_op(OpSchema("Gemm", "``x @ W + B`` over the last axis, then the fused activation; with "
                   "``flatten`` set the input is first flattened to 2-D at that axis.", _gemm,
                   category="nn", attrs={"flatten": None, **_FUSED}, params=("W", "B"),
                   required_params=("W",), onnx="Gemm"))
define_op(OpSchema("MatMul", "Numpy ``matmul`` of two inputs.", _matmul, category="nn",
                   min_inputs=2, max_inputs=2, onnx="MatMul"))
define_op(OpSchema("Conv", "N-D convolution (ONNX Conv), weight ``(M, C/group, *kernel)``.",
                   _conv, category="nn", layout_sensitive=True,
                   attrs={**_WINDOW, "dilations": None, "group": 1, **_FUSED},
                   params=("W", "B"), required_params=("W",), onnx="Conv"))
define_op(OpSchema("ConvTranspose", "Transposed convolution, weight ``(C, M/group, *kernel)``.",
                   _conv_transpose, category="nn", layout_sensitive=True,
                   attrs={**_WINDOW, "dilations": None, "group": 1, "output_padding": None,
                          **_FUSED},
                   params=("W", "B"), required_params=("W",), onnx="ConvTranspose"))
define_op(OpSchema("MaxPool", "Max over sliding windows.", _pool, category="nn",
                   layout_sensitive=True,
                   attrs={**_WINDOW, "kernel_shape": REQUIRED, "ceil_mode": 0, "dilations": None},
                   onnx="MaxPool"))
define_op(OpSchema("AveragePool", "Mean over sliding windows; padding counted only if "
                   "``count_include_pad``.", _pool, category="nn", layout_sensitive=True,
                   attrs={**_WINDOW, "kernel_shape": REQUIRED, "ceil_mode": 0,
                          "count_include_pad": 0},
                   onnx="AveragePool"))
define_op(OpSchema("GlobalAveragePool", "Mean over all spatial axes (kept as size 1).",
                   _global_pool, category="nn", layout_sensitive=True,
                   attrs={"layout": REQUIRED}, onnx="GlobalAveragePool"))
define_op(OpSchema("GlobalMaxPool", "Max over all spatial axes (kept as size 1).", _global_pool,
                   category="nn", layout_sensitive=True, attrs={"layout": REQUIRED},
                   onnx="GlobalMaxPool"))
define_op(OpSchema("BatchNormalization", "Inference batch norm over channel ``axis``: "
                   "``(x - mean) / sqrt(var + epsilon) * scale + B``.", _batchnorm,
                   category="nn", attrs={"axis": 1, "epsilon": 1e-5},
                   params=("scale", "B", "mean", "var"),
                   required_params=("scale", "B", "mean", "var"), onnx="BatchNormalization"))
define_op(OpSchema("LayerNormalization", "Normalise over axes ``axis..-1``, then "
                   "``* scale + B``.", _layernorm, category="nn",
                   attrs={"axis": -1, "epsilon": 1e-5}, params=("scale", "B"),
                   onnx="LayerNormalization"))
define_op(OpSchema("Gather", "Rows of ``data`` picked by integer indices (Embedding).", _gather,
                   category="nn", attrs={"axis": 0}, params=("data",), required_params=("data",),
                   onnx="Gather"))


def _unary(name, doc, attrs=None, category="activation", onnx=None):
    define_op(OpSchema(name, doc, _first, category=category, attrs=attrs or {},
                       onnx=onnx if onnx is not None else name))


_unary("Relu", "Keras relu: ``x >= threshold ? min(x, max_value) : negative_slope * "
       "(x - threshold)``; ONNX Relu with the defaults.",
       {"negative_slope": 0.0, "max_value": None, "threshold": 0.0})
_unary("LeakyRelu", "``x if x >= 0 else alpha * x``.", {"alpha": 0.01})
_unary("Elu", "``x if x > 0 else alpha * (exp(x) - 1)``.", {"alpha": 1.0})
_unary("Selu", "Scaled ELU.", {"alpha": 1.6732632423543772, "gamma": 1.0507009873554805})
_unary("Sigmoid", "``1 / (1 + exp(-x))``.")
_unary("HardSigmoid", "``clip(alpha * x + beta, 0, 1)``.", {"alpha": 0.2, "beta": 0.5})
_unary("Tanh", "Hyperbolic tangent.")
_unary("Softplus", "``log(1 + exp(x))``.")
_unary("Softsign", "``x / (1 + |x|)``.")
_unary("Exp", "``exp(x)``.")
_unary("Gelu", "Gaussian error linear unit; ``approximate`` is 'none' or 'tanh'.",
       {"approximate": "none"})
_unary("Swish", "``x * sigmoid(alpha * x)`` (silu for alpha=1).", {"alpha": 1.0})
_unary("Mish", "``x * tanh(softplus(x))``.")
_unary("HardSwish", "``x * relu6(x + 3) / 6``.")
_unary("Clip", "Clamp to ``[min, max]`` (None: unbounded).", {"min": None, "max": None})
_unary("Identity", "The input unchanged.", category="noop")
_unary("Erf", "The error function.", category="elementwise")
_unary("Sqrt", "Square root.", category="elementwise")
_unary("Neg", "``-x``.", category="elementwise")
_unary("Abs", "``|x|``.", category="elementwise")
_unary("Log", "Natural logarithm.", category="elementwise")
_unary("Reciprocal", "``1 / x``.", category="elementwise")
_unary("Floor", "Round down.", category="elementwise")
_unary("Dropout", "Inference no-op (Dropout, GaussianNoise, …): ``kind`` names the source "
       "layer kind, ``ratio`` its rate.", {"ratio": 0.0, "kind": "Dropout"}, category="noop")
define_op(OpSchema("Softmax", "Softmax along ``axis``.", _axis_check, category="activation",
                   attrs={"axis": -1}, onnx="Softmax"))
define_op(OpSchema("LogSoftmax", "Log of softmax along ``axis``.", _axis_check,
                   category="activation", attrs={"axis": -1}, onnx="LogSoftmax"))
define_op(OpSchema("PRelu", "``x if x >= 0 else slope * x`` with a learned ``slope``.", _prelu,
                   category="activation", params=("slope",), required_params=("slope",),
                   onnx="PRelu"))

for _name, _doc in [("Add", "a + b"), ("Sub", "a - b"), ("Mul", "a * b"), ("Div", "a / b"),
                    ("Pow", "a ** b")]:
    define_op(OpSchema(_name, f"Broadcasting ``{_doc}``; ``b`` is the second input or the "
                       "constant param ``B``.", _broadcast, category="elementwise",
                       min_inputs=1, max_inputs=2, params=("B",), const_operand="B", onnx=_name))
for _name, _doc in [("Max", "Elementwise maximum"), ("Min", "Elementwise minimum"),
                    ("Mean", "Elementwise mean"), ("Sum", "Elementwise sum")]:
    define_op(OpSchema(_name, f"{_doc} of any number of broadcasting inputs.", _broadcast,
                       category="elementwise", min_inputs=1, max_inputs=None, onnx=_name))

define_op(OpSchema("Reshape", "ONNX Reshape: 0 copies the input dim, -1 is inferred.", _reshape,
                   category="shape", attrs={"shape": REQUIRED}, onnx="Reshape"))
define_op(OpSchema("Flatten", "To 2-D: dims before ``axis`` and after it multiplied.", _flatten,
                   category="shape", attrs={"axis": 1}, onnx="Flatten"))
define_op(OpSchema("Transpose", "Permute axes by ``perm``.", _transpose, category="shape",
                   attrs={"perm": REQUIRED}, onnx="Transpose"))
define_op(OpSchema("Concat", "Join inputs along ``axis``.", _concat, category="shape",
                   min_inputs=1, max_inputs=None, attrs={"axis": REQUIRED}, onnx="Concat"))
define_op(OpSchema("Pad", "Pad with ``value``; ``pads`` are ``[begin..., end...]`` over all "
                   "axes.", _pad, category="shape",
                   attrs={"pads": REQUIRED, "value": 0.0, "mode": "constant"}, onnx="Pad"))
define_op(OpSchema("Slice", "Python slicing ``starts:ends:steps`` along ``axes``.", _slice,
                   category="shape",
                   attrs={"starts": REQUIRED, "ends": REQUIRED, "axes": REQUIRED, "steps": None},
                   onnx="Slice"))
define_op(OpSchema("Squeeze", "Drop size-1 ``axes``.", _squeeze, category="shape",
                   attrs={"axes": REQUIRED}, onnx="Squeeze"))
define_op(OpSchema("Unsqueeze", "Insert size-1 ``axes``.", _unsqueeze, category="shape",
                   attrs={"axes": REQUIRED}, onnx="Unsqueeze"))
define_op(OpSchema("Resize", "Nearest-neighbour upsampling by integer per-axis ``scales``.",
                   _resize, category="shape", attrs={"scales": REQUIRED, "mode": "nearest"},
                   onnx="Resize"))
define_op(OpSchema("ReduceMean", "Mean over ``axes``.", _reduce, category="nn",
                   attrs={"axes": REQUIRED, "keepdims": 1}, onnx="ReduceMean"))
define_op(OpSchema("ReduceMax", "Max over ``axes``.", _reduce, category="nn",
                   attrs={"axes": REQUIRED, "keepdims": 1}, onnx="ReduceMax"))
define_op(OpSchema("GetItem", "Element ``index`` of a tuple-valued input.", _getitem,
                   category="other", attrs={"index": REQUIRED}, onnx=""))

#: Ops that ``fuse-activation`` may fold into a ``Gemm``/``Conv``/``ConvTranspose``.
FUSIBLE_ACTIVATIONS = frozenset(
    ["Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "Tanh", "Softplus",
     "Softsign", "Exp", "Gelu", "Swish", "Mish", "HardSwish", "Clip", "Softmax", "LogSoftmax"]
)
#: Ops that take a fused activation.
FUSION_HOSTS = frozenset(["Gemm", "Conv", "ConvTranspose"])

__all__ = ["broadcast_shapes", "operand_shapes", "same_pads", "window_output", "FUSIBLE_ACTIVATIONS",
           "FUSION_HOSTS"]
