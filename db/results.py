"""Recording and reading measurements: an experiment's rate points, bitstreams,
measurements and scores (``record_result``, the one way an experiment succeeds
with numbers), reusing a stored result (``find_reusable_experiment``,
``reuse_result``), the probe, and the classic anchors' stored curves.

No function here commits. Writes that race between workers rely on a unique
constraint (bitstreams, measurements, anchor points) or on a conditional
UPDATE, never on a read followed by a write.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.experiments import (
    ExperimentNotFound,
    IllegalTransition,
    _expire,
    _now,
    _transition,
    get_experiment,
    transition,
)
from db.hashing import experiment_decoder_hash, settings_hash
from db.models import (
    PSNR_CAP_DB,
    AnchorResult,
    Artifact,
    Candidate,
    Clip,
    Experiment,
    ExperimentPoint,
    ExperimentStatus,
    Measurement,
    Probe,
    Score,
    Stage,
    candidate_parents,
)
from evaluation.results import RatePoint

S = ExperimentStatus


# --- recording results ------------------------------------------------------


class ResultMismatch(ValueError):
    """Results handed to ``record_result`` do not belong to the experiment."""


@dataclass(frozen=True)
class RatePointResult:
    """One encoded, decoded and scored rate point, ready to store.

    ``path``, ``n_bytes`` and ``sha256`` describe the bitstream file as re-read
    from disk; every number was computed from that file's decoded frames.
    ``peak_rss_bytes``, ``encode_fps``, ``decode_fps``, ``ms_ssim`` are None when
    not measured.
    """

    rate_index: int
    quality: float
    path: str
    n_bytes: int
    sha256: str
    n_frames: int
    bits: int
    kbps: float
    bpp: float
    psnr_rgb: float
    psnr_y: float
    psnr_rgb_pooled: float
    psnr_y_pooled: float
    ssim_y: float
    encode_seconds: float
    decode_seconds: float
    evaluator_version: str
    metrics_version: str
    clip_sha256: str
    ms_ssim: float | None = None
    ms_ssim_scales: int | None = None
    psnr_capped_frames: int = 0
    encode_fps: float | None = None
    decode_fps: float | None = None
    peak_rss_bytes: int | None = None
    frame_psnr_y: tuple[float, ...] | None = None
    frame_bytes: tuple[int, ...] | None = None
    psnr_y420: float | None = None
    psnr_u: float | None = None
    psnr_v: float | None = None
    psnr_yuv: float | None = None
    psnr_yuv_pooled: float | None = None
    verify_decode_seconds: float | None = None
    #: False when the numbers were copied from a stored measurement (the worker found
    #: this bitstream already decoded by this decoder and did not decode it again):
    #: they are then never stored as a new measurement.
    measured: bool = True


@dataclass(frozen=True)
class ScoreResult:
    """BD numbers against one anchor; None plus ``reason`` when not computable."""

    anchor_codec: str
    metric: str
    bd_rate: float | None
    bd_psnr: float | None
    anchor_version: str
    metrics_version: str
    overlap: float | None = None
    reason: str | None = None
    reliable: bool | None = None
    min_overlap: float | None = None
    raw_bd_rate: float | None = None


@dataclass(frozen=True)
class RecordOutcome:
    experiment_id: int
    status: ExperimentStatus
    measurement_ids: tuple[int, ...] = ()
    duplicate_of_id: int | None = None
    reason: str | None = None


_MEASUREMENT_FIELDS = tuple(
    f.name for f in fields(RatePointResult) if f.name not in ("path", "sha256", "measured", "frame_psnr_y", "frame_bytes")
)


#: Distinct curve points BD-rate needs (``evaluation.rd.MIN_POINTS``; of evaluation, db imports
#: only the leaf ``evaluation.results``).
BD_MIN_POINTS = 4


class _Retry(Exception):
    """A concurrent transaction stored one of our bitstreams or measurements first."""


def record_result(
    session: Session,
    experiment_id: int,
    points: Sequence[RatePointResult],
    scores: Sequence[ScoreResult] = (),
    *,
    now: datetime | None = None,
) -> RecordOutcome:
    """Store an experiment's rate points, measurements and scores, all or nothing.

    The experiment must be ``scoring`` and ``points`` must cover each of its rate
    points once. A bitstream is stored once (unique sha256); a measurement belongs
    to (bitstream, decoder) (:func:`decoder_hash`). Per rate point:

    - bytes already decoded by this decoder (on this clip, metrics version): the
      stored measurement is reused, and the point says so (``reused_from_id``);
    - bytes equal to an earlier rate point of this experiment: one curve point,
      linked to the same measurement (``same_as_rate_index``);
    - otherwise the numbers are stored as a new measurement (the bitstream row too,
      unless another experiment stored the same bytes first).

    Outcomes:

    - ``succeeded``: every rate point linked, the scores stored;
    - ``duplicate_output``: *every* rate point reused another experiment's
      measurement, so nothing new was measured; the points are stored (they say
      where each number comes from), the scores are not, and the experiment points
      at the one that measured its first rate point;
    - ``failed`` (stage ``verify``): rate points with byte-identical bitstreams
      leave fewer distinct curve points than BD-rate needs (:data:`BD_MIN_POINTS`):
      the encoder ignores the quality setting.

    Calling it again for an experiment already recorded returns the stored outcome.
    The caller commits.
    """
    now = _now(now)
    # FOR UPDATE (Postgres) serialises a redelivered task with the first delivery
    # of the same experiment; SQLite already holds its write lock (BEGIN IMMEDIATE).
    experiment = session.scalar(
        sa.select(Experiment)
        .where(Experiment.id == experiment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if experiment is None:
        raise ExperimentNotFound(experiment_id)
    if experiment.status in (S.SUCCEEDED, S.DUPLICATE_OUTPUT, S.FAILED) and _same_outputs(session, experiment, points):
        return _stored_outcome(session, experiment)
    if experiment.status is not S.SCORING:
        raise IllegalTransition(experiment_id, experiment.status, S.SUCCEEDED)
    _check_points(experiment, points)

    by_hash: dict[str, list[RatePointResult]] = {}
    for point in sorted(points, key=lambda p: p.rate_index):
        by_hash.setdefault(point.sha256, []).append(point)
    repeated = [group for group in by_hash.values() if len(group) > 1]
    if repeated and len(by_hash) < BD_MIN_POINTS:
        described = "; ".join(
            f"rate points {', '.join(str(p.rate_index) for p in group)} (qualities "
            f"{', '.join(f'{p.quality:g}' for p in group)}) produced byte-identical bitstreams "
            f"(sha256 {group[0].sha256[:12]}…)"
            for group in repeated
        )
        reason = (
            f"{described}: the encoder ignores the quality setting, and the {len(by_hash)} distinct points "
            f"left are fewer than the {BD_MIN_POINTS} BD-rate needs"
        )
        transition(session, experiment_id, S.FAILED, failure_stage=Stage.VERIFY, error=reason, now=now)
        return RecordOutcome(experiment_id, S.FAILED, reason=reason)

    # Why insert-and-catch instead of trusting a lookup: two workers can finish
    # experiments with the same output at the same moment. A SELECT before the
    # INSERT would see nothing in both transactions and both would store a
    # measurement. The unique constraints (artifacts.sha256; measurements on
    # artifact and decoder) are the only arbiters that see uncommitted work: on
    # Postgres the second INSERT waits on the first transaction's index entry,
    # then fails with a unique violation once it commits; on SQLite writers are
    # serialised by BEGIN IMMEDIATE. So everything of this result is written in a
    # SAVEPOINT; on a violation only that unit is rolled back and the whole is
    # tried again, and the new statements (READ COMMITTED) now see the committed
    # rows and reuse them. Bitstreams are handled in sha256 order so two results
    # sharing several hashes wait on each other in one order and cannot deadlock.
    for _ in range(5):
        savepoint = session.begin_nested()
        try:
            links = _store_points(session, experiment, by_hash, now)
            duplicate = all(link.reused_from_id is not None for link in links)
            if not duplicate:
                session.add_all(
                    Score(
                        experiment_id=experiment_id,
                        anchor_codec=sc.anchor_codec,
                        metric=sc.metric,
                        bd_rate=sc.bd_rate,
                        bd_psnr=sc.bd_psnr,
                        overlap=sc.overlap,
                        reliable=sc.reliable,
                        min_overlap=sc.min_overlap,
                        raw_bd_rate=sc.raw_bd_rate,
                        reason=sc.reason,
                        anchor_version=sc.anchor_version,
                        metrics_version=sc.metrics_version,
                        created_at=now,
                    )
                    for sc in scores
                )
            session.flush()
        except _Retry:
            savepoint.rollback()
            continue
        except BaseException:
            savepoint.rollback()
            raise
        savepoint.commit()
        break
    else:
        raise RuntimeError(f"experiment {experiment_id}: could not record its result after 5 tries")

    links.sort(key=lambda link: link.rate_index)
    ids = tuple(link.measurement_id for link in links)
    if duplicate:
        first = links[0]
        source = session.get(Measurement, first.measurement_id)
        reason = (
            f"every rate point's bitstream was already decoded by this decoder: rate point 0 "
            f"(sha256 {_sha_at(by_hash, 0)[:12]}…) by experiment {first.reused_from_id} "
            f"(rate point {source.rate_index})"
            + (f", and {len(links) - 1} more" if len(links) > 1 else "")
            + "; an identical output is not measured twice"
        )
        transition(session, experiment_id, S.DUPLICATE_OUTPUT, failure_stage=Stage.SCORE, error=reason,
                   duplicate_of_id=first.reused_from_id, now=now)
        return RecordOutcome(experiment_id, S.DUPLICATE_OUTPUT, measurement_ids=ids,
                             duplicate_of_id=first.reused_from_id, reason=reason)
    _transition(session, experiment_id, S.SUCCEEDED, now=now)
    return RecordOutcome(experiment_id, S.SUCCEEDED, measurement_ids=ids)


def _sha_at(by_hash: Mapping[str, Sequence[RatePointResult]], rate_index: int) -> str:
    return next(sha for sha, group in by_hash.items() if any(p.rate_index == rate_index for p in group))


def _insert(session: Session, row: Any) -> None:
    """Add and flush ``row``; a unique violation means a concurrent result stored it first."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        if "unique" in str(exc.orig).lower() or "duplicate key" in str(exc.orig).lower():
            raise _Retry() from exc
        raise


