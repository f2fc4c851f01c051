"""The MDF engine: compile once, run many; fused kernels; the CLI round trip from Keras."""

from __future__ import annotations

import numpy as np
import pytest

import ir_bridge
from ir_bridge.cli import main as cli_main
from ir_bridge.engine.mdf_ops import (
    dot_shape,
    expression_shape,
    free_names,
    index_shape,
    matmul_shape,
    reshape_shape,
)
from ir_bridge.engine.mdf_plan import MdfPlan, compile_mdf, run_mdf
from ir_bridge.engine.plan import Plan
from ir_bridge.ir import Graph
from ir_bridge.ops import kernel_for
from ir_bridge.ops.nn import conv_kernel, fused_kernel

F32 = "float32"


def cnn_graph(seed=0) -> Graph:
    """A small NHWC CNN like the MNIST ones: conv-relu, pool, conv-relu, flatten-dense."""
    rng = np.random.default_rng(seed)
    g = Graph("small_cnn")
    x = g.add_input("image", (None, 10, 10, 2))
    relu = {"activation": "Relu", "activation_attrs": {}}
    c1 = g.add_node("Conv", [x], name="conv_1", attrs={"layout": "NHWC", **relu},
                    params={"W": rng.standard_normal((6, 2, 3, 3)).astype(F32) * 0.3,
                            "B": rng.standard_normal(6).astype(F32)})
    p1 = g.add_node("MaxPool", [c1], name="pool_1", attrs={"layout": "NHWC",
                                                            "kernel_shape": [2, 2],
                                                            "strides": [2, 2]})
    c2 = g.add_node("Conv", [p1], name="conv_2", attrs={"layout": "NHWC", "pads": [1, 1, 1, 1],
                                                         **relu},
                    params={"W": rng.standard_normal((5, 6, 3, 3)).astype(F32) * 0.3})
    d = g.add_node("Gemm", [c2], name="dense", attrs={"flatten": 1, "activation": "Softmax",
                                                      "activation_attrs": {"axis": -1}},
                   params={"W": rng.standard_normal((80, 4)).astype(F32) * 0.3,
                           "B": rng.standard_normal(4).astype(F32)})
    g.set_outputs([d])
    g.infer_shapes()
    return g


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    g = cnn_graph()
    path = tmp_path_factory.mktemp("engine") / "cnn.json"
    ir_bridge.emit(g, "mdf", path)
    return g, path


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW", None])
def test_every_plan_variant_computes_the_same(cnn_file, optimize, layout):
    g, path = cnn_file
    plan = compile_mdf(path, optimize=optimize, layout=layout)
    assert isinstance(plan, MdfPlan)
    expected_plan = Plan(g)
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 10, 10, 2)).astype(F32)
        (got,) = plan.run([x])
        (want,) = expected_plan.run([x])
        assert got.shape == (batch, 4) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_default_plan_runs_channels_last_without_transposes(cnn_file):
    _, path = cnn_file
    plan = compile_mdf(path)
    assert [s.op for s in plan.steps] == ["Conv+MaxPool", "Conv", "Gemm"]
    assert all(n.attrs.get("layout") in (None, "NHWC") for n in plan.graph)
    nchw = compile_mdf(path, layout="NCHW")
    assert [s.op for s in nchw.steps] == ["Transpose", "Conv+MaxPool", "Conv", "Gemm"]
    assert [s.op for s in Plan(plan.graph).steps] == ["Conv", "MaxPool", "Conv", "Gemm"]


