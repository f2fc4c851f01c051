"""fold-flatten, fuse-activation and fold-batchnorm: rewrites, counts, negative cases."""

import numpy as np
import pytest

from conftest import assert_preserves
from ir_bridge.ir import Graph

F = "float32"


def dense(g, x, k, n, rng, name=None):
    return g.add_node("Gemm", [x], name=name, params={
        "W": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(F),
        "B": rng.standard_normal(n).astype(F)})


def mlp(rng):
    g = Graph("mlp")
    x = g.add_input("x", (None, 8, 8, 1))
    f = g.add_node("Flatten", [x])
    h = g.add_node("Relu", [dense(g, f, 64, 16, rng)])
    h = g.add_node("Relu", [dense(g, h, 16, 8, rng)])
    g.set_outputs([g.add_node("Softmax", [dense(g, h, 8, 10, rng)])])
    return g


def test_mlp_becomes_three_gemms(rng):
    result = assert_preserves(mlp(rng), "default")
    nodes = [n for n in result.graph if n.op != "Input"]
    assert [n.op for n in nodes] == ["Gemm"] * 3
    assert [n.attrs["activation"] for n in nodes] == ["Relu", "Relu", "Softmax"]
    assert nodes[0].attrs["flatten"] == 1


def test_fold_flatten_drops_flatten_of_2d_input(rng):
    g = Graph()
    x = g.add_input("x", (None, 5))
    g.set_outputs([dense(g, g.add_node("Flatten", [x]), 5, 2, rng)])
    result = assert_preserves(g, "fold-flatten")
    assert result.graph.op_counts() == {"Input": 1, "Gemm": 1}
    assert result.graph["gemm"].attrs["flatten"] is None


def test_fold_flatten_skips_non_gemm_user(rng):
    g = Graph()
    x = g.add_input("x", (None, 2, 3))
    f = g.add_node("Flatten", [x])
    g.set_outputs([dense(g, f, 6, 2, rng), g.add_node("Relu", [f])])
    result = assert_preserves(g, "fold-flatten")
    assert not result.changed
    assert any("not only by plain Gemm" in n for n in result.notes)


def test_fuse_activation_skips_shared_value(rng):
    g = Graph()
    x = g.add_input("x", (None, 4))
    h = dense(g, x, 4, 4, rng)
    g.set_outputs([g.add_node("Relu", [h]), g.add_node("Add", [h, x])])
    result = assert_preserves(g, "fuse-activation")
    assert not result.changed
    assert result.graph.op_counts()["Relu"] == 1


def conv_bn_relu(rng, layout, axis):
    g = Graph()
    shape = (None, 6, 6, 3) if layout == "NHWC" else (None, 3, 6, 6)
    x = g.add_input("x", shape)
    c = g.add_node("Conv", [x], attrs={"layout": layout, "pads": (1, 1, 1, 1)},
                   params={"W": rng.standard_normal((5, 3, 3, 3)).astype(F)})
    p = {"scale": rng.random(5).astype(F) + 0.5, "B": rng.standard_normal(5).astype(F),
         "mean": rng.standard_normal(5).astype(F), "var": rng.random(5).astype(F) + 0.1}
    bn = g.add_node("BatchNormalization", [c], attrs={"axis": axis, "epsilon": 1e-3}, params=p)
    g.set_outputs([g.add_node("Relu", [bn])])
    return g


@pytest.mark.parametrize("layout,axis", [("NHWC", -1), ("NHWC", 3), ("NCHW", 1)])
def test_conv_bn_relu_becomes_one_node(layout, axis, rng):
    result = assert_preserves(conv_bn_relu(rng, layout, axis), "default", atol=2e-5)
    (conv,) = [n for n in result.graph if n.op != "Input"]
    assert conv.op == "Conv" and conv.attrs["activation"] == "Relu" and "B" in conv.params


