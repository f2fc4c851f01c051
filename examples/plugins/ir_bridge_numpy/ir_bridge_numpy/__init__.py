"""ir_bridge_numpy: an example ir_bridge plugin.

It adds, through entry points alone (nothing to import by hand):

* the backend ``numpy`` (:mod:`ir_bridge_numpy.backend`), which emits a model as a
  standalone NumPy module: a ``.py`` file plus an ``.npz`` of weights that run without
  ir_bridge;
* the pass ``numpy:fuse-add-relu`` (:mod:`ir_bridge_numpy.fuse_add_relu`), with the op
  ``numpy.AddRelu`` it introduces.

This file imports nothing, so finding the plugin costs nothing until it is used.
"""

__version__ = "0.1.0"
