"""The one feedback path: what a generator is told, which generator answers, and how
its answer is stored. Both places that generate call it: a campaign (in the process that
drives it, so parent selection sees a whole finished generation) and the fleet's
``generate`` task (one experiment submitted without code).

* :func:`resolve_generator` picks the generator (environment, offline, replay, manual);
* :func:`task_spec`, :func:`candidate_info`, :func:`failure_infos` and
  :func:`stored_bd_figures` build the parts of a :class:`generation.GenerationRequest`
  from stored rows; :func:`generation_request` is the fleet's whole request;
* :func:`provenance` and :func:`store_generated` turn a generator's answer into the
  candidate row (prompt, reply, model, tokens, cost, parents) before it is measured.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import FAILURES


# --- which generator ---------------------------------------------------------


def validate(code: str) -> tuple[bool, str | None]:
    """The sanitizer's verdict, for generators that check their own output."""
    from sandbox.sanitize import sanitize

    verdict = sanitize(code)
    return verdict.ok, verdict.reason


def seed_codes(names: Sequence[str]) -> dict[str, str]:
    """The reference candidates ``names`` (seeds of a campaign) by name, as source text."""
    from evaluation.reference import reference_code

    return {name: reference_code(name) for name in names}


def resolve_generator(generator=None, *, seeds: Mapping[str, str], seed: int | None = None,
                      seen: Sequence[str] = (), campaign: str | None = None):
    """``None``: from the environment (offline when no LLM is configured; several models
    with ``CODECFLEET_LLM_MODELS``), the offline one seeded with ``seed`` when given, else
    with ``CODECFLEET_OFFLINE_SEED``; ``"offline"``; ``"replay:CAMPAIGN"``; ``"manual:DIR"``
    (prompts written to DIR, answers read from there: see :mod:`generation.manual`; files
    named after ``campaign``); or a ready generator object. ``seen``: programs already
    measured, which the offline generator does not propose again.

    Raises :class:`generation.GenerationConfigError` for a name or setting that cannot work.
    """
    from generation import GenerationConfigError, OfflineGenerator, generator_from_env, manual_generator_from_env

    if generator is None:
        environ = dict(os.environ)
        if seed is not None:
            environ.setdefault("CODECFLEET_OFFLINE_SEED", str(seed))
        gen = generator_from_env(environ, seeds=seeds, validate=validate)
        if isinstance(gen, OfflineGenerator) and (seed is not None or seen):
            gen = OfflineGenerator(gen.seed if seed is None else seed, seeds, validate=validate, seen=seen)
        return gen
    if generator == "offline":
        return OfflineGenerator(seed or 0, seeds, validate=validate, seen=seen)
    if isinstance(generator, str) and generator.startswith("replay:"):
        return replay_generator(generator.split(":", 1)[1])
    if isinstance(generator, str) and generator.startswith("manual:"):
        try:
            return manual_generator_from_env(os.path.expanduser(generator.split(":", 1)[1]), os.environ, campaign=campaign)
        except OSError as exc:
            raise GenerationConfigError(str(exc)) from exc
    if isinstance(generator, str):
        raise GenerationConfigError(
            f"unknown generator {generator!r}: use offline, replay:CAMPAIGN, manual:DIR, or a generator object"
        )
    return generator


#: The generator name of a seed's candidate row: ``seed:intra_dct``.
SEED_GENERATOR = "seed:"


def is_seed(generator: str | None) -> bool:
    return bool(generator) and generator.startswith(SEED_GENERATOR)


def replay_generator(campaign_name: str):
    """A generator that hands back the stored replies of ``campaign_name`` in order, calling no LLM."""
    from db import engine
    from db.campaign_queries import campaign_id_by_name, campaign_members, stored_candidate
    from generation import GenerationConfigError, ReplayGenerator, StoredReply

    with engine.transaction() as session:
        try:
            campaign_id = campaign_id_by_name(session, campaign_name)
        except LookupError as exc:
            raise GenerationConfigError(str(exc)) from exc
        members = campaign_members(session, campaign_id)
        seen: set[int] = set()
        replies = []
        for m in members:
            if m.candidate_id is None or m.candidate_id in seen or is_seed(m.generator):
                continue
            seen.add(m.candidate_id)
            candidate = stored_candidate(session, m.candidate_id)
            replies.append(
                StoredReply(
                    raw_reply=candidate.raw_reply if candidate.raw_reply is not None else (candidate.code or ""),
                    prompt=candidate.prompt,
                    generator=candidate.generator,
                    model=candidate.model,
                    prompt_tokens=candidate.prompt_tokens,
                    completion_tokens=candidate.completion_tokens,
                    mode=candidate.mode,
                    candidate_id=candidate.candidate_id,
                )
            )
    if not replies:
        raise GenerationConfigError(f"campaign {campaign_name!r} has no stored replies to replay")
    return ReplayGenerator(replies)


