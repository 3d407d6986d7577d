"""The results database: every experiment, artifact and number.

Typed SQLAlchemy 2 models. The schema is built so that the failures of the
systems before this one cannot be stored:

- ``artifacts.sha256`` is unique across all artifacts: a bitstream is stored once,
  whoever produced it (``db.results.record_result``).
- A measurement belongs to the pair (bitstream, decoder): ``measurements.artifact_id``
  is a NOT NULL foreign key (no number without the bitstream it was computed from),
  and (artifact_id, decoder_hash, clip_sha256, metrics_version) is unique, so the
  same file is never measured twice by the same decoder. ``decoder_hash`` covers the
  candidate's normalised-AST hash and the config its decoder was handed.
- ``experiment_points`` says, per rate point of an experiment, which bitstream it
  produced and which measurement gives its numbers: measured here, reused from
  another experiment (``reused_from_id``), or the same bytes as an earlier rate
  point of the same experiment (``same_as_rate_index``: one curve point). An
  experiment whose every rate point is a reuse is ``duplicate_output``.
- ``probes`` holds the cheap first stage of a measurement (2 frames, one quality):
  its numbers, its verdict and the GPU-seconds it saved.
- Quality values are checked to be finite and in range (PSNR capped at 100 dB,
  never inf or NaN); "not measured" is NULL, never 0.
- Status is a closed set with a CHECK constraint; the legal moves between states
  are :data:`TRANSITIONS`, applied by ``db.experiments.transition``.

Constraint and index names come from :data:`NAMING_CONVENTION`, so migrations
refer to stable names on Postgres and SQLite alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.vocabulary import (  # the names the database stores, in a module that imports nothing
    FAILURES, RUNNING, SCHEMA_REVISION, TERMINAL, ExperimentStatus, S, Stage,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SHA256_LENGTH = 64
PSNR_CAP_DB = 100.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    Postgres stores ``timestamptz``; SQLite has no timezone type, so the value is
    stored as naive UTC and handed back aware. Naive datetimes are refused on the
    way in: a local time silently taken for UTC would break lease deadlines.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON(), list[Any]: sa.JSON()}


# --- the experiment state machine (DESIGN section 4) ------------------------


#: target -> the statuses it may be reached from (by ``db.experiments.transition``).
#: Two moves are deliberately absent: running -> queued is ``db.experiments.requeue``
#: (it spends an attempt and needs an expired lease), and sanitizing -> succeeded
#: is ``db.results.reuse_result`` (it needs the experiment whose result is reused).
TRANSITIONS: dict[ExperimentStatus, frozenset[ExperimentStatus]] = {
    S.GENERATING: frozenset({S.QUEUED}),
    S.SANITIZING: frozenset({S.QUEUED, S.GENERATING}),
    S.ENCODING: frozenset({S.SANITIZING}),
    S.SCORING: frozenset({S.ENCODING}),
    S.SUCCEEDED: frozenset({S.SCORING}),
    S.FAILED: frozenset({S.QUEUED} | RUNNING),
    S.REJECTED: frozenset({S.GENERATING, S.SANITIZING}),
    S.TIMED_OUT: frozenset({S.QUEUED} | RUNNING),
    S.CANCELLED: frozenset({S.QUEUED} | RUNNING),
    S.DUPLICATE_OUTPUT: frozenset({S.ENCODING, S.SCORING}),
}

#: The timestamp column stamped when an experiment enters a status.
STAGE_TIMESTAMPS: dict[ExperimentStatus, str] = {
    S.GENERATING: "generate_started_at",
    S.SANITIZING: "sanitize_started_at",
    S.ENCODING: "encode_started_at",
    S.SCORING: "score_started_at",
    **{status: "finished_at" for status in TERMINAL},
}


def _in(column: str, values: Any) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in sorted(values))})"


def _finite(column: str, low: float, high: float) -> str:
    # On Postgres NaN sorts above every number and 'Infinity' above every finite
    # one, so a closed range also rejects both; SQLite stores NaN as NULL.
    return f"{column} >= {low} AND {column} <= {high}"


def _optional(column: str, condition: str) -> str:
    return f"({column} IS NULL OR ({condition}))"


def _sha256_check(column: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"length({column}) = {SHA256_LENGTH}", name=f"{column}_is_sha256")


# --- campaigns, clips, candidates -------------------------------------------


class Campaign(Base):
    """A named series of experiments (one research question, one prompt lineage)."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    description: Mapped[str | None] = mapped_column(sa.Text)
    #: Secret seed of the campaign's synthetic clips (drawn with ``secrets`` when the
    #: campaign starts, unless the user named one), so that a resumed campaign measures
    #: the same frames. Trusted side only: never in a prompt, a config or a sandbox.
    clip_seed: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClipSeed(Base):
    """A secret seed for synthetic clips outside any campaign, one per ``scope``
    (``"default"``: submissions without a campaign), drawn once per database."""

    __tablename__ = "clip_seeds"

    scope: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Clip(Base):
    """A source clip, identified by the hash of its decoded frames."""

    __tablename__ = "clips"
    __table_args__ = (
        _sha256_check("sha256"),
        sa.CheckConstraint("width > 0 AND height > 0 AND n_frames > 0", name="positive_size"),
        sa.CheckConstraint("fps > 0", name="positive_fps"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: sha256 of the decoded RGB frames (``evaluation.clip.Clip.sha256``).
    sha256: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH), unique=True)
    source: Mapped[str] = mapped_column(sa.Text)
    width: Mapped[int]
    height: Mapped[int]
    n_frames: Mapped[int]
    fps: Mapped[float] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


