"""Campaigns: generate candidates, measure them, feed the real results back, repeat.

A campaign is a named, resumable loop. Generation 0 measures the seed codecs
(the reference candidates); each later generation asks the generator for
``population`` new candidates, each built from parents chosen over everything
measured so far (MAP-Elites over rate, quality and speed, or islands per seed
family) and shown the best candidates and the most recent failures with their
real reasons. Every candidate is measured through the same submit path as any
experiment: in-process on the embedded default, on the workers in the fleet.

State lives in the database only. A campaign killed at any point resumes where
it stopped when run again under the same name: the generator is deterministic
in (seed, request index), the slots already submitted are not generated again,
and experiments left running by a dead embedded process are re-queued.

Where the generator runs: in the process that drives the campaign, which also
stores each candidate's prompt, reply, model and token counts before its
experiment is sent. The fleet's ``generate`` task (queue ``llm``) is for single
submissions that ask for generation; a campaign does its own so that parent
selection sees the whole finished generation (a deliberate barrier).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from config import UserError, get_settings
from generation import GenerationConfigError
from tasks.feedback import SEED_GENERATOR, resolve_generator
from tasks.feedback import is_seed as _is_seed


class CampaignError(UserError, ValueError):
    """A campaign cannot start or resume as asked; the message says why."""


@dataclass(frozen=True)
class Budget:
    """Where a campaign stops early. None: no limit of that kind.

    ``candidates`` counts generated candidates (seeds excluded); ``gpu_seconds``
    is the encode + decode wall time of every stored measurement; ``tokens`` and
    ``money_usd`` are what the generator reported for its replies.
    """

    candidates: int | None = None
    gpu_seconds: float | None = None
    tokens: int | None = None
    money_usd: float | None = None


@dataclass
class GenerationSummary:
    generation: int
    candidates: int
    statuses: dict[str, int]
    best_bd_rate: float | None  # best of this generation
    best_so_far: float | None
    best_candidate_id: int | None


@dataclass
class CampaignReport:
    name: str
    campaign_id: int
    anchor: str
    generations: list[GenerationSummary] = field(default_factory=list)
    stopped_by: str | None = None  # the budget that stopped it, if any
    spent: dict[str, float] = field(default_factory=dict)
    leaderboard: list[dict] = field(default_factory=list)
    #: What the probe did (probed, stopped by outcome, seconds spent and saved) and where
    #: rate points' numbers came from (measured, reused, same_as): see ``summary_counts``.
    counts: dict = field(default_factory=dict)
    #: By candidate id: mean BD-rate on the held-out clips and per clip (never in a prompt).
    held_out: dict = field(default_factory=dict)


# --- state ----------------------------------------------------------------------

@dataclass
class _Candidate:
    candidate_id: int
    family: str | None
    code: str | None
    generator: str | None
    parent_ids: tuple[int, ...]
    members: list = field(default_factory=list)

    def fitness(self, n_clips: int) -> float | None:
        """Mean BD-rate over the campaign's clips; None unless every clip was measured."""
        values = [m.bd_rate for m in self.members if m.bd_rate is not None and math.isfinite(m.bd_rate)]
        if len(values) < n_clips:
            return None
        return sum(values) / len(values)


def _candidates(members, seeds: Sequence[str]) -> dict[int, _Candidate]:
    out: dict[int, _Candidate] = {}
    for m in members:
        if m.candidate_id is None:
            continue
        c = out.get(m.candidate_id)
        if c is None:
            family = m.generator[len(SEED_GENERATOR):] if _is_seed(m.generator) else None
            if family is None and m.parent_ids and m.parent_ids[0] in out:
                family = out[m.parent_ids[0]].family
            c = out[m.candidate_id] = _Candidate(m.candidate_id, family, m.code, m.generator, m.parent_ids)
        c.members.append(m)
    return out


def _record(c: _Candidate, n_clips: int):
    from generation import Record

    fit = c.fitness(n_clips)
    pts = [p for m in c.members[:1] for p in m.points]
    if fit is None or not pts:
        return Record(c.candidate_id, None, family=c.family)
    fps = [p.encode_fps for p in pts if p.encode_fps]
    return Record(
        c.candidate_id,
        fit,
        (min(p.kbps for p in pts), max(p.kbps for p in pts)),
        (min(p.psnr_y for p in pts), max(p.psnr_y for p in pts)),
        min(fps) if fps else None,
        c.family,
    )


