"""The Keras backend: IR -> functional keras.Model of built-in layers.

* Keras -> IR -> Keras with ``passes="none"`` gives the same layer types and the same
  weights bit for bit (every layer case of the Keras frontend's tests, and the MNIST zoo);
  with ``default`` the same outputs.
* IR graphs of the ONNX backend's op cases (NCHW, as the ONNX frontend makes them) become
  Keras models computing what the IR computes, or are refused with ``UnsupportedLayerError``
  (exactly the expected set).
* A model using ir_bridge's own layers saves to ``.keras`` and loads back with
  ``safe_mode=True`` in a fresh process after ``import ir_bridge.backends.keras``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
from keras import layers as L  # noqa: E402

from keras_helpers import ATOL, layer_types, randomize  # noqa: E402
from keras_helpers import assert_all_close as assert_close  # noqa: E402
from keras_helpers import keras_inputs  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.backends import keras as keras_backend  # noqa: E402
from ir_bridge.errors import UnsupportedLayerError  # noqa: E402
from ir_bridge.zoo import mnist  # noqa: E402

from .test_onnx import CASES as IR_CASES  # noqa: E402
from .test_onnx import _inputs_for_case  # noqa: E402



def _fresh_keras_names():
    """Keras numbers auto-named layers and models process-wide; reset the counters after
    this module so tests elsewhere that rely on default names do not see our models."""
    yield
    keras.backend.clear_session()


def _frontend_cases():
    """The Keras frontend's layer cases (tests/frontends/test_keras.py), if present."""
    path = Path(__file__).parents[1] / "frontends" / "test_keras.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_keras_frontend_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FE = _frontend_cases()
FE_CASES = sorted(FE.CASES) if FE is not None else []

#: Source layers the IR cannot tell apart from another layer with the same numbers.
#: ActivityRegularization only adds a training loss (the IR keeps an Identity);
#: Flatten of a rank-1 input is a Reshape to (batch, 1).
LOSSY_TYPES = {"ActivityRegularization": "Identity"}
#: Cases whose source weights are not the layer's own arrays (LoRA holds the low-rank
#: factors; an adapted Normalization keeps count/mean/variance as state; the IR holds the
#: effective kernel / the constants).
WEIGHTS_DIFFER = {"dense_lora", "normalization_adapted"}
#: Activation spellings that compute the same function: without the frontend recording the
#: source class (node.meta["keras_class"]) the backend picks one of them.
EQUIVALENT = {frozenset({"Activation", "ReLU"}), frozenset({"Activation", "LeakyReLU"}),
              frozenset({"Activation", "ELU"}), frozenset({"Activation", "Softmax"}),
              frozenset({"Activation", "Identity"}), frozenset({"Flatten", "Reshape"})}


def outputs(model, xs):
    return keras_backend.runner(model)(xs)


def assert_no_lambda(model):
    assert "Lambda" not in layer_types(model)


def _source_model(case):
    if case in mnist.MODELS:
        return randomize(mnist.build(case, seed=0))
    return FE.built(case)


ROUNDTRIP_CASES = list(mnist.MODELS) + FE_CASES


# ---------------------------------------------------------------- Keras -> IR -> Keras


@pytest.mark.parametrize("case", ROUNDTRIP_CASES)
def test_roundtrip_without_passes_keeps_layer_types_and_weights(case):
    src = _source_model(case)
    out = ir_bridge.convert(src, "keras", passes="none")
    assert_no_lambda(out)
    want = [LOSSY_TYPES.get(t, t) for t in layer_types(src)]
    got = layer_types(out)
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert g == w or frozenset({g, w}) in EQUIVALENT, (got, want)
    if case not in WEIGHTS_DIFFER:
        src_w, out_w = src.get_weights(), out.get_weights()
        assert len(src_w) == len(out_w)
        for a, b in zip(src_w, out_w):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert np.array_equal(a, b), "weights must be bit-identical"
    xs = keras_inputs(src, scale=FE.SCALES.get(case, 2.0) if FE else 2.0)
    assert_close(outputs(out, xs), outputs(src, xs))


@pytest.mark.parametrize("case", ROUNDTRIP_CASES)
def test_roundtrip_with_default_passes_keeps_outputs(case):
    src = _source_model(case)
    out = ir_bridge.convert(src, "keras", passes="default")
    assert_no_lambda(out)
    xs = keras_inputs(src, scale=FE.SCALES.get(case, 2.0) if FE else 2.0)
    assert_close(outputs(out, xs), outputs(src, xs))


def test_activation_spelling_follows_the_recorded_keras_class():
    """``node.meta["keras_class"]`` picks between equal spellings; where the frontend does
    not record it, the test records it as the frontend would."""
    x = keras.Input((6,), name="x")
    model = keras.Model(x, [L.Activation("relu", name="act")(x), L.ReLU(name="relu")(x),
                            L.Softmax(name="sm")(x), L.Activation("softmax", name="asm")(x),
                            L.Activation("linear", name="lin")(x)])
    graph = ir_bridge.load(model)
    classes = {layer.name: type(layer).__name__ for layer in model.layers}
    for node in graph:
        if node.op != "Input":
            node.meta.setdefault("keras_class", classes[node.origin])
    out = ir_bridge.emit(graph, "keras")
    assert layer_types(out) == ["Activation", "ReLU", "Softmax", "Activation", "Activation"]
    xs = keras_inputs(model, scale=2.0)
    assert_close(outputs(out, xs), outputs(model, xs))


