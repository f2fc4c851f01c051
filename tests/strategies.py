"""Hypothesis strategies building random valid IR graphs (no framework needed).

A graph is an NHWC image trunk of random spatial ops (conv with random kernel, stride,
padding, dilation and groups; pools; batch-norm with non-trivial statistics; activations;
no-ops; residual adds; channel concats; pads; upsampling), then optionally Flatten and a
dense head.  Every choice keeps the graph valid, so each example is a real test.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import settings, strategies as st

from ir_bridge.ir import Graph

F = "float32"
ACTIVATIONS = ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Softplus", "Swish",
               "HardSigmoid", "Gelu", "Mish", "Softsign", "HardSwish"]

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          print_blob=True)
settings.register_profile("fuzz", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile("fuzz" if os.environ.get("IR_BRIDGE_FUZZ") else "ci")


@st.composite
def graphs(draw, max_layers: int = 7):
    """A random valid IR graph with one NHWC image input."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    size = draw(st.integers(5, 10))
    channels = draw(st.integers(1, 4))
    g = Graph("random")
    x = g.add_input("x", (None, size, size, channels))
    cur = x
    for _ in range(draw(st.integers(1, max_layers))):
        _, h, w, c = cur.type.shape
        kind = draw(st.sampled_from(["conv", "conv", "pool", "bn", "act", "noop", "residual",
                                     "concat", "pad", "upsample"]))
        if kind == "conv":
            k = draw(st.integers(1, min(3, h, w)))
            groups = draw(st.sampled_from([g_ for g_ in (1, c) if c % g_ == 0]))
            cout = groups * draw(st.integers(1, 3))
            pad = draw(st.integers(0, k - 1))
            stride = draw(st.integers(1, 2))
            dil = draw(st.integers(1, 2)) if (k - 1) * 2 + 1 <= min(h, w) + 2 * pad else 1
            if (k - 1) * dil + 1 > min(h, w) + 2 * pad:
                continue
            weight = rng.standard_normal((cout, c // groups, k, k)).astype(F) / np.sqrt(k * k * c)
            params = {"W": weight}
            if draw(st.booleans()):
                params["B"] = rng.standard_normal(cout).astype(F)
            cur = g.add_node("Conv", [cur], params=params, attrs={
                "layout": "NHWC", "strides": (stride, stride), "pads": (pad,) * 4,
                "dilations": (dil, dil), "group": groups})
        elif kind == "pool" and min(h, w) >= 2:
            op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
            attrs = {"layout": "NHWC", "kernel_shape": (2, 2), "strides": (2, 2)}
            if draw(st.booleans()):
                attrs["auto_pad"] = "SAME_UPPER"
            cur = g.add_node(op, [cur], attrs=attrs)
        elif kind == "bn":
            cur = g.add_node("BatchNormalization", [cur], attrs={"axis": -1, "epsilon": 1e-3},
                             params={"scale": rng.random(c).astype(F) + 0.5,
                                     "B": rng.standard_normal(c).astype(F),
                                     "mean": rng.standard_normal(c).astype(F) * 0.5,
                                     "var": rng.random(c).astype(F) + 0.5})
        elif kind == "act":
            cur = g.add_node(draw(st.sampled_from(ACTIVATIONS)), [cur])
        elif kind == "noop":
            cur = g.add_node(draw(st.sampled_from(["Dropout", "Identity"])), [cur])
        elif kind == "residual":
            same = [n for n in g if n.type == cur.type and n.name != cur.name]
            if same:
                cur = g.add_node("Add", [cur, draw(st.sampled_from(same))])
        elif kind == "concat":
            same = [n for n in g if n.type.shape[1:3] == cur.type.shape[1:3]]
            cur = g.add_node("Concat", [cur, draw(st.sampled_from(same))], attrs={"axis": -1})
        elif kind == "pad":
            cur = g.add_node("Pad", [cur], attrs={"pads": (0, 1, 0, 0, 0, 0, 1, 0)})
        elif kind == "upsample" and h * w <= 64:
            cur = g.add_node("Resize", [cur], attrs={"scales": (1, 2, 2, 1)})
    if draw(st.booleans()):
        flat = g.add_node("Flatten", [cur])
        k = flat.type.shape[1]
        n_out = draw(st.integers(2, 6))
        cur = g.add_node("Gemm", [flat], params={
            "W": (rng.standard_normal((k, n_out)) / np.sqrt(k)).astype(F),
            "B": rng.standard_normal(n_out).astype(F)})
        cur = g.add_node(draw(st.sampled_from(["Softmax", "Relu", "Identity"])), [cur])
    g.set_outputs([cur])
    g.verify()
    return g