# --- what the prompt is told --------------------------------------------------


def prompt_points(points: Iterable) -> tuple:
    """Measured rate points (:class:`evaluation.results.RatePoint`, as the database's
    reads give them) as the prompt's :class:`generation.RatePoint` values: the one
    conversion, used by the fleet (:func:`generation_request`) and campaigns
    (:func:`candidate_info`)."""
    from generation import RatePoint

    return tuple(RatePoint(p.quality, p.kbps, p.psnr_y, p.psnr_rgb, p.ssim_y, p.encode_fps, p.decode_fps)
                 for p in points)


def candidate_info(*, code: str | None, candidate_id: int | None, generator: str | None, points: Iterable,
                   bd_rate: Mapping[str, float], figures: Sequence = (), family: str | None = None):
    """One measured candidate as a prompt shows it."""
    from generation import CandidateInfo

    return CandidateInfo(code=code or "", candidate_id=candidate_id, family=family, generator=generator,
                         bd_rate=dict(bd_rate), points=prompt_points(points), bd_figures=tuple(figures))


def failure_infos(rows: Iterable, n: int) -> tuple:
    """The first ``n`` of ``rows`` (newest first: experiments with ``status``, ``error``,
    ``failure_stage``, ``candidate_id``) that ended without a result, as the prompt's
    :class:`generation.FailureInfo`."""
    from generation import FailureInfo

    out = []
    for row in rows:
        if len(out) >= n:
            break
        if row.status in FAILURES:
            out.append(FailureInfo(row.status.value, row.error or "", row.failure_stage, row.candidate_id))
    return tuple(out)


def task_spec(session: Session, *, clip_name: str, clip_sha256: str, width, height, n_frames, fps, device: str,
              rate_points: Sequence[float], anchor: str, other_anchors: Sequence[str] | None, metric: str,
              min_overlap: float | None = None, n_clips: int = 1):
    """The task a prompt states: the clip by its public name (a synthetic clip's secret
    seed never reaches a prompt), the rate points, ``anchor`` (fitness) then
    ``other_anchors`` (None: every anchor measured on the clip), each anchor's measured
    sweep on the clip, and the limits candidates run under on ``device``."""
    from generation import TaskSpec

    sweeps = anchor_points(session, clip_sha256)
    others = sorted(a for a in sweeps if a != anchor) if other_anchors is None else [
        a for a in other_anchors if a != anchor]
    extra = {} if min_overlap is None else {"min_overlap": float(min_overlap)}
    return TaskSpec(clip=clip_name, width=width, height=height, n_frames=n_frames, fps=fps, device=device,
                    rate_points=tuple(rate_points), anchors=(anchor, *others), metric=metric, n_clips=n_clips,
                    anchor_points=sweeps, limits=candidate_limits(device), **extra)


def stored_bd_figures(session: Session, experiment_ids, metric: str) -> dict:
    """By experiment id: its stored BD figures on ``metric`` (``generation.base.BdFigure``,
    one per anchor, with the overlap, reliability and raw figure of the score row)."""
    from db.models import Score
    from generation.base import BdFigure

    out: dict = {}
    if not experiment_ids:
        return out
    rows = session.execute(
        sa.select(Score.experiment_id, Score.anchor_codec, Score.bd_rate, Score.overlap, Score.reliable,
                  Score.min_overlap, Score.raw_bd_rate)
        .where(Score.experiment_id.in_(list(experiment_ids)), Score.metric == metric)
        .order_by(Score.experiment_id, Score.anchor_codec)
    )
    for eid, codec, bd, overlap, reliable, min_overlap, raw in rows:
        out.setdefault(eid, []).append(BdFigure(codec, metric, bd, overlap, reliable, min_overlap, raw))
    return out


def anchor_points(session: Session, clip_sha256: str) -> dict:
    """Each anchor's stored sweep on the clip (codec -> AnchorPoint tuple by CRF), for
    the current anchor and metrics versions; the newest row per CRF."""
    from db.models import AnchorResult
    from evaluation.anchors import ANCHOR_VERSION
    from evaluation.metrics import METRICS_VERSION
    from generation import AnchorPoint

    rows = session.execute(
        sa.select(AnchorResult.codec, AnchorResult.crf, AnchorResult.kbps, AnchorResult.psnr_y, AnchorResult.ssim_y)
        .where(
            AnchorResult.clip_sha256 == clip_sha256,
            AnchorResult.anchor_version == ANCHOR_VERSION,
            AnchorResult.metrics_version == METRICS_VERSION,
        )
        .order_by(AnchorResult.codec, AnchorResult.crf, AnchorResult.id.desc())
    ).all()
    out: dict[str, dict[int, AnchorPoint]] = {}
    for codec, crf, kbps, psnr_y, ssim_y in rows:
        out.setdefault(codec, {}).setdefault(crf, AnchorPoint(crf, kbps, psnr_y, ssim_y))
    return {codec: tuple(points[c] for c in sorted(points)) for codec, points in out.items()}


