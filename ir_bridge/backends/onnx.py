"""ONNX backend: an NCHW IR graph -> ``onnx.ModelProto`` (opsets 13..28), run by onnxruntime.

``emit`` walks the graph in topological order and hands each node to the handler registered
for its op, as tf2onnx's ``handler.py`` does: a handler is registered with the first opset
it applies to (``@_op("Gelu", since=20)``) and, for a target opset, the newest handler at or
below it wins.  That is where an opset's missing ops are decomposed:

* ``Gelu`` through ``Erf``/``Tanh`` below opset 20; ``Mish`` through ``Softplus``/``Tanh``
  below 18; ``HardSwish`` through ``HardSigmoid`` below 14; ``LayerNormalization`` through
  ``ReduceMean``/``Sqrt`` below 17; ``Swish`` always through ``Sigmoid`` (onnxruntime has
  no kernel for opset 24's ``Swish``);
* Keras's ``relu`` (``negative_slope``/``max_value``/``threshold``) through ``LeakyRelu``,
  ``Clip``, ``Where``;
* ``Gemm`` on an N-D input through ``MatMul`` + ``Add``, Gemm's ``flatten`` through
  ``Flatten``, BatchNormalization on another axis than 1 through ``Mul`` + ``Add``;
* a fused activation becomes a node of its own after its host.

Opsets below 13 are refused: Softmax's axis, Squeeze's axes and Clip's bounds changed
meaning or place there, and every runtime that matters reads 13.  Weights are initializers
(never graph inputs); shape-like operands (Reshape shape, Pad pads, Resize scales, Slice
starts…, Squeeze/Unsqueeze/ReduceMean axes where the opset wants an input) are int64/float
initializers.  Node and tensor names come from the IR node names (themselves from the source
layers): the node computing IR value ``conv_1`` outputs tensor ``conv_1``, a fused activation
reads ``conv_1/linear``, helper tensors are ``<node>/<what>``.  The batch dimension is the
symbolic ``batch``.  Every model passes ``onnx.checker.check_model(full_check=True)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from .._lazy import require
from ..errors import InvalidModelError, IRBridgeError, UnsupportedLayerError
from ..ir.graph import fresh_name
from ..ir.schema import get_schema
from ..registry import register_backend

#: The ONNX opset written when none is asked for.
DEFAULT_OPSET = 17
#: The oldest opset written (Softmax, Squeeze, Clip took their present form at 13).
MIN_OPSET = 13
#: The newest opset written: every handler is tested to load and run in onnxruntime 1.32
#: at every opset up to here (the newest onnx 1.23 defines).
MAX_OPSET = 28

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min

Handler = Callable[["_Emitter", object, list, str], object]
_HANDLERS: dict[str, list[tuple[int, Handler]]] = {}


def _op(*ops: str, since: int = MIN_OPSET):
    """Register a handler ``fn(emitter, node, input_names, out) -> out`` for IR ``ops`` from
    opset ``since`` on."""

    def wrap(fn):
        for op in ops:
            _HANDLERS.setdefault(op, []).append((since, fn))
            _HANDLERS[op].sort(key=lambda item: item[0])
        return fn

    return wrap


def handler_for(op: str, opset: int) -> Handler | None:
    """The handler of IR ``op`` for ``opset`` (newest ``since`` <= opset), or None."""
    best = None
    for since, fn in _HANDLERS.get(op, ()):
        if since <= opset:
            best = fn
    return best


def supported_ops() -> list[str]:
    """IR ops this backend emits."""
    return sorted(_HANDLERS)


# ---------------------------------------------------------------- the emitter


class _Emitter:
    """Collects ONNX nodes and initializers for one graph; knows the target opset."""

    def __init__(self, graph, opset: int):
        self.onnx = require("onnx", "onnx")
        self.graph = graph
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[str, object] = {}  # IR node name -> ONNX tensor name (or a list)
        self._used = {n.name for n in graph}

    def unique(self, base: str) -> str:
        """A tensor name not used yet, derived from ``base``."""
        name = fresh_name(base, self._used)
        self._used.add(name)
        return name

    def tmp(self, node, what: str) -> str:
        """A fresh helper tensor name ``<node>/<what>``."""
        return self.unique(f"{node.name}/{what}")

    def init(self, name: str, value, dtype=None) -> str:
        """Add initializer ``value`` under a fresh name derived from ``name``; return it."""
        value = np.asarray(value)
        if dtype is not None:
            value = value.astype(dtype)
        elif value.dtype == np.float64:
            value = value.astype(np.float32)
        name = self.unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def param(self, node, key: str, dtype=None) -> str:
        """Initializer for ``node.params[key]``, named ``<node>/<key>``."""
        return self.init(f"{node.name}/{key}", node.params[key], dtype)

    def scalar(self, node, what: str, value, like: str | None = None) -> str:
        """A 0-d initializer in the dtype of IR value ``like`` (float32 by default)."""
        return self.init(f"{node.name}/{what}", np.asarray(value, dtype=self.dtype(like)))

    def ints(self, node, what: str, values) -> str:
        """A 1-D int64 initializer (shapes, axes, pads), clamped to the int64 range."""
        arr = np.asarray([min(max(int(v), _INT64_MIN), _INT64_MAX) for v in values], np.int64)
        return self.init(f"{node.name}/{what}", arr)

    def add(self, op_type: str, inputs, output, **attrs):
        """Append an ONNX node (named after its first output); returns the output(s)."""
        outputs = [output] if isinstance(output, str) else list(output)
        for o in outputs:
            self._used.add(o)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outputs,
                                                     name=outputs[0], **attrs))
        return output

    def type(self, ir_name: str):
        """The IR type of IR value ``ir_name``."""
        return self.graph.node(ir_name).type

    def rank(self, ir_name: str) -> int:
        """The rank of IR value ``ir_name``."""
        return self.type(ir_name).rank

    def dtype(self, ir_name: str | None):
        """The numpy dtype of IR value ``ir_name`` (float32 when None)."""
        return np.dtype("float32") if ir_name is None else np.dtype(self.type(ir_name).dtype)


def _float_attrs(**kw):
    return {k: float(v) for k, v in kw.items()}


# ---------------------------------------------------------------- nn ops


@_op("Gemm")
def _gemm(em, node, xs, out):
    x, src = xs[0], node.inputs[0]
    rank = em.rank(src)
    axis = node.attrs["flatten"]
    if axis is not None and not (rank == 2 and axis % rank == 1):
        x = em.add("Flatten", [x], em.tmp(node, "flatten"), axis=int(axis))
        rank = 2
    w = em.param(node, "W")
    b = [em.param(node, "B")] if "B" in node.params else []
    if rank == 2:
        return em.add("Gemm", [x, w, *b], out)
    if not b:
        return em.add("MatMul", [x, w], out)
    y = em.add("MatMul", [x, w], em.tmp(node, "matmul"))
    return em.add("Add", [y, *b], out)


@_op("MatMul")
def _matmul(em, node, xs, out):
    return em.add("MatMul", xs, out)


def _window_attrs(node, kernel):
    a = node.attrs
    n = len(kernel)
    attrs = {"kernel_shape": [int(k) for k in kernel]}
    if a.get("strides") and any(int(s) != 1 for s in a["strides"]):
        attrs["strides"] = [int(s) for s in a["strides"]]
    if a.get("dilations") and any(int(d) != 1 for d in a["dilations"]):
        attrs["dilations"] = [int(d) for d in a["dilations"]]
    if a.get("auto_pad", "NOTSET") != "NOTSET":
        attrs["auto_pad"] = a["auto_pad"]
    elif a.get("pads") and any(int(p) for p in a["pads"]):
        attrs["pads"] = [int(p) for p in a["pads"]]
    assert len(attrs["kernel_shape"]) == n
    return attrs


def _check_nchw(node):
    if node.attrs.get("layout", "NCHW") != "NCHW":
        raise IRBridgeError(f"node {node.name!r}: the ONNX backend needs NCHW, got "
                            f"{node.attrs['layout']}; run the 'layout-nchw' pass first "
                            "(ir_bridge.emit does)")


@_op("Conv")
def _conv(em, node, xs, out):
    _check_nchw(node)
    attrs = _window_attrs(node, node.params["W"].shape[2:])
    if node.attrs["group"] != 1:
        attrs["group"] = int(node.attrs["group"])
    b = [em.param(node, "B")] if "B" in node.params else []
    return em.add("Conv", [xs[0], em.param(node, "W"), *b], out, **attrs)


@_op("ConvTranspose")
def _conv_transpose(em, node, xs, out):
    _check_nchw(node)
    attrs = _window_attrs(node, node.params["W"].shape[2:])
    if node.attrs["auto_pad"] != "NOTSET":
        raise IRBridgeError(f"node {node.name!r}: ConvTranspose with auto_pad is not emitted; "
                            "give explicit pads")
    if node.attrs["group"] != 1:
        attrs["group"] = int(node.attrs["group"])
    if node.attrs["output_padding"] and any(node.attrs["output_padding"]):
        attrs["output_padding"] = [int(p) for p in node.attrs["output_padding"]]
    b = [em.param(node, "B")] if "B" in node.params else []
    return em.add("ConvTranspose", [xs[0], em.param(node, "W"), *b], out, **attrs)


@_op("MaxPool", "AveragePool")
def _pool(em, node, xs, out):
    _check_nchw(node)
    attrs = _window_attrs(node, node.attrs["kernel_shape"])
    if node.attrs["ceil_mode"]:
        attrs["ceil_mode"] = 1
    if node.op == "AveragePool" and node.attrs["count_include_pad"]:
        attrs["count_include_pad"] = 1
    return em.add(node.op, [xs[0]], out, **attrs)


@_op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(em, node, xs, out):
    _check_nchw(node)
    return em.add(node.op, [xs[0]], out)


def _channel_shape(axis, rank):
    shape = [1] * rank
    shape[axis] = -1
    return shape


@_op("BatchNormalization")
def _batchnorm(em, node, xs, out):
    rank = em.rank(node.inputs[0])
    axis = node.attrs["axis"] % rank
    p = node.params
    if axis == 1 and rank >= 2:
        names = [em.param(node, k, np.float32) for k in ("scale", "B", "mean", "var")]
        return em.add("BatchNormalization", [xs[0], *names], out,
                      epsilon=float(node.attrs["epsilon"]))
    # Another channel axis: x * a + b with a, b precomputed as the IR kernel does.
    f32 = np.float32
    inv = (p["scale"].astype(f32) / np.sqrt(p["var"].astype(f32) + f32(node.attrs["epsilon"])))
    shift = p["B"].astype(f32) - p["mean"].astype(f32) * inv
    shape = _channel_shape(axis, rank)[1:] if axis else _channel_shape(axis, rank)
    scaled = em.add("Mul", [xs[0], em.init(f"{node.name}/scale", inv.reshape(shape))],
                    em.tmp(node, "scaled"))
    return em.add("Add", [scaled, em.init(f"{node.name}/shift", shift.reshape(shape))], out)


def _reduce_mean(em, node, x, axes, out):
    if em.opset >= 18:
        return em.add("ReduceMean", [x, em.ints(node, "axes", axes)], out, keepdims=1)
    return em.add("ReduceMean", [x], out, axes=list(axes), keepdims=1)


@_op("LayerNormalization")
def _layernorm_decomposed(em, node, xs, out):
    rank = em.rank(node.inputs[0])
    axes = list(range(node.attrs["axis"] % rank, rank))
    x = xs[0]
    mean = _reduce_mean(em, node, x, axes, em.tmp(node, "mean"))
    centered = em.add("Sub", [x, mean], em.tmp(node, "centered"))
    square = em.add("Mul", [centered, centered], em.tmp(node, "square"))
    var = _reduce_mean(em, node, square, axes, em.tmp(node, "var"))
    var_eps = em.add("Add", [var, em.scalar(node, "epsilon", node.attrs["epsilon"])],
                     em.tmp(node, "var_eps"))
    std = em.add("Sqrt", [var_eps], em.tmp(node, "std"))
    has_scale, has_bias = "scale" in node.params, "B" in node.params
    y = em.add("Div", [centered, std], out if not (has_scale or has_bias) else
               em.tmp(node, "normalized"))
    if has_scale:
        y = em.add("Mul", [y, em.param(node, "scale")], out if not has_bias else
                   em.tmp(node, "scaled"))
    if has_bias:
        y = em.add("Add", [y, em.param(node, "B")], out)
    return y


@_op("LayerNormalization", since=17)
def _layernorm(em, node, xs, out):
    rank = em.rank(node.inputs[0])
    norm_shape = em.type(node.inputs[0]).shape[node.attrs["axis"] % rank:]
    if "scale" in node.params:
        scale = em.param(node, "scale")
    elif None in norm_shape:
        return _layernorm_decomposed(em, node, xs, out)
    else:
        scale = em.init(f"{node.name}/scale", np.ones(norm_shape, np.float32))
    b = [em.param(node, "B")] if "B" in node.params else []
    return em.add("LayerNormalization", [xs[0], scale, *b], out,
                  axis=int(node.attrs["axis"]), epsilon=float(node.attrs["epsilon"]))


@_op("Gather")
def _gather(em, node, xs, out):
    idx = xs[0]
    if np.dtype(em.type(node.inputs[0]).dtype).kind not in "iu":
        # Float indices (a Keras Embedding fed floats): truncate, as the IR kernel does.
        idx = em.add("Cast", [idx], em.tmp(node, "indices"),
                     to=em.onnx.TensorProto.INT64)
    return em.add("Gather", [em.param(node, "data"), idx], out, axis=int(node.attrs["axis"]))


@_op("LRN")
def _lrn(em, node, xs, out):
    _check_nchw(node)
    a = node.attrs
    return em.add("LRN", xs, out, size=int(a["size"]),
                  **_float_attrs(alpha=a["alpha"], beta=a["beta"], bias=a["bias"]))


def _rnn_inputs(em, node, xs, keys):
    inputs = [xs[0], em.param(node, "W"), em.param(node, "R"),
              em.param(node, "B") if "B" in node.params else "", ""]
    inputs += xs[1:]
    if "P" in keys and "P" in node.params:
        inputs += [""] * (7 - len(inputs)) + [em.param(node, "P")]
    while inputs and inputs[-1] == "":
        inputs.pop()
    return inputs


def _rnn_attrs(node):
    a = node.attrs
    attrs = {"hidden_size": int(a["hidden_size"]), "direction": a["direction"]}
    if a.get("activations"):
        attrs["activations"] = list(a["activations"])
    if a.get("activation_alpha"):
        attrs["activation_alpha"] = [float(v) for v in a["activation_alpha"]]
    if a.get("activation_beta"):
        attrs["activation_beta"] = [float(v) for v in a["activation_beta"]]
    if a.get("clip") is not None:
        attrs["clip"] = float(a["clip"])
    if a.get("batch_first"):
        attrs["layout"] = 1
    return attrs


def _tuple_outputs(em, node, out, labels):
    """Output tensor names of a tuple-valued op: the name of the GetItem node reading each
    element (so no Identity is needed), else ``<out>/<label>``."""
    picked = {}
    for user in em.graph.users(node):
        if user.op == "GetItem" and user.attrs["index"] not in picked:
            picked[user.attrs["index"]] = user.name
    return [picked.get(i) or em.unique(f"{out}/{label}") for i, label in enumerate(labels)]


@_op("LSTM")
def _lstm(em, node, xs, out):
    attrs = _rnn_attrs(node)
    if node.attrs.get("input_forget"):
        attrs["input_forget"] = 1
    outs = _tuple_outputs(em, node, out, ["Y", "Y_h", "Y_c"])
    return list(em.add("LSTM", _rnn_inputs(em, node, xs, ("P",)), outs, **attrs))


@_op("GRU")
def _gru(em, node, xs, out):
    attrs = _rnn_attrs(node)
    attrs["linear_before_reset"] = int(node.attrs["linear_before_reset"])
    outs = _tuple_outputs(em, node, out, ["Y", "Y_h"])
    return list(em.add("GRU", _rnn_inputs(em, node, xs, ()), outs, **attrs))


@_op("GetItem")
def _getitem(em, node, xs, out):
    # Not a node: the tuple producer already wrote one tensor per element.
    return em.values[node.inputs[0]][node.attrs["index"]]


# ---------------------------------------------------------------- activations


_PLAIN_UNARY = ["Sigmoid", "Tanh", "Softplus", "Softsign", "Exp", "Erf", "Sqrt", "Neg", "Abs",
                "Log", "Reciprocal", "Floor"]


@_op(*_PLAIN_UNARY)
def _unary(em, node, xs, out):
    return em.add(node.op, xs, out)


@_op("Identity", "Dropout")
def _identity(em, node, xs, out):
    return em.add("Identity", xs, out)


@_op("LeakyRelu")
def _leaky(em, node, xs, out):
    return em.add("LeakyRelu", xs, out, alpha=float(node.attrs["alpha"]))


@_op("Elu")
def _elu(em, node, xs, out):
    return em.add("Elu", xs, out, alpha=float(node.attrs["alpha"]))


@_op("Selu")
def _selu(em, node, xs, out):
    return em.add("Selu", xs, out, **_float_attrs(alpha=node.attrs["alpha"],
                                                  gamma=node.attrs["gamma"]))


@_op("HardSigmoid")
def _hard_sigmoid(em, node, xs, out):
    return em.add("HardSigmoid", xs, out, **_float_attrs(alpha=node.attrs["alpha"],
                                                         beta=node.attrs["beta"]))


@_op("Softmax", "LogSoftmax")
def _softmax(em, node, xs, out):
    return em.add(node.op, xs, out, axis=int(node.attrs["axis"]))


@_op("PRelu")
def _prelu(em, node, xs, out):
    return em.add("PRelu", [xs[0], em.param(node, "slope", em.dtype(node.inputs[0]))], out)


def _clip(em, node, x, lo, hi, out):
    bounds = ["" if lo is None else em.scalar(node, "min", lo, node.inputs[0]),
              "" if hi is None else em.scalar(node, "max", hi, node.inputs[0])]
    while bounds and bounds[-1] == "":
        bounds.pop()
    return em.add("Clip", [x, *bounds], out)


@_op("Clip")
def _clip_op(em, node, xs, out):
    return _clip(em, node, xs[0], node.attrs["min"], node.attrs["max"], out)


@_op("Relu")
def _relu(em, node, xs, out):
    slope, cap, thr = (node.attrs["negative_slope"], node.attrs["max_value"],
                       node.attrs["threshold"])
    x = xs[0]
    if not slope and cap is None and not thr:
        return em.add("Relu", [x], out)
    if not thr and cap is None:
        return em.add("LeakyRelu", [x], out, alpha=float(slope))
    if not thr and not slope:
        return _clip(em, node, x, 0.0, cap, out)
    # Keras relu step for step: the positive part (x above the threshold, capped), minus
    # negative_slope times the part below the threshold.
    steps = (cap is not None) + bool(slope)
    if thr:
        above = em.add("Greater", [x, em.scalar(node, "threshold", thr, node.inputs[0])],
                       em.tmp(node, "above"))
        pos = em.add("Where", [above, x, em.scalar(node, "zero", 0.0, node.inputs[0])],
                     out if not steps else em.tmp(node, "positive"))
    else:
        pos = em.add("Relu", [x], out if not steps else em.tmp(node, "positive"))
    if cap is not None:
        steps -= 1
        pos = _clip(em, node, pos, 0.0, cap, out if not steps else em.tmp(node, "capped"))
    if slope:
        below = em.add("Sub", [em.scalar(node, "thr", thr, node.inputs[0]), x],
                       em.tmp(node, "below"))
        below = em.add("Relu", [below], em.tmp(node, "below_pos"))
        leak = em.add("Mul", [below, em.scalar(node, "slope", slope, node.inputs[0])],
                      em.tmp(node, "leak"))
        pos = em.add("Sub", [pos, leak], out)
    return pos


@_op("Gelu")
def _gelu_decomposed(em, node, xs, out):
    x = xs[0]
    like = node.inputs[0]
    if node.attrs["approximate"] == "tanh":
        cube = em.add("Mul", [x, em.add("Mul", [x, x], em.tmp(node, "square"))],
                      em.tmp(node, "cube"))
        inner = em.add("Add", [x, em.add("Mul", [cube, em.scalar(node, "c", 0.044715, like)],
                                         em.tmp(node, "cube_c"))], em.tmp(node, "inner"))
        arg = em.add("Mul", [inner, em.scalar(node, "sqrt_2_pi", math.sqrt(2 / math.pi), like)],
                     em.tmp(node, "arg"))
        core = em.add("Tanh", [arg], em.tmp(node, "tanh"))
    else:
        arg = em.add("Mul", [x, em.scalar(node, "inv_sqrt2", 1 / math.sqrt(2), like)],
                     em.tmp(node, "arg"))
        core = em.add("Erf", [arg], em.tmp(node, "erf"))
    one_plus = em.add("Add", [core, em.scalar(node, "one", 1.0, like)], em.tmp(node, "one_plus"))
    half_x = em.add("Mul", [x, em.scalar(node, "half", 0.5, like)], em.tmp(node, "half_x"))
    return em.add("Mul", [half_x, one_plus], out)


@_op("Gelu", since=20)
def _gelu(em, node, xs, out):
    return em.add("Gelu", xs, out, approximate=node.attrs["approximate"])


@_op("Swish")
def _swish(em, node, xs, out):
    # Never ONNX Swish (opset 24): onnxruntime 1.32 has no kernel for it.
    x = xs[0]
    arg = x
    if node.attrs["alpha"] != 1.0:
        arg = em.add("Mul", [x, em.scalar(node, "alpha", node.attrs["alpha"], node.inputs[0])],
                     em.tmp(node, "scaled"))
    gate = em.add("Sigmoid", [arg], em.tmp(node, "sigmoid"))
    return em.add("Mul", [x, gate], out)


@_op("Mish")
def _mish_decomposed(em, node, xs, out):
    sp = em.add("Softplus", xs, em.tmp(node, "softplus"))
    return em.add("Mul", [xs[0], em.add("Tanh", [sp], em.tmp(node, "tanh"))], out)


@_op("Mish", since=18)
def _mish(em, node, xs, out):
    return em.add("Mish", xs, out)


@_op("HardSwish")
def _hard_swish_decomposed(em, node, xs, out):
    gate = em.add("HardSigmoid", xs, em.tmp(node, "gate"), alpha=1 / 6, beta=0.5)
    return em.add("Mul", [xs[0], gate], out)


@_op("HardSwish", since=14)
def _hard_swish(em, node, xs, out):
    return em.add("HardSwish", xs, out)


# ---------------------------------------------------------------- elementwise


@_op("Add", "Sub", "Mul", "Div", "Pow")
def _binary(em, node, xs, out):
    if "B" in node.params:
        xs = [xs[0], em.param(node, "B", em.dtype(node.inputs[0]))]
    return em.add(node.op, xs, out)


@_op("Less", "Greater", "Equal", "LessOrEqual", "GreaterOrEqual", "And", "Or")
def _compare(em, node, xs, out):
    if "B" in node.params:
        xs = [xs[0], em.param(node, "B", em.dtype(node.inputs[0]))]
    return em.add(node.op, xs, out)


@_op("Not", "Where")
def _logical(em, node, xs, out):
    return em.add(node.op, xs, out)


@_op("Cast")
def _cast(em, node, xs, out):
    to = em.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(node.attrs["to"]))
    return em.add("Cast", xs, out, to=to)


@_op("Max", "Min", "Mean", "Sum")
def _variadic(em, node, xs, out):
    return em.add(node.op, xs, out)


# ---------------------------------------------------------------- shape ops


@_op("Reshape")
def _reshape(em, node, xs, out):
    return em.add("Reshape", [xs[0], em.ints(node, "shape", node.attrs["shape"])], out)


@_op("Flatten")
def _flatten(em, node, xs, out):
    return em.add("Flatten", xs, out, axis=int(node.attrs["axis"]))


@_op("Transpose")
def _transpose(em, node, xs, out):
    return em.add("Transpose", xs, out, perm=[int(p) for p in node.attrs["perm"]])


@_op("Concat")
def _concat(em, node, xs, out):
    return em.add("Concat", xs, out, axis=int(node.attrs["axis"]))


@_op("Pad")
def _pad(em, node, xs, out):
    mode = node.attrs["mode"]
    inputs = [xs[0], em.ints(node, "pads", node.attrs["pads"])]
    if mode == "constant":
        inputs.append(em.scalar(node, "value", node.attrs["value"], node.inputs[0]))
    return em.add("Pad", inputs, out, mode=mode)


@_op("Slice")
def _slice(em, node, xs, out):
    a = node.attrs
    inputs = [xs[0], em.ints(node, "starts", a["starts"]), em.ints(node, "ends", a["ends"]),
              em.ints(node, "axes", a["axes"])]
    if a["steps"] and any(int(s) != 1 for s in a["steps"]):
        inputs.append(em.ints(node, "steps", a["steps"]))
    return em.add("Slice", inputs, out)


@_op("Squeeze", "Unsqueeze")
def _squeeze(em, node, xs, out):
    return em.add(node.op, [xs[0], em.ints(node, "axes", node.attrs["axes"])], out)


@_op("Resize")
def _resize(em, node, xs, out):
    scales = em.init(f"{node.name}/scales", np.asarray(node.attrs["scales"], np.float32))
    # asymmetric + floor is exactly numpy's repeat for integer upscaling.
    return em.add("Resize", [xs[0], "", scales], out, mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@_op("ReduceMean", "ReduceMax")
def _reduce_attr(em, node, xs, out):
    return em.add(node.op, xs, out, axes=[int(a) for a in node.attrs["axes"]],
                  keepdims=int(node.attrs["keepdims"]))


@_op("ReduceMean", "ReduceMax", since=18)
def _reduce_input(em, node, xs, out):
    return em.add(node.op, [xs[0], em.ints(node, "axes", node.attrs["axes"])], out,
                  keepdims=int(node.attrs["keepdims"]))


# ---------------------------------------------------------------- the model


def _value_info(em, name: str, t):
    dims = [("batch" if i == 0 else f"{name}_dim{i}") if d is None else int(d)
            for i, d in enumerate(t.shape)]
    elem = em.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
    return em.onnx.helper.make_tensor_value_info(name, elem, dims)


def max_opset() -> int:
    """The newest opset this backend writes with the installed onnx."""
    onnx = require("onnx", "onnx")
    return min(MAX_OPSET, onnx.defs.onnx_opset_version())


def _check_opset(opset) -> int:
    opset = DEFAULT_OPSET if opset is None else int(opset)
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise IRBridgeError(f"ONNX opset {opset} is not supported: ir_bridge writes opsets "
                            f"{MIN_OPSET}..{newest} (Softmax/Squeeze/Clip changed meaning at "
                            f"13; {newest} is the newest tested with onnxruntime)")
    return opset


def _check_supported(graph, opset):
    missing = {}
    for node in graph:
        if node.op in ("Input", "Constant"):
            continue
        ops = [node.op]
        if node.attrs.get("activation"):
            ops.append(node.attrs["activation"])
        for op in ops:
            if handler_for(op, opset) is None:
                missing.setdefault(op, []).append(node.name)
    if missing:
        listing = "; ".join(f"{op}: {', '.join(names)}" for op, names in sorted(missing.items()))
        raise UnsupportedLayerError(
            f"the ONNX backend cannot emit {sum(map(len, missing.values()))} node(s): "
            f"{listing}. Supported IR ops: {', '.join(supported_ops())}",
            [(n, op) for op, names in missing.items() for n in names])


def to_onnx(graph, opset: int | None = None, check: bool = True):
    """Translate an NCHW IR ``graph`` into an ``onnx.ModelProto`` for ``opset``.

    ``check`` runs ``onnx.checker.check_model(full_check=True)`` (shape inference included)
    and raises ``InvalidModelError`` if the model fails it.
    """
    opset = _check_opset(opset)
    _check_supported(graph, opset)
    em = _Emitter(graph, opset)
    onnx = em.onnx
    inputs = []
    for node in graph:
        if node.op == "Input":
            em.values[node.name] = node.name
            inputs.append(_value_info(em, node.name, node.type))
        elif node.op == "Constant":
            em._used.discard(node.name)
            em.values[node.name] = em.init(node.name, node.params["value"])
        else:
            xs = [em.values[i] for i in node.inputs]
            act = node.attrs.get("activation")
            out = em.tmp(node, "linear") if act else node.name
            em._used.add(node.name)
            first = len(em.nodes)
            result = handler_for(node.op, opset)(em, node, xs, out)
            if act:
                act_node = _activation_node(node)
                result = handler_for(act, opset)(em, act_node, [result], node.name)
            em.values[node.name] = result
            for made in em.nodes[first:]:
                made.doc_string = f"IR {node.op} {node.name!r}" + (
                    f" from {node.origin!r}" if node.origin and node.origin != node.name else "")
    outputs = []
    fixed = {n.name for n in graph.inputs} | {i.name for i in em.initializers}
    for name in graph.output_names:
        tensor = em.values[name]
        if tensor in fixed:
            # A graph input, a constant or an output already listed: copy it.
            tensor = em.add("Identity", [tensor], em.unique(f"{name}/output"))
        elif tensor != name:
            # An alias (GetItem): give the tensor the IR node's name.
            tensor = em.values[name] = em.add("Identity", [tensor], name)
        fixed.add(tensor)
        outputs.append(_value_info(em, tensor, graph.node(name).type))
    g = onnx.helper.make_graph(em.nodes, _safe_graph_name(graph.name), inputs, outputs,
                               initializer=em.initializers)
    em.initializers.clear()  # make_graph copied them: do not hold every weight twice
    imports = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(g, opset_imports=imports, producer_name="ir_bridge",
                                   producer_version=_version())
    model.ir_version = onnx.helper.find_min_ir_version_for(imports)
    props = {k: str(v) for k, v in graph.meta.items() if isinstance(v, (str, int, float))}
    if props:
        onnx.helper.set_model_props(model, props)
    if check:
        _run_checker(onnx, model, opset)
    return model


def _run_checker(onnx, model, opset):
    """``onnx.checker.check_model(full_check=True)`` on a ModelProto or its serialised
    bytes (which saves the checker serialising it again); ``InvalidModelError`` if it
    fails."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # checker errors are several classes across versions
        raise InvalidModelError(f"the emitted ONNX model fails onnx.checker at opset "
                                f"{opset}: {exc}") from exc


