"""The one place generation settings are read from an environment mapping.

Domain code takes explicit arguments; this factory is handed a mapping (the caller
passes ``os.environ`` or a settings dict) and builds a generator from it. Variables:

==============================  ======================================================
CODECFLEET_LLM_PROVIDER         ``openai``, ``anthropic`` or ``offline`` (default:
                                offline when no model or base URL is set)
CODECFLEET_LLM_BASE_URL         server URL; OpenAI-compatible ones include ``/v1``
CODECFLEET_LLM_MODEL            model name (required for openai and anthropic)
CODECFLEET_LLM_API_KEY          the key; else OPENAI_API_KEY or ANTHROPIC_API_KEY
CODECFLEET_LLM_TIMEOUT          seconds per call (default 120)
CODECFLEET_LLM_MAX_RETRIES      retries on 429/5xx/connection errors (default 3)
CODECFLEET_LLM_MAX_TOKENS       completion token limit (default 8192)
CODECFLEET_LLM_TEMPERATURE      sampling temperature (default: the server's)
CODECFLEET_LLM_MODE             ``rewrite`` (default) or ``diff`` when a parent exists
CODECFLEET_LLM_PRICE_INPUT      USD per million prompt tokens (with PRICE_OUTPUT: cost)
CODECFLEET_LLM_PRICE_OUTPUT     USD per million completion tokens
CODECFLEET_LLM_PROMPT_BUDGET    prompt size budget in characters (default 160000);
                                read by :func:`prompt_budget_from_env`, stated in
                                every prompt
CODECFLEET_LLM_MODELS           several models in one campaign, instead of
                                CODECFLEET_LLM_MODEL: ``name:weight`` comma-separated
                                (``gpt-4.1:3,gpt-4.1-mini:1``; the weight is the part
                                after the last ``:`` when it is a number, else 1, so
                                ``llama3:8b`` is a name); one model per request, drawn
                                by weight from (seed, request index): reproducible.
                                Same provider, base URL, key and prices for all.
CODECFLEET_OFFLINE_SEED         seed of the offline generator (default 0)
CODECFLEET_MANUAL_TIMEOUT_SECONDS  the manual generator's wait for an answer file
                                (default 3600); see :mod:`generation.manual`
CODECFLEET_MANUAL_POLL_SECONDS  how often it looks (default 1)
==============================  ======================================================
"""

from __future__ import annotations

from config import UserError

from collections.abc import Callable, Mapping

from generation.base import DEFAULT_PROMPT_BUDGET_CHARS, Generator
from generation.llm import AnthropicGenerator, OpenAIGenerator, Pricing
from generation.manual import DEFAULT_POLL_SECONDS, DEFAULT_TIMEOUT_SECONDS, ManualGenerator
from generation.multi import WeightedGenerator
from generation.offline import OfflineGenerator
from generation.prompts import ALLOWED_IMPORTS

PROVIDERS = ("openai", "anthropic", "offline")


class GenerationConfigError(UserError, ValueError):
    """The environment does not describe a usable generator; the message says which variable."""


def _number(environ: Mapping[str, str], name: str, default: float | None, kind=float):
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise GenerationConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise GenerationConfigError(f"{name} must be >= 0, got {raw!r}")
    return value


#: Below this a prompt cannot hold the task, the contract and a seed parent.
MIN_PROMPT_BUDGET_CHARS = 20_000


def prompt_budget_from_env(environ: Mapping[str, str]) -> int:
    """The prompt size budget in characters: ``CODECFLEET_LLM_PROMPT_BUDGET``, else
    :data:`~generation.base.DEFAULT_PROMPT_BUDGET_CHARS`."""
    value = int(_number(environ, "CODECFLEET_LLM_PROMPT_BUDGET", DEFAULT_PROMPT_BUDGET_CHARS, int))
    if value < MIN_PROMPT_BUDGET_CHARS:
        raise GenerationConfigError(
            f"CODECFLEET_LLM_PROMPT_BUDGET must be at least {MIN_PROMPT_BUDGET_CHARS} characters, got {value}"
        )
    return value


