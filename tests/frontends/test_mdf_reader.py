"""The MDF JSON reader reads long numeric array literals straight into numpy, and must read
every file exactly as ``json.loads`` did: same values bit for bit, same errors.

``ARRAY_LITERAL_MIN_CHARS`` is lowered to 1 here so that every literal takes the fast path
(files ir_bridge writes for real models take it on their own: their weight arrays are long).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import ir_bridge
import ir_bridge.frontends.mdf as frontend
from ir_bridge.engine.mdf_plan import compile_mdf
from ir_bridge.errors import InvalidModelError
from ir_bridge.frontends.mdf import read_document


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(frontend, "ARRAY_LITERAL_MIN_CHARS", 1)


def doc_text(value: str, dtype: str | None = None, notes: str = "plain") -> str:
    """A one-node MDF file (JSON text) whose parameter ``w`` is ``value`` (JSON text)."""
    meta = f', "metadata": {{"dtype": "{dtype}"}}' if dtype else ""
    return ('{"m": {"format": "ModECI MDF v0.4", "graphs": {"g": {"nodes": {\n'
            ' "x": {"input_ports": {"x": {"shape": [1, 2]}}, "output_ports": {"out": {"value": '
            '"x"}}},\n'
            f' "n": {{"notes": {json.dumps(notes)}, "input_ports": {{"in0": {{}}}}, '
            f'"parameters": {{"w": {{"value": {value}{meta}}}}}, '
            '"output_ports": {"out": {"value": "in0"}, "weights": {"value": "w"}}}},\n'
            ' "edges": {"e": {"sender": "x", "receiver": "n", "sender_port": "out", '
            '"receiver_port": "in0"}}}}}}')


def _weights(tmp_path, text: str, name="m.json"):
    path = tmp_path / name
    path.write_text(text)
    graph = ir_bridge.load(path)
    return next(n.params["value"] for n in graph if n.op == "Constant")


def _outcome(tmp_path, text, monkeypatch, threshold):
    monkeypatch.setattr(frontend, "ARRAY_LITERAL_MIN_CHARS", threshold)
    try:
        return "ok", _weights(tmp_path, text)
    except InvalidModelError as exc:
        return "error", str(exc)


LITERALS = [
    # (literal, read straight into numpy?)
    ("[[1.5, -2.5e-3], [3E+2, -0.0]]", True),
    ("[[[1e-45]], [[3.4028235e38]], [[-1.17549435e-38]]]", True),
    ("[0, 1.5, -0, 2]", True),  # ints among floats; "-0" is the int 0, so +0.0
    ("[NaN, Infinity, -Infinity, 1.0]", True),
    ("[[1.0,2.0],\n  [3.0,4.0]\n ]", True),
    ("[ [ 1.25 , 2.5 ] , [ 3.75 , 5.0 ] ]", True),
    ("[1e400, -1e400, 1e-400]", True),
    ("[[[[0.1]], [[0.2]]], [[[0.3]], [[0.4]]]]", True),
    ("[0.1, 123456789012345678]", False),  # a 16+ digit int: json's own conversion
    ("[1, 2, 3]", False),  # all ints: lists of ints, as json makes them
    ("[[1.5, 2.5], [3.5]]", False),  # ragged: the same error as before
    ("[[1.5, 2.5], 3.5]", False),
    ("[1.5, [2.5]]", False),
    ("[[], []]", False),
    ("[[1.5], [2.5]", False),  # truncated: invalid JSON
    ("[1.5,, 2.5]", False),
    ("[1.5, 2.5,]", False),
    ("[01.5]", False),
    ("[1.5 2.5]", False),
    ("[.5, 1.]", False),
    ("[+1.5]", False),
    ("[nan, inf]", False),
    ("[1.5e, 2]", False),
    ("[-, 1.0]", False),
]


@pytest.mark.parametrize("literal,read_fast", LITERALS, ids=[x[0] for x in LITERALS])
def test_literals_read_exactly_as_json_loads_reads_them(tmp_path, monkeypatch, literal,
                                                        read_fast):
    text = doc_text(literal)
    before = _outcome(tmp_path, text, monkeypatch, 1 << 60)  # json.loads alone
    after = _outcome(tmp_path, text, monkeypatch, 1)
    assert before[0] == after[0], (before, after)
    if before[0] == "error":
        assert after[1] == before[1]  # the same message, positions included
    else:
        assert after[1].dtype == before[1].dtype == np.float32
        assert after[1].shape == before[1].shape
        assert np.array_equal(after[1].view(np.uint32), before[1].view(np.uint32))
    if before[0] == "ok":
        doc, _ = read_document(tmp_path / "m.json")
        value = doc["m"]["graphs"]["g"]["nodes"]["n"]["parameters"]["w"]["value"]
        assert isinstance(value, np.ndarray) == read_fast


@pytest.mark.parametrize("dtype", ["float16", "float64", "int32", "int64", "uint8", "bool"])
@pytest.mark.parametrize("literal", ["[[1.5, -2.7], [3.2, 250.9]]", "[1.0, NaN]",
                                     "[0.5, 1e300]", "[1.5, 3000000000]", "[0.5, -1]"])
def test_metadata_dtypes_convert_as_from_lists(tmp_path, monkeypatch, literal, dtype):
    text = doc_text(literal, dtype=dtype)
    with np.errstate(all="ignore"):
        before = _outcome(tmp_path, text, monkeypatch, 1 << 60)
        after = _outcome(tmp_path, text, monkeypatch, 1)
    assert before[0] == after[0]
    if before[0] == "error":
        assert after[1] == before[1]
    else:
        assert after[1].dtype == before[1].dtype
        assert np.array_equal(after[1], before[1], equal_nan=True)


def test_brackets_inside_strings_are_left_alone(tmp_path, fast):
    notes = 'see [[1.5, 2.5], [3.5, 4.5]] and "[0.1, 0.2]" \\ [9.5,'
    path = tmp_path / "m.json"
    path.write_text(doc_text("[[0.5, 1.5]]", notes=notes))
    doc, _ = read_document(path)
    node = doc["m"]["graphs"]["g"]["nodes"]["n"]
    assert node["notes"] == notes
    assert isinstance(node["parameters"]["w"]["value"], np.ndarray)
    # An expression holding a list literal is an expression, not an array.
    expr = "in0 * [1.5, 2.5]"
    path.write_text(doc_text(json.dumps(expr)))
    doc, _ = read_document(path)
    assert doc["m"]["graphs"]["g"]["nodes"]["n"]["parameters"]["w"]["value"] == expr


def test_numbers_outside_value_fields_stay_lists(tmp_path, fast):
    """Only where MDF holds values (parameters, arguments, port values, edge weights) do
    literals become arrays: a shape or metadata list is what json.loads makes of it."""
    doc = json.loads(doc_text("[0.5, 1.5]"))
    graph = doc["m"]["graphs"]["g"]
    graph["metadata"] = {"scales": [0.25, 0.5, 1], "inputs": ["x.x"]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    got, _ = read_document(path)
    assert got["m"]["graphs"]["g"]["metadata"]["scales"] == [0.25, 0.5, 1]
    assert type(got["m"]["graphs"]["g"]["metadata"]["scales"][2]) is int
    # A long list of floats as a shape: the same error as without the fast path.
    graph["nodes"]["x"]["input_ports"]["x"]["shape"] = [1.5] * 3000
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidModelError, match="must hold non-negative ints"):
        ir_bridge.load(path)


def _errors_slow_and_fast(path, monkeypatch) -> list[str]:
    """The InvalidModelError messages of loading ``path`` without and with the fast array
    path (every literal long enough for it)."""
    messages = []
    for threshold in (1 << 60, 1):
        monkeypatch.setattr(frontend, "ARRAY_LITERAL_MIN_CHARS", threshold)
        with pytest.raises(InvalidModelError) as info:
            ir_bridge.load(path)
        messages.append(str(info.value))
    return messages


@pytest.mark.parametrize("text", [
    '{"a": [1.5, 2.5], "b": [1.5, 2.5] "c": 1}',
    '{[1.5, 2.5]: 1}',
    '[[1.5, 2.5], "x"] trailing',
    '{"a": "unterminated [1.5, 2.5]',
    '{"a": [1.5, 2.5]}' + " " * 100 + "}",
])
def test_invalid_json_reports_the_files_own_position(tmp_path, monkeypatch, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    messages = _errors_slow_and_fast(path, monkeypatch)
    assert messages[0] == messages[1]
    assert "invalid JSON at line" in messages[0]


def _random_literal(rng: random.Random, depth: int) -> str:
    tokens = ["0", "-0", "1", "-1", "12", "01", "1.5", "-1.5", "1.", ".5", "1e5", "1E+5",
              "1e-05", "-0.0", "NaN", "Infinity", "-Infinity", "nan", "+1", "1e", "--1",
              "1.2.3", "123456789012345678", "3.4028235e38", "1e400", "0e5", ""]
    if depth == 0:
        return rng.choice(tokens[4:] if rng.random() < 0.1 else
                          ["1.5", "-1.5", "1e-05", "-0.0", "0.1", "1", "NaN", "2.5e3"])
    n = rng.randint(1, 3)
    inner = [_random_literal(rng, depth - 1 if rng.random() < 0.95 else max(depth - 2, 0))
             for _ in range(n)]
    sep = rng.choice([",", ",", ", ", ",\n "])
    return "[" + sep.join(inner) + "]"


def test_random_documents_read_as_json_loads_reads_them(monkeypatch):
    """Random (often broken) documents: the same values, or the same error."""
    monkeypatch.setattr(frontend, "ARRAY_LITERAL_MIN_CHARS", 1)
    rng = random.Random(2026)
    wrappers = ['{"v": %s}', '[%s, "s]", %s]', '{"k": "[1.5]", "v": [%s]}', '%s', '{%s: 1}',
                '{"a": "\\"[2.5]\\"", "b": %s}']
    for _ in range(1500):
        literal = _random_literal(rng, rng.randint(1, 4))
        text = rng.choice(wrappers).replace("%s", literal)
        if rng.random() < 0.2:  # break it somewhere
            i = rng.randrange(len(text))
            text = text[:i] + rng.choice(["", "]", ",", '"', "[", " "]) + text[i + 1:]
        try:
            want = ("ok", json.loads(text))
        except ValueError as exc:
            want = ("error", str(exc))
        try:
            got = ("ok", frontend._loads(text.encode()))
        except ValueError as exc:
            got = ("error", str(exc))
        assert got[0] == want[0], text
        if want[0] == "error":
            assert got[1] == want[1], text
        else:
            # Arrays only at value positions (none here): the very same objects.
            assert repr(got[1]) == repr(want[1]), text


def test_weights_of_a_written_model_read_back_bit_for_bit(tmp_path):
    """A file ir_bridge writes, with weight arrays long enough for the fast path."""
    rng = np.random.default_rng(0)
    g = ir_bridge.ir.Graph("wide")
    x = g.add_input("x", (None, 64))
    w = (rng.standard_normal((64, 300)) * 0.05).astype(np.float32)
    w[0, :5] = [1e-45, -0.0, 3.4028235e38, 1e-5, 123456789.0]
    b = rng.standard_normal(300).astype(np.float32)
    y = g.add_node("Gemm", [x], name="dense", params={"W": w, "B": b})
    g.set_outputs([y])
    g.infer_shapes()
    path = tmp_path / "wide.json"
    ir_bridge.emit(g, "mdf", path)
    doc, _ = read_document(path)
    params = doc["wide"]["graphs"]["wide"]["nodes"]["dense"]["parameters"]
    assert isinstance(params["weight"]["value"], np.ndarray)  # no Python floats made
    back = ir_bridge.load(path).node("dense").params
    assert np.array_equal(back["W"].view(np.uint32), w.view(np.uint32))
    assert np.array_equal(back["B"].view(np.uint32), b.view(np.uint32))


# --------------------------------------------------------------------------- Resize (BUG-2)


def _resize_doc(with_roi: bool) -> dict:
    args = {"X": "in0", "scales": [1.0, 1.0, 2.0, 3.0]}
    if with_roi:
        args = {"X": "in0", "roi": [], "scales": [1.0, 1.0, 2.0, 3.0]}
    return {"m": {"format": "ModECI MDF v0.4", "onnx_opset_version": "15", "graphs": {"g": {
        "nodes": {"x": {"input_ports": {"x": {"shape": [1, 2, 3, 2]}},
                        "output_ports": {"out": {"value": "x"}}},
                  "up": {"input_ports": {"in0": {}},
                         "functions": {"resize": {"function": {"onnx::Resize": args}}},
                         "output_ports": {"out": {"value": "resize"}}}},
        "edges": {"e": {"sender": "x", "receiver": "up", "sender_port": "out",
                        "receiver_port": "in0"}}}}}}


def test_resize_files_with_and_without_roi_read_the_same(tmp_path):
    x = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2)
    want = x.repeat(2, axis=2).repeat(3, axis=3)
    graphs = []
    for with_roi in (False, True):
        path = tmp_path / f"resize_{with_roi}.json"
        path.write_text(json.dumps(_resize_doc(with_roi)))
        graphs.append(ir_bridge.load(path))
        (got,) = compile_mdf(path).run([x])
        np.testing.assert_array_equal(got, want)
    old, new = graphs
    assert [(n.name, n.op, n.attrs) for n in old] == [(n.name, n.op, n.attrs) for n in new]


def test_written_resize_has_an_empty_roi_before_its_scales():
    g = ir_bridge.ir.Graph("up")
    x = g.add_input("x", (None, 2, 3, 2))
    g.set_outputs([g.add_node("Resize", [x], name="up", attrs={"scales": [1.0, 1.0, 2.0, 2.0]})])
    g.infer_shapes()
    model = ir_bridge.emit(g, "mdf")
    (f,) = next(n for n in model.graphs[0].nodes if n.id == "up").functions
    assert list(f.args) == ["X", "roi", "scales"] and f.args["roi"] == []


# --------------------------------------------------------------------------- deep graphs


def test_a_deep_chain_reads_back_node_for_node(tmp_path):
    """BUG-10: reading no longer rescans every port value per node (timed in
    benchmarks/mdf_deep.py); the names and the numbers survive."""
    g = ir_bridge.ir.Graph("chain")
    x = g.add_input("x", (None, 3))
    rng = np.random.default_rng(1)
    for i in range(600):
        x = g.add_node("Add", [x], name=f"shift{i}",
                       params={"B": rng.standard_normal(3).astype(np.float32)})
    g.set_outputs([x])
    g.infer_shapes()
    path = tmp_path / "chain.json"
    ir_bridge.emit(g, "mdf", path)
    back = ir_bridge.load(path)
    assert [n.name for n in back] == [n.name for n in g]
    xs = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(compile_mdf(path).run([xs])[0], ir_bridge.run(g, [xs])[0],
                               rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------- details


def test_bracket_runs_do_not_depend_on_the_window():
    rng = np.random.default_rng(4)
    for shape in [(7,), (3, 5), (2, 3, 4), (4, 1, 1), (1, 1, 3, 1), (2, 2, 2, 2, 2)]:
        literal = json.dumps(rng.standard_normal(shape).round(3).tolist(),
                             separators=(",", ":")).encode()
        b = np.frombuffer(literal, np.uint8)
        commas = np.flatnonzero(b == ord(","))
        whole = frontend._bracket_runs(b, commas, len(shape))
        for window in (1, 2, 5, 64):
            part = frontend._bracket_runs(b, commas, len(shape), window=window)
            assert all(np.array_equal(x, y) for x, y in zip(whole, part)), (shape, window)
        assert frontend._nested_shape(literal, 0, len(literal), len(shape)) == shape


def test_utf8_text_and_byte_order_marks_read_as_before(tmp_path, monkeypatch):
    notes = "poids — ünïcödé [1.5, 2.5] ✓"
    path = tmp_path / "m.json"
    path.write_text(doc_text("[[0.5, 1.5], [2.5, 3.5]]", notes=notes), encoding="utf-8")
    for threshold in (1 << 60, 1):
        monkeypatch.setattr(frontend, "ARRAY_LITERAL_MIN_CHARS", threshold)
        doc, _ = read_document(path)
        node = doc["m"]["graphs"]["g"]["nodes"]["n"]
        assert node["notes"] == notes
        assert np.array_equal(np.asarray(node["parameters"]["w"]["value"], np.float32),
                              np.array([[0.5, 1.5], [2.5, 3.5]], np.float32))
    # A UTF-8 byte order mark is refused as it always was (json's message), fast or not.
    path.write_bytes(b"\xef\xbb\xbf" + doc_text("[0.5, 1.5]").encode())
    messages = _errors_slow_and_fast(path, monkeypatch)
    assert messages[0] == messages[1] and "BOM" in messages[0]
