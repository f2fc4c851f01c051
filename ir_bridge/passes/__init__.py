"""Passes: rewrites of the IR that preserve its meaning, and the manager that runs them.

The built-in passes register through the ``ir_bridge.passes`` entry points like any
plugin's; importing this package imports only the infrastructure.
"""

from .base import PassContext, PassInfo, PassResult, register_pass
from .manager import resolve, run_passes
from .pipelines import PIPELINES

__all__ = ["register_pass", "PassInfo", "PassContext", "PassResult", "run_passes", "resolve",
           "PIPELINES"]
