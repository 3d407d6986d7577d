"""generator_from_env: the one place generation settings come from an environment mapping."""

from __future__ import annotations

import pytest

from generation import (
    AnthropicGenerator,
    GenerationConfigError,
    OfflineGenerator,
    OpenAIGenerator,
    generator_from_env,
)


def test_no_llm_configured_means_the_offline_generator(seeds):
    gen = generator_from_env({}, seeds=seeds)
    assert isinstance(gen, OfflineGenerator) and gen.seed == 0
    assert generator_from_env({"CODECFLEET_OFFLINE_SEED": "5"}, seeds=seeds).seed == 5


def test_openai_compatible_settings_are_read_and_the_key_stays_out_of_the_repr():
    gen = generator_from_env({
        "CODECFLEET_LLM_PROVIDER": "openai",
        "CODECFLEET_LLM_BASE_URL": "http://127.0.0.1:8000/v1",
        "CODECFLEET_LLM_MODEL": "qwen2.5-coder",
        "OPENAI_API_KEY": "sk-env-secret-value",
        "CODECFLEET_LLM_TIMEOUT": "30",
        "CODECFLEET_LLM_MAX_RETRIES": "1",
        "CODECFLEET_LLM_PRICE_INPUT": "0.5",
        "CODECFLEET_LLM_PRICE_OUTPUT": "1.5",
    })
    assert isinstance(gen, OpenAIGenerator)
    assert (gen.model, gen.base_url, gen.timeout, gen.max_retries) == ("qwen2.5-coder", "http://127.0.0.1:8000/v1", 30.0, 1)
    assert gen.pricing.cost(1_000_000, 1_000_000) == pytest.approx(2.0)
    assert "sk-env-secret-value" not in repr(gen) and "sk-env-secret-value" not in repr(vars(gen).get("pricing"))


def test_a_local_openai_compatible_server_needs_no_key():
    gen = generator_from_env({"CODECFLEET_LLM_PROVIDER": "openai", "CODECFLEET_LLM_BASE_URL": "http://127.0.0.1:11434/v1",
                              "CODECFLEET_LLM_MODEL": "llama3"})
    assert isinstance(gen, OpenAIGenerator)


def test_anthropic_takes_its_standard_key_variable():
    gen = generator_from_env({"CODECFLEET_LLM_PROVIDER": "anthropic", "CODECFLEET_LLM_MODEL": "claude-x",
                              "ANTHROPIC_API_KEY": "ak-1234"})
    assert isinstance(gen, AnthropicGenerator) and gen.base_url == "https://api.anthropic.com"


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"CODECFLEET_LLM_PROVIDER": "openai"}, "CODECFLEET_LLM_MODEL is required"),
        ({"CODECFLEET_LLM_PROVIDER": "anthropic", "CODECFLEET_LLM_MODEL": "m"}, "no API key"),
        ({"CODECFLEET_LLM_PROVIDER": "gemini"}, "must be one of openai, anthropic, offline"),
        ({"CODECFLEET_LLM_MODEL": "m"}, "CODECFLEET_LLM_PROVIDER is not"),
        ({"CODECFLEET_LLM_PROVIDER": "openai", "CODECFLEET_LLM_MODEL": "m", "OPENAI_API_KEY": "k",
          "CODECFLEET_LLM_TIMEOUT": "soon"}, "CODECFLEET_LLM_TIMEOUT must be a number"),
        ({"CODECFLEET_LLM_PROVIDER": "openai", "CODECFLEET_LLM_MODEL": "m", "OPENAI_API_KEY": "k",
          "CODECFLEET_LLM_PRICE_INPUT": "1"}, "both CODECFLEET_LLM_PRICE_INPUT"),
    ],
)
def test_incomplete_settings_name_the_variable_to_fix(environ, message):
    with pytest.raises(GenerationConfigError, match=message):
        generator_from_env(environ)
