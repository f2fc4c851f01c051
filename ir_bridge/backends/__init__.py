"""Backends: emit the IR as MDF, ONNX or Keras.

Each module registers itself with ``@register_backend`` and is declared as an
``ir_bridge.backends`` entry point; its library is imported lazily, inside functions.
"""
