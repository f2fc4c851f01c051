"""The conversion matrix: every supported direction between Keras, ONNX and MDF, each step
proven numerically.

Models: the five MNIST zoo architectures, a residual/concat functional CNN and a two-input
two-output model, all with random weights (biases and BatchNorm statistics included).
Sources, one file each: the Keras model saved as ``.keras``; the ONNX file Keras itself
exports (``keras.Model.export(format="onnx")``, an exporter independent of ours); the MDF
file ir_bridge writes from the Keras model.  Cells: Keras -> {MDF, ONNX, Keras},
ONNX -> {MDF, ONNX, Keras}, MDF -> {ONNX, Keras}.  Each artifact runs in its own runtime
(Keras, onnxruntime, the ir_bridge MDF engine, picked by ``ir_bridge.parity.runner_for``
from the file suffix) and must match the source, run in its own runtime, within 1e-5 max
abs on a batch of 4.

Also here: ``ir-bridge convert --validate`` exits 0 on a good conversion and 1 on a
corrupted artifact, and ``check_parity`` catches a corrupted initializer in a written file.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from keras import layers as L  # noqa: E402

from keras_helpers import keras_inputs  # noqa: E402
from keras_helpers import randomize as _randomize  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.cli import main as cli_main  # noqa: E402
from ir_bridge.parity import runner_for  # noqa: E402
from ir_bridge.zoo import mnist  # noqa: E402

ATOL = 1e-5


def randomize(model, seed=0):
    """Weights ~ 0.3 N(0, 1): the zoo's logits stay small enough for an absolute 1e-5."""
    return _randomize(model, seed, scale=0.3)
BATCH = 4
SUFFIX = {"keras": ".keras", "onnx": ".onnx", "mdf": ".json"}
CELLS = [("keras", "mdf"), ("keras", "onnx"), ("keras", "keras"),
         ("onnx", "mdf"), ("onnx", "onnx"), ("onnx", "keras"),
         ("mdf", "onnx"), ("mdf", "keras")]


def _fresh_keras_names():
    """Keras numbers auto-named layers and models process-wide; reset the counters after
    this module so tests elsewhere that rely on default names do not see our models."""
    yield
    keras.backend.clear_session()


def residual_concat(seed=0):
    """Conv -> Conv -> BN, added back (residual), ReLU, depthwise branch concatenated,
    pooled, dense softmax."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((12, 12, 3), name="image")
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(x)
    b = L.Conv2D(8, 3, padding="same", name="conv_b")(a)
    b = L.BatchNormalization(name="bn")(b)
    r = L.ReLU(name="relu")(L.Add(name="residual")([a, b]))
    d = L.DepthwiseConv2D(3, padding="same", name="depthwise")(r)
    c = L.Concatenate(name="concat")([r, d])
    p = L.MaxPooling2D(2, name="pool")(c)
    g = L.GlobalAveragePooling2D(name="gap")(p)
    return randomize(keras.Model(x, L.Dense(10, activation="softmax", name="out")(g),
                                 name="residual_concat"), seed)


def two_in_two_out(seed=0):
    """A vector and an image input; a class softmax and a scalar score output."""
    keras.utils.set_random_seed(seed)
    a = keras.Input((8,), name="vector")
    b = keras.Input((6, 6, 2), name="patch")
    ha = L.Dense(16, activation="tanh", name="dense_a")(a)
    hb = L.Conv2D(4, 3, activation="relu", name="conv")(b)
    hb = L.Dense(16, name="dense_b")(L.Flatten(name="flatten")(hb))
    m = L.Multiply(name="gate")([ha, hb])
    s = L.Add(name="sum")([ha, hb])
    out1 = L.Dense(3, activation="softmax", name="label")(m)
    out2 = L.Dense(1, name="score")(L.Concatenate(name="concat")([s, ha]))
    return randomize(keras.Model([a, b], [out1, out2], name="two_in_two_out"), seed)


BUILDERS = {**{name: (lambda n=name: randomize(mnist.build(n, seed=0))) for name in mnist.MODELS},
            "residual_concat": residual_concat, "two_in_two_out": two_in_two_out}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Per model: the Keras model and its three source files."""
    root = tmp_path_factory.mktemp("matrix")
    out = {}
    for name, build in BUILDERS.items():
        model = build()
        xs = keras_inputs(model, seed=0)
        model(xs if len(xs) > 1 else xs[0])  # Keras exports only models called once
        files = {"keras": root / f"{name}.keras"}
        model.save(files["keras"])
        files["onnx"] = root / f"{name}.onnx"
        model.export(str(files["onnx"]), format="onnx", verbose=False)
        files["mdf"] = root / f"{name}.json"
        ir_bridge.convert(model, "mdf", files["mdf"])
        out[name] = (model, files)
    return out


