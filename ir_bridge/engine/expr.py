"""A safe compiler for MDF expression strings.

MDF stores node computations as Python-looking strings (``"(x @ W) + b"``,
``"where(x > 0, x, 0.01 * x)"``). The reference engine hands them to ``eval``; an MDF
file is untrusted input, so here they are parsed with :func:`ast.parse` and the tree is
checked against an allow-list and turned into nested Python closures. No code object is
ever built and nothing is looked up in Python's namespaces: a name is either a value the
caller passes, or a function of :data:`ALLOWED_FUNCTIONS`.

Allowed:

* numeric literals (``int`` literals become ``float``, so arithmetic never touches
  Python big integers), ``True``/``False``, and list/tuple literals of constants;
* names not starting with ``_``;
* unary ``+ -``; binary ``+ - * / // % ** @``; comparisons, also chained
  (``a < b < c`` is ``logical_and(a < b, b < c)``); ``a if c else b`` as
  ``where(c, a, b)``;
* calls of :data:`ALLOWED_FUNCTIONS` by plain name or behind one of the prefixes
  ``np.``, ``numpy.``, ``math.`` (all mean the same numpy function), and the constants
  ``np.pi``/``math.e``/... of :data:`ALLOWED_CONSTANTS`; axis-like arguments
  (``axis=``, ``keepdims=``, ``decimals=``, ``axes=``, reshape's shape) must be constant;
* subscripts whose indices are constant integers, slices, ``None`` or ``...``.

Everything else (attributes, strings, lambdas, comprehensions, walrus, starred, dicts,
sets, ``not``/``and``/``or``/``~``, calls of anything else, computed indices) raises
:class:`~ir_bridge.errors.UnsafeExpressionError` at compile time, quoting the construct
and the expression.

Bounds, so a file cannot hang or exhaust the engine: the text is at most
:data:`MAX_TEXT_LENGTH` characters, the tree at most :data:`MAX_NODES` nodes and
:data:`MAX_DEPTH` levels deep (``ast.parse``'s own ``RecursionError``/``MemoryError`` on
absurd nesting are reported the same way); a constant exponent above
:data:`MAX_POWER_EXPONENT` in absolute value is rejected; a literal holds at most
:data:`MAX_LITERAL_ELEMENTS` numbers; a reshape may not ask for more than
:data:`MAX_ELEMENTS` elements. Values are converted with
``np.asarray`` and must be numeric, so all run-time arithmetic is fixed-width numpy.
Evaluation runs under ``np.errstate(all="ignore")``: overflow gives ``inf``, ``0/0``
gives ``nan``, as in numpy's float semantics, whatever the caller's ``np.seterr``.
Broadcasting can still make large arrays from large inputs (an outer product of
two long vectors); numpy refuses impossible allocations with ``MemoryError``. That and any
other run-time failure (bad shapes, wrong dtypes) becomes :class:`~ir_bridge.errors.ExecutionError`.

Sub-trees made only of scalar constants are folded at compile time.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from ir_bridge.errors import ExecutionError, IRBridgeError, UnsafeExpressionError

MAX_TEXT_LENGTH = 100_000  # room for a 10,000-number literal, far below parser trouble
MAX_NODES = 20_000
MAX_DEPTH = 100  # the builder and the closures recurse once or twice per level
MAX_POWER_EXPONENT = 64
MAX_LITERAL_ELEMENTS = 10_000
MAX_ELEMENTS = 10**8

# erf: numpy has none. |x| < 0.5 uses the Maclaurin series (relative error < 1e-14);
# beyond it Numerical Recipes' erfc Chebyshev fit (relative error < 1.2e-7 on erfc, so
# on erf too, as erf > 0.52 there).
_ERF_SERIES = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(12))
_ERFC_FIT = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
             0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def erf(x: Any) -> np.ndarray:
    """The error function, elementwise, in float64 (float inputs keep their dtype)."""
    x = np.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.float64
    z = np.abs(x.astype(np.float64))
    small = z < 0.5
    zs = np.where(small, z, 0.0)
    series = np.zeros_like(z)
    for c in reversed(_ERF_SERIES):
        series = series * (zs * zs) + c
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(z)
    for c in reversed(_ERFC_FIT):
        poly = poly * t + c
    with np.errstate(all="ignore"):
        erfc = t * np.exp(-z * z + poly)
    out = np.where(small, (2.0 / math.sqrt(math.pi)) * zs * series, 1.0 - erfc)
    return (np.sign(x) * out).astype(dtype)


#: The functions an expression may call, by plain name or as np./numpy./math.<name>.
ALLOWED_FUNCTIONS: Mapping[str, Callable[..., Any]] = MappingProxyType({
    "abs": np.abs, "sign": np.sign, "floor": np.floor, "ceil": np.ceil, "round": np.round,
    "exp": np.exp, "exp2": np.exp2, "log": np.log, "log2": np.log2, "log10": np.log10,
    "sqrt": np.sqrt, "power": np.power, "pow": np.power, "erf": erf,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin,
    "arccos": np.arccos, "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "tanh": np.tanh, "maximum": np.maximum, "minimum": np.minimum, "where": np.where,
    "clip": np.clip, "sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min,
    "dot": np.dot, "matmul": np.matmul, "transpose": np.transpose, "reshape": np.reshape,
})
#: Constants reachable only with a module prefix (``math.pi``), never as bare names.
ALLOWED_CONSTANTS: Mapping[str, float] = MappingProxyType(
    {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan})
MODULE_ALIASES = frozenset({"np", "numpy", "math"})

# name -> (min args, max args, positions that must be constant, allowed keywords);
# functions not listed take exactly one array argument.
_REDUCE = (1, 2, {1}, {"axis", "keepdims"})
_SIGNATURES: dict[str, tuple[int, int, set[int], set[str]]] = {
    "maximum": (2, 2, set(), set()), "minimum": (2, 2, set(), set()),
    "power": (2, 2, set(), set()), "pow": (2, 2, set(), set()),
    "dot": (2, 2, set(), set()), "matmul": (2, 2, set(), set()),
    "where": (3, 3, set(), set()), "clip": (3, 3, set(), set()),
    "sum": _REDUCE, "mean": _REDUCE, "max": _REDUCE, "min": _REDUCE,
    "round": (1, 2, {1}, {"decimals"}), "transpose": (1, 2, {1}, {"axes"}),
    "reshape": (2, 2, {1}, set()),
}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod, ast.Pow: operator.pow, ast.MatMult: operator.matmul}
_UNARYOPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_CMPOPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
           ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}
# Syntax-only nodes that carry no computation; not counted against MAX_NODES.
_UNCOUNTED = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_DESCRIPTIONS = {
    ast.Attribute: "attribute access", ast.Lambda: "lambda", ast.ListComp: "comprehension",
    ast.SetComp: "comprehension", ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator", ast.NamedExpr: "assignment expression (walrus)",
    ast.JoinedStr: "f-string", ast.Starred: "starred expression", ast.Dict: "dict literal",
    ast.Set: "set literal", ast.BoolOp: "and/or (use where/comparisons)",
}


class _Const:
    """A value known at compile time (as opposed to a closure ``env -> value``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, np.generic)) or (
        isinstance(value, np.ndarray) and value.ndim == 0)


