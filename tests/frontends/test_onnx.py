"""The ONNX frontend: reads back what our backend writes, what Keras's and tf2onnx's exports
write, and hand-made graphs of every op it knows; each checked against onnxruntime (or the
IR the model came from) within 1e-5.  Unknown ops and corrupt files give one clear error.
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
from ir_bridge.backends import onnx as onnx_backend  # noqa: E402
from ir_bridge.errors import InvalidModelError, UnsupportedLayerError  # noqa: E402
from ir_bridge.frontends import onnx as onnx_frontend  # noqa: E402

from backends.test_onnx import CASES as BACKEND_CASES  # noqa: E402
from backends.test_onnx import _inputs_for_case  # noqa: E402

ATOL = 1e-5
RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def w(*shape, scale=0.5):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


def model(nodes, inputs, outputs, inits=(), opset=17, name="g"):
    """An ONNX model: ``inputs``/``outputs`` are (name, shape) pairs (float32; strings for
    symbolic dims); ``inits`` are (name, array)."""
    g = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, s) for n, s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    imports = [helper.make_opsetid("", opset)]
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = helper.find_min_ir_version_for(imports)
    m = onnx.shape_inference.infer_shapes(m)  # fills in the output shapes
    onnx.checker.check_model(m)
    return m


def feeds(m, batch=4, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for i in m.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch
                for d in i.type.tensor_type.shape.dim]
        out.append((2 * rng.standard_normal(dims)).astype(np.float32))
    return out


def assert_matches_onnxruntime(m, xs=None, **load_options):
    """Load ``m`` with the frontend; its IR run must match onnxruntime on ``m``."""
    xs = feeds(m) if xs is None else xs
    graph = ir_bridge.load(m, format="onnx", **load_options)
    want = onnx_backend.runner(m)(xs)
    got = ir_bridge.run(graph, xs)
    assert len(got) == len(want)
    for g, e in zip(got, want):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=ATOL)
    return graph


# ---------------------------------------------------------------- our own backend's output


@pytest.mark.parametrize("opset", [onnx_backend.MIN_OPSET, onnx_backend.max_opset()])
@pytest.mark.parametrize("case", sorted(BACKEND_CASES))
def test_reads_back_every_backend_case(case, opset):
    graph = BACKEND_CASES[case]()
    m = onnx_backend.emit(graph, opset=opset)
    back = ir_bridge.load(m)
    xs = _inputs_for_case(case, graph)
    for got, want in zip(ir_bridge.run(back, xs), ir_bridge.run(graph, xs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL)


def test_round_trip_keeps_names_and_ops():
    graph = BACKEND_CASES["conv2d_strided_padded"]()
    graph = ir_bridge.optimize(graph)
    back = ir_bridge.load(onnx_backend.emit(graph))
    assert [(n.name, n.op) for n in back] == [(n.name, n.op) for n in graph]
    assert back.inputs[0].type.shape == (None, 3, 7, 7)


def test_reads_a_file_path(tmp_path):
    graph = BACKEND_CASES["gemm_flatten"]()
    path = tmp_path / "m.onnx"
    onnx_backend.emit(graph, path)
    back = ir_bridge.load(path)
    xs = _inputs_for_case("gemm_flatten", graph)
    np.testing.assert_allclose(ir_bridge.run(back, xs)[0], ir_bridge.run(graph, xs)[0],
                               rtol=1e-5, atol=ATOL)


# ---------------------------------------------------------------- hand-made graphs


def _gemm(**attrs):
    b = w(6, 4) if attrs.get("transB") else w(4, 6)
    a_shape = ["N", 4] if not attrs.get("transA") else [4, 3]
    c = attrs.pop("C", w(6))
    return model([helper.make_node("Gemm", ["a", "B", "C"], ["y"], **attrs)],
                 [("a", a_shape)], [("y", None)], [("B", b), ("C", c)], opset=13)


HAND_MADE = {
    "gemm_plain": lambda: _gemm(),
    "gemm_trans_alpha_beta": lambda: _gemm(transB=1, alpha=0.5, beta=2.0),
    "gemm_transA": lambda: _gemm(transA=1),
    "gemm_bias_scalar": lambda: _gemm(C=np.float32(0.7)),
    "gemm_bias_matrix": lambda: model(
        [helper.make_node("Gemm", ["a", "B", "C"], ["y"])], [("a", [3, 4])], [("y", None)],
        [("B", w(4, 6)), ("C", w(3, 6))]),
    "matmul_add": lambda: model(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        [("x", ["N", 3, 4])], [("y", None)], [("W", w(4, 5)), ("b", w(5))]),
    "matmul_two_inputs": lambda: model(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], [("a", ["N", 3, 4]), ("b", ["N", 4, 2])],
        [("y", None)]),
    "conv_bias_add": lambda: model(
        [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c", "b"], ["y"])],
        [("x", ["N", 3, 6, 6])], [("y", None)], [("W", w(4, 3, 3, 3)), ("b", w(1, 4, 1, 1))]),
    "conv_same_lower": lambda: model(
        [helper.make_node("Conv", ["x", "W", "B"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2])],
        [("x", ["N", 3, 7, 6])], [("y", None)], [("W", w(4, 3, 2, 3)), ("B", w(4))]),
    "conv_transpose_output_shape": lambda: model(
        [helper.make_node("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2],
                          output_shape=[10, 9])],
        [("x", ["N", 3, 5, 5])], [("y", None)], [("W", w(3, 2, 3, 3))]),
    "conv_transpose_same_upper": lambda: model(
        [helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2],
                          auto_pad="SAME_UPPER")],
        [("x", ["N", 3, 5, 5])], [("y", None)], [("W", w(3, 2, 4, 4)), ("B", w(2))]),
    "maxpool_same_upper": lambda: model(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                          auto_pad="SAME_UPPER")], [("x", ["N", 2, 7, 7])], [("y", None)]),
    "avgpool_ceil": lambda: model(
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                          ceil_mode=1)], [("x", ["N", 2, 5, 5])], [("y", None)]),
    "batchnorm": lambda: model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
        [("x", ["N", 3, 4, 4])], [("y", None)],
        [("s", w(3)), ("b", w(3)), ("m", w(3)), ("v", np.abs(w(3)) + 0.5)]),
    "layernorm": lambda: model(
        [helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-2)],
        [("x", ["N", 3, 4])], [("y", None)], [("s", w(3, 4)), ("b", w(3, 4))]),
    "lrn": lambda: model(
        [helper.make_node("LRN", ["x"], ["y"], size=3, alpha=0.01, beta=0.75, bias=2.0)],
        [("x", ["N", 5, 3, 3])], [("y", None)]),
    "clip_inputs": lambda: model(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [("x", ["N", 5])], [("y", None)],
        [("lo", np.float32(-0.5)), ("hi", np.float32(1.0))]),
    "clip_attrs_opset7": lambda: model(  # Clip-6's attributes, at the oldest opset read
        [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.5)], [("x", ["N", 5])],
        [("y", None)], opset=7),
    "dropout_ratio_input": lambda: model(
        [helper.make_node("Dropout", ["x", "r"], ["y"])], [("x", ["N", 5])], [("y", None)],
        [("r", np.float32(0.3))], opset=13),
    "softmax_opset11_axis1": lambda: model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)], [("x", ["N", 3, 4])], [("y", None)],
        opset=11),
    "log_softmax_opset13": lambda: model(
        [helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)], [("x", ["N", 3, 4])],
        [("y", None)], opset=13),
    "activations": lambda: model(
        [helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.3),
         helper.make_node("Elu", ["a"], ["b"], alpha=0.5),
         helper.make_node("Selu", ["b"], ["c"]),
         helper.make_node("HardSigmoid", ["c"], ["d"], alpha=0.3, beta=0.4),
         helper.make_node("ThresholdedRelu", ["x"], ["e"], alpha=0.2),
         helper.make_node("Softplus", ["e"], ["f"]), helper.make_node("Softsign", ["f"], ["g"]),
         helper.make_node("Sum", ["d", "g", "x"], ["y"])],
        [("x", ["N", 5])], [("y", None)], opset=10),
    "gelu_mish_hardswish": lambda: model(
        [helper.make_node("Gelu", ["x"], ["a"], approximate="tanh"),
         helper.make_node("Mish", ["a"], ["b"]), helper.make_node("HardSwish", ["b"], ["y"])],
        [("x", ["N", 5])], [("y", None)], opset=20),
    "prelu": lambda: model(
        [helper.make_node("PRelu", ["x", "s"], ["y"])], [("x", ["N", 3, 2, 2])], [("y", None)],
        [("s", w(3, 1, 1))]),
    "math": lambda: model(
        [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Sqrt", ["a"], ["b"]),
         helper.make_node("Log", ["b"], ["c"]), helper.make_node("Erf", ["c"], ["d"]),
         helper.make_node("Neg", ["d"], ["e"]), helper.make_node("Floor", ["e"], ["f"]),
         helper.make_node("Exp", ["f"], ["g"]), helper.make_node("Reciprocal", ["g"], ["h"]),
         helper.make_node("Pow", ["a", "two"], ["i"]), helper.make_node("Div", ["one", "i"], ["j"]),
         helper.make_node("Sub", ["h", "j"], ["k"]), helper.make_node("Mean", ["k", "x"], ["l"]),
         helper.make_node("Max", ["l", "x"], ["m"]), helper.make_node("Min", ["m", "one"], ["y"])],
        [("x", ["N", 5])], [("y", None)], [("two", np.float32(2)), ("one", np.float32(1))]),
    "constant_nodes": lambda: model(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(w(5))),
         helper.make_node("Constant", [], ["k"], value_float=3.0),
         helper.make_node("Mul", ["c", "x"], ["a"]), helper.make_node("Add", ["a", "k"], ["y"])],
        [("x", ["N", 5])], [("y", None)]),
    "shape_subgraph_flatten": lambda: model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
         helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
         helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
         helper.make_node("Reshape", ["x", "shape"], ["f"]),
         helper.make_node("MatMul", ["f", "W"], ["y"])],
        [("x", ["N", 2, 3, 2])], [("y", ["N", 3])],
        [("zero", np.int64(0)), ("axes0", np.array([0], np.int64)),
         ("minus1", np.array([-1], np.int64)), ("W", w(12, 3))], opset=13),
    "shape_subgraph_slice_cast_mul": lambda: model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Slice", ["s", "st", "en"], ["hw"]),
         helper.make_node("ReduceProd", ["hw"], ["p"], keepdims=1),
         helper.make_node("Cast", ["p"], ["pf"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["pf"], ["pi"], to=TensorProto.INT64),
         helper.make_node("Slice", ["s", "zero1", "one1"], ["n"]),
         helper.make_node("Concat", ["n", "pi"], ["shape"], axis=0),
         helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [("x", ["N", 2, 3, 2])], [("y", ["N", 12])],
        [("st", np.array([1], np.int64)), ("en", np.array([4], np.int64)),
         ("zero1", np.array([0], np.int64)), ("one1", np.array([1], np.int64))], opset=13),
    "squeeze_unsqueeze_opset11": lambda: model(
        [helper.make_node("Unsqueeze", ["x"], ["a"], axes=[1]),
         helper.make_node("Squeeze", ["a"], ["y"], axes=[1])],
        [("x", ["N", 5])], [("y", None)], opset=11),
    "squeeze_unsqueeze_opset13": lambda: model(
        [helper.make_node("Unsqueeze", ["x", "ax"], ["a"]),
         helper.make_node("Squeeze", ["a", "ax"], ["b"]),
         helper.make_node("Squeeze", ["b"], ["y"])],
        [("x", ["N", 1, 5])], [("y", ["N", 5])], [("ax", np.array([1], np.int64))], opset=13),
    "flatten_transpose_concat": lambda: model(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
         helper.make_node("Flatten", ["t"], ["f"], axis=1),
         helper.make_node("Concat", ["f", "f"], ["y"], axis=1)],
        [("x", ["N", 3, 4])], [("y", None)]),
    "pad_opset11_and_18": lambda: model(
        [helper.make_node("Pad", ["x", "p", "v"], ["y"], mode="constant")],
        [("x", ["N", 3, 4])], [("y", None)],
        [("p", np.array([0, 1, 2, 0, 0, 1], np.int64)), ("v", np.float32(0.5))], opset=11),
    "pad_axes_reflect": lambda: model(
        [helper.make_node("Pad", ["x", "p", "", "ax"], ["y"], mode="reflect")],
        [("x", ["N", 3, 4])], [("y", None)],
        [("p", np.array([1, 2, 1, 1], np.int64)), ("ax", np.array([1, 2], np.int64))],
        opset=18),
    "pad_opset2": lambda: model(
        [helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 0, 2], value=1.0)],
        [("x", ["N", 3])], [("y", None)], opset=10),
    "slice_steps_negative": lambda: model(
        [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
        [("x", ["N", 6, 5])], [("y", None)],
        [("st", np.array([-1, 1], np.int64)), ("en", np.array([-100, 5], np.int64)),
         ("ax", np.array([1, 2], np.int64)), ("sp", np.array([-2, 1], np.int64))]),
    "split_and_gather_index": lambda: model(
        [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
         helper.make_node("Gather", ["b", "idx"], ["g"], axis=1),
         helper.make_node("Add", ["a", "g"], ["y"])],
        [("x", ["N", 5, 2])], [("y", None)],
        [("sizes", np.array([2, 3], np.int64)), ("idx", np.array([1, 2], np.int64))], opset=13),
    "gather_scalar_index": lambda: model(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=2)], [("x", ["N", 3, 4])],
        [("y", None)], [("i", np.int64(-1))]),
    "resize_nearest_half_pixel": lambda: model(
        [helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")],
        [("x", ["N", 2, 3, 3])], [("y", None)], [("sc", np.array([1, 1, 2, 3], np.float32))],
        opset=13),
    "resize_sizes_tf_half_pixel": lambda: model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Slice", ["s", "z", "two"], ["nc"]),
         helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
         helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest",
                          coordinate_transformation_mode="tf_half_pixel_for_nn",
                          nearest_mode="floor")],
        [("x", ["N", 2, 3, 3])], [("y", None)],
        [("z", np.array([0], np.int64)), ("two", np.array([2], np.int64)),
         ("hw", np.array([6, 6], np.int64))], opset=13),
    "upsample_opset9": lambda: model(
        [helper.make_node("Upsample", ["x", "sc"], ["y"], mode="nearest")],
        [("x", ["N", 2, 3, 3])], [("y", None)], [("sc", np.array([1, 1, 2, 2], np.float32))],
        opset=9),
    "reduce_opset13_and_18": lambda: model(
        [helper.make_node("ReduceMean", ["x"], ["a"], axes=[2, 3], keepdims=1),
         helper.make_node("ReduceMax", ["x"], ["b"], axes=[1], keepdims=1),
         helper.make_node("Mul", ["a", "b"], ["y"])],
        [("x", ["N", 3, 4, 5])], [("y", None)], opset=13),
    "reduce_mean_axes_input": lambda: model(
        [helper.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=0)],
        [("x", ["N", 3, 4, 5])], [("y", None)], [("ax", np.array([-1, 2], np.int64))],
        opset=18),
    "global_pools_identity": lambda: model(
        [helper.make_node("GlobalAveragePool", ["x"], ["a"]),
         helper.make_node("GlobalMaxPool", ["x"], ["b"]),
         helper.make_node("Sub", ["a", "b"], ["c"]), helper.make_node("Identity", ["c"], ["y"])],
        [("x", ["N", 3, 4, 5])], [("y", None)]),
    "embedding_cast": lambda: _embedding(),
    "expand_and_where_fold": lambda: model(
        [helper.make_node("ConstantOfShape", ["shape"], ["z"],
                          value=numpy_helper.from_array(np.array([2.0], np.float32))),
         helper.make_node("Equal", ["z", "z"], ["e"]),
         helper.make_node("Where", ["e", "z", "z"], ["c"]),
         helper.make_node("Mul", ["x", "c"], ["y"])],
        [("x", ["N", 5])], [("y", None)], [("shape", np.array([5], np.int64))]),
    "tile_computed": lambda: model(
        [helper.make_node("Tile", ["x", "r"], ["y"])], [("x", ["N", 2, 3])], [("y", None)],
        [("r", np.array([1, 3, 2], np.int64))]),
    "max_min_scalar_is_clip": lambda: model(
        [helper.make_node("Max", ["x", "lo"], ["a"]), helper.make_node("Min", ["hi", "a"], ["y"])],
        [("x", ["N", 5])], [("y", None)], [("lo", np.float32(0)), ("hi", np.float32(0.5))]),
    "slice_int32_max_unknown_dim": lambda: model(
        [helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])],
        [("x", ["N", "T", 3])], [("y", ["N", "U", 3])],
        [("st", np.array([0, 1, 0], np.int64)),
         ("en", np.array([2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1], np.int64)),
         ("ax", np.array([0, 1, 2], np.int64))]),
    "two_inputs_two_outputs": lambda: model(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y1"]),
         helper.make_node("Sigmoid", ["a"], ["y2"])],
        [("a", ["N", 3]), ("b", ["N", 3])], [("y1", None), ("y2", None)]),
}


def _embedding():
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
         helper.make_node("Gather", ["E", "i"], ["y"], axis=0)], "emb",
        [helper.make_tensor_value_info("x", F, ["N", 4])],
        [helper.make_tensor_value_info("y", F, None)],
        initializer=[numpy_helper.from_array(w(10, 3), "E")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


@pytest.mark.parametrize("case", sorted(HAND_MADE))
def test_hand_made_graph_matches_onnxruntime(case):
    m = HAND_MADE[case]()
    xs = None
    if case == "embedding_cast":
        xs = [np.random.default_rng(0).uniform(0, 9.9, (4, 4)).astype(np.float32)]
    graph = assert_matches_onnxruntime(m, xs)
    graph.verify()


def test_canonical_forms_of_exporter_idioms():
    assert ir_bridge.load(HAND_MADE["max_min_scalar_is_clip"]()).op_counts() == {
        "Input": 1, "Clip": 2}
    sliced = ir_bridge.load(HAND_MADE["slice_int32_max_unknown_dim"]())
    (node,) = [n for n in sliced if n.op == "Slice"]
    assert node.attrs["axes"] == [1] and node.attrs["ends"] == [2 ** 63 - 1]
    assert node.type.shape == (None, None, 3)


def test_negative_end_pads_of_conv_transpose_are_output_padding():
    """tf2onnx writes Keras's output_padding as negative end pads, which onnxruntime
    refuses; they mean the same as ONNX's output_padding."""
    W, B = w(3, 2, 3, 3), w(2)

    def conv_t(**attrs):
        g = helper.make_graph(
            [helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], strides=[2, 2], **attrs)],
            "g", [helper.make_tensor_value_info("x", F, ["N", 3, 4, 4])],
            [helper.make_tensor_value_info("y", F, ["N", 2, 10, 10])],
            initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m

    xs = feeds(conv_t(output_padding=[1, 1]))
    want = onnx_backend.runner(conv_t(output_padding=[1, 1]))(xs)[0]
    got = ir_bridge.run(ir_bridge.load(conv_t(pads=[0, 0, -1, -1])), xs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL)