def _info(c: _Candidate, n_clips: int, anchor: str, figures: dict | None = None):
    from tasks.feedback import candidate_info

    fit = c.fitness(n_clips)
    return candidate_info(
        code=c.code, candidate_id=c.candidate_id, family=c.family, generator=c.generator,
        bd_rate={anchor: fit} if fit is not None else {}, points=[p for m in c.members[:1] for p in m.points],
        figures=(figures or {}).get(c.candidate_id, ()),
    )


def _bd_figures(cands: dict[int, _Candidate], n_clips: int, metric: str) -> dict[int, tuple]:
    """By candidate id: one ``BdFigure`` per anchor from the stored scores of its
    training-clip experiments (``cands`` holds no held-out member): the mean of the
    per-clip figures (``bd_rate`` only when every clip has a reliable one), the smallest
    overlap, and how many clips. What prompts show beside every BD figure."""
    from db import engine
    from generation.base import BdFigure
    from tasks.feedback import stored_bd_figures

    source = {}  # candidate id -> clip sha -> the experiment whose numbers it reports
    for c in cands.values():
        for m in c.members:
            source.setdefault(c.candidate_id, {}).setdefault(m.clip_sha256, m.reused_from_id or m.experiment_id)
    ids = sorted({e for per_clip in source.values() for e in per_clip.values()})
    with engine.transaction() as session:
        stored = stored_bd_figures(session, ids, metric)
    out: dict[int, tuple] = {}
    for cid, per_clip in source.items():
        by_anchor: dict[str, list] = {}
        for eid in per_clip.values():
            for f in stored.get(eid, ()):
                by_anchor.setdefault(f.anchor, []).append(f)
        figures = []
        for codec, fs in sorted(by_anchor.items()):
            if all(f.overlap is None and f.raw_bd_rate is None and f.bd_rate is None for f in fs):
                continue  # never computed (too few points, no curve): nothing to show
            reliable = len(fs) >= n_clips and all(f.reliable and f.bd_rate is not None for f in fs)
            raws = [f.raw_bd_rate if f.raw_bd_rate is not None else f.bd_rate for f in fs]
            raws = [r for r in raws if r is not None and math.isfinite(r)]
            overlaps = [f.overlap for f in fs if f.overlap is not None]
            figures.append(BdFigure(
                codec, metric,
                sum(f.bd_rate for f in fs) / len(fs) if reliable else None,
                min(overlaps) if overlaps else None,
                reliable,
                next((f.min_overlap for f in fs if f.min_overlap is not None), None),
                sum(raws) / len(raws) if raws else None,
                clips=len(fs),
            ))
        out[cid] = tuple(figures)
    return out


def _spent(members, candidates: dict[int, _Candidate]) -> dict[str, float]:
    """What the campaign has used, from the stored rows (so it survives a restart)."""
    generated = [c for c in candidates.values() if not _is_seed(c.generator)]
    tokens = 0
    money = 0.0
    for c in generated:
        m = c.members[0]
        tokens += (m.prompt_tokens or 0) + (m.completion_tokens or 0)
        money += m.cost_usd or 0.0
    return {
        "candidates": float(len(generated)),
        "gpu_seconds": float(sum(m.gpu_seconds for m in members)),
        "tokens": float(tokens),
        "money_usd": money,
    }


def _over_budget(budget: Budget | None, spent: dict[str, float]) -> str | None:
    if budget is None:
        return None
    for key in ("candidates", "gpu_seconds", "tokens", "money_usd"):
        limit = getattr(budget, key)
        if limit is not None and spent[key] >= limit:
            return f"{key} budget of {limit:g} reached ({spent[key]:g} spent)"
    return None


# --- what the prompt is told ---------------------------------------------------------

#: How many steps of a parent's ancestry its prompt shows (the parent included).
LINEAGE_STEPS = 5


def _prompt_budget(given: int | None) -> int:
    """The prompt size budget: ``prompt_budget=``, else ``CODECFLEET_LLM_PROMPT_BUDGET``,
    else the default. Not a stored campaign setting: a resume may raise it."""
    from generation import GenerationConfigError, prompt_budget_from_env

    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise CampaignError(f"prompt_budget must be a positive number of characters, got {given!r}")
        return given
    try:
        return prompt_budget_from_env(os.environ)
    except GenerationConfigError as exc:
        raise CampaignError(str(exc)) from exc


