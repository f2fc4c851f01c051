"""Parity tests of the Keras frontend: every supported layer/option against Keras itself.

Each case builds a small Keras model with random (seeded) weights, converts it, and
asserts ``max |IR - Keras| <= 1e-5`` on a batch of random inputs, both as converted
(``passes="none"``) and after the ``default`` pipeline (with ``verify`` after every pass).
Models are built once per session and shared by both parametrisations.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
from keras import layers as L  # noqa: E402

from keras_helpers import assert_all_close as assert_close  # noqa: E402
from keras_helpers import keras_inputs as inputs_for  # noqa: E402
from keras_helpers import randomize  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge import registry  # noqa: E402
from ir_bridge.errors import (  # noqa: E402
    InvalidModelError,
    IRBridgeError,
    UnsupportedLayerError,
)
from ir_bridge.frontends import keras_layers  # noqa: E402
from ir_bridge.frontends.keras_layers import ACTIVATIONS, conv_transpose_pads  # noqa: E402
from ir_bridge.zoo import mnist  # noqa: E402

ATOL = 1e-5
BATCH = 4
PASSES = ["none", "default"]


# ---------------------------------------------------------------- helpers


def keras_outputs(model, xs) -> list[np.ndarray]:
    y = model(xs if len(xs) > 1 else xs[0], training=False)
    ys = y if isinstance(y, (list, tuple)) else [y]
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in ys]


def convert(model, passes: str):
    graph = ir_bridge.load(model, format="keras")
    if passes != "none":
        graph = ir_bridge.optimize(graph, passes, verify=True)
    return graph


def assert_parity(model, passes, xs=None, atol=ATOL):
    xs = inputs_for(model) if xs is None else xs
    graph = convert(model, passes)
    assert_close(ir_bridge.run(graph, xs), keras_outputs(model, xs), atol)
    return graph


def seq(input_shape, *layers, dtype="float32", name=None):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input(input_shape, dtype=dtype, name="x"), *layers], name=name)
    return randomize(m)


# ---------------------------------------------------------------- layer cases

# name -> builder (no arguments) returning a built model with random weights.
CASES = {
    # core
    "dense_no_bias": lambda: seq((6,), L.Dense(5, use_bias=False), L.Dense(3)),
    "dense_rank3": lambda: seq((3, 4), L.Dense(5, activation="tanh")),
    "dense_lora": lambda: _lora(),
    "embedding": lambda: seq((5,), L.Embedding(10, 4), L.Flatten(), L.Dense(3), dtype="int32"),
    "embedding_float_ids": lambda: seq((5,), L.Embedding(10, 3)),
    "dropouts": lambda: seq((6, 6, 2), L.Dropout(0.5), L.SpatialDropout2D(0.3),
                            L.GaussianNoise(0.2), L.GaussianDropout(0.2), L.AlphaDropout(0.2),
                            L.Reshape((36, 2)), L.SpatialDropout1D(0.1),
                            L.ActivityRegularization(l1=0.1), L.Identity()),
    # activation layers
    "relu_plain": lambda: seq((8,), L.ReLU()),
    "relu_max": lambda: seq((8,), L.ReLU(max_value=0.5)),
    "relu6": lambda: seq((8,), L.ReLU(max_value=6.0)),
    "relu_slope": lambda: seq((8,), L.ReLU(negative_slope=0.1)),
    "relu_threshold": lambda: seq((8,), L.ReLU(threshold=0.3)),
    "relu_all": lambda: seq((8,), L.ReLU(max_value=1.0, negative_slope=0.2, threshold=0.25)),
    "leaky_relu_default": lambda: seq((8,), L.LeakyReLU()),
    "leaky_relu": lambda: seq((8,), L.LeakyReLU(negative_slope=0.05)),
    "prelu": lambda: seq((4, 4, 3), L.PReLU()),
    "prelu_shared": lambda: seq((4, 4, 3), L.PReLU(shared_axes=[1, 2])),
    "elu": lambda: seq((8,), L.ELU(alpha=0.7)),
    "softmax_axis1": lambda: seq((3, 5), L.Softmax(axis=1)),
    "softmax_default": lambda: seq((3, 5), L.Softmax()),
    # convolutions
    "conv2d_valid": lambda: seq((8, 8, 3), L.Conv2D(4, 3)),
    "conv2d_same": lambda: seq((8, 8, 3), L.Conv2D(4, 3, padding="same", activation="relu")),
    "conv2d_same_stride2_odd": lambda: seq((7, 7, 3), L.Conv2D(4, (3, 2), strides=2,
                                                              padding="same")),
    "conv2d_same_even_kernel": lambda: seq((8, 8, 2), L.Conv2D(3, 4, padding="same")),
    "conv2d_dilation": lambda: seq((9, 9, 2), L.Conv2D(3, 3, dilation_rate=2, padding="same")),
    "conv2d_groups": lambda: seq((6, 6, 4), L.Conv2D(6, 3, groups=2, use_bias=False)),
    "conv2d_strides": lambda: seq((9, 8, 2), L.Conv2D(3, 3, strides=(2, 3))),
    "conv1d_valid": lambda: seq((10, 3), L.Conv1D(4, 3, strides=2)),
    "conv1d_same": lambda: seq((10, 3), L.Conv1D(4, 4, padding="same")),
    "conv1d_causal": lambda: seq((10, 3), L.Conv1D(4, 3, padding="causal", dilation_rate=2)),
    "conv3d": lambda: seq((5, 5, 5, 2), L.Conv3D(3, 2, padding="same", strides=2)),
    "depthwise2d": lambda: seq((8, 8, 3), L.DepthwiseConv2D(3, depth_multiplier=2, strides=2,
                                                            padding="same")),
    "depthwise2d_valid": lambda: seq((8, 8, 3), L.DepthwiseConv2D(3, activation="relu6")),
    "depthwise1d": lambda: seq((10, 3), L.DepthwiseConv1D(3, depth_multiplier=2)),
    "separable2d": lambda: seq((8, 8, 3), L.SeparableConv2D(5, 3, depth_multiplier=2,
                                                            padding="same", activation="relu")),
    "separable1d": lambda: seq((10, 3), L.SeparableConv1D(4, 3, use_bias=False)),
    "conv2d_transpose_valid": lambda: seq((5, 5, 3), L.Conv2DTranspose(4, 3, strides=2)),
    "conv2d_transpose_same": lambda: seq((5, 5, 3), L.Conv2DTranspose(4, 3, strides=2,
                                                                      padding="same")),
    "conv2d_transpose_same_even": lambda: seq((5, 4, 2), L.Conv2DTranspose(3, 4, strides=2,
                                                                           padding="same")),
    "conv2d_transpose_stride_gt_kernel": lambda: seq((4, 4, 2),
                                                     L.Conv2DTranspose(3, 2, strides=3)),
    "conv2d_transpose_output_padding": lambda: seq((4, 4, 2), L.Conv2DTranspose(
        3, 3, strides=2, output_padding=1)),
    "conv2d_transpose_same_output_padding": lambda: seq((4, 4, 2), L.Conv2DTranspose(
        3, 3, strides=2, padding="same", output_padding=0)),
    "conv1d_transpose": lambda: seq((6, 3), L.Conv1DTranspose(2, 3, strides=2, padding="same")),
    # pooling
    "maxpool2d": lambda: seq((8, 8, 2), L.MaxPooling2D(2)),
    "maxpool2d_same": lambda: seq((7, 7, 2), L.MaxPooling2D(3, strides=2, padding="same")),
    "avgpool2d": lambda: seq((8, 8, 2), L.AveragePooling2D((2, 3), strides=(2, 1))),
    "avgpool2d_same": lambda: seq((7, 7, 2), L.AveragePooling2D(3, strides=2, padding="same")),
    "maxpool1d": lambda: seq((9, 2), L.MaxPooling1D(2)),
    "avgpool1d_same": lambda: seq((9, 2), L.AveragePooling1D(3, strides=2, padding="same")),
    "maxpool3d": lambda: seq((4, 4, 4, 2), L.MaxPooling3D(2)),
    "global_avg2d": lambda: seq((5, 5, 3), L.GlobalAveragePooling2D()),
    "global_avg2d_keepdims": lambda: seq((5, 5, 3), L.GlobalAveragePooling2D(keepdims=True)),
    "global_max2d": lambda: seq((5, 5, 3), L.GlobalMaxPooling2D()),
    "global_max2d_keepdims": lambda: seq((5, 5, 3), L.GlobalMaxPooling2D(keepdims=True)),
    "global_avg1d": lambda: seq((7, 3), L.GlobalAveragePooling1D()),
    "global_max1d_keepdims": lambda: seq((7, 3), L.GlobalMaxPooling1D(keepdims=True)),
    # normalisation
    "batchnorm_4d": lambda: seq((4, 4, 3), L.BatchNormalization()),
    "batchnorm_2d_eps": lambda: seq((6,), L.BatchNormalization(epsilon=0.1)),
    "batchnorm_no_center_scale": lambda: seq((6,), L.BatchNormalization(center=False,
                                                                        scale=False)),
    "batchnorm_axis1": lambda: seq((3, 5), L.BatchNormalization(axis=1)),
    "layernorm": lambda: seq((3, 6), L.LayerNormalization()),
    "layernorm_two_axes": lambda: seq((3, 6), L.LayerNormalization(axis=[-2, -1],
                                                                   epsilon=1e-2)),
    "layernorm_no_center_scale": lambda: seq((6,), L.LayerNormalization(center=False,
                                                                        scale=False)),
    "normalization_given": lambda: seq((3,), L.Normalization(mean=[0.5, -1.0, 2.0],
                                                             variance=[4.0, 0.25, 0.0])),
    "normalization_scalar": lambda: seq((3,), L.Normalization(axis=None, mean=1.5,
                                                              variance=2.0)),
    "normalization_adapted": lambda: _adapted_normalization(),
    "rescaling": lambda: seq((4, 4, 3), L.Rescaling(1 / 255.0, offset=-1.0)),
    "rescaling_scale_only": lambda: seq((4,), L.Rescaling(2.5)),
    # merging
    "add3": lambda: _merge(L.Add(), 3),
    "subtract": lambda: _merge(L.Subtract(), 2),
    "multiply3": lambda: _merge(L.Multiply(), 3),
    "average": lambda: _merge(L.Average(), 3),
    "maximum": lambda: _merge(L.Maximum(), 2),
    "minimum": lambda: _merge(L.Minimum(), 3),
    "concatenate_axis1": lambda: _merge(L.Concatenate(axis=1), 2),
    "concatenate_last": lambda: _merge(L.Concatenate(), 3),
    "add_rank_broadcast": lambda: _add_rank_broadcast(),
    # shape
    "flatten": lambda: seq((3, 4, 2), L.Flatten(), L.Dense(3)),
    "flatten_rank1": lambda: seq((), L.Flatten()),
    "flatten_rank2": lambda: seq((5,), L.Flatten()),
    # unknown spatial dims: 'same' padding becomes auto_pad, cropping counts from the end
    "dynamic_spatial": lambda: seq((None, None, 3), L.Conv2D(4, 3, strides=2, padding="same"),
                                   L.MaxPooling2D(3, strides=2, padding="same"),
                                   L.AveragePooling2D(2, padding="same"),
                                   L.Cropping2D(((1, 0), (0, 1))),
                                   L.ZeroPadding2D(1), L.UpSampling2D(2),
                                   L.GlobalMaxPooling2D()),
    "reshape": lambda: seq((12,), L.Reshape((3, -1)), L.Reshape((2, 2, 3))),
    "permute": lambda: seq((2, 3, 4), L.Permute((3, 1, 2))),
    "zero_padding2d": lambda: seq((4, 5, 2), L.ZeroPadding2D(((1, 2), (0, 3)))),
    "zero_padding1d": lambda: seq((4, 2), L.ZeroPadding1D((2, 1))),
    "cropping2d": lambda: seq((6, 7, 2), L.Cropping2D(((1, 0), (2, 1)))),
    "cropping1d": lambda: seq((6, 2), L.Cropping1D((0, 2))),
    "upsampling2d": lambda: seq((3, 4, 2), L.UpSampling2D((2, 3))),
    "upsampling1d": lambda: seq((3, 2), L.UpSampling1D(3)),
    "upsampling3d": lambda: seq((2, 2, 2, 1), L.UpSampling3D((1, 2, 3))),
}


def _lora():
    # LoRA adds (alpha / rank) * A @ B to the kernel; Dense.kernel returns the sum.
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((6,), name="x"), L.Dense(5, name="d")])
    m.layers[0].enable_lora(2)
    return randomize(m)


def _merge(layer, n):
    keras.utils.set_random_seed(0)
    ins = [keras.Input((3, 4), name=f"in_{i}") for i in range(n)]
    return keras.Model(ins, layer(ins))


def _add_rank_broadcast():
    # Keras expands lower-rank merge inputs at axis 1: (N, 4) + (N, 3, 4).
    a, b = keras.Input((4,), name="a"), keras.Input((3, 4), name="b")
    return keras.Model([a, b], L.Add()([a, b]))


def _adapted_normalization():
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(1).normal(3.0, 2.0, (64, 5)).astype("float32"))
    return keras.Sequential([keras.Input((5,), name="x"), norm])


def _activation(name):
    """Both ways of naming an activation: a layer option and an Activation layer."""
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="x")
    model = keras.Model(x, [L.Dense(5, activation=name, name="dense")(x),
                            L.Activation(name, name="act")(x)])
    return randomize(model)


for _act in ACTIVATIONS:
    CASES[f"activation_{_act}"] = (lambda a: lambda: _activation(a))(_act)

#: Input scale per case (default 2: values over about [-4, 4], so clipping activations
#: saturate); exp grows too fast for an absolute tolerance at that scale.
SCALES = {"activation_exponential": 0.5}

_BUILT: dict[str, object] = {}


def built(name):
    if name not in _BUILT:
        _BUILT[name] = CASES[name]()
    return _BUILT[name]


@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("case", list(CASES))
def test_layer_parity(case, passes):
    model = built(case)
    assert_parity(model, passes, inputs_for(model, scale=SCALES.get(case, 2.0)))


def test_activation_strings_all_map_to_keras_functions():
    """Every name in the activation table is a real Keras activation (typos would make the
    identity match silently dead), and unfused: Dense(relu) is Gemm then Relu."""
    for name in ACTIVATIONS:
        assert callable(getattr(keras.activations, name)), name
    graph = ir_bridge.load(built("activation_relu"), format="keras")
    assert sorted(n.op for n in graph) == ["Gemm", "Input", "Relu", "Relu"]
    assert graph.node("dense").op == "Gemm"
    assert graph.node("dense/relu").origin == "dense"
    assert graph.node("act").op == "Relu"
    linear = ir_bridge.load(built("activation_linear"), format="keras")
    assert sorted(n.op for n in linear) == ["Gemm", "Identity", "Input"]


@pytest.mark.parametrize("passes", PASSES)
def test_conv_transpose_dilation(passes):
    """TF's CPU kernel cannot run a dilated transposed convolution, so the reference is the
    same layer with the kernel spread out by hand (zeros between taps), undilated."""
    keras.utils.set_random_seed(0)
    dilated = randomize(seq((5, 5, 2), L.Conv2DTranspose(3, 3, dilation_rate=(2, 1),
                                                         padding="same")))
    kernel, bias = dilated.layers[0].get_weights()
    spread = np.zeros((5, 3, 3, 2), np.float32)
    spread[::2] = kernel
    plain = seq((5, 5, 2), L.Conv2DTranspose(3, (5, 3), padding="same"))
    plain.layers[0].set_weights([spread, bias])
    xs = inputs_for(plain)
    assert_close(ir_bridge.run(convert(dilated, passes), xs), keras_outputs(plain, xs))


@pytest.mark.parametrize("pad,k,s,d,op", [(p, k, s, d, op) for p in ("valid", "same")
                                          for k in (1, 2, 3, 4) for s in (1, 2, 3)
                                          for d in (1, 2) for op in (None, 0, 1)
                                          if op is None or op < s])
def test_conv_transpose_pads_match_keras_output_length(pad, k, s, d, op):
    """The ONNX pads reproduce Keras's output length for every kernel/stride combination."""
    from keras.src.backend.common.backend_utils import compute_conv_transpose_output_shape

    size = 5
    begin, end, extra = conv_transpose_pads(k, s, d, pad, op)
    onnx_len = s * (size - 1) + extra + (k - 1) * d + 1 - begin - end
    keras_shape = compute_conv_transpose_output_shape(
        (1, size, 1), (k, 1, 1), 1, s, pad, op, "channels_last", d)
    assert onnx_len == keras_shape[1]


