"""The report's data: its dataclasses, and reading them from the results database.

Nothing here draws, renders or imports matplotlib or numpy: :mod:`.figures`,
:mod:`.crops`, :mod:`.html` and :mod:`.terminal` read these objects, and
:mod:`.build` puts the report together. The report never writes to the database.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from config import UserError
from db import report_queries as rq
from db.results import id_chunks
from db.models import ExperimentStatus
from evaluation.results import RatePoint


#: The anchor the leaderboard ranks by (BD-rate on the PSNR-Y curve, lower is better).
PRIMARY_ANCHOR = "x264"
#: The anchors drawn and tabulated, in this order.
ANCHOR_ORDER: tuple[str, ...] = ("x264", "x265", "svtav1")
#: The quality metric of the stored BD figures (``evaluation.pipeline.BD_METRIC``).
BD_METRIC = "psnr_y"
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
    #: Its stored rate points and where their numbers come from.
    stored: rq.StoredPoints
    #: BD_METRIC scores by anchor codec.
    scores: dict[str, rq.ScoreRow]
    #: The seed codec its first-parent line starts from (or "own line" when none).
    family: str | None = None
    #: A seed: a reference codec the search started from (drawn and tabulated always).
    seed: bool = False

    @property
    def points(self) -> tuple[RatePoint, ...]:
        return self.stored.points

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
    provenance: list[tuple[rq.ExperimentInfo, rq.StoredPoints]]
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
            stored=points.get(e.id, rq.StoredPoints()),
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
    from evaluation.clip import public_source

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
                   if r.stored.measured_by[p.index] == r.experiment.id)
    tokens, money = 0, 0.0
    for chunk in id_chunks(cand_ids):
        for pt, ct, usd in session.execute(
            sa.select(Candidate.prompt_tokens, Candidate.completion_tokens, Candidate.cost_usd)
            .where(Candidate.id.in_(chunk))
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


# --- anchors and the probe as stored ------------------------------------------


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


def probe_summary(session, experiment_ids: Sequence[int]) -> dict:
    """What the cheap probe (2 frames, one quality) did for these experiments: how many
    it probed, its outcomes, the GPU-seconds it spent and the full-measurement seconds
    its stops saved (an estimate: see ``tasks.experiment.probe_verdict``)."""
    import sqlalchemy as sa

    from db.models import Probe

    outcomes: dict[str, int] = {}
    spent = saved = 0.0
    for chunk in id_chunks(experiment_ids):
        for outcome, n, seconds, spared in session.execute(
            sa.select(Probe.outcome, sa.func.count(), sa.func.sum(Probe.seconds), sa.func.sum(Probe.saved_seconds))
            .where(Probe.experiment_id.in_(chunk)).group_by(Probe.outcome)
        ):
            outcomes[outcome] = outcomes.get(outcome, 0) + int(n)
            spent += float(seconds or 0.0)
            saved += float(spared or 0.0)
    probed = sum(outcomes.values())
    return {"probed": probed, "stopped": probed - outcomes.get("passed", 0), "outcomes": outcomes,
            "seconds": spent, "saved_seconds": saved}


# --- the report's words (the page and the terminal summary both use them) -----


def _clip_name(clip: Any) -> str:
    """A clip's name for display: the stored spec without its (secret) seed."""
    from evaluation.clip import public_source

    return public_source(clip.source)


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


def _status_text(e: rq.ExperimentInfo) -> str:
    text = e.status.value
    if e.reused_from_id is not None:
        text += f" (result of exp {e.reused_from_id})"
    return text


def _probe_text(probe: dict) -> str:
    if not probe.get("probed"):
        return "probe: nothing probed in scope"
    stops = ", ".join(f"{k} {v}" for k, v in sorted(probe["outcomes"].items()) if k != "passed") or "none"
    return (f"probe: {probe['probed']} probed, {probe['stopped']} stopped ({stops}); GPU-seconds spent "
            f"{probe['seconds']:.2f}, saved by its stops (estimated) {probe['saved_seconds']:.2f}")
