"""``codecfleet report``: the results database as pictures and tables a researcher reads.

The report is one self-contained file, ``index.html``: every figure and crop is
embedded as a PNG data URI, so the file can be copied anywhere and opened
offline (no scripts, no network). It opens with the headline: best-so-far
BD-rate per generation with every candidate as a dot coloured by its status,
one sentence with the best result against each anchor (with the overlap of
the quality ranges), and what was spent. Then, for each clip in scope,

* a leaderboard: each candidate's best experiment ranked by its stored BD-rate
  (PSNR-Y curve) against x264, with BD-rate and overlap against every anchor,
  family, rate and quality ranges, speed and status; the seeds always appear;
* RD curves (PSNR-Y and SSIM-Y against kbps) of the best candidate of each
  family and of the seeds, each with its own marker, beside x264, x265 and
  SVT-AV1; held-out clips of a campaign are marked as such;
* side-by-side crops of the source, the best candidate and x264 at a similar
  rate, each re-made from its artifact (see :func:`make_crops`);
* the lineage of the best candidate, with the diff and the numbers of each step;

and, over the whole scope, a per-model table when several models wrote
candidates, deduplication (``duplicate_output`` and reused results: work not
repeated, not failures), the failures by status and stage with example
reasons, and the provenance of every number shown.

Every number is read from the database (measurements, scores, anchor results)
or, where the database lacks it, measured by this command from an artifact it
re-made and says so; a value that cannot be had is shown as "not measured"
with the reason. The report never writes to the database.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import io
import html
import math
import sys
from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from codecfleet.untrusted import clean, markup, text
from config import UserError
from db import report_queries as rq
from db.models import ExperimentStatus

__all__ = [
    "ANCHOR_ORDER",
    "PRIMARY_ANCHOR",
    "AnchorCurve",
    "ClipSection",
    "Headline",
    "CropPanel",
    "Crops",
    "LineageStep",
    "RDSeries",
    "RankedExperiment",
    "Report",
    "ReportError",
    "ReportOptions",
    "add_report_parser",
    "build_report",
    "cmd_report",
    "make_crops",
    "print_summary",
    "rd_figure",
    "rd_series",
    "render_html",
    "x264_decoded_frames",
]

#: The anchor the leaderboard ranks by (BD-rate on the PSNR-Y curve, lower is better).
PRIMARY_ANCHOR = "x264"
#: The anchors drawn and tabulated, in this order.
ANCHOR_ORDER: tuple[str, ...] = ("x264", "x265", "svtav1")
#: The quality metric of the stored BD figures (``evaluation.pipeline.BD_METRIC``).
BD_METRIC = "psnr_y"
CROP_SIZE = 128
CROP_ZOOM = 2
RD_METRICS: dict[str, str] = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y"}
RATE_LABEL = "rate (kbps, log scale)"
#: Width and height of the RD figures in pixels (two fit side by side on the page).
FIGURE_SIZE_PX = (560, 400)
MAX_DIFF_LINES = 400
NOT_MEASURED = "not measured"


class ReportError(UserError, ValueError):
    """The report cannot be made as asked (no database, unknown campaign or experiment)."""


@dataclass(frozen=True)
class ReportOptions:
    """What to put in the report and where the slow parts may run.

    ``top``: leaderboard rows per clip (the seeds are added when they fall below).
    ``curves``: families whose best candidate is drawn on the RD figures (the
    seeds are drawn in any case). ``crops``: re-decode the best candidate for the side-by-side
    crops (in the sandbox, ``sandbox_mode``). ``compute_anchors``: measure
    anchor curves a clip has none of in the database (cached under
    ``anchor_cache_dir``). ``device``: where metrics run ("cpu" or "cuda").
    """

    top: int = 20
    curves: int = 6  # families drawn on the RD figures (their best candidate each), seeds always
    crops: bool = True
    compute_anchors: bool = True
    anchor_cache_dir: Path | None = None
    device: str = "cpu"
    sandbox_mode: str = "strict"


# --- the report's data --------------------------------------------------------


@dataclass(frozen=True)
class AnchorPointRow:
    crf: int
    n_bytes: int
    kbps: float
    psnr_y: float
    ssim_y: float


@dataclass(frozen=True)
class AnchorCurve:
    """One anchor's RD points on a clip and where they came from.

    ``origin`` is "database" (anchor_results rows) or "computed by this report"
    (measured now from the re-loaded clip, not stored). ``points`` is empty
    when neither was possible, and ``note`` says why.
    """

    codec: str
    points: tuple[AnchorPointRow, ...]
    origin: str | None
    anchor_version: str | None = None
    metrics_version: str | None = None
    settings_hash: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class RankedExperiment:
    """A candidate's best succeeded experiment on a clip, with its stored numbers."""

    rank: int | None  # None: no BD-rate against the primary anchor to rank by
    experiment: rq.ExperimentInfo
    candidate: rq.CandidateInfo | None
    points: tuple[rq.PointRow, ...]
    #: BD_METRIC scores by anchor codec.
    scores: dict[str, rq.ScoreRow]
    #: The seed codec its first-parent line starts from (or "own line" when none).
    family: str | None = None
    #: A seed: a reference codec the search started from (drawn and tabulated always).
    seed: bool = False

    @property
    def primary_bd_rate(self) -> float | None:
        s = self.scores.get(PRIMARY_ANCHOR)
        return None if s is None else s.bd_rate

    @property
    def label(self) -> str:
        return f"candidate {self.experiment.candidate_id} (exp {self.experiment.id})"


@dataclass(frozen=True)
class CropPanel:
    title: str
    file: str  # the PNG as a data URI (embedded in index.html)
    caption: str


