"""The main job, ``ir-bridge demo``: MNIST from training to four runtimes, offline.

For each selected zoo model (:mod:`ir_bridge.zoo.mnist`) the demo

1. trains it on the MNIST training part (the bundled t10k set split 8000/2000 unless a
   directory with the full MNIST files is given), showing Keras's own progress output
   (a per-batch bar on a terminal, one line per epoch otherwise);
2. draws the IR before and after the ``default`` pass pipeline (``graph_before.png`` /
   ``graph_after.png``, with the DOT text beside them);
3. converts the trained model with the default pipeline to MDF (``.mdf.json``), ONNX and a
   rebuilt Keras model, timing each conversion;
4. runs the held-out images through Keras, the ir_bridge MDF engine, onnxruntime and the
   rebuilt Keras model, and compares every runtime's probabilities with Keras's;
5. draws a grid of held-out digits labelled with the MDF engine's predictions
   (``digits.png``; wrong ones in red as ``pred (true)``).

It prints one table (model x runtime: accuracy, max abs difference from Keras, argmax
agreement, artifact size, conversion time, images/s) and returns a :class:`DemoResult`.
A runtime whose backend is not installed is reported as unavailable and does not fail the
run; any runtime that disagrees with Keras beyond ``atol`` (or on a single argmax) does.

keras, matplotlib and graphviz are imported inside functions, so importing this module
(and ``ir_bridge``) stays cheap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import IRBridgeError, MissingDependencyError

#: Models trained by default: the whole zoo, in its stable order.
DEFAULT_MODELS = ("mlp_128_128", "mlp_128_32", "cnn_tutorial", "cnn_dropout", "cnn_two_conv")

#: Epochs per model when ``epochs`` is not given.  Chosen by measurement on the bundled
#: 8000/2000 split at batch 32 with seeds 0, 1, 2 (held-out accuracy, lowest of the three):
#: mlp_128_128 5 ep 0.953, mlp_128_32 5 ep 0.942, cnn_tutorial 2 ep 0.9725, cnn_dropout
#: 4 ep 0.9645, cnn_two_conv 2 ep 0.9775 -- each clears the bar (MLPs >= 0.92, CNNs >=
#: 0.95) by at least 0.014 while the whole default run stays at a few minutes on 2 CPU
#: cores.  The MLPs cost ~1.5 s/epoch so they get more; ``cnn_dropout`` (its conv has no
#: activation) learns slowest of the CNNs (3 ep: 0.9555); ``cnn_two_conv`` costs ~15 s/epoch.
DEFAULT_EPOCHS = {
    "mlp_128_128": 5,
    "mlp_128_32": 5,
    "cnn_tutorial": 2,
    "cnn_dropout": 4,
    "cnn_two_conv": 2,
}
#: Epochs for a model not in :data:`DEFAULT_EPOCHS`.
FALLBACK_EPOCHS = 2
#: Training batch size.  Small batches learn more per epoch on 8000 images than the usual
#: 128 (one epoch: ~0.94 vs ~0.91 for the MLPs) for little extra time on a CPU.
DEFAULT_BATCH_SIZE = 32
#: Tolerance for agreeing with Keras: max abs difference of the softmax outputs.
ATOL = 1e-5
#: Images per runtime call when running the held-out set (every runtime gets the same
#: chunks, so images/s compare like with like and memory stays bounded).
EVAL_CHUNK = 500

#: The runtimes of the table: key -> (label, backend that produced the artifact, suffix).
RUNTIMES = {
    "keras": ("Keras (source)", None, ".source.keras"),
    "mdf": ("MDF · ir_bridge engine", "mdf", ".mdf.json"),
    "onnx": ("ONNX · onnxruntime", "onnx", ".onnx"),
    "keras-rebuilt": ("Keras (rebuilt)", "keras", ".rebuilt.keras"),
}

#: Row statuses that do not fail the run.
PASSING = ("ok", "unavailable")


@dataclass
class RuntimeRow:
    """One cell row of the table: one model run in one runtime.

    ``status`` is ``"ok"``, ``"mismatch"`` (disagrees with Keras beyond tolerance),
    ``"unavailable"`` (its backend or library is not installed; ``message`` says which) or
    ``"error"`` (conversion or running failed; ``message`` says why).  Numbers are ``None``
    when they could not be measured; ``convert_seconds`` is ``None`` for the source.
    """

    model: str
    runtime: str
    label: str
    status: str
    accuracy: float | None = None
    max_abs_diff: float | None = None
    argmax_agreement: float | None = None
    artifact: Path | None = None
    size_bytes: int | None = None
    convert_seconds: float | None = None
    images_per_second: float | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether this row lets the run pass (agrees with Keras, or is unavailable)."""
        return self.status in PASSING


