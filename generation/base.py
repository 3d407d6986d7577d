"""The plain data a generator takes and gives back, and the protocol every generator follows.

Generation imports nothing of the database, the sandbox or the evaluation: whoever calls
a generator (the ``generate`` task, a campaign loop) turns database rows into these small
dataclasses, and stores a :class:`Generated` back. That keeps every generator testable
with literals and keeps the prompt a pure function of what was measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Mode = Literal["rewrite", "diff", "mutation", "crossover"]
MODES: tuple[str, ...] = ("rewrite", "diff", "mutation", "crossover")

#: Why a generation produced no usable code, and the experiment status the caller should
#: give it. Transport problems are ``failed`` (stage ``generate``); a hung server is
#: ``timed_out``; a reply that came back but holds no usable module is ``rejected``, like
#: a sanitizer rejection, so the next prompt shows the reason the same way.
FAILURE_OUTCOME: dict[str, str] = {
    "rate_limited": "failed",  # HTTP 429 on every attempt
    "server_error": "failed",  # HTTP 5xx on every attempt
    "http_error": "failed",  # another HTTP error (400, 401, 404, ...): not retried
    "connection_error": "failed",  # nothing listening, connection reset, DNS
    "timeout": "timed_out",  # no complete reply within the client's timeout
    "empty_reply": "rejected",  # the reply had no text
    "truncated": "rejected",  # the model stopped at its token limit: the code is cut off
    "reply_too_long": "rejected",  # the reply exceeds the size a candidate may have
    "no_code": "rejected",  # neither a fenced module nor SEARCH/REPLACE blocks
    "bad_diff": "rejected",  # SEARCH/REPLACE blocks that do not apply to the parent
    "invalid_program": "rejected",  # an offline program the validator refused (a bug)
    "exhausted": "failed",  # the offline generator found no new distinct program
    "prompt_too_large": "failed",  # no prompt could be built within the size budget, with any parent
    "generator_error": "failed",  # the generator raised (a bug); the campaign records it and goes on
}

#: Prompt size budget in characters when nothing else is said. Sized for today's
#: long-context models (128k tokens and more; code runs about 3-4 characters a token)
#: and above what the largest accepted parent (100 kB of code, the sanitizer's cap)
#: needs with the task, the contract and its numbers, so a parent always fits whole.
DEFAULT_PROMPT_BUDGET_CHARS = 160_000


@dataclass(frozen=True)
class RatePoint:
    """One measured rate point of a candidate (the numbers a prompt shows)."""

    quality: float
    kbps: float
    psnr_y: float
    psnr_rgb: float | None = None
    ssim_y: float | None = None
    encode_fps: float | None = None
    decode_fps: float | None = None
    #: Payload bytes of every frame at this rate point, in frame order (container
    #: framing excluded); empty when not known.
    frame_bytes: tuple[int, ...] = ()
    #: Per-frame PSNR-Y in dB, in frame order; empty when not stored.
    frame_psnr_y: tuple[float, ...] = ()


@dataclass(frozen=True)
class AnchorPoint:
    """One point of a classic anchor's rate-distortion sweep on the task's clip."""

    crf: int
    kbps: float
    psnr_y: float
    ssim_y: float | None = None


@dataclass(frozen=True)
class LineageStep:
    """One step of a candidate's ancestry, oldest first in :attr:`CandidateInfo.lineage`:
    who made it, how, what changed against its own parent and the BD-rate it reached."""

    name: str  # "candidate 12" or "seed intra_dct"
    bd_rate: float | None = None  # against the task's first anchor, percent
    generator: str | None = None
    mode: str | None = None  # rewrite, diff, mutation, crossover, seed
    change: str | None = None  # a summary of the change against its parent (see prompts.change_summary)
    diff: str | None = None  # the unified diff against its parent (model-written code; fenced when shown)


@dataclass(frozen=True)
class Limits:
    """The limits a candidate runs under, stated in the prompt. None: not stated."""

    call_seconds: float | None = None  # one compress or decompress call (wall clock)
    import_seconds: float | None = None  # interpreter start plus importing the module
    session_seconds: float | None = None  # a whole encode or decode session (all frames)
    max_code_bytes: int | None = None  # the module's source
    max_payload_bytes: int | None = None  # one frame's compressed bytes
    max_bitstream_bytes: int | None = None  # one rate point's whole bitstream
    memory_bytes: int | None = None  # address space or memory of one sandboxed process
    tmp_bytes: int | None = None  # the only writable directory (/tmp)


@dataclass(frozen=True)
class BdFigure:
    """One BD figure of a candidate against an anchor, as the scores rows store it.

    ``bd_rate`` is the fitness figure, None when it is unreliable (``overlap`` below
    ``min_overlap``) or could not be computed; ``raw_bd_rate`` is the figure over
    whatever overlap there is, kept to be shown, never fitness. Over several clips
    (a campaign): ``bd_rate`` and ``raw_bd_rate`` are means of the per-clip figures
    (``bd_rate`` None unless every clip has a reliable one), ``overlap`` is the
    smallest clip's and ``clips`` counts them.
    """

    anchor: str
    metric: str = "psnr_y"
    bd_rate: float | None = None
    overlap: float | None = None  # fraction of the wider quality range both curves share
    reliable: bool | None = None
    min_overlap: float | None = None
    raw_bd_rate: float | None = None
    clips: int = 1


@dataclass(frozen=True)
class CandidateInfo:
    """A measured (or seed) candidate: its code and what it achieved.

    ``bd_rate`` maps an anchor codec (``"x264"``) to the BD-rate in percent on PSNR-Y
    (negative: fewer bits than the anchor at equal quality). ``family`` names the seed
    lineage (``"intra_dct"``), used for islands and same-family crossover.
    """

    code: str
    candidate_id: int | None = None
    label: str | None = None
    family: str | None = None
    generator: str | None = None
    bd_rate: Mapping[str, float] = field(default_factory=dict)
    points: tuple[RatePoint, ...] = ()
    #: The last few steps of its ancestry, oldest first, ending with this candidate.
    lineage: tuple[LineageStep, ...] = ()
    #: The stored BD figures with their overlap and reliability (see :class:`BdFigure`);
    #: when empty, prompts show ``bd_rate`` alone.
    bd_figures: tuple[BdFigure, ...] = ()

    @property
    def name(self) -> str:
        if self.candidate_id is not None:
            return f"candidate {self.candidate_id}"
        return self.label or "unnamed candidate"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CandidateInfo:
        """Build from a plain dict (``points`` as dicts or :class:`RatePoint`)."""
        points = tuple(p if isinstance(p, RatePoint) else RatePoint(**p) for p in data.get("points", ()))
        return cls(
            code=data["code"],
            candidate_id=data.get("candidate_id"),
            label=data.get("label"),
            family=data.get("family"),
            generator=data.get("generator"),
            bd_rate=dict(data.get("bd_rate") or {}),
            points=points,
        )


@dataclass(frozen=True)
class FailureInfo:
    """A recent experiment that ended without a result, as the next prompt shows it."""

    status: str  # rejected, failed, timed_out, duplicate_output, ...
    reason: str
    stage: str | None = None  # generate, sanitize, import, encode, decode, verify, score
    candidate_id: int | None = None
    snippet: str | None = None  # the offending code or reply excerpt, when known


@dataclass(frozen=True)
class TaskSpec:
    """What the candidates are measured on, stated in the prompt."""

    clip: str = "a video clip"  # e.g. "synthetic:mix 352x288, 8 frames at 30 fps"
    width: int | None = None
    height: int | None = None
    n_frames: int | None = None
    fps: float | None = None
    rate_points: tuple[float, ...] = ()
    anchors: tuple[str, ...] = ("x264",)
    metric: str = "psnr_y"
    #: Below this overlap of the quality ranges a BD figure is unreliable and not fitness.
    min_overlap: float = 0.75
    #: How many clips fitness averages over (the per-clip BD-rates' mean); ``clip`` is the first.
    n_clips: int = 1
    device: str = "cpu"
    #: Each anchor's measured sweep on this clip (codec -> points by CRF); empty when unknown.
    anchor_points: Mapping[str, tuple[AnchorPoint, ...]] = field(default_factory=dict)
    limits: Limits | None = None
    #: The config keys the system sets for encoder and decoder, with what they hold.
    config_keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation step may use. ``parents[0]`` is the candidate to
    improve; a second parent is the partner for crossover. ``index`` numbers the
    request within its campaign: offline generators derive their randomness from
    ``(seed, index)``, so a resumed campaign regenerates the same candidate."""

    task: TaskSpec = field(default_factory=TaskSpec)
    parents: tuple[CandidateInfo, ...] = ()
    top_k: tuple[CandidateInfo, ...] = ()
    failures: tuple[FailureInfo, ...] = ()
    mode: Mode | None = None  # None: the generator chooses
    index: int = 0
    seed: int | None = None
    budget_chars: int = DEFAULT_PROMPT_BUDGET_CHARS  # prompt size budget, characters
    max_tokens: int | None = None  # completion budget for this call (None: the generator's default)
    #: Remarks of the system about this request (e.g. why another parent was chosen),
    #: shown in the prompt as codecfleet's own words. Never put candidate text here.
    notes: tuple[str, ...] = ()

    @property
    def parent(self) -> CandidateInfo | None:
        return self.parents[0] if self.parents else None

    @property
    def parent_ids(self) -> tuple[int, ...]:
        return tuple(p.candidate_id for p in self.parents if p.candidate_id is not None)


