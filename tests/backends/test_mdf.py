"""MDF backend: Keras -> MDF files that modeci_mdf loads and runs, compact and exact.

The reference engine (``modeci_mdf.execution_engine.EvaluableGraph``) is used here only as a
test oracle, on files ir_bridge wrote itself.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import ir_bridge
from ir_bridge.backends.mdf import array_text, build_model, dumps, shortest_float32
from ir_bridge.errors import IRBridgeError, UnsupportedLayerError
from ir_bridge.engine.mdf_plan import compile_mdf
from ir_bridge.engine.plan import Plan
from ir_bridge.ir import Graph

from mdf_reference import run as run_reference

keras = pytest.importorskip("keras")
pytest.importorskip("modeci_mdf")

BATCH = 4
ATOL = 1e-5


def functional_model():
    """A functional model with a residual Add and a Concatenate (and SAME padding)."""
    from keras import layers

    inp = keras.Input((8, 8, 3), name="img")
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    b = layers.Conv2D(4, 3, padding="same", name="c2")(a)
    r = layers.Add(name="res")([a, b])
    c = layers.Conv2D(2, 1, name="c3")(inp)
    cat = layers.Concatenate(name="cat")([r, c])
    p = layers.MaxPooling2D(2, name="pool")(cat)
    f = layers.Flatten(name="flat")(p)
    out = layers.Dense(5, activation="softmax", name="out")(f)
    return keras.Model(inp, out, name="residual_concat")


MODEL_NAMES = ["mlp_128_128", "mlp_128_32", "cnn_tutorial", "cnn_dropout", "cnn_two_conv",
               "residual_concat"]


def build(name):
    from ir_bridge.zoo import mnist as zoo

    keras.utils.set_random_seed(0)
    return functional_model() if name == "residual_concat" else zoo.build(name, seed=0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each model converted once: (keras model, input batch, Keras output, MDF path)."""
    out = {}
    root = tmp_path_factory.mktemp("mdf_backend")
    rng = np.random.default_rng(0)
    for name in MODEL_NAMES:
        model = build(name)
        x = rng.random((BATCH, *model.inputs[0].shape[1:])).astype("float32")
        path = root / f"{name}.json"
        ir_bridge.convert(model, "mdf", path)
        out[name] = (model, x, model(x).numpy(), path)
    return out


