"""The tf2onnx lowering of Keras models: trace with tf2onnx, read the ONNX with our frontend.

The native Keras frontend converts layer by layer and refuses layers it has no handler for
(LSTM, GRU, custom layers built from TensorFlow ops).  This lowering instead traces the
model's ``call`` as a ``tf.function`` with an input signature taken from the model's
inputs (batch dimension ``None``), lets ``tf2onnx.convert.from_function`` turn the traced
TensorFlow graph into ONNX (it rewrites Keras LSTM/GRU loops into ONNX ``LSTM``/``GRU``
nodes), and imports that ONNX through :mod:`ir_bridge.frontends.onnx`.  Its coverage is
therefore tf2onnx's, and the result is whatever ONNX ops tf2onnx chose (NCHW convolutions
between Transposes, MatMul + Add for Dense…) rather than one IR node per Keras layer.

``tf2onnx.convert.from_keras`` is not used: it fails on Keras 3 models.  Tracing costs a
second or so per model.  Selected with ``ir_bridge.load(model, lowering="tf2onnx")`` or
``ir-bridge convert model.keras --keras-lowering tf2onnx``; the Keras frontend calls
:func:`load`.
"""

from __future__ import annotations

from pathlib import Path

from .._lazy import require
from ..errors import InvalidModelError, IRBridgeError, UnsupportedLayerError
from ..ir import Graph

#: The ONNX opset tf2onnx is asked for.
TRACE_OPSET = 17


def to_onnx(model, opset: int = TRACE_OPSET):
    """Trace a live ``keras.Model`` with tf2onnx; returns the ``onnx.ModelProto``.

    Inputs keep the Keras input names and shapes with a dynamic batch dimension; outputs
    come in the model's order.
    """
    tf = require("tensorflow", "keras")
    tf2onnx = require("tf2onnx", "onnx")
    specs = []
    for i, t in enumerate(model.inputs):
        layer = getattr(getattr(t, "_keras_history", None), "operation", None)
        name = getattr(layer, "name", None) or f"input_{i}"
        specs.append(tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=name))
    several = len(specs) > 1

    @tf.function(input_signature=specs)
    def forward(*xs):
        y = model(list(xs) if several else xs[0], training=False)
        if isinstance(y, dict):
            return [y[k] for k in y]
        return y

    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=specs, opset=opset)
    except Exception as exc:  # tf2onnx raises anything from ValueError to KeyError
        raise IRBridgeError(f"tf2onnx could not convert Keras model {model.name!r}: "
                            f"{type(exc).__name__}: {exc}") from exc
    _captures_to_initializers(proto, forward.get_concrete_function(), len(specs), tf)
    proto.graph.name = model.name
    return proto


def _captures_to_initializers(proto, concrete, n_args: int, tf) -> None:
    """Turn the tensors the traced function captured (constants a layer holds outside its
    variables, e.g. Normalization's mean and variance) from graph inputs, as tf2onnx leaves
    them, into initializers."""
    from onnx import numpy_helper

    values = {}
    for placeholder, value in zip(concrete.inputs[n_args:], concrete.captured_inputs):
        if placeholder.dtype != tf.resource:
            values[placeholder.name] = value.numpy()
    for inp in list(proto.graph.input):
        if inp.name in values:
            proto.graph.initializer.append(numpy_helper.from_array(values[inp.name], inp.name))
            proto.graph.input.remove(inp)


def load(model_or_path, *, opset: int = TRACE_OPSET) -> Graph:
    """Read a Keras model (live ``keras.Model`` or ``.keras``/``.h5`` path) into the IR by
    tracing it with tf2onnx and importing the ONNX; returns the graph (layout NCHW inside,
    the model's own input layout at the inputs).

    Raises ``UnsupportedLayerError`` if the ONNX holds ops the ONNX frontend cannot read,
    ``IRBridgeError`` if tf2onnx fails, ``InvalidModelError`` for an unloadable file.
    """
    keras = require("keras", "keras")
    model = model_or_path
    if isinstance(model_or_path, (str, Path)):
        try:
            model = keras.models.load_model(str(model_or_path), compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types; all mean "not loadable"
            raise InvalidModelError(f"{model_or_path}: Keras cannot load it: "
                                    f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(model, keras.Model):
        raise IRBridgeError(f"the tf2onnx lowering needs a keras.Model, got "
                            f"{type(model).__module__}.{type(model).__qualname__}")
    from . import onnx as onnx_frontend

    proto = to_onnx(model, opset)
    try:
        graph = onnx_frontend.load(proto)
    except UnsupportedLayerError as exc:
        raise UnsupportedLayerError(f"Keras model {model.name!r} traced by tf2onnx: {exc}",
                                    exc.layers) from exc
    graph.meta.update({"source": "keras", "lowering": "tf2onnx"})
    return graph


__all__ = ["load", "to_onnx", "TRACE_OPSET"]
