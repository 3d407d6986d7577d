"""Replay: re-run a campaign from stored replies, calling no LLM.

Each request gets the reply stored for its ``index`` and goes through the same reply
handling as a live call (SEARCH/REPLACE blocks applied to the request's parent, junk
recognised), so a replay exercises everything after the model. The prompt is rebuilt
from the request as a live generator would build it, and a note says whether it matches
the prompt stored with the original reply: a mismatch means the measured results fed
back differ from the original run's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from generation.base import GenerationFailure, GenerationRequest, Generated
from generation.llm import DEFAULT_MAX_TOKENS, MAX_REPLY_CHARS, diff_note, interpret_reply, rewrite_fits
from generation.prompts import ALLOWED_IMPORTS, PromptBudgetError, request_prompt


class ReplayExhausted(IndexError):
    """No stored reply for this request index: the replayed campaign is over."""

    def __init__(self, index: int, available: int):
        self.index = index
        self.available = available
        super().__init__(f"no stored reply for request {index}; the replay holds {available}")


@dataclass(frozen=True)
class StoredReply:
    """What a campaign stored for one candidate (the candidate row's columns)."""

    raw_reply: str | None
    prompt: str | None = None
    generator: str | None = None
    model: str | None = None
    mode: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: GenerationFailure | None = None  # the original call failed (no reply)
    candidate_id: int | None = None


class ReplayGenerator:
    """Serves ``replies[request.index]``; raises :class:`ReplayExhausted` past the end.

    Offline candidates replay too: their stored reply is the program itself.
    """

    name = "replay"

    def __init__(
        self,
        replies: Iterable[StoredReply | str],
        *,
        allowed_modules: Sequence[str] = ALLOWED_IMPORTS,
        max_reply_chars: int = MAX_REPLY_CHARS,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ):
        self.max_tokens = int(max_tokens)  # the reply limit the original prompts stated
        self.replies = [r if isinstance(r, StoredReply) else StoredReply(raw_reply=r) for r in replies]
        self.allowed_modules = tuple(allowed_modules)
        self.max_reply_chars = max_reply_chars
        self.model = None

    def __repr__(self) -> str:
        return f"ReplayGenerator({len(self.replies)} replies)"

    def generate(self, request: GenerationRequest) -> Generated:
        if not 0 <= request.index < len(self.replies):
            raise ReplayExhausted(request.index, len(self.replies))
        stored = self.replies[request.index]
        parent = request.parent
        mode = stored.mode if stored.mode in ("rewrite", "diff") else ("diff" if parent and request.mode == "diff" else "rewrite")
        if mode == "diff" and parent is None:
            mode = "rewrite"
        if stored.mode in ("mutation", "crossover"):
            prompt = stored.prompt or f"replay of an offline {stored.mode}"
        else:
            max_tokens = request.max_tokens or self.max_tokens
            switched = (mode == "diff" and request.mode != "diff" and parent is not None
                        and not rewrite_fits(parent.code, max_tokens))
            try:
                prompt = request_prompt(
                    request, mode, allowed_modules=self.allowed_modules,
                    notes=(diff_note(parent.code, max_tokens),) if switched else (), max_reply_tokens=max_tokens,
                )
            except PromptBudgetError as exc:
                prompt = f"(no prompt could be built: {exc})"
        notes = [f"replayed from candidate {stored.candidate_id}" if stored.candidate_id is not None else "replayed"]
        if stored.prompt is not None and stored.mode not in ("mutation", "crossover"):
            notes.append("prompt matches the original" if stored.prompt == prompt else "prompt differs from the original")
        common = dict(
            generator=f"replay:{stored.generator}" if stored.generator else self.name,
            prompt=prompt,
            model=stored.model,
            parent_ids=request.parent_ids,
            cost_usd=0.0,  # no call was made
        )
        if stored.error is not None or stored.raw_reply is None:
            error = stored.error or GenerationFailure("empty_reply", "the stored candidate has no reply")
            return Generated(mode=mode, code=None, raw_reply=stored.raw_reply, error=error, notes=tuple(notes), **common)
        used_mode, code, error, more = interpret_reply(
            stored.raw_reply, parent.code if parent else None, max_reply_chars=self.max_reply_chars
        )
        if stored.mode in ("mutation", "crossover"):
            used_mode = stored.mode
        return Generated(
            mode=used_mode, code=code, raw_reply=stored.raw_reply, error=error, notes=tuple(notes) + more, **common
        )
