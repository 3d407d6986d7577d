"""The report page: plain HTML and CSS, figures and crops embedded, no scripts (:func:`render_html`).

Every text that may come from a candidate (code, replies, reasons, names) is
escaped and cleaned through :mod:`codecfleet.untrusted` (:func:`_e`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from codecfleet.report.figures import FIGURE_SIZE_PX, HEADLINE_SIZE_PX, RD_METRICS
from codecfleet.report.model import (
    ANCHOR_ORDER,
    BD_METRIC,
    NOT_MEASURED,
    PRIMARY_ANCHOR,
    ClipSection,
    Headline,
    RankedExperiment,
    Report,
    _bd_text,
    _clip_name,
    _probe_text,
    _score_reason,
    _status_text,
)
from codecfleet.untrusted import clean
from db import report_queries as rq


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.6rem; }
.meta { color: #555; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .84rem; max-width: 100%; }
th, td { border: 1px solid #d6d6d6; padding: .25rem .45rem; text-align: right; vertical-align: top;
         overflow-wrap: normal; }
td.w { overflow-wrap: anywhere; }
td.nw, th.nw { white-space: nowrap; overflow-wrap: normal; }
.headline { background: #f6f8fa; border: 1px solid #d0d7de; padding: .6rem 1rem; margin: .6rem 0 1rem; }
.headline img { max-width: 100%; height: auto; display: block; }
.headline p { margin: .4rem 0; } .headline .best { font-size: 1.05rem; }
.held { background: #eef3ff; border: 1px solid #b6c8f0; padding: .1rem .4rem; font-size: .8rem; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr.best td { background: #eef7ee; }
.nm { color: #9a6700; font-style: italic; } .why { display: block; font-size: .75rem; color: #777; font-style: normal; }
.good { color: #116329; } .bad { color: #a40e26; }
.figs { display: flex; flex-wrap: wrap; gap: 1rem; } .figs img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
.crops { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.crops figure { margin: 0; } .crops img { image-rendering: pixelated; border: 1px solid #ccc; display: block; }
figcaption { font-size: .8rem; color: #333; max-width: 300px; }
pre.diff { background: #fafafa; border: 1px solid #e3e3e3; padding: .5rem; overflow-x: auto; font-size: .78rem;
           max-height: 28rem; }
.add { color: #116329; background: #e6ffec; } .del { color: #a40e26; background: #ffebe9; } .hunk { color: #6f42c1; }
.note { background: #fff8c5; border: 1px solid #e9d96b; padding: .3rem .6rem; margin: .4rem 0; font-size: .86rem; }
code { font-size: .85em; }
"""


#: Cap on candidate-sourced text (failure reasons, notes quoting them) in the page.
HTML_TEXT_LIMIT = 4000


def _e(value: Any, limit: int | None = None) -> str:
    """HTML-escaped text with control characters shown as escapes (and capped at ``limit``)."""
    return html.escape(clean(value, limit), quote=True)


def _nm(reason: str | None) -> str:
    why = f'<span class="why">{_e(reason, HTML_TEXT_LIMIT)}</span>' if reason else ""
    return f'<span class="nm">{NOT_MEASURED}{why}</span>'


def _num(value: float | None, spec: str, reason: str = "no value stored") -> str:
    return _nm(reason) if value is None else _e(format(value, spec))


def _span(values: Sequence[float], spec: str) -> str:
    if not values:
        return _nm("no rate points stored")
    lo, hi = min(values), max(values)
    return _e(format(lo, spec)) if lo == hi else f"{_e(format(lo, spec))}&nbsp;–&nbsp;{_e(format(hi, spec))}"


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _bd_value(r: RankedExperiment, codec: str) -> float | None:
    s = r.scores.get(codec)
    return None if s is None else s.bd_rate


