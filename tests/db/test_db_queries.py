"""Lookups: dedup before running, leaderboard, prompt material, anchors, lineage."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from db_factories import finished, later, make_clip, make_experiment, points, score, sha
from sqlalchemy.orm import Session

from db import catalog, experiments, hashing, rankings, results
from db.models import AnchorResult, Candidate, Clip, Experiment, ExperimentStatus

S = ExperimentStatus
CONFIG = {"device": "cpu", "width": 176, "height": 144, "fps": 30.0}


def test_config_hash_ignores_key_order_but_not_values() -> None:
    a = hashing.config_hash({"width": 176, "height": 144}, [0.2, 0.5])
    assert a == hashing.config_hash({"height": 144, "width": 176}, (0.2, 0.5))
    assert a != hashing.config_hash({"width": 176, "height": 144}, [0.2, 0.6])
    assert len(a) == 64


def test_the_same_code_on_the_same_clip_and_config_finds_the_finished_experiment(session: Session) -> None:
    clip = make_clip(session)
    original = finished(session, clip, -5.0, code="same code")

    found = results.find_reusable_experiment(
        session,
        ast_hash=sha("same code"),
        clip_sha256=clip.sha256,
        config_hash=hashing.config_hash(CONFIG, original.rate_points),
    )

    assert found is not None and found.id == original.id


@pytest.mark.parametrize("differs", ["code", "clip", "config", "metrics_version"])
def test_no_reuse_when_code_clip_config_or_metrics_differ(session: Session, differs: str) -> None:
    clip = make_clip(session)
    original = finished(session, clip, -5.0, code="same code")
    lookup = dict(
        ast_hash=sha("same code"), clip_sha256=clip.sha256, config_hash=hashing.config_hash(CONFIG, original.rate_points)
    )
    if differs == "code":
        lookup["ast_hash"] = sha("other code")
    elif differs == "clip":
        lookup["clip_sha256"] = make_clip(session, "pan").sha256
    elif differs == "config":
        lookup["config_hash"] = hashing.config_hash({**CONFIG, "device": "cuda"}, original.rate_points)
    else:
        lookup["metrics_version"] = "cf-metrics-next"

    assert results.find_reusable_experiment(session, **lookup) is None


def test_a_failed_experiment_is_never_reused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, code="broken", to=S.ENCODING)
    experiments.transition(session, experiment.id, S.FAILED, failure_stage="decode", error="boom")

    assert (
        results.find_reusable_experiment(
            session,
            ast_hash=sha("broken"),
            clip_sha256=clip.sha256,
            config_hash=experiment.config_hash,
        )
        is None
    )


def test_reusing_a_result_runs_nothing_and_reads_the_original_numbers(session: Session) -> None:
    clip = make_clip(session)
    original = finished(session, clip, -5.0, code="same code")
    again = make_experiment(session, clip, code="same code", to=S.SANITIZING)

    assert results.reuse_result(session, again.id, original.id, now=later(9)) is True
    assert results.reuse_result(session, again.id, original.id) is False

    session.refresh(again)
    assert (again.status, again.reused_from_id, again.finished_at) == (S.SUCCEEDED, original.id, later(9))
    assert again.artifacts == []
    numbers = results.experiment_measurements(session, again.id)
    assert [m.id for m in numbers] == [m.id for m in results.experiment_measurements(session, original.id)]


def test_a_reused_result_is_not_itself_reused(session: Session) -> None:
    clip = make_clip(session)
    original = finished(session, clip, -5.0, code="same code")
    again = make_experiment(session, clip, code="same code", to=S.SANITIZING)
    results.reuse_result(session, again.id, original.id)
    third = make_experiment(session, clip, code="same code", to=S.SANITIZING)

    with pytest.raises(ValueError, match="not an original succeeded result"):
        results.reuse_result(session, third.id, again.id)
    found = results.find_reusable_experiment(
        session, ast_hash=sha("same code"), clip_sha256=clip.sha256, config_hash=original.config_hash
    )
    assert found is not None and found.id == original.id


def test_leaderboard_ranks_candidates_by_their_best_bd_rate_with_the_points_behind_it(session: Session) -> None:
    clip = make_clip(session)
    good = finished(session, clip, -20.0, code="good")
    finished(session, clip, 10.0, code="worse")
    best_of_three = finished(session, clip, 4.0, code="middle")
    # A second, weaker run of the "good" candidate must not give it a second row.
    again = make_experiment(session, clip, code="good again", to=S.SCORING, config={"device": "cuda"})
    session.execute(sa.update(Experiment).where(Experiment.id == again.id).values(candidate_id=good.candidate_id))
    results.record_result(session, again.id, points(again, clip), [score(30.0)])

    board = rankings.leaderboard(session, clip_sha256=clip.sha256)

    assert [(r.rank, r.bd_rate) for r in board] == [(1, -20.0), (2, 4.0), (3, 10.0)]
    assert board[0].experiment_id == good.id and board[1].experiment_id == best_of_three.id
    assert [p.rate_index for p in board[0].points] == [0, 1, 2]
    assert board[0].points[1].kbps == pytest.approx(points(good, clip)[1].kbps)
    assert board[0].points[1].psnr_y == points(good, clip)[1].psnr_y
    assert board[0].code is None


def test_leaderboard_finds_later_candidates_when_one_dominates_the_first_pages(session: Session) -> None:
    clip = make_clip(session)
    dominant = finished(session, clip, -30.0, code="dominant")
    for i in range(4):
        extra = make_experiment(session, clip, code=f"dominant variant {i}", to=S.SCORING, config={"i": i})
        session.execute(
            sa.update(Experiment).where(Experiment.id == extra.id).values(candidate_id=dominant.candidate_id)
        )
        results.record_result(session, extra.id, points(extra, clip), [score(-29.0 + i)])
    runner_up = finished(session, clip, 1.0, code="runner up")

    board = rankings.leaderboard(session, clip_sha256=clip.sha256, limit=2, page_size=2)

    assert [r.experiment_id for r in board] == [dominant.id, runner_up.id]


def test_leaderboard_is_per_clip_per_campaign_and_per_anchor(session: Session) -> None:
    mix, pan = make_clip(session, "mix"), make_clip(session, "pan")
    campaign = catalog.create_campaign(session, "dct-variants")
    in_campaign = finished(session, mix, -1.0, code="c1", campaign_id=campaign.id)
    elsewhere = finished(session, pan, -50.0, code="c2")

    assert [r.experiment_id for r in rankings.leaderboard(session, clip_sha256=mix.sha256)] == [in_campaign.id]
    assert [r.experiment_id for r in rankings.leaderboard(session, campaign_id=campaign.id)] == [in_campaign.id]
    assert [r.experiment_id for r in rankings.leaderboard(session)] == [elsewhere.id, in_campaign.id]
    assert rankings.leaderboard(session, anchor="x265") == []
    assert rankings.leaderboard(session, clip_sha256=sha("unknown clip")) == []


def test_a_score_that_could_not_be_computed_is_kept_with_its_reason_but_not_ranked(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)
    results.record_result(session, experiment.id, points(experiment, clip), [score(None, reason="curves do not overlap")])

    assert rankings.leaderboard(session) == []
    stored = session.get(Experiment, experiment.id).scores[0]
    assert (stored.bd_rate, stored.reason) == (None, "curves do not overlap")


def test_top_k_candidates_carry_their_code_and_measured_numbers(session: Session) -> None:
    clip = make_clip(session)
    for i, bd in enumerate([5.0, -2.0, -9.0, 12.0]):
        finished(session, clip, bd, code=f"code {i}")

    top = rankings.top_k_candidates(session, 2, clip_sha256=clip.sha256)

    assert [(t.bd_rate, t.code) for t in top] == [(-9.0, "code 2"), (-2.0, "code 1")]
    assert all(len(t.points) == 3 and t.points[0].psnr_y > 0 for t in top)


def test_recent_failures_come_newest_first_with_stage_and_reason(session: Session) -> None:
    clip = make_clip(session)
    rejected = make_experiment(session, clip, code="r", to=S.SANITIZING)
    experiments.transition(session, rejected.id, S.REJECTED, error="imports subprocess", now=later(1))
    failed = make_experiment(session, clip, code="f", to=S.ENCODING)
    experiments.transition(session, failed.id, S.FAILED, failure_stage="decode", error="shape mismatch", now=later(3))
    cancelled = make_experiment(session, clip, code="c", to=S.ENCODING)
    experiments.transition(session, cancelled.id, S.CANCELLED, now=later(4))
    finished(session, clip, 1.0, code="ok", now=later(5))

    failures = rankings.recent_failures(session, 10)

    assert [(f.experiment_id, f.status, f.failure_stage, f.error) for f in failures] == [
        (failed.id, S.FAILED, "decode", "shape mismatch"),
        (rejected.id, S.REJECTED, None, "imports subprocess"),
    ]
    assert [f.experiment_id for f in rankings.recent_failures(session, 1)] == [failed.id]


def _anchor(session: Session, clip_sha256: str, crf: int, *, anchor_version: str = "a1") -> AnchorResult:
    return results.record_anchor_result(
        session, clip_sha256=clip_sha256, codec="x264", crf=crf, settings={"preset": "medium", "tune": "psnr"},
        n_bytes=1000 + crf, kbps=60.0 - crf, bpp=0.1, psnr_rgb=40.0 - crf / 10, psnr_y=41.0 - crf / 10,
        ssim_y=0.95, anchor_version=anchor_version, metrics_version="m1",
    )


def test_an_anchor_point_is_stored_once_per_clip_codec_crf_and_settings(session: Session) -> None:
    clip = make_clip(session)
    first = _anchor(session, clip.sha256, 23)
    again = _anchor(session, clip.sha256, 23)
    _anchor(session, clip.sha256, 33)
    _anchor(session, clip.sha256, 23, anchor_version="a2")

    assert again.id == first.id
    curve = results.anchor_results(
        session, clip.sha256, "x264", settings={"tune": "psnr", "preset": "medium"}, anchor_version="a1",
        metrics_version="m1",
    )
    assert [p.crf for p in curve] == [23, 33]
    assert session.scalar(sa.select(sa.func.count()).select_from(AnchorResult)) == 3


def test_registering_a_clip_twice_returns_the_same_row(session: Session) -> None:
    first = make_clip(session, "mix")
    again = make_clip(session, "mix")

    assert again.id == first.id
    assert session.scalar(sa.select(sa.func.count()).select_from(Clip)) == 1


def test_a_candidate_remembers_its_parents(session: Session) -> None:
    mother = catalog.create_candidate(session, generator="user", code="a", ast_hash=sha("a"))
    father = catalog.create_candidate(session, generator="user", code="b", ast_hash=sha("b"))

    child = catalog.create_candidate(
        session, generator="anthropic", model="claude-x", prompt="improve", raw_reply="```python\nc\n```",
        prompt_tokens=120, completion_tokens=80, parent_ids=[mother.id, father.id],
    )
    session.commit()
    session.expire_all()

    assert sorted(p.id for p in session.get(Candidate, child.id).parents) == [mother.id, father.id]


def test_a_generated_candidate_gets_its_verdict_and_code_later(session: Session) -> None:
    candidate = catalog.create_candidate(session, generator="openai", raw_reply="```python\ncode\n```")
    clip = make_clip(session)
    experiment = experiments.create_experiment(session, clip_id=clip.id, config=CONFIG, rate_points=[0.5])
    experiments.attach_candidate(session, experiment.id, candidate.id)

    catalog.record_sanitizer_verdict(session, candidate.id, accepted=True, code="code", ast_hash=sha("code"))

    session.refresh(candidate)
    assert (candidate.sanitizer_verdict, candidate.code) == ("accepted", "code")
    with pytest.raises(ValueError, match="needs a reason"):
        catalog.record_sanitizer_verdict(session, candidate.id, accepted=False)
    other = catalog.create_candidate(session, generator="openai")
    with pytest.raises(ValueError, match="already has candidate"):
        experiments.attach_candidate(session, experiment.id, other.id)
