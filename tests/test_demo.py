"""The MNIST demo on a small setting: the table's numbers and the files it writes.

One run through the Python API (cnn_dropout: it has the Dropout and Flatten the passes
remove) and one through ``ir-bridge demo`` (mlp_128_128), each on a few hundred images for
one epoch; the failure paths are checked without training.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("modeci_mdf")
pytest.importorskip("matplotlib")
pytest.importorskip("rich")

from ir_bridge import demo, viz  # noqa: E402
from ir_bridge.cli import main  # noqa: E402
from ir_bridge.errors import IRBridgeError  # noqa: E402

RUNTIMES = list(demo.RUNTIMES)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    from rich.console import Console

    out = tmp_path_factory.mktemp("demo_api")
    console = Console(file=io.StringIO(), width=200)
    result = demo.run_demo(["cnn_dropout"], epochs=1, out=out, train_size=400,
                           test_size=250, seed=0, console=console, progress=False)
    return result, console.file.getvalue()


def _check_rows(result, model, n_test):
    rows = [r for r in result.rows if r.model == model]
    assert [r.runtime for r in rows] == RUNTIMES
    for r in rows:
        assert r.status == "ok", (r.runtime, r.message)
        assert 0.0 <= r.accuracy <= 1.0
        assert r.max_abs_diff <= 1e-5
        assert r.argmax_agreement == 1.0
        assert r.size_bytes > 0 and r.artifact.stat().st_size == r.size_bytes
        assert r.images_per_second > 0
        assert r.convert_seconds is None if r.runtime == "keras" else r.convert_seconds > 0
    # Same argmax everywhere, so the same accuracy to the last digit.
    assert len({r.accuracy for r in rows}) == 1
    run = next(m for m in result.models if m.name == model)
    # Keras's own evaluate() agrees with our argmax count (up to a tie or two).
    assert abs(run.keras_accuracy - rows[0].accuracy) <= 2 / n_test
    return rows


def test_api_table_numbers(api_run):
    result, printed = api_run
    assert result.ok and result.exit_code == 0 and result.failures() == []
    assert (result.n_train, result.n_test) == (400, 250)
    rows = _check_rows(result, "cnn_dropout", 250)
    # One epoch on 400 images is far from the default accuracy, but well above chance.
    assert rows[0].accuracy > 0.3
    assert result.row("cnn_dropout", "mdf").artifact.name == "cnn_dropout.mdf.json"
    (run,) = result.models
    assert (run.epochs, run.batch_size, run.nodes_before, run.nodes_after) == (1, 32, 9, 5)
    for label in ("Keras (source)", "MDF · ir_bridge engine", "ONNX · onnxruntime",
                  "Keras (rebuilt)", "max |Δ| vs Keras", "images/s"):
        assert label in printed
    assert "all available runtimes agree with Keras" in printed


def test_api_pictures(api_run):
    result, _ = api_run
    files = result.models[0].files
    import matplotlib.image

    names = ["digits"] + (["graph_before", "graph_after"] if viz.dot_available() else [])
    for name in names:
        path = files[name]
        assert path.read_bytes()[:8] == PNG_MAGIC
        pixels = matplotlib.image.imread(path)
        height, width = pixels.shape[:2]
        assert 200 <= height <= 3000 and 150 <= width <= 3000, (name, pixels.shape)
        assert pixels.std() > 0.05  # not a blank canvas


def test_api_graph_before_and_after(api_run):
    result, _ = api_run
    files = result.models[0].files
    before = files["graph_before_dot"].read_text()
    after = files["graph_after_dot"].read_text()
    assert "<b>Dropout</b>" in before and "<b>Flatten</b>" in before
    assert "<b>Relu</b>" in before and "<b>Softmax</b>" in before
    assert "Dropout" not in after and "Flatten" not in after
    assert "<b>Gemm + Relu</b>" in after and "<b>Gemm + Softmax</b>" in after
    assert "<b>Relu</b>" not in after and "<b>Softmax</b>" not in after


def test_api_artifacts_load_in_their_own_ecosystems(api_run):
    result, _ = api_run
    import keras
    import onnx
    from modeci_mdf.utils import load_mdf

    import ir_bridge.backends.keras  # noqa: F401 - registers its layers for load_model

    mdf_path = result.row("cnn_dropout", "mdf").artifact
    mdf = load_mdf(str(mdf_path))
    nodes = [n.id for n in mdf.graphs[0].nodes]
    assert "dense_1" in nodes and "output" in nodes and "dropout" not in nodes
    json.loads(mdf_path.read_text())  # plain JSON, no pickles

    onnx.checker.check_model(str(result.row("cnn_dropout", "onnx").artifact))

    rebuilt = keras.models.load_model(result.row("cnn_dropout", "keras-rebuilt").artifact)
    assert rebuilt.count_params() == 607_394
    source = keras.models.load_model(result.row("cnn_dropout", "keras").artifact)
    assert [w.shape for w in source.get_weights()] == [w.shape for w in rebuilt.get_weights()]
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), source.predict(x, verbose=0),
                               atol=1e-6)


def test_cli_demo(tmp_path, capsys):
    rc = main(["demo", "--models", "mlp_128_128", "--epochs", "1", "--train-size", "300",
               "--test-size", "200", "--batch-size", "64", "--seed", "1",
               "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "all available runtimes agree with Keras" in out
    table_rows = [ln for ln in out.splitlines() if ln.startswith("│") and "%" in ln]
    assert len(table_rows) == 4
    for line in table_rows:
        cells = [c.strip() for c in line.strip("│").split("│")]
        accuracy, max_abs, agree = float(cells[2]), float(cells[3]), cells[4]
        assert 0 <= accuracy <= 1 and max_abs <= 1e-5 and agree == "100.00%"
    assert len({ln.split("│")[3] for ln in table_rows}) == 1  # one accuracy for all runtimes
    model_dir = tmp_path / "mlp_128_128"
    for name in ("mlp_128_128.mdf.json", "mlp_128_128.onnx", "mlp_128_128.rebuilt.keras",
                 "mlp_128_128.source.keras", "digits.png", "graph_after.gv"):
        assert (model_dir / name).stat().st_size > 0, name


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["demo", "--models", "mlp_128_128,resnet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown MNIST zoo model(s) 'resnet'" in err and err.count("\n") == 1
    assert main(["demo", "--train-size", "9000", "--out", str(tmp_path)]) == 2
    assert "more than the 8000 train images" in capsys.readouterr().err
    assert main(["demo", "--epochs", "0"]) == 2


def test_cli_exit_1_when_a_runtime_disagrees(monkeypatch, tmp_path, capsys):
    bad = demo.RuntimeRow("mlp_128_128", "onnx", "ONNX · onnxruntime", "mismatch",
                          accuracy=0.9, max_abs_diff=3e-3, argmax_agreement=0.995)
    fake = demo.DemoResult([bad], [], tmp_path, "test", 1, 1, 0.0)
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: fake)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "mlp_128_128 on ONNX · onnxruntime disagrees with Keras: max abs diff 0.003" in err
    assert "argmax agreement 99.50%" in err


def test_score_flags_differences_and_nan():
    keras_out = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    y = np.array([0, 1])

    def score(out):
        row = demo.RuntimeRow("m", "mdf", "MDF", "error")
        return demo._score(row, np.asarray(out, np.float32), keras_out, y, 1e-5)

    assert score(keras_out + 1e-6).status == "ok"
    off = score(keras_out + [[0, 1e-4], [0, 0]])
    assert off.status == "mismatch" and off.argmax_agreement == 1.0
    flipped = score(keras_out[:, ::-1])
    assert flipped.status == "mismatch" and flipped.argmax_agreement == 0.0
    assert flipped.accuracy == 0.0
    assert score([[np.nan, 0.1], [0.2, 0.8]]).status == "mismatch"
    assert score(keras_out[:, :1]).status == "mismatch"


def test_unavailable_backend_is_reported_not_raised(monkeypatch, tmp_path):
    from ir_bridge import registry
    from ir_bridge.zoo import mnist as zoo

    def missing(name):
        raise IRBridgeError(f"no backend named {name!r}; known: mdf, keras")

    monkeypatch.setattr(registry, "get_backend", missing)
    x = np.zeros((2, 28, 28, 1), np.float32)
    row, out = demo._convert_and_run(zoo.build("mlp_128_128"), "m", "onnx", "ONNX", "onnx",
                                     tmp_path / "m.onnx", x, np.zeros(2), np.zeros((2, 10)),
                                     1e-5, False)
    assert out is None and row.status == "unavailable" and row.ok
    assert "backend 'onnx' not available" in row.message
    assert not (tmp_path / "m.onnx").exists()


def test_failing_conversion_is_an_error_row_or_raises_with_debug(monkeypatch, tmp_path):
    from ir_bridge import api
    from ir_bridge.zoo import mnist as zoo

    def broken(*args, **kwargs):
        raise RuntimeError("backend bug\nsecond line")

    monkeypatch.setattr(api, "convert", broken)
    model = zoo.build("mlp_128_128")
    x = np.zeros((2, 28, 28, 1), np.float32)
    args = (model, "m", "mdf", "MDF", "mdf", tmp_path / "m.mdf.json", x, np.zeros(2),
            np.zeros((2, 10)), 1e-5)
    row, out = demo._convert_and_run(*args, False)
    assert out is None and row.status == "error" and not row.ok
    assert row.message == "RuntimeError: backend bug; second line"
    result = demo.DemoResult([row], [], tmp_path, "test", 1, 1, 0.0)
    assert result.exit_code == 1 and result.failures() == [f"m on MDF: {row.message}"]
    with pytest.raises(RuntimeError, match="backend bug"):
        demo._convert_and_run(*args, True)


def test_digit_grid_shows_rare_mistakes(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(0)
    images = rng.random((100, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 100)
    predictions = labels.copy()
    predictions[[50, 90]] = (labels[[50, 90]] + 1) % 10  # two mistakes, both beyond the grid
    path = demo.draw_digits(images, labels, predictions, tmp_path / "d.png", title="t",
                            rows=2, cols=4)
    pixels = matplotlib.image.imread(path)
    # Red (the mistakes' labels and frames) is present: strong R, weak G and B.
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    assert red.sum() > 100
    correct = demo.draw_digits(images, labels, labels, tmp_path / "c.png", rows=2, cols=4)
    pixels = matplotlib.image.imread(correct)
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    assert red.sum() == 0
