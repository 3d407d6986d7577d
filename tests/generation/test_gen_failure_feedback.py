"""A campaign through a misbehaving LLM server goes on: every candidate ends with a
status and a reason, and the next prompt shows the reasons of the earlier failures."""

from __future__ import annotations

import pytest
from _gen_testlib import DIFF_REPLY, GOOD_CODE, GOOD_REPLY, NO_CODE_REPLY, TRUNCATED_REPLY, WRONG_FUNCTIONS_REPLY
from fake_llm_server import Hang, HttpError, Reply

from generation import AnthropicGenerator, CandidateInfo, FailureInfo, GenerationRequest, OpenAIGenerator
from sandbox.sanitize import sanitize

SCRIPT = [
    ("good code", [Reply(GOOD_REPLY)], "accepted"),
    ("diff", [Reply(DIFF_REPLY)], "accepted"),
    ("no code", [Reply(NO_CODE_REPLY)], "rejected"),
    ("wrong functions", [Reply(WRONG_FUNCTIONS_REPLY)], "rejected"),
    ("truncated", [Reply(TRUNCATED_REPLY, finish="length")], "rejected"),
    ("1 MB", [Reply("y" * 1_100_000)], "rejected"),
    ("429", [HttpError(429, "quota", {"retry-after": "0"})] * 2, "failed"),
    ("500", [HttpError(500, "upstream exploded")] * 2, "failed"),
    ("hang", [Hang(3.0)], "timed_out"),
    ("good again", [Reply(GOOD_REPLY)], "accepted"),
]


def outcome(out) -> tuple[str, str | None, str | None]:
    """(status, stage, reason) as the campaign would record it."""
    if out.error is not None:
        return out.error.outcome, "generate", str(out.error)
    verdict = sanitize(out.code)
    if not verdict.ok:
        return "rejected", "sanitize", verdict.reason
    return "accepted", None, None


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_each_candidate_ends_with_a_status_and_the_next_prompt_shows_earlier_reasons(provider, server):
    for _, behaviours, _ in SCRIPT:
        server.script(*behaviours)
    options = dict(api_key="k-123456", timeout=0.5, max_retries=1, backoff_base=0.01)
    gen = (
        OpenAIGenerator(server.openai_base_url, "m", **options)
        if provider == "openai"
        else AnthropicGenerator(server.base_url, "m", **options)
    )
    parent = CandidateInfo(code=GOOD_CODE, candidate_id=1, family="zlib")
    failures: list[FailureInfo] = []
    seen_statuses = []
    for index, (name, _, expected) in enumerate(SCRIPT):
        n_before = len(server.requests)
        out = gen.generate(
            GenerationRequest(parents=(parent,), failures=tuple(reversed(failures[-8:])), mode="diff" if name == "diff" else "rewrite", index=index)
        )
        status, stage, reason = outcome(out)
        seen_statuses.append(status)
        assert status == expected, (name, out.error, reason)
        sent = server.requests[n_before].prompt
        for earlier in failures[-8:]:
            assert " ".join(earlier.reason.split())[:200] in sent, (name, earlier.reason)
        if status != "accepted":
            assert reason
            failures.append(FailureInfo(status, reason, stage, candidate_id=100 + index))
    assert seen_statuses[-1] == "accepted"  # the campaign went on to the end
    assert {f.status for f in failures} == {"rejected", "failed", "timed_out"}