def _bd_cell(r: RankedExperiment, codec: str) -> str:
    s = r.scores.get(codec)
    if s is None or s.bd_rate is None:
        return _nm(_score_reason(r, codec))
    cls = "good" if s.bd_rate < 0 else "bad"
    extra = "" if s.overlap is None else f'<span class="why">overlap {s.overlap:.0%}</span>'
    return f'<span class="{cls}">{s.bd_rate:+.1f}&nbsp;%</span>{extra}'


def _who(c: rq.CandidateInfo | None) -> str:
    if c is None:
        return _nm("no candidate")
    return _e(c.generator + (f" / {c.model}" if c.model else ""))


def _leaderboard_html(section: ClipSection) -> str:
    head = "".join(f"<th>BD-rate vs {_e(c)}</th>" for c in ANCHOR_ORDER)
    rows = []
    for r in section.ranked:
        pts = r.points
        seed = ' <span class="held">seed</span>' if r.seed else ""
        rows.append(
            f'<tr{" class=best" if r is section.ranked[0] else ""}>'
            f"<td>{r.rank if r.rank is not None else '–'}</td>"
            f'<td title="experiment {r.experiment.id}">{r.experiment.candidate_id}{seed}</td>'
            f"<td class=l>{_e(r.family or '–')}</td><td class=l>{_who(r.candidate)}</td>"
            + "".join(f"<td>{_bd_cell(r, c)}</td>" for c in ANCHOR_ORDER)
            + f"<td class=nw>{_span([p.kbps for p in pts], '.0f')}</td>"
            f"<td class=nw>{_span([p.psnr_y for p in pts], '.2f')}</td>"
            f"<td class=nw>{_span([p.ssim_y for p in pts], '.3f')}</td>"
            f"<td class=nw>{_num(_mean([p.encode_fps for p in pts]), '.1f', 'no encode time stored')} / "
            f"{_num(_mean([p.decode_fps for p in pts]), '.1f', 'no decode time stored')}</td>"
            f"<td class=l>{_e(_status_text(r.experiment))}</td></tr>"
        )
    more = ""
    hidden = section.n_candidates - len(section.ranked)
    if hidden > 0:
        more = (f'<p class="meta">{hidden} more candidate{"s" if hidden != 1 else ""} not shown (--top); '
                "the seeds are always shown.</p>")
    return (
        f"<table><tr><th>rank</th><th>cand&shy;idate</th><th class=l>family</th><th class=l>generator / model</th>{head}"
        "<th>kbps</th><th>PSNR-Y dB</th><th>SSIM-Y</th><th>enc / dec fps</th><th class=l>status</th></tr>"
        + "".join(rows)
        + "</table>"
        + f'<p class="meta">Ranked by BD-rate on the {BD_METRIC} curve against {PRIMARY_ANCHOR} (lower is better; '
        "negative beats the anchor); each figure with the overlap of the two quality ranges it integrates over, "
        "or none with the reason. kbps, PSNR-Y and SSIM-Y: range over the rate points; fps: mean over them. "
        "One row per candidate: its best experiment on this clip (hover the id for the experiment). "
        "Family: the seed codec its line of first parents starts from.</p>"
        + more
    )


def _anchor_table_html(section: ClipSection) -> str:
    rows = []
    for codec in ANCHOR_ORDER:
        a = section.anchors[codec]
        if not a.points:
            rows.append(f"<tr><td class=l>{_e(codec)}</td><td class=l colspan=4>{_nm(a.note)}</td></tr>")
            continue
        pts = ", ".join(f"CRF {p.crf}: {p.kbps:.1f}&nbsp;kbps / {p.psnr_y:.2f}&nbsp;dB" for p in a.points)
        origin = _e(a.origin) + (f'<span class="why">{_e(a.note)}</span>' if a.note else "")
        rows.append(
            f"<tr><td class=l>{_e(codec)}</td><td class=l>{pts}</td><td class=l>{origin}</td>"
            f"<td class=l>{_e(a.anchor_version or '')} / {_e(a.metrics_version or '')}</td>"
            f"<td class=l><code>{_e((a.settings_hash or '')[:12])}</code></td></tr>"
        )
    return (
        "<table><tr><th class=l>anchor</th><th class=l>points (kbps / PSNR-Y)</th><th class=l>source</th>"
        "<th class=l>anchor / metrics version</th><th class=l>settings hash (first point)</th></tr>" + "".join(rows) + "</table>"
    )


