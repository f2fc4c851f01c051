"""The hostile-file corpus: broken, hostile and absurd inputs in every format, as a table.

Each :class:`Case` builds its file(s) into a directory (small files, generated at test time:
nothing binary is committed) and says what must happen: which typed
:class:`~ir_bridge.errors.IRBridgeError` subclass the API raises, and a fragment of its
message.  ``tests/hostile/test_hostile_files.py`` runs every case through the Python API
and through the CLI (exit 2, one line on stderr, no traceback, no file left behind).

Actions:

* ``load``: ``ir_bridge.load(path)``; CLI ``convert PATH --to onnx -o OUT``.
* ``run``: ``ir_bridge.run(model, [np.load(x) ...])``; CLI ``run MODEL --input X -o OUT``
  (for inputs the CLI's ``np.load`` refuses, the API part checks that ``np.load`` with
  ``allow_pickle=False``, as the CLI calls it, raises).
* ``emit``: loads fine, the backend refuses; API ``ir_bridge.convert(path, to, out)``; CLI
  ``convert PATH --to TO -o OUT``.

Hostile MDF *expressions* (``__import__``, attribute walks, power towers…) and YAML tags are
covered by ``tests/engine/test_mdf_hostile.py``; the MDF cases here are structural (types,
edges, weights, shapes, sizes) plus one expression and one YAML tag through the CLI's
convert path.

Run as a script to write the corpus to a directory for a look::

    python tests/hostile/make_corpus.py /tmp/hostile_corpus
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ir_bridge.errors import (ExecutionError, InvalidModelError, IRBridgeError,
                              UnsafeExpressionError, UnsupportedLayerError)

CANARY = "CANARY"


@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(dir) -> path`` writes it (``run`` cases return the model
    path; their inputs are ``inputs(dir) -> [npy paths]``), ``error`` is the exact error
    type the API raises and ``match`` a fragment of its message."""

    name: str
    fmt: str
    build: Callable[[Path], Path]
    error: type
    match: str
    action: str = "load"
    inputs: Callable[[Path], list] | None = None
    to: str = "onnx"
    cli_extra: tuple = ()
    api_options: dict = field(default_factory=dict)
    needs: tuple = ()  # optional modules (keras, onnx) the case needs
    note: str = ""
    #: The CLI reads the inputs with ``np.load(allow_pickle=False)`` before any API call:
    #: no API part (the CLI part is the test).
    cli_only: bool = False
    #: ``"BUG-n: why"`` when the API / CLI part fails today (strict xfail).
    xfail_api: str | None = None
    xfail_cli: str | None = None
    #: The output's parent directory is an existing *file* (an unwritable -o).
    out_under_file: bool = False


CASES: list[Case] = []

def case(name, fmt, error, match, **kw):
    def wrap(fn):
        CASES.append(Case(name, fmt, fn, error, match, **kw))
        return fn

    return wrap


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# =========================================================================== ONNX

