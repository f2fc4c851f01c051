"""Hostile and broken inputs in every format: a typed error, one line, exit 2, no file left.

The corpus is the table in ``make_corpus.py`` (>= 40 cases: ONNX, .keras, .h5, MDF
JSON/YAML, .npy inputs to ``ir-bridge run``, backends that refuse), generated into
``tmp_path`` per test.  For every case:

* the Python API raises exactly the case's :class:`~ir_bridge.errors.IRBridgeError`
  subclass, with a message naming what is wrong, and creates nothing;
* ``ir-bridge`` (``ir_bridge.cli.main``, in process) exits 2 with exactly one line on stderr
  (``ir-bridge: error: ...``), no traceback, and leaves the output directory as it was,
  including an older output file at the same path (no partial file, no clobbering);
* nothing a file asks for runs (canary files never appear; Lambda layers are refused since
  Keras files are loaded with ``safe_mode=True``; pickled ``.npy`` inputs are never
  unpickled).

Also here: absurd sizes that must not allocate (a (N, 10**12) ONNX input converts in
constant memory) and a long chain that must convert and run.  Hostile MDF
*expressions* and YAML constructs are in ``tests/engine/test_mdf_hostile.py``.
"""

from __future__ import annotations

import os
import resource

import numpy as np
import pytest

import ir_bridge
from ir_bridge.cli import main as cli_main
from ir_bridge.errors import IRBridgeError

from make_corpus import CANARY, CASES, Case, output_name  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytestmark = pytest.mark.timeout(300)


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _listing(root) -> list[str]:
    """Every file and directory under ``root``, hidden ones (temp files) included."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def _params(part: str):
    """The cases as pytest params, strict xfail where the case says this part fails."""
    out = []
    for c in CASES:
        if part == "api" and c.cli_only:
            continue
        reason = c.xfail_api if part == "api" else c.xfail_cli
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        if any(not _have(m) for m in c.needs):
            marks.append(pytest.mark.skip(reason=f"needs {', '.join(c.needs)}"))
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


def _errors(c: Case) -> tuple:
    return c.error if isinstance(c.error, tuple) else (c.error,)


def _setup(c: Case, tmp_path):
    """Build the case under ``tmp_path/src``; returns (source, inputs, output path)."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    source = c.build(src_dir)
    inputs = c.inputs(src_dir) if c.inputs else []
    out_dir = tmp_path / "out"
    if c.out_under_file:
        out_dir.write_text("a file where a directory should be\n")
    else:
        out_dir.mkdir()
    return source, inputs, out_dir / output_name(c)


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    """Import the frontends/backends first so per-case timings and listings are clean."""
    ir_bridge.registry.frontends()
    ir_bridge.registry.backends()
    yield
    if _have("keras"):
        import keras

        keras.backend.clear_session()


def test_the_corpus_is_big_and_varied():
    assert len(CASES) >= 40
    formats = {c.fmt for c in CASES}
    assert {"onnx", "keras", "h5", "mdf", "npy"} <= formats
    assert len({c.name for c in CASES}) == len(CASES)
    for c in CASES:  # every expectation is a typed ir_bridge error
        assert all(issubclass(e, IRBridgeError) for e in _errors(c)), c.name


@pytest.mark.parametrize("c", _params("api"))
def test_api_raises_the_typed_error(c: Case, tmp_path):
    source, inputs, out = _setup(c, tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(Exception) as info:
        if c.action == "load":
            ir_bridge.load(source)
        elif c.action == "run":
            ir_bridge.run(source, [np.load(x, allow_pickle=False) for x in inputs])
        else:
            ir_bridge.convert(source, c.to, out, **c.api_options)
    assert type(info.value) in _errors(c), f"{type(info.value).__name__}: {info.value}"
    assert c.match in str(info.value)
    assert _listing(tmp_path) == before, "the API left a file behind"
    assert not (tmp_path / "src" / CANARY).exists()


def _cli_argv(c: Case, source, inputs, out) -> list[str]:
    """The ``ir-bridge`` command line that does what the case does."""
    if c.action == "run":
        return ["run", str(source), *[a for x in inputs for a in ("--input", str(x))],
                "-o", str(out)]
    return ["convert", str(source), "--to", c.to, "-o", str(out), *c.cli_extra]


@pytest.mark.parametrize("c", _params("cli"))
def test_cli_exits_2_with_one_line_and_leaves_nothing(c: Case, tmp_path, capsys):
    source, inputs, out = _setup(c, tmp_path)
    argv = _cli_argv(c, source, inputs, out)
    before = _listing(tmp_path)
    capsys.readouterr()
    code = cli_main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err[-2000:])
    assert len(lines) == 1, captured.err[-2000:]
    assert lines[0].startswith("ir-bridge: error: ") and len(lines[0]) > 30
    assert "Traceback" not in captured.err + captured.out
    assert c.match in lines[0]
    assert _listing(tmp_path) == before, "the CLI left a (partial) file behind"
    assert not (tmp_path / "src" / CANARY).exists()


