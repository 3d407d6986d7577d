"""Several models in one campaign (CODECFLEET_LLM_MODELS with weights) through the real
OpenAI SDK against the loopback server: each request goes to the model drawn from
(seed, index), every candidate records the model that wrote it, and the report's
per-model table shows candidates, accepted share, best BD-rate, tokens and cost."""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generation"))

from fake_llm_server import FakeLLMServer, Reply, Respond  # noqa: E402

from codecfleet.campaigns import campaign  # noqa: E402
from codecfleet.report import ReportOptions, build_report  # noqa: E402
from evaluation.reference import reference_code  # noqa: E402
from generation import GenerationRequest, generator_from_env  # noqa: E402


def _good(n: int) -> str:
    code = reference_code("intra_dct")
    start = code.index("\nMIN_SCALE = ") + 1
    end = code.index("\n", start)
    return "Variant.\n```python\n" + code[:start] + f"MIN_SCALE = {0.1 + 0.05 * n:.2f}" + code[end:] + "\n```\n"


def test_two_weighted_models_each_candidate_records_its_model_and_the_report_compares_them(
        embedded, tmp_path, monkeypatch):
    population, seed = 4, 0
    env = {"CODECFLEET_LLM_PROVIDER": "openai", "CODECFLEET_LLM_MODELS": "model-a:3,model-b:1",
           "CODECFLEET_LLM_API_KEY": "sk-test", "CODECFLEET_LLM_PRICE_INPUT": "2",
           "CODECFLEET_LLM_PRICE_OUTPUT": "10", "CODECFLEET_LLM_MAX_RETRIES": "0"}
    # The choice is a function of (seed, index): the same generator built twice agrees.
    choose = generator_from_env({**env, "CODECFLEET_LLM_BASE_URL": "http://127.0.0.1:9/v1"})
    expected = [choose.choose(GenerationRequest(index=i, seed=seed)).model for i in range(population)]
    assert set(expected) == {"model-a", "model-b"}, expected  # this seed draws both

    answered = []

    def answer(prompt: str):
        answered.append(prompt)
        return Reply(_good(len(answered)))

    with FakeLLMServer() as server:
        server.script(Respond(answer, repeat=True))
        for k, v in {**env, "CODECFLEET_LLM_BASE_URL": server.openai_base_url}.items():
            monkeypatch.setenv(k, v)
        campaign(["synthetic:mix@96x64"], None, population=population, generations=1, name="two models",
                 seeds=("intra_dct",), frames=2, seed=seed)
        sent = [r.body["model"] for r in server.requests]

    assert sent == expected
    engine = sa.create_engine(f"sqlite:///{embedded['CODECFLEET_DATA_DIR']}/codecfleet.db")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.generator, c.model, c.prompt_tokens, c.completion_tokens, c.cost_usd, e.status "
            "FROM experiments e JOIN candidates c ON c.id = e.candidate_id ORDER BY e.id")).all()
    engine.dispose()
    generated = [r for r in rows if not r.generator.startswith("seed:")]
    assert [r.model for r in generated] == expected
    assert all(r.generator == "openai" and r.cost_usd and r.prompt_tokens for r in generated)

    report = build_report(f"sqlite:///{embedded['CODECFLEET_DATA_DIR']}/codecfleet.db", tmp_path / "report",
                          campaign="two models", options=ReportOptions(crops=False, compute_anchors=False))
    by_model = {m.model: m for m in report.models}
    assert set(by_model) == {"model-a", "model-b"}
    for name, row in by_model.items():
        mine = [r for r in generated if r.model == name]
        assert row.candidates == len(mine)
        assert row.succeeded == sum(r.status == "succeeded" for r in mine)
        assert row.accepted_share == row.succeeded / row.candidates
        assert row.tokens == sum(r.prompt_tokens + r.completion_tokens for r in mine)
        assert abs(row.cost_usd - sum(r.cost_usd for r in mine)) < 1e-12
        assert row.best is not None
    html = report.html_path.read_text()
    assert "By model" in html and "tokens" in html and "cost USD" in html and "model-b" in html
