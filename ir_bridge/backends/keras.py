"""Keras backend: an NHWC IR graph -> a functional ``keras.Model`` of built-in layers.

The graph is walked in topological order and each node (or a short run of nodes that one
Keras layer computes, see below) becomes one layer call, built from a table of handlers
(op -> function).  Layer names come from the nodes' ``origin`` (the source layer), made
unique and Keras-safe; weights are copied with ``set_weights`` in Keras's own layout, so a
Keras -> IR -> Keras trip gives back the same arrays bit for bit.

Layer mapping (built-in Keras layers wherever one computes the op exactly):

=========================  =====================================================
IR                         Keras
=========================  =====================================================
Gemm (+ activation)        Dense(activation=...), a Flatten first when ``flatten=1``
Conv                       Conv1D/2D/3D (``groups``), DepthwiseConv1D/2D, or
                           SeparableConv1D/2D for depthwise -> pointwise of one layer;
                           ZeroPadding before it when the pads are not 'same'/'valid'
                           (or 'causal', which only Conv1D takes); a grouped Conv2D
                           for a depthwise one with unequal strides (TensorFlow's
                           depthwise kernel needs equal ones); strides > 1 with
                           dilations > 1 (which Keras refuses): stride 1, then a
                           MaxPooling(1, strides) keeps every stride-th output
ConvTranspose              Conv1D/2D/3DTranspose
MaxPool / AveragePool      MaxPooling / AveragePooling 1D/2D/3D
(3-D, 'same' pads)         Cropping3D first where a window is smaller than its stride
                           (TensorFlow's 3-D 'same' kernels would shift the windows)
GlobalAvg/MaxPool          GlobalAverage/MaxPooling 1D/2D/3D (keepdims; without
                           when followed by the layer's own Flatten)
BatchNormalization         BatchNormalization;  LayerNormalization likewise
Gather (2-D table)         Embedding
Relu / LeakyRelu / Elu     ReLU / LeakyReLU / ELU;  PRelu -> PReLU;  Softmax -> Softmax
other activations          Activation("<keras name>")
Add/Sub/Mul (2 inputs)     Add / Subtract / Multiply;  Max/Min/Mean/Sum -> Maximum/
                           Minimum/Average/Add;  Concat -> Concatenate
Mul/Add by a constant      Rescaling;  Sub then Div of one layer -> Normalization
Reshape/Flatten/Transpose  Reshape / Flatten / Permute;  Squeeze/Unsqueeze -> Reshape
Pad / Slice / Resize       ZeroPadding / Cropping / UpSampling 1D/2D/3D
ReduceMean/Max (spatial)   GlobalAverage/MaxPooling(keepdims)
Identity / Dropout         Identity / Dropout (or the recorded Dropout-like class)
=========================  =====================================================

A fused ``activation`` becomes the layer's ``activation`` argument when Keras has a name
for it, else a separate activation layer.  Without fusion (``passes="none"``) an activation
node with the same origin as the Dense/Conv before it is still folded back into that layer,
so a Keras model comes back with the same layer types.  ``node.meta["keras_class"]``, when a
frontend records it, picks between equivalent spellings (``Activation("relu")`` or
``ReLU()``).

Ops without an exact built-in layer use three tiny layers of this module, registered as
``ir_bridge>ConstantOperand`` (``x op b`` with a stored constant ``b``),
``ir_bridge>Elementwise`` (erf, sqrt, clip, hard sigmoid with other constants, …) and
``ir_bridge>TensorOp`` (pad, slice, resize, reductions, matmul that no built-in layer
expresses).
They are registered whenever keras is imported before this module, and by every call of
``emit``/``runner``; to load a saved file yourself::

    import keras, ir_bridge.backends.keras
    model = keras.models.load_model("model.keras", safe_mode=True)

(or call :func:`register_layers` first).  Never a ``Lambda`` layer.  Ops with no Keras
equivalent (``LSTM``/``GRU`` from ONNX, which are time-major tuples; ``LRN``; edge
padding; the comparisons, ``Cast`` and ``Where`` of tf2onnx-lowered graphs; a Flatten,
Transpose or Concat that moves the batch axis) raise ``UnsupportedLayerError`` listing
every such node.  A ``Constant`` may feed only binary arithmetic (it becomes the layer's
stored operand).

Keras builds and loads a functional model by walking its layers recursively, one Python
frame per layer; ``emit`` and :func:`load` raise Python's recursion limit for that step
(up to :data:`MAX_RECURSION`), so models thousands of layers deep convert.  Loading such a
file with ``keras.models.load_model`` directly needs ``sys.setrecursionlimit`` raised
first; a graph deeper than the ceiling is refused with ``UnsupportedLayerError``.
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from .._lazy import require
from ..errors import IRBridgeError, UnsupportedLayerError
from ..ir.graph import fresh_name
from ..ir.opset import same_pads
from ..registry import register_backend

_F32 = np.float32
_NAME_BAD = re.compile(r"[^0-9A-Za-z_.\-]")

# ---------------------------------------------------------------- the custom layers

_LAYERS: dict[str, type] | None = None

_UNARY = ("Erf", "Sqrt", "Neg", "Abs", "Log", "Reciprocal", "Floor", "Exp", "Sigmoid", "Tanh",
          "Softplus", "Softsign", "Clip", "HardSigmoid", "Gelu", "Swish", "Selu", "Elu",
          "LeakyRelu", "Mish", "HardSwish", "LogSoftmax", "Softmax", "Relu")
_BINARY_OPS = ("Add", "Sub", "Mul", "Div", "Pow")


def _unary_fn(ops, activations, op: str, a: dict) -> Callable:
    """The keras.ops computation of unary IR ``op`` with attributes ``a`` (a fixed table)."""
    table = {
        "Erf": ops.erf, "Sqrt": ops.sqrt, "Neg": ops.negative, "Abs": ops.abs, "Log": ops.log,
        "Reciprocal": ops.reciprocal, "Floor": ops.floor, "Exp": ops.exp,
        "Sigmoid": ops.sigmoid, "Tanh": ops.tanh, "Softplus": ops.softplus,
        "Softsign": ops.softsign, "Mish": activations.mish, "HardSwish": activations.hard_silu,
        "Clip": lambda x: _clip(ops, x, a.get("min"), a.get("max")),
        "HardSigmoid": lambda x: ops.clip(x * a["alpha"] + a["beta"], 0.0, 1.0),
        "Gelu": lambda x: activations.gelu(x, approximate=a.get("approximate") == "tanh"),
        "Swish": lambda x: x * ops.sigmoid(x * a["alpha"]),
        "Selu": lambda x: a["gamma"] * ops.where(x > 0, x, a["alpha"] * ops.expm1(x)),
        "Elu": lambda x: ops.where(x > 0, x, a["alpha"] * ops.expm1(x)),
        "LeakyRelu": lambda x: ops.where(x >= 0, x, a["alpha"] * x),
        "LogSoftmax": lambda x: ops.log_softmax(x, axis=a["axis"]),
        "Softmax": lambda x: ops.softmax(x, axis=a["axis"]),
        "Relu": lambda x: _keras_relu(ops, x, a),
    }
    return table[op]


def _keras_relu(ops, x, a):
    """The IR Relu kernel step for step (Keras's ReLU layer refuses a negative threshold)."""
    thr, cap, slope = a.get("threshold", 0.0), a.get("max_value"), a.get("negative_slope", 0.0)
    pos = ops.where(x > thr, x, 0.0) if thr else ops.maximum(x, 0.0)
    if cap is not None:
        pos = ops.clip(pos, 0.0, cap)
    if slope:
        pos = pos - slope * ops.maximum(thr - x, 0.0)
    return pos


def _clip(ops, x, lo, hi):
    if lo is not None:
        x = ops.maximum(x, lo)
    if hi is not None:
        x = ops.minimum(x, hi)
    return x


def _binary_fn(ops, op: str) -> Callable:
    return {"Add": ops.add, "Sub": ops.subtract, "Mul": ops.multiply, "Div": ops.divide,
            "Pow": ops.power}[op]


def _tensor_fn(ops, op: str, a: dict) -> Callable:
    """The keras.ops computation of a data-movement/reduction IR op (a fixed table)."""

    def pad(x):
        n = len(a["pads"]) // 2
        width = [(a["pads"][i], a["pads"][n + i]) for i in range(n)]
        mode = {"constant": "constant", "reflect": "reflect"}[a["mode"]]
        if mode == "constant":
            return ops.pad(x, width, mode=mode, constant_values=a["value"])
        return ops.pad(x, width, mode=mode)

    def resize(x):
        for axis, factor in enumerate(a["scales"]):
            if int(factor) != 1:
                x = ops.repeat(x, int(factor), axis=axis)
        return x

    def slice_(x):
        idx = [slice(None)] * len(x.shape)
        steps = a["steps"] or [1] * len(a["axes"])
        for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], steps):
            idx[axis] = slice(start, None if end >= 2 ** 62 else end, step)
        return x[tuple(idx)]

    return {
        "Pad": pad,
        "Slice": slice_,
        "ReduceMean": lambda x: ops.mean(x, axis=tuple(a["axes"]), keepdims=bool(a["keepdims"])),
        "ReduceMax": lambda x: ops.max(x, axis=tuple(a["axes"]), keepdims=bool(a["keepdims"])),
        "MatMul": ops.matmul,
        "Resize": resize,
    }[op]