def _frame_sizes(path: str) -> tuple[int, ...]:
    """Payload bytes of each frame in a stored bitstream, from the container's own
    checked reader; empty when the file is not here (a fleet worker's disk) or not a
    valid container."""
    from evaluation.container import ContainerError, open_bitstream

    try:
        with open_bitstream(path) as payloads:
            return tuple(payloads.lengths)
    except (ContainerError, OSError):
        return ()


def _with_frame_sizes(info, member):
    """``info`` with the payload bytes and PSNR-Y per frame of each rate point of
    ``member``'s measurements (following a reuse to the original experiment): the stored
    ``frame_bytes`` / ``frame_psnr_y``, else the sizes read from the bitstream file
    (rows measured before the per-frame columns were kept)."""
    import dataclasses

    from db import results
    from db import engine

    with engine.transaction() as session:
        rows = results.experiment_measurements(session, member.experiment_id)
        sizes = {m.rate_index: tuple(int(b) for b in m.frame_bytes) if m.frame_bytes else _frame_sizes(m.artifact.path)
                 for m in rows}
        psnrs = {m.rate_index: tuple(float(v) for v in m.frame_psnr_y) if m.frame_psnr_y else () for m in rows}
    points = tuple(
        dataclasses.replace(p, frame_bytes=sizes.get(i, ()), frame_psnr_y=psnrs.get(i, ()))
        for i, p in enumerate(info.points)
    )
    return dataclasses.replace(info, points=points)


def _lineage(c: _Candidate, cands: dict[int, _Candidate], n_clips: int):
    """The last :data:`LINEAGE_STEPS` steps of ``c``'s ancestry, oldest first: who made
    each, how (mode), what changed against its own parent and its BD-rate."""
    from db.campaign_queries import stored_candidate
    from generation import LineageStep, change_summary, unified_diff
    from db import engine

    chain = [c]
    while len(chain) < LINEAGE_STEPS and chain[-1].parent_ids and chain[-1].parent_ids[0] in cands:
        nxt = cands[chain[-1].parent_ids[0]]
        if nxt in chain:
            break
        chain.append(nxt)
    chain.reverse()
    steps = []
    with engine.transaction() as session:
        for i, step in enumerate(chain):
            seed = _is_seed(step.generator)
            mode = "seed" if seed else stored_candidate(session, step.candidate_id).mode
            parent = cands.get(step.parent_ids[0]) if step.parent_ids else None
            change = diff = None
            if parent is not None and parent.code and step.code:
                change = change_summary(parent.code, step.code)
                if i == len(chain) - 1:
                    diff = unified_diff(parent.code, step.code)
                change = f"against candidate {parent.candidate_id}: {change}"
            steps.append(
                LineageStep(
                    name=f"seed {step.family}" if seed else f"candidate {step.candidate_id}",
                    bd_rate=step.fitness(n_clips),
                    generator=None if seed else step.generator,
                    mode=mode,
                    change=change,
                    diff=diff,
                )
            )
    return tuple(steps)


def _distinct(ranked: list[_Candidate]) -> list[_Candidate]:
    """Best first, each program once (a seed measured again, a reused identical program)."""
    seen: set[str] = set()
    out = []
    for c in ranked:
        key = (c.code or "").strip()
        if key in seen:
            continue
        seen.add(key)
        out.append(c)
    return out


def _generate(gen, request, fallbacks, emit):
    """``gen.generate(request)``; when its prompt does not fit the size budget, again
    with each of ``fallbacks`` (CandidateInfo, smallest useful parents last) as the
    parent, then with no parent, saying why in the prompt and in an event. Never
    raises for a generator's error: it becomes a failed generation with the reason."""
    import dataclasses

    from generation import GenerationFailure, Generated, ReplayExhausted

    tried = [request.parent] if request.parent is not None else []
    options = [f for f in fallbacks if request.parent is None or f.code != request.parent.code]
    notes: list[str] = list(request.notes)
    while True:
        try:
            out = gen.generate(request)
        except ReplayExhausted:
            raise
        except Exception as exc:  # noqa: BLE001 - a generator's bug must not end the campaign
            import logging

            logging.getLogger(__name__).exception("generator %r failed", gen)
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            return Generated(
                generator=getattr(gen, "name", "generator"), mode=request.mode or "rewrite", prompt="",
                code=None, model=getattr(gen, "model", None), parent_ids=request.parent_ids,
                error=GenerationFailure("generator_error", reason), attempts=0,
            )
        if out.ok or out.error is None or out.error.status != "prompt_too_large" or request.parent is None:
            return out
        failed = request.parent
        smaller = [o for o in options if len(o.code) < len(failed.code) and o not in tried]
        nxt = smaller[0] if smaller else None
        why = (
            f"The best choice of parent, {failed.name}, is {len(failed.code)} characters of code and does not fit "
            f"this prompt's size budget of {request.budget_chars} characters"
        )
        if nxt is not None:
            notes.append(why + f"; {nxt.name} is the parent instead.")
            tried.append(nxt)
            request = dataclasses.replace(request, parents=(nxt,), notes=tuple(notes))
        else:
            notes.append(why + "; no smaller parent fits either, so write a new module from the numbers below.")
            request = dataclasses.replace(request, parents=(), mode=None, notes=tuple(notes))
        emit("parent_replaced", {"index": request.index, "reason": notes[-1]})