# ---------------------------------------------------------------- channels_first


def _pair(data_format):
    keras.utils.set_random_seed(3)
    shape = (3, 6, 6) if data_format == "channels_first" else (6, 6, 3)
    f = data_format
    return keras.Sequential([
        keras.Input(shape, name="x"),
        L.Conv2D(4, 3, padding="same", data_format=f, activation="relu"),
        L.BatchNormalization(axis=1 if f == "channels_first" else -1),
        L.DepthwiseConv2D(3, depth_multiplier=2, data_format=f),
        L.ZeroPadding2D(((1, 0), (0, 1)), data_format=f),
        L.MaxPooling2D(2, padding="same", data_format=f),
        L.UpSampling2D(2, data_format=f),
        L.Cropping2D(((1, 0), (0, 1)), data_format=f),
        L.AveragePooling2D(2, data_format=f),
        L.Conv2DTranspose(2, 3, strides=2, padding="same", data_format=f),
        L.Flatten(data_format=f),
        L.Dense(5),
    ])


@pytest.mark.parametrize("passes", PASSES)
def test_channels_first_matches_channels_last_model(passes):
    """TF's CPU kernels cannot run NCHW convolutions, so a channels_first model is checked
    against the same weights in a channels_last model (Keras's Flatten flattens
    channels-first tensors in channels-last order, so the outputs are equal)."""
    first, last = _pair("channels_first"), _pair("channels_last")
    first.set_weights(randomize(last).get_weights())
    x = inputs_for(last)[0]
    graph = convert(first, passes)
    layouts = {n.attrs["layout"] for n in graph if "layout" in n.attrs}
    if passes == "none":
        assert layouts == {"NCHW"}
    out = ir_bridge.run(graph, [x.transpose(0, 3, 1, 2)])
    assert_close(out, keras_outputs(last, [x]))


