"""MDF frontend: a ModECI MDF file (JSON/YAML) or ``modeci_mdf`` Model -> IR graph.

It reads the *stateless dataflow subset* of MDF that neural networks use, literally: every
function, parameter expression and output port of every node is translated into IR nodes;
nothing is evaluated with ``eval``, and nothing outside the subset is guessed at.

What maps to what (full table in ``docs/mdf.md``):

* An input port with no incoming edge (and no ``default_value``) is a graph input; its
  ``shape`` gives the IR shape, with ``None`` at the axes its ``metadata.dynamic_axes``
  lists (ir_bridge writes ``[0]``: the batch) or, without that metadata, at axis 0.
  Graph ``metadata.inputs``/``outputs`` (``"node.port"``) fix the order when present;
  otherwise inputs are taken in node order and outputs are the output ports of nodes
  that send no edge.
* Files written by ``modeci_mdf.interfaces.keras.keras_to_mdf`` have no input port at all:
  they bake the test data into a parameter of a source node (``Input``). When a graph has
  no free input port, each source node whose output is a plain array parameter becomes a
  graph input (shape from the array, axis 0 as the batch); the baked data is ignored.
* ``onnx::Op`` functions (also ``onnx:Op`` and any letter case, which that importer
  writes) map to the IR op of the same name, following ONNX opset 15; weights must be
  constant. Ops whose reference-engine value is a tuple (``MaxPool``, ``Dropout``,
  ``BatchNormalization``) read as their main output, whole or as ``value[0]``.
* Standard MDF functions (``linear``, ``logistic``, ``exponential``, ``sin`` … ``tanh``,
  ``MatMul``, ``Relu``) become their defining expressions (written out here, not taken
  from modeci_mdf, which builds them with ``exec``).
* Expressions are compiled by the safe compiler first (anything outside its allow-list is
  an :class:`~ir_bridge.errors.UnsafeExpressionError`), then pattern-matched to IR ops
  (``a @ W + b`` -> Gemm, ``x * (x > 0)`` -> Relu, ``a + b`` -> Add, ``exp(x)`` -> Exp,
  …); anything else becomes one ``MdfExpression`` node. Sub-expressions of constants are
  folded at load time (bounded in size).
* Inside one MDF node, ``Flatten -> Gemm`` and ``Gemm/Conv -> activation`` chains become
  one fused IR node named after the MDF node, so files ir_bridge writes (one MDF node per
  fused IR node) read back into the same graph.

Outside the subset, and reported for every node at once with
:class:`~ir_bridge.errors.UnsupportedLayerError`: graph conditions, graph-level parameters,
stateful parameters (``default_initial_value``, ``time_derivative``, a value that reads
itself), parameter conditions, unknown functions. Malformed files (truncated JSON, YAML
tags or aliases, wrong field types, cycles between nodes, undefined names) raise
:class:`~ir_bridge.errors.InvalidModelError` naming the file and the place.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IRBridgeError, InvalidModelError, UnsafeExpressionError, UnsupportedLayerError
from ..ir import Graph
from ..ir.node import Node
from ..ir.opset import FUSIBLE_ACTIVATIONS, FUSION_HOSTS
from ..ir.schema import get_schema
from ..ir.types import TensorType
from ..registry import register_frontend

#: Files larger than this are refused before parsing (override with ``max_bytes=``).
MAX_FILE_BYTES = 1 << 30
#: A constant folded at load time may have at most this many elements.
MAX_FOLD_ELEMENTS = 1 << 24
#: A graph input may declare at most this many elements per batch item.
MAX_INPUT_ELEMENTS = 1 << 28

_ID = re.compile(r"[^0-9A-Za-z_]")
_MAX_TEXT = 100_000  # the expression compiler's own text bound; longer text is refused there

#: Standard MDF functions: argument names and the defining expression (MDF 0.4 semantics).
STANDARD_FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "linear": (("variable0", "slope", "intercept"), "variable0 * slope + intercept"),
    "logistic": (("variable0", "gain", "bias", "offset"),
                 "1 / (1 + exp(-1 * gain * (variable0 + bias) + offset))"),
    "exponential": (("variable0", "scale", "rate", "bias", "offset"),
                    "scale * exp((rate * variable0) + bias) + offset"),
    **{f: (("variable0", "scale"), f"scale * {f}(variable0)")
       for f in ("sin", "cos", "tan", "sinh", "cosh", "tanh", "arcsin", "arccos", "arctan")},
    "MatMul": (("A", "B"), "A @ B"),
    "Relu": (("A",), "A * (A > 0)"),
}

# Expression call -> IR unary op, for single-argument calls on a computed value.
_UNARY_CALLS = {"exp": "Exp", "tanh": "Tanh", "sqrt": "Sqrt", "abs": "Abs", "log": "Log",
                "floor": "Floor", "erf": "Erf"}
_BINARY_OPS = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.Div: "Div", ast.Pow: "Pow"}
_STRING_ATTRS = {"auto_pad", "mode", "coordinate_transformation_mode", "nearest_mode"}

_NODE_FIELDS = {"input_ports", "functions", "parameters", "output_ports", "metadata", "notes"}
_PORT_FIELDS = {"default_value", "shape", "type", "reduce", "metadata"}
_OUT_FIELDS = {"value", "shape", "type", "metadata"}
_PARAM_FIELDS = {"value", "default_initial_value", "time_derivative", "function", "args",
                 "conditions", "metadata"}
_FUNC_FIELDS = {"function", "args", "value", "metadata"}
_EDGE_FIELDS = {"sender", "receiver", "sender_port", "receiver_port", "parameters", "metadata"}
_GRAPH_FIELDS = {"nodes", "edges", "parameters", "conditions", "metadata", "notes"}
_MODEL_FIELDS = {"format", "generating_application", "onnx_opset_version", "metadata", "graphs",
                 "notes"}


def _vocabulary():
    # The MdfExpression op and the ONNX table; importing registers the op and its kernel.
    from ..engine import mdf_ops

    return mdf_ops


def _is_mdf_model(obj) -> bool:
    """True for a ``modeci_mdf`` Model/Graph; never imports modeci_mdf itself."""
    mod = sys.modules.get("modeci_mdf.mdf")
    return mod is not None and isinstance(obj, (mod.Model, mod.Graph))


# =========================================================================== reading


def read_document(src, *, max_bytes: int = MAX_FILE_BYTES) -> tuple[dict, str]:
    """Read ``src`` (a path, a ``modeci_mdf`` Model/Graph, or an MDF dict) into the plain
    dict form of an MDF JSON file; returns ``(document, where)`` where ``where`` names the
    source in error messages. Long numeric arrays where MDF holds values (parameter, port
    and function values, arguments, edge weights) come as numpy arrays, as they do from a
    ``modeci_mdf`` Model; from a JSON file they are read without Python floats."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        where = str(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InvalidModelError(f"{where}: cannot read: {exc.strerror or exc}") from None
        if size > max_bytes:
            raise InvalidModelError(f"{where}: {size:,} bytes is more than the {max_bytes:,} "
                                    "allowed (pass max_bytes= to raise the limit)")
        data = path.read_bytes()
        try:
            # ASCII (every file ir_bridge writes) is UTF-8: no second copy of a big file.
            text = None if data.isascii() else data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidModelError(f"{where}: not UTF-8 text ({exc.reason} at byte "
                                    f"{exc.start})") from None
        suffix = path.suffix.lower()
        if suffix == ".json":
            del text
            return _parse_json(data, where), where
        if suffix in (".yaml", ".yml"):
            return _parse_yaml(data.decode("ascii") if text is None else text, where), where
        raise InvalidModelError(f"{where}: an MDF file must end in .json, .yaml or .yml")
    if _is_mdf_model(src):
        from ..engine.mdf_ops import model_to_dict

        mod = sys.modules["modeci_mdf.mdf"]
        if isinstance(src, mod.Graph):
            src = mod.Model(id=src.id, graphs=[src])
        return model_to_dict(src), f"MDF model {src.id!r}"
    if isinstance(src, dict):
        return src, "MDF document"
    raise InvalidModelError(f"cannot read an MDF model from a {type(src).__name__}")