def _define_layers(keras) -> dict[str, type]:
    ops, activations = keras.ops, keras.activations

    class ConstantOperand(keras.layers.Layer):
        """``x op b`` (op: Add, Sub, Mul, Div, Pow) with a stored constant ``b``; with
        ``reverse``, ``b op x``."""

        def __init__(self, op, b_shape, b_dtype="float32", reverse=False, **kwargs):
            super().__init__(**kwargs)
            if op not in _BINARY_OPS:
                raise ValueError(f"ConstantOperand: unknown op {op!r}")
            self.op, self.b_shape, self.b_dtype = op, tuple(b_shape), b_dtype
            self.reverse = bool(reverse)
            self.b = self.add_weight(name="b", shape=self.b_shape, dtype=b_dtype,
                                     initializer="zeros", trainable=False)
            self._fn = _binary_fn(ops, op)

        def call(self, x):
            b = ops.cast(self.b, x.dtype)
            return self._fn(b, x) if self.reverse else self._fn(x, b)

        def compute_output_shape(self, input_shape):
            return _broadcast_keras(input_shape, self.b_shape)

        def get_config(self):
            return {**super().get_config(), "op": self.op, "b_shape": list(self.b_shape),
                    "b_dtype": self.b_dtype, "reverse": self.reverse}

    class Elementwise(keras.layers.Layer):
        """An elementwise IR op with no built-in Keras layer: unary ``op`` with ``attrs``,
        or binary Div/Pow (and friends) of two inputs."""

        def __init__(self, op, attrs=None, **kwargs):
            super().__init__(**kwargs)
            if op not in _UNARY and op not in _BINARY_OPS:
                raise ValueError(f"Elementwise: unknown op {op!r}")
            self.op, self.attrs = op, dict(attrs or {})
            self._fn = (_binary_fn(ops, op) if op in _BINARY_OPS
                        else _unary_fn(ops, activations, op, self.attrs))

        def call(self, inputs):
            if self.op in _BINARY_OPS:
                return self._fn(inputs[0], inputs[1])
            return self._fn(inputs)

        def compute_output_shape(self, input_shape):
            if self.op in _BINARY_OPS:
                return _broadcast_keras(*input_shape)
            return input_shape

        def get_config(self):
            return {**super().get_config(), "op": self.op, "attrs": self.attrs}

    class TensorOp(keras.layers.Layer):
        """A data-movement or reduction IR op (Pad, Slice, Resize, ReduceMean, ReduceMax,
        MatMul) that no built-in layer expresses, with the IR op's ``attrs``."""

        def __init__(self, op, attrs=None, **kwargs):
            super().__init__(**kwargs)
            if op not in ("Pad", "Slice", "ReduceMean", "ReduceMax", "MatMul", "Resize"):
                raise ValueError(f"TensorOp: unknown op {op!r}")
            self.op, self.attrs = op, dict(attrs or {})
            self._fn = _tensor_fn(ops, op, self.attrs)

        def call(self, inputs):
            if self.op == "MatMul":
                return self._fn(inputs[0], inputs[1])
            return self._fn(inputs)

        def get_config(self):
            return {**super().get_config(), "op": self.op, "attrs": self.attrs}

    layers = {"ConstantOperand": ConstantOperand, "Elementwise": Elementwise,
              "TensorOp": TensorOp}
    for name, cls in layers.items():
        registered = keras.saving.get_registered_object(f"ir_bridge>{name}")
        if registered is None:
            keras.saving.register_keras_serializable(package="ir_bridge", name=name)(cls)
        else:
            layers[name] = registered
    return layers


def _broadcast_keras(*shapes):
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + tuple(s) for s in shapes]):
        known = [d for d in dims if d is not None and d != 1]
        out.append(known[0] if known else (None if None in dims else 1))
    return tuple(out)


def register_layers() -> dict[str, type]:
    """Define and register ir_bridge's Keras layers (once); returns them by name.  Needed
    before ``keras.models.load_model`` reads a model that uses them."""
    global _LAYERS
    if _LAYERS is None:
        _LAYERS = _define_layers(require("keras", "keras"))
    return _LAYERS


if "keras" in sys.modules:  # keras is loaded already: registering costs nothing
    register_layers()


# ---------------------------------------------------------------- activations

#: IR activation op -> Keras activation name, when the IR attributes are Keras's own.
def keras_activation(op: str, attrs: dict, rank: int | None = None) -> str | None:
    """The Keras activation name computing IR ``op`` with ``attrs`` exactly, or None."""
    a = attrs or {}
    last = a.get("axis", -1) == -1 or (rank is not None and a.get("axis") == rank - 1)
    if op == "Relu":
        slope, cap, thr = a.get("negative_slope", 0.0), a.get("max_value"), a.get("threshold", 0.0)
        if not slope and not thr:
            return "relu" if cap is None else ("relu6" if cap == 6.0 else None)
        return None
    if op == "Clip":
        bounds = (a.get("min"), a.get("max"))
        return {(0.0, 6.0): "relu6", (-1.0, 1.0): "hard_tanh"}.get(bounds)
    if op in ("Softmax", "LogSoftmax"):
        return ("softmax" if op == "Softmax" else "log_softmax") if last else None
    if op == "Elu":
        return "elu" if a.get("alpha", 1.0) == 1.0 else None
    if op == "Selu":
        default = (1.6732632423543772, 1.0507009873554805)
        ok = np.allclose((a.get("alpha", default[0]), a.get("gamma", default[1])), default,
                         rtol=1e-6, atol=0)
        return "selu" if ok else None
    if op == "Gelu":
        return "gelu" if a.get("approximate", "none") == "none" else None
    if op == "Swish":
        return "silu" if a.get("alpha", 1.0) == 1.0 else None
    if op == "LeakyRelu":
        return "leaky_relu" if np.isclose(a.get("alpha"), 0.2, rtol=1e-7, atol=0) else None
    if op == "HardSigmoid":
        ok = np.isclose(a.get("alpha"), 1 / 6, rtol=1e-6, atol=0) and a.get("beta") == 0.5
        return "hard_sigmoid" if ok else None
    return {"Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus",
            "Softsign": "softsign", "Exp": "exponential", "Mish": "mish",
            "HardSwish": "hard_silu", "Identity": "linear"}.get(op)