def candidate_limits(device: str):
    """The limits candidates run under (the sandbox's and the sanitizer's defaults)."""
    from generation import Limits
    from sandbox.runner import Limits as SandboxLimits
    from sandbox.sanitize import MAX_BYTES_DEFAULT

    lim = SandboxLimits()
    return Limits(
        call_seconds=lim.call_seconds,
        import_seconds=lim.import_seconds,
        session_seconds=lim.total_seconds,
        max_code_bytes=MAX_BYTES_DEFAULT,
        max_payload_bytes=lim.max_payload_bytes,
        max_bitstream_bytes=getattr(lim, "max_bitstream_bytes", None),
        memory_bytes=lim.address_space_bytes if device == "cpu" else None,
        tmp_bytes=lim.tmpfs_bytes,
    )


def generation_request(session: Session, experiment):
    """The fleet's request for one experiment submitted without code: the campaign's best
    candidates on the experiment's clip with their measured numbers (the best is the
    parent, else the ``intra_dct`` seed), and its most recent failures with reasons."""
    from db import rankings
    from config import get_settings, resolve_device
    from evaluation.pipeline import BD_METRIC, DEFAULT_MIN_OVERLAP
    from evaluation.clip import public_source
    from generation import CandidateInfo, GenerationRequest, prompt_budget_from_env

    anchor = (experiment.anchors or ["x264"])[0]
    config = experiment.config or {}
    metric = config.get("metric") or BD_METRIC
    ranked = rankings.top_k_candidates(session, 3, clip_sha256=experiment.clip.sha256,
                                campaign_id=experiment.campaign_id, anchor=anchor, metric=metric)
    figures = stored_bd_figures(session, [r.experiment_id for r in ranked], metric)
    top = tuple(
        candidate_info(code=r.code, candidate_id=r.candidate_id, generator=r.generator, points=r.points,
                       bd_rate={anchor: r.bd_rate}, figures=figures.get(r.experiment_id, ()))
        for r in ranked
    )
    failures = failure_infos(rankings.recent_failures(session, 6, campaign_id=experiment.campaign_id), 6)
    parent = top[0] if top else CandidateInfo(code=seed_codes(["intra_dct"])["intra_dct"], family="intra_dct",
                                              generator="reference")
    device = resolve_device(config.get("device") or get_settings().device)
    return GenerationRequest(
        task=task_spec(
            session, clip_name=public_source((config.get("clip") or {}).get("name") or experiment.clip.source),
            clip_sha256=experiment.clip.sha256, width=config.get("width"), height=config.get("height"),
            n_frames=experiment.clip.n_frames, fps=config.get("fps"), device=device,
            rate_points=experiment.rate_points, anchor=anchor, other_anchors=experiment.anchors or (),
            metric=metric, min_overlap=float(config.get("min_overlap") or DEFAULT_MIN_OVERLAP),
        ),
        parents=(parent,),
        top_k=top,
        failures=failures,
        index=experiment.id,
        budget_chars=prompt_budget_from_env(os.environ),
    )


# --- storing the answer -------------------------------------------------------


def provenance(generated) -> dict:
    """Where a generator's answer came from (a :class:`generation.Generated`), as the
    mapping :func:`store_generated` and ``fleet.submit(generated=...)`` take."""
    return {
        "generator": generated.generator, "model": generated.model, "prompt": generated.prompt,
        "raw_reply": generated.raw_reply, "prompt_tokens": generated.prompt_tokens,
        "completion_tokens": generated.completion_tokens, "parent_ids": list(generated.parent_ids),
        "cost_usd": generated.cost_usd, "mode": generated.mode,
    }


def store_generated(session: Session, meta: Mapping, *, code: str | None, campaign_id: int | None):
    """The candidate row of generated (or seeded) code, with its provenance ``meta``
    (see :func:`provenance`; missing keys are unknown); the sanitizer verdict comes later."""
    from db import catalog

    return catalog.create_candidate(
        session,
        generator=str(meta.get("generator") or "user"),
        code=code,
        model=meta.get("model"),
        prompt=meta.get("prompt"),
        raw_reply=meta.get("raw_reply"),
        prompt_tokens=meta.get("prompt_tokens"),
        completion_tokens=meta.get("completion_tokens"),
        cost_usd=meta.get("cost_usd"),
        mode=meta.get("mode"),
        parent_ids=meta.get("parent_ids") or (),
        campaign_id=campaign_id,
    )
