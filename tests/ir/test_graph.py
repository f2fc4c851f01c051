"""Graph mutation API: use-def links stay in step, safe removal, order, copies."""

import numpy as np
import pytest

from ir_bridge.errors import IRBridgeError, VerificationError
from ir_bridge.ir import Graph, TensorType


def small_graph():
    g = Graph("g")
    x = g.add_input("x", (None, 4))
    a = g.add_node("Gemm", [x], name="a", params={"W": np.ones((4, 3), "float32")})
    r = g.add_node("Relu", [a], name="r")
    s = g.add_node("Add", [r, a], name="s")
    g.set_outputs([s])
    return g


def test_iteration_is_topological_and_types_are_inferred():
    g = small_graph()
    names = [n.name for n in g]
    assert names == ["x", "a", "r", "s"]
    assert g["s"].type == TensorType((None, 3))
    assert [u.name for u in g.users("a")] == ["r", "s"]
    g.verify()


def test_has_one_use_means_one_reader_and_not_an_output():
    g = small_graph()
    assert [g.has_one_use(n) for n in "xars"] == [True, False, True, False]
    g.add_node("Add", ["x", "x"], name="twice")  # one reader, twice
    assert g.has_one_use("x") is False  # now read by a and twice
    g.set_outputs(["s", "r"])
    assert g.has_one_use("r") is False


def test_topological_order_follows_edges_not_insertion():
    g = small_graph()
    late = g.add_node("Neg", ["x"], name="late")
    g.set_inputs("a", ["late"])
    assert [n.name for n in g].index("late") < [n.name for n in g].index("a")
    g.verify()


def test_replace_all_uses_with_rewires_users_and_outputs():
    g = small_graph()
    n = g.add_node("Neg", ["a"], name="n")
    count = g.replace_all_uses_with("a", "n")
    assert count == 2  # r and s; n itself is not rewired (that would be a cycle)
    assert g["r"].inputs == ("n",) and g["s"].inputs == ("r", "n")
    g.set_outputs(["s"])
    g.replace_all_uses_with("s", "r")
    assert g.output_names == ["r"]


def test_safe_remove_refuses_and_changes_nothing():
    g = small_graph()
    with pytest.raises(IRBridgeError, match="users"):
        g.remove_node("a")
    with pytest.raises(IRBridgeError, match="graph output"):
        g.remove_node("s")
    assert len(g) == 4
    g.verify()


def test_bypass_removes_one_input_node():
    g = small_graph()
    g.bypass("r")
    assert "r" not in g and g["s"].inputs == ("a", "a")
    assert g.networkx()["a"]["s"]["uses"] == 2
    g.verify()


def test_attribute_and_input_count_validation():
    g = Graph()
    x = g.add_input("x", (None, 3))
    with pytest.raises(IRBridgeError, match="no attribute"):
        g.add_node("Relu", [x], attrs={"bogus": 1})
    with pytest.raises(IRBridgeError, match="requires attribute"):
        g.add_node("Transpose", [x])
    with pytest.raises(IRBridgeError, match="not in the graph"):
        g.add_node("Relu", ["nope"])
    with pytest.raises(IRBridgeError, match="unknown op"):
        g.add_node("Frobnicate", [x])
    with pytest.raises(IRBridgeError, match="cannot take inputs"):
        g.add_node("Gemm", [x], params={"W": np.ones((4, 2))})


def test_duplicate_name_and_unique_name():
    g = small_graph()
    with pytest.raises(IRBridgeError, match="already exists"):
        g.add_node("Relu", ["a"], name="r")
    assert g.unique_name("r") == "r_1"
    assert g.add_node("Relu", ["a"], origin="r").name == "r_1"


def test_copy_is_independent():
    g = small_graph()
    c = g.copy()
    c.bypass("r")
    c["a"].attrs["activation"] = "Relu"
    assert "r" in g and g["a"].attrs["activation"] is None
    g.verify()
    c.verify()


def test_rename_updates_references():
    g = small_graph()
    g.rename("a", "dense")
    assert g["r"].inputs == ("dense",) and g["s"].inputs == ("r", "dense")
    g.verify()


def test_cycle_is_reported():
    g = small_graph()
    g.set_inputs("a", ["s"])
    with pytest.raises(IRBridgeError, match="cycle"):
        list(g)


def test_verify_collects_every_problem():
    g = small_graph()
    g["a"].params["W"] = np.ones((5, 3), "float32")  # stale: input has 4 features
    g["r"].attrs["bogus"] = 1
    g["s"].params["B"] = np.ones(3, "float32")  # two inputs and a constant operand
    with pytest.raises(VerificationError) as info:
        g.verify()
    text = str(info.value)
    assert len(info.value.problems) == 2
    assert "unknown attributes ['bogus']" in text and "one input and param 'B'" in text


def test_verify_reports_stale_types():
    g = small_graph()
    g["a"].params["W"] = np.ones((4, 7), "float32")
    with pytest.raises(VerificationError, match="stale type"):
        g.verify()
    g.infer_shapes()
    g.verify()
    assert g["s"].type.shape == (None, 7)


def test_summary_and_format_name_every_node():
    g = small_graph()
    text = g.summary()
    for name in ("x", "a", "r", "s"):
        assert name in text
    assert "params: 12" in text
    assert "%a : float32[?, 3] = Gemm" in g.format()