@dataclass
class ModelRun:
    """What happened to one model: training settings and time, and the files written."""

    name: str
    epochs: int
    batch_size: int
    train_seconds: float
    keras_accuracy: float
    nodes_before: int = 0
    nodes_after: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    """The demo's outcome: ``rows`` (the table, model-major), ``models``, where the files
    went, the data used and the wall time.  ``ok`` is False when any runtime disagrees with
    Keras or failed; ``exit_code`` is then 1."""

    rows: list[RuntimeRow]
    models: list[ModelRun]
    out_dir: Path
    data_source: str
    n_train: int
    n_test: int
    seconds: float
    atol: float = ATOL

    @property
    def ok(self) -> bool:
        """True when every row agrees with Keras or is unavailable."""
        return all(r.ok for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0 when :attr:`ok`, else 1 (the CLI's parity-failure code)."""
        return 0 if self.ok else 1

    def row(self, model: str, runtime: str) -> RuntimeRow:
        """The row of ``model`` in ``runtime`` (a key of :data:`RUNTIMES`)."""
        for r in self.rows:
            if r.model == model and r.runtime == runtime:
                return r
        raise KeyError((model, runtime))

    def failures(self) -> list[str]:
        """One line per failing row: model, runtime and why."""
        out = []
        for r in self.rows:
            if r.ok:
                continue
            if r.status == "mismatch":
                out.append(f"{r.model} on {r.label} disagrees with Keras: max abs diff "
                           f"{r.max_abs_diff:.3g} (tolerance {self.atol:g}), argmax agreement "
                           f"{r.argmax_agreement:.2%}")
            else:
                out.append(f"{r.model} on {r.label}: {r.message}")
        return out


# ---------------------------------------------------------------- the job


def run_demo(
    models: Sequence[str] | str | None = None,
    *,
    epochs: int | None = None,
    out: str | Path = "demo_out",
    data_dir: str | Path | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    atol: float = ATOL,
    console=None,
    progress: bool = True,
    debug: bool = False,
) -> DemoResult:
    """Run the MNIST job and print its table; returns a :class:`DemoResult`.

    ``models``: zoo names (a list or ``"a,b"``; default all five).  ``epochs``: for every
    model (default: :data:`DEFAULT_EPOCHS` per model).  ``out``: directory for artifacts and
    pictures.  ``data_dir``: MNIST IDX files (default: ``$IR_BRIDGE_MNIST_DIR`` or the bundled
    t10k set).  ``train_size``/``test_size``: use only the first N training / held-out
    images.  ``batch_size``: training batch (default :data:`DEFAULT_BATCH_SIZE`).  ``seed``
    seeds Python, numpy and TensorFlow, the weights and the shuffling.  ``console``: a rich
    ``Console`` to print to (default: stdout).  ``progress``: show Keras's training output.
    ``debug``: re-raise a failing conversion instead of recording it in the table.

    Raises ``IRBridgeError`` for bad arguments (an unknown model, a size out of range).
    """
    from .datasets import mnist as mnist_data
    from .zoo import mnist as zoo

    started = time.perf_counter()
    console = console or _console()
    names = _model_names(models, zoo.MODELS)
    for what, value in (("epochs", epochs), ("batch size", batch_size),
                        ("train size", train_size), ("test size", test_size)):
        if value is not None and value < 1:
            raise IRBridgeError(f"{what} must be at least 1, got {value}")
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    out_dir = Path(out)

    split = _subset(mnist_data.load(data_dir), train_size, test_size)
    console.print(f"[bold]ir-bridge demo[/]: {len(names)} model(s) on {_escape(split.source)}")
    console.print(f"training on {len(split.x_train)} images, evaluating on "
                  f"{len(split.x_test)} held-out images; seed {seed}; output in "
                  f"{_escape(str(out_dir))}/")

    _seed_everything(seed)
    rows: list[RuntimeRow] = []
    runs: list[ModelRun] = []
    for i, name in enumerate(names, 1):
        n_epochs = epochs or DEFAULT_EPOCHS.get(name, FALLBACK_EPOCHS)
        console.rule(f"[{i}/{len(names)}] {name}")
        run, model_rows = _run_model(name, split, out_dir / name, n_epochs, batch_size, seed,
                                     atol, console, progress, debug)
        runs.append(run)
        rows.extend(model_rows)

    result = DemoResult(rows, runs, out_dir, split.source, len(split.x_train),
                        len(split.x_test), time.perf_counter() - started, atol)
    console.print(results_table(result))
    for run in runs:
        for note in run.notes:
            console.print(f"note ({run.name}): {_escape(note)}")
    for line in result.failures():
        console.print(f"[bold red]FAIL[/] {_escape(line)}")
    unavailable = sorted({r.label for r in rows if r.status == "unavailable"})
    verdict = ("[bold green]all available runtimes agree with Keras[/]" if result.ok
               else "[bold red]some runtimes disagree with Keras or failed[/]")
    if unavailable:
        verdict += f" [yellow](unavailable: {_escape(', '.join(unavailable))})[/]"
    console.print(f"{verdict} (max abs diff <= {atol:g}, argmax agreement 100%); "
                  f"finished in {result.seconds:.1f} s; files in {_escape(str(out_dir))}/")
    return result


def _model_names(models, known) -> list[str]:
    if models is None:
        return list(DEFAULT_MODELS)
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",")]
    names = [m for m in models if m]
    if not names:
        raise IRBridgeError("no models selected")
    unknown = [m for m in names if m not in known]
    if unknown:
        raise IRBridgeError(f"unknown MNIST zoo model(s) {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(known)}")
    return list(dict.fromkeys(names))  # keep order, drop repeats


