"""ONNX files whose tensors do not fit together (BUG-6): every one passes ``onnx.checker``,
and loading it raises ``InvalidModelError`` naming the file and the ONNX node (its name and
op type) where the shapes first disagree, never a bare ``IRBridgeError`` or numpy error.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.errors import InvalidModelError  # noqa: E402

F = TensorProto.FLOAT


def make(nodes, inputs, inits=(), outputs=("y",), opset=17):
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, ["d0", "d1"]) for n in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)  # each case is malformed in a way the checker misses
    return m


def node(op, ins, outs=("y",), name="n", **attrs):
    return helper.make_node(op, list(ins), list(outs), name=name, **attrs)


ONES = np.ones
I64 = np.int64

#: name -> (model builder, the node label the message must carry, a fragment of the reason)
CASES = {
    "gemm_weight_wrong_shape": (lambda: make(
        [node("Gemm", ["x", "W"], name="dense")], [("x", ["N", 4])],
        [("W", ONES((5, 3), "float32"))]), "'dense' (Gemm)", "does not match weight (5, 3)"),
    "conv_weight_wrong_rank": (lambda: make(
        [node("Conv", ["x", "W"], name="conv")], [("x", ["N", 1, 5, 5])],
        [("W", ONES((3, 3), "float32"))]), "'conv' (Conv)", "weight of rank 2"),
    "conv_channels": (lambda: make(
        [node("Conv", ["x", "W"], name="conv")], [("x", ["N", 2, 5, 5])],
        [("W", ONES((2, 1, 3, 3), "float32"))]), "'conv' (Conv)", "2 channels"),
    "conv_bias_length": (lambda: make(
        [node("Conv", ["x", "W", "B"], name="conv")], [("x", ["N", 1, 5, 5])],
        [("W", ONES((2, 1, 3, 3), "float32")), ("B", ONES(3, "float32"))]),
        "'conv' (Conv)", "bias shape (3,)"),
    "batchnorm_params": (lambda: make(
        [node("BatchNormalization", ["x", "s", "b", "m", "v"], name="bn")], [("x", ["N", 3, 4])],
        [(k, ONES(2, "float32")) for k in "sbmv"]), "'bn' (BatchNormalization)", "(2,)"),
    "matmul_inner_dims": (lambda: make(
        [node("MatMul", ["x", "z"], name="mm")], [("x", ["N", 4]), ("z", [3, 2])]),
        "'mm' (MatMul)", "inner dims"),
    "add_does_not_broadcast": (lambda: make(
        [node("Add", ["x", "c"], name="add")], [("x", ["N", 4])], [("c", ONES(3, "float32"))]),
        "'add' (Add)", "do not broadcast"),
    "concat_mismatch": (lambda: make(
        [node("Concat", ["x", "z"], name="cat", axis=1)],
        [("x", ["N", 4, 2]), ("z", ["N", 3, 3])]),
        "'cat' (Concat)", "differ on axis 2"),
    "reshape_constant_wrong_size": (lambda: make(
        [node("Reshape", ["c", "s"], ["r"], name="rs"), node("Add", ["x", "r"], name="add")],
        [("x", ["N", 4])], [("c", ONES(6, "float32")), ("s", np.array([4], I64))]),
        "'rs' (Reshape)", "cannot reshape"),
    "reshape_known_shape_wrong_size": (lambda: make(
        [node("Reshape", ["x", "s"], name="rs")], [("x", [2, 4])], [("s", np.array([3, 3], I64))]),
        "'rs' (Reshape)", "cannot reshape"),
    "gather_constant_out_of_range": (lambda: make(
        [node("Gather", ["c", "i"], ["g"], name="pick"), node("Add", ["x", "g"], name="add")],
        [("x", ["N", 4])], [("c", ONES(4, "float32")), ("i", np.array([7], I64))]),
        "'pick' (Gather)", "out of bounds"),
    "gather_runtime_out_of_range": (lambda: make(
        [node("Gather", ["x", "i"], name="pick", axis=1)], [("x", ["N", 4])],
        [("i", np.array([7], I64))]), "'pick' (Gather)", "out of range for axis 1 of size 4"),
    "split_sizes_do_not_add_up": (lambda: make(
        [node("Split", ["x", "sp"], ["a", "b"], name="split", axis=1)], [("x", ["N", 4])],
        [("sp", np.array([1, 5], I64))], outputs=("a", "b")), "'split' (Split)", "add up"),
    "softmax_axis_out_of_range": (lambda: make(
        [node("Softmax", ["x"], name="sm", axis=5)], [("x", ["N", 4])]),
        "'sm' (Softmax)", "axis 5 is out of range"),
    "slice_axis_out_of_range": (lambda: make(
        [node("Slice", ["x", "s", "e", "a"], name="sl")], [("x", ["N", 4])],
        [("s", np.array([0], I64)), ("e", np.array([1], I64)), ("a", np.array([5], I64))]),
        "'sl' (Slice)", "axis 5 is out of range"),
    "transpose_perm": (lambda: make(
        [node("Transpose", ["x"], name="tr", perm=[0, 1, 2])], [("x", ["N", 4])]),
        "'tr' (Transpose)", "not a permutation"),
    "tile_repeats": (lambda: make(
        [node("Tile", ["x", "r"], name="tile")], [("x", ["N", 4])],
        [("r", np.array([1, 2, 3], I64))]), "'tile' (Tile)", "3 repeats"),
    "pool_window_too_big": (lambda: make(
        [node("MaxPool", ["x"], name="pool", kernel_shape=[7, 7])], [("x", ["N", 1, 5, 5])]),
        "'pool' (MaxPool)", "window 7"),
    "lstm_weight": (lambda: make(
        [node("LSTM", ["x", "W", "R"], name="lstm", hidden_size=2)], [("x", [3, "N", 4])],
        [("W", ONES((1, 8, 5), "float32")), ("R", ONES((1, 8, 2), "float32"))]),
        "'lstm' (LSTM)", "input size 4"),
    "unnamed_node": (lambda: make(
        [helper.make_node("Gemm", ["x", "W"], ["y"])], [("x", ["N", 4])],
        [("W", ONES((5, 3), "float32"))]), "(Gemm) writing 'y'", "does not match weight"),
    "negative_input_dim": (lambda: make(
        [node("Relu", ["x"], name="relu")], [("x", ["N", -4])]),
        "graph input 'x'", "negative dimension: shape (?, -4)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_model_names_file_and_node(tmp_path, case):
    build, label, reason = CASES[case]
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(build().SerializeToString())
    with pytest.raises(InvalidModelError) as err:
        ir_bridge.load(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert label in text, text
    assert reason in text, text
    assert ": node '" not in text, text  # the IR node's prefix is dropped: said once


def test_a_live_model_proto_is_named_by_its_graph():
    build, label, _ = CASES["gemm_weight_wrong_shape"]
    with pytest.raises(InvalidModelError, match=r"^<onnx.ModelProto 'g'>: ONNX node 'dense' "
                                                r"\(Gemm\): "):
        ir_bridge.load(build())


def test_the_original_error_is_kept_as_the_cause():
    with pytest.raises(InvalidModelError) as err:
        ir_bridge.load(CASES["reshape_constant_wrong_size"][0]())
    assert isinstance(err.value.__cause__, ValueError)