def test_idioms_become_one_ir_node():
    counts = ir_bridge.load(HAND_MADE["matmul_add"]()).op_counts()
    assert counts == {"Input": 1, "Gemm": 1}
    counts = ir_bridge.load(HAND_MADE["conv_bias_add"]()).op_counts()
    assert counts == {"Input": 1, "Conv": 1}
    shape = ir_bridge.load(HAND_MADE["shape_subgraph_flatten"]())
    reshape = next(n for n in shape if n.op == "Reshape")
    assert reshape.attrs["shape"] == [0, -1]  # Shape(x)[0] is the batch: copied
    assert set(shape.op_counts()) == {"Input", "Reshape", "Gemm"}


def test_lowered_graph_is_nchw_and_runs_default_passes():
    graph = ir_bridge.load(HAND_MADE["conv_same_lower"]())
    assert all(n.attrs.get("layout", "NCHW") == "NCHW" for n in graph)
    opt = ir_bridge.optimize(graph, verify=True)
    xs = feeds(HAND_MADE["conv_same_lower"]())
    np.testing.assert_allclose(ir_bridge.run(opt, xs)[0], ir_bridge.run(graph, xs)[0])


# ---------------------------------------------------------------- recurrent ops vs onnxruntime


def _lstm_model(direction="forward", peepholes=False, states=False, layout=0, activations=None,
                clip=None):
    d = 2 if direction == "bidirectional" else 1
    h, i, t = 4, 3, 5
    inits = [("W", w(d, 4 * h, i)), ("R", w(d, 4 * h, h)), ("B", w(d, 8 * h))]
    ins = ["x", "W", "R", "B", "", "h0" if states else "", "c0" if states else ""]
    if peepholes:
        ins.append("P")
        inits.append(("P", w(d, 3 * h)))
    while ins[-1] == "":
        ins.pop()
    x_shape = ["N", t, i] if layout else [t, "N", i]
    s_shape = ["N", d, h] if layout else [d, "N", h]
    inputs = [("x", x_shape)] + ([("h0", s_shape), ("c0", s_shape)] if states else [])
    attrs = {"hidden_size": h, "direction": direction, "layout": layout}
    if activations:
        attrs.update(activations)
    if clip is not None:
        attrs["clip"] = clip
    return model([helper.make_node("LSTM", ins, ["y", "yh", "yc"], **attrs)], inputs,
                 [("y", None), ("yh", None), ("yc", None)], inits, opset=14)


