"""IR ops the ONNX frontend brings, each with its numpy kernel: ``LSTM``, ``GRU`` (what
tf2onnx makes of Keras RNNs), ``LRN`` (old CNN exports), and the boolean/integer plumbing
that tf2onnx writes for ``tf.where`` (Keras's Embedding wraps negative ids that way):
``Cast``, the comparisons ``Less``/``Greater``/``Equal``/``LessOrEqual``/``GreaterOrEqual``,
``Not``/``And``/``Or`` and ``Where``, all with ONNX semantics.

They follow ONNX semantics exactly, with the IR's conventions: weights are params (``W``,
``R``, ``B``, ``P`` as ONNX lays them out, one slice per direction), the optional initial
states are inputs, and ``batch_first`` stands for ONNX's ``layout=1``.  ``LSTM`` returns the
tuple ``(Y, Y_h, Y_c)`` and ``GRU`` ``(Y, Y_h)``; ``GetItem`` nodes select from them.  Shapes
with ``batch_first=0``: X ``(T, N, I)``, Y ``(T, D, N, H)``, Y_h/Y_c ``(D, N, H)``.

Gate order is ONNX's: LSTM ``i, o, f, c`` and GRU ``z, r, h``.  Per step, for LSTM::

    g = X_t W^T + H R^T + Wb + Rb        (clipped to [-clip, clip] when ``clip`` is set)
    i = f(g_i + P_i * C)    f = f(g_f + P_f * C)    (f = 1 - i with ``input_forget``)
    C = f * C + i * g(g_c)  o = f(g_o + P_o * C)    H = o * h(C)

and for GRU::

    z = f(X W_z^T + H R_z^T + Wb_z + Rb_z)    r likewise
    n = g(X W_h^T + (r * H) R_h^T + Rb_h + Wb_h)         (linear_before_reset = 0)
    n = g(X W_h^T + r * (H R_h^T + Rb_h) + Wb_h)         (linear_before_reset = 1)
    H = (1 - z) * n + z * H
"""

from __future__ import annotations

import numpy as np

from ..ir.opset import broadcast_shapes, operand_shapes
from ..ir.schema import REQUIRED, OpSchema, all_schemas, define_op
from ..ir.types import TensorType
from ..ops import register_kernel

_F32 = np.float32

#: Activations the RNN ops accept, with whether they read alpha / beta and their defaults.
_RNN_ACTIVATIONS = {
    "Sigmoid": (None, None), "Tanh": (None, None), "Relu": (None, None),
    "Softsign": (None, None), "Softplus": (None, None),
    "HardSigmoid": (0.2, 0.5), "LeakyRelu": (0.01, None), "ThresholdedRelu": (1.0, None),
    "ScaledTanh": (1.0, 1.0), "Elu": (1.0, None), "Affine": (1.0, 0.0),
}


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _activation(name: str, alpha, beta):
    a = _F32(alpha) if alpha is not None else None
    b = _F32(beta) if beta is not None else None
    return {
        "Sigmoid": _sigmoid,
        "Tanh": np.tanh,
        "Relu": lambda x: np.maximum(x, 0),
        "Softsign": lambda x: x / (1 + np.abs(x)),
        "Softplus": lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
        "HardSigmoid": lambda x: np.clip(a * x + b, 0, 1),
        "LeakyRelu": lambda x: np.where(x >= 0, x, a * x),
        "ThresholdedRelu": lambda x: np.where(x > a, x, 0).astype(x.dtype),
        "ScaledTanh": lambda x: a * np.tanh(b * x),
        "Elu": lambda x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
        "Affine": lambda x: a * x + b,
    }[name]


def activation_functions(attrs, per_direction: int, directions: int, defaults):
    """The activation callables of an RNN node, ``directions`` lists of ``per_direction``,
    consuming ``activation_alpha``/``activation_beta`` in order as ONNX does."""
    names = list(attrs.get("activations") or defaults * directions)
    if len(names) == per_direction and directions == 2:
        names = names * 2
    alphas = list(attrs.get("activation_alpha") or [])
    betas = list(attrs.get("activation_beta") or [])
    fns = []
    for name in names:
        name = _canonical_activation(name)
        da, db = _RNN_ACTIVATIONS[name]
        a = alphas.pop(0) if da is not None and alphas else da
        b = betas.pop(0) if db is not None and betas else db
        fns.append(_activation(name, a, b))
    return [fns[d * per_direction:(d + 1) * per_direction] for d in range(directions)]