_ACTIVATION_OPS = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "Tanh",
                   "Softplus", "Softsign", "Exp", "Gelu", "Swish", "Mish", "HardSwish", "Clip",
                   "Softmax", "LogSoftmax"}


# ---------------------------------------------------------------- the builder


class _Builder:
    """Builds the Keras graph: IR value -> Keras tensor, unique layer names."""

    def __init__(self, graph, keras):
        self.graph = graph
        self.keras = keras
        self.L = keras.layers
        self.custom = register_layers()
        self.values: dict[str, object] = {}
        self.done: set[str] = set()
        self._names: set[str] = set()
        self._weights: list[tuple[object, list]] = []

    # ------------------------------------------------------------ naming and calling

    def name(self, node, suffix: str | None = None) -> str:
        """A unique Keras-safe layer name from the node's origin (or name)."""
        base = _NAME_BAD.sub("_", node.origin or node.name) or "layer"
        if suffix:
            base = f"{base}_{suffix}"
        name = fresh_name(base, self._names)
        self._names.add(name)
        return name

    def call(self, layer, inputs, weights=None):
        """Call ``layer`` on Keras tensors; ``weights`` are set once the model is built."""
        y = layer(inputs)
        if weights is not None:
            self._weights.append((layer, [np.asarray(w) for w in weights]))
        return y

    def set_weights(self):
        for layer, weights in self._weights:
            layer.set_weights(weights)

    def x(self, node, i: int = 0):
        return self.values[node.inputs[i]]

    def tensor(self, name: str):
        """The Keras tensor of IR value ``name``, looking through a left-out Unsqueeze."""
        node = self.graph.node(name)
        if node.name in self.done and node.op == "Unsqueeze":
            return self.values[node.inputs[0]]
        return self.values[name]

    def users(self, node):
        return self.graph.users(node)

    def src(self, node, i: int = 0):
        return self.graph.node(node.inputs[i])

    def rank(self, node) -> int:
        return node.type.rank

    def follower(self, node, ops) -> object | None:
        """The single user of ``node`` if it has ``node``'s origin and an op in ``ops``,
        and ``node``'s value is needed nowhere else."""
        users = self.users(node)
        if len(users) != 1 or self.graph.is_output(node):
            return None
        user = users[0]
        if user.op in ops and user.origin == node.origin and len(user.inputs) == 1:
            return user
        return None

    # ------------------------------------------------------------ activations

    def host_activation(self, node):
        """``(keras name, extra, last)`` for a Gemm/Conv host: the Keras activation name of
        its fused activation (or of an unfused one of the same layer, ``last``), or
        ``extra = (op, attrs)`` when Keras has no name for it and a layer must follow."""
        act = node.attrs.get("activation")
        if act:
            attrs = node.attrs.get("activation_attrs") or {}
            name = keras_activation(act, attrs, self.rank(node))
            return name, None if name else (act, attrs), node
        follower = self.follower(node, _ACTIVATION_OPS)
        if follower is not None:
            name = keras_activation(follower.op, follower.attrs, self.rank(follower))
            if name is not None:
                self.done.add(follower.name)
                return name, None, follower
        return None, None, node

    def finish(self, node, y, extra, last):
        """Apply a separate activation layer if needed; record ``last``'s value."""
        if extra is not None:
            op, attrs = extra
            from ..ir.schema import get_schema

            attrs = get_schema(op).fill_attrs(attrs or {})
            y = self.activation_layer(node, op, attrs, y, suffix=op.lower())
        self.values[last.name] = y
        if last is not node:
            self.values[node.name] = y
        return y

    def activation_layer(self, node, op, attrs, x, suffix=None):
        """One Keras layer computing activation ``op`` on ``x``."""
        L = self.L
        kind = node.meta.get("keras_class") if suffix is None else None
        name = self.name(node, suffix)
        rank = len(x.shape)
        keras_name = keras_activation(op, attrs, rank)
        if kind == "Activation" and keras_name:
            return L.Activation(keras_name, name=name)(x)
        if op == "Relu" and attrs["threshold"] >= 0 and attrs["negative_slope"] >= 0 and (
                attrs["max_value"] is None or attrs["max_value"] >= 0):
            return L.ReLU(max_value=attrs["max_value"], negative_slope=attrs["negative_slope"],
                          threshold=attrs["threshold"], name=name)(x)
        if op == "LeakyRelu":
            return L.LeakyReLU(negative_slope=attrs["alpha"], name=name)(x)
        if op == "Elu":
            return L.ELU(alpha=attrs["alpha"], name=name)(x)
        if op == "Softmax" and kind == "Softmax":
            return L.Softmax(axis=attrs["axis"], name=name)(x)
        if keras_name:
            return L.Activation(keras_name, name=name)(x)
        if op == "Softmax":
            return L.Softmax(axis=attrs["axis"], name=name)(x)
        return self.custom["Elementwise"](op, _plain(attrs), name=name)(x)