def _subset(split, train_size, test_size):
    """The split cut to the first ``train_size`` / ``test_size`` images (the held-out part
    is never refilled from the training part, so numbers stay comparable)."""
    from .datasets.mnist import MnistSplit

    for what, n, have in (("train", train_size, len(split.x_train)),
                          ("test", test_size, len(split.x_test))):
        if n is not None and n > have:
            raise IRBridgeError(f"--{what}-size {n} is more than the {have} {what} images "
                                f"available ({split.source})")
    if train_size is None and test_size is None:
        return split
    tr, te = slice(None, train_size), slice(None, test_size)
    source = f"{split.source}; using {len(split.x_train[tr])} train / {len(split.x_test[te])} test"
    return MnistSplit(split.x_train[tr], split.y_train[tr], split.x_test[te],
                      split.y_test[te], source)


def _seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and TensorFlow (via Keras) so runs repeat."""
    import keras

    keras.utils.set_random_seed(seed)


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Captured output (CI logs, tests) would otherwise wrap the table at 80 columns.
        console = Console(width=150)
    return console


# ---------------------------------------------------------------- one model


def _run_model(name, split, model_dir: Path, epochs, batch_size, seed, atol, console,
               progress, debug) -> tuple[ModelRun, list[RuntimeRow]]:
    from . import api
    from .io import atomic_write_path
    from .zoo import mnist as zoo

    model_dir.mkdir(parents=True, exist_ok=True)
    model = zoo.build(name, seed=seed)
    console.print(f"training {name}: {epochs} epoch(s), batch {batch_size}, "
                  f"{model.count_params():,} params")
    verbose = 0 if not progress else (1 if console.is_terminal else 2)
    t0 = time.perf_counter()
    acc = zoo.train(model, split, epochs=epochs, batch_size=batch_size, seed=seed,
                    verbose=verbose)
    train_seconds = time.perf_counter() - t0
    console.print(f"trained in {train_seconds:.1f} s: held-out accuracy {acc:.4f}")
    run = ModelRun(name, epochs, batch_size, train_seconds, acc)

    source_path = model_dir / f"{name}{RUNTIMES['keras'][2]}"
    atomic_write_path(source_path, model.save)
    run.files["source"] = source_path

    optimized = _draw_graphs(model, model_dir, run, console)

    x, y = split.x_test, split.y_test
    keras_out, keras_ips = _measure(_keras_runner(model), x)
    keras_pred = keras_out.argmax(-1)
    rows = [RuntimeRow(name, "keras", RUNTIMES["keras"][0], "ok",
                       accuracy=float(np.mean(keras_pred == y)), max_abs_diff=0.0,
                       argmax_agreement=1.0, artifact=source_path,
                       size_bytes=source_path.stat().st_size, images_per_second=keras_ips)]
    outputs = {"keras": keras_out}
    for key, (label, backend, suffix) in RUNTIMES.items():
        if backend is None:
            continue
        path = model_dir / f"{name}{suffix}"
        row, out = _convert_and_run(model, name, key, label, backend, path, x, y, keras_out,
                                    atol, debug)
        rows.append(row)
        if out is not None:
            outputs[key] = out
        if row.artifact is not None:
            run.files[key] = row.artifact
        console.print(_row_line(row))

    # The digits carry the MDF engine's predictions; without the MDF backend, the IR
    # interpreter's (same kernels), and say so in the title.
    engine, probs = "MDF engine", outputs.get("mdf")
    if probs is None and optimized is not None:
        engine, probs = "ir_bridge IR engine", _run_chunks(lambda xs: api.run(optimized, xs), x)
    if probs is None:
        engine, probs = "Keras", keras_out
    digits = model_dir / "digits.png"
    draw_digits(x, y, probs.argmax(-1), digits,
                title=f"{name}: {engine} predictions on held-out digits")
    run.files["digits"] = digits
    return run, rows


def _draw_graphs(model, model_dir: Path, run: ModelRun, console):
    """Write the IR before/after the default pipeline as DOT text and (with ``dot``) PNG;
    return the optimised graph (None when the Keras frontend is missing)."""
    from . import api, viz

    try:
        before = api.load(model, format="keras")
    except (MissingDependencyError, IRBridgeError) as exc:
        run.notes.append(f"no IR pictures: cannot read the Keras model: {exc}")
        return None
    after = api.optimize(before, "default")
    run.nodes_before, run.nodes_after = len(before), len(after)
    console.print(f"IR: {len(before)} nodes -> {len(after)} after the default pipeline "
                  f"({_diff_ops(before, after)})")
    can_draw = viz.dot_available()
    for tag, graph in (("before", before), ("after", after)):
        title = (f"{graph.name} IR {'before' if tag == 'before' else 'after'} the default "
                 f"passes: {len(graph)} nodes, {graph.count_params():,} params")
        run.files[f"graph_{tag}_dot"] = viz.render(graph, model_dir / f"graph_{tag}.gv", title)
        if can_draw:
            try:
                run.files[f"graph_{tag}"] = viz.render(graph, model_dir / f"graph_{tag}.png",
                                                       title)
            except IRBridgeError as exc:  # a broken Graphviz install costs a picture, not the run
                run.notes.append(f"graph_{tag}.png not drawn: {exc}")
    if not can_draw:
        run.notes.append(f"graph PNGs skipped (DOT text written): {viz.DOT_MISSING}")
    return after


def _diff_ops(before, after) -> str:
    """In words, what the pipeline did: ops removed, activations fused into their hosts."""
    b, a = before.op_counts(), after.op_counts()
    fused: dict[str, int] = {}
    for node in after:
        act = node.attrs.get("activation")
        if act:
            fused[act] = fused.get(act, 0) + 1

    def counted(items):
        return ", ".join(op if n == 1 else f"{op} x{n}" for op, n in items if n > 0)

    removed = counted((op, n - a.get(op, 0) - fused.get(op, 0)) for op, n in b.items())
    parts = [f"removed {removed}"] if removed else []
    if fused:
        parts.append(f"fused {sum(fused.values())} activation(s) ({counted(fused.items())})")
    return "; ".join(parts) or "no change"


def _convert_and_run(model, name, key, label, backend_name, path: Path, x, y, keras_out,
                     atol, debug) -> tuple[RuntimeRow, np.ndarray | None]:
    from . import api, registry

    row = RuntimeRow(name, key, label, "error")
    try:
        backend = registry.get_backend(backend_name)
    except IRBridgeError as exc:
        row.status, row.message = "unavailable", f"backend {backend_name!r} not available: {exc}"
        return row, None
    try:
        t0 = time.perf_counter()
        api.convert(model, backend_name, path, passes="default", format="keras")
        row.convert_seconds = time.perf_counter() - t0
        row.artifact, row.size_bytes = path, path.stat().st_size
        if backend.runner is None:
            row.status, row.message = "unavailable", f"backend {backend_name!r} has no runtime"
            return row, None
        out, row.images_per_second = _measure(backend.runner(str(path)), x)
    except MissingDependencyError as exc:
        row.status, row.message = "unavailable", str(exc)
        return row, None
    except Exception as exc:  # noqa: BLE001 - one runtime failing must not hide the others
        if debug:
            raise
        row.message = f"{type(exc).__name__}: {_one_line(exc)}"
        return row, None
    return _score(row, out, keras_out, y, atol), out


def _score(row: RuntimeRow, out: np.ndarray, keras_out: np.ndarray, y, atol) -> RuntimeRow:
    if out.shape != keras_out.shape:
        row.status, row.message = "mismatch", f"output shape {out.shape} vs Keras {keras_out.shape}"
        row.max_abs_diff, row.argmax_agreement = float("inf"), 0.0
        return row
    diff = np.abs(out.astype(np.float64) - keras_out.astype(np.float64))
    row.max_abs_diff = float(np.nanmax(diff)) if diff.size else 0.0
    if np.isnan(diff).any():
        row.max_abs_diff = float("nan")
    pred = out.argmax(-1)
    row.argmax_agreement = float(np.mean(pred == keras_out.argmax(-1)))
    row.accuracy = float(np.mean(pred == y))
    agrees = row.max_abs_diff <= atol and row.argmax_agreement == 1.0  # NaN compares False
    row.status = "ok" if agrees else "mismatch"
    return row


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines) or type(exc).__name__


# ---------------------------------------------------------------- running


def _keras_runner(model) -> Callable[[list], list]:
    """Run the source model as the Keras backend's runner does: ``model(x, training=False)``."""
    import keras

    def run(inputs):
        return [np.asarray(keras.ops.convert_to_numpy(model(inputs[0], training=False)))]

    return run