def test_fused_activations_run_in_place_with_the_same_numbers(cnn_file):
    _, path = cnn_file
    plan = compile_mdf(path)
    graph = plan.graph
    fast = [n.name for n in graph if fused_kernel(n) is not None]
    assert fast == ["conv_1", "pool_1", "conv_2", "dense"]
    x = np.random.default_rng(0).standard_normal((16, 10, 10, 2)).astype(F32)
    generic = Plan(graph)  # kernel_for everywhere
    np.testing.assert_allclose(plan.run([x])[0], generic.run([x])[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("attrs", [{}, {"strides": [2, 1], "pads": [1, 0, 2, 1]},
                                   {"dilations": [2, 2], "auto_pad": "SAME_UPPER"}])
def test_conv_epilogue_matches_kernel_for(layout, bias, attrs, monkeypatch):
    # A tiny chunk size forces several chunks, including a short last one.
    monkeypatch.setattr("ir_bridge.ops.nn.CHUNK_BYTES", 4096)
    rng = np.random.default_rng(1)
    g = Graph()
    shape = (9, 7, 3) if layout == "NHWC" else (3, 9, 7)
    x = g.add_input("x", (None, *shape))
    params = {"W": rng.standard_normal((4, 3, 3, 2)).astype(F32)}
    if bias:
        params["B"] = rng.standard_normal(4).astype(F32)
    node = g.add_node("Conv", [x], attrs={"layout": layout, "activation": "Relu",
                                          "activation_attrs": {}, **attrs}, params=params)
    xs = rng.standard_normal((11, *shape)).astype(F32)
    want = kernel_for(node)(xs)
    np.testing.assert_allclose(fused_kernel(node)(xs), want, rtol=1e-5, atol=1e-5)
    plain = conv_kernel(node)(xs)
    np.testing.assert_allclose(np.maximum(plain, 0), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("act", [None, "Relu", "Sigmoid"])
@pytest.mark.parametrize("pool_attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 1], "dilations": [1, 2]},
    {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]},  # padded: not fused
])
def test_conv_then_pool_in_one_pass(layout, act, pool_attrs, monkeypatch):
    from ir_bridge.ops.nn import can_pool

    monkeypatch.setattr("ir_bridge.ops.nn.CHUNK_BYTES", 8192)
    rng = np.random.default_rng(7)
    g = Graph()
    shape = (11, 12, 3) if layout == "NHWC" else (3, 11, 12)
    x = g.add_input("x", (None, *shape))
    conv = g.add_node("Conv", [x], attrs={"layout": layout, "pads": [1, 0, 1, 2],
                                          "activation": act, "activation_attrs": {}},
                      params={"W": rng.standard_normal((5, 3, 3, 3)).astype(F32),
                              "B": rng.standard_normal(5).astype(F32)})
    pool = g.add_node("MaxPool", [conv], attrs={"layout": layout, **pool_attrs})
    xs = rng.standard_normal((13, *shape)).astype(F32)
    want = kernel_for(pool)(kernel_for(conv)(xs))
    fused = fused_kernel(conv, _threads, pool=pool)
    if not can_pool(conv, pool) or act == "Sigmoid":
        assert fused is None
        return
    np.testing.assert_allclose(fused(xs), want, rtol=1e-5, atol=1e-5)
    assert fused(xs).shape == want.shape


def test_fast_kernels_cover_every_activation_and_leave_other_ops_alone(monkeypatch):
    monkeypatch.setattr("ir_bridge.ops.nn.CHUNK_BYTES", 4096)
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add_input("x", (None, 6))
    w = rng.standard_normal((6, 5)).astype(F32)
    xs = rng.standard_normal((700, 6)).astype(F32)
    cases = [("LeakyRelu", {"alpha": .1}), ("Relu", {"max_value": 0.5}), ("Sigmoid", {}),
             ("Softmax", {"axis": -1}), ("Relu", {}), (None, {})]
    for act, attrs in cases:
        node = g.add_node("Gemm", [x], params={"W": w, "B": rng.standard_normal(5).astype(F32)},
                          attrs={"activation": act, "activation_attrs": attrs})
        for parallel in (None, _threads):
            fn = fused_kernel(node, parallel)
            np.testing.assert_allclose(fn(xs), kernel_for(node)(xs), rtol=1e-6, atol=1e-6)
    assert fused_kernel(g.add_node("Relu", [x])) is None
    grouped = g.add_node("Conv", [g.add_node("Reshape", [x], attrs={"shape": [0, 2, 3, 1]})],
                         attrs={"layout": "NHWC", "group": 1},
                         params={"W": np.ones((2, 1, 1, 1), F32)})
    assert fused_kernel(grouped) is not None


def _threads(work, items):
    """A test runner: two real threads, as the engine's pool uses."""
    import threading

    shares = [items[0::2], items[1::2]]
    t = threading.Thread(target=work, args=(shares[1],))
    t.start()
    work(shares[0])
    t.join()


def test_threaded_plans_compute_what_single_threaded_ones_do(cnn_file):
    _, path = cnn_file
    x = np.random.default_rng(5).standard_normal((300, 10, 10, 2)).astype(F32)
    one = compile_mdf(path, threads=1).run([x])[0]
    two = compile_mdf(path, threads=2).run([x])[0]
    np.testing.assert_allclose(two, one, rtol=1e-6, atol=1e-7)


def test_run_mdf_and_api_run_accept_paths_and_models(cnn_file):
    g, path = cnn_file
    x = np.random.default_rng(3).standard_normal((2, 10, 10, 2)).astype(F32)
    (want,) = Plan(g).run([x])
    np.testing.assert_allclose(run_mdf(path, [x])[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ir_bridge.run(str(path), x)[0], want, rtol=1e-5, atol=1e-6)
    model = ir_bridge.emit(g, "mdf")
    np.testing.assert_allclose(compile_mdf(model).run({"image": x})[0], want, rtol=1e-5,
                               atol=1e-6)


def test_inputs_are_checked(cnn_file):
    _, path = cnn_file
    plan = compile_mdf(path)
    with pytest.raises(ir_bridge.ExecutionError, match="shape"):
        plan.run([np.zeros((2, 10, 10, 3), F32)])
    with pytest.raises(ir_bridge.ExecutionError, match="input"):
        plan.run([])


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("text,shapes,expected", [
    ("x @ w + b", {"x": (None, 3), "w": (3, 5), "b": (5,)}, (None, 5)),
    ("sum(x * (x > 0), axis=(1, 2), keepdims=True)", {"x": (None, 4, 5, 6)}, (None, 1, 1, 6)),
    ("mean(x, -1)", {"x": (None, 4)}, (None,)),
    ("transpose(x)[0]", {"x": (None, 2, 3)}, (2, None)),
    ("reshape(x, (-1, 12))", {"x": (None, 3, 4)}, (None, 12)),
    ("reshape(x, (2, 6))", {"x": (3, 4)}, (2, 6)),
    ("x[:, 1:3, None, ...] * 2.0 if 1 > 0 else 0.0", {"x": (None, 4)}, (None, 2, 1)),
    ("x[[0, 2, 1]]", {"x": (5, 2)}, (3, 2)),
    ("where(x > 1, x, [1.0, 2.0])", {"x": (None, 2)}, (None, 2)),
    ("dot(x, w)", {"x": (None, 3), "w": (3,)}, (None,)),
    ("np.pi * exp(-x) ** 2", {"x": (None, 7)}, (None, 7)),
])
def test_expression_shape(text, shapes, expected):
    assert expression_shape(text, shapes) == expected


@pytest.mark.parametrize("text,shapes", [
    ("x @ w", {"x": (None, 3), "w": (4, 5)}),
    ("x + y", {"x": (None, 3), "y": (4,)}),
    ("x[5]", {"x": (3, 2)}),
    ("x[[0], [1]]", {"x": (3, 2)}),
    ("reshape(x, (5, -1))", {"x": (3, 4)}),
    ("sum(x, axis=2)", {"x": (None, 2)}),
])
def test_expression_shape_mismatches(text, shapes):
    with pytest.raises(ValueError):
        expression_shape(text, shapes)


def test_shape_helpers_follow_numpy():
    rng = np.random.default_rng(0)
    for a, b in [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((5, 2, 3), (3, 4)),
                 ((1, 2, 3), (6, 3, 4))]:
        assert matmul_shape(a, b) == np.matmul(rng.random(a), rng.random(b)).shape
    for a, b in [((2, 3), (3,)), ((2, 3), (4, 3, 5)), ((3,), (3, 2)), ((), (2,))]:
        assert dot_shape(a, b) == np.dot(rng.random(a), rng.random(b)).shape
    x = rng.random((4, 5, 6))
    for idx in [(1,), (slice(None), 2), (Ellipsis, None), (slice(1, None, 2), [0, 3], 1)]:
        assert index_shape(x.shape, idx) == x[idx].shape
    assert reshape_shape((4, 6), (-1, 3)) == (8, 3)
    assert free_names("np.exp(a) + b * a - f(c)") == ["a", "b", "c"]


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def test_cli_convert_keras_file_to_mdf_then_run(tmp_path, keras, capsys):
    from ir_bridge.zoo import mnist as zoo

    keras.utils.set_random_seed(0)
    model = zoo.build("cnn_tutorial", seed=0)
    src = tmp_path / "model.keras"
    model.save(src)
    x = np.random.default_rng(0).random((5, 28, 28, 1)).astype(F32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "m.json"
    assert cli_main(["convert", str(src), "--to", "mdf", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli_main(["run", str(out), "--input", str(tmp_path / "x.npy"), "-o",
                     str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y, model(x).numpy(), rtol=0, atol=1e-5)
    # The artifact also checks out against the source through the parity API.
    report = ir_bridge.check_parity(model, str(out), [x])
    assert report.ok and report.max_abs < 1e-5


def test_cli_several_inputs_and_outputs_make_an_npz(tmp_path, keras):
    from keras import layers

    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b")
    s = layers.Add(name="sum")([a, b])
    h = layers.Dense(3, activation="relu", name="head")(s)
    m = layers.Multiply(name="product")([s, b])
    model = keras.Model([a, b], [h, m], name="two_heads")
    src = tmp_path / "two.keras"
    model.save(src)
    xa = np.random.default_rng(1).standard_normal((6, 4)).astype(F32)
    xb = np.random.default_rng(2).standard_normal((6, 4)).astype(F32)
    np.save(tmp_path / "a.npy", xa)
    np.save(tmp_path / "b.npy", xb)
    out = tmp_path / "two.yaml"
    assert cli_main(["convert", str(src), "--to", "mdf", "-o", str(out)]) == 0
    assert cli_main(["run", str(out), "--input", str(tmp_path / "a.npy"), "--input",
                     str(tmp_path / "b.npy"), "-o", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as ys:
        got = [ys[k] for k in sorted(ys.files)]
    for g, w in zip(got, model([xa, xb])):
        np.testing.assert_allclose(g, np.asarray(w), rtol=0, atol=1e-5)


def test_without_threadpoolctl_the_chunks_run_in_order(cnn_file, monkeypatch):
    import sys

    import ir_bridge.engine.mdf_plan as mdf_plan

    _, path = cnn_file
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    monkeypatch.setattr(mdf_plan, "_BLAS", None)
    monkeypatch.setattr(mdf_plan, "_POOLS", {})
    plan = compile_mdf(path, threads=2)
    assert plan._workers is None
    x = np.random.default_rng(8).standard_normal((5, 10, 10, 2)).astype(F32)
    np.testing.assert_allclose(plan.run([x])[0], Plan(plan.graph).run([x])[0], rtol=1e-5,
                               atol=1e-6)
