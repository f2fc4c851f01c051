"""The Keras frontend: a Keras 3 model (live, ``.keras`` or ``.h5``) into the IR.

The walker reads the model's own functional graph, never the layer list: a Functional
model (and a built Sequential, through the Functional Keras builds for it) records every
layer call as a ``Node`` whose input ``KerasTensor``\\ s point back, through
``_keras_history``, to the call that made them.  Visiting ``_nodes_by_depth`` from the
deepest level up is the order Keras itself executes in, so branches, merges, several
inputs and outputs and shared layers come out right.  A nested model (a Model used as a
layer) is inlined: its inputs are aliased to the outer tensors feeding it and its outputs
to the outer call's outputs; its layers get the nested model's name as a prefix.

Conversion is two passes over that list of calls: first every call is checked (a handler
exists, its options are supported, it is not called in training mode or with masks), and
all problems are raised together as one :class:`UnsupportedLayerError`; only then are IR
nodes built, by the handlers in :mod:`ir_bridge.frontends.keras_layers`.

``keras`` is imported inside functions only: importing this module loads no tensorflow.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidModelError, IRBridgeError, UnsupportedLayerError
from ..ir import Graph
from ..registry import register_frontend
from . import keras_layers
from .keras_layers import supported_layers

LOWERINGS = ("native", "tf2onnx")
_HINT = 'try `--keras-lowering tf2onnx` (API: load(..., lowering="tf2onnx"))'


def _is_keras_model(obj) -> bool:
    """Whether ``obj`` is a ``keras.Model``, without importing keras if nobody has."""
    keras = sys.modules.get("keras")
    model_cls = getattr(keras, "Model", None) if keras is not None else None
    return model_cls is not None and isinstance(obj, model_cls)


@register_frontend("keras", suffixes=(".keras", ".h5"), accepts=_is_keras_model,
                   description="Keras 3 models: .keras/.h5 files or live keras.Model objects")
def load(src, *, lowering: str = "native", **options) -> Graph:
    """Read a Keras model into an IR graph.

    ``src`` is a live ``keras.Model`` or a path to a ``.keras``/``.h5`` file (loaded with
    ``safe_mode=True``).  ``lowering="native"`` (the default) converts layer by layer with
    this frontend's handlers; ``lowering="tf2onnx"`` delegates to
    ``ir_bridge.frontends.keras_tf2onnx`` when that module is installed.

    Returns the graph: inputs named after the Keras inputs (batch dim ``None``), one or more
    nodes per layer call with ``origin`` set to the layer's name, outputs in the model's
    order.  Raises ``UnsupportedLayerError`` listing every layer it cannot convert,
    ``InvalidModelError`` for a file Keras cannot load, ``IRBridgeError`` for an unbuilt
    model or a bad option.
    """
    if options:
        raise IRBridgeError(f"the keras frontend got unknown option(s) {sorted(options)}; "
                            f"it takes: lowering={'|'.join(LOWERINGS)}")
    if lowering not in LOWERINGS:
        raise IRBridgeError(f"unknown Keras lowering {lowering!r}; choose one of "
                            f"{', '.join(LOWERINGS)}")
    from .._lazy import require

    keras = require("keras", "keras")
    model = _load_model(keras, src) if isinstance(src, (str, Path)) else src
    if not isinstance(model, keras.Model):
        raise IRBridgeError(f"the keras frontend needs a keras.Model or a .keras/.h5 path, "
                            f"got {type(model).__module__}.{type(model).__qualname__}")
    if lowering == "tf2onnx":
        return _delegate_tf2onnx(model)
    return convert_model(keras, model)


def _load_model(keras, path):
    path = Path(path)
    if not path.exists():
        raise InvalidModelError(f"{path}: no such file")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types; all mean "this file is not loadable"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise InvalidModelError(
            f"{path}: Keras cannot load it: {type(exc).__name__}: {reason} "
            f"(ir_bridge loads with safe_mode=True, which refuses Lambda layers and other "
            f"arbitrary code)") from exc


def _delegate_tf2onnx(model) -> Graph:
    from importlib import import_module

    target = f"{__package__}.keras_tf2onnx"  # optional, implemented separately
    try:
        module = import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name != target:
            raise  # the module exists but one of its own imports is missing
        raise IRBridgeError(f"the tf2onnx lowering for Keras is not available in this "
                            f"installation (module {target} is missing); use "
                            f"lowering=\"native\"") from None
    return module.load(model)


# ---------------------------------------------------------------- walking the model


@dataclass
class _Call:
    """One call of a layer in the flattened (nested models inlined) graph."""

    layer: object
    scope: str
    inputs: list  # keys of the input values (resolve through aliases)
    outputs: list  # keys of the output values
    input_shapes: list
    problems: list  # reasons found by the node-level checks


class _Walk:
    """The calls of a model in execution order, with nested models inlined.

    A value is keyed by ``(instance, id(KerasTensor))``: each inlining of a nested model is
    a new instance, so a nested model called twice gets two independent sets of values.
    """

    def __init__(self, keras):
        self.keras = keras
        self.calls: list[_Call] = []
        self.aliases: dict[tuple, tuple] = {}
        self._instances = 0

    def resolve(self, key: tuple) -> tuple:
        while key in self.aliases:
            key = self.aliases[key]
        return key

    def visit(self, model, scope: str = "", instance: int = 0, inherited=()) -> None:
        """Append the calls of ``model``'s graph; ``inherited`` are call-site problems of
        the enclosing model's call (``training=True`` reaches every inner layer)."""
        fn = _functional_of(self.keras, model)
        for depth in sorted(fn._nodes_by_depth, reverse=True):
            for node in fn._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue  # an InputLayer: its tensor is a graph input or aliased
                ins = [(instance, id(t)) for t in node.input_tensors]
                outs = [(instance, id(t)) for t in node.outputs]
                if _is_graph_model(self.keras, op):
                    inner = _functional_of(self.keras, op)
                    self._instances += 1
                    sub = self._instances
                    for t_inner, key in zip(inner.inputs, ins):
                        self.aliases[(sub, id(t_inner))] = key
                    self.visit(op, f"{scope}{op.name}/", sub,
                               [*inherited, *_node_problems(node)])
                    for key, t_inner in zip(outs, inner.outputs):
                        self.aliases[key] = (sub, id(t_inner))
                    continue
                self.calls.append(_Call(op, scope, ins, outs,
                                        [tuple(t.shape) for t in node.input_tensors],
                                        [*inherited, *_node_problems(node)]))