def _parse_json(data: bytes, where: str) -> dict:
    try:
        return _loads(data)
    except json.JSONDecodeError as exc:
        raise InvalidModelError(f"{where}: invalid JSON at line {exc.lineno} column "
                                f"{exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InvalidModelError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # e.g. integer literals beyond Python's digit limit
        raise InvalidModelError(f"{where}: invalid JSON: {exc}") from None


# --------------------------------------------------------------------------- big arrays
#
# ``json.loads`` turns every number of a weight array into a Python float inside nested
# lists (~40 bytes each: 25.6M weights take GBs). So each long numeric array literal
# *outside strings* is found in the file's bytes first (UTF-8: every byte of a multi-byte
# character is >= 0x80, so the ASCII syntax is found as in the text), checked to be a
# regular (rectangular) nested list, and replaced by a placeholder string; ``json.loads``
# reads the rest. Each placeholder then becomes, where MDF holds values (parameter,
# function and port values, arguments, edge weights), a numpy array read from the literal
# slice by slice, and anywhere else whatever ``json.loads`` makes of the literal. The
# numbers are read by ``json.loads`` itself (so the grammar, the NaN/Infinity policy and
# every float are exactly as before), straight into float32 where the reader would convert
# to float32 anyway (values without a ``metadata.dtype``, ports, edge weights) and into
# float64 elsewhere (arguments, typed parameters), which ``_array`` then converts as it
# would the list. A literal of integers only stays the list of ints ``json.loads`` makes;
# ragged or unusual literals are left in the text (the same errors as before); and if
# anything does not parse, the whole file is parsed again by ``json.loads`` for the error
# message, so positions are the file's own.

#: Numeric array literals at least this long (bytes) are read straight into numpy.
ARRAY_LITERAL_MIN_CHARS = 4096
#: Bytes of numbers parsed per ``json.loads`` call when reading a literal.
_SLICE_BYTES = 1 << 20
_MAX_NESTING = 32  # deeper numeric literals are left to json.loads
# A string (to its closing quote, or to the end of an unterminated one: a string match
# never fails, so the scan stays linear), or a run of characters a numeric literal holds.
_SCAN = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)|\[[-+.,\[\]0-9eEINafinty \t\r\n]+')
_GLUED = re.compile(rb"[-+.0-9A-Za-z][ \t\r\n]+[-+.0-9A-Za-z]")
_WHITESPACE = b" \t\r\n"


class _JsonArray(np.ndarray):
    """An array read from a JSON number literal (see above): ``_array`` converts it exactly
    as it would convert the nested list ``json.loads`` makes."""


class _NotFast(Exception):
    """A literal the fast path leaves to ``json.loads``."""


@dataclass
class _Literal:
    """A regular numeric literal: ``source[lo:hi]`` (the file's bytes, or a copy without
    whitespace) holds ``shape`` numbers; ``start:end`` is where it is in the file."""

    source: bytes
    lo: int
    hi: int
    shape: tuple
    start: int
    end: int

    def read(self, data: bytes, dtype):
        """The literal as ``json.loads`` makes it (``dtype`` None), else as an array of
        ``dtype`` (the list of ints ``json.loads`` makes when all are integers)."""
        if dtype is not None:
            try:
                out = _numbers(self.source, self.lo, self.hi, math.prod(self.shape), dtype)
                return out.reshape(self.shape).view(_JsonArray)
            except _NotFast:
                pass
        return json.loads(data[self.start:self.end].decode("utf-8"))


def _loads(data: bytes):
    """``json.loads`` of UTF-8 ``data`` (decoded as UTF-8, as the text always was), with
    long numeric array literals read straight into numpy."""
    if len(data) < ARRAY_LITERAL_MIN_CHARS:
        return json.loads(data.decode("utf-8"))
    import secrets

    prefix = f"irbridge-array-{secrets.token_hex(8)}-"
    pieces: list[bytes] = []
    literals: list[_Literal] = []
    pos = scan = 0
    while True:
        m = _SCAN.search(data, scan)
        if m is None:
            break
        start, scan = m.start(), m.end()
        if data[start] == ord('"') or scan - start < ARRAY_LITERAL_MIN_CHARS:
            continue
        try:
            literal = _find_literal(data, start, scan)
        except _NotFast:
            continue
        pieces += [data[pos:start], f'"{prefix}{len(literals)}"'.encode("ascii")]
        literals.append(literal)
        pos = scan = literal.end
    if not literals:
        return json.loads(data.decode("utf-8"))
    pieces.append(data[pos:])
    try:
        skeleton = json.loads(b"".join(pieces).decode("utf-8"))
        del pieces
        return _place(skeleton, data, literals, prefix)
    except (ValueError, RecursionError):  # invalid JSON: the error as the file has it
        return json.loads(data.decode("utf-8"))


def _find_literal(data: bytes, start: int, stop: int) -> _Literal:
    """The regular nested list of numbers starting at ``data[start]``, within
    ``[start, stop)`` (a run of characters numeric literals can hold)."""
    depth, i = 0, start
    while i < stop and data[i] in b"[ \t\r\n":  # the opening brackets
        depth += data[i] == ord("[")
        i += 1
        if depth > _MAX_NESTING:
            raise _NotFast
    # The literal ends at the first "]" * depth (a regular nested list has no such run
    # inside); with whitespace between the brackets, a pattern finds it.
    end = data.find(b"]" * depth, start, stop) + depth
    if end >= start + depth and not any(data.find(c, start, end) >= 0 for c in _WHITESPACE):
        source, lo, hi = data, start, end
    else:
        closing = re.compile(rb"\]" + rb"[ \t\r\n]*\]" * (depth - 1))
        m = closing.search(data, start, stop)
        if m is None:
            raise _NotFast
        end = m.end()
        if _GLUED.search(data, start, end):
            raise _NotFast  # "1 2": two numbers without a comma
        source = data[start:end].translate(None, _WHITESPACE)
        lo, hi = 0, len(source)
    shape = _nested_shape(source, lo, hi, depth)
    return _Literal(source, lo, hi, shape, start, end)


def _nested_shape(source: bytes, lo: int, hi: int, depth: int) -> tuple:
    """The shape of ``source[lo:hi]`` (no whitespace) if it is a rectangular nested list of
    ``depth`` levels with a number (a run without brackets or commas) between commas;
    raise ``_NotFast`` otherwise."""
    b = np.frombuffer(source, np.uint8, count=hi - lo, offset=lo)
    n = b.size
    if n < 2 * depth + 1 or int(b[depth]) in b"[]," or int(b[-depth - 1]) in b"[],":
        raise _NotFast
    if not (b[:depth] == ord("[")).all() or not (b[-depth:] == ord("]")).all():
        raise _NotFast
    commas = np.flatnonzero(b == ord(","))
    # Around each comma: "]" * c before and "[" * c after (c < depth), and beyond them a
    # number (no other bracket or comma) on both sides.
    before, after = _bracket_runs(b, commas, depth)
    if commas.size:
        if not np.array_equal(before, after):
            raise _NotFast
        for beyond in (b[commas - before - 1], b[commas + after + 1]):
            if ((beyond == ord("[")) | (beyond == ord("]")) | (beyond == ord(","))).any():
                raise _NotFast
    brackets = depth + int(before.sum(dtype=np.int64))
    if source.count(b"[", lo, hi) != brackets or source.count(b"]", lo, hi) != brackets:
        raise _NotFast  # brackets anywhere else: ragged, or not a list of numbers
    del after, commas
    # The shape: a block of the last L axes ends after value i where L axes close.
    count = before.size + 1
    shape, inner = [], 1
    for level in range(1, depth):
        ends = np.flatnonzero(before >= level)
        block = int(ends[0]) + 1 if ends.size else count
        if block % inner:
            raise _NotFast
        shape.append(block // inner)
        inner = block
    if count % inner:
        raise _NotFast
    shape.append(count // inner)
    shape.reverse()
    if depth > 1:  # and every block closes exactly where a regular array's does
        expected = np.zeros(count - 1, np.int8)
        block = 1
        for size in reversed(shape[1:]):
            block *= size
            expected[block - 1::block] += 1
        if not np.array_equal(expected, before):
            raise _NotFast
    return tuple(shape)


def _bracket_runs(b: np.ndarray, commas: np.ndarray, depth: int, window: int = 1 << 22):
    """For each comma: how many "]" directly before it and "[" directly after it (at most
    ``depth - 1``), computed over windows of the bytes (bounded working memory)."""
    before = np.zeros(commas.size, np.int8)
    after = np.zeros(commas.size, np.int8)
    n = b.size
    for lo in range(0, n, window):
        hi = min(lo + window, n)
        c0, c1 = np.searchsorted(commas, [lo, hi])
        if c0 == c1:
            continue
        a, z = max(lo - depth, 0), min(hi + depth, n)
        part = b[a:z]
        closing, opening = part == ord("]"), part == ord("[")
        m = part.size
        # After round j, run_b[p]: "]" at p - 1 ... p - j; run_a[p]: "[" at p + 1 ... p + j.
        run_b, run_a = np.ones(m, bool), np.ones(m, bool)
        count_b, count_a = np.zeros(m, np.int8), np.zeros(m, np.int8)
        for j in range(1, depth):
            run_b[j:] &= closing[:m - j]
            run_b[:j] = False
            run_a[:m - j] &= opening[j:]
            run_a[m - j:] = False
            count_b += run_b
            count_a += run_a
        at = commas[c0:c1] - a
        before[c0:c1], after[c0:c1] = count_b[at], count_a[at]
    return before, after


def _numbers(source: bytes, lo: int, hi: int, count: int, dtype) -> np.ndarray:
    """The ``count`` numbers of the literal ``source[lo:hi]`` as an array of ``dtype``,
    exactly as ``json.loads`` reads them and numpy converts the list (``_NotFast`` when
    all are integers), a slice at a time."""
    out = np.empty(count, dtype)
    ints = 0

    def as_float(s: str) -> float:
        nonlocal ints
        ints += 1
        if len(s.lstrip("-")) > 15:  # beyond, int -> float64 -> float32 could double-round
            raise _NotFast
        return float(int(s))

    pos = lo
    done = 0
    while pos < hi:
        cut = source.find(b",", min(pos + _SLICE_BYTES, hi), hi)
        cut = hi if cut < 0 else cut
        values = json.loads(b"[" + source[pos:cut].translate(None, b"[]") + b"]",
                            parse_int=as_float)
        if done + len(values) > count:
            raise _NotFast
        out[done:done + len(values)] = values
        done += len(values)
        pos = cut + 1
    if done != count or ints == count:  # all integers: json.loads keeps them ints
        raise _NotFast
    return out


# Where MDF holds values; the key path from the document's root (model, "graphs", graph,
# "nodes", node, section, item, field[, argument[, argument]]).
_FLOAT32_FIELDS = {("functions", "value"), ("input_ports", "default_value"),
                   ("output_ports", "value")}
_FLOAT64_FIELDS = {("parameters", "default_initial_value"), ("parameters", "time_derivative")}


def _value_dtype(path: tuple, doc) -> Any:
    """float32/float64 where ``path`` is a value the reader converts with ``_array`` from a
    float32/float64 array exactly as from the list (float32 where it converts to float32),
    None where the literal must stay the list ``json.loads`` makes."""
    n = len(path)
    if n < 7 or path[1] != "graphs":
        return None
    if path[3] == "edges":
        return np.float32 if (n == 7 and path[5] == "parameters"
                              and path[6] == "weight") else None
    if path[3] != "nodes":
        return None
    if n == 8:
        if (path[5], path[7]) == ("parameters", "value"):
            # float32 unless metadata.dtype says otherwise; float64 for another float
            # type; any other type (or a malformed one) gets the list, as before.
            try:
                param = doc[path[0]]["graphs"][path[2]]["nodes"][path[4]]["parameters"][path[6]]
                meta = param.get("metadata") or {}
                if "dtype" not in meta:
                    return np.float32
                return np.float64 if np.dtype(_dtype(meta["dtype"], "")).kind == "f" else None
            except (IRBridgeError, KeyError, TypeError, ValueError, AttributeError):
                return None
        if (path[5], path[7]) in _FLOAT32_FIELDS:
            return np.float32
        return np.float64 if (path[5], path[7]) in _FLOAT64_FIELDS else None
    if path[5] in ("parameters", "functions") and (
            (n == 9 and path[7] == "args") or (n == 10 and path[7] == "function")):
        return np.float64
    return None


def _place(doc, data: bytes, literals: list, prefix: str):
    """Replace the placeholders of :func:`_loads` by what their literals are at that place."""

    def fix(v, path):
        if isinstance(v, str):
            if v.startswith(prefix):
                literal = literals[int(v[len(prefix):])]
                return literal.read(data, _value_dtype(path, doc))
            return v
        if isinstance(v, dict):
            if any(k.startswith(prefix) for k in v):
                raise ValueError("an array as an object key")  # invalid in the file
            return {k: fix(x, path + (k,)) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x, path + (None,)) for x in v]
        return v

    return fix(doc, ())


def _parse_yaml(text: str, where: str) -> dict:
    import yaml

    # Safe loading only: python/* tags raise. The C loader when present (same safety, much
    # faster on weight arrays); its tree builder recurses in C, so the nesting depth (and
    # anchors/aliases) are checked first on the parser's flat event stream.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_yaml_events(yaml, yaml.parse(text, Loader=loader), where)
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidModelError(f"{where}: invalid or unsafe YAML{at}: {problem}") from None
    except RecursionError:
        raise InvalidModelError(f"{where}: YAML nested too deeply") from None


#: Deepest YAML nesting accepted (an MDF file needs about a dozen levels).
MAX_YAML_DEPTH = 200


def _check_yaml_events(yaml, events, where: str) -> None:
    """Refuse YAML nested deeper than :data:`MAX_YAML_DEPTH` (the C tree builder would
    overflow the C stack and crash the process) and anchors/aliases (a shared sub-tree is
    expanded when arrays are built: the "billion laughs" bomb; ir_bridge never writes
    them)."""
    opening = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    closing = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    depth = 0
    for event in events:
        if isinstance(event, opening):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise InvalidModelError(f"{where}: YAML nested too deeply (more than "
                                        f"{MAX_YAML_DEPTH} levels)")
        elif isinstance(event, closing):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            raise InvalidModelError(f"{where}: YAML anchors/aliases are not allowed in MDF "
                                    "files")


# =========================================================================== the document


@dataclass
class _NodeSpec:
    id: str
    ports: dict
    params: dict
    functions: dict
    outputs: dict
    metadata: dict


@dataclass
class _EdgeSpec:
    id: str
    sender: str
    receiver: str
    sender_port: str
    receiver_port: str
    weight: Any


def _expect(value, types, where: str, what: str):
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise InvalidModelError(f"{where}: {what} must be a {names}, not "
                                f"{type(value).__name__}")
    return value


def _fields(d, allowed, where: str, what: str) -> dict:
    d = _expect(d if d is not None else {}, dict, where, what)
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise InvalidModelError(f"{where}: {what} has unknown field(s) {unknown}; MDF allows "
                                f"{sorted(allowed)}")
    return d


def _children(d, where: str, what: str) -> dict:
    """A dict of id -> dict (how modelspec writes lists of objects with ids)."""
    d = _expect(d if d is not None else {}, dict, where, what)
    for key, value in d.items():
        _expect(key, str, where, f"an id in {what}")
        _expect(value if value is not None else {}, dict, where, f"{what} {key!r}")
    return {k: (v if v is not None else {}) for k, v in d.items()}


def _pick_graph(doc, where: str, graph_id: str | None) -> tuple[str, dict, dict]:
    if not isinstance(doc, dict) or len(doc) != 1:
        raise InvalidModelError(f"{where}: not an MDF model: expected one top-level key, the "
                                "model id")
    (model_id, model), = doc.items()
    model = _fields(model, _MODEL_FIELDS, where, f"model {model_id!r}")
    graphs = _children(model.get("graphs"), where, "graphs")
    if not graphs:
        raise InvalidModelError(f"{where}: model {model_id!r} has no graph")
    if graph_id is None:
        if len(graphs) > 1:
            raise InvalidModelError(f"{where}: model has {len(graphs)} graphs "
                                    f"{sorted(graphs)}; pick one with graph=")
        graph_id = next(iter(graphs))
    if graph_id not in graphs:
        raise InvalidModelError(f"{where}: no graph {graph_id!r}; graphs: {sorted(graphs)}")
    return graph_id, _fields(graphs[graph_id], _GRAPH_FIELDS, where, f"graph {graph_id!r}"), model


def _parse_graph(g: dict, where: str):
    nodes = {}
    for nid, n in _children(g.get("nodes"), where, "nodes").items():
        here = f"{where}: node {nid!r}"
        n = _fields(n, _NODE_FIELDS, here, "node")
        ports = {pid: _fields(p, _PORT_FIELDS, here, f"input port {pid!r}")
                 for pid, p in _children(n.get("input_ports"), here, "input_ports").items()}
        params = {pid: _fields(p, _PARAM_FIELDS, here, f"parameter {pid!r}")
                  for pid, p in _children(n.get("parameters"), here, "parameters").items()}
        funcs = {fid: _fields(f, _FUNC_FIELDS, here, f"function {fid!r}")
                 for fid, f in _children(n.get("functions"), here, "functions").items()}
        outs = {oid: _fields(o, _OUT_FIELDS, here, f"output port {oid!r}")
                for oid, o in _children(n.get("output_ports"), here, "output_ports").items()}
        seen: dict[str, str] = {}
        for kind, table in (("input port", ports), ("parameter", params), ("function", funcs)):
            for key in table:
                if key in seen:
                    raise InvalidModelError(f"{here}: {kind} {key!r} has the same id as a "
                                            f"{seen[key]}")
                seen[key] = kind
        nodes[nid] = _NodeSpec(nid, ports, params, funcs, outs,
                               _expect(n.get("metadata") or {}, dict, here, "metadata"))
    edges = []
    for eid, e in _children(g.get("edges"), where, "edges").items():
        here = f"{where}: edge {eid!r}"
        e = _fields(e, _EDGE_FIELDS, here, "edge")
        for key in ("sender", "receiver", "sender_port", "receiver_port"):
            _expect(e.get(key), str, here, key)
        sender, receiver = nodes.get(e["sender"]), nodes.get(e["receiver"])
        if sender is None or receiver is None:
            missing = e["sender"] if sender is None else e["receiver"]
            raise InvalidModelError(f"{here}: no node {missing!r}")
        if e["sender_port"] not in sender.outputs:
            raise InvalidModelError(f"{here}: node {sender.id!r} has no output port "
                                    f"{e['sender_port']!r}")
        if e["receiver_port"] not in receiver.ports:
            raise InvalidModelError(f"{here}: node {receiver.id!r} has no input port "
                                    f"{e['receiver_port']!r}")
        eparams = _expect(e.get("parameters") or {}, dict, here, "parameters")
        extra = sorted(set(eparams) - {"weight"})
        if extra:
            raise UnsupportedLayerError(f"{here}: edge parameters {extra} are not supported "
                                        "(only 'weight')", [(eid, "Edge")])
        edges.append(_EdgeSpec(eid, e["sender"], e["receiver"], e["sender_port"],
                               e["receiver_port"], eparams.get("weight")))
    return nodes, edges


# =========================================================================== operands


@dataclass(frozen=True)
class _Const:
    """A value known at load time."""

    value: np.ndarray


@dataclass(frozen=True)
class _Dyn:
    """A value computed at run time by IR node ``name``."""

    name: str


@dataclass(frozen=True)
class _Tuple:
    """The tuple an ONNX op with optional extra outputs returns in the reference engine."""

    items: tuple
    op: str


def _first(operand):
    return operand.items[0] if isinstance(operand, _Tuple) else operand


def _sanitize(name: str) -> str:
    name = _ID.sub("_", str(name)) or "node"
    return name if not name[0].isdigit() else f"n{name}"


def _array(value, where: str, dtype=None, infer: bool = False) -> np.ndarray:
    """A value as a numpy array: float32 unless ``dtype`` says otherwise; with ``infer`` a
    list of ints stays int64 (ONNX shape/pads/axes inputs)."""
    if isinstance(value, _JsonArray):
        # Read from the file as float64 (or float32 where no dtype is asked for); to an
        # integer dtype the way the list json.loads makes converts.
        value = value.tolist() if dtype is not None and np.dtype(dtype).kind != "f" \
            else value.view(np.ndarray)
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.array(value, dtype=None if infer else (dtype or np.float32))
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidModelError(f"{where}: not a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise InvalidModelError(f"{where}: array of dtype {arr.dtype} is not numeric")
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f" and arr.dtype != np.float32:
        return arr.astype(np.float32)
    return arr


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number))  # bool is an int too


# =========================================================================== translation


class _Translator:
    """Builds the IR graph from one parsed MDF graph."""

    def __init__(self, graph_id, g, model, where):
        self.where = where
        self.vocab = _vocabulary()
        opset = model.get("onnx_opset_version")
        try:
            self.opset = int(opset) if opset not in (None, "") else self.vocab.ONNX_OPSET
        except (TypeError, ValueError):
            raise InvalidModelError(f"{where}: onnx_opset_version {opset!r} is not a "
                                    "number") from None
        self.gmeta = _expect(g.get("metadata") or {}, dict, where, "graph metadata")
        self.nodes, self.edges = _parse_graph(g, where)
        self.graph = Graph(_sanitize(graph_id))
        self.port_values: dict[tuple[str, str], Any] = {}  # (node, output port) -> operand
        self.notes: list[str] = []
        self._check_supported(g)

    # ---------------------------------------------------------------- checks

    def _check_supported(self, g) -> None:
        """Find every feature outside the subset, in every node, before converting."""
        found: list[tuple[str, str]] = []
        if g.get("conditions"):
            found.append(("graph", "conditions (scheduling)"))
        if g.get("parameters"):
            found.append(("graph", "graph-level parameters"))
        for n in self.nodes.values():
            for pid, p in n.params.items():
                if p.get("default_initial_value") is not None:
                    found.append((n.id, f"stateful parameter {pid!r} (default_initial_value)"))
                if p.get("time_derivative") is not None:
                    found.append((n.id, f"stateful parameter {pid!r} (time_derivative)"))
                if p.get("conditions"):
                    found.append((n.id, f"parameter {pid!r} with conditions"))
                value = p.get("value")
                if isinstance(value, str) and len(value) <= _MAX_TEXT \
                        and pid in _names_or_empty(value):
                    found.append((n.id, f"stateful parameter {pid!r} (its value reads itself)"))
                if p.get("function") is not None:
                    self._check_function(n.id, pid, p.get("function"), found)
            for fid, f in n.functions.items():
                if f.get("function") is not None:
                    self._check_function(n.id, fid, f.get("function"), found)
            for pid, port in n.ports.items():
                if port.get("reduce", "overwrite") not in ("overwrite", "add", "multiply"):
                    found.append((n.id, f"input port {pid!r} reduce={port.get('reduce')!r}"))
        if found:
            lines = "; ".join(f"node {nid!r}: {what}" for nid, what in found)
            raise UnsupportedLayerError(
                f"{self.where}: {len(found)} feature(s) outside the stateless dataflow subset "
                f"ir_bridge reads: {lines}", found)

    def _check_function(self, nid, fid, function, found) -> None:
        if isinstance(function, dict):
            if len(function) != 1:
                found.append((nid, f"function {fid!r} names {len(function)} functions"))
                return
            function = next(iter(function))
        if not isinstance(function, str):
            raise InvalidModelError(f"{self.where}: node {nid!r} function {fid!r}: the "
                                    "function name must be a string")
        if self._onnx_name(function) is None and function not in STANDARD_FUNCTIONS:
            if function.lower().startswith("onnx:"):
                known = ", ".join(sorted(self.vocab.ONNX_FUNCTIONS))
                found.append((nid, f"function {fid!r}: {function} is not supported (onnx:: "
                                   f"functions supported: {known})"))
            else:
                known = ", ".join(sorted(STANDARD_FUNCTIONS))
                found.append((nid, f"function {fid!r}: unknown function {function!r} (standard "
                                   f"functions supported: {known}, and onnx::<Op>)"))

    def _onnx_name(self, function: str) -> str | None:
        m = re.fullmatch(r"onnx::?([A-Za-z]+)", function)
        if not m:
            return None
        wanted = m.group(1).lower()
        for op in self.vocab.ONNX_FUNCTIONS:
            if op.lower() == wanted:
                return op
        return None

    # ---------------------------------------------------------------- graph level

    def run(self) -> Graph:
        order = self._node_order()
        incoming: dict[tuple[str, str], list[_EdgeSpec]] = {}
        for e in self.edges:
            incoming.setdefault((e.receiver, e.receiver_port), []).append(e)
        inputs = self._graph_inputs(incoming)
        for nid in order:
            spec = self.nodes[nid]
            if nid in inputs.baked:
                self._baked_input(spec, inputs.baked[nid])
                continue
            operands = {}
            for pid, port in spec.ports.items():
                operands[pid] = self._port_operand(spec, pid, port, incoming, inputs)
            _NodeScope(self, spec, operands).translate()
        self.graph.set_outputs(self._graph_outputs())
        self.graph.meta["mdf_notes"] = list(self.notes)
        return self.graph

    def _node_order(self) -> list[str]:
        import networkx as nx

        dag = nx.DiGraph()
        dag.add_nodes_from(self.nodes)
        for e in self.edges:
            dag.add_edge(e.sender, e.receiver)
        try:
            rank = {nid: i for i, nid in enumerate(self.nodes)}
            return list(nx.lexicographical_topological_sort(dag, key=rank.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(dag)
            path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
            raise InvalidModelError(f"{self.where}: the edges form a cycle ({path}); only "
                                    "acyclic (feed-forward) graphs are supported") from None

    @dataclass
    class _Inputs:
        free: dict  # (node, port) -> IR input name
        baked: dict  # node -> parameter id

    def _graph_inputs(self, incoming) -> "_Translator._Inputs":
        free_ports = [(n.id, pid) for n in self.nodes.values() for pid, p in n.ports.items()
                      if (n.id, pid) not in incoming and p.get("default_value") is None]
        listed = self.gmeta.get("inputs")
        if listed is not None:
            refs = [self._ref(r, "input") for r in _expect(listed, list, self.where,
                                                            "metadata.inputs")]
            for nid, pid in refs:
                if pid not in self.nodes[nid].ports or (nid, pid) in incoming:
                    raise InvalidModelError(f"{self.where}: metadata.inputs names {nid}.{pid}, "
                                            "which is not a free input port")
            missing = [f"{n}.{p}" for n, p in free_ports if (n, p) not in refs]
            if missing:
                raise InvalidModelError(f"{self.where}: input port(s) {missing} have no edge, "
                                        "no default_value and are not graph inputs")
            free_ports = refs
        free = {}
        taken = set(self.nodes)
        for nid, pid in free_ports:
            spec = self.nodes[nid]
            # An input-only node (ports pass straight to outputs) names the input after
            # itself, as ir_bridge writes it; otherwise the port's id when unambiguous.
            passthrough = (len(spec.ports) == 1 and not spec.functions and not spec.params
                           and all(o.get("value") == pid for o in spec.outputs.values()))
            name = nid if passthrough else (pid if pid not in taken else f"{nid}_{pid}")
            name = self.graph.unique_name(_sanitize(name))
            taken.add(name)
            self._add_input(name, spec, pid)
            free[(nid, pid)] = name
        baked = {}
        if not free_ports:
            receivers = {e.receiver for e in self.edges}
            for n in self.nodes.values():
                if n.ports or n.id in receivers:
                    continue
                pid = self._baked_parameter(n)
                if pid is not None:
                    baked[n.id] = pid
            if baked:
                self.notes.append(
                    f"the graph has no free input port; source node(s) {sorted(baked)} hold "
                    "input data in a parameter (as modeci_mdf's Keras importer writes): "
                    "they are read as graph inputs and the stored data is ignored")
        if not free and not baked:
            raise InvalidModelError(f"{self.where}: the graph has no input (no input port "
                                    "without an edge)")
        return self._Inputs(free, baked)

    def _ref(self, ref, what: str) -> tuple[str, str]:
        if not isinstance(ref, str) or "." not in ref:
            raise InvalidModelError(f"{self.where}: metadata {what} {ref!r} is not "
                                    "'node.port'")
        nid, pid = ref.rsplit(".", 1)
        if nid not in self.nodes:
            raise InvalidModelError(f"{self.where}: metadata {what} {ref!r}: no node {nid!r}")
        return nid, pid

    def _baked_parameter(self, n: _NodeSpec) -> str | None:
        if n.functions or len(n.outputs) != 1:
            return None
        value = next(iter(n.outputs.values())).get("value")
        p = n.params.get(value) if isinstance(value, str) else None
        if p is None or not isinstance(p.get("value"), (list, np.ndarray)):
            return None
        return value

    def _add_input(self, name: str, spec: _NodeSpec, pid: str) -> None:
        port = spec.ports[pid]
        here = f"{self.where}: node {spec.id!r} input port {pid!r}"
        shape = port.get("shape") or ()
        if isinstance(shape, str):  # "(1, 4)", as some MDF files write it
            try:
                shape = ast.literal_eval(shape)
            except (ValueError, SyntaxError):
                raise InvalidModelError(f"{here}: shape {shape!r} is not a tuple") from None
        shape = list(_expect(shape, (list, tuple), here, "shape"))
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                   or d is None for d in shape):
            raise InvalidModelError(f"{here}: shape {shape} must hold non-negative ints")
        meta = _expect(port.get("metadata") or {}, dict, here, "metadata")
        dynamic = meta.get("dynamic_axes", [0] if shape else [])
        for ax in _expect(dynamic, list, here, "metadata.dynamic_axes"):
            if not isinstance(ax, int) or not -len(shape) <= ax < len(shape):
                raise InvalidModelError(f"{here}: dynamic axis {ax!r} out of range")
            shape[ax] = None
        if math.prod(d for d in shape if d is not None) > MAX_INPUT_ELEMENTS:
            raise InvalidModelError(f"{here}: shape {shape} is larger than "
                                    f"{MAX_INPUT_ELEMENTS:,} elements per item")
        dtype = _dtype(port.get("type"), here)
        self.graph.add_input(name, tuple(shape), dtype, origin=spec.id)

    def _baked_input(self, spec: _NodeSpec, pid: str) -> None:
        here = f"{self.where}: node {spec.id!r} parameter {pid!r}"
        value = spec.params[pid]["value"]
        arr = _array(value, here)
        if arr.ndim == 0:
            raise InvalidModelError(f"{here}: a baked input must be an array")
        name = self.graph.unique_name(_sanitize(spec.id))
        self.graph.add_input(name, (None, *arr.shape[1:]), "float32", origin=spec.id)
        self.graph.meta.setdefault("mdf_baked_inputs", {})[name] = arr
        oid = next(iter(spec.outputs))
        self.port_values[(spec.id, oid)] = _Dyn(name)

    def _port_operand(self, spec, pid, port, incoming, inputs):
        here = f"{self.where}: node {spec.id!r} input port {pid!r}"
        edges = incoming.get((spec.id, pid), [])
        if not edges:
            if (spec.id, pid) in inputs.free:
                return _Dyn(inputs.free[(spec.id, pid)])
            if port.get("default_value") is not None:
                dv = port["default_value"]
                if isinstance(dv, str):
                    raise UnsupportedLayerError(f"{here}: an expression as default_value is "
                                                "not supported", [(spec.id, "InputPort")])
                return _Const(_array(dv, here))
            raise InvalidModelError(f"{here}: no edge, no default_value, not a graph input")
        values = []
        for e in edges:
            v = self.port_values.get((e.sender, e.sender_port))
            if v is None:
                raise InvalidModelError(f"{self.where}: edge {e.id!r}: node {e.sender!r} "
                                        f"computes no value for port {e.sender_port!r}")
            if e.weight is not None and not (_is_number(e.weight) and e.weight == 1):
                w = _array(e.weight, f"{self.where}: edge {e.id!r} weight")
                v = _Dyn(self.add("Mul", [v], params={"B": w},
                                  name=f"{spec.id}_{pid}_weight", origin=spec.id))
            values.append(v)
        if len(values) == 1:
            return values[0]
        reduce = port.get("reduce", "overwrite")
        if reduce == "overwrite":
            raise InvalidModelError(f"{here}: {len(values)} edges arrive at a port with "
                                    "reduce='overwrite'; which one wins is undefined")
        op = "Sum" if reduce == "add" else "Mul"
        out = values[0]
        if op == "Sum":
            return _Dyn(self.add("Sum", values, name=f"{spec.id}_{pid}_sum", origin=spec.id))
        for v in values[1:]:
            out = _Dyn(self.add("Mul", [out, v], name=f"{spec.id}_{pid}_product",
                                origin=spec.id))
        return out

    def _graph_outputs(self) -> list[str]:
        listed = self.gmeta.get("outputs")
        if listed is not None:
            refs = [self._ref(r, "output") for r in _expect(listed, list, self.where,
                                                             "metadata.outputs")]
        else:
            senders = {e.sender for e in self.edges}
            refs = [(n.id, oid) for n in self.nodes.values() if n.id not in senders
                    for oid in n.outputs]
        names = []
        for nid, oid in refs:
            v = self.port_values.get((nid, oid))
            if v is None:
                raise InvalidModelError(f"{self.where}: output {nid}.{oid} has no value")
            names.append(v.name)
        if not names:
            raise InvalidModelError(f"{self.where}: the graph has no output port")
        return names

    # ---------------------------------------------------------------- IR building

    def add(self, op, inputs, *, attrs=None, params=None, name, origin) -> str:
        """Add an IR node reading ``inputs`` (operands); returns its name."""
        names = [self.materialize(i, f"{name}_const") for i in inputs]
        try:
            node = self.graph.add_node(op, names, attrs=attrs, params=params,
                                       name=self.graph.unique_name(_sanitize(name)),
                                       origin=origin)
        except IRBridgeError as exc:
            raise InvalidModelError(f"{self.where}: node {origin!r}: {exc}") from None
        return node.name

    def materialize(self, operand, name: str) -> str:
        """The IR node name of an operand (a constant becomes a ``Constant`` node)."""
        operand = _first(operand)
        if isinstance(operand, _Dyn):
            return operand.name
        node = self.graph.add_node("Constant", params={"value": operand.value},
                                   name=self.graph.unique_name(_sanitize(name)))
        return node.name

    def fold(self, op, attrs, params, consts, where) -> _Const:
        """Evaluate ``op`` on constant inputs now, with its kernel (bounded in size)."""
        from ..ops import kernel_for

        schema = get_schema(op)
        node = Node("fold", op, tuple(f"c{i}" for i in range(len(consts))),
                    schema.fill_attrs(attrs), {k: np.asarray(v) for k, v in params.items()})
        types = [TensorType(c.shape, str(c.dtype)) for c in consts]
        try:
            out = schema.infer(node, types)
            if math.prod(d or 0 for d in out.shape) > MAX_FOLD_ELEMENTS:
                raise InvalidModelError(f"{where}: folding {op} would make a constant of "
                                        f"{math.prod(out.shape):,} elements")
            with np.errstate(all="ignore"):
                return _Const(np.asarray(kernel_for(node)(*consts)))
        except IRBridgeError:
            raise
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise InvalidModelError(f"{where}: {op} on constants failed: {exc}") from None


def _names_or_empty(text: str) -> list[str]:
    try:
        return _vocabulary().free_names(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # reported by the expression compiler when the node is translated


def _dtype(type_name, where: str) -> str:
    if type_name in (None, "", "float", "float32", "numpy.float32"):
        return "float32"
    aliases = {"double": "float64", "int": "int64", "integer": "int64"}
    name = aliases.get(type_name, type_name)
    try:
        dt = np.dtype(str(name).replace("numpy.", ""))
    except TypeError:
        raise InvalidModelError(f"{where}: unknown type {type_name!r}") from None
    if dt.kind not in "biuf":
        raise InvalidModelError(f"{where}: type {type_name!r} is not numeric")
    return str(dt)


# =========================================================================== one node


class _NodeScope:
    """Translates one MDF node: resolves its names to operands and builds IR nodes."""

    def __init__(self, tr: _Translator, spec: _NodeSpec, ports: dict):
        self.tr = tr
        self.spec = spec
        self.values: dict[str, Any] = dict(ports)
        self.pending: list[str] = []
        self.created: list[str] = []
        self.where = f"{tr.where}: node {spec.id!r}"

    # ---------------------------------------------------------------- names

    def names(self) -> set[str]:
        s = self.spec
        return set(s.ports) | set(s.params) | set(s.functions)

    def resolve(self, name: str):
        if name in self.values:
            return self.values[name]
        if name in self.pending:
            path = " -> ".join(self.pending[self.pending.index(name):] + [name])
            raise InvalidModelError(f"{self.where}: parameters/functions reference each other "
                                    f"in a cycle ({path})")
        self.pending.append(name)
        try:
            if name in self.spec.params:
                value = self.parameter(name)
            elif name in self.spec.functions:
                value = self.function(name)
            else:
                raise InvalidModelError(f"{self.where}: undefined name {name!r}")
        finally:
            self.pending.pop()
        self.values[name] = value
        return value

    def parameter(self, pid: str):
        p = self.spec.params[pid]
        here = f"{self.where} parameter {pid!r}"
        if p.get("function") is not None:
            return self.call(p["function"], p.get("args"), pid)
        value = p.get("value")
        if value is None:
            raise InvalidModelError(f"{here}: no value and no function")
        if isinstance(value, str):
            return self.expression(value, pid)
        meta = _expect(p.get("metadata") or {}, dict, here, "metadata")
        dtype = np.dtype(_dtype(meta["dtype"], here)) if "dtype" in meta else None
        return _Const(_array(value, here, dtype))

    def function(self, fid: str):
        f = self.spec.functions[fid]
        here = f"{self.where} function {fid!r}"
        if f.get("function") is not None:
            return self.call(f["function"], f.get("args"), fid)
        value = f.get("value")
        if value is None:
            raise InvalidModelError(f"{here}: neither function nor value")
        if isinstance(value, str):
            args = _expect(f.get("args") or {}, dict, here, "args")
            local = {k: self.argument(v, f"{fid}_{k}") for k, v in args.items()}
            return self.expression(value, fid, local)
        return _Const(_array(value, here))

    def call(self, function, args, label: str):
        if isinstance(function, dict):
            (function, args), = function.items()
        here = f"{self.where} {label!r} ({function})"
        args = _expect(args if args is not None else {}, dict, here, "args")
        op = self.tr._onnx_name(function)
        if op is not None:
            if function != f"onnx::{op}":
                self.tr.notes.append(f"node {self.spec.id!r}: read {function!r} as onnx::{op}")
            return self.onnx(op, args, label)
        arg_names, text = STANDARD_FUNCTIONS[function]
        missing = [a for a in arg_names if a not in args]
        extra = [a for a in args if a not in arg_names]
        if missing or extra:
            raise InvalidModelError(f"{here}: takes arguments {list(arg_names)}; missing "
                                    f"{missing}, unknown {extra}")
        local = {k: self.argument(args[k], f"{label}_{k}") for k in arg_names}
        special = self.standard_op(function, local)
        if special is not None:
            op, x = special
            return self.node(op, [x], label)
        return self.expression(text, label, local)

    def standard_op(self, function, local):
        """Standard functions that are exactly one IR op for their argument values."""

        def const_is(name, v):
            c = local.get(name)
            return isinstance(c, _Const) and c.value.shape == () and float(c.value) == v

        x = local.get("variable0")
        if not isinstance(_first(x), _Dyn):
            return None
        if function == "logistic" and const_is("gain", 1) and const_is("bias", 0) \
                and const_is("offset", 0):
            return "Sigmoid", x
        if function == "tanh" and const_is("scale", 1):
            return "Tanh", x
        if function == "exponential" and all(const_is(k, v) for k, v in
                                             (("scale", 1), ("rate", 1), ("bias", 0),
                                              ("offset", 0))):
            return "Exp", x
        return None

    def argument(self, value, label: str):
        """An argument value as an operand: an expression, a number or an array."""
        if isinstance(value, str):
            return self.expression(value, label)
        if value is None:
            return None
        if isinstance(value, dict):
            raise InvalidModelError(f"{self.where}: argument {label!r} is a dict")
        return _Const(_array(value, f"{self.where} argument {label!r}", infer=True))

    # ---------------------------------------------------------------- expressions

    def expression(self, text: str, label: str, local: dict | None = None):
        from ..engine.expr import compile_expression, parse_expression

        local = local or {}
        try:
            compiled = compile_expression(text, names=self.names() | set(local))
        except UnsafeExpressionError as exc:
            raise UnsafeExpressionError(f"{self.where} {label!r}: {exc}") from None
        tree = parse_expression(text).body
        ops = {}
        for name in self.tr.vocab.free_names(text):
            ops[name] = local[name] if name in local else self.resolve(name)
            if ops[name] is None:
                raise InvalidModelError(f"{self.where} {label!r}: {name!r} has no value")
        # value / value[0] of a tuple-valued ONNX function: its main output.
        if isinstance(tree, ast.Name):
            return ops[tree.id]
        if (isinstance(tree, ast.Subscript) and isinstance(tree.value, ast.Name)
                and isinstance(ops[tree.value.id], _Tuple)):
            index = _const_int(tree.slice)
            tup = ops[tree.value.id]
            if index is None or not -len(tup.items) <= index < len(tup.items):
                raise InvalidModelError(f"{self.where} {label!r}: onnx::{tup.op} returns "
                                        f"{len(tup.items)} value(s); {text!r} selects none")
            item = tup.items[index]
            if item is None:
                raise UnsupportedLayerError(
                    f"{self.where} {label!r}: output {index} of onnx::{tup.op} (e.g. MaxPool "
                    "indices) is not supported", [(self.spec.id, tup.op)])
            return item
        if any(isinstance(v, _Tuple) for v in ops.values()):
            text, tree, ops = self.untuple(tree, ops, label)
            compiled = compile_expression(text, names=set(ops))
        ops = {k: _first(v) for k, v in ops.items()}
        if all(isinstance(v, _Const) for v in ops.values()):
            return self.fold_expression(text, compiled, ops, label)
        matched = self.match(tree, ops)
        if matched is not None:
            op, inputs, attrs, params = matched
            return self.node(op, inputs, label, attrs=attrs, params=params)
        return self.mdf_expression(text, ops, label)

    def untuple(self, tree, ops, label):
        """Replace ``t[k]`` of a tuple-valued ONNX function ``t`` inside a larger expression
        by a name bound to that output; returns the new text, tree and operands."""
        ops = dict(ops)
        scope = self

        class Rewrite(ast.NodeTransformer):
            def visit_Subscript(self, node):
                self.generic_visit(node)
                if isinstance(node.value, ast.Name) and isinstance(ops.get(node.value.id),
                                                                   _Tuple):
                    tup, index = ops[node.value.id], _const_int(node.slice)
                    if index is None or not -len(tup.items) <= index < len(tup.items) \
                            or tup.items[index] is None:
                        raise UnsupportedLayerError(
                            f"{scope.where} {label!r}: output {ast.unparse(node.slice)} of "
                            f"onnx::{tup.op} is not supported", [(scope.spec.id, tup.op)])
                    name = f"{node.value.id}_{index % len(tup.items)}"
                    while name in ops and ops[name] is not tup.items[index]:
                        name += "_"
                    ops[name] = tup.items[index]
                    return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
                return node

        # The parsed tree is shared (parse_expression remembers it): rewrite a copy.
        tree = ast.fix_missing_locations(Rewrite().visit(copy.deepcopy(tree)))
        used = set(self.tr.vocab.free_names(ast.unparse(tree)))
        return ast.unparse(tree), tree, {k: v for k, v in ops.items() if k in used}

    def fold_expression(self, text, compiled, ops, label):
        shapes = {k: v.value.shape for k, v in ops.items()}
        try:
            shape = self.tr.vocab.expression_shape(text, shapes)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise InvalidModelError(f"{self.where} {label!r}: {text!r}: {exc}") from None
        size = math.prod(shape)
        if size > MAX_FOLD_ELEMENTS:
            raise InvalidModelError(f"{self.where} {label!r}: the constant expression "
                                    f"{text!r} would have {size:,} elements (more than "
                                    f"{MAX_FOLD_ELEMENTS:,})")
        value = compiled.evaluate({k: v.value for k, v in ops.items()})
        return _Const(np.asarray(value))

    def match(self, tree, ops):
        """Pattern-match an expression onto one IR op: ``(op, inputs, attrs, params)``."""

        def dyn(n):
            return isinstance(n, ast.Name) and isinstance(ops[n.id], _Dyn)

        def const(n):
            return isinstance(n, ast.Name) and isinstance(ops[n.id], _Const)

        def zero(n):
            return isinstance(n, ast.Constant) and n.value == 0 and not isinstance(n.value, bool)

        def matmul(n):  # x @ W, matmul(x, W), dot(x, W) with a constant 2-D W
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult):
                a, b = n.left, n.right
            elif _call_name(n) in ("matmul", "dot") and len(n.args) == 2 and not n.keywords:
                a, b = n.args
            else:
                return None
            if dyn(a) and const(b) and ops[b.id].value.ndim == 2:
                return ops[a.id], ops[b.id].value
            return None

        if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Add):
            for mm, bias in ((tree.left, tree.right), (tree.right, tree.left)):
                hit = matmul(mm)
                if hit is not None and const(bias):
                    b = ops[bias.id].value
                    n = hit[1].shape[1]
                    if b.size in (1, n) and b.ndim <= 2 and (b.ndim < 2 or b.shape[0] == 1):
                        b = np.broadcast_to(b.reshape(-1), (n,)).astype(np.float32)
                        return "Gemm", [hit[0]], {}, {"W": hit[1], "B": b}
        hit = matmul(tree)
        if hit is not None:
            return "Gemm", [hit[0]], {}, {"W": hit[1]}
        if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.MatMult) \
                and dyn(tree.left) and dyn(tree.right):
            return "MatMul", [ops[tree.left.id], ops[tree.right.id]], {}, {}
        # x * (x > 0): relu as MDF's standard function and modeci's importer write it
        if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Mult):
            for x, cmp in ((tree.left, tree.right), (tree.right, tree.left)):
                if (dyn(x) and isinstance(cmp, ast.Compare) and len(cmp.ops) == 1
                        and isinstance(cmp.ops[0], ast.Gt) and isinstance(cmp.left, ast.Name)
                        and cmp.left.id == x.id and zero(cmp.comparators[0])):
                    return "Relu", [ops[x.id]], {}, {}
        name = _call_name(tree)
        if name == "maximum" and len(tree.args) == 2 and not tree.keywords:
            a, b = tree.args
            if dyn(a) and zero(b) or dyn(b) and zero(a):
                return "Relu", [ops[(a if dyn(a) else b).id]], {}, {}
        if name in _UNARY_CALLS and len(tree.args) == 1 and not tree.keywords \
                and dyn(tree.args[0]):
            return _UNARY_CALLS[name], [ops[tree.args[0].id]], {}, {}
        if name == "clip" and len(tree.args) == 3 and dyn(tree.args[0]):
            lo, hi = _scalar_const(tree.args[1]), _scalar_const(tree.args[2])
            if lo is not None and hi is not None:
                return "Clip", [ops[tree.args[0].id]], {
                    "min": None if lo == -math.inf else lo,
                    "max": None if hi == math.inf else hi}, {}
        if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub) and dyn(tree.operand):
            return "Neg", [ops[tree.operand.id]], {}, {}
        if isinstance(tree, ast.BinOp) and type(tree.op) in _BINARY_OPS:
            op = _BINARY_OPS[type(tree.op)]
            a, b = tree.left, tree.right

            def value(n):  # a named constant or a number literal (as float32, like numpy)
                if const(n):
                    return ops[n.id].value.astype(np.float32)
                lit = _scalar_const(n)
                return None if lit is None else np.float32(lit)

            if dyn(a) and dyn(b):
                return op, [ops[a.id], ops[b.id]], {}, {}
            if dyn(a) and value(b) is not None:
                return op, [ops[a.id]], {}, {"B": value(b)}
            if dyn(b) and value(a) is not None and op in ("Add", "Mul"):
                return op, [ops[b.id]], {}, {"B": value(a)}
        return None

    def mdf_expression(self, text, ops, label):
        inputs = [k for k, v in ops.items() if isinstance(v, _Dyn)]
        consts = [k for k, v in ops.items() if isinstance(v, _Const)]
        if len(consts) > self.tr.vocab.MAX_CONSTANTS:
            raise UnsupportedLayerError(
                f"{self.where} {label!r}: an expression may use at most "
                f"{self.tr.vocab.MAX_CONSTANTS} named constants, {text!r} uses {len(consts)}",
                [(self.spec.id, "expression")])
        params = {f"c{i}": ops[k].value for i, k in enumerate(consts)}
        return self.node("MdfExpression", [ops[k] for k in inputs], label,
                         attrs={"expression": text, "inputs": inputs, "constants": consts},
                         params=params)

    # ---------------------------------------------------------------- ONNX functions

    def onnx(self, op: str, args: dict, label: str):
        inputs_spec, defaults = self.tr.vocab.ONNX_FUNCTIONS[op]
        here = f"{self.where} {label!r} (onnx::{op})"
        names = [n.rstrip("?*") for n in inputs_spec]
        unknown = sorted(set(args) - set(names) - set(defaults))
        if unknown:
            raise InvalidModelError(f"{here}: unknown argument(s) {unknown}; it takes inputs "
                                    f"{names} and attributes {sorted(defaults)}")
        operands: dict[str, Any] = {}
        for spec in inputs_spec:
            name = spec.rstrip("?*")
            if spec.endswith("*"):
                operands[name] = self.variadic(args.get(name), here, label)
            elif name in args and args[name] is not None:
                operands[name] = self.argument(args[name], f"{label}_{name}")
            elif not spec.endswith("?"):
                raise InvalidModelError(f"{here}: missing input {name!r}")
        attrs = {}
        for key, default in defaults.items():
            value = args.get(key, default)
            if key in _STRING_ATTRS:
                if not isinstance(value, str):
                    raise InvalidModelError(f"{here}: attribute {key!r} must be a string")
            elif isinstance(value, str):
                operand = _first(self.expression(value, f"{label}_{key}"))
                if not isinstance(operand, _Const):
                    raise UnsupportedLayerError(f"{here}: attribute {key!r} must be constant",
                                                [(self.spec.id, op)])
                value = _python(operand.value)
            elif isinstance(value, (list, np.ndarray)):
                try:
                    value = _python(np.array(value))
                except (ValueError, TypeError, OverflowError) as exc:
                    raise InvalidModelError(f"{here}: attribute {key!r}: {exc}") from None
            attrs[key] = value
        builder = _ONNX_BUILDERS.get(op, _build_simple)
        try:
            ir_op, inputs, ir_attrs, params = builder(op, operands, attrs, self)
        except _Unsupported as exc:
            raise UnsupportedLayerError(f"{here}: {exc}", [(self.spec.id, op)]) from None
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidModelError(f"{here}: {exc}") from None
        value = self.node(ir_op, inputs, label, attrs=ir_attrs, params=params)
        count = self.tr.vocab.TUPLE_VALUED.get(op)
        if count:
            return _Tuple((value,) + (None,) * (count - 1), op)
        return value

    def variadic(self, arg, here: str, label: str) -> list:
        if arg is None:
            # The reference engine passes every value of the node to a variadic ONNX op; that
            # is the node's input ports only when the node holds nothing else.
            if self.spec.params or len(self.spec.functions) > 1:
                raise InvalidModelError(f"{here}: a variadic ONNX function without explicit "
                                        "inputs must be the node's only function, with no "
                                        "parameters")
            return [self.values[p] for p in self.spec.ports]
        items = arg if isinstance(arg, list) else [arg]
        return [self.argument(a, f"{label}_{i}") for i, a in enumerate(items)]

    # ---------------------------------------------------------------- nodes

    def node(self, op, inputs, label, attrs=None, params=None):
        """An IR node (or a folded constant when every input is constant)."""
        inputs = [_first(i) for i in inputs]
        # Weights run in float32 (the engine's type); a Gather table keeps its dtype.
        params = {k: np.asarray(v) if op == "Gather" else np.asarray(v, dtype=np.float32)
                  for k, v in (params or {}).items()}
        if inputs and all(isinstance(i, _Const) for i in inputs):
            return self.tr.fold(op, attrs or {}, params, [i.value for i in inputs],
                                f"{self.where} {label!r}")
        name = self.tr.add(op, inputs, attrs=attrs, params=params,
                           name=f"{self.spec.id}_{label}", origin=self.spec.id)
        self.created.append(name)
        return _Dyn(name)

    def translate(self) -> None:
        """Resolve the node's output ports (and, to report errors, every item)."""
        spec = self.spec
        for pid in spec.params:
            self.resolve(pid)
        for fid in spec.functions:
            self.resolve(fid)
        outs = {}
        for oid, o in spec.outputs.items():
            value = o.get("value")
            if value is None:
                raise InvalidModelError(f"{self.where} output port {oid!r}: no value")
            if isinstance(value, str):
                outs[oid] = _first(self.expression(value, oid))
            else:
                outs[oid] = _Const(_array(value, f"{self.where} output port {oid!r}"))
        self.merge(outs)
        self.drop_unused(outs)
        for i, (oid, v) in enumerate(outs.items()):
            if isinstance(v, _Const):
                base = spec.id if i == 0 else f"{spec.id}_{oid}"
                v = _Dyn(self.tr.materialize(v, base))
            self.tr.port_values[(spec.id, oid)] = v
        # The value of the first output port carries the node's id.
        first = next(iter(outs.values()), None)
        if isinstance(first, _Dyn) and first.name in self.created:
            target = _sanitize(spec.id)
            if target not in self.tr.graph and first.name != target:
                self.tr.graph.rename(first.name, target)
                # Only this node's ports can hold a node made here (not every port so
                # far: that rescan made reading quadratic in the depth, BUG-10).
                for oid in spec.outputs:
                    if self.tr.port_values[(spec.id, oid)] == first:
                        self.tr.port_values[(spec.id, oid)] = _Dyn(target)

    def drop_unused(self, outs: dict) -> None:
        """Remove nodes made here that feed no output port (computed but never used)."""
        g = self.tr.graph
        exposed = {v.name for v in outs.values() if isinstance(v, _Dyn)}
        for name in reversed(list(self.created)):
            if name in g and name not in exposed and not g.users(name):
                srcs = g.node(name).inputs
                g.remove_node(name)
                self.created.remove(name)
                for src in srcs:  # constants materialised for it alone go too
                    if src in g and g.node(src).op == "Constant" and not g.users(src) \
                            and not g.is_output(src):
                        g.remove_node(src)

    def merge(self, outs: dict) -> None:
        """Fuse ``Flatten -> Gemm`` and ``host -> activation`` chains made in this node."""
        g = self.tr.graph
        exposed = {v.name for v in outs.values() if isinstance(v, _Dyn)}
        created = set(self.created)
        for name in list(self.created):
            if name not in g:
                continue
            node = g.node(name)
            src = g.node(node.inputs[0]) if node.inputs else None
            if (node.op == "Gemm" and node.attrs["flatten"] is None and src is not None
                    and src.name in created and src.op == "Flatten"
                    and src.name not in exposed and len(g.users(src)) == 1):
                node.attrs["flatten"] = src.attrs["axis"]
                g.set_inputs(node, [src.inputs[0]])
                g.remove_node(src)
                self.created.remove(src.name)
        for name in list(self.created):
            if name not in g:
                continue
            act = g.node(name)
            if act.op not in FUSIBLE_ACTIVATIONS or len(act.inputs) != 1:
                continue
            host = g.node(act.inputs[0])
            if (host.name in created and host.op in FUSION_HOSTS
                    and not host.attrs.get("activation") and host.name not in exposed
                    and len(g.users(host)) == 1):
                host.attrs["activation"] = act.op
                host.attrs["activation_attrs"] = dict(act.attrs)
                g.replace_all_uses_with(act, host)
                g.remove_node(act)
                self.created.remove(act.name)
                for oid, v in outs.items():
                    if v == _Dyn(act.name):
                        outs[oid] = _Dyn(host.name)
                g._infer_one(host)


