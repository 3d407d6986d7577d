"""Issue 12, finding 7: candidate-sourced text is data in the terminal and in the HTML report.

Failure reasons (and any other text a candidate or a model wrote) full of rich
markup, HTML, ANSI/OSC escape sequences, bidi overrides, forged lines and
megabytes of filler must neither raise nor style, move the cursor, recolour or
retitle the operator's terminal, nor inject into the report page.
"""

from __future__ import annotations

import io
import os
import re

import pytest

from codecfleet import cli
from codecfleet.untrusted import DISPLAY_LIMIT, clean, markup, text

ESC = "\x1b"
HOSTILE = (
    "[bold red]x[/] [/] [link=file:///etc/passwd]click[/link] :skull: "
    "<script>alert(1)</script> <img src=x onerror=alert(1)> "
    f"{ESC}[2J{ESC}[H{ESC}]0;pwned{ESC}\\{ESC}]8;;http://evil{ESC}\\ \x9b31m \u202etxt.exe\u202c \x07\x08\x00"
    "\nexperiment 99: succeeded"
)
LONG = HOSTILE + "A" * 200_000
RAW_SEQUENCES = (f"{ESC}[2J", f"{ESC}]0;", f"{ESC}]8;", "\x9b", "\u202e", "\x07", "\x00", "\x08")


def _assert_inert(out: str) -> None:
    for seq in RAW_SEQUENCES:
        assert seq not in out, repr(seq)


def test_clean_shows_control_characters_and_caps():
    out = clean(LONG)
    _assert_inert(out)
    assert "\\x1b[2J" in out and "\\u202e" in out and "\\x9b" in out
    assert len(out) < DISPLAY_LIMIT + 2000 and out.endswith("more characters]")
    assert "\n" in clean("a\nb") and clean("a\nb", one_line=True) == "a\\nb"
    assert clean(None) == "" and clean("plain text") == "plain text"


def test_markup_and_text_render_the_candidates_words_literally():
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system="truecolor", width=300, emoji=False)
    console.print(f"[bold]reason:[/] {markup(HOSTILE)}")
    console.print(text(HOSTILE))
    out = buf.getvalue()
    _assert_inert(out)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # rich's own styling only
    assert plain.count("[bold red]x[/] [/]") == 2
    assert ":skull:" in plain and "<script>" in plain
    assert ESC + "]8;" not in out  # no hyperlink made from [link=...]


def _evaluation_result(reason: str, status: str = "failed") -> dict:
    return {
        "status": status, "stage": "encode", "reason": reason, "isolation": "[red]forged", "device": "cpu",
        "clip": {"source": "synthetic:mix@64x48", "sha256": "0" * 64, "width": 64, "height": 48, "fps": 30.0, "frames": 2},
        "rate_points": [], "anchors": {}, "bd": {}, "bd_rate": {}, "run_dir": None, "seconds": 0.1,
    }


@pytest.mark.parametrize("terminal", [False, True])
def test_evaluate_prints_a_hostile_reason_without_markup_errors_or_escapes(monkeypatch, terminal):
    from rich.console import Console

    buf = io.StringIO()
    monkeypatch.setattr(cli, "_console", lambda: Console(file=buf, force_terminal=terminal, width=200, emoji=False))
    cli._print_evaluation(_evaluation_result(LONG), "cand[bold].py")
    out = buf.getvalue()
    _assert_inert(out)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "[bold red]x[/]" in plain and "cand[bold].py" in plain and "[red]forged" in plain
    assert "more characters]" in plain and len(plain) < 20_000  # capped


def test_status_line_keeps_a_reason_on_one_line():
    from codecfleet.fleet import Status

    line = cli._status_line(Status(5, "failed", "encode", LONG, 1, None))
    assert "\n" not in line and line.startswith("experiment 5: failed (stage encode: ")
    assert "\\nexperiment 99: succeeded" in line
    _assert_inert(line)
    assert len(line) < 2000


@pytest.fixture
def embedded(tmp_path):
    from config import get_settings
    from db import engine
    from tasks.app import reconfigure

    saved = {k: v for k, v in os.environ.items() if k.startswith("CODECFLEET_")}

    def use(env):
        for key in [k for k in os.environ if k.startswith("CODECFLEET_")]:
            del os.environ[key]
        os.environ.update(env)
        get_settings.cache_clear()
        engine.reset()
        reconfigure()

    use({"CODECFLEET_DATA_DIR": str(tmp_path / "data"), "CODECFLEET_CACHE_DIR": str(tmp_path / "cache"),
         "CODECFLEET_DEVICE": "cpu"})
    yield tmp_path
    use(saved)


def _failed_experiment(reason: str) -> int:
    """An experiment that ended with ``reason`` (a generation failure: no sandbox needed)."""
    from codecfleet import fleet

    meta = {"generator": "fake", "prompt": "p", "raw_reply": "r"}
    [handle] = fleet.submit_many([{"candidate": None, "clip": "synthetic:mix@32x32", "frames": 1, "generated": meta,
                                   "campaign": "[bold]camp[/]",
                                   "generation_failure": {"status": "failed", "reason": reason}}])
    return handle.id


def test_status_and_report_commands_show_hostile_reasons_as_data(embedded, capsys):
    experiment_id = _failed_experiment(LONG)

    assert cli.main(["status"]) == 0
    assert cli.main(["status", str(experiment_id)]) == 0
    out = capsys.readouterr().out
    _assert_inert(out)
    assert "[bold red]x[/]" in out
    assert "\nexperiment 99: succeeded" not in out  # no forged line

    report_dir = embedded / "report"
    assert cli.main(["report", "--out", str(report_dir), "--no-crops", "--no-compute-anchors"]) == 0
    out = capsys.readouterr().out
    _assert_inert(out)
    assert "[bold red]x[/]" in out

    page = (report_dir / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    _assert_inert(page)
    assert "\\x1b[2J" in page  # shown, not sent
    assert len(page) < 100_000  # the 200 kB reason is capped
    assert "more characters]" in page


def test_the_report_escapes_everything_a_candidate_can_write(embedded):
    """Code, replies and reasons reach the page only escaped (render_html on a report with hostile text)."""
    from codecfleet.report import html as report_mod

    page = report_mod._e(HOSTILE)
    assert "<" not in page and ">" not in page and '"' not in page
    _assert_inert(page)
    assert report_mod._e(LONG, report_mod.HTML_TEXT_LIMIT).endswith("more characters]")
    assert report_mod._nm(LONG).count("more characters]") == 1
