"""The Keras backend where Keras's own layers stop: convolutions TensorFlow or Keras refuse
in the direct spelling, and graphs deeper than Python's recursion limit.

* A depthwise convolution (one input channel per group) with unequal strides becomes a
  grouped ``Conv2D`` (TensorFlow's depthwise kernel needs equal strides: BUG-3).
* Left-only ("causal") pads of a depthwise 1-D convolution become ``ZeroPadding1D`` then
  ``'valid'`` (``DepthwiseConv1D``/``SeparableConv1D`` refuse ``'causal'``: BUG-12); a
  grouped ``Conv1D`` source keeps its ``'causal'``.
* Strides > 1 with dilations > 1 (every ``Conv*D`` refuses them) run at stride 1, then a
  1-wide ``MaxPooling`` keeps every stride-th output.
* What stays inexpressible is refused with ``UnsupportedLayerError`` naming the node.
* A chain thousands of layers deep builds, saves and loads back (BUG-11); past the ceiling
  it is refused with ``UnsupportedLayerError``, never a bare ``RecursionError``.

Every model is compared with its source (Keras model or IR graph) on random inputs.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
from keras import layers as L  # noqa: E402

from keras_helpers import assert_all_close as _assert_close  # noqa: E402
from keras_helpers import layer_types as _types  # noqa: E402
from keras_helpers import randomize  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.backends import keras as keras_backend  # noqa: E402
from ir_bridge.errors import InvalidModelError, UnsupportedLayerError  # noqa: E402
from ir_bridge.ir import Graph  # noqa: E402
from ir_bridge.parity import runner_for  # noqa: E402

ATOL = 1e-5


def _fresh_keras_names():
    yield
    keras.backend.clear_session()


def _xs(shape, seed=0, batch=3):
    return [np.random.default_rng(seed).standard_normal((batch, *shape)).astype("float32")]


def _check_saved(model, path, xs, want):
    """The ``.keras`` file loads back in safe mode (ir_bridge's layers registered by the
    backend import) and computes ``want``."""
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    _assert_close(runner_for(loaded)(xs), want)


# ---------------------------------------------------------------- Keras sources

#: name -> (input shape, layers, passes, Keras layer types of the rebuilt model)
KERAS_CASES = {
    # BUG-3: one input channel per group, unequal strides.
    "grouped_conv2d_unequal_strides": (
        (5, 5, 2), [L.Conv2D(4, 1, strides=(1, 2), groups=2)], "default", ["Conv2D"]),
    "grouped_conv2d_3x3_strides_2_1": (
        (7, 6, 3), [L.Conv2D(6, 3, strides=(2, 1), groups=3, padding="same",
                             activation="relu")], "default", ["Conv2D"]),
    # BUG-12: left-only pads on a depthwise 1-D convolution.
    "grouped_causal_conv1d": (
        (6, 2), [L.Conv1D(2, 2, padding="causal", groups=2)], "default", ["Conv1D"]),
    "grouped_causal_conv1d_dilated": (
        (9, 3), [L.Conv1D(6, 3, padding="causal", dilation_rate=2, groups=3)], "default",
        ["Conv1D"]),
    "left_padded_depthwise1d": (
        (5, 2), [L.ZeroPadding1D((1, 0)), L.DepthwiseConv1D(2)], "default",
        ["ZeroPadding1D", "DepthwiseConv1D"]),
    "left_padded_depthwise1d_strided": (
        (9, 2), [L.ZeroPadding1D((2, 0)), L.DepthwiseConv1D(3, strides=2,
                                                            depth_multiplier=2)],
        "default", ["ZeroPadding1D", "DepthwiseConv1D"]),
    "left_padded_separable1d": (
        (7, 3), [L.ZeroPadding1D((2, 0)), L.SeparableConv1D(4, 3)], "default",
        ["ZeroPadding1D", "SeparableConv1D"]),
    "left_padded_depthwise1d_no_passes": (
        (5, 2), [L.ZeroPadding1D((1, 0)), L.DepthwiseConv1D(2)], "none",
        ["ZeroPadding1D", "DepthwiseConv1D"]),
}


@pytest.mark.parametrize("case", sorted(KERAS_CASES))
def test_keras_conv_converts_runs_and_reloads(case, tmp_path):
    shape, layers, passes, types = KERAS_CASES[case]
    x = keras.Input(shape, name="x")
    y = x
    for layer in layers:
        y = layer(y)
    src = randomize(keras.Model(x, y, name=case), seed=1)
    xs = _xs(shape)
    want = runner_for(src)(xs)
    rebuilt = ir_bridge.emit(ir_bridge.optimize(ir_bridge.load(src), passes), "keras")
    assert _types(rebuilt) == types
    _assert_close(runner_for(rebuilt)(xs), want)
    _check_saved(rebuilt, tmp_path / f"{case}.keras", xs, want)


# ---------------------------------------------------------------- IR graphs (ONNX-like)


def _conv_graph(n, channels, out, group, kernel, strides, dilations, *, pads=None,
                auto_pad="NOTSET", spatial=9, pointwise=None, activation=None, seed=0):
    """x -> Conv (NHWC) [-> 1x1 Conv of the same origin: a separable convolution]."""
    rng = np.random.default_rng(seed)

    def w(*s):
        return (0.5 * rng.standard_normal(s)).astype(np.float32)

    g = Graph("conv")
    x = g.add_input("x", (None, *([spatial] * n), channels))
    attrs = {"layout": "NHWC", "group": group, "strides": list(strides),
             "dilations": list(dilations), "auto_pad": auto_pad}
    if pads is not None:
        attrs["pads"] = list(pads)
    if activation:
        attrs.update(activation=activation, activation_attrs={})
    params = {"W": w(out, channels // group, *([kernel] * n))}
    if pointwise is None:
        params["B"] = w(out)
    y = g.add_node("Conv", [x], attrs=attrs, params=params, name="conv", origin="conv")
    if pointwise is not None:
        y = g.add_node("Conv", [y], attrs={"layout": "NHWC", "group": 1},
                       params={"W": w(pointwise, out, *([1] * n)), "B": w(pointwise)},
                       name="pointwise", origin="conv")
    g.set_outputs([y])
    g.infer_shapes()
    g.verify()
    return g


#: name -> (graph builder, Keras layer types of the rebuilt model)
IR_CASES = {
    # TensorFlow's depthwise kernel needs equal strides: a grouped Conv2D instead.
    "depthwise2d_unequal_strides": (
        lambda: _conv_graph(2, 4, 8, 4, 3, [1, 2], [1, 1]), ["Conv2D"]),
    "depthwise2d_unequal_strides_same": (
        lambda: _conv_graph(2, 4, 4, 4, 3, [2, 3], [1, 1], auto_pad="SAME_UPPER"),
        ["Conv2D"]),
    "separable2d_unequal_strides": (
        lambda: _conv_graph(2, 3, 3, 3, 3, [1, 2], [1, 1], pointwise=5),
        ["Conv2D", "Conv2D"]),
    # 'causal' is Conv1D's only: ZeroPadding1D + 'valid' for the depthwise layers.
    "depthwise1d_causal": (
        lambda: _conv_graph(1, 4, 8, 4, 3, [1], [2], pads=[4, 0]),
        ["ZeroPadding1D", "DepthwiseConv1D"]),
    "separable1d_causal_strided": (
        lambda: _conv_graph(1, 4, 4, 4, 3, [2], [1], pads=[2, 0], pointwise=3),
        ["ZeroPadding1D", "SeparableConv1D"]),
    "conv1d_causal": (
        lambda: _conv_graph(1, 4, 3, 1, 3, [1], [2], pads=[4, 0]), ["Conv1D"]),
    # Strides > 1 with dilations > 1: stride 1, then every stride-th output.
    "conv1d_strided_dilated_causal": (
        lambda: _conv_graph(1, 4, 3, 1, 3, [2], [2], pads=[4, 0]),
        ["Conv1D", "MaxPooling1D"]),
    "conv2d_strided_dilated_valid": (
        lambda: _conv_graph(2, 3, 4, 1, 3, [2, 2], [2, 2], spatial=11),
        ["Conv2D", "MaxPooling2D"]),
    "conv2d_strides_on_one_axis_dilations_on_the_other": (
        lambda: _conv_graph(2, 3, 4, 1, 2, [1, 3], [2, 1], pads=[1, 0, 2, 1]),
        ["ZeroPadding2D", "Conv2D", "MaxPooling2D"]),
    "conv2d_strided_dilated_same_fused_relu": (
        lambda: _conv_graph(2, 3, 4, 1, 3, [3, 2], [2, 2], auto_pad="SAME_UPPER",
                            activation="Relu"),
        ["ZeroPadding2D", "Conv2D", "MaxPooling2D"]),
    "conv2d_strided_dilated_same_lower": (
        lambda: _conv_graph(2, 3, 4, 1, 2, [2, 2], [3, 3], auto_pad="SAME_LOWER"),
        ["ZeroPadding2D", "Conv2D", "MaxPooling2D"]),
    "grouped_conv2d_strided_dilated": (
        lambda: _conv_graph(2, 4, 6, 2, 3, [2, 2], [2, 2]),
        ["Conv2D", "MaxPooling2D"]),
    "depthwise2d_strided_dilated": (
        lambda: _conv_graph(2, 4, 8, 4, 3, [2, 2], [2, 2], pads=[2, 2, 2, 2]),
        ["ZeroPadding2D", "DepthwiseConv2D", "MaxPooling2D"]),
    "depthwise2d_unequal_strides_dilated": (
        lambda: _conv_graph(2, 4, 4, 4, 3, [1, 2], [2, 2]),
        ["DepthwiseConv2D", "MaxPooling2D"]),
    "separable2d_strided_dilated": (
        lambda: _conv_graph(2, 3, 6, 3, 3, [2, 2], [2, 2], pointwise=4, spatial=10),
        ["SeparableConv2D", "MaxPooling2D"]),
    "depthwise1d_strided_dilated_causal": (
        lambda: _conv_graph(1, 4, 4, 4, 2, [3], [2], pads=[2, 0]),
        ["ZeroPadding1D", "DepthwiseConv1D", "MaxPooling1D"]),
    "conv3d_strided_dilated": (
        lambda: _conv_graph(3, 2, 3, 1, 2, [2, 1, 2], [2, 2, 1], spatial=6),
        ["Conv3D", "MaxPooling3D"]),
    "grouped_conv3d_depthwise_strided_dilated": (
        lambda: _conv_graph(3, 2, 4, 2, 2, [2, 2, 2], [2, 2, 2], spatial=7),
        ["Conv3D", "MaxPooling3D"]),
}


@pytest.mark.parametrize("case", sorted(IR_CASES))
def test_ir_conv_keras_cannot_spell_directly_still_converts(case, tmp_path):
    build, types = IR_CASES[case]
    graph = build()
    xs = _xs(graph.inputs[0].type.shape[1:], seed=2)
    want = runner_for(graph)(xs)
    model = ir_bridge.emit(graph, "keras")
    assert _types(model) == types
    _assert_close(runner_for(model)(xs), want)
    _check_saved(model, tmp_path / f"{case}.keras", xs, want)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_strided_dilated_same_conv_over_unknown_dims_is_refused_by_name(n):
    """'same' pads of a strided convolution depend on the input length: with unknown
    spatial dims and dilations > 1 (run at stride 1 in Keras) they cannot be written."""
    graph = _conv_graph(n, 2, 2, 1, 3, [2] * n, [2] * n, auto_pad="SAME_UPPER",
                        spatial=None)
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.emit(graph, "keras")
    assert err.value.layers == [("conv", "Conv")]
    assert "dilations" in str(err.value) and "conv (Conv)" in str(err.value)


def test_strided_dilated_same_conv_converts_when_the_dims_are_known():
    graph = _conv_graph(2, 2, 2, 1, 3, [2, 2], [2, 2], auto_pad="SAME_UPPER", spatial=8)
    xs = _xs((8, 8, 2))
    _assert_close(runner_for(ir_bridge.emit(graph, "keras"))(xs), runner_for(graph)(xs))


# ------------------------------------------- 3-D 'same' where TensorFlow shifts (found with BUG-4)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "Conv"])
@pytest.mark.parametrize("auto_pad", ["NOTSET", "SAME_UPPER"])
def test_3d_same_pads_with_a_window_smaller_than_its_stride_are_written_explicitly(op,
                                                                                  auto_pad):
    """Pads equal to 'same' pads, on an axis whose window (1) is smaller than its stride
    (5) with 5 - 1 = 4 left over: TensorFlow's 3-D 'same' kernels would start that axis's
    first window at index 2, so the backend crops the 4 elements no window reads first."""
    g = Graph("pool3d")
    x = g.add_input("x", (None, 5, 6, 9, 2))
    kernel, strides = [1, 3, 2], [5, 2, 4]
    attrs = {"layout": "NHWC", "strides": strides, "auto_pad": auto_pad}
    if auto_pad == "NOTSET":
        attrs["pads"] = [0, 0, 0, 0, 1, 1]  # = same_pads on every axis
    params = {}
    if op == "Conv":
        params["W"] = np.random.default_rng(3).standard_normal((3, 2, *kernel)).astype("float32")
    else:
        attrs["kernel_shape"] = kernel
    y = g.add_node(op, [x], attrs=attrs, params=params, name="layer")
    g.set_outputs([y])
    g.infer_shapes()
    xs = _xs((5, 6, 9, 2), seed=4)
    want = runner_for(g)(xs)
    model = ir_bridge.emit(g, "keras")
    assert _types(model)[0] == "Cropping3D"
    _assert_close(runner_for(model)(xs), want)


def test_3d_same_with_a_window_smaller_than_its_stride_over_unknown_sizes_is_refused():
    g = Graph("pool3d")
    x = g.add_input("x", (None, None, 4, 4, 1))
    y = g.add_node("MaxPool", [x], attrs={"layout": "NHWC", "kernel_shape": [1, 2, 2],
                                          "strides": [3, 2, 2], "auto_pad": "SAME_UPPER"},
                   name="pool")
    g.set_outputs([y])
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.emit(g, "keras")
    assert err.value.layers == [("pool", "MaxPool")]
    assert "unknown size" in str(err.value)


# ---------------------------------------------------------------- deep graphs (BUG-11)


def _chain(n):
    g = Graph("chain")
    cur = g.add_input("x", (None, 4))
    for i in range(n):
        cur = g.add_node("Relu" if i % 2 else "Neg", [cur])
    g.set_outputs([cur])
    g.infer_shapes()
    return g


def _chain_answer(x, n):
    for i in range(n):
        x = np.maximum(x, 0) if i % 2 else -x
    return x


DEEP = 1100  # past Python's default recursion limit (1000), which Keras needs per layer


def test_a_chain_deeper_than_the_recursion_limit_builds_saves_and_loads(tmp_path,
                                                                        monkeypatch):
    limit = sys.getrecursionlimit()
    path = tmp_path / "deep.keras"
    model = ir_bridge.emit(_chain(DEEP), "keras", path)
    assert sys.getrecursionlimit() == limit  # raised for the build and the save only
    assert len(model.layers) == DEEP + 1
    x = np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4)
    want = [_chain_answer(x, DEEP)]
    _assert_close(runner_for(model)([x]), want)
    _assert_close(keras_backend.runner(path)([x]), want)  # the backend's load raises it too
    assert sys.getrecursionlimit() == limit
    sys.setrecursionlimit(limit + 2 * DEEP)  # what the docstring asks of a direct load
    try:
        loaded = keras.models.load_model(path, safe_mode=True)
    finally:
        sys.setrecursionlimit(limit)
    _assert_close(runner_for(loaded)([x]), want)
    monkeypatch.setattr(keras_backend, "MAX_RECURSION", limit)  # no room: a typed refusal
    with pytest.raises(InvalidModelError, match="too deep.*MAX_RECURSION"):
        keras_backend.load(path)
    assert sys.getrecursionlimit() == limit


def test_a_chain_deeper_than_the_ceiling_is_refused_with_a_typed_error(monkeypatch, tmp_path):
    limit = sys.getrecursionlimit()
    monkeypatch.setattr(keras_backend, "MAX_RECURSION", limit)  # no room to raise it
    path = tmp_path / "deep.keras"
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.emit(_chain(DEEP), "keras", path)
    message = str(err.value)
    assert f"{DEEP + 1} nodes deep" in message and "MAX_RECURSION" in message
    assert "ONNX" in message
    assert not path.exists()
    assert sys.getrecursionlimit() == limit


def test_recursion_room_restores_the_limit_and_respects_the_ceiling(monkeypatch):
    limit = sys.getrecursionlimit()
    monkeypatch.setattr(keras_backend, "MAX_RECURSION", limit + 50)
    with keras_backend._recursion_room(10):
        assert sys.getrecursionlimit() == limit + 10
    with keras_backend._recursion_room(10_000):
        assert sys.getrecursionlimit() == limit + 50
    with pytest.raises(ValueError):
        with keras_backend._recursion_room(10):
            raise ValueError("the limit comes back on errors too")
    assert sys.getrecursionlimit() == limit
    monkeypatch.setattr(keras_backend, "MAX_RECURSION", limit - 100)
    with keras_backend._recursion_room(10):
        assert sys.getrecursionlimit() == limit  # never lowered