def _call_name(node) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def _const_int(node) -> int | None:
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _scalar_const(node) -> float | None:
    """A numeric literal, ``-x``, or ``[-]numpy.inf``; None for anything else."""
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return sign * float(node.value)
    if isinstance(node, ast.Attribute) and node.attr == "inf":
        return sign * math.inf
    return None


def _python(value: np.ndarray):
    """A constant array as a plain attribute value (int/float or a list of them)."""
    value = np.asarray(value)
    if value.dtype.kind == "f" and np.all(np.isfinite(value)) and np.all(value == np.round(value)):
        value = value.astype(np.int64)
    return value.tolist()


# =========================================================================== ONNX -> IR


class _Unsupported(Exception):
    """A valid ONNX use that the IR does not express."""


def _const(operands, name, op, required=True):
    v = operands.get(name)
    if v is None:
        if required:
            raise ValueError(f"missing input {name!r}")
        return None
    v = _first(v)
    if not isinstance(v, _Const):
        raise _Unsupported(f"input {name!r} must be constant (a parameter or literal) for "
                           f"onnx::{op}")
    return v.value


def _ints(value, name):
    if value is None:
        return None
    seq = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in seq):
        raise ValueError(f"{name} must be integers, got {value!r}")
    return list(seq)


def _window_attrs(attrs, n_spatial, scope):
    pads = _ints(attrs.get("pads"), "pads")
    if pads is not None and len(pads) != 2 * n_spatial:
        if not any(pads):
            # modeci's Keras importer writes six zeros for a 2-D conv: no padding either way.
            scope.tr.notes.append(f"node {scope.spec.id!r}: {len(pads)} zero pads read as no "
                                  "padding")
            pads = None
        else:
            raise ValueError(f"pads has {len(pads)} entries, expected {2 * n_spatial}")
    out = {"layout": "NCHW", "strides": _ints(attrs.get("strides"), "strides"), "pads": pads,
           "auto_pad": attrs.get("auto_pad", "NOTSET")}
    if out["auto_pad"] not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise ValueError(f"auto_pad {out['auto_pad']!r} is not an ONNX value")
    return out