def _gru_model(direction="forward", linear_before_reset=0, states=False):
    d = 2 if direction == "bidirectional" else 1
    h, i, t = 4, 3, 5
    inits = [("W", w(d, 3 * h, i)), ("R", w(d, 3 * h, h)), ("B", w(d, 6 * h))]
    ins = ["x", "W", "R", "B"] + (["", "h0"] if states else [])
    inputs = [("x", [t, "N", i])] + ([("h0", [d, "N", h])] if states else [])
    return model([helper.make_node("GRU", ins, ["y", "yh"], hidden_size=h, direction=direction,
                                   linear_before_reset=linear_before_reset)],
                 inputs, [("y", None), ("yh", None)], inits, opset=14)


@pytest.mark.parametrize("build", [
    lambda: _lstm_model(),
    lambda: _lstm_model("reverse", peepholes=True),
    lambda: _lstm_model("bidirectional", states=True),
    lambda: _lstm_model(activations={"activations": ["HardSigmoid", "Tanh", "Relu"],
                                     "activation_alpha": [0.3], "activation_beta": [0.4]}),
    lambda: _lstm_model(clip=0.5),
    lambda: _gru_model(),
    lambda: _gru_model("bidirectional", 1, states=True),
    lambda: _gru_model("reverse", 1),
], ids=["lstm", "lstm_reverse_peepholes", "lstm_bidirectional_states",
        "lstm_activations", "lstm_clip", "gru", "gru_bidirectional_lbr", "gru_reverse_lbr"])