# --- the loop ---------------------------------------------------------------------


def campaign(
    clips: Sequence[str] = ("synthetic:mix@176x144",),
    generator=None,
    population: int = 6,
    generations: int = 5,
    budget: Budget | None = None,
    *,
    name: str | None = None,
    seed: int = 0,
    seeds: Sequence[str] = ("intra_dct", "inter_mc"),
    frames: int | None = 3,
    rate_points: int = 4,
    anchor: str = "x264",
    strategy: str = "map_elites",
    top_k: int = 3,
    failures_shown: int = 6,
    prompt_budget: int | None = None,
    wait_timeout: float = 3600.0,
    on_event: Callable[[str, dict], None] | None = None,
    clip_seed: int | None = None,
    held_out: Sequence[str] = (),
    metric: str = "psnr_y",
) -> CampaignReport:
    """Run (or resume) the campaign called ``name`` and return its per-generation report.

    Synthetic clips are generated with a secret seed (``clip_seed``, else drawn
    with ``secrets`` when the campaign starts; a replay campaign takes the
    replayed campaign's), stored on the campaign so that resuming measures the
    same frames, and never shown to the generator or a candidate: prompts name
    the clip by its seedless name. A clip spec with ``,seed=S`` keeps its seed.

    ``clips``: clip specs or named clip sets (a directory of videos, or
    ``@LIST_FILE``: see :func:`evaluation.video.expand_clip_set`) measured for every
    candidate, clip by clip (fitness is the mean of the per-clip BD-rates against
    ``anchor`` on ``metric``). ``held_out`` takes sets too. ``generator``: see
    :func:`resolve_generator`. ``on_event(kind, data)`` is told of each
    candidate and generation as it ends (for progress display), and of a
    parent replaced because its prompt did not fit (``parent_replaced``).
    ``prompt_budget``: the prompt size budget in characters (else
    ``CODECFLEET_LLM_PROMPT_BUDGET``, else 160000); not a stored setting, so a
    resume may change it.

    ``held_out``: clip specs never used for fitness or prompts: after the last
    generation the leaderboard's candidates are measured on them, and the
    report gives their mean BD-rate there (``report.held_out``, and
    ``held_out_bd_rate`` per leaderboard row). ``metric``: the quality axis
    of every BD figure (``psnr_y``, ``psnr_yuv``, ``ssim_y``, ``ms_ssim``),
    stored with each score.
    """
    from codecfleet import fleet

    run = _open(clips, held_out, generator, population=population, name=name, seed=seed, seeds=seeds, frames=frames,
                rate_points=rate_points, anchor=anchor, strategy=strategy, top_k=top_k, failures_shown=failures_shown,
                prompt_budget=prompt_budget, wait_timeout=wait_timeout, on_event=on_event, clip_seed=clip_seed,
                metric=metric, generations=generations)
    report = CampaignReport(name=run.name, campaign_id=run.campaign_id, anchor=anchor)
    fleet.resume_stalled(run.campaign_id)
    try:
        run.gen = resolve_generator(generator, seeds=run.seed_codes, seed=seed,
                                    seen=[m.code for m in run.members() if m.code], campaign=run.name)
    except GenerationConfigError as exc:
        raise CampaignError(str(exc)) from exc
    run.measure_seeds()
    for g in range(0, generations + 1):
        if g > 0:
            run.generation(g, budget, report)
        current = run.members()
        cands = run.candidates(current)
        report.spent = _spent(current, cands)
        summary = _summarize(g, cands, run.n_clips, population)
        report.generations.append(summary)
        run.emit("generation", {"summary": summary})
        if report.stopped_by:
            break
    report.leaderboard = _leaderboard(cands, run.n_clips)
    report.counts = summary_counts(run.campaign_id)
    if run.held:
        report.held_out = _measure_held_out(report.leaderboard, cands, run.held, anchor, run.name, metric, rate_points,
                                            wait_timeout, lambda: run.members(held_out_only=True))
        for row in report.leaderboard:
            row["held_out_bd_rate"] = report.held_out.get(row["candidate_id"], {}).get("bd_rate")
    return report


