"""The tutorial scripts in ``examples/`` keep working: each runs with ``--quick`` in its own
process, exits 0 and prints a passing parity report.

The three scripts start together (each spends most of its time importing TensorFlow and
training briefly), so the module costs about as long as the slowest one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# find_spec, not importorskip: the scripts import these in their own processes.
_MISSING = [m for m in ("keras", "onnx", "onnxruntime", "modeci_mdf")
            if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"not installed: {_MISSING}")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
PARITY_OK = re.compile(r"^parity .+ vs .+: OK \(batch \d+", re.M)
TIMEOUT = 240


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    procs = {}
    for name in SCRIPTS:
        out = tmp_path_factory.mktemp(name[:2])
        procs[name] = (subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), "--quick", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=out), out)
    results = {}
    for name, (proc, out) in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        results[name] = (proc.returncode, stdout, stderr, out)
    return results


def test_there_are_three_tutorials():
    assert SCRIPTS == ["01_mlp_train_convert_run.py", "02_cnn_to_onnx_and_back.py",
                       "03_inspect_and_passes.py"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_and_reports_parity(finished, name):
    rc, stdout, stderr, out = finished[name]
    assert rc == 0, f"{name} exited {rc}\n{stdout[-2000:]}\n{stderr[-3000:]}"
    assert PARITY_OK.search(stdout), stdout[-2000:]
    assert "FAILED" not in stdout
    assert any(out.iterdir()), f"{name} wrote nothing into {out}"


def test_example_outputs(finished):
    _, one, _, _ = finished["01_mlp_train_convert_run.py"]
    assert re.search(r"MDF engine held-out accuracy: 0\.\d{4}", one)
    assert re.search(r"digit 0: predicted \d \(true \d\)", one)
    _, two, _, out = finished["02_cnn_to_onnx_and_back.py"]
    assert "onnx.checker is happy" in two and len(PARITY_OK.findall(two)) == 2
    assert (out / "cnn_tutorial.onnx").is_file()
    assert (out / "cnn_tutorial_from_onnx.keras").is_file()
    _, three, _, _ = finished["03_inspect_and_passes.py"]
    assert "ops after:  {'Input': 1, 'Conv': 1, 'MaxPool': 1, 'Gemm': 2}" in three
