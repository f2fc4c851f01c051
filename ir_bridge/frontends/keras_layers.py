"""Keras layer handlers: one function per Keras 3 layer class, registered by class name.

A handler ``fn(ctx, layer, inputs) -> outputs`` turns one call of a layer into IR nodes: it
reads the layer's options and weights, adds nodes through ``ctx`` (a
:class:`KerasContext`, which names them after the layer and sets ``origin``) and returns the
names of the nodes holding the layer's outputs.  Handlers translate literally and emit
canonical, unfused ops: ``Dense(activation="relu")`` is a ``Gemm`` followed by a ``Relu``;
the ``fuse-activation`` pass joins them later.

A handler may declare ``refuse(layer, input_shapes) -> list[str]``: the reasons why this particular
instance cannot be converted (an option that changes the numbers and that the IR cannot
express).  The frontend calls every ``refuse`` before converting anything, so one error
lists every problem in a model.  Options that only matter for training (regularisers,
constraints, initialisers, momentum) are ignored on purpose.

Handlers are keyed by bare class name (``"Dense"``) for Keras's own layers; a plugin may
register ``"module.Class"`` for its own classes.  A user class that merely shares a
built-in's name is never mistaken for it: the bare-name fallback applies to classes defined
inside ``keras`` only.

Nothing here imports keras at module level; handlers receive live layer objects and the
context carries the imported ``keras`` module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir.opset import same_pads

Handler = Callable[["KerasContext", object, list], list]
Refuser = Callable[[object, list], list]


@dataclass(frozen=True)
class LayerHandler:
    """How one Keras class converts: ``convert(ctx, layer, inputs) -> outputs`` and the
    optional ``refuse(layer, input_shapes) -> [reason, ...]`` check run before any
    conversion (``input_shapes``: the Keras shapes of the call's input tensors)."""

    name: str
    convert: Handler
    refuse: Refuser | None = None


_HANDLERS: dict[str, LayerHandler] = {}


def keras_layer(*names: str, refuse: Refuser | None = None):
    """Decorator: register a handler for the Keras classes ``names`` (bare class names for
    Keras built-ins, ``"module.Class"`` for anything else)."""

    def wrap(fn: Handler) -> Handler:
        for name in names:
            if name in _HANDLERS:
                raise ValueError(f"a Keras layer handler for {name!r} is registered twice")
            _HANDLERS[name] = LayerHandler(name, fn, refuse)
        return fn

    return wrap


def _is_keras_builtin(cls) -> bool:
    module = cls.__module__ or ""
    return module.startswith(("keras.src.layers.", "keras.layers."))


def handler_for(obj) -> LayerHandler | None:
    """The handler for a layer object: its ``module.Class`` entry, else (Keras built-ins
    only) its bare class name; ``None`` if unsupported."""
    cls = type(obj)
    handler = _HANDLERS.get(f"{cls.__module__}.{cls.__qualname__}")
    if handler is None and _is_keras_builtin(cls):
        handler = _HANDLERS.get(cls.__name__)
    return handler


def class_label(obj) -> str:
    """A readable class name for messages: ``Dense`` for layers, ``keras.ops.Add`` for the
    Keras operations a functional graph may hold (``x + y`` on symbolic tensors), so they are
    not confused with the layers of the same name."""
    cls = type(obj)
    if (cls.__module__ or "").startswith(("keras.src.ops.", "keras.src.activations")):
        return f"keras.ops.{cls.__name__}"
    return cls.__name__


def supported_layers() -> list[str]:
    """The Keras class names this frontend converts, sorted (``InputLayer`` included: the
    walker turns it into a graph input, no handler needed)."""
    return sorted({*_HANDLERS, "InputLayer"})


# ---------------------------------------------------------------- the conversion context


class KerasContext:
    """What a handler needs: the graph under construction, the imported ``keras`` module,
    node naming and weight conversion.

    ``scope`` is the name prefix of the layers of a nested model being inlined
    (``"encoder/"``), so an inner ``dense`` becomes node ``encoder/dense``.
    """

    def __init__(self, graph, keras):
        self.graph = graph
        self.keras = keras
        self.scope = ""

    def origin(self, layer) -> str:
        """The origin recorded on the nodes of ``layer``: its name under the current scope."""
        return f"{self.scope}{layer.name}"

    def add(self, op: str, inputs, layer, suffix: str | None = None, *, attrs=None,
            params=None) -> str:
        """Add an ``op`` node for ``layer``; returns its name (the layer's name, or
        ``layer/suffix`` for helper nodes, made unique)."""
        origin = self.origin(layer)
        base = f"{origin}/{suffix}" if suffix else origin
        node = self.graph.add_node(op, inputs, name=self.graph.unique_name(base), attrs=attrs,
                                   params=params, origin=origin)
        # The Keras backend rebuilds the same layer class (Activation("relu") vs ReLU()).
        node.meta["keras_class"] = type(layer).__name__
        return node.name

    def shape(self, name: str) -> tuple:
        """The inferred shape of node ``name`` (``None`` for unknown dims)."""
        return self.graph.node(name).type.shape

    def weight(self, value) -> np.ndarray:
        """A Keras variable, tensor or number as a float32 numpy array."""
        return np.asarray(self.keras.ops.convert_to_numpy(value), dtype=np.float32)

    def activation(self, layer, x: str, fn=None, *, main: bool = False) -> str:
        """Append the nodes of activation ``fn`` (default ``layer.activation``) after ``x``.

        ``linear`` adds nothing unless ``main`` (the activation *is* the layer, as in
        ``Activation("linear")``: then an ``Identity`` node keeps the layer visible).
        Returns the name of the last node.
        """
        fn = layer.activation if fn is None else fn
        name = activation_name(self.keras, fn)
        if name is None:  # refused earlier; reaching here is a bug
            raise ValueError(f"layer {layer.name!r}: unsupported activation {fn!r}")
        op, attrs = ACTIVATIONS[name]
        if op == "Identity" and not main:
            return x
        return self.add(op, [x], layer, None if main else name, attrs=dict(attrs))


# ---------------------------------------------------------------- activations

#: Keras activation name -> (IR op, attrs).  Keras 3 semantics: hard_sigmoid is
#: relu6(x + 3) / 6, leaky_relu's default slope is 0.2, gelu is exact (erf) by default.
ACTIVATIONS: dict[str, tuple[str, dict]] = {
    "linear": ("Identity", {}),
    "relu": ("Relu", {}),
    "relu6": ("Clip", {"min": 0.0, "max": 6.0}),
    "sigmoid": ("Sigmoid", {}),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 1.0 / 6.0, "beta": 0.5}),
    "tanh": ("Tanh", {}),
    "hard_tanh": ("Clip", {"min": -1.0, "max": 1.0}),
    "softmax": ("Softmax", {"axis": -1}),
    "log_softmax": ("LogSoftmax", {"axis": -1}),
    "elu": ("Elu", {"alpha": 1.0}),
    "selu": ("Selu", {}),
    "gelu": ("Gelu", {"approximate": "none"}),
    "silu": ("Swish", {"alpha": 1.0}),
    "swish": ("Swish", {"alpha": 1.0}),
    "softplus": ("Softplus", {}),
    "softsign": ("Softsign", {}),
    "exponential": ("Exp", {}),
    "leaky_relu": ("LeakyRelu", {"alpha": 0.2}),
    "mish": ("Mish", {}),
    "hard_silu": ("HardSwish", {}),
    "hard_swish": ("HardSwish", {}),
}


