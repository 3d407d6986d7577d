"""Submitting experiments: the same call on a laptop and on a fleet.

With ``CODECFLEET_BROKER_URL`` set, :func:`submit` stores the experiment,
commits, sends the first task to Redis and returns at once; Celery workers do
the rest. Without it (the embedded default) the very same task code runs here,
synchronously, on the SQLite database at ``CODECFLEET_DATABASE_URL`` (migrated
on first use), with the sandbox on; :func:`submit` returns when the experiment
has ended.

>>> h = submit("my_codec.py", "synthetic:mix@352x288", rate_points=4, anchors=["x264"])
>>> h.wait(timeout=600)["status"]
'succeeded'
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db import catalog, experiments, results
from config import UserError, get_settings
from db import engine
from db.campaign_queries import campaign_unfinished
from db.models import RUNNING, TERMINAL, ExperimentStatus, Stage
from evaluation.results import EvaluationResult, RatePoint
from tasks import _enqueue, feedback, steps

#: Statuses in which an experiment is finished.
FINISHED = frozenset(status.value for status in TERMINAL)


class FleetError(UserError, RuntimeError):
    """Something about a submission the user can act on (unknown id, bad candidate...)."""


class WaitTimeout(TimeoutError):
    def __init__(self, experiment_id: int, timeout: float, status: str):
        super().__init__(f"experiment {experiment_id} is still {status} after {timeout:g} s")
        self.experiment_id = experiment_id
        self.status = status


def _ensure_database() -> None:
    if _enqueue.embedded():
        engine.ensure_schema()


def read_candidate(candidate: str | Path) -> tuple[str, str]:
    """``candidate`` as (generator, source text): a path to a .py file, ``reference:NAME``,
    or the source text itself."""
    if isinstance(candidate, Path):
        path: Path | None = candidate
    elif isinstance(candidate, str) and candidate.startswith("reference:"):
        from evaluation.reference import reference_path

        try:
            return "reference", reference_path(candidate.split(":", 1)[1]).read_text(encoding="utf-8")
        except KeyError as exc:
            raise FleetError(str(exc)) from exc
    elif isinstance(candidate, str) and "\n" not in candidate and len(candidate) < 4096:
        path = Path(candidate)
        if not path.is_file():
            raise FleetError(f"candidate file not found: {candidate} (pass source text with a newline, or a path)")
    else:
        path = None
    if path is None:
        if not isinstance(candidate, str):
            raise FleetError(f"candidate must be a path or source text, got {type(candidate).__name__}")
        return "user", candidate
    if not path.is_file():
        raise FleetError(f"candidate file not found: {path}")
    try:
        return "user", path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FleetError(f"candidate file {path} is not UTF-8 text: {exc}") from exc


def _qualities(rate_points: int | Sequence[float]) -> list[float]:
    from evaluation.pipeline import quality_points

    qualities = quality_points(rate_points) if isinstance(rate_points, int) else [float(x) for x in rate_points]
    for x in qualities:
        if not 0.0 <= x <= 1.0:
            raise FleetError(f"quality {x} is outside [0, 1]")
    return qualities


#: Scope of the database-wide secret clip seed used by submissions outside any campaign.
DEFAULT_SEED_SCOPE = "default"


def secret_clip_spec(session, spec: str, campaign_id: int | None) -> str:
    """``spec`` with the secret seed its synthetic clip is measured with.

    A synthetic spec that names no seed gets the campaign's stored seed (drawn
    with ``secrets`` on first use), or, outside any campaign, the database's
    default one: the same spec measures the same frames within a campaign (and
    a resumed campaign measures what it measured before) while no candidate can
    regenerate them. A seed the user named, and a file, are kept as given.
    """
    from evaluation.video import draw_secret_seed, spec_seed, with_secret_seed

    if not spec.startswith("synthetic:") or spec_seed(spec) is not None:
        return spec
    if campaign_id is not None:
        seed = catalog.campaign_clip_seed(session, campaign_id, draw_secret_seed)
    else:
        seed = catalog.scoped_clip_seed(session, DEFAULT_SEED_SCOPE, draw_secret_seed)
    return with_secret_seed(spec, seed)[0]


def experiment_clip_spec(clip, start_frame: int) -> dict:
    """``experiments.config["clip"]``: how a worker finds the frames again, without the seed.

    ``name`` is the public name (what a prompt may show). A seeded synthetic
    clip has no ``source`` here: the worker re-creates it from the clip row's
    trusted spec instead, so the seed is never part of an experiment's config,
    which prompts are built from.
    """
    spec = {"name": clip.source, "frames": clip.n_frames, "start_frame": start_frame}
    if clip.seed is None:
        spec["source"] = clip.source
    return spec


def _create(session, job: Mapping[str, Any], candidates: dict[int, int] | None = None) -> tuple[int, str | None]:
    """Insert one experiment (and its clip, candidate, campaign rows); returns (id, first task).

    ``job["generated"]`` (a mapping: generator, model, prompt, raw_reply, token
    counts, parent_ids) describes where generated code came from; jobs sharing
    one such mapping share one candidate row (``candidates`` remembers it), so a
    candidate measured on several clips is one candidate. ``job["generation_failure"]``
    (status, reason) records a generation that produced no code: the experiment
    ends at stage ``generate`` and nothing is sent (the first task is None).
    """
    from evaluation.anchors import ANCHOR_CODECS
    from evaluation.clip import Clip
    from evaluation.video import load_clip

    clip = job["clip"]
    frames, start_frame = job.get("frames"), job.get("start_frame", 0)
    campaign_id = None
    if job.get("campaign"):
        campaign_id = catalog.get_or_create_campaign(session, str(job["campaign"])).id
    if not isinstance(clip, Clip):
        clip = load_clip(
            secret_clip_spec(session, str(clip), campaign_id), start_frame=start_frame,
            frames=8 if frames is None and str(clip).startswith("synthetic:") else frames,
        )
    spec = experiment_clip_spec(clip, start_frame)
    anchors = list(job.get("anchors") or ())
    unknown = [a for a in anchors if a not in ANCHOR_CODECS]
    if unknown:
        raise FleetError(f"unknown anchor {unknown[0]!r}; expected some of {', '.join(ANCHOR_CODECS)}")
    qualities = _qualities(job.get("rate_points", 4))
    # The clip row keeps the trusted spec (with the seed): what reproduces the frames.
    clip_row = catalog.get_or_create_clip(
        session, sha256=clip.sha256, source=clip.spec, width=clip.width, height=clip.height,
        n_frames=clip.n_frames, fps=float(clip.fps),
    )
    candidate_id = None
    meta = job.get("generated")
    shared = candidates is not None and meta is not None
    if job.get("candidate_id") is not None:
        candidate_id = int(job["candidate_id"])  # an existing candidate measured on another clip (held-out)
    elif shared and id(meta) in candidates:
        candidate_id = candidates[id(meta)]
    elif meta is not None:
        code = read_candidate(job["candidate"])[1] if job.get("candidate") is not None else None
        candidate_id = feedback.store_generated(session, meta, code=code, campaign_id=campaign_id).id
        if shared:
            candidates[id(meta)] = candidate_id
    elif job.get("candidate") is not None:
        generator, code = read_candidate(job["candidate"])
        candidate_id = catalog.create_candidate(session, generator=generator, code=code, campaign_id=campaign_id).id
    device = job.get("device") or get_settings().device
    config = {"width": clip.width, "height": clip.height, "fps": float(clip.fps), "device": device, "clip": spec}
    # How the numbers are made (issue 15): the BD metric, the overlap a BD figure needs, the determinism check.
    config.update({k: job[k] for k in ("metric", "min_overlap", "determinism") if job.get(k) is not None})
    if job.get("probe") is False:
        config["probe"] = False  # measure every point even if the first frames look hopeless (evaluate)
    experiment = experiments.create_experiment(
        session, clip_id=clip_row.id, config=config, rate_points=qualities, anchors=anchors,
        candidate_id=candidate_id, campaign_id=campaign_id,
    )
    failure = job.get("generation_failure")
    if failure is not None:
        # The generator answered with no usable code: the experiment ends here,
        # with the generator's own reason, so the next prompt can show it.
        experiments.transition(session, experiment.id, ExperimentStatus.GENERATING)
        status = failure.get("status") or ExperimentStatus.FAILED
        experiments.transition(session, experiment.id, status, failure_stage=Stage.GENERATE, error=str(failure["reason"]))
        return experiment.id, None
    return experiment.id, steps.first_task(experiment)


def submit_many(jobs: Iterable[Mapping[str, Any]], **common: Any) -> list[Handle]:
    """Submit several experiments in one transaction; each job is a mapping of
    :func:`submit`'s arguments, over ``common``. Messages go out after the commit."""
    _ensure_database()
    created: list[tuple[int, str | None]] = []
    shared_candidates: dict[int, int] = {}
    with engine.transaction() as session:
        for job in jobs:
            merged = {**common, **job}
            if "clip" not in merged:
                raise FleetError("every job needs a clip")
            created.append(_create(session, merged, shared_candidates))
    for experiment_id, first in created:
        if first is not None:
            _enqueue.send(first, experiment_id, task_id=steps.task_id(experiment_id, 0, first))
    if _enqueue.embedded():
        _enqueue.drain()
    return [Handle(experiment_id) for experiment_id, _ in created]


