"""eliminate-dropout, dead-code and constant-folding."""

import numpy as np
import pytest

from conftest import assert_preserves
from ir_bridge.ir import Graph

F = "float32"


def mlp_with_noops():
    g = Graph()
    x = g.add_input("x", (None, 6))
    d = g.add_node("Dropout", [x], attrs={"ratio": 0.5})
    h = g.add_node("Gemm", [d], params={"W": np.full((6, 4), 0.1, F)})
    i = g.add_node("Identity", [h])
    n = g.add_node("Dropout", [i], attrs={"kind": "GaussianNoise"})
    g.set_outputs([n])
    return g


def test_eliminate_dropout_removes_every_noop():
    result = assert_preserves(mlp_with_noops(), "eliminate-dropout")
    assert result.changed
    assert result.graph.op_counts() == {"Input": 1, "Gemm": 1}


def test_eliminate_dropout_keeps_input_to_output_identity():
    g = Graph()
    x = g.add_input("x", (None, 3))
    g.set_outputs([g.add_node("Identity", [x])])
    result = assert_preserves(g, "eliminate-dropout")
    assert not result.changed
    assert "Identity" in result.graph.op_counts()


def test_dead_code_removes_unused_branch_but_keeps_inputs():
    g = Graph()
    x = g.add_input("x", (None, 3))
    unused_in = g.add_input("unused", (None, 2))
    g.add_node("Relu", [unused_in])
    dead = g.add_node("Tanh", [x])
    g.add_node("Neg", [dead])
    g.set_outputs([g.add_node("Sigmoid", [x])])
    result = assert_preserves(g, "dead-code")
    assert result.graph.op_counts() == {"Input": 2, "Sigmoid": 1}
    assert not assert_preserves(result.graph, "dead-code").changed


def test_constant_folding_folds_constant_subgraphs_and_operands():
    g = Graph()
    x = g.add_input("x", (None, 3))
    c1 = g.add_node("Constant", params={"value": np.array([1.0, 2.0, 3.0], F)})
    c2 = g.add_node("Constant", params={"value": np.array([0.5, 0.5, 0.5], F)})
    s = g.add_node("Mul", [c1, c2])           # all-constant: folded
    n = g.add_node("Neg", [s])                # then this too
    a = g.add_node("Add", [x, n])             # constant second operand: becomes param B
    w = g.add_node("Constant", params={"value": np.eye(3, dtype=F) * 2})
    m = g.add_node("MatMul", [a, w])          # MatMul by a constant matrix: Gemm
    g.set_outputs([m])
    result = assert_preserves(g, "constant-folding,dead-code")
    counts = result.graph.op_counts()
    assert counts == {"Input": 1, "Add": 1, "Gemm": 1}
    np.testing.assert_allclose(result.graph["add"].params["B"], [-0.5, -1.0, -1.5])


def test_constant_folding_leaves_input_dependent_nodes():
    g = Graph()
    x = g.add_input("x", (None, 3))
    g.set_outputs([g.add_node("Relu", [x])])
    assert not assert_preserves(g, "constant-folding").changed
