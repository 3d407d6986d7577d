"""Manual generation: a person with a chat window, or an external agent, plays the model.

Each request's prompt is written to a directory; the campaign then waits (polling, up to
a timeout) for an answer file there and goes on with it exactly as with a model's reply.

Files, for request ``INDEX`` (the campaign's request number, from 0) of campaign ``NAME``
(characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``; the index is
written with at least four digits)::

    request-NAME-0007.md     the prompt, exactly what a model would be sent
    request-NAME-0007.json   {"campaign", "index", "mode", "parent_ids", "answer_file",
                              "budget_chars", "max_reply_tokens", "timeout_seconds",
                              "written_at", "prompt_chars"}
    answer-NAME-0007.md      written by you: the reply text exactly as a model would send
                             it, i.e. one fenced ```python module, or SEARCH/REPLACE blocks
                             against the parent (when the prompt asks for them)

Write the answer to another name first and rename it (``answer-...md.tmp`` ->
``answer-...md``) so a half-written file is never read; an answer is also taken only
once its size and modification time held still for one poll interval. An answer that
is already there when the request comes (a resumed campaign, or answers prepared ahead)
is used at once. No answer within the timeout is a failed generation (status
``timeout``, the experiment ``timed_out``) whose reason names the file; the campaign
goes on with its next request.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from generation.base import GenerationFailure, GenerationRequest, Generated
from generation.llm import DEFAULT_MAX_TOKENS, MAX_REPLY_CHARS, diff_note, interpret_reply, rewrite_fits
from generation.prompts import ALLOWED_IMPORTS, PromptBudgetError, request_prompt

#: Seconds to wait for an answer when nothing else is said (CODECFLEET_MANUAL_TIMEOUT_SECONDS).
DEFAULT_TIMEOUT_SECONDS = 3600.0
#: Seconds between looks at the directory (CODECFLEET_MANUAL_POLL_SECONDS).
DEFAULT_POLL_SECONDS = 1.0

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(campaign: str | None, index: int) -> str:
    """``NAME-0007``: the part after ``request-`` / ``answer-`` in the file names."""
    name = _UNSAFE.sub("_", campaign or "campaign").strip("._") or "campaign"
    return f"{name}-{index:04d}"


def request_paths(directory: str | os.PathLike, campaign: str | None, index: int) -> tuple[Path, Path, Path]:
    """(prompt file, metadata file, answer file) of one request."""
    d = Path(directory)
    stem = file_stem(campaign, index)
    return d / f"request-{stem}.md", d / f"request-{stem}.json", d / f"answer-{stem}.md"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class ManualGenerator:
    """Writes each prompt to ``directory`` and waits for the answer file (see the module
    docstring for the names and the format). ``campaign`` names the files; ``timeout``
    and ``poll`` are seconds; ``max_tokens`` is the reply limit stated in the prompt
    (a parent too large to come back whole within it is asked for as SEARCH/REPLACE
    blocks, as with a model); ``mode`` ``diff`` asks for blocks whenever there is a
    parent. ``model`` is stored as every candidate's model (default ``manual``)."""

    name = "manual"

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        campaign: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        poll: float = DEFAULT_POLL_SECONDS,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        mode: str = "rewrite",
        model: str | None = "manual",
        allowed_modules: Sequence[str] = ALLOWED_IMPORTS,
        max_reply_chars: int = MAX_REPLY_CHARS,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
        if poll <= 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll}")
        if mode not in ("rewrite", "diff"):
            raise ValueError(f"mode must be 'rewrite' or 'diff', got {mode!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.campaign = campaign
        self.timeout = float(timeout)
        self.poll = float(poll)
        self.max_tokens = int(max_tokens)
        self.default_mode = mode
        self.model = model
        self.allowed_modules = tuple(allowed_modules)
        self.max_reply_chars = int(max_reply_chars)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"ManualGenerator({str(self.directory)!r}, campaign={self.campaign!r}, timeout={self.timeout:g})"

    def _mode(self, request: GenerationRequest, max_tokens: int) -> tuple[str, tuple[str, ...]]:
        parent = request.parent
        mode = request.mode if request.mode in ("rewrite", "diff") else (self.default_mode if parent else "rewrite")
        if parent is None:
            return "rewrite", ()
        if mode == "rewrite" and not rewrite_fits(parent.code, max_tokens):
            return "diff", (diff_note(parent.code, max_tokens),)
        return mode, ()

    def _wait(self, answer: Path) -> str | None:
        """The answer's text once it is there and held still for one poll; None when
        there is none at the timeout (one that appeared just before gets one more poll)."""
        deadline = time.monotonic() + self.timeout
        last = None
        while True:
            try:
                st = answer.stat()
                now = (st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                now = None
            if now is not None and (now == last or time.monotonic() >= deadline + self.poll):
                return answer.read_text(encoding="utf-8", errors="replace")
            if now is None and time.monotonic() >= deadline:
                return None
            last = now
            self._sleep(self.poll)

    def generate(self, request: GenerationRequest) -> Generated:
        max_tokens = request.max_tokens or self.max_tokens
        mode, notes = self._mode(request, max_tokens)
        common = dict(generator=self.name, model=self.model, parent_ids=request.parent_ids)
        try:
            prompt = request_prompt(
                request, mode, allowed_modules=self.allowed_modules, notes=notes, max_reply_tokens=max_tokens
            )
        except PromptBudgetError as exc:
            return Generated(mode=mode, prompt="", code=None, error=GenerationFailure("prompt_too_large", str(exc)),
                             attempts=0, **common)
        prompt_path, meta_path, answer_path = request_paths(self.directory, self.campaign, request.index)
        started = time.monotonic()
        more: list[str] = []
        if prompt_path.exists():
            old = prompt_path.read_text(encoding="utf-8", errors="replace")
            if old != prompt:
                more.append(f"{prompt_path.name} was written again: the prompt differs from the one there before")
        _write_atomic(prompt_path, prompt)
        _write_atomic(meta_path, json.dumps({
            "campaign": self.campaign,
            "index": request.index,
            "mode": mode,
            "parent_ids": list(request.parent_ids),
            "prompt_file": prompt_path.name,
            "answer_file": answer_path.name,
            "answer_format": "the reply text as a model would send it: one fenced ```python module"
                             + (", or SEARCH/REPLACE blocks against the parent" if request.parent else ""),
            "budget_chars": request.budget_chars,
            "prompt_chars": len(prompt),
            "max_reply_tokens": max_tokens,
            "timeout_seconds": self.timeout,
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }, indent=2) + "\n")
        if answer_path.exists():
            more.append(f"{answer_path.name} was already there")
        reply = self._wait(answer_path)
        seconds = time.monotonic() - started
        if reply is None:
            return Generated(
                mode=mode, prompt=prompt, code=None, seconds=seconds, notes=tuple(more),
                error=GenerationFailure(
                    "timeout", f"no answer file {answer_path.name} in {self.directory} within {self.timeout:g} s"
                ),
                **common,
            )
        stored = reply if len(reply) <= self.max_reply_chars else reply[: self.max_reply_chars]
        parent = request.parent
        used_mode, code, error, extra = interpret_reply(
            reply, parent.code if parent else None, max_reply_chars=self.max_reply_chars
        )
        return Generated(
            mode=used_mode, prompt=prompt, code=code, raw_reply=stored, error=error, seconds=seconds,
            notes=(*more, f"answer read from {answer_path.name}", *extra), **common,
        )


__all__ = ["DEFAULT_POLL_SECONDS", "DEFAULT_TIMEOUT_SECONDS", "ManualGenerator", "file_stem", "request_paths"]