def test_layer_names_come_from_origins():
    src = randomize(mnist.build("cnn_tutorial", seed=0))
    out = ir_bridge.convert(src, "keras", passes="none")
    assert [layer.name for layer in out.layers[1:]] == [layer.name for layer in src.layers]
    assert out.layers[0].name == "image"


def test_fused_activation_is_the_layer_argument_or_a_separate_layer():
    g = ir_bridge.optimize(ir_bridge.load(randomize(mnist.build("mlp_128_32", seed=0))))
    out = keras_backend.emit(ir_bridge.api.prepare(g, "keras"))
    dense = [layer for layer in out.layers if isinstance(layer, L.Dense)]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "relu", "softmax"]
    gelu_tanh = IR_CASES["gemm_fused_gelu"]()
    gelu_tanh.node(next(n.name for n in gelu_tanh if n.op == "Gemm")).attrs[
        "activation_attrs"] = {"approximate": "tanh"}
    model = ir_bridge.emit(gelu_tanh, "keras")
    assert layer_types(model) == ["Dense", "Elementwise"]
    assert model.layers[1].activation.__name__ == "linear"


# ---------------------------------------------------------------- IR (from ONNX) -> Keras

#: Backend op cases Keras cannot express: recurrent ops from ONNX (time-major tuples),
#: LRN, edge padding, a Flatten merging the batch, and the boolean/cast plumbing that only
#: tf2onnx-lowered graphs hold.
REFUSED = {"lstm", "lstm_bidirectional_states_peepholes", "lstm_reverse",
           "gru_linear_before_reset", "gru_bidirectional", "lrn", "pad_edge", "flatten_axis2",
           "compare_where", "compare_ops", "cast_float_int_float"}


@pytest.mark.parametrize("case", sorted(IR_CASES))
def test_ir_ops_become_keras_layers_or_are_refused(case):
    graph = IR_CASES[case]()
    if case in REFUSED:
        with pytest.raises(UnsupportedLayerError):
            ir_bridge.emit(graph, "keras")
        return
    model = ir_bridge.emit(graph, "keras")
    assert_no_lambda(model)
    xs = _inputs_for_case(case, graph)
    for got, want in zip(outputs(model, xs), ir_bridge.run(graph, xs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL)


def test_refusal_lists_every_node():
    graph = IR_CASES["lstm"]()
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.emit(graph, "keras")
    ops = sorted(op for _, op in err.value.layers)
    assert ops == ["GetItem", "GetItem", "GetItem", "LSTM"]
    assert "LSTM" in str(err.value)


# ---------------------------------------------------------------- saving and loading


def _custom_layer_graph():
    """x -> Erf -> Div by a constant -> Pad reflect -> Slice (steps): three ir_bridge layers."""
    from ir_bridge.ir import Graph

    g = Graph("custom")
    x = g.add_input("x", (None, 6, 5))
    e = g.add_node("Erf", [x], name="erf")
    d = g.add_node("Div", [e], params={"B": np.arange(1, 6, dtype=np.float32)}, name="div")
    p = g.add_node("Pad", [d], attrs={"pads": [0, 1, 0, 0, 2, 0], "mode": "reflect"}, name="pad")
    s = g.add_node("Slice", [p], attrs={"starts": [0], "ends": [9], "axes": [1],
                                        "steps": [2]}, name="slice")
    g.set_outputs([s])
    return g


def test_ir_bridge_layers_save_and_load_in_safe_mode(tmp_path):
    graph = _custom_layer_graph()
    path = tmp_path / "custom.keras"
    model = ir_bridge.emit(graph, "keras", path)
    assert layer_types(model) == ["Elementwise", "ConstantOperand", "TensorOp", "TensorOp"]
    assert path.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    x = np.random.default_rng(0).standard_normal((4, 6, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    x_path, y_path = str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    code = (
        "import numpy as np, keras, ir_bridge.backends.keras\n"
        f"m = keras.models.load_model({str(path)!r}, safe_mode=True)\n"
        f"np.save({y_path!r}, np.asarray(m(np.load({x_path!r}))))\n"
        "print(sorted(type(l).__name__ for l in m.layers))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Lambda" not in done.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ir_bridge.run(graph, [x])[0],
                               rtol=0, atol=ATOL)
    assert_close(keras_backend.runner(path)([x]), ir_bridge.run(graph, [x]))


def test_saved_zoo_model_loads_back(tmp_path):
    src = randomize(mnist.build("cnn_dropout", seed=0))
    path = tmp_path / "cnn.keras"
    ir_bridge.convert(src, "keras", path)
    loaded = keras.models.load_model(path, safe_mode=True)
    xs = keras_inputs(src, scale=2.0)
    assert_close(outputs(loaded, xs), outputs(src, xs))


def test_failed_emit_leaves_no_file(tmp_path):
    path = tmp_path / "lstm.keras"
    with pytest.raises(UnsupportedLayerError):
        ir_bridge.emit(IR_CASES["lstm"](), "keras", path)
    assert list(tmp_path.iterdir()) == []
