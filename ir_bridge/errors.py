"""The exception hierarchy of ir_bridge.

Every error the package raises on purpose derives from :class:`IRBridgeError`, so a
caller (and the CLI) can tell "the model or file is wrong" from a bug in ir_bridge.
This module imports nothing, so every layer may use it.
"""

from __future__ import annotations


class IRBridgeError(Exception):
    """Base class of every error ir_bridge raises on purpose."""

    exit_code = 2


class UnsupportedLayerError(IRBridgeError):
    """A source model holds layers or ops that no handler converts.

    ``layers`` is a list of ``(name, class_name)`` pairs, all of them, found before any
    conversion started.
    """

    def __init__(self, message: str, layers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.layers = list(layers or [])


class InvalidModelError(IRBridgeError):
    """A model file or object is malformed: names the file and what is wrong."""


class MissingDependencyError(IRBridgeError):
    """An optional library is not installed; the message names the pip extra."""


class VerificationError(IRBridgeError):
    """``Graph.verify()`` found broken invariants; ``problems`` lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n  ".join(self.problems)
        super().__init__(f"graph verification failed ({len(self.problems)} problem(s)):\n  {lines}")


class PassError(IRBridgeError):
    """A pass raised, or broke the graph; says which pass and which ran before it."""


class ExecutionError(IRBridgeError):
    """Running a graph or an MDF plan failed: names the node and its origin."""


class UnsafeExpressionError(IRBridgeError):
    """An MDF expression uses something outside the engine's allow-list."""


class ParityError(IRBridgeError):
    """Two runnables disagree beyond the tolerance."""

    exit_code = 1


def missing_dependency(package: str, extra: str) -> MissingDependencyError:
    """Build the error for a missing optional library, naming the extra to install."""
    return MissingDependencyError(
        f"{package} is not installed; install it with: pip install 'ir_bridge[{extra}]'"
    )