def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def onnx_dense(*, w=None, opset: int = 17, extra_nodes=(), out="y", nodes=None,
               inputs=None, initializers=None, out_shape=("N", 3)):
    """``x (N, 4) -> Gemm(W (4, 3), B) -> Relu -> y``, or the parts given (every case
    passes the ONNX checker except for the one thing it breaks)."""
    onnx, TP, helper, nh = _onnx()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype("float32") if w is None else w
    init = initializers if initializers is not None else [
        nh.from_array(w, "W"), nh.from_array(np.zeros(3, "float32"), "B")]
    nodes = nodes if nodes is not None else [
        helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="dense"),
        helper.make_node("Relu", ["h"], [out], name="relu")]
    graph = helper.make_graph(
        list(nodes) + list(extra_nodes), "hostile",
        inputs if inputs is not None else [helper.make_tensor_value_info("x", TP.FLOAT,
                                                                         ["N", 4])],
        [helper.make_tensor_value_info(out, TP.FLOAT, list(out_shape))], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def raw_tensor(name: str, dims, raw: bytes):
    """A float TensorProto whose ``dims`` and ``raw_data`` need not agree
    (``helper.make_tensor`` would refuse)."""
    onnx, TP, helper, nh = _onnx()
    t = onnx.TensorProto()
    t.name, t.data_type = name, TP.FLOAT
    t.dims.extend(dims)
    t.raw_data = raw
    return t


def valid_onnx_bytes() -> bytes:
    return onnx_dense().SerializeToString()


def _save_onnx(path: Path, model) -> Path:
    return write(path, model.SerializeToString())


@case("onnx_empty", "onnx", InvalidModelError, "no graph outputs", needs=("onnx",))
def _(d):
    return write(d / "empty.onnx", b"")


@case("onnx_random_bytes", "onnx", InvalidModelError, "not a readable ONNX model",
      needs=("onnx",))
def _(d):
    return write(d / "random.onnx", random_bytes(4096))


@case("onnx_truncated", "onnx", InvalidModelError, "truncated.onnx",
      needs=("onnx",))
def _(d):
    data = valid_onnx_bytes()
    return write(d / "truncated.onnx", data[: len(data) // 2])


@case("onnx_text_file", "onnx", InvalidModelError, "text.onnx", needs=("onnx",))
def _(d):
    return write(d / "text.onnx", json.dumps({"graph": {"node": []}}))


@case("onnx_corrupted_bytes", "onnx", InvalidModelError, "corrupted.onnx", needs=("onnx",),
      note="every 7th byte of a valid model flipped")
def _(d):
    data = bytearray(valid_onnx_bytes())
    for i in range(3, len(data), 7):
        data[i] ^= 0xA5
    return write(d / "corrupted.onnx", bytes(data))


@case("onnx_initializer_too_short", "onnx", InvalidModelError, "W", needs=("onnx",),
      note="W says 4x3 floats, its raw data holds 5")
def _(d):
    w = raw_tensor("W", [4, 3], np.ones(5, "float32").tobytes())
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "short_init.onnx", onnx_dense(initializers=[
        w, nh.from_array(np.zeros(3, "float32"), "B")]))


@case("onnx_initializer_wrong_shape", "onnx", InvalidModelError, "wrong_w.onnx", needs=("onnx",),
      note="W is 5x3 but x has 4 features")
def _(d):
    return _save_onnx(d / "wrong_w.onnx", onnx_dense(w=np.ones((5, 3), "float32")))


@case("onnx_dangling_input", "onnx", InvalidModelError, "nowhere", needs=("onnx",))
def _(d):
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "dangling.onnx", onnx_dense(nodes=[
        helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="dense"),
        helper.make_node("Add", ["h", "nowhere"], ["y"], name="add")]))


@case("onnx_cycle", "onnx", InvalidModelError, "cycle.onnx", needs=("onnx",))
def _(d):
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "cycle.onnx", onnx_dense(nodes=[
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Relu", ["b"], ["y"], name="out")], initializers=[],
        out_shape=["N", 4]))


@case("onnx_unknown_op", "onnx", UnsupportedLayerError, "FrobnicateTensor", needs=("onnx",))
def _(d):
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "unknown_op.onnx", onnx_dense(nodes=[
        helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="dense"),
        helper.make_node("FrobnicateTensor", ["h"], ["y"], name="frob")]))


@case("onnx_foreign_domain", "onnx", UnsupportedLayerError, "com.evil", needs=("onnx",))
def _(d):
    onnx, TP, helper, nh = _onnx()
    model = onnx_dense(nodes=[
        helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="dense"),
        helper.make_node("System", ["h"], ["y"], name="shell", domain="com.evil",
                         command=f"touch {d / CANARY}")])
    model.opset_import.append(helper.make_opsetid("com.evil", 1))
    return _save_onnx(d / "foreign.onnx", model)


@case("onnx_control_flow", "onnx", UnsupportedLayerError, "If", needs=("onnx",))
def _(d):
    onnx, TP, helper, nh = _onnx()
    branch = helper.make_graph([helper.make_node("Identity", ["h"], ["r"])], "branch", [],
                               [helper.make_tensor_value_info("r", TP.FLOAT, None)])
    cond = nh.from_array(np.array(True), "cond")
    return _save_onnx(d / "control.onnx", onnx_dense(nodes=[
        helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="dense"),
        helper.make_node("If", ["cond"], ["y"], name="branching", then_branch=branch,
                         else_branch=branch)],
        initializers=[nh.from_array(np.ones((4, 3), "float32"), "W"),
                      nh.from_array(np.zeros(3, "float32"), "B"), cond]))


@case("onnx_absurd_initializer_dims", "onnx", InvalidModelError, "W", needs=("onnx",),
      note="W claims 100000 x 100000 floats (40 GB) with 48 bytes of data")