candidate_parents = sa.Table(
    "candidate_parents",
    Base.metadata,
    sa.Column("candidate_id", sa.ForeignKey("candidates.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("parent_id", sa.ForeignKey("candidates.id", ondelete="CASCADE"), primary_key=True, index=True),
    sa.CheckConstraint("candidate_id <> parent_id", name="not_own_parent"),
)


class Candidate(Base):
    """One piece of candidate codec code and where it came from.

    A generated candidate is stored in two steps: ``generate`` writes the prompt,
    the raw reply, the model and token counts; ``sanitize`` writes the extracted
    code, its normalised-AST hash and the verdict. User-supplied code arrives with
    ``code`` set and no reply.
    """

    __tablename__ = "candidates"
    __table_args__ = (
        _sha256_check("ast_hash"),
        sa.CheckConstraint(_in("sanitizer_verdict", ("accepted", "rejected")), name="sanitizer_verdict"),
        sa.CheckConstraint(
            "sanitizer_verdict IS NULL OR sanitizer_verdict = 'accepted' OR sanitizer_reason IS NOT NULL",
            name="rejection_has_reason",
        ),
        sa.CheckConstraint(
            "sanitizer_verdict IS NULL OR sanitizer_verdict = 'rejected' OR "
            "(code IS NOT NULL AND ast_hash IS NOT NULL)",
            name="accepted_has_code",
        ),
        sa.CheckConstraint(
            _optional("prompt_tokens", "prompt_tokens >= 0")
            + " AND "
            + _optional("completion_tokens", "completion_tokens >= 0"),
            name="token_counts",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(sa.ForeignKey("campaigns.id"), index=True)
    code: Mapped[str | None] = mapped_column(sa.Text)
    #: sha256 of the normalised AST: equal for code that differs only in layout/comments.
    ast_hash: Mapped[str | None] = mapped_column(sa.String(SHA256_LENGTH), index=True)
    #: who wrote it: "user", "reference", "openai", "anthropic", "evolution", ...
    generator: Mapped[str] = mapped_column(sa.String(64))
    model: Mapped[str | None] = mapped_column(sa.String(200))
    prompt: Mapped[str | None] = mapped_column(sa.Text)
    raw_reply: Mapped[str | None] = mapped_column(sa.Text)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    #: What the generator's reply cost in USD, from its token counts and the configured
    #: prices; NULL when unknown (no prices configured, or no LLM involved).
    cost_usd: Mapped[float | None] = mapped_column(sa.Float)
    #: How the code came about: "rewrite", "diff", "mutation", "crossover", "seed", "user".
    mode: Mapped[str | None] = mapped_column(sa.String(16))
    #: NULL until sanitized; then "accepted" or "rejected" (with the reason).
    sanitizer_verdict: Mapped[str | None] = mapped_column(sa.String(16))
    sanitizer_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    parents: Mapped[list[Candidate]] = relationship(
        secondary=candidate_parents,
        primaryjoin=lambda: Candidate.id == candidate_parents.c.candidate_id,
        secondaryjoin=lambda: Candidate.id == candidate_parents.c.parent_id,
        lazy="selectin",
    )


# --- experiments ------------------------------------------------------------


class Experiment(Base):
    """One candidate measured on one clip with one configuration."""

    __tablename__ = "experiments"
    __table_args__ = (
        sa.CheckConstraint(_in("status", ExperimentStatus), name="status"),
        sa.CheckConstraint(_optional("failure_stage", _in("failure_stage", Stage)), name="failure_stage"),
        sa.CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        _sha256_check("config_hash"),
        # A failure always says why: the next prompt shows this text.
        sa.CheckConstraint(
            "status NOT IN ('failed', 'rejected', 'timed_out', 'duplicate_output') OR error IS NOT NULL",
            name="failure_has_error",
        ),
        sa.CheckConstraint(
            "(status = 'duplicate_output') = (duplicate_of_id IS NOT NULL)", name="duplicate_has_original"
        ),
        sa.CheckConstraint("reused_from_id IS NULL OR status = 'succeeded'", name="reuse_only_succeeded"),
        sa.CheckConstraint(
            "duplicate_of_id IS NULL OR duplicate_of_id <> id", name="not_duplicate_of_itself"
        ),
        # The reaper's query: running experiments whose lease ran out.
        sa.Index("ix_experiments_status_lease_expires_at", "status", "lease_expires_at"),
        # The reaper's sweep for lost hand-off messages: waiting the longest.
        sa.Index("ix_experiments_waiting_since", "waiting_since"),
        # A holder is a running worker; a waiting experiment has none and no lease.
        sa.CheckConstraint(
            "waiting_since IS NULL OR (lease_expires_at IS NULL AND waiting_for IS NOT NULL)",
            name="waiting_has_no_lease",
        ),
        # Prompts: recent failures.
        sa.Index("ix_experiments_status_finished_at", "status", "finished_at"),
        # Dedup lookup and per-clip leaderboards.
        sa.Index("ix_experiments_clip_id_config_hash", "clip_id", "config_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(sa.ForeignKey("campaigns.id"), index=True)
    #: NULL while the candidate is still being generated.
    candidate_id: Mapped[int | None] = mapped_column(sa.ForeignKey("candidates.id"), index=True)
    clip_id: Mapped[int] = mapped_column(sa.ForeignKey("clips.id"))
    #: The system config handed to the candidate (quality excluded: see rate_points).
    config: Mapped[dict[str, Any]]
    #: sha256 of the canonical JSON of config and rate points (``db.hashing.config_hash``).
    config_hash: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH))
    #: Qualities in [0, 1], one encode per entry, in order (rate_index = position).
    rate_points: Mapped[list[Any]]
    #: Classic codecs to compute BD-rate against, e.g. ["x264", "x265"].
    anchors: Mapped[list[Any]]

    status: Mapped[ExperimentStatus] = mapped_column(
        sa.Enum(
            ExperimentStatus,
            native_enum=False,
            create_constraint=False,  # the explicit CHECK above carries a stable name
            length=32,
            values_callable=lambda e: [m.value for m in e],
            validate_strings=True,
        ),
        default=ExperimentStatus.QUEUED,
    )
    failure_stage: Mapped[str | None] = mapped_column(sa.String(32))
    error: Mapped[str | None] = mapped_column(sa.Text)
    #: Re-queues after a lost worker so far; the experiment is on attempt attempts + 1.
    attempts: Mapped[int] = mapped_column(default=0)
    duplicate_of_id: Mapped[int | None] = mapped_column(sa.ForeignKey("experiments.id"), index=True)
    reused_from_id: Mapped[int | None] = mapped_column(sa.ForeignKey("experiments.id"), index=True)

    worker_host: Mapped[str | None] = mapped_column(sa.String(255))
    device: Mapped[str | None] = mapped_column(sa.String(64))
    #: What isolated the candidate while it was measured (``CandidateRunner.isolation``).
    isolation: Mapped[str | None] = mapped_column(sa.String(200))
    lease_expires_at: Mapped[datetime | None]
    #: Waiting is not running. Set while the message of the experiment's next step
    #: (``waiting_for``: generate, sanitize, encode_decode or score) sits in a broker
    #: queue and no worker holds the experiment: no lease runs meanwhile, so a backlog
    #: of any length never times it out. Cleared when a worker claims it.
    waiting_since: Mapped[datetime | None]
    waiting_for: Mapped[str | None] = mapped_column(sa.String(32))

    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    generate_started_at: Mapped[datetime | None]
    sanitize_started_at: Mapped[datetime | None]
    encode_started_at: Mapped[datetime | None]
    score_started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    candidate: Mapped[Candidate | None] = relationship()
    clip: Mapped[Clip] = relationship()
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="experiment", order_by="Artifact.rate_index"
    )
    scores: Mapped[list[Score]] = relationship(back_populates="experiment")


class Artifact(Base):
    """A bitstream, stored once (unique sha256), with the experiment and rate point
    that produced it first; later producers of the same bytes point at it through
    :class:`ExperimentPoint`."""

    __tablename__ = "artifacts"
    __table_args__ = (
        _sha256_check("sha256"),
        sa.CheckConstraint(_in("kind", ("bitstream",)), name="kind"),
        sa.CheckConstraint("n_bytes > 0", name="n_bytes_positive"),
        sa.CheckConstraint("rate_index >= 0", name="rate_index_non_negative"),
        sa.UniqueConstraint("experiment_id", "kind", "rate_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(16), default="bitstream")
    rate_index: Mapped[int]
    path: Mapped[str] = mapped_column(sa.Text, unique=True)
    n_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    #: The uniqueness that catches "every experiment measured one cached file".
    sha256: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="artifacts")
    measurements: Mapped[list[Measurement]] = relationship(back_populates="artifact")


_PSNR_COLUMNS = ("psnr_rgb", "psnr_y", "psnr_rgb_pooled", "psnr_y_pooled")


class Measurement(Base):
    """The numbers of one bitstream decoded by one decoder (on one clip, with one
    metrics version): computed once, then reused by every rate point, of any
    experiment, that produced the same bytes for the same decoder."""

    __tablename__ = "measurements"
    __table_args__ = (
        # The same file is never measured twice by the same decoder.
        sa.UniqueConstraint("artifact_id", "decoder_hash", "clip_sha256", "metrics_version"),
        _sha256_check("decoder_hash"),
        sa.CheckConstraint("quality >= 0 AND quality <= 1", name="quality_range"),
        sa.CheckConstraint("n_bytes > 0 AND bits = 8 * n_bytes", name="bits_are_bytes"),
        sa.CheckConstraint(_finite("kbps", 0, 1e12) + " AND kbps > 0", name="kbps_finite"),
        sa.CheckConstraint(_finite("bpp", 0, 1e6) + " AND bpp > 0", name="bpp_finite"),
        *(
            sa.CheckConstraint(_finite(c, 0, PSNR_CAP_DB), name=f"{c}_range")
            for c in _PSNR_COLUMNS
        ),
        sa.CheckConstraint(_finite("ssim_y", -1, 1), name="ssim_y_range"),
        sa.CheckConstraint(_optional("ms_ssim", _finite("ms_ssim", -1, 1)), name="ms_ssim_range"),
        sa.CheckConstraint(
            _optional("ms_ssim_scales", "ms_ssim_scales BETWEEN 1 AND 5"), name="ms_ssim_scales_range"
        ),
        sa.CheckConstraint("psnr_capped_frames >= 0", name="psnr_capped_frames_non_negative"),
        sa.CheckConstraint(
            _finite("encode_seconds", 0, 1e9) + " AND " + _finite("decode_seconds", 0, 1e9),
            name="seconds_finite",
        ),
        sa.CheckConstraint(
            _optional("encode_fps", _finite("encode_fps", 0, 1e12))
            + " AND "
            + _optional("decode_fps", _finite("decode_fps", 0, 1e12)),
            name="fps_finite",
        ),
        sa.CheckConstraint(_optional("peak_rss_bytes", "peak_rss_bytes > 0"), name="peak_rss_positive"),
        _sha256_check("clip_sha256"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: NOT NULL: no number without its artifact.
    artifact_id: Mapped[int] = mapped_column(sa.ForeignKey("artifacts.id", ondelete="CASCADE"))
    #: Who decoded it: sha256 of the candidate's normalised-AST hash and the config its
    #: decoder was handed (``db.hashing.decoder_hash``).
    decoder_hash: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH))
    #: The experiment whose worker decoded and measured it.
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    #: The rate point and quality of that experiment it was measured for.
    rate_index: Mapped[int]
    quality: Mapped[float] = mapped_column(sa.Float)
    n_frames: Mapped[int]
    n_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    bits: Mapped[int] = mapped_column(sa.BigInteger)
    kbps: Mapped[float] = mapped_column(sa.Float)
    bpp: Mapped[float] = mapped_column(sa.Float)
    psnr_rgb: Mapped[float] = mapped_column(sa.Float)
    psnr_y: Mapped[float] = mapped_column(sa.Float)
    psnr_rgb_pooled: Mapped[float] = mapped_column(sa.Float)
    psnr_y_pooled: Mapped[float] = mapped_column(sa.Float)
    psnr_capped_frames: Mapped[int] = mapped_column(default=0)
    #: PSNR on the YUV 4:2:0 planes (the anchors' BT.709 conversion) and
    #: PSNR-YUV = (6 Y + U + V) / 8; NULL when not computed (odd frame size).
    psnr_y420: Mapped[float | None] = mapped_column(sa.Float)
    psnr_u: Mapped[float | None] = mapped_column(sa.Float)
    psnr_v: Mapped[float | None] = mapped_column(sa.Float)
    psnr_yuv: Mapped[float | None] = mapped_column(sa.Float)
    psnr_yuv_pooled: Mapped[float | None] = mapped_column(sa.Float)
    #: Seconds spent decoding this bitstream a second time in a fresh sandbox (the
    #: determinism check, frames bit-identical); NULL when this point was not re-decoded.
    verify_decode_seconds: Mapped[float | None] = mapped_column(sa.Float)
    ssim_y: Mapped[float] = mapped_column(sa.Float)
    #: NULL when MS-SSIM was not computed; scales say how many were used.
    ms_ssim: Mapped[float | None] = mapped_column(sa.Float)
    ms_ssim_scales: Mapped[int | None]
    encode_seconds: Mapped[float] = mapped_column(sa.Float)
    decode_seconds: Mapped[float] = mapped_column(sa.Float)
    encode_fps: Mapped[float | None] = mapped_column(sa.Float)
    decode_fps: Mapped[float | None] = mapped_column(sa.Float)
    #: NULL means "not measured", never 0.
    peak_rss_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    evaluator_version: Mapped[str] = mapped_column(sa.String(64))
    metrics_version: Mapped[str] = mapped_column(sa.String(64))
    clip_sha256: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH))
    #: Per frame, in order: PSNR-Y and payload bytes (what the probe compares a child
    #: with, frame for frame); NULL for rows measured before they were kept.
    frame_psnr_y: Mapped[list[Any] | None]
    frame_bytes: Mapped[list[Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    artifact: Mapped[Artifact] = relationship(back_populates="measurements")


class ExperimentPoint(Base):
    """One rate point of one experiment: the bitstream it produced and the
    measurement that gives its numbers, and whether that was measured here."""

    __tablename__ = "experiment_points"
    __table_args__ = (
        sa.UniqueConstraint("experiment_id", "rate_index"),
        sa.CheckConstraint("rate_index >= 0", name="rate_index_non_negative"),
        sa.CheckConstraint("quality >= 0 AND quality <= 1", name="quality_range"),
        sa.CheckConstraint(
            "reused_from_id IS NULL OR reused_from_id <> experiment_id", name="not_reused_from_itself"
        ),
        sa.CheckConstraint(
            "same_as_rate_index IS NULL OR (same_as_rate_index >= 0 AND same_as_rate_index < rate_index)",
            name="same_as_an_earlier_point",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"))
    rate_index: Mapped[int]
    quality: Mapped[float] = mapped_column(sa.Float)
    artifact_id: Mapped[int] = mapped_column(sa.ForeignKey("artifacts.id"), index=True)
    measurement_id: Mapped[int] = mapped_column(sa.ForeignKey("measurements.id"), index=True)
    #: The experiment that measured these bytes with this decoder first (NULL: measured here).
    reused_from_id: Mapped[int | None] = mapped_column(sa.ForeignKey("experiments.id"))
    #: The earlier rate point of this experiment with byte-identical output (one curve point).
    same_as_rate_index: Mapped[int | None]
    #: Where this experiment wrote its copy of the bytes (the artifact keeps the first path).
    path: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    measurement: Mapped[Measurement] = relationship()
    artifact: Mapped[Artifact] = relationship()


class Probe(Base):
    """The cheap first stage of an experiment's measurement: the first frames of its
    clip at one quality. ``outcome`` is ``passed`` (the full measurement follows) or
    why it stopped: ``crashed``, ``wrong_output``, ``worse_than_parent``."""

    __tablename__ = "probes"
    __table_args__ = (
        sa.CheckConstraint(_in("outcome", ("passed", "crashed", "wrong_output", "worse_than_parent")),
                           name="outcome"),
        sa.CheckConstraint("outcome = 'passed' OR reason IS NOT NULL", name="stop_has_reason"),
        sa.CheckConstraint("quality >= 0 AND quality <= 1", name="quality_range"),
        sa.CheckConstraint("n_frames > 0", name="n_frames_positive"),
        sa.CheckConstraint(_optional("psnr_y", _finite("psnr_y", 0, PSNR_CAP_DB)), name="psnr_y_range"),
        sa.CheckConstraint(_optional("parent_psnr_y", _finite("parent_psnr_y", 0, PSNR_CAP_DB)),
                           name="parent_psnr_y_range"),
        sa.CheckConstraint(_finite("seconds", 0, 1e9) + " AND " + _finite("saved_seconds", 0, 1e9),
                           name="seconds_finite"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"), unique=True)
    outcome: Mapped[str] = mapped_column(sa.String(32))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    quality: Mapped[float] = mapped_column(sa.Float)
    n_frames: Mapped[int]
    #: Payload bytes of the probed frames (NULL when it crashed before any).
    payload_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    psnr_y: Mapped[float | None] = mapped_column(sa.Float)
    #: The parent compared with, and its PSNR-Y on the same frames at the probe's rate.
    parent_experiment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("experiments.id"))
    parent_psnr_y: Mapped[float | None] = mapped_column(sa.Float)
    margin_db: Mapped[float | None] = mapped_column(sa.Float)
    #: Encode + decode wall seconds the probe took.
    seconds: Mapped[float] = mapped_column(sa.Float)
    #: Estimated seconds of the full measurement it spared (0 when it passed).
    saved_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnchorResult(Base):
    """One classic-codec point (codec, CRF) on one clip with one set of settings."""

    __tablename__ = "anchor_results"
    __table_args__ = (
        sa.UniqueConstraint("clip_sha256", "codec", "crf", "settings_hash"),
        _sha256_check("clip_sha256"),
        _sha256_check("settings_hash"),
        sa.CheckConstraint("n_bytes > 0", name="n_bytes_positive"),
        sa.CheckConstraint(_finite("kbps", 0, 1e12) + " AND kbps > 0", name="kbps_finite"),
        sa.CheckConstraint(_finite("bpp", 0, 1e6) + " AND bpp > 0", name="bpp_finite"),
        sa.CheckConstraint(_finite("psnr_rgb", 0, PSNR_CAP_DB), name="psnr_rgb_range"),
        sa.CheckConstraint(_finite("psnr_y", 0, PSNR_CAP_DB), name="psnr_y_range"),
        sa.CheckConstraint(_finite("ssim_y", -1, 1), name="ssim_y_range"),
        sa.CheckConstraint(_optional("ms_ssim", _finite("ms_ssim", -1, 1)), name="ms_ssim_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clip_sha256: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH))
    codec: Mapped[str] = mapped_column(sa.String(32))
    crf: Mapped[int]
    #: Everything besides the CRF that shapes the output (preset, tune, pixel format, ...).
    settings: Mapped[dict[str, Any]]
    settings_hash: Mapped[str] = mapped_column(sa.String(SHA256_LENGTH))
    n_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    kbps: Mapped[float] = mapped_column(sa.Float)
    bpp: Mapped[float] = mapped_column(sa.Float)
    psnr_rgb: Mapped[float] = mapped_column(sa.Float)
    psnr_y: Mapped[float] = mapped_column(sa.Float)
    ssim_y: Mapped[float] = mapped_column(sa.Float)
    ms_ssim: Mapped[float | None] = mapped_column(sa.Float)
    #: On the decoder's own 4:2:0 planes against the encoder's input planes.
    psnr_y420: Mapped[float | None] = mapped_column(sa.Float)
    psnr_u: Mapped[float | None] = mapped_column(sa.Float)
    psnr_v: Mapped[float | None] = mapped_column(sa.Float)
    psnr_yuv: Mapped[float | None] = mapped_column(sa.Float)
    encode_seconds: Mapped[float | None] = mapped_column(sa.Float)
    decode_seconds: Mapped[float | None] = mapped_column(sa.Float)
    anchor_version: Mapped[str] = mapped_column(sa.String(64))
    metrics_version: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Score(Base):
    """BD-rate and BD-PSNR of one experiment against one anchor on one metric.

    When the numbers cannot be computed (too few points, no overlap) they are
    NULL and ``reason`` says why; a score row never carries a made-up number.
    """

    __tablename__ = "scores"
    __table_args__ = (
        sa.UniqueConstraint("experiment_id", "anchor_codec", "metric"),
        sa.CheckConstraint("bd_rate IS NOT NULL OR reason IS NOT NULL", name="missing_bd_rate_has_reason"),
        sa.CheckConstraint(_optional("bd_rate", "bd_rate > -100 AND bd_rate < 1e9"), name="bd_rate_finite"),
        sa.CheckConstraint(_optional("bd_psnr", _finite("bd_psnr", -1000, 1000)), name="bd_psnr_finite"),
        sa.CheckConstraint(_optional("overlap", _finite("overlap", 0, 1)), name="overlap_range"),
        sa.CheckConstraint(_optional("raw_bd_rate", "raw_bd_rate > -100 AND raw_bd_rate < 1e9"), name="raw_bd_rate_finite"),
        # The leaderboard walks this in order (keyset on bd_rate, experiment_id).
        sa.Index("ix_scores_leaderboard", "anchor_codec", "metric", "bd_rate", "experiment_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"))
    anchor_codec: Mapped[str] = mapped_column(sa.String(32))
    #: The quality metric of the RD curves, e.g. "psnr_y" or "psnr_rgb".
    metric: Mapped[str] = mapped_column(sa.String(32))
    #: Percent rate change at equal quality; negative is better than the anchor.
    bd_rate: Mapped[float | None] = mapped_column(sa.Float)
    #: dB quality change at equal rate; positive is better than the anchor.
    bd_psnr: Mapped[float | None] = mapped_column(sa.Float)
    #: Fraction of the quality range the two curves share.
    overlap: Mapped[float | None] = mapped_column(sa.Float)
    #: False when ``overlap`` was below ``min_overlap``: ``bd_rate``/``bd_psnr`` are then
    #: NULL (never fitness) and ``raw_bd_rate`` keeps the figure over that sliver.
    reliable: Mapped[bool | None] = mapped_column(sa.Boolean)
    min_overlap: Mapped[float | None] = mapped_column(sa.Float)
    raw_bd_rate: Mapped[float | None] = mapped_column(sa.Float)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    anchor_version: Mapped[str] = mapped_column(sa.String(64))
    metrics_version: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="scores")


class InternalError(Base):
    """One unexpected exception in a step: a bug of codecfleet, never a candidate's fault.

    Counted here (``codecfleet status`` lists them); the experiment itself is
    re-queued within its attempt budget instead of being failed for it.
    """

    __tablename__ = "internal_errors"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("experiments.id"), index=True)
    task: Mapped[str] = mapped_column(sa.String(128))
    stage: Mapped[str] = mapped_column(sa.String(32))
    worker_host: Mapped[str | None] = mapped_column(sa.String(255))
    #: ``"<ExceptionType>: <message>"``, capped.
    error: Mapped[str] = mapped_column(sa.Text)
    traceback: Mapped[str | None] = mapped_column(sa.Text)
    #: What the experiment became: re-queued, failed (budget spent) or left alone (held elsewhere).
    outcome: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


__all__ = [
    "FAILURES",
    "NAMING_CONVENTION",
    "RUNNING",
    "SCHEMA_REVISION",
    "STAGE_TIMESTAMPS",
    "TERMINAL",
    "TRANSITIONS",
    "AnchorResult",
    "Artifact",
    "Base",
    "Campaign",
    "Candidate",
    "Clip",
    "ClipSeed",
    "Experiment",
    "ExperimentPoint",
    "ExperimentStatus",
    "Stage",
    "InternalError",
    "Measurement",
    "Probe",
    "Score",
    "candidate_parents",
    "utcnow",
]