def activation_name(keras, fn) -> str | None:
    """The name under which ``fn`` is one of Keras's built-in activation functions (matched
    by identity, never by ``repr``), or ``None``."""
    if fn is None:
        return "linear"
    for name in ACTIVATIONS:
        if getattr(keras.activations, name, None) is fn:
            return name
    return None


def _describe(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _refuse_activation(layer, shapes=None) -> list[str]:
    import sys

    keras = sys.modules["keras"]
    fn = getattr(layer, "activation", None)
    if activation_name(keras, fn) is None:
        return [f"activation {_describe(fn)!r} is not supported "
                f"(supported: {', '.join(sorted(ACTIVATIONS))})"]
    return []


@keras_layer("Activation", refuse=_refuse_activation)
def _activation_layer(ctx, layer, inputs):
    return [ctx.activation(layer, inputs[0], main=True)]


# ---------------------------------------------------------------- helpers


def _layout(layer) -> str:
    return "NCHW" if getattr(layer, "data_format", None) == "channels_first" else "NHWC"


def _spatial(shape, layout):
    return list(shape[2:]) if layout == "NCHW" else list(shape[1:-1])


def _refuse_data_format(layer, shapes=None) -> list[str]:
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last", "channels_first"):
        return [f"data_format={fmt!r} is not supported"]
    return []


def _pads(ctx, x, layout, padding, kernel, strides, dilations) -> dict:
    """``pads`` (or ``auto_pad`` when a spatial dim is unknown) for Keras ``padding``."""
    n = len(kernel)
    if padding == "valid":
        return {"pads": [0] * (2 * n)}
    if padding == "causal":  # Conv1D: all the padding on the left, output length kept
        return {"pads": [d * (k - 1) for k, d in zip(kernel, dilations)] + [0] * n}
    spatial = _spatial(ctx.shape(x), layout)
    if None in spatial:
        # TF puts the odd pad at the end: SAME_UPPER.
        return {"auto_pad": "SAME_UPPER"}
    begin, end = zip(*[same_pads(s, k, st, d)
                       for s, k, st, d in zip(spatial, kernel, strides, dilations)])
    return {"pads": [*begin, *end]}


def _tf_shifts_3d_windows(keras) -> bool:
    """Whether Keras runs on TensorFlow, whose 3-D conv/pool kernels shift 'same' windows
    (see :func:`_crop_for_tf_3d_same`); the JAX and torch backends clamp the pad at 0."""
    return keras.backend.backend() == "tensorflow"


def _shifts_same_windows(layer, keras) -> bool:
    """Whether this 3-D conv/pool layer with padding='same' runs on one of TensorFlow's 3-D
    kernels, which shift a window smaller than its stride.  Keras's TensorFlow backend runs
    a channels_first or grouped Conv3D through XLA instead, whose pads are clamped at 0
    like every other backend's; pooling always runs TensorFlow's kernels (channels_first
    transposed to channels_last around them)."""
    if getattr(layer, "padding", None) != "same" or not _tf_shifts_3d_windows(keras):
        return False
    if hasattr(layer, "kernel_size"):  # Conv3D
        return _layout(layer) == "NHWC" and int(getattr(layer, "groups", 1)) == 1
    return True


def _tf_3d_same_windows(n, k, stride, dilation):
    """``(shift, length)`` along one axis of TensorFlow's 3-D 'same' conv/pool: the first
    window starts ``shift`` elements in, and the windows read ``length`` elements from
    there.  ``shift`` is positive only for a window smaller than its stride."""
    k_eff = dilation * (k - 1) + 1
    out = -(-n // stride)
    total = (out - 1) * stride + k_eff - n
    # TF's leading pad is trunc(total / 2), not clamped at 0 as the 1-D/2-D kernels do.
    return (-int(total / 2) if total < 0 else 0), (out - 1) * stride + k_eff


def _crop_for_tf_3d_same(ctx, layer, x, layout, kernel, strides, dilations) -> str:
    """The input of a 3-D conv/pool with padding='same', cropped as TensorFlow reads it.

    TensorFlow's 3-D kernels compute the leading pad as ``trunc(total / 2)`` with ``total =
    (out - 1) * stride + k_eff - n`` and do not clamp it at 0: when the window is smaller
    than its stride and the windows end short of the input, the first window starts
    ``-trunc(total / 2)`` elements in.  A pad cannot be negative in the IR (nor in ONNX,
    MDF or Keras), so the shifted axes are cropped first with a ``Slice`` to exactly what
    the windows read; on the cropped axis 'same' padding is then zero on both sides (and a
    Keras backend writing padding='same' there computes no shift either).
    """
    if len(kernel) != 3 or not _shifts_same_windows(layer, ctx.keras):
        return x
    first = 2 if layout == "NCHW" else 1
    starts, ends, axes = [], [], []
    for i, (n, k, st, d) in enumerate(zip(_spatial(ctx.shape(x), layout), kernel, strides,
                                          dilations)):
        if n is None:
            continue  # no shift possible here: _refuse_tf_3d_same refuses the other case
        shift, length = _tf_3d_same_windows(n, k, st, d)
        if shift:
            starts.append(shift)
            ends.append(shift + length)
            axes.append(first + i)
    if not axes:
        return x
    return ctx.add("Slice", [x], layer, "crop",
                   attrs={"starts": starts, "ends": ends, "axes": axes})


def _refuse_tf_3d_same(layer, shapes=None) -> list[str]:
    """A 3-D 'same' window smaller than its stride along an axis of unknown size: where
    TensorFlow starts the first window depends on the size."""
    if getattr(layer, "padding", None) != "same" or not shapes or len(shapes[0]) != 5:
        return []
    import keras

    if not _shifts_same_windows(layer, keras):
        return []
    kernel = tuple(getattr(layer, "kernel_size", None) or layer.pool_size)
    strides = tuple(layer.strides or kernel)
    dil = tuple(getattr(layer, "dilation_rate", None) or (1,) * 3)
    spatial = _spatial(tuple(shapes[0]), _layout(layer))
    bad = [i for i, (n, k, st, d) in enumerate(zip(spatial, kernel, strides, dil))
           if n is None and d * (k - 1) + 1 < st]
    if not bad:
        return []
    return [f"padding='same' with a window smaller than its stride along spatial axis "
            f"{bad[0]} of unknown size: where TensorFlow's 3-D kernels start the first window "
            "depends on the size (give the input a fixed size)"]


def _refuse_padding(allowed):
    def refuse(layer, shapes=None) -> list[str]:
        if layer.padding not in allowed:
            return [f"padding={layer.padding!r} is not supported"]
        return []

    return refuse


def _all(*checks) -> Refuser:
    def refuse(layer, shapes=None) -> list[str]:
        return [r for check in checks for r in check(layer, shapes)]

    return refuse


# ---------------------------------------------------------------- core


@keras_layer("Dense", refuse=_refuse_activation)
def _dense(ctx, layer, inputs):
    params = {"W": ctx.weight(layer.kernel)}
    if layer.use_bias:
        params["B"] = ctx.weight(layer.bias)
    y = ctx.add("Gemm", inputs, layer, params=params)
    return [ctx.activation(layer, y)]


def _refuse_embedding(layer, shapes=None) -> list[str]:
    if layer.mask_zero:
        return ["mask_zero=True (masking) is not supported"]
    return []


@keras_layer("Embedding", refuse=_refuse_embedding)
def _embedding(ctx, layer, inputs):
    # Keras casts float indices to int32 (truncation); the Gather kernel truncates too.
    return [ctx.add("Gather", inputs, layer, attrs={"axis": 0},
                    params={"data": ctx.weight(layer.embeddings)})]


def _noop(kind_attr: str | None):
    def convert(ctx, layer, inputs):
        ratio = float(getattr(layer, kind_attr, 0.0) or 0.0) if kind_attr else 0.0
        return [ctx.add("Dropout", inputs, layer,
                        attrs={"kind": type(layer).__name__, "ratio": ratio})]

    return convert


# Inference no-ops: at training=False every one of these returns its input unchanged.
keras_layer("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
            "GaussianDropout", "AlphaDropout")(_noop("rate"))
keras_layer("GaussianNoise")(_noop(None))


@keras_layer("Identity", "ActivityRegularization")
def _identity(ctx, layer, inputs):
    # ActivityRegularization only adds a training loss.
    return [ctx.add("Identity", inputs, layer)]


# ---------------------------------------------------------------- convolutions


_refuse_conv = _all(_refuse_padding(("valid", "same", "causal")), _refuse_data_format,
                    _refuse_activation)


def _conv_attrs(ctx, layer, x, kernel) -> dict:
    layout = _layout(layer)
    strides, dil = tuple(layer.strides), tuple(layer.dilation_rate)
    attrs = {"layout": layout, "strides": list(strides), "dilations": list(dil)}
    attrs.update(_pads(ctx, x, layout, layer.padding, kernel, strides, dil))
    return attrs


@keras_layer("Conv1D", "Conv2D", "Conv3D", refuse=_all(_refuse_conv, _refuse_tf_3d_same))
def _conv(ctx, layer, inputs):
    rank = layer.rank
    kernel = ctx.weight(layer.kernel)  # (*k, C/g, M)
    x = _crop_for_tf_3d_same(ctx, layer, inputs[0], _layout(layer), kernel.shape[:rank],
                             tuple(layer.strides), tuple(layer.dilation_rate))
    attrs = _conv_attrs(ctx, layer, x, kernel.shape[:rank])
    attrs["group"] = int(layer.groups)
    params = {"W": kernel.transpose(rank + 1, rank, *range(rank))}
    if layer.use_bias:
        params["B"] = ctx.weight(layer.bias)
    y = ctx.add("Conv", [x], layer, attrs=attrs, params=params)
    return [ctx.activation(layer, y)]


def _depthwise_weight(kernel, rank):
    """Keras depthwise kernel ``(*k, C, mult)`` as a grouped-conv weight ``(C*mult, 1, *k)``:
    output channel ``c*mult + j`` is input channel ``c`` through multiplier ``j``, the order
    of both Keras and ONNX."""
    k = kernel.shape[:rank]
    c, mult = kernel.shape[rank:]
    w = kernel.reshape(*k, c * mult).transpose(rank, *range(rank))
    return np.ascontiguousarray(w[:, None])


@keras_layer("DepthwiseConv1D", "DepthwiseConv2D", refuse=_refuse_conv)
def _depthwise(ctx, layer, inputs):
    rank = layer.rank
    kernel = ctx.weight(layer.kernel)  # Keras 3 names the depthwise weight ``kernel``
    attrs = _conv_attrs(ctx, layer, inputs[0], kernel.shape[:rank])
    attrs["group"] = int(kernel.shape[rank])
    params = {"W": _depthwise_weight(kernel, rank)}
    if layer.use_bias:
        params["B"] = ctx.weight(layer.bias)
    y = ctx.add("Conv", inputs, layer, attrs=attrs, params=params)
    return [ctx.activation(layer, y)]


@keras_layer("SeparableConv1D", "SeparableConv2D", refuse=_refuse_conv)
def _separable(ctx, layer, inputs):
    rank = layer.rank
    dw = ctx.weight(layer.depthwise_kernel)
    attrs = _conv_attrs(ctx, layer, inputs[0], dw.shape[:rank])
    attrs["group"] = int(dw.shape[rank])
    d = ctx.add("Conv", inputs, layer, "depthwise", attrs=attrs,
                params={"W": _depthwise_weight(dw, rank)})
    pw = ctx.weight(layer.pointwise_kernel)  # (*1, C*mult, M)
    params = {"W": pw.transpose(rank + 1, rank, *range(rank))}
    if layer.use_bias:
        params["B"] = ctx.weight(layer.bias)
    y = ctx.add("Conv", [d], layer, attrs={"layout": attrs["layout"], "pads": [0] * (2 * rank)},
                params=params)
    return [ctx.activation(layer, y)]


def conv_transpose_pads(kernel: int, stride: int, dilation: int, padding: str,
                        output_padding: int | None) -> tuple[int, int, int]:
    """``(pad_begin, pad_end, output_padding)`` of an ONNX ConvTranspose giving the output
    length of a Keras ``ConvXDTranspose`` along one axis.

    Keras defines the output as a stride-dilated convolution padded ``(left, right)``; the
    ONNX full output corresponds to padding ``k_eff - 1`` on both sides, so ONNX crops
    ``k_eff - 1 - left`` at the start and ``k_eff - 1 - right`` at the end, and a negative
    crop at the end is extra zero output (``output_padding``).
    """
    k_eff = (kernel - 1) * dilation + 1
    if padding == "valid":
        extra = max(k_eff, stride) - k_eff if output_padding is None else output_padding
        left, right = k_eff - 1, k_eff - 1 + extra
    else:
        if output_padding is None:
            total = stride + k_eff - 2  # output length = input * stride
        else:
            total = k_eff + k_eff % 2 - 2 + output_padding
        left = min(total // 2 + total % 2, k_eff - 1)
        right = total - left
    begin, end = k_eff - 1 - left, k_eff - 1 - right
    return begin, max(end, 0), max(-end, 0)


_refuse_conv_t = _all(_refuse_padding(("valid", "same")), _refuse_data_format,
                      _refuse_activation)


@keras_layer("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", refuse=_refuse_conv_t)
def _conv_transpose(ctx, layer, inputs):
    rank = layer.rank
    kernel = ctx.weight(layer.kernel)  # (*k, M, C)
    opad = layer.output_padding
    if opad is None or isinstance(opad, int):
        opad = [opad] * rank
    strides, dil = tuple(layer.strides), tuple(layer.dilation_rate)
    begin, end, extra = zip(*[
        conv_transpose_pads(kernel.shape[i], strides[i], dil[i], layer.padding, opad[i])
        for i in range(rank)])
    attrs = {"layout": _layout(layer), "strides": list(strides), "dilations": list(dil),
             "pads": [*begin, *end], "output_padding": list(extra), "group": 1}
    params = {"W": kernel.transpose(rank + 1, rank, *range(rank))}
    if layer.use_bias:
        params["B"] = ctx.weight(layer.bias)
    y = ctx.add("ConvTranspose", inputs, layer, attrs=attrs, params=params)
    return [ctx.activation(layer, y)]


# ---------------------------------------------------------------- pooling

_POOLS = [f"{kind}Pooling{n}D" for kind in ("Max", "Average") for n in (1, 2, 3)]


@keras_layer(*_POOLS, refuse=_all(_refuse_padding(("valid", "same")), _refuse_data_format,
                                   _refuse_tf_3d_same))
def _pool(ctx, layer, inputs):
    layout = _layout(layer)
    kernel, strides = tuple(layer.pool_size), tuple(layer.strides)
    ones = (1,) * len(kernel)
    x = _crop_for_tf_3d_same(ctx, layer, inputs[0], layout, kernel, strides, ones)
    attrs = {"layout": layout, "kernel_shape": list(kernel), "strides": list(strides)}
    attrs.update(_pads(ctx, x, layout, layer.padding, kernel, strides, ones))
    if type(layer).__name__.startswith("Max"):
        return [ctx.add("MaxPool", [x], layer, attrs=attrs)]
    # Keras 'same' average pooling divides by the number of real (unpadded) values.
    attrs["count_include_pad"] = 0
    return [ctx.add("AveragePool", [x], layer, attrs=attrs)]


_GLOBAL_POOLS = [f"Global{kind}Pooling{n}D" for kind in ("Max", "Average") for n in (1, 2, 3)]


@keras_layer(*_GLOBAL_POOLS, refuse=_refuse_data_format)
def _global_pool(ctx, layer, inputs):
    op = "GlobalMaxPool" if "Max" in type(layer).__name__ else "GlobalAveragePool"
    if layer.keepdims:
        return [ctx.add(op, inputs, layer, attrs={"layout": _layout(layer)})]
    # ONNX keeps the pooled axes as 1s; Keras drops them: (N, C) either way once flattened.
    p = ctx.add(op, inputs, layer, "pool", attrs={"layout": _layout(layer)})
    return [ctx.add("Flatten", [p], layer, attrs={"axis": 1})]


# ---------------------------------------------------------------- normalisation


def _refuse_batchnorm(layer, shapes=None) -> list[str]:
    if not isinstance(layer.axis, int):
        return [f"axis={layer.axis!r} (several axes) is not supported"]
    return []


@keras_layer("BatchNormalization", refuse=_refuse_batchnorm)
def _batchnorm(ctx, layer, inputs):
    rank = len(ctx.shape(inputs[0]))
    mean = ctx.weight(layer.moving_mean)
    c = mean.shape[0]
    params = {
        "scale": ctx.weight(layer.gamma) if layer.scale else np.ones(c, np.float32),
        "B": ctx.weight(layer.beta) if layer.center else np.zeros(c, np.float32),
        "mean": mean,
        "var": ctx.weight(layer.moving_variance),
    }
    return [ctx.add("BatchNormalization", inputs, layer, params=params,
                    attrs={"axis": layer.axis % rank, "epsilon": float(layer.epsilon)})]


def _layernorm_axis(layer, rank) -> int | None:
    """The first normalised axis if Keras's ``axis`` is the trailing contiguous block."""
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    axes = sorted(a % rank for a in axes)
    if axes != list(range(axes[0], rank)):
        return None
    return axes[0]


def _refuse_layernorm(layer, shapes=None) -> list[str]:
    reasons = []
    if getattr(layer, "rms_scaling", False):
        reasons.append("rms_scaling=True is not supported")
    if shapes and _layernorm_axis(layer, len(shapes[0])) is None:
        reasons.append(f"axis={layer.axis!r} is not the trailing block of axes")
    return reasons


@keras_layer("LayerNormalization", refuse=_refuse_layernorm)
def _layernorm(ctx, layer, inputs):
    axis = _layernorm_axis(layer, len(ctx.shape(inputs[0])))
    params = {}
    if layer.scale:
        params["scale"] = ctx.weight(layer.gamma)
    if layer.center:
        params["B"] = ctx.weight(layer.beta)
    return [ctx.add("LayerNormalization", inputs, layer, params=params,
                    attrs={"axis": axis, "epsilon": float(layer.epsilon)})]


def _refuse_normalization(layer, shapes=None) -> list[str]:
    if layer.invert:
        return ["invert=True is not supported"]
    return []


@keras_layer("Normalization", refuse=_refuse_normalization)
def _normalization(ctx, layer, inputs):
    # Keras: (x - mean) / maximum(sqrt(var), epsilon); mean/var carry a leading batch 1.
    mean = ctx.weight(layer.mean)
    var = ctx.weight(layer.variance)
    if mean.ndim and mean.shape[0] == 1:
        mean, var = mean[0], var[0]
    denom = np.maximum(np.sqrt(var), np.float32(ctx.keras.backend.epsilon())).astype(np.float32)
    centred = ctx.add("Sub", inputs, layer, "sub", params={"B": mean})
    return [ctx.add("Div", [centred], layer, params={"B": denom})]


@keras_layer("Rescaling")
def _rescaling(ctx, layer, inputs):
    scale = ctx.weight(layer.scale)
    offset = ctx.weight(layer.offset)
    if scale.ndim and ctx.keras.backend.image_data_format() == "channels_first":
        # Keras reshapes a per-channel scale for the channels-first image layout.
        scale = scale.reshape(scale.shape + (1,) * (3 - scale.ndim))
    if not np.any(offset):
        return [ctx.add("Mul", inputs, layer, params={"B": scale})]
    y = ctx.add("Mul", inputs, layer, "scale", params={"B": scale})
    return [ctx.add("Add", [y], layer, params={"B": offset})]


# ---------------------------------------------------------------- activation layers


@keras_layer("ReLU")
def _relu(ctx, layer, inputs):
    cap = layer.max_value
    return [ctx.add("Relu", inputs, layer, attrs={
        "negative_slope": float(layer.negative_slope),
        "max_value": None if cap is None else float(cap),
        "threshold": float(layer.threshold)})]


@keras_layer("LeakyReLU")
def _leaky_relu(ctx, layer, inputs):
    return [ctx.add("LeakyRelu", inputs, layer, attrs={"alpha": float(layer.negative_slope)})]


@keras_layer("ELU")
def _elu(ctx, layer, inputs):
    return [ctx.add("Elu", inputs, layer, attrs={"alpha": float(layer.alpha)})]


@keras_layer("PReLU")
def _prelu(ctx, layer, inputs):
    # alpha has the input's non-batch shape with 1s on shared axes: it broadcasts as is.
    return [ctx.add("PRelu", inputs, layer, params={"slope": ctx.weight(layer.alpha)})]


def _refuse_softmax(layer, shapes=None) -> list[str]:
    if isinstance(layer.axis, (list, tuple)) and len(layer.axis) > 1:
        return [f"axis={layer.axis!r} (several axes) is not supported"]
    return []


@keras_layer("Softmax", refuse=_refuse_softmax)
def _softmax(ctx, layer, inputs):
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    return [ctx.add("Softmax", inputs, layer, attrs={"axis": int(axis)})]


# ---------------------------------------------------------------- merging


def _same_rank(ctx, layer, inputs) -> list[str]:
    """Keras merges inputs of lower rank by expanding them at axis 1 until ranks agree."""
    ranks = [len(ctx.shape(x)) for x in inputs]
    top = max(ranks)
    return [x if r == top else
            ctx.add("Unsqueeze", [x], layer, f"expand_{i}",
                    attrs={"axes": list(range(1, 1 + top - r))})
            for i, (x, r) in enumerate(zip(inputs, ranks))]


def _chain(ctx, layer, op, xs) -> str:
    """Fold a binary op left to right over ``xs``, as Keras's merge loop does."""
    y = xs[0]
    for i, x in enumerate(xs[1:], start=1):
        last = i == len(xs) - 1
        y = ctx.add(op, [y, x], layer, None if last else f"{op.lower()}_{i}")
    return y


@keras_layer("Add")
def _add(ctx, layer, inputs):
    return [_chain(ctx, layer, "Add", _same_rank(ctx, layer, inputs))]


@keras_layer("Subtract")
def _subtract(ctx, layer, inputs):
    return [ctx.add("Sub", _same_rank(ctx, layer, inputs), layer)]


@keras_layer("Multiply")
def _multiply(ctx, layer, inputs):
    return [_chain(ctx, layer, "Mul", _same_rank(ctx, layer, inputs))]


@keras_layer("Average", "Maximum", "Minimum")
def _variadic(ctx, layer, inputs):
    op = {"Average": "Mean", "Maximum": "Max", "Minimum": "Min"}[type(layer).__name__]
    return [ctx.add(op, _same_rank(ctx, layer, inputs), layer)]


@keras_layer("Concatenate")
def _concatenate(ctx, layer, inputs):
    return [ctx.add("Concat", inputs, layer, attrs={"axis": int(layer.axis)})]


# ---------------------------------------------------------------- shape


@keras_layer("Flatten", refuse=_refuse_data_format)
def _flatten(ctx, layer, inputs):
    x = inputs[0]
    rank = len(ctx.shape(x))
    if rank < 2:
        return [ctx.add("Reshape", [x], layer, attrs={"shape": [0, 1]})]
    if layer.data_format == "channels_first" and rank > 2:
        # Keras flattens channels-first tensors in channels-last order.
        x = ctx.add("Transpose", [x], layer, "to_channels_last",
                    attrs={"perm": [0, *range(2, rank), 1]})
    return [ctx.add("Flatten", [x], layer, attrs={"axis": 1})]


@keras_layer("Reshape")
def _reshape(ctx, layer, inputs):
    # ONNX Reshape: 0 copies the input's (batch) dim.
    return [ctx.add("Reshape", inputs, layer,
                    attrs={"shape": [0, *(int(d) for d in layer.target_shape)]})]


@keras_layer("Permute")
def _permute(ctx, layer, inputs):
    return [ctx.add("Transpose", inputs, layer, attrs={"perm": [0, *(int(d) for d in layer.dims)]})]


def _spatial_axes(layer, rank) -> list[int]:
    return list(range(2, rank)) if _layout(layer) == "NCHW" else list(range(1, rank - 1))


def _per_axis(value, n):
    """Keras padding/cropping as ``n`` (begin, end) pairs (1-D layers store one pair)."""
    if n == 1 and len(value) == 2 and isinstance(value[0], (int, np.integer)):
        return [tuple(value)]
    return [tuple(v) for v in value]


@keras_layer("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", refuse=_refuse_data_format)
def _zero_padding(ctx, layer, inputs):
    rank = len(ctx.shape(inputs[0]))
    axes = _spatial_axes(layer, rank)
    pairs = _per_axis(layer.padding, len(axes))
    begin, end = [0] * rank, [0] * rank
    for a, (b, e) in zip(axes, pairs):
        begin[a], end[a] = int(b), int(e)
    return [ctx.add("Pad", inputs, layer, attrs={"pads": begin + end})]


@keras_layer("Cropping1D", "Cropping2D", "Cropping3D", refuse=_refuse_data_format)
def _cropping(ctx, layer, inputs):
    shape = ctx.shape(inputs[0])
    axes = _spatial_axes(layer, len(shape))
    pairs = _per_axis(layer.cropping, len(axes))
    starts = [int(b) for b, _ in pairs]
    # A negative end counts from the end: exact when the dim is unknown too.
    ends = [shape[a] - int(e) if shape[a] is not None else (-int(e) if e else 2**63 - 1)
            for a, (_, e) in zip(axes, pairs)]
    return [ctx.add("Slice", inputs, layer, attrs={"starts": starts, "ends": ends, "axes": axes})]


def _refuse_upsampling(layer, shapes=None) -> list[str]:
    interp = getattr(layer, "interpolation", "nearest")
    reasons = _refuse_data_format(layer, shapes)
    if interp != "nearest":
        reasons.append(f"interpolation={interp!r} is not supported (nearest only)")
    return reasons


@keras_layer("UpSampling1D", "UpSampling2D", "UpSampling3D", refuse=_refuse_upsampling)
def _upsampling(ctx, layer, inputs):
    rank = len(ctx.shape(inputs[0]))
    size = layer.size if isinstance(layer.size, (list, tuple)) else [layer.size]
    scales = [1] * rank
    for a, s in zip(_spatial_axes(layer, rank), size):
        scales[a] = int(s)
    return [ctx.add("Resize", inputs, layer, attrs={"scales": scales, "mode": "nearest"})]


__all__ = ["keras_layer", "handler_for", "supported_layers", "class_label", "KerasContext",
           "LayerHandler", "ACTIVATIONS", "activation_name", "conv_transpose_pads"]
