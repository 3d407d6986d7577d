"""The report's gist in the terminal (rich tables): :func:`print_summary`."""

from __future__ import annotations

from typing import Any

from codecfleet.report.model import (
    ANCHOR_ORDER,
    NOT_MEASURED,
    Report,
    _bd_text,
    _clip_name,
    _probe_text,
    _status_text,
)
from codecfleet.untrusted import markup, text


def _cell(value: float | None, spec: str) -> str:
    return NOT_MEASURED if value is None else format(value, spec)


def print_summary(report: Report, console: Any = None, *, rows: int = 10) -> None:
    """The report's gist as rich tables: status counts, leaderboards, failures, where the HTML is."""
    from rich.console import Console
    from rich.table import Table

    # Names, notes and reasons are data: escaped (markup) or literal (Text), capped, controls shown.
    if console is None:
        console = Console(emoji=False)
        if not console.is_terminal:
            console = Console(width=200, emoji=False)
    counts = ", ".join(f"{s.value} {n}" for s, n in sorted(report.status_counts.items(), key=lambda kv: kv[0].value))
    console.print(f"[bold]codecfleet report[/] — {markup(report.scope, 300)}: {counts or 'no experiments'}")
    if report.headline is not None:
        console.print(text(report.headline.sentence, 1000, style="bold"))
        if report.headline.held_out:
            console.print(text(report.headline.held_out, 1000))
        console.print(text(report.headline.spent, 1000))
    for note in report.notes:
        console.print(text(note, 1000, style="yellow"))
    for s in report.sections:
        held = " — held-out clip (never used for fitness)" if s.held_out else ""
        table = Table(
            title=f"{markup(_clip_name(s.clip), 300)} ({s.clip.width}x{s.clip.height}, {s.clip.n_frames} frames){held}"
        )
        for col in ("rank", "cand", "family", *(f"BD vs {c} % (overlap)" for c in ANCHOR_ORDER), "kbps", "PSNR-Y",
                    "SSIM-Y", "status"):
            table.add_column(col, justify="right")
        for r in s.ranked[:rows] + [r for r in s.ranked[rows:] if r.seed]:
            kbps = [p.kbps for p in r.points]
            psnr = [p.psnr_y for p in r.points]
            ssim = [p.ssim_y for p in r.points]
            bds = [text(_bd_text(r, c), 120) for c in ANCHOR_ORDER]
            table.add_row(
                str(r.rank) if r.rank is not None else "-",
                str(r.experiment.candidate_id) + (" seed" if r.seed else ""),
                text(r.family or "-", 60),
                *bds,
                f"{min(kbps):.0f}-{max(kbps):.0f}" if kbps else NOT_MEASURED,
                f"{min(psnr):.2f}-{max(psnr):.2f}" if psnr else NOT_MEASURED,
                f"{min(ssim):.3f}-{max(ssim):.3f}" if ssim else NOT_MEASURED,
                text(_status_text(r.experiment), 200),
            )
        console.print(table)
        missing = [c for c in ANCHOR_ORDER if not s.anchors.get(c) or not s.anchors[c].points]
        if missing:
            console.print(f"[yellow]anchors without a curve: {', '.join(missing)}[/]")
        if s.crops is None:
            console.print(text(s.crops_note, 1000, style="yellow"))
    if report.failures:
        table = Table(title="failures by stage")
        for col in ("status", "stage", "count", "example"):
            table.add_column(col)
        for g in report.failures:
            example = f"exp {g.examples[0][0]}: {g.examples[0][1]}" if g.examples else ""
            table.add_row(text(g.status.value, 50), text(g.failure_stage or "-", 50), str(g.count), text(example, 160))
        console.print(table)
    if report.probe:
        console.print(text(_probe_text(report.probe), 500))
    d = report.dedup or {}
    if d.get("duplicate_output") or d.get("reused"):
        console.print(f"deduplicated (not failures): duplicate_output {d.get('duplicate_output', 0)}, "
                      f"reused results {d.get('reused', 0)}")
    console.print("report (one self-contained file):", text(report.html_path.resolve(), 1000))
