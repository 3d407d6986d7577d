"""Candidate generation: LLM clients, prompts built from measured results, offline
evolution, replay and parent selection. Takes and returns plain data; imports nothing
of the database, the sandbox or the evaluation."""

from generation.base import (
    FAILURE_OUTCOME,
    CandidateInfo,
    FailureInfo,
    GenerationFailure,
    GenerationRequest,
    Generated,
    Generator,
    RatePoint,
    TaskSpec,
)
from generation.diffs import DiffError, apply_search_replace, has_edit_blocks
from generation.factory import GenerationConfigError, generator_from_env
from generation.llm import AnthropicGenerator, OpenAIGenerator, Pricing, interpret_reply
from generation.offline import OfflineError, OfflineGenerator
from generation.prompts import ALLOWED_IMPORTS, PromptBudgetError, build_prompt
from generation.replay import ReplayExhausted, ReplayGenerator, StoredReply
from generation.selection import Record, Selection, build_archive, select_parents

__all__ = [
    "ALLOWED_IMPORTS",
    "FAILURE_OUTCOME",
    "AnthropicGenerator",
    "CandidateInfo",
    "DiffError",
    "FailureInfo",
    "GenerationConfigError",
    "GenerationFailure",
    "GenerationRequest",
    "Generated",
    "Generator",
    "OfflineError",
    "OfflineGenerator",
    "OpenAIGenerator",
    "Pricing",
    "PromptBudgetError",
    "RatePoint",
    "Record",
    "ReplayExhausted",
    "ReplayGenerator",
    "Selection",
    "StoredReply",
    "TaskSpec",
    "apply_search_replace",
    "build_archive",
    "build_prompt",
    "generator_from_env",
    "has_edit_blocks",
    "interpret_reply",
    "select_parents",
]