def _functional_of(keras, model):
    """The Functional graph behind ``model``: itself, or a Sequential's ``_functional``."""
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise IRBridgeError(
                f"Sequential model {model.name!r} has no input shape yet, so its graph is "
                f"unknown: start it with keras.Input(shape), call model.build((None, ...)), "
                f"or call it once on data before converting")
        return fn
    return model


def _is_graph_model(keras, op) -> bool:
    """Whether ``op`` is a model whose computation is its recorded graph (Functional, or a
    Sequential) rather than a subclass with its own ``call``."""
    from keras.src.models.functional import Functional

    if isinstance(op, keras.Sequential):
        return type(op).call is keras.Sequential.call
    return isinstance(op, Functional) and type(op).call is Functional.call


def _node_problems(node) -> list[str]:
    """Call-site problems: training mode forced on, or tensors besides the main input (a
    mask or a second positional tensor) that the handlers would not see."""
    problems = []
    args, kwargs = node.arguments.args, node.arguments.kwargs
    if kwargs.get("training"):
        problems.append("called with training=True (its training behaviour would be lost)")
    from keras import KerasTensor

    flat = []
    for value in list(args[1:]) + list(kwargs.values()):
        flat.extend(_flatten(value))
    if any(isinstance(v, KerasTensor) for v in flat):
        problems.append("called with extra tensor arguments (mask or a second input)")
    return problems


def _flatten(value) -> list:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flatten(item)]
    if isinstance(value, dict):
        return [v for item in value.values() for v in _flatten(item)]
    return [value]


# ---------------------------------------------------------------- checking


def _check(walk: _Walk, model) -> None:
    """Raise one ``UnsupportedLayerError`` listing every call that cannot convert."""
    bad: list[tuple[str, str, list[str]]] = []
    for call in walk.calls:
        layer = call.layer
        label = keras_layers.class_label(layer)
        name = f"{call.scope}{layer.name}"
        handler = keras_layers.handler_for(layer)
        if handler is None:
            bad.append((name, label, [_why_unhandled(walk.keras, layer, label)]))
            continue
        reasons = list(call.problems)
        reasons += _common_refusals(layer)
        if handler.refuse is not None:
            reasons += handler.refuse(layer, call.input_shapes)
        if reasons:
            bad.append((name, label, reasons))
    if bad:
        raise UnsupportedLayerError(_unsupported_message(model, bad),
                                    layers=[(n, c) for n, c, _ in bad])