def _(d):
    w = raw_tensor("W", [100_000, 100_000], np.ones(12, "float32").tobytes())
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "absurd_init.onnx", onnx_dense(initializers=[
        w, nh.from_array(np.zeros(3, "float32"), "B")]))


@case("onnx_absurd_reshape", "onnx", ExecutionError, "cannot reshape", action="run",
      needs=("onnx",), inputs=lambda d: [npy(d, "x.npy", np.ones((2, 4), "float32"))],
      note="a constant Reshape to 10**6 x 10**6 per sample: loads (nothing allocated), "
      "fails to run")
def _(d):
    onnx, TP, helper, nh = _onnx()
    shape = nh.from_array(np.array([-1, 10**6, 10**6], "int64"), "shape")
    return _save_onnx(d / "absurd_reshape.onnx", onnx_dense(nodes=[
        helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")],
        initializers=[shape], out_shape=["N", 10**6, 10**6]))


@case("onnx_negative_dims", "onnx", InvalidModelError, "negative.onnx", needs=("onnx",))
def _(d):
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "negative.onnx", onnx_dense(
        inputs=[helper.make_tensor_value_info("x", TP.FLOAT, ["N", -4])]))


@case("onnx_external_data_traversal", "onnx", InvalidModelError, "external.onnx",
      needs=("onnx",), note="an initializer stored 'externally' in ../../../../etc/passwd")
def _(d):
    onnx, TP, helper, nh = _onnx()
    w = raw_tensor("W", [4, 3], b"")
    w.ClearField("raw_data")
    w.data_location = TP.EXTERNAL
    for key, value in (("location", "../../../../../../etc/passwd"), ("offset", "0"),
                       ("length", "48")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return _save_onnx(d / "external.onnx", onnx_dense(initializers=[
        w, nh.from_array(np.zeros(3, "float32"), "B")]))


@case("onnx_external_data_symlink", "onnx", InvalidModelError, "symbolic link",
      needs=("onnx",), note="external data in weights.bin, a symlink to a file elsewhere")
def _(d):
    onnx, TP, helper, nh = _onnx()
    elsewhere = write(d / "elsewhere" / "secret.bin", np.arange(12, dtype="float32").tobytes())
    os.symlink(elsewhere, d / "weights.bin")
    w = raw_tensor("W", [4, 3], b"")
    w.ClearField("raw_data")
    w.data_location = TP.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", "48")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return _save_onnx(d / "symlink.onnx", onnx_dense(initializers=[
        w, nh.from_array(np.zeros(3, "float32"), "B")]))


@case("onnx_opset_from_the_future", "onnx", UnsupportedLayerError, "opset 9999",
      needs=("onnx",))
def _(d):
    return _save_onnx(d / "future.onnx", onnx_dense(opset=9999))


@case("onnx_untyped_input", "onnx", InvalidModelError, "untyped.onnx", needs=("onnx",))
def _(d):
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "untyped.onnx", onnx_dense(
        inputs=[helper.make_value_info("x", onnx.TypeProto())]))


@case("onnx_conv_weight_rank", "onnx", InvalidModelError, "rank.onnx", needs=("onnx",),
      note="a Conv whose weight is a matrix")
def _(d):
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "rank.onnx", onnx_dense(
        inputs=[helper.make_tensor_value_info("x", TP.FLOAT, ["N", 1, 5, 5])],
        nodes=[helper.make_node("Conv", ["x", "W"], ["y"], name="conv")],
        initializers=[nh.from_array(np.ones((3, 3), "float32"), "W")],
        out_shape=["N", 3, 3, 3]))


# =========================================================================== Keras

