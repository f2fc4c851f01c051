"""Import an optional library on first use, with an error that names the pip extra."""

from __future__ import annotations

from importlib import import_module

from .errors import missing_dependency


def require(module: str, extra: str, package: str | None = None):
    """Import and return ``module``; raise ``MissingDependencyError`` naming ``extra`` if it
    is not installed."""
    try:
        return import_module(module)
    except ImportError as exc:
        raise missing_dependency(package or module.split(".")[0], extra) from exc
