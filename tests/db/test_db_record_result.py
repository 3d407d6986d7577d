"""Recording results: atomic, and one output hash is measured once."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace

import pytest
import sqlalchemy as sa
from db_factories import make_clip, make_experiment, points, score
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import queries as q
from db.models import Artifact, Experiment, ExperimentStatus, Measurement, Score
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

    outcome = q.record_result(session, experiment.id, points(experiment, clip), [score(-12.5)])
    session.commit()

    assert outcome.status is S.SUCCEEDED and len(outcome.measurement_ids) == 3
    assert session.get(Experiment, experiment.id).status is S.SUCCEEDED
    stored = q.experiment_measurements(session, experiment.id)
    assert [m.rate_index for m in stored] == [0, 1, 2]
    assert [m.artifact.sha256 for m in stored] == [p.sha256 for p in points(experiment, clip)]
    assert all(m.artifact.experiment_id == experiment.id for m in stored)
    assert session.scalar(sa.select(Score.bd_rate).where(Score.experiment_id == experiment.id)) == -12.5


def test_an_output_already_measured_makes_the_experiment_a_duplicate_of_the_original(session: Session) -> None:
    clip = make_clip(session)
    original = make_experiment(session, clip, code="a", to=S.SCORING)
    copy = make_experiment(session, clip, code="b", to=S.SCORING)
    q.record_result(session, original.id, points(original, clip, tag="cached-file"), [score(-3.0)])
    session.commit()

    outcome = q.record_result(session, copy.id, points(copy, clip, tag="cached-file"), [score(-3.0)])
    session.commit()

    assert outcome.status is S.DUPLICATE_OUTPUT and outcome.duplicate_of_id == original.id
    stored = session.get(Experiment, copy.id)
    assert (stored.status, stored.duplicate_of_id) == (S.DUPLICATE_OUTPUT, original.id)
    assert f"already produced by experiment {original.id}" in stored.error
    assert count(session, Artifact, experiment_id=copy.id) == 0
    assert count(session, Score, experiment_id=copy.id) == 0
    assert count(session, Measurement) == 3


def test_one_repeated_file_among_new_ones_still_stores_nothing(session: Session) -> None:
    clip = make_clip(session)
    original = make_experiment(session, clip, code="a", to=S.SCORING)
    copy = make_experiment(session, clip, code="b", to=S.SCORING)
    q.record_result(session, original.id, points(original, clip))
    session.commit()
    mixed = points(copy, clip)
    mixed[2] = replace(mixed[2], sha256=points(original, clip)[0].sha256)

    outcome = q.record_result(session, copy.id, mixed)

    assert outcome.status is S.DUPLICATE_OUTPUT
    assert "of rate point 2" in outcome.reason and "(rate point 0)" in outcome.reason
    assert count(session, Artifact, experiment_id=copy.id) == 0


def test_recording_is_all_or_nothing_when_one_number_is_invalid(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)
    session.commit()
    bad = points(experiment, clip)
    bad[1] = replace(bad[1], psnr_y=float("inf"))

    with pytest.raises(IntegrityError):
        q.record_result(session, experiment.id, bad)
    session.rollback()

    assert count(session, Artifact) == 0 and count(session, Measurement) == 0
    assert session.scalar(sa.select(Experiment.status).where(Experiment.id == experiment.id)) is S.SCORING


def test_identical_bitstreams_at_different_qualities_fail_the_experiment(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)
    same = [replace(p, sha256=points(experiment, clip)[0].sha256) for p in points(experiment, clip)]

    outcome = q.record_result(session, experiment.id, same)

    assert outcome.status is S.FAILED
    assert "ignores the quality setting" in outcome.reason
    stored = session.get(Experiment, experiment.id)
    assert (stored.failure_stage, stored.error) == ("verify", outcome.reason)
    assert count(session, Artifact) == 0


def test_a_redelivered_record_returns_the_stored_outcome_without_writing(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)
    first = q.record_result(session, experiment.id, points(experiment, clip))
    session.commit()

    again = q.record_result(session, experiment.id, points(experiment, clip))

    assert again == first
    assert count(session, Measurement) == 3


def test_results_measured_on_another_clip_are_refused(session: Session) -> None:
    clip, other = make_clip(session, "mix"), make_clip(session, "pan")
    experiment = make_experiment(session, clip, to=S.SCORING)

    with pytest.raises(q.ResultMismatch, match="measured on clip"):
        q.record_result(session, experiment.id, points(experiment, other))


def test_results_missing_a_rate_point_are_refused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)

    with pytest.raises(q.ResultMismatch, match=r"rate points \[0, 1, 2\], results cover \[0, 1\]"):
        q.record_result(session, experiment.id, points(experiment, clip)[:2])


def test_results_for_an_experiment_not_scoring_are_refused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.ENCODING)
    q.transition(session, experiment.id, S.CANCELLED)

    with pytest.raises(q.IllegalTransition, match="cancelled -> succeeded"):
        q.record_result(session, experiment.id, points(experiment, clip))


# --- two processes, one output hash --------------------------------------------


ROUNDS = 3


def _record_in_process(url: str, jobs: list, barrier, results) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    factory = session_factory(engine)
    for experiment_id, rate_points in jobs:
        barrier.wait(timeout=60)  # both processes record the same hash at the same moment
        with session_scope(factory) as session:
            outcome = q.record_result(session, experiment_id, rate_points)
        results.put((experiment_id, outcome.status.value, outcome.duplicate_of_id))
    engine.dispose()


def test_two_processes_racing_to_record_one_output_store_one_measurement_set(db_url: str, engine: sa.Engine) -> None:
    factory = session_factory(engine)
    pairs = []
    with session_scope(factory) as session:
        clip = make_clip(session)
        for round_ in range(ROUNDS):
            a = make_experiment(session, clip, code=f"a{round_}", to=S.SCORING)
            b = make_experiment(session, clip, code=f"b{round_}", to=S.SCORING)
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
        assert count(session, Measurement) == 3 * ROUNDS
