"""The Python API: load / optimize / emit / convert / run / check_parity.

Everything here is thin: it picks a frontend or backend from the registry, runs the pass
manager, and hands over.  The CLI is thin over this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import registry
from .errors import IRBridgeError
from .ir import Graph
from .parity import ParityReport, check as _check
from .passes import run_passes
from .passes.pipelines import LAYOUT_PASSES


def load(src: Any, *, format: str | None = None, **options) -> Graph:
    """Read ``src`` into an IR graph.

    ``src`` is a path (``.keras``, ``.h5``, ``.onnx``, ``.json``, ``.yaml``/``.yml``) or a live
    ``keras.Model``, ``onnx.ModelProto`` or ``modeci_mdf`` Model; ``format`` names the
    frontend explicitly.  Frontend options pass through (e.g. ``lowering="tf2onnx"`` for
    Keras).  The graph comes back with shapes inferred and verified.
    """
    if isinstance(src, (str, Path)) and not Path(src).exists():
        raise IRBridgeError(f"no such file: {str(src)!r}")
    frontend = registry.frontend_for(src, format)
    graph = frontend.load(src, **options)
    graph.infer_shapes()
    graph.verify()
    return graph


def optimize(graph: Graph, passes: str | Sequence = "default", *, verify: bool = False) -> Graph:
    """Run a pipeline (a name such as ``"default"``/``"none"``, ``"a,b,c"``, or a list of pass
    names) over a copy of ``graph``; returns the new graph.  ``verify`` checks the graph
    after every pass."""
    return run_passes(graph, passes, verify=verify).graph


def prepare(graph: Graph, to: str, *, verify: bool = False) -> Graph:
    """Run what backend ``to`` needs before emitting (its layout, its own passes) on a copy."""
    backend = registry.get_backend(to)
    needed = list(backend.prepare)
    if backend.layout:
        needed.insert(0, LAYOUT_PASSES[backend.layout])
    if not needed:
        return graph.copy()
    return run_passes(graph, needed + ["dead-code"], verify=verify).graph


def emit(graph: Graph, to: str, path: str | Path | None = None, **options):
    """Emit ``graph`` with backend ``to`` (``"mdf"``, ``"onnx"``, ``"keras"`` or a plugin's).

    Runs the backend's layout preparation first.  Writes ``path`` when given; returns the
    artifact (an MDF ``Model``, an ``onnx.ModelProto``, a ``keras.Model``…).
    """
    backend = registry.get_backend(to)
    if path is not None:
        _check_output_path(Path(path), backend)
    prepared = prepare(graph, to)
    try:
        return backend.emit(prepared, None if path is None else str(path), **options)
    except OSError as exc:
        raise IRBridgeError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc


def _check_output_path(path: Path, backend) -> None:
    """Refuse, before any work, an output the backend cannot write."""
    if backend.suffixes and path.suffix.lower() not in backend.suffixes:
        raise IRBridgeError(f"backend {backend.name!r} writes {', '.join(backend.suffixes)} "
                            f"files; cannot write {str(path)!r}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise IRBridgeError(f"cannot write {str(path)!r}: {str(parent)!r} is a file")
            break


def convert(src: Any, to: str, path: str | Path | None = None, passes: str | Sequence = "default",
            validate: bool = False, *, format: str | None = None, inputs=None, atol: float = 1e-5,
            load_options: dict | None = None, **options):
    """Load ``src``, optimise it with ``passes``, emit it with backend ``to``.

    Returns the artifact; with ``validate`` returns ``(artifact, ParityReport)`` comparing
    the source in its own runtime with the artifact in its own runtime on ``inputs`` (seeded
    random inputs of batch 8 when not given).  The report is not raised on: check ``ok``.
    """
    graph = load(src, format=format, **(load_options or {}))
    graph = optimize(graph, passes)
    artifact = emit(graph, to, path, **options)
    if not validate:
        return artifact
    if inputs is None:
        inputs = random_inputs(graph)
    target = path if path is not None else artifact
    report = _check(src, target, inputs, atol=atol)
    return artifact, report


def random_inputs(graph: Graph, batch: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Seeded inputs matching the graph's input types (standard normal floats; small ints)."""
    rng = np.random.default_rng(seed)
    out = []
    for node in graph.inputs:
        shape = [batch if d is None else d for d in node.type.shape]
        if np.dtype(node.type.dtype).kind in "iu":
            out.append(rng.integers(0, 2, size=shape).astype(node.type.dtype))
        else:
            out.append(rng.standard_normal(shape).astype(node.type.dtype))
    return out


def run(model: Any, inputs) -> list[np.ndarray]:
    """Run ``model`` on ``inputs`` (an array, a list, or a dict by input name) with the
    ir_bridge engine; returns the list of outputs.

    ``model`` is an IR ``Graph``, a path in any registered format, or a live model: it is
    loaded into the IR and compiled to a numpy plan (no framework runtime is used).
    """
    from .engine.plan import Plan

    graph = model if isinstance(model, Graph) else load(model)
    return Plan(graph).run(inputs)


def check_parity(a: Any, b: Any, inputs, atol: float = 1e-5, rtol: float = 1e-4) -> ParityReport:
    """Run ``a`` and ``b`` each in its own runtime on ``inputs`` and compare the outputs.

    Returns a :class:`~ir_bridge.parity.ParityReport` (``.ok``, ``.max_abs``, per-output
    details); call ``.raise_if_failed()`` to turn a mismatch into ``ParityError``.
    """
    return _check(a, b, inputs, atol=atol, rtol=rtol)