def test_channels_first_global_pool():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((3, 5, 5)), L.GlobalAveragePooling2D(
        data_format="channels_first")])
    x = inputs_for(m)[0]
    out = ir_bridge.run(convert(m, "none"), [x])
    assert_close(out, [x.mean(axis=(2, 3))])


# ---------------------------------------------------------------- MNIST zoo


@pytest.fixture(scope="module")
def zoo():
    return {name: builder(seed=0) for name, builder in mnist.MODELS.items()}


@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("name", list(mnist.MODELS))
def test_mnist_parity(zoo, name, passes):
    model = zoo[name]
    x = np.random.default_rng(1).random((8, *mnist.INPUT_SHAPE), dtype=np.float32)
    assert_parity(model, passes, [x])


@pytest.mark.parametrize("name", list(mnist.MODELS))
def test_mnist_param_count(zoo, name):
    graph = ir_bridge.load(zoo[name], format="keras")
    assert graph.count_params() == zoo[name].count_params()
    # Named after the source layers, with every node traced to one.
    assert [n.name for n in graph.inputs] == ["image"]
    assert all(n.origin for n in graph)


def test_mnist_canonical_unfused_ops(zoo):
    graph = ir_bridge.load(zoo["cnn_dropout"], format="keras")
    assert [n.op for n in graph] == ["Input", "Conv", "MaxPool", "Flatten", "Gemm", "Relu",
                                     "Dropout", "Gemm", "Softmax"]
    assert graph.node("dense_1/relu").origin == "dense_1"
    assert graph.node("dropout").attrs == {"kind": "Dropout", "ratio": 0.2}
    assert graph.inputs[0].type.shape == (None, 28, 28, 1)


