"""Model fuzzing: random valid Keras models through the default pipeline to every target.

Each example (``keras_models.model_specs``) is built in Keras, read into the IR, optimised
with ``default`` and emitted to MDF, ONNX and Keras; every artifact runs in its own runtime
(the ir_bridge MDF engine, onnxruntime, Keras) and so does the IR itself (the interpreter,
before and after the passes, and the ONNX artifact read back into the IR).  Each must match
the source Keras model on a batch of 4 within ``atol = 1e-5 * max(1, max|y|)``.

Quick profile (CI): deterministic (the ``ci`` hypothesis profile of ``tests/strategies.py``),
366 models over the file, no deadline, ~1.5 min on 2 cores.  Long profile, by hand (the
``fuzz`` marker; ``IR_BRIDGE_FUZZ=1`` also loads the random ``fuzz`` hypothesis profile)::

    IR_BRIDGE_FUZZ=1 IR_BRIDGE_FUZZ_EXAMPLES=5000 python -m pytest tests/fuzz -m fuzz -s

(``IR_BRIDGE_FUZZ_LOG=path.jsonl`` records every model, and every failing model as a program
that rebuilds it; ``IR_BRIDGE_FUZZ_KNOWN=1`` stops tolerating the known bugs' stage failures.)
Every bug found has a minimal strict-xfail regression test at the end of this file, and an
entry in ``keras_models.KNOWN_BUGS`` naming the models and stages it explains.
"""

from __future__ import annotations

import json
import os
import time
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("modeci_mdf")
from keras import layers as L  # noqa: E402

import ir_bridge  # noqa: E402
import strategies  # noqa: E402,F401  (registers and loads the ci/fuzz hypothesis profiles)
from ir_bridge.parity import runner_for  # noqa: E402
from mdf_reference import run as run_mdf_reference  # noqa: E402
from keras_models import (KNOWN_BUGS, ModelSpec, known_bugs_of,  # noqa: E402
                          model_specs, randomize)

BATCH = 4
FUZZING = bool(os.environ.get("IR_BRIDGE_FUZZ"))
#: Examples per quick test; the sum (plus the .keras file test) is the CI model count.
CI_EXAMPLES = {"sequential": 100, "functional_image": 160, "functional_other": 100,
               "saved_file": 6}


