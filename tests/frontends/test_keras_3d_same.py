"""BUG-4: TensorFlow's 3-D conv/pool kernels with padding='same' shift a window smaller than
its stride (the leading pad ``trunc(total / 2)`` may be negative); the Keras frontend crops
the input so that the IR, and every artifact made from it, reads the same windows.

Each model is checked against Keras on the same inputs: the IR as loaded and as optimized,
and the ONNX, MDF and Keras artifacts run in their own runtimes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
from keras import layers as L  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.errors import UnsupportedLayerError  # noqa: E402
from ir_bridge.parity import runner_for  # noqa: E402

ATOL = 1e-5

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the shifted windows are TensorFlow's")


def tf_shift(n: int, k: int, s: int) -> int:
    """Where TensorFlow's 3-D 'same' kernels start the first window along one axis (the
    rule ``tests/fuzz`` checks against TensorFlow window by window)."""
    total = (-(-n // s) - 1) * s + k - n
    return -int(total / 2) if total < 0 else 0


#: (input shape without batch, channels last; window; strides)
COMBOS = {
    "repro_3x3x3_w1_s3": ((3, 3, 3, 1), (1, 1, 1), (3, 3, 3)),
    "depth_shift2_and_end_pads": ((5, 6, 9, 2), (1, 3, 2), (5, 2, 4)),
    "two_axes_shifted": ((8, 8, 8, 2), (1, 1, 1), (4, 5, 7)),
    "window2_stride5": ((14, 3, 3, 1), (2, 1, 1), (5, 2, 2)),
    "last_axis_shifted_first_padded": ((7, 5, 13, 3), (2, 1, 1), (6, 4, 5)),
    "no_shift_total_minus_1": ((10, 4, 6, 1), (2, 1, 3), (7, 3, 4)),
}


def shifts(combo):
    shape, k, s = combo
    return [tf_shift(n, kk, ss) for n, kk, ss in zip(shape[:3], k, s)]


def test_the_combos_cover_shifts_of_1_and_2_and_none():
    found = {name: shifts(c) for name, c in COMBOS.items()}
    assert found["repro_3x3x3_w1_s3"] == [1, 1, 1]
    assert found["depth_shift2_and_end_pads"] == [2, 0, 0]
    assert found["two_axes_shifted"] == [1, 1, 0]
    assert found["window2_stride5"] == [1, 0, 0]
    assert found["last_axis_shifted_first_padded"] == [0, 0, 1]
    assert found["no_shift_total_minus_1"] == [0, 0, 0]


def build(kind, shape, k, s, data_format="channels_last", groups=1):
    if data_format == "channels_first":
        shape = (shape[-1], *shape[:-1])
    x = keras.Input(shape, name="x")
    if kind == "Conv3D":
        layer = L.Conv3D(4 * groups, k, strides=s, padding="same", data_format=data_format,
                         groups=groups, name="layer")
    else:
        layer = getattr(L, kind)(k, strides=s, padding="same", data_format=data_format,
                                 name="layer")
    model = keras.Model(x, layer(x), name="m")
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign((0.5 * rng.standard_normal(tuple(v.shape))).astype("float32"))
    xs = [np.random.default_rng(1).standard_normal((3, *shape)).astype("float32")]
    return model, xs


def assert_everything_matches_keras(model, xs, targets=("onnx", "mdf", "keras")):
    want = np.asarray(model(xs[0], training=False))
    graph = ir_bridge.load(model)
    optimized = ir_bridge.optimize(graph, verify=True)
    results = {"ir": ir_bridge.run(graph, xs)[0], "ir-default": ir_bridge.run(optimized, xs)[0]}
    for to in targets:
        results[to] = runner_for(ir_bridge.emit(optimized, to))(xs)[0]
    for stage, got in results.items():
        assert got.shape == want.shape, (stage, got.shape, want.shape)
        err = float(np.max(np.abs(got.astype(np.float64) - want)))
        assert err <= ATOL, f"{stage}: max abs error {err:.3g}"
    return graph


@pytest.mark.parametrize("combo", list(COMBOS))
@pytest.mark.parametrize("kind", ["Conv3D", "MaxPooling3D", "AveragePooling3D"])
def test_3d_same_matches_keras_everywhere(kind, combo):
    model, xs = build(kind, *COMBOS[combo])
    graph = assert_everything_matches_keras(model, xs)
    crops = [n for n in graph if n.op == "Slice"]
    if any(shifts(COMBOS[combo])):
        # One crop before the op, recorded as part of the layer.
        assert [n.origin for n in crops] == ["layer"]
        assert graph.users(crops[0])[0].op in ("Conv", "MaxPool", "AveragePool")
    else:
        assert crops == []


@pytest.mark.parametrize("combo", ["depth_shift2_and_end_pads", "two_axes_shifted"])
@pytest.mark.parametrize("kind", ["MaxPooling3D", "AveragePooling3D"])
def test_channels_first_pooling_shifts_too(kind, combo):
    # Keras pools channels_first through TensorFlow's channels_last kernels (transposing).
    model, xs = build(kind, *COMBOS[combo], data_format="channels_first")
    graph = assert_everything_matches_keras(model, xs)
    assert [n.op for n in graph].count("Slice") == 1


@pytest.mark.parametrize("data_format,groups", [("channels_first", 1), ("channels_last", 2)])
def test_conv3d_through_xla_does_not_shift(data_format, groups):
    # Keras runs channels_first and grouped Conv3D through XLA, whose pads are clamped.
    model, xs = build("Conv3D", *COMBOS["depth_shift2_and_end_pads"], data_format=data_format,
                      groups=groups)
    targets = ("onnx", "mdf") if data_format == "channels_first" else ("onnx", "mdf", "keras")
    graph = assert_everything_matches_keras(model, xs, targets)
    assert "Slice" not in [n.op for n in graph]


def test_conv3d_channels_first_to_keras():
    # The source runs through XLA (clamped pads, no crop in the IR); the rebuilt model is a
    # channels_last Conv3D, which runs TensorFlow's shifting kernel.
    model, xs = build("Conv3D", *COMBOS["depth_shift2_and_end_pads"],
                      data_format="channels_first")
    assert_everything_matches_keras(model, xs, ("keras",))


@pytest.mark.parametrize("kind", ["Conv2D", "MaxPooling2D", "AveragePooling2D"])
def test_2d_kernels_clamp_and_are_not_cropped(kind):
    x = keras.Input((3, 5, 2), name="x")
    layer = (L.Conv2D(3, 1, strides=3, padding="same", name="layer") if kind == "Conv2D"
             else getattr(L, kind)(1, strides=3, padding="same", name="layer"))
    model = keras.Model(x, layer(x))
    xs = [np.random.default_rng(1).standard_normal((3, 3, 5, 2)).astype("float32")]
    graph = assert_everything_matches_keras(model, xs)
    assert "Slice" not in [n.op for n in graph]


def test_unknown_size_where_a_shift_depends_on_it_is_refused():
    x = keras.Input((None, 4, 4, 1), name="x")
    model = keras.Model(x, L.MaxPooling3D((1, 2, 2), strides=3, padding="same",
                                          name="pool")(x))
    with pytest.raises(UnsupportedLayerError, match="pool.*smaller than its stride.*axis 0 "
                                                    "of unknown size"):
        ir_bridge.load(model)


def test_unknown_size_where_no_shift_can_happen_converts():
    # Window 3 >= stride 2 along the unknown axis: the pad is never negative there; the
    # known axes (window 1, stride 2) are cropped where TensorFlow shifts.
    x = keras.Input((None, 7, 7, 1), name="x")
    model = keras.Model(x, L.MaxPooling3D((3, 1, 1), strides=(2, 4, 4), padding="same",
                                          name="pool")(x))
    assert tf_shift(7, 1, 4) == 1
    xs = [np.random.default_rng(2).standard_normal((2, 9, 7, 7, 1)).astype("float32")]
    graph = assert_everything_matches_keras(model, xs)
    assert [n.op for n in graph] == ["Input", "Slice", "MaxPool"]