@dataclass
class _Run:
    """One campaign being run: its settings, clips and generator, and the steps of the loop."""

    name: str
    campaign_id: int
    loaded: list
    held: list
    seeds: tuple[str, ...]
    seed_codes: dict[str, str]
    seed: int
    population: int
    rate_points: int
    anchor: str
    metric: str
    strategy: str
    top_k: int
    failures_shown: int
    budget_chars: int
    device: str
    wait_timeout: float
    emit: Callable[[str, dict], None]
    gen: object = None

    @property
    def n_clips(self) -> int:
        return len(self.loaded)

    def members(self, *, held_out_only: bool = False) -> list:
        """The campaign's experiments; fitness, parents, lineage and prompts see the training clips only."""
        from db import engine
        from db.campaign_queries import campaign_members

        held_shas = {c.sha256 for c in self.held}
        with engine.transaction() as session:
            rows = campaign_members(session, self.campaign_id, anchor=self.anchor, metric=self.metric)
        return [m for m in rows if (m.clip_sha256 in held_shas) == held_out_only]

    def candidates(self, members=None) -> dict[int, _Candidate]:
        return _candidates(self.members() if members is None else members, self.seeds)

    def submit(self, candidate_text: str | None, generated=None, failure=None) -> list:
        """One candidate on every training clip. Fitness is BD-rate against ``anchor``; the
        other anchors are measured too so reports compare with every classic codec."""
        from codecfleet import fleet
        from evaluation.anchors import ANCHOR_CODECS

        anchors = [self.anchor, *(a for a in ANCHOR_CODECS if a != self.anchor)]
        return fleet.submit_many([
            {"candidate": candidate_text, "clip": clip, "rate_points": self.rate_points, "anchors": anchors,
             "campaign": self.name, "metric": self.metric, "generated": generated, "generation_failure": failure}
            for clip in self.loaded
        ])

    def measure_seeds(self) -> None:
        """Generation 0: the seeds, measured once."""
        seeded = {c.family for c in self.candidates().values() if _is_seed(c.generator)}
        handles = []
        for family in self.seeds:
            if family not in seeded:
                handles += self.submit(self.seed_codes[family],
                                       generated={"generator": f"{SEED_GENERATOR}{family}", "mode": "seed"})
        for h in handles:
            h.wait(self.wait_timeout)

    def generation(self, g: int, budget: Budget | None, report: CampaignReport) -> None:
        """Generate the slots of generation ``g`` not generated yet (a resume skips the
        others), submit each, then wait for all; stops early at the budget or when a
        replay runs out (``report.stopped_by`` says which)."""
        from codecfleet import fleet
        from generation import ReplayExhausted
        from tasks.feedback import provenance

        current = self.members()
        cands = self.candidates(current)
        spent = report.spent = _spent(current, cands)
        done = sum(1 for gen in _generation_of(cands, self.population).values() if gen == g)
        handles = []
        for slot in range(min(done, self.population), self.population):
            reason = _over_budget(budget, spent)
            if reason:
                report.stopped_by = reason
                break
            request, fallbacks = self.request((g - 1) * self.population + slot, current, cands)
            try:
                out = _generate(self.gen, request, fallbacks, self.emit)
            except ReplayExhausted as exc:
                report.stopped_by = str(exc)
                break
            meta = provenance(out)
            if out.ok:
                new = self.submit(out.code, generated=meta)
            else:
                new = self.submit(None, generated=meta, failure={"status": out.error.outcome, "reason": str(out.error)})
            handles += new
            if fleet.embedded():
                current = self.members()
                cands = self.candidates(current)
                spent = _spent(current, cands)
            else:
                # On a fleet the measurements land later; count what was spent here now.
                spent = {**spent, "candidates": spent["candidates"] + 1,
                         "tokens": spent["tokens"] + (out.tokens or 0),
                         "money_usd": spent["money_usd"] + (out.cost_usd or 0.0)}
            self.emit("candidate", {"generation": g, "slot": slot, "handles": [h.id for h in new]})
        for h in handles:
            h.wait(self.wait_timeout)

    def request(self, index: int, current: list, cands: dict[int, _Candidate]):
        """The request for slot ``index``: parents chosen over everything measured (the
        first whole, with where its bits go and its lineage), the best distinct
        candidates, the newest failures; and the smaller parents to fall back on."""
        import dataclasses

        from codecfleet import fleet
        from db import engine
        from evaluation.clip import public_source
        from generation import GenerationRequest, select_parents
        from tasks.feedback import failure_infos, task_spec

        n_clips = self.n_clips
        records = [_record(c, n_clips) for c in cands.values()]
        chosen = select_parents(records, index=index, seed=self.seed, strategy=self.strategy)
        figures = _bd_figures(cands, n_clips, self.metric)
        if chosen.parents:
            parents = tuple(_info(cands[p.candidate_id], n_clips, self.anchor, figures) for p in chosen.parents)
        else:
            family = self.seeds[index % len(self.seeds)]
            seed_cand = next(c for c in cands.values() if c.family == family and _is_seed(c.generator))
            parents = (_info(seed_cand, n_clips, self.anchor, figures),)
        first = cands[parents[0].candidate_id]
        parents = (
            dataclasses.replace(_with_frame_sizes(parents[0], first.members[0]), lineage=_lineage(first, cands, n_clips)),
            *parents[1:],
        )
        distinct = _distinct(_ranked(cands, n_clips))
        clip0 = self.loaded[0]
        with engine.transaction() as session:
            task = task_spec(
                session, clip_name=public_source(clip0.source), clip_sha256=clip0.sha256, width=clip0.width,
                height=clip0.height, n_frames=clip0.n_frames, fps=clip0.fps, device=self.device,
                rate_points=fleet._qualities(self.rate_points), anchor=self.anchor, other_anchors=None,
                metric=self.metric, n_clips=n_clips,
            )
        request = GenerationRequest(
            task=task,
            parents=parents,
            top_k=tuple(_info(c, n_clips, self.anchor, figures) for c in distinct[: self.top_k]),  # may hold the parent
            failures=failure_infos(reversed(current), self.failures_shown),
            index=index,
            seed=self.seed,
            budget_chars=self.budget_chars,
        )
        fallbacks = [_info(c, n_clips, self.anchor, figures) for c in distinct]
        fallbacks += [_info(c, n_clips, self.anchor, figures) for c in cands.values() if _is_seed(c.generator)]
        return request, fallbacks