def _plain(attrs: dict) -> dict:
    """Attributes as JSON-friendly values (for layer configs)."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, (np.generic,)):
            v = v.item()
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


# ---------------------------------------------------------------- padding helpers


def _known_spatial(node_type) -> list:
    return list(node_type.shape[1:-1])


def _keras_padding(b, node, kernel, strides, dilations, allow_causal=False):
    """``(padding, explicit_pairs)``: Keras 'valid'/'same'/'causal' for the node's pads, or
    'valid' with ``((begin, end), ...)`` to apply with a ZeroPadding layer first."""
    a = node.attrs
    n = len(kernel)
    auto = a.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return "valid", None
    if auto == "SAME_UPPER":
        return "same", None
    spatial = _known_spatial(b.src(node).type)
    if auto == "SAME_LOWER":
        if None in spatial:
            raise IRBridgeError(f"node {node.name!r}: SAME_LOWER padding over unknown dims")
        pads = [same_pads(spatial[i], kernel[i], strides[i], dilations[i], upper=False)
                for i in range(n)]
        pads = [p[0] for p in pads] + [p[1] for p in pads]
    else:
        pads = list(a.get("pads") or [0] * (2 * n))
    pairs = [(int(pads[i]), int(pads[n + i])) for i in range(n)]
    if not any(b_ or e for b_, e in pairs):
        return "valid", None
    if None not in spatial and pairs == [
            same_pads(spatial[i], kernel[i], strides[i], dilations[i]) for i in range(n)]:
        return "same", None
    if allow_causal and n == 1 and pairs[0] == (dilations[0] * (kernel[0] - 1), 0):
        return "causal", None
    return "valid", pairs


def _tf_same_crop(b, node, x, padding, kernel, strides, dilations):
    """``x`` cropped so that TensorFlow's 3-D ``padding='same'`` reads the IR's windows.

    Where a window is smaller than its stride, an axis's total 'same' pad is negative: the
    IR (like ONNX and 1-D/2-D TensorFlow) clamps it at zero and starts at index 0, but
    TensorFlow's 3-D kernels start the first window inside the input (the Keras frontend
    crops for the same reason).  Cutting off the trailing elements that no window reads
    makes that total zero, so both agree.  Unknown sizes cannot be cut: refused."""
    if padding != "same" or len(kernel) != 3:
        return x
    spatial = _known_spatial(b.src(node).type)
    crop = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        window = d * (k - 1) + 1
        if size is None:
            if window < s:
                raise _Refuse(f"3-D 'same' padding with a window ({window}) smaller than its "
                              f"stride ({s}) over an axis of unknown size: TensorFlow shifts "
                              "the windows by an amount that depends on the size")
            crop.append((0, 0))
            continue
        read = (-(-size // s) - 1) * s + window  # the end of the last window
        crop.append((0, max(size - read, 0)))
    if not any(end for _, end in crop):
        return x
    return b.L.Cropping3D(cropping=tuple(crop), name=b.name(node, "crop"))(x)


def _zero_padding(b, node, x, pairs):
    n = len(pairs)
    cls = getattr(b.L, f"ZeroPadding{n}D", None)
    if cls is None:
        raise IRBridgeError(f"node {node.name!r}: no ZeroPadding layer for {n} spatial axes")
    padding = pairs[0] if n == 1 else tuple(pairs)
    return cls(padding=padding, name=b.name(node, "pad"))(x)


def _check_nhwc(node):
    if node.attrs.get("layout", "NHWC") != "NHWC":
        raise IRBridgeError(f"node {node.name!r}: the Keras backend needs NHWC, got "
                            f"{node.attrs['layout']}; run the 'layout-nhwc' pass first "
                            "(ir_bridge.emit does)")


# ---------------------------------------------------------------- handlers

_HANDLERS: dict[str, Callable] = {}


def _handles(*ops):
    def wrap(fn):
        for op in ops:
            _HANDLERS[op] = fn
        return fn

    return wrap


@_handles("Gemm")
def _gemm(b, node):
    x = b.x(node)
    axis = node.attrs["flatten"]
    in_rank = b.src(node).type.rank
    if axis is not None and not (axis % in_rank == 1 and in_rank == 2):
        if axis % in_rank != 1:
            raise _Refuse(f"Gemm flattening at axis {axis} merges the batch axis")
        x = b.L.Flatten(name=b.name(node, "flatten"))(x)
    act, extra, last = b.host_activation(node)
    w = node.params["W"].astype(_F32)
    use_bias = "B" in node.params
    layer = b.L.Dense(int(w.shape[1]), activation=act, use_bias=use_bias, name=b.name(node))
    weights = [w] + ([node.params["B"].astype(_F32)] if use_bias else [])
    b.finish(node, b.call(layer, x, weights), extra, last)


def _conv_common(node):
    _check_nhwc(node)
    a = node.attrs
    w = node.params["W"]
    n = w.ndim - 2
    kernel = [int(k) for k in w.shape[2:]]
    strides = [int(s) for s in (a.get("strides") or [1] * n)]
    dil = [int(d) for d in (a.get("dilations") or [1] * n)]
    return n, kernel, strides, dil


@_handles("Conv")
def _conv(b, node):
    n, kernel, strides, dil = _conv_common(node)
    w = node.params["W"].astype(_F32)
    group = int(node.attrs["group"])
    c_in = w.shape[1] * group
    # Keras (Conv*) refuses strides > 1 together with dilations > 1, and TensorFlow's
    # depthwise kernels computed it wrongly or refused it in some Keras 3 releases: run the
    # convolution at stride 1 and keep every stride-th output (a 1-wide MaxPooling).
    subsample = strides if any(s > 1 for s in strides) and any(d > 1 for d in dil) else None
    conv_strides = [1] * n if subsample else strides
    as_depthwise = _as_depthwise(node, w, group, c_in, n, conv_strides)
    # Only Conv1D takes padding='causal' (not DepthwiseConv1D, not SeparableConv1D).
    padding, pairs = _keras_padding(b, node, kernel, strides, dil,
                                    allow_causal=n == 1 and not as_depthwise)
    if subsample and padding == "same":
        # 'same' pads depend on the stride: give the stride-s pads explicitly.
        spatial = _known_spatial(b.src(node).type)
        if None in spatial:
            raise _Refuse(f"strides {strides} with dilations {dil} and 'same' padding over "
                          "unknown spatial dims")
        padding = "valid"
        pairs = [same_pads(spatial[i], kernel[i], strides[i], dil[i]) for i in range(n)]
    x = _tf_same_crop(b, node, b.x(node), padding, kernel, conv_strides, dil)
    if pairs is not None:
        x = _zero_padding(b, node, x, pairs)
    if as_depthwise and not node.attrs.get("activation"):
        pointwise = b.follower(node, {"Conv"})
        if pointwise is not None and _is_pointwise(pointwise) and "B" not in node.params:
            return _separable(b, node, pointwise, x, n, kernel, conv_strides, dil, padding,
                              subsample)
    act, extra, last = b.host_activation(node)
    use_bias = "B" in node.params
    bias = [node.params["B"].astype(_F32)] if use_bias else []
    common = dict(kernel_size=kernel, strides=conv_strides, padding=padding,
                  dilation_rate=dil, activation=act, use_bias=use_bias, name=b.name(node))
    if as_depthwise:
        mult = w.shape[0] // group
        cls = getattr(b.L, f"DepthwiseConv{n}D")
        layer = cls(depth_multiplier=mult, **common)
        weights = [_depthwise_kernel(w, n, group, mult)] + bias
    else:
        cls = getattr(b.L, f"Conv{n}D", None)
        if cls is None:
            raise _Refuse(f"no Keras convolution for {n} spatial axes")
        layer = cls(filters=int(w.shape[0]), groups=group, **common)
        weights = [w.transpose(*range(2, n + 2), 1, 0)] + bias
    y = _subsample(b, node, b.call(layer, x, weights), subsample)
    b.finish(node, y, extra, last)


def _as_depthwise(node, w, group, c_in, n, strides) -> bool:
    """Whether a Conv is written as DepthwiseConv1D/2D (else a grouped ConvND).

    One input channel per group is a depthwise convolution, unless the source layer was a
    grouped ``Conv1D/2D`` (``keras_class``: rebuild that class) or TensorFlow's depthwise
    kernel cannot run it: a 2-D one needs equal strides along both axes."""
    if not (group > 1 and w.shape[1] == 1 and group == c_in and n in (1, 2)):
        return False
    if str(node.meta.get("keras_class", "")).startswith("Conv"):
        return False
    return n == 1 or strides[0] == strides[1]


def _subsample(b, node, y, strides):
    """Every ``strides``-th element along the spatial axes of ``y`` (no-op for None)."""
    if strides is None:
        return y
    n = len(strides)
    cls = getattr(b.L, f"MaxPooling{n}D")
    layer = cls(pool_size=(1,) * n if n > 1 else 1,
                strides=tuple(strides) if n > 1 else strides[0], padding="valid",
                name=b.name(node, "stride"))
    return layer(y)


def _is_pointwise(node) -> bool:
    w = node.params["W"]
    a = node.attrs
    n = w.ndim - 2
    return (all(k == 1 for k in w.shape[2:]) and a["group"] == 1
            and not any(a.get("pads") or []) and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
            and all(s == 1 for s in (a.get("strides") or [1] * n))
            and a.get("layout") == "NHWC")


def _separable(b, node, pointwise, x, n, kernel, strides, dil, padding, subsample):
    b.done.add(pointwise.name)
    act, extra, last = b.host_activation(pointwise)
    pw = pointwise.params["W"].astype(_F32)
    dw = node.params["W"].astype(_F32)
    group = int(node.attrs["group"])
    mult = dw.shape[0] // group
    use_bias = "B" in pointwise.params
    cls = getattr(b.L, f"SeparableConv{n}D")
    layer = cls(filters=int(pw.shape[0]), kernel_size=kernel, strides=strides, padding=padding,
                dilation_rate=dil, depth_multiplier=mult, activation=act, use_bias=use_bias,
                name=b.name(node))
    weights = [_depthwise_kernel(dw, n, group, mult), pw.transpose(*range(2, n + 2), 1, 0)]
    if use_bias:
        weights.append(pointwise.params["B"].astype(_F32))
    y = _subsample(b, node, b.call(layer, x, weights), subsample)
    b.values[node.name] = y
    b.finish(pointwise, y, extra, last)


def _depthwise_kernel(w, n, group, mult):
    k = w.shape[2:]
    return np.ascontiguousarray(w[:, 0].transpose(*range(1, n + 1), 0).reshape(*k, group, mult))


@_handles("ConvTranspose")
def _conv_transpose(b, node):
    n, kernel, strides, dil = _conv_common(node)
    a = node.attrs
    if a["group"] != 1:
        raise _Refuse("grouped ConvTranspose has no Keras layer")
    w = node.params["W"].astype(_F32)
    if any(d != 1 for d in dil):
        # TensorFlow's CPU kernel has no dilated transposed convolution: the same numbers
        # come from the kernel spread out with zeros between its taps.
        w = _spread_kernel(w, dil)
        kernel, dil = list(w.shape[2:]), [1] * n
    spatial = _known_spatial(b.src(node).type)
    pads = list(a.get("pads") or [0] * (2 * n))
    opad = list(a.get("output_padding") or [0] * n)
    cls = getattr(b.L, f"Conv{n}DTranspose", None)
    if cls is None or None in spatial:
        raise _Refuse(f"no Keras transposed convolution for {n} spatial axes of unknown size"
                      if cls is not None else f"no Keras transposed convolution for {n} axes")
    match = _conv_transpose_padding(spatial, kernel, strides, dil, pads, opad)
    crop = None
    if match is None:
        # Keras's 'valid' output is the whole result (zeros then bias past its end when the
        # stride exceeds the kernel): crop it to the IR's window.
        match, crop = ("valid", None), []
        for i in range(n):
            keras_len = spatial[i] * strides[i] + max(kernel[i] - strides[i], 0)
            keep_end = strides[i] * (spatial[i] - 1) + kernel[i] + opad[i] - pads[n + i]
            if keep_end > keras_len:
                raise _Refuse(f"ConvTranspose output_padding {opad} beyond Keras's output")
            crop.append((pads[i], keras_len - keep_end))
    padding, out_pad = match
    act, extra, last = b.host_activation(node)
    use_bias = "B" in node.params
    layer = cls(filters=int(w.shape[1]), kernel_size=kernel, strides=strides, padding=padding,
                output_padding=out_pad, dilation_rate=dil, activation=act, use_bias=use_bias,
                name=b.name(node))
    weights = [w.transpose(*range(2, n + 2), 1, 0)]
    if use_bias:
        weights.append(node.params["B"].astype(_F32))
    y = b.call(layer, b.x(node), weights)
    if crop is not None and any(c != (0, 0) for c in crop):
        cropping = getattr(b.L, f"Cropping{n}D")
        y = cropping(cropping=crop[0] if n == 1 else tuple(crop), name=b.name(node, "crop"))(y)
    b.finish(node, y, extra, last)


def _spread_kernel(w, dil):
    """A ``(C, M, *k)`` kernel with ``d - 1`` zeros between taps along each axis."""
    n = w.ndim - 2
    k_eff = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dil)]
    out = np.zeros(w.shape[:2] + tuple(k_eff), w.dtype)
    out[(slice(None), slice(None), *(slice(None, None, d) for d in dil))] = w
    assert out.ndim == n + 2
    return out


def _conv_transpose_padding(spatial, kernel, strides, dil, pads, opad):
    """Keras ``(padding, output_padding)`` giving the IR ConvTranspose's crop, or None.

    Keras's output length (``deconv_output_length``) and TensorFlow's placement (the crop at
    the start is the forward convolution's ``pad_before``: 0 for valid, ``total // 2`` for
    same) must both agree with the IR's ``pads``/``output_padding``.
    """
    n = len(kernel)
    if None in spatial:
        return None
    for padding in ("valid", "same"):
        for candidate in [None] + [list(p) for p in _int_paddings(strides)]:
            ok = True
            for i in range(n):
                k_eff = (kernel[i] - 1) * dil[i] + 1
                full = strides[i] * (spatial[i] - 1) + k_eff + opad[i]
                want = full - pads[i] - pads[n + i]
                op = None if candidate is None else candidate[i]
                if op is None:
                    length = (spatial[i] * strides[i] + max(k_eff - strides[i], 0)
                              if padding == "valid" else spatial[i] * strides[i])
                else:
                    pad = k_eff // 2 if padding == "same" else 0
                    length = (spatial[i] - 1) * strides[i] + k_eff - 2 * pad + op
                total = max((spatial[i] - 1) * strides[i] + k_eff - length, 0)
                before = 0 if padding == "valid" else total // 2
                if length != want or before != pads[i]:
                    ok = False
                    break
            if ok:
                return padding, None if candidate is None else (
                    candidate[0] if n == 1 else tuple(candidate))
    return None


def _int_paddings(strides):
    import itertools

    return itertools.product(*[range(s) for s in strides])


@_handles("MaxPool", "AveragePool")
def _pool(b, node):
    _check_nhwc(node)
    a = node.attrs
    kernel = [int(k) for k in a["kernel_shape"]]
    n = len(kernel)
    strides = [int(s) for s in (a.get("strides") or [1] * n)]
    if a.get("dilations") and any(d != 1 for d in a["dilations"]):
        raise _Refuse("pooling with dilations has no Keras layer")
    if a["ceil_mode"]:
        if node.type.shape != _pool_shape_floor(b.src(node).type, node):
            raise _Refuse("ceil_mode=1 changes the output size; Keras pools floor")
    padding, pairs = _keras_padding(b, node, kernel, strides, [1] * n)
    x = _tf_same_crop(b, node, b.x(node), padding, kernel, strides, [1] * n)
    if pairs is not None:
        if node.op == "MaxPool" or not a["count_include_pad"]:
            raise _Refuse(f"{node.op} with pads {pairs} that are neither 'same' nor 'valid'")
        x = _zero_padding(b, node, x, pairs)
    elif padding == "same" and node.op == "AveragePool" and a["count_include_pad"]:
        raise _Refuse("AveragePool counting 'same' padding (Keras excludes it)")
    kind = "Max" if node.op == "MaxPool" else "Average"
    cls = getattr(b.L, f"{kind}Pooling{n}D")
    layer = cls(pool_size=kernel, strides=strides, padding=padding, name=b.name(node))
    b.values[node.name] = layer(x)


def _pool_shape_floor(src, node):
    from ..ir.opset import window_output

    a = node.attrs
    kernel = a["kernel_shape"]
    n = len(kernel)
    strides = a.get("strides") or [1] * n
    pads = a.get("pads") or [0] * (2 * n)
    spatial = src.shape[1:-1]
    out = [window_output(spatial[i], kernel[i], strides[i], 1, pads[i], pads[n + i],
                         a["auto_pad"]) for i in range(n)]
    return (src.shape[0], *out, src.shape[-1])


@_handles("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(b, node):
    _check_nhwc(node)
    n = node.type.rank - 2
    kind = "Average" if node.op == "GlobalAveragePool" else "Max"
    cls = getattr(b.L, f"Global{kind}Pooling{n}D")
    flatten = b.follower(node, {"Flatten"})
    if flatten is not None and flatten.attrs["axis"] == 1:
        b.done.add(flatten.name)
        y = cls(keepdims=False, name=b.name(node))(b.x(node))
        b.values[flatten.name] = y
    else:
        y = cls(keepdims=True, name=b.name(node))(b.x(node))
    b.values[node.name] = y


@_handles("ReduceMean", "ReduceMax")
def _reduce(b, node):
    rank = b.src(node).type.rank
    axes = sorted(a % rank for a in node.attrs["axes"])
    if rank >= 3 and axes == list(range(1, rank - 1)) and rank - 2 <= 3:
        kind = "Average" if node.op == "ReduceMean" else "Max"
        cls = getattr(b.L, f"Global{kind}Pooling{rank - 2}D")
        b.values[node.name] = cls(keepdims=bool(node.attrs["keepdims"]),
                                  name=b.name(node))(b.x(node))
        return
    if 0 in axes:
        raise _Refuse("reduces over the batch axis")
    b.values[node.name] = b.custom["TensorOp"](node.op, _plain(node.attrs),
                                               name=b.name(node))(b.x(node))


@_handles("BatchNormalization")
def _batchnorm(b, node):
    p = node.params
    # An all-ones scale / all-zeros shift is Keras's scale=False / center=False.
    scale = not np.all(p["scale"] == 1)
    center = bool(np.any(p["B"]))
    layer = b.L.BatchNormalization(axis=int(node.attrs["axis"]),
                                   epsilon=float(node.attrs["epsilon"]), scale=scale,
                                   center=center, name=b.name(node))
    keys = ["scale"] * scale + ["B"] * center + ["mean", "var"]
    weights = [p[k].astype(_F32) for k in keys]
    b.values[node.name] = b.call(layer, b.x(node), weights)


@_handles("LayerNormalization")
def _layernorm(b, node):
    rank = node.type.rank
    first = node.attrs["axis"] % rank
    axis = -1 if first == rank - 1 else list(range(first, rank))
    p = node.params
    layer = b.L.LayerNormalization(axis=axis, epsilon=float(node.attrs["epsilon"]),
                                   center="B" in p, scale="scale" in p, name=b.name(node))
    weights = [p[k].astype(_F32) for k in ("scale", "B") if k in p]
    b.values[node.name] = b.call(layer, b.x(node), weights)


@_handles("Gather")
def _gather(b, node):
    data = node.params["data"]
    if data.ndim != 2 or node.attrs["axis"] != 0:
        raise _Refuse("Gather other than rows of a 2-D table has no Keras layer")
    layer = b.L.Embedding(int(data.shape[0]), int(data.shape[1]), name=b.name(node))
    b.values[node.name] = b.call(layer, b.x(node), [data.astype(_F32)])


@_handles(*_ACTIVATION_OPS)
def _activation(b, node):
    b.values[node.name] = b.activation_layer(node, node.op, node.attrs, b.x(node))


@_handles("PRelu")
def _prelu(b, node):
    in_shape = b.src(node).type.shape
    slope = node.params["slope"].astype(_F32)
    rank = len(in_shape)
    if slope.ndim == rank:
        if slope.shape[0] != 1:
            raise _Refuse("PRelu slope varies over the batch axis")
        slope = slope[0]
    alpha = slope.reshape((1,) * (rank - 1 - slope.ndim) + slope.shape)
    shared = [i + 1 for i, d in enumerate(alpha.shape) if d == 1 and in_shape[i + 1] != 1]
    for i, d in enumerate(alpha.shape):
        if d != 1 and d != in_shape[i + 1]:
            raise _Refuse(f"PRelu slope {slope.shape} does not match the input")
    layer = b.L.PReLU(shared_axes=shared or None, name=b.name(node))
    b.values[node.name] = b.call(layer, b.x(node), [alpha])


@_handles("Erf", "Sqrt", "Neg", "Abs", "Log", "Reciprocal", "Floor")
def _elementwise(b, node):
    b.values[node.name] = b.custom["Elementwise"](node.op, {}, name=b.name(node))(b.x(node))


def _chain_leaves(b, node, op):
    """The leaves of a left-folded chain of ``op`` nodes of one layer ending at ``node``."""
    first = b.graph.node(node.inputs[0])
    if (first.op == op and first.origin == node.origin and len(first.inputs) == 2
            and len(b.users(first)) == 1 and not b.graph.is_output(first)):
        return _chain_leaves(b, first, op) + [node.inputs[1]]
    return list(node.inputs)


def _merge_expansion(b, node) -> bool:
    """Whether ``node`` is an Unsqueeze that the Keras frontend added to match ranks before
    a merge of the same layer (``Add``, ``Multiply``…): the Keras merge layer expands lower
    ranks itself (at axis 1), so the Unsqueeze is left out."""
    if node.op != "Unsqueeze" or b.graph.is_output(node):
        return False
    users = b.users(node)
    axes = [int(a) for a in node.attrs["axes"]]
    return (len(users) == 1 and users[0].origin == node.origin and users[0].op in _MERGE
            and "B" not in users[0].params and axes == list(range(1, 1 + len(axes))))


_MERGE = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply", "Max": "Maximum",
          "Min": "Minimum", "Mean": "Average", "Sum": "Add"}


@_handles("Add", "Sub", "Mul", "Div", "Pow")
def _binary(b, node):
    if "B" in node.params:
        return _constant_operand(b, node, node.params["B"], node.inputs[0])
    srcs = [b.graph.node(i) for i in node.inputs]
    if srcs[1].op == "Constant" and srcs[0].op != "Constant":
        return _constant_operand(b, node, srcs[1].params["value"], srcs[0].name)
    if srcs[0].op == "Constant" and srcs[1].op != "Constant":
        return _constant_operand(b, node, srcs[0].params["value"], srcs[1].name, reverse=True)
    if len({b.graph.node(i).type.rank for i in node.inputs}) != 1:
        raise _Refuse("operands of different ranks (numpy broadcasting without a batch axis)")
    if node.op in ("Div", "Pow"):
        b.values[node.name] = b.custom["Elementwise"](node.op, {}, name=b.name(node))(
            [b.values[i] for i in node.inputs])
        return
    names = _chain_leaves(b, node, node.op) if node.op in ("Add", "Mul") else list(node.inputs)
    tensors = [b.tensor(n) for n in names]
    layer = getattr(b.L, _MERGE[node.op])(name=b.name(node))
    b.values[node.name] = layer(tensors)


def _pending_chain(b, node):
    """Whether ``node`` is an inner link of a same-layer Add/Mul chain (built at its end)."""
    if node.op not in ("Add", "Mul") or "B" in node.params or len(node.inputs) != 2:
        return False
    users = b.users(node)
    return (len(users) == 1 and not b.graph.is_output(node) and users[0].op == node.op
            and users[0].origin == node.origin and "B" not in users[0].params
            and users[0].inputs[0] == node.name)


def _constant_operand(b, node, c, x_name, reverse=False):
    """``x op c`` (``c op x`` with ``reverse``) for a constant ``c``: Rescaling for a scale
    or shift, Normalization for a layer's subtract-then-divide, else ConstantOperand."""
    x = b.values[x_name]
    in_dtype = np.dtype(b.graph.node(x_name).type.dtype)
    if reverse and node.op in ("Mul", "Add"):
        reverse = False  # commutative
    if node.op in ("Mul", "Add") and in_dtype.kind == "f":
        follower = b.follower(node, {"Add"}) if node.op == "Mul" else None
        if follower is not None and "B" in follower.params:
            b.done.add(follower.name)
            y = b.L.Rescaling(scale=_scalar_or_array(c),
                              offset=_scalar_or_array(follower.params["B"]),
                              name=b.name(node))(x)
            b.values[node.name] = b.values[follower.name] = y
            return
        scale, offset = (c, 0.0) if node.op == "Mul" else (1.0, c)
        b.values[node.name] = b.L.Rescaling(scale=_scalar_or_array(scale),
                                            offset=_scalar_or_array(offset),
                                            name=b.name(node))(x)
        return
    if node.op == "Sub" and in_dtype.kind == "f" and not reverse:
        follower = b.follower(node, {"Div"})
        if follower is not None and "B" in follower.params:
            layer = _normalization(b, node, c, follower.params["B"])
            if layer is not None:
                b.done.add(follower.name)
                b.values[node.name] = b.values[follower.name] = layer(x)
                return
    c = c.astype(in_dtype) if in_dtype.kind == "f" else c
    layer = b.custom["ConstantOperand"](node.op, list(c.shape), str(c.dtype), reverse=reverse,
                                        name=b.name(node))
    b.values[node.name] = b.call(layer, x, [c])


