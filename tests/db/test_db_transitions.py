"""The experiment state machine: legal moves happen once, illegal ones are refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from db_factories import T0, finished, later, make_clip, make_experiment, points
from sqlalchemy.orm import Session

from db import experiments, results
from db.models import RUNNING, TERMINAL, TRANSITIONS, Experiment, ExperimentStatus
from db.session import session_factory

S = ExperimentStatus


def test_the_happy_path_stamps_each_stage_and_ends_without_a_lease(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)

    for minute, status in enumerate([S.GENERATING, S.SANITIZING, S.ENCODING, S.SCORING], start=1):
        assert experiments.transition(session, experiment.id, status, lease_seconds=300, now=later(minute))
    results.record_result(session, experiment.id, points(experiment, clip), now=later(5))

    session.refresh(experiment)
    assert experiment.status is S.SUCCEEDED
    assert (
        experiment.generate_started_at,
        experiment.sanitize_started_at,
        experiment.encode_started_at,
        experiment.score_started_at,
        experiment.finished_at,
    ) == (later(1), later(2), later(3), later(4), later(5))
    assert experiment.lease_expires_at is None


def test_a_finished_experiment_is_never_set_back_to_running(session: Session) -> None:
    clip = make_clip(session)
    experiment = finished(session, clip, -10.0, code="done")

    with pytest.raises(experiments.IllegalTransition, match="succeeded -> encoding") as excinfo:
        experiments.transition(session, experiment.id, S.ENCODING)

    assert excinfo.value.from_status is S.SUCCEEDED
    assert excinfo.value.to_status is S.ENCODING
    assert session.scalar(sa.select(Experiment.status).where(Experiment.id == experiment.id)) is S.SUCCEEDED


def _experiment_in(session: Session, status: S, code: str) -> Experiment:
    """An experiment put straight into ``status`` (with what the CHECKs require)."""
    clip = make_clip(session)
    experiment = make_experiment(session, clip, code=code)
    values: dict[str, object] = {"status": status, "error": "set up by the test"}
    if status is S.DUPLICATE_OUTPUT:
        values["duplicate_of_id"] = make_experiment(session, clip, code=code + "-original").id
    session.execute(sa.update(Experiment).where(Experiment.id == experiment.id).values(**values))
    return experiment


def _move(session: Session, experiment: Experiment, to: S) -> bool:
    # Only reached for illegal moves, so the made-up duplicate_of_id is never written.
    duplicate_of = experiment.id + 100_000 if to is S.DUPLICATE_OUTPUT else None
    with session.begin_nested():  # a refused move must leave nothing behind
        return experiments._transition(
            session, experiment.id, to, failure_stage="encode", error="why", duplicate_of_id=duplicate_of
        )


def test_every_move_outside_the_state_machine_is_refused(session: Session) -> None:
    accepted = []
    for to in TRANSITIONS:
        for frm in ExperimentStatus:
            if frm in TRANSITIONS[to] or frm is to:
                continue
            experiment = _experiment_in(session, frm, f"{frm.value}->{to.value}")
            try:
                _move(session, experiment, to)
                accepted.append(f"{frm.value} -> {to.value}")
            except experiments.IllegalTransition as exc:
                assert f"{frm.value} -> {to.value}" in str(exc)

    assert accepted == []


def test_every_move_in_the_state_machine_is_accepted(session: Session) -> None:
    refused = []
    for to, sources in TRANSITIONS.items():
        for frm in sources:
            experiment = _experiment_in(session, frm, f"{frm.value}->{to.value}")
            if to is S.DUPLICATE_OUTPUT:
                original = make_experiment(session, make_clip(session), code=f"{frm.value}-original")
                ok = experiments.transition(session, experiment.id, to, error="same bytes", duplicate_of_id=original.id)
            elif to is S.SUCCEEDED:
                ok = results.record_result(session, experiment.id, points(experiment, experiment.clip)).status is to
            else:
                ok = experiments.transition(session, experiment.id, to, failure_stage="encode", error="why")
            if not ok:
                refused.append(f"{frm.value} -> {to.value}")

    assert refused == []


def test_success_is_only_reachable_by_recording_results(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING)

    with pytest.raises(ValueError, match="only through record_result"):
        experiments.transition(session, experiment.id, S.SUCCEEDED)
    assert session.scalar(sa.select(Experiment.status).where(Experiment.id == experiment.id)) is S.SCORING


def test_moving_back_to_queued_is_only_requeue(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.ENCODING)

    with pytest.raises(experiments.IllegalTransition, match="encoding -> queued.*requeue"):
        experiments.transition(session, experiment.id, S.QUEUED)


def test_repeating_a_transition_reports_that_it_did_nothing(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SANITIZING)

    assert experiments.transition(session, experiment.id, S.ENCODING) is True
    assert experiments.transition(session, experiment.id, S.ENCODING) is False


def test_of_two_workers_racing_for_the_same_move_exactly_one_wins(engine: sa.Engine) -> None:
    factory = session_factory(engine)
    with factory() as setup:
        experiment_id = make_experiment(setup, make_clip(setup), to=S.SANITIZING).id
        setup.commit()

    results = []
    for host in ("worker-a", "worker-b"):
        with factory() as worker:
            results.append(experiments.transition(worker, experiment_id, S.ENCODING, worker_host=host))
            worker.commit()

    assert results == [True, False]
    with factory() as check:
        assert check.get(Experiment, experiment_id).worker_host == "worker-a"


def test_a_failure_needs_a_stage_and_a_reason(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.ENCODING)

    with pytest.raises(ValueError, match="failure_stage and error"):
        experiments.transition(session, experiment.id, S.FAILED, error="no stage")

    assert experiments.transition(session, experiment.id, S.FAILED, failure_stage="decode", error="decoder raised KeyError")
    session.refresh(experiment)
    assert (experiment.status, experiment.failure_stage, experiment.error) == (
        S.FAILED, "decode", "decoder raised KeyError",
    )


def test_rejection_is_only_possible_before_encoding(session: Session) -> None:
    clip = make_clip(session)
    sanitizing = make_experiment(session, clip, code="a", to=S.SANITIZING)
    encoding = make_experiment(session, clip, code="b", to=S.ENCODING)

    assert experiments.transition(session, sanitizing.id, S.REJECTED, error="imports os")
    with pytest.raises(experiments.IllegalTransition, match="encoding -> rejected"):
        experiments.transition(session, encoding.id, S.REJECTED, error="imports os")


def test_requeue_waits_for_the_lease_to_expire_and_spends_an_attempt(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.ENCODING, lease_seconds=60, now=T0)

    assert experiments.requeue(session, experiment.id, max_attempts=3, now=later(0.5)) is False
    assert experiments.requeue(session, experiment.id, max_attempts=3, now=later(2)) is True

    session.refresh(experiment)
    assert (experiment.status, experiment.attempts, experiment.lease_expires_at) == (S.QUEUED, 1, None)


def test_requeue_stops_when_the_attempt_budget_is_spent(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.ENCODING, lease_seconds=60, now=T0)
    assert experiments.requeue(session, experiment.id, max_attempts=2, now=later(2))
    assert experiments.transition(session, experiment.id, S.SANITIZING, lease_seconds=60, now=later(3))

    assert experiments.requeue(session, experiment.id, max_attempts=2, now=later(10)) is False
    assert session.scalar(sa.select(Experiment.attempts).where(Experiment.id == experiment.id)) == 1


def test_requeue_of_a_finished_experiment_is_illegal(session: Session) -> None:
    clip = make_clip(session)
    experiment = finished(session, clip, 5.0, code="x")

    with pytest.raises(experiments.IllegalTransition, match="succeeded -> queued"):
        experiments.requeue(session, experiment.id, max_attempts=5, now=later(60))


def test_expired_leases_lists_running_experiments_past_their_deadline_only(session: Session) -> None:
    clip = make_clip(session)
    expired = make_experiment(session, clip, code="a", to=S.ENCODING, lease_seconds=60, now=T0)
    live = make_experiment(session, clip, code="b", to=S.SCORING, lease_seconds=3600, now=T0)
    queued = make_experiment(session, clip, code="c")
    done = finished(session, clip, 1.0, code="d")

    listed = experiments.expired_leases(session, later(5))

    assert [row.experiment_id for row in listed] == [expired.id]
    assert listed[0].status is S.ENCODING and listed[0].worker_host == "worker-1"
    assert {live.id, queued.id, done.id}.isdisjoint(row.experiment_id for row in listed)


def test_the_reaper_requeues_while_attempts_remain_then_times_out(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.ENCODING, lease_seconds=60, now=T0)

    assert experiments.reap(session, experiment.id, max_attempts=2, now=later(5)) is S.QUEUED
    assert experiments.transition(session, experiment.id, S.SANITIZING, lease_seconds=60, worker_host="w2", now=later(6))
    assert experiments.reap(session, experiment.id, max_attempts=2, now=later(20)) is S.TIMED_OUT

    session.refresh(experiment)
    assert experiment.status is S.TIMED_OUT
    assert experiment.failure_stage == "sanitize"
    assert "w2" in experiment.error and "attempt 2 of 2" in experiment.error
    assert experiment.status in TERMINAL and S.TIMED_OUT not in RUNNING


def test_the_reaper_leaves_an_experiment_whose_lease_was_renewed(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.SCORING, lease_seconds=60, now=T0)
    assert experiments.renew_lease(session, experiment.id, lease_seconds=600, now=later(0.9))

    assert experiments.reap(session, experiment.id, max_attempts=1, now=later(5)) is None
    assert session.scalar(sa.select(Experiment.status).where(Experiment.id == experiment.id)) is S.SCORING


def test_a_cancelled_experiment_cannot_renew_its_lease(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=S.ENCODING)
    assert experiments.transition(session, experiment.id, S.CANCELLED)

    assert experiments.renew_lease(session, experiment.id, lease_seconds=60) is False
