"""The MDF writer streams: the same bytes as formatting each array through Python lists, the
file written piece by piece into a temporary file and renamed (nothing left on failure).

Two formatters live in the backend and must agree byte for byte: ``_small_text`` (the
array's ``shortest_float32`` values as a nested Python list through ``json.dumps``: how
every array was written before the streaming writer) and ``_array_pieces`` (vectorised,
slice by slice, for large arrays). The golden hashes pin the text of a fixed set of float32
bit patterns to what the writer produced before streaming was added.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import yaml

from ir_bridge.backends import mdf as backend
from ir_bridge.backends.mdf import array_text, dumps, save
from ir_bridge.errors import IRBridgeError

pytest.importorskip("modeci_mdf")


def streamed(a, yaml_out=False, chunk=backend._CHUNK):
    return "".join(backend._array_pieces(np.asarray(a), yaml_out, chunk))


def golden_values() -> np.ndarray:
    """300,000 float32 bit patterns from integer arithmetic only (the same on every
    machine): half like weights (2**-13 .. 1, any sign and mantissa), half any bits, and
    the special values at the end."""
    n = 300_000
    i = np.arange(n, dtype=np.uint64)
    bits = ((i * 2654435761 + 12345) % 2**32).astype(np.uint32)
    exponent = (114 + (i * 40503 % 13)).astype(np.uint32)
    weights = (bits & np.uint32(0x807FFFFF)) | (exponent << np.uint32(23))
    bits[: n // 2] = weights[: n // 2]
    v = bits.view(np.float32).copy()
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, 3.4028235e38, 1e-5, 1e16,
                        100.0, 0.0001, 123456789.0], np.float32)
    v[-special.size:] = special
    return v.reshape(100, 30, 10, 10)


# sha256 of array_text(golden_values()) (and with yaml=True) as the writer produced it
# before it streamed (ir_bridge at commit 3b51ac0).
GOLDEN = {False: "2035194a1ea6c23995e73cf9448a89421e5914ee0cd364b3143c91ae160668e0",
          True: "7f0fad5ded99747c2dd37609cb62b1e0accd95b2c8c100a84468eae0a35e70fa"}


@pytest.mark.parametrize("yaml_out", [False, True], ids=["json", "yaml"])
def test_text_is_byte_identical_to_the_writer_before_streaming(yaml_out):
    a = golden_values()
    text = array_text(a, yaml_out)
    assert hashlib.sha256(text.encode()).hexdigest() == GOLDEN[yaml_out]
    assert text == backend._small_text(a, yaml_out)
    # Every float32 reads back bit for bit (NaN as NaN).
    back = np.array((yaml.safe_load if yaml_out else json.loads)(text), np.float64)
    back = back.astype(np.float32)
    nan = np.isnan(a)
    assert np.array_equal(np.isnan(back), nan)
    assert np.array_equal(back[~nan].view(np.uint32), a[~nan].view(np.uint32))


def _arrays():
    rng = np.random.default_rng(7)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-5, 1e-45, 3.4028235e38, 1e16,
                        9.999999e15, 1e15, 0.0001, 9.9999e-05, 100.0, 10.0, 2.0, 1e8,
                        123456789.0, 16777216.0, 0.1, 1.0, -3.0], np.float32)
    out = {}
    for shape in [(), (1,), (5,), (2, 3), (3, 1), (1, 7), (2, 1, 3), (1, 1, 1),
                  (4, 3, 3, 3), (6, 5, 1, 1), (2, 2, 2, 2, 2), (0,), (5, 0), (0, 3),
                  (2, 0, 3)]:
        base = rng.standard_normal(shape) * rng.choice([1e-6, 0.05, 3.0, 1e9], size=shape)
        out[f"f32{shape}"] = np.asarray(base, np.float32)
        out[f"f64{shape}"] = np.asarray(base, np.float64)
        out[f"f16{shape}"] = np.asarray(np.clip(base, -6e4, 6e4), np.float16)
        out[f"i64{shape}"] = np.asarray(base * 1000, np.int64)
        out[f"i32{shape}"] = np.asarray(np.clip(base, -1e6, 1e6) * 1000, np.int32)
        out[f"bool{shape}"] = np.asarray(base > 0)
    out["special f32"] = special
    out["special f64"] = special.astype(np.float64)
    with np.errstate(over="ignore"):
        out["special f16"] = special.astype(np.float16)
    out["special 2-D"] = np.resize(special, (4, 11))
    weights = (rng.standard_normal((7, 5, 3)) * 0.05).astype(np.float32)
    out["transposed"] = weights.transpose(2, 0, 1)
    out["strided"] = weights[:, ::2, 1:]
    out["fortran"] = np.asfortranarray(weights)
    return out


ARRAYS = _arrays()


@pytest.mark.parametrize("chunk", [1, 7, backend._CHUNK])
@pytest.mark.parametrize("yaml_out", [False, True], ids=["json", "yaml"])
@pytest.mark.parametrize("name", list(ARRAYS))
def test_streamed_and_list_formatting_agree(name, yaml_out, chunk):
    a = ARRAYS[name]
    expected = backend._small_text(a, yaml_out)
    assert streamed(a, yaml_out, chunk) == expected
    assert array_text(a, yaml_out) == expected
    # The streamed text is the array, as a JSON (YAML) reader sees it.
    loaded = (yaml.safe_load if yaml_out else json.loads)(expected)
    if a.size:
        got = np.array(loaded, dtype=a.dtype if a.dtype.kind != "f" else np.float64)
        assert got.shape == a.shape
        if a.dtype.kind == "f":
            want = a.astype(np.float64)
            assert np.array_equal(got.astype(a.dtype), a.astype(a.dtype), equal_nan=True)
            real = ~np.isnan(want)  # (PyYAML makes its NaN as inf / inf: sign bit set)
            assert np.array_equal(np.signbit(got[real]), np.signbit(want[real]))
        else:
            assert np.array_equal(got, a)


def test_special_values_policy():
    a = np.array([[np.nan, np.inf, -np.inf], [0.0, -0.0, 1e-5]], np.float32)
    assert streamed(a) == "[[NaN,Infinity,-Infinity],[0.0,-0.0,1e-05]]"
    assert streamed(a, True) == "[[.nan,.inf,-.inf],[0.0,-0.0,1.0e-05]]"
    assert streamed(np.float32(-2.5)) == "-2.5"
    assert streamed(np.array([True, False])) == "[true,false]"
    with pytest.raises(IRBridgeError, match="complex"):
        streamed(np.zeros(3, np.complex64))


def test_every_digit_layout_matches_pythons_repr():
    """Every float32 decade from the smallest subnormal to the largest finite value, with
    its neighbours: the vectorised text is ``repr`` of the shortest decimal's float64."""
    tens = np.array([10.0 ** k for k in range(-45, 39)], np.float32)
    near = np.concatenate([tens, np.nextafter(tens, np.float32(np.inf)),
                           np.nextafter(tens, np.float32(0))])
    with np.errstate(over="ignore"):
        sweep = (10.0 ** np.linspace(-45.9, 38.5, 20_000)).astype(np.float32)
    values = np.concatenate([near, sweep, -sweep])
    best = backend.shortest_float32(values).tolist()
    assert streamed(values, chunk=997) == "[" + ",".join(json.dumps(v) for v in best) + "]"


