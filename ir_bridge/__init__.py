"""ir_bridge: a pluggable compiler for neural-network models.

Load a model (Keras, ONNX, MDF) into one IR, optimise it with passes, emit MDF, ONNX or
Keras, run it with a numpy engine, and prove every artifact computes what the source does::

    import ir_bridge
    graph = ir_bridge.load("model.keras")
    graph = ir_bridge.optimize(graph)              # the "default" pipeline
    ir_bridge.emit(graph, "mdf", "model.json")
    y = ir_bridge.run("model.json", x)

Importing this package loads no deep-learning framework.
"""

from .api import check_parity, convert, emit, load, optimize, run
from .errors import (
    ExecutionError,
    InvalidModelError,
    IRBridgeError,
    MissingDependencyError,
    ParityError,
    PassError,
    UnsafeExpressionError,
    UnsupportedLayerError,
    VerificationError,
)
from .ir import Graph, Node, TensorType

__version__ = "0.1.0"

__all__ = [
    "load", "optimize", "emit", "convert", "run", "check_parity",
    "Graph", "Node", "TensorType",
    "IRBridgeError", "UnsupportedLayerError", "InvalidModelError", "MissingDependencyError",
    "VerificationError", "PassError", "ExecutionError", "UnsafeExpressionError", "ParityError",
    "__version__",
]
