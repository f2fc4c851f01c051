"""Pictures of an IR graph, drawn with Graphviz.

:func:`to_dot` turns a :class:`~ir_bridge.ir.Graph` into a ``graphviz.Digraph``: one box per
node showing its op (with a fused activation as ``Gemm + relu``), its name and the source
layer it came from, its output shape and its parameter count.  :func:`render` writes it as
``.svg``, ``.png`` or ``.pdf`` (picked by the suffix; ``.gv``/``.dot`` write the DOT text).

The Python ``graphviz`` package only writes DOT text; drawing needs Graphviz's ``dot``
program.  When it is missing we say how to install it instead of letting the library fail
deep inside a subprocess call.  ``graphviz`` is imported inside functions, so importing
this module (and ``ir_bridge``) stays cheap.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

from .errors import IRBridgeError

#: Suffixes :func:`render` draws with ``dot`` (-> its ``-T`` format).
IMAGE_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}
#: Suffixes :func:`render` writes as DOT text (no ``dot`` program needed).
SOURCE_SUFFIXES = (".gv", ".dot")

DOT_MISSING = ("Graphviz's `dot` program was not found on PATH; install Graphviz's `dot` "
               "(e.g. apt-get install graphviz / brew install graphviz / conda install "
               "graphviz) to draw graphs")

# Fill colours by op family, so a picture reads at a glance: inputs, weighted layers,
# pooling, shape plumbing, everything else.
_COLOURS = {
    "Input": "#dbe9f6",
    "Gemm": "#fde0c5", "MatMul": "#fde0c5", "Conv": "#fcd5b5", "ConvTranspose": "#fcd5b5",
    "BatchNormalization": "#f6e7b5", "LayerNormalization": "#f6e7b5",
    "MaxPool": "#d5ecd4", "AveragePool": "#d5ecd4", "GlobalAveragePool": "#d5ecd4",
    "GlobalMaxPool": "#d5ecd4",
    "Flatten": "#e6e6e6", "Reshape": "#e6e6e6", "Transpose": "#e6e6e6",
    "Dropout": "#f4cccc", "Identity": "#f4cccc",
}
_DEFAULT_COLOUR = "#ece4f5"


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise IRBridgeError("the Python package `graphviz` is not installed; install it with: "
                            "pip install 'ir_bridge[viz]' (and Graphviz's `dot` program, "
                            "e.g. apt-get install graphviz / brew install graphviz)") from None
    return graphviz


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` program is on ``PATH`` (needed to draw, not for DOT text)."""
    return shutil.which("dot") is not None


def require_dot() -> str:
    """Return the path of the ``dot`` program; raise ``IRBridgeError`` saying how to install
    Graphviz when it is missing."""
    found = shutil.which("dot")
    if found is None:
        raise IRBridgeError(DOT_MISSING)
    return found


def _op_text(node) -> str:
    act = node.attrs.get("activation")
    return f"{node.op} + {act}" if act else node.op


def _type_text(t) -> str:
    if t is None:
        return "?"
    if isinstance(t, tuple):  # a multi-result op: one type per result
        return "(" + ", ".join(_type_text(x) for x in t) + ")"
    return "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"


def _literal(text: str) -> str:
    """``text`` with backslashes doubled, so DOT shows it as written."""
    return str(text).replace("\\", "\\\\")


def node_label(node) -> str:
    """The text of ``node``'s box: op (+ fused activation), name (and origin), output shape,
    parameter count; lines separated by newlines."""
    return "\n".join(_label_lines(node))


def _label_lines(node) -> list[str]:
    name = node.name
    if node.origin and node.origin != node.name:
        name = f"{name} (from {node.origin})"
    layout = node.attrs.get("layout")
    shape = _type_text(node.type)
    lines = [_op_text(node), name, f"{shape} {layout}" if layout and node.op != "Input" else shape]
    if node.num_params:
        lines.append(f"{node.num_params:,} params")
    return lines


