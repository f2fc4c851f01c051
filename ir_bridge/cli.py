"""The ``ir-bridge`` command, thin over :mod:`ir_bridge.api` (built with click).

Exit codes: 0 success, 1 parity failure, 2 bad input or unsupported model.  Errors are one
line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import api
from .errors import IRBridgeError, ParityError

_FORMATS = ["keras", "onnx", "mdf"]


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines) or type(exc).__name__


def _load_options(keras_lowering: str | None) -> dict:
    return {"lowering": keras_lowering} if keras_lowering and keras_lowering != "native" else {}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks and check the IR after "
              "every pass.")
@click.version_option(package_name="ir_bridge")
@click.pass_context
def cli(ctx, debug):
    """ir-bridge: compile neural-network models between Keras, ONNX and ModECI MDF."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("--to", "to", required=True, help="Target backend: mdf, onnx, keras, or a "
              "plugin's name.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output file (.json/.yaml for MDF, .onnx, .keras).")
@click.option("--from", "fmt", type=str, default=None, help="Source format (default: from the "
              "suffix).")
@click.option("--passes", default="default", show_default=True,
              help="Pipeline name (default, none) or comma-separated pass names.")
@click.option("--validate", is_flag=True, help="Run source and artifact on seeded inputs in "
              "their own runtimes; exit 1 if they differ beyond --atol.")
@click.option("--atol", type=float, default=1e-5, show_default=True,
              help="Absolute tolerance for --validate.")
@click.option("--opset", type=int, default=None, help="ONNX opset (ONNX backend only).")
@click.option("--keras-lowering", type=click.Choice(["native", "tf2onnx"]), default="native",
              show_default=True, help="How to read Keras models: the native frontend, or "
              "tracing with tf2onnx (LSTM, GRU, custom TF layers).")
@click.option("--explain", is_flag=True, help="Say why passes left nodes alone.")
@click.pass_context
def convert(ctx, src, to, out, fmt, passes, validate, atol, opset, keras_lowering, explain):
    """Convert SRC (.keras, .h5, .onnx, .json, .yaml) to another format."""
    from .passes import run_passes

    debug = ctx.obj["debug"]
    graph = api.load(src, format=fmt, **_load_options(keras_lowering))
    result = run_passes(graph, passes, verify=debug)
    options = {"opset": opset} if opset is not None else {}
    api.emit(result.graph, to, out, **options)
    size = Path(out).stat().st_size if Path(out).exists() else 0
    compute = sum(1 for n in result.graph if n.op not in ("Input",))
    click.echo(f"wrote {out} ({size:,} bytes): {compute} nodes, "
               f"{result.graph.count_params():,} params")
    for line in result.log:
        click.echo(f"  {line}")
    if explain:
        for note in result.notes:
            click.echo(f"  {note}")
    if validate:
        report = api.check_parity(src, out, api.random_inputs(graph), atol=atol)
        click.echo(str(report))
        if not report.ok:
            raise ParityError(f"{out} differs from {src}: max abs {report.max_abs:.3g} > {atol:g}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-i", "--input", "inputs", multiple=True, required=True,
              type=click.Path(dir_okay=False), help=".npy file, once per model input, in order.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="Where to save the outputs (.npy for one output, .npz for several).")
def run(model, inputs, out):
    """Run MODEL (.json/.yaml MDF, .onnx, .keras) on numpy inputs with the ir_bridge engine."""
    import numpy as np

    arrays = []
    for path in inputs:
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError, MemoryError) as exc:
            raise IRBridgeError(f"cannot read input {path!r} as .npy: "
                                f"{type(exc).__name__}: {exc}") from exc
    outputs = api.run(model, arrays)
    if out:
        _save_outputs(out, outputs)
        click.echo(f"wrote {out}")
    for i, y in enumerate(outputs):
        click.echo(f"output {i}: shape {tuple(y.shape)} dtype {y.dtype}")
        if y.ndim == 2 and y.shape[1] > 1:
            click.echo(f"  argmax: {y.argmax(1)[:20].tolist()}{' …' if len(y) > 20 else ''}")