def quick(name: str) -> settings:
    """The loaded profile (``ci``: derandomized) with this test's example count, no
    deadline (a model takes 0.2-1 s through four runtimes)."""
    return settings(max_examples=CI_EXAMPLES[name], deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def tolerance(reference: list[np.ndarray]) -> float:
    """``1e-5 * max(1, max|y|)`` over the finite values of the reference outputs."""
    peak = max((float(np.max(np.abs(y[np.isfinite(y)]), initial=0.0)) for y in reference),
               default=0.0)
    return 1e-5 * max(1.0, peak)


def mismatch(reference, got, atol) -> str | None:
    """``None`` when ``got`` matches ``reference``, else why not."""
    if len(got) != len(reference):
        return f"{len(got)} outputs, want {len(reference)}"
    for i, (want, y) in enumerate(zip(reference, got)):
        y = np.asarray(y)
        if y.shape != want.shape:
            return f"output {i}: shape {y.shape}, want {want.shape}"
        a, b = np.asarray(want, np.float64), np.asarray(y, np.float64)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        diff = np.where(same, 0.0, np.abs(a - b))
        err = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0.0
        if not err <= atol:
            return f"output {i}: max abs error {err:.3g} > atol {atol:.3g}"
    return None


_MODELS_RUN = {"count": 0}


def keras_one_by_one(model, xs) -> list[np.ndarray]:
    """Keras's outputs computed one sample at a time (batch 1), the second opinion when the
    batch-4 eager call looks wrong (see KERAS-1 below: a bug that needs the batch size to
    equal another dim)."""
    run = runner_for(model)
    rows = [run([x[i:i + 1] for x in xs]) for i in range(len(xs[0]))]
    return [np.concatenate([r[k] for r in rows]) for k in range(len(rows[0]))]


def check_spec(spec: ModelSpec, *, mdf_file=None, batch: int = BATCH,
               reference_engine: bool = True) -> tuple[dict, dict]:
    """Build ``spec``, convert it every way and run every result.

    Stages: ``ir`` (the interpreter on the graph as loaded), ``ir-default`` (after the
    default pipeline), ``mdf`` (the emitted MDF model, or ``mdf_file`` written and read
    back, in the ir_bridge engine), ``mdf-reference`` (the MDF model in modeci_mdf's
    reference engine), ``onnx`` (onnxruntime), ``onnx->ir`` (the ONNX model read back into
    the IR), ``keras`` (the rebuilt Keras model).  Returns ``(problems, known)``: stage ->
    why, for failures no known bug explains and for those a known bug does (by bug id).

    The reference is the Keras model called on the batch.  When a stage disagrees, Keras is
    asked again one sample at a time; if the two Keras answers differ, Keras itself is wrong
    (KERAS-1): every stage is judged against the one-by-one answer instead (the rebuilt
    Keras model run one by one too) and the model is reported under ``known``.
    """
    model = spec.build()
    xs = spec.make_inputs(batch)
    outputs: dict[str, object] = {}  # stage -> outputs, or the failure text

    def stage(name, fn):
        try:
            outputs[name] = [np.asarray(y) for y in fn()]
        except Exception as exc:  # every failure is a finding; keep checking the others
            why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
            if not isinstance(exc, ir_bridge.IRBridgeError):
                why += " | " + traceback.format_exc(limit=-3).replace("\n", " | ")[-800:]
            outputs[name] = why

    def judge(reference) -> dict:
        atol = tolerance(reference)
        failures = {}
        for name, got in outputs.items():
            why = got if isinstance(got, str) else mismatch(reference, got, atol)
            if why is not None:
                failures[name] = why
        return failures

    reference = runner_for(model)(xs)
    try:
        graph = ir_bridge.load(model)
        optimized = ir_bridge.optimize(graph, "default")
    except Exception as exc:
        return _split_known(spec, {"load+optimize": f"{type(exc).__name__}: {exc}"})
    stage("ir", lambda: ir_bridge.run(graph, xs))
    stage("ir-default", lambda: ir_bridge.run(optimized, xs))
    artifacts = {}

    def mdf():
        artifacts["mdf"] = ir_bridge.emit(optimized, "mdf", mdf_file)
        return runner_for(mdf_file if mdf_file is not None else artifacts["mdf"])(xs)

    def onnx():
        artifacts["onnx"] = ir_bridge.emit(optimized, "onnx")
        return runner_for(artifacts["onnx"])(xs)  # one onnxruntime session per model

    def rebuilt():
        artifacts["keras"] = ir_bridge.emit(optimized, "keras")
        return runner_for(artifacts["keras"])(xs)

    stage("mdf", mdf)
    if reference_engine and "mdf" in artifacts:
        stage("mdf-reference", lambda: run_mdf_reference(artifacts["mdf"], xs))
    stage("onnx", onnx)
    if "onnx" in artifacts:
        stage("onnx->ir", lambda: ir_bridge.run(ir_bridge.load(artifacts["onnx"]), xs))
    stage("keras", rebuilt)
    failures = judge(reference)
    known = {}
    if failures:
        second = keras_one_by_one(model, xs)
        if mismatch(reference, second, tolerance(reference)) is not None:
            if "keras" in artifacts:
                stage("keras", lambda: keras_one_by_one(artifacts["keras"], xs))
            failures = judge(second)
            known["reference"] = ("KERAS-1: Keras's batch answer differs from its one-by-one "
                                  "answer; judged against one-by-one")
    _MODELS_RUN["count"] += 1
    if _MODELS_RUN["count"] % 100 == 0:
        keras.backend.clear_session()  # free TensorFlow's graph state of old models
    problems, known_bugs = _split_known(spec, failures)
    return problems, {**known, **known_bugs}


def _split_known(spec, failures) -> tuple[dict, dict]:
    known = {}
    for bug in known_bugs_of(spec):
        for name in bug.stages:
            if name in failures:
                known[name] = f"{bug.bug_id}: {failures.pop(name)}"
    return failures, known


def assert_matches(spec: ModelSpec, **kw):
    problems, _known = check_spec(spec, **kw)
    assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())


