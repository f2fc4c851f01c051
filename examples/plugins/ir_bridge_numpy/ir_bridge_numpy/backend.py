"""The ``numpy`` backend: emit the IR as a standalone NumPy module and run such modules.

``ir_bridge.emit(graph, "numpy", "model.py")`` writes ``model.py`` and ``model.npz`` beside
it.  The module needs only numpy; ``predict(*inputs)`` runs one batch.

The backend asks for NHWC.  Keras models, the main source, are NHWC already, so the layout
pass has nothing to do for them; the flatten before the first Dense needs no weight
permutation; and channels-last suits the generated im2col, where each window is a
contiguous run of ``kernel x channels`` values multiplied by one matrix.  ONNX sources
(NCHW) get one transpose at the input, placed by the layout pass.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ir_bridge.errors import IRBridgeError
from ir_bridge.registry import register_backend

from .codegen import GeneratedModule, generate


@dataclass
class NumpyModule:
    """What the numpy backend emits: the module source and its weights.

    ``path`` is where it was written, if it was.  :meth:`save` writes ``<stem>.py`` and
    ``<stem>.npz``; :meth:`load` imports the written module.
    """

    generated: GeneratedModule
    path: Path | None = None

    @property
    def source(self) -> str:
        """The Python source of the module."""
        return self.generated.source

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The arrays stored in the ``.npz`` beside the module."""
        return self.generated.weights

    def save(self, path) -> Path:
        """Write the module to ``path`` (a ``.py`` file) and its weights beside it; returns
        ``path``.  Each file appears whole or not at all."""
        path = Path(path)
        if path.suffix != ".py":
            raise IRBridgeError(f"the numpy backend writes a .py module, not {str(path)!r}")
        with _atomic(path.with_suffix(".npz")) as f:
            np.savez(f, **self.weights)
        with _atomic(path) as f:
            f.write(self.source.encode("utf-8"))
        self.path = path
        return path

    def load(self):
        """Import the saved module and return it (saving it to a temporary place first if
        it was never saved)."""
        if self.path is None:
            self.save(Path(tempfile.mkdtemp(prefix="ir_bridge_numpy_")) / "model.py")
        return load_module(self.path)


@contextlib.contextmanager
def _atomic(path: Path):
    # Written beside the target and renamed over it, so a failure leaves no partial file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_counter = itertools.count()


def load_module(path):
    """Import a generated module from its file path and return the module object.

    This runs code that this backend generated; do not point it at files of unknown origin.
    The module is not added to ``sys.modules``, so loading a rewritten file again gives the
    new code.
    """
    path = Path(path)
    if not path.is_file():
        raise IRBridgeError(f"no generated numpy module at {str(path)!r}")
    name = f"ir_bridge_numpy_generated_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise IRBridgeError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_numpy_module(artifact):
    """The backend's runner: ``artifact`` (a path or a :class:`NumpyModule`) ->
    ``fn(list of input arrays) -> list of output arrays``."""
    module = artifact.load() if isinstance(artifact, NumpyModule) else load_module(artifact)

    def run(inputs):
        inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        out = module.predict(*inputs)
        return list(out) if isinstance(out, tuple) else [out]

    return run


@register_backend("numpy", suffixes=(".py",), layout="NHWC", runner=run_numpy_module,
                  description="A standalone NumPy module (.py + .npz) that runs without "
                              "ir_bridge (ir_bridge_numpy plugin).")
def emit_numpy(graph, path=None, **options) -> NumpyModule:
    """Generate the module for ``graph``; write it to ``path`` (``.py``) when given.

    Returns a :class:`NumpyModule`.  No options are taken; an unknown one is an error so a
    typo does not pass silently.
    """
    if options:
        raise IRBridgeError(f"the numpy backend takes no options, got {sorted(options)}")
    artifact = NumpyModule(generate(graph))
    if path is not None:
        artifact.save(path)
    return artifact