def _why_unhandled(keras, layer, label: str) -> str:
    if isinstance(layer, keras.Model):
        return "a subclassed model with its own call()"
    if label.startswith("keras.ops."):
        return "a keras.ops function applied to symbolic tensors; use the matching layer"
    if (type(layer).__module__ or "").startswith("keras."):
        return "a Keras layer the native frontend does not convert"
    return "a custom layer class, no handler registered"


def _common_refusals(layer) -> list[str]:
    reasons = []
    policy = getattr(layer, "dtype_policy", None)
    compute = getattr(policy, "compute_dtype", "float32")
    if compute != "float32":
        reasons.append(f"compute dtype {compute} is not supported (mixed or non-float32 "
                       f"precision); the IR computes in float32")
    if getattr(layer, "quantization_mode", None):
        reasons.append(f"quantized layers ({layer.quantization_mode}) are not supported")
    return reasons


def _unsupported_message(model, bad) -> str:
    counts = Counter(c for _, c, _ in bad)
    lines = [f"Keras model {model.name!r}: {len(bad)} layer(s) cannot be converted "
             f"by the native Keras frontend:"]
    for cls, n in counts.most_common():
        items = [f"{name} ({cls}: {'; '.join(reasons)})" for name, c, reasons in bad if c == cls]
        lines.append(f"  {cls} x{n}: " + ", ".join(items))
    lines.append("supported layers: " + ", ".join(keras_layers.supported_layers()))
    lines.append(_HINT)
    return "\n".join(lines)


# ---------------------------------------------------------------- converting


def convert_model(keras, model) -> Graph:
    """Convert a live Keras model (already checked to be a ``keras.Model``) into a Graph."""
    if not _is_graph_model(keras, model):
        label = keras_layers.class_label(model)
        raise UnsupportedLayerError(
            f"Keras model {model.name!r} is a subclassed model ({label}) with its own call(): "
            f"the native frontend reads Functional and Sequential graphs only; {_HINT}",
            layers=[(model.name, label)])
    walk = _Walk(keras)
    walk.visit(model)
    _check(walk, model)
    fn = _functional_of(keras, model)

    graph = Graph(model.name)
    graph.meta.update({"source": "keras", "keras_version": keras.__version__})
    ctx = keras_layers.KerasContext(graph, keras)
    values: dict[tuple, str] = {}
    for t in fn.inputs:
        values[(0, id(t))] = _add_input(graph, t).name
    for call in walk.calls:
        try:
            ins = [values[walk.resolve(k)] for k in call.inputs]
        except KeyError:
            raise IRBridgeError(f"layer {call.scope + call.layer.name!r} reads a tensor that "
                                f"no earlier layer produced (the Keras graph is not "
                                f"connected)") from None
        ctx.scope = call.scope
        outs = keras_layers.handler_for(call.layer).convert(ctx, call.layer, ins)
        if len(outs) != len(call.outputs):
            raise IRBridgeError(f"layer {call.scope + call.layer.name!r}: handler produced "
                                f"{len(outs)} outputs, Keras has {len(call.outputs)}")
        for key, name in zip(call.outputs, outs):
            values[key] = name
    graph.set_outputs([values[walk.resolve((0, id(t)))] for t in fn.outputs])
    return graph


def _add_input(graph: Graph, tensor):
    """A graph input for a Keras input tensor: named after its InputLayer, batch ``None``,
    float32 unless Keras declared an integer dtype (Embedding indices)."""
    layer = getattr(getattr(tensor, "_keras_history", None), "operation", None)
    name = getattr(layer, "name", None) or tensor.name
    shape = (None, *tensor.shape[1:]) if len(tensor.shape) else ()
    dtype = str(tensor.dtype)
    if not (dtype.startswith("int") or dtype.startswith("uint")):
        dtype = "float32"
    return graph.add_input(graph.unique_name(name), shape, dtype, origin=name)


__all__ = ["load", "convert_model", "supported_layers", "LOWERINGS"]