def _store_points(
    session: Session, experiment: Experiment, by_hash: Mapping[str, Sequence[RatePointResult]], now: datetime
) -> list[ExperimentPoint]:
    clip_sha = experiment.clip.sha256
    links: list[ExperimentPoint] = []
    for sha in sorted(by_hash):
        group = by_hash[sha]
        first = group[0]
        artifact = session.scalar(sa.select(Artifact).where(Artifact.sha256 == sha))
        if artifact is None:
            artifact = Artifact(experiment_id=experiment.id, kind="bitstream", rate_index=first.rate_index,
                                path=first.path, n_bytes=first.n_bytes, sha256=sha, created_at=now)
            _insert(session, artifact)
        elif artifact.n_bytes != first.n_bytes:
            raise ResultMismatch(f"bitstream {sha[:12]}… has {artifact.n_bytes} bytes stored, {first.n_bytes} here")
        dh = experiment_decoder_hash(experiment, first.quality)
        measurement = session.scalar(
            sa.select(Measurement).where(
                Measurement.artifact_id == artifact.id,
                Measurement.decoder_hash == dh,
                Measurement.clip_sha256 == clip_sha,
                Measurement.metrics_version == first.metrics_version,
            )
        )
        if measurement is None:
            if not first.measured:
                raise ResultMismatch(
                    f"rate point {first.rate_index} reuses a measurement of {sha[:12]}… that is not stored"
                )
            measurement = Measurement(
                artifact_id=artifact.id, decoder_hash=dh, experiment_id=experiment.id, created_at=now,
                frame_psnr_y=list(first.frame_psnr_y) if first.frame_psnr_y is not None else None,
                frame_bytes=list(first.frame_bytes) if first.frame_bytes is not None else None,
                **{f: getattr(first, f) for f in _MEASUREMENT_FIELDS},
            )
            _insert(session, measurement)
        reused_from = measurement.experiment_id if measurement.experiment_id != experiment.id else None
        for p in group:
            link = ExperimentPoint(
                experiment_id=experiment.id, rate_index=p.rate_index, quality=p.quality, artifact_id=artifact.id,
                measurement_id=measurement.id, reused_from_id=reused_from,
                same_as_rate_index=None if p is first else first.rate_index, path=p.path, created_at=now,
            )
            session.add(link)
            links.append(link)
    session.flush()
    return links