def assert_same_graph(a: Graph, b: Graph):
    """Same nodes, ops, wiring, attributes, types, outputs; weights equal bit for bit."""
    assert [n.name for n in a] == [n.name for n in b]
    assert [n.name for n in a.inputs] == [n.name for n in b.inputs]
    assert a.output_names == b.output_names
    for na, nb in zip(a, b):
        assert (na.op, na.inputs, na.type) == (nb.op, nb.inputs, nb.type), na.name
        assert na.attrs == nb.attrs, na.name
        assert sorted(na.params) == sorted(nb.params), na.name
        for k in na.params:
            pa, pb = na.params[k], nb.params[k]
            assert pa.dtype == pb.dtype and pa.shape == pb.shape, (na.name, k)
            assert pa.tobytes() == pb.tobytes(), (na.name, k)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reference_engine_and_ours_match_keras(converted, name):
    from modeci_mdf.utils import load_mdf

    model, x, expected, path = converted[name]
    assert load_mdf(str(path)).graphs, "modeci_mdf must load the file"
    (ref,) = run_reference(path, [x])
    (ours,) = compile_mdf(path).run([x])
    assert ours.shape == expected.shape == ref.shape
    np.testing.assert_allclose(ref, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_mdf_ir_mdf_ir_round_trip_is_stable(converted, name, tmp_path):
    _, x, _, path = converted[name]
    first = ir_bridge.load(path)
    second_path = tmp_path / "again.json"
    ir_bridge.emit(first, "mdf", second_path)
    second = ir_bridge.load(second_path)
    assert_same_graph(first, second)
    # ir_bridge writes deterministically: the re-emitted file is the same file.
    assert second_path.read_bytes() == path.read_bytes()
    # So does a conversion with the default pipeline (it finds nothing left to do).
    third = tmp_path / "converted.json"
    ir_bridge.convert(path, "mdf", third)
    assert third.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_weights_round_trip_bit_for_bit_and_compactly(converted, name):
    model, _, _, path = converted[name]
    graph = ir_bridge.optimize(ir_bridge.load(model))
    reread = ir_bridge.load(path)
    weights = {k: v for n in graph for k, v in _weights(n).items()}
    reread_weights = {k: v for n in reread for k, v in _weights(n).items()}
    # Every layer weight is in the file, bit for bit (Dense kernels after a Flatten have their
    # rows permuted by the layout pass, so compare as multisets of bit patterns per layer).
    for key, w in weights.items():
        r = reread_weights[key]
        assert r.dtype == np.float32 and r.shape == w.shape
        assert np.array_equal(np.sort(r.view(np.uint32).ravel()),
                              np.sort(w.view(np.uint32).ravel())), key
    params = reread.count_params()
    assert params == model.count_params()
    # The whole file per weight for the MNIST models (~100k+ weights: the graph structure is
    # noise); the weight text alone for every model.
    if name.startswith(("mlp", "cnn")):
        size = path.stat().st_size
        assert size / params <= 16, f"{size / params:.1f} bytes per parameter"
    weight_text = sum(len(array_text(v)) for n in reread for v in n.params.values())
    assert weight_text / params <= 16


def _weights(node):
    return {(node.origin or node.name, k): v for k, v in node.params.items()}


def test_the_file_holds_no_input_data(converted):
    _, x, _, path = converted["cnn_tutorial"]
    doc = json.loads(path.read_text())
    (graph,) = next(iter(doc.values()))["graphs"].values()
    image = graph["nodes"]["image"]
    assert "default_value" not in image["input_ports"]["image"]
    assert image["input_ports"]["image"]["shape"] == [1, 28, 28, 1]
    assert image["input_ports"]["image"]["metadata"] == {"dynamic_axes": [0]}
    assert "parameters" not in image
    assert graph["metadata"] == {"inputs": ["image.image"], "outputs": ["output.out"]}


# --------------------------------------------------------------------------- YAML


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_loads_in_modeci_and_runs_the_same(converted, tmp_path, suffix):
    from modeci_mdf.utils import load_mdf

    model, x, expected, json_path = converted["residual_concat"]
    path = tmp_path / f"m{suffix}"
    ir_bridge.convert(model, "mdf", path)
    assert path.read_text().startswith("residual_concat:")
    assert load_mdf(str(path)).graphs[0].id == "residual_concat"
    assert_same_graph(ir_bridge.load(path), ir_bridge.load(json_path))
    (ours,) = compile_mdf(path).run([x])
    (ref,) = run_reference(path, [x])
    np.testing.assert_allclose(ours, expected, atol=ATOL)
    np.testing.assert_allclose(ref, expected, atol=ATOL)


# --------------------------------------------------------------------------- float text


def test_shortest_float32_round_trips_every_kind_of_float():
    import yaml

    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0.0, -0.0, 1.0, -3.0, 0.1, 1e-5, 1e-45, -1e-45, 3.4028235e38, 1e16,
                        123456789.0, 2.0**-126, np.pi], np.float32)
    values = np.concatenate([special, bits.view(np.float32)])
    values = values[np.isfinite(values)]
    text = array_text(values)
    back = np.array(json.loads(text), dtype=np.float64).astype(np.float32)
    assert back.view(np.uint32).tolist() == values.view(np.uint32).tolist()
    ytext = array_text(values[:20_000], yaml=True)
    yback = np.array(yaml.safe_load(ytext), dtype=np.float64).astype(np.float32)
    assert yback.view(np.uint32).tolist() == values[:20_000].view(np.uint32).tolist()
    # As short as numpy's own shortest float32 repr (Dragon4), within a character on average.
    ours = np.mean([len(repr(v)) for v in shortest_float32(values[:5000]).tolist()])
    numpy_len = np.mean([len(str(v)) for v in values[:5000]])
    assert ours <= numpy_len + 1


def test_array_text_special_values_and_shapes():
    a = np.array([[np.inf, -np.inf], [np.nan, 1e-5]], np.float32)
    assert array_text(a) == "[[Infinity,-Infinity],[NaN,1e-05]]"
    assert array_text(a, yaml=True) == "[[.inf,-.inf],[.nan,1.0e-05]]"
    assert array_text(np.float32(0.1)) == "0.1"
    assert array_text(np.zeros((2, 0), np.float32)) == "[[],[]]"
    assert array_text(np.array([3, -1], np.int64)) == "[3,-1]"
    # Integral float32 values stay floats for readers (the reference engine builds float
    # arrays from them, not int64 ones).
    assert array_text(np.array([0.0, 2.0], np.float32)) == "[0.0,2.0]"


# --------------------------------------------------------------------------- structure