def parse_models(raw: str) -> list[tuple[str, float]]:
    """``"a:3,b:1"`` -> ``[("a", 3.0), ("b", 1.0)]``. The weight is the part after the
    last ``:`` when it is a number (else the whole item is the name, weight 1), so model
    names with a colon (``llama3:8b``, ``qwen2.5-coder:7b:2``) keep it."""
    out: list[tuple[str, float]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, weight = item, 1.0
        head, sep, tail = item.rpartition(":")
        if sep and head.strip():
            try:
                weight = float(tail)
                name = head.strip()
            except ValueError:
                pass
        if not (weight > 0 and weight < float("inf")):
            raise GenerationConfigError(f"CODECFLEET_LLM_MODELS: the weight of {name!r} must be > 0, got {tail!r}")
        if any(n == name for n, _ in out):
            raise GenerationConfigError(f"CODECFLEET_LLM_MODELS names {name!r} twice")
        out.append((name, weight))
    if not out:
        raise GenerationConfigError("CODECFLEET_LLM_MODELS is set but names no model")
    return out


def manual_generator_from_env(
    directory: str,
    environ: Mapping[str, str],
    *,
    campaign: str | None = None,
    allowed_modules: tuple[str, ...] = ALLOWED_IMPORTS,
) -> ManualGenerator:
    """The manual generator on ``directory`` (``--generator manual:DIR``): waits
    ``CODECFLEET_MANUAL_TIMEOUT_SECONDS`` for each answer, looking every
    ``CODECFLEET_MANUAL_POLL_SECONDS``; the reply limit stated in the prompts is
    ``CODECFLEET_LLM_MAX_TOKENS`` and ``CODECFLEET_LLM_MODE`` picks rewrite or diff."""
    if not str(directory).strip():
        raise GenerationConfigError("the manual generator needs a directory: manual:DIR")
    poll = _number(environ, "CODECFLEET_MANUAL_POLL_SECONDS", DEFAULT_POLL_SECONDS)
    if poll <= 0:
        raise GenerationConfigError("CODECFLEET_MANUAL_POLL_SECONDS must be > 0")
    mode = (environ.get("CODECFLEET_LLM_MODE") or "rewrite").strip().lower()
    if mode not in ("rewrite", "diff"):
        raise GenerationConfigError(f"CODECFLEET_LLM_MODE must be rewrite or diff, got {mode!r}")
    return ManualGenerator(
        directory,
        campaign=campaign,
        timeout=_number(environ, "CODECFLEET_MANUAL_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS),
        poll=poll,
        max_tokens=int(_number(environ, "CODECFLEET_LLM_MAX_TOKENS", 8192, int)),
        mode=mode,
        allowed_modules=allowed_modules,
    )


def generator_from_env(
    environ: Mapping[str, str],
    *,
    seeds: Mapping[str, str] | None = None,
    validate: Callable[[str], tuple[bool, str | None]] | None = None,
    allowed_modules: tuple[str, ...] = ALLOWED_IMPORTS,
) -> Generator:
    """The generator the environment asks for. ``seeds`` (family -> program) and
    ``validate`` are needed by the offline generator; ``allowed_modules`` is stated in
    LLM prompts (pass the sanitizer's set)."""
    provider = (environ.get("CODECFLEET_LLM_PROVIDER") or "").strip().lower()
    model = (environ.get("CODECFLEET_LLM_MODEL") or "").strip()
    models_raw = (environ.get("CODECFLEET_LLM_MODELS") or "").strip()
    base_url = (environ.get("CODECFLEET_LLM_BASE_URL") or "").strip() or None
    if model and models_raw:
        raise GenerationConfigError("set CODECFLEET_LLM_MODEL (one model) or CODECFLEET_LLM_MODELS (several), not both")
    models = parse_models(models_raw) if models_raw else None
    if models is not None and len(models) == 1:
        model, models = models[0][0], None
    elif models is not None:
        model = models[0][0]
    if not provider:
        if model or base_url:
            raise GenerationConfigError(
                "CODECFLEET_LLM_MODEL(S) or CODECFLEET_LLM_BASE_URL is set but CODECFLEET_LLM_PROVIDER is not; "
                f"set it to one of {', '.join(PROVIDERS)}"
            )
        provider = "offline"
    if provider not in PROVIDERS:
        raise GenerationConfigError(f"CODECFLEET_LLM_PROVIDER must be one of {', '.join(PROVIDERS)}, got {provider!r}")

    if provider == "offline":
        if not seeds:
            raise GenerationConfigError("the offline generator needs seed programs (pass seeds=)")
        return OfflineGenerator(int(_number(environ, "CODECFLEET_OFFLINE_SEED", 0, int)), seeds, validate=validate)

    if not model:
        raise GenerationConfigError(f"CODECFLEET_LLM_MODEL is required for provider {provider}")
    standard = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    api_key = environ.get("CODECFLEET_LLM_API_KEY") or environ.get(standard)
    if not api_key:
        if provider == "openai" and base_url:
            api_key = "not-needed"  # local OpenAI-compatible servers (vLLM, Ollama, llama.cpp) ignore it
        else:
            raise GenerationConfigError(f"no API key: set CODECFLEET_LLM_API_KEY or {standard}")
    price_in = _number(environ, "CODECFLEET_LLM_PRICE_INPUT", None)
    price_out = _number(environ, "CODECFLEET_LLM_PRICE_OUTPUT", None)
    if (price_in is None) != (price_out is None):
        raise GenerationConfigError("set both CODECFLEET_LLM_PRICE_INPUT and CODECFLEET_LLM_PRICE_OUTPUT, or neither")
    mode = (environ.get("CODECFLEET_LLM_MODE") or "rewrite").strip().lower()
    if mode not in ("rewrite", "diff"):
        raise GenerationConfigError(f"CODECFLEET_LLM_MODE must be rewrite or diff, got {mode!r}")
    cls = OpenAIGenerator if provider == "openai" else AnthropicGenerator
    if models is not None:
        return WeightedGenerator(
            [(_client(cls, base_url, name, api_key, environ, price_in, price_out, mode, allowed_modules), w)
             for name, w in models]
        )
    return _client(cls, base_url, model, api_key, environ, price_in, price_out, mode, allowed_modules)


def _client(cls, base_url, model, api_key, environ, price_in, price_out, mode, allowed_modules):
    return cls(
        base_url,
        model,
        api_key=api_key,
        timeout=_number(environ, "CODECFLEET_LLM_TIMEOUT", 120.0),
        max_retries=int(_number(environ, "CODECFLEET_LLM_MAX_RETRIES", 3, int)),
        max_tokens=int(_number(environ, "CODECFLEET_LLM_MAX_TOKENS", 8192, int)),
        temperature=_number(environ, "CODECFLEET_LLM_TEMPERATURE", None),
        pricing=Pricing(price_in, price_out) if price_in is not None else None,
        default_mode=mode,
        allowed_modules=allowed_modules,
    )
