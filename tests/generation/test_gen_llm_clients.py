"""The OpenAI and Anthropic generators against a loopback server speaking both protocols,
through the real SDKs: every server behaviour ends as a Generated with the right code or
the right error status and reason."""

from __future__ import annotations

import logging
import time

import pytest
from _gen_testlib import (
    DIFF_REPLY,
    GOOD_CODE,
    GOOD_REPLY,
    NO_CODE_REPLY,
    TRUNCATED_REPLY,
    WRONG_FUNCTIONS_REPLY,
)
from fake_llm_server import Hang, HttpError, Reply

from generation import (
    AnthropicGenerator,
    CandidateInfo,
    FailureInfo,
    GenerationRequest,
    OpenAIGenerator,
    Pricing,
)
from sandbox.sanitize import sanitize

KEY = "sk-test-SECRET-0123456789abcdef"
PROVIDERS = ["openai", "anthropic"]


def make(provider: str, server, **kw):
    options = dict(api_key=KEY, timeout=5.0, max_retries=2, backoff_base=0.01, backoff_max=0.05)
    options.update(kw)
    if provider == "openai":
        return OpenAIGenerator(server.openai_base_url, "fake-gpt", **options)
    return AnthropicGenerator(server.base_url, "fake-claude", **options)


PARENT = CandidateInfo(code=GOOD_CODE, candidate_id=7, family="zlib", bd_rate={"x264": 250.0})


@pytest.mark.parametrize("provider", PROVIDERS)
def test_good_code_becomes_the_candidate_with_tokens_and_cost(provider, server):
    server.script(Reply(GOOD_REPLY, prompt_tokens=1200, completion_tokens=300))
    gen = make(provider, server, pricing=Pricing(2.0, 10.0))
    out = gen.generate(GenerationRequest(index=0))
    assert out.ok, out.error
    assert out.mode == "rewrite"
    assert sanitize(out.code).ok
    assert out.raw_reply == GOOD_REPLY
    assert (out.prompt_tokens, out.completion_tokens) == (1200, 300)
    assert out.cost_usd == pytest.approx((1200 * 2.0 + 300 * 10.0) / 1e6)
    assert out.model.startswith("fake-")
    assert out.attempts == 1
    assert server.requests[0].prompt == out.prompt


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cost_is_unknown_without_pricing(provider, server):
    server.script(Reply(GOOD_REPLY))
    out = make(provider, server).generate(GenerationRequest())
    assert out.ok and out.cost_usd is None and out.prompt_tokens > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_diff_reply_is_applied_to_the_parent(provider, server):
    server.script(Reply(DIFF_REPLY))
    out = make(provider, server).generate(GenerationRequest(parents=(PARENT,), mode="diff"))
    assert out.ok, out.error
    assert out.mode == "diff"
    assert "LEVEL = 9" in out.code and "LEVEL = 6" not in out.code
    assert out.parent_ids == (7,)
    assert "<<<<<<< SEARCH" in server.requests[0].prompt and GOOD_CODE.strip() in server.requests[0].prompt


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_diff_that_does_not_match_the_parent_is_rejected_with_the_block(provider, server):
    server.script(Reply(DIFF_REPLY.replace("LEVEL = 6", "LEVEL = 5")))
    out = make(provider, server).generate(GenerationRequest(parents=(PARENT,), mode="diff"))
    assert out.error.status == "bad_diff" and out.error.outcome == "rejected"
    assert "block 1" in out.error.reason and "LEVEL = 5" in out.error.reason
    assert out.code is None and out.raw_reply is not None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reply_without_code_is_rejected_as_no_code(provider, server):
    server.script(Reply(NO_CODE_REPLY))
    out = make(provider, server).generate(GenerationRequest())
    assert out.error.status == "no_code"
    assert "no ```python block" in out.error.reason
    assert out.raw_reply == NO_CODE_REPLY