def _build_gemm(op, o, a, scope):
    if a["transA"]:
        raise _Unsupported("transA=1 is not supported")
    x = o["A"]
    w = _first(o["B"])
    if not isinstance(w, _Const):
        if o.get("C") is not None:
            raise _Unsupported("a computed B with a bias C is not supported")
        return "MatMul", [x, w], {}, {}
    w = w.value.T if a["transB"] else w.value
    if w.ndim != 2:
        raise ValueError(f"B must be 2-D, got shape {w.shape}")
    if a["alpha"] != 1:
        w = w * np.float32(a["alpha"])
    params = {"W": w}
    c = _const(o, "C", op, required=False)
    if c is not None:
        n = w.shape[1]
        if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            raise _Unsupported(f"bias C of shape {c.shape} (only (N,), (1, N) or scalar)")
        c = np.broadcast_to(c.reshape(-1), (n,))
        params["B"] = c * np.float32(a["beta"]) if a["beta"] != 1 else c
    return "Gemm", [x], {}, params


def _build_matmul(op, o, a, scope):
    b = _first(o["B"])
    if isinstance(b, _Const) and b.value.ndim == 2:
        return "Gemm", [o["A"]], {}, {"W": b.value}
    return "MatMul", [o["A"], b], {}, {}


def _build_conv(op, o, a, scope):
    w = _const(o, "W", op)
    n = w.ndim - 2
    attrs = _window_attrs(a, n, scope)
    attrs["dilations"] = _ints(a.get("dilations"), "dilations")
    attrs["group"] = int(a["group"])
    ks = _ints(a.get("kernel_shape"), "kernel_shape")
    if ks is not None and list(ks) != list(w.shape[2:]):
        raise ValueError(f"kernel_shape {ks} does not match W of shape {w.shape}")
    if op == "ConvTranspose":
        if a.get("output_shape") is not None:
            raise _Unsupported("output_shape is not supported (give pads)")
        attrs["output_padding"] = _ints(a.get("output_padding"), "output_padding")
    params = {"W": w}
    b = _const(o, "B", op, required=False)
    if b is not None:
        params["B"] = b
    return op, [o["X"]], attrs, params


