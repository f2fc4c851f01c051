"""Scale: a ResNet50-sized Keras model through ir_bridge to MDF JSON, ONNX and Keras.

Run by hand (not in CI; ~5-10 minutes on 2 cores)::

    python benchmarks/scale.py                     # every stage, table on stdout
    python benchmarks/scale.py --markdown out.md   # also write the table as markdown
    python benchmarks/scale.py --stages mdf,engine --batch 8

The model is ``keras.applications.ResNet50(weights=None)`` (25.6M parameters, nothing
downloaded) with seeded weights and non-trivial batch-norm statistics.  Every stage runs in
its own subprocess, so one stage's memory cannot hide in another's:

* ``reference``: Keras's outputs on a seeded batch (saved for the parity stages);
* ``mdf`` / ``onnx`` / ``keras``: ``ir_bridge.load`` (Keras -> IR), ``optimize("default")``
  and ``emit(..., path)`` writing the file; the time of each step is reported;
* ``mdf-parts``: the MDF path again, with ``build_model``, ``dumps`` (the whole text in
  memory) and ``save`` (the text streamed to the file) timed and measured separately;
* ``mdf-read``: the MDF frontend alone, ``ir_bridge.load`` of the MDF JSON file (no Keras in
  the process), and that the IR it reads writes the same file again;
* ``engine``: the ir_bridge MDF engine compiles the MDF JSON file and runs the batch; parity
  against Keras;
* ``onnx-run`` / ``keras-run``: onnxruntime / Keras run the written file; parity;
* ``modeci-writers``: modeci_mdf's own JSON/YAML/BSON writers against ir_bridge's on the
  CI-sized ResNet of ``tests/test_scale_smoke.py`` (per-parameter cost, to extrapolate).

Memory.  The *baseline* of a stage is the resident set size (``VmRSS``) of its process
after importing everything it needs (TensorFlow, Keras, ir_bridge, the target library),
building the Keras model with its weights and running ``gc.collect()``: the process with
the model loaded.  The peak counter (``VmHWM``) is then reset (``/proc/self/clear_refs``)
and the stage's *peak above baseline* is ``VmHWM - baseline`` at its end.  Stages that do
not need the Keras model (``mdf-read``, ``engine``, ``onnx-run``) have the same imports but
no model; their baseline is the bare process.  The weights are 25.6M float32 = 102 MB; the target
for the MDF path is < 4x that above the baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SEED = 0
STAGES = ["reference", "mdf", "mdf-parts", "mdf-read", "onnx", "keras", "engine", "onnx-run",
          "keras-run", "modeci-writers"]
SUFFIX = {"mdf": ".json", "onnx": ".onnx", "keras": ".keras"}


# --------------------------------------------------------------------------- measuring


def _status_mb(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def rss_mb() -> float:
    """The current resident set size, MB."""
    return _status_mb("VmRSS")


def reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    """The peak resident set size since the last :func:`reset_peak`, MB."""
    return _status_mb("VmHWM")


class Timer:
    def __init__(self):
        self.times: dict[str, float] = {}

    def __call__(self, label: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[label] = round(time.perf_counter() - start, 2)
        return out


# --------------------------------------------------------------------------- the model


def build_resnet50():
    """ResNet50 (weights=None) with seeded weights: BN moving means ~ N(0, 0.1), moving
    variances ~ U(0.5, 1.5), gammas ~ U(0.8, 1.2), betas ~ N(0, 0.1); Keras's own seeded
    initialisers for the kernels.  Logits out (no softmax), so parity is checked on the
    values the softmax would flatten."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(SEED)
    model = keras.applications.ResNet50(weights=None, classifier_activation=None)
    rng = np.random.default_rng(SEED)
    for v in model.weights:
        shape = tuple(v.shape)
        if v.name == "moving_mean":
            v.assign(rng.normal(0, 0.1, shape).astype("float32"))
        elif v.name == "moving_variance":
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif v.name == "gamma":
            v.assign(rng.uniform(0.8, 1.2, shape).astype("float32"))
        elif v.name == "beta":
            v.assign(rng.normal(0, 0.1, shape).astype("float32"))
    return model


def make_inputs(batch: int):
    import numpy as np

    return np.random.default_rng(SEED + 1).standard_normal((batch, 224, 224, 3)).astype(
        "float32")


# --------------------------------------------------------------------------- stages


