"""A campaign driven by an LLM over HTTP (a loopback server speaking the OpenAI protocol):
good code, junk, a 500, a hang. The campaign goes on, each candidate ends with the right
status and reason in the database, the next prompt shows those reasons, and the key is
stored nowhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generation"))

from fake_llm_server import FakeLLMServer, Hang, HttpError, Reply  # noqa: E402

from codecfleet.campaigns import campaign  # noqa: E402
from evaluation.reference import reference_code  # noqa: E402
from generation import OpenAIGenerator, Pricing  # noqa: E402

KEY = "sk-canary-3f9c2d7e61"


def _good(scale: str) -> str:
    code = reference_code("intra_dct")
    start = code.index("\nMIN_SCALE = ") + 1
    end = code.index("\n", start)
    return "A variant with a finer quantiser floor.\n```python\n" + code[:start] + f"MIN_SCALE = {scale}" + code[end:] + "\n```\n"


def test_llm_campaign_records_each_outcome_and_feeds_the_reasons_back(embedded):
    with FakeLLMServer() as server:
        server.script(Reply(_good("0.2")))
        server.script(Reply("Sorry, I cannot write codecs."))
        server.script(HttpError(500, "upstream exploded"), HttpError(500, "upstream exploded"))
        server.script(Hang(3.0))
        server.script(Reply(_good("0.15")))
        generator = OpenAIGenerator(server.openai_base_url, "fake-model", api_key=KEY, timeout=1.0,
                                    max_retries=1, backoff_base=0.01, pricing=Pricing(3.0, 15.0))
        report = campaign(["synthetic:mix@96x64"], generator, population=5, generations=1, name="llm",
                          seeds=("intra_dct",), frames=2)
        last_prompt = server.requests[-1].prompt

    engine = sa.create_engine(f"sqlite:///{embedded['CODECFLEET_DATA_DIR']}/codecfleet.db")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.generator, c.model, c.prompt, c.raw_reply, c.prompt_tokens, c.completion_tokens, c.cost_usd, "
            "c.mode, e.status, e.failure_stage, e.error "
            "FROM experiments e JOIN candidates c ON c.id = e.candidate_id ORDER BY e.id"
        )).all()
        everything = " ".join(str(v) for table in ("candidates", "experiments")
                              for row in conn.execute(sa.text(f"SELECT * FROM {table}")) for v in row)
    engine.dispose()

    generated = [r for r in rows if not r.generator.startswith("seed:")]
    assert [(r.status, r.failure_stage) for r in generated] == [
        ("succeeded", None),
        ("rejected", "generate"),
        ("failed", "generate"),
        ("timed_out", "generate"),
        ("succeeded", None),
    ]
    assert "no code" in generated[1].error.lower() or "python" in generated[1].error.lower()
    assert "500" in generated[2].error
    assert "time" in generated[3].error.lower()
    for r in generated:
        assert r.model == "fake-model" and r.prompt
    assert generated[0].raw_reply.startswith("A variant") and generated[0].prompt_tokens
    # cost from the reply's own token counts at the configured prices, stored per candidate
    expected = (generated[0].prompt_tokens * 3.0 + generated[0].completion_tokens * 15.0) / 1e6
    assert generated[0].cost_usd == pytest.approx(expected) and generated[0].mode == "rewrite"
    assert report.spent["money_usd"] == pytest.approx(sum(r.cost_usd or 0 for r in generated))
    for r in generated[1:4]:  # the reasons the last prompt was shown
        assert " ".join(r.error.split())[:120] in " ".join(last_prompt.split()), r.error
    assert KEY not in everything and KEY not in last_prompt
    assert report.generations[-1].candidates == 5
