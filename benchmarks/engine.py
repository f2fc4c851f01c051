"""Benchmark the MDF engine against the reference MDF engine, onnxruntime and Keras.

Run by hand (not in CI)::

    python benchmarks/engine.py                    # all five MNIST zoo models
    python benchmarks/engine.py --models mlp_128_128,cnn_tutorial --repeat 9

For each MNIST zoo architecture (seeded weights; speed does not depend on training) it
converts the Keras model to MDF JSON with ir_bridge and to ONNX with Keras's own exporter
(so onnxruntime runs a model ir_bridge did not touch), then times, interleaved round by
round so that load on the machine hits every runtime alike:

* ``ours``: :func:`ir_bridge.engine.mdf_plan.compile_mdf` on the MDF file, compiled once;
* ``ref``: ``modeci_mdf.execution_engine.EvaluableGraph`` on the same MDF file;
* ``ort``: onnxruntime (default session options) on the ONNX export;
* ``keras``: ``model(x)``.

It prints the median of each at batch 2,000 (MNIST test images) and the reference engine and
ours at batch 1, the ratios, the max abs difference of ours against Keras, and the machine,
and can write the table as markdown (``--markdown FILE``). Timings are medians over rounds
(at least ``--repeat``; fast models get more, about 3 s per runtime), each call after a
short pause so that one runtime's spinning threads do not slow the next.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from _machine import cpu_model  # noqa: E402


def _time(fn, *args) -> float:
    # A short pause first: onnxruntime's and TF's pools spin for a while after a call and
    # would steal the cores from whatever is timed next.
    time.sleep(0.02)
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _reference(path: str):
    """A function running the reference engine on the MDF file (stdout silenced)."""
    from modeci_mdf.execution_engine import EvaluableGraph
    from modeci_mdf.utils import load_mdf

    model = load_mdf(path)
    graph = model.graphs[0]
    in_port = graph.metadata["inputs"][0].split(".")[1]
    out_node = graph.metadata["outputs"][0].split(".")[0]
    with contextlib.redirect_stdout(io.StringIO()):
        eg = EvaluableGraph(graph, verbose=False)

    def run(x):
        with contextlib.redirect_stdout(io.StringIO()):
            eg.evaluate(initializer={in_port: x})
        return eg.enodes[out_node].evaluable_outputs["out"].curr_value

    return run


def _onnx_session(model, path: str):
    """onnxruntime on Keras's own ONNX export (ir_bridge's ONNX backend if that fails)."""
    import onnxruntime as ort

    try:
        model.export(path, format="onnx", verbose=False)
    except Exception as exc:  # an exporter problem must not hide the other numbers
        print(f"keras ONNX export failed ({type(exc).__name__}: {exc}); using ir_bridge's")
        import ir_bridge

        ir_bridge.convert(model, "onnx", path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def bench(models, repeat: int, ref_repeat: int, batch: int) -> list[dict]:
    """Time every runtime on every model; returns one result dict per model."""
    import keras

    import ir_bridge
    from ir_bridge.datasets import mnist
    from ir_bridge.engine.mdf_plan import compile_mdf
    from ir_bridge.zoo import mnist as zoo

    x = np.ascontiguousarray(mnist.load().x_test[:batch], dtype=np.float32)
    x1 = x[:1].copy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            keras.utils.set_random_seed(0)
            model = zoo.build(name, seed=0)
            y_keras = model(x).numpy()
            mdf_path = str(Path(tmp) / f"{name}.json")
            t = time.perf_counter()
            ir_bridge.convert(model, "mdf", mdf_path)
            convert_s = time.perf_counter() - t
            plan = compile_mdf(mdf_path)
            ours = lambda a, p=plan: p.run([a])[0]  # noqa: E731
            ort = _onnx_session(model, str(Path(tmp) / f"{name}.onnx"))
            ref = _reference(mdf_path)
            keras_call = lambda a, m=model: m(a)  # noqa: E731
            diff = float(np.abs(ours(x) - y_keras).max())
            ref_diff = float(np.abs(ref(x[:8]) - y_keras[:8]).max())
            times: dict[str, list[float]] = {k: [] for k in
                                             ("ours", "ort", "keras", "ref", "ours1", "ref1")}
            for f in (ours, ort, keras_call):  # warm up
                f(x)
            ours(x1)
            ref(x1)
            # Fast models get more rounds (about 3 s per runtime): a median of many short
            # runs is what survives a busy machine.
            slowest = max(_time(ours, x), _time(ort, x))
            rounds = max(repeat, min(51, int(3.0 / max(slowest, 1e-3))))
            for r in range(rounds):
                times["ours"].append(_time(ours, x))
                times["ort"].append(_time(ort, x))
                if r < repeat:
                    times["keras"].append(_time(keras_call, x))
                    times["ours1"].append(statistics.median(_time(ours, x1) for _ in range(9)))
                if r < ref_repeat:
                    times["ref"].append(_time(ref, x))
                    times["ref1"].append(_time(ref, x1))
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"model": name, "params": model.count_params(), "convert_s": convert_s,
                         "mdf_bytes": os.path.getsize(mdf_path), "diff": diff,
                         "ref_diff": ref_diff, **med})
            print(_row_text(rows[-1]), flush=True)
    return rows


def _row_text(r: dict) -> str:
    return (f"{r['model']:13} ours {r['ours'] * 1e3:8.1f} ms  ort {r['ort'] * 1e3:8.1f} ms "
            f"({r['ours'] / r['ort']:.2f}x)  keras {r['keras'] * 1e3:8.1f} ms  ref "
            f"{r['ref'] * 1e3:9.1f} ms ({r['ref'] / r['ours']:.0f}x slower)  batch 1: ours "
            f"{r['ours1'] * 1e6:7.1f} us, ref {r['ref1'] * 1e3:7.1f} ms "
            f"({r['ref1'] / r['ours1']:.0f}x)  |ours-keras| {r['diff']:.1e}")


def machine() -> dict:
    """The facts of this machine that the numbers depend on."""
    import numpy
    import onnxruntime

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}


def markdown(rows: list[dict], info: dict, batch: int) -> str:
    """The results as a markdown table."""
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, numpy "
        f"{info['numpy']}, onnxruntime {info['onnxruntime']} (1-min load average at the end: "
        f"{info['load']:.1f}).",
        "",
        "| model | params | ours (ms) | onnxruntime (ms) | ours / ort | Keras `model(x)` (ms) "
        "| reference MDF engine (ms) | ref / ours | ours, batch 1 (µs) | ref, batch 1 (ms) "
        "| ref / ours, batch 1 | max abs ours − Keras |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['ours'] * 1e3:.1f} | {r['ort'] * 1e3:.1f} | "
            f"{r['ours'] / r['ort']:.2f} | {r['keras'] * 1e3:.1f} | {r['ref'] * 1e3:.0f} | "
            f"{r['ref'] / r['ours']:.0f}× | {r['ours1'] * 1e6:.0f} | {r['ref1'] * 1e3:.1f} | "
            f"{r['ref1'] / r['ours1']:.0f}× | {r['diff']:.1e} |")
    lines += ["", f"Times are medians at batch {batch:,} unless marked batch 1. Conversion "
              "Keras → MDF JSON and file size:", "",
              "| model | convert (s) | MDF JSON (bytes) | bytes / param |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['convert_s']:.2f} | {r['mdf_bytes']:,} | "
                     f"{r['mdf_bytes'] / r['params']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ir_bridge.zoo import mnist as zoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.MODELS))
    parser.add_argument("--repeat", type=int, default=7,
                        help="rounds at least (median of these); fast models get more")
    parser.add_argument("--ref-repeat", type=int, default=3,
                        help="rounds for the slow reference engine")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    rows = bench(models, args.repeat, args.ref_repeat, args.batch)
    info = machine()
    table = markdown(rows, info, args.batch)
    print()
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