def _crops_html(section: ClipSection) -> str:
    if section.crops is None:
        return f'<p class="note">{_e(section.crops_note or "no crops", HTML_TEXT_LIMIT)}</p>'
    c = section.crops
    x, y, w, h = c.box
    figs = "".join(
        f'<figure><img src="{p.file}" width="{w * c.zoom}" height="{h * c.zoom}" alt="{_e(p.title)}">'
        f"<figcaption><b>{_e(p.title)}</b><br>{_e(p.caption)}</figcaption></figure>"
        for p in c.panels
    )
    notes = "".join(f'<p class="note">{_e(n, HTML_TEXT_LIMIT)}</p>' for n in c.notes)
    return (
        f'<p class="meta">Frame {c.frame_index}, region x={x}..{x + w - 1}, y={y}..{y + h - 1} '
        f"(the most detailed {w}x{h} window), shown at {c.zoom}x, nearest neighbour.</p>"
        f'<div class="crops">{figs}</div>{notes}'
    )


def _diff_html(diff: str) -> str:
    out = []
    for line in diff.splitlines():
        cls = ""
        if line.startswith("+") and not line.startswith("+++"):
            cls = "add"
        elif line.startswith("-") and not line.startswith("---"):
            cls = "del"
        elif line.startswith("@@"):
            cls = "hunk"
        out.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line))
    return '<pre class="diff">' + "\n".join(out) + "</pre>"


def _points_text(r: RankedExperiment) -> str:
    return "; ".join(f"q={p.quality:g}: {p.kbps:.1f} kbps / {p.psnr_y:.2f} dB" for p in r.points)


def _lineage_html(section: ClipSection) -> str:
    if not section.lineage:
        return '<p class="note">no lineage: the best experiment has no candidate</p>'
    parts = [
        f'<p class="meta">From the best candidate back to its root ({len(section.lineage)} steps), '
        "following the first parent; numbers are each candidate's best experiment on this clip.</p>"
    ]
    for step in section.lineage:
        c = step.candidate
        tokens = ""
        if c.prompt_tokens is not None or c.completion_tokens is not None:
            tokens = f", tokens {c.prompt_tokens}/{c.completion_tokens}"
        parent = f"parent: candidate {step.parent_id}" if step.parent_id is not None else "root (no parent)"
        if len(c.parent_ids) > 1:
            parent += f" (all parents: {', '.join(map(str, c.parent_ids))})"
        if step.best is None:
            numbers = _nm("no succeeded experiment of this candidate on this clip")
        else:
            b = step.best
            bds = ", ".join(f"vs {codec} {_bd_text(b, codec)}" for codec in ANCHOR_ORDER)
            numbers = f"exp {b.experiment.id}: BD-rate {_e(bds)}<br>{_e(_points_text(b))}"
        parts.append(
            f"<h4>candidate {c.id} <span class=meta>— {_who(c)}, {_e(parent)}, "
            f"created {_e(c.created_at.isoformat(timespec='seconds'))}{_e(tokens)}</span></h4><p>{numbers}</p>"
        )
        if step.diff_note:
            parts.append(f'<p class="meta">{_e(step.diff_note)}</p>')
        if step.diff:
            parts.append(_diff_html(step.diff))
        elif step.parent_id is None and c.code is not None:
            parts.append(
                f"<details><summary>code of the root ({len(c.code.splitlines())} lines)</summary>"
                f'<pre class="diff">{_e(c.code)}</pre></details>'
            )
    return "".join(parts)