def _scalar_or_array(v):
    v = np.asarray(v, dtype=_F32)
    return float(v) if v.ndim == 0 else v


def _normalization(b, node, mean, denom):
    """Keras ``Normalization`` for ``(x - mean) / denom`` of one layer, when the constants
    are per last-axis entry (or scalars)."""
    mean, denom = np.asarray(mean, _F32), np.asarray(denom, _F32)
    c = node.type.shape[-1]
    eps = float(b.keras.backend.epsilon())
    if np.any(denom < eps):
        return None
    if mean.size == 1 and denom.size == 1:
        axis = None
    elif mean.shape[-1:] == (c,) and mean.size == c and denom.size == c:
        axis = -1
    else:
        return None
    var = np.square(denom.astype(np.float64)).astype(_F32)
    if not np.array_equal(np.sqrt(var), denom):
        return None  # sqrt(denom**2) must give denom back exactly
    return b.L.Normalization(axis=axis, mean=mean.reshape(-1) if axis else mean.item(),
                             variance=var.reshape(-1) if axis else var.item(),
                             name=b.name(node))


@_handles("Max", "Min", "Mean", "Sum")
def _variadic(b, node):
    tensors = [b.tensor(i) for i in node.inputs]
    if len(tensors) == 1:
        b.values[node.name] = b.L.Identity(name=b.name(node))(tensors[0])
        return
    if len({b.graph.node(i).type.rank for i in node.inputs}) != 1:
        raise _Refuse("operands of different ranks")
    b.values[node.name] = getattr(b.L, _MERGE[node.op])(name=b.name(node))(tensors)


