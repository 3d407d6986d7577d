"""Campaign prompts name the selected fitness metric and show every BD figure with the
overlap stored in its score row (never one the prompt computed itself)."""

from __future__ import annotations

import sqlalchemy as sa

from codecfleet.campaigns import campaign
from generation import Generated
from generation.prompts import request_prompt

TRAIN = "synthetic:mix@96x64"


class PromptOnly:
    """Builds the LLM prompt for each request (as the LLM generators do) and answers with
    the parent's code plus a comment."""

    name = "prompt-only"
    model = None

    def __init__(self):
        self.prompts = []

    def generate(self, request):
        prompt = request_prompt(request, "rewrite")
        self.prompts.append(prompt)
        return Generated(self.name, "rewrite", prompt, request.parent.code + f"\n# {request.index}\n",
                         parent_ids=request.parent_ids)


def test_prompts_name_the_metric_and_show_the_stored_overlap(embedded):
    gen = PromptOnly()
    campaign([TRAIN], gen, population=2, generations=1, name="ov", seed=1, frames=2, metric="psnr_yuv")
    prompts = gen.prompts
    engine = sa.create_engine(f"sqlite:///{embedded['CODECFLEET_DATA_DIR']}/codecfleet.db")
    with engine.connect() as conn:
        scores = conn.execute(sa.text(
            "SELECT s.anchor_codec, s.overlap, s.reliable, s.raw_bd_rate, s.bd_rate, s.metric FROM scores s "
            "JOIN experiments e ON e.id = s.experiment_id JOIN candidates c ON c.id = e.candidate_id "
            "WHERE c.generator LIKE 'seed:%' AND s.overlap IS NOT NULL")).all()
    engine.dispose()
    assert prompts and scores
    assert {s.metric for s in scores} == {"psnr_yuv"}
    for prompt in prompts:
        assert "Fitness metric: `psnr_yuv` = PSNR-YUV" in prompt
        assert "BD-rate (PSNR-YUV):" in prompt
        # each seed's stored figure, with its stored overlap, as the prompt words it
        for codec, overlap, reliable, raw, bd, _ in scores:
            if reliable:
                assert f"{codec} {bd:+.1f} % (overlap {100 * overlap:.0f} %)" in prompt
            else:
                assert (f"{codec} UNRELIABLE, not fitness: {raw:+.1f} % over only the shared part "
                        f"(overlap {100 * overlap:.0f} %") in prompt


def test_the_fleet_generation_request_carries_the_metric_and_the_stored_figures(embedded):
    """tasks.feedback.generation_request (the fleet's ``generate`` step): the experiment's
    metric reaches the task, and each top candidate its score rows' overlap and reliability."""
    from codecfleet import fleet
    from db import experiments
    from evaluation.reference import reference_code
    from db import engine
    from tasks.feedback import generation_request as _generation_request

    [handle] = fleet.submit_many([{"candidate": reference_code("intra_dct"), "clip": TRAIN, "frames": 2,
                                   "rate_points": 4, "anchors": ["x264", "x265"], "campaign": "fleetov",
                                   "metric": "psnr_yuv"}])
    with engine.transaction() as session:
        experiment = experiments.get_experiment(session, handle.id)
        assert experiment.status.value == "succeeded", experiment.error
        request = _generation_request(session, experiment)
        stored = {codec: (overlap, reliable, raw) for codec, overlap, reliable, raw in session.execute(sa.text(
            "SELECT anchor_codec, overlap, reliable, raw_bd_rate FROM scores WHERE experiment_id = :e "
            "AND metric = 'psnr_yuv'"), {"e": handle.id})}
    assert request.task.metric == "psnr_yuv"
    [top] = [c for c in request.top_k if c.candidate_id == experiment.candidate_id] or [None]
    if top is None:  # an unreliable figure is not on the leaderboard; nothing to rank
        assert not any(reliable for _, reliable, _ in stored.values())
        return
    assert {f.anchor: (f.overlap, f.reliable, f.raw_bd_rate) for f in top.bd_figures} == stored
    assert "Fitness metric: `psnr_yuv`" in request_prompt(request, "rewrite")
