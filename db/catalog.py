"""What experiments are made of: campaigns (and the secret clip seeds), clips,
candidates and their sanitizer verdicts. No function here commits; rows that
two submitters may insert at once are inserted under a unique constraint."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.experiments import _expire
from db.models import Campaign, Candidate, Clip, ClipSeed, candidate_parents


def create_campaign(session: Session, name: str, description: str | None = None) -> Campaign:
    campaign = Campaign(name=name, description=description)
    session.add(campaign)
    session.flush()
    return campaign


def get_or_create_campaign(session: Session, name: str) -> Campaign:
    """The campaign called ``name``, inserted if new (safe when two submitters race)."""
    existing = session.scalar(sa.select(Campaign).where(Campaign.name == name))
    if existing is not None:
        return existing
    try:
        with session.begin_nested():
            existing = Campaign(name=name)
            session.add(existing)
    except IntegrityError:
        existing = session.scalar(sa.select(Campaign).where(Campaign.name == name))
        if existing is None:
            raise
    return existing


def campaign_clip_seed(session: Session, campaign_id: int, draw: Callable[[], int]) -> int:
    """The campaign's secret clip seed; ``draw()`` is stored as it the first time
    (the first writer wins when two race, and both get the stored one)."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise LookupError(f"no campaign with id {campaign_id}")
    if campaign.clip_seed is None:
        session.execute(
            sa.update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.clip_seed.is_(None))
            .values(clip_seed=int(draw()))
            .execution_options(synchronize_session=False)
        )
        session.refresh(campaign, ["clip_seed"])
    return int(campaign.clip_seed)


def scoped_clip_seed(session: Session, scope: str, draw: Callable[[], int]) -> int:
    """The database's secret clip seed for ``scope`` (e.g. ``"default"``), drawn once
    with ``draw()`` and stored (safe when two submitters race)."""
    existing = session.get(ClipSeed, scope)
    if existing is None:
        try:
            with session.begin_nested():
                session.add(ClipSeed(scope=scope, seed=int(draw())))
        except IntegrityError:
            pass
        existing = session.scalar(sa.select(ClipSeed).where(ClipSeed.scope == scope))
    return int(existing.seed)


def get_or_create_clip(
    session: Session, *, sha256: str, source: str, width: int, height: int, n_frames: int, fps: float
) -> Clip:
    """The clip row for ``sha256``, inserted if new (safe when two workers race)."""
    existing = session.scalar(sa.select(Clip).where(Clip.sha256 == sha256))
    if existing is None:
        try:
            with session.begin_nested():
                existing = Clip(
                    sha256=sha256, source=source, width=width, height=height, n_frames=n_frames, fps=fps
                )
                session.add(existing)
        except IntegrityError:
            existing = session.scalar(sa.select(Clip).where(Clip.sha256 == sha256))
            if existing is None:
                raise
    if (existing.width, existing.height, existing.n_frames) != (width, height, n_frames):
        raise ValueError(
            f"clip {sha256[:12]}… is stored as {existing.width}x{existing.height}x{existing.n_frames}, "
            f"not {width}x{height}x{n_frames}"
        )
    return existing


def create_candidate(
    session: Session,
    *,
    generator: str,
    code: str | None = None,
    ast_hash: str | None = None,
    model: str | None = None,
    prompt: str | None = None,
    raw_reply: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cost_usd: float | None = None,
    mode: str | None = None,
    parent_ids: Iterable[int] = (),
    campaign_id: int | None = None,
) -> Candidate:
    """Store a candidate as generated (or supplied); the sanitizer verdict comes later."""
    candidate = Candidate(
        generator=generator,
        code=code,
        ast_hash=ast_hash,
        model=model,
        prompt=prompt,
        raw_reply=raw_reply,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
        mode=mode,
        campaign_id=campaign_id,
    )
    session.add(candidate)
    session.flush()
    parents = sorted(set(parent_ids))
    if parents:
        session.execute(
            sa.insert(candidate_parents), [{"candidate_id": candidate.id, "parent_id": p} for p in parents]
        )
        session.expire(candidate, ["parents"])
    return candidate


def record_sanitizer_verdict(
    session: Session,
    candidate_id: int,
    *,
    accepted: bool,
    reason: str | None = None,
    code: str | None = None,
    ast_hash: str | None = None,
) -> None:
    """Store the sanitizer's verdict; accepted code comes with its normalised-AST hash."""
    if not accepted and not reason:
        raise ValueError("a rejection needs a reason (the next prompt shows it)")
    values: dict[str, Any] = {"sanitizer_verdict": "accepted" if accepted else "rejected", "sanitizer_reason": reason}
    if code is not None:
        values["code"] = code
    if ast_hash is not None:
        values["ast_hash"] = ast_hash
    result = session.execute(
        sa.update(Candidate).where(Candidate.id == candidate_id).values(**values),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        raise LookupError(f"candidate {candidate_id} does not exist")
    _expire(session, Candidate, candidate_id)


__all__ = [
    "campaign_clip_seed",
    "create_campaign",
    "create_candidate",
    "get_or_create_campaign",
    "get_or_create_clip",
    "record_sanitizer_verdict",
    "scoped_clip_seed",
]