def test_integer_inputs_keep_their_dtype():
    graph = ir_bridge.load(built("embedding"), format="keras")
    assert graph.inputs[0].type.dtype == "int32"
    assert graph.node("embedding").op == "Gather"
    assert ir_bridge.load(built("embedding_float_ids"), format="keras").inputs[0].type.dtype == (
        "float32")


def test_batchnorm_param_count_includes_moving_stats():
    model = built("batchnorm_4d")
    assert ir_bridge.load(model, format="keras").count_params() == model.count_params()


# ---------------------------------------------------------------- graph structure


def _residual():
    keras.utils.set_random_seed(1)
    x = keras.Input((6, 6, 3), name="img")
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(x)
    a = L.Conv2D(4, 3, padding="same", name="branch_a")(h)
    a = L.BatchNormalization(name="bn_a")(a)
    r = L.Add(name="residual")([h, a])
    b = L.Conv2D(2, 1, name="branch_b")(h)
    c = L.Concatenate(name="concat")([r, b, h])
    y = L.GlobalAveragePooling2D(name="gap")(c)
    y = L.Dense(3, activation="softmax", name="head")(y)
    return randomize(keras.Model(x, y, name="residual"))


def _two_in_two_out():
    keras.utils.set_random_seed(2)
    a, b = keras.Input((4,), name="left"), keras.Input((3,), name="right")
    shared = L.Dense(5, activation="relu", name="shared")
    ha = shared(L.Dense(4, name="pre_a")(a))
    hb = shared(L.Dense(4, name="pre_b")(b))  # a shared layer: two calls, one weight set
    merged = L.Concatenate(name="cat")([ha, hb])
    out1 = L.Dense(2, name="out1")(merged)
    out2 = L.Subtract(name="out2")([ha, hb])
    return randomize(keras.Model([a, b], [out1, out2], name="two_two"))


