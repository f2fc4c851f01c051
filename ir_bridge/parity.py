"""Parity: run two runnable things on the same inputs and compare every output.

A *runnable* is an IR ``Graph`` (run by the IR interpreter), a path or live model of any
registered format (run in its own runtime by the backend of that format: Keras, onnxruntime,
the ir_bridge MDF engine), or a plain callable taking a list of arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import IRBridgeError, ParityError


@dataclass(frozen=True)
class OutputParity:
    """Comparison of one output: max abs / rel error and argmax agreement (last axis)."""

    index: int
    shape: tuple
    max_abs: float
    max_rel: float
    argmax_agreement: float


@dataclass(frozen=True)
class ParityReport:
    """The comparison of two runnables; ``ok`` when every output is within tolerance."""

    outputs: list[OutputParity]
    atol: float
    rtol: float
    ok: bool
    batch: int = 0
    labels: tuple[str, str] = ("a", "b")
    notes: list[str] = field(default_factory=list)

    @property
    def max_abs(self) -> float:
        """Largest absolute difference over all outputs."""
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        """Largest relative difference over all outputs."""
        return max((o.max_rel for o in self.outputs), default=0.0)

    def raise_if_failed(self) -> "ParityReport":
        """Raise :class:`ParityError` unless ``ok``; returns self for chaining."""
        if not self.ok:
            raise ParityError(str(self))
        return self

    def __str__(self) -> str:
        a, b = self.labels
        head = (f"parity {a} vs {b}: {'OK' if self.ok else 'FAILED'} "
                f"(batch {self.batch}, atol {self.atol:g}, rtol {self.rtol:g})")
        lines = [head] + [
            f"  output {o.index} {o.shape}: max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}, "
            f"argmax agreement {o.argmax_agreement:.2%}" for o in self.outputs
        ] + [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def compare(ya: Sequence[np.ndarray], yb: Sequence[np.ndarray], atol: float = 1e-5,
            rtol: float = 1e-4, labels=("a", "b")) -> ParityReport:
    """Compare two lists of outputs elementwise; shapes must match."""
    ya, yb = list(ya), list(yb)
    notes = []
    ok = True
    if len(ya) != len(yb):
        return ParityReport([], atol, rtol, False, labels=labels,
                            notes=[f"{len(ya)} outputs vs {len(yb)}"])
    outs = []
    for i, (a, b) in enumerate(zip(ya, yb)):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            ok = False
            notes.append(f"output {i}: shape {a.shape} vs {b.shape}")
            continue
        diff = np.abs(a - b)
        finite = np.isfinite(a) & np.isfinite(b)
        same_nonfinite = ~finite & ((a == b) | (np.isnan(a) & np.isnan(b)))
        diff = np.where(same_nonfinite, 0.0, diff)
        max_abs = float(diff.max()) if diff.size else 0.0
        rel = diff / np.maximum(np.abs(a), 1e-12)
        max_rel = float(rel.max()) if rel.size else 0.0
        agree = 1.0
        if a.ndim >= 1 and a.size and a.shape[-1] > 1:
            agree = float(np.mean(a.argmax(-1) == b.argmax(-1)))
        within = bool(np.all(diff <= atol + rtol * np.abs(a)))
        ok &= within and not np.isnan(max_abs)
        outs.append(OutputParity(i, a.shape, max_abs, max_rel, agree))
    batch = int(np.asarray(ya[0]).shape[0]) if ya and np.ndim(ya[0]) else 0
    return ParityReport(outs, atol, rtol, ok, batch, tuple(labels), notes)


def runner_for(x) -> Callable[[list], list]:
    """A function ``list of inputs -> list of outputs`` running ``x`` in its own runtime."""
    from . import registry
    from .ir import Graph

    if isinstance(x, Graph):
        from .engine.plan import Plan

        return Plan(x).run
    if isinstance(x, (str, Path)):
        suffix = Path(x).suffix.lower()
        for be in registry.backends().values():
            if suffix in be.suffixes and be.runner is not None:
                return be.runner(x)
        raise IRBridgeError(f"no runtime for {str(x)!r}: no backend runs {suffix!r} files")
    fe = registry.frontend_for(x)
    be = registry.backends().get(fe.name)
    if be is not None and be.runner is not None:
        return be.runner(x)
    if callable(x):
        return lambda inputs: _as_list(x(inputs))
    raise IRBridgeError(f"do not know how to run an object of type {type(x).__qualname__}")


def _as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def check(a, b, inputs, atol: float = 1e-5, rtol: float = 1e-4, labels=None) -> ParityReport:
    """Run ``a`` and ``b`` on ``inputs`` (an array or a list of arrays) and compare."""
    inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    ya = runner_for(a)(inputs)
    yb = runner_for(b)(inputs)
    return compare(ya, yb, atol, rtol, labels or (_label(a), _label(b)))


def _label(x) -> str:
    if isinstance(x, (str, Path)):
        return Path(x).name
    return type(x).__name__