@pytest.fixture(scope="module", autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session()


# --------------------------------------------------------------------------- quick profile


@quick("sequential")
@given(spec=model_specs(functional=False))
def test_sequential_models_match_keras(spec):
    assert_matches(spec)


@quick("functional_image")
@given(spec=model_specs(kinds=("image",), functional=True))
def test_functional_image_models_match_keras(spec):
    assert_matches(spec)


@quick("functional_other")
@given(spec=model_specs(kinds=("sequence", "vector", "volume", "tokens"), functional=True))
def test_functional_sequence_vector_volume_token_models_match_keras(spec, tmp_path_factory):
    # The MDF artifact goes through its JSON/YAML writer here (compact float text), read back
    # by the engine; the other quick tests run the in-memory MDF model.
    root = tmp_path_factory.mktemp("mdf")
    suffix = ".yaml" if spec.weight_seed % 4 == 0 else ".json"
    assert_matches(spec, mdf_file=root / f"model{suffix}")


@quick("saved_file")
@given(spec=model_specs(kinds=("image", "sequence"), max_steps=5))
def test_saved_keras_files_convert_with_parity(spec, tmp_path_factory):
    """The file route: the model saved as ``.keras`` (read back with safe_mode) converts to
    every target file; ``check_parity`` runs each file in its own runtime."""
    root = tmp_path_factory.mktemp("saved")
    model = spec.build()
    source = root / "model.keras"
    model.save(source)
    xs = spec.make_inputs(BATCH)
    atol = tolerance(runner_for(model)(xs))
    known = {stage for bug in known_bugs_of(spec) for stage in bug.stages}
    for to, suffix in (("mdf", ".json"), ("onnx", ".onnx"), ("keras", ".keras")):
        out = root / f"out{suffix}"
        ir_bridge.convert(source, to, out)
        if to in known:
            continue  # a known bug's stage: converting must still work
        report = ir_bridge.check_parity(source, out, xs, atol=atol, rtol=0)
        assert report.ok, f"{to}: {report}"


def test_the_strategy_covers_the_supported_layers():
    """The strategy actually draws every supported layer (a generator that quietly stopped
    producing, say, transposed convolutions would test nothing), Sequential and Functional
    models, several inputs and several outputs.  Drawing only (no conversion): ~10 s."""
    seen: set[str] = set()
    n_models = {"sequential": 0, "multi_input": 0, "multi_output": 0}

    def collect(strategy, n):
        @settings(max_examples=n, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(spec=strategy)
        def draw(spec):
            seen.update(spec.layer_classes())
            n_models["sequential"] += spec.sequential
            n_models["multi_input"] += len(spec.inputs) > 1
            n_models["multi_output"] += len(spec.outputs) > 1

        draw()

    collect(model_specs(), 500)
    collect(model_specs(kinds=("volume",)), 150)  # the 3-D layers, drawn rarely above
    from ir_bridge.frontends.keras_layers import supported_layers

    missing = set(supported_layers()) - {"InputLayer"} - seen
    assert not missing, f"never drawn: {sorted(missing)}"
    assert all(v > 0 for v in n_models.values()), n_models


# --------------------------------------------------------------------------- long profile


@pytest.mark.fuzz
def test_long_fuzz(tmp_path_factory, request):
    """Thousands of models (``IR_BRIDGE_FUZZ_EXAMPLES``, default 5000), every input kind,
    Sequential and Functional.  Unlike the quick tests it does not stop at the first
    mismatch: every failing model is logged (``IR_BRIDGE_FUZZ_LOG``, JSON lines) and the test
    fails at the end with the count, so one run finds every distinct bug.  Runs when asked
    for: ``-m fuzz`` or ``IR_BRIDGE_FUZZ=1``."""
    if not (FUZZING or "fuzz" in (request.config.getoption("markexpr") or "")):
        pytest.skip("the long profile runs by hand: pytest tests/fuzz -m fuzz")
    n = int(os.environ.get("IR_BRIDGE_FUZZ_EXAMPLES", "5000"))
    log_path = os.environ.get("IR_BRIDGE_FUZZ_LOG") or str(
        tmp_path_factory.mktemp("fuzzlog") / "fuzz.jsonl")
    root = tmp_path_factory.mktemp("long")
    stats = {"models": 0, "failed": 0, "known": 0, "start": time.time()}

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(spec=model_specs(max_steps=10))
    def run(spec):
        mdf_file = None
        if spec.weight_seed % 3 == 0:
            mdf_file = root / ("m.yaml" if spec.weight_seed % 2 else "m.json")
        try:
            problems, known = check_spec(spec, mdf_file=mdf_file)
        except Exception as exc:  # building the model itself failed: a strategy bug
            problems, known = {"build": f"{type(exc).__name__}: {exc}"}, {}
        stats["models"] += 1
        stats["failed"] += bool(problems)
        stats["known"] += bool(known)
        with open(log_path, "a") as f:
            f.write(json.dumps({"i": stats["models"], "t": round(time.time() - stats["start"], 1),
                                "ok": not problems, "problems": problems, "known": known,
                                "spec": repr(spec) if problems or known else None}) + "\n")

    run()
    elapsed = time.time() - stats["start"]
    print(f"long fuzz: {stats['models']} models in {elapsed:.0f} s, {stats['failed']} failed, "
          f"{stats['known']} hit known bugs; log {log_path}")
    assert stats["failed"] == 0, f"{stats['failed']} of {stats['models']} models failed: see {log_path}"


# --------------------------------------------------------------------------- regressions
# One minimal model per bug the fuzzer found, strict xfail until the fix lands (then the
# xfail turns into an XPASS failure: delete the marker and the KNOWN_BUGS entry).


def _model(inputs_shape, layer):
    x = keras.Input(inputs_shape, name="x")
    return keras.Model(x, layer(x), name="repro")


def _xs(shape, seed=0):
    return [np.random.default_rng(seed).standard_normal((BATCH, *shape)).astype("float32")]


def _assert_close(reference, got):
    why = mismatch(reference, got, tolerance(reference))
    assert why is None, why


def test_bug1_fused_softmax_axis_after_layout_conversion():
    # BUG-1 (fixed in dd8f8e0): Conv2D(activation="softmax") is a softmax over the channels;
    # layout-nchw kept the fused activation's axis=-1, now the width axis.  The ONNX file
    # (onnxruntime) and the MDF file (modeci's reference engine) computed the wrong softmax;
    # the ir_bridge MDF engine hid it by converting back to NHWC with the same mistake.
    model = _model((3, 3, 2), L.Conv2D(2, 1, activation="softmax", name="conv"))
    randomize(model, 1)
    xs = _xs((3, 3, 2))
    graph = ir_bridge.optimize(ir_bridge.load(model), "default")
    reference = runner_for(model)(xs)
    _assert_close(reference, ir_bridge.run(ir_bridge.api.prepare(graph, "onnx"), xs))
    _assert_close(reference, runner_for(ir_bridge.emit(graph, "onnx"))(xs))
    _assert_close(reference, run_mdf_reference(ir_bridge.emit(graph, "mdf"), xs))


def test_bug2_mdf_resize_runs_in_the_reference_engine():
    model = _model((3, 3, 1), L.UpSampling2D(2, name="up"))
    xs = _xs((3, 3, 1))
    mdf_model = ir_bridge.emit(ir_bridge.optimize(ir_bridge.load(model)), "mdf")
    _assert_close(runner_for(model)(xs), run_mdf_reference(mdf_model, xs))


def test_bug3_grouped_conv_unequal_strides_to_keras():
    model = _model((5, 5, 2), L.Conv2D(4, 1, strides=(1, 2), groups=2, name="conv"))
    randomize(model, 1)
    xs = _xs((5, 5, 2))
    rebuilt = ir_bridge.emit(ir_bridge.optimize(ir_bridge.load(model)), "keras")
    _assert_close(runner_for(model)(xs), runner_for(rebuilt)(xs))


def test_bug4_3d_same_padding_negative_pad():
    # BUG-4 (fixed): depth 3, window 1, stride 3: one output; TensorFlow reads depth index 1
    # (leading pad trunc((0*3 + 1 - 3) / 2) = -1); ir_bridge read index 0 until the Keras
    # frontend learnt to crop.  1-D/2-D kernels clamp the pad at 0.  Affects Conv3D,
    # MaxPooling3D, AveragePooling3D (tests/frontends/test_keras_3d_same.py has the rest).
    model = _model((3, 3, 3, 1), L.MaxPooling3D(1, strides=3, padding="same", name="pool"))
    xs = _xs((3, 3, 3, 1))
    _assert_close(runner_for(model)(xs), ir_bridge.run(ir_bridge.load(model), xs))


@pytest.mark.parametrize("layers", [
    [L.Conv1D(2, 2, padding="causal", groups=2, name="conv")],
    [L.ZeroPadding1D((1, 0), name="pad"), L.DepthwiseConv1D(2, name="depthwise")],
], ids=["grouped_causal_conv1d", "left_padded_depthwise"])
def test_bug12_depthwise_conv1d_causal_to_keras(layers):
    x = keras.Input((5, 2), name="x")
    y = x
    for layer in layers:
        y = layer(y)
    model = randomize(keras.Model(x, y, name="repro"), 1)
    xs = _xs((5, 2))
    rebuilt = ir_bridge.emit(ir_bridge.optimize(ir_bridge.load(model)), "keras")
    _assert_close(runner_for(model)(xs), runner_for(rebuilt)(xs))


def test_exponential_activation_converts():
    """``exponential`` (left out of the random models, see ``SAFE_ACTIVATIONS``) as a Dense
    activation and as a layer, on bounded inputs, to every target."""
    x = keras.Input((3, 3, 2), name="x")
    y = L.Dense(4, activation="exponential", name="dense")(L.Activation("tanh")(x))
    y = L.Activation("exponential", name="exp")(L.Activation("sigmoid")(y))
    model = randomize(keras.Model(x, y, name="exp"), 1)
    xs = _xs((3, 3, 2))
    reference = runner_for(model)(xs)
    graph = ir_bridge.optimize(ir_bridge.load(model))
    _assert_close(reference, ir_bridge.run(graph, xs))
    for to in ("mdf", "onnx", "keras"):
        _assert_close(reference, runner_for(ir_bridge.emit(graph, to))(xs))
    _assert_close(reference, run_mdf_reference(ir_bridge.emit(graph, "mdf"), xs))


def _per_sample_bias_model():
    x = keras.Input((4, 1), name="x")
    mean = L.GlobalAveragePooling1D(keepdims=True, name="mean")(x)  # (N, 1, 1)
    return keras.Model(x, L.Add(name="add")([x, mean]), name="repro")


@pytest.mark.xfail(strict=True, reason="KERAS-1 (upstream, Keras 3.15 TF backend): ops.add "
                   "takes an (N, 1, ..., 1) operand for a bias when N equals the other "
                   "operand's axis 1 or last axis, and adds it along that axis")
def test_keras1_keras_adds_a_per_sample_scalar_correctly():
    # keras/src/backend/tensorflow/numpy.py add(): the "bias_add special case" squeezes x2
    # to its non-1 dims; with a concrete batch of 4 and x1 of shape (4, 4, 1), (4, 1, 1)
    # looks like a bias of the 4 "channels" of axis 1.  The fuzzer's reference detects it
    # (batch answer != one-by-one answer) and judges against the one-by-one answer.
    model = _per_sample_bias_model()
    x = _xs((4, 1))[0]
    np.testing.assert_allclose(np.asarray(model(x)), x + x.mean(1, keepdims=True), atol=1e-6)


def test_keras1_ir_bridge_is_right_where_keras_is_not():
    model = _per_sample_bias_model()
    x = _xs((4, 1))[0]
    want = x + x.mean(1, keepdims=True)
    graph = ir_bridge.optimize(ir_bridge.load(model))
    for got in (ir_bridge.run(graph, [x]), runner_for(ir_bridge.emit(graph, "onnx"))([x]),
                runner_for(ir_bridge.emit(graph, "mdf"))([x])):
        np.testing.assert_allclose(got[0], want, atol=1e-6)
    np.testing.assert_allclose(keras_one_by_one(model, [x])[0], want, atol=1e-6)


def test_the_3d_shift_rule_matches_tensorflow():
    """The rule ``keras_models.tf_3d_same_shift`` (the one the Keras frontend's crop for
    BUG-4 implements) predicts what TensorFlow does, window by window."""
    from keras_models import LayerCall, tf_3d_same_shift

    for n, k, s in [(3, 1, 3), (5, 1, 5), (5, 1, 3), (4, 1, 3), (6, 1, 4), (3, 1, 4), (7, 2, 5)]:
        shape = (n, 2, 2, 1)
        call = LayerCall("MaxPooling3D", dict(pool_size=(k, 1, 1), strides=(s, 1, 1),
                                              padding="same"), (0,))
        (shift, _, _) = tf_3d_same_shift(call, shape)
        x = np.arange(n * 4, dtype="float32").reshape(1, *shape)
        y = _model(shape, L.MaxPooling3D((k, 1, 1), strides=(s, 1, 1), padding="same"))(x)
        first = int(np.asarray(y)[0, 0, 0, 0, 0]) // 4  # the depth index of the 1st window
        assert first == shift + (k - 1), (n, k, s, first, shift)


def test_known_bug_registry_names_real_tests():
    names = set(globals())
    for bug in KNOWN_BUGS.values():
        assert bug.test in names, f"{bug.bug_id}: no regression test {bug.test}"

