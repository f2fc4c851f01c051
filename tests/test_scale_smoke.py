"""Scale smoke test (CI-sized): a ResNet-style Keras model of ~0.4M parameters converts to
MDF, ONNX and Keras files, and each file, run in its own runtime, matches Keras on a batch
of 8.  ``benchmarks/scale.py`` runs the full-size version (ResNet50, 25.6M parameters) by
hand; ``docs/scale.md`` has its numbers.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
pytest.importorskip("modeci_mdf")
from keras import layers as L  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.parity import runner_for  # noqa: E402

BATCH = 8


def _bottleneck(x, filters: int, stride: int, name: str):
    """A ResNet50 bottleneck block: 1x1 -> 3x3 -> 1x1 (x4), projection shortcut."""
    shortcut = L.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
    shortcut = L.BatchNormalization(epsilon=1.001e-5, name=f"{name}_0_bn")(shortcut)
    y = L.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    y = L.BatchNormalization(epsilon=1.001e-5, name=f"{name}_1_bn")(y)
    y = L.Activation("relu", name=f"{name}_1_relu")(y)
    y = L.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(y)
    y = L.BatchNormalization(epsilon=1.001e-5, name=f"{name}_2_bn")(y)
    y = L.Activation("relu", name=f"{name}_2_relu")(y)
    y = L.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(y)
    y = L.BatchNormalization(epsilon=1.001e-5, name=f"{name}_3_bn")(y)
    y = L.Add(name=f"{name}_add")([shortcut, y])
    return L.Activation("relu", name=f"{name}_out")(y)


def small_resnet(seed: int = 0):
    """ResNet50's stem (pad, 7x7/2 conv, BN, ReLU, pad, 3x3/2 max pool) and four
    bottleneck stages on 32x32x3 images, global average pooling and a 10-way logit head;
    BN statistics randomised."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((32, 32, 3), name="image")
    y = L.ZeroPadding2D(3, name="conv1_pad")(x)
    y = L.Conv2D(32, 7, strides=2, name="conv1_conv")(y)
    y = L.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(y)
    y = L.Activation("relu", name="conv1_relu")(y)
    y = L.ZeroPadding2D(1, name="pool1_pad")(y)
    y = L.MaxPooling2D(3, strides=2, name="pool1_pool")(y)
    for i, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2), (96, 2)], start=2):
        y = _bottleneck(y, filters, stride, f"conv{i}_block1")
    y = L.GlobalAveragePooling2D(name="avg_pool")(y)
    model = keras.Model(x, L.Dense(10, name="predictions")(y), name="small_resnet")
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.name == "moving_mean":
            v.assign(rng.normal(0, 0.1, v.shape).astype("float32"))
        elif v.name == "moving_variance":
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        elif v.name in ("gamma", "beta", "bias"):
            v.assign((float(v.name == "gamma") + rng.normal(0, 0.1, v.shape))
                     .astype("float32"))
    return model


@pytest.fixture(scope="module")
def model_and_reference():
    model = small_resnet()
    x = np.random.default_rng(1).standard_normal((BATCH, 32, 32, 3)).astype("float32")
    yield model, x, runner_for(model)([x])[0]
    keras.backend.clear_session()


def test_the_model_is_resnet_sized_for_ci(model_and_reference):
    model, _, _ = model_and_reference
    assert 200_000 <= model.count_params() <= 600_000


@pytest.mark.parametrize("to,suffix", [("mdf", ".json"), ("onnx", ".onnx"),
                                       ("keras", ".keras")])
def test_converts_with_parity(model_and_reference, tmp_path, to, suffix):
    model, x, want = model_and_reference
    path = tmp_path / f"small_resnet{suffix}"
    graph = ir_bridge.optimize(ir_bridge.load(model), "default")
    ir_bridge.emit(graph, to, path)
    (got,) = runner_for(path)([x])
    assert got.shape == want.shape == (BATCH, 10)
    atol = 1e-5 * max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= atol, f"{to}: max abs error {err:.3g} > {atol:.3g}"
    if to == "mdf":
        # Compact weights: shortest round-trip float32 text, ~12 bytes a weight (modeci's own
        # writer spends ~63); 20 leaves room for structure.
        assert path.stat().st_size < 20 * model.count_params()
        # One MDF node per fused IR node: every BN folded into its conv, every ReLU fused
        # into its conv except those after a residual Add.
        assert not any(n.op == "BatchNormalization" for n in graph)
        relus = [n for n in graph if n.op == "Relu"]
        assert relus and all(graph.node(n.inputs[0]).op == "Add" for n in relus)
