"""The documentation stays true: generated pages are fresh, the CLI reference is every
command's real ``--help``, every public API object has a docstring, and pydoc reads it."""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ir_bridge
import ir_bridge.ir
import ir_bridge.passes
from ir_bridge import docgen
from ir_bridge.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_generated_pages_are_fresh():
    # The same command a person runs; it fails listing the stale pages.
    run = subprocess.run([sys.executable, "-m", "ir_bridge.docgen", "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (
        f"{run.stdout}{run.stderr}\nregenerate with: python -m ir_bridge.docgen")


def test_check_reports_a_stale_page_and_writes_nothing(tmp_path):
    docs = tmp_path / "docs"
    assert docgen.main(["--docs", str(docs)]) == 0
    page = docs / "reference" / "ops.md"
    page.write_text(page.read_text() + "hand edit\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert docgen.main(["--check", "--docs", str(docs)]) == 1
    assert "stale: docs/reference/ops.md" in out.getvalue()
    assert "stale: docs/cli.md" not in out.getvalue()
    assert page.read_text().endswith("hand edit\n")


def test_generation_is_deterministic():
    assert docgen.generate() == docgen.generate()


def _help_of(path: str, monkeypatch) -> str:
    # click sizes help to the terminal, capped at 80 columns; docs/cli.md is that width.
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(path.split()[1:] + ["--help"])
    assert code == 0
    return out.getvalue()


def test_every_command_help_matches_the_cli_page(monkeypatch):
    blocks = docgen.help_blocks((DOCS / "cli.md").read_text())
    commands = [path for path, _cmd, _ctx in docgen.cli_commands()]
    assert "ir-bridge convert" in commands and "ir-bridge plugins" in commands
    assert sorted(blocks) == sorted(commands), "docs/cli.md lists other commands than the CLI"
    for path in commands:
        assert _help_of(path, monkeypatch) == blocks[path], f"`{path} --help` differs"


def _public_objects():
    """Every class and function a public ``__all__`` exports (constants carry ``#:``
    comments where they are defined instead)."""
    for module in (ir_bridge, ir_bridge.ir, ir_bridge.passes):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isroutine(obj):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize("qualname,obj", list(_public_objects()),
                         ids=[q for q, _ in _public_objects()])
def test_public_api_has_docstrings(qualname, obj):
    own = obj.__doc__ if not inspect.isclass(obj) else vars(obj).get("__doc__")
    assert own and own.strip(), f"{qualname} has no docstring"
    # @dataclass writes "Name(field, ...)" into a class that has no docstring.
    assert not own.startswith(f"{obj.__name__}("), f"{qualname} has no docstring"
    if inspect.isclass(obj):
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if inspect.isfunction(target):
                assert target.__doc__, f"{qualname}.{attr} has no docstring"


def test_pydoc_reads_the_package():
    run = subprocess.run([sys.executable, "-m", "pydoc", "ir_bridge"], capture_output=True,
                         text=True, timeout=120, env={"PAGER": "cat", "PATH": "/usr/bin:/bin",
                                                      "TERM": "dumb"})
    assert run.returncode == 0, run.stderr
    text = run.stdout
    for word in ("load(", "convert(", "run("):
        assert word in text, f"pydoc ir_bridge does not show {word}"
    assert "tensorflow" not in run.stderr.lower()


def test_hand_written_pages_link_to_existing_pages():
    pages = ["index.md", "architecture.md", "writing-a-pass.md", "writing-a-plugin.md"]
    for page in pages:
        text = (DOCS / page).read_text()
        for target in re.findall(r"\]\(([^)#\s]+\.(?:md|svg|png))(?:#[^)]*)?\)", text):
            assert (DOCS / page).parent.joinpath(target).resolve().is_file(), \
                f"{page} links to missing {target}"


def test_mkdocs_nav_names_existing_pages_and_every_page():
    import yaml

    config = yaml.safe_load((DOCS.parent / "mkdocs.yml").read_text())

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from (pages(value) if isinstance(value, list) else [value])

    nav = list(pages(config["nav"]))
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml names missing pages {missing}"
    unlisted = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")
                      if str(p.relative_to(DOCS)) not in nav)
    assert not unlisted, f"pages not in the mkdocs.yml nav: {unlisted}"


def _code_blocks(page: str) -> list[tuple[str, str]]:
    """``(first-line comment, rest)`` of every fenced block whose first line is ``# path``."""
    text = (DOCS / page).read_text()
    blocks = re.findall(r"^```(?:python|toml)\n# (\S+)\n(.*?)^```$", text, re.S | re.M)
    assert blocks, f"{page} has no labelled code blocks"
    return blocks


def _run_pytest_on(folder: Path, test_file: str) -> subprocess.CompletedProcess:
    (folder / "pytest.ini").write_text("[pytest]\n")  # keep this repo's settings out
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           test_file], cwd=folder, capture_output=True, text=True, timeout=300)


def test_writing_a_pass_example_runs_and_passes(tmp_path):
    files = dict(_code_blocks("writing-a-pass.md"))
    assert set(files) == {"fold_gemm_scale.py", "test_fold_gemm_scale.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    run = _run_pytest_on(tmp_path, "test_fold_gemm_scale.py")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout


def test_writing_a_plugin_excerpts_match_the_example_plugin():
    checked = 0
    for path, code in _code_blocks("writing-a-plugin.md"):
        if not path.startswith("examples/"):
            continue
        source = (DOCS.parent / path).read_text()
        assert code in source, f"the excerpt of {path} in writing-a-plugin.md is out of date"
        checked += 1
    assert checked >= 4


def test_writing_a_plugin_frontend_example_loads_a_model(tmp_path):
    code = dict(_code_blocks("writing-a-plugin.md"))["dense_npz.py"]
    (tmp_path / "dense_npz.py").write_text(code)
    script = """
import numpy as np
import ir_bridge
import dense_npz  # registers the frontend

rng = np.random.default_rng(0)
w = {"W0": rng.standard_normal((5, 7)), "B0": rng.standard_normal(7),
     "W1": rng.standard_normal((7, 3)), "B1": rng.standard_normal(3)}
w = {k: v.astype("float32") for k, v in w.items()}
np.savez("stack.npz", **w)
graph = ir_bridge.optimize(ir_bridge.load("stack.npz", format="dense-npz"))
assert [n.op for n in graph if n.op != "Input"] == ["Gemm", "Gemm"], graph.format()
x = rng.standard_normal((4, 5)).astype("float32")
h = np.maximum(x @ w["W0"] + w["B0"], 0) @ w["W1"] + w["B1"]
want = np.exp(h - h.max(1, keepdims=True))
want /= want.sum(1, keepdims=True)
np.testing.assert_allclose(ir_bridge.run(graph, x)[0], want, rtol=1e-5, atol=1e-6)
np.savez("bad.npz", W0=w["W0"])
try:
    ir_bridge.load("bad.npz", format="dense-npz")
except ir_bridge.InvalidModelError as exc:
    assert "expected W0, B0" in str(exc)
else:
    raise AssertionError("a malformed file was accepted")
print("frontend ok")
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "frontend ok" in run.stdout