@dataclass(frozen=True)
class Crops:
    frame_index: int
    box: tuple[int, int, int, int]  # x, y, width, height in source pixels
    zoom: int
    panels: tuple[CropPanel, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LineageStep:
    candidate: rq.CandidateInfo
    parent_id: int | None
    diff: str | None  # unified diff against the parent's code; None for the root
    diff_note: str | None
    best: RankedExperiment | None  # its best succeeded experiment on this clip


@dataclass
class ClipSection:
    clip: rq.ClipInfo
    ranked: list[RankedExperiment]
    n_candidates: int
    anchors: dict[str, AnchorCurve] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  # metric -> PNG file name
    crops: Crops | None = None
    crops_note: str | None = None
    lineage: list[LineageStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: A campaign's held-out clip: never used for fitness, parents or prompts.
    held_out: bool = False


@dataclass(frozen=True)
class HeadlineDot:
    candidate_id: int
    generation: int
    bd_rate: float | None  # mean over the training clips vs PRIMARY_ANCHOR; None: no figure
    status: str  # succeeded, reused, duplicate_output, failed, rejected, ...
    family: str | None


@dataclass
class Headline:
    """The campaign at a glance: best-so-far per generation, every candidate, the best result, the cost."""

    dots: list[HeadlineDot]
    #: (generation, best in generation or None, best so far or None)
    generations: list[tuple[int, float | None, float | None]]
    generation_basis: str  # how generations were counted
    sentence: str
    spent: str
    held_out: str | None = None
    figure: str | None = None  # PNG data URI


@dataclass(frozen=True)
class ModelRow:
    generator: str
    model: str | None
    candidates: int
    succeeded: int
    best: float | None
    median: float | None
    tokens: int = 0  # prompt + completion tokens of its candidates
    cost_usd: float | None = None  # None when no candidate of it has a known cost

    @property
    def accepted_share(self) -> float:
        """Share of its candidates that reached a BD-rate (0..1)."""
        return self.succeeded / self.candidates if self.candidates else 0.0


@dataclass
class Report:
    scope: str
    database: str
    generated_at: datetime
    status_counts: dict[ExperimentStatus, int]
    sections: list[ClipSection]
    failures: list[rq.FailureGroup]
    provenance: list[tuple[rq.ExperimentInfo, tuple[rq.PointRow, ...]]]
    out_dir: Path
    notes: list[str] = field(default_factory=list)
    #: The probe over the experiments in scope: outcomes, GPU-seconds spent and saved.
    probe: dict = field(default_factory=dict)
    headline: Headline | None = None
    #: Per (generator, model) over the candidates in scope; shown when several models wrote candidates.
    models: list[ModelRow] = field(default_factory=list)
    #: duplicate_output experiments and reused results: work saved, not failures.
    dedup: dict = field(default_factory=dict)

    @property
    def html_path(self) -> Path:
        return self.out_dir / "index.html"


# --- gathering from the database ----------------------------------------------


def _redact(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def _open_database(database_url: str):
    import sqlalchemy as sa
    import sqlalchemy.exc

    from db.migrate import current_revision
    from db.session import make_engine

    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).expanduser().is_file():
            raise ReportError(
                f"no database at {url.database}: run `codecfleet run` (or `codecfleet db upgrade`) first"
            )
    try:
        revision = current_revision(database_url)
    except sa.exc.OperationalError as exc:
        raise ReportError(f"cannot open the database at {_redact(database_url)}: {exc.orig}") from exc
    if revision is None:
        raise ReportError(
            f"the database at {_redact(database_url)} has no codecfleet schema: run `codecfleet db upgrade`"
        )
    return make_engine(database_url)


def _rank_key(r: RankedExperiment) -> tuple:
    bd = r.primary_bd_rate
    return (bd is None, bd if bd is not None else math.inf, r.experiment.id)


def _best_per_candidate(rows: Sequence[RankedExperiment]) -> list[RankedExperiment]:
    best: dict[int, RankedExperiment] = {}
    for r in sorted(rows, key=_rank_key):
        best.setdefault(r.experiment.candidate_id, r)
    ordered = sorted(best.values(), key=_rank_key)
    out, rank = [], 0
    for r in ordered:
        if r.primary_bd_rate is not None:
            rank += 1
            out.append(dataclasses.replace(r, rank=rank))
        else:
            out.append(r)
    return out


def _ranked_rows(session, experiments: Sequence[rq.ExperimentInfo]) -> list[RankedExperiment]:
    points = rq.points_by_experiment(session, experiments)
    scores = rq.scores_by_experiment(session, experiments, metric=BD_METRIC)
    candidates = rq.candidates_by_id(session, [e.candidate_id for e in experiments if e.candidate_id is not None])
    return [
        RankedExperiment(
            rank=None,
            experiment=e,
            candidate=candidates.get(e.candidate_id),
            points=points.get(e.id, ()),
            scores={codec: s for (codec, _m), s in scores.get(e.id, {}).items()},
        )
        for e in experiments
    ]


def _diff(parent: rq.CandidateInfo, child: rq.CandidateInfo) -> tuple[str | None, str | None]:
    if parent.code is None or child.code is None:
        missing = parent.id if parent.code is None else child.id
        return None, f"no diff: candidate {missing} has no stored code"
    lines = list(
        difflib.unified_diff(
            parent.code.splitlines(keepends=True),
            child.code.splitlines(keepends=True),
            fromfile=f"candidate {parent.id}",
            tofile=f"candidate {child.id}",
        )
    )
    if not lines:
        return "", "the code is identical to the parent's"
    note = None
    if len(lines) > MAX_DIFF_LINES:
        note = f"diff shortened: first {MAX_DIFF_LINES} of {len(lines)} lines"
        lines = lines[:MAX_DIFF_LINES]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines), note


def _lineage(session, best: RankedExperiment) -> list[LineageStep]:
    if best.experiment.candidate_id is None:
        return []
    chain = rq.lineage_ids(session, best.experiment.candidate_id)
    candidates = rq.candidates_by_id(session, chain)
    runs = rq.candidate_experiments(session, chain, clip_sha256=best.experiment.clip.sha256)
    all_runs = [e for es in runs.values() for e in es]
    ranked = {r.experiment.id: r for r in _ranked_rows(session, all_runs)}
    steps = []
    for i, cid in enumerate(chain):
        cand = candidates[cid]
        parent_id = chain[i + 1] if i + 1 < len(chain) else None
        diff, note = (None, None) if parent_id is None else _diff(candidates[parent_id], cand)
        mine = [ranked[e.id] for e in runs.get(cid, [])]
        step_best = min(mine, key=_rank_key) if mine else None
        steps.append(LineageStep(cand, parent_id, diff, note, step_best))
    return steps


def _scope(session, campaign: str | None, experiment_id: int | None) -> tuple[str, int | None]:
    if campaign is not None and experiment_id is not None:
        raise ReportError("give --campaign or --experiment, not both")
    if campaign is not None:
        info = rq.find_campaign(session, campaign)
        if info is None:
            raise ReportError(f"no campaign named (or with id) {campaign!r} in the database")
        return f"campaign {info.name} (#{info.id})", info.id
    if experiment_id is not None:
        return f"experiment #{experiment_id}", None
    return "all experiments", None


# --- families, seeds, generations: the campaign's headline -------------------------

SEED_PREFIX = "seed:"


def _reference_hashes() -> dict[str, str]:
    """Normalised-AST hash -> reference codec name, to recognise a seed stored without its name."""
    from evaluation.reference import REFERENCE_CANDIDATES, reference_code
    from sandbox.sanitize import sanitize

    out = {}
    for name in REFERENCE_CANDIDATES:
        verdict = sanitize(reference_code(name))
        if verdict.ok and verdict.ast_hash:
            out[verdict.ast_hash] = name
    return out


def _with_ancestors(session, ids: Sequence[int]) -> dict[int, rq.CandidateInfo]:
    """``ids`` and every first-parent ancestor of them."""
    known: dict[int, rq.CandidateInfo] = {}
    frontier = {i for i in ids if i is not None}
    for _ in range(200):
        if not frontier:
            break
        got = rq.candidates_by_id(session, sorted(frontier))
        known.update(got)
        frontier = {c.parent_ids[0] for c in got.values() if c.parent_ids and c.parent_ids[0] not in known}
    return known


def _seed_name(c: rq.CandidateInfo, ref_hashes: dict[str, str]) -> str | None:
    if c.generator.startswith(SEED_PREFIX):
        return c.generator[len(SEED_PREFIX):]
    if not c.parent_ids and c.ast_hash in ref_hashes:
        return ref_hashes[c.ast_hash]
    return None


def _lineage_facts(cands: dict[int, rq.CandidateInfo]) -> dict[int, tuple[str, bool, int]]:
    """Candidate id -> (family, is a seed, steps from its root along first parents)."""
    refs = _reference_hashes()
    out: dict[int, tuple[str, bool, int]] = {}
    for cid in cands:
        chain, cur = [], cands.get(cid)
        while cur is not None and len(chain) < 200:
            chain.append(cur)
            cur = cands.get(cur.parent_ids[0]) if cur.parent_ids else None
        root = chain[-1]
        seed = _seed_name(root, refs)
        family = seed or f"own line (root {root.id})"
        out[cid] = (family, _seed_name(cands[cid], refs) is not None, len(chain) - 1)
    return out


def _campaign_params(session, campaign_id: int | None) -> dict:
    import json

    from db.models import Campaign

    if campaign_id is None:
        return {}
    row = session.get(Campaign, campaign_id)
    try:
        return json.loads(row.description) if row is not None and row.description else {}
    except ValueError:
        return {}


def _normal_spec(spec: str) -> str:
    from evaluation.video import public_source

    spec = public_source(spec)
    if spec.startswith("synthetic:") and "@" not in spec:
        spec += "@352x288"
    return spec


def _candidate_status(exps: Sequence[rq.ExperimentInfo]) -> str:
    done = [e for e in exps if e.status is ExperimentStatus.SUCCEEDED]
    if done:
        return "reused" if all(e.reused_from_id is not None for e in done) else "succeeded"
    return max(exps, key=lambda e: e.id).status.value


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _bd_phrase(codec: str, value: float, overlap: float | None) -> str:
    more = "more" if value >= 0 else "fewer"
    ov = "" if overlap is None else f", overlap {overlap:.0%}"
    return f"{abs(value):.1f} % {more} bits than {codec} (BD-rate {value:+.1f} %{ov})"


def _headline(session, experiments, rows, infos, facts, params, training, held_shas) -> Headline:
    """The headline over all experiments in scope (see :class:`Headline`)."""
    import sqlalchemy as sa

    from db.models import Candidate

    population = params.get("population")
    generated = sorted(cid for cid in {e.candidate_id for e in experiments if e.candidate_id is not None}
                       if not facts.get(cid, ("", False, 0))[1])
    if population:
        gen_of = {cid: 1 + i // int(population) for i, cid in enumerate(generated)}
        basis = f"generation: seeds are 0, then {population} candidates per generation in creation order"
    else:
        gen_of = {cid: facts[cid][2] for cid in generated if cid in facts}
        basis = "generation: steps from the root along first parents (no campaign population stored)"
    by_cand: dict[int, list[rq.ExperimentInfo]] = {}
    for e in experiments:
        if e.candidate_id is not None and e.clip.sha256 not in held_shas:
            by_cand.setdefault(e.candidate_id, []).append(e)
    bd_by: dict[int, dict[str, float]] = {}
    for r in rows:
        if r.experiment.clip.sha256 in held_shas or r.primary_bd_rate is None:
            continue
        cur = bd_by.setdefault(r.experiment.candidate_id, {})
        sha = r.experiment.clip.sha256
        cur[sha] = min(cur.get(sha, math.inf), r.primary_bd_rate)
    dots = []
    for cid, exps in sorted(by_cand.items()):
        per_clip = bd_by.get(cid, {})
        # A campaign's fitness needs every training clip; outside a campaign, the clips it was measured on.
        need = len(training) if params.get("clips") else len({e.clip.sha256 for e in exps})
        bd = sum(per_clip.values()) / len(per_clip) if per_clip and len(per_clip) >= need else None
        family, seed, _depth = facts.get(cid, (None, False, 0))
        dots.append(HeadlineDot(cid, 0 if seed else gen_of.get(cid, 0), bd, _candidate_status(exps), family))
    gens = []
    best_so_far = None
    for g in sorted({d.generation for d in dots}):
        here = [d.bd_rate for d in dots if d.generation == g and d.bd_rate is not None]
        best_here = min(here) if here else None
        if best_here is not None and (best_so_far is None or best_here < best_so_far):
            best_so_far = best_here
        gens.append((g, best_here, best_so_far))

    scored = [d for d in dots if d.bd_rate is not None]
    if scored:
        best = min(scored, key=lambda d: (d.bd_rate, d.candidate_id))
        mine = [r for r in rows if r.experiment.candidate_id == best.candidate_id
                and r.experiment.clip.sha256 not in held_shas]
        phrases = []
        for codec in ANCHOR_ORDER:
            got = [r.scores[codec] for r in mine if codec in r.scores and r.scores[codec].bd_rate is not None]
            if got and len(got) == len({r.experiment.clip.sha256 for r in mine}):
                value = sum(s.bd_rate for s in got) / len(got)
                overlaps = [s.overlap for s in got if s.overlap is not None]
                phrases.append(_bd_phrase(codec, value, min(overlaps) if overlaps else None))
            else:
                why = next((r.scores[codec].reason for r in mine if codec in r.scores and r.scores[codec].reason), None)
                phrases.append(f"no BD-rate against {codec} ({why or 'not measured'})")
        n_clips = len({r.experiment.clip.sha256 for r in mine})
        where = "one clip" if n_clips == 1 else f"the mean over {n_clips} clips"
        sentence = (
            f"Best: candidate {best.candidate_id} (family {best.family}, generation {best.generation}) needs "
            f"{phrases[0]}; against the other anchors: {'; '.join(phrases[1:])}. PSNR-Y curves, {where}."
        )
    else:
        sentence = "No candidate in scope has a reliable BD-rate against x264 yet."

    # Spent: candidates, wall time, encode+decode seconds, tokens, money.
    cand_ids = sorted(by_cand)
    n_seeds = sum(1 for cid in cand_ids if facts.get(cid, ("", False, 0))[1])
    measured = sum(p.encode_seconds + p.decode_seconds for r in rows for p in r.points
                   if p.source_experiment_id == r.experiment.id)
    tokens, money = 0, 0.0
    for i in range(0, len(cand_ids), 500):
        for pt, ct, usd in session.execute(
            sa.select(Candidate.prompt_tokens, Candidate.completion_tokens, Candidate.cost_usd)
            .where(Candidate.id.in_(cand_ids[i:i + 500]))
        ):
            tokens += (pt or 0) + (ct or 0)
            money += usd or 0.0
    started = min((e.queued_at for e in experiments), default=None)
    ended = max((e.finished_at for e in experiments if e.finished_at is not None), default=None)
    wall = _fmt_seconds((ended - started).total_seconds()) if started and ended else "unknown"
    spent = (
        f"Spent: {len(cand_ids)} candidates ({len(cand_ids) - n_seeds} generated, {n_seeds} seeds) in "
        f"{len(experiments)} experiments over {len(gens)} generations; {wall} wall clock from the first queued to "
        f"the last finished experiment; {measured:.1f} s of encode + decode in the measurements; "
        f"{tokens} LLM tokens, ${money:.2f}."
    )
    return Headline(dots, gens, basis, sentence, spent)


def _held_out_text(rows, held_shas, infos, best_id: int | None) -> str | None:
    """The held-out clips' numbers of the best candidates (means over those clips)."""
    if not held_shas:
        return None
    per: dict[int, dict[str, float | None]] = {}
    for r in rows:
        if r.experiment.clip.sha256 in held_shas:
            cur = per.setdefault(r.experiment.candidate_id, {})
            cur[r.experiment.clip.sha256] = r.primary_bd_rate
    if not per:
        return f"Held-out clips ({len(held_shas)}): not measured yet (the campaign measures them after its last generation)."
    parts = []
    for cid, clips in sorted(per.items(), key=lambda kv: (kv[0] != best_id, kv[0]))[:6]:
        values = [clips.get(sha) for sha in held_shas]
        if all(v is not None for v in values):
            parts.append(f"candidate {cid} {sum(values) / len(values):+.1f} %")
        else:
            parts.append(f"candidate {cid}: no reliable figure on every held-out clip")
    return (f"Held-out clips ({len(held_shas)}, never used for fitness, parents or prompts), mean BD-rate vs "
            f"{PRIMARY_ANCHOR}: " + "; ".join(parts) + ".")


def _model_rows(rows, experiments, infos, facts, costs: dict[int, float | None] | None = None) -> list[ModelRow]:
    best_by: dict[int, float] = {}
    for r in rows:
        if r.primary_bd_rate is not None:
            best_by[r.experiment.candidate_id] = min(best_by.get(r.experiment.candidate_id, math.inf), r.primary_bd_rate)
    groups: dict[tuple[str, str | None], list[int]] = {}
    for cid in sorted({e.candidate_id for e in experiments if e.candidate_id is not None}):
        c = infos.get(cid)
        if c is None or facts.get(cid, ("", False, 0))[1]:
            continue  # seeds are not a model's work
        groups.setdefault((c.generator, c.model), []).append(cid)
    out = []
    for (gen, model), ids in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        values = sorted(best_by[i] for i in ids if i in best_by)
        tokens = sum((infos[i].prompt_tokens or 0) + (infos[i].completion_tokens or 0) for i in ids)
        known = [costs[i] for i in ids if (costs or {}).get(i) is not None]
        out.append(ModelRow(gen, model, len(ids), len(values), values[0] if values else None,
                            values[len(values) // 2] if values else None, tokens, sum(known) if known else None))
    return out


def _candidate_costs(session, infos) -> dict[int, float | None]:
    """Candidate id -> its stored LLM cost in USD (None: not known)."""
    import sqlalchemy as sa

    from db.models import Candidate

    ids = list(infos)
    if not ids:
        return {}
    return dict(session.execute(sa.select(Candidate.id, Candidate.cost_usd).where(Candidate.id.in_(ids))).all())


def _dedup(session, experiments) -> dict:
    dup = [e for e in experiments if e.status is ExperimentStatus.DUPLICATE_OUTPUT]
    reused = [e for e in experiments if e.status is ExperimentStatus.SUCCEEDED and e.reused_from_id is not None]
    return {
        "duplicate_output": len(dup),
        "duplicate_examples": [(e.id, e.duplicate_of_id) for e in dup[:5]],
        "reused": len(reused),
        "reused_examples": [(e.id, e.reused_from_id) for e in reused[:5]],
    }


# --- anchors --------------------------------------------------------------------


def _reload_clip(info: rq.ClipInfo) -> tuple[Any, str | None]:
    """The clip's frames re-read from its source, only if their sha256 is the stored one."""
    from evaluation.video import VideoError, load_clip, public_source

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
        from evaluation.video import Clip

        clip = Clip(source=clip.source, frames=clip.frames, fps=info.fps, seed=clip.seed)
    return clip, None


def _anchor_curves(session, clip: rq.ClipInfo) -> dict[str, AnchorCurve]:
    """The anchor curves the database holds for ``clip`` (codecs without rows are left out)."""
    curves = {}
    for codec in ANCHOR_ORDER:
        rows = rq.stored_anchor_rows(session, clip.sha256, codec)
        if rows:
            curves[codec] = AnchorCurve(
                codec=codec,
                points=tuple(AnchorPointRow(r.crf, r.n_bytes, r.kbps, r.psnr_y, r.ssim_y) for r in rows),
                origin="database",
                anchor_version=rows[0].anchor_version,
                metrics_version=rows[0].metrics_version,
                settings_hash=rows[0].settings_hash,
            )
    return curves


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


# --- figures ------------------------------------------------------------------


@dataclass(frozen=True)
class RDSeries:
    """One curve of an RD figure: ``points`` are (kbps, PSNR-Y dB, SSIM-Y) by rising rate."""

    label: str
    kind: str  # "candidate", "seed" or "anchor"
    points: tuple[tuple[float, float, float], ...]


_ANCHOR_STYLE = {
    "x264": {"color": "#222222", "linestyle": "--", "marker": "s"},
    "x265": {"color": "#7a7a7a", "linestyle": "-.", "marker": "^"},
    "svtav1": {"color": "#a0522d", "linestyle": ":", "marker": "D"},
}
_CANDIDATE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#bcbd22")
#: One marker per candidate or seed curve (the anchors have s, ^ and D).
_CANDIDATE_MARKERS = ("o", "v", "P", "X", "*", "h", "<", ">", "p", "d", "H", "8")


def rd_figure(series: Sequence[RDSeries], metric: str, *, title: str = ""):
    """A matplotlib Figure: ``metric`` against rate, one line per series (Agg, no pyplot).

    ``metric`` is "psnr_y" or "ssim_y"; the x axis is kbps on a log scale, as
    Bjontegaard integrates over log-rate. Anchors are drawn dashed in grey
    tones, candidates solid in colour.
    """
    if metric not in RD_METRICS:
        raise ValueError(f"unknown RD metric {metric!r}; expected one of {tuple(RD_METRICS)}")
    from matplotlib.figure import Figure

    column = 1 if metric == "psnr_y" else 2
    fig = Figure(figsize=(FIGURE_SIZE_PX[0] / 100, FIGURE_SIZE_PX[1] / 100), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    n_candidates = 0
    for s in series:
        pts = sorted(s.points)
        xs = [p[0] for p in pts]
        ys = [p[column] for p in pts]
        if s.kind == "anchor":
            style = _ANCHOR_STYLE.get(s.label, {"color": "#555555", "linestyle": "--", "marker": "o"})
            ax.plot(xs, ys, label=s.label, linewidth=1.4, markersize=4, **style)
        else:
            color = _CANDIDATE_COLORS[n_candidates % len(_CANDIDATE_COLORS)]
            marker = _CANDIDATE_MARKERS[n_candidates % len(_CANDIDATE_MARKERS)]
            n_candidates += 1
            if s.kind == "seed":  # a baseline: thin, hollow markers
                ax.plot(xs, ys, label=s.label, color=color, linestyle=(0, (5, 2)), marker=marker, linewidth=1.3,
                        markersize=7, markerfacecolor="white")
            else:
                ax.plot(xs, ys, label=s.label, color=color, linestyle="-", marker=marker, linewidth=2.0, markersize=7,
                        alpha=0.9)
    ax.set_xscale("log")
    ax.set_xlabel(RATE_LABEL)
    ax.set_ylabel(RD_METRICS[metric])
    ax.set_title(title or f"{RD_METRICS[metric]} against rate")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def rd_series(section: ClipSection, n_curves: int) -> list[RDSeries]:
    """The curves of a clip's RD figures: the best candidate of each of the ``n_curves``
    best families (a family's best that is its seed is drawn once, as the seed), then
    every seed as a baseline, then each anchor with points."""
    out = []
    with_points = [r for r in section.ranked if r.points]
    seeds = [r for r in with_points if r.seed]
    families: dict[str, RankedExperiment] = {}
    for r in with_points:
        families.setdefault(r.family or f"candidate {r.experiment.candidate_id}", r)
    for family, r in list(families.items())[:n_curves]:
        if r.seed:
            continue
        out.append(
            RDSeries(
                label=f"cand {r.experiment.candidate_id}, best of {family}",
                kind="candidate",
                points=tuple((p.kbps, p.psnr_y, p.ssim_y) for p in r.points),
            )
        )
    for r in seeds:
        out.append(
            RDSeries(
                label=f"seed {r.family} (cand {r.experiment.candidate_id})",
                kind="seed",
                points=tuple((p.kbps, p.psnr_y, p.ssim_y) for p in r.points),
            )
        )
    for codec in ANCHOR_ORDER:
        curve = section.anchors.get(codec)
        if curve and curve.points:
            out.append(RDSeries(codec, "anchor", tuple((p.kbps, p.psnr_y, p.ssim_y) for p in curve.points)))
    return out


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_data_uri(fig) -> str:
    """A matplotlib figure as a PNG data URI (embedded in the page: one self-contained file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _png_uri(buf.getvalue())


def data_uri_bytes(uri: str) -> bytes:
    """The bytes of a ``data:...;base64,`` URI (for tests and tools reading the page)."""
    return base64.b64decode(uri.split(",", 1)[1])


#: Colours of the headline's dots by candidate status.
STATUS_COLORS = {
    "succeeded": "#1f77b4",
    "reused": "#9e9e9e",
    "duplicate_output": "#9e9e9e",
    "failed": "#d62728",
    "rejected": "#ff7f0e",
    "timed_out": "#8c564b",
    "cancelled": "#7f7f7f",
}
HEADLINE_SIZE_PX = (1100, 380)


def headline_figure(h: Headline):
    """Best-so-far BD-rate per generation (a step line) over every candidate as a dot coloured by status.

    Candidates without a BD-rate (failed, rejected, deduplicated, unreliable) sit in a band above the
    highest figure, labelled so, at their generation.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(HEADLINE_SIZE_PX[0] / 100, HEADLINE_SIZE_PX[1] / 100), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    values = [d.bd_rate for d in h.dots if d.bd_rate is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    span = max(hi - lo, 1.0)
    band = hi + 0.25 * span
    slot: dict[int, int] = {}
    by_status: dict[str, list[tuple[float, float]]] = {}
    for d in sorted(h.dots, key=lambda d: d.candidate_id):
        k = slot.get(d.generation, 0)
        slot[d.generation] = k + 1
        x = d.generation + (((k % 9) - 4) * 0.04)
        status = d.status if d.bd_rate is not None or d.status != "succeeded" else "succeeded (no reliable BD-rate)"
        by_status.setdefault(status, []).append((x, d.bd_rate if d.bd_rate is not None else band))
    for status, pts in sorted(by_status.items()):
        color = STATUS_COLORS.get(status, "#bcbd22")
        label = {"reused": "reused (deduplicated)", "duplicate_output": "duplicate_output (deduplicated)"}.get(status, status)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=36, color=color, alpha=0.8, label=f"{label} ({len(pts)})",
                   edgecolors="white", linewidths=0.5, zorder=3)
    gens = [g for g in h.generations if g[2] is not None]
    if gens:
        xs = [g[0] for g in gens]
        ax.step(xs, [g[2] for g in gens], where="post", color="black", linewidth=2.2, label="best so far", zorder=4)
        for x, _here, best in gens:
            ax.annotate(f"{best:+.1f} %", (x, best), textcoords="offset points", xytext=(0, -13), ha="center",
                        fontsize=8, zorder=5)
    if len(values) < len(h.dots):
        ax.axhline(band - 0.1 * span, color="#cccccc", linewidth=0.8)
        ax.text(ax.get_xlim()[0] if h.dots else 0, band, " no BD-rate", va="center", fontsize=8, color="#666666")
    ax.set_xticks(sorted({d.generation for d in h.dots}) or [0])
    ax.set_xlabel("generation")
    ax.set_ylabel(f"BD-rate vs {PRIMARY_ANCHOR} (%, lower is better)")
    ax.set_title("Best-so-far BD-rate per generation; every candidate a dot coloured by status")
    ax.grid(True, alpha=0.3)
    if h.dots:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig


# --- crops --------------------------------------------------------------------


def x264_decoded_frames(clip: Any, crf: int) -> tuple[np.ndarray, int]:
    """Encode ``clip`` with x264 at ``crf`` exactly as the anchors do, decode it, return (frames, bytes).

    Uses the encoder and decoder of :mod:`evaluation.anchors` (same settings,
    same colour conversion), so the frames are those the anchor point was
    scored on; ``bytes`` is the sum of the packet sizes.
    """
    from evaluation import anchors as anchors_mod

    packets, _ = anchors_mod._encode(clip, "x264", int(crf))
    frames = anchors_mod._decode(packets, "x264", int(crf), clip.n_frames)[0]
    return frames, sum(len(p) for p in packets)


def _detail_window(frame: np.ndarray, width: int, height: int) -> tuple[int, int]:
    """Top-left corner of the ``width`` x ``height`` window with the most luma gradient (where codecs differ)."""
    y = frame.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    energy = np.zeros_like(y)
    energy[:, 1:] += np.abs(np.diff(y, axis=1))
    energy[1:, :] += np.abs(np.diff(y, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = y.shape
    step = 8
    best, corner = -1.0, (0, 0)
    for top in range(0, h - height + 1, step):
        for left in range(0, w - width + 1, step):
            total = (
                integral[top + height, left + width]
                - integral[top, left + width]
                - integral[top + height, left]
                + integral[top, left]
            )
            if total > best:
                best, corner = total, (left, top)
    return corner


def _frame_psnr_y(reference: np.ndarray, decoded: np.ndarray, device: str) -> float:
    from evaluation import metrics

    return float(metrics.score_frames(reference[None], decoded[None], device=device, ms_ssim=False).psnr_y[0])


def _crop_uri(image: np.ndarray, zoom: int) -> str:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1), format="png")
    return _png_uri(buf.getvalue())


def make_crops(
    best: RankedExperiment,
    clip: Any,
    x264: AnchorCurve,
    out_dir: Path,
    *,
    prefix: str,
    device: str = "cpu",
    sandbox_mode: str = "strict",
) -> Crops:
    """Side-by-side crops of the source, ``best`` and x264 at a similar rate.

    The candidate's rate point and the x264 point are the pair whose rates are
    closest (in log-rate). The candidate's frames come from its stored
    bitstream, re-read and checked against the artifact's sha256, decoded by
    the candidate's code in a fresh sandbox (never in this process: the code
    is untrusted). x264's come from re-encoding the clip at that point's CRF.
    The crop is the ``CROP_SIZE`` square (or the frame, if smaller) of the
    middle frame with the most detail, zoomed ``CROP_ZOOM`` x by nearest
    neighbour. Captions give the stored rate and mean PSNR-Y, and the PSNR-Y
    of the shown frame measured now on the re-made frames.

    Raises :class:`ReportError` with the reason when a step cannot be done.
    """
    from evaluation import metrics
    from evaluation.anchors import AnchorError
    from evaluation.container import ContainerError, read_bitstream, sha256_file
    from evaluation.runner import CandidateError
    from sandbox.runner import IsolationError, Limits, SandboxRunner

    if best.candidate is None or best.candidate.code is None:
        raise ReportError(f"candidate {best.experiment.candidate_id} has no stored code to decode with")
    if not best.points:
        raise ReportError(f"experiment {best.experiment.id} has no stored rate points")
    if not x264.points:
        raise ReportError(f"no x264 curve to compare with ({x264.note or 'no points'})")
    point, anchor = min(
        ((p, a) for p in best.points for a in x264.points),
        key=lambda pa: (abs(math.log(pa[0].kbps / pa[1].kbps)), pa[0].rate_index),
    )
    path = Path(point.artifact_path)
    if not path.is_file():
        raise ReportError(f"the bitstream {path} of experiment {point.source_experiment_id} is gone")
    digest = sha256_file(path)
    if digest != point.artifact_sha256:
        raise ReportError(
            f"the bitstream {path} now has sha256 {digest[:12]}…, the stored artifact {point.artifact_sha256[:12]}…: "
            "it is not the file that was measured"
        )
    try:
        payloads = read_bitstream(path)
    except ContainerError as exc:
        raise ReportError(f"the bitstream {path} cannot be read: {exc}") from exc

    notes = []
    # The system config the pipeline handed the decoder (quality, size, fps,
    # device) over what the experiment stored; the device is where we run now.
    config = {
        **best.experiment.config,
        "quality": point.quality,
        "width": clip.width,
        "height": clip.height,
        "fps": float(clip.fps),
        "device": device,
    }
    # The device the experiment ran on (provenance's label), not the "auto" it may have asked for.
    measured_on = best.experiment.device or best.experiment.config.get("device")
    if measured_on not in (None, "auto", device):
        notes.append(f"measured on {measured_on}, re-decoded on {device} for the crop")
    try:
        runner = SandboxRunner(Limits(), device=device, mode=sandbox_mode)
        decoded = runner.decode(best.candidate.code, payloads, config, clip.n_frames).frames
    except IsolationError as exc:
        raise ReportError(f"the candidate was not re-decoded: the sandbox is unavailable ({exc})") from exc
    except CandidateError as exc:
        raise ReportError(f"re-decoding the candidate's bitstream failed at {exc.stage}: {exc.reason}") from exc

    redecoded_psnr = float(np.mean(metrics.score_frames(clip.frames, decoded, device=device, ms_ssim=False).psnr_y))
    if abs(redecoded_psnr - point.psnr_y) > 1e-6:
        notes.append(
            f"the re-decoded frames give mean PSNR-Y {redecoded_psnr:.4f} dB, the stored measurement "
            f"{point.psnr_y:.4f} dB: the decoder is not deterministic{' across devices' if notes else ''}"
        )
    try:
        x264_frames, x264_bytes = x264_decoded_frames(clip, anchor.crf)
    except AnchorError as exc:
        raise ReportError(f"x264 could not re-make its frames: {exc}") from exc
    x264_kbps = metrics.rate_stats(x264_bytes, clip.n_frames, clip.width, clip.height, clip.fps)["kbps"]
    if x264_bytes != anchor.n_bytes:
        notes.append(
            f"x264 CRF {anchor.crf} re-encoded to {x264_bytes} bytes, the anchor point has {anchor.n_bytes}: "
            "the shown x264 frame is from the re-encode, the curve from the stored point"
        )

    index = clip.n_frames // 2
    cw, ch = min(CROP_SIZE, clip.width), min(CROP_SIZE, clip.height)
    left, top = _detail_window(clip.frames[index], cw, ch)
    window = (slice(top, top + ch), slice(left, left + cw))
    panels = []
    for name, title, frame, caption in (
        ("source", "source", clip.frames[index], f"frame {index}, {clip.width}x{clip.height}"),
        (
            "candidate",
            f"candidate {best.experiment.candidate_id}",
            decoded[index],
            f"q={point.quality:g}: {point.kbps:.1f} kbps, mean PSNR-Y {point.psnr_y:.2f} dB (stored); "
            f"this frame {_frame_psnr_y(clip.frames[index], decoded[index], device):.2f} dB",
        ),
        (
            "x264",
            f"x264 CRF {anchor.crf}",
            x264_frames[index],
            f"{x264_kbps:.1f} kbps, mean PSNR-Y {anchor.psnr_y:.2f} dB (anchor point); "
            f"this frame {_frame_psnr_y(clip.frames[index], x264_frames[index], device):.2f} dB",
        ),
    ):
        panels.append(CropPanel(title, _crop_uri(np.ascontiguousarray(frame[window]), CROP_ZOOM), caption))
    return Crops(index, (left, top, cw, ch), CROP_ZOOM, tuple(panels), tuple(notes))


# --- building -------------------------------------------------------------------


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
    provenance = [(r.experiment, r.points) for r in sorted(shown.values(), key=lambda r: r.experiment.id)]
    provenance += [(e, ()) for e in failed_infos if e.id not in shown]
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


def probe_summary(session, experiment_ids: Sequence[int]) -> dict:
    """What the cheap probe (2 frames, one quality) did for these experiments: how many
    it probed, its outcomes, the GPU-seconds it spent and the full-measurement seconds
    its stops saved (an estimate: see ``tasks.experiment.probe_verdict``)."""
    import sqlalchemy as sa

    from db.models import Probe

    outcomes: dict[str, int] = {}
    spent = saved = 0.0
    ids = list(experiment_ids)
    for i in range(0, len(ids), 500):
        for outcome, n, seconds, spared in session.execute(
            sa.select(Probe.outcome, sa.func.count(), sa.func.sum(Probe.seconds), sa.func.sum(Probe.saved_seconds))
            .where(Probe.experiment_id.in_(ids[i:i + 500])).group_by(Probe.outcome)
        ):
            outcomes[outcome] = outcomes.get(outcome, 0) + int(n)
            spent += float(seconds or 0.0)
            saved += float(spared or 0.0)
    probed = sum(outcomes.values())
    return {"probed": probed, "stopped": probed - outcomes.get("passed", 0), "outcomes": outcomes,
            "seconds": spent, "saved_seconds": saved}


def _probe_text(probe: dict) -> str:
    if not probe.get("probed"):
        return "probe: nothing probed in scope"
    stops = ", ".join(f"{k} {v}" for k, v in sorted(probe["outcomes"].items()) if k != "passed") or "none"
    return (f"probe: {probe['probed']} probed, {probe['stopped']} stopped ({stops}); GPU-seconds spent "
            f"{probe['seconds']:.2f}, saved by its stops (estimated) {probe['saved_seconds']:.2f}")


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


# --- HTML -----------------------------------------------------------------------

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


def _clip_name(clip: Any) -> str:
    """A clip's name for display: the stored spec without its (secret) seed."""
    from evaluation.video import public_source

    return public_source(clip.source)


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


def _score_reason(r: RankedExperiment, codec: str) -> str:
    s = r.scores.get(codec)
    if s is None:
        if codec not in r.experiment.anchors:
            return f"the experiment did not ask for {codec}"
        return f"no {BD_METRIC} score stored against {codec}"
    if s.raw_bd_rate is not None and s.reliable is False:
        minimum = f" < {s.min_overlap:.0%}" if s.min_overlap is not None else ""
        overlap = "unknown" if s.overlap is None else f"{s.overlap:.0%}"
        return f"unreliable: overlap {overlap}{minimum} (raw figure {s.raw_bd_rate:+.1f} %, not used)"
    return s.reason or "no BD-rate stored"


def _bd_text(r: RankedExperiment, codec: str) -> str:
    """``+57.3 % (overlap 96 %)`` or ``not given: REASON``: a figure with its overlap, or none with why."""
    s = r.scores.get(codec)
    if s is None or s.bd_rate is None:
        return f"not given: {_score_reason(r, codec)}"
    return f"{s.bd_rate:+.1f} %" + ("" if s.overlap is None else f" (overlap {s.overlap:.0%})")


def _bd_cell(r: RankedExperiment, codec: str) -> str:
    s = r.scores.get(codec)
    if s is None or s.bd_rate is None:
        return _nm(_score_reason(r, codec))
    cls = "good" if s.bd_rate < 0 else "bad"
    extra = "" if s.overlap is None else f'<span class="why">overlap {s.overlap:.0%}</span>'
    return f'<span class="{cls}">{s.bd_rate:+.1f}&nbsp;%</span>{extra}'


def _status_text(e: rq.ExperimentInfo) -> str:
    text = e.status.value
    if e.reused_from_id is not None:
        text += f" (result of exp {e.reused_from_id})"
    return text


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


def _versions(points: Sequence[rq.PointRow], attr: str) -> str:
    return ", ".join(sorted({getattr(p, attr) for p in points})) or "–"


def _provenance_html(report: Report) -> str:
    rows = []
    for e, points in report.provenance:
        results = e.id if not points else points[0].source_experiment_id
        rows.append(
            f"<tr><td>{e.id}</td><td>{e.candidate_id if e.candidate_id is not None else '–'}</td>"
            f"<td class=l>{_e(e.status.value)}</td>"
            f"<td class='l w'>{_e(_versions(points, 'evaluator_version'))}<br>{_e(_versions(points, 'metrics_version'))}</td>"
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


# --- terminal -------------------------------------------------------------------


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


# --- the command ------------------------------------------------------------------


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``codecfleet report`` on the CLI's subparsers; its handler is :func:`cmd_report`."""
    p = subparsers.add_parser(
        "report",
        help="write an HTML report (leaderboard, RD curves, crops, lineage, failures, provenance)",
        description="Write a self-contained HTML report (--out/index.html, images embedded) and print a summary.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--campaign", default=None, help="only this campaign, by name or id (default: every experiment)")
    scope.add_argument("--experiment", type=int, default=None, help="only this experiment id (default: every experiment)")
    p.add_argument("--out", default="codecfleet-report", help="output folder (default: ./codecfleet-report)")
    p.add_argument("--db", default=None, help="database URL (default: CODECFLEET_DATABASE_URL or the SQLite file)")
    p.add_argument("--top", type=int, default=20, help="leaderboard rows per clip (default 20)")
    p.add_argument("--curves", type=int, default=6,
                   help="families whose best candidate is drawn on the RD curves; the seeds always are (default 6)")
    p.add_argument("--no-crops", action="store_true", help="skip re-decoding the best candidate for crops")
    p.add_argument(
        "--no-compute-anchors",
        action="store_true",
        help="do not measure anchor curves that the database lacks (they are then shown as not measured)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: CODECFLEET_DEVICE or auto)")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of ``codecfleet report``: 0 when the report was written, 2 when it cannot be made."""
    from config import get_settings, resolve_device

    settings = get_settings()
    if args.top < 1 or args.curves < 0:
        print("codecfleet report: error: --top must be >= 1 and --curves >= 0", file=sys.stderr)
        return 2
    options = ReportOptions(
        top=args.top,
        curves=args.curves,
        crops=not args.no_crops,
        compute_anchors=not args.no_compute_anchors,
        anchor_cache_dir=settings.cache_dir / "anchors",
        device=resolve_device(args.device or settings.device),
        sandbox_mode=settings.sandbox_mode,
    )
    try:
        report = build_report(
            args.db or settings.database_url,
            Path(args.out),
            campaign=args.campaign,
            experiment_id=args.experiment,
            options=options,
        )
    except ReportError as exc:
        print(f"codecfleet report: error: {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    return 0