def _build_pool(op, o, a, scope):
    ks = _ints(a.get("kernel_shape"), "kernel_shape")
    if not ks:
        raise ValueError("kernel_shape is required")
    attrs = _window_attrs(a, len(ks), scope)
    attrs["kernel_shape"] = ks
    attrs["ceil_mode"] = int(a["ceil_mode"])
    if op == "MaxPool":
        attrs["dilations"] = _ints(a.get("dilations"), "dilations")
    else:
        attrs["count_include_pad"] = int(a["count_include_pad"])
    return op, [o["X"]], attrs, {}


def _build_batchnorm(op, o, a, scope):
    if a.get("training_mode"):
        raise _Unsupported("training_mode=1 is not supported (inference only)")
    params = {"scale": _const(o, "scale", op), "B": _const(o, "B", op),
              "mean": _const(o, "input_mean", op), "var": _const(o, "input_var", op)}
    return op, [o["X"]], {"axis": 1, "epsilon": float(a["epsilon"])}, params


def _build_simple(op, o, a, scope):
    """Unary ONNX ops with the IR's name; their attributes pass through."""
    (x,) = [v for v in o.values()]
    attrs = {}
    schema = get_schema(op)
    for key, value in a.items():
        if key in schema.attrs:
            attrs[key] = float(value) if isinstance(value, (int, float)) and \
                isinstance(schema.attrs[key], float) else value
    return op, [x], attrs, {}