def _activation_node(host):
    from ..ir.node import Node

    act = host.attrs["activation"]
    attrs = get_schema(act).fill_attrs(host.attrs.get("activation_attrs") or {})
    return Node(host.name, act, (host.name,), attrs, {}, host.type, host.origin)


def _safe_graph_name(name: str) -> str:
    return name or "model"


def _version() -> str:
    from .. import __version__

    return __version__


@register_backend("onnx", suffixes=(".onnx",), layout="NCHW", runner=lambda m: runner(m),
                  description="ONNX ModelProto (.onnx), opsets 13..28, run by onnxruntime.")
def emit(graph, path=None, *, opset: int | None = None, check: bool = True, **_options):
    """Emit the IR ``graph`` (NCHW, as ``ir_bridge.emit`` prepares it) as an
    ``onnx.ModelProto``; write it atomically to ``path`` when given.  Returns the model.

    ``opset`` is the ONNX opset (default 17, 13..28); ``check`` runs the full ONNX checker.
    """
    if path is None:
        return to_onnx(graph, opset=opset, check=check)
    from ..io import atomic_write

    # Serialise once: the checker reads the same bytes that are written (checking the
    # ModelProto would serialise it a second time: one more copy of every weight).
    model = to_onnx(graph, opset=opset, check=False)
    data = model.SerializeToString()
    if check:
        _run_checker(require("onnx", "onnx"), data, _check_opset(opset))
    with atomic_write(Path(path)) as f:
        f.write(data)
    return model