def _nested():
    keras.utils.set_random_seed(4)
    inner_in = keras.Input((6,), name="inner_in")
    inner = keras.Model(inner_in, L.Dense(4, activation="tanh", name="dense")(inner_in),
                        name="encoder")
    block = keras.Sequential([L.Dense(4, name="dense"), L.ReLU(name="act")], name="block")
    x = keras.Input((6,), name="x")
    h = inner(x)
    h = block(h)
    h2 = inner(L.Dense(6, name="proj")(h))  # the nested model called a second time
    y = L.Add(name="sum")([h, h2])
    return randomize(keras.Model(x, L.Dense(2, name="dense")(y), name="outer"))


def _squeeze_excite():
    keras.utils.set_random_seed(7)
    x = keras.Input((6, 6, 8), name="x")
    h = L.Conv2D(8, 3, padding="same", activation="swish", name="conv")(x)
    s = L.GlobalAveragePooling2D(name="squeeze")(h)
    s = L.Reshape((1, 1, 8), name="to_map")(s)
    s = L.Dense(2, activation="relu", name="reduce")(s)
    s = L.Dense(8, activation="sigmoid", name="expand")(s)
    h = L.Multiply(name="excite")([h, s])  # (N, 6, 6, 8) * (N, 1, 1, 8)
    k = L.GlobalAveragePooling2D(keepdims=True, name="squeeze_keep")(h)
    h = L.Multiply(name="excite_keep")([h, k])
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = L.BatchNormalization(name="bn")(h)
    return randomize(keras.Model(x, L.Add(name="skip")([h, x]), name="se"))