def _build_softmax(op, o, a, scope):
    if scope.tr.opset < 13:
        raise _Unsupported(f"onnx::{op} before opset 13 (2-D coercion) is not supported")
    return op, [o["input"]], {"axis": int(a["axis"])}, {}


def _build_binary(op, o, a, scope):
    x, y = (o["A"], o["B"]) if op != "Pow" else (o["X"], o["Y"])
    x, y = _first(x), _first(y)
    if isinstance(y, _Const) and isinstance(x, _Dyn):
        return op, [x], {}, {"B": y.value}
    if isinstance(x, _Const) and isinstance(y, _Dyn) and op in ("Add", "Mul"):
        return op, [y], {}, {"B": x.value}
    return op, [x, y], {}, {}


def _build_variadic(op, o, a, scope):
    items = o.get("data_0", o.get("inputs"))
    if not items:
        raise ValueError("no inputs")
    if op == "Concat":
        if a.get("axis") is None:
            raise ValueError("attribute 'axis' is required")
        return op, items, {"axis": int(a["axis"])}, {}
    return op, items, {}, {}


def _build_prelu(op, o, a, scope):
    return op, [o["X"]], {}, {"slope": _const(o, "slope", op)}


def _build_flatten(op, o, a, scope):
    return op, [o["input"]], {"axis": int(a["axis"])}, {}


