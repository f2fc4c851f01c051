"""Convolution, pooling and normalisation kernels against direct loop definitions."""

import itertools

import numpy as np
import pytest

from ir_bridge.ir import Graph
from ir_bridge.ops import kernel_for

F = "float32"


def node(op, in_shape, attrs=None, params=None):
    g = Graph()
    x = g.add_input("x", (None, *in_shape))
    return g.add_node(op, [x], attrs=attrs, params=params)


def conv_reference(x, w, b, strides, pads, dil, group):
    """ONNX Conv on NCHW 2-D input, written as the definition (slow, obvious)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    oh = (xp.shape[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (xp.shape[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((n, m, oh, ow))
    mg = m // group
    for o, i, j in itertools.product(range(m), range(oh), range(ow)):
        g = o // mg
        patch = xp[:, g * cg:(g + 1) * cg,
                   i * strides[0]: i * strides[0] + dil[0] * (kh - 1) + 1: dil[0],
                   j * strides[1]: j * strides[1] + dil[1] * (kw - 1) + 1: dil[1]]
        y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + (b[o] if b is not None else 0)
    return y


CONV_CASES = [
    dict(c=3, m=4, k=3, strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1),
    dict(c=3, m=5, k=3, strides=(2, 1), pads=(1, 0, 2, 1), dil=(1, 1), group=1),
    dict(c=4, m=6, k=2, strides=(1, 2), pads=(1, 1, 1, 1), dil=(2, 1), group=2),
    dict(c=4, m=8, k=3, strides=(1, 1), pads=(1, 1, 1, 1), dil=(1, 1), group=4),  # depthwise
    dict(c=2, m=3, k=1, strides=(3, 3), pads=(0, 0, 0, 0), dil=(1, 1), group=1),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"g{c['group']}s{c['strides']}")
def test_conv_matches_definition(case, layout, rng):
    c, m, k = case["c"], case["m"], case["k"]
    x = rng.standard_normal((3, c, 9, 8)).astype(F)
    w = rng.standard_normal((m, c // case["group"], k, k)).astype(F)
    b = rng.standard_normal(m).astype(F)
    expected = conv_reference(x, w, b, case["strides"], case["pads"], case["dil"], case["group"])
    shape = x.shape[1:] if layout == "NCHW" else (9, 8, c)
    n = node("Conv", shape, {"layout": layout, "strides": case["strides"], "pads": case["pads"],
                             "dilations": case["dil"], "group": case["group"]}, {"W": w, "B": b})
    xin = x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
    y = kernel_for(n)(xin)
    if layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=1e-4)


def test_conv_same_upper_equals_explicit_pads(rng):
    x = rng.standard_normal((2, 7, 7, 3)).astype(F)
    w = rng.standard_normal((4, 3, 4, 4)).astype(F)
    auto = kernel_for(node("Conv", (7, 7, 3), {"layout": "NHWC", "auto_pad": "SAME_UPPER",
                                                "strides": (2, 2)}, {"W": w}))(x)
    # SAME with k=4, s=2 on 7: out 4, total pad 3 -> 1 before, 2 after.
    explicit = kernel_for(node("Conv", (7, 7, 3), {"layout": "NHWC", "pads": (1, 1, 2, 2),
                                                    "strides": (2, 2)}, {"W": w}))(x)
    np.testing.assert_array_equal(auto, explicit)


def conv_transpose_reference(x, w, strides, pads, opad):
    """ONNX ConvTranspose (group 1, NCHW): scatter each input pixel times the kernel."""
    n, c, h, wd = x.shape
    _, m, kh, kw = w.shape
    full = np.zeros((n, m, strides[0] * (h - 1) + kh + opad[0], strides[1] * (wd - 1) + kw + opad[1]))
    for i, j in itertools.product(range(h), range(wd)):
        contrib = np.einsum("nc,cmab->nmab", x[:, :, i, j], w)
        full[:, :, i * strides[0]: i * strides[0] + kh, j * strides[1]: j * strides[1] + kw] += contrib
    return full[:, :, pads[0]: full.shape[2] - pads[2], pads[1]: full.shape[3] - pads[3]]


@pytest.mark.parametrize("strides,pads,opad", [((1, 1), (0, 0, 0, 0), (0, 0)),
                                               ((2, 2), (1, 1, 1, 1), (1, 1)),
                                               ((2, 3), (0, 1, 1, 0), (0, 2))])
def test_conv_transpose_matches_definition(strides, pads, opad, rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(F)
    w = rng.standard_normal((3, 2, 3, 3)).astype(F)
    expected = conv_transpose_reference(x, w, strides, pads, opad)
    n = node("ConvTranspose", (3, 4, 5), {"layout": "NCHW", "strides": strides, "pads": pads,
                                          "output_padding": opad}, {"W": w})
    y = kernel_for(n)(x)
    assert n.type.shape[1:] == y.shape[1:]
    np.testing.assert_allclose(y, expected, atol=1e-4)


def pool_reference(x, k, s, pads, fn, include_pad):
    n, c, h, w = x.shape
    fill = -np.inf if fn is np.max else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])], constant_values=fill)
    mask = np.pad(np.ones((h, w)), [(pads[0], pads[2]), (pads[1], pads[3])],
                  constant_values=1.0 if include_pad else 0.0)
    oh = (xp.shape[2] - k[0]) // s[0] + 1
    ow = (xp.shape[3] - k[1]) // s[1] + 1
    y = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        win = xp[:, :, i * s[0]: i * s[0] + k[0], j * s[1]: j * s[1] + k[1]]
        if fn is np.max:
            y[:, :, i, j] = win.max(axis=(2, 3))
        else:
            cnt = mask[i * s[0]: i * s[0] + k[0], j * s[1]: j * s[1] + k[1]].sum()
            y[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return y


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pools_match_definition(op, include_pad, layout, rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(F)
    k, s, pads = (3, 2), (2, 2), (1, 0, 1, 1)
    fn = np.max if op == "MaxPool" else np.mean
    expected = pool_reference(x, k, s, pads, fn, include_pad)
    attrs = {"layout": layout, "kernel_shape": k, "strides": s, "pads": pads}
    if op == "AveragePool":
        attrs["count_include_pad"] = include_pad
    shape = (3, 7, 6) if layout == "NCHW" else (7, 6, 3)
    xin = x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
    y = kernel_for(node(op, shape, attrs))(xin)
    if layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_batchnorm_and_layernorm(rng):
    x = rng.standard_normal((4, 5, 3)).astype(F)
    p = {k: rng.random(3).astype(F) + 0.1 for k in ("scale", "B", "mean", "var")}
    y = kernel_for(node("BatchNormalization", (5, 3), {"axis": -1, "epsilon": 1e-3}, p))(x)
    ref = (x - p["mean"]) / np.sqrt(p["var"] + 1e-3) * p["scale"] + p["B"]
    np.testing.assert_allclose(y, ref, atol=1e-5)
    scale, bias = rng.random((5, 3)).astype(F), rng.random((5, 3)).astype(F)
    y = kernel_for(node("LayerNormalization", (5, 3), {"axis": 1, "epsilon": 1e-5},
                        {"scale": scale, "B": bias}))(x)
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-5) * scale + bias, atol=1e-5)


def test_gemm_flatten_and_gather(rng):
    x = rng.standard_normal((2, 3, 4)).astype(F)
    w = rng.standard_normal((12, 5)).astype(F)
    y = kernel_for(node("Gemm", (3, 4), {"flatten": 1}, {"W": w}))(x)
    np.testing.assert_allclose(y, x.reshape(2, 12) @ w, atol=1e-5)
    table = rng.standard_normal((10, 3)).astype(F)
    g = node("Gather", (4,), None, {"data": table})
    idx = np.array([[1, 9, 0, 2], [3, 3, 3, 3]])
    np.testing.assert_array_equal(kernel_for(g)(idx), table[idx])
    with pytest.raises(IndexError):
        kernel_for(g)(np.array([[10, 0, 0, 0]]))
