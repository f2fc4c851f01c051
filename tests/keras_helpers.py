"""Helpers shared by the tests that build Keras models: seeded weights, seeded inputs, and
comparisons.  Importing this module does not import Keras (the caller does, usually through
``pytest.importorskip``); Keras's per-process name counters are reset after every test
module by ``conftest._fresh_keras_names``."""

from __future__ import annotations

import numpy as np

#: The absolute tolerance of float32 comparisons throughout the suite.
ATOL = 1e-5


def randomize(model, seed: int = 0, scale: float = 0.5):
    """Give every float weight of ``model`` seeded, non-trivial values: ``scale * N(0, 1)``,
    and ``U(0.5, 2)`` for variances (so biases, batch-norm statistics and PReLU slopes are
    all exercised).  Returns ``model``."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if not str(v.dtype).startswith("float"):
            continue
        shape = tuple(v.shape)
        if "variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        else:
            v.assign((scale * rng.standard_normal(shape)).astype("float32"))
    return model


def keras_inputs(model, seed: int = 0, scale: float = 1.0, batch: int = 4,
                 unknown: int = 13) -> list[np.ndarray]:
    """Seeded inputs for ``model``'s inputs: ``scale * N(0, 1)`` floats, integers in
    [0, 10) for integer inputs; unknown dims become ``unknown`` (13: odd, so 'same'
    padding is uneven)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in model.inputs:
        shape = (batch, *(unknown if d is None else d for d in t.shape[1:]))
        if str(t.dtype).startswith("int"):
            out.append(rng.integers(0, 10, shape).astype(str(t.dtype)))
        else:
            out.append((scale * rng.standard_normal(shape)).astype("float32"))
    return out


def layer_types(model) -> list[str]:
    """The class names of ``model``'s layers, without the input layers."""
    return [type(layer).__name__ for layer in model.layers
            if type(layer).__name__ != "InputLayer"]


def assert_all_close(got, want, atol: float = ATOL):
    """Same number of outputs, same shapes, values within ``atol``."""
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=0, atol=atol)