def test_recurrent_ops_match_onnxruntime(build):
    graph = assert_matches_onnxruntime(build())
    assert {"GetItem"} <= set(graph.op_counts())


def test_batch_first_rnn_equals_time_major_with_transposes():
    """onnxruntime refuses LSTM layout=1, so the batch-first kernel is checked against the
    time-major one."""
    from ir_bridge.ir import Graph

    def build(batch_first):
        g = Graph("rnn")
        x = g.add_input("x", (None, 5, 3) if batch_first else (5, None, 3))
        params = {"W": w(2, 16, 3), "R": w(2, 16, 4), "B": w(2, 32), "P": w(2, 12)}
        node = g.add_node("LSTM", [x], attrs={"hidden_size": 4, "direction": "bidirectional",
                                              "batch_first": int(batch_first)}, params=params)
        g.set_outputs([g.add_node("GetItem", [node], attrs={"index": i}) for i in range(3)])
        return g, params

    bf, params = build(True)
    tm, tm_params = build(False)
    tm.node("lstm").params.update(params)
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype(np.float32)
    y_bf = ir_bridge.run(bf, [x])
    y_tm = ir_bridge.run(tm, [x.transpose(1, 0, 2)])
    np.testing.assert_allclose(y_bf[0], y_tm[0].transpose(2, 0, 1, 3), rtol=0, atol=1e-6)
    for a, b in zip(y_bf[1:], y_tm[1:]):
        np.testing.assert_allclose(a, b.transpose(1, 0, 2), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- errors


def test_unknown_ops_are_all_listed_at_once():
    m = model([helper.make_node("Einsum", ["x", "x"], ["a"], name="ein", equation="ij,ij->ij"),
               helper.make_node("TopK", ["a", "k"], ["b", "idx"], name="top"),
               helper.make_node("Celu", ["b"], ["y"], name="celu")],
              [("x", ["N", 5])], [("y", None)], [("k", np.array([2], np.int64))], opset=13)
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.load(m)
    assert sorted(err.value.layers) == [("celu", "Celu"), ("ein", "Einsum"), ("top", "TopK")]
    for needle in ("ein (Einsum)", "top (TopK)", "celu (Celu)", "Supported ONNX ops"):
        assert needle in str(err.value)


def test_foreign_domain_is_unsupported():
    g = helper.make_graph([helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft",
                                            name="fg")], "g",
                          [helper.make_tensor_value_info("x", F, ["N", 3])],
                          [helper.make_tensor_value_info("y", F, ["N", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedLayerError, match="com.microsoft::FusedGemm"):
        ir_bridge.load(m)


def test_control_flow_error_explains_rnn_loops():
    body = helper.make_graph([], "body", [], [])
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Loop", ["", ""], [], name="while_loop", body=body)], "g",
        [helper.make_tensor_value_info("x", F, ["N", 3])],
        [helper.make_tensor_value_info("x", F, ["N", 3])]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedLayerError, match="Loop.*LSTM"):
        onnx_frontend._Importer(m, "<test>").run()


def test_translation_problems_are_all_listed():
    m = model([helper.make_node("Conv", ["x", "Wdyn"], ["a"], name="conv_dyn"),
               helper.make_node("Resize", ["a", "", "sc"], ["b"], mode="linear", name="lin"),
               helper.make_node("Cast", ["b"], ["y"], to=TensorProto.DOUBLE, name="cast")],
              [("x", ["N", 3, 4, 4]), ("Wdyn", [2, 3, 1, 1])], [("y", ["N", 2, 8, 8])],
              [("sc", np.array([1, 1, 2, 2], np.float32))], opset=13)
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.load(m)
    text = str(err.value)
    assert "conv_dyn (Conv): Conv weight must be a constant" in text
    assert err.value.layers == [("conv_dyn", "Conv")]  # the rest depend on it


def test_independent_problems_are_reported_together():
    m = model([helper.make_node("Resize", ["x", "", "sc"], ["a"], mode="linear", name="lin"),
               helper.make_node("Gather", ["x", "idx"], ["b"], axis=1, name="pick")],
              [("x", ["N", 3, 4, 4])], [("a", ["N", 3, 8, 8]), ("b", ["N", 2, 4, 4])],
              [("sc", np.array([1, 1, 2, 2], np.float32)), ("idx", np.array([0, 2], np.int64))],
              opset=13)
    with pytest.raises(UnsupportedLayerError) as err:
        ir_bridge.load(m)
    assert sorted(err.value.layers) == [("lin", "Resize"), ("pick", "Gather")]
    assert "non-contiguous" in str(err.value) and "only nearest" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 10, "truncated"])