def _run_chunks(fn, x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(fn([x[i:i + EVAL_CHUNK]])[0])
                           for i in range(0, len(x), EVAL_CHUNK)])


def _measure(fn, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Run ``fn`` over ``x`` in chunks; returns the outputs and images per second.

    One small warm-up call comes first, untimed: first calls build sessions, trace
    functions or allocate buffers, which is start-up cost rather than throughput.
    """
    fn([x[:8]])
    t0 = time.perf_counter()
    out = _run_chunks(fn, x)
    seconds = time.perf_counter() - t0
    return out, len(x) / seconds if seconds > 0 else float("inf")


# ---------------------------------------------------------------- output


_STATUS_STYLE = {"ok": "[green]ok[/]", "mismatch": "[bold red]MISMATCH[/]",
                 "unavailable": "[yellow]unavailable[/]", "error": "[bold red]error[/]"}


def _row_line(row: RuntimeRow) -> str:
    if row.status in ("ok", "mismatch"):
        return (f"  {row.label}: converted in {row.convert_seconds:.2f} s, "
                f"{_size(row.size_bytes)}; accuracy {row.accuracy:.4f}, max abs diff "
                f"{row.max_abs_diff:.2g}, {row.images_per_second:,.0f} images/s "
                f"-> {_STATUS_STYLE[row.status]}")
    return f"  {row.label}: {_STATUS_STYLE[row.status]}: {_escape(row.message)}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover - unreachable


def results_table(result: DemoResult):
    """The demo's table as a rich ``Table``: one row per model x runtime."""
    from rich.table import Table

    table = Table(title=f"ir_bridge demo: {result.n_test} held-out MNIST images, "
                        f"{result.n_train} training images", title_justify="left",
                  caption="max |Δ|: largest difference of the softmax outputs from Keras's. "
                          "The source .keras file also holds the Adam optimizer state.",
                  caption_justify="left")
    for head, justify in (("model", "left"), ("runtime", "left"), ("accuracy", "right"),
                          ("max |Δ| vs Keras", "right"), ("argmax agree", "right"),
                          ("artifact size", "right"), ("convert s", "right"),
                          ("images/s", "right"), ("status", "left")):
        table.add_column(head, justify=justify, no_wrap=head != "status")
    runs = {run.name: run for run in result.models}
    last = len(result.rows) - 1
    for i, r in enumerate(result.rows):
        # The model's name on its first row, its training under it on the second.
        first = i == 0 or result.rows[i - 1].model != r.model
        second = not first and (i < 2 or result.rows[i - 2].model != r.model)
        run = runs.get(r.model)
        model_cell = r.model if first else ""
        if second and run is not None:
            model_cell = f"[dim]{run.epochs} ep, {run.train_seconds:.0f} s train[/]"
        status = _STATUS_STYLE.get(r.status, r.status)
        if r.status in ("unavailable", "error"):
            status += f" [dim]{_escape(r.message[:120])}[/]"
        end = i == last or result.rows[i + 1].model != r.model
        table.add_row(
            model_cell, r.label,
            "—" if r.accuracy is None else f"{r.accuracy:.4f}",
            "—" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}",
            "—" if r.argmax_agreement is None else f"{r.argmax_agreement:.2%}",
            _size(r.size_bytes),
            "—" if r.convert_seconds is None else f"{r.convert_seconds:.2f}",
            "—" if r.images_per_second is None else f"{r.images_per_second:,.0f}",
            status, end_section=end)
    return table


