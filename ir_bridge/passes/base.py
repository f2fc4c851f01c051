"""What a pass is: a named function over the graph, with its metadata as data.

A pass function takes ``(graph, ctx)``, rewrites ``graph`` in place through the ``Graph``
methods, and returns whether it changed anything.  ``ctx.explain(node, reason)`` records why
a rewrite did *not* fire (shown by ``ir-bridge convert --explain``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .. import registry


@dataclass
class PassContext:
    """Per-run state handed to a pass: the explanations it records."""

    pass_name: str = ""
    notes: list[str] = field(default_factory=list)

    def explain(self, node, reason: str) -> None:
        """Record that this pass left ``node`` alone, and why."""
        name = getattr(node, "name", node)
        self.notes.append(f"{self.pass_name} skipped {name}: {reason}")


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: ``fn(graph, ctx) -> bool`` plus its metadata.

    ``after`` names passes that must come earlier whenever both are in one pipeline;
    ``once`` passes run in the first round of a pipeline only (not to a fixpoint).
    """

    name: str
    description: str
    fn: Callable
    after: tuple[str, ...] = ()
    module: str = ""
    once: bool = False

    def __call__(self, graph, ctx: PassContext | None = None) -> bool:
        return bool(self.fn(graph, ctx or PassContext(self.name)))


@dataclass(frozen=True)
class PassResult:
    """What running a pipeline did: the graph, whether it changed, and the log."""

    graph: object
    changed: bool
    log: list[str]
    notes: list[str]


def register_pass(name: str, description: str, *, after: tuple[str, ...] = (),
                  once: bool = False):
    """Decorator: register ``fn(graph, ctx) -> bool`` as the pass ``name``."""

    def wrap(fn):
        registry._add_pass(PassInfo(name, description, fn, tuple(after), fn.__module__, once))
        return fn

    return wrap