def stage_reference(work: Path, batch: int) -> dict:
    import numpy as np

    model = build_resnet50()
    x = make_inputs(batch)
    timer = Timer()
    y = timer("keras_run", lambda: np.asarray(model(x, training=False)))
    np.save(work / "x.npy", x)
    np.save(work / "y_keras.npy", y)
    return {"params": int(model.count_params()), "times": timer.times,
            "weights_mb": round(sum(int(np.prod(v.shape)) * 4 for v in model.weights) / 2**20,
                                1)}


def stage_convert(work: Path, target: str) -> dict:
    """Keras model (baseline) -> IR -> default passes -> emit + write ``target``."""
    import ir_bridge

    ir_bridge.registry.backends()[target]  # import the backend before the baseline
    if target == "onnx":
        import onnx  # noqa: F401
    if target == "mdf":
        import modeci_mdf.mdf  # noqa: F401
    model = build_resnet50()
    baseline = rss_mb()
    reset_peak()
    timer = Timer()
    graph = timer("load", ir_bridge.load, model)
    graph = timer("optimize", ir_bridge.optimize, graph, "default")
    path = work / f"resnet50{SUFFIX[target]}"
    timer("emit+write", ir_bridge.emit, graph, target, path)
    peak = peak_mb()
    return {"baseline_mb": round(baseline), "peak_above_baseline_mb": round(peak - baseline),
            "times": timer.times, "total_s": round(sum(timer.times.values()), 2),
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "nodes": sum(1 for n in graph if n.op != "Input")}


def stage_mdf_parts(work: Path) -> dict:
    """The MDF path split: IR ready (measured separately), then build_model, then the writer
    (``dumps``: text; ``save``: text + encode + atomic write)."""
    import ir_bridge
    from ir_bridge.backends import mdf as mdf_backend

    model = build_resnet50()
    graph = ir_bridge.api.prepare(ir_bridge.optimize(ir_bridge.load(model), "default"), "mdf")
    del model
    import keras

    keras.backend.clear_session()
    gc.collect()
    out = {"ir_params_mb": round(sum(a.nbytes for n in graph for a in n.params.values())
                                 / 2**20, 1)}
    baseline = rss_mb()
    reset_peak()
    timer = Timer()
    mdf_model = timer("build_model", mdf_backend.build_model, graph)
    out["after_build_model_mb"] = round(peak_mb() - baseline)
    reset_peak()
    base2 = rss_mb()
    text = timer("dumps", mdf_backend.dumps, mdf_model, "json")
    out["dumps_peak_above_mb"] = round(peak_mb() - base2)
    out["text_mb"] = round(len(text) / 2**20, 1)
    del text
    gc.collect()
    reset_peak()
    base3 = rss_mb()
    timer("save", mdf_backend.save, mdf_model, work / "resnet50_parts.json")
    out["save_peak_above_mb"] = round(peak_mb() - base3)
    out["baseline_mb"] = round(baseline)
    out["times"] = timer.times
    return out


def stage_mdf_read(work: Path) -> dict:
    """The MDF frontend alone: ``ir_bridge.load`` of the JSON file the ``mdf`` stage wrote
    (no Keras in the process; the baseline is the bare process with ir_bridge imported).
    Then the IR it read is written again: the same bytes, so nothing was lost or changed."""
    import numpy as np

    import ir_bridge

    ir_bridge.registry.frontends()
    path = work / "resnet50.json"
    baseline = rss_mb()
    reset_peak()
    timer = Timer()
    graph = timer("load", ir_bridge.load, path)
    peak = peak_mb()
    out = {"baseline_mb": round(baseline), "peak_above_baseline_mb": round(peak - baseline),
           "times": timer.times, "file_mb": round(path.stat().st_size / 2**20, 1),
           "nodes": sum(1 for n in graph if n.op != "Input"),
           "params": int(sum(a.size for n in graph for a in n.params.values())),
           "weights_float32": all(a.dtype == np.float32 for n in graph
                                  for a in n.params.values())}
    again = work / "resnet50_again.json"
    ir_bridge.emit(graph, "mdf", again)
    out["rewrites_identically"] = again.read_bytes() == path.read_bytes()
    again.unlink()
    return out


