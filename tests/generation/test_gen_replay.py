"""Replay: a campaign's stored replies give the same candidates again, with no LLM call."""

from __future__ import annotations

import pytest
from _gen_testlib import DIFF_REPLY, GOOD_CODE, GOOD_REPLY, validate
from fake_llm_server import HttpError, Reply

from generation import (
    CandidateInfo,
    GenerationFailure,
    GenerationRequest,
    OfflineGenerator,
    OpenAIGenerator,
    ReplayExhausted,
    ReplayGenerator,
    StoredReply,
)

PARENT = CandidateInfo(code=GOOD_CODE, candidate_id=1)


def stored(out, candidate_id=None) -> StoredReply:
    return StoredReply(raw_reply=out.raw_reply, prompt=out.prompt, generator=out.generator, model=out.model,
                       mode=out.mode, prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                       error=out.error, candidate_id=candidate_id)


def test_a_replayed_llm_campaign_gives_the_same_candidates_without_calls(server):
    server.script(Reply(GOOD_REPLY), Reply(DIFF_REPLY), HttpError(400, "bad"))
    live = OpenAIGenerator(server.openai_base_url, "m", api_key="k-1", timeout=2, max_retries=0)
    requests = [GenerationRequest(index=0), GenerationRequest(parents=(PARENT,), mode="diff", index=1),
                GenerationRequest(index=2)]
    originals = [live.generate(r) for r in requests]
    n_calls = len(server.requests)
    replay = ReplayGenerator([stored(o, 10 + i) for i, o in enumerate(originals)])
    again = [replay.generate(r) for r in requests]
    assert len(server.requests) == n_calls
    assert [a.code for a in again] == [o.code for o in originals]
    assert [a.mode for a in again] == ["rewrite", "diff", "rewrite"]
    assert again[2].error == originals[2].error
    assert all(a.generator == "replay:openai" and a.cost_usd == 0.0 for a in again)
    assert "prompt matches the original" in again[1].notes and "replayed from candidate 11" in again[1].notes


def test_a_replay_notices_when_the_prompt_it_would_send_differs():
    replay = ReplayGenerator([StoredReply(raw_reply=GOOD_REPLY, prompt="an older prompt", mode="rewrite")])
    out = replay.generate(GenerationRequest(index=0))
    assert out.ok and "prompt differs from the original" in out.notes


def test_offline_candidates_replay_as_their_programs(seeds):
    gen = OfflineGenerator(2, seeds, validate=validate)
    outs = [gen.generate(GenerationRequest(index=i)) for i in range(3)]
    again = [ReplayGenerator([stored(o) for o in outs]).generate(GenerationRequest(index=i)) for i in range(3)]
    assert [a.code for a in again] == [o.code for o in outs]
    assert [a.mode for a in again] == ["mutation"] * 3


def test_past_the_stored_replies_the_replay_is_exhausted():
    replay = ReplayGenerator([GOOD_REPLY])
    with pytest.raises(ReplayExhausted, match="request 1; the replay holds 1"):
        replay.generate(GenerationRequest(index=1))


def test_a_stored_failure_replays_as_the_same_failure():
    failure = GenerationFailure("timeout", "no reply from the LLM server within 60 s")
    out = ReplayGenerator([StoredReply(raw_reply=None, error=failure)]).generate(GenerationRequest())
    assert out.error == failure and out.code is None