def _dedup_html(report: Report) -> str:
    d = report.dedup or {}
    if not d.get("duplicate_output") and not d.get("reused"):
        return "<p>Nothing was deduplicated in scope: every experiment was measured.</p>"
    dup = ", ".join(f"exp {a} = exp {b}" for a, b in d.get("duplicate_examples", []))
    reuse = ", ".join(f"exp {a} from exp {b}" for a, b in d.get("reused_examples", []))
    n_dup, n_reused = d.get("duplicate_output", 0), d.get("reused", 0)
    return (
        "<p>Work that was not repeated (these are not failures): "
        f"<b>{n_dup}</b> experiment{'s' if n_dup != 1 else ''} ended <code>duplicate_output</code> (every rate point's "
        "bytes had already been measured by the same decoder: pointed at the original, not ranked twice)"
        + (f" — e.g. {_e(dup)}" if dup else "")
        + f"; <b>{n_reused}</b> reused the result of identical code on the same clip and settings"
        + (f" — e.g. {_e(reuse)}" if reuse else "")
        + ".</p>"
    )


def _models_html(report: Report) -> str:
    rows = "".join(
        f"<tr><td class=l>{_e(m.generator)}</td><td class=l>{_e(m.model or '–')}</td><td>{m.candidates}</td>"
        f"<td>{m.succeeded} ({100 * m.accepted_share:.0f} %)</td><td>{_num(m.best, '+.1f', 'no BD-rate')}</td>"
        f"<td>{_num(m.median, '+.1f', 'no BD-rate')}</td><td>{m.tokens}</td><td>{_num(m.cost_usd, '.4f', 'unknown')}</td></tr>"
        for m in report.models
    )
    return (
        "<table><tr><th class=l>generator</th><th class=l>model</th><th>candidates</th><th>with a BD-rate (share)</th>"
        f"<th>best BD-rate vs {PRIMARY_ANCHOR} %</th><th>median %</th><th>tokens</th><th>cost USD</th></tr>"
        + rows + "</table>"
        '<p class="meta">Seeds excluded; a candidate\'s figure is its best on any clip in scope.</p>'
    )


def _headline_html(h: Headline | None) -> str:
    if h is None:
        return ""
    fig = (f'<img src="{h.figure}" width="{HEADLINE_SIZE_PX[0]}" height="{HEADLINE_SIZE_PX[1]}" '
           'alt="best-so-far BD-rate per generation, every candidate a dot">') if h.figure else ""
    held = f"<p>{_e(h.held_out)}</p>" if h.held_out else ""
    return (
        f'<div class="headline" id="headline">{fig}<p class="best"><b>{_e(h.sentence)}</b></p>{held}'
        f"<p>{_e(h.spent)}</p><p class=\"meta\">{_e(h.generation_basis)}. Grey dots: deduplicated (reused or "
        "duplicate_output), not failures.</p></div>"
    )


def _failures_html(report: Report) -> str:
    probe = f"<p>{_e(_probe_text(report.probe))}</p>" if report.probe else ""
    if not report.failures:
        return probe + "<p>No experiment in scope ended in failure.</p>"
    rows = []
    for g in report.failures:
        examples = "<br>".join(f"exp {eid}: {_e(err, HTML_TEXT_LIMIT)}" for eid, err in g.examples) or _nm(
            "no error text stored"
        )
        rows.append(
            f"<tr><td class=l>{_e(g.status.value)}</td><td class=l>{_e(g.failure_stage or '–')}</td>"
            f"<td>{g.count}</td><td class='l w'>{examples}</td></tr>"
        )
    return probe + (
        "<table><tr><th class=l>status</th><th class=l>stage</th><th>experiments</th>"
        "<th class=l>example reasons (newest first)</th></tr>" + "".join(rows) + "</table>"
    )