def test_corrupt_files_name_the_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        good = onnx_backend.emit(BACKEND_CASES["conv2d_strided_padded"]()).SerializeToString()
        content = good[: len(good) // 2]
    path.write_bytes(content)
    with pytest.raises(InvalidModelError, match="bad.onnx"):
        ir_bridge.load(path)


def test_accepts_live_model_proto_without_a_format():
    m = HAND_MADE["two_inputs_two_outputs"]()
    assert onnx_frontend._accepts(m)
    assert not onnx_frontend._accepts(object())
    graph = ir_bridge.load(m)
    assert [n.name for n in graph.inputs] == ["a", "b"]
    assert len(graph.outputs) == 2


# ---------------------------------------------------------------- Keras's and tf2onnx's exports

CNNS = ["cnn_tutorial", "cnn_dropout", "cnn_two_conv"]


def _fresh_keras_names():
    """Keras numbers auto-named layers and models process-wide; reset the counters after
    this module so tests elsewhere that rely on default names do not see our models."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The MNIST CNNs (random weights) exported by Keras and by tf2onnx, once."""
    pytest.importorskip("tf2onnx")
    keras = pytest.importorskip("keras")
    from ir_bridge.frontends import keras_tf2onnx
    from ir_bridge.zoo import mnist

    out = {}
    root = tmp_path_factory.mktemp("exports")
    for name in CNNS:
        m = mnist.build(name, seed=0)
        rng = np.random.default_rng(0)
        for v in m.weights:
            v.assign((0.3 * rng.standard_normal(tuple(v.shape))).astype("float32"))
        m(np.zeros((1, 28, 28, 1), np.float32))  # Keras exports only models called once
        k_path = root / f"{name}_keras.onnx"
        m.export(str(k_path), format="onnx", verbose=False)
        t_path = root / f"{name}_tf2onnx.onnx"
        onnx.save(keras_tf2onnx.to_onnx(m), str(t_path))
        out[name] = (m, k_path, t_path)
    del keras
    return out


@pytest.mark.parametrize("exporter", ["keras_export", "tf2onnx"])
@pytest.mark.parametrize("name", CNNS)
def test_exports_of_mnist_cnns_import_and_match_onnxruntime(exported, name, exporter):
    keras_model, k_path, t_path = exported[name]
    path = k_path if exporter == "keras_export" else t_path
    x = np.random.default_rng(3).standard_normal((5, 28, 28, 1)).astype(np.float32)
    graph = ir_bridge.load(path)
    want = onnx_backend.runner(path)([x])[0]
    for g in (graph, ir_bridge.optimize(graph, verify=True)):
        np.testing.assert_allclose(ir_bridge.run(g, [x])[0], want, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(want, np.asarray(keras_model(x)), rtol=1e-4, atol=1e-4)


def test_keras_gelu_export_with_erfc_imports_and_matches_keras(tmp_path):
    """Keras's ONNX export writes TensorFlow's Erfc for gelu, which onnxruntime refuses;
    the frontend reads it, and our backend writes a model onnxruntime runs."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx")
    x = keras.Input((6,), name="x")
    m = keras.Model(x, keras.layers.Dense(4, activation="gelu", name="dense")(x))
    xs = [np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)]
    m(xs[0])
    path = tmp_path / "gelu.onnx"
    m.export(str(path), format="onnx", verbose=False)
    assert "Erfc" in [n.op_type for n in onnx.load(str(path)).graph.node]
    graph = ir_bridge.load(path)
    want = np.asarray(m(xs[0]))
    np.testing.assert_allclose(ir_bridge.run(graph, xs)[0], want, rtol=0, atol=ATOL)
    fixed = ir_bridge.emit(ir_bridge.optimize(graph), "onnx")
    np.testing.assert_allclose(onnx_backend.runner(fixed)(xs)[0], want, rtol=0, atol=ATOL)