def two_in_two_out() -> Graph:
    g = Graph("two_heads")
    a = g.add_input("left", (None, 3))
    b = g.add_input("right", (None, 3))
    s = g.add_node("Add", [a, b], name="sum")
    rng = np.random.default_rng(1)
    h = g.add_node("Gemm", [s], name="head", params={"W": rng.standard_normal((3, 2))
                                                      .astype("float32")},
                   attrs={"activation": "Relu", "activation_attrs": {}})
    m = g.add_node("Mul", [s, b], name="product")
    g.set_outputs([m, h])  # order differs from node order
    g.infer_shapes()
    return g


def test_several_inputs_and_outputs_keep_their_order(tmp_path):
    g = two_in_two_out()
    path = tmp_path / "two.json"
    ir_bridge.emit(g, "mdf", path)
    back = ir_bridge.load(path)
    assert [n.name for n in back.inputs] == ["left", "right"]
    assert back.output_names == ["product", "head"]
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((5, 3)).astype("float32") for _ in range(2)]
    expected = Plan(g).run(xs)
    for got in (compile_mdf(path).run(xs), run_reference(path, xs)):
        assert len(got) == 2
        for e, o in zip(expected, got):
            np.testing.assert_allclose(o, e, atol=ATOL)


def test_node_ids_are_sanitised_and_unique():
    g = Graph("odd names")
    x = g.add_input("in/put", (None, 2))
    a = g.add_node("Relu", [x], name="block.1/relu")
    b = g.add_node("Neg", [a], name="block_1_relu")
    c = g.add_node("Abs", [b], name="9lives")
    g.set_outputs([c])
    model = build_model(g)
    ids = [n.id for n in model.graphs[0].nodes]
    assert ids == ["in_put", "block_1_relu", "block_1_relu_1", "n9lives"]
    assert model.graphs[0].id == "odd_names"


def test_unsupported_ops_are_listed_and_no_file_is_written(tmp_path):
    from ir_bridge.ir import OpSchema, define_op
    from ir_bridge.ir.opset import _first

    try:
        define_op(OpSchema("TestOnlyMystery", "An op no backend knows.", _first))
    except IRBridgeError:
        pass  # defined by an earlier run in this process
    g = Graph()
    x = g.add_input("x", (None, 2))
    a = g.add_node("TestOnlyMystery", [x], name="m1")
    b = g.add_node("TestOnlyMystery", [a], name="m2")
    g.set_outputs([b])
    path = tmp_path / "never.json"
    with pytest.raises(UnsupportedLayerError) as info:
        ir_bridge.emit(g, "mdf", path)
    assert "m1" in str(info.value) and "m2" in str(info.value)
    assert [n for n, _ in info.value.layers] == ["m1", "m2"]
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_nhwc_graphs_are_refused_by_build_model_but_emit_converts_them():
    g = Graph()
    x = g.add_input("x", (None, 6, 6, 2))
    p = g.add_node("MaxPool", [x], attrs={"layout": "NHWC", "kernel_shape": [2, 2],
                                          "strides": [2, 2]})
    g.set_outputs([p])
    with pytest.raises(IRBridgeError, match="layout-nchw"):
        build_model(g)
    model = ir_bridge.emit(g, "mdf")
    ops = [next(iter(f.function.split("::")[1:]), None) for n in model.graphs[0].nodes
           for f in n.functions if f.function]
    assert ops == ["Transpose", "MaxPool", "Transpose"]


def test_bad_suffix_is_an_error_and_writes_nothing(tmp_path):
    g = two_in_two_out()
    with pytest.raises(IRBridgeError, match=r"\.json, \.yaml or \.yml"):
        ir_bridge.backends.mdf.save(build_model(g), tmp_path / "m.txt")
    assert list(tmp_path.iterdir()) == []


def test_dumps_writes_what_modelspec_reads():
    from modeci_mdf.mdf import Model

    model = build_model(two_in_two_out())
    again = Model.from_json(dumps(model))
    assert [n.id for n in again.graphs[0].nodes] == [n.id for n in model.graphs[0].nodes]
    head = again.graphs[0].get_node("head")
    assert head.functions[0].function == "onnx::Gemm"
    assert head.functions[0].args == {"A": "in0", "B": "weight"}
    assert head.functions[1].function == "onnx::Relu"


# --------------------------------------------------------------------------- op coverage

RNG = np.random.default_rng(5)
F32 = "float32"


def _r(*shape, lo=0.0):
    return (RNG.random(shape) + lo).astype(F32)