def _seq_called():
    keras.utils.set_random_seed(5)
    m = keras.Sequential([L.Dense(4, activation="relu"), L.Dense(2)])
    m(np.zeros((2, 3), "float32"))  # built by calling, with batch 2
    return randomize(m)


def _seq_build():
    keras.utils.set_random_seed(6)
    m = keras.Sequential([L.Conv1D(2, 3), L.Flatten(), L.Dense(2)])
    m.build((None, 5, 2))
    return randomize(m)


STRUCTURES = {"residual": _residual, "two_in_two_out": _two_in_two_out, "nested": _nested,
              "squeeze_excite": _squeeze_excite,
              "sequential_called": _seq_called, "sequential_build": _seq_build}


@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_structure_parity(name, passes):
    key = f"structure_{name}"
    if key not in _BUILT:
        _BUILT[key] = STRUCTURES[name]()
    graph = assert_parity(_BUILT[key], passes)
    assert all(t.shape[0] is None for t in (n.type for n in graph.inputs))


def test_residual_graph_reads_real_topology():
    graph = ir_bridge.load(STRUCTURES["residual"](), format="keras")
    assert graph.node("residual").inputs == ("stem/relu", "bn_a")
    assert graph.node("concat").inputs == ("residual", "branch_b", "stem/relu")


