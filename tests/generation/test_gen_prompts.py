"""Prompts carry the task, the contract, the measured numbers and the failure reasons,
deterministically and within their size budget."""

from __future__ import annotations

import pytest
from _gen_testlib import GOOD_CODE

from generation import ALLOWED_IMPORTS, CandidateInfo, FailureInfo, RatePoint, TaskSpec, build_prompt
from generation.prompts import CONTRACT, PromptBudgetError
from sandbox.sanitize import ALLOWED_MODULES

TASK = TaskSpec(clip="synthetic:mix", width=176, height=144, n_frames=4, fps=30, rate_points=(0.1, 0.5, 0.9),
                anchors=("x264", "x265"))
POINTS = (
    RatePoint(0.1, kbps=310.25, psnr_y=29.51, psnr_rgb=28.4, ssim_y=0.8812, encode_fps=41.0, decode_fps=55.5),
    RatePoint(0.9, kbps=2210.0, psnr_y=41.07, psnr_rgb=39.9, ssim_y=0.9912, encode_fps=38.0, decode_fps=52.0),
)


def candidate(i: int, code: str | None = None) -> CandidateInfo:
    return CandidateInfo(
        code=code or GOOD_CODE.replace("LEVEL = 6", f"LEVEL = {i}"),
        candidate_id=i,
        family="zlib",
        bd_rate={"x264": 100.0 + i, "x265": 150.5 + i},
        points=POINTS,
    )


FAILURES = (
    FailureInfo("rejected", "line 3: import of os is not allowed", "sanitize", 21, snippet="import os"),
    FailureInfo("failed", "compress_video_frame raised ValueError on frame 2: boom", "encode", 22),
    FailureInfo("timed_out", "decode took longer than 60 s", "decode", 23),
    FailureInfo("duplicate_output", "bitstream identical to experiment 5", "score", 24),
)


def test_the_prompt_states_the_contract_and_the_allowed_imports():
    text = build_prompt(TASK, None, [], [], "rewrite", 50_000)
    assert CONTRACT in text
    assert "def compress_video_frame(frame: np.ndarray, frame_index: int, config: dict) -> bytes" in text
    for module in ("numpy", "torch", "zlib", "lzma", "bz2", "struct"):
        assert module in text
    assert "exactly one ```python fenced block" in text
    assert "176x144, 4 frames at 30 fps" in text and "[0.1, 0.5, 0.9]" in text


def test_the_allowed_import_list_matches_the_sanitizer():
    assert set(ALLOWED_IMPORTS) == set(ALLOWED_MODULES)


def test_the_prompt_shows_measured_numbers_of_parent_and_top_k():
    text = build_prompt(TASK, candidate(1), [candidate(2), candidate(3)], [], "rewrite", 50_000)
    assert "### candidate 1" in text and "### candidate 3" in text
    assert "x264 +102.0 %" in text and "x265 +152.5 %" in text
    assert "| 0.1 | 310.2 | 29.51 | 28.40 | 0.8812 | 41.0 | 55.5 |" in text
    assert "LEVEL = 3" in text  # top-K code


def test_the_prompt_shows_failure_reasons_stages_and_snippets():
    text = build_prompt(TASK, candidate(1), [], FAILURES, "rewrite", 50_000)
    assert "candidate 21: rejected at sanitize." in text
    assert "```text\nline 3: import of os is not allowed\n```" in text
    assert "candidate 22: failed at encode." in text
    assert "compress_video_frame raised ValueError on frame 2: boom" in text
    assert "timed_out at decode" in text and "duplicate_output at score" in text
    assert "import os" in text


def test_a_diff_prompt_asks_for_search_replace_against_the_parent():
    text = build_prompt(TASK, candidate(1), [], [], "diff", 50_000)
    assert "<<<<<<< SEARCH" in text and ">>>>>>> REPLACE" in text
    assert candidate(1).code.strip() in text
    with pytest.raises(ValueError, match="needs a parent"):
        build_prompt(TASK, None, [], [], "diff", 50_000)


def test_the_same_inputs_give_the_same_prompt():
    args = (TASK, candidate(1), [candidate(2)], FAILURES, "rewrite", 50_000)
    assert build_prompt(*args) == build_prompt(*args)


def test_over_budget_the_worst_top_k_code_goes_first_and_the_parent_stays():
    top = [candidate(i, GOOD_CODE.replace("LEVEL = 6", f"LEVEL = {i}") + "#" * 2000 + "\n") for i in range(2, 6)]
    full = build_prompt(TASK, candidate(1), top, FAILURES, "rewrite", 1_000_000)
    budget = len(full) - 3000
    text = build_prompt(TASK, candidate(1), top, FAILURES, "rewrite", budget)
    assert len(text) <= budget
    assert "(the code of candidate 5 is not shown: prompt size budget)" in text
    assert "LEVEL = 2" in text  # the best top-K candidate keeps its code
    assert candidate(1).code.strip() in text
    assert "import of os is not allowed" in text  # failure reasons outrank top-K code
    assert f"This prompt is limited to {budget} characters" in text


def test_a_tight_budget_keeps_the_newest_failures_longest():
    base = build_prompt(TASK, candidate(1), [], [], "rewrite", 1_000_000)
    text = build_prompt(TASK, candidate(1), [], FAILURES, "rewrite", len(base) + 700)
    assert len(text) <= len(base) + 700
    assert "import of os is not allowed" in text
    assert "```text\nimport os" not in text  # snippets go before reasons
    assert "bitstream identical to experiment 5" not in text


def test_a_budget_smaller_than_the_parent_is_an_error_saying_how_much_is_needed():
    with pytest.raises(PromptBudgetError) as err:
        build_prompt(TASK, candidate(1), [], [], "rewrite", 500)
    assert err.value.needed > 500 and "500" in str(err.value)