def _build_reshape(op, o, a, scope):
    if a.get("allowzero"):
        raise _Unsupported("allowzero=1 is not supported")
    shape = _ints(_python(_const(o, "shape", op).reshape(-1)), "shape")
    return op, [o["data"]], {"shape": shape}, {}


def _rank(scope, operand):
    operand = _first(operand)
    if isinstance(operand, _Dyn):
        t = scope.tr.graph.node(operand.name).type
        return None if t is None else t.rank
    return operand.value.ndim


def _build_transpose(op, o, a, scope):
    perm = _ints(a.get("perm"), "perm")
    if perm is None:
        rank = _rank(scope, o["data"])
        perm = list(reversed(range(rank)))
    return op, [o["data"]], {"perm": perm}, {}


def _build_pad(op, o, a, scope):
    pads = _ints(_python(_const(o, "pads", op).reshape(-1)), "pads")
    cv = _const(o, "constant_value", op, required=False)
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise ValueError(f"mode {mode!r} is not an ONNX Pad mode")
    return op, [o["data"]], {"pads": pads, "value": 0.0 if cv is None else float(cv.reshape(-1)[0]),
                             "mode": mode}, {}


def _build_slice(op, o, a, scope):
    get = lambda k: None if o.get(k) is None else _ints(  # noqa: E731
        _python(_const(o, k, op).reshape(-1)), k)
    starts, ends = get("starts"), get("ends")
    axes = get("axes") or list(range(len(starts)))
    return op, [o["data"]], {"starts": starts, "ends": ends, "axes": axes,
                             "steps": get("steps")}, {}


