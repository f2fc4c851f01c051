"""MDF backend: an IR graph (NCHW, after ``layout-nchw``) -> ``modeci_mdf`` objects and a
compact MDF JSON/YAML file.

Layout of the MDF graph it writes (the MDF frontend reads it back into the same graph):

* **One MDF node per IR node**, its id the IR node's name made a valid identifier. A fused
  ``Gemm``/``Conv`` with an activation is one node whose functions chain the op and the
  activation; a ``Gemm`` with ``flatten`` starts with ``onnx::Flatten``.
* **Graph inputs** are nodes holding one input port (id = the input's name) with no edge,
  its ``shape`` with 1 in place of the batch and ``metadata.dynamic_axes = [0]``, and an
  output port passing the port through. The file holds the model, never input data.
* Every other node reads its inputs on ports ``in0``, ``in1``, … (an ``MdfExpression`` on
  the names its expression uses), holds its weights as parameters (``weight``, ``bias``,
  …; arrays), computes with ``onnx::`` functions (``{"onnx::Conv": {args}}``, ONNX opset
  15 as the reference engine runs it) or plain numpy expressions the reference engine
  evaluates, and returns its value on the output port ``out``.
* Graph ``metadata`` records ``inputs`` and ``outputs`` as ``"node.port"`` so the order of
  several inputs/outputs survives.

Writing is compact: float32 weights are printed with the shortest decimal text that reads
back to the same float32 (checked, element by element, before writing), so ~12 bytes per
weight instead of the ~63 of modeci_mdf's writer, and the file still loads with
``modeci_mdf.utils.load_mdf``. ``.json`` or ``.yaml``/``.yml`` is chosen by suffix. Files
are streamed (the whole text is never held: large arrays are formatted slice by slice,
vectorised, without Python floats) into a temporary file that is renamed when complete, so
a failed write leaves nothing.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import require
from ..errors import IRBridgeError, UnsupportedLayerError
from ..io import atomic_write
from ..ir.opset import same_pads
from ..registry import register_backend

_ID = re.compile(r"[^0-9A-Za-z_]")

# ONNX ops whose single input is named ``input`` (the others use ``X``).
_INPUT_NAMED = {"Tanh", "Softsign", "Exp", "Erf", "Log", "Identity"}
_ONNX_UNARY = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
               "Softplus", "Softsign", "Exp", "Erf", "Sqrt", "Neg", "Abs", "Log", "Reciprocal",
               "Floor", "Identity"}
_UNARY_ATTRS = {"LeakyRelu": ("alpha",), "Elu": ("alpha",), "Selu": ("alpha", "gamma"),
                "HardSigmoid": ("alpha", "beta")}
_POOLS = {"MaxPool", "AveragePool"}


def _mdf():
    return require("modeci_mdf.mdf", "mdf", package="modeci-mdf")


def _num(v) -> str:
    """A float as expression text (shortest round-trip; infinities as numpy.inf)."""
    v = float(v)
    if math.isnan(v):
        return "numpy.nan"
    if math.isinf(v):
        return "numpy.inf" if v > 0 else "(-numpy.inf)"
    text = repr(v)
    return f"({text})" if v < 0 else text


class _Body:
    """What one MDF node holds: input port ids, parameters and functions, in order."""

    def __init__(self, ports):
        self.ports = list(ports)
        self.params: dict[str, Any] = {}
        self.functions: list[tuple[str, Any, dict | None]] = []  # (id, function or expr, args)

    def onnx(self, fid: str, op: str, args: dict) -> str:
        self.functions.append((fid, f"onnx::{op}", args))
        return fid

    def expr(self, fid: str, text: str) -> str:
        self.functions.append((fid, text, None))
        return fid

    @property
    def result(self) -> str:
        return self.functions[-1][0]


# =========================================================================== op emitters


def _activation(body: _Body, op: str, attrs: dict, x: str) -> str:
    """Append ``op`` (an activation) applied to ``x``; returns the function id."""
    fid = op.lower()
    if op == "Relu":
        slope, cap, thr = attrs.get("negative_slope", 0.0), attrs.get("max_value"), \
            attrs.get("threshold", 0.0)
        if not slope and cap is None and not thr:
            return body.onnx(fid, "Relu", {"X": x})
        pos = f"numpy.where({x} > {_num(thr)}, {x}, 0.0)" if thr else f"numpy.maximum({x}, 0.0)"
        if cap is not None:
            pos = f"numpy.clip({pos}, 0.0, {_num(cap)})"
        if slope:
            pos = f"{pos} - {_num(slope)} * numpy.maximum({_num(thr)} - {x}, 0.0)"
        return body.expr(fid, pos)
    if op in _ONNX_UNARY:
        args = {"input" if op in _INPUT_NAMED else "X": x}
        for key in _UNARY_ATTRS.get(op, ()):
            args[key] = float(attrs[key])
        return body.onnx(fid, op, args)
    if op in ("Softmax", "LogSoftmax"):
        return body.onnx(fid, op, {"input": x, "axis": int(attrs.get("axis", -1))})
    if op == "Clip":
        lo, hi = attrs.get("min"), attrs.get("max")
        return body.expr(fid, f"numpy.clip({x}, {_num(-math.inf if lo is None else lo)}, "
                              f"{_num(math.inf if hi is None else hi)})")
    if op == "Gelu":
        if attrs.get("approximate", "none") == "tanh":
            return body.expr(fid, f"0.5 * {x} * (1.0 + numpy.tanh({_num(math.sqrt(2 / math.pi))}"
                                  f" * ({x} + 0.044715 * {x} ** 3)))")
        # numpy has no erf, so the reference engine needs onnx::Erf for it.
        body.onnx("gelu_erf", "Erf", {"input": f"{x} * {_num(1 / math.sqrt(2))}"})
        return body.expr(fid, f"0.5 * {x} * (1.0 + gelu_erf)")
    if op == "Swish":
        return body.expr(fid, f"{x} / (1.0 + numpy.exp({_num(-attrs.get('alpha', 1.0))} * {x}))")
    if op == "Mish":
        return body.expr(fid, f"{x} * numpy.tanh(numpy.maximum({x}, 0.0) + "
                              f"numpy.log(1.0 + numpy.exp(-numpy.abs({x}))))")
    raise UnsupportedLayerError(f"activation {op} has no MDF form", [(op, op)])


def _pads(node, graph, spatial_kernel, strides, dilations):
    """Explicit ONNX pads for ``node`` (SAME padding resolved from the static input shape,
    since the reference engine cannot take string attributes)."""
    a = node.attrs
    n = len(spatial_kernel)
    if a["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
        spatial = graph.node(node.inputs[0]).type.shape[2:]
        if None in spatial:
            return None, a["auto_pad"]
        pairs = [same_pads(spatial[i], spatial_kernel[i], strides[i], dilations[i],
                           upper=a["auto_pad"] == "SAME_UPPER") for i in range(n)]
        pads = [p[0] for p in pairs] + [p[1] for p in pairs]
        return (pads if any(pads) else None), "NOTSET"
    if a["auto_pad"] == "VALID":
        return None, "NOTSET"
    return (list(a["pads"]) if a["pads"] is not None else None), "NOTSET"


def _window(node, graph, kernel, args):
    a = node.attrs
    n = len(kernel)
    strides = list(a["strides"]) if a.get("strides") is not None else None
    dil = list(a["dilations"]) if a.get("dilations") is not None else None
    pads, auto = _pads(node, graph, kernel, strides or [1] * n, dil or [1] * n)
    args["kernel_shape"] = [int(k) for k in kernel]
    if strides is not None:
        args["strides"] = [int(s) for s in strides]
    if pads is not None:
        args["pads"] = [int(p) for p in pads]
    if dil is not None:
        args["dilations"] = [int(d) for d in dil]
    if auto != "NOTSET":
        args["auto_pad"] = auto


def _emit_gemm(node, graph, body):
    x = body.ports[0]
    rank = graph.node(node.inputs[0]).type.rank
    if node.attrs["flatten"] is not None:
        x = body.onnx("flatten", "Flatten", {"input": x, "axis": int(node.attrs["flatten"])})
        rank = 2
    body.params["weight"] = node.params["W"]
    has_bias = "B" in node.params
    if has_bias:
        body.params["bias"] = node.params["B"]
    if rank == 2:
        args = {"A": x, "B": "weight"}
        if has_bias:
            args["C"] = "bias"
        body.onnx("gemm", "Gemm", args)
    else:  # ONNX Gemm is 2-D only; Dense on rank > 2 multiplies the last axis
        body.expr("gemm", f"{x} @ weight" + (" + bias" if has_bias else ""))


def _emit_conv(node, graph, body):
    w = node.params["W"]
    body.params["weight"] = w
    args = {"X": body.ports[0], "W": "weight"}
    if "B" in node.params:
        body.params["bias"] = node.params["B"]
        args["B"] = "bias"
    _window(node, graph, w.shape[2:], args)
    if node.attrs["group"] != 1:
        args["group"] = int(node.attrs["group"])
    if node.op == "ConvTranspose" and node.attrs["output_padding"] is not None:
        args["output_padding"] = [int(p) for p in node.attrs["output_padding"]]
    body.onnx(node.op.lower(), node.op, args)


def _emit_pool(node, graph, body):
    args = {"X": body.ports[0]}
    _window(node, graph, node.attrs["kernel_shape"], args)
    if node.attrs["ceil_mode"]:
        args["ceil_mode"] = 1
    if node.op == "AveragePool":
        if node.attrs["count_include_pad"]:
            args["count_include_pad"] = 1
        body.onnx("averagepool", "AveragePool", args)
    else:
        # The reference engine returns MaxPool's (Y, Indices); [0] is Y.
        body.onnx("maxpool_outputs", "MaxPool", args)
        body.expr("maxpool", "maxpool_outputs[0]")


def _emit_batchnorm(node, graph, body):
    rank = graph.node(node.inputs[0]).type.rank
    axis = node.attrs["axis"] % rank
    p = node.params
    if axis == 1:
        body.params.update(gamma=p["scale"], beta=p["B"], moving_mean=p["mean"],
                           moving_var=p["var"])
        body.onnx("batchnormalization_outputs", "BatchNormalization", {
            "X": body.ports[0], "scale": "gamma", "B": "beta", "input_mean": "moving_mean",
            "input_var": "moving_var", "epsilon": float(node.attrs["epsilon"]),
            "training_mode": 0})
        body.expr("batchnormalization", "batchnormalization_outputs[0]")
        return
    shape = (-1,) + (1,) * (rank - 1 - axis)
    body.params.update(gamma=p["scale"].reshape(shape), beta=p["B"].reshape(shape),
                       moving_mean=p["mean"].reshape(shape), moving_var=p["var"].reshape(shape))
    x = body.ports[0]
    body.expr("batchnormalization", f"({x} - moving_mean) / numpy.sqrt(moving_var + "
                                    f"{_num(node.attrs['epsilon'])}) * gamma + beta")


def _emit_layernorm(node, graph, body):
    rank = graph.node(node.inputs[0]).type.rank
    axes = tuple(range(node.attrs["axis"] % rank, rank))
    x = body.ports[0]
    mean = f"numpy.mean({x}, axis={axes}, keepdims=True)"
    text = (f"({x} - {mean}) / numpy.sqrt(numpy.mean(({x} - {mean}) ** 2, axis={axes}, "
            f"keepdims=True) + {_num(node.attrs['epsilon'])})")
    if "scale" in node.params:
        body.params["scale"] = node.params["scale"]
        text = f"{text} * scale"
    if "B" in node.params:
        body.params["bias"] = node.params["B"]
        text = f"{text} + bias"
    body.expr("layernormalization", text)


def _emit_binary(node, graph, body):
    names = ("X", "Y") if node.op == "Pow" else ("A", "B")
    if "B" in node.params:
        pname = "exponent" if node.op == "Pow" else "operand"
        body.params[pname] = node.params["B"]
        args = {names[0]: body.ports[0], names[1]: pname}
    else:
        args = {names[0]: body.ports[0], names[1]: body.ports[1]}
    body.onnx(node.op.lower(), node.op, args)


def _emit_variadic(node, graph, body):
    # A variadic ONNX op takes every value of its node in the reference engine: here,
    # exactly the input ports, in order.
    args = {"axis": int(node.attrs["axis"])} if node.op == "Concat" else {}
    body.onnx(node.op.lower(), node.op, args)


def _emit_shape_op(node, graph, body):
    x = body.ports[0]
    a = node.attrs
    op = node.op
    if op == "Flatten":
        body.onnx("flatten", op, {"input": x, "axis": int(a["axis"])})
    elif op == "Reshape":
        body.onnx("reshape", op, {"data": x, "shape": [int(d) for d in a["shape"]]})
    elif op == "Transpose":
        body.onnx("transpose", op, {"data": x, "perm": [int(p) for p in a["perm"]]})
    elif op == "Pad":
        args = {"data": x, "pads": [int(p) for p in a["pads"]]}
        if a["value"]:
            args["constant_value"] = float(a["value"])
        if a["mode"] != "constant":
            args["mode"] = a["mode"]
        body.onnx("pad", op, args)
    elif op == "Slice":
        args = {"data": x, "starts": [int(v) for v in a["starts"]],
                "ends": [int(v) for v in a["ends"]], "axes": [int(v) for v in a["axes"]]}
        if a["steps"] is not None:
            args["steps"] = [int(v) for v in a["steps"]]
        body.onnx("slice", op, args)
    elif op in ("Squeeze", "Unsqueeze"):
        body.onnx(op.lower(), op, {"data": x, "axes": [int(v) for v in a["axes"]]})
    elif op == "Resize":
        # An empty roi before the scales: the reference engine passes a function's inputs
        # by position, so without it the scales would bind to roi (BUG-2).
        body.onnx("resize", op, {"X": x, "roi": [], "scales": [float(s) for s in a["scales"]]})
    elif op in ("ReduceMean", "ReduceMax"):
        body.onnx(op.lower(), op, {"data": x, "axes": [int(v) for v in a["axes"]],
                                   "keepdims": int(a["keepdims"])})


def _emit_simple(node, graph, body):
    op = node.op
    x = body.ports[0] if body.ports else None
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        body.onnx(op.lower(), op, {"X": x})
    elif op == "MatMul":
        body.onnx("matmul", op, {"A": body.ports[0], "B": body.ports[1]})
    elif op == "PRelu":
        body.params["slope"] = node.params["slope"]
        body.onnx("prelu", op, {"X": x, "slope": "slope"})
    elif op == "Gather":
        body.params["table"] = node.params["data"]
        body.onnx("gather", op, {"data": "table", "indices": x, "axis": int(node.attrs["axis"])})
    elif op == "Dropout":
        body.onnx("dropout_outputs", op, {"data": x})
        body.expr("dropout", "dropout_outputs[0]")
    else:
        _activation(body, op, node.attrs, x)


def _emit_expression(node, graph, body):
    for i, name in enumerate(node.attrs["constants"]):
        body.params[name] = node.params[f"c{i}"]
    taken = set(node.attrs["inputs"]) | set(node.attrs["constants"])
    fid = "result"
    while fid in taken:
        fid += "_"
    body.expr(fid, node.attrs["expression"])


_EMITTERS = {
    "Gemm": _emit_gemm, "Conv": _emit_conv, "ConvTranspose": _emit_conv,
    "MaxPool": _emit_pool, "AveragePool": _emit_pool, "BatchNormalization": _emit_batchnorm,
    "LayerNormalization": _emit_layernorm, "MdfExpression": _emit_expression,
    **{op: _emit_binary for op in ("Add", "Sub", "Mul", "Div", "Pow")},
    **{op: _emit_variadic for op in ("Max", "Min", "Sum", "Mean", "Concat")},
    **{op: _emit_shape_op for op in ("Flatten", "Reshape", "Transpose", "Pad", "Slice",
                                     "Squeeze", "Unsqueeze", "Resize", "ReduceMean",
                                     "ReduceMax")},
    **{op: _emit_simple for op in ("GlobalAveragePool", "GlobalMaxPool", "MatMul", "PRelu",
                                   "Gather", "Dropout", *_ONNX_UNARY, "Softmax", "LogSoftmax",
                                   "Clip", "Gelu", "Swish", "Mish")},
}


def supported_ops() -> list[str]:
    """IR ops the MDF backend can write (besides ``Input`` and ``Constant``)."""
    return sorted(_EMITTERS)


# =========================================================================== the model


def _mdf_id(name: str, taken: set) -> str:
    base = _ID.sub("_", str(name)) or "node"
    if base[0].isdigit():
        base = f"n{base}"
    out, i = base, 0
    while out in taken:
        i += 1
        out = f"{base}_{i}"
    taken.add(out)
    return out


def build_model(graph, *, name: str | None = None):
    """The ``modeci_mdf.mdf.Model`` for ``graph`` (in NCHW layout: run ``layout-nchw`` first,
    as :func:`ir_bridge.emit` does). Raises :class:`UnsupportedLayerError` listing every node
    whose op has no MDF form."""
    mdf = _mdf()
    missing = [(n.name, n.op) for n in graph
               if n.op not in _EMITTERS and n.op not in ("Input", "Constant")]
    missing += [(n.name, f"{n.op}+{n.attrs.get('activation')}") for n in graph
                if n.attrs.get("activation") and n.attrs["activation"] not in _EMITTERS]
    if missing:
        ops = sorted({op for _, op in missing})
        raise UnsupportedLayerError(
            f"the MDF backend cannot write {len(missing)} node(s) ({', '.join(ops)}): "
            f"{', '.join(n for n, _ in missing)}; it writes {', '.join(supported_ops())}",
            missing)
    wrong = [n.name for n in graph if n.attrs.get("layout") not in (None, "NCHW")]
    if wrong:
        raise IRBridgeError(f"the MDF backend needs NCHW (onnx::Conv/pooling); node(s) {wrong} "
                            "are NHWC: run the layout-nchw pass first (ir_bridge.emit does)")
    name = name or graph.name
    taken: set = set()
    ids = {n.name: _mdf_id(n.name, taken) for n in graph}
    g = mdf.Graph(id=_mdf_id(name, set()))
    edge_ids: set = set()
    inputs, outputs = [], []
    for node in graph:
        nid = ids[node.name]
        if node.op == "Input":
            shape = node.attrs["shape"]
            # Written even when empty: readers take axis 0 as the batch when it is absent.
            meta = {"dynamic_axes": [i for i, d in enumerate(shape) if d is None]}
            port = mdf.InputPort(id=nid, shape=tuple(1 if d is None else int(d) for d in shape),
                                 type=node.attrs["dtype"], metadata=meta)
            g.nodes.append(mdf.Node(id=nid, input_ports=[port],
                                    output_ports=[mdf.OutputPort(id="out", value=nid)]))
            inputs.append(f"{nid}.{nid}")
            continue
        if node.op == "Constant":
            value = node.params["value"]
            meta = None if value.dtype == np.float32 else {"dtype": str(value.dtype)}
            g.nodes.append(mdf.Node(id=nid, parameters=[mdf.Parameter(id="constant", value=value,
                                                                      metadata=meta)],
                                    output_ports=[mdf.OutputPort(id="out", value="constant")]))
            continue
        ports = (list(node.attrs["inputs"]) if node.op == "MdfExpression"
                 else [f"in{i}" for i in range(len(node.inputs))])
        body = _Body(ports)
        try:
            _EMITTERS[node.op](node, graph, body)
            if node.attrs.get("activation"):
                _activation(body, node.attrs["activation"], node.attrs["activation_attrs"] or {},
                            body.result)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IRBridgeError(f"MDF backend: node {node.name!r} ({node.op}): {exc}") from exc
        params = []
        for pid, value in body.params.items():
            value = np.asarray(value)
            meta = None if value.dtype == np.float32 else {"dtype": str(value.dtype)}
            params.append(mdf.Parameter(id=pid, value=value, metadata=meta))
        functions = []
        for fid, fn, args in body.functions:
            if args is None:
                functions.append(mdf.Function(id=fid, value=fn))
            else:
                functions.append(mdf.Function(id=fid, function=fn, args=args))
        g.nodes.append(mdf.Node(
            id=nid, input_ports=[mdf.InputPort(id=p) for p in ports], parameters=params,
            functions=functions, output_ports=[mdf.OutputPort(id="out", value=body.result)]))
        for src, port in zip(node.inputs, ports):
            eid = _mdf_id(f"{ids[src]}__{nid}_{port}", edge_ids)
            g.edges.append(mdf.Edge(id=eid, sender=ids[src], sender_port="out", receiver=nid,
                                    receiver_port=port))
    outputs = [f"{ids[o]}.out" for o in graph.output_names]
    g.metadata = {"inputs": inputs, "outputs": outputs}
    from .. import __version__

    model = mdf.Model(id=g.id, graphs=[g], generating_application=f"ir_bridge {__version__}",
                      onnx_opset_version="15")
    return model


# =========================================================================== writing
#
# A file is written as a stream of text pieces: the document's structure (``json.dumps`` or
# ``yaml.dump`` of the model with a placeholder for every array) with each array's text
# generated slice by slice in between, so neither the whole document nor a whole array's
# text is ever held (the writer's working memory is a few MiB, whatever the model).
#
# Float32 weights are formatted without Python floats: the shortest-digits search
# (:func:`shortest_float32`) yields each value's decimal mantissa and exponent, and the
# characters are laid out in a byte matrix (one row per value, a zero byte where no
# character goes) that is compacted into the text in one step. The bytes are exactly those
# of ``json.dumps(shortest_float32(a).tolist(), separators=(",", ":"))``, the definition
# the format had before the streaming writer (pinned by the tests).

#: Values formatted per slice (bounds the writer's working memory to a few MiB).
_CHUNK = 1 << 16
#: ``10.0 ** k`` for k in -64..64 (as ``_POW10[k + 64]``), computed with numpy's power of
#: float64 exponents, as the search always computed its scales; exact for 0 <= k <= 22.
_POW10 = 10.0 ** np.arange(-64, 65, dtype=np.float64)
#: 1.0, 10.0, ..., 1e11.
_DECADES = 10.0 ** np.arange(12)
_INT_POW10 = [10 ** j for j in range(13)]


def _words(texts) -> np.ndarray:
    """Texts of at most 4 ASCII characters as native uint32 words (zero-padded bytes)."""
    return np.frombuffer(b"".join(t.encode("ascii").ljust(4, b"\0") for t in texts), np.uint32)


_DIGITS3 = _words(f"{i:03d}" for i in range(1000))  # "007"
_LEAD3 = _words(f"{i}" if i else "" for i in range(1000))  # "7", "" for 0
_UNITS3 = _words(f"{i}" for i in range(1000))  # "7", "0" for 0
_KEEP = np.frombuffer(bytes([0, 0, 0, 0, 255, 0, 0, 0, 255, 255, 0, 0, 255, 255, 255, 0]),
                      np.uint32)  # masks keeping the first 0..3 bytes of a word
_MINUS, _DOT = _words(["-", "."]).tolist()


class _Digits:
    """The shortest-digits search on a flat float32 array (see :func:`shortest_float32`).

    ``best``: float64 per element. For the elements ``active[fast]`` (finite, non-zero,
    found with ``digits`` = 1..9 significant digits at an exact scale), ``best`` is the
    float64 nearest to the decimal ``mantissa * 10**-k`` (``mantissa`` an integer below
    1e10, ``0 <= k <= 22``), which is what ``repr`` prints; the other active elements were
    redone with correctly rounded text; zeros, infinities and NaN are left as they are.
    """

    def __init__(self, x32: np.ndarray):
        with np.errstate(all="ignore"):
            x = x32.astype(np.float64)
        ax = np.abs(x)
        active = np.flatnonzero(np.isfinite(x) & (ax > 0))
        every = active.size == x.size
        xa, xa32 = (x, x32) if every else (x[active], x32[active])
        exp10 = np.floor(np.log10(ax if every else ax[active]))
        e = exp10.astype(np.int64)
        lo = np.ones(active.size, dtype=np.int64)
        hi = np.full(active.size, 10, dtype=np.int64)  # 10: none of 1..9 digits worked
        # A binary search over 1..9 significant digits, all elements at once (more digits
        # never hurt, so the search is valid); at most four rounds.
        with np.errstate(all="ignore"):
            while True:
                open_ = lo < hi
                if not open_.any():
                    break
                mid = (lo + hi) // 2
                scale = _POW10[np.clip(mid - 1 - e, -64, 64) + 64]
                ok = (np.round(xa * scale) / scale).astype(np.float32) == xa32
                hi = np.where(open_ & ok, mid, hi)
                lo = np.where(open_ & ~ok, mid + 1, lo)
            # The winning candidate (as each round computed it).
            scale = _POW10[np.clip(lo - 1 - e, -64, 64) + 64]
            mantissa = np.round(xa * scale)
            value = mantissa / scale
        best = x.copy()
        k = lo - 1 - e
        # The division by 10**k is exact only for 0 <= k <= 22; beyond (|x| >= 1e8 or
        # tiny), or when no digit count worked, redo those few elements with correctly
        # rounded text; the last resort is the float32 value itself (always exact).
        fast = (lo <= 9) & (k >= 0) & (k <= 22)
        if fast.all():
            best[active] = value
        else:
            best[active[fast]] = value[fast]
            for j in np.flatnonzero(~fast).tolist():
                i = active[j]
                for p in range(int(min(lo[j], 9)), 10):
                    text = float(f"{x[i]:.{p - 1}e}")
                    if np.float32(text) == x32[i]:
                        best[i] = text
                        break
        self.best, self.active, self.fast = best, active, fast
        self.mantissa, self.k, self.digits = np.abs(mantissa), k, lo


def shortest_float32(values: np.ndarray) -> np.ndarray:
    """For each float32 in ``values``, the float64 nearest to its shortest decimal text that
    converts back to the same float32 (same shape, float64).

    ``repr`` of the result is that decimal text (Python prints the shortest text that parses
    back to a float64, and no shorter text reaches the float32), and a JSON/YAML reader
    parses it back to exactly the result, so writing ``repr`` round-trips the float32 bit
    for bit. The digits are found numerically for all elements at once: a binary search
    over 1..9 significant digits (more digits never hurt, so the search is valid), each
    candidate checked by converting it to float32. Extreme exponents, where the decimal
    arithmetic is inexact, are redone with correctly rounded text; the last resort is the
    float32 value itself (always exact, up to 17 digits).
    """
    x32 = np.asarray(values, dtype=np.float32)
    return _Digits(x32.reshape(-1)).best.reshape(x32.shape)


def _special_text(x: float, yaml: bool) -> str:
    """``json.dumps`` of one float (YAML spellings with ``yaml``)."""
    text = json.dumps(x)
    return _yaml_floats(text) if yaml else text


def _yaml_floats(text: str) -> str:
    # YAML 1.1 reads "1e-05" as a string and has its own NaN/infinity spellings.
    text = _YAML_EXP.sub(r"\1.0\2", text)
    return text.replace("-Infinity", "-.inf").replace("Infinity", ".inf").replace("NaN", ".nan")


_YAML_EXP = re.compile(r"(?<![.\d])(-?\d+)(e[-+]\d+)")


def _rows(texts: list[str]) -> np.ndarray:
    """Texts as a byte matrix, one zero-padded row each."""
    s = np.array([t.encode("ascii") for t in texts])
    return s.view(np.uint8).reshape(len(texts), s.dtype.itemsize)


def _trailing_zeros(mant: np.ndarray) -> np.ndarray:
    """Trailing decimal zeros of each integer (float64, 1 <= m < 1e10)."""
    zeros = np.zeros(mant.size, np.int64)
    idx = np.arange(mant.size)
    m = mant
    for _ in range(10):
        q = m / 10.0  # exact test: a non-integer quotient is far from an integer here
        hit = q == np.floor(q)
        if not hit.any():
            break
        idx, m = idx[hit], q[hit]
        zeros[idx] += 1
    return zeros


def _float32_matrix(x32: np.ndarray, yaml: bool) -> np.ndarray:
    """The text of each float32 of a flat array as a row of bytes (zero where no character
    goes): ``repr`` of its shortest round-trip decimal, ``NaN``/``Infinity`` (YAML:
    ``.nan``/``.inf``, and ``1.0e-05`` for ``1e-05``)."""
    d = _Digits(x32)
    n = x32.size
    # Vectorised: the values repr prints in fixed notation (1e-4 <= |x| < 1e16) whose
    # decimal is mant * 10**-k with mant < 1e10 and 0 <= k <= 22 (nearly all weights).
    # Their text is sign, integer part, ".", fraction digits, built from 3-digit groups
    # (4-byte words from a table, zero bytes where no character goes). The float64
    # arithmetic below is on integers below 2**53, so exact.
    mant, k, p = np.ones(n), np.zeros(n, np.int64), np.ones(n, np.int64)
    valid = np.zeros(n, bool)
    rows = d.active[d.fast]
    valid[rows] = True
    mant[rows], k[rows], p[rows] = d.mantissa[d.fast], d.k[d.fast], d.digits[d.fast]
    # mant has p digits, or p + 1 when rounding carried (9.99 -> 10.0), or p - 1 when log10
    # put the exponent one too high.
    length = p + (mant >= _DECADES[p]) - (mant < _DECADES[p - 1])
    lead = length - 1 - k  # decimal weight of the first digit
    valid &= (lead >= -4) & (lead <= 15)
    if not valid.all():
        mant[~valid], k[~valid] = 1.0, 0
    shown = np.maximum(k - _trailing_zeros(mant), 1)  # fraction digits (no trailing zeros)
    scale = _POW10[k + 64]
    whole = np.floor(mant / scale)  # the integer part, below 1e10 as k >= 0
    rest = mant - whole * scale
    # The fraction's first 12 digits as an integer (fixed notation has at most 12).
    frac = np.where(k <= 12, rest * _POW10[np.clip(12 - k, 0, 22) + 64],
                    rest / _POW10[np.clip(k - 12, 0, 22) + 64]).astype(np.int64)
    whole = whole.astype(np.int64)
    words = [np.where(x32 < 0, _MINUS, 0).astype(np.uint32)]
    groups = max(1, (len(str(int(whole.max()))) + 2) // 3)
    for g in range(groups - 1, -1, -1):  # integer part: no leading zeros, "0" for 0
        above = whole // _INT_POW10[3 * g]
        group = above - 1000 * (above // 1000)
        table = _LEAD3 if g else _UNITS3
        words.append(np.where(above >= 1000, _DIGITS3[group], table[group]))
    words.append(np.full(n, _DOT, np.uint32))
    for g in range(int(shown.max() + 2) // 3):
        above = frac // _INT_POW10[9 - 3 * g]
        group = above - 1000 * (above // 1000)
        words.append(_DIGITS3[group] & _KEEP[np.clip(shown - 3 * g, 0, 3)])
    out = np.stack(words, axis=1).view(np.uint8)
    slow = np.flatnonzero(~valid)
    if slow.size:
        # The rest (zeros, infinities, NaN, exponent notation, the few values redone with
        # correctly rounded text): Python's own float text.
        texts = _rows([_special_text(v, yaml) for v in d.best[slow].tolist()])
        if texts.shape[1] > out.shape[1]:
            out = np.pad(out, ((0, 0), (0, texts.shape[1] - out.shape[1])))
        out[slow] = 0
        out[slow, :texts.shape[1]] = texts
    return out


def _token_matrix(part: np.ndarray, yaml: bool) -> np.ndarray:
    """Rows of text for a flat slice of values (float32/float16 as shortest round-trip
    decimals, float64 as Python's repr, ints, bools as JSON ``true``/``false``)."""
    if part.dtype.kind == "f" and part.dtype.itemsize <= 4:
        return _float32_matrix(part.astype(np.float32), yaml)
    values = part.astype(np.float64) if part.dtype.kind == "f" else part
    text = json.dumps(values.tolist(), separators=(",", ":"))[1:-1]
    if yaml and part.dtype.kind == "f":
        text = _yaml_floats(text)
    return _rows(text.split(","))


def _empty_text(shape) -> str:
    if shape[0] == 0:
        return "[]"
    inner = _empty_text(shape[1:])
    return "[" + ",".join([inner] * shape[0]) + "]"


def _separators(nd: int) -> np.ndarray:
    """Row c: ``"]" * c + "," + "[" * c`` (c < nd), zero-padded to ``2 * nd - 1`` bytes."""
    width = 2 * nd - 1
    return np.array([list(("]" * c + "," + "[" * c).ljust(width, "\0").encode("ascii"))
                     for c in range(nd)], np.uint8)


def _array_pieces(a, yaml: bool = False, chunk: int = _CHUNK):
    """The text of :func:`array_text`, in pieces of about ``chunk`` values."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise IRBridgeError(f"cannot write an array of dtype {a.dtype} to MDF")
    if a.size == 0:
        yield _empty_text(a.shape)
        return
    nd = a.ndim
    flat = a.reshape(-1) if a.flags.c_contiguous else None
    # A nested list's text is "[" * nd, the values with "]" * c + "," + "[" * c after
    # each but the last (c: how many axes end there), then "]" * nd.
    blocks = [math.prod(a.shape[nd - level:]) for level in range(1, nd)]
    table = _separators(nd) if nd else None
    if nd and table.shape[1] <= 8:  # one 8-byte word per separator
        table = np.pad(table, ((0, 0), (0, 8 - table.shape[1]))).view(np.uint64).ravel()
    yield "[" * nd
    for start in range(0, a.size, chunk):
        stop = min(start + chunk, a.size)
        part = flat[start:stop] if flat is not None else a.flat[start:stop]
        tokens = _token_matrix(part, yaml)
        if nd == 0:
            matrix = tokens
        else:
            closing = np.zeros(stop - start, np.int64)
            if blocks:
                after = np.arange(start + 1, stop + 1)
                for b in blocks:
                    closing += after - (after // b) * b == 0
            sep = table[closing]
            if sep.dtype == np.uint64:
                sep = sep.view(np.uint8).reshape(-1, 8)[:, :2 * nd - 1]
            if stop == a.size:
                sep[-1] = 0
            matrix = np.concatenate([tokens, sep], axis=1)
        yield matrix.tobytes().translate(None, b"\0").decode("ascii")
    yield "]" * nd


def array_text(a: np.ndarray, yaml: bool = False) -> str:
    """``a`` as a nested JSON (or YAML flow) list without spaces: float32 as the shortest
    text that reads back bit for bit (:func:`shortest_float32`), other floats as Python's
    shortest round-trip text, ints and bools as such."""
    a = np.asarray(a)
    if a.size <= _SMALL:
        return _small_text(a, yaml)
    return "".join(_array_pieces(a, yaml))


#: Arrays up to this many values are formatted through Python lists (their digits found
#: together with the other small arrays of the model, see ``_pieces``); larger ones by
#: :func:`_array_pieces`. Both give the same bytes (the tests check it).
_SMALL = 1024


def _small_text(a: np.ndarray, yaml: bool = False, best: np.ndarray | None = None) -> str:
    """:func:`array_text` of a small array, the simple way (``best``: its
    :func:`shortest_float32`, when already known)."""
    if a.dtype.kind == "f":
        if a.dtype.itemsize <= 4:
            values = (shortest_float32(a) if best is None else best.reshape(a.shape)).tolist()
        else:
            values = a.astype(np.float64).tolist()
    elif a.dtype.kind in "iub":
        values = a.tolist()
    else:
        raise IRBridgeError(f"cannot write an array of dtype {a.dtype} to MDF")
    text = json.dumps(values, separators=(",", ":"))
    return _yaml_floats(text) if yaml and a.dtype.kind == "f" else text


def _small_texts(arrays: list, yaml: bool) -> list[str]:
    """:func:`_small_text` of several small arrays, the float32 digits found in one go."""
    floats = [a for a in arrays if a.dtype.kind == "f" and a.dtype.itemsize <= 4 and a.size]
    best = iter(np.split(shortest_float32(np.concatenate(
        [a.astype(np.float32).reshape(-1) for a in floats])),
        np.cumsum([a.size for a in floats])[:-1]) if floats else ())
    return [_small_text(a, yaml, next(best) if a.dtype.kind == "f" and a.dtype.itemsize <= 4
                        and a.size else None) for a in arrays]


def _inline_short_lists(obj, hook):
    """Lists of numbers (shapes, perms, pads) become arrays too, so they print on one line."""
    if isinstance(obj, dict):
        return {k: _inline_short_lists(v, hook) for k, v in obj.items()}
    if isinstance(obj, list):
        if obj and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj):
            return hook(np.array(obj, dtype=np.int64 if all(isinstance(v, int) for v in obj)
                                 else np.float64))
        return [_inline_short_lists(v, hook) for v in obj]
    return obj


def _pieces(model, fmt: str):
    """The MDF text of ``model`` as a stream of pieces (see the section comment)."""
    from ..engine.mdf_ops import model_to_dict

    yaml_out = fmt == "yaml"
    arrays: list[np.ndarray] = []
    nonce = secrets.token_hex(6)

    def hook(a):
        arrays.append(a)
        return f"irbridgearray{nonce}x{len(arrays) - 1}"

    doc = _inline_short_lists(model_to_dict(model, hook), hook)
    if yaml_out:
        import yaml

        class _Dumper(yaml.SafeDumper):
            def ignore_aliases(self, data):  # never write anchors: readers reject them
                return True

        # Lists of scalars (shapes, perms) in flow style; nested mappings as blocks.
        text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=None,
                         width=100)
        pattern = re.compile(rf"irbridgearray{nonce}x(\d+)")
    else:
        text = json.dumps(doc, indent=1)
        pattern = re.compile(rf'"irbridgearray{nonce}x(\d+)"')
    matches = list(pattern.finditer(text))
    values = [np.asarray(arrays[int(m.group(1))]) for m in matches]
    small: dict[int, str] = {}  # texts of the next small arrays, formatted together
    pos = 0
    for j, m in enumerate(matches):
        yield text[pos:m.start()]
        a = values[j]
        if a.size > _SMALL:
            yield from _array_pieces(a, yaml_out)
        else:
            if j not in small:
                batch, size = [], 0
                for i in range(j, len(matches)):
                    if values[i].size <= _SMALL:
                        batch.append(i)
                        size += values[i].size
                        if size >= _CHUNK:
                            break
                small = dict(zip(batch, _small_texts([values[i] for i in batch], yaml_out)))
            yield small.pop(j)
        pos = m.end()
    yield text[pos:]


def dumps(model, fmt: str = "json") -> str:
    """Serialise a ``modeci_mdf`` Model to MDF JSON (``fmt="json"``) or YAML text, with the
    arrays written compactly (the text :func:`save` writes)."""
    return "".join(_pieces(model, fmt))


def save(model, path) -> None:
    """Write a ``modeci_mdf`` Model to ``path`` (``.json``, ``.yaml`` or ``.yml``),
    atomically: the text is streamed to a temporary file beside ``path`` (never held whole
    in memory), which is renamed to ``path`` only once complete."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise IRBridgeError(f"MDF files end in .json, .yaml or .yml, not {suffix or '(none)'}: "
                            f"{str(path)!r}")
    fmt = "json" if suffix == ".json" else "yaml"
    with atomic_write(path, "wb") as f:
        for piece in _pieces(model, fmt):
            f.write(piece.encode("utf-8"))


def _runner(src):
    from ..engine.mdf_plan import compile_mdf

    return compile_mdf(src).run


@register_backend("mdf", suffixes=(".json", ".yaml", ".yml"), layout="NCHW", runner=_runner,
                  description="ModECI MDF JSON/YAML: onnx:: functions and numpy expressions, "
                              "compact float32 weights; runs in modeci_mdf's reference engine.")
def emit(graph, path=None, *, name: str | None = None, **options):
    """Emit ``graph`` (NCHW) as a ``modeci_mdf.mdf.Model``; write it to ``path`` when given
    (JSON or YAML by suffix). Returns the Model."""
    if options:
        raise IRBridgeError(f"unknown option(s) for the MDF backend: {sorted(options)}")
    model = build_model(graph, name=name)
    if path is not None:
        save(model, path)
    return model


__all__ = ["emit", "build_model", "save", "dumps", "shortest_float32", "array_text",
           "supported_ops"]