def _canonical_activation(name) -> str:
    name = name.decode() if isinstance(name, bytes) else str(name)
    for known in _RNN_ACTIVATIONS:
        if known.lower() == name.lower():
            return known
    raise ValueError(f"RNN activation {name!r} is not supported; known: "
                     f"{', '.join(_RNN_ACTIVATIONS)}")


def _directions(attrs) -> int:
    direction = attrs["direction"]
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"direction {direction!r} is not forward, reverse or bidirectional")
    return 2 if direction == "bidirectional" else 1


def _rnn_shapes(node, types, gates: int, states: int):
    x = types[0]
    if x.rank != 3:
        raise ValueError(f"expects a 3-D input, got {x}")
    d = _directions(node.attrs)
    h = int(node.attrs["hidden_size"])
    w, r = node.params["W"], node.params["R"]
    if w.shape[:2] != (d, gates * h) or r.shape != (d, gates * h, h):
        raise ValueError(f"W {w.shape} / R {r.shape} do not match {d} direction(s) of "
                         f"hidden size {h}")
    if x.shape[2] is not None and x.shape[2] != w.shape[2]:
        raise ValueError(f"input size {x.shape[2]} != W's {w.shape[2]}")
    if "B" in node.params and node.params["B"].shape != (d, 2 * gates * h):
        raise ValueError(f"B has shape {node.params['B'].shape}, expected {(d, 2 * gates * h)}")
    for name in node.attrs.get("activations") or []:
        _canonical_activation(name)  # an unknown activation fails here, not at run time
    if node.attrs.get("batch_first"):
        n, t = x.shape[0], x.shape[1]
        y, state = (n, t, d, h), (n, d, h)
    else:
        t, n = x.shape[0], x.shape[1]
        y, state = (t, d, n, h), (d, n, h)
    for s in types[1:]:
        if s.rank != 3:
            raise ValueError(f"an initial state must be 3-D, got {s}")
    return tuple([x.with_shape(y)] + [x.with_shape(state)] * states)


def _lstm_shape(node, types):
    if "P" in node.params:
        d, h = _directions(node.attrs), int(node.attrs["hidden_size"])
        if node.params["P"].shape != (d, 3 * h):
            raise ValueError(f"P has shape {node.params['P'].shape}, expected {(d, 3 * h)}")
    return _rnn_shapes(node, types, 4, 2)


def _gru_shape(node, types):
    return _rnn_shapes(node, types, 3, 1)


def _lrn_shape(node, types):
    if types[0].rank < 3:
        raise ValueError(f"LRN expects a batch, channel and spatial axes, got {types[0]}")
    return types[0]


_RNN_ATTRS = {"hidden_size": REQUIRED, "direction": "forward", "activations": None,
              "activation_alpha": None, "activation_beta": None, "clip": None,
              "batch_first": 0}

if "LSTM" not in all_schemas():
    define_op(OpSchema("LSTM", "ONNX LSTM; returns (Y, Y_h, Y_c); optional inputs are the "
                       "initial hidden and cell states.", _lstm_shape, category="nn",
                       min_inputs=1, max_inputs=3, attrs={**_RNN_ATTRS, "input_forget": 0},
                       params=("W", "R", "B", "P"), required_params=("W", "R"), onnx="LSTM"))
    define_op(OpSchema("GRU", "ONNX GRU; returns (Y, Y_h); the optional input is the initial "
                       "hidden state.", _gru_shape, category="nn", min_inputs=1, max_inputs=2,
                       attrs={**_RNN_ATTRS, "linear_before_reset": 0},
                       params=("W", "R", "B"), required_params=("W", "R"), onnx="GRU"))
    define_op(OpSchema("LRN", "Local response normalisation across ``size`` channels: "
                       "``x / (bias + alpha / size * sum(x^2))^beta``.", _lrn_shape,
                       category="nn", layout_sensitive=True,
                       attrs={"layout": REQUIRED, "size": REQUIRED, "alpha": 1e-4,
                              "beta": 0.75, "bias": 1.0}, onnx="LRN"))