def draw_digits(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, path,
                title: str = "", rows: int = 4, cols: int = 8, max_mistakes: int = 8) -> Path:
    """Save a grid of digits labelled with ``predictions`` as a PNG at ``path``.

    Takes images (N, 28, 28[, 1]), true labels and predicted labels.  The grid shows the
    first images in order, with up to ``max_mistakes`` of the later wrongly predicted ones
    swapped into its last cells so mistakes are visible even when they are rare; a wrong
    prediction is labelled in red as ``pred (true)``.  Returns the path.  Uses matplotlib's
    Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .io import atomic_write

    n = min(rows * cols, len(images))
    wrong = np.flatnonzero(predictions != labels)
    shown = list(range(n))
    extra = [int(i) for i in wrong if i >= n][:max_mistakes]
    if extra:
        shown = shown[:n - len(extra)] + extra
    n_wrong = int(len(wrong))

    fig = Figure(figsize=(cols * 1.1, rows * 1.25 + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    accuracy = 1.0 - n_wrong / max(len(labels), 1)
    fig.suptitle(f"{title}\naccuracy {accuracy:.2%} ({n_wrong} wrong of {len(labels)}); "
                 "red = wrong, labelled pred (true)", fontsize=9)
    for cell, idx in enumerate(shown):
        ax = fig.add_subplot(rows, cols, cell + 1)
        ax.imshow(np.asarray(images[idx]).reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ok = predictions[idx] == labels[idx]
        text = f"{predictions[idx]}" if ok else f"{predictions[idx]} ({labels[idx]})"
        ax.set_title(text, fontsize=10, color="black" if ok else "red",
                     fontweight="normal" if ok else "bold")
        if not ok:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    return path

