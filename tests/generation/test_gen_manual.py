"""ManualGenerator on its own: the request files, an answer read only once it holds still,
SEARCH/REPLACE answers applied to the parent, a timeout as a failure, settings from the
environment."""

from __future__ import annotations

import json

import pytest

from generation import (
    CandidateInfo,
    GenerationConfigError,
    GenerationRequest,
    ManualGenerator,
    manual_generator_from_env,
)

PARENT = "import numpy as np\n\nSCALE = 8\n\ndef compress_video_frame(frame, frame_index, config):\n    return b''\n"


def _request(index=0, parent=True):
    return GenerationRequest(parents=(CandidateInfo(code=PARENT, candidate_id=4),) if parent else (), index=index)


def test_an_answer_written_ahead_is_used_and_edits_apply_to_the_parent(tmp_path):
    (tmp_path / "answer-c_1-0007.md").write_text(
        "Coarser.\n<<<<<<< SEARCH\nSCALE = 8\n=======\nSCALE = 12\n>>>>>>> REPLACE\n")
    gen = ManualGenerator(tmp_path, campaign="c/1", timeout=0, poll=0.01)
    out = gen.generate(_request(7))
    assert out.ok and out.mode == "diff" and "SCALE = 12" in out.code and out.parent_ids == (4,)
    assert (tmp_path / "request-c_1-0007.md").read_text() == out.prompt
    meta = json.loads((tmp_path / "request-c_1-0007.json").read_text())
    assert meta["answer_file"] == "answer-c_1-0007.md" and meta["index"] == 7 and meta["parent_ids"] == [4]
    assert out.generator == "manual" and out.model == "manual"


def test_a_growing_answer_is_read_only_once_it_holds_still(tmp_path):
    answer = tmp_path / "answer-g-0000.md"
    parts = iter(["```python\nimport numpy", " as np\n", "X = 1\n```\n"])

    def sleep(_seconds):  # the "person" writes one more part between looks
        part = next(parts, None)
        if part is not None:
            with answer.open("a") as f:
                f.write(part)

    out = ManualGenerator(tmp_path, campaign="g", timeout=60, poll=0.01, sleep=sleep).generate(_request(parent=False))
    assert out.ok and out.raw_reply == "```python\nimport numpy as np\nX = 1\n```\n"


def test_no_answer_within_the_timeout_is_a_failed_generation(tmp_path):
    out = ManualGenerator(tmp_path, campaign="t", timeout=0.05, poll=0.01).generate(_request())
    assert not out.ok and out.error.status == "timeout" and out.error.outcome == "timed_out"
    assert "answer-t-0000.md" in out.error.reason and out.prompt


def test_settings_from_the_environment(tmp_path):
    gen = manual_generator_from_env(str(tmp_path / "d"), {
        "CODECFLEET_MANUAL_TIMEOUT_SECONDS": "90", "CODECFLEET_MANUAL_POLL_SECONDS": "0.5",
        "CODECFLEET_LLM_MAX_TOKENS": "4000", "CODECFLEET_LLM_MODE": "diff"}, campaign="x")
    assert (gen.timeout, gen.poll, gen.max_tokens, gen.default_mode, gen.campaign) == (90, 0.5, 4000, "diff", "x")
    assert (tmp_path / "d").is_dir()
    with pytest.raises(GenerationConfigError, match="POLL"):
        manual_generator_from_env(str(tmp_path), {"CODECFLEET_MANUAL_POLL_SECONDS": "0"})