# (name, builder(graph, x) -> output node, also run the reference engine)
OP_CASES = [
    ("relu_keras", lambda g, x: g.add_node("Relu", [x], attrs={
        "negative_slope": 0.1, "max_value": 2.0, "threshold": 0.5}), True),
    ("leaky_elu_selu", lambda g, x: g.add_node("Selu", [g.add_node("Elu", [g.add_node(
        "LeakyRelu", [x], attrs={"alpha": 0.2})], attrs={"alpha": 0.7})]), True),
    ("sigmoids", lambda g, x: g.add_node("HardSwish", [g.add_node("HardSigmoid", [
        g.add_node("Sigmoid", [x])])]), True),
    ("tanh_softplus_softsign", lambda g, x: g.add_node("Softsign", [g.add_node(
        "Softplus", [g.add_node("Tanh", [x])])]), True),
    ("exp_erf_neg_abs_floor", lambda g, x: g.add_node("Floor", [g.add_node("Abs", [g.add_node(
        "Neg", [g.add_node("Erf", [g.add_node("Exp", [x])])])])]), True),
    ("sqrt_log_reciprocal", lambda g, x: g.add_node("Reciprocal", [g.add_node("Log", [
        g.add_node("Sqrt", [g.add_node("Add", [g.add_node("Abs", [x])],
                                       params={"B": np.float32(1.5)})])])]), True),
    ("softmaxes", lambda g, x: g.add_node("LogSoftmax", [g.add_node(
        "Softmax", [x], attrs={"axis": 1})], attrs={"axis": -1}), True),
    ("clip_gelu_swish_mish", lambda g, x: g.add_node("Mish", [g.add_node("Swish", [g.add_node(
        "Gelu", [g.add_node("Gelu", [g.add_node("Clip", [x], attrs={"min": None, "max": 0.8})])],
        attrs={"approximate": "tanh"})], attrs={"alpha": 1.5})]), True),
    ("prelu_identity", lambda g, x: g.add_node("Identity", [g.add_node(
        "PRelu", [x], params={"slope": _r(3, 1, 1)})]), True),
    ("binary_constant", lambda g, x: g.add_node("Pow", [g.add_node("Div", [g.add_node(
        "Mul", [g.add_node("Sub", [g.add_node("Add", [x], params={"B": _r(5)})],
                           params={"B": _r(3, 1, 1)})], params={"B": _r(5)})],
        params={"B": _r(5, lo=0.5)})], params={"B": np.float32(2.0)}), True),
    ("binary_two_inputs", lambda g, x: g.add_node("Div", [g.add_node(
        "Add", [x, g.add_node("Exp", [x])]), g.add_node("Exp", [x])]), True),
    ("variadic", lambda g, x: g.add_node("Mean", [g.add_node("Sum", [x, x, x]), g.add_node(
        "Max", [x, g.add_node("Neg", [x])]), g.add_node("Min", [x, g.add_node("Tanh", [x])])]),
     True),
    ("shapes", lambda g, x: g.add_node("Reshape", [g.add_node("Flatten", [g.add_node(
        "Squeeze", [g.add_node("Unsqueeze", [g.add_node("Slice", [g.add_node(
            "Pad", [g.add_node("Transpose", [x], attrs={"perm": [0, 1, 3, 2]})],
            attrs={"pads": [0, 0, 1, 2, 0, 0, 2, 1], "value": 0.5})],
            attrs={"starts": [1, 0], "ends": [6, 7], "axes": [2, 3], "steps": [1, 2]})],
            attrs={"axes": [1]})], attrs={"axes": [1]})], attrs={"axis": 2})],
        attrs={"shape": [0, -1, 4]}), True),
    ("concat_matmul", lambda g, x: g.add_node("MatMul", [g.add_node(
        "Concat", [x, x], attrs={"axis": 1}), g.add_node("Transpose", [g.add_node(
            "Concat", [x, x], attrs={"axis": 1})], attrs={"perm": [0, 1, 3, 2]})]), True),
    ("reductions", lambda g, x: g.add_node("ReduceMax", [g.add_node(
        "ReduceMean", [x], attrs={"axes": [2], "keepdims": 1})], attrs={"axes": [1],
                                                                        "keepdims": 0}), True),
    ("pools", lambda g, x: g.add_node("GlobalMaxPool", [g.add_node("GlobalAveragePool", [
        g.add_node("AveragePool", [g.add_node("MaxPool", [x], attrs={
            "layout": "NCHW", "kernel_shape": [2, 2], "strides": [1, 1],
            "auto_pad": "SAME_UPPER"})], attrs={
            "layout": "NCHW", "kernel_shape": [3, 3], "strides": [2, 2],
            "pads": [1, 1, 1, 1], "count_include_pad": 0})], attrs={"layout": "NCHW"})],
        attrs={"layout": "NCHW"}), True),
    ("norms", lambda g, x: g.add_node("LayerNormalization", [g.add_node(
        "BatchNormalization", [g.add_node("BatchNormalization", [x], attrs={"axis": 1},
                                          params={"scale": _r(3), "B": _r(3), "mean": _r(3),
                                                  "var": _r(3, lo=0.5)})],
        attrs={"axis": -1, "epsilon": 1e-3}, params={
            "scale": _r(5), "B": _r(5), "mean": _r(5), "var": _r(5, lo=0.5)})],
        attrs={"axis": -2, "epsilon": 1e-3}, params={"scale": _r(5, 5), "B": _r(5, 5)}), True),
    ("convolutions", lambda g, x: g.add_node("ConvTranspose", [g.add_node("Conv", [g.add_node(
        "Conv", [x], attrs={"layout": "NCHW", "group": 3, "pads": [1, 1, 1, 1]},
        params={"W": _r(6, 1, 3, 3, lo=-0.5)})], attrs={
            "layout": "NCHW", "group": 2, "auto_pad": "SAME_UPPER", "strides": [2, 1],
            "dilations": [1, 2], "activation": "Sigmoid", "activation_attrs": {}},
        params={"W": _r(4, 3, 3, 3, lo=-0.5), "B": _r(4)})], attrs={
            "layout": "NCHW", "strides": [2, 2], "pads": [1, 1, 0, 0], "output_padding": [1, 0]},
        params={"W": _r(4, 2, 3, 3, lo=-0.5), "B": _r(2)}), True),
    ("gemm_rank3_dropout_constant", lambda g, x: g.add_node("Add", [g.add_node(
        "Dropout", [g.add_node("Gemm", [x], attrs={"activation": "Tanh",
                                                   "activation_attrs": {}},
                               params={"W": _r(5, 4, lo=-0.5), "B": _r(4)})],
        attrs={"ratio": 0.3}), g.add_node("Constant", params={"value": _r(4)})]), True),
    # Not run by the reference engine: it feeds float indices to Gather.
    ("gather", lambda g, x: g.add_node("Gather", [g.add_node("Floor", [g.add_node(
        "Clip", [g.add_node("Mul", [x], params={"B": np.float32(3)})],
        attrs={"min": 0.0, "max": 4.0})])], params={"data": _r(5, 2)}), False),
    # The reference engine passes a function's inputs by position: Resize needs its (empty)
    # roi written before the scales (BUG-2).
    ("resize", lambda g, x: g.add_node("Resize", [x], attrs={"scales": [1.0, 1.0, 2.0, 2.0]}),
     True),
]