def _open(clips, held_out, generator, *, population, name, seed, seeds, frames, rate_points, anchor, strategy, top_k,
          failures_shown, prompt_budget, wait_timeout, on_event, clip_seed, metric, generations) -> _Run:
    """Check everything the user named, then create or resume the campaign row.

    Checked before the campaign is recorded, so a typo never leaves a campaign whose
    stored settings block the corrected rerun."""
    from db import catalog
    from codecfleet import fleet
    from config import resolve_device
    from db import engine
    from evaluation.metrics import FITNESS_METRICS
    from evaluation.clip import VideoError
    from evaluation.video import expand_clip_specs, load_clip, with_secret_seed
    from tasks.feedback import seed_codes

    if population < 1 or generations < 0:
        raise CampaignError("population must be at least 1 and generations at least 0")
    if not clips:
        raise CampaignError("a campaign needs at least one clip")
    if rate_points < 4:
        raise CampaignError("BD-rate needs at least 4 rate points")
    try:
        # Named clip sets (a directory, @LIST_FILE) become their clips: each is measured on
        # its own and fitness is the mean of the per-clip BD-rates. Stored expanded, so a
        # set whose contents changed is not resumed as if it were the same.
        clips = expand_clip_specs(clips)
        held_out = expand_clip_specs(held_out)
    except VideoError as exc:
        raise CampaignError(str(exc)) from exc
    budget_chars = _prompt_budget(prompt_budget)
    name = name or f"campaign-seed{seed}"
    params = {
        "clips": list(clips), "population": population, "seeds": list(seeds), "seed": seed,
        "frames": frames, "rate_points": rate_points, "anchor": anchor, "strategy": strategy,
    }
    # Stored only when set, so campaigns from before these settings resume unchanged.
    if held_out:
        params["held_out"] = list(held_out)
    if metric != "psnr_y":
        params["metric"] = metric
    if metric not in FITNESS_METRICS:
        raise CampaignError(f"unknown metric {metric!r}; known: {', '.join(FITNESS_METRICS)}")
    fleet._ensure_database()
    clip_seed = _campaign_clip_seed(name, generator, clip_seed)
    loaded = [load_clip(with_secret_seed(spec, clip_seed)[0], frames=frames) for spec in clips]
    held = [load_clip(with_secret_seed(spec, clip_seed)[0], frames=frames) for spec in held_out]
    if {c.sha256 for c in held} & {c.sha256 for c in loaded}:
        raise CampaignError("a held-out clip is also a training clip")
    codes = seed_codes(seeds)
    with engine.transaction() as session:
        row = catalog.get_or_create_campaign(session, name)
        if catalog.campaign_clip_seed(session, row.id, lambda: clip_seed) != clip_seed:
            raise CampaignError(f"campaign {name!r} was started at the same time by another process; run it again")
        if row.description:
            stored = json.loads(row.description)
            changed = {k: (stored.get(k), v) for k, v in params.items() if stored.get(k) != v}
            if changed:
                raise CampaignError(
                    f"campaign {name!r} was started with other settings ({changed}); resume it with the same ones "
                    "or choose another name"
                )
        else:
            row.description = json.dumps(params, sort_keys=True)
        campaign_id = row.id
    return _Run(
        name=name, campaign_id=campaign_id, loaded=loaded, held=held, seeds=tuple(seeds), seed_codes=codes, seed=seed,
        population=population, rate_points=rate_points, anchor=anchor, metric=metric, strategy=strategy, top_k=top_k,
        failures_shown=failures_shown, budget_chars=budget_chars, device=resolve_device(get_settings().device),
        wait_timeout=wait_timeout, emit=on_event or (lambda kind, data: None),
    )


