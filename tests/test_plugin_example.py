"""The example plugin (examples/plugins/ir_bridge_numpy), installed the way a user would.

The module fixture pip-installs the plugin into the running environment (once), and
uninstalls it when the module is done, so the environment is left as it was found.  Then:
``ir-bridge plugins`` lists its backend and pass; ``ir-bridge convert --to numpy`` works with
the plugin's pass in ``--passes``; the generated module, run by a Python that cannot import
ir_bridge, matches Keras; the codegen matches the IR interpreter on a graph of every op
the MNIST models need and more; the plugin's pass is tested in the house style.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_preserves
from ir_bridge import registry
from ir_bridge.cli import main
from ir_bridge.ir import Graph

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "ir_bridge_numpy"
PASS_NAME = "numpy:fuse-add-relu"
F = "float32"


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=300)


def _forget_plugin() -> None:
    """Drop what this process cached about the plugin: ir_bridge's entry-point table, its
    registrations, the op it declared, and its modules."""
    from ir_bridge.ir import schema
    from ir_bridge import ops

    registry.refresh()
    # Unregistering is not public API (plugins are not meant to come and go in a process),
    # so the test drops the plugin's entries from the private tables itself.
    registry._backends.pop("numpy", None)
    registry._passes.pop(PASS_NAME, None)
    schema._SCHEMAS.pop("numpy.AddRelu", None)
    ops._FACTORIES.pop("numpy.AddRelu", None)
    for name in [m for m in sys.modules if m == "ir_bridge_numpy" or
                 m.startswith("ir_bridge_numpy.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """Install the example plugin for this module's tests (once); uninstall it after."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is needed to build the plugin without build isolation")
    if _pip("show", "ir_bridge_numpy").returncode == 0:
        pytest.skip("ir_bridge_numpy is already installed here; not touching it")
    # Build from a copy, so pip's build/ and egg-info/ never land in the repository.
    src = tmp_path_factory.mktemp("plugin_src") / "ir_bridge_numpy"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                    "__pycache__"))
    done = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(src))
    assert done.returncode == 0, done.stdout + done.stderr
    _forget_plugin()
    try:
        yield src
    finally:
        undone = _pip("uninstall", "-y", "ir_bridge_numpy")
        _forget_plugin()
        assert undone.returncode == 0, undone.stdout + undone.stderr


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


# ---------------------------------------------------------------- discovery and the CLI


def test_plugins_command_lists_the_backend_and_the_pass(plugin):
    code, out = _cli("plugins")
    assert code == 0
    rows = {tuple(line.split()[:2]) for line in out.splitlines() if line.strip()}
    assert ("backend", "numpy") in rows
    assert ("pass", PASS_NAME) in rows
    assert "ir_bridge_numpy.backend" in out
    # The distribution name, as the installer normalised it.
    assert "[ir_bridge_numpy]" in out or "[ir-bridge-numpy]" in out


def test_passes_command_shows_the_plugin_pass(plugin):
    code, out = _cli("passes")
    assert code == 0
    assert any(line.startswith(PASS_NAME) and "AddRelu" in line for line in out.splitlines())


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    pytest.importorskip("keras")
    from ir_bridge.zoo import mnist

    folder = tmp_path_factory.mktemp("zoo")
    models = {}
    for name in ("cnn_tutorial", "mlp_128_32"):
        model = mnist.build(name)
        path = folder / f"{name}.keras"
        model.save(path)
        models[name] = (model, path)
    return models


# A Python that can import numpy but not ir_bridge: -I drops the environment variables, the
# user site and the current directory from sys.path, -S skips site-packages' .pth files,
# which is where the editable ir_bridge install hooks in; numpy's own directory is added back.
_STANDALONE = """
import sys
sys.path.append({site!r})
try:
    import ir_bridge
except ImportError:
    pass
else:
    raise SystemExit("ir_bridge is importable: this is not a clean environment")
import importlib.util
import numpy as np
spec = importlib.util.spec_from_file_location("model", {module!r})
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)
np.save("y.npy", model.predict(np.load("x.npy", allow_pickle=False)))
print("ran without ir_bridge")
"""


@pytest.mark.parametrize("name", ["cnn_tutorial", "mlp_128_32"])
def test_convert_to_numpy_matches_keras_without_ir_bridge(plugin, keras_models, name, tmp_path):
    model, path = keras_models[name]
    out = tmp_path / "build" / f"{name}.py"
    code, text = _cli("convert", str(path), "--to", "numpy", "-o", str(out),
                      "--passes", f"default,{PASS_NAME}")
    assert code == 0, text
    assert out.is_file() and out.with_suffix(".npz").is_file()

    source = out.read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else
                              [ast.alias(node.module or "")])}
    assert imported <= {"math", "os", "numpy"}
    called = {node.func.id for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}
    assert "allow_pickle=False" in source and "allow_pickle=True" not in source

    x = np.random.default_rng(1).standard_normal((6, 28, 28, 1)).astype(F)
    np.save(tmp_path / "x.npy", x)
    site = str(Path(np.__file__).resolve().parents[1])
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _STANDALONE.format(site=site, module=str(out))],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ran without ir_bridge" in run.stdout
    y = np.load(tmp_path / "y.npy")
    expected = np.asarray(model(x))
    assert y.shape == expected.shape == (6, 10)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5)


def test_convert_validate_uses_the_plugin_runner(plugin, keras_models, tmp_path):
    _, path = keras_models["cnn_tutorial"]
    out = tmp_path / "cnn.py"
    code, text = _cli("convert", str(path), "--to", "numpy", "-o", str(out), "--validate")
    assert code == 0, text
    assert "OK" in text