@pytest.mark.parametrize("name,builder,reference", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_op_round_trip(name, builder, reference, tmp_path):
    g = Graph(name)
    x = g.add_input("x", (None, 3, 5, 5))
    g.set_outputs([builder(g, x)])
    g.infer_shapes()
    g.verify()
    xs = np.random.default_rng(6).standard_normal((2, 3, 5, 5)).astype(F32)
    (expected,) = Plan(g).run([xs])
    path = tmp_path / f"{name}.json"
    ir_bridge.emit(g, "mdf", path)
    for plan in (compile_mdf(path), compile_mdf(path, optimize=False, layout=None)):
        (got,) = plan.run([xs])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=ATOL)
    first = ir_bridge.load(path)
    again = tmp_path / "again.json"
    ir_bridge.emit(first, "mdf", again)
    assert_same_graph(first, ir_bridge.load(again))
    if reference:
        (ref,) = run_reference(path, [xs])
        np.testing.assert_allclose(ref, expected, rtol=1e-5, atol=1e-4)


def test_static_and_scalar_inputs_keep_their_shapes(tmp_path):
    g = Graph("static")
    a = g.add_input("a", (4, 3))
    b = g.add_input("b", ())
    g.set_outputs([g.add_node("Mul", [a, b], name="scaled")])
    path = tmp_path / "static.json"
    ir_bridge.emit(g, "mdf", path)
    back = ir_bridge.load(path)
    assert [n.type.shape for n in back.inputs] == [(4, 3), ()]
    xs = [np.ones((4, 3), "float32"), np.array(2.0, "float32")]
    np.testing.assert_array_equal(compile_mdf(path).run(xs)[0], np.full((4, 3), 2.0))
    np.testing.assert_array_equal(run_reference(path, xs)[0], np.full((4, 3), 2.0))
