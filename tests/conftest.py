"""Shared test helpers: seeded inputs and translation validation of passes."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ir_bridge  # noqa: E402
from ir_bridge.passes import run_passes  # noqa: E402


def inputs_for(graph, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Seeded standard-normal inputs matching the graph's input types."""
    return ir_bridge.api.random_inputs(graph, batch=batch, seed=seed)


def assert_preserves(graph, passes, *, batch: int = 4, atol: float = 1e-5, seed: int = 0):
    """Run ``passes`` with verify-after-each-pass; assert the interpreter's outputs are
    unchanged (translation validation) and return the pass result."""
    xs = inputs_for(graph, batch, seed)
    before = ir_bridge.run(graph, xs)
    result = run_passes(graph, passes, verify=True)
    after = ir_bridge.run(result.graph, xs)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=atol)
    return result


@pytest.fixture(scope="module", autouse=True)
def _fresh_keras_names():
    """Keras numbers auto-named layers and models process-wide: reset the counters after
    each test module, so tests elsewhere that rely on default names do not see its models."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