def _fold(fn: Callable[..., Any], args: list[Any], kwargs: Mapping[str, Any] | None = None):
    """Apply ``fn`` to scalar constants in numpy, or return None to defer to run time.

    Python floats go through numpy so folding computes exactly what run time would; the
    result goes back to a Python float/bool so it stays a "weak" scalar that does not
    upcast float32 inputs (NEP 50).
    """
    if not all(_is_scalar(a) for a in args):
        return None
    try:
        with np.errstate(all="ignore"):
            args = [np.asarray(a) if isinstance(a, (bool, float)) else a for a in args]
            out = np.asarray(fn(*args, **(kwargs or {})))
    except Exception:  # invalid but harmless: let run time report it as ExecutionError
        return None
    if out.ndim != 0 or out.dtype.kind not in "biuf":
        return None
    return _Const(bool(out) if out.dtype.kind == "b" else float(out))


def _closure(fn: Callable[..., Any], parts: list[Any], kwargs: Mapping[str, Any] | None):
    """Build ``env -> fn(*parts(env), **kwargs)``, specialised for the common arities."""
    if kwargs:
        fns = [p if callable(p) else (lambda env, v=p: v) for p in parts]
        return lambda env: fn(*[f(env) for f in fns], **kwargs)
    kinds = tuple(callable(p) for p in parts)
    if not any(kinds):  # constants that could not be folded: numpy reports at run time
        return lambda env: fn(*parts)
    if kinds == (True,):
        (a,) = parts
        return lambda env: fn(a(env))
    if len(parts) == 2:
        a, b = parts
        if kinds == (True, True):
            return lambda env: fn(a(env), b(env))
        if kinds == (True, False):
            return lambda env: fn(a(env), b)
        return lambda env: fn(a, b(env))
    fns = [p if callable(p) else (lambda env, v=p: v) for p in parts]
    return lambda env: fn(*[f(env) for f in fns])


