"""MDF frontend: files modeci_mdf wrote, hand-written MDF, and what is refused.

The reference engine is used only as an oracle, on files written by modeci_mdf itself or
written by hand in this file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ir_bridge
from ir_bridge.engine.mdf_plan import compile_mdf
from ir_bridge.errors import InvalidModelError, UnsafeExpressionError, UnsupportedLayerError

from mdf_reference import evaluate as reference

pytest.importorskip("modeci_mdf")


def mdf_doc(nodes: dict, edges: dict | None = None, metadata: dict | None = None,
            **graph_fields) -> dict:
    """A one-graph MDF document in the JSON layout modelspec writes."""
    graph = {"nodes": nodes, **graph_fields}
    if edges:
        graph["edges"] = edges
    if metadata:
        graph["metadata"] = metadata
    return {"m": {"format": "ModECI MDF v0.4", "graphs": {"g": graph}}}


def write(tmp_path, doc, name="m.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def edge(sender, receiver, sport="out", rport="in0", **extra):
    return {"sender": sender, "receiver": receiver, "sender_port": sport,
            "receiver_port": rport, **extra}


def input_node(name, shape):
    return {"input_ports": {name: {"shape": list(shape)}},
            "output_ports": {"out": {"value": name}}}


# --------------------------------------------------------------------------- modeci files


@pytest.fixture(scope="module")
def keras_importer_files(tmp_path_factory):
    """MLP files written by modeci_mdf's own Keras importer (input data baked in)."""
    keras = pytest.importorskip("keras")
    from modeci_mdf.interfaces.keras import keras_to_mdf

    from ir_bridge.zoo import mnist as zoo

    root = tmp_path_factory.mktemp("importer")
    x = np.random.default_rng(0).random((5, 28, 28, 1)).astype("float32")
    out = {}
    for name in ("mlp_128_128", "mlp_128_32"):
        keras.utils.set_random_seed(0)
        model, _ = keras_to_mdf(zoo.build(name, seed=0), x)
        path = root / f"{name}.json"
        model.to_json_file(str(path))
        out[name] = path
    return x, out


@pytest.mark.parametrize("name", ["mlp_128_128", "mlp_128_32"])
def test_modeci_written_mlp_runs_to_the_reference_numbers(keras_importer_files, name):
    x, files = keras_importer_files
    path = files[name]
    plan = compile_mdf(path)
    # The importer stores the images in a parameter of node "Input": that node becomes the
    # graph input, the data is not used as part of the model.
    assert plan.input_names == ["Input"]
    assert any("Input" in note and "input data" in note for note in plan.notes)
    np.testing.assert_array_equal(plan.baked_inputs["Input"], x)
    (ours,) = plan.run([x])
    last = json.loads(path.read_text())
    expected = reference(path)
    out_node = list(next(iter(last.values()))["graphs"].values())[0]["nodes"]
    final = list(out_node)[-1]
    ref = expected[(final, f"{final}_out")]
    assert ours.shape == ref.shape == (5, 10)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # ... and on other data and batch sizes, since the input is a real input now.
    (other,) = plan.run([x[:2] * 0.5])
    assert other.shape == (2, 10)


def test_modeci_written_mlp_reads_as_the_layers_it_holds(keras_importer_files):
    _, files = keras_importer_files
    g = ir_bridge.load(files["mlp_128_128"])
    assert [n.op for n in g] == ["Input", "Flatten", "Gemm", "Gemm", "Gemm"]
    # "(Dense_1_in @ wgts) + bias" then "linear*(linear>0)" is one fused Gemm+Relu node,
    # and onnx::Softmax of "linear" fuses into the last one.
    assert [n.attrs["activation"] for n in g if n.op == "Gemm"] == ["Relu", "Relu", "Softmax"]
    assert [n.name for n in g][2:] == ["Dense_1", "Dense_2", "Output"]
    # The importer drops ReLU layers of mlp_128_32 silently; ir_bridge reads what is written.
    g32 = ir_bridge.load(files["mlp_128_32"])
    assert [n.attrs["activation"] for n in g32 if n.op == "Gemm"] == [None, None, None]


