"""Shape functions agree with what the kernels compute."""

import numpy as np
import pytest

import ir_bridge
from ir_bridge.ir import Graph

F = "float32"


def run_one(op, in_shapes, attrs=None, params=None, batch=2, seed=0):
    g = Graph()
    ins = [g.add_input(f"x{i}", (None, *s)) for i, s in enumerate(in_shapes)]
    node = g.add_node(op, ins, attrs=attrs, params=params)
    g.set_outputs([node])
    g.verify()
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((batch, *s)).astype(F) for s in in_shapes]
    (y,) = ir_bridge.run(g, xs)
    assert y.ndim == len(node.type.shape)
    assert all(d is None or d == s for d, s in zip(node.type.shape, y.shape))
    assert node.type.shape[0] is None or node.type.shape[0] == y.shape[0]
    return y, xs


CASES = [
    ("Conv", [(9, 9, 3)], {"layout": "NHWC", "strides": (2, 2), "pads": (1, 0, 1, 2)},
     {"W": np.ones((4, 3, 3, 3), F)}),
    ("Conv", [(3, 9, 9)], {"layout": "NCHW", "dilations": (2, 2), "auto_pad": "SAME_UPPER", "group": 3},
     {"W": np.ones((6, 1, 3, 3), F)}, ),
    ("Conv", [(10, 4)], {"layout": "NHWC", "group": 2}, {"W": np.ones((6, 2, 3), F)}),
    ("ConvTranspose", [(5, 5, 2)], {"layout": "NHWC", "strides": (2, 2), "pads": (1, 1, 0, 0),
                                    "output_padding": (1, 1)}, {"W": np.ones((2, 3, 3, 3), F)}),
    ("MaxPool", [(7, 7, 2)], {"layout": "NHWC", "kernel_shape": (2, 2), "strides": (2, 2),
                              "ceil_mode": 1}, None),
    ("AveragePool", [(2, 7, 7)], {"layout": "NCHW", "kernel_shape": (3, 3),
                                  "auto_pad": "SAME_UPPER"}, None),
    ("GlobalAveragePool", [(5, 5, 3)], {"layout": "NHWC"}, None),
    ("Reshape", [(4, 6)], {"shape": (0, -1, 3)}, None),
    ("Flatten", [(2, 3, 4)], {"axis": 2}, None),
    ("Pad", [(3, 4)], {"pads": (0, 1, 2, 0, 3, 4)}, None),
    ("Slice", [(10, 4)], {"starts": (1,), "ends": (-1,), "axes": (1,), "steps": (2,)}, None),
    ("Resize", [(3, 3, 2)], {"scales": (1, 2, 3, 1)}, None),
    ("Unsqueeze", [(3,)], {"axes": (1, -1)}, None),
    ("ReduceMean", [(3, 4)], {"axes": (1,), "keepdims": 0}, None),
]


@pytest.mark.parametrize("op,shapes,attrs,params", CASES, ids=[c[0] for c in CASES])
def test_inferred_shape_matches_kernel(op, shapes, attrs, params):
    run_one(op, shapes, attrs, params)


def test_concat_and_broadcast_shapes():
    run_one("Concat", [(3, 2), (3, 5)], {"axis": -1})
    y, _ = run_one("Add", [(3, 1), (1, 4)])
    assert y.shape == (2, 3, 4)