# ---------------------------------------------------------------- booleans and casts

_COMPARE = {"Less": np.less, "Greater": np.greater, "Equal": np.equal,
            "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
            "And": np.logical_and, "Or": np.logical_or}


def _compare_shape(node, types):
    return TensorType(broadcast_shapes(*operand_shapes(node, types)), "bool")


def _cast_shape(node, types):
    return TensorType(types[0].shape, node.attrs["to"])


def _where_shape(node, types):
    if types[0].dtype != "bool":
        raise ValueError(f"Where's condition is {types[0].dtype}, not bool")
    return TensorType(broadcast_shapes(*(t.shape for t in types)), types[1].dtype)


if "Where" not in all_schemas():
    for _name, _doc in [("Less", "a < b"), ("Greater", "a > b"), ("Equal", "a == b"),
                        ("LessOrEqual", "a <= b"), ("GreaterOrEqual", "a >= b"),
                        ("And", "a and b"), ("Or", "a or b")]:
        define_op(OpSchema(_name, f"Broadcasting ``{_doc}`` giving bool; ``b`` is the second "
                           "input or the constant param ``B``.", _compare_shape,
                           category="elementwise", min_inputs=1, max_inputs=2, params=("B",),
                           const_operand="B", onnx=_name))
    define_op(OpSchema("Not", "Logical not of a bool tensor.", _compare_shape,
                       category="elementwise", onnx="Not"))
    define_op(OpSchema("Cast", "Convert to numpy dtype ``to`` (floats to ints truncate).",
                       _cast_shape, category="elementwise", attrs={"to": REQUIRED},
                       onnx="Cast"))
    define_op(OpSchema("Where", "``x`` where ``condition`` else ``y``, broadcasting.",
                       _where_shape, category="elementwise", min_inputs=3, max_inputs=3,
                       onnx="Where"))


def _compare_kernel(node):
    fn = _COMPARE[node.op]
    if "B" in node.params:
        b = node.params["B"]
        return lambda x: fn(x, b)
    return fn


register_kernel(*_COMPARE)(_compare_kernel)


@register_kernel("Not")
def _not(node):
    return np.logical_not


@register_kernel("Cast")
def _cast(node):
    dtype = np.dtype(node.attrs["to"])
    return lambda x: np.asarray(x).astype(dtype)


@register_kernel("Where")
def _where(node):
    return np.where


# ---------------------------------------------------------------- kernels


def _steps(direction: str, d: int, length: int):
    reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
    return range(length - 1, -1, -1) if reverse else range(length)


def _rnn_prepare(node, gates):
    p = node.params
    d, h = _directions(node.attrs), int(node.attrs["hidden_size"])
    w = p["W"].astype(_F32)
    r = p["R"].astype(_F32)
    b = p["B"].astype(_F32) if "B" in p else np.zeros((d, 2 * gates * h), _F32)
    return d, h, w, r, b


def _time_major(node, x, states):
    if node.attrs.get("batch_first"):
        return x.transpose(1, 0, 2), [s.transpose(1, 0, 2) for s in states]
    return x, list(states)


def _outputs(node, y, finals):
    y = np.stack(y, axis=1)  # (T, D, N, H)
    finals = [np.stack(f, axis=0) for f in finals]  # (D, N, H)
    if node.attrs.get("batch_first"):
        return (y.transpose(2, 0, 1, 3), *[f.transpose(1, 0, 2) for f in finals])
    return (y, *finals)