def queue_positions(waiting: Iterable[tuple[int, int, str, str | None]]) -> dict[int, Any]:
    """Where each waiting experiment's message is in the broker, by experiment id
    (``(id, attempts, waiting_for, node)`` in): a :class:`tasks._enqueue.Whereabouts`,
    or None when its message is not there (the reaper will send it again). Empty
    when embedded or when the broker cannot be read."""
    waiting = list(waiting)
    if _enqueue.embedded() or not waiting:
        return {}
    try:
        found = _enqueue.locate(steps.queue_of(step, node) for _, _, step, node in waiting)
    except Exception:  # noqa: BLE001 - a status display must not fail on the broker
        return {}
    return {
        eid: found.get(steps.task_id(eid, attempts, steps.STEP_TASKS[step]))
        for eid, attempts, step, _ in waiting
    }


def embedded() -> bool:
    """True when no broker is configured: submissions run in this process."""
    return _enqueue.embedded()


def resume_stalled(campaign_id: int) -> list[int]:
    """Embedded default only: re-run the campaign's experiments that a killed
    process left unfinished (queued or mid-stage). Nothing else can be working
    on them, since the embedded default has no workers; in the fleet the
    reaper does this once their lease expires. Returns the ids resumed."""

    if not _enqueue.embedded():
        return []
    settings = get_settings()
    resumed = []
    with engine.transaction() as session:
        for row in campaign_unfinished(session, campaign_id):
            if row.status in RUNNING:
                if not experiments.requeue(session, row.id, max_attempts=settings.max_attempts, only_if_lease_expired=False):
                    experiments.transition(session, row.id, ExperimentStatus.TIMED_OUT, error="the process running it was killed and "
                                 f"its attempt budget of {settings.max_attempts} is spent")
                    continue
            elif row.status is not ExperimentStatus.QUEUED:
                continue
            resumed.append((row.id, row.attempts + (1 if row.status in RUNNING else 0), row.has_candidate))
    for experiment_id, attempt, has_candidate in resumed:
        first = steps.SANITIZE if has_candidate else steps.GENERATE
        _enqueue.send(first, experiment_id, task_id=steps.task_id(experiment_id, attempt, first))
    if resumed:
        _enqueue.drain()
    return [r[0] for r in resumed]