def test_unsupported_op_is_one_clear_error(plugin, tmp_path):
    import ir_bridge

    g = Graph("unsupported")
    x = g.add_input("x", (None, 4))
    g.set_outputs([g.add_node("Gelu", [g.add_node("Erf", [x])])])
    with pytest.raises(ir_bridge.UnsupportedLayerError) as info:
        ir_bridge.emit(g, "numpy", tmp_path / "m.py")
    message = str(info.value)
    assert "Erf (node 'erf')" in message and "Gelu (node 'gelu')" in message
    assert "it supports:" in message and "Conv" in message
    assert info.value.layers == [("erf", "Erf"), ("gelu", "Gelu")]
    assert not (tmp_path / "m.py").exists()


# ---------------------------------------------------------------- codegen vs the IR


def _every_op_graph(rng) -> Graph:
    """NHWC convs (SAME/explicit pads, strides, dilations, groups), both pools with padding
    and ceil mode, batch norm, arithmetic, shape ops and a fused softmax: two outputs."""

    def r(*shape):
        return rng.standard_normal(shape).astype(F)

    g = Graph("every_op")
    x = g.add_input("x", (None, 9, 9, 4))
    c = g.add_node("Conv", [x], attrs={"layout": "NHWC", "auto_pad": "SAME_UPPER",
                                       "strides": (2, 2), "group": 2, "activation": "Relu"},
                   params={"W": r(6, 2, 3, 3), "B": r(6)})
    c2 = g.add_node("Conv", [x], attrs={"layout": "NHWC", "pads": (1, 0, 2, 1),
                                        "dilations": (2, 1)}, params={"W": r(5, 4, 2, 3)})
    m = g.add_node("MaxPool", [c2], attrs={"layout": "NHWC", "kernel_shape": (2, 2),
                                           "strides": (2, 2), "ceil_mode": 1})
    a = g.add_node("AveragePool", [c], attrs={"layout": "NHWC", "kernel_shape": (3, 3),
                                              "pads": (1, 1, 1, 1)})
    a2 = g.add_node("AveragePool", [c], attrs={"layout": "NHWC", "kernel_shape": (2, 2),
                                               "strides": (2, 2), "ceil_mode": 1,
                                               "count_include_pad": 1, "pads": (1, 1, 0, 0)})
    bn = g.add_node("BatchNormalization", [a], attrs={"axis": -1},
                    params={"scale": r(6), "B": r(6), "mean": r(6),
                            "var": np.abs(r(6)) + 0.5})
    add = g.add_node("Add", [bn], params={"B": r(6)})
    t = g.add_node("Transpose", [add], attrs={"perm": (0, 3, 1, 2)})
    cat = g.add_node("Concat", [g.add_node("Flatten", [t]), g.add_node("Flatten", [m])],
                     attrs={"axis": 1})
    dense = g.add_node("Gemm", [cat], params={"W": r(cat.type.shape[1], 10), "B": r(10)},
                       attrs={"activation": "Softmax"})
    pooled = g.add_node("GlobalAveragePool", [a2], attrs={"layout": "NHWC"})
    flat = g.add_node("Reshape", [pooled], attrs={"shape": (0, -1)})
    mixed = g.add_node("Mul", [g.add_node("Sigmoid", [flat]), g.add_node("Tanh", [flat])])
    g.set_outputs([dense, mixed])
    g.verify()
    return g


def _run_module(path, inputs):
    return registry.get_backend("numpy").runner(path)(inputs)


def test_generated_code_matches_the_ir_interpreter(plugin, tmp_path, rng):
    import ir_bridge

    g = _every_op_graph(rng)
    ir_bridge.emit(g, "numpy", tmp_path / "every_op.py")
    x = rng.standard_normal((3, 9, 9, 4)).astype(F)
    expected = ir_bridge.run(g, [x])
    got = _run_module(tmp_path / "every_op.py", [x])
    assert [y.shape for y in got] == [(3, 10), (3, 6)]
    for a, b in zip(got, expected):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- the plugin's pass


def _residual(rng, *, share_sum: bool = False) -> Graph:
    g = Graph("residual")
    x = g.add_input("x", (None, 8))
    h = g.add_node("Gemm", [x], params={"W": rng.standard_normal((8, 8)).astype(F)})
    s = g.add_node("Add", [h, x])
    out = g.add_node("Relu", [s])
    g.set_outputs([out, s] if share_sum else [out])
    return g


def test_fuse_add_relu_joins_the_pair(plugin, rng, tmp_path):
    import ir_bridge

    result = assert_preserves(_residual(rng), PASS_NAME)
    assert result.changed
    assert result.graph.op_counts() == {"Input": 1, "Gemm": 1, "numpy.AddRelu": 1}
    assert result.graph["add"].inputs == ("gemm", "x")
    # The backend emits the fused node, and the module computes what the IR does.
    artifact = ir_bridge.emit(result.graph, "numpy", tmp_path / "res.py")
    assert "np.maximum(gemm + x, np.float32(0))" in artifact.source
    x = rng.standard_normal((5, 8)).astype(F)
    np.testing.assert_allclose(_run_module(tmp_path / "res.py", [x])[0],
                               ir_bridge.run(result.graph, [x])[0], rtol=0, atol=1e-6)


def test_fuse_add_relu_leaves_a_shared_sum(plugin, rng):
    result = assert_preserves(_residual(rng, share_sum=True), PASS_NAME)
    assert not result.changed
    assert result.graph.op_counts()["Relu"] == 1
    assert any("used elsewhere" in note for note in result.notes)
