"""CODECFLEET_LLM_MODELS: parsing, one client per model, a reproducible choice by weight."""

from __future__ import annotations

import pytest

from generation import (
    GenerationConfigError,
    GenerationRequest,
    OpenAIGenerator,
    WeightedGenerator,
    generator_from_env,
    parse_models,
)

ENV = {"CODECFLEET_LLM_PROVIDER": "openai", "CODECFLEET_LLM_BASE_URL": "http://127.0.0.1:9/v1"}


def test_models_and_weights_are_parsed_and_colons_in_names_survive():
    assert parse_models("a:3, llama3:8b ,qwen2.5-coder:7b:2,b") == [
        ("a", 3.0), ("llama3:8b", 1.0), ("qwen2.5-coder:7b", 2.0), ("b", 1.0)]
    for bad, message in (("a:0", "must be > 0"), ("a,a:2", "twice"), (" , ", "names no model")):
        with pytest.raises(GenerationConfigError, match=message):
            parse_models(bad)


def test_the_choice_follows_the_weights_and_is_reproducible():
    gen = generator_from_env({**ENV, "CODECFLEET_LLM_MODELS": "big:3,small:1"})
    assert isinstance(gen, WeightedGenerator) and gen.models == ["big", "small"]
    assert all(isinstance(g, OpenAIGenerator) and g.base_url == ENV["CODECFLEET_LLM_BASE_URL"] for g in gen.generators)
    picks = [gen.choose(GenerationRequest(index=i, seed=7)).model for i in range(2000)]
    again = generator_from_env({**ENV, "CODECFLEET_LLM_MODELS": "big:3,small:1"})
    assert picks == [again.choose(GenerationRequest(index=i, seed=7)).model for i in range(2000)]
    assert 0.70 < picks.count("big") / len(picks) < 0.80
    other = [gen.choose(GenerationRequest(index=i, seed=8)).model for i in range(2000)]
    assert other != picks  # the seed matters


def test_one_model_in_the_list_is_a_plain_client_and_both_variables_are_refused():
    gen = generator_from_env({**ENV, "CODECFLEET_LLM_MODELS": "only:2"})
    assert isinstance(gen, OpenAIGenerator) and gen.model == "only"
    with pytest.raises(GenerationConfigError, match="not both"):
        generator_from_env({**ENV, "CODECFLEET_LLM_MODELS": "a,b", "CODECFLEET_LLM_MODEL": "a"})