def _build_squeeze(op, o, a, scope):
    axes = o.get("axes")
    if axes is None:
        if op == "Unsqueeze":
            raise ValueError("axes is required")
        x = _first(o["data"])
        t = scope.tr.graph.node(x.name).type if isinstance(x, _Dyn) else None
        shape = t.shape if t is not None else x.value.shape
        if None in shape:
            raise _Unsupported("Squeeze without axes on an input with unknown dims")
        axes = [i for i, d in enumerate(shape) if d == 1]
    else:
        axes = _ints(_python(_const(o, "axes", op).reshape(-1)), "axes")
    return op, [o["data"]], {"axes": axes}, {}


def _build_resize(op, o, a, scope):
    if o.get("sizes") is not None:
        raise _Unsupported("sizes is not supported (give integer scales)")
    defaults = scope.tr.vocab.ONNX_FUNCTIONS["Resize"][1]
    changed = [k for k in ("mode", "coordinate_transformation_mode", "nearest_mode",
                           "exclude_outside") if a.get(k) != defaults[k]]
    if changed:
        raise _Unsupported(f"only nearest-neighbour resizing with the default modes is "
                           f"supported (got {', '.join(f'{k}={a[k]!r}' for k in changed)})")
    scales = _const(o, "scales", op).reshape(-1).tolist()
    return op, [o["X"]], {"scales": scales}, {}


def _build_reduce(op, o, a, scope):
    axes = _ints(a.get("axes"), "axes")
    if axes is None:
        axes = list(range(_rank(scope, o["data"])))
    return op, [o["data"]], {"axes": axes, "keepdims": int(a["keepdims"])}, {}


def _build_gather(op, o, a, scope):
    return op, [o["indices"]], {"axis": int(a["axis"])}, {"data": _const(o, "data", op)}


def _build_dropout(op, o, a, scope):
    mode = o.get("training_mode")
    if mode is not None and (not isinstance(_first(mode), _Const) or _first(mode).value.any()):
        raise _Unsupported("training_mode must be false")
    ratio = _const(o, "ratio", op, required=False)
    return op, [o["data"]], {"ratio": 0.0 if ratio is None else float(ratio.reshape(-1)[0])}, {}


def _build_clip(op, o, a, scope):
    lo = _const(o, "min", op, required=False)
    hi = _const(o, "max", op, required=False)
    return op, [o["input"]], {"min": None if lo is None else float(lo.reshape(-1)[0]),
                              "max": None if hi is None else float(hi.reshape(-1)[0])}, {}


_ONNX_BUILDERS = {
    "Gemm": _build_gemm, "MatMul": _build_matmul, "Conv": _build_conv,
    "ConvTranspose": _build_conv, "MaxPool": _build_pool, "AveragePool": _build_pool,
    "BatchNormalization": _build_batchnorm, "Softmax": _build_softmax,
    "LogSoftmax": _build_softmax, "PRelu": _build_prelu, "Flatten": _build_flatten,
    "Reshape": _build_reshape, "Transpose": _build_transpose, "Pad": _build_pad,
    "Slice": _build_slice, "Squeeze": _build_squeeze, "Unsqueeze": _build_squeeze,
    "Resize": _build_resize, "ReduceMean": _build_reduce, "ReduceMax": _build_reduce,
    "Gather": _build_gather, "Dropout": _build_dropout, "Clip": _build_clip,
    **{op: _build_binary for op in ("Add", "Sub", "Mul", "Div", "Pow")},
    **{op: _build_variadic for op in ("Max", "Min", "Sum", "Mean", "Concat")},
    "GlobalAveragePool": lambda op, o, a, s: (op, [o["X"]], {"layout": "NCHW"}, {}),
    "GlobalMaxPool": lambda op, o, a, s: (op, [o["X"]], {"layout": "NCHW"}, {}),
}


# =========================================================================== entry point


@register_frontend("mdf", suffixes=(".json", ".yaml", ".yml"), accepts=_is_mdf_model,
                   description="ModECI MDF JSON/YAML files and modeci_mdf Model objects "
                               "(stateless dataflow subset).")
def load(src, *, graph: str | None = None, max_bytes: int = MAX_FILE_BYTES, **options) -> Graph:
    """Read an MDF file (``.json``/``.yaml``/``.yml``), ``modeci_mdf`` Model or Graph into an
    IR graph.

    ``graph`` picks one graph of a model holding several; ``max_bytes`` bounds the file
    size. Raises :class:`InvalidModelError` for malformed input,
    :class:`UnsupportedLayerError` (listing every node) for features outside the stateless
    dataflow subset, :class:`UnsafeExpressionError` for expressions outside the allow-list.
    Notes on lenient readings (baked input data, ``onnx:`` spellings) are kept in
    ``graph.meta["mdf_notes"]``.
    """
    if options:
        raise InvalidModelError(f"unknown option(s) for the MDF frontend: {sorted(options)}")
    doc, where = read_document(src, max_bytes=max_bytes)
    graph_id, g, model = _pick_graph(doc, where, graph)
    return _Translator(graph_id, g, model, where).run()


__all__ = ["load", "read_document", "STANDARD_FUNCTIONS", "MAX_FILE_BYTES"]