def _check_points(experiment: Experiment, points: Sequence[RatePointResult]) -> None:
    expected = list(range(len(experiment.rate_points)))
    got = sorted(p.rate_index for p in points)
    if got != expected:
        raise ResultMismatch(
            f"experiment {experiment.id} has rate points {expected}, results cover {got}: "
            "every rate point is measured once or the experiment fails"
        )
    for p in points:
        want = experiment.rate_points[p.rate_index]
        if not math.isclose(p.quality, want, rel_tol=0, abs_tol=1e-9):
            raise ResultMismatch(f"rate point {p.rate_index} has quality {want}, result says {p.quality}")
        if p.clip_sha256 != experiment.clip.sha256:
            raise ResultMismatch(
                f"rate point {p.rate_index} was measured on clip {p.clip_sha256[:12]}…, "
                f"experiment {experiment.id} is on clip {experiment.clip.sha256[:12]}…"
            )


def _same_outputs(session: Session, experiment: Experiment, points: Sequence[RatePointResult]) -> bool:
    """Whether ``points`` are the result already recorded for ``experiment`` (a redelivery)."""
    if experiment.status in (S.SUCCEEDED, S.DUPLICATE_OUTPUT):
        stored = set(
            session.scalars(
                sa.select(Artifact.sha256)
                .join(ExperimentPoint, ExperimentPoint.artifact_id == Artifact.id)
                .where(ExperimentPoint.experiment_id == experiment.id)
            )
        )
        if stored:
            return stored == {p.sha256 for p in points}
        # A duplicate recorded before points were kept stored none.
        return experiment.status is S.DUPLICATE_OUTPUT
    # A verify failure stored nothing: a redelivery finds it done.
    return experiment.failure_stage == Stage.VERIFY