class _Compiler:
    def __init__(self, text: str):
        self.text = text
        self.free: set[str] = set()

    def fail(self, what: str, node: ast.AST | None = None) -> UnsafeExpressionError:
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
        if node is None:
            return UnsafeExpressionError(f"{what} in expression {shown!r}")
        snippet = ast.unparse(node)
        snippet = snippet if len(snippet) <= 80 else snippet[:80] + "..."
        return UnsafeExpressionError(f"{what}: {snippet!r} in expression {shown!r}")

    def check_size(self, tree: ast.Expression) -> None:
        # Iterative, so the check itself cannot hit the recursion limit.
        count, stack = 0, [(tree.body, 1)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if depth > MAX_DEPTH:
                raise self.fail(f"nesting deeper than {MAX_DEPTH} levels")
            if count > MAX_NODES:
                raise self.fail(f"more than {MAX_NODES} syntax nodes")
            stack.extend((c, depth + 1) for c in ast.iter_child_nodes(node)
                         if not isinstance(c, _UNCOUNTED))

    def build(self, node: ast.AST) -> Any:
        """Return a ``_Const`` or a closure ``env -> value`` computing ``node``."""
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, (bool, float)):
                return _Const(v)
            if isinstance(v, int):
                try:
                    return _Const(float(v))  # never Python int arithmetic at run time
                except OverflowError:
                    raise self.fail("integer literal too large", node) from None
            kind = "string" if isinstance(v, (str, bytes)) else type(v).__name__
            raise self.fail(f"{kind} literal not allowed", node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.build(node.left), self.build(node.right)
            if isinstance(node.op, ast.Pow):
                self.check_exponent(right, node)
            return self.apply(_BINOPS[type(node.op)], [left, right])
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARYOPS:
            return self.apply(_UNARYOPS[type(node.op)], [self.build(node.operand)])
        if isinstance(node, ast.Compare) and all(type(o) in _CMPOPS for o in node.ops):
            return self.compare(node)
        if isinstance(node, ast.IfExp):
            parts = [self.build(node.test), self.build(node.body), self.build(node.orelse)]
            return self.apply(np.where, parts)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, (ast.List, ast.Tuple)):
            return self.literal(node)
        if isinstance(node, ast.Subscript):
            index = self.index(node.slice, node)
            return self.apply(operator.getitem, [self.build(node.value), _Const(index)])
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Compare)):
            ops = node.ops if isinstance(node, ast.Compare) else [node.op]
            raise self.fail(f"operator {'/'.join(type(o).__name__ for o in ops)} not allowed", node)
        what = _DESCRIPTIONS.get(type(node), f"construct {type(node).__name__}")
        raise self.fail(f"{what} not allowed", node)

    def name(self, node: ast.Name) -> Any:
        if node.id.startswith("_"):
            raise self.fail("names starting with '_' are not allowed", node)
        if node.id in MODULE_ALIASES:
            raise self.fail(f"module {node.id!r} may only prefix a function or constant", node)
        self.free.add(node.id)
        key = node.id
        return lambda env: env[key]

    def attribute(self, node: ast.Attribute) -> _Const:
        # The only attributes are module constants such as math.pi.
        if (isinstance(node.value, ast.Name) and node.value.id in MODULE_ALIASES
                and node.attr in ALLOWED_CONSTANTS):
            return _Const(ALLOWED_CONSTANTS[node.attr])
        raise self.fail("attribute access not allowed", node)

    @staticmethod
    def apply(fn: Callable[..., Any], parts: list[Any],
              kwargs: Mapping[str, Any] | None = None) -> Any:
        """Fold ``fn(*parts)`` if every part is a scalar constant, else make a closure."""
        values = [p.value if isinstance(p, _Const) else p for p in parts]
        if all(isinstance(p, _Const) for p in parts):
            folded = _fold(fn, values, kwargs)
            if folded is not None:
                return folded
        return _closure(fn, values, kwargs)

    def compare(self, node: ast.Compare) -> Any:
        operands = [self.build(n) for n in [node.left, *node.comparators]]
        ops = [_CMPOPS[type(o)] for o in node.ops]
        if len(ops) == 1:
            return self.apply(ops[0], operands)

        def chain(*vals: Any) -> Any:  # each operand evaluated once, combined elementwise
            result = ops[0](vals[0], vals[1])
            for i in range(1, len(ops)):
                result = np.logical_and(result, ops[i](vals[i], vals[i + 1]))
            return result

        return self.apply(chain, operands)

    def check_exponent(self, exponent: Any, node: ast.AST) -> None:
        if isinstance(exponent, _Const):
            with np.errstate(all="ignore"):
                size = np.abs(np.asarray(exponent.value, dtype=np.float64))
            if np.any(size > MAX_POWER_EXPONENT):
                raise self.fail(f"constant exponent above {MAX_POWER_EXPONENT} not allowed", node)

    def call(self, node: ast.Call) -> Any:
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                and func.value.id in MODULE_ALIASES and not func.attr.startswith("_"):
            fname = func.attr
        elif isinstance(func, ast.Name):
            fname = func.id
        else:
            raise self.fail("only functions of ALLOWED_FUNCTIONS may be called", node)
        if fname not in ALLOWED_FUNCTIONS:
            raise self.fail(f"call of {fname!r} not allowed (not in ALLOWED_FUNCTIONS)", node)
        lo, hi, static, keywords = _SIGNATURES.get(fname, (1, 1, set(), set()))
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None or kw.arg not in keywords:
                what = f"keyword argument {kw.arg or '**'!r} of {fname}()"
                raise self.fail(f"{what} not allowed", node)
            kwargs[kw.arg] = self.static(kw.value, node)
        if not lo <= len(node.args) <= hi:
            count = lo if lo == hi else f"{lo} to {hi}"
            raise self.fail(f"{fname}() takes {count} positional argument(s)", node)
        parts = [_Const(self.static(a, node)) if i in static else self.build(a)
                 for i, a in enumerate(node.args)]
        if fname == "reshape":
            dims = parts[1].value if isinstance(parts[1].value, tuple) else (parts[1].value,)
            if math.prod(d for d in dims if d is not None and d > 0) > MAX_ELEMENTS:
                raise self.fail(f"reshape to more than {MAX_ELEMENTS} elements", node)
        if fname in ("power", "pow"):
            self.check_exponent(parts[1], node)
        return self.apply(ALLOWED_FUNCTIONS[fname], parts, kwargs)

    def static(self, node: ast.AST, where: ast.AST, flat: bool = False) -> Any:
        """A constant int, bool, None or tuple of ints (axis, shape, decimals...)."""
        if isinstance(node, ast.Constant) and type(node.value) in (bool, int, type(None)):
            value = node.value
        elif (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
              and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int):
            value = -node.operand.value
        elif isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) <= 64 and not flat:
            return tuple(self.static(e, where, flat=True) for e in node.elts)
        else:
            raise self.fail("index/axis/shape arguments must be constant integers", where)
        if isinstance(value, int) and abs(value) >= 2**62:
            raise self.fail("integer argument too large", where)
        return value

    def index(self, node: ast.AST, where: ast.AST) -> Any:
        if isinstance(node, ast.Slice):
            parts = [None if p is None else self.static(p, where, flat=True)
                     for p in (node.lower, node.upper, node.step)]
            if parts[2] == 0:
                raise self.fail("slice step 0", where)
            return slice(*parts)
        if isinstance(node, ast.Tuple):
            return tuple(self.index(e, where) for e in node.elts)
        if isinstance(node, ast.List):  # x[[0, 2]] picks rows, as in numpy
            return [self.static(e, where, flat=True) for e in node.elts]
        if isinstance(node, ast.Constant) and node.value is Ellipsis:
            return Ellipsis
        return self.static(node, where, flat=True)

    def literal(self, node: ast.List | ast.Tuple) -> _Const:
        values = []
        for elt in node.elts:
            part = self.build(elt)
            if not isinstance(part, _Const):
                raise self.fail("list/tuple literals may hold only constants", node)
            values.append(part.value)
        try:
            array = np.array(values, dtype=np.float64)
        except (ValueError, TypeError):
            raise self.fail("ragged list/tuple literal", node) from None
        if array.size > MAX_LITERAL_ELEMENTS:
            raise self.fail(f"literal with more than {MAX_LITERAL_ELEMENTS} elements", node)
        return _Const(array)