def submit(
    candidate: str | Path | None,
    clip: Any,
    *,
    rate_points: int | Sequence[float] = 4,
    anchors: Sequence[str] = (),
    campaign: str | None = None,
    frames: int | None = None,
    start_frame: int = 0,
    device: str | None = None,
    metric: str | None = None,
    min_overlap: float | None = None,
    determinism: str | None = None,
    probe: bool = True,
) -> Handle:
    """Submit one experiment: ``candidate`` (a path, ``reference:NAME`` or source text;
    None asks the generator) measured on ``clip`` (a ``Clip`` or a spec such as
    ``"synthetic:mix@352x288"``; synthetic clips have ``frames`` frames, default 8)
    at ``rate_points`` qualities, with BD-rate against ``anchors``. ``metric``,
    ``min_overlap`` and ``determinism`` are stored in the experiment's config
    (defaults: evaluation.pipeline's); ``probe=False`` skips the cheap first stage.

    Fleet: returns at once. Embedded: returns when the experiment has ended.
    A file clip's path must be readable by the workers.
    """
    job = {
        "candidate": candidate, "clip": clip, "rate_points": rate_points, "anchors": anchors,
        "campaign": campaign, "frames": frames, "start_frame": start_frame, "device": device,
        "metric": metric, "min_overlap": min_overlap, "determinism": determinism, "probe": probe,
    }
    return submit_many([job])[0]