def _stored_outcome(session: Session, experiment: Experiment) -> RecordOutcome:
    ids = session.scalars(
        sa.select(ExperimentPoint.measurement_id)
        .where(ExperimentPoint.experiment_id == experiment.id)
        .order_by(ExperimentPoint.rate_index)
    ).all()
    return RecordOutcome(
        experiment.id,
        experiment.status,
        measurement_ids=tuple(ids),
        duplicate_of_id=experiment.duplicate_of_id,
        reason=experiment.error,
    )


# --- reading results --------------------------------------------------------


class PointMeasurement:
    """A measurement as seen from one rate point of one experiment: the stored
    numbers, with that experiment's ``rate_index`` and ``quality``, and where the
    numbers come from (``reused_from_id``, ``same_as_rate_index``)."""

    __slots__ = ("_m", "artifact", "path", "quality", "rate_index", "reused_from_id", "same_as_rate_index")

    def __init__(self, point: ExperimentPoint, measurement: Measurement, artifact: Artifact) -> None:
        self._m = measurement
        self.rate_index = point.rate_index
        self.quality = point.quality
        self.reused_from_id = point.reused_from_id
        self.same_as_rate_index = point.same_as_rate_index
        self.path = point.path or artifact.path
        self.artifact = artifact

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)


def experiment_measurements(session: Session, experiment_id: int) -> list[PointMeasurement]:
    """The measurements behind an experiment's rate points, in rate order, following a
    whole-result reuse to its original; each says where its numbers come from."""
    experiment = get_experiment(session, experiment_id)
    source_id = experiment.reused_from_id or experiment_id
    rows = session.execute(
        sa.select(ExperimentPoint, Measurement, Artifact)
        .join(Measurement, Measurement.id == ExperimentPoint.measurement_id)
        .join(Artifact, Artifact.id == ExperimentPoint.artifact_id)
        .where(ExperimentPoint.experiment_id == source_id)
        .order_by(ExperimentPoint.rate_index)
    ).all()
    return [PointMeasurement(p, m, a) for p, m, a in rows]


#: Ids per ``IN (...)`` list: SQLite caps bound parameters per statement, and a
#: campaign can have more experiments than that.
IN_CHUNK = 900


