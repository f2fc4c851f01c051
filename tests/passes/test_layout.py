"""layout-nchw / layout-nhwc: meaning preserved, transposes cancelled and folded."""

import numpy as np
import pytest

from conftest import assert_preserves
from ir_bridge.ir import Graph

F = "float32"


def cnn(rng):
    """NHWC: conv, BN, relu, residual add, concat, pad, upsample, pool, flatten, dense."""
    g = Graph("cnn")
    x = g.add_input("x", (None, 8, 8, 3))

    def conv(src, cin, cout, name):
        return g.add_node("Conv", [src], name=name, attrs={"layout": "NHWC", "pads": (1, 1, 1, 1)},
                          params={"W": (rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(F),
                                  "B": rng.standard_normal(cout).astype(F)})

    c1 = conv(x, 3, 4, "c1")
    bn = g.add_node("BatchNormalization", [c1], attrs={"axis": -1}, params={
        k: rng.random(4).astype(F) + 0.5 for k in ("scale", "B", "mean", "var")})
    r = g.add_node("Relu", [bn])
    c2 = conv(r, 4, 4, "c2")
    add = g.add_node("Add", [c2, r])
    cat = g.add_node("Concat", [add, r], attrs={"axis": -1})
    pad = g.add_node("Pad", [cat], attrs={"pads": (0, 1, 0, 0, 0, 0, 1, 0)})
    pool = g.add_node("MaxPool", [pad], attrs={"layout": "NHWC", "kernel_shape": (3, 3),
                                               "strides": (3, 3)})
    up = g.add_node("Resize", [pool], attrs={"scales": (1, 2, 2, 1)})
    sm = g.add_node("Softmax", [up], attrs={"axis": -1})
    flat = g.add_node("Flatten", [sm])
    g.set_outputs([g.add_node("Gemm", [flat], params={
        "W": rng.standard_normal((6 * 6 * 8, 5)).astype(F) * 0.1})])
    return g


def transposes(graph):
    return sum(1 for n in graph if n.op == "Transpose")


def test_to_nchw_leaves_one_transpose_at_the_input(rng):
    result = assert_preserves(cnn(rng), "layout-nchw", atol=1e-5)
    g = result.graph
    assert transposes(g) == 1
    (t,) = [n for n in g if n.op == "Transpose"]
    assert t.inputs == ("x",)
    assert all(n.attrs["layout"] == "NCHW" for n in g if "layout" in n.attrs)
    assert g["batchnormalization"].attrs["axis"] == 1


def test_with_default_pipeline_then_back_to_nhwc(rng):
    result = assert_preserves(cnn(rng), "default,layout-nchw,layout-nhwc", atol=1e-5)
    assert transposes(result.graph) == 0
    assert all(n.attrs["layout"] == "NHWC" for n in result.graph if "layout" in n.attrs)


def test_nchw_source_to_nhwc_folds_flatten_into_dense(rng):
    g = Graph()
    x = g.add_input("x", (None, 2, 4, 4))
    c = g.add_node("Conv", [x], attrs={"layout": "NCHW"},
                   params={"W": rng.standard_normal((3, 2, 3, 3)).astype(F)})
    f = g.add_node("Flatten", [c])
    g.set_outputs([g.add_node("Gemm", [f], params={"W": rng.standard_normal((12, 2)).astype(F)})])
    result = assert_preserves(g, "layout-nhwc")
    # One transpose into NHWC at the input; the one back before Flatten is folded away.
    assert transposes(result.graph) == 1


def test_layout_pass_is_idempotent(rng):
    first = assert_preserves(cnn(rng), "layout-nchw").graph
    again = assert_preserves(first, "layout-nchw")
    assert not again.changed
