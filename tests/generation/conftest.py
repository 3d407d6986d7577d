"""Fixtures for the generation tests: the fake LLM server and the reference seeds."""

from __future__ import annotations

import pytest
from fake_llm_server import FakeLLMServer

from evaluation.reference import OFFLINE_SEEDS, reference_code


@pytest.fixture
def server():
    with FakeLLMServer() as s:
        yield s


@pytest.fixture(scope="session")
def seeds() -> dict[str, str]:
    return {name: reference_code(name) for name in OFFLINE_SEEDS}
