"""The pass manager: run a pipeline to a fixpoint, check the graph after every pass.

Ordering constraints (``after=``) are checked when a pipeline is built.  A pass that raises
is re-raised as :class:`PassError` naming it and the passes that ran before it; with
``verify=True`` (tests, ``--debug``) ``graph.verify()`` runs after every pass.  The log
records an op-count diff per changing pass, e.g. ``fuse-activation: Relu -2 (2->0)``.
"""

from __future__ import annotations

import logging

from ..errors import IRBridgeError, PassError, VerificationError
from .base import PassContext, PassInfo, PassResult

log = logging.getLogger("ir_bridge.passes")


def resolve(passes) -> list[PassInfo]:
    """Turn a pipeline spec into pass objects: a pipeline name, a comma-separated string of
    pass names, or a list of names / ``PassInfo``.  Checks ``after`` constraints."""
    from .. import registry
    from .pipelines import PIPELINES

    if isinstance(passes, str):
        passes = [p.strip() for p in passes.split(",") if p.strip()]
    names = []
    for p in passes:
        # A pipeline name inside a list stands for its passes.
        names.extend(PIPELINES[p] if isinstance(p, str) and p in PIPELINES else [p])
    infos = [p if isinstance(p, PassInfo) else registry.get_pass(p) for p in names]
    position = {p.name: i for i, p in enumerate(infos)}
    for i, p in enumerate(infos):
        for before in p.after:
            if position.get(before, -1) > i:
                raise IRBridgeError(f"pipeline order: {p.name!r} must run after {before!r}")
    return infos


def _diff(before: dict, after: dict) -> str:
    parts = []
    for op in sorted(set(before) | set(after)):
        a, b = before.get(op, 0), after.get(op, 0)
        if a != b:
            parts.append(f"{op} {b - a:+d} ({a}->{b})")
    return ", ".join(parts)


def run_passes(graph, passes, *, verify: bool = False, max_iterations: int = 8,
               copy: bool = True) -> PassResult:
    """Run ``passes`` over ``graph`` until none changes it (at most ``max_iterations``
    rounds).  Returns a :class:`PassResult`; the input graph is left alone when ``copy``."""
    infos = resolve(passes)
    g = graph.copy() if copy else graph
    g.infer_shapes()
    history: list[str] = []
    lines: list[str] = []
    notes: list[str] = []
    changed_any = False
    for _round in range(max_iterations):
        changed_round = False
        notes = []
        for info in infos:
            if info.once and _round:
                continue
            ctx = PassContext(info.name)
            before = g.op_counts()
            try:
                changed = info(g, ctx)
                g.infer_shapes()
                if verify:
                    g.verify()
            except VerificationError as exc:
                raise PassError(f"pass {info.name!r} broke the graph (after {history}): "
                                f"{exc}") from exc
            except IRBridgeError as exc:
                raise PassError(f"pass {info.name!r} failed after {history}: {exc}") from exc
            except Exception as exc:
                raise PassError(f"pass {info.name!r} failed after {history}: "
                                f"{type(exc).__name__}: {exc}") from exc
            history.append(info.name)
            notes.extend(ctx.notes)
            if changed:
                changed_round = True
                diff = _diff(before, g.op_counts())
                lines.append(f"{info.name}: {diff or 'rewired'}")
                log.info("%s: %s", info.name, diff or "rewired")
        changed_any |= changed_round
        if not changed_round:
            break
    return PassResult(g, changed_any, lines, notes)
