"""LLM clients: OpenAI-compatible chat completions and the Anthropic messages API.

Both go through the official SDKs (``openai``, ``anthropic``), with the SDKs' own retries
switched off: this module retries itself, a bounded number of times with exponential
backoff, on HTTP 429 and 5xx and on dropped connections, honouring ``Retry-After`` up to
a cap, so the number of attempts is known and stored with the candidate. A timeout is
not retried: a server that held a request for the whole timeout is unlikely to answer the
next one faster, and each try would cost the full timeout again.

Every outcome is a :class:`~generation.base.Generated`: the prompt, the raw reply, the
model, token counts and cost when the call succeeded; a status and a reason fit for the
next prompt when it did not. An exception escapes only for programming errors.

The API key lives in the SDK client object and nowhere else: not in ``Generated``, not in
a repr, not in a log line, and it is scrubbed from server error messages that echo it.
OpenAI-compatible servers (vLLM, Ollama, llama.cpp's ``llama-server``) work through
``base_url``; they usually ignore the key.
"""

from __future__ import annotations

import ast
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from generation.base import GenerationFailure, GenerationRequest, Generated
from generation.diffs import DiffError, apply_search_replace, has_edit_blocks
from generation.prompts import ALLOWED_IMPORTS, PromptBudgetError, request_prompt

log = logging.getLogger(__name__)

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
#: Replies longer than this cannot hold an acceptable candidate (the sanitizer caps code at
#: 100 kB); they are stored cut to this length and rejected.
MAX_REPLY_CHARS = 200_000
MAX_RETRY_AFTER_S = 60.0
#: Characters of Python per token, on the low side (code tokenises densely), for
#: judging whether a full module fits in a reply.
CHARS_PER_TOKEN = 3.0


#: The completion token limit when none is given.
DEFAULT_MAX_TOKENS = 8192


def diff_note(parent_code: str, max_tokens: int) -> str:
    """What the prompt says when a rewrite was switched to SEARCH/REPLACE."""
    return (
        f"The parent is {len(parent_code)} characters: a complete rewrite would not fit in your reply "
        f"limit of {max_tokens} tokens, so this request asks for SEARCH/REPLACE blocks against it."
    )


def rewrite_fits(parent_code: str, max_tokens: int) -> bool:
    """Whether a complete rewrite of ``parent_code`` (with 20 % room to grow and a
    short explanation) fits in a reply of ``max_tokens`` tokens."""
    return len(parent_code) * 1.2 + 2000 <= max_tokens * CHARS_PER_TOKEN

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})", re.M)