@pytest.mark.parametrize("provider", PROVIDERS)
def test_wrong_functions_pass_through_to_the_sanitizer_which_names_the_missing_one(provider, server):
    server.script(Reply(WRONG_FUNCTIONS_REPLY))
    out = make(provider, server).generate(GenerationRequest())
    assert out.ok
    verdict = sanitize(out.code)
    assert not verdict.ok and "missing the function compress_video_frame" in verdict.reason


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reply_cut_at_the_token_limit_is_rejected_as_truncated(provider, server):
    server.script(Reply(TRUNCATED_REPLY, finish="length"))
    out = make(provider, server, max_tokens=64).generate(GenerationRequest())
    assert out.error.status == "truncated"
    assert "64 tokens" in out.error.reason
    assert out.raw_reply == TRUNCATED_REPLY and out.completion_tokens is not None
    assert server.requests[0].body["max_tokens"] == 64


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_one_megabyte_reply_is_rejected_and_stored_cut(provider, server):
    huge = "```python\n" + "x = 1\n" * ((1 << 20) // 6 + 1) + "```\n"
    assert len(huge) > 1_000_000
    server.script(Reply(huge))
    out = make(provider, server).generate(GenerationRequest())
    assert out.error.status == "reply_too_long"
    assert f"{len(huge)} characters" in out.error.reason
    assert len(out.raw_reply) == 200_000


@pytest.mark.parametrize("provider", PROVIDERS)
def test_http_429_is_retried_a_bounded_number_of_times(provider, server):
    server.script(*[HttpError(429, "slow down", {"retry-after": "0"})] * 5)
    out = make(provider, server, max_retries=2).generate(GenerationRequest())
    assert out.error.status == "rate_limited" and out.error.outcome == "failed"
    assert "429" in out.error.reason and "slow down" in out.error.reason and "3 attempts" in out.error.reason
    assert out.attempts == 3
    assert len(server.requests) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_429_then_a_good_reply_succeeds_on_the_second_attempt(provider, server):
    server.script(HttpError(429, "slow down", {"retry-after": "0"}), Reply(GOOD_REPLY))
    out = make(provider, server).generate(GenerationRequest())
    assert out.ok and out.attempts == 2 and len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_http_500_is_retried_then_reported_as_a_server_error(provider, server):
    server.script(*[HttpError(500, "boom")] * 5)
    out = make(provider, server, max_retries=1).generate(GenerationRequest())
    assert out.error.status == "server_error"
    assert "HTTP 500" in out.error.reason and "boom" in out.error.reason
    assert len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_other_client_errors_are_not_retried(provider, server):
    server.script(HttpError(400, "bad model"), Reply(GOOD_REPLY))
    out = make(provider, server).generate(GenerationRequest())
    assert out.error.status == "http_error" and "HTTP 400" in out.error.reason
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_hung_server_times_out_within_the_client_timeout(provider, server):
    server.script(Hang(5.0))
    started = time.monotonic()
    out = make(provider, server, timeout=0.5).generate(GenerationRequest())
    elapsed = time.monotonic() - started
    assert out.error.status == "timeout" and out.error.outcome == "timed_out"
    assert "0.5 s" in out.error.reason
    assert elapsed < 0.5 + 1.5
    assert len(server.requests) == 1  # a timeout is not retried


@pytest.mark.parametrize("provider", PROVIDERS)
def test_nothing_listening_is_a_connection_error(provider, server):
    url = "http://127.0.0.1:9/v1" if provider == "openai" else "http://127.0.0.1:9"
    cls = OpenAIGenerator if provider == "openai" else AnthropicGenerator
    gen = cls(url, "m", api_key=KEY, timeout=2.0, max_retries=1, backoff_base=0.01)
    out = gen.generate(GenerationRequest())
    assert out.error.status == "connection_error" and out.attempts == 2
    assert "127.0.0.1:9" in out.error.reason


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_api_key_appears_nowhere_but_the_request_header(provider, server, caplog):
    caplog.set_level(logging.DEBUG)
    server.script(
        HttpError(401, "invalid key", echo_auth=True),
        HttpError(429, "slow", {"retry-after": "0"}),
        Reply(GOOD_REPLY),
    )
    gen = make(provider, server)
    failed = gen.generate(GenerationRequest(index=0))
    good = gen.generate(GenerationRequest(index=1, failures=(FailureInfo("failed", str(failed.error), "generate"),)))
    assert failed.error.status == "http_error" and "***" in failed.error.reason
    sent = server.requests[0].headers
    assert KEY in (sent.get("authorization", "") + sent.get("x-api-key", ""))  # the key did go to the server
    for out in (failed, good):
        assert KEY not in repr(out) and KEY not in out.prompt and KEY not in (out.raw_reply or "")
    assert KEY not in repr(gen)
    assert KEY not in caplog.text
    assert all(KEY not in r.prompt for r in server.requests)