def _measure_held_out(leaderboard, cands, held, anchor, name, metric, rate_points, wait_timeout, held_members) -> dict:
    """Measure the leaderboard's candidates on the held-out clips (once: a resume finds
    them measured); by candidate id: mean BD-rate there and per clip (None when any
    clip has no reliable figure)."""
    from codecfleet import fleet
    from evaluation.anchors import ANCHOR_CODECS

    have = {(m.candidate_id, m.clip_sha256) for m in held_members()}
    jobs = [
        {"candidate_id": row["candidate_id"], "candidate": cands[row["candidate_id"]].code, "clip": clip,
         "rate_points": rate_points, "anchors": [anchor, *(a for a in ANCHOR_CODECS if a != anchor)],
         "campaign": name, "metric": metric}
        for row in leaderboard for clip in held if (row["candidate_id"], clip.sha256) not in have
    ]
    for handle in fleet.submit_many(jobs) if jobs else []:
        handle.wait(wait_timeout)
    out: dict = {}
    by_candidate: dict[int, dict] = {}
    for m in held_members():
        by_candidate.setdefault(m.candidate_id, {})[m.clip_sha256] = m.bd_rate
    for row in leaderboard:
        per_clip = by_candidate.get(row["candidate_id"], {})
        values = [per_clip.get(c.sha256) for c in held]
        ok = all(v is not None and math.isfinite(v) for v in values)
        out[row["candidate_id"]] = {
            "bd_rate": sum(values) / len(values) if ok else None,
            "per_clip": {c.source: v for c, v in zip(held, values)},
        }
    return out


def _campaign_clip_seed(name: str, generator, given: int | None) -> int:
    """The secret seed of the campaign's synthetic clips: the stored one when the
    campaign exists (a different ``given`` one is refused), else ``given``, else the
    replayed campaign's (a replay measures the same frames), else a fresh draw."""
    from db.campaign_queries import stored_clip_seed
    from evaluation.video import draw_secret_seed
    from db import engine

    if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < 0):
        raise CampaignError("clip_seed must be an int >= 0")
    with engine.transaction() as session:
        stored = stored_clip_seed(session, name)
        replayed = None
        if isinstance(generator, str) and generator.startswith("replay:"):
            replayed = stored_clip_seed(session, generator.split(":", 1)[1])
    if stored is not None:
        if given is not None and given != stored:
            # The values are not repeated: the stored one is a secret.
            raise CampaignError(f"campaign {name!r} was started with another clip seed; resume it without one")
        return stored
    if given is not None:
        return given
    if replayed is not None:
        return replayed
    return draw_secret_seed()