def test_fold_batchnorm_into_gemm_and_refusals(rng):
    g = Graph()
    x = g.add_input("x", (None, 4))
    h = dense(g, x, 4, 3, rng)
    p = {"scale": rng.random(3).astype(F), "B": rng.random(3).astype(F),
         "mean": rng.random(3).astype(F), "var": rng.random(3).astype(F)}
    g.set_outputs([g.add_node("BatchNormalization", [h], attrs={"axis": -1}, params=p)])
    result = assert_preserves(g, "fold-batchnorm")
    assert result.graph.op_counts() == {"Input": 1, "Gemm": 1}

    # BN over a non-channel axis of a conv output is not foldable.
    g = Graph()
    x = g.add_input("x", (None, 6, 6, 3))
    c = g.add_node("Conv", [x], attrs={"layout": "NHWC", "pads": (1, 1, 1, 1)},
                   params={"W": rng.standard_normal((5, 3, 3, 3)).astype(F)})
    p = {k: rng.random(6).astype(F) + 0.5 for k in ("scale", "B", "mean", "var")}
    g.set_outputs([g.add_node("BatchNormalization", [c], attrs={"axis": 1}, params=p)])
    result = assert_preserves(g, "fold-batchnorm")
    assert not result.changed
    assert any("axis other than the channels" in n for n in result.notes)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_fold_pad_into_conv(layout, rng):
    g = Graph()
    shape = (None, 6, 6, 2) if layout == "NHWC" else (None, 2, 6, 6)
    x = g.add_input("x", shape)
    pads = (0, 1, 2, 0, 0, 3, 0, 0) if layout == "NHWC" else (0, 0, 1, 2, 0, 0, 3, 0)
    p = g.add_node("Pad", [x], attrs={"pads": pads})
    g.set_outputs([g.add_node("Conv", [p], attrs={"layout": layout, "pads": (1, 0, 0, 1)},
                              params={"W": rng.standard_normal((3, 2, 3, 3)).astype(F)})])
    result = assert_preserves(g, "fold-pad")
    assert result.graph.op_counts() == {"Input": 1, "Conv": 1}
    assert result.graph["conv"].attrs["pads"] == (2, 2, 3, 1)


def test_fold_pad_refuses_channel_padding_and_non_conv_users(rng):
    g = Graph()
    x = g.add_input("x", (None, 6, 6, 2))
    p = g.add_node("Pad", [x], attrs={"pads": (0, 1, 1, 1, 0, 1, 1, 0)})
    g.set_outputs([g.add_node("Conv", [p], attrs={"layout": "NHWC"},
                              params={"W": rng.standard_normal((3, 3, 3, 3)).astype(F)})])
    result = assert_preserves(g, "fold-pad")
    assert not result.changed and any("channel" in n for n in result.notes)
    g = Graph()
    x = g.add_input("x", (None, 6, 6, 2))
    p = g.add_node("Pad", [x], attrs={"pads": (0, 1, 1, 0, 0, 1, 1, 0)})
    g.set_outputs([g.add_node("MaxPool", [p], attrs={"layout": "NHWC", "kernel_shape": (2, 2)})])
    assert not assert_preserves(g, "fold-pad").changed


def test_fold_flatten_leaves_reshapes_that_merge_rows_into_the_batch(rng):
    g = Graph()
    x = g.add_input("x", (None, 7, 8))
    r = g.add_node("Reshape", [x], attrs={"shape": (-1, 8)})  # (N*7, 8): not a flatten
    g.set_outputs([dense(g, r, 8, 3, rng)])
    result = assert_preserves(g, "fold-flatten")
    assert not result.changed
    g = Graph()
    x = g.add_input("x", (None, 7, 8))
    r = g.add_node("Reshape", [x], attrs={"shape": (-1, 56)})  # a real flatten
    g.set_outputs([dense(g, r, 56, 3, rng)])
    assert assert_preserves(g, "fold-flatten").graph.op_counts() == {"Input": 1, "Gemm": 1}
