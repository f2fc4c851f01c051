"""The tf2onnx lowering of Keras models: layers the native frontend refuses (LSTM, custom
layers built from ops) still compile, and match Keras within 1e-5.

tf2onnx tracing costs about a second per model, so the models are few and shared.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
from keras import layers as L  # noqa: E402

from keras_helpers import randomize as _randomize  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.backends import onnx as onnx_backend  # noqa: E402
from ir_bridge.cli import main as cli_main  # noqa: E402
from ir_bridge.errors import UnsupportedLayerError  # noqa: E402
from ir_bridge.frontends import keras_tf2onnx  # noqa: E402

ATOL = 1e-5


def randomize(model, seed=0):
    """Weights ~ 0.4 N(0, 1) (the recurrent kernels saturate with larger ones)."""
    return _randomize(model, seed, scale=0.4)


def _fresh_keras_names():
    """Keras numbers auto-named layers and models process-wide; reset the counters after
    this module so tests elsewhere that rely on default names do not see our models."""
    yield
    keras.backend.clear_session()


def lstm_model():
    x = keras.Input((7, 5), name="sequence")
    h = L.LSTM(8, name="lstm")(x)
    return randomize(keras.Model(x, L.Dense(3, activation="softmax", name="out")(h),
                                 name="lstm_classifier"))


def keras_out(model, xs):
    y = model(xs if len(xs) > 1 else xs[0], training=False)
    return [np.asarray(t) for t in (y if isinstance(y, (list, tuple)) else [y])]


def assert_close(got, want, atol=ATOL):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert float(np.max(np.abs(g - w))) <= atol


@pytest.fixture(scope="module")
def lstm():
    model = lstm_model()
    xs = [np.random.default_rng(1).standard_normal((6, 7, 5)).astype(np.float32)]
    return model, xs, ir_bridge.load(model, lowering="tf2onnx")


def test_lstm_converts_with_tf2onnx_and_matches_keras(lstm):
    model, xs, graph = lstm
    assert graph.op_counts()["LSTM"] == 1
    assert graph.meta["lowering"] == "tf2onnx"
    want = keras_out(model, xs)
    assert_close(ir_bridge.run(graph, xs), want)
    optimized = ir_bridge.optimize(graph, verify=True)
    assert_close(ir_bridge.run(optimized, xs), want)
    for opset in (onnx_backend.MIN_OPSET, onnx_backend.max_opset()):
        onnx_model = ir_bridge.emit(optimized, "onnx", opset=opset)
        assert [n.op_type for n in onnx_model.graph.node].count("LSTM") == 1
        assert_close(onnx_backend.runner(onnx_model)(xs), want)


def test_lstm_without_the_lowering_names_the_layer_and_the_option():
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.load(lstm_model())
    text = str(err.value)
    assert "lstm" in text and "LSTM" in text
    assert "tf2onnx" in text and "lowering" in text
    assert ("lstm", "LSTM") in err.value.layers


def test_cli_keras_lowering_tf2onnx_with_validate(tmp_path, capsys):
    model = lstm_model()
    src = tmp_path / "lstm.keras"
    model.save(src)
    out = tmp_path / "lstm.onnx"
    code = cli_main(["convert", str(src), "--to", "onnx", "-o", str(out), "--keras-lowering",
                     "tf2onnx", "--validate"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "OK" in captured.out
    x = np.random.default_rng(2).standard_normal((4, 7, 5)).astype(np.float32)
    assert_close(onnx_backend.runner(out)([x]), keras_out(model, [x]))


def test_recurrent_variants_and_a_custom_layer():
    """Normalization's constants, bidirectional and backwards LSTMs, returned states, and a
    layer class the native frontend cannot know (its call is built from keras.ops), in one
    traced model."""

    class ScaledSwish(L.Layer):
        def call(self, x):
            return 1.5 * x * keras.ops.sigmoid(x) + 0.25

    x = keras.Input((6, 4), name="x")
    h = L.Normalization(mean=[0.5, -1.0, 2.0, 0.0], variance=[4.0, 0.25, 1.0, 2.0],
                        name="norm")(x)
    h = L.Bidirectional(L.LSTM(5, return_sequences=True), name="bi")(h)
    h = ScaledSwish(name="custom")(h)
    back = L.LSTM(3, go_backwards=True, name="back")(h)
    _, state_h, state_c = L.LSTM(2, return_state=True, name="states")(h)
    model = randomize(keras.Model(x, [back, L.Concatenate(name="cat")([state_h, state_c])]))
    with pytest.raises(UnsupportedLayerError, match="ScaledSwish"):
        ir_bridge.load(model)
    graph = ir_bridge.load(model, lowering="tf2onnx")
    # tf2onnx leaves Normalization's captured constants as graph inputs; not ours.
    assert [n.name for n in graph.inputs] == ["x"]
    directions = sorted(n.attrs["direction"] for n in graph if n.op == "LSTM")
    assert directions == ["bidirectional", "forward", "forward"]  # go_backwards: reversed input
    xs = [np.random.default_rng(3).standard_normal((4, 6, 4)).astype(np.float32)]
    want = keras_out(model, xs)
    assert_close(ir_bridge.run(graph, xs), want)
    assert_close(onnx_backend.runner(ir_bridge.emit(ir_bridge.optimize(graph), "onnx"))(xs),
                 want)


def test_embedding_lstm_text_classifier():
    """The usual text model: Keras's Embedding wraps negative ids with tf.where, which
    tf2onnx spells with Less/Not/Cast; all of it reads, runs and goes back to ONNX."""
    x = keras.Input((7,), dtype="int32", name="tokens")
    h = L.LSTM(6, name="lstm")(L.Embedding(20, 5, name="embed")(x))
    model = randomize(keras.Model(x, L.Dense(3, activation="softmax", name="out")(h)))
    graph = ir_bridge.load(model, lowering="tf2onnx")
    assert graph.inputs[0].type.dtype == "int32"
    xs = [np.random.default_rng(5).integers(-20, 20, (5, 7)).astype(np.int32)]
    want = keras_out(model, xs)
    assert_close(ir_bridge.run(graph, xs), want)
    proto = ir_bridge.emit(ir_bridge.optimize(graph), "onnx")
    assert_close(onnx_backend.runner(proto)(xs), want)


def test_dense_over_a_sequence_survives_the_default_pipeline():
    x = keras.Input((7, 5), name="x")
    h = L.LSTM(8, return_sequences=True, name="lstm")(x)
    model = randomize(keras.Model(x, L.Dense(3, name="per_step")(h)))
    graph = ir_bridge.load(model, lowering="tf2onnx")
    xs = [np.random.default_rng(4).standard_normal((4, 7, 5)).astype(np.float32)]
    assert_close(ir_bridge.run(graph, xs), keras_out(model, xs))
    assert_close(ir_bridge.run(ir_bridge.optimize(graph), xs), keras_out(model, xs))


def test_a_path_is_loaded_then_traced(tmp_path, lstm):
    model, xs, _ = lstm
    path = tmp_path / "m.keras"
    model.save(path)
    graph = keras_tf2onnx.load(path)
    assert [n.name for n in graph.inputs] == ["sequence"]
    assert graph.inputs[0].type.shape == (None, 7, 5)
    assert_close(ir_bridge.run(graph, xs), keras_out(model, xs))