def _generation_of(cands: dict[int, _Candidate], population: int) -> dict[int, int]:
    """Candidate id -> generation: seeds are 0, then ``population`` per generation in id order."""
    gen = {}
    generated = sorted(cid for cid, c in cands.items() if not _is_seed(c.generator))
    for cid, c in cands.items():
        if _is_seed(c.generator):
            gen[cid] = 0
    for i, cid in enumerate(generated):
        gen[cid] = 1 + i // population
    return gen


def _summarize(g, cands, n_clips, population) -> GenerationSummary:
    gen_of = _generation_of(cands, population)
    in_gen = [c for cid, c in cands.items() if gen_of.get(cid) == g]
    upto = [c for cid, c in cands.items() if gen_of.get(cid, 10**9) <= g]
    statuses: dict[str, int] = {}
    for c in in_gen:
        for m in c.members:
            statuses[m.status.value] = statuses.get(m.status.value, 0) + 1
    fits = [(c.fitness(n_clips), c.candidate_id) for c in in_gen if c.fitness(n_clips) is not None]
    fits_upto = [(c.fitness(n_clips), c.candidate_id) for c in upto if c.fitness(n_clips) is not None]
    best = min(fits) if fits else None
    best_upto = min(fits_upto) if fits_upto else None
    return GenerationSummary(
        generation=g,
        candidates=len(in_gen),
        statuses=statuses,
        best_bd_rate=best[0] if best else None,
        best_so_far=best_upto[0] if best_upto else None,
        best_candidate_id=best_upto[1] if best_upto else None,
    )


def _ranked(cands: dict[int, _Candidate], n_clips: int) -> list[_Candidate]:
    """Measured candidates, best (lowest mean BD-rate) first; ties by id."""
    scored = [(fit, c.candidate_id, c) for c in cands.values() if (fit := c.fitness(n_clips)) is not None]
    return [c for _, _, c in sorted(scored, key=lambda t: (t[0], t[1]))]


def _leaderboard(cands: dict[int, _Candidate], n_clips: int, limit: int = 10) -> list[dict]:
    ranked = _ranked(cands, n_clips)[:limit]
    rows = []
    for c in ranked:
        pts = c.members[0].points
        rows.append(
            {
                "candidate_id": c.candidate_id,
                "family": c.family,
                "generator": c.generator,
                "bd_rate": c.fitness(n_clips),
                "parents": list(c.parent_ids),
                "kbps": [p.kbps for p in pts],
                "psnr_y": [p.psnr_y for p in pts],
                "encode_fps": min((p.encode_fps for p in pts if p.encode_fps), default=None),
            }
        )
    return rows


def summary_counts(campaign_id: int) -> dict:
    """Wasted candidates and the probe's figures of a campaign, from the stored rows:
    ``duplicate_output`` experiments, ``identical_points`` (failed because identical
    rate points left fewer distinct curve points than BD-rate needs), rate points
    ``measured`` / ``reused`` / ``same_as``, and the probe's outcomes with the
    GPU-seconds it spent and (estimated) saved."""
    from db.campaign_queries import campaign_probe_stats, campaign_reuse_stats
    from db.models import Experiment, ExperimentStatus
    from db import engine

    import sqlalchemy as sa

    with engine.transaction() as session:
        statuses = dict(session.execute(
            sa.select(Experiment.status, sa.func.count()).where(Experiment.campaign_id == campaign_id)
            .group_by(Experiment.status)
        ).all())
        identical = session.scalar(
            sa.select(sa.func.count()).select_from(Experiment).where(
                Experiment.campaign_id == campaign_id, Experiment.status == ExperimentStatus.FAILED,
                Experiment.failure_stage == "verify", Experiment.error.like("%ignores the quality setting%"))
        )
        probe = campaign_probe_stats(session, campaign_id)
        points = campaign_reuse_stats(session, campaign_id)
    duplicates = int(statuses.get(ExperimentStatus.DUPLICATE_OUTPUT, 0))
    return {
        "experiments": int(sum(statuses.values())),
        "duplicate_output": duplicates,
        "identical_points": int(identical or 0),
        "wasted": duplicates + int(identical or 0),
        "points": points,
        "probed": probe.probed,
        "probe_stopped": probe.stopped,
        "probe_outcomes": probe.outcomes,
        "probe_gpu_seconds": probe.seconds,
        "probe_saved_gpu_seconds": probe.saved_seconds,
    }