def get(experiment_id: int) -> Handle:
    """A handle on an existing experiment (FleetError if there is none)."""
    _ensure_database()
    handle = Handle(int(experiment_id))
    handle.status()
    return handle


def cancel(experiment_id: int | None = None, *, campaign: str | None = None) -> list[int]:
    """Cancel one experiment or every unfinished one of a campaign; the ids cancelled."""

    _ensure_database()
    if (experiment_id is None) == (campaign is None):
        raise FleetError("cancel needs an experiment id or a campaign, not both")
    if campaign is not None:
        with engine.transaction() as session:
            try:
                ids = experiments.campaign_experiment_ids(session, campaign, only_unfinished=True)
            except LookupError as exc:
                raise FleetError(str(exc)) from exc
    else:
        get(experiment_id)
        ids = [int(experiment_id)]
    return steps.cancel(ids)


@dataclass(frozen=True)
class Status:
    id: int
    status: str
    stage: str | None
    reason: str | None
    attempts: int
    worker: str | None
    #: The step whose message the experiment waits for in a broker queue (nobody holds
    #: it meanwhile), and since when; None while a worker runs it or once it ended.
    waiting_for: str | None = None
    waiting_since: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def waiting_seconds(self) -> float | None:
        if self.waiting_since is None:
            return None
        return max(0.0, (datetime.now(UTC) - self.waiting_since).total_seconds())


