"""Which ONNX opsets the frontend reads (BUG-7), and the ops whose meaning changed inside the
supported range: the oldest and newest supported opsets load and match onnxruntime, one past
either end is refused with an error naming the file, the opset and the range.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.cli import main as cli_main  # noqa: E402
from ir_bridge.errors import InvalidModelError, UnsupportedLayerError  # noqa: E402
from ir_bridge.frontends import onnx as onnx_frontend  # noqa: E402
from test_onnx import assert_matches_onnxruntime  # noqa: E402

ATOL = 1e-5
F = TensorProto.FLOAT
MIN, MAX = onnx_frontend.MIN_OPSET, onnx_frontend.MAX_OPSET


def make(nodes, inputs, outputs, inits=(), opsets=(("", 17),), check=True):
    """A model importing ``opsets`` ((domain, version) pairs); inputs/outputs are
    (name, shape) pairs of float32 tensors."""
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, s) for n, s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    imports = [helper.make_opsetid(d, v) for d, v in opsets]
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = 8  # old enough for every opset here, new enough for onnxruntime
    if check:
        onnx.checker.check_model(m)
    return m


def dense_relu(opset: int, domain: str = "", check: bool = True):
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    return make([helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="dense"),
                 helper.make_node("Relu", ["h"], ["y"], name="relu")],
                [("x", ["N", 4])], [("y", ["N", 3])],
                [("W", w), ("B", np.linspace(-1, 1, 3).astype(np.float32))],
                opsets=((domain, opset),), check=check)


def x_of(shape, seed=1):
    return (2 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


# ---------------------------------------------------------------- the boundary


def test_the_range_is_the_one_documented():
    assert (MIN, MAX) == (7, 28)
    # The newest opset read is one the installed onnx defines (its checker knows it).
    assert onnx.defs.onnx_opset_version() >= MAX
    doc = " ".join(onnx_frontend.__doc__.split())  # the module docstring says the same
    assert f"opsets :data:`MIN_OPSET` ({MIN}) to :data:`MAX_OPSET` ({MAX}," in doc


@pytest.mark.parametrize("opset", [MIN, MAX])
def test_the_oldest_and_newest_opsets_load_and_match_onnxruntime(opset):
    m = dense_relu(opset)
    graph = assert_matches_onnxruntime(m, [x_of((5, 4))])
    assert [n.op for n in graph] == ["Input", "Gemm", "Relu"]


@pytest.mark.parametrize("opset", [MIN - 1, MAX + 1, 0, 9999])
def test_opsets_outside_the_range_are_refused_naming_file_opset_and_range(tmp_path, opset):
    path = tmp_path / f"opset{opset}.onnx"
    # (onnx's checker refuses opset 0 itself; the frontend refuses it before the checker)
    path.write_bytes(dense_relu(opset, check=False).SerializeToString())
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.load(path)
    text = str(err.value)
    assert str(path) in text
    assert f"ONNX opset {opset} " in text
    assert f"opsets {MIN} to {MAX}" in text
    assert "convert_version" in text  # says how to move the model into the range


def test_a_refused_opset_is_one_line_and_exit_2_on_the_cli(tmp_path, capsys):
    src = tmp_path / "future.onnx"
    src.write_bytes(dense_relu(MAX + 1).SerializeToString())
    out = tmp_path / "out.json"
    capsys.readouterr()
    assert cli_main(["convert", str(src), "--to", "mdf", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"ONNX opset {MAX + 1}" in err[0] and str(src) in err[0]
    assert not out.exists()


def test_the_ai_onnx_spelling_of_the_default_domain_is_checked_too():
    # "ai.onnx" and "" are the same domain: the range applies to both spellings.
    with pytest.raises(UnsupportedLayerError, match=f"ONNX opset {MAX + 1} "):
        ir_bridge.load(dense_relu(MAX + 1, domain="ai.onnx"))


def test_other_domains_may_be_imported_at_any_version_but_not_used():
    m = dense_relu(17)
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 99))
    m.opset_import.append(helper.make_opsetid("com.vendor", 12345))
    graph = ir_bridge.load(m)  # imported, unused: nothing to refuse
    assert [n.op for n in graph] == ["Input", "Gemm", "Relu"]
    used = make([helper.make_node("Normalizer", ["x"], ["y"], name="norm",
                                  domain="ai.onnx.ml", norm="MAX")],
                [("x", ["N", 4])], [("y", ["N", 4])],
                opsets=(("", 17), ("ai.onnx.ml", 1)))
    with pytest.raises(UnsupportedLayerError, match=r"norm \(ai.onnx.ml::Normalizer\)"):
        ir_bridge.load(used)


def test_two_default_domain_imports_that_disagree_are_malformed():
    m = dense_relu(13)
    m.opset_import.append(helper.make_opsetid("ai.onnx", 17))
    with pytest.raises(InvalidModelError, match=r"several opsets \(13, 17\)"):
        ir_bridge.load(m)


# ---------------------------------------------------------------- the oldest opset, op by op


def test_opset_7_semantics_of_many_ops_match_onnxruntime():
    """Attribute forms that later opsets turned into inputs, at the oldest opset read:
    Softmax's 2-D coercion, Clip/Pad/Slice/Split/Squeeze/Unsqueeze/ReduceMean attributes,
    Dropout's ratio attribute, Upsample's scales attribute, BatchNormalization with
    ``spatial``."""
    rng = np.random.default_rng(2)

    def r(*shape):
        return (0.5 * rng.standard_normal(shape)).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "W", "Bc"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], spatial=1,
                         epsilon=1e-3, name="bn"),
        helper.make_node("Relu", ["bn"], ["a"], name="relu"),
        helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool"),
        helper.make_node("Upsample", ["p"], ["u"], scales=[1.0, 1.0, 2.0, 2.0],
                         mode="nearest", name="up"),
        helper.make_node("Pad", ["u"], ["pd"], pads=[0, 0, 1, 0, 0, 0, 0, 1], value=0.25,
                         name="pad"),
        helper.make_node("Slice", ["pd"], ["sl"], starts=[1, 0], ends=[5, 4], axes=[2, 3],
                         name="slice"),
        helper.make_node("Clip", ["sl"], ["cl"], min=-0.5, max=1.5, name="clip"),
        helper.make_node("Split", ["cl"], ["s1", "s2"], axis=1, split=[1, 2], name="split"),
        helper.make_node("ReduceMean", ["s2"], ["rm"], axes=[1], keepdims=1, name="mean"),
        helper.make_node("Add", ["s1", "rm"], ["ad"], name="add"),
        helper.make_node("Dropout", ["ad"], ["dr"], ratio=0.3, name="drop"),
        helper.make_node("Squeeze", ["dr"], ["sq"], axes=[1], name="squeeze"),
        helper.make_node("Unsqueeze", ["sq"], ["us"], axes=[1], name="unsqueeze"),
        helper.make_node("Reshape", ["us", "shape"], ["rs"], name="reshape"),
        helper.make_node("Softmax", ["rs"], ["y"], axis=1, name="softmax"),  # 2-D coercion
    ]
    inits = [("W", r(3, 2, 3, 3)), ("Bc", r(3)), ("s", r(3)), ("b", r(3)), ("m", r(3)),
             ("v", np.abs(r(3)) + 0.5), ("shape", np.array([0, 4, 4], np.int64))]
    m = make(nodes, [("x", ["N", 2, 4, 4])], [("y", ["N", 4, 4])], inits,
             opsets=(("", MIN),))
    assert_matches_onnxruntime(m, [x_of((3, 2, 4, 4))])


def test_opset_7_batchnorm_per_position_statistics_are_refused():
    m = make([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                               spatial=0, name="bn")],
             [("x", ["N", 2, 3])], [("y", ["N", 2, 3])],
             [(k, np.ones((2, 3), np.float32)) for k in "sbmv"], opsets=(("", MIN),))
    with pytest.raises(UnsupportedLayerError, match=r"bn \(BatchNormalization\): spatial=0"):
        ir_bridge.load(m)


# ---------------------------------------------------------------- newer semantics


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_follows_fmod(fmod):
    """Mod on constants (folded while reading): fmod=1 truncates, so the result takes the
    sign of the dividend; fmod=0 floors (the sign of the divisor)."""
    a = np.array([-5, 5, -7, 7, 6], np.int64)
    b = np.array([3, -3, -2, 2, 4], np.int64)
    m = make([helper.make_node("Mod", ["a", "b"], ["r"], fmod=fmod, name="mod"),
              helper.make_node("Cast", ["r"], ["rf"], to=F, name="cast"),
              helper.make_node("Add", ["x", "rf"], ["y"], name="add")],
             [("x", ["N", 5])], [("y", ["N", 5])], [("a", a), ("b", b)])
    x = x_of((2, 5))
    assert_matches_onnxruntime(m, [x])
    want = np.fmod(a, b) if fmod else np.mod(a, b)
    np.testing.assert_allclose(ir_bridge.run(ir_bridge.load(m), [x])[0] - x,
                               np.broadcast_to(want.astype(np.float32), x.shape), atol=1e-6)


def test_resize_18_axes_scale_only_the_listed_axes():
    m = make([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest", axes=[3, 2],
                               name="resize")],
             [("x", ["N", 2, 3, 3])], [("y", ["N", 2, 6, 9])],
             [("sc", np.array([3, 2], np.float32))], opsets=(("", 18),))
    graph = assert_matches_onnxruntime(m, [x_of((2, 2, 3, 3))])
    assert graph.outputs[0].type.shape == (None, 2, 6, 9)


@pytest.mark.parametrize("policy,want", [("stretch", (6, 9)), ("not_larger", (6, 6)),
                                         ("not_smaller", (9, 9))])
def test_resize_18_keep_aspect_ratio_policy(policy, want):
    m = make([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest",
                               axes=[2, 3], keep_aspect_ratio_policy=policy,
                               coordinate_transformation_mode="asymmetric",
                               nearest_mode="floor", name="resize")],
             [("x", ["N", 2, 3, 3])], [("y", ["N", 2, "H", "W"])],
             [("sizes", np.array([6, 9], np.int64) if policy != "not_smaller"
               else np.array([9, 6], np.int64))], opsets=(("", 18),))
    graph = assert_matches_onnxruntime(m, [x_of((2, 2, 3, 3))])
    assert graph.outputs[0].type.shape == (None, 2, *want)
