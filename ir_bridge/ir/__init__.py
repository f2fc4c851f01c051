"""The intermediate representation: ``Graph``, ``Node``, ``TensorType`` and the op schemas.

Imports only numpy and networkx.
"""

from . import opset as _opset  # noqa: F401  (declares the op table)
from .graph import Graph
from .node import Node
from .schema import REQUIRED, OpSchema, all_schemas, define_op, get_schema
from .types import LAYOUTS, NCHW, NHWC, TensorType

__all__ = ["Graph", "Node", "TensorType", "OpSchema", "REQUIRED", "define_op", "get_schema",
           "all_schemas", "NHWC", "NCHW", "LAYOUTS"]
