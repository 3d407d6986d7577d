"""Recording results: atomic, and one output hash is measured once."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace

import pytest
import sqlalchemy as sa
from db_factories import make_clip, make_experiment, points, score
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import experiments, results as db_results
from db.models import Artifact, Experiment, ExperimentPoint, ExperimentStatus, Measurement, Score
from db.session import make_engine, session_factory, session_scope

S = ExperimentStatus


def count(session: Session, model: type, **where: object) -> int:
    query = sa.select(sa.func.count()).select_from(model)
    for column, value in where.items():
        query = query.where(getattr(model, column) == value)
    return session.scalar(query)


def test_recording_stores_one_artifact_and_measurement_per_rate_point_and_succeeds(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)

    outcome = db_results.record_result(session, experiment.id, points(experiment, clip), [score(-12.5)])
    session.commit()

    assert outcome.status is S.SUCCEEDED and len(outcome.measurement_ids) == 3
    assert session.get(Experiment, experiment.id).status is S.SUCCEEDED
    stored = db_results.experiment_measurements(session, experiment.id)
    assert [m.rate_index for m in stored] == [0, 1, 2]
    assert [m.artifact.sha256 for m in stored] == [p.sha256 for p in points(experiment, clip)]
    assert all(m.artifact.experiment_id == experiment.id for m in stored)
    assert session.scalar(sa.select(Score.bd_rate).where(Score.experiment_id == experiment.id)) == -12.5


def test_an_output_already_decoded_by_the_same_decoder_at_every_point_is_a_duplicate(session: Session) -> None:
    clip = make_clip(session)
    original = make_experiment(session, clip, code="same decoder", to=S.SCORING)
    copy = make_experiment(session, clip, code="same decoder", to=S.SCORING)
    db_results.record_result(session, original.id, points(original, clip, tag="cached-file"), [score(-3.0)])
    session.commit()

    outcome = db_results.record_result(session, copy.id, points(copy, clip, tag="cached-file"), [score(-3.0)])
    session.commit()

    assert outcome.status is S.DUPLICATE_OUTPUT and outcome.duplicate_of_id == original.id
    stored = session.get(Experiment, copy.id)
    assert (stored.status, stored.duplicate_of_id) == (S.DUPLICATE_OUTPUT, original.id)
    assert f"by experiment {original.id}" in stored.error and "not measured twice" in stored.error
    # Every rate point says where its numbers come from; nothing was measured again.
    links = session.scalars(sa.select(ExperimentPoint).where(ExperimentPoint.experiment_id == copy.id)).all()
    assert sorted(link.reused_from_id for link in links) == [original.id] * 3
    assert count(session, Artifact, experiment_id=copy.id) == 0
    assert count(session, Score, experiment_id=copy.id) == 0
    assert count(session, Measurement) == 3
    assert outcome.measurement_ids == db_results.record_result(session, original.id, points(original, clip, tag="cached-file")).measurement_ids


def test_a_partial_duplicate_reuses_the_repeated_point_and_measures_the_rest(session: Session) -> None:
    clip = make_clip(session)
    original = make_experiment(session, clip, code="same decoder", to=S.SCORING)
    child = make_experiment(session, clip, code="same decoder", to=S.SCORING)
    db_results.record_result(session, original.id, points(original, clip))
    session.commit()
    mixed = points(child, clip)
    mixed[0] = replace(points(original, clip)[0], path=mixed[0].path)

    outcome = db_results.record_result(session, child.id, mixed, [score(-1.0)])
    session.commit()

    assert outcome.status is S.SUCCEEDED
    stored = db_results.experiment_measurements(session, child.id)
    assert [m.reused_from_id for m in stored] == [original.id, None, None]
    assert stored[0].id == db_results.experiment_measurements(session, original.id)[0].id
    assert count(session, Measurement) == 3 + 2
    assert count(session, Artifact) == 3 + 2  # the shared bitstream is stored once
    assert count(session, Score, experiment_id=child.id) == 1


def test_the_same_bytes_from_a_different_decoder_are_measured_anew(session: Session) -> None:
    clip = make_clip(session)
    parent = make_experiment(session, clip, code="decoder a", to=S.SCORING)
    child = make_experiment(session, clip, code="decoder b", to=S.SCORING)
    db_results.record_result(session, parent.id, points(parent, clip, tag="same bytes"))
    session.commit()

    outcome = db_results.record_result(session, child.id, points(child, clip, tag="same bytes", psnr=30.0))
    session.commit()

    assert outcome.status is S.SUCCEEDED
    stored = db_results.experiment_measurements(session, child.id)
    assert [m.reused_from_id for m in stored] == [None, None, None]
    assert [m.psnr_y for m in stored] == [30.0, 33.0, 36.0]
    # One bitstream row per distinct file, one measurement per (file, decoder).
    assert count(session, Artifact) == 3 and count(session, Measurement) == 6
    assert {m.artifact.id for m in stored} == {m.artifact.id for m in db_results.experiment_measurements(session, parent.id)}


def test_copied_numbers_without_a_stored_measurement_are_refused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)
    claimed = points(experiment, clip)
    claimed[1] = replace(claimed[1], measured=False)

    with pytest.raises(db_results.ResultMismatch, match="not stored"):
        db_results.record_result(session, experiment.id, claimed)


def test_recording_is_all_or_nothing_when_one_number_is_invalid(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)
    session.commit()
    bad = points(experiment, clip)
    bad[1] = replace(bad[1], psnr_y=float("inf"))

    with pytest.raises(IntegrityError):
        db_results.record_result(session, experiment.id, bad)
    session.rollback()

    assert count(session, Artifact) == 0 and count(session, Measurement) == 0
    assert session.scalar(sa.select(Experiment.status).where(Experiment.id == experiment.id)) is S.SCORING


def test_identical_bitstreams_leaving_too_few_distinct_points_fail_the_experiment(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)
    same = [replace(p, sha256=points(experiment, clip)[0].sha256) for p in points(experiment, clip)]

    outcome = db_results.record_result(session, experiment.id, same)

    assert outcome.status is S.FAILED
    assert "ignores the quality setting" in outcome.reason and "fewer than the 4 BD-rate needs" in outcome.reason
    stored = session.get(Experiment, experiment.id)
    assert (stored.failure_stage, stored.error) == ("verify", outcome.reason)
    assert count(session, Artifact) == 0


def test_identical_rate_points_within_one_experiment_are_one_curve_point(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, rate_points=(0.1, 0.3, 0.5, 0.7, 0.9), to=S.SCORING)
    pts = points(experiment, clip)
    pts[4] = replace(pts[3], rate_index=4, quality=0.9, path=pts[4].path)  # saturates at high quality

    outcome = db_results.record_result(session, experiment.id, pts, [score(-2.0)])
    session.commit()

    assert outcome.status is S.SUCCEEDED
    stored = db_results.experiment_measurements(session, experiment.id)
    assert [m.same_as_rate_index for m in stored] == [None, None, None, None, 3]
    assert [m.quality for m in stored] == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert stored[4].id == stored[3].id and stored[4].reused_from_id is None
    assert count(session, Measurement) == 4 and count(session, Artifact) == 4


def test_a_redelivered_record_returns_the_stored_outcome_without_writing(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)
    first = db_results.record_result(session, experiment.id, points(experiment, clip))
    session.commit()

    again = db_results.record_result(session, experiment.id, points(experiment, clip))

    assert again == first
    assert count(session, Measurement) == 3


def test_results_measured_on_another_clip_are_refused(session: Session) -> None:
    clip, other = make_clip(session, "mix"), make_clip(session, "pan")
    experiment = make_experiment(session, clip, to=S.SCORING)

    with pytest.raises(db_results.ResultMismatch, match="measured on clip"):
        db_results.record_result(session, experiment.id, points(experiment, other))


def test_results_missing_a_rate_point_are_refused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)

    with pytest.raises(db_results.ResultMismatch, match=r"rate points \[0, 1, 2\], results cover \[0, 1\]"):
        db_results.record_result(session, experiment.id, points(experiment, clip)[:2])


def test_results_for_an_experiment_not_scoring_are_refused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.ENCODING)
    experiments.transition(session, experiment.id, S.CANCELLED)

    with pytest.raises(experiments.IllegalTransition, match="cancelled -> succeeded"):
        db_results.record_result(session, experiment.id, points(experiment, clip))


# --- two processes, one output hash --------------------------------------------


ROUNDS = 3


def _record_in_process(url: str, jobs: list, barrier, results) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    factory = session_factory(engine)
    for experiment_id, rate_points in jobs:
        barrier.wait(timeout=60)  # both processes record the same hash at the same moment
        with session_scope(factory) as session:
            outcome = db_results.record_result(session, experiment_id, rate_points)
        results.put((experiment_id, outcome.status.value, outcome.duplicate_of_id))
    engine.dispose()


def test_two_processes_racing_to_record_one_output_store_one_measurement_set(db_url: str, engine: sa.Engine) -> None:
    factory = session_factory(engine)
    pairs = []
    with session_scope(factory) as session:
        clip = make_clip(session)
        for round_ in range(ROUNDS):
            # One decoder: the same file must be measured once, whoever finishes first.
            a = make_experiment(session, clip, code=f"same{round_}", to=S.SCORING)
            b = make_experiment(session, clip, code=f"same{round_}", to=S.SCORING)
            tag = f"one-cached-file-{round_}"
            pairs.append(((a.id, points(a, clip, tag=tag)), (b.id, points(b, clip, tag=tag))))
    engine.dispose()

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [
        ctx.Process(target=_record_in_process, args=(db_url, [pair[side] for pair in pairs], barrier, results))
        for side in (0, 1)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * ROUNDS)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    by_id = {experiment_id: (status, dup) for experiment_id, status, dup in outcomes}
    with factory() as session:
        for (a_id, _), (b_id, _) in pairs:
            statuses = sorted([by_id[a_id][0], by_id[b_id][0]])
            assert statuses == ["duplicate_output", "succeeded"]
            winner, loser = (a_id, b_id) if by_id[a_id][0] == "succeeded" else (b_id, a_id)
            assert by_id[loser][1] == winner
            stored = session.get(Experiment, loser)
            assert (stored.status, stored.duplicate_of_id) == (S.DUPLICATE_OUTPUT, winner)
            assert count(session, Artifact, experiment_id=winner) == 3
            assert count(session, Artifact, experiment_id=loser) == 0
            assert count(session, ExperimentPoint, experiment_id=loser, reused_from_id=winner) == 3
        assert count(session, Measurement) == 3 * ROUNDS