class CompiledExpression:
    """An MDF expression compiled to closures; call it with the values of its names."""

    __slots__ = ("text", "free_names", "_fn")

    def __init__(self, text: str, free_names: frozenset[str], fn: Callable[[dict], Any]):
        self.text = text
        self.free_names = free_names
        self._fn = fn

    def __call__(self, **values: Any) -> np.ndarray:
        """Evaluate with ``values`` (name -> array/number); extra names are ignored."""
        return self.evaluate(values)

    def evaluate(self, values: Mapping[str, Any]) -> np.ndarray:
        """Evaluate with a mapping of values; raise ExecutionError if one is missing."""
        env = {}
        for name in self.free_names:
            try:
                value = np.asarray(values[name])
            except KeyError:
                missing = sorted(self.free_names - set(values))
                raise ExecutionError(
                    f"no value for {', '.join(map(repr, missing))} in expression {self.text!r}"
                ) from None
            if value.dtype.kind not in "biufc":  # object arrays would allow big ints
                raise ExecutionError(
                    f"value of {name!r} has non-numeric dtype {value.dtype} in {self.text!r}")
            env[name] = value
        try:
            with np.errstate(all="ignore"):
                return np.asarray(self._fn(env))
        except IRBridgeError:
            raise
        except Exception as exc:  # numpy shape/type errors, MemoryError, ...
            raise ExecutionError(
                f"evaluating {self.text!r} failed: {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"CompiledExpression({self.text!r})"


#: Expressions up to this long are parsed once per process (an MDF file repeats the same
#: short argument texts at every node); longer ones are parsed each time.  With at most
#: 1,024 remembered trees of at most 200 characters, the cache stays within a few MB
#: whatever a file holds.
_CACHED_TEXT_LENGTH = 200


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> ast.Expression:
    return ast.parse(text.strip(), mode="eval")


def parse_expression(text: str) -> ast.Expression:
    """``ast.parse(text.strip(), mode="eval")``, remembered for short texts.  The tree is
    shared: callers must not modify it.  Raises what ``ast.parse`` raises."""
    if len(text) <= _CACHED_TEXT_LENGTH:
        return _parse_cached(text)
    return ast.parse(text.strip(), mode="eval")


def compile_expression(text: str, names: Iterable[str] | None = None) -> CompiledExpression:
    """Compile an MDF expression string into a :class:`CompiledExpression`.

    ``names``, if given, are the only free names the expression may use; any other is
    reported at compile time. Raises :class:`UnsafeExpressionError` for anything outside
    the allow-list or the bounds described in the module docstring.
    """
    if not isinstance(text, str):
        raise UnsafeExpressionError(f"an expression must be a string, not {type(text).__name__}")
    compiler = _Compiler(text)
    if len(text) > MAX_TEXT_LENGTH:
        raise compiler.fail(f"text longer than {MAX_TEXT_LENGTH} characters")
    try:
        tree = parse_expression(text)
    except SyntaxError as exc:
        raise compiler.fail(f"syntax error ({exc.msg})") from None
    except (RecursionError, MemoryError, ValueError):  # the parser's own depth limits
        raise compiler.fail("expression too deeply nested or too complex to parse") from None
    compiler.check_size(tree)
    root = compiler.build(tree.body)
    free = frozenset(compiler.free)
    if names is not None:
        known = set(names)
        unknown = sorted(free - known)
        if unknown:
            raise UnsafeExpressionError(
                f"undefined name {unknown[0]!r} in expression {text!r}; known: "
                f"{', '.join(sorted(known)) or '(none)'}")
    if isinstance(root, _Const):
        value = root.value  # copied per call: callers may write into results
        fn: Callable[[dict], Any] = lambda env: np.array(value)
    else:
        fn = root
    return CompiledExpression(text, free, fn)