# ---------------------------------------------------------------- runtime

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
              "tensor(float16)": np.float16, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def session(model_or_path):
    """An onnxruntime CPU ``InferenceSession`` for a path, bytes or ``onnx.ModelProto``;
    a file onnxruntime cannot read raises ``InvalidModelError`` naming it."""
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if isinstance(model_or_path, (str, Path)):
        src, where = str(model_or_path), str(model_or_path)
    elif isinstance(model_or_path, bytes):
        src, where = model_or_path, "<bytes>"
    else:
        src, where = model_or_path.SerializeToString(), "<onnx.ModelProto>"
    try:
        return ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception classes
        raise InvalidModelError(f"onnxruntime cannot load {where}: {exc}") from exc


def runner(model_or_path):
    """``fn(list of arrays) -> list of arrays`` running an ONNX model in onnxruntime."""
    sess = session(model_or_path)
    names = [i.name for i in sess.get_inputs()]
    types = [_ORT_TYPES.get(i.type) for i in sess.get_inputs()]

    def run(inputs):
        if len(inputs) != len(names):
            raise IRBridgeError(f"the ONNX model takes {len(names)} input(s) {names}, "
                                f"got {len(inputs)}")
        feed = {n: np.asarray(x, dtype=t) if t is not None else np.asarray(x)
                for n, x, t in zip(names, inputs, types)}
        return [np.asarray(y) for y in sess.run(None, feed)]

    return run