def _provenance_html(report: Report) -> str:
    rows = []
    for e, stored in report.provenance:
        results = stored.measured_by[stored.points[0].index] if stored.points else e.id
        rows.append(
            f"<tr><td>{e.id}</td><td>{e.candidate_id if e.candidate_id is not None else '–'}</td>"
            f"<td class=l>{_e(e.status.value)}</td>"
            f"<td class='l w'>{_e(', '.join(stored.evaluator_versions) or '–')}<br>"
            f"{_e(', '.join(stored.metrics_versions) or '–')}</td>"
            f'<td class="l w">{_e(_clip_name(e.clip))}<br><code title="{_e(e.clip.sha256)}">{_e(e.clip.sha256[:12])}…</code></td>'
            f"<td class='l w'>{_e(e.worker_host or '–')}</td><td class=l>{_e(e.device or '–')}</td>"
            f"<td class='l w'>{_e(e.isolation or '–')}</td>"
            f"<td class=l>{_e(e.queued_at.isoformat(timespec='seconds'))}<br>"
            f"{_e(e.finished_at.isoformat(timespec='seconds') if e.finished_at else '–')}</td>"
            f"<td>{results if results != e.id else ''}</td></tr>"
        )
    return (
        '<p class="meta">Every experiment whose numbers appear above. Versions are those recorded with its '
        "measurements; anchor provenance is in each clip's anchor table.</p>"
        "<table><tr><th>exp</th><th>candidate</th><th class=l>status</th><th class=l>evaluator / metrics version</th>"
        "<th class=l>clip / sha256</th><th class=l>worker</th><th class=l>device</th>"
        "<th class=l>isolation</th><th class=l>queued / finished (UTC)</th><th>numbers from exp</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render_html(report: Report) -> str:
    """The report page: plain HTML and CSS, images by relative file name, no scripts."""
    counts = ", ".join(f"{s.value} {n}" for s, n in sorted(report.status_counts.items(), key=lambda kv: kv[0].value))
    body = [
        "<h1>codecfleet report</h1>",
        _headline_html(report.headline),
        f'<p class="meta">Scope: <b>{_e(report.scope)}</b> · database {_e(report.database)} · generated '
        f"{_e(report.generated_at.isoformat(timespec='seconds'))}</p>",
        f"<p>Experiments: {_e(counts) if counts else 'none'}.</p>",
    ]
    body += [f'<p class="note">{_e(n, HTML_TEXT_LIMIT)}</p>' for n in report.notes]
    if not report.sections:
        body.append('<p class="note">No succeeded experiment in scope yet: nothing to rank or plot.</p>')
    for s in report.sections:
        c = s.clip
        held = (' <span class="held">held-out: never used for fitness, parents or prompts</span>'
                if s.held_out else "")
        body.append(
            f'<h2 id="clip{c.id}">Clip {_e(_clip_name(c))}{held}</h2><p class="meta">{c.width}x{c.height}, {c.n_frames} frames '
            f"at {c.fps:g} fps, sha256 <code>{_e(c.sha256)}</code></p>"
        )
        body += [f'<p class="note">{_e(n, HTML_TEXT_LIMIT)}</p>' for n in s.notes]
        body.append("<h3>Leaderboard</h3>" + _leaderboard_html(s))
        body.append("<h3>Rate–distortion curves</h3>")
        body.append(
            '<div class="figs">'
            + "".join(
                f'<img src="{f}" width="{FIGURE_SIZE_PX[0]}" height="{FIGURE_SIZE_PX[1]}" '
                f'alt="{_e(RD_METRICS[m])} against kbps">'
                for m, f in s.figures.items()
            )
            + "</div>"
        )
        body.append(_anchor_table_html(s))
        body.append("<h3>Side by side at a similar rate</h3>" + _crops_html(s))
        body.append("<h3>Lineage of the best candidate</h3>" + _lineage_html(s))
    if report.models:
        body.append("<h2>By model</h2>" + _models_html(report))
    body.append("<h2>Deduplication</h2>" + _dedup_html(report))
    body.append("<h2>Failures by stage and reason</h2>" + _failures_html(report))
    body.append("<h2>Provenance</h2>" + _provenance_html(report))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>codecfleet report: {_e(report.scope)}</title><style>{_CSS}</style></head>"
        "<body>" + "\n".join(body) + "</body></html>\n"
    )
