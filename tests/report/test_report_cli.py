"""The report subcommand: its arguments, its exit codes and its terminal summary."""

from __future__ import annotations

import argparse

import pytest

from codecfleet.report import add_report_parser, cmd_report


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="codecfleet")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_report_command_writes_the_report_and_prints_the_leaderboard(report_fixture, tmp_path, capsys):
    out = tmp_path / "cli-report"
    args = _parse(["report", "--db", report_fixture.url, "--out", str(out), "--no-crops", "--no-compute-anchors"])
    assert args.func is cmd_report
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert (out / "index.html").is_file()
    assert "codecfleet report" in printed and str((out / "index.html").resolve()) in printed
    best = next(s for s in report_fixture.report.sections if s.clip.sha256 == report_fixture.clip1.sha256).ranked[0]
    assert f"{best.primary_bd_rate:+.1f}" in printed
    assert "failures by stage" in printed and "decode" in printed


def test_report_command_with_an_unknown_campaign_exits_2_with_one_line(report_fixture, tmp_path, capsys):
    args = _parse(["report", "--db", report_fixture.url, "--out", str(tmp_path / "r"), "--campaign", "nope"])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == "codecfleet report: error: no campaign named (or with id) 'nope' in the database"


def test_campaign_and_experiment_scopes_are_mutually_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["report", "--campaign", "a", "--experiment", "1"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
