"""scripts/gpu_check.py: its CPU sides, as they run on a machine without CUDA.

The whole self-check (``scripts/gpu-check.sh --self-check --quick``) takes about a minute,
too long for the suite; these run its cheap pieces for real (the strict sandbox included).
"""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_wrapper_script_exists_and_passes_its_arguments_on():
    text = (SCRIPT.parent / "gpu-check.sh").read_text()
    assert "scripts/gpu_check.py" in text and '"$@"' in text and "timeout" in text


def test_metrics_check_runs_its_cpu_side_and_skips_cuda(gpu_check):
    row = gpu_check.check_metrics(False)
    assert row.status == gpu_check.NO_CUDA
    assert "CPU PSNR-Y" in row.figures and "SSIM-Y 0." in row.figures


def test_isolation_check_cpu_side_sees_no_marker_from_the_previous_session(gpu_check):
    row = gpu_check.check_isolation(False)
    assert row.status == gpu_check.NO_CUDA, row.figures
    assert "session 2 saw 0 of them" in row.figures


def test_a_failed_check_makes_the_table_fail(gpu_check, monkeypatch, capsys):
    """A check that raises is a FAIL row with its reason, and the exit status is 1."""
    monkeypatch.setattr(gpu_check, "run", lambda self_check, quick: [
        gpu_check.Row("metrics", gpu_check.NO_CUDA, "x"), gpu_check.Row("sandbox", "FAIL", "RuntimeError: boom")])
    assert gpu_check.main(["--self-check"]) == 1
    out = capsys.readouterr().out
    assert "sandbox    FAIL" in out and "skipped: no CUDA device" in out
    monkeypatch.setattr(gpu_check, "run", lambda self_check, quick: [gpu_check.Row("metrics", gpu_check.NO_CUDA, "x")])
    assert gpu_check.main(["--self-check"]) == 0