def test_two_inputs_two_outputs_names():
    graph = ir_bridge.load(STRUCTURES["two_in_two_out"](), format="keras")
    assert [n.name for n in graph.inputs] == ["left", "right"]
    assert graph.output_names == ["out1", "out2"]
    # The shared layer's two calls are two nodes with the same origin.
    assert sorted(n.name for n in graph if n.origin == "shared" and n.op == "Gemm") == [
        "shared", "shared_1"]


def test_nested_model_inlined_with_scoped_names():
    graph = ir_bridge.load(STRUCTURES["nested"](), format="keras")
    names = {n.name for n in graph}
    assert {"encoder/dense", "encoder/dense_1", "block/dense", "block/act", "dense"} <= names
    assert graph.node("block/act").origin == "block/act"
    assert not any(n.op == "Input" and n.name != "x" for n in graph)


def test_unbuilt_sequential_is_a_clear_error():
    m = keras.Sequential([L.Dense(3)])
    with pytest.raises(IRBridgeError, match="no input shape"):
        ir_bridge.load(m, format="keras")


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x) * 2

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedLayerError, match="subclassed"):
        ir_bridge.load(net, format="keras")


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_file_round_trip(tmp_path, suffix):
    model = built("conv2d_same")
    path = tmp_path / f"model{suffix}"
    model.save(path)
    graph = ir_bridge.load(path, format="keras")
    xs = inputs_for(model)
    assert_close(ir_bridge.run(graph, xs), keras_outputs(model, xs))


def test_frontend_registration():
    fe = registry.get_frontend("keras")
    assert fe.suffixes == (".keras", ".h5")
    assert fe.accepts(built("relu_plain"))
    assert not fe.accepts(object())
    assert not fe.accepts("model.keras")