def id_chunks(ids: Iterable[int]) -> list[list[int]]:
    """``ids``, distinct and sorted, in lists short enough for one ``IN (...)`` each."""
    ordered = sorted(set(ids))
    return [ordered[i : i + IN_CHUNK] for i in range(0, len(ordered), IN_CHUNK)]


def stored_points(
    session: Session, experiment_ids: Iterable[int]
) -> dict[int, list[tuple[RatePoint, PointMeasurement]]]:
    """The stored rate points of each experiment (its own rows: a whole-result reuse
    is the caller's to follow), in rate order: each as :meth:`RatePoint.from_measurement`
    builds it (what ``Handle.result()`` shows), with the :class:`PointMeasurement` it
    was built from (where its numbers come from, the measuring experiment, versions)."""
    out: dict[int, list[tuple[RatePoint, PointMeasurement]]] = {}
    for chunk in id_chunks(experiment_ids):
        for p, m, a, n_frames, width, height in session.execute(
            sa.select(ExperimentPoint, Measurement, Artifact, Clip.n_frames, Clip.width, Clip.height)
            .join(Measurement, Measurement.id == ExperimentPoint.measurement_id)
            .join(Artifact, Artifact.id == ExperimentPoint.artifact_id)
            .join(Experiment, Experiment.id == ExperimentPoint.experiment_id)
            .join(Clip, Clip.id == Experiment.clip_id)
            .where(ExperimentPoint.experiment_id.in_(chunk))
            .order_by(ExperimentPoint.experiment_id, ExperimentPoint.rate_index)
        ):
            pm = PointMeasurement(p, m, a)
            point = RatePoint.from_measurement(pm, a, raw_bytes=n_frames * width * height * 3)
            out.setdefault(p.experiment_id, []).append((point, pm))
    return out


def experiment_scores(session: Session, experiment_id: int) -> list[Score]:
    """The BD scores behind an experiment's result, following a reuse to its original."""
    experiment = get_experiment(session, experiment_id)
    source_id = experiment.reused_from_id or experiment_id
    return list(
        session.scalars(
            sa.select(Score).where(Score.experiment_id == source_id).order_by(Score.anchor_codec, Score.metric)
        )
    )


def find_measurement(
    session: Session, *, sha256: str, decoder_hash: str, clip_sha256: str, metrics_version: str
) -> Measurement | None:
    """The stored measurement of the bitstream ``sha256`` by this decoder, if any."""
    return session.scalar(
        sa.select(Measurement)
        .join(Artifact, Artifact.id == Measurement.artifact_id)
        .where(
            Artifact.sha256 == sha256,
            Measurement.decoder_hash == decoder_hash,
            Measurement.clip_sha256 == clip_sha256,
            Measurement.metrics_version == metrics_version,
        )
    )


# --- dedup before running ----------------------------------------------------


def find_reusable_experiment(
    session: Session,
    *,
    ast_hash: str,
    clip_sha256: str,
    config_hash: str,
    metrics_version: str | None = None,
) -> Experiment | None:
    """The finished experiment that measured the same normalised code on the same
    clip and config, if any: its result is reused instead of running anything.

    Only ``succeeded`` originals count (never a reuse of a reuse), oldest first.
    With ``metrics_version``, only one whose numbers all come from that version.
    """
    query = (
        sa.select(Experiment)
        .join(Candidate, Candidate.id == Experiment.candidate_id)
        .join(Clip, Clip.id == Experiment.clip_id)
        .where(
            Candidate.ast_hash == ast_hash,
            Clip.sha256 == clip_sha256,
            Experiment.config_hash == config_hash,
            Experiment.status == S.SUCCEEDED,
            Experiment.reused_from_id.is_(None),
        )
        .order_by(Experiment.finished_at, Experiment.id)
        .limit(1)
    )
    if metrics_version is not None:
        other_version = (
            sa.select(Measurement.id)
            .join(ExperimentPoint, ExperimentPoint.measurement_id == Measurement.id)
            .where(ExperimentPoint.experiment_id == Experiment.id, Measurement.metrics_version != metrics_version)
        )
        query = query.where(~other_version.exists())
    return session.scalar(query)


