"""The CLI's error contract: the project's user errors are one line and exit 2; a bug
keeps its traceback; read-only commands do not load the measurement stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from codecfleet import cli
from config import UserError


def _run_with(monkeypatch, exc: BaseException) -> int:
    def boom(args):
        raise exc

    parser = cli.build_parser()
    original = parser.parse_args

    def parse(argv=None):
        args = original(argv)
        args.func = boom
        return args

    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", parse)
    return cli.main(["clips"])


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    assert _run_with(monkeypatch, UserError("no such clip: foo.y4m")) == 2
    err = capsys.readouterr().err
    assert err == "codecfleet clips: error: no such clip: foo.y4m\n"


@pytest.mark.parametrize("bug", [ValueError("bad internal state"), KeyError("missing"), LookupError("x")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    with pytest.raises(type(bug)):
        _run_with(monkeypatch, bug)


def test_project_errors_derive_from_user_error():
    from codecfleet.campaigns import CampaignError
    from codecfleet.fleet import FleetError
    from evaluation.container import ContainerError
    from evaluation.reference import UnknownReferenceError
    from evaluation.clip import VideoError
    from generation import GenerationConfigError

    for cls in (CampaignError, FleetError, ContainerError, UnknownReferenceError, VideoError, GenerationConfigError,
                cli.UsageError):
        assert issubclass(cls, UserError), cls


_PROBE = """
import json, sys
from codecfleet import cli
rc = cli.main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "scipy", "numba", "matplotlib", "skimage", "alembic", "evaluation.pipeline",
                           "tasks.experiment", "sqlalchemy") if m in sys.modules)
print(json.dumps({"rc": rc, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["status", "--json"], ["cancel", "999999"]])
def test_read_only_commands_load_no_measurement_stack(argv, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CODECFLEET_DATA_DIR": str(tmp_path / "data")}
    # The embedded database must exist first (creating it is Alembic's job).
    first = subprocess.run([sys.executable, "-c", _PROBE, "db", "upgrade"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], env=env, capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    # status reads the embedded SQLite database at head without SQLAlchemy (db.lean);
    # cancel changes a state, which only the state machine (SQLAlchemy) does.
    assert report["heavy"] == ([] if argv[0] == "status" else ["sqlalchemy"]), report


def test_status_on_a_machine_that_never_ran_anything_lists_nothing_and_creates_nothing(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CODECFLEET_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, "status", "--json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"experiments": [], "waiting": [], "internal_errors": {"total": 0, "experiments": []}}
    assert json.loads(proc.stderr.strip().splitlines()[-1])["heavy"] == []
    assert not (tmp_path / "data" / "codecfleet.db").exists()
    table = subprocess.run([sys.executable, "-m", "codecfleet.cli", "status"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert table.returncode == 0 and "no experiments yet" in table.stdout, table.stderr