def test_unloadable_file_is_invalid_model_error(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip file")
    with pytest.raises(InvalidModelError) as info:
        ir_bridge.load(path, format="keras")
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and "Lambda" in msg


def test_lambda_layer_file_is_refused_in_safe_mode(tmp_path):
    x = keras.Input((3,))
    model = keras.Model(x, L.Lambda(lambda t: t * 2)(x))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(InvalidModelError, match="safe_mode"):
        ir_bridge.load(path, format="keras")


# ---------------------------------------------------------------- unsupported layers


class Doubler(L.Layer):
    def call(self, x):
        return x * 2


class Shifter(L.Layer):
    def call(self, x):
        return x + 1


def test_all_unsupported_layers_reported_at_once():
    x = keras.Input((8, 8, 2), name="x")
    h = Doubler(name="double_1")(x)
    h = L.Conv2D(2, 3, name="conv")(h)
    h = Shifter(name="shift")(h)
    h = Doubler(name="double_2")(h)
    h = L.UpSampling2D(2, interpolation="bilinear", name="up")(h)
    h = L.UnitNormalization(name="unit")(h)
    model = keras.Model(x, h, name="custom")
    with pytest.raises(UnsupportedLayerError) as info:
        ir_bridge.load(model, format="keras")
    err = info.value
    assert sorted(err.layers) == [("double_1", "Doubler"), ("double_2", "Doubler"),
                                  ("shift", "Shifter"), ("unit", "UnitNormalization"),
                                  ("up", "UpSampling2D")]
    msg = str(err)
    assert "Doubler x2" in msg and "Shifter x1" in msg
    assert "double_1 (Doubler: a custom layer class" in msg and "shift (Shifter" in msg
    assert "interpolation='bilinear'" in msg
    assert "unit (UnitNormalization: a Keras layer the native frontend does not convert)" in msg
    assert "supported layers: " in msg and "Conv2D" in msg
    assert 'lowering="tf2onnx"' in msg and "--keras-lowering tf2onnx" in msg


def test_user_class_named_like_a_builtin_is_not_trusted():
    class Dense(L.Layer):  # same bare name as keras.layers.Dense, different meaning
        def call(self, x):
            return x

    x = keras.Input((3,))
    with pytest.raises(UnsupportedLayerError, match="custom layer class"):
        ir_bridge.load(keras.Model(x, Dense(name="fake")(x)), format="keras")


def _mixed_precision():
    x = keras.Input((4,))
    return keras.Model(x, L.Dense(2, dtype="mixed_float16", name="d")(x))


def _dropout_training():
    x = keras.Input((4,))
    return keras.Model(x, L.Dropout(0.5, name="d")(x, training=True))


def _nested_training():
    inner = keras.Sequential([keras.Input((4,)), L.Dropout(0.5, name="d")], name="inner")
    x = keras.Input((4,))
    return keras.Model(x, inner(x, training=True))


def _symbolic_op():
    x = keras.Input((4,))
    return keras.Model(x, L.Dense(2, name="d")(x) + 1.0)


REFUSED = {
    "mask_zero": (lambda: seq((4,), L.Embedding(5, 2, mask_zero=True, name="d")), "mask_zero"),
    "rms_scaling": (lambda: seq((4,), L.LayerNormalization(rms_scaling=True, name="d")),
                    "rms_scaling"),
    "layernorm_axis": (lambda: seq((3, 4), L.LayerNormalization(axis=1, name="d")), "axis"),
    "normalization_invert": (lambda: seq((2,), L.Normalization(mean=1.0, variance=1.0,
                                                               invert=True, name="d")),
                             "invert"),
    "custom_activation": (lambda: seq((4,), L.Dense(2, activation=lambda t: t * 3, name="d")),
                          "activation"),
    "unsupported_activation": (lambda: seq((4,), L.Activation("celu", name="d")), "celu"),
    "softmax_two_axes": (lambda: seq((3, 4), L.Softmax(axis=(1, 2), name="d")), "axis"),
    "mixed_precision": (_mixed_precision, "float16"),
    "training_true": (_dropout_training, "training=True"),
    "nested_training_true": (_nested_training, "inner/d .*training=True"),
    "symbolic_op": (_symbolic_op, r"keras\.ops\.Add"),
}


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_options_are_reported(case):
    build, needle = REFUSED[case]
    with pytest.raises(UnsupportedLayerError, match=needle) as info:
        ir_bridge.load(build(), format="keras")
    assert info.value.layers


# ---------------------------------------------------------------- API surface


def test_lowering_options():
    model = built("relu_plain")
    with pytest.raises(IRBridgeError, match="unknown Keras lowering"):
        ir_bridge.load(model, format="keras", lowering="magic")
    with pytest.raises(IRBridgeError, match="unknown option"):
        ir_bridge.load(model, format="keras", colour="blue")
    if importlib.util.find_spec("ir_bridge.frontends.keras_tf2onnx") is None:
        with pytest.raises(IRBridgeError, match="not available"):
            ir_bridge.load(model, format="keras", lowering="tf2onnx")


def test_supported_layers_lists_handlers():
    names = keras_layers.supported_layers()
    for cls in ["Dense", "Conv2D", "MaxPooling2D", "BatchNormalization", "Concatenate",
                "Conv2DTranspose", "Embedding", "Normalization", "GaussianNoise"]:
        assert cls in names
    assert names == sorted(names)
    # Every supported name is a real Keras class.
    assert all(hasattr(keras.layers, n) for n in names)


def test_import_does_not_load_tensorflow():
    code = ("import sys, ir_bridge.frontends.keras, ir_bridge.frontends.keras_layers; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