def _save_outputs(out, outputs):
    import numpy as np

    from .io import atomic_write

    if len(outputs) == 1 and not out.endswith(".npz"):
        with atomic_write(out) as f:
            np.save(f, outputs[0])
    else:
        with atomic_write(out) as f:
            np.savez(f, *outputs)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--from", "fmt", type=str, default=None, help="Source format.")
@click.option("--passes", default="none", show_default=True, help="Pipeline to run first.")
@click.option("--ir", "show_ir", is_flag=True, help="Also print the IR as text.")
def inspect(model, fmt, passes, show_ir):
    """Print MODEL's IR as a table: nodes, ops, shapes, parameter counts."""
    graph = api.optimize(api.load(model, format=fmt), passes)
    click.echo(graph.summary())
    if show_ir:
        click.echo(graph.format())


@cli.command("passes")
def list_passes():
    """List the registered passes and the named pipelines."""
    from . import registry
    from .passes import PIPELINES

    for name, info in sorted(registry.passes().items()):
        click.echo(f"{name:20} {info.description}")
    click.echo("")
    for name, names in PIPELINES.items():
        click.echo(f"pipeline {name}: {', '.join(names) or '(no passes)'}")


@cli.command()
def plugins():
    """List frontends, backends and passes with where they come from."""
    from . import registry

    for kind, name, target, dist in registry.entry_point_table():
        click.echo(f"{kind:9} {name:20} {target}  [{dist}]")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Picture to write: .svg, .png or .pdf (.gv/.dot for the DOT text).")
@click.option("--passes", default="none", show_default=True,
              help="Pipeline to run first (none, default, or comma-separated pass names).")
@click.option("--from", "fmt", type=str, default=None, help="Source format (default: from the "
              "suffix).")
def graph(model, out, passes, fmt):
    """Draw MODEL's IR with Graphviz: one box per node (op, name, shape, params)."""
    from . import viz

    ir = api.optimize(api.load(model, format=fmt), passes)
    viz.render(ir, out)
    click.echo(f"wrote {out}: {len(ir)} nodes, {ir.count_params():,} params")


@cli.command()
@click.option("--models", default=None, help="Comma-separated zoo models (default: all: "
              "mlp_128_128,mlp_128_32,cnn_tutorial,cnn_dropout,cnn_two_conv).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs for every model (default: per model, 2-5).")
@click.option("--out", "out", type=click.Path(file_okay=False), default="demo_out",
              show_default=True, help="Directory for artifacts and pictures.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="MNIST IDX files (default: $IR_BRIDGE_MNIST_DIR or the bundled test set).")
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Train on only the first N training images.")
@click.option("--test-size", type=click.IntRange(min=1), default=None,
              help="Evaluate on only the first N held-out images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Training batch size (default: 32).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for weights, "
              "shuffling and dropout.")
@click.pass_context
def demo(ctx, models, epochs, out, data_dir, train_size, test_size, batch_size, seed):
    """Train the MNIST zoo, compile it to MDF, ONNX and Keras, and check every runtime agrees
    with Keras (exit 1 if one does not)."""
    from .demo import run_demo

    result = run_demo(models, epochs=epochs, out=out, data_dir=data_dir, train_size=train_size,
                      test_size=test_size, batch_size=batch_size, seed=seed,
                      debug=ctx.obj["debug"])
    if not result.ok:
        raise ParityError("; ".join(result.failures()))


def main(argv=None) -> int:
    """Entry point of the ``ir-bridge`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:
        # TensorFlow's C++ start-up chatter would bury the one-line messages on stderr.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        cli.main(args=argv, prog_name="ir-bridge", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("ir-bridge: aborted", err=True)
        return 1
    except click.ClickException as exc:
        if debug:
            raise
        exc.show()
        return 2
    except IRBridgeError as exc:
        if debug:
            raise
        click.echo(f"ir-bridge: error: {_one_line(exc)}", err=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
