"""The ir-bridge command: listings, one-line errors, exit codes, inspect."""

import subprocess
import sys

import pytest

from ir_bridge.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_passes_lists_every_pass_and_pipeline(capsys):
    code, out, _ = run_cli(capsys, "passes")
    assert code == 0
    for name in ("eliminate-dropout", "fold-flatten", "fuse-activation", "fold-batchnorm",
                 "layout-nchw", "constant-folding", "dead-code"):
        assert name in out
    assert "pipeline default:" in out and "pipeline none:" in out


def test_plugins_lists_entry_points_with_their_distribution(capsys):
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    assert "frontend" in out and "backend" in out and "[ir_bridge]" in out


@pytest.mark.parametrize("args,needle", [
    (["inspect", "missing.keras"], "no such file"),
    (["convert", "missing.onnx", "--to", "mdf", "-o", "x.json"], "no such file"),
    (["inspect", "--passes", "nope", "x"], "no such file"),
])
def test_errors_are_one_line_with_exit_2(capsys, args, needle):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_file_suffix_is_exit_2(capsys, tmp_path):
    path = tmp_path / "model.xyz"
    path.write_text("{}")
    code, _, err = run_cli(capsys, "inspect", str(path))
    assert code == 2 and "cannot tell the format" in err


def test_usage_error_is_exit_2(capsys):
    code, _, err = run_cli(capsys, "convert")
    assert code == 2 and "Missing argument" in err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "ir_bridge.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for cmd in ("convert", "run", "inspect", "passes", "plugins"):
        assert cmd in out