# A failed conversion must not touch an older output at the same path either.
_CLOBBER = ["onnx_truncated", "keras_lambda_layer", "mdf_cycle", "npy_wrong_shape",
            "emit_keras_cannot_express", "emit_wrong_output_suffix"]


@pytest.mark.parametrize("c", [p for p in _params("cli") if p.id in _CLOBBER])
def test_a_failed_cli_run_keeps_the_previous_output(c: Case, tmp_path, capsys):
    source, inputs, out = _setup(c, tmp_path)
    out.write_bytes(b"the previous, good output\n")
    os.utime(out, (1_000_000_000, 1_000_000_000))
    argv = _cli_argv(c, source, inputs, out)
    before = _listing(tmp_path)
    assert cli_main(argv) == 2
    assert out.read_bytes() == b"the previous, good output\n"
    assert out.stat().st_mtime == 1_000_000_000
    assert _listing(tmp_path) == before


def test_pickled_inputs_are_never_unpickled(tmp_path, capsys):
    """``ir-bridge run`` reads inputs with ``allow_pickle=False``: an object array whose
    unpickling would run a command is refused and the command never runs."""
    (c,) = [c for c in CASES if c.name == "npy_pickled_object_array"]
    source, inputs, out = _setup(c, tmp_path)
    assert cli_main(["run", str(source), "--input", str(inputs[0]), "-o", str(out)]) == 2
    assert not (tmp_path / "src" / CANARY).exists()
    # The file really is hostile: loading it unsafely would run the command.
    np.load(inputs[0], allow_pickle=True)
    assert (tmp_path / "src" / CANARY).exists()


# --------------------------------------------------------------------------- absurd sizes


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.skipif(not _have("onnx"), reason="needs onnx")
def test_an_absurd_input_shape_converts_without_allocating(tmp_path):
    """A (N, 10**12) input (4 TB per sample) is only a type: reading, optimising and
    writing the model allocate nothing of that size."""
    from onnx import TensorProto, helper

    from make_corpus import onnx_dense

    model = onnx_dense(inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["N", 10**12])],
                       nodes=[helper.make_node("Relu", ["x"], ["y"], name="relu")],
                       initializers=[], out_shape=["N", 10**12])
    path = tmp_path / "huge.onnx"
    path.write_bytes(model.SerializeToString())
    peak = _rss_mb()
    graph = ir_bridge.load(path)
    assert graph.inputs[0].type.shape == (None, 10**12)
    ir_bridge.convert(path, "onnx", tmp_path / "out.onnx")
    assert _rss_mb() - peak < 200


def _chain(n: int):
    from ir_bridge.ir import Graph

    g = Graph("chain")
    cur = g.add_input("x", (None, 4))
    for _ in range(n):
        cur = g.add_node("Relu", [cur])
    g.set_outputs([cur])
    return g


@pytest.mark.skipif(not _have("modeci_mdf") or not _have("onnx"), reason="needs MDF, ONNX")
@pytest.mark.parametrize("to", ["onnx", "mdf"])
def test_a_long_chain_converts_and_runs(to):
    """Depth is no problem for the IR, the passes, the ONNX/MDF writers and runners."""
    x = np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4)
    artifact = ir_bridge.emit(ir_bridge.optimize(_chain(3000)), to)
    y = ir_bridge.parity.runner_for(artifact)([x])[0]
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.skipif(not _have("keras"), reason="needs keras")
def test_a_long_chain_to_keras_converts_or_refuses_cleanly():
    try:
        model = ir_bridge.emit(ir_bridge.optimize(_chain(3000)), "keras")
    except IRBridgeError:
        return  # a clear refusal is fine
    x = np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4)
    np.testing.assert_array_equal(ir_bridge.parity.runner_for(model)([x])[0], np.maximum(x, 0))