@_handles("Concat")
def _concat(b, node):
    rank = node.type.rank
    axis = node.attrs["axis"] % rank
    if axis == 0:
        raise _Refuse("concatenates along the batch axis")
    tensors = [b.values[i] for i in node.inputs]
    if len(tensors) == 1:
        b.values[node.name] = b.L.Identity(name=b.name(node))(tensors[0])
        return
    b.values[node.name] = b.L.Concatenate(axis=axis if axis != rank - 1 else -1,
                                          name=b.name(node))(tensors)


def _reshape_to_type(b, node):
    shape = node.type.shape
    if shape and shape[0] is not None and b.src(node).type.shape[0] is None:
        raise _Refuse("changes the batch axis")
    rest = [-1 if d is None else int(d) for d in shape[1:]]
    if rest.count(-1) > 1:
        raise _Refuse(f"target shape {shape} has several unknown dims")
    b.values[node.name] = b.L.Reshape(tuple(rest), name=b.name(node))(b.x(node))


@_handles("Reshape")
def _reshape(b, node):
    shape = list(node.attrs["shape"])
    if shape and shape[0] == 0 and all(d != 0 for d in shape[1:]) and shape[1:].count(-1) <= 1:
        b.values[node.name] = b.L.Reshape(tuple(int(d) for d in shape[1:]),
                                          name=b.name(node))(b.x(node))
        return
    _reshape_to_type(b, node)


