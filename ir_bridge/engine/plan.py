"""Compile an IR graph once into a flat execution plan, then run batches through it.

A plan is a list of steps ``(kernel, input slots, output slot)`` in topological order; the
values live in a list of slots, and each slot is released right after its last use, so a
batch runs with no graph walking and no dict churn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import ExecutionError, IRBridgeError
from ..ops import kernel_for


@dataclass(frozen=True, slots=True)
class Step:
    """One kernel call of a plan."""

    name: str
    origin: str | None
    op: str
    fn: object
    args: tuple[int, ...]
    out: int
    free: tuple[int, ...]


class Plan:
    """A compiled graph: call :meth:`run` with the graph inputs to get its outputs."""

    def __init__(self, graph):
        nodes = list(graph)
        slot = {n.name: i for i, n in enumerate(nodes)}
        self.input_names = [n.name for n in graph.inputs]
        self.input_types = [n.type for n in graph.inputs]
        self.output_names = graph.output_names
        self._input_slots = [slot[n] for n in self.input_names]
        self._output_slots = [slot[n] for n in self.output_names]
        self._n_slots = len(nodes)
        last_use: dict[int, int] = {}
        compute = [n for n in nodes if n.op != "Input"]
        for step_i, node in enumerate(compute):
            for i in node.inputs:
                last_use[slot[i]] = step_i
        keep = set(self._output_slots)
        frees: dict[int, list[int]] = {}
        for s, step_i in last_use.items():
            if s not in keep:
                frees.setdefault(step_i, []).append(s)
        steps = []
        for step_i, node in enumerate(compute):
            try:
                fn = kernel_for(node)
            except (ValueError, TypeError) as exc:
                raise ExecutionError(f"cannot compile {_where(node.name, node.origin)}: {exc}")
            steps.append(Step(node.name, node.origin, node.op, fn,
                              tuple(slot[i] for i in node.inputs), slot[node.name],
                              tuple(frees.get(step_i, ()))))
        self.steps = steps

    def run(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; ``inputs`` by position or by input name. Returns the outputs in
        order."""
        arrays = self._check_inputs(inputs)
        values: list = [None] * self._n_slots
        for s, a in zip(self._input_slots, arrays):
            values[s] = a
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            for step in self.steps:
                try:
                    values[step.out] = step.fn(*[values[a] for a in step.args])
                except IRBridgeError:
                    raise
                except Exception as exc:  # a kernel failed: say where
                    raise ExecutionError(
                        f"while executing {_where(step.name, step.origin)} ({step.op}): "
                        f"{type(exc).__name__}: {exc}") from exc
                for f in step.free:
                    values[f] = None
        return [values[s] for s in self._output_slots]

    __call__ = run

    def _check_inputs(self, inputs):
        if isinstance(inputs, Mapping):
            missing = [n for n in self.input_names if n not in inputs]
            extra = [n for n in inputs if n not in self.input_names]
            if missing or extra:
                raise ExecutionError(f"inputs {sorted(inputs)} do not match the graph inputs "
                                     f"{self.input_names}")
            inputs = [inputs[n] for n in self.input_names]
        elif isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = list(inputs)
        if len(inputs) != len(self.input_names):
            raise ExecutionError(f"got {len(inputs)} input(s), the model takes "
                                 f"{len(self.input_names)}: {self.input_names}")
        out = []
        for name, t, a in zip(self.input_names, self.input_types, inputs):
            a = np.asarray(a)
            if a.dtype.kind not in "fiub":
                raise ExecutionError(f"input {name!r}: dtype {a.dtype} is not numeric")
            if a.ndim != len(t.shape) or any(
                    d is not None and d != s for d, s in zip(t.shape, a.shape)):
                raise ExecutionError(f"input {name!r}: shape {a.shape} does not match "
                                     f"{tuple('?' if d is None else d for d in t.shape)}")
            want = np.dtype(t.dtype)
            out.append(a if a.dtype == want else a.astype(want))
        return out


def _where(name, origin):
    return f"node {name!r}" + (f" (layer {origin!r})" if origin and origin != name else "")


def compile_graph(graph) -> Plan:
    """Compile ``graph`` (after ``infer_shapes``) into a :class:`Plan`."""
    return Plan(graph)


def run_graph(graph, inputs) -> list[np.ndarray]:
    """Compile and run ``graph`` once on ``inputs``; returns the list of outputs."""
    return Plan(graph).run(inputs)
