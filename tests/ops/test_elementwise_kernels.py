"""Activation and arithmetic kernels against their formulas."""

import math

import numpy as np
import pytest

from ir_bridge.ir import Graph
from ir_bridge.ops import activation_kernel, kernel_for
from ir_bridge.ops.elementwise import erf

X = np.linspace(-6, 6, 241, dtype="float32").reshape(1, -1)


def sig(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


FORMULAS = [
    ("Relu", {}, lambda x: np.maximum(x, 0)),
    ("Relu", {"max_value": 6.0}, lambda x: np.clip(x, 0, 6)),
    ("Relu", {"negative_slope": 0.1}, lambda x: np.where(x >= 0, x, 0.1 * x)),
    # keras.activations.relu(x, negative_slope=0.1, max_value=4, threshold=1)
    ("Relu", {"negative_slope": 0.1, "max_value": 4.0, "threshold": 1.0},
     lambda x: np.where(x > 1, np.clip(x, 0, 4), 0) - 0.1 * np.maximum(1 - x, 0)),
    ("LeakyRelu", {"alpha": 0.3}, lambda x: np.where(x >= 0, x, 0.3 * x)),
    ("Elu", {"alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    ("Selu", {}, lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x))),
    ("Sigmoid", {}, sig),
    ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, lambda x: np.clip(x / 6 + 0.5, 0, 1)),
    ("Tanh", {}, np.tanh),
    ("Softplus", {}, lambda x: np.log1p(np.exp(x.astype(np.float64)))),
    ("Softsign", {}, lambda x: x / (1 + np.abs(x))),
    ("Exp", {}, np.exp),
    ("Gelu", {}, lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    ("Gelu", {"approximate": "tanh"},
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    ("Swish", {}, lambda x: x * sig(x)),
    ("Mish", {}, lambda x: x * np.tanh(np.log1p(np.exp(x.astype(np.float64))))),
    ("HardSwish", {}, lambda x: x * np.clip(x + 3, 0, 6) / 6),
    ("Clip", {"min": -1.0, "max": 2.0}, lambda x: np.clip(x, -1, 2)),
    ("Softmax", {"axis": -1}, lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
    ("LogSoftmax", {"axis": -1}, lambda x: x - np.log(np.exp(x.astype(np.float64)).sum(-1, keepdims=True))),
]


@pytest.mark.parametrize("op,attrs,formula", FORMULAS, ids=[f"{f[0]}{f[1]}" for f in FORMULAS])
def test_activation_matches_formula(op, attrs, formula):
    y = activation_kernel(op, attrs)(X)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, formula(X), atol=2e-6, rtol=1e-5)


def test_erf_accuracy():
    grid = np.linspace(-5, 5, 10001)
    ref = np.vectorize(math.erf)(grid)
    assert np.abs(erf(grid) - ref).max() < 2e-7


def test_softmax_is_stable_for_large_logits():
    y = activation_kernel("Softmax", {"axis": -1})(np.array([[1000.0, 0.0, -1000.0]], "float32"))
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0]])


def test_binary_ops_with_constant_operand_and_variadic(rng):
    g = Graph()
    x = g.add_input("x", (None, 3))
    y = g.add_input("y", (None, 3))
    b = np.array([1.0, 2.0, 4.0], "float32")
    xs = rng.standard_normal((2, 3)).astype("float32")
    ys = rng.standard_normal((2, 3)).astype("float32")
    for op, fn in [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                   ("Div", np.divide)]:
        np.testing.assert_allclose(kernel_for(g.add_node(op, [x], params={"B": b}))(xs), fn(xs, b))
        np.testing.assert_allclose(kernel_for(g.add_node(op, [x, y]))(xs, ys), fn(xs, ys))
    np.testing.assert_allclose(kernel_for(g.add_node("Mean", [x, y, x]))(xs, ys, xs),
                               (2 * xs + ys) / 3, rtol=1e-6)
    np.testing.assert_allclose(kernel_for(g.add_node("Max", [x, y]))(xs, ys), np.maximum(xs, ys))


def test_fused_activation_is_applied(rng):
    g = Graph()
    x = g.add_input("x", (None, 3))
    w = rng.standard_normal((3, 2)).astype("float32")
    n = g.add_node("Gemm", [x], params={"W": w},
                   attrs={"activation": "LeakyRelu", "activation_attrs": {"alpha": 0.5}})
    xs = rng.standard_normal((4, 3)).astype("float32")
    z = xs @ w
    np.testing.assert_allclose(kernel_for(n)(xs), np.where(z >= 0, z, 0.5 * z), rtol=1e-6)