@_handles("Squeeze", "Unsqueeze")
def _squeeze(b, node):
    rank = node.type.rank if node.op == "Unsqueeze" else b.src(node).type.rank
    if any(a % rank == 0 for a in node.attrs["axes"]):
        raise _Refuse("moves the batch axis")
    _reshape_to_type(b, node)


@_handles("Flatten")
def _flatten(b, node):
    rank = b.src(node).type.rank
    if node.attrs["axis"] % max(rank, 1) != 1:
        raise _Refuse(f"Flatten at axis {node.attrs['axis']} merges the batch axis")
    b.values[node.name] = b.L.Flatten(name=b.name(node))(b.x(node))


@_handles("Transpose")
def _transpose(b, node):
    perm = [int(p) for p in node.attrs["perm"]]
    if perm[0] != 0:
        raise _Refuse(f"perm {perm} moves the batch axis")
    b.values[node.name] = b.L.Permute(tuple(perm[1:]), name=b.name(node))(b.x(node))


@_handles("Pad")
def _pad(b, node):
    a = node.attrs
    rank = node.type.rank
    pads = [int(p) for p in a["pads"]]
    pairs = [(pads[i], pads[rank + i]) for i in range(rank)]
    zero_edges = pairs[0] == (0, 0) and pairs[-1] == (0, 0)
    if (a["mode"] == "constant" and a["value"] == 0.0 and zero_edges and 3 <= rank <= 5):
        inner = pairs[1:-1]
        cls = getattr(b.L, f"ZeroPadding{rank - 2}D")
        layer = cls(padding=inner[0] if rank == 3 else tuple(inner), name=b.name(node))
        b.values[node.name] = layer(b.x(node))
        return
    if pairs[0] != (0, 0):
        raise _Refuse("pads the batch axis")
    if a["mode"] not in ("constant", "reflect"):
        raise _Refuse(f"pad mode {a['mode']!r}")
    b.values[node.name] = b.custom["TensorOp"]("Pad", _plain(a), name=b.name(node))(b.x(node))


@_handles("Slice")
def _slice(b, node):
    a = node.attrs
    src = b.src(node).type.shape
    rank = len(src)
    steps = a["steps"] or [1] * len(a["axes"])
    axes = [x % rank for x in a["axes"]]
    if 0 in axes:
        raise _Refuse("slices the batch axis")
    crops = {}
    for axis, start, end, step in zip(axes, a["starts"], a["ends"], steps):
        size = src[axis]
        if step != 1 or axis == rank - 1:
            crops = None
            break
        if size is None:
            # Unknown length: a crop from both ends is a non-negative start and an end that
            # is "to the end" or negative.
            if start < 0 or 0 <= end < 2 ** 62:
                crops = None
                break
            crops[axis] = (start, 0 if end >= 2 ** 62 else -end)
            continue
        s, e, _ = slice(start, end, step).indices(size)
        crops[axis] = (s, size - max(e, s))
    if crops is not None and 3 <= rank <= 5:
        pairs = [crops.get(ax, (0, 0)) for ax in range(1, rank - 1)]
        cls = getattr(b.L, f"Cropping{rank - 2}D")
        layer = cls(cropping=pairs[0] if rank == 3 else tuple(pairs), name=b.name(node))
        b.values[node.name] = layer(b.x(node))
        return
    b.values[node.name] = b.custom["TensorOp"]("Slice", _plain(a), name=b.name(node))(b.x(node))


@_handles("Resize")
def _resize(b, node):
    scales = [int(s) for s in node.attrs["scales"]]
    rank = len(scales)
    if scales[0] != 1:
        raise _Refuse("resizes the batch axis")
    if scales[-1] != 1 or not 3 <= rank <= 5:
        # Not channels-last spatial upsampling: repeat along the axes directly.
        b.values[node.name] = b.custom["TensorOp"]("Resize", {"scales": scales},
                                                   name=b.name(node))(b.x(node))
        return
    inner = scales[1:-1]
    cls = getattr(b.L, f"UpSampling{rank - 2}D")
    layer = cls(size=inner[0] if rank == 3 else tuple(inner), name=b.name(node))
    b.values[node.name] = layer(b.x(node))


@_handles("MatMul")
def _matmul(b, node):
    ta, tb = (b.graph.node(i).type for i in node.inputs)
    xs = [b.values[i] for i in node.inputs]
    if ta.rank == 3 and tb.rank == 3:
        b.values[node.name] = b.L.Dot(axes=(2, 1), name=b.name(node))(xs)
        return
    if ta.rank != tb.rank:
        raise _Refuse("MatMul of operands of different ranks")
    b.values[node.name] = b.custom["TensorOp"]("MatMul", {}, name=b.name(node))(xs)


@_handles("Identity")
def _identity(b, node):
    if node.meta.get("keras_class") == "Activation":
        b.values[node.name] = b.L.Activation("linear", name=b.name(node))(b.x(node))
        return
    b.values[node.name] = b.L.Identity(name=b.name(node))(b.x(node))


_DROPOUT_KINDS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                  "GaussianDropout", "AlphaDropout"}


@_handles("Dropout")
def _dropout(b, node):
    kind = node.attrs.get("kind", "Dropout")
    ratio = float(node.attrs.get("ratio", 0.0))
    name = b.name(node)
    if kind == "GaussianNoise":
        layer = b.L.GaussianNoise(stddev=ratio, name=name)
    elif kind in _DROPOUT_KINDS and 0.0 <= ratio < 1.0:
        layer = getattr(b.L, kind)(ratio, name=name)
    else:
        layer = b.L.Dropout(min(max(ratio, 0.0), 0.99), name=name)
    b.values[node.name] = layer(b.x(node))