# --------------------------------------------------------------------------- whole files


def _model(big: int = 3000):
    """A modeci_mdf Model whose parameters are arrays of several ranks and dtypes, large
    ones (streamed) among small ones (formatted together)."""
    from modeci_mdf import mdf

    rng = np.random.default_rng(3)
    params = [mdf.Parameter(id=name.replace(" ", "_").replace("(", "").replace(")", "")
                            .replace(",", "_"), value=a)
              for name, a in ARRAYS.items() if a.size]
    params.append(mdf.Parameter(id="big", value=(rng.standard_normal((big, 4)) * 0.02)
                                .astype(np.float32)))
    params.append(mdf.Parameter(id="big4d", value=rng.standard_normal((big // 30, 3, 5, 2))
                                .astype(np.float32)))
    params.append(mdf.Parameter(id="big_ints", value=rng.integers(-9, 9, 5000)))
    node = mdf.Node(id="holder", parameters=params,
                    output_ports=[mdf.OutputPort(id="out", value="big")])
    g = mdf.Graph(id="arrays", nodes=[node])
    return mdf.Model(id="arrays", graphs=[g])


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_streams_the_same_bytes_as_dumps(tmp_path, suffix, monkeypatch):
    from modeci_mdf.utils import load_mdf

    model = _model()
    fmt = "json" if suffix == ".json" else "yaml"
    text = dumps(model, fmt)
    path = tmp_path / f"m{suffix}"
    save(model, path)
    assert path.read_bytes() == text.encode()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    # Tiny slices and a tiny small-array bound: every array through every path, same bytes.
    monkeypatch.setattr(backend, "_CHUNK", 5)
    monkeypatch.setattr(backend, "_SMALL", 2)
    assert dumps(model, fmt) == text
    # The big weights read back bit for bit, in modeci_mdf too.
    holder = load_mdf(str(path)).graphs[0].nodes[0]
    big = np.asarray(next(p.value for p in holder.parameters if p.id == "big"), np.float32)
    want = next(p.value for p in model.graphs[0].nodes[0].parameters if p.id == "big")
    assert np.array_equal(big.view(np.uint32), want.view(np.uint32))


def test_a_failed_save_leaves_no_file(tmp_path):
    from modeci_mdf import mdf

    model = _model()
    bad = mdf.Parameter(id="bad", value=np.zeros(4, np.complex64))
    model.graphs[0].nodes[0].parameters.append(bad)  # after the big arrays: fails mid-stream
    path = tmp_path / "m.json"
    with pytest.raises(IRBridgeError, match="complex"):
        save(model, path)
    assert list(tmp_path.iterdir()) == []
    path.write_text("previous")
    with pytest.raises(IRBridgeError):
        save(model, path)
    assert path.read_text() == "previous"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_small_arrays_are_formatted_together_in_document_order():
    """Small arrays before and after a large one, and short lists (shapes) in between."""
    from modeci_mdf import mdf

    rng = np.random.default_rng(5)
    values = [rng.standard_normal(s).astype(np.float32) for s in [(3,), (2, 2), (5000,), (4,)]]
    node = mdf.Node(id="n", input_ports=[mdf.InputPort(id="x", shape=(1, 4))],
                    parameters=[mdf.Parameter(id=f"p{i}", value=v)
                                for i, v in enumerate(values)],
                    output_ports=[mdf.OutputPort(id="out", value="p0")])
    model = mdf.Model(id="m", graphs=[mdf.Graph(id="g", nodes=[node])])
    doc = json.loads(dumps(model))
    params = doc["m"]["graphs"]["g"]["nodes"]["n"]["parameters"]
    for i, v in enumerate(values):
        got = np.array(params[f"p{i}"]["value"], np.float64).astype(np.float32)
        assert np.array_equal(got.view(np.uint32), v.view(np.uint32)), i
    assert doc["m"]["graphs"]["g"]["nodes"]["n"]["input_ports"]["x"]["shape"] == [1, 4]
