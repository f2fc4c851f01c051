"""The pass manager: errors with history, ordering, verification, fixpoint."""

import numpy as np
import pytest

from ir_bridge import registry
from ir_bridge.errors import IRBridgeError, PassError
from ir_bridge.ir import Graph
from ir_bridge.passes import PIPELINES, PassInfo, resolve, run_passes


def graph():
    g = Graph()
    x = g.add_input("x", (None, 3))
    g.set_outputs([g.add_node("Dropout", [g.add_node("Relu", [x])])])
    return g


def boom(graph, ctx):
    raise ValueError("kaboom")


def breaker(graph, ctx):
    node = next(n for n in graph if n.op == "Relu")
    node.attrs["bogus"] = True
    return True


def test_failure_names_the_pass_and_what_ran_before():
    with pytest.raises(PassError, match=r"'boom' failed after \['eliminate-dropout'\].*kaboom"):
        run_passes(graph(), ["eliminate-dropout", PassInfo("boom", "", boom)])


def test_verify_after_each_pass_catches_a_broken_graph():
    with pytest.raises(PassError, match="'breaker' broke the graph"):
        run_passes(graph(), [PassInfo("breaker", "", breaker)], verify=True)


def test_ordering_constraints_are_checked():
    with pytest.raises(IRBridgeError, match="must run after"):
        resolve(["fuse-activation", "fold-batchnorm"])


def test_pipeline_names_expand_and_unknown_names_fail():
    assert [p.name for p in resolve("none")] == []
    assert [p.name for p in resolve("default")] == PIPELINES["default"]
    assert [p.name for p in resolve("default,layout-nchw")][-1] == "layout-nchw"
    with pytest.raises(IRBridgeError, match="no pass named 'nope'"):
        resolve("nope")


def test_input_graph_is_not_modified_and_log_has_op_diff():
    g = graph()
    result = run_passes(g, "default")
    assert g.op_counts()["Dropout"] == 1
    assert result.graph.op_counts().get("Dropout") is None
    assert "eliminate-dropout: Dropout -1 (1->0)" in result.log


def test_every_registered_pass_is_described_and_importable():
    table = registry.passes()
    for name in ["eliminate-dropout", "fold-flatten", "fuse-activation", "fold-batchnorm",
                 "layout-nchw", "layout-nhwc", "constant-folding", "dead-code",
                 "shape-inference"]:
        assert table[name].description
