"""The public surface: __all__, docstrings, light import, layering rules."""

import ast
import subprocess
import sys
from pathlib import Path

import ir_bridge

PKG = Path(ir_bridge.__file__).parent
HEAVY = ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "modeci_mdf", "torch")


def test_all_is_exact_and_documented():
    assert sorted(ir_bridge.__all__) == sorted([
        "load", "optimize", "emit", "convert", "run", "check_parity",
        "Graph", "Node", "TensorType",
        "IRBridgeError", "UnsupportedLayerError", "InvalidModelError", "MissingDependencyError",
        "VerificationError", "PassError", "ExecutionError", "UnsafeExpressionError",
        "ParityError", "__version__"])
    for name in ir_bridge.__all__:
        obj = getattr(ir_bridge, name)
        if callable(obj):
            assert obj.__doc__, name


def test_import_loads_no_framework():
    code = ("import sys, ir_bridge, ir_bridge.cli, ir_bridge.engine.plan, ir_bridge.passes; "
            "import ir_bridge.registry as r; r.passes(); "
            f"bad = [m for m in {HEAVY!r} if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _imports(path: Path) -> set[str]:
    """Top-level (module-scope) imports of a file, as absolute ir_bridge module names."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module)
    return found


def test_layering_rules():
    """ir imports no other layer; ops only ir; passes never frontends/backends/engine;
    no core module imports a framework at module level."""
    allowed = {
        "ir": ("ir_bridge.ir", "ir_bridge.errors"),
        "ops": ("ir_bridge.ir", "ir_bridge.ops", "ir_bridge.errors"),
        "passes": ("ir_bridge.ir", "ir_bridge.ops", "ir_bridge.passes", "ir_bridge.errors",
                   "ir_bridge.registry", "ir_bridge"),
        "engine": ("ir_bridge.ir", "ir_bridge.ops", "ir_bridge.engine", "ir_bridge.errors",
                   "ir_bridge.passes", "ir_bridge.frontends", "ir_bridge.registry",
                   "ir_bridge._lazy", "ir_bridge.io", "ir_bridge"),
    }
    problems = []
    for layer, ok in allowed.items():
        for path in (PKG / layer).glob("*.py"):
            for mod in _imports(path):
                if mod.split(".")[0] in HEAVY:
                    problems.append(f"{path.name} imports {mod}")
                if mod.startswith("ir_bridge") and not mod.startswith(ok):
                    if not any(mod == o for o in ok):
                        problems.append(f"{layer}/{path.name} imports {mod}")
    assert not problems, problems
