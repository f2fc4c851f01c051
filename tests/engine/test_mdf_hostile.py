"""Hostile MDF files: each fails with one clear typed error, runs nothing, writes nothing.

Every expression that would act on the machine tries to create a *canary* file; the tests
check that it never appears, that ``eval``/``exec``/``os.system``/``subprocess`` are never
called while the file is read and compiled, and that nothing else is left in the directory.
The reference engine (which does ``eval`` file strings) is never run on these files.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import subprocess

import numpy as np
import pytest

import ir_bridge
from ir_bridge.cli import main as cli_main
from ir_bridge.engine.mdf_plan import compile_mdf
from ir_bridge.errors import InvalidModelError, UnsafeExpressionError, UnsupportedLayerError

CANARY = "CANARY"


def graph_doc(node: dict, extra_nodes: dict | None = None, edges: dict | None = None) -> dict:
    """``x`` (a (batch, 3) input) -> ``n`` (the node under test)."""
    nodes = {"x": {"input_ports": {"x": {"shape": [1, 3]}},
                   "output_ports": {"out": {"value": "x"}}},
             "n": {"input_ports": {"in0": {}}, **node}}
    nodes.update(extra_nodes or {})
    all_edges = {"e": {"sender": "x", "receiver": "n", "sender_port": "out",
                       "receiver_port": "in0"}}
    all_edges.update(edges or {})
    return {"evil": {"format": "ModECI MDF v0.4",
                     "graphs": {"g": {"nodes": nodes, "edges": all_edges}}}}


def param(expr: str) -> dict:
    """Node body whose output is the parameter expression ``expr``."""
    return {"parameters": {"p": {"value": expr}}, "output_ports": {"out": {"value": "p"}}}


def function(expr: str) -> dict:
    return {"functions": {"f": {"value": expr}}, "output_ports": {"out": {"value": "f"}}}


def output(expr: str) -> dict:
    return {"output_ports": {"out": {"value": expr}}}


def touch(canary: str) -> str:
    return f"__import__('os').system('touch {canary}')"


# name -> (document builder(canary path), expected error type, message fragment)
CASES = {
    "import_os_system": (lambda c: graph_doc(param(touch(c))), UnsafeExpressionError,
                         "may be called"),
    "attribute_walk": (lambda c: graph_doc(function(
        "().__class__.__bases__[0].__subclasses__()")), UnsafeExpressionError, "attribute"),
    "attribute_on_input": (lambda c: graph_doc(output("in0.__class__")),
                           UnsafeExpressionError, "attribute"),
    "lambda": (lambda c: graph_doc(param(f"(lambda: {touch(c)})()")), UnsafeExpressionError,
               "lambda"),
    "comprehension": (lambda c: graph_doc(function("[v for v in in0]")),
                      UnsafeExpressionError, "comprehension"),
    "generator": (lambda c: graph_doc(function("sum(v for v in in0)")),
                  UnsafeExpressionError, "generator"),
    "power_tower": (lambda c: graph_doc(param("9**9**9**9")), UnsafeExpressionError,
                    "exponent"),
    "power_call": (lambda c: graph_doc(param("power(in0, 10 ** 6)")), UnsafeExpressionError,
                   "exponent"),
    "huge_literal": (lambda c: graph_doc(param("[" + "1.0," * 20_000 + "1.0]")),
                     UnsafeExpressionError, "more than 20000 syntax nodes"),
    "large_literal": (lambda c: graph_doc(param("[" + "1," * 12_000 + "1]")),
                      UnsafeExpressionError, "literal with more than"),
    "huge_text": (lambda c: graph_doc(param("in0" + " + in0" * 30_000)),
                  UnsafeExpressionError, "text longer than"),
    "deep_parentheses": (lambda c: graph_doc(param("(" * 3000 + "in0" + ")" * 3000)),
                         UnsafeExpressionError, "nest"),
    "deep_unary": (lambda c: graph_doc(param("-" * 5000 + "in0")), UnsafeExpressionError,
                   "nest"),
    "deep_calls": (lambda c: graph_doc(param("exp(" * 500 + "in0" + ")" * 500)),
                   UnsafeExpressionError, "nest"),
    "huge_int_literal": (lambda c: graph_doc(param("1" * 5000)), UnsafeExpressionError,
                         "expression"),
    "huge_reshape": (lambda c: graph_doc(param("reshape(in0, (100000, 100000))")),
                     UnsafeExpressionError, "reshape"),
    "huge_constant_fold": (lambda c: graph_doc({
        "parameters": {"a": {"value": [1.0] * 10_000}, "b": {"value": [2.0] * 10_000},
                       "p": {"value": "reshape(a, (10000, 1)) * b + in0[0, 0]"},
                       "q": {"value": "reshape(a, (10000, 1)) * b"}},
        "output_ports": {"out": {"value": "p"}}}), InvalidModelError, "elements"),
    "undefined_name": (lambda c: graph_doc(param("in0 + secret_key")), UnsafeExpressionError,
                       "undefined name 'secret_key'"),
    "builtins": (lambda c: graph_doc(output("__builtins__")), UnsafeExpressionError,
                 "names starting with '_'"),
    "string_literal": (lambda c: graph_doc(param("'rm -rf /'")), UnsafeExpressionError,
                       "string literal"),
    "open_call": (lambda c: graph_doc(param(f"open('{c}', 'w')")), UnsafeExpressionError,
                  "call of 'open'"),
    "eval_call": (lambda c: graph_doc(param(f"eval(\"{touch(c)}\")")), UnsafeExpressionError,
                  "call of 'eval'"),
    "numpy_load": (lambda c: graph_doc(param(f"numpy.load('{c}')")), UnsafeExpressionError,
                   "call of 'load'"),
    "computed_index": (lambda c: graph_doc(param("in0[in0]")), UnsafeExpressionError,
                       "constant"),
    "walrus": (lambda c: graph_doc(param("(y := in0)")), UnsafeExpressionError, "walrus"),
    "onnx_argument": (lambda c: graph_doc({
        "functions": {"f": {"function": {"onnx::Relu": {"X": touch(c)}}}},
        "output_ports": {"out": {"value": "f"}}}), UnsafeExpressionError, "may be called"),
    "standard_function_argument": (lambda c: graph_doc({
        "functions": {"f": {"function": {"linear": {"variable0": "in0", "slope": touch(c),
                                                    "intercept": 0}}}},
        "output_ports": {"out": {"value": "f"}}}), UnsafeExpressionError, "may be called"),
    "function_named_exec": (lambda c: graph_doc({
        "functions": {"f": {"function": "exec", "args": {"source": touch(c)}}},
        "output_ports": {"out": {"value": "f"}}}), UnsupportedLayerError,
        "unknown function 'exec'"),
    "function_named_os_system": (lambda c: graph_doc({
        "functions": {"f": {"function": "os.system", "args": {"command": f"touch {c}"}}},
        "output_ports": {"out": {"value": "f"}}}), UnsupportedLayerError, "unknown function"),
    "edge_weight_expression": (lambda c: graph_doc(output("in0"), edges={
        "e": {"sender": "x", "receiver": "n", "sender_port": "out", "receiver_port": "in0",
              "parameters": {"weight": touch(c)}}}), InvalidModelError, "not a numeric array"),
    "default_value_expression": (lambda c: graph_doc({
        "input_ports": {"in0": {}, "extra": {"default_value": touch(c)}},
        "output_ports": {"out": {"value": "in0 + extra"}}}), UnsupportedLayerError,
        "default_value"),
    "cycle_between_nodes": (lambda c: graph_doc(output("in0 + in1") | {
        "input_ports": {"in0": {}, "in1": {}}},
        extra_nodes={"m": {"input_ports": {"in0": {}}, "output_ports": {"out": {"value": "in0"}}}},
        edges={"e2": {"sender": "n", "receiver": "m", "sender_port": "out",
                      "receiver_port": "in0"},
               "e3": {"sender": "m", "receiver": "n", "sender_port": "out",
                      "receiver_port": "in1"}}), InvalidModelError, "cycle (n -> m -> n)"),
    "cycle_inside_a_node": (lambda c: graph_doc({
        "parameters": {"p": {"value": "q + in0"}, "q": {"value": "p * 2"}},
        "output_ports": {"out": {"value": "p"}}}), InvalidModelError, "cycle (p -> q -> p)"),
    "self_reference": (lambda c: graph_doc(param("p + in0")), UnsupportedLayerError,
                       "reads itself"),
    "ragged_weights": (lambda c: graph_doc({
        "parameters": {"w": {"value": [[1.0, 2.0], [3.0]]}},
        "output_ports": {"out": {"value": "in0 * w"}}}), InvalidModelError, "numeric array"),
    "string_weights": (lambda c: graph_doc({
        "parameters": {"w": {"value": [touch(c), 1.0]}},
        "output_ports": {"out": {"value": "in0 * w"}}}), InvalidModelError, "numeric array"),
    "huge_input_shape": (lambda c: {"evil": {"graphs": {"g": {"nodes": {"x": {
        "input_ports": {"x": {"shape": [1, 100_000, 100_000]}},
        "output_ports": {"out": {"value": "x"}}}}}}}}, InvalidModelError,
        "larger than"),
    "not_a_model": (lambda c: [touch(c)], InvalidModelError, "not an MDF model"),
}


def _files_in(path):
    return sorted(p.name for p in path.iterdir())


@contextlib.contextmanager
def nothing_runs():
    """Fail loudly if anything tries to run code or commands while a file is read
    (``ast.parse`` needs ``compile``, so that one stays)."""
    calls = []

    def trap(name):
        def called(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called")
        return called

    targets = [(builtins, "eval"), (builtins, "exec"), (os, "system"), (os, "popen"),
               (subprocess, "Popen")]
    saved = [getattr(mod, name) for mod, name in targets]
    for mod, name in targets:
        setattr(mod, name, trap(f"{mod.__name__}.{name}"))
    try:
        yield calls
    finally:
        for (mod, name), value in zip(targets, saved):
            setattr(mod, name, value)
        # Also when the expected error is on its way out: a trapped call that the code
        # swallowed must still fail the test.
        assert not calls, f"{calls} ran while reading a hostile file"


@pytest.fixture(scope="module", autouse=True)
def warm_imports(tmp_path_factory):
    """Import everything reading a file needs first: importing runs module code (through
    ``exec``); reading and compiling a file must not."""
    ir_bridge.registry.frontends()
    ir_bridge.registry.backends()
    ir_bridge.registry.passes()
    root = tmp_path_factory.mktemp("benign")
    doc = graph_doc(output("in0 * 2"))
    (root / "ok.json").write_text(json.dumps(doc))
    (root / "ok.yaml").write_text(json.dumps(doc))  # JSON is YAML
    for name in ("ok.json", "ok.yaml"):
        compile_mdf(root / name).run([np.ones((1, 3), "float32")])
    # networkx builds its dispatch wrappers (with exec) on a function's first call.
    import networkx as nx

    nx.find_cycle(nx.DiGraph([(0, 1), (1, 0)]))


def _check(load, path, tmp_path, error, match):
    before = _files_in(tmp_path)
    with pytest.raises(error) as info, nothing_runs():
        load(path)
    assert type(info.value) is error
    assert match in str(info.value)
    assert not (tmp_path / CANARY).exists()
    assert _files_in(tmp_path) == before


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_json(name, tmp_path):
    build, error, match = CASES[name]
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(build(str(tmp_path / CANARY))))
    _check(ir_bridge.load, path, tmp_path, error, match)
    _check(compile_mdf, path, tmp_path, error, match)


@pytest.mark.parametrize("text,match", [
    ('{"evil": {"graphs": {"g": {"nodes": {"x": {"input_ports"', "invalid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"evil": 1e400000}', "must be a dict"),
    ("", "invalid JSON"),
])
def test_malformed_json(text, match, tmp_path):
    path = tmp_path / "hostile.json"
    path.write_text(text)
    _check(ir_bridge.load, path, tmp_path, InvalidModelError, match)


YAML_CASES = {
    "python_tag": ("evil: !!python/object/apply:os.system ['touch {c}']\n", "unsafe YAML"),
    "python_name": ("evil: !!python/name:os.system\n", "unsafe YAML"),
    "alias_bomb": ("a: &a [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]\n"
                   + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, "
                             f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                             f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                             for i in range(8)), "aliases are not allowed"),
    "truncated": ("evil:\n  graphs:\n    g: {nodes: [", "invalid or unsafe YAML"),
    "deep": ("[" * 50_000 + "]" * 50_000, "YAML"),
}


@pytest.mark.parametrize("name", sorted(YAML_CASES))
def test_hostile_yaml(name, tmp_path):
    text, match = YAML_CASES[name]
    path = tmp_path / "hostile.yaml"
    path.write_text(text.replace("{c}", str(tmp_path / CANARY)))
    _check(ir_bridge.load, path, tmp_path, InvalidModelError, match)


def test_not_utf8_and_too_big(tmp_path):
    from ir_bridge.frontends.mdf import load

    path = tmp_path / "hostile.json"
    path.write_bytes(b'{"evil": "\xff\xfe"}')
    _check(ir_bridge.load, path, tmp_path, InvalidModelError, "not UTF-8")
    path.write_text(json.dumps(graph_doc(output("in0"))))
    _check(lambda p: load(p, max_bytes=100), path, tmp_path, InvalidModelError,
           "allowed (pass max_bytes=")


def test_run_time_errors_name_the_node_and_stay_typed(tmp_path):
    # Shapes that only clash at run time: the error names the node, nothing else happens.
    doc = graph_doc({"parameters": {"w": {"value": [1.0, 2.0, 3.0]}},
                     "functions": {"f": {"value": "reshape(in0, (2, 3)) * w"}},
                     "output_ports": {"out": {"value": "f"}}})
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(doc))
    plan = compile_mdf(path)
    np.testing.assert_array_equal(plan.run([np.ones((2, 3), "float32")])[0],
                                  [[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ir_bridge.ExecutionError, match="node 'n'"):
        plan.run([np.ones((5, 3), "float32")])


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("name", ["import_os_system", "cycle_between_nodes", "huge_literal"])
def test_cli_refuses_hostile_files_in_one_line_and_writes_nothing(name, tmp_path, capsys):
    build, error, match = CASES[name]
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(build(str(tmp_path / CANARY))))
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 3), "float32"))
    before = _files_in(tmp_path)
    assert cli_main(["run", str(path), "--input", str(x), "-o", str(tmp_path / "y.npy")]) == 2
    assert cli_main(["convert", str(path), "--to", "mdf", "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("ir-bridge: error: ") for line in err)
    assert match in err[0]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / CANARY).exists()
    assert _files_in(tmp_path) == before
