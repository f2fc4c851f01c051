"""Tests of ir_bridge.engine.expr: numbers, hostile input, bounds and a property test."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ir_bridge.engine import expr
from ir_bridge.engine.expr import ALLOWED_FUNCTIONS, CompiledExpression, compile_expression, erf
from ir_bridge.errors import ExecutionError, UnsafeExpressionError

RNG = np.random.default_rng(0)
VALUES = {
    "x": RNG.uniform(-2, 2, (4, 5)),
    "y": RNG.uniform(-2, 2, (4, 5)),
    "W": RNG.normal(size=(5, 3)),
    "b": RNG.normal(size=3),
    "v": RNG.normal(size=5),
    "A": 1.5,
    "t": np.float64(0.25),
}
x, y, W, b, v = (VALUES[k] for k in "xyWbv")

NUMERIC_CASES = [
    ("(x @ W) + b", lambda: x @ W + b),
    ("x * (x > 0)", lambda: x * (x > 0)),
    ("1/(1 + exp(-x))", lambda: 1 / (1 + np.exp(-x))),
    ("A * sin(3 * t) + x", lambda: 1.5 * np.sin(3 * 0.25) + x),
    ("maximum(x, 0)", lambda: np.maximum(x, 0)),
    ("where(x > 0, x, 0.01 * x)", lambda: np.where(x > 0, x, 0.01 * x)),
    ("clip(x, -0.5, 0.5)", lambda: np.clip(x, -0.5, 0.5)),
    ("tanh(x) * sqrt(abs(y))", lambda: np.tanh(x) * np.sqrt(np.abs(y))),
    ("numpy.exp(x) + np.log(abs(y) + 1)", lambda: np.exp(x) + np.log(np.abs(y) + 1)),
    ("math.exp(x) - math.sin(y) * math.pi", lambda: np.exp(x) - np.sin(y) * np.pi),
    ("-1 < x < 1", lambda: (x > -1) & (x < 1)),
    ("0 <= x <= y < 2", lambda: (x >= 0) & (x <= y) & (y < 2)),
    ("(x > y) * x + (x <= y) * y", lambda: np.maximum(x, y)),
    ("x if x > y else y", lambda: np.maximum(x, y)),
    ("x ** 2 + y ** 3 - x ** -1", lambda: x**2 + y**3 - x**-1.0),
    ("x // 0.3 + x % 0.3", lambda: x // 0.3 + x % 0.3),
    ("matmul(x, W) - dot(x, W)", lambda: np.zeros((4, 3))),
    ("dot(v, v) + sum(x, axis=1)", lambda: v @ v + x.sum(axis=1)),
    ("mean(x, 0) + max(x) - min(x, axis=0, keepdims=True)",
     lambda: x.mean(0) + x.max() - x.min(axis=0, keepdims=True)),
    ("transpose(x) @ y", lambda: x.T @ y),
    ("reshape(x, (5, 4))[0] + reshape(x, (-1,))[-4:]", lambda: x.reshape(5, 4)[0] + x.ravel()[-4:]),
    ("x[0, 1:3] * x[-1, ::2][:2] + x[None, 2, ..., 0]",
     lambda: x[0, 1:3] * x[-1, ::2][:2] + x[None, 2, ..., 0]),
    ("x[[0, 2]] - x[(0, 2)] + x[:2, [1]]", lambda: x[[0, 2]] - x[0, 2] + x[:2, [1]]),
    ("exp2(x) + log2(abs(x) + 1) + log10(abs(y) + 1)",
     lambda: np.exp2(x) + np.log2(np.abs(x) + 1) + np.log10(np.abs(y) + 1)),
    ("floor(x * 3) + ceil(y * 3) + round(x, 2) + sign(y)",
     lambda: np.floor(x * 3) + np.ceil(y * 3) + np.round(x, 2) + np.sign(y)),
    ("arctan(x) + tan(x) + sinh(x) + cosh(y) + arcsin(x / 4) + arccos(y / 4)",
     lambda: np.arctan(x) + np.tan(x) + np.sinh(x) + np.cosh(y)
     + np.arcsin(x / 4) + np.arccos(y / 4)),
    ("power(abs(x), 1.5) + pow(y, 2) + np.e ** 2", lambda: np.abs(x) ** 1.5 + y**2 + np.e**2),
    ("x * [1, 2, 3, 4, 5] + (1, 2, 3, 4, 5)", lambda: x * np.arange(1, 6) + np.arange(1, 6)),
    ("maximum(minimum(exp(tanh(x)), 2), sqrt(abs(y)))",
     lambda: np.maximum(np.minimum(np.exp(np.tanh(x)), 2), np.sqrt(np.abs(y)))),
    ("2 * math.pi * (1 / (1 + 1)) * x - 10 ** 2", lambda: np.pi * x - 100),
    ("erf(x / 2) + x != y", lambda: (np.vectorize(math.erf)(x / 2) + x) != y),
]


@pytest.mark.parametrize("text, reference", NUMERIC_CASES, ids=[c[0] for c in NUMERIC_CASES])
def test_numbers_match_numpy(text, reference):
    compiled = compile_expression(text, names=VALUES)
    out = compiled(**VALUES)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, reference(), rtol=1e-6, atol=1e-12)


def test_compiled_expression_attributes():
    c = compile_expression("(x @ W) + b * exp(x2)")
    assert isinstance(c, CompiledExpression)
    assert c.text == "(x @ W) + b * exp(x2)"
    assert c.free_names == frozenset({"x", "W", "b", "x2"})  # functions are not free names
    assert compile_expression("math.pi * 2").free_names == frozenset()


def test_constant_folding_and_weak_scalars():
    # Folded constants stay Python floats, so float32 inputs are not upcast (NEP 50).
    c = compile_expression("x * (2 ** 3 + math.pi * 0)")
    # The root closure holds the folded 8.0 itself, not a sub-closure computing it.
    assert 8.0 in [cell.cell_contents for cell in c._fn.__closure__]
    out = c(x=np.ones(3, np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 8.0)
    whole = compile_expression("1/(1 + 1) + exp(0) + (3 > 2)")
    assert whole() == 2.5
    lst = compile_expression("[1, 2]")
    lst()[0] = 99  # a constant result is a fresh array per call
    assert lst()[0] == 1


def test_every_unary_function_with_each_prefix():
    unary = [n for n in ALLOWED_FUNCTIONS if n not in expr._SIGNATURES]
    assert len(unary) >= 20
    arg = np.linspace(-0.9, 0.9, 7)
    for name in unary:
        with np.errstate(all="ignore"):  # log/sqrt of negatives: nan, as in the engine
            expected = ALLOWED_FUNCTIONS[name](arg)
        for prefix in ("", "np.", "numpy.", "math."):
            got = compile_expression(f"{prefix}{name}(x)")(x=arg)
            np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True, err_msg=name)


def test_erf_accuracy():
    grid = np.linspace(-6, 6, 120_001)
    exact = np.array([math.erf(g) for g in grid])
    got = erf(grid)
    assert np.max(np.abs(got - exact)) < 1e-6
    nonzero = exact != 0
    assert np.max(np.abs((got - exact)[nonzero] / exact[nonzero])) < 2e-7
    assert erf(np.float32([0.5])).dtype == np.float32
    assert list(erf(np.array([np.inf, -np.inf]))) == [1.0, -1.0]
    assert np.isnan(erf(np.nan))
    assert compile_expression("erf(x)")(x=0.3) == pytest.approx(math.erf(0.3), rel=1e-12)


def test_names_check_at_compile_time():
    message = r"undefined name 'y' in expression 'x \+ y'; known: x"
    with pytest.raises(UnsafeExpressionError, match=message):
        compile_expression("x + y", names=["x"])
    compile_expression("exp(x) + maximum(x, 1)", names={"x"})


def test_execution_errors():
    c = compile_expression("x @ W + y")
    with pytest.raises(ExecutionError, match="no value for 'W', 'y'"):
        c(x=x)
    with pytest.raises(ExecutionError, match="non-numeric"):
        c(x="abc", W=W, y=1.0)
    with pytest.raises(ExecutionError, match="non-numeric"):
        compile_expression("x ** 2")(x=10**40)  # would be a Python big int
    with pytest.raises(ExecutionError, match="matmul"):
        c(x=x, W=x, y=0.0)  # shape mismatch
    assert c(x=x, W=W, y=0.0, unused=object()).shape == (4, 3)  # extra values ignored


def test_float_errors_do_not_raise_even_under_seterr_raise():
    with np.errstate(all="raise"):
        c = compile_expression("x / y + exp(1000 * x)")
        out = c(x=np.array([1.0, 0.0]), y=np.array([0.0, 0.0]))
    assert np.isinf(out[0]) and np.isnan(out[1])
    # A huge run-time exponent is float arithmetic: inf, not a hang.
    assert np.isinf(compile_expression("x ** y")(x=9.0, y=1e300))


def test_module_never_uses_eval_exec_compile_or_pickle():
    source = Path(expr.__file__).read_text()
    called = {n.func.id for n in ast.walk(ast.parse(source))
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__", "getattr", "open"}
    assert not re.search(r"\b(eval|exec|compile)\(|pickle|marshal|importlib", source)


HOSTILE = [
    "__import__('os').system('touch CANARY')",
    "().__class__.__bases__[0].__subclasses__()",
    "x.__class__",
    "x.T",
    "(lambda: 1)()",
    "[i for i in x]",
    "(i for i in x)",
    "{1: 2}",
    "{1, 2}",
    '"abc"',
    "b'abc'",
    'f"{x}"',
    "open('CANARY', 'w')",
    "getattr(x, 'shape')",
    "eval('1')",
    "exec('1')",
    "globals()",
    "type(x)",
    "x[y]",
    "x[1.5]",
    "x[::0]",
    "x[(1, 2):3]",
    "x[[y]]",
    "9**9**9**9",
    "x ** 100",
    "power(x, -1000)",
    "(x := 1)",
    "*x",
    "exp(*x)",
    "exp(**x)",
    "exp(x, out=x)",
    "not x",
    "~x",
    "x and y",
    "x | y",
    "x in y",
    "1j",
    "_secret",
    "np.__dict__",
    "np",
    "numpy.load('f')",
    "np.linalg.inv(x)",
    "math.exp.__call__(x)",
    "x.sum()",
    "sum(x, axis=y)",
    "exp()",
    "maximum(x)",
    "reshape(x, (100000, 100000))",
    "reshape(x, ((1, 2),))",
    "[x, 1]",
    "[[1, 2], [3]]",
    "x\x00",
    "x +",
    "(" * 10_000 + "x" + ")" * 10_000,
    "-" * 9_000 + "x",
    "+".join(["x"] * 150),  # deeper than MAX_DEPTH
    "+".join(["x"] * 40_000),  # parser's own recursion limit
    "x+" * 100_000 + "x",  # 200,001 characters
    "[" + ",".join(["1"] * 50_000) + "]",
    "[" + ",".join(["1"] * 12_000) + "]",  # over MAX_LITERAL_ELEMENTS, under the text limit
    "[" + ",".join(["1"] * 25_000) + "]",  # over MAX_NODES
]


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(t[:40]) + f"/{len(t)}" for t in HOSTILE])
def test_hostile_expressions_are_rejected(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafeExpressionError) as info:
        compile_expression(text, names=["x"])(x=np.ones(3))
    assert "expression" in str(info.value)
    assert not (tmp_path / "CANARY").exists()


def test_rejection_message_quotes_construct_and_expression():
    message = r"attribute access not allowed: 'x.__class__' in expression '1 \+ x.__class__'"
    with pytest.raises(UnsafeExpressionError, match=message):
        compile_expression("1 + x.__class__")
    with pytest.raises(UnsafeExpressionError, match="'open'"):
        compile_expression("open('/etc/passwd')")


def test_non_string_rejected():
    with pytest.raises(UnsafeExpressionError):
        compile_expression(b"x")  # type: ignore[arg-type]


# --- property test: random arithmetic trees vs a direct numpy evaluation ---------------

_BIN = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}
_CALLS = {"maximum": np.maximum, "minimum": np.minimum}
_LEAVES = st.sampled_from(["x", "y"]) | st.integers(-3, 5) | st.sampled_from([0.5, 1.25, 2.0, 1e-3])
_TREES = st.recursive(
    _LEAVES,
    lambda sub: st.tuples(st.sampled_from(sorted(_BIN) + sorted(_CALLS)), sub, sub)
    | st.tuples(st.just("neg"), sub),
    max_leaves=25,
)
_X = np.array([0.0, 1.0, -2.5, 3.25, 1e-3, -7.0])
_Y = np.array([0.0, -1.0, 2.0, 3.25, 4.0, 0.5])


def _render(tree) -> str:
    if isinstance(tree, str):
        return tree
    if isinstance(tree, (int, float)):
        return f"({tree!r})" if tree < 0 else repr(tree)
    if tree[0] == "neg":
        return f"(-{_render(tree[1])})"
    if tree[0] in _CALLS:
        return f"{tree[0]}({_render(tree[1])}, {_render(tree[2])})"
    return f"({_render(tree[1])} {tree[0]} {_render(tree[2])})"


def _direct(tree):
    if isinstance(tree, str):
        return {"x": _X, "y": _Y}[tree]
    if isinstance(tree, (int, float)):
        return np.float64(tree)
    if tree[0] == "neg":
        return -_direct(tree[1])
    fn = _BIN.get(tree[0]) or _CALLS[tree[0]]
    return fn(_direct(tree[1]), _direct(tree[2]))


@settings(max_examples=200, deadline=None)
@given(_TREES)
def test_random_arithmetic_trees_match_numpy(tree):
    text = _render(tree)
    with np.errstate(all="ignore"):
        expected = np.broadcast_to(_direct(tree), _X.shape)
    got = np.broadcast_to(compile_expression(text, names=["x", "y"])(x=_X, y=_Y), _X.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True, err_msg=text)


def test_parsed_trees_are_remembered_but_never_changed_by_readers():
    """``parse_expression`` shares trees between callers (an MDF file repeats the same short
    argument texts), so callers copy before rewriting (the MDF reader's tuple rewrite is
    checked in tests/frontends/test_mdf.py::test_tuple_outputs_inside_larger_expressions)."""
    import ast

    from ir_bridge.engine.expr import parse_expression

    text = "a[0] + b"
    before = ast.dump(parse_expression(text))
    assert parse_expression(text) is parse_expression(text)
    long_text = " + ".join(["a"] * 100)
    assert parse_expression(long_text) is not parse_expression(long_text)  # not cached
    assert ast.dump(parse_expression(text)) == before
