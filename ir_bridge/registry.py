"""Frontends, backends and passes by name, filled through entry points.

Three entry-point groups, ``ir_bridge.frontends``, ``ir_bridge.backends`` and
``ir_bridge.passes``, name a module (or object) to import; importing it runs the
``@register_frontend`` / ``@register_backend`` / ``@register_pass`` decorators.  The in-tree
components are declared in ``pyproject.toml`` exactly like a plugin's.  Nothing is imported
until a name is looked up (or everything is listed); a plugin that fails to load, registers
nothing under its name, or clashes with another is an error, never a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import IRBridgeError

GROUPS = {"frontend": "ir_bridge.frontends", "backend": "ir_bridge.backends",
          "pass": "ir_bridge.passes"}


@dataclass(frozen=True)
class Frontend:
    """Reads a model into a Graph: ``load(src, **options) -> Graph``.

    ``suffixes`` are the file suffixes it reads; ``accepts(obj)`` says whether it takes a
    live object (a ``keras.Model``, an ``onnx.ModelProto``…).
    """

    name: str
    load: Callable[..., Any]
    suffixes: tuple[str, ...] = ()
    accepts: Callable[[Any], bool] | None = None
    description: str = ""
    module: str = ""


@dataclass(frozen=True)
class Backend:
    """Emits a Graph: ``emit(graph, path=None, **options) -> artifact``.

    ``layout`` is the data layout the backend needs (the pipeline converts to it);
    ``runner(artifact_or_path) -> fn(list of arrays) -> list of arrays`` runs an artifact in
    its own runtime, for parity checks.
    """

    name: str
    emit: Callable[..., Any]
    suffixes: tuple[str, ...] = ()
    layout: str | None = None
    runner: Callable[[Any], Callable] | None = None
    description: str = ""
    module: str = ""
    prepare: tuple[str, ...] = field(default=())


_frontends: dict[str, Frontend] = {}
_backends: dict[str, Backend] = {}
_passes: dict[str, Any] = {}
_TABLES = {"frontend": _frontends, "backend": _backends, "pass": _passes}
_entry_points: dict[str, dict[str, Any]] | None = None
_loaded: set[tuple[str, str]] = set()


def _add(kind: str, name: str, obj) -> None:
    table = _TABLES[kind]
    old = table.get(name)
    if old is not None and getattr(old, "module", None) != getattr(obj, "module", None):
        raise IRBridgeError(f"{kind} {name!r} is registered twice: by {old.module} and "
                            f"by {obj.module}")
    table[name] = obj


def register_frontend(name: str, *, suffixes=(), accepts=None, description: str = ""):
    """Decorator: register ``load(src, **options) -> Graph`` as frontend ``name``."""

    def wrap(fn):
        _add("frontend", name, Frontend(name, fn, tuple(suffixes), accepts,
                                        description or _first_line(fn), fn.__module__))
        return fn

    return wrap


def register_backend(name: str, *, suffixes=(), layout=None, runner=None, prepare=(),
                     description: str = ""):
    """Decorator: register ``emit(graph, path=None, **options)`` as backend ``name``.

    ``prepare`` lists passes that must run before emitting (besides the layout change).
    """

    def wrap(fn):
        _add("backend", name, Backend(name, fn, tuple(suffixes), layout, runner,
                                      description or _first_line(fn), fn.__module__,
                                      tuple(prepare)))
        return fn

    return wrap


def _add_pass(pass_obj) -> None:
    """Used by ``ir_bridge.passes.register_pass``."""
    _add("pass", pass_obj.name, pass_obj)


def _first_line(fn) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


# ---------------------------------------------------------------- discovery


def _discover() -> dict[str, dict[str, Any]]:
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points  # not at import: it costs ~30 ms

        found: dict[str, dict[str, Any]] = {k: {} for k in GROUPS}
        for kind, group in GROUPS.items():
            for ep in entry_points(group=group):
                prev = found[kind].get(ep.name)
                if prev is not None and prev.value != ep.value:
                    raise IRBridgeError(
                        f"two plugins declare {kind} {ep.name!r}: {prev.value} and {ep.value}")
                found[kind][ep.name] = ep
        _entry_points = found
    return _entry_points


def refresh() -> None:
    """Forget discovered entry points so newly installed plugins are found (already
    registered components stay)."""
    global _entry_points
    _entry_points = None
    _loaded.clear()


def _load_entry_point(kind: str, name: str) -> None:
    ep = _discover()[kind].get(name)
    if ep is None or (kind, name) in _loaded:
        return
    _loaded.add((kind, name))
    try:
        ep.load()
    except Exception as exc:
        raise IRBridgeError(f"plugin {kind} {name!r} ({ep.value}) failed to load: "
                            f"{type(exc).__name__}: {exc}") from exc
    if name not in _TABLES[kind]:
        raise IRBridgeError(f"plugin {kind} {name!r} ({ep.value}) loaded but registered no "
                            f"{kind} named {name!r}")


def _load_all(kind: str) -> dict:
    for name in list(_discover()[kind]):
        _load_entry_point(kind, name)
    return _TABLES[kind]


def _get(kind: str, name: str):
    if name not in _TABLES[kind]:
        _load_entry_point(kind, name)
    try:
        return _TABLES[kind][name]
    except KeyError:
        known = ", ".join(sorted(_load_all(kind))) or "none"
        raise IRBridgeError(f"no {kind} named {name!r}; known: {known}") from None


def get_frontend(name: str) -> Frontend:
    """The frontend registered as ``name``."""
    return _get("frontend", name)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``."""
    return _get("backend", name)


def get_pass(name: str):
    """The pass registered as ``name``."""
    return _get("pass", name)


def frontends() -> dict[str, Frontend]:
    """Every frontend, loading all declared plugins."""
    return dict(_load_all("frontend"))


def backends() -> dict[str, Backend]:
    """Every backend, loading all declared plugins."""
    return dict(_load_all("backend"))


def passes() -> dict[str, Any]:
    """Every pass, loading all declared plugins."""
    return dict(_load_all("pass"))


def entry_point_table() -> list[tuple[str, str, str, str]]:
    """``(kind, name, target, distribution)`` for every declared entry point, without
    importing anything."""
    rows = []
    for kind, eps in _discover().items():
        for name, ep in sorted(eps.items()):
            dist = getattr(getattr(ep, "dist", None), "name", "") or ""
            rows.append((kind, name, ep.value, dist))
    return rows


def frontend_for(src, name: str | None = None) -> Frontend:
    """Pick the frontend for ``src``: by ``name``, by a live object's type, or by suffix."""
    if name:
        return get_frontend(name)
    table = frontends()
    if isinstance(src, (str, Path)):
        suffix = Path(src).suffix.lower()
        for fe in table.values():
            if suffix in fe.suffixes:
                return fe
        known = sorted({s for fe in table.values() for s in fe.suffixes})
        raise IRBridgeError(f"cannot tell the format of {str(src)!r} from its suffix "
                            f"{suffix or '(none)'}; known: {', '.join(known)} (or pass --from)")
    for fe in table.values():
        if fe.accepts is not None and fe.accepts(src):
            return fe
    raise IRBridgeError(f"no frontend accepts an object of type {type(src).__module__}."
                        f"{type(src).__qualname__}")