def _html_label(node) -> str:
    # An HTML-like label so the op can be bold; every piece of text is escaped, since node
    # names and origins are user text (layer names) that may hold <, & or quotes.
    op, *rest = (html.escape(line, quote=True) for line in _label_lines(node))
    return "<<b>" + op + "</b>" + "".join(f"<br/>{line}" for line in rest) + ">"


def to_dot(graph, title: str | None = None):
    """Build a ``graphviz.Digraph`` of ``graph`` (top to bottom, inputs first).

    Takes an IR graph and an optional title (default: the graph's name with its node and
    parameter counts); returns the Digraph.  Graph outputs get a double border; an edge into
    a node with several inputs is labelled with the input's position.
    """
    graphviz = _graphviz()
    if title is None:
        title = f"{graph.name}: {len(graph)} nodes, {graph.count_params():,} params"
    # The DOT graph id is only an identifier; the title carries the real (user) name.
    dot = graphviz.Digraph(name=re.sub(r"\W", "_", graph.name) or "ir")
    dot.attr("graph", rankdir="TB", label=graphviz.nohtml(_literal(title)), labelloc="t",
             fontname="Helvetica", fontsize="14", nodesep="0.3", ranksep="0.35")
    dot.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10",
             margin="0.15,0.06")
    dot.attr("edge", fontname="Helvetica", fontsize="8", arrowsize="0.7")
    outputs = set(graph.output_names)
    # DOT ids are synthetic: node names may hold ':' (a port in DOT) or other syntax.
    ids: dict[str, str] = {}
    for node in graph:
        ids[node.name] = f"n{len(ids)}"
        extra = {"peripheries": "2"} if node.name in outputs else {}
        dot.node(ids[node.name], label=_html_label(node), tooltip=_literal(node.name),
                 fillcolor=_COLOURS.get(node.op, _DEFAULT_COLOUR), **extra)
        for i, src in enumerate(node.inputs):
            attrs = {"label": str(i)} if len(node.inputs) > 1 else {}
            dot.edge(ids[src], ids[node.name], **attrs)
    return dot


def dot_source(graph, title: str | None = None) -> str:
    """The DOT text of :func:`to_dot` (needs the ``graphviz`` package, not the ``dot``
    program)."""
    return to_dot(graph, title).source


def render(graph, path, title: str | None = None) -> Path:
    """Draw ``graph`` to ``path``; the suffix picks the format (``.svg``, ``.png``, ``.pdf``,
    or ``.gv``/``.dot`` for the DOT text).  Returns the path written.

    Raises ``IRBridgeError`` for an unknown suffix, or, for an image, when Graphviz's ``dot``
    program is missing (saying how to install it) or fails.  The file is written atomically.
    """
    from .io import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_FORMATS and suffix not in SOURCE_SUFFIXES:
        known = ", ".join([*IMAGE_FORMATS, *SOURCE_SUFFIXES])
        raise IRBridgeError(f"cannot draw a graph as {str(path)!r}: unknown suffix "
                            f"{suffix or '(none)'}; use one of {known}")
    dot = to_dot(graph, title)
    if suffix in SOURCE_SUFFIXES:
        with atomic_write(path, "w") as f:
            f.write(dot.source)
        return path
    require_dot()
    graphviz = _graphviz()
    try:
        data = dot.pipe(format=IMAGE_FORMATS[suffix])
    except graphviz.ExecutableNotFound:
        # PATH changed between the check and the call; same advice.
        raise IRBridgeError(DOT_MISSING) from None
    except graphviz.CalledProcessError as exc:
        stderr = (exc.stderr or b"").decode(errors="replace").strip()
        raise IRBridgeError(f"Graphviz `dot` failed drawing {str(path)!r}: "
                            f"{stderr or exc}") from exc
    with atomic_write(path) as f:
        f.write(data)
    return path