class Handle:
    """One submitted experiment. Everything is read from the database."""

    def __init__(self, experiment_id: int):
        self.id = int(experiment_id)

    def __repr__(self) -> str:
        return f"Handle({self.id})"

    def status(self) -> Status:
        from db import experiments

        with engine.transaction() as session:
            try:
                e = experiments.get_experiment(session, self.id)
            except experiments.ExperimentNotFound as exc:
                raise FleetError(str(exc)) from exc
            return Status(e.id, e.status.value, e.failure_stage, e.error, e.attempts, e.worker_host,
                          e.waiting_for, e.waiting_since)

    def wait(self, timeout: float | None = None, *, poll: float = 0.2) -> dict:
        """Block until the experiment ends (WaitTimeout after ``timeout`` s); its result."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.status()
            if current.finished:
                return self.result()
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(self.id, timeout, current.status)
            time.sleep(poll)

    def result(self) -> dict:
        """The shape of ``codecfleet evaluate --json`` (plus ``id``, ``attempts``,
        ``worker``), built from the stored rows; no rate points unless succeeded.
        A plain dict (:meth:`evaluation`'s ``to_json()``): callers annotate it."""
        return self.evaluation().to_json()

    def evaluation(self) -> EvaluationResult:
        """The result as stored, typed (:func:`experiment_result`)."""
        with engine.transaction() as session:
            return experiment_result(session, self.id)


def experiment_result(session, experiment_id: int) -> EvaluationResult:
    """One experiment's result as stored: its status, and once it succeeded its rate
    points (:meth:`RatePoint.from_measurement`), anchors and BD figures."""
    from evaluation import anchors as anchors_mod
    from evaluation.pipeline import BD_METRIC, DEFAULT_DETERMINISM
    from evaluation.clip import public_source

    e = experiments.get_experiment(session, experiment_id)
    clip = e.clip
    spec = e.config.get("clip") or {}
    summary = {
        "source": public_source(spec.get("name") or spec.get("source") or clip.source),
        "sha256": clip.sha256, "width": clip.width, "height": clip.height, "fps": clip.fps, "frames": clip.n_frames,
    }
    result = EvaluationResult(
        id=e.id, status=e.status.value, stage=e.failure_stage, reason=e.error, clip=summary,
        isolation=e.isolation, device=e.device, attempts=e.attempts, worker=e.worker_host,
        waiting_for=e.waiting_for, waiting_since=e.waiting_since, campaign_id=e.campaign_id,
        reused_from=e.reused_from_id, duplicate_of=e.duplicate_of_id,
        ast_hash=e.candidate.ast_hash if e.candidate else None,
        metric=(e.config or {}).get("metric") or BD_METRIC,
    )
    if e.status.value != "succeeded":
        return result
    raw_bytes = clip.n_frames * clip.width * clip.height * 3
    measurements = results.experiment_measurements(session, experiment_id)
    points = tuple(RatePoint.from_measurement(m, m.artifact, raw_bytes=raw_bytes) for m in measurements)
    versions = {"evaluator_version": measurements[-1].evaluator_version,
                "metrics_version": measurements[-1].metrics_version} if measurements else {}
    # The second decode of the determinism check, as stored (a succeeded experiment passed it).
    checked = {p.index: p.verify_decode_seconds for p in points if p.verify_decode_seconds is not None}
    determinism = {
        "mode": (e.config or {}).get("determinism") or DEFAULT_DETERMINISM,
        "points": sorted(checked), "seconds": sum(checked.values()), "identical": True if checked else None,
        "point_seconds": checked,
    }
    anchors: dict[str, list] = {}
    bd: dict[str, dict] = {}
    bd_rate: dict[str, float | None] = {}
    for s in results.experiment_scores(session, experiment_id):
        curve = []
        for crf in anchors_mod.DEFAULT_CRFS.get(s.anchor_codec, ()):
            rows = results.anchor_results(
                session, clip.sha256, s.anchor_codec, settings=anchors_mod.encoder_settings(s.anchor_codec, crf),
                anchor_version=s.anchor_version, metrics_version=s.metrics_version,
            )
            curve += [{
                "codec": r.codec, "crf": r.crf, "n_bytes": r.n_bytes, "kbps": r.kbps, "bpp": r.bpp,
                "psnr_rgb": r.psnr_rgb, "psnr_y": r.psnr_y, "ssim_y": r.ssim_y, "ms_ssim": r.ms_ssim,
                "encode_seconds": r.encode_seconds, "decode_seconds": r.decode_seconds,
            } for r in rows]
        anchors[s.anchor_codec] = sorted(curve, key=lambda p: (p["n_bytes"], p["crf"]))
        warnings = [w for w in (s.reason or "").split("; ") if w] if s.bd_rate is not None else []
        detail = {"metric": s.metric, "bd_rate_pct": s.bd_rate, "bd_psnr_db": s.bd_psnr, "warnings": warnings,
                  "overlap": s.overlap, "reliable": s.reliable, "min_overlap": s.min_overlap,
                  "raw_bd_rate_pct": s.raw_bd_rate}
        if s.bd_rate is None:
            detail["error"] = s.reason
        bd[s.anchor_codec] = detail
        bd_rate[s.anchor_codec] = s.bd_rate
    return result.replace(rate_points=points, determinism=determinism, anchors=anchors, bd=bd, bd_rate=bd_rate,
                          **versions)


__all__ = ["FINISHED", "FleetError", "Handle", "Status", "WaitTimeout", "cancel", "get", "read_candidate", "submit", "submit_many"]
