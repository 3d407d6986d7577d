"""Candidate generation: LLM clients, prompts built from measured results, offline
evolution, replay and parent selection. Takes and returns plain data; imports nothing
of the database, the sandbox or the evaluation."""

from generation.base import (
    DEFAULT_PROMPT_BUDGET_CHARS,
    FAILURE_OUTCOME,
    AnchorPoint,
    CandidateInfo,
    FailureInfo,
    GenerationFailure,
    GenerationRequest,
    Generated,
    Generator,
    LineageStep,
    Limits,
    RatePoint,
    TaskSpec,
)
from generation.diffs import DiffError, apply_search_replace, has_edit_blocks
from generation.factory import (
    GenerationConfigError,
    generator_from_env,
    manual_generator_from_env,
    parse_models,
    prompt_budget_from_env,
)
from generation.llm import AnthropicGenerator, OpenAIGenerator, Pricing, interpret_reply
from generation.manual import ManualGenerator
from generation.multi import WeightedGenerator
from generation.offline import OfflineError, OfflineGenerator
from generation.prompts import ALLOWED_IMPORTS, PromptBudgetError, build_prompt, change_summary, unified_diff
from generation.replay import ReplayExhausted, ReplayGenerator, StoredReply
from generation.selection import Record, Selection, build_archive, select_parents

__all__ = [
    "ALLOWED_IMPORTS",
    "DEFAULT_PROMPT_BUDGET_CHARS",
    "FAILURE_OUTCOME",
    "AnchorPoint",
    "AnthropicGenerator",
    "CandidateInfo",
    "DiffError",
    "FailureInfo",
    "GenerationConfigError",
    "GenerationFailure",
    "GenerationRequest",
    "Generated",
    "Generator",
    "LineageStep",
    "Limits",
    "ManualGenerator",
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
    "WeightedGenerator",
    "apply_search_replace",
    "build_archive",
    "build_prompt",
    "change_summary",
    "generator_from_env",
    "has_edit_blocks",
    "interpret_reply",
    "manual_generator_from_env",
    "parse_models",
    "prompt_budget_from_env",
    "select_parents",
    "unified_diff",
]