@dataclass(frozen=True)
class Pricing:
    """Price of a model in US dollars per million tokens."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def __post_init__(self) -> None:
        if self.input_usd_per_mtok < 0 or self.output_usd_per_mtok < 0:
            raise ValueError(f"prices must be >= 0, got {self}")

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """USD for one call: (prompt * input + completion * output) / 1e6; None when a
        token count is unknown."""
        if prompt_tokens is None or completion_tokens is None:
            return None
        return (prompt_tokens * self.input_usd_per_mtok + completion_tokens * self.output_usd_per_mtok) / 1e6


@dataclass(frozen=True)
class _Reply:
    text: str
    truncated: bool  # the model stopped at its token limit
    finish: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


class _CallFailed(Exception):
    def __init__(self, status: str, reason: str, attempts: int):
        self.status = status
        self.reason = reason
        self.attempts = attempts
        super().__init__(reason)


def interpret_reply(
    reply: str, parent_code: str | None, *, max_reply_chars: int = MAX_REPLY_CHARS
) -> tuple[str, str | None, GenerationFailure | None, tuple[str, ...]]:
    """Turn a reply into ``(mode, code, error, notes)``.

    SEARCH/REPLACE blocks are applied to ``parent_code`` (mode ``diff``); otherwise the
    reply is a full rewrite and ``code`` is the reply itself, which the sanitizer cuts
    down to its fenced module (mode ``rewrite``). A reply with neither a fence nor
    parseable Python, an empty or oversized reply, and edits that do not apply are
    errors with a reason the next prompt can show.
    """
    if not reply.strip():
        return "rewrite", None, GenerationFailure("empty_reply", "the reply was empty"), ()
    if len(reply) > max_reply_chars:
        return (
            "rewrite",
            None,
            GenerationFailure(
                "reply_too_long",
                f"the reply is {len(reply)} characters; the limit is {max_reply_chars}. "
                "Send one module (at most 100 kB of code) or SEARCH/REPLACE blocks",
            ),
            (),
        )
    if has_edit_blocks(reply):
        if parent_code is None:
            return "diff", None, GenerationFailure(
                "bad_diff", "the reply has SEARCH/REPLACE blocks but there was no parent to edit; send a full module"
            ), ()
        try:
            code = apply_search_replace(parent_code, reply)
        except DiffError as exc:
            return "diff", None, GenerationFailure("bad_diff", exc.reason), ()
        return "diff", code, None, ()
    if _FENCE.search(reply):
        return "rewrite", reply, None, ()
    try:
        ast.parse(reply)
    except (SyntaxError, ValueError):
        first = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")[:60]
        return "rewrite", None, GenerationFailure(
            "no_code",
            f"the reply has no ```python block and no SEARCH/REPLACE blocks (it starts with `{first}`)",
        ), ()
    return "rewrite", reply, None, ("the reply is bare Python without a fence",)


class _LLMGenerator:
    """Shared retry loop, prompt building and reply handling; subclasses make one call.

    Subclasses take ``base_url``, ``model`` and ``api_key`` and pass every other
    keyword (``timeout``, ``max_retries``, ``max_tokens``, ``temperature``, ...)
    through to this constructor, where the defaults are.
    """

    name = "llm"
    _errors: Any  # the SDK module whose exception classes _call raises
    _client: Any  # the SDK client; subclasses make it with the API key

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        timeout: float = 120.0,
        max_retries: int = 3,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float | None = None,
        pricing: Pricing | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        default_mode: str = "rewrite",
        allowed_modules: tuple[str, ...] = ALLOWED_IMPORTS,
        max_reply_chars: int = MAX_REPLY_CHARS,
    ):
        if not model:
            raise ValueError("an LLM generator needs a model name")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if default_mode not in ("rewrite", "diff"):
            raise ValueError(f"default_mode must be 'rewrite' or 'diff', got {default_mode!r}")
        self.model = model
        self.base_url = base_url
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_tokens = int(max_tokens)
        self.temperature = temperature
        self.pricing = pricing
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.default_mode = default_mode
        self.allowed_modules = tuple(allowed_modules)
        self.max_reply_chars = int(max_reply_chars)

    def __repr__(self) -> str:  # deliberately without the client, which holds the key
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, "
            f"timeout={self.timeout}, max_retries={self.max_retries})"
        )

    # -- subclass hooks -------------------------------------------------------------

    def _call(self, prompt: str, max_tokens: int) -> _Reply:
        raise NotImplementedError

    def _secret(self) -> str | None:
        return self._client.api_key  # each subclass's SDK client keeps its key there

    def _sampling(self) -> dict[str, Any]:
        """Sampling options for the request: the temperature, only when one was set."""
        return {} if self.temperature is None else {"temperature": self.temperature}

    # -- the loop ---------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        secret = self._secret()
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
        return text

    def _delay(self, attempt: int, exc: Exception) -> float:
        """Retry-After when the server sent one (capped), else exponential backoff with
        jitter: base * 2**(attempt-1), at most backoff_max."""
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
            value = headers.get(header)
            if value is None:
                continue
            try:
                seconds = float(value) / divisor
            except ValueError:
                continue
            if 0 <= seconds <= MAX_RETRY_AFTER_S:
                return seconds
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return delay * (0.75 + 0.25 * random.random())

    def _classify(self, exc: Exception) -> tuple[str, str, bool]:
        """(status, reason, retryable) for an SDK exception."""
        errors = self._errors
        if isinstance(exc, errors.APITimeoutError):
            return "timeout", f"no reply from the LLM server within {self.timeout:g} s", False
        if isinstance(exc, errors.APIConnectionError):
            return "connection_error", f"cannot reach the LLM server at {self.base_url}: {exc}", True
        if isinstance(exc, errors.APIStatusError):
            code = exc.status_code
            message = " ".join(str(getattr(exc, "message", "") or exc).split())[:300]
            if code == 429:
                return "rate_limited", f"HTTP 429 (rate limited): {message}", True
            if code >= 500:
                return "server_error", f"HTTP {code} from the LLM server: {message}", True
            return "http_error", f"HTTP {code} from the LLM server: {message}", code in (408, 409)
        if isinstance(exc, errors.APIError):  # e.g. a 200 whose body is not the protocol's shape
            return "http_error", f"unusable response from the LLM server: {' '.join(str(exc).split())[:300]}", False
        raise exc

    def _call_with_retries(self, prompt: str, max_tokens: int) -> tuple[_Reply, int]:
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._call(prompt, max_tokens), attempt
            except Exception as exc:  # noqa: BLE001 - _classify re-raises what is not an SDK error
                status, reason, retryable = self._classify(exc)
                reason = self._scrub(reason)
                if not retryable or attempt > self.max_retries:
                    tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                    log.warning("%s %s: %s%s", self.name, self.model, reason, tries)
                    raise _CallFailed(status, reason + tries, attempt) from None
                delay = self._delay(attempt, exc)
                log.info(
                    "%s %s: %s; retry %d/%d in %.2f s", self.name, self.model, reason, attempt, self.max_retries, delay
                )
                time.sleep(delay)

    def _mode(self, request: GenerationRequest, max_tokens: int) -> tuple[str, tuple[str, ...]]:
        """The answer format to ask for, and a note for the prompt when it was switched.

        A full rewrite must come back whole within the reply limit; when the parent is
        too large for that (at :data:`CHARS_PER_TOKEN` characters a token, with room to
        grow), the request asks for SEARCH/REPLACE blocks against the parent instead, so
        the model is never asked for a complete module it cannot send."""
        parent = request.parent
        mode = request.mode or (self.default_mode if parent is not None else "rewrite")
        if mode not in ("rewrite", "diff"):
            raise ValueError(f"{self.name} generates 'rewrite' or 'diff' candidates, not {mode!r}")
        if mode == "diff" and parent is None:
            mode = "rewrite"
        if mode == "rewrite" and parent is not None and not rewrite_fits(parent.code, max_tokens):
            return "diff", (diff_note(parent.code, max_tokens),)
        return mode, ()

    def generate(self, request: GenerationRequest) -> Generated:
        parent = request.parent
        max_tokens = request.max_tokens or self.max_tokens
        mode, notes = self._mode(request, max_tokens)
        try:
            prompt = request_prompt(
                request, mode, allowed_modules=self.allowed_modules, notes=notes, max_reply_tokens=max_tokens
            )
        except PromptBudgetError as exc:
            return Generated(
                generator=self.name, mode=mode, prompt="", code=None, model=self.model,
                parent_ids=request.parent_ids, error=GenerationFailure("prompt_too_large", str(exc)), attempts=0,
            )
        started = time.monotonic()
        common = dict(generator=self.name, prompt=prompt, model=self.model, parent_ids=request.parent_ids)
        try:
            reply, attempts = self._call_with_retries(prompt, max_tokens)
        except _CallFailed as failed:
            return Generated(
                mode=mode,
                code=None,
                error=GenerationFailure(failed.status, failed.reason),
                attempts=failed.attempts,
                seconds=time.monotonic() - started,
                **common,
            )
        seconds = time.monotonic() - started
        common["model"] = reply.model or self.model
        cost = self.pricing.cost(reply.prompt_tokens, reply.completion_tokens) if self.pricing else None
        usage = dict(
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            cost_usd=cost,
            attempts=attempts,
            seconds=seconds,
        )
        text = self._scrub(reply.text)
        stored = text if len(text) <= self.max_reply_chars else text[: self.max_reply_chars]
        if reply.truncated and len(text) <= self.max_reply_chars:
            error = GenerationFailure(
                "truncated",
                f"the reply was cut off at the token limit ({max_tokens} tokens, finish reason "
                f"{reply.finish!r}), so its code is incomplete; write a shorter module or use SEARCH/REPLACE blocks",
            )
            return Generated(mode=mode, code=None, raw_reply=stored, error=error, **common, **usage)
        used_mode, code, error, notes = interpret_reply(
            text, parent.code if parent else None, max_reply_chars=self.max_reply_chars
        )
        return Generated(
            mode=used_mode, code=code, raw_reply=stored, error=error, notes=notes, **common, **usage
        )


class OpenAIGenerator(_LLMGenerator):
    """Chat completions on any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp).

    ``base_url`` includes the API prefix, e.g. ``http://127.0.0.1:8000/v1``. The prompt
    goes as one user message; usage comes from ``usage.prompt_tokens`` and
    ``usage.completion_tokens``; ``finish_reason == "length"`` marks a truncated reply.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | None,
        model: str,
        *,
        api_key: str | None,
        **options: Any,
    ):
        import openai

        base_url = base_url or OPENAI_DEFAULT_BASE_URL
        super().__init__(model=model, base_url=base_url, **options)
        if not api_key:
            raise ValueError("OpenAIGenerator needs an API key (any non-empty string for a local server)")
        self._errors = openai
        # Explicit base_url and api_key: the SDK then consults no environment variables for them.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=self.timeout, max_retries=0)

    def _call(self, prompt: str, max_tokens: int) -> _Reply:
        response = self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            **self._sampling(),
        )
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice and choice.message else None) or ""
        finish = choice.finish_reason if choice else None
        usage = response.usage
        return _Reply(
            text=text,
            truncated=finish == "length",
            finish=finish,
            model=response.model,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )


class AnthropicGenerator(_LLMGenerator):
    """The Anthropic messages API (``POST {base_url}/v1/messages``).

    Usage comes from ``usage.input_tokens`` and ``usage.output_tokens``;
    ``stop_reason == "max_tokens"`` marks a truncated reply.
    """

    name = "anthropic"

    def __init__(
        self,
        base_url: str | None,
        model: str,
        *,
        api_key: str | None,
        **options: Any,
    ):
        import anthropic

        base_url = base_url or ANTHROPIC_DEFAULT_BASE_URL
        super().__init__(model=model, base_url=base_url, **options)
        if not api_key:
            raise ValueError("AnthropicGenerator needs an API key")
        self._errors = anthropic
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=self.timeout, max_retries=0)

    def _call(self, prompt: str, max_tokens: int) -> _Reply:
        response = self._client.messages.create(
            model=self.model,
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": prompt}],
            **self._sampling(),
        )
        text = "".join(getattr(block, "text", "") for block in response.content if block.type == "text")
        usage = response.usage
        return _Reply(
            text=text,
            truncated=response.stop_reason == "max_tokens",
            finish=response.stop_reason,
            model=response.model,
            prompt_tokens=usage.input_tokens if usage else None,
            completion_tokens=usage.output_tokens if usage else None,
        )
