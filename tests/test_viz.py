"""Graph pictures: DOT text, SVG/PNG rendering, the `ir-bridge graph` command, and the
message when Graphviz's `dot` program is missing.

The models are built directly in the IR and written as ONNX, so these tests need neither
TensorFlow nor a training run.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ir_bridge
from ir_bridge import viz
from ir_bridge.cli import main
from ir_bridge.ir import Graph

needs_dot = pytest.mark.skipif(not viz.dot_available(),
                               reason="Graphviz's `dot` is not installed")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _mlp_graph(name: str = "tiny_mlp") -> Graph:
    """Input -> Flatten -> Gemm -> Relu -> Dropout -> Gemm -> Softmax, seeded weights."""
    rng = np.random.default_rng(0)
    g = Graph(name)
    x = g.add_input("image", (None, 4, 4, 1))
    f = g.add_node("Flatten", [x], name="flatten")
    h = g.add_node("Gemm", [f], name="dense_1", params={
        "W": rng.standard_normal((16, 8)).astype("float32"),
        "B": rng.standard_normal(8).astype("float32")})
    r = g.add_node("Relu", [h], name="dense_1/relu", origin="dense_1")
    d = g.add_node("Dropout", [r], name="dropout", attrs={"ratio": 0.2})
    o = g.add_node("Gemm", [d], name="output", params={
        "W": rng.standard_normal((8, 3)).astype("float32")})
    s = g.add_node("Softmax", [o], name="output/softmax", origin="output")
    g.set_outputs([s])
    g.verify()
    return g


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    pytest.importorskip("onnx")
    path = tmp_path_factory.mktemp("viz") / "tiny_mlp.onnx"
    ir_bridge.emit(_mlp_graph(), "onnx", path)
    return path


def test_dot_source_shows_op_name_shape_and_params():
    src = viz.dot_source(_mlp_graph())
    assert "<b>Gemm</b><br/>dense_1<br/>[?, 8]<br/>136 params" in src
    assert "<b>Relu</b><br/>dense_1/relu (from dense_1)<br/>[?, 8]" in src
    assert "<b>Dropout</b>" in src and "<b>Flatten</b>" in src
    assert "tiny_mlp: 7 nodes, 160 params" in src
    assert src.count("peripheries=2") == 1  # only the graph output is double-bordered
    assert src.count(" -> ") == 6


def test_dot_source_after_default_passes_has_fused_activations():
    after = ir_bridge.optimize(_mlp_graph(), "default")
    src = viz.dot_source(after)
    assert "<b>Gemm + Relu</b>" in src and "<b>Gemm + Softmax</b>" in src
    assert "Dropout" not in src and "Flatten" not in src
    assert src.count(" -> ") == 2


def test_user_text_is_escaped():
    g = _mlp_graph('we<ird> & "name"\\')
    g.rename("dense_1", "a<b>&c")
    src = viz.dot_source(g)
    assert "a&lt;b&gt;&amp;c" in src and "a<b>&c<br/>" not in src


@needs_dot
def test_render_svg_png_pdf_and_escaped_names(tmp_path):
    g = _mlp_graph('we<ird> & "name"\\')
    g.rename("dense_1", "a<b>&c:0")
    svg = viz.render(g, tmp_path / "g.svg")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "Gemm" in text and "a&lt;b&gt;&amp;c:0" in text
    png = viz.render(g, tmp_path / "g.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    pdf = viz.render(g, tmp_path / "g.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_render_dot_text_needs_no_dot_program(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    path = viz.render(_mlp_graph(), tmp_path / "g.gv")
    assert path.read_text().startswith("digraph tiny_mlp {")


def test_unknown_suffix_is_a_clear_error(tmp_path):
    with pytest.raises(ir_bridge.IRBridgeError, match=r"unknown suffix \.jpg; use one of \.svg"):
        viz.render(_mlp_graph(), tmp_path / "g.jpg")


def test_missing_dot_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `dot` on PATH
    assert not viz.dot_available()
    with pytest.raises(ir_bridge.IRBridgeError) as info:
        viz.render(_mlp_graph(), tmp_path / "g.png")
    message = str(info.value)
    assert "install Graphviz's `dot`" in message
    assert "apt-get install graphviz" in message and "brew install graphviz" in message
    assert not (tmp_path / "g.png").exists()


def test_graph_command_missing_dot_is_one_line_exit_2(onnx_model, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    rc = main(["graph", str(onnx_model), "-o", str(tmp_path / "g.svg")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "install Graphviz's `dot`" in err
    assert "Traceback" not in err


@needs_dot
def test_graph_command_svg_and_png(onnx_model, tmp_path, capsys):
    svg = tmp_path / "before.svg"
    assert main(["graph", str(onnx_model), "-o", str(svg)]) == 0
    assert f"wrote {svg}" in capsys.readouterr().out
    text = svg.read_text()
    # ONNX has no Dropout at inference: the ONNX backend wrote it as Identity.
    assert "<svg" in text and ">Identity<" in text and ">Flatten<" in text and ">Relu<" in text

    png = tmp_path / "after.png"
    assert main(["graph", str(onnx_model), "-o", str(png), "--passes", "default"]) == 0
    assert "wrote" in capsys.readouterr().out
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC
    # IHDR: width and height, big-endian, right after the signature and chunk header.
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 100 < width < 2000 and 100 < height < 3000

    after = tmp_path / "after.gv"
    assert main(["graph", str(onnx_model), "-o", str(after), "--passes", "default",
                 "--from", "onnx"]) == 0
    src = after.read_text()
    assert "Identity" not in src and "Flatten" not in src and "<b>Gemm + Softmax</b>" in src


def test_graph_command_bad_suffix_exit_2(onnx_model, tmp_path, capsys):
    assert main(["graph", str(onnx_model), "-o", str(tmp_path / "g.bmp")]) == 2
    assert "unknown suffix .bmp" in capsys.readouterr().err


def test_import_ir_bridge_stays_light():
    code = ("import sys, ir_bridge, ir_bridge.viz, ir_bridge.demo; "
            "heavy = [m for m in ('graphviz', 'matplotlib', 'keras', 'tensorflow', 'rich') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