def reuse_result(session: Session, experiment_id: int, original_id: int, *, now: datetime | None = None) -> bool:
    """Finish a ``sanitizing`` experiment with the result of ``original_id``.

    The experiment becomes ``succeeded`` with ``reused_from_id`` set; no numbers are
    copied (they stay attached to the original's artifacts). True when this call
    made the move, False when it was already done.
    """
    original = session.execute(
        sa.select(Experiment.status, Experiment.reused_from_id).where(Experiment.id == original_id)
    ).one_or_none()
    if original is None:
        raise ExperimentNotFound(original_id)
    if original.status is not S.SUCCEEDED or original.reused_from_id is not None:
        raise ValueError(f"experiment {original_id} is not an original succeeded result; nothing to reuse")
    now = _now(now)
    result = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == S.SANITIZING)
        .values(
            status=S.SUCCEEDED, reused_from_id=original_id, finished_at=now, lease_expires_at=None,
            waiting_since=None, waiting_for=None,
        ),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount == 1:
        _expire(session, Experiment, experiment_id)
        return True
    current = session.execute(
        sa.select(Experiment.status, Experiment.reused_from_id).where(Experiment.id == experiment_id)
    ).one_or_none()
    if current is None:
        raise ExperimentNotFound(experiment_id)
    if current.status is S.SUCCEEDED and current.reused_from_id == original_id:
        return False
    raise IllegalTransition(experiment_id, current.status, S.SUCCEEDED)


# --- the probe ----------------------------------------------------------------


def record_probe(
    session: Session,
    experiment_id: int,
    *,
    holder: str,
    outcome: str,
    reason: str | None,
    quality: float,
    n_frames: int,
    seconds: float,
    saved_seconds: float = 0.0,
    payload_bytes: int | None = None,
    psnr_y: float | None = None,
    parent_experiment_id: int | None = None,
    parent_psnr_y: float | None = None,
    margin_db: float | None = None,
    now: datetime | None = None,
) -> bool:
    """Store the probe of an experiment that ``holder`` still holds (``encoding``);
    a later attempt's probe replaces an earlier one. False when not held (nothing stored)."""
    held = session.scalar(
        sa.select(Experiment.id).where(
            Experiment.id == experiment_id, Experiment.status == S.ENCODING, Experiment.worker_host == holder
        )
    )
    if held is None:
        return False
    values = dict(
        outcome=outcome, reason=reason[:4000] if reason else None, quality=float(quality), n_frames=n_frames,
        payload_bytes=payload_bytes, psnr_y=None if psnr_y is None else min(float(psnr_y), PSNR_CAP_DB),
        parent_experiment_id=parent_experiment_id,
        parent_psnr_y=None if parent_psnr_y is None else min(float(parent_psnr_y), PSNR_CAP_DB),
        margin_db=margin_db, seconds=max(0.0, float(seconds)), saved_seconds=max(0.0, float(saved_seconds)),
        created_at=_now(now),
    )
    existing = session.scalar(sa.select(Probe).where(Probe.experiment_id == experiment_id))
    if existing is None:
        session.add(Probe(experiment_id=experiment_id, **values))
    else:
        for key, value in values.items():
            setattr(existing, key, value)
    session.flush()
    return True