class _Refuse(Exception):
    """A node this backend cannot express, with the reason."""


_NO_KERAS = {"LSTM": "an ONNX LSTM (time-major, from tf2onnx) has no direct Keras layer",
             "GRU": "an ONNX GRU has no direct Keras layer",
             "LRN": "Keras has no local response normalisation layer",
             "Constant": "a computed constant without a batch axis can feed only an Add, Sub, "
                         "Mul, Div or Pow of a computed tensor",
             "GetItem": "tuple-valued ops have no Keras layer"}


def _operand_constant(graph, node) -> bool:
    """A Constant read only as the constant operand of binary arithmetic."""
    users = graph.users(node)
    return bool(users) and not graph.is_output(node) and all(
        u.op in _BINARY_OPS and len(u.inputs) == 2
        and any(graph.node(i).op != "Constant" for i in u.inputs) for u in users)


def _precheck(graph):
    bad = [(n.name, n.op, _NO_KERAS.get(n.op, "no handler"))
           for n in graph
           if n.op != "Input" and (n.op in _NO_KERAS or n.op not in _HANDLERS)
           and not (n.op == "Constant" and _operand_constant(graph, n))]
    if bad:
        _raise_unsupported(graph, bad)


def _raise_unsupported(graph, bad):
    listing = "; ".join(f"{name} ({op}): {why}" for name, op, why in bad)
    raise UnsupportedLayerError(
        f"the Keras backend cannot express {len(bad)} node(s) of graph {graph.name!r}: "
        f"{listing}", [(name, op) for name, op, _ in bad])


#: How deep Python may recurse while Keras builds, saves or loads a functional model.  Keras
#: walks the layer graph recursively, one Python frame per layer, so a chain of more than
#: about 900 layers overflows Python's default limit (1000); the backend raises the limit
#: for that step only, by the number of layers and at most to this value (Python 3.11+
#: keeps Python frames off the C stack; 3.10 does not, hence the lower bound there).
MAX_RECURSION = 20_000 if sys.version_info >= (3, 11) else 10_000


@contextlib.contextmanager
def _recursion_room(frames: int):
    """Let Python recurse ``frames`` levels deeper than its limit allows now (up to
    :data:`MAX_RECURSION`) while the block runs; the old limit is restored after."""
    old = sys.getrecursionlimit()
    new = min(old + max(int(frames), 0), max(old, MAX_RECURSION))
    if new > old:
        sys.setrecursionlimit(new)
    try:
        yield
    finally:
        if new > old and sys.getrecursionlimit() == new:
            sys.setrecursionlimit(old)


def _depth(graph) -> int:
    """The number of nodes on the longest input -> output path of ``graph``."""
    depth: dict[str, int] = {}
    for node in graph:
        depth[node.name] = 1 + max((depth[i] for i in node.inputs), default=0)
    return max(depth.values(), default=0)


def _too_deep(graph, exc) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"graph {graph.name!r} is {_depth(graph)} nodes deep: too deep for Keras, which "
        f"builds and loads a functional model by recursing once per layer and ran out of "
        f"Python recursion ({type(exc).__name__}) within this backend's ceiling of "
        f"{MAX_RECURSION} levels (ir_bridge.backends.keras.MAX_RECURSION); emit it as ONNX "
        "or MDF instead (no depth limit), or split the model")


def to_keras(graph):
    """Build a functional ``keras.Model`` from an NHWC IR ``graph`` (weights set)."""
    keras = require("keras", "keras")
    _precheck(graph)
    try:
        return _build(graph, keras)
    except RecursionError as exc:
        raise _too_deep(graph, exc) from exc


def _build(graph, keras):
    b = _Builder(graph, keras)
    inputs = []
    bad = []
    for node in graph:
        if node.op == "Input":
            shape = tuple(node.type.shape)
            batch = shape[0] if shape else None
            t = keras.Input(shape=shape[1:], batch_size=batch, dtype=node.type.dtype,
                            name=b.name(node))
            b.values[node.name] = t
            inputs.append(t)
            continue
        if node.name in b.done or _pending_chain(b, node) or node.op == "Constant":
            continue
        if _merge_expansion(b, node):
            b.done.add(node.name)
            continue
        try:
            _HANDLERS[node.op](b, node)
        except _Refuse as exc:
            bad.append((node.name, node.op, str(exc)))
            b.values[node.name] = b.values.get(node.inputs[0]) if node.inputs else None
    if bad:
        _raise_unsupported(graph, bad)
    outputs = []
    for name in graph.output_names:
        y = b.values[name]
        if any(y is t for t in inputs) or any(y is o for o in outputs):
            y = keras.layers.Identity(name=b.name(graph.node(name), "output"))(y)
        outputs.append(y)
    # Keras's functional graph walk recurses once per layer: room for every layer made.
    with _recursion_room(len(b._names)):
        model = keras.Model(inputs=inputs if len(inputs) != 1 else inputs[0],
                            outputs=outputs if len(outputs) != 1 else outputs[0],
                            name=_NAME_BAD.sub("_", graph.name) or "model")
    b.set_weights()
    return model


# ---------------------------------------------------------------- entry points


@register_backend("keras", suffixes=(".keras", ".h5"), layout="NHWC",
                  runner=lambda m: runner(m),
                  description="Functional keras.Model of built-in layers (.keras).")
def emit(graph, path=None, **_options):
    """Emit the IR ``graph`` (NHWC, as ``ir_bridge.emit`` prepares it) as a functional
    ``keras.Model``; save it atomically to ``path`` (``.keras``) when given.  Returns the
    model.  Raises ``UnsupportedLayerError`` listing every node Keras cannot express."""
    model = to_keras(graph)
    if path is not None:
        from ..io import atomic_write_path

        def save(tmp):
            with _recursion_room(len(model.layers)):
                model.save(tmp)

        atomic_write_path(Path(path), save)
    return model


def load(path):
    """Load a ``.keras``/``.h5`` file written by this backend (``safe_mode=True``).

    Keras rebuilds the functional graph recursively, one Python frame per layer: the
    recursion limit is raised up to :data:`MAX_RECURSION` meanwhile, so deep models written
    by :func:`emit` load back here (``keras.models.load_model`` itself needs
    ``sys.setrecursionlimit`` raised for models deeper than about 900 layers)."""
    keras = require("keras", "keras")
    register_layers()
    try:
        with _recursion_room(MAX_RECURSION):
            return keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types; all mean "not loadable"
        from ..errors import InvalidModelError

        why = (f"too deep: Keras ran out of Python recursion within this backend's "
               f"ceiling of {MAX_RECURSION} levels (ir_bridge.backends.keras.MAX_RECURSION)"
               if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}")
        raise InvalidModelError(f"{path}: Keras cannot load it: {why}") from exc


def runner(model_or_path):
    """``fn(list of arrays) -> list of arrays`` running a Keras model (a live
    ``keras.Model`` or a ``.keras``/``.h5`` path) with ``training=False``."""
    keras = require("keras", "keras")
    model = load(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path
    dtypes = [np.dtype(str(getattr(t, "dtype", "float32"))) for t in model.inputs]

    def run(inputs):
        if len(inputs) != len(dtypes):
            raise IRBridgeError(f"the Keras model takes {len(dtypes)} input(s), got "
                                f"{len(inputs)}")
        xs = [np.asarray(x, dtype=d) for x, d in zip(inputs, dtypes)]
        y = model(xs if len(xs) > 1 else xs[0], training=False)
        if isinstance(y, dict):
            y = [y[k] for k in y]
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        return [np.asarray(keras.ops.convert_to_numpy(t)) for t in ys]

    return run
