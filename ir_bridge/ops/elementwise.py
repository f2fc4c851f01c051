"""Kernels of activations and elementwise arithmetic (float32 in, float32 out)."""

from __future__ import annotations

import numpy as np

from . import register_kernel

_F32 = np.float32


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, vectorised (Abramowitz & Stegun 7.1.26 in float64, |err| < 1.5e-7)."""
    x64 = np.asarray(x, dtype=np.float64)
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x64))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                         + t * 1.061405429))))
    y = 1.0 - poly * np.exp(-x64 * x64)
    return (np.sign(x64) * y).astype(np.result_type(x, _F32), copy=False)


def _sigmoid(x):
    # exp of a non-positive argument only, so nothing overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _softplus(x):
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


def _softmax(x, axis):
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _unary(op, fn):
    register_kernel(op)(lambda node: fn)


@register_kernel("Relu")
def _relu(node):
    # Keras's relu, step for step: the positive part (x above the threshold, clipped to
    # [0, max_value]) minus negative_slope times the part below the threshold.
    slope, cap, thr = (node.attrs["negative_slope"], node.attrs["max_value"],
                       node.attrs["threshold"])
    if not slope and cap is None and not thr:
        return lambda x: np.maximum(x, x.dtype.type(0))

    def relu(x):
        pos = np.where(x > thr, x, 0) if thr else np.maximum(x, 0)
        if cap is not None:
            pos = np.clip(pos, 0, cap)
        if slope:
            pos = pos - _F32(slope) * np.maximum(_F32(thr) - x, 0)
        return pos.astype(x.dtype, copy=False)

    return relu


@register_kernel("LeakyRelu")
def _leaky(node):
    a = _F32(node.attrs["alpha"])
    return lambda x: np.where(x >= 0, x, a * x)


@register_kernel("Elu")
def _elu(node):
    a = _F32(node.attrs["alpha"])
    return lambda x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


@register_kernel("Selu")
def _selu(node):
    a, g = _F32(node.attrs["alpha"]), _F32(node.attrs["gamma"])
    return lambda x: g * np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


@register_kernel("HardSigmoid")
def _hard_sigmoid(node):
    a, b = _F32(node.attrs["alpha"]), _F32(node.attrs["beta"])
    return lambda x: np.clip(a * x + b, _F32(0), _F32(1))


@register_kernel("Gelu")
def _gelu(node):
    if node.attrs["approximate"] == "tanh":
        c = _F32(np.sqrt(2 / np.pi))
        return lambda x: _F32(0.5) * x * (1 + np.tanh(c * (x + _F32(0.044715) * x ** 3)))
    inv = _F32(1 / np.sqrt(2))
    return lambda x: _F32(0.5) * x * (1 + erf(x * inv))


@register_kernel("Swish")
def _swish(node):
    a = _F32(node.attrs["alpha"])
    return lambda x: x * _sigmoid(a * x)


@register_kernel("Clip")
def _clip(node):
    lo, hi = node.attrs["min"], node.attrs["max"]
    return lambda x: np.clip(x, lo, hi).astype(x.dtype, copy=False)


@register_kernel("Softmax")
def _softmax_k(node):
    axis = node.attrs["axis"]
    return lambda x: _softmax(x, axis)


@register_kernel("LogSoftmax")
def _log_softmax(node):
    axis = node.attrs["axis"]

    def log_softmax(x):
        z = x - x.max(axis=axis, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))

    return log_softmax


@register_kernel("PRelu")
def _prelu(node):
    slope = node.params["slope"].astype(_F32)
    return lambda x: np.where(x >= 0, x, slope * x)


_unary("Sigmoid", _sigmoid)
_unary("Tanh", np.tanh)
_unary("Softplus", _softplus)
_unary("Softsign", lambda x: x / (1 + np.abs(x)))
_unary("Exp", np.exp)
_unary("Mish", lambda x: x * np.tanh(_softplus(x)))
_unary("HardSwish", lambda x: x * np.clip(x + 3, 0, 6) / _F32(6))
_unary("Erf", erf)
_unary("Sqrt", np.sqrt)
_unary("Neg", np.negative)
_unary("Abs", np.abs)
_unary("Log", np.log)
_unary("Reciprocal", lambda x: 1 / x)
_unary("Floor", np.floor)
_unary("Identity", lambda x: x)
_unary("Dropout", lambda x: x)

_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
           "Pow": np.power}


def _binary_factory(node):
    fn = _BINARY[node.op]
    if "B" in node.params:
        b = node.params["B"]
        if b.dtype == np.float64:
            b = b.astype(_F32)
        return lambda x: fn(x, b)
    return fn


register_kernel(*_BINARY)(_binary_factory)


def _variadic(reduce_fn):
    def factory(node):
        def run(*xs):
            out = xs[0]
            for x in xs[1:]:
                out = reduce_fn(out, x)
            return out

        return run

    return factory


register_kernel("Max")(_variadic(np.maximum))
register_kernel("Min")(_variadic(np.minimum))
register_kernel("Sum")(_variadic(np.add))


@register_kernel("Mean")
def _mean(node):
    add = _variadic(np.add)(node)
    return lambda *xs: add(*xs) / np.asarray(len(xs), dtype=xs[0].dtype)