def parent_head_points(
    session: Session, candidate_id: int, *, clip_sha256: str, metrics_version: str, n_frames: int
) -> list[tuple[int, list[tuple[int, float]]]]:
    """For each parent of ``candidate_id`` measured on this clip (its latest succeeded
    experiment, through a reuse), its (payload bytes, mean PSNR-Y) of the first
    ``n_frames`` frames at each of its measured rate points: what a probe of the child
    is compared with (``evaluation.pipeline.compare_with_parent``). Parents without
    stored per-frame numbers (measured before they were kept), or measured with
    another metrics version, are left out."""
    parent_ids = session.scalars(
        sa.select(candidate_parents.c.parent_id).where(candidate_parents.c.candidate_id == candidate_id)
    ).all()
    out = []
    for parent_id in sorted(parent_ids):
        row = session.execute(
            sa.select(Experiment.id, Experiment.reused_from_id)
            .join(Clip, Clip.id == Experiment.clip_id)
            .where(Experiment.candidate_id == parent_id, Clip.sha256 == clip_sha256, Experiment.status == S.SUCCEEDED)
            .order_by(Experiment.finished_at.desc(), Experiment.id.desc())
            .limit(1)
        ).one_or_none()
        if row is None:
            continue
        source = row.reused_from_id or row.id
        measurements = session.execute(
            sa.select(Measurement.id, Measurement.frame_bytes, Measurement.frame_psnr_y, Measurement.metrics_version)
            .join(ExperimentPoint, ExperimentPoint.measurement_id == Measurement.id)
            .where(ExperimentPoint.experiment_id == source)
        ).all()
        points: dict[int, tuple[int, float]] = {}
        for mid, frame_bytes, frame_psnr, version in measurements:
            if (version != metrics_version or not frame_bytes or not frame_psnr
                    or len(frame_bytes) < n_frames or len(frame_psnr) < n_frames):
                points = {}
                break
            points[mid] = (int(sum(frame_bytes[:n_frames])), float(sum(frame_psnr[:n_frames]) / n_frames))
        if points:
            out.append((source, sorted(points.values())))
    return out


# --- classic anchors --------------------------------------------------------


def record_anchor_result(
    session: Session,
    *,
    clip_sha256: str,
    codec: str,
    crf: int,
    settings: Mapping[str, Any],
    n_bytes: int,
    kbps: float,
    bpp: float,
    psnr_rgb: float,
    psnr_y: float,
    ssim_y: float,
    anchor_version: str,
    metrics_version: str,
    ms_ssim: float | None = None,
    encode_seconds: float | None = None,
    decode_seconds: float | None = None,
    psnr_y420: float | None = None,
    psnr_u: float | None = None,
    psnr_v: float | None = None,
    psnr_yuv: float | None = None,
) -> AnchorResult:
    """Store one anchor point; if that (clip, codec, crf, settings) exists, return the stored row."""
    key_hash = settings_hash(settings, anchor_version=anchor_version, metrics_version=metrics_version)
    key = (
        AnchorResult.clip_sha256 == clip_sha256,
        AnchorResult.codec == codec,
        AnchorResult.crf == crf,
        AnchorResult.settings_hash == key_hash,
    )
    existing = session.scalar(sa.select(AnchorResult).where(*key))
    if existing is not None:
        return existing
    row = AnchorResult(
        clip_sha256=clip_sha256,
        codec=codec,
        crf=crf,
        settings=dict(settings),
        settings_hash=key_hash,
        n_bytes=n_bytes,
        kbps=kbps,
        bpp=bpp,
        psnr_rgb=psnr_rgb,
        psnr_y=psnr_y,
        ssim_y=ssim_y,
        ms_ssim=ms_ssim,
        psnr_y420=psnr_y420,
        psnr_u=psnr_u,
        psnr_v=psnr_v,
        psnr_yuv=psnr_yuv,
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
        anchor_version=anchor_version,
        metrics_version=metrics_version,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = session.scalar(sa.select(AnchorResult).where(*key))
        if existing is None:
            raise
        return existing
    return row


def anchor_results(
    session: Session,
    clip_sha256: str,
    codec: str,
    *,
    settings: Mapping[str, Any],
    anchor_version: str,
    metrics_version: str,
) -> list[AnchorResult]:
    """The stored curve of one anchor configuration on one clip, by CRF."""
    key_hash = settings_hash(settings, anchor_version=anchor_version, metrics_version=metrics_version)
    return list(
        session.scalars(
            sa.select(AnchorResult)
            .where(
                AnchorResult.clip_sha256 == clip_sha256,
                AnchorResult.codec == codec,
                AnchorResult.settings_hash == key_hash,
            )
            .order_by(AnchorResult.crf)
        )
    )


__all__ = [
    "BD_MIN_POINTS",
    "PointMeasurement",
    "RatePointResult",
    "RecordOutcome",
    "ResultMismatch",
    "ScoreResult",
    "anchor_results",
    "experiment_measurements",
    "experiment_scores",
    "find_measurement",
    "find_reusable_experiment",
    "parent_head_points",
    "record_anchor_result",
    "record_probe",
    "record_result",
    "reuse_result",
    "id_chunks",
    "stored_points",
]