def test_live_modeci_model_objects_are_accepted():
    from modeci_mdf.mdf import Function, Graph, InputPort, Model, Node, OutputPort, Parameter

    node = Node(id="affine", input_ports=[InputPort(id="x", shape=(1, 3))],
                parameters=[Parameter(id="w", value=np.eye(3, dtype="float32") * 2),
                            Parameter(id="b", value=np.ones(3, dtype="float32"))],
                functions=[Function(id="y", value="x @ w + b")],
                output_ports=[OutputPort(id="out", value="y")])
    model = Model(id="m", graphs=[Graph(id="g", nodes=[node])])
    g = ir_bridge.load(model)
    assert [n.op for n in g] == ["Input", "Gemm"]
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(ir_bridge.run(model, [x])[0], x * 2 + 1)
    np.testing.assert_allclose(ir_bridge.run(model.graphs[0], [x])[0], x * 2 + 1)


def test_import_ir_bridge_does_not_import_modeci_mdf():
    code = ("import sys, ir_bridge; ir_bridge.registry.frontend_for(object) "
            "if False else None; print(any(m.startswith('modeci_mdf') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize("function,args,formula,op", [
    ("linear", {"slope": 2.0, "intercept": -1.0}, lambda x: 2 * x - 1, "MdfExpression"),
    ("logistic", {"gain": 1.0, "bias": 0.0, "offset": 0.0}, lambda x: 1 / (1 + np.exp(-x)),
     "Sigmoid"),
    ("logistic", {"gain": 2.0, "bias": 0.5, "offset": 0.1},
     lambda x: 1 / (1 + np.exp(-2 * (x + 0.5) + 0.1)), "MdfExpression"),
    ("exponential", {"scale": 1, "rate": 1, "bias": 0, "offset": 0}, np.exp, "Exp"),
    ("exponential", {"scale": 0.5, "rate": 2, "bias": 0.1, "offset": 1},
     lambda x: 0.5 * np.exp(2 * x + 0.1) + 1, "MdfExpression"),
    ("sin", {"scale": 3.0}, lambda x: 3 * np.sin(x), "MdfExpression"),
    ("tanh", {"scale": 1.0}, np.tanh, "Tanh"),
    ("Relu", {}, lambda x: np.maximum(x, 0), "Relu"),
])
def test_standard_functions(tmp_path, function, args, formula, op):
    arg0 = "A" if function == "Relu" else "variable0"
    doc = mdf_doc({"n": {"input_ports": {"x": {"shape": [1, 4]}},
                         "functions": {"f": {"function": {function: {arg0: "x", **args}}}},
                         "output_ports": {"out": {"value": "f"}}}})
    path = write(tmp_path, doc)
    g = ir_bridge.load(path)
    assert [n.op for n in g] == ["Input", op]
    x = np.linspace(-2, 2, 12, dtype="float32").reshape(3, 4)
    (ours,) = compile_mdf(path).run([x])
    np.testing.assert_allclose(ours, formula(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    ref = reference(path, {"x": x})[("n", "out")]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_standard_matmul_and_expression_patterns(tmp_path):
    w = np.arange(6, dtype="float32").reshape(3, 2) / 7
    doc = mdf_doc({
        "x": input_node("x", (1, 3)),
        "n": {"input_ports": {"in0": {}},
              "parameters": {"w": {"value": w.tolist()}, "b": {"value": [0.5, -0.5]},
                             "lin": {"value": "in0 @ w + b"},
                             "act": {"value": "lin * (lin > 0)"},
                             "act2": {"value": "numpy.transpose(act)"}},
              "functions": {"odd": {"function": {"MatMul": {"A": "act", "B": "act2"}}},
                            "scaled": {"value": "2 * act"},
                            "mixed": {"value": "numpy.sin(scaled) + odd[0, 0]"}},
              "output_ports": {"out": {"value": "act"}, "other": {"value": "mixed"},
                               "prod": {"value": "odd"}}}},
        {"e": edge("x", "n")})
    path = write(tmp_path, doc)
    g = ir_bridge.load(path)
    ops = {n.name: n.op for n in g}
    assert ops["n"] == "Gemm" and g["n"].attrs["activation"] == "Relu"
    assert "MatMul" in ops.values() and "MdfExpression" in ops.values()
    assert g.output_names[0] == "n"
    x = np.random.default_rng(0).standard_normal((2, 3)).astype("float32")
    outs = compile_mdf(path).run([x])
    ref = reference(path, {"x": x})
    for got, port in zip(outs, ["out", "other", "prod"]):
        np.testing.assert_allclose(got, ref[("n", port)], rtol=1e-5, atol=1e-6)


def test_expression_shapes_follow_the_batch(tmp_path):
    doc = mdf_doc({"n": {"input_ports": {"x": {"shape": [1, 4, 3]}},
                         "parameters": {"k": {"value": [1.0, 2.0, 3.0]}},
                         "functions": {"f": {"value": "sum(x * k, axis=-1, keepdims=True)"},
                                       "h": {"value": "f[:, 1:3, 0] ** 2"}},
                         "output_ports": {"out": {"value": "h"}}}})
    g = ir_bridge.load(write(tmp_path, doc))
    assert g.outputs[0].type.shape == (None, 2)
    x = np.ones((7, 4, 3), "float32")
    (y,) = ir_bridge.run(g, [x])
    np.testing.assert_allclose(y, np.full((7, 2), 36.0))


def test_edge_weights_reduce_add_and_tuple_outputs(tmp_path):
    doc = mdf_doc({
        "a": input_node("a", (1, 1, 4, 4)),
        "pool": {"input_ports": {"in0": {}},
                 "functions": {"mp": {"function": {"onnx::MaxPool": {
                     "X": "in0", "kernel_shape": [2, 2], "strides": [2, 2]}}},
                     "y": {"value": "mp[0]"}},
                 "output_ports": {"out": {"value": "y"}, "whole": {"value": "mp"}}},
        "sum": {"input_ports": {"in0": {"reduce": "add"}},
                "functions": {"s": {"value": "in0 * 1"}},
                "output_ports": {"out": {"value": "s"}}}},
        {"e0": edge("a", "pool"), "e1": edge("pool", "sum", parameters={"weight": 2.0}),
         "e2": edge("pool", "sum", "whole")},
        metadata={"inputs": ["a.a"], "outputs": ["sum.out", "pool.out"]})
    g = ir_bridge.load(write(tmp_path, doc))
    x = np.arange(32, dtype="float32").reshape(2, 1, 4, 4)
    s, p = ir_bridge.run(g, [x])
    pooled = x.reshape(2, 1, 2, 2, 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(p, pooled)
    np.testing.assert_array_equal(s, 3 * pooled)


def test_tuple_outputs_inside_larger_expressions(tmp_path):
    # The reference engine returns MaxPool's (Y, Indices): mp[0] is Y wherever it appears.
    doc = mdf_doc({
        "a": input_node("a", (1, 1, 4, 4)),
        "p": {"input_ports": {"in0": {}},
              "functions": {"mp": {"function": {"onnx::MaxPool": {
                  "X": "in0", "kernel_shape": [2, 2], "strides": [2, 2]}}},
                  "y": {"value": "mp[0] * 2 + mp[0]"}},
              "output_ports": {"out": {"value": "y"}}},
        "bad": {"input_ports": {"in0": {}},
                "functions": {"mp": {"function": {"onnx::MaxPool": {
                    "X": "in0", "kernel_shape": [2, 2]}}}},
                "output_ports": {"out": {"value": "mp[1] + 1"}}}},
        {"e": edge("a", "p"), "e2": edge("a", "bad")})
    path = write(tmp_path, doc)
    with pytest.raises(UnsupportedLayerError, match="output 1 of onnx::MaxPool"):
        ir_bridge.load(path)
    del doc["m"]["graphs"]["g"]["nodes"]["bad"], doc["m"]["graphs"]["g"]["edges"]["e2"]
    path = write(tmp_path, doc)
    x = np.arange(32, dtype="float32").reshape(2, 1, 4, 4)
    for _ in range(2):  # the rewrite must not touch the parsed tree the reader remembers
        (y,) = ir_bridge.run(str(path), [x])
        np.testing.assert_array_equal(y, 3 * x.reshape(2, 1, 2, 2, 2, 2).max(axis=(3, 5)))
    np.testing.assert_allclose(y, reference(path, {"a": x})[("p", "out")])


def test_foreign_layouts_inputs_by_node_order_outputs_at_sinks(tmp_path):
    # No metadata: free ports in node order are the inputs, sink nodes' ports the outputs.
    doc = mdf_doc({
        "second": {"input_ports": {"q": {"shape": [1, 2]}},
                   "output_ports": {"out": {"value": "q * 10"}}},
        "first": {"input_ports": {"p": {"shape": [1, 2], "type": "float32"}},
                  "output_ports": {"out": {"value": "p + 1"}}},
        "join": {"input_ports": {"u": {}, "v": {}},
                 "output_ports": {"o1": {"value": "u - v"}, "o2": {"value": "v"}}}},
        {"e1": edge("second", "join", rport="u"), "e2": edge("first", "join", rport="v")})
    g = ir_bridge.load(write(tmp_path, doc))
    assert [n.name for n in g.inputs] == ["q", "p"]
    a, b = np.ones((3, 2), "float32"), np.full((3, 2), 2.0, "float32")
    o1, o2 = ir_bridge.run(g, [a, b])
    np.testing.assert_allclose(o1, a * 10 - (b + 1))
    np.testing.assert_allclose(o2, b + 1)


def test_onnx_spellings_of_the_importer_are_read_with_a_note(tmp_path):
    w = np.arange(8, dtype="float32").reshape(2, 1, 2, 2)
    doc = mdf_doc({
        "x": input_node("x", (1, 3, 3, 1)),
        "conv": {"input_ports": {"in0": {}},
                 "functions": {
                     "t_in": {"function": "onnx:Transpose",
                              "args": {"data": "in0", "perm": [0, 3, 1, 2]}},
                     "t_w": {"function": "onnx:Transpose",
                             "args": {"data": w.transpose(2, 3, 1, 0).tolist(),
                                      "perm": [3, 2, 0, 1]}},
                     "c": {"function": "onnx::Conv",
                           "args": {"X": "t_in", "W": "t_w", "B": [0.0, 1.0],
                                    "pads": [0, 0, 0, 0, 0, 0]}},
                     "bn": {"function": "onnx::Batchnormalization",
                            "args": {"X": "c", "scale": [1.0, 2.0], "B": [0.0, 0.0],
                                     "input_mean": [0.0, 0.0], "input_var": [1.0, 1.0],
                                     "epsilon": 0.0, "training_mode": 0}}},
                 "output_ports": {"out": {"value": "bn"}}}},
        {"e": edge("x", "conv")})
    plan = compile_mdf(write(tmp_path, doc), optimize=False, layout=None)
    assert any("onnx:Transpose" in n for n in plan.notes)
    assert any("zero pads" in n for n in plan.notes)
    # The constant kernel transpose was folded at load time; no runtime op left for it.
    assert [s.op for s in plan.steps] == ["Transpose", "Conv", "BatchNormalization"]
    x = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    (y,) = plan.run([x])
    xi = x[0, :, :, 0]
    expected = np.array([[[(xi[i:i + 2, j:j + 2] * w[m, 0]).sum() + m for j in range(2)]
                          for i in range(2)] for m in range(2)]) * np.array([1, 2])[:, None, None]
    np.testing.assert_allclose(y[0], expected, rtol=1e-6)


def test_several_graphs_need_a_choice(tmp_path):
    doc = mdf_doc({"n": input_node("x", (1, 2))})
    doc["m"]["graphs"]["h"] = {"nodes": {"k": input_node("y", (1, 3))}}
    path = write(tmp_path, doc)
    with pytest.raises(InvalidModelError, match="pick one with graph="):
        ir_bridge.load(path)
    from ir_bridge.frontends.mdf import load

    assert load(path, graph="h").inputs[0].type.shape == (None, 3)


# --------------------------------------------------------------------------- refused


def test_every_unsupported_feature_is_listed_at_once(tmp_path):
    doc = mdf_doc({
        "x": input_node("x", (1, 2)),
        "leaky": {"input_ports": {"in0": {}},
                  "parameters": {"v": {"default_initial_value": 0,
                                       "time_derivative": "(in0 - v) / 2"}},
                  "output_ports": {"out": {"value": "v"}}},
        "counter": {"parameters": {"count": {"value": "count + 1"}},
                    "output_ports": {"out": {"value": "count"}}},
        "gated": {"input_ports": {"in0": {}},
                  "parameters": {"g": {"value": 1, "conditions": [{"id": "c", "test": "g > 1",
                                                                   "value": 0}]}},
                  "functions": {"f": {"function": "actr.retrieve", "args": {}},
                                "h": {"function": "onnx::LSTM", "args": {}}},
                  "output_ports": {"out": {"value": "in0"}}}},
        {"e1": edge("x", "leaky"), "e2": edge("x", "gated")},
        conditions={"termination": {"environment_state_update": {"type": "AllHaveRun"}}})
    with pytest.raises(UnsupportedLayerError) as info:
        ir_bridge.load(write(tmp_path, doc))
    listed = info.value.layers
    nodes = [n for n, _ in listed]
    assert nodes.count("leaky") == 2 and "counter" in nodes and nodes.count("gated") == 3
    assert ("graph", "conditions (scheduling)") in listed
    text = str(info.value)
    for feature in ("time_derivative", "default_initial_value", "reads itself", "conditions",
                    "actr.retrieve", "LSTM"):
        assert feature in text


@pytest.mark.parametrize("doc_change,error,match", [
    (lambda d: d["m"]["graphs"]["g"]["edges"]["e"].update(sender="ghost"), InvalidModelError,
     "no node 'ghost'"),
    (lambda d: d["m"]["graphs"]["g"]["edges"]["e"].update(receiver_port="nope"),
     InvalidModelError, "no input port 'nope'"),
    (lambda d: d["m"]["graphs"]["g"]["nodes"]["n"].update(colour="red"), InvalidModelError,
     "unknown field"),
    (lambda d: d["m"]["graphs"]["g"]["nodes"]["n"]["parameters"].update(w={"value": [[1, 2],
                                                                                     [3]]}),
     InvalidModelError, "not a numeric array"),
    (lambda d: d["m"]["graphs"]["g"]["nodes"]["n"]["parameters"].update(w={"value": "in0 +"}),
     UnsafeExpressionError, "syntax error"),
    (lambda d: d["m"]["graphs"]["g"]["nodes"]["n"]["parameters"].update(
        w={"value": "[1.0, 2.0, 3.0] @ transpose(in0)"}), InvalidModelError, "matmul"),
    (lambda d: d["m"]["graphs"]["g"]["nodes"]["n"].update(
        functions={"f": {"function": {"onnx::Gemm": {"A": "in0", "B": [[1.0]], "zap": 1}}}}),
     InvalidModelError, "unknown argument"),
])
def test_malformed_documents(tmp_path, doc_change, error, match):
    doc = mdf_doc({"x": input_node("x", (1, 2)),
                   "n": {"input_ports": {"in0": {}}, "parameters": {},
                         "output_ports": {"out": {"value": "in0"}}}},
                  {"e": edge("x", "n")})
    doc_change(doc)
    with pytest.raises(error, match=match):
        ir_bridge.load(write(tmp_path, doc))


def test_errors_name_the_file_and_node(tmp_path):
    doc = mdf_doc({"x": input_node("x", (1, 2)),
                   "node_7": {"input_ports": {"in0": {}},
                              "output_ports": {"out": {"value": "in0 @ nothing"}}}},
                  {"e": edge("x", "node_7")})
    path = write(tmp_path, doc)
    with pytest.raises(UnsafeExpressionError) as info:
        ir_bridge.load(path)
    assert str(path) in str(info.value) and "node_7" in str(info.value)
    assert "undefined name 'nothing'" in str(info.value)
