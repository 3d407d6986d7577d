"""Putting the report together: read the database, re-make what it lacks, draw, write ``index.html``.

:func:`build_report` is the one entry point; it is the only module of the
package that imports all the others.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codecfleet.report.crops import make_crops
from codecfleet.report.figures import RD_METRICS, figure_data_uri, headline_figure, rd_figure, rd_series
from codecfleet.report.html import render_html
from codecfleet.report.model import (
    ANCHOR_ORDER,
    AnchorCurve,
    AnchorPointRow,
    ClipSection,
    Report,
    ReportError,
    ReportOptions,
    _anchor_curves,
    _best_per_candidate,
    _campaign_params,
    _candidate_costs,
    _clip_name,
    _dedup,
    _headline,
    _held_out_text,
    _lineage,
    _lineage_facts,
    _model_rows,
    _normal_spec,
    _open_database,
    _ranked_rows,
    _redact,
    _scope,
    _with_ancestors,
    probe_summary,
)
from codecfleet.untrusted import markup
from db import report_queries as rq
from db.models import ExperimentStatus


def build_report(
    database_url: str,
    out_dir: Path,
    *,
    campaign: str | None = None,
    experiment_id: int | None = None,
    options: ReportOptions = ReportOptions(),
    console: Any = None,
) -> Report:
    """Read the database, make the figures and crops, write ``out_dir/index.html``; return the data.

    ``campaign`` is a campaign name or id; ``experiment_id`` one experiment;
    neither: every experiment. Raises :class:`ReportError` when the database,
    campaign or experiment does not exist.
    """
    from db.session import session_factory

    out_dir = Path(out_dir)
    engine = _open_database(database_url)
    try:
        session = session_factory(engine)()
        try:
            scope, campaign_id = _scope(session, campaign, experiment_id)
            experiments = rq.experiments_in_scope(session, campaign_id=campaign_id, experiment_id=experiment_id)
            if experiment_id is not None and not experiments:
                raise ReportError(f"experiment {experiment_id} does not exist")
            counts = rq.status_counts(session, campaign_id=campaign_id, experiment_id=experiment_id)
            failures = rq.failure_breakdown(session, campaign_id=campaign_id, experiment_id=experiment_id)
            succeeded = [
                e for e in experiments if e.status is ExperimentStatus.SUCCEEDED and e.candidate_id is not None
            ]
            infos = _with_ancestors(session, [e.candidate_id for e in experiments if e.candidate_id is not None])
            facts = _lineage_facts(infos)
            rows = [
                dataclasses.replace(r, family=facts.get(r.experiment.candidate_id, (None,))[0],
                                    seed=facts.get(r.experiment.candidate_id, (None, False))[1])
                for r in _ranked_rows(session, succeeded)
            ]
            params = _campaign_params(session, campaign_id)
            held_specs = {_normal_spec(x) for x in params.get("held_out", [])}
            clips: dict[int, rq.ClipInfo] = {}
            for e in experiments:
                clips.setdefault(e.clip.id, e.clip)
            held_shas = {c.sha256 for c in clips.values() if _normal_spec(c.source) in held_specs}
            training = [c for c in clips.values() if c.sha256 not in held_shas]
            sections = []
            notes = []
            for clip in sorted(clips.values(), key=lambda c: (c.sha256 in held_shas, c.id)):
                ranked = _best_per_candidate([r for r in rows if r.experiment.clip.id == clip.id])
                if not ranked:
                    notes.append(f"clip {_clip_name(clip)} ({clip.sha256[:12]}…): no succeeded experiment in scope")
                    continue
                # The seeds are the baselines: they stay in the table below --top.
                shown_rows = ranked[: options.top] + [r for r in ranked[options.top:] if r.seed]
                section = ClipSection(clip, shown_rows, len(ranked), anchors=_anchor_curves(session, clip),
                                      held_out=clip.sha256 in held_shas)
                section.lineage = _lineage(session, ranked[0])
                section.lineage = [
                    st if st.best is None else dataclasses.replace(st, best=dataclasses.replace(
                        st.best, family=facts.get(st.best.experiment.candidate_id, (None,))[0]))
                    for st in section.lineage
                ]
                sections.append(section)
            headline = _headline(session, experiments, rows, infos, facts, params, training, held_shas)
            best_dot = min((d for d in headline.dots if d.bd_rate is not None),
                           key=lambda d: (d.bd_rate, d.candidate_id), default=None)
            headline.held_out = _held_out_text(rows, held_shas, infos, best_dot.candidate_id if best_dot else None)
            models = _model_rows(rows, experiments, infos, facts, _candidate_costs(session, infos))
            dedup = _dedup(session, experiments)
            failures = [g for g in failures if g.status is not ExperimentStatus.DUPLICATE_OUTPUT]
            shown = {r.experiment.id: r for s in sections for r in s.ranked}
            shown.update(
                {st.best.experiment.id: st.best for s in sections for st in s.lineage if st.best is not None}
            )
            failed_ids = {eid for g in failures for eid, _ in g.examples}
            probe = probe_summary(session, [e.id for e in experiments])
        finally:
            session.rollback()
            session.close()
    finally:
        engine.dispose()

    out_dir.mkdir(parents=True, exist_ok=True)
    # Figures and crops of an earlier report in the same folder would otherwise
    # linger beside the new page; only this command's own file names are removed.
    for pattern in ("clip*_rd_*.png", "clip*_crop_*.png"):
        for old in out_dir.glob(pattern):
            old.unlink()
    for section in sections:
        _finish_section(section, out_dir, options, console)
    if headline.dots:
        headline.figure = figure_data_uri(headline_figure(headline))

    failed_infos = [e for e in experiments if e.id in failed_ids]
    provenance = [(r.experiment, r.stored) for r in sorted(shown.values(), key=lambda r: r.experiment.id)]
    provenance += [(e, rq.StoredPoints()) for e in failed_infos if e.id not in shown]
    report = Report(
        scope=scope,
        database=_redact(database_url),
        generated_at=datetime.now(UTC),
        status_counts=counts,
        sections=sections,
        failures=failures,
        provenance=sorted(provenance, key=lambda p: p[0].id),
        out_dir=out_dir,
        notes=notes,
        probe=probe,
        headline=headline if headline.dots else None,
        models=models if len(models) > 1 else [],
        dedup=dedup,
    )
    report.html_path.write_text(render_html(report), encoding="utf-8")
    return report


def _finish_section(section: ClipSection, out_dir: Path, options: ReportOptions, console: Any) -> None:
    prefix = f"clip{section.clip.id}"
    needs_clip = (options.compute_anchors and any(c not in section.anchors for c in ANCHOR_ORDER)) or options.crops
    clip, clip_note = _reload_clip(section.clip) if needs_clip else (None, None)
    if clip_note:
        section.notes.append(clip_note)
    _compute_anchor_curves(section, clip, options, console)
    for codec in ANCHOR_ORDER:
        if codec not in section.anchors:
            section.anchors[codec] = AnchorCurve(
                codec,
                (),
                None,
                note=f"no anchor results stored for this clip, and {clip_note or 'the clip was not re-loaded'}",
            )
    series = rd_series(section, options.curves)
    for metric in RD_METRICS:
        fig = rd_figure(series, metric, title=f"{RD_METRICS[metric]} against rate, {_clip_name(section.clip)}")
        section.figures[metric] = figure_data_uri(fig)
    if not options.crops:
        section.crops_note = "crops were turned off (--no-crops)"
        return
    if clip is None:
        section.crops_note = f"no crops: {clip_note}"
        return
    best = next((r for r in section.ranked if r.points), None)
    if best is None:
        section.crops_note = "no crops: no experiment on this clip has stored rate points"
        return
    try:
        section.crops = make_crops(
            best,
            clip,
            section.anchors["x264"],
            out_dir,
            prefix=prefix,
            device=options.device,
            sandbox_mode=options.sandbox_mode,
        )
    except ReportError as exc:
        section.crops_note = f"no crops: {exc}"


# --- anchors the database lacks -------------------------------------------------


def _reload_clip(info: rq.ClipInfo) -> tuple[Any, str | None]:
    """The clip's frames re-read from its source, only if their sha256 is the stored one."""
    from evaluation.clip import VideoError, public_source
    from evaluation.video import load_clip

    shown = public_source(info.source)  # the stored spec may carry a secret seed: never shown
    try:
        clip = load_clip(info.source, frames=info.n_frames)
    except (VideoError, OSError) as exc:
        return None, f"the source {shown} could not be re-loaded: {exc}"
    if clip.sha256 != info.sha256:
        return None, (
            f"the source {shown} re-loads as frames with sha256 {clip.sha256[:12]}…, not the stored "
            f"{info.sha256[:12]}…: it is not the clip that was measured"
        )
    if abs(clip.fps - info.fps) > 1e-9:
        # The pixels match; kbps depends on the frame rate the measurement used.
        from evaluation.clip import Clip

        clip = Clip(source=clip.source, frames=clip.frames, fps=info.fps, seed=clip.seed)
    return clip, None


