"""Tests of the MNIST model zoo: architectures, seeding, and one quick training run."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ir_bridge.datasets import load  # noqa: E402
from ir_bridge.errors import IRBridgeError  # noqa: E402
from ir_bridge.zoo import MODELS, build, train  # noqa: E402

EXPECTED_LAYERS = {
    "mlp_128_128": ["Flatten", "Dense", "Dense", "Dense"],
    "mlp_128_32": ["Flatten", "Dense", "ReLU", "Dense", "ReLU", "Dense", "Activation"],
    "cnn_tutorial": ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"],
    "cnn_dropout": ["Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dropout", "Dense"],
    "cnn_two_conv": ["Conv2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense"],
}


def test_names_are_the_contract():
    assert list(MODELS) == list(EXPECTED_LAYERS)


@pytest.mark.parametrize("name", list(EXPECTED_LAYERS))
def test_architecture(name):
    model = build(name)
    assert isinstance(model, keras.Sequential) and model.name == name
    assert [type(layer).__name__ for layer in model.layers] == EXPECTED_LAYERS[name]
    assert tuple(model.input_shape) == (None, 28, 28, 1)
    assert tuple(model.output_shape) == (None, 10)
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names)
    assert model.layers[-1].name in ("output", "softmax")


def test_layer_details():
    m = build("mlp_128_32")
    assert [l.units for l in m.layers if isinstance(l, keras.layers.Dense)] == [128, 32, 10]
    assert all(l.activation.__name__ == "linear" for l in m.layers if isinstance(l, keras.layers.Dense))
    m = build("cnn_dropout")
    conv = m.get_layer("conv_1")
    assert conv.filters == 28 and conv.kernel_size == (3, 3) and conv.activation.__name__ == "linear"
    assert m.get_layer("dropout").rate == pytest.approx(0.2)
    m = build("cnn_tutorial")
    assert [l.filters for l in m.layers if isinstance(l, keras.layers.Conv2D)] == [32, 64]
    assert m.get_layer("pool_1").pool_size == (2, 2)


@pytest.mark.parametrize("name", list(EXPECTED_LAYERS))
def test_seeding(name):
    a, b, c = build(name, seed=0), build(name, seed=0), build(name, seed=1)
    wa, wb, wc = a.get_weights(), b.get_weights(), c.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    kernels = [(x, z) for x, z in zip(wa, wc, strict=True) if x.ndim > 1]
    assert kernels and all(not np.array_equal(x, z) for x, z in kernels)
    # Layers of one model must not share a seed (same-shape kernels would be identical).
    flat = [x.ravel()[:16] for x in wa if x.ndim > 1]
    assert len({tuple(v) for v in flat}) == len(flat)


def test_unknown_name():
    with pytest.raises(IRBridgeError, match="mlp_128_128"):
        build("resnet50")


def test_train_mlp_reaches_90_percent():
    acc = train(build("mlp_128_128", seed=0), load(), epochs=1, seed=0)
    assert isinstance(acc, float)
    assert acc >= 0.90, acc
