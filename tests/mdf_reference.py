"""modeci_mdf's reference engine as a test oracle.

``EvaluableGraph`` evaluates the strings in an MDF file with ``eval``: the tests use it only
on files ir_bridge itself wrote (or files built in the test), to show that a file means the
same in the MDF tools as in ir_bridge's own engine (an error our writer and our reader both
made would cancel out there)."""

from __future__ import annotations

import contextlib
import io

import numpy as np


def _model(path_or_model):
    from modeci_mdf.utils import load_mdf

    return path_or_model if hasattr(path_or_model, "graphs") else load_mdf(str(path_or_model))


def evaluate(path_or_model, initializer=None):
    """``{(node, port): value}`` of every output port after one evaluation of the first
    graph of an MDF file or ``modeci_mdf`` Model, with ``initializer`` for the free input
    ports."""
    from modeci_mdf.execution_engine import EvaluableGraph

    graph = _model(path_or_model).graphs[0]
    with contextlib.redirect_stdout(io.StringIO()):
        eg = EvaluableGraph(graph, verbose=False)
        eg.evaluate(initializer=initializer or {})
    return {(n.id, p.id): np.asarray(eg.enodes[n.id].evaluable_outputs[p.id].curr_value)
            for n in graph.nodes for p in n.output_ports}


def run(path_or_model, inputs) -> list[np.ndarray]:
    """The graph outputs, in order, for ``inputs`` given in the order of the graph inputs
    (both listed in the graph metadata, as ir_bridge writes them)."""
    graph = _model(path_or_model).graphs[0]
    ports = [ref.split(".")[1] for ref in graph.metadata["inputs"]]
    values = evaluate(path_or_model, dict(zip(ports, inputs)))
    return [values[tuple(ref.split("."))] for ref in graph.metadata["outputs"]]