def _compute_anchor_curves(section: ClipSection, clip: Any, options: ReportOptions, console: Any) -> None:
    """Measure the anchor curves ``section`` lacks on the re-loaded ``clip`` (None: it could not be)."""
    from codecfleet.progress import progress
    from evaluation import anchors as anchors_mod

    missing = [c for c in ANCHOR_ORDER if c not in section.anchors]
    if not missing:
        return
    if not options.compute_anchors:
        for codec in missing:
            section.anchors[codec] = AnchorCurve(
                codec, (), None, note="no anchor results stored for this clip (computing them was turned off)"
            )
        return
    if clip is None:
        return
    with progress(len(missing), f"anchor curves for {markup(clip.source, 200)}", console=console) as advance:
        for codec in missing:
            try:
                pts = anchors_mod.anchor_curve(clip, codec, cache_dir=options.anchor_cache_dir, device=options.device)
            except (anchors_mod.AnchorError, ValueError) as exc:
                section.anchors[codec] = AnchorCurve(codec, (), None, note=f"could not be measured: {exc}")
            else:
                cached = bool(pts) and all(p.from_cache for p in pts)
                section.anchors[codec] = AnchorCurve(
                    codec=codec,
                    points=tuple(AnchorPointRow(p.crf, p.n_bytes, p.kbps, p.psnr_y, p.ssim_y) for p in pts),
                    origin="computed by this report" + (" (from the anchor cache)" if cached else ""),
                    anchor_version=pts[0].anchor_version if pts else None,
                    metrics_version=pts[0].metrics_version if pts else None,
                    note="no anchor results stored for this clip; measured now from the re-loaded clip, not stored",
                )
            advance(description=f"anchor {markup(codec, 50)} on {markup(clip.source, 200)}")