def keras_zip(path: Path, members: dict) -> Path:
    """A ``.keras`` archive with ``members`` (name -> bytes/str/dict as JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            if isinstance(data, (dict, list)):
                data = json.dumps(data)
            z.writestr(name, data)
    return path


_KERAS_METADATA = {"keras_version": "3.15.0", "date_saved": "2026-11-23@00:00:00"}


def keras_config(layers: list, name: str = "hostile") -> dict:
    """The ``config.json`` of a Sequential model with ``layers`` (Keras 3 serialisation)."""
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": name, "trainable": True, "dtype": "float32",
                       "layers": [{"module": "keras.layers", "class_name": "InputLayer",
                                   "config": {"batch_shape": [None, 4], "dtype": "float32",
                                              "name": "x"}}] + layers},
            "registered_name": None, "build_config": {"input_shape": [None, 4]}}


def _dense_layer(units=3, name="dense"):
    return {"module": "keras.layers", "class_name": "Dense",
            "config": {"name": name, "units": units, "activation": "relu", "use_bias": True,
                       "dtype": "float32", "trainable": True},
            "registered_name": None, "build_config": {"input_shape": [None, 4]}}


@case("keras_not_a_zip", "keras", InvalidModelError, "safe_mode=True", needs=("keras",))
def _(d):
    return write(d / "random.keras", random_bytes(2048, 1))


@case("keras_empty", "keras", InvalidModelError, "Keras cannot load it", needs=("keras",))
def _(d):
    return write(d / "empty.keras", b"")


@case("keras_zip_without_config", "keras", InvalidModelError, "Keras cannot load it",
      needs=("keras",))
def _(d):
    return keras_zip(d / "noconfig.keras", {"metadata.json": _KERAS_METADATA,
                                            "readme.txt": "no config here"})


@case("keras_config_not_json", "keras", InvalidModelError, "Keras cannot load it",
      needs=("keras",))
def _(d):
    return keras_zip(d / "badjson.keras", {"metadata.json": _KERAS_METADATA,
                                           "config.json": '{"class_name": "Sequential", '})


@case("keras_lambda_layer", "keras", InvalidModelError, "Lambda", needs=("keras",),
      note="a Lambda whose marshalled code would touch a canary: refused in safe mode")
def _(d):
    lam = {"module": "keras.layers", "class_name": "Lambda",
           "config": {"name": "evil", "trainable": True, "dtype": "float32",
                      "function": {"class_name": "__lambda__",
                                   "config": {"code": "4wEAAAAAAAAA", "defaults": None,
                                              "closure": None}},
                      "arguments": {}},
           "registered_name": None}
    return keras_zip(d / "lambda.keras", {"metadata.json": _KERAS_METADATA,
                                          "config.json": keras_config([lam])})


@case("keras_unknown_class", "keras", InvalidModelError, "could not be deserialized",
      needs=("keras",))
def _(d):
    evil = {"module": "evil.layers", "class_name": "EvilLayer",
            "config": {"name": "evil", "command": f"touch {d / CANARY}"},
            "registered_name": "evil>EvilLayer"}
    return keras_zip(d / "unknown.keras", {"metadata.json": _KERAS_METADATA,
                                           "config.json": keras_config([evil])})


@case("keras_module_outside_keras", "keras", InvalidModelError, "Keras cannot load it",
      needs=("keras",), note="a class from the 'os' module: deserialising must not import it")
def _(d):
    evil = {"module": "os", "class_name": "system",
            "config": {"command": f"touch {d / CANARY}"}, "registered_name": None}
    return keras_zip(d / "os_module.keras", {"metadata.json": _KERAS_METADATA,
                                             "config.json": keras_config([evil])})


@case("keras_truncated_weights", "keras", InvalidModelError, "Keras cannot load it",
      needs=("keras",), note="a valid config; model.weights.h5 cut to 100 bytes")
def _(d):
    return keras_zip(d / "trunc_weights.keras", {
        "metadata.json": _KERAS_METADATA, "config.json": keras_config([_dense_layer()]),
        "model.weights.h5": b"\x89HDF\r\n\x1a\n" + random_bytes(92, 2)})


@case("keras_truncated_archive", "keras", InvalidModelError, "Keras cannot load it",
      needs=("keras",), note="a real saved model, cut in half")
def _(d):
    data = saved_keras_bytes()
    return write(d / "truncated.keras", data[: len(data) // 2])


@case("keras_absurd_units", "keras", InvalidModelError, "Keras cannot load it",
      needs=("keras",), note="Dense(units=10**12): building it would want 16 TB")
def _(d):
    return keras_zip(d / "absurd_units.keras", {
        "metadata.json": _KERAS_METADATA,
        "config.json": keras_config([_dense_layer(units=10**12)])})


@case("keras_negative_units", "keras", InvalidModelError, "Keras cannot load it",
      needs=("keras",))
def _(d):
    return keras_zip(d / "negative_units.keras", {
        "metadata.json": _KERAS_METADATA,
        "config.json": keras_config([_dense_layer(units=-3)])})


@case("h5_random_bytes", "h5", InvalidModelError, "Keras cannot load it", needs=("keras",))
def _(d):
    return write(d / "random.h5", random_bytes(2048, 3))


@case("h5_truncated", "h5", InvalidModelError, "Keras cannot load it", needs=("keras",),
      note="a real legacy .h5 model, cut in half")
def _(d):
    data = saved_h5_bytes()
    return write(d / "truncated.h5", data[: len(data) // 2])


@case("h5_empty", "h5", InvalidModelError, "Keras cannot load it", needs=("keras",))
def _(d):
    return write(d / "empty.h5", b"")


_SAVED: dict[str, bytes] = {}


def _saved(suffix: str) -> bytes:
    """Bytes of a small real Keras model saved as ``suffix`` (made once per process)."""
    if suffix not in _SAVED:
        import tempfile

        import keras

        x = keras.Input((4,), name="x")
        model = keras.Model(x, keras.layers.Dense(3, name="dense")(x), name="small")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"model{suffix}"
            model.save(path)
            _SAVED[suffix] = path.read_bytes()
    return _SAVED[suffix]


def saved_keras_bytes() -> bytes:
    return _saved(".keras")


def saved_h5_bytes() -> bytes:
    return _saved(".h5")


# =========================================================================== MDF

def mdf_doc(nodes: dict, edges: dict, *, name: str = "m", graph: str = "g",
            metadata: dict | None = None) -> dict:
    g = {"nodes": nodes, "edges": edges}
    if metadata:
        g["metadata"] = metadata
    return {name: {"format": "ModECI MDF v0.4", "graphs": {graph: g}}}


def mdf_dense(w=None, b=None, shape=(1, 4), value="in0 @ W + B") -> dict:
    """``x`` (a (batch, 4) input) -> ``dense`` (``x @ W + B``)."""
    w = np.ones((4, 3)).tolist() if w is None else w
    b = [0.0, 0.0, 0.0] if b is None else b
    return mdf_doc(
        {"x": {"input_ports": {"x": {"shape": list(shape)}},
               "output_ports": {"out": {"value": "x"}}},
         "dense": {"input_ports": {"in0": {}},
                   "parameters": {"W": {"value": w}, "B": {"value": b}},
                   "output_ports": {"out": {"value": value}}}},
        {"e": {"sender": "x", "receiver": "dense", "sender_port": "out",
               "receiver_port": "in0"}})


def write_json(path: Path, doc) -> Path:
    return write(path, json.dumps(doc))


def valid_mdf_text() -> str:
    return json.dumps(mdf_dense(), indent=1)


@case("mdf_truncated_json", "mdf", InvalidModelError, "invalid JSON")
def _(d):
    text = valid_mdf_text()
    return write(d / "truncated.json", text[: len(text) // 2])


@case("mdf_truncated_yaml", "mdf", InvalidModelError, "YAML")
def _(d):
    import yaml

    text = yaml.safe_dump(mdf_dense())
    return write(d / "truncated.yaml", text[: len(text) // 2] + "\n  - [")


@case("mdf_nodes_is_a_list", "mdf", InvalidModelError, "nodes")
def _(d):
    doc = mdf_dense()
    g = doc["m"]["graphs"]["g"]
    g["nodes"] = list(g["nodes"].values())
    return write_json(d / "list_nodes.json", doc)


@case("mdf_shape_is_a_string", "mdf", InvalidModelError, "shape")
def _(d):
    return write_json(d / "string_shape.json", mdf_dense(shape="(1, 4)"))


@case("mdf_weight_is_a_string", "mdf", UnsafeExpressionError, "'ones'",
      note="a string weight is an expression; this one calls a function off the allow-list")
def _(d):
    return write_json(d / "string_weight.json", mdf_dense(w="ones(4, 3)"))


@case("mdf_dangling_edge_sender", "mdf", InvalidModelError, "no node 'ghost'")
def _(d):
    doc = mdf_dense()
    doc["m"]["graphs"]["g"]["edges"]["e"]["sender"] = "ghost"
    return write_json(d / "dangling_sender.json", doc)


@case("mdf_dangling_edge_port", "mdf", InvalidModelError, "no input port")
def _(d):
    doc = mdf_dense()
    doc["m"]["graphs"]["g"]["edges"]["e"]["receiver_port"] = "in7"
    return write_json(d / "dangling_port.json", doc)


@case("mdf_cycle", "mdf", InvalidModelError, "cycle")
def _(d):
    doc = mdf_dense(value="in0 @ W + B + in1")
    g = doc["m"]["graphs"]["g"]
    g["nodes"]["dense"]["input_ports"]["in1"] = {}
    g["nodes"]["echo"] = {"input_ports": {"in0": {}}, "output_ports": {"out": {"value": "in0"}}}
    g["edges"]["e2"] = {"sender": "dense", "receiver": "echo", "sender_port": "out",
                        "receiver_port": "in0"}
    g["edges"]["e3"] = {"sender": "echo", "receiver": "dense", "sender_port": "out",
                        "receiver_port": "in1"}
    return write_json(d / "cycle.json", doc)


@case("mdf_missing_weight", "mdf", UnsafeExpressionError, "undefined name 'W'")
def _(d):
    doc = mdf_dense()
    del doc["m"]["graphs"]["g"]["nodes"]["dense"]["parameters"]["W"]
    return write_json(d / "missing_weight.json", doc)


@case("mdf_weight_input_mismatch", "mdf", InvalidModelError, "dense",
      note="W is (5, 3) but the input has 4 features")
def _(d):
    return write_json(d / "mismatch.json", mdf_dense(w=np.ones((5, 3)).tolist()))


@case("mdf_ragged_weight", "mdf", InvalidModelError, "numeric")
def _(d):
    return write_json(d / "ragged.json", mdf_dense(w=[[1.0, 2.0, 3.0]] * 3 + [[1.0]]))


@case("mdf_huge_input_shape", "mdf", InvalidModelError, "larger than",
      note="an input of 10**6 x 10**6 per sample")
def _(d):
    return write_json(d / "huge_input.json", mdf_dense(shape=(1, 10**6, 10**6)))


@case("mdf_negative_shape", "mdf", InvalidModelError, "non-negative")
def _(d):
    return write_json(d / "negative_shape.json", mdf_dense(shape=(1, -4)))


@case("mdf_no_graphs", "mdf", InvalidModelError, "no graph")
def _(d):
    return write_json(d / "no_graphs.json", {"m": {"format": "ModECI MDF v0.4",
                                                   "graphs": {}}})


@case("mdf_top_level_list", "mdf", InvalidModelError, "not an MDF model")
def _(d):
    return write_json(d / "list.json", [1, 2, 3])


@case("mdf_import_expression_via_cli", "mdf", UnsafeExpressionError, "may be called",
      note="the one expression case here: through convert, nothing written, no canary")
def _(d):
    return write_json(d / "import.json",
                      mdf_dense(value=f"__import__('os').system('touch {d / CANARY}')"))


@case("mdf_yaml_python_tag_via_cli", "mdf", InvalidModelError, "unsafe YAML")
def _(d):
    return write(d / "tag.yaml", f"m: !!python/object/apply:os.system ['touch {d / CANARY}']\n")


@case("mdf_unknown_suffix", "mdf", IRBridgeError, "model.txt",
      note="a suffix no frontend reads")
def _(d):
    return write(d / "model.txt", valid_mdf_text())


@case("missing_file", "any", IRBridgeError, "no such file")
def _(d):
    return d / "does_not_exist.onnx"


# =========================================================================== run inputs

def good_mdf(d: Path) -> Path:
    """A valid MDF model taking (batch, 4) float inputs."""
    return write_json(d / "model.json", mdf_dense())


def npy(d: Path, name: str, array, **kw) -> Path:
    path = d / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, **kw)
    return path


@case("npy_wrong_shape", "npy", ExecutionError, "does not match", action="run",
      inputs=lambda d: [npy(d, "x.npy", np.ones((2, 5), "float32"))])
def _(d):
    return good_mdf(d)


@case("npy_wrong_rank", "npy", ExecutionError, "does not match", action="run",
      inputs=lambda d: [npy(d, "x.npy", np.ones((2, 2, 4), "float32"))])
def _(d):
    return good_mdf(d)


@case("npy_string_dtype", "npy", ExecutionError, "not numeric", action="run",
      inputs=lambda d: [npy(d, "x.npy", np.array([["a", "b", "c", "d"]]))])
def _(d):
    return good_mdf(d)


@case("npy_complex_dtype", "npy", ExecutionError, "complex", action="run",
      inputs=lambda d: [npy(d, "x.npy", np.ones((2, 4), "complex64"))])
def _(d):
    return good_mdf(d)


class _Payload:
    """Unpickling this runs ``touch CANARY``: a pickled .npy must never be unpickled."""

    def __init__(self, canary):
        self.canary = str(canary)

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


@case("npy_pickled_object_array", "npy", IRBridgeError, "cannot read input", action="run",
      cli_only=True, note="an object array whose unpickling would run `touch CANARY`",
      inputs=lambda d: [npy(d, "x.npy", np.array([_Payload(d / CANARY), None], dtype=object),
                            allow_pickle=True)])
def _(d):
    return good_mdf(d)


@case("npy_truncated", "npy", IRBridgeError, "cannot read input", action="run", cli_only=True,
      inputs=lambda d: [write(d / "x.npy", npy(d, "full.npy",
                                                np.ones((64, 4), "float32")).read_bytes()[:300])])
def _(d):
    return good_mdf(d)


@case("npy_not_npy", "npy", IRBridgeError, "cannot read input", action="run", cli_only=True,
      inputs=lambda d: [write(d / "x.npy", "1.0, 2.0, 3.0, 4.0\n")])
def _(d):
    return good_mdf(d)


@case("npy_absurd_header_shape", "npy", IRBridgeError, "cannot read input", action="run",
      cli_only=True,
      inputs=lambda d: [write(d / "x.npy", _npy_header((10**7, 10**7)) + b"\0" * 64)],
      note="the header promises 10**14 floats; the file holds 64 bytes")
def _(d):
    return good_mdf(d)


@case("npy_too_many_inputs", "npy", ExecutionError, "takes 1", action="run",
      inputs=lambda d: [npy(d, "a.npy", np.ones((2, 4), "float32")),
                        npy(d, "b.npy", np.ones((2, 4), "float32"))])
def _(d):
    return good_mdf(d)


@case("npy_zero_dim_array", "npy", ExecutionError, "does not match",
      action="run", inputs=lambda d: [npy(d, "x.npy", np.float32(1.0))],
      note="a 0-d array")
def _(d):
    return good_mdf(d)


def _npy_header(shape) -> bytes:
    header = repr({"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


# =========================================================================== backends refuse

@case("emit_wrong_output_suffix", "mdf", IRBridgeError, "writes .json, .yaml, .yml files", action="emit",
      to="mdf", note="convert --to mdf -o model.onnx")
def _(d):
    return good_mdf(d)


@case("emit_unsupported_opset", "mdf", IRBridgeError, "opset", action="emit", to="onnx",
      cli_extra=("--opset", "3"), api_options={"opset": 3})
def _(d):
    return good_mdf(d)


@case("emit_keras_cannot_express", "onnx", UnsupportedLayerError, "batch axis",
      action="emit", to="keras", needs=("onnx", "keras"),
      note="a Transpose that moves the batch axis: no Keras layer does that")
def _(d):
    onnx, TP, helper, nh = _onnx()
    return _save_onnx(d / "batch_transpose.onnx", onnx_dense(
        inputs=[helper.make_tensor_value_info("x", TP.FLOAT, [2, 4])],
        nodes=[helper.make_node("Transpose", ["x"], ["y"], name="swap", perm=[1, 0])],
        initializers=[], out_shape=[4, 2]))


@case("emit_keras_wrong_output_suffix", "mdf", IRBridgeError, "model.txt", action="emit",
      to="keras", needs=("keras",),
)
def _(d):
    return good_mdf(d)


@case("emit_output_under_a_file", "mdf", IRBridgeError, "out", action="emit", to="onnx",
      out_under_file=True, note="-o out/model.onnx where out is an existing file")
def _(d):
    return good_mdf(d)


def output_name(c: Case) -> str:
    """The ``-o`` file of a case's CLI run."""
    if c.action == "run":
        return "y.npy"
    if c.name == "emit_wrong_output_suffix":
        return "model.onnx"
    if c.name == "emit_keras_wrong_output_suffix":
        return "model.txt"
    return {"onnx": "model.onnx", "mdf": "model.json", "keras": "model.keras"}[c.to]


def main(argv=None) -> int:
    """Write every case's files under ``argv[0]`` (one directory per case)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: make_corpus.py OUTDIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    for c in CASES:
        d = root / c.name
        d.mkdir(parents=True, exist_ok=True)
        try:
            c.build(d)
            if c.inputs:
                c.inputs(d)
        except ModuleNotFoundError as exc:
            print(f"{c.name}: skipped ({exc})")
            continue
        print(f"{c.name:36} {c.fmt:6} {c.action:5} -> {c.error.__name__}: {c.match!r}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