@register_kernel("LSTM")
def _lstm(node):
    d_count, h, w, r, b = _rnn_prepare(node, 4)
    peep = node.params["P"].astype(_F32) if "P" in node.params else None
    acts = activation_functions(node.attrs, 3, d_count, ["Sigmoid", "Tanh", "Tanh"])
    clip = node.attrs["clip"]
    input_forget = node.attrs["input_forget"]
    direction = node.attrs["direction"]

    def lstm(x, *states):
        x, states = _time_major(node, x.astype(_F32, copy=False), states)
        t_len, n = x.shape[:2]
        ys, hs, cs = [], [], []
        for d in range(d_count):
            f_act, g_act, h_act = acts[d]
            xw = x @ w[d].T + (b[d, :4 * h] + b[d, 4 * h:])
            hid = states[0][d] if states else np.zeros((n, h), _F32)
            cell = states[1][d] if len(states) > 1 else np.zeros((n, h), _F32)
            y = np.empty((t_len, n, h), _F32)
            for t in _steps(direction, d, t_len):
                g = xw[t] + hid @ r[d].T
                if clip is not None:
                    g = np.clip(g, -clip, clip)
                gi, go, gf, gc = g[:, :h], g[:, h:2 * h], g[:, 2 * h:3 * h], g[:, 3 * h:]
                if peep is not None:
                    gi = gi + peep[d, :h] * cell
                    gf = gf + peep[d, 2 * h:] * cell
                i = f_act(gi)
                f = 1 - i if input_forget else f_act(gf)
                cell = f * cell + i * g_act(gc)
                if peep is not None:
                    go = go + peep[d, h:2 * h] * cell
                hid = f_act(go) * h_act(cell)
                y[t] = hid
            ys.append(y)
            hs.append(hid)
            cs.append(cell)
        return _outputs(node, ys, [hs, cs])

    return lstm


@register_kernel("GRU")
def _gru(node):
    d_count, h, w, r, b = _rnn_prepare(node, 3)
    acts = activation_functions(node.attrs, 2, d_count, ["Sigmoid", "Tanh"])
    clip = node.attrs["clip"]
    linear_before_reset = node.attrs["linear_before_reset"]
    direction = node.attrs["direction"]

    def clipped(v):
        return np.clip(v, -clip, clip) if clip is not None else v

    def gru(x, *states):
        x, states = _time_major(node, x.astype(_F32, copy=False), states)
        t_len, n = x.shape[:2]
        ys, hs = [], []
        for d in range(d_count):
            f_act, g_act = acts[d]
            wb, rb = b[d, :3 * h], b[d, 3 * h:]
            xw = x @ w[d].T + wb
            rz, rh = r[d, :2 * h], r[d, 2 * h:]
            hid = states[0][d] if states else np.zeros((n, h), _F32)
            y = np.empty((t_len, n, h), _F32)
            for t in _steps(direction, d, t_len):
                zr = xw[t, :, :2 * h] + hid @ rz.T + rb[:2 * h]
                z = f_act(clipped(zr[:, :h]))
                rr = f_act(clipped(zr[:, h:]))
                if linear_before_reset:
                    cand = xw[t, :, 2 * h:] + rr * (hid @ rh.T + rb[2 * h:])
                else:
                    cand = xw[t, :, 2 * h:] + (rr * hid) @ rh.T + rb[2 * h:]
                nxt = g_act(clipped(cand))
                hid = (1 - z) * nxt + z * hid
                y[t] = hid
            ys.append(y)
            hs.append(hid)
        return _outputs(node, ys, [hs])

    return gru


@register_kernel("LRN")
def _lrn(node):
    a = node.attrs
    size, alpha, beta, bias = int(a["size"]), _F32(a["alpha"]), _F32(a["beta"]), _F32(a["bias"])
    before, after = (size - 1) // 2, -(-(size - 1) // 2)
    last = a["layout"] == "NHWC"

    def lrn(x):
        xc = x if last else np.moveaxis(x, 1, -1)
        sq = np.square(xc.astype(np.float64))
        c = xc.shape[-1]
        cum = np.concatenate([np.zeros(sq.shape[:-1] + (1,)), np.cumsum(sq, axis=-1)], axis=-1)
        hi = np.minimum(np.arange(c) + after + 1, c)
        lo = np.maximum(np.arange(c) - before, 0)
        window = (cum[..., hi] - cum[..., lo]).astype(_F32)
        y = (xc / (bias + alpha / size * window) ** beta).astype(x.dtype, copy=False)
        return y if last else np.moveaxis(y, -1, 1)

    return lrn


__all__ = ["activation_functions"]