def stage_modeci_writers(work: Path) -> dict:
    """modeci_mdf's own writers (``to_json_file``, ``to_yaml_file``, ``to_bson_file``) next
    to ir_bridge's, on the CI-sized ResNet of ``tests/test_scale_smoke.py`` (0.39M
    parameters; the full ResNet50 would take minutes to hours and GBs): bytes, seconds and
    peak MB per parameter, to extrapolate."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_scale_smoke import small_resnet

    import ir_bridge
    from ir_bridge.backends import mdf as mdf_backend

    model = small_resnet()
    n = model.count_params()
    graph = ir_bridge.api.prepare(ir_bridge.optimize(ir_bridge.load(model), "default"), "mdf")
    mdf_model = mdf_backend.build_model(graph)
    out = {"params": n}
    writers = [("ir_bridge save (.json)", lambda p: mdf_backend.save(mdf_model, p), ".json"),
               ("modeci to_json_file", lambda p: mdf_model.to_json_file(str(p)), ".json"),
               ("modeci to_yaml_file", lambda p: mdf_model.to_yaml_file(str(p)), ".yaml"),
               ("modeci to_bson_file", lambda p: mdf_model.to_bson_file(str(p)), ".bson")]
    for i, (label, write, suffix) in enumerate(writers):
        path = work / f"small_resnet_{i}{suffix}"
        baseline = rss_mb()
        reset_peak()
        start = time.perf_counter()
        write(path)
        seconds = time.perf_counter() - start
        out[label] = {"s": round(seconds, 2), "bytes_per_param": round(path.stat().st_size / n, 1),
                      "us_per_param": round(1e6 * seconds / n, 2),
                      "peak_bytes_per_param": round((peak_mb() - baseline) * 2**20 / n)}
    return out


def _parity(y, want) -> dict:
    import numpy as np

    err = float(np.max(np.abs(np.asarray(y, np.float64) - want)))
    atol = 1e-5 * max(1.0, float(np.max(np.abs(want))))
    return {"max_abs_err": float(f"{err:.3g}"), "atol": float(f"{atol:.3g}"),
            "parity": bool(err <= atol),
            "argmax_agree": float(np.mean(np.argmax(y, -1) == np.argmax(want, -1)))}


def stage_run(work: Path, target: str) -> dict:
    """Run the written file in its runtime (``engine``: the ir_bridge MDF engine)."""
    import numpy as np

    import ir_bridge
    from ir_bridge.parity import runner_for

    if target == "onnx-run":
        import onnxruntime  # noqa: F401
    if target == "keras-run":
        import keras  # noqa: F401
    path = work / {"engine": "resnet50.json", "onnx-run": "resnet50.onnx",
                   "keras-run": "resnet50.keras"}[target]
    x = np.load(work / "x.npy")
    want = np.load(work / "y_keras.npy")
    ir_bridge.registry.backends()
    baseline = rss_mb()
    reset_peak()
    timer = Timer()
    run = timer("load+compile", runner_for, path)
    (y,) = timer("run", run, [x])
    (y,) = timer("run_again", run, [x])
    peak = peak_mb()
    return {"baseline_mb": round(baseline), "peak_above_baseline_mb": round(peak - baseline),
            "times": timer.times, "batch": int(x.shape[0]), **_parity(y, want)}


def run_stage(name: str, work: Path, batch: int) -> dict:
    if name == "reference":
        return stage_reference(work, batch)
    if name in ("mdf", "onnx", "keras"):
        return stage_convert(work, name)
    if name == "mdf-parts":
        return stage_mdf_parts(work)
    if name == "mdf-read":
        return stage_mdf_read(work)
    if name == "modeci-writers":
        return stage_modeci_writers(work)
    return stage_run(work, name)


# --------------------------------------------------------------------------- driver


def _versions() -> str:
    import importlib.metadata as md

    names = ["ir_bridge", "tensorflow-cpu", "keras", "onnx", "onnxruntime", "modeci-mdf",
             "numpy"]
    found = []
    for n in names:
        try:
            found.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}, " + ", ".join(found)


def _subprocess(stage: str, work: Path, batch: int) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--one-stage", stage, "--work", str(work),
                           "--batch", str(batch)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": round(wall)}
    out = json.loads(lines[-1])
    out["wall_s"] = round(wall)
    return out


def markdown(results: dict, batch: int) -> str:
    ref = results.get("reference", {})
    params = f"{ref['params']:,}" if "params" in ref else "?"
    lines = [f"Model: ResNet50 (weights=None, seeded), {params} parameters, "
             f"{ref.get('weights_mb', '?')} MiB of float32 weights; batch {batch}.", "",
             "| target | load (s) | optimize (s) | emit + write (s) | total (s) | file (MB) | "
             "peak above baseline (MB) | baseline (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for t in ("mdf", "onnx", "keras"):
        r = results.get(t)
        if not r or "error" in r:
            lines.append(f"| {t} | error: {r.get('error') if r else 'not run'} |||||||")
            continue
        tm = r["times"]
        lines.append(f"| {t} | {tm['load']} | {tm['optimize']} | {tm['emit+write']} | "
                     f"{r['total_s']} | {r['file_mb']} | {r['peak_above_baseline_mb']} | "
                     f"{r['baseline_mb']} |")
    lines += ["", "| runtime (file) | load + compile (s) | run (s) | run again (s) | "
              "max abs error vs Keras | atol | parity | peak above baseline (MB) |",
              "|---|---|---|---|---|---|---|---|"]
    keras_run = ref.get("times", {}).get("keras_run")
    lines.append(f"| Keras (live model) | - | {keras_run} | - | - | - | reference | - |")
    for t, label in (("engine", "ir_bridge MDF engine (.json)"),
                     ("onnx-run", "onnxruntime (.onnx)"), ("keras-run", "Keras (.keras)")):
        r = results.get(t)
        if not r or "error" in r:
            lines.append(f"| {label} | error: {r.get('error') if r else 'not run'} |||||||")
            continue
        tm = r["times"]
        lines.append(f"| {label} | {tm['load+compile']} | {tm['run']} | {tm['run_again']} | "
                     f"{r['max_abs_err']:.3g} | {r['atol']:.3g} | "
                     f"{'yes' if r['parity'] else 'NO'} | {r['peak_above_baseline_mb']} |")
    read = results.get("mdf-read")
    if read and "error" not in read:
        lines += ["", f"MDF frontend alone (`ir_bridge.load` of the {read['file_mb']} MB JSON, "
                  f"bare-process baseline {read['baseline_mb']} MB): "
                  f"{read['times']['load']} s, peak {read['peak_above_baseline_mb']} MB above "
                  f"baseline; {read['params']:,} weights in {read['nodes']} nodes; the IR "
                  f"read writes the same file again: {read['rewrites_identically']}."]
    writers = results.get("modeci-writers")
    if writers and "error" not in writers:
        lines += ["", f"MDF writers on the CI-sized ResNet ({writers['params']:,} parameters; "
                  "per parameter, to extrapolate):", "",
                  "| writer | bytes | microseconds | peak memory (bytes) |", "|---|---|---|---|"]
        for label, w in writers.items():
            if isinstance(w, dict):
                lines.append(f"| {label} | {w['bytes_per_param']} | {w['us_per_param']} | "
                             f"{w['peak_bytes_per_param']} |")
    parts = results.get("mdf-parts")
    if parts and "error" not in parts:
        tm = parts["times"]
        lines += ["", "MDF path in parts (IR prepared, Keras model freed; peaks above the RSS "
                  "before each step):", "",
                  "| step | time (s) | peak above (MB) |", "|---|---|---|",
                  f"| build_model (modeci_mdf objects) | {tm['build_model']} | "
                  f"{parts['after_build_model_mb']} |",
                  f"| dumps (JSON text, {parts['text_mb']} MB) | {tm['dumps']} | "
                  f"{parts['dumps_peak_above_mb']} |",
                  f"| save (streamed to the file) | {tm['save']} | "
                  f"{parts['save_peak_above_mb']} |"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default=",".join(STAGES),
                    help=f"comma-separated, from {','.join(STAGES)}")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--work", default=None, help="directory for the files (default: a temp "
                    "directory, removed at the end)")
    ap.add_argument("--markdown", default=None, help="write the tables to this file")
    ap.add_argument("--json", default=None, help="write the raw results to this file")
    ap.add_argument("--one-stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_stage:
        print(json.dumps(run_stage(args.one_stage, Path(args.work), args.batch)))
        return 0
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stage(s) {sorted(unknown)}")
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ir_bridge_scale_")
        work = Path(tmp.name)
    else:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; {_versions()}", flush=True)
    results = {}
    for stage in stages:
        results[stage] = _subprocess(stage, work, args.batch)
        print(f"{stage}: {json.dumps(results[stage])}", flush=True)
    table = markdown(results, args.batch)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()
    failed = [s for s, r in results.items() if "error" in r or r.get("parity") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
