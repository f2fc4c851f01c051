"""Properties over random graphs: every pass preserves meaning and is idempotent.

Quick profile in CI (40 graphs per property); ``IR_BRIDGE_FUZZ=1`` runs thousands.
"""

import numpy as np
import pytest
from hypothesis import given

from conftest import assert_preserves
from ir_bridge import registry
from ir_bridge.passes import run_passes
from strategies import graphs

PASSES = sorted(registry.passes())


def _tolerance(graph):
    # Folding BN and pushing transposes reorders float32 sums; scale with output size.
    return 2e-5


@pytest.mark.parametrize("name", PASSES)
@given(graph=graphs())
def test_pass_preserves_meaning_and_is_idempotent(name, graph):
    result = assert_preserves(graph, name, atol=_tolerance(graph))
    again = run_passes(result.graph, name, verify=True)
    assert not again.changed, f"{name} changed the graph a second time: {again.log}"


@pytest.mark.parametrize("pipeline", ["default", "default,layout-nchw",
                                      "default,layout-nchw,layout-nhwc"])
@given(graph=graphs())
def test_pipelines_preserve_meaning(pipeline, graph):
    result = assert_preserves(graph, pipeline, atol=_tolerance(graph))
    if pipeline.endswith("layout-nhwc"):
        assert not any(n.op == "Transpose" for n in result.graph)