@pytest.mark.parametrize("src,dst", CELLS, ids=[f"{s}-to-{d}" for s, d in CELLS])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_conversion_matches_source(sources, tmp_path, name, src, dst):
    model, files = sources[name]
    source = files[src]
    artifact = tmp_path / f"{name}_from_{src}{SUFFIX[dst]}"
    ir_bridge.convert(source, dst, artifact)
    assert artifact.exists()
    xs = keras_inputs(model, seed=1)
    want = runner_for(source)(xs)
    got = runner_for(artifact)(xs)
    assert len(got) == len(want) == len(model.outputs)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.shape[0] == BATCH
        err = float(np.max(np.abs(np.asarray(g, np.float64) - w)))
        assert err <= ATOL, f"{src} -> {dst}: max abs error {err:.3g}"
    report = ir_bridge.check_parity(source, artifact, xs, atol=ATOL, rtol=0)
    assert report.ok and report.max_abs <= ATOL, str(report)


def test_sources_agree_with_keras(sources):
    """The ONNX export and the MDF file compute what the Keras model computes (so every
    cell above is also measured against Keras)."""
    for name, (model, files) in sources.items():
        xs = keras_inputs(model, seed=1)
        want = runner_for(files["keras"])(xs)
        for kind in ("onnx", "mdf"):
            if kind not in files:
                continue
            for g, w in zip(runner_for(files[kind])(xs), want):
                assert float(np.max(np.abs(g - w))) <= ATOL, (name, kind)


# ---------------------------------------------------------------- --validate


def test_cli_validate_exits_0_on_a_good_conversion(sources, tmp_path, capsys):
    _, files = sources["cnn_tutorial"]
    out = tmp_path / "good.onnx"
    code = cli_main(["convert", str(files["keras"]), "--to", "onnx", "-o", str(out),
                     "--validate"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "OK" in text and "max abs" in text and "argmax agreement" in text


def test_cli_validate_exits_1_on_a_corrupted_artifact(sources, tmp_path, monkeypatch, capsys):
    from ir_bridge.backends import onnx as onnx_backend

    real = onnx_backend.to_onnx

    def corrupted(graph, **kw):
        model = real(graph, **kw)
        init = next(i for i in model.graph.initializer
                    if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2)
        arr = onnx.numpy_helper.to_array(init).copy()
        arr.flat[0] += 1.0
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
        return model

    monkeypatch.setattr(onnx_backend, "to_onnx", corrupted)
    _, files = sources["mlp_128_128"]
    out = tmp_path / "bad.onnx"
    code = cli_main(["convert", str(files["keras"]), "--to", "onnx", "-o", str(out),
                     "--validate"])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED" in captured.out
    assert "differs" in captured.err


def test_check_parity_catches_a_corrupted_initializer_in_the_file(sources, tmp_path):
    model, files = sources["cnn_dropout"]
    path = tmp_path / "cnn.onnx"
    ir_bridge.convert(files["keras"], "onnx", path)
    xs = keras_inputs(model, seed=1)
    assert ir_bridge.check_parity(files["keras"], path, xs).ok
    proto = onnx.load(str(path))
    init = max(proto.graph.initializer, key=lambda i: int(np.prod(i.dims)))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(path))
    report = ir_bridge.check_parity(files["keras"], path, xs)
    assert not report.ok and report.max_abs > ATOL
    with pytest.raises(ir_bridge.ParityError):
        report.raise_if_failed()


def test_convert_validate_api_returns_a_report(sources, tmp_path):
    _, files = sources["two_in_two_out"]
    artifact, report = ir_bridge.convert(files["onnx"], "keras", tmp_path / "m.keras",
                                         validate=True)
    assert report.ok and len(report.outputs) == 2
    assert isinstance(artifact, keras.Model)
