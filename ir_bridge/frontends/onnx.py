"""ONNX frontend: an ``.onnx`` file or ``onnx.ModelProto`` -> IR (spatial ops in NCHW).

Reads what ir_bridge's ONNX backend writes, what ``keras.Model.export(format="onnx")`` and
``tf2onnx.convert.from_function`` write (NHWC inputs with Transpose/Reshape nodes around
the NCHW convolutions: kept as they are; the layout passes cancel what they can), and the
usual CNN exports of other tools.

How a model is read:

1. Every node is checked first: an op without a handler (or in a foreign domain) is
   reported, all of them at once, in one ``UnsupportedLayerError`` before anything is built.
2. Each ONNX tensor becomes a *value*: an IR node (a runtime tensor), a numpy constant
   (initializers, ``Constant`` nodes, and everything computed from constants only), a
   *symbolic shape* (an int array where an unknown dim, the batch, is a placeholder: what
   ``Shape`` gives for a tensor whose batch is unknown), or a *broadcast constant* (a
   constant expanded to a batch-sized shape, such as the zero initial state tf2onnx builds
   for an LSTM).  Shape sub-graphs (``Shape -> Gather/Slice -> Concat -> Reshape``) are thus
   folded while reading: a Reshape target ``[batch, 1600]`` becomes ``[0, 1600]`` (a single
   unknown entry becomes -1; an unknown dim other than the batch is never guessed).
3. Handlers (a dict op -> function, below) translate literally into IR ops; weights become
   params.  Exporter idioms are read as what they mean: ``MatMul`` by a constant 2-D
   matrix is a ``Gemm`` (the IR's dense op) and a following bias ``Add`` folds into its
   ``B``; a per-channel ``Add`` after a bias-less ``Conv`` folds into the Conv's ``B``;
   ``Max``/``Min`` with a scalar is a ``Clip``; ``Where(x > t, x, 0)`` is a thresholded
   ``Relu``; ``Tile`` is a ``Concat`` of copies; ``ReverseSequence`` over whole sequences
   is a reversing ``Slice``; tf2onnx's slices over whole axes are dropped.  LSTM/GRU/LRN,
   comparisons, ``Not``/``And``/``Or``, ``Where`` and ``Cast`` are IR ops defined in
   :mod:`ir_bridge.frontends.onnx_ops`.
4. A handler that cannot translate a node (a weight that is not constant, an attribute the
   IR lacks) records why; all such problems are reported together at the end.

Corrupt, truncated or checker-failing files raise ``InvalidModelError`` naming the file (an
op the checker does not know is left to step 1 instead: ``Erfc``, TensorFlow's op that
Keras's own ONNX export writes for gelu, is read as ``1 - Erf``).  So does a model whose
tensors do not fit together (a weight of the wrong shape or rank, a negative input dim): the
error names the file and the ONNX node (name and op type) where the shapes first disagree.

Opsets.  The default domain (``""``/``ai.onnx``) is read at opsets :data:`MIN_OPSET` (7) to
:data:`MAX_OPSET` (28, the newest that onnx 1.23 defines); every handler follows the
semantics of each version of its op in that range (Softmax's 2-D coercion before 13, Clip's
and Pad's attributes before 11, Slice's before 10, axes as attributes or inputs, Resize's
``axes`` from 18, Mod's ``fmod``...).  Any other opset is refused with
``UnsupportedLayerError`` naming the file, the opset and the range, before anything is read:
a newer opset may change what an op means, and before opset 7 the element-wise ops had
legacy ``broadcast``/``axis`` semantics and BatchNormalization/Dropout an ``is_test``
training mode.  ``onnx.version_converter.convert_version(model, n)`` moves a model into the
range.  Other domains may be imported (``ai.onnx.ml``, a vendor's), at any version; a node
that *uses* one is reported as unsupported in step 1.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._lazy import require
from ..errors import InvalidModelError, IRBridgeError, UnsupportedLayerError
from ..ir import Graph
from ..registry import register_frontend
from . import onnx_ops  # noqa: F401  (defines LSTM, GRU, LRN)

_DOMAINS = ("", "ai.onnx")
_CONTROL_FLOW = {"Loop", "Scan", "If"}

#: The oldest default-domain opset read: opset 7 gave the element-wise ops numpy
#: broadcasting (dropping the legacy ``broadcast``/``axis`` attributes) and removed
#: BatchNormalization's and Dropout's ``is_test``.
MIN_OPSET = 7
#: The newest default-domain opset read: every handler was checked against each version of
#: its op up to here (the newest opset onnx 1.23 defines).  Raise it only after checking
#: what the new opset changed for the ops in ``HANDLERS`` and ``FOLDERS``.
MAX_OPSET = 28


class _Unsupported(Exception):
    """A node that cannot be translated, with the reason."""


class _Sym:
    """An unknown dimension inside a folded shape value (``?`` when printed)."""

    __slots__ = ("label",)

    def __init__(self, label: str = "?"):
        self.label = label

    def __repr__(self) -> str:
        return self.label

    def _unknown(self, other=None):
        return _Sym()

    def __mul__(self, other):
        return self if isinstance(other, (int, np.integer)) and other == 1 else _Sym()

    __rmul__ = __mul__

    def __add__(self, other):
        return self if isinstance(other, (int, np.integer)) and other == 0 else _Sym()

    __radd__ = __add__
    __sub__ = __rsub__ = __truediv__ = __rtruediv__ = __floordiv__ = _unknown
    __rfloordiv__ = __mod__ = __neg__ = _unknown

    def __int__(self):
        raise _Unsupported("the value depends on the batch size")

    __index__ = __int__


#: The symbol of an unknown (batch) dimension.
BATCH = _Sym("batch")


class _Broadcast:
    """A constant broadcast to a shape with unknown (batch) dims: ``value`` over ``shape``."""

    def __init__(self, value: np.ndarray, shape: tuple):
        value = np.asarray(value)
        self.value = value.reshape(()) if value.size == 1 else value
        self.shape = tuple(shape)

    def materialize(self) -> np.ndarray:
        """The constant with every unknown dim 1 (equal under broadcasting)."""
        shape = tuple(1 if isinstance(d, _Sym) else int(d) for d in self.shape)
        return np.ascontiguousarray(np.broadcast_to(self.value, shape))

    def is_zero(self) -> bool:
        return not np.any(self.value)


class _Missing:
    """An optional output a handler did not produce (Dropout's mask, MaxPool's indices)."""

    def __init__(self, reason: str):
        self.reason = reason


_POISON = object()  # the output of a node that failed: its users are not reported again


class _Compare:
    """``x > c`` of a computed ``x`` and a constant ``c`` read only by ``Where(this, x, 0)``:
    together a thresholded ReLU, so no boolean tensor is built."""

    def __init__(self, op: str, x: str, c: np.ndarray):
        self.op, self.x, self.c = op, x, c


def _normalize(v):
    """A folded value as an ndarray: a lone symbol is a 0-d object array, and an object
    array whose symbols were all sliced away is int64 again."""
    if isinstance(v, _Broadcast):
        return v
    if isinstance(v, _Sym):
        out = np.empty((), dtype=object)
        out[()] = v
        return out
    v = np.asarray(v)
    if v.dtype == object and not any(isinstance(d, _Sym) for d in v.ravel()):
        return v.astype(np.int64)
    return v


def _is_symbolic(v) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == object


def _is_const(v) -> bool:
    return isinstance(v, np.ndarray) and v.dtype != object


def _is_static(v) -> bool:
    return isinstance(v, (np.ndarray, _Broadcast)) or v is None


# ---------------------------------------------------------------- the importer


class _Importer:
    """Translates one ONNX graph into an IR ``Graph``."""

    def __init__(self, model, where: str, input_shapes=None):
        self.onnx = require("onnx", "onnx")
        self.model = model
        self.where = where
        self.opset = next((o.version for o in model.opset_import if o.domain in _DOMAINS), 1)
        name = model.graph.name or Path(where).stem or "onnx_model"
        self.graph = Graph(name)
        self.env: dict[str, Any] = {}
        self.issues: list[tuple[str, str, str]] = []
        self.input_shapes = dict(input_shapes or {})
        self.consumers: dict[str, list] = {}
        self._const_nodes: dict[int, tuple] = {}
        self.node = None  # the ONNX node being translated

    # ------------------------------------------------------------ reading

    def run(self) -> Graph:
        g = self.model.graph
        nh = self.onnx.numpy_helper
        for init in g.initializer:
            self.env[init.name] = nh.to_array(init)
        for init in g.sparse_initializer:
            self.env[init.values.name] = nh.to_array(self.onnx.helper.make_tensor(
                init.values.name, init.values.data_type, list(init.dims),
                _densify(nh, init).ravel().tolist()))
        for inp in g.input:
            if inp.name not in self.env:
                self._add_input(inp)
        for node in g.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self._precheck(g.node)
        for node in g.node:
            self._convert(node)
        outputs = []
        for out in g.output:
            v = self.env.get(out.name)
            if v is None or v is _POISON or isinstance(v, _Missing):
                if v is None:
                    self.issues.append((out.name, "output", "no node produces this output"))
                continue
            try:
                outputs.append(self.tensor(v, what=f"graph output {out.name!r}"))
            except _Unsupported as exc:
                self.issues.append((out.name, "output", str(exc)))
        if self.issues:
            listing = "; ".join(f"{name or '(unnamed)'} ({op}): {why}"
                                for name, op, why in self.issues)
            raise UnsupportedLayerError(
                f"{self.where}: {len(self.issues)} ONNX node(s) cannot be converted: {listing}",
                [(name, op) for name, op, _ in self.issues])
        if not outputs:
            raise InvalidModelError(f"{self.where}: the ONNX graph has no outputs")
        self.graph.set_outputs(outputs)
        _fold_bias(self.graph)
        return self.graph

    def _add_input(self, inp):
        t = inp.type.tensor_type
        if not inp.type.HasField("tensor_type") or not t.HasField("shape"):
            raise InvalidModelError(f"{self.where}: graph input {inp.name!r} has no tensor "
                                    "shape; pass input_shapes={name: shape}")
        if inp.name in self.input_shapes:
            shape = tuple(self.input_shapes[inp.name])
        else:
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        if any(d is not None and d < 0 for d in shape):
            shown = ", ".join("?" if d is None else str(d) for d in shape)
            raise InvalidModelError(f"{self.where}: graph input {inp.name!r} has a negative "
                                    f"dimension: shape ({shown})")
        dtype = np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
        node = self.graph.add_input(self.graph.unique_name(inp.name), shape, str(dtype),
                                    origin=inp.name)
        self.env[inp.name] = node.name

    def _precheck(self, nodes):
        bad = [(n.name or (n.output[0] if n.output else "?"), n.op_type
                if n.domain in _DOMAINS else f"{n.domain}::{n.op_type}")
               for n in nodes
               if n.domain not in _DOMAINS or (n.op_type not in HANDLERS
                                                 and n.op_type not in FOLDERS)]
        if bad:
            counts: dict[str, int] = {}
            for _, op in bad:
                counts[op] = counts.get(op, 0) + 1
            summary = ", ".join(f"{op} x{c}" for op, c in sorted(counts.items()))
            listing = ", ".join(f"{name} ({op})" for name, op in bad)
            note = ""
            if any(op in _CONTROL_FLOW for _, op in bad):
                note = (" ONNX control flow (Loop/Scan/If) is not supported; tf2onnx writes a "
                        "Loop for a recurrent layer it cannot rewrite into an ONNX LSTM (a "
                        "Keras 3 GRU, an LSTM with hard_sigmoid).")
            raise UnsupportedLayerError(
                f"{self.where}: {len(bad)} ONNX node(s) have no converter ({summary}): "
                f"{listing}.{note} Supported ONNX ops: {', '.join(supported_ops())}", bad)

    def _convert(self, node):
        self.node = node
        ins = []
        for name in node.input:
            if not name:
                ins.append(None)
                continue
            v = self.env.get(name)
            if v is _POISON:
                self._poison(node)
                return
            if v is None:
                self._fail(node, f"input {name!r} is not defined by any earlier node")
                return
            if isinstance(v, _Missing):
                self._fail(node, f"reads {name!r}: {v.reason}")
                return
            ins.append(v)
        attrs = {a.name: _attr(self.onnx, a) for a in node.attribute}
        op = node.op_type
        try:
            if op in FOLDERS and (op in _SHAPE_OF or all(_is_static(v) for v in ins)):
                outs = FOLDERS[op](self, ins, attrs)
                outs = ([_normalize(o) for o in outs] if isinstance(outs, list)
                        else _normalize(outs))
            elif op in HANDLERS:
                outs = HANDLERS[op](self, ins, attrs)
            else:
                raise _Unsupported("is supported only on constant inputs")
        except _Unsupported as exc:
            self._fail(node, str(exc))
            return
        except (IRBridgeError, ValueError, IndexError) as exc:
            # The IR's shape inference (a bare IRBridgeError from ``Graph.add_node``) or numpy
            # folding constants found tensors that do not fit together: the file is wrong.
            if isinstance(exc, IRBridgeError) and type(exc) is not IRBridgeError:
                raise
            raise InvalidModelError(f"{self.where}: ONNX node {_label(node)}: "
                                    f"{_without_node_prefix(str(exc))}") from exc
        outs = outs if isinstance(outs, list) else [outs]
        for i, name in enumerate(node.output):
            if not name:
                continue
            self.env[name] = outs[i] if i < len(outs) else _Missing(
                f"output {i} of {op} {node.name!r} is not supported")

    def _fail(self, node, reason):
        self.issues.append((node.name or node.output[0], node.op_type, reason))
        self._poison(node)

    def _poison(self, node):
        for name in node.output:
            if name:
                self.env[name] = _POISON

    # ------------------------------------------------------------ helpers for handlers

    def add(self, op: str, inputs, attrs=None, params=None, suffix: str | None = None) -> str:
        """Add an IR node for the current ONNX node; returns its name."""
        base = self.node.name or self.node.output[0]
        name = self.graph.unique_name(f"{base}/{suffix}" if suffix else base)
        node = self.graph.add_node(op, inputs, name=name, attrs=attrs, params=params,
                                   origin=self.node.name or self.node.output[0])
        return node.name

    def tensor(self, v, what: str = "input", broadcast: bool = False) -> str:
        """The IR node holding value ``v``; constants become ``Constant`` nodes."""
        if isinstance(v, str):
            return v
        if isinstance(v, _Compare):
            raise _Unsupported(f"{what} is a comparison read as a ReLU threshold")
        if isinstance(v, _Broadcast):
            if not broadcast:
                raise _Unsupported(f"{what} is a constant expanded to the batch size; only "
                                   "elementwise ops may read it")
            v = v.materialize()
        if _is_symbolic(v):
            raise _Unsupported(f"{what} depends on the batch size")
        key = id(v)
        if key not in self._const_nodes:
            base = self.node.name if self.node is not None else "constant"
            node = self.graph.add_node("Constant", params={"value": np.asarray(v)},
                                       name=self.graph.unique_name(f"{base}/const"),
                                       origin=base)
            # Keep ``v`` alive with its node so its id is never reused by another array.
            self._const_nodes[key] = (v, node.name)
        return self._const_nodes[key][1]

    def const(self, v, what: str) -> np.ndarray:
        """``v`` as a numpy constant; a runtime value raises ``_Unsupported``."""
        if _is_const(v):
            return v
        if isinstance(v, _Broadcast) or _is_symbolic(v):
            raise _Unsupported(f"{what} depends on the batch size")
        raise _Unsupported(f"{what} must be a constant (an initializer), not a computed value")

    def type(self, name: str):
        return self.graph.node(name).type

    def rank(self, v) -> int:
        return self.type(v).rank if isinstance(v, str) else np.ndim(v)


def _label(node) -> str:
    """``'dense' (Gemm)``, or ``(Gemm) writing 'h'`` for an unnamed node."""
    if node.name:
        return f"{node.name!r} ({node.op_type})"
    out = next((o for o in node.output if o), "")
    return f"({node.op_type}) writing {out!r}"


_NODE_PREFIX = re.compile(r"^node '[^']*'(?: \(from '[^']*'\))?: ")


def _without_node_prefix(message: str) -> str:
    """A graph error's message without its ``node 'x': `` prefix (the IR node is named
    after the ONNX node, which the caller names with its op type)."""
    return _NODE_PREFIX.sub("", message, count=1)


def _densify(nh, sparse):
    values = nh.to_array(sparse.values)
    idx = nh.to_array(sparse.indices)
    dense = np.zeros(list(sparse.dims), values.dtype)
    if idx.ndim == 1:
        dense.ravel()[idx] = values
    else:
        dense[tuple(idx.T)] = values
    return dense


def _attr(onnx, a):
    if a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS:
        return None
    value = onnx.helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if a.type == onnx.AttributeProto.TENSOR:
        return onnx.numpy_helper.to_array(value)
    return value


# ---------------------------------------------------------------- folding constants

_SHAPE_OF = {"Shape", "Size"}


def _ints(v) -> list:
    """A constant as a list of Python ints (symbols stay symbols)."""
    return [d if isinstance(d, _Sym) else int(d) for d in np.asarray(v).ravel()]


def _sym_shape(im, v) -> np.ndarray:
    """``Shape`` of a value: an unknown dim 0 is the batch (the IR's convention), any other
    unknown dim a symbol of its own."""
    if isinstance(v, str):
        dims = [(BATCH if i == 0 else _Sym(f"{v}[{i}]")) if d is None else int(d)
                for i, d in enumerate(im.type(v).shape)]
    elif isinstance(v, _Broadcast):
        dims = list(v.shape)
    else:
        dims = list(np.shape(v))
    if any(isinstance(d, _Sym) for d in dims):
        out = np.empty(len(dims), dtype=object)
        out[:] = dims
        return out
    return np.asarray(dims, dtype=np.int64)


def _shape(im, ins, a):
    s = _sym_shape(im, ins[0])
    start, end = a.get("start", 0), a.get("end")
    return s[start:end]


def _size(im, ins, a):
    s = _sym_shape(im, ins[0])
    if _is_symbolic(s):
        raise _Unsupported("the size depends on the batch size")
    return np.asarray(math.prod(int(d) for d in s), np.int64)


def _axis(axis, rank: int, what: str = "axis") -> int:
    """``axis`` (negative counts from the end) as an index into ``rank`` axes; an axis out
    of range is a malformed model (ValueError, reported as ``InvalidModelError``)."""
    axis = int(axis)
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return axis % rank


def _axes_of(im, ins, a, position, rank=None):
    """Axes from input ``position`` (newer opsets) or attribute ``axes``."""
    if len(ins) > position and ins[position] is not None:
        axes = [int(x) for x in im.const(ins[position], "axes")]
    else:
        axes = a.get("axes")
        axes = None if axes is None else [int(x) for x in axes]
    if axes is not None and rank is not None:
        axes = [_axis(x, rank, "axes entry") for x in axes]
    return axes


def _obj_or_num(values):
    if any(_is_symbolic(v) for v in values):
        out = []
        for v in values:
            o = np.empty(np.shape(v), dtype=object)
            o[...] = v if _is_symbolic(v) else np.asarray(v).astype(object)
            out.append(o)
        return out
    return [np.asarray(v) for v in values]


def _fold_constant(im, ins, a):
    if "value" in a:
        return np.asarray(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    raise _Unsupported(f"Constant with {sorted(a)} is not supported")


def _fold_cast(im, ins, a):
    x = ins[0]
    if isinstance(x, _Broadcast):
        return _Broadcast(_cast_array(im, x.value, a["to"]), x.shape)
    if _is_symbolic(x):
        return x
    return _cast_array(im, x, a["to"])


def _cast_array(im, x, to):
    dtype = im.onnx.helper.tensor_dtype_to_np_dtype(to)
    return np.asarray(x).astype(dtype)


def _fold_gather(im, ins, a):
    data, idx = ins[0], im.const(ins[1], "indices")
    return np.take(data, idx.astype(np.int64), axis=a.get("axis", 0))


def _slice_spec(im, ins, a, rank):
    if im.opset < 10 or len(ins) == 1:
        starts, ends = a["starts"], a["ends"]
        axes = a.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = _ints(im.const(ins[1], "starts"))
        ends = _ints(im.const(ins[2], "ends"))
        axes = (_ints(im.const(ins[3], "axes")) if len(ins) > 3 and ins[3] is not None
                else list(range(len(starts))))
        steps = (_ints(im.const(ins[4], "steps")) if len(ins) > 4 and ins[4] is not None
                 else [1] * len(starts))
    return ([int(s) for s in starts], [int(e) for e in ends],
            [_axis(x, rank, "Slice axis") for x in axes], [int(s) for s in steps])


def _fold_slice(im, ins, a):
    data = np.asarray(ins[0])
    starts, ends, axes, steps = _slice_spec(im, ins, a, data.ndim)
    idx = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        idx[ax] = slice(s, e, st)
    return data[tuple(idx)]


def _fold_concat(im, ins, a):
    if any(isinstance(v, _Broadcast) for v in ins):
        return _concat_broadcast(ins, a["axis"])
    return np.concatenate(_obj_or_num(ins), axis=a["axis"])


def _concat_broadcast(ins, axis):
    """Concat of one scalar broadcast to batch-sized shapes (the per-direction zero states
    of a bidirectional RNN): the same scalar over the joined shape."""
    values = {float(v.value) for v in ins if isinstance(v, _Broadcast) and v.value.ndim == 0}
    if len(values) != 1 or not all(isinstance(v, _Broadcast) and v.value.ndim == 0
                                   for v in ins):
        raise _Unsupported("concatenates a constant expanded to the batch size")
    shapes = [list(v.shape) for v in ins]
    axis %= len(shapes[0])
    joined = list(shapes[0])
    for s in shapes[1:]:
        for i, (x, y) in enumerate(zip(joined, s)):
            if i == axis:
                if isinstance(x, _Sym) or isinstance(y, _Sym):
                    raise _Unsupported("concatenates along a batch-sized axis")
                joined[i] = x + y
            elif not (x is y or x == y):
                raise _Unsupported("concatenates constants of different shapes")
    return _Broadcast(ins[0].value, joined)


def _fold_unsqueeze(im, ins, a):
    x = ins[0]
    shape = list(x.shape) if isinstance(x, _Broadcast) else list(np.shape(x))
    axes = _axes_of(im, ins, a, 1)
    rank = len(shape) + len(axes)
    for ax in sorted(_axis(ax, rank, "Unsqueeze axis") for ax in axes):
        shape.insert(ax, 1)
    if isinstance(x, _Broadcast):
        return _Broadcast(x.value.reshape((1,) * (rank - x.value.ndim) + x.value.shape)
                          if x.value.ndim else x.value, shape)
    return np.asarray(x).reshape(shape)


def _fold_squeeze(im, ins, a):
    x = ins[0]
    shape = list(x.shape) if isinstance(x, _Broadcast) else list(np.shape(x))
    axes = _axes_of(im, ins, a, 1, len(shape))
    if axes is None:
        axes = [i for i, d in enumerate(shape) if not isinstance(d, _Sym) and d == 1]
    new = [d for i, d in enumerate(shape) if i not in axes]
    if isinstance(x, _Broadcast):
        if x.value.ndim:
            raise _Unsupported("squeezes a non-scalar constant expanded to the batch size")
        return _Broadcast(x.value, new)
    return np.asarray(x).reshape(new)


def _fold_reshape(im, ins, a):
    data = np.asarray(ins[0])
    shape = _ints(im.const(ins[1], "shape") if len(ins) > 1 else a["shape"])
    shape = [data.shape[i] if d == 0 and not a.get("allowzero") else d
             for i, d in enumerate(shape)]
    return data.reshape(shape)


def _fold_transpose(im, ins, a):
    x = np.asarray(ins[0])
    return x.transpose(a.get("perm") or list(range(x.ndim))[::-1])


def _int_div(x, y):
    if np.asarray(x).dtype.kind in "iu" and np.asarray(y).dtype.kind in "iu":
        q = np.abs(x) // np.abs(y)
        return (np.sign(x) * np.sign(y) * q).astype(np.result_type(x, y))
    return np.divide(x, y)


_BINARY_FOLD = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _int_div,
                "Pow": np.power, "Equal": np.equal, "Less": np.less, "Greater": np.greater,
                "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
                "And": np.logical_and, "Or": np.logical_or, "Mod": np.mod}


def _fold_binary(op):
    def fold(im, ins, a):
        x, y = ins
        if isinstance(x, _Broadcast) or isinstance(y, _Broadcast):
            raise _Unsupported("computes with a constant expanded to the batch size")
        if _is_symbolic(x) or _is_symbolic(y):
            if op not in ("Add", "Sub", "Mul", "Div"):
                raise _Unsupported("compares a value that depends on the batch size")
            x, y = _obj_or_num([x, y])
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                    "Div": np.floor_divide}[op](x, y)
        # Mod's fmod=1 truncates the quotient (the result takes the sign of x).
        fn = np.fmod if op == "Mod" and a.get("fmod", 0) else _BINARY_FOLD[op]
        result = fn(x, y)
        if op in ("Add", "Sub", "Mul", "Div", "Pow", "Mod"):
            result = np.asarray(result).astype(np.result_type(x, y), copy=False)
        return np.asarray(result)

    return fold


_UNARY_FOLD = {"Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil,
               "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Reciprocal": np.reciprocal,
               "Not": np.logical_not, "Relu": lambda x: np.maximum(x, 0),
               "Sigmoid": lambda x: 1 / (1 + np.exp(-x)), "Tanh": np.tanh}


def _fold_unary(op):
    def fold(im, ins, a):
        x = im.const(ins[0], op + " input")
        return np.asarray(_UNARY_FOLD[op](x)).astype(x.dtype, copy=False)

    return fold


def _fold_where(im, ins, a):
    c, x, y = (im.const(v, "Where input") for v in ins)
    return np.where(c, x, y)


def _fold_range(im, ins, a):
    start, limit, delta = (im.const(v, "Range input") for v in ins)
    return np.arange(start, limit, delta).astype(np.result_type(start, limit, delta))


def _fold_constant_of_shape(im, ins, a):
    value = np.asarray(a.get("value", np.zeros(1, np.float32))).reshape(-1)[:1].reshape(())
    shape = ins[0]
    if _is_symbolic(shape):
        return _Broadcast(value, _ints(shape))
    return np.full([int(d) for d in np.asarray(shape)], value, dtype=value.dtype)


def _fold_expand(im, ins, a):
    x, shape = ins
    if isinstance(x, _Broadcast):
        raise _Unsupported("expands a value that already depends on the batch size")
    x = np.asarray(x)
    if _is_symbolic(shape):
        dims = _ints(shape)
        rank = max(len(dims), x.ndim)
        dims = [1] * (rank - len(dims)) + dims
        src = (1,) * (rank - x.ndim) + x.shape
        out = [d if isinstance(d, _Sym) else max(int(d), s) for d, s in zip(dims, src)]
        return _Broadcast(x.reshape(src), out)
    target = np.broadcast_shapes(x.shape, tuple(int(d) for d in np.asarray(shape)))
    return np.broadcast_to(x, target).copy()


def _fold_tile(im, ins, a):
    return np.tile(np.asarray(ins[0]), [int(r) for r in im.const(ins[1], "repeats")])


def _fold_reduce(fn):
    def fold(im, ins, a):
        x = im.const(ins[0], "reduced input")
        axes = _axes_of(im, ins, a, 1, x.ndim)
        if axes is None or (not axes and not a.get("noop_with_empty_axes")):
            axes = list(range(x.ndim))
        return np.asarray(fn(x, axis=tuple(axes), keepdims=bool(a.get("keepdims", 1))))

    return fold


def _fold_variadic(fn):
    def fold(im, ins, a):
        vals = [im.const(v, "operand") for v in ins]
        out = vals[0]
        for v in vals[1:]:
            out = fn(out, v)
        return np.asarray(out)

    return fold


def _fold_identity(im, ins, a):
    return ins[0]


def _fold_split(im, ins, a):
    x = np.asarray(ins[0])
    axis = _axis(a.get("axis", 0), x.ndim)
    pieces = []
    for start, end in _split_bounds(im, ins, a, x.shape[axis]):
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(start, end)
        pieces.append(x[tuple(idx)])
    return pieces


FOLDERS: dict[str, Callable] = {
    "Constant": _fold_constant, "Identity": _fold_identity, "Shape": _shape, "Size": _size,
    "Cast": _fold_cast, "Gather": _fold_gather, "Slice": _fold_slice, "Concat": _fold_concat,
    "Unsqueeze": _fold_unsqueeze, "Squeeze": _fold_squeeze, "Reshape": _fold_reshape,
    "Transpose": _fold_transpose, "Where": _fold_where, "Range": _fold_range,
    "ConstantOfShape": _fold_constant_of_shape, "Expand": _fold_expand, "Tile": _fold_tile,
    "ReduceProd": _fold_reduce(np.prod), "ReduceSum": _fold_reduce(np.sum),
    "ReduceMin": _fold_reduce(np.min), "ReduceMax": _fold_reduce(np.max),
    "ReduceMean": _fold_reduce(np.mean),
    "Min": _fold_variadic(np.minimum), "Max": _fold_variadic(np.maximum),
    "Sum": _fold_variadic(np.add), "Split": _fold_split,
    **{op: _fold_binary(op) for op in _BINARY_FOLD},
    **{op: _fold_unary(op) for op in _UNARY_FOLD},
}


# ---------------------------------------------------------------- translating nodes


def _unary(op, **renames):
    """Handler for a one-input ONNX op mapped to IR ``op``; ``renames`` maps IR attribute
    names to ``(onnx name, default)``."""

    def handle(im, ins, a):
        attrs = {ir: float(a.get(onnx_name, default)) for ir, (onnx_name, default)
                 in renames.items()}
        return im.add(op, [im.tensor(ins[0])], attrs=attrs)

    return handle


def _gelu(im, ins, a):
    return im.add("Gelu", [im.tensor(ins[0])],
                  attrs={"approximate": a.get("approximate", "none")})


def _erfc(im, ins, a):
    # Not an ONNX op: TensorFlow's Erfc, which Keras's ONNX export leaves in gelu graphs
    # (onnxruntime refuses the file); erfc(x) = 1 - erf(x).
    e = im.add("Erf", [im.tensor(ins[0])], suffix="erf")
    n = im.add("Neg", [e], suffix="neg")
    return im.add("Add", [n], params={"B": np.asarray(1.0, np.float32)})


def _thresholded_relu(im, ins, a):
    return im.add("Relu", [im.tensor(ins[0])], attrs={"threshold": float(a.get("alpha", 1.0))})


def _clip(im, ins, a):
    if im.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        lo = float(im.const(ins[1], "Clip min")) if len(ins) > 1 and ins[1] is not None else None
        hi = float(im.const(ins[2], "Clip max")) if len(ins) > 2 and ins[2] is not None else None
    return im.add("Clip", [im.tensor(ins[0])], attrs={"min": lo, "max": hi})


def _softmax(op):
    def handle(im, ins, a):
        x = im.tensor(ins[0])
        rank = im.rank(x)
        axis = _axis(a.get("axis", -1 if im.opset >= 13 else 1), rank)
        if im.opset >= 13 or axis == rank - 1:
            return im.add(op, [x], attrs={"axis": axis})
        # Before opset 13 the input is coerced to 2-D at ``axis``: reshape, softmax, undo.
        trailing = im.type(x).shape[axis:]
        if None in trailing:
            raise _Unsupported(f"opset {im.opset} {op} over unknown trailing dims")
        flat = im.add("Reshape", [x], attrs={"shape": [0] * axis + [-1]}, suffix="flatten")
        y = im.add(op, [flat], attrs={"axis": -1}, suffix=op.lower())
        return im.add("Reshape", [y], attrs={"shape": [0] * axis + list(trailing)})

    return handle


def _prelu(im, ins, a):
    slope = im.const(ins[1], "PRelu slope")
    return im.add("PRelu", [im.tensor(ins[0])], params={"slope": slope})


_COMMUTATIVE = {"Add", "Mul"}


def _binary(op):
    def handle(im, ins, a):
        x, y = ins
        if not isinstance(x, str) and isinstance(y, str) and op in _COMMUTATIVE:
            x, y = y, x
        if op == "Div" and any(isinstance(v, str) and np.dtype(im.type(v).dtype).kind in "iu"
                               for v in (x, y)):
            raise _Unsupported("integer division (the IR's Div is true division)")
        if isinstance(x, str) and not isinstance(y, str):
            b = y.materialize() if isinstance(y, _Broadcast) else im.const(y, f"{op} operand")
            dtype = np.dtype(im.type(x).dtype)
            if dtype.kind == "f" and b.dtype != dtype:
                b = b.astype(dtype)
            return im.add(op, [x], params={"B": b})
        return im.add(op, [im.tensor(x, broadcast=True), im.tensor(y, broadcast=True)])

    return handle


def _variadic(op):
    def handle(im, ins, a):
        if op in ("Max", "Min") and len(ins) == 2:
            x, c = ins if isinstance(ins[0], str) else ins[::-1]
            if isinstance(x, str) and _is_const(c) and c.size == 1:
                # max(x, c) / min(x, c) with a scalar c is a one-sided Clip.
                bound = float(c.reshape(()))
                attrs = {"min": bound} if op == "Max" else {"max": bound}
                return im.add("Clip", [x], attrs=attrs)
        return im.add(op, [im.tensor(v, broadcast=True) for v in ins])

    return handle


def _matmul(im, ins, a):
    x, w = ins
    if isinstance(x, str) and _is_const(w) and w.ndim == 2:
        return im.add("Gemm", [x], params={"W": w})
    return im.add("MatMul", [im.tensor(x), im.tensor(w)])


def _gemm(im, ins, a):
    x = im.tensor(ins[0])
    w = im.const(ins[1], "Gemm B (the weight)")
    if a.get("transA", 0):
        x = im.add("Transpose", [x], attrs={"perm": [1, 0]}, suffix="transpose_a")
    if a.get("transB", 0):
        w = w.T
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if alpha != 1.0:
        w = w * np.asarray(alpha, w.dtype)
    w = np.ascontiguousarray(w)
    params = {"W": w}
    extra = None
    if len(ins) > 2 and ins[2] is not None:
        c = im.const(ins[2], "Gemm C (the bias)")
        if beta != 1.0:
            c = c * np.asarray(beta, c.dtype)
        n = w.shape[1]
        if c.size == 1:
            params["B"] = np.full((n,), c.reshape(()), dtype=c.dtype)
        elif c.size == n and c.shape[-1] == n:
            params["B"] = c.reshape(n)
        else:
            extra = c
    y = im.add("Gemm", [x], params=params, suffix="gemm" if extra is not None else None)
    if extra is not None:
        y = im.add("Add", [y], params={"B": extra})
    return y


def _window_attrs(im, a, n):
    attrs = {"layout": "NCHW"}
    if a.get("strides"):
        attrs["strides"] = list(a["strides"])
    pads = a.get("pads")
    if pads and any(pads):
        attrs["pads"] = list(pads)
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise _Unsupported(f"auto_pad {auto_pad!r}")
    if auto_pad != "NOTSET":
        attrs["auto_pad"] = auto_pad
        attrs.pop("pads", None)
    return attrs


def _conv(im, ins, a):
    x = im.tensor(ins[0])
    w = im.const(ins[1], "Conv weight")
    attrs = _window_attrs(im, a, w.ndim - 2)
    if a.get("dilations"):
        attrs["dilations"] = list(a["dilations"])
    attrs["group"] = int(a.get("group", 1))
    params = {"W": w}
    if len(ins) > 2 and ins[2] is not None:
        params["B"] = im.const(ins[2], "Conv bias")
    return im.add("Conv", [x], attrs=attrs, params=params)


def _conv_transpose(im, ins, a):
    x = im.tensor(ins[0])
    w = im.const(ins[1], "ConvTranspose weight")
    n = w.ndim - 2
    spatial = im.type(x).shape[2:]
    strides = list(a.get("strides") or [1] * n)
    dil = list(a.get("dilations") or [1] * n)
    opad = list(a.get("output_padding") or [0] * n)
    pads = list(a.get("pads") or [0] * (2 * n))
    if any(p < 0 for p in pads[:n]):
        raise _Unsupported(f"negative begin pads {pads[:n]}")
    for i in range(n):
        if pads[n + i] < 0:  # a negative end pad is extra output rows (tf2onnx writes it)
            opad[i] -= pads[n + i]
            pads[n + i] = 0
    auto_pad = a.get("auto_pad", "NOTSET")
    out_shape = a.get("output_shape")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") or out_shape:
        if None in spatial:
            raise _Unsupported("auto_pad/output_shape over unknown spatial dims")
        target = (list(out_shape)[-n:] if out_shape else
                  [s * st for s, st in zip(spatial, strides)])
        pads = [0] * (2 * n)
        for i in range(n):
            total = (strides[i] * (spatial[i] - 1) + opad[i] + (w.shape[2 + i] - 1) * dil[i]
                     + 1 - target[i])
            if total < 0:
                opad[i] -= total  # the output is larger than the full result: pad the end
                total = 0
            small = total // 2
            # As onnxruntime: SAME_UPPER crops the odd row at the end, otherwise the start.
            begin = small if auto_pad == "SAME_UPPER" else total - small
            pads[i], pads[n + i] = begin, total - begin
    attrs = {"layout": "NCHW", "strides": strides, "dilations": dil, "pads": pads,
             "group": int(a.get("group", 1)), "output_padding": opad}
    params = {"W": w}
    if len(ins) > 2 and ins[2] is not None:
        params["B"] = im.const(ins[2], "ConvTranspose bias")
    return im.add("ConvTranspose", [x], attrs=attrs, params=params)


def _pool(op):
    def handle(im, ins, a):
        x = im.tensor(ins[0])
        kernel = list(a["kernel_shape"])
        attrs = _window_attrs(im, a, len(kernel))
        attrs["kernel_shape"] = kernel
        attrs["ceil_mode"] = int(a.get("ceil_mode", 0))
        dil = a.get("dilations")
        if op == "MaxPool":
            if dil:
                attrs["dilations"] = list(dil)
        else:
            if dil and any(d != 1 for d in dil):
                raise _Unsupported("AveragePool with dilations")
            attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
        return [im.add(op, [x], attrs=attrs),
                _Missing("MaxPool's Indices output is not supported")]

    return handle


def _global_pool(op):
    def handle(im, ins, a):
        return im.add(op, [im.tensor(ins[0])], attrs={"layout": "NCHW"})

    return handle


def _batchnorm(im, ins, a):
    if a.get("training_mode", 0):
        raise _Unsupported("training_mode=1 (batch statistics)")
    if not a.get("spatial", 1):  # opsets 7-8: statistics per channel *and* position
        raise _Unsupported("spatial=0 (per-position statistics)")
    names = ("scale", "B", "mean", "var")
    params = {k: im.const(v, f"BatchNormalization {k}") for k, v in zip(names, ins[1:5])}
    y = im.add("BatchNormalization", [im.tensor(ins[0])], params=params,
               attrs={"axis": 1, "epsilon": float(a.get("epsilon", 1e-5))})
    return [y] + [_Missing("BatchNormalization's training outputs are not supported")] * 4


def _layernorm(im, ins, a):
    params = {"scale": im.const(ins[1], "LayerNormalization scale")}
    if len(ins) > 2 and ins[2] is not None:
        params["B"] = im.const(ins[2], "LayerNormalization bias")
    y = im.add("LayerNormalization", [im.tensor(ins[0])], params=params,
               attrs={"axis": int(a.get("axis", -1)), "epsilon": float(a.get("epsilon", 1e-5))})
    return [y, _Missing("LayerNormalization's Mean output is not supported"),
            _Missing("LayerNormalization's InvStdDev output is not supported")]


def _lrn(im, ins, a):
    return im.add("LRN", [im.tensor(ins[0])],
                  attrs={"layout": "NCHW", "size": int(a["size"]),
                         "alpha": float(a.get("alpha", 1e-4)), "beta": float(a.get("beta", 0.75)),
                         "bias": float(a.get("bias", 1.0))})


def _dropout(im, ins, a):
    if len(ins) > 2 and ins[2] is not None and bool(im.const(ins[2], "training_mode")):
        raise _Unsupported("training_mode=true")
    ratio = float(im.const(ins[1], "ratio")) if len(ins) > 1 and ins[1] is not None else \
        float(a.get("ratio", 0.5))
    return [im.add("Dropout", [im.tensor(ins[0])], attrs={"ratio": ratio}),
            _Missing("Dropout's mask output is not supported")]


def _identity(im, ins, a):
    return im.add("Identity", [im.tensor(ins[0])])


def _cast(im, ins, a):
    x = im.tensor(ins[0])
    src = np.dtype(im.type(x).dtype)
    dst = np.dtype(im.onnx.helper.tensor_dtype_to_np_dtype(a["to"]))
    if src == dst:
        return x
    users = im.consumers.get(im.node.output[0], [])
    if dst.kind in "iu" and users and all(u.op_type == "Gather" and len(u.input) > 1
                                          and u.input[1] == im.node.output[0] for u in users):
        return x  # only Gather indices read it: the IR Gather truncates to ints itself
    return im.add("Cast", [x], attrs={"to": str(dst)})


def _concat(im, ins, a):
    return im.add("Concat", [im.tensor(v) for v in ins], attrs={"axis": int(a["axis"])})


def reshape_target(shape_value, input_shape) -> list[int]:
    """An IR Reshape ``shape`` from a (possibly symbolic) ONNX target.

    A single unknown entry becomes -1, which is exact whatever it stands for.  With several
    (or a -1 already there), the batch in front becomes 0 (copy the input's unknown dim 0,
    the batch by the IR's convention); any other unknown dim left over is refused rather
    than guessed.
    """
    dims = _ints(shape_value)
    out = list(dims)
    unknown = [i for i, d in enumerate(out) if isinstance(d, _Sym)]
    if (len(unknown) > 1 or (unknown and -1 in out)) and out and out[0] is BATCH \
            and input_shape and input_shape[0] is None:
        out[0] = 0
        unknown = unknown[1:]
    if unknown:
        if len(unknown) > 1 or -1 in out:
            raise _Unsupported(f"Reshape to {dims}: several dims depend on unknown sizes")
        out[unknown[0]] = -1
    return [int(d) for d in out]


def _reshape(im, ins, a):
    x = im.tensor(ins[0])
    target = ins[1] if len(ins) > 1 else np.asarray(a["shape"])
    if not (_is_const(target) or _is_symbolic(target)):
        raise _Unsupported("the target shape must be constant")
    shape = reshape_target(target, im.type(x).shape)
    if a.get("allowzero") and 0 in shape:
        raise _Unsupported("allowzero=1 with a zero in the shape")
    return im.add("Reshape", [x], attrs={"shape": shape})


def _flatten(im, ins, a):
    return im.add("Flatten", [im.tensor(ins[0])], attrs={"axis": int(a.get("axis", 1))})


def _transpose(im, ins, a):
    x = im.tensor(ins[0])
    perm = a.get("perm") or list(range(im.rank(x)))[::-1]
    return im.add("Transpose", [x], attrs={"perm": [int(p) for p in perm]})


def _squeeze(im, ins, a):
    x = im.tensor(ins[0])
    shape = im.type(x).shape
    axes = _axes_of(im, ins, a, 1, len(shape))
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    return im.add("Squeeze", [x], attrs={"axes": axes})


def _unsqueeze(im, ins, a):
    x = im.tensor(ins[0])
    axes = _axes_of(im, ins, a, 1)
    return im.add("Unsqueeze", [x], attrs={"axes": axes})


def _pad(im, ins, a):
    x = im.tensor(ins[0])
    rank = im.rank(x)
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise _Unsupported(f"mode {mode!r}")
    if im.opset < 11:
        pads, value = list(a["pads"]), float(a.get("value", 0.0))
    else:
        pads = _ints(im.const(ins[1], "pads"))
        value = (float(im.const(ins[2], "constant_value"))
                 if len(ins) > 2 and ins[2] is not None else 0.0)
        if len(ins) > 3 and ins[3] is not None:
            axes = [_axis(ax, rank, "Pad axis") for ax in im.const(ins[3], "axes")]
            full = [0] * (2 * rank)
            for j, ax in enumerate(axes):
                full[ax], full[rank + ax] = pads[j], pads[len(axes) + j]
            pads = full
    if any(p < 0 for p in pads):
        raise _Unsupported("negative pads (cropping)")
    return im.add("Pad", [x], attrs={"pads": [int(p) for p in pads], "value": value,
                                    "mode": mode})


def _slice(im, ins, a):
    x = im.tensor(ins[0])
    shape = im.type(x).shape
    spec = []
    for s, e, ax, st in zip(*_slice_spec(im, ins, a, len(shape))):
        # INT32_MAX/MIN are exporters' "to the end": the IR's is +-2**63 (a dim of unknown
        # size must not come out as 2**31 long).
        e = 2 ** 63 - 1 if e >= 2 ** 31 - 1 else -(2 ** 63) if e <= -(2 ** 31) else e
        if not (s == 0 and st == 1 and (e == 2 ** 63 - 1 or e == shape[ax])):
            spec.append((s, e, ax, st))  # tf2onnx slices every axis: skip whole ones
    if not spec:
        return im.add("Identity", [x])
    starts, ends, axes, steps = (list(v) for v in zip(*spec))
    return im.add("Slice", [x], attrs={"starts": starts, "ends": ends, "axes": axes,
                                      "steps": steps if any(s != 1 for s in steps) else None})


def _tile(im, ins, a):
    x = im.tensor(ins[0])
    repeats = [int(r) for r in im.const(ins[1], "repeats")]
    if len(repeats) != im.rank(x):
        raise ValueError(f"{len(repeats)} repeats for a tensor of rank {im.rank(x)}")
    y = x
    for axis, r in enumerate(repeats):
        if r != 1:
            # Tiling one axis r times is concatenating r copies along it.
            y = im.add("Concat", [y] * r, attrs={"axis": axis}, suffix=f"tile{axis}")
    return y if y != x else im.add("Identity", [x])


def _split_bounds(im, ins, a, size):
    n_out = len(im.node.output)
    if len(ins) > 1 and ins[1] is not None:
        sizes = _ints(im.const(ins[1], "split"))
    elif a.get("split"):
        sizes = list(a["split"])
    else:
        if size is None:
            raise _Unsupported("splits an axis of unknown size")
        n = a.get("num_outputs", n_out)
        chunk = -(-size // n)
        sizes = [min(chunk, size - i * chunk) for i in range(n)]
    if size is not None and sum(int(s) for s in sizes) != size:
        raise ValueError(f"split sizes {[int(s) for s in sizes]} do not add up to the axis "
                         f"size {size}")
    bounds, start = [], 0
    for s in sizes:
        bounds.append((start, start + int(s)))
        start += int(s)
    return bounds


def _split(im, ins, a):
    x = im.tensor(ins[0])
    rank = im.rank(x)
    axis = _axis(a.get("axis", 0), rank)
    outs = []
    for i, (start, end) in enumerate(_split_bounds(im, ins, a, im.type(x).shape[axis])):
        outs.append(im.add("Slice", [x], attrs={"starts": [start], "ends": [end],
                                               "axes": [axis]}, suffix=f"split{i}"))
    return outs


def _threshold_relu_pattern(im, x_name: str) -> bool:
    """Whether every reader of the current node's output is ``Where(this, x, 0)``."""
    out = im.node.output[0]
    users = im.consumers.get(out, [])

    def zero(name):
        v = im.env.get(name)
        return _is_const(v) and not np.any(v)

    return bool(users) and all(u.op_type == "Where" and list(u.input[:2]) == [out, x_name]
                               and zero(u.input[2]) for u in users)


def _compare(op):
    def handle(im, ins, a):
        x, c = ins
        if (op == "Greater" and isinstance(x, str) and _is_const(c) and c.size == 1
                and _threshold_relu_pattern(im, im.node.input[0])):
            return _Compare(op, x, c)
        if isinstance(x, str) and not isinstance(c, str):
            b = c.materialize() if isinstance(c, _Broadcast) else im.const(c, f"{op} operand")
            return im.add(op, [x], params={"B": b.astype(im.type(x).dtype)})
        return im.add(op, [im.tensor(x, broadcast=True), im.tensor(c, broadcast=True)])

    return handle


def _not(im, ins, a):
    return im.add("Not", [im.tensor(ins[0])])


def _where(im, ins, a):
    cond, x, y = ins
    if isinstance(cond, _Compare):
        # Where(x > t, x, 0): ONNX's ThresholdedRelu spelled out (ir_bridge's own backend
        # writes Keras's relu threshold this way).
        return im.add("Relu", [x], attrs={"threshold": float(cond.c.reshape(()))})
    return im.add("Where", [im.tensor(v, broadcast=True) for v in (cond, x, y)])


def _reverse_sequence(im, ins, a):
    x = im.tensor(ins[0])
    shape = im.type(x).shape
    batch_axis, time_axis = int(a.get("batch_axis", 1)), int(a.get("time_axis", 0))
    lens = ins[1]
    value = lens.value if isinstance(lens, _Broadcast) else im.const(lens, "sequence_lens")
    if shape[time_axis] is None or np.any(np.asarray(value) != shape[time_axis]):
        raise _Unsupported("sequence_lens shorter than the sequence (only whole-sequence "
                           "reversal is in the IR)")
    del batch_axis
    return im.add("Slice", [x], attrs={"starts": [-1], "ends": [-(2 ** 62)],
                                      "axes": [time_axis], "steps": [-1]})


def _gather(im, ins, a):
    data, idx = ins
    axis = int(a.get("axis", 0))
    if _is_const(data) and isinstance(idx, str):
        return im.add("Gather", [idx], attrs={"axis": axis}, params={"data": data})
    if isinstance(data, str) and _is_const(idx):
        x = data
        axis = _axis(axis, im.rank(x))
        flat = idx.ravel().astype(np.int64)
        size = im.type(x).shape[axis]
        if size is not None:
            if np.any((flat < -size) | (flat >= size)):
                raise ValueError(f"indices {idx.ravel().tolist()} are out of range for axis "
                                 f"{axis} of size {size}")
            flat = np.where(flat < 0, flat + size, flat)
        if flat.size and np.all(np.diff(flat) == 1) and flat[0] >= 0 and idx.ndim <= 1:
            start = int(flat[0])
            y = im.add("Slice", [x], attrs={"starts": [start], "ends": [start + flat.size],
                                           "axes": [axis]},
                       suffix="slice" if idx.ndim == 0 else None)
            if idx.ndim == 0:
                y = im.add("Squeeze", [y], attrs={"axes": [axis]})
            return y
        raise _Unsupported("gathers non-contiguous indices from a computed tensor")
    raise _Unsupported("needs constant data with computed indices, or constant indices")


def _resize_scales(im, x, ins, a, op):
    """The per-axis scales of a Resize/Upsample, one for every axis of ``x``."""
    shape = im.type(x).shape
    if op == "Upsample" or im.opset < 11:
        scales_v = ins[1] if len(ins) > 1 else np.asarray(a["scales"])
        return [float(s) for s in im.const(scales_v, "scales")]
    rank = len(shape)
    # Opset 18's ``axes``: scales/sizes are given for these axes only, the rest keep theirs.
    axes = ([_axis(ax, rank, "Resize axis") for ax in a["axes"]] if a.get("axes")
            else list(range(rank)))
    if len(ins) > 2 and ins[2] is not None and np.size(ins[2]):
        listed = [float(s) for s in im.const(ins[2], "scales")]
    elif len(ins) > 3 and ins[3] is not None:
        listed, known = [], []
        for ax, s in zip(axes, _ints(ins[3])):
            d = shape[ax]
            if isinstance(s, _Sym) or d is None:
                if not (isinstance(s, _Sym) and d is None):
                    raise _Unsupported("Resize sizes depend on the batch size")
                listed.append(1.0)
            else:
                listed.append(s / d)
                known.append(len(listed) - 1)
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch" and known:
            # One scale for every sized axis: the smallest ("not_larger") or the largest.
            pick = min if policy == "not_larger" else max
            scale = pick(listed[i] for i in known)
            for i in known:
                listed[i] = scale
    else:
        raise _Unsupported("Resize without scales or sizes")
    if len(listed) != len(axes):
        raise ValueError(f"{len(listed)} scales/sizes for {len(axes)} axes")
    out = [1.0] * rank
    for ax, sc in zip(axes, listed):
        out[ax] = sc
    return out


_NEAREST_OK = {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
               ("half_pixel", "round_prefer_ceil"), ("pytorch_half_pixel", "round_prefer_floor"),
               ("pytorch_half_pixel", "round_prefer_ceil"), ("tf_half_pixel_for_nn", "floor")}


def _resize(op):
    def handle(im, ins, a):
        x = im.tensor(ins[0])
        if a.get("mode", "nearest") != "nearest":
            raise _Unsupported(f"mode {a.get('mode')!r} (only nearest is in the IR)")
        if op == "Resize" and im.opset >= 11:
            key = (a.get("coordinate_transformation_mode", "half_pixel"),
                   a.get("nearest_mode", "round_prefer_floor"))
            if key not in _NEAREST_OK:
                raise _Unsupported(f"nearest Resize with {key} does not repeat pixels")
        scales = _resize_scales(im, x, ins, a, op)
        if any(s != int(s) or s < 1 for s in scales):
            raise _Unsupported(f"scales {scales}: only integer upscaling is in the IR")
        return im.add("Resize", [x], attrs={"scales": [int(s) for s in scales]})

    return handle


def _reduce(op):
    def handle(im, ins, a):
        x = im.tensor(ins[0])
        rank = im.rank(x)
        axes = _axes_of(im, ins, a, 1, rank)
        if not axes:
            if a.get("noop_with_empty_axes"):
                return im.add("Identity", [x])
            axes = list(range(rank))
        return im.add(op, [x], attrs={"axes": axes, "keepdims": int(a.get("keepdims", 1))})

    return handle


def _rnn(op):
    def handle(im, ins, a):
        ins = list(ins) + [None] * (8 - len(ins))
        x = im.tensor(ins[0])
        params = {"W": im.const(ins[1], f"{op} W"), "R": im.const(ins[2], f"{op} R")}
        if ins[3] is not None:
            params["B"] = im.const(ins[3], f"{op} B")
        if op == "LSTM" and ins[7] is not None:
            params["P"] = im.const(ins[7], "LSTM P (peepholes)")
        batch_first = int(a.get("layout", 0))
        if ins[4] is not None:
            lens = im.const(ins[4], "sequence_lens")
            t = im.type(x).shape[1 if batch_first else 0]
            if t is None or np.any(lens != t):
                raise _Unsupported("sequence_lens shorter than the sequence")
        states = [ins[5]] + ([ins[6]] if op == "LSTM" else [])
        runtime = []
        for s in states:
            if s is None or (isinstance(s, _Broadcast) and s.is_zero()) or (
                    _is_const(s) and not np.any(s)):
                runtime.append(None)
            elif isinstance(s, str):
                runtime.append(s)
            else:
                raise _Unsupported("a non-zero constant initial state")
        if any(r is None for r in runtime) and any(r is not None for r in runtime):
            raise _Unsupported("one initial state computed and the other zero")
        attrs = {"hidden_size": int(a["hidden_size"]),
                 "direction": a.get("direction", "forward"), "batch_first": batch_first}
        for key in ("activations", "activation_alpha", "activation_beta"):
            if a.get(key):
                attrs[key] = list(a[key])
        if a.get("clip") is not None:
            attrs["clip"] = float(a["clip"])
        if op == "LSTM":
            attrs["input_forget"] = int(a.get("input_forget", 0))
        else:
            attrs["linear_before_reset"] = int(a.get("linear_before_reset", 0))
        inputs = [x] + [r for r in runtime if r is not None]
        node = im.add(op, inputs, attrs=attrs, params=params)
        names = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
        return [im.add("GetItem", [node], attrs={"index": i}, suffix=n) if out else None
                for i, (n, out) in enumerate(zip(names, im.node.output))]

    return handle


HANDLERS: dict[str, Callable] = {
    "Relu": _unary("Relu"), "Sigmoid": _unary("Sigmoid"), "Tanh": _unary("Tanh"),
    "Softplus": _unary("Softplus"), "Softsign": _unary("Softsign"), "Exp": _unary("Exp"),
    "Erf": _unary("Erf"), "Sqrt": _unary("Sqrt"), "Neg": _unary("Neg"), "Abs": _unary("Abs"),
    "Log": _unary("Log"), "Reciprocal": _unary("Reciprocal"), "Floor": _unary("Floor"),
    "Mish": _unary("Mish"), "HardSwish": _unary("HardSwish"),
    "LeakyRelu": _unary("LeakyRelu", alpha=("alpha", 0.01)),
    "Elu": _unary("Elu", alpha=("alpha", 1.0)),
    "Selu": _unary("Selu", alpha=("alpha", 1.67326319217681884765625),
                   gamma=("gamma", 1.05070102214813232421875)),
    "HardSigmoid": _unary("HardSigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)),
    "Swish": _unary("Swish", alpha=("alpha", 1.0)),
    "ThresholdedRelu": _thresholded_relu, "Gelu": _gelu, "Erfc": _erfc, "Clip": _clip,
    "PRelu": _prelu,
    "Softmax": _softmax("Softmax"), "LogSoftmax": _softmax("LogSoftmax"),
    **{op: _binary(op) for op in ("Add", "Sub", "Mul", "Div", "Pow")},
    **{op: _variadic(op) for op in ("Max", "Min", "Mean", "Sum")},
    "MatMul": _matmul, "Gemm": _gemm, "Conv": _conv, "ConvTranspose": _conv_transpose,
    "MaxPool": _pool("MaxPool"), "AveragePool": _pool("AveragePool"),
    "GlobalAveragePool": _global_pool("GlobalAveragePool"),
    "GlobalMaxPool": _global_pool("GlobalMaxPool"),
    "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm, "LRN": _lrn,
    "Dropout": _dropout, "Identity": _identity, "Cast": _cast, "Concat": _concat,
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose, "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze, "Pad": _pad, "Slice": _slice, "Split": _split, "Gather": _gather,
    "ReverseSequence": _reverse_sequence, "Tile": _tile, "Where": _where, "Not": _not,
    **{op: _compare(op) for op in ("Less", "Greater", "Equal", "LessOrEqual",
                                   "GreaterOrEqual", "And", "Or")},
    "Resize": _resize("Resize"), "Upsample": _resize("Upsample"),
    "ReduceMean": _reduce("ReduceMean"), "ReduceMax": _reduce("ReduceMax"),
    "LSTM": _rnn("LSTM"), "GRU": _rnn("GRU"),
}


def supported_ops() -> list[str]:
    """ONNX op types this frontend reads (some only on constant inputs)."""
    return sorted(set(HANDLERS) | set(FOLDERS))


# ---------------------------------------------------------------- idioms


def _single_user(graph, node, user) -> bool:
    return [u.name for u in graph.users(node)] == [user.name] and not graph.is_output(node)


def _fold_bias(graph) -> None:
    """Fold ``Add(B)`` into the bias-less ``Gemm`` (last axis) or ``Conv`` (channel axis 1)
    that feeds it alone: the ONNX spelling of a biased dense or conv layer."""
    for add in list(graph):
        if add.op != "Add" or "B" not in add.params or len(add.inputs) != 1:
            continue
        host = graph.node(add.inputs[0])
        if host.op not in ("Gemm", "Conv") or "B" in host.params or host.attrs.get("activation"):
            continue
        if not _single_user(graph, host, add) or add.type != host.type:
            continue
        b = add.params["B"]
        rank = host.type.rank
        if b.ndim > rank:
            continue
        if host.op == "Gemm":
            n = host.params["W"].shape[1]
            if b.shape[-1:] != (n,) or b.size != n:
                continue
        else:
            n = host.params["W"].shape[0]
            full = b.reshape((1,) * (rank - b.ndim) + b.shape)
            if full.shape[1] != n or full.size != n:
                continue
        host.params["B"] = np.ascontiguousarray(b.reshape(n))
        graph.replace_all_uses_with(add, host)
        graph.remove_node(add)
        graph._infer_one(host)


# ---------------------------------------------------------------- entry point


def _accepts(obj) -> bool:
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(obj, onnx.ModelProto)


def read_model(src):
    """``(ModelProto, description)`` for a path or a ``ModelProto``; a file that is not a
    valid ONNX model raises ``InvalidModelError`` naming it."""
    onnx = require("onnx", "onnx")
    if isinstance(src, onnx.ModelProto):
        model, where = src, f"<onnx.ModelProto {src.graph.name!r}>"
    else:
        where = str(src)
        try:
            model = onnx.load(where)
        except FileNotFoundError:
            raise InvalidModelError(f"{where}: no such file") from None
        except Exception as exc:  # protobuf's DecodeError and friends
            raise InvalidModelError(f"{where}: not a readable ONNX model ({type(exc).__name__}:"
                                    f" {exc})") from exc
    if not model.graph.output:
        raise InvalidModelError(f"{where}: not an ONNX model with a graph (no graph outputs; "
                                "the file may be truncated or not ONNX at all)")
    check_opset(model, where)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, or a C++ error for odd files
        # An op the checker does not know (Keras's export leaves TensorFlow's Erfc in the
        # graph) is for the converter to judge; anything else is a malformed file.
        if "No Op registered for" not in str(exc):
            raise InvalidModelError(f"{where}: fails the ONNX checker: {exc}") from exc
    return model, where


def check_opset(model, where: str) -> int | None:
    """The model's default-domain opset, if it is one this frontend reads
    (:data:`MIN_OPSET` to :data:`MAX_OPSET`); ``UnsupportedLayerError`` naming ``where``,
    the opset and the range otherwise.  ``None`` when the model imports no default domain
    (the checker then refuses it if any node needs one)."""
    versions = sorted({int(o.version) for o in model.opset_import if o.domain in _DOMAINS})
    if not versions:
        return None
    if len(versions) > 1:
        raise InvalidModelError(f"{where}: imports the default ONNX domain at several opsets "
                                f"({', '.join(map(str, versions))})")
    opset = versions[0]
    if MIN_OPSET <= opset <= MAX_OPSET:
        return opset
    if opset > MAX_OPSET:
        why = ("a newer opset may change what an op means; convert the model down with "
               f"onnx.version_converter.convert_version(model, {MAX_OPSET})")
    else:
        why = ("before opset 7 element-wise ops broadcast by the legacy 'broadcast'/'axis' "
               "rules and BatchNormalization/Dropout had an is_test training mode; upgrade "
               f"the model with onnx.version_converter.convert_version(model, {MIN_OPSET})")
    raise UnsupportedLayerError(
        f"{where}: ONNX opset {opset} (default domain) is not supported: ir_bridge reads "
        f"opsets {MIN_OPSET} to {MAX_OPSET} ({why})")


@register_frontend("onnx", suffixes=(".onnx",), accepts=_accepts,
                   description="ONNX ModelProto or .onnx file (spatial ops in NCHW).")
def load(src, *, input_shapes: dict | None = None, **_options) -> Graph:
    """Read an ``.onnx`` path or ``onnx.ModelProto`` into an IR graph (layout NCHW).

    ``input_shapes`` overrides graph input shapes by name (``None`` for unknown dims).
    Raises ``UnsupportedLayerError`` listing every node that cannot be converted and
    ``InvalidModelError`` for a file that is not a valid ONNX model.
    """
    model, where = read_model(src)
    return _Importer(model, where, input_shapes).run()