@dataclass(frozen=True)
class GenerationFailure:
    """Why a generation gave no usable code: a status from :data:`FAILURE_OUTCOME` and a
    short reason fit to show the LLM in its next prompt."""

    status: str
    reason: str

    def __post_init__(self) -> None:
        if self.status not in FAILURE_OUTCOME:
            raise ValueError(f"unknown generation failure status {self.status!r}; known: {', '.join(FAILURE_OUTCOME)}")

    @property
    def outcome(self) -> str:
        """The experiment status to record: ``failed``, ``timed_out`` or ``rejected``."""
        return FAILURE_OUTCOME[self.status]

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


@dataclass(frozen=True)
class Generated:
    """One generation's result, everything to store on the candidate row.

    ``code`` is the text to hand to the sanitizer: the reply itself for a full rewrite
    (the sanitizer takes its fenced block), the parent with the edits applied for a
    diff, the program for offline mutation and crossover; None when ``error`` is set.
    ``cost_usd`` is None when the price per token is not known. The API key is never
    part of this object.
    """

    generator: str
    mode: str
    prompt: str
    code: str | None
    raw_reply: str | None = None
    model: str | None = None
    parent_ids: tuple[int, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    error: GenerationFailure | None = None
    attempts: int = 1
    seconds: float = 0.0
    notes: tuple[str, ...] = ()  # e.g. the mutations applied, the diff blocks applied

    @property
    def ok(self) -> bool:
        return self.error is None and self.code is not None

    @property
    def tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


@runtime_checkable
class Generator(Protocol):
    """Anything that turns a request into a candidate. ``name`` is stored as the
    candidate's ``generator``; ``model`` as its model (None offline)."""

    name: str
    model: str | None

    def generate(self, request: GenerationRequest) -> Generated: ...
