"""The systemd units are valid: ``systemd-analyze verify`` on copies pointing at this checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_harness import require

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VENV_BIN = Path(sys.executable).parent


def _instantiate(tmp_path: Path) -> list[Path]:
    """Copies of the units with ExecStart on this venv, templates instantiated (GPU 0, cpu)."""
    out = []
    for unit in sorted(DEPLOY.glob("*.service")):
        text = unit.read_text().replace("/opt/codecfleet/.venv/bin/", f"{VENV_BIN}/")
        # The codecfleet user and /etc/codecfleet exist only on a fleet host.
        text = re.sub(r"^(User|Group)=.*$", r"\1=root", text, flags=re.M)
        text = text.replace("EnvironmentFile=/etc/codecfleet/", "EnvironmentFile=-/etc/codecfleet/")
        name = unit.name.replace("@.service", "@0.service" if "gpu" in unit.name else "@cpu.service")
        (tmp_path / unit.name).write_text(text)
        if name != unit.name:
            shutil.copyfile(tmp_path / unit.name, tmp_path / name)
            out.append(tmp_path / name)
        else:
            out.append(tmp_path / unit.name)
    return out


def _verify(paths: list[Path]) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze is not installed (scripts/setup.sh installs the systemd package)")
    return subprocess.run([analyze, "verify", "--man=no", *map(str, paths)], capture_output=True, text=True, timeout=120,
                          cwd=paths[0].parent)


def test_units_pass_systemd_analyze_verify(tmp_path):
    units = _instantiate(tmp_path)
    assert {u.name for u in units} >= {
        "codecfleet-gpu-worker@0.service", "codecfleet-worker@cpu.service",
        "codecfleet-beat.service", "codecfleet-flower.service",
    }

    result = _verify(units)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Unknown" not in result.stderr and "ignoring" not in result.stderr, result.stderr


def test_verify_catches_a_broken_unit(tmp_path):
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=/nonexistent/codecfleet worker\nRestart=sometimes\n")

    result = _verify([broken])

    assert result.returncode != 0 or "Failed to parse" in result.stderr or "not executable" in result.stderr


def test_gpu_unit_pins_one_gpu_one_process_and_outlasts_the_hard_time_limit():
    from tasks.app import TIME_LIMITS

    text = (DEPLOY / "codecfleet-gpu-worker@.service").read_text()
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1))

    assert "Environment=CUDA_VISIBLE_DEVICES=%i" in text
    assert "--concurrency 1" in text and "--max-tasks-per-child" in text and "--queues gpu" in text
    assert re.search(r"^Restart=on-failure$", text, re.M)
    assert stop > max(TIME_LIMITS["codecfleet.experiment.encode_decode"])
    assert "--basic-auth=" in (DEPLOY / "codecfleet-flower.service").read_text()


@pytest.mark.parametrize("unit", ["codecfleet-gpu-worker@.service", "codecfleet-worker@.service"])
def test_worker_units_start_workers_through_the_cli(unit):
    from codecfleet.cli import build_parser, worker_argv

    line = re.search(r"^ExecStart=\S+/codecfleet (worker .*)$", (DEPLOY / unit).read_text(), re.M).group(1)
    instance = "0" if "gpu-worker" in unit else "cpu"  # the template's %i
    argv = worker_argv(build_parser().parse_args(line.replace("%i", instance).split()))

    assert argv[1:5] == ["-m", "celery", "-A", "tasks.app"] and "--task-events" in argv
