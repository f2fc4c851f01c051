"""The ONNX backend: every IR op it emits, at every supported opset, is checker-clean,
loads in onnxruntime, and computes what the IR interpreter computes.

Each case is a tiny NCHW graph holding the op (and, for decompositions, the attribute
combinations that need them).  For each case and each opset 13..MAX_OPSET the test emits
the model (``onnx.checker.check_model(full_check=True)`` runs inside ``emit``), creates an
onnxruntime session, and compares its outputs with ``ir_bridge.run`` on a batch of 4.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import ir_bridge  # noqa: E402
from ir_bridge.backends import onnx as onnx_backend  # noqa: E402
from ir_bridge.errors import IRBridgeError, UnsupportedLayerError  # noqa: E402
from ir_bridge.frontends import onnx_ops  # noqa: E402,F401  (LSTM, GRU, LRN)
from ir_bridge.ir import Graph  # noqa: E402

ATOL = 1e-5
OPSETS = list(range(onnx_backend.MIN_OPSET, onnx_backend.MAX_OPSET + 1))
RNG = np.random.default_rng(0)


def w(*shape, scale=0.5):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


def graph_of(inputs, build, name="case"):
    """A graph with ``inputs`` ({name: shape} or {name: (shape, dtype)}) whose outputs are
    what ``build(g, *input_nodes)`` returns (a node or a list of nodes)."""
    g = Graph(name)
    nodes = []
    for n, spec in inputs.items():
        shape, dtype = spec if isinstance(spec[-1], str) else (spec, "float32")
        nodes.append(g.add_input(n, shape, dtype))
    out = build(g, *nodes)
    g.set_outputs(out if isinstance(out, list) else [out])
    g.infer_shapes()
    g.verify()
    return g


def unary(op, in_shape=(None, 3, 4), **attrs):
    return graph_of({"x": in_shape}, lambda g, x: g.add_node(op, [x], attrs=attrs))


def binary(op, const=None):
    if const is None:
        return graph_of({"a": (None, 3, 4), "b": (None, 3, 4)},
                        lambda g, a, b: g.add_node(op, [a, b]))
    return graph_of({"a": (None, 3, 4)}, lambda g, a: g.add_node(op, [a], params={"B": const}))


def conv(**kw):
    attrs = {"layout": "NCHW", **{k: v for k, v in kw.items() if k not in ("W", "B")}}
    params = {"W": kw.get("W", w(4, 3, 3, 3))}
    if kw.get("B", True) is not None:
        params["B"] = w(params["W"].shape[0])
    shape = (None, params["W"].shape[1] * attrs.get("group", 1),
             *([7] * (params["W"].ndim - 2)))
    return graph_of({"x": shape}, lambda g, x: g.add_node("Conv", [x], attrs=attrs,
                                                          params=params))


def lstm(direction="forward", states=False, peepholes=False, batch_first=0):
    d = 2 if direction == "bidirectional" else 1
    h = 4
    params = {"W": w(d, 4 * h, 3), "R": w(d, 4 * h, h), "B": w(d, 8 * h)}
    if peepholes:
        params["P"] = w(d, 3 * h)
    inputs = {"x": (None, 5, 3) if batch_first else (5, None, 3)}
    if states:
        inputs.update({"h0": (d, None, h), "c0": (d, None, h)})

    def build(g, x, *s):
        node = g.add_node("LSTM", [x, *s], attrs={"hidden_size": h, "direction": direction,
                                                  "batch_first": batch_first},
                          params=params)
        return [g.add_node("GetItem", [node], attrs={"index": i}) for i in range(3)]

    return graph_of(inputs, build)


def gru(direction="forward", linear_before_reset=1):
    d = 2 if direction == "bidirectional" else 1
    h = 4
    params = {"W": w(d, 3 * h, 3), "R": w(d, 3 * h, h), "B": w(d, 6 * h)}

    def build(g, x):
        node = g.add_node("GRU", [x], attrs={"hidden_size": h, "direction": direction,
                                             "linear_before_reset": linear_before_reset},
                          params=params)
        return [g.add_node("GetItem", [node], attrs={"index": i}) for i in range(2)]

    return graph_of({"x": (5, None, 3)}, build)


CASES = {
    # -------- dense
    "gemm_2d": lambda: graph_of({"x": (None, 5)}, lambda g, x: g.add_node(
        "Gemm", [x], params={"W": w(5, 4), "B": w(4)})),
    "gemm_nd_bias": lambda: graph_of({"x": (None, 3, 5)}, lambda g, x: g.add_node(
        "Gemm", [x], params={"W": w(5, 4), "B": w(4)})),
    "gemm_nd_no_bias": lambda: graph_of({"x": (None, 3, 5)}, lambda g, x: g.add_node(
        "Gemm", [x], params={"W": w(5, 4)})),
    "gemm_flatten": lambda: graph_of({"x": (None, 2, 3, 4)}, lambda g, x: g.add_node(
        "Gemm", [x], attrs={"flatten": 1}, params={"W": w(24, 4), "B": w(4)})),
    "gemm_fused_softmax": lambda: graph_of({"x": (None, 5)}, lambda g, x: g.add_node(
        "Gemm", [x], attrs={"activation": "Softmax", "activation_attrs": {"axis": -1}},
        params={"W": w(5, 4), "B": w(4)})),
    "gemm_fused_gelu": lambda: graph_of({"x": (None, 5)}, lambda g, x: g.add_node(
        "Gemm", [x], attrs={"activation": "Gelu", "activation_attrs": {}},
        params={"W": w(5, 4)})),
    "matmul": lambda: graph_of({"a": (None, 3, 4), "b": (None, 4, 2)},
                               lambda g, a, b: g.add_node("MatMul", [a, b])),
    # -------- convolution and pooling
    "conv2d_strided_padded": lambda: conv(strides=[2, 2], pads=[1, 0, 1, 2]),
    "conv2d_dilated": lambda: conv(dilations=[2, 2], B=None),
    "conv2d_same_upper": lambda: conv(strides=[2, 2], auto_pad="SAME_UPPER"),
    "conv2d_depthwise": lambda: conv(W=w(6, 1, 3, 3), group=3),
    "conv2d_grouped": lambda: graph_of({"x": (None, 4, 6, 6)}, lambda g, x: g.add_node(
        "Conv", [x], attrs={"layout": "NCHW", "group": 2}, params={"W": w(6, 2, 3, 3)})),
    "conv1d": lambda: conv(W=w(4, 3, 3)),
    "conv3d": lambda: conv(W=w(2, 3, 2, 2, 2)),
    "conv_fused_relu": lambda: conv(activation="Relu", activation_attrs={}),
    "conv_fused_hard_swish": lambda: conv(activation="HardSwish", activation_attrs={}),
    "conv_fused_relu6_keras": lambda: conv(activation="Relu",
                                           activation_attrs={"max_value": 6.0}),
    "conv_transpose": lambda: graph_of({"x": (None, 3, 5, 5)}, lambda g, x: g.add_node(
        "ConvTranspose", [x], attrs={"layout": "NCHW", "strides": [2, 2],
                                     "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        params={"W": w(3, 2, 3, 3), "B": w(2)})),
    "maxpool": lambda: graph_of({"x": (None, 3, 6, 6)}, lambda g, x: g.add_node(
        "MaxPool", [x], attrs={"layout": "NCHW", "kernel_shape": [2, 2], "strides": [2, 2]})),
    "maxpool_pads_ceil": lambda: graph_of({"x": (None, 3, 7, 7)}, lambda g, x: g.add_node(
        "MaxPool", [x], attrs={"layout": "NCHW", "kernel_shape": [3, 3], "strides": [2, 2],
                               "pads": [1, 1, 1, 1], "ceil_mode": 1})),
    "avgpool_exclude_pad": lambda: graph_of({"x": (None, 3, 6, 6)}, lambda g, x: g.add_node(
        "AveragePool", [x], attrs={"layout": "NCHW", "kernel_shape": [3, 3],
                                   "pads": [1, 1, 1, 1]})),
    "avgpool_include_pad": lambda: graph_of({"x": (None, 3, 6, 6)}, lambda g, x: g.add_node(
        "AveragePool", [x], attrs={"layout": "NCHW", "kernel_shape": [3, 3],
                                   "strides": [2, 2], "pads": [1, 1, 1, 1],
                                   "count_include_pad": 1})),
    "global_avg_pool": lambda: unary("GlobalAveragePool", (None, 3, 4, 5), layout="NCHW"),
    "global_max_pool": lambda: unary("GlobalMaxPool", (None, 3, 4, 5), layout="NCHW"),
    "lrn": lambda: unary("LRN", (None, 5, 3, 3), layout="NCHW", size=3, alpha=1e-2, beta=0.75,
                         bias=1.0),
    # -------- normalisation, embedding, recurrent
    "batchnorm_axis1": lambda: graph_of({"x": (None, 3, 4, 4)}, lambda g, x: g.add_node(
        "BatchNormalization", [x], attrs={"axis": 1, "epsilon": 1e-3},
        params={"scale": w(3), "B": w(3), "mean": w(3),
                "var": np.abs(w(3)) + 0.5})),
    "batchnorm_last_axis": lambda: graph_of({"x": (None, 4, 3)}, lambda g, x: g.add_node(
        "BatchNormalization", [x], attrs={"axis": -1},
        params={"scale": w(3), "B": w(3), "mean": w(3), "var": np.abs(w(3)) + 0.5})),
    "layernorm": lambda: graph_of({"x": (None, 4, 6)}, lambda g, x: g.add_node(
        "LayerNormalization", [x], attrs={"axis": -1, "epsilon": 1e-3},
        params={"scale": w(6), "B": w(6)})),
    "layernorm_two_axes_no_scale": lambda: graph_of({"x": (None, 4, 6)}, lambda g, x: g.add_node(
        "LayerNormalization", [x], attrs={"axis": 1}, params={"B": w(4, 6)})),
    "gather_int": lambda: graph_of({"i": ((None, 4), "int64")}, lambda g, i: g.add_node(
        "Gather", [i], params={"data": w(10, 3)})),
    "gather_float_indices": lambda: graph_of({"i": (None, 4)}, lambda g, i: g.add_node(
        "Gather", [g.add_node("Abs", [i])], params={"data": w(10, 3)})),
    "lstm": lambda: lstm(),
    "lstm_bidirectional_states_peepholes": lambda: lstm("bidirectional", True, True),
    "lstm_reverse": lambda: lstm("reverse"),
    "gru_linear_before_reset": lambda: gru(),
    "gru_bidirectional": lambda: gru("bidirectional", 0),
    # -------- activations
    "relu": lambda: unary("Relu"),
    "relu_negative_slope": lambda: unary("Relu", negative_slope=0.1),
    "relu_max_value": lambda: unary("Relu", max_value=0.5),
    "relu_threshold": lambda: unary("Relu", threshold=0.3),
    "relu_all_three": lambda: unary("Relu", negative_slope=0.1, max_value=0.8, threshold=-0.2),
    "relu_threshold_slope": lambda: unary("Relu", negative_slope=0.2, threshold=0.4),
    "leaky_relu": lambda: unary("LeakyRelu", alpha=0.2),
    "elu": lambda: unary("Elu", alpha=0.7),
    "selu": lambda: unary("Selu"),
    "sigmoid": lambda: unary("Sigmoid"),
    "hard_sigmoid": lambda: unary("HardSigmoid", alpha=1 / 6, beta=0.5),
    "tanh": lambda: unary("Tanh"),
    "softplus": lambda: unary("Softplus"),
    "softsign": lambda: unary("Softsign"),
    "exp": lambda: unary("Exp"),
    "gelu": lambda: unary("Gelu"),
    "gelu_tanh": lambda: unary("Gelu", approximate="tanh"),
    "swish": lambda: unary("Swish"),
    "swish_alpha": lambda: unary("Swish", alpha=1.7),
    "mish": lambda: unary("Mish"),
    "hard_swish": lambda: unary("HardSwish"),
    "clip": lambda: unary("Clip", min=-0.5, max=0.5),
    "clip_min_only": lambda: unary("Clip", min=0.1),
    "clip_max_only": lambda: unary("Clip", max=0.1),
    "softmax_axis1": lambda: unary("Softmax", axis=1),
    "log_softmax": lambda: unary("LogSoftmax", axis=-1),
    "prelu": lambda: graph_of({"x": (None, 3, 4)}, lambda g, x: g.add_node(
        "PRelu", [x], params={"slope": w(3, 1)})),
    "identity": lambda: graph_of({"x": (None, 3)}, lambda g, x: g.add_node(
        "Identity", [g.add_node("Neg", [x])])),
    "dropout": lambda: graph_of({"x": (None, 3)}, lambda g, x: g.add_node(
        "Dropout", [g.add_node("Neg", [x])], attrs={"ratio": 0.3})),
    **{op.lower(): (lambda op=op: unary(op))
       for op in ("Erf", "Sqrt", "Neg", "Abs", "Log", "Reciprocal", "Floor")},
    # -------- elementwise
    **{f"{op.lower()}_two_inputs": (lambda op=op: binary(op))
       for op in ("Add", "Sub", "Mul", "Div")},
    "pow_two_inputs": lambda: graph_of({"a": (None, 3, 4), "b": (None, 3, 4)},
                                       lambda g, a, b: g.add_node("Pow", [g.add_node("Abs", [a]),
                                                                          b])),
    **{f"{op.lower()}_const": (lambda op=op: binary(op, w(4) + 2.0))
       for op in ("Add", "Sub", "Mul", "Div")},
    "pow_const": lambda: binary("Pow", np.float32(2.0)),
    "add_const_float64": lambda: binary("Add", np.arange(4, dtype=np.float64)),
    **{op.lower(): (lambda op=op: graph_of(
        {"a": (None, 3), "b": (None, 3), "c": (None, 1)},
        lambda g, a, b, c: g.add_node(op, [a, b, c]))) for op in ("Max", "Min", "Mean", "Sum")},
    # -------- booleans and casts (tf2onnx's spelling of tf.where)
    "compare_where": lambda: graph_of({"a": (None, 3, 4), "b": (None, 3, 4)}, lambda g, a, b: (
        g.add_node("Where", [g.add_node("Or", [
            g.add_node("Not", [g.add_node("Less", [a], params={"B": np.float32(0.2)})]),
            g.add_node("Equal", [a, b])]), a, b]))),
    "compare_ops": lambda: graph_of({"a": (None, 3), "b": (None, 3)}, lambda g, a, b: [
        g.add_node(op, [a, b]) for op in ("Greater", "LessOrEqual", "GreaterOrEqual")] + [
        g.add_node("And", [g.add_node("Greater", [a], params={"B": np.float32(0.0)}),
                           g.add_node("Less", [b], params={"B": np.float32(0.5)})])]),
    "cast_float_int_float": lambda: graph_of({"x": (None, 5)}, lambda g, x: g.add_node(
        "Cast", [g.add_node("Cast", [x], attrs={"to": "int32"})], attrs={"to": "float32"})),
    # -------- shape
    "reshape": lambda: unary("Reshape", (None, 3, 4), shape=[0, -1, 2]),
    "flatten_axis2": lambda: unary("Flatten", (None, 3, 4, 2), axis=2),
    "transpose": lambda: unary("Transpose", (None, 3, 4, 2), perm=[0, 3, 1, 2]),
    "concat": lambda: graph_of({"a": (None, 3, 2), "b": (None, 1, 2)},
                               lambda g, a, b: g.add_node("Concat", [a, b], attrs={"axis": 1})),
    "pad_constant": lambda: unary("Pad", (None, 3, 4), pads=[0, 1, 2, 0, 0, 1], value=1.5),
    "pad_reflect": lambda: unary("Pad", (None, 3, 4), pads=[0, 1, 2, 0, 1, 1], mode="reflect"),
    "pad_edge": lambda: unary("Pad", (None, 3, 4), pads=[0, 0, 2, 0, 1, 0], mode="edge"),
    "slice": lambda: unary("Slice", (None, 6, 5), starts=[1, 0], ends=[5, 2 ** 63 - 1],
                           axes=[1, 2], steps=[2, 1]),
    "slice_reverse": lambda: unary("Slice", (None, 6, 5), starts=[-1], ends=[-(2 ** 62)],
                                   axes=[1], steps=[-1]),
    "squeeze": lambda: unary("Squeeze", (None, 1, 4), axes=[1]),
    "unsqueeze": lambda: unary("Unsqueeze", (None, 4), axes=[1, 3]),
    "resize": lambda: unary("Resize", (None, 2, 3, 3), scales=[1, 1, 2, 3]),
    "reduce_mean": lambda: unary("ReduceMean", (None, 3, 4, 5), axes=[2, 3]),
    "reduce_max_no_keepdims": lambda: unary("ReduceMax", (None, 3, 4), axes=[1], keepdims=0),
    # -------- graph plumbing
    "constant_operand": lambda: graph_of({"x": (None, 3)}, lambda g, x: g.add_node(
        "Add", [x, g.add_node("Constant", params={"value": w(3)})])),
    "input_is_output": lambda: graph_of({"x": (None, 3)},
                                        lambda g, x: [x, g.add_node("Neg", [x])]),
    "same_output_twice": lambda: graph_of({"x": (None, 3)}, lambda g, x: [
        g.add_node("Neg", [x], name="y")] * 2),
}


def _inputs(graph, batch=4, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for node in graph.inputs:
        shape = [batch if d is None else d for d in node.type.shape]
        if np.dtype(node.type.dtype).kind in "iu":
            out.append(rng.integers(0, 10, size=shape).astype(node.type.dtype))
        else:
            out.append((2 * rng.standard_normal(shape)).astype(node.type.dtype))
    return out


def _inputs_for_case(name, graph):
    xs = _inputs(graph)
    if name == "gather_float_indices":
        xs = [np.clip(np.abs(x) * 3, 0, 9.9) for x in xs]
    return xs


@pytest.fixture(scope="module")
def graphs():
    return {name: build() for name, build in CASES.items()}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", list(CASES))
def test_op_emits_checker_clean_loads_in_onnxruntime_and_matches(graphs, case, opset):
    graph = graphs[case]
    model = onnx_backend.emit(graph, opset=opset)  # runs the full checker
    assert model.opset_import[0].version == opset
    assert not {i.name for i in model.graph.input} & {i.name for i in model.graph.initializer}
    xs = _inputs_for_case(case, graph)
    expected = ir_bridge.run(graph, xs)
    got = onnx_backend.runner(model)(xs)
    assert len(got) == len(expected)
    for e, y in zip(expected, got):
        assert e.shape == y.shape
        np.testing.assert_allclose(y, e, rtol=1e-5, atol=ATOL)


# ---------------------------------------------------------------- decompositions


def _op_types(model):
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("case,opset,present,absent", [
    ("gelu", 13, {"Erf"}, {"Gelu"}),
    ("gelu", 20, {"Gelu"}, {"Erf"}),
    ("gelu_tanh", 17, {"Tanh"}, {"Gelu"}),
    ("swish", 17, {"Sigmoid", "Mul"}, {"Swish"}),
    ("swish", onnx_backend.MAX_OPSET, {"Sigmoid", "Mul"}, {"Swish"}),
    ("mish", 17, {"Softplus", "Tanh"}, {"Mish"}),
    ("mish", 18, {"Mish"}, {"Softplus"}),
    ("hard_swish", 13, {"HardSigmoid"}, {"HardSwish"}),
    ("hard_swish", 14, {"HardSwish"}, {"HardSigmoid"}),
    ("layernorm", 16, {"ReduceMean", "Sqrt"}, {"LayerNormalization"}),
    ("layernorm", 17, {"LayerNormalization"}, {"ReduceMean"}),
    ("relu_negative_slope", 17, {"LeakyRelu"}, {"Relu"}),
    ("relu_max_value", 17, {"Clip"}, {"Relu"}),
    ("relu_threshold", 17, {"Where", "Greater"}, set()),
    ("gemm_nd_bias", 17, {"MatMul", "Add"}, {"Gemm"}),
    ("gemm_flatten", 17, {"Flatten", "Gemm"}, set()),
    ("gemm_2d", 17, {"Gemm"}, {"MatMul"}),
    ("batchnorm_last_axis", 17, {"Mul", "Add"}, {"BatchNormalization"}),
    ("conv_fused_relu", 17, {"Conv", "Relu"}, set()),
])
def test_decomposition_depends_on_opset(graphs, case, opset, present, absent):
    ops = set(_op_types(onnx_backend.emit(graphs[case], opset=opset)))
    assert present <= ops
    assert not absent & ops


def test_shape_operands_are_inputs_or_attributes_as_the_opset_wants(graphs):
    def node(model, op):
        return next(n for n in model.graph.node if n.op_type == op)

    m13 = onnx_backend.emit(graphs["reduce_mean"], opset=13)
    m18 = onnx_backend.emit(graphs["reduce_mean"], opset=18)
    assert "axes" in [a.name for a in node(m13, "ReduceMean").attribute]
    assert len(node(m18, "ReduceMean").input) == 2
    assert len(node(onnx_backend.emit(graphs["squeeze"], opset=13), "Squeeze").input) == 2
    pad = node(onnx_backend.emit(graphs["pad_constant"], opset=13), "Pad")
    assert len(pad.input) == 3
    resize = node(onnx_backend.emit(graphs["resize"], opset=13), "Resize")
    inits = {i.name for i in onnx_backend.emit(graphs["resize"], opset=13).graph.initializer}
    assert resize.input[2] in inits


# ---------------------------------------------------------------- the model


def test_names_batch_dim_and_initializers(graphs):
    g = graphs["conv_fused_relu"]
    model = onnx_backend.emit(g)
    assert model.opset_import[0].version == onnx_backend.DEFAULT_OPSET == 17
    (inp,) = model.graph.input
    assert inp.name == "x"
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    conv_node = next(n for n in model.graph.node if n.op_type == "Conv")
    host = next(n.name for n in g if n.op == "Conv")
    assert conv_node.name == f"{host}/linear"  # the fused activation reads the pre-activation
    assert model.graph.output[0].name == host
    assert {i.name for i in model.graph.initializer} == {f"{host}/W", f"{host}/B"}
    assert model.producer_name == "ir_bridge"


def test_dynamic_batch_runs_any_batch(graphs):
    run = onnx_backend.runner(onnx_backend.emit(graphs["gemm_flatten"]))
    for batch in (1, 3, 9):
        (y,) = run([np.zeros((batch, 2, 3, 4), np.float32)])
        assert y.shape == (batch, 4)


@pytest.mark.parametrize("opset", [12, onnx_backend.MAX_OPSET + 1])
def test_unsupported_opset_is_refused(graphs, opset):
    with pytest.raises(IRBridgeError, match="opset"):
        onnx_backend.emit(graphs["relu"], opset=opset)


def test_nhwc_graph_is_refused_with_a_hint():
    g = graph_of({"x": (None, 6, 6, 3)}, lambda g, x: g.add_node(
        "MaxPool", [x], attrs={"layout": "NHWC", "kernel_shape": [2, 2]}))
    with pytest.raises(IRBridgeError, match="layout-nchw"):
        onnx_backend.emit(g)
    model = ir_bridge.emit(g, "onnx")  # the API runs the layout pass first
    xs = _inputs(g)
    np.testing.assert_allclose(onnx_backend.runner(model)(xs)[0], ir_bridge.run(g, xs)[0])


def test_written_file_is_atomic_and_runs(graphs, tmp_path):
    path = tmp_path / "sub" / "model.onnx"
    onnx_backend.emit(graphs["conv2d_strided_padded"], path)
    assert path.exists() and not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    onnx.checker.check_model(str(path), full_check=True)
    xs = _inputs(graphs["conv2d_strided_padded"])
    np.testing.assert_allclose(onnx_backend.runner(path)(xs)[0],
                               ir_bridge.run(graphs["conv2d_strided_padded"], xs)[0],
                               rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("to_file", [False, True])
def test_the_checker_sees_what_is_emitted_and_its_failure_is_typed(graphs, tmp_path,
                                                                 monkeypatch, to_file):
    """With a path, the checker reads the very bytes written (no second serialisation);
    a checker failure is an InvalidModelError either way, and no file is left."""
    from ir_bridge.errors import InvalidModelError

    seen = []

    def failing_checker(model, full_check=False, **_):
        seen.append((model, full_check))
        raise onnx.checker.ValidationError("made to fail")

    monkeypatch.setattr(onnx.checker, "check_model", failing_checker)
    path = tmp_path / "model.onnx" if to_file else None
    with pytest.raises(InvalidModelError, match="made to fail"):
        onnx_backend.emit(graphs["conv2d_strided_padded"], path)
    ((checked, full),) = seen
    assert full is True
    assert isinstance(checked, bytes if to_file else onnx.ModelProto)
    if to_file:
        assert onnx.load_from_string(checked).graph.initializer  # the whole model
        assert list(tmp_path.iterdir()) == []


def test_failed_emit_leaves_no_file(tmp_path):
    g = graph_of({"x": (None, 3)}, lambda g, x: g.add_node("Neg", [x]))
    path = tmp_path / "model.onnx"
    with pytest.raises(IRBridgeError):
        onnx_backend.emit(g, path, opset=99)
    assert list(tmp_path.iterdir()) == []


def test_lstm_outputs_take_the_getitem_names(graphs):
    model = onnx_backend.emit(graphs["lstm"])
    lstm_node = next(n for n in model.graph.node if n.op_type == "LSTM")
    assert list(lstm_node.output) == [o.name for o in model.graph.output]
    assert "Identity" not in _op_types(model)


def test_every_ir_op_with_a_case_is_covered():
    covered = set()
    for build in CASES.values():
        for node in build():
            covered.add(node.op)
            if node.attrs.get("activation"):
                covered.add(node.attrs["activation"])
    missing = set(onnx_backend.supported_ops()) - covered
    assert not missing, f"no test case for {sorted(missing)}"


def test_unsupported_op_lists_every_node():
    from ir_bridge.ir.schema import OpSchema, all_schemas, define_op

    if "TestOnlyOp" not in all_schemas():
        define_op(OpSchema("TestOnlyOp", "test", lambda n, t: t[0]))
    g = Graph("g")
    x = g.add_input("x", (None, 3))
    a = g.add_node("TestOnlyOp", [x], name="first")
    b = g.add_node("TestOnlyOp", [a], name="second")
    g.set_outputs([b])
    with pytest.raises(UnsupportedLayerError, match="first, second") as err:
        onnx_backend.emit(g)
    assert err.value.layers == [("first", "TestOnlyOp"), ("second", "TestOnlyOp")]


def test_import_does_not_load_onnx():
    import subprocess
    import sys

    code = ("import sys, ir_bridge.backends.onnx, ir_bridge.frontends.onnx, "
            "ir_bridge.backends.keras, ir_bridge.frontends.keras_tf2onnx; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'tensorflow', 'keras', 'tf2onnx')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"



def test_keras_normalization_constants_are_initializers_not_inputs():
    keras = pytest.importorskip("keras")
    x = keras.Input((3,), name="x")
    norm = keras.layers.Normalization(mean=[0.5, -1.0, 2.0], variance=[4.0, 0.25, 1.0],
                                      name="norm")
    model = keras.Model(x, keras.layers.Dense(2, name="dense")(norm(x)))
    for opset in (onnx_backend.MIN_OPSET, onnx_backend.max_opset()):
        proto = ir_bridge.convert(model, "onnx", opset=opset)
        assert [i.name for i in proto.graph.input] == ["x"]
        assert len(proto.graph.initializer) >= 3
        xs = [np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)]
        np.testing.assert_allclose(onnx_backend.runner(proto)(xs)[0], np.asarray(model(xs[0])),
                                   rtol=0, atol=ATOL)
    keras.backend.clear_session()
