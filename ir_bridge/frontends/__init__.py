"""Frontends: read a model (Keras, ONNX, MDF) into the IR.

Each module registers itself with ``@register_frontend`` and is declared as an
``ir_bridge.frontends`` entry point; its framework is imported lazily, inside functions.
"""
