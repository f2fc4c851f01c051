"""The MNIST zoo through the default pipeline: node counts, fusion, inspect."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import ir_bridge  # noqa: E402
from ir_bridge.cli import main  # noqa: E402
from ir_bridge.errors import UnsupportedLayerError  # noqa: E402
from ir_bridge.zoo import mnist  # noqa: E402

EXPECTED = {
    "mlp_128_128": ["Gemm+Relu", "Gemm+Relu", "Gemm+Softmax"],
    "mlp_128_32": ["Gemm+Relu", "Gemm+Relu", "Gemm+Softmax"],
    "cnn_tutorial": ["Conv+Relu", "MaxPool", "Conv+Relu", "MaxPool", "Gemm+Relu",
                     "Gemm+Softmax"],
    "cnn_dropout": ["Conv", "MaxPool", "Gemm+Relu", "Gemm+Softmax"],
    "cnn_two_conv": ["Conv+Relu", "Conv+Relu", "MaxPool", "Gemm+Softmax"],
}


def compute_nodes(graph):
    return [n.op + (f"+{n.attrs['activation']}" if n.attrs.get("activation") else "")
            for n in graph if n.op != "Input"]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_default_pipeline_shape_and_parity(name):
    model = mnist.build(name, seed=1)
    graph = ir_bridge.load(model)
    optimized = ir_bridge.optimize(graph, "default", verify=True)
    assert compute_nodes(optimized) == EXPECTED[name]
    x = np.random.default_rng(0).random((6, 28, 28, 1)).astype("float32")
    expected = np.asarray(model(x, training=False))
    (y,) = ir_bridge.run(optimized, [x])
    assert np.abs(y - expected).max() <= 1e-5
    assert optimized.count_params() == model.count_params()


def test_conv_batchnorm_relu_block_becomes_one_node():
    keras.utils.set_random_seed(3)
    inp = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inp)
    bn = keras.layers.BatchNormalization(name="bn")
    h = bn(h)
    h = keras.layers.ReLU(name="relu")(h)
    model = keras.Model(inp, h)
    rng = np.random.default_rng(1)
    bn.moving_mean.assign(rng.standard_normal(6).astype("float32"))
    bn.moving_variance.assign(rng.random(6).astype("float32") + 0.5)
    bn.gamma.assign(rng.random(6).astype("float32") + 0.5)
    bn.beta.assign(rng.standard_normal(6).astype("float32"))
    graph = ir_bridge.optimize(ir_bridge.load(model), "default", verify=True)
    assert compute_nodes(graph) == ["Conv+Relu"]
    x = rng.standard_normal((4, 10, 10, 3)).astype("float32")
    (y,) = ir_bridge.run(graph, [x])
    assert np.abs(y - np.asarray(model(x, training=False))).max() <= 1e-5


def test_inspect_prints_shapes_and_keras_param_count(tmp_path, capsys):
    model = mnist.build("cnn_tutorial")
    path = tmp_path / "cnn.keras"
    model.save(path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"params: {model.count_params():,}" in out
    for layer in model.layers:
        n = layer.count_params()
        if n:
            assert f" {n}" in out, layer.name
    assert "float32[?, 26, 26, 32]" in out and "float32[?, 10]" in out


class Scale(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


class Shift(keras.layers.Layer):
    def call(self, x):
        return x + 1.0


def test_custom_layers_are_all_named_before_anything_converts(tmp_path, capsys):
    inp = keras.Input((4,))
    h = Scale(name="my_scale")(keras.layers.Dense(3)(inp))
    model = keras.Model(inp, Shift(name="my_shift")(h))
    with pytest.raises(UnsupportedLayerError) as info:
        ir_bridge.load(model)
    text = str(info.value)
    assert "my_scale" in text and "Scale" in text and "my_shift" in text
    assert {name for name, _ in info.value.layers} == {"my_scale", "my_shift"}
    assert "tf2onnx" in text
    # The CLI on a saved model with an unknown class: exit 2, one line.
    seq = keras.Sequential([keras.Input((4,)), Scale(name="my_scale")])
    path = tmp_path / "custom.keras"
    seq.save(path)
    code = main(["inspect", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
