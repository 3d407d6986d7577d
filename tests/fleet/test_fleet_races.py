"""Every step against every state it can find its experiment in: the races, played out.

Each test drives the real task code (``FleetTask.run_step``, so the real
exception handling) against a real Postgres and a real Redis, but with no
worker consuming: a *delivery* is a call made here, as a given node, at the
moment the test chooses. That turns each interleaving of the fleet (a killed
worker's message redelivered after the reaper re-queued, a cancel between a
read and a claim, a score delivered twice...) into a deterministic sequence,
and the assertions say what each delivery did: its work once, a take-over, or
nothing, never an internal error and never a second measurement.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from db import experiments
from codecfleet import fleet as api
from db.models import Experiment, ExperimentStatus
from db import engine
from tasks import _enqueue
from tasks.app import app, worker_queue
from tasks.experiment import ENCODE_DECODE, SANITIZE, SCORE, encode_decode_step, enter, sanitize_step, score_step
from tasks.maintenance import REAP, reap_step

CLIP = "synthetic:mix@64x48"
STEPS = {SANITIZE: sanitize_step, ENCODE_DECODE: encode_decode_step, SCORE: score_step, REAP: reap_step}
GPU_A, GPU_B, CPU_1, CPU_2 = "gpuA@race", "gpuB@race", "cpu1@race", "cpu2@race"


def deliver(task: str, experiment_id: int | None, node: str) -> None:
    """One delivery of ``task`` to a worker called ``node``, run here through the real run_step."""
    celery_task = app.tasks[task]
    celery_task.push_request(hostname=node, id=f"test-{uuid.uuid4().hex[:8]}", retries=0)
    try:
        celery_task.run_step(STEPS[task], experiment_id)
    finally:
        celery_task.pop_request()


def row(experiment_id: int) -> dict:
    with engine.transaction() as session:
        e = experiments.get_experiment(session, experiment_id)
        return {"status": e.status.value, "attempts": e.attempts, "holder": e.worker_host,
                "waiting_for": e.waiting_for, "error": e.error, "lease": e.lease_expires_at}


def measurements(database_url: str, experiment_id: int) -> int:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM measurements m JOIN artifacts a ON a.id = m.artifact_id WHERE a.experiment_id = %s",
            (experiment_id,),
        ).fetchone()[0]


def internal_errors() -> int:
    with engine.transaction() as session:
        return experiments.internal_error_count(session)


def in_broker(experiment_id: int, attempt: int, task: str, queue: str) -> bool:
    from tasks.experiment import task_id

    return task_id(experiment_id, attempt, task) in _enqueue.locate([queue])


def dead_pid() -> int:
    """The pid of a process that has exited (a killed worker's)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def seize(experiment_id: int, step: str, status: ExperimentStatus, holder: str, *, lease_seconds: float) -> None:
    """What a worker does when it takes the message: claim the waiting experiment."""
    with engine.transaction() as session:
        assert experiments.claim(session, experiment_id, step=step, to=status, holder=holder, lease_seconds=lease_seconds)


@pytest.fixture
def race(make_fleet):
    """A broker and a database, no workers: deliveries are made by the test."""
    fleet = make_fleet(lease_seconds=30, max_attempts=3)
    handle = api.submit("reference:intra_dct", CLIP, frames=2, rate_points=[0.3, 0.7])
    fleet.experiment_id = handle.id
    return fleet


def test_a_backlog_is_not_a_fault_and_a_lost_message_is_sent_again(race):
    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    assert row(eid)["waiting_for"] == "encode_decode" and row(eid)["lease"] is None and row(eid)["holder"] is None
    # The experiment has waited in the gpu queue for an hour, far longer than any lease.
    with engine.transaction() as session:
        session.execute(sa.update(Experiment).where(Experiment.id == eid)
                        .values(waiting_since=datetime.now(UTC) - timedelta(hours=1)))

    deliver(REAP, None, CPU_1)
    assert (row(eid)["status"], row(eid)["attempts"], row(eid)["waiting_for"]) == ("sanitizing", 0, "encode_decode")
    assert in_broker(eid, 0, ENCODE_DECODE, "gpu")

    # The broker loses the message (a restart without AOF): the reaper sends it again, once.
    import redis

    redis.Redis.from_url(race.env["CODECFLEET_BROKER_URL"]).delete("gpu")
    assert not in_broker(eid, 0, ENCODE_DECODE, "gpu")
    deliver(REAP, None, CPU_1)
    deliver(REAP, None, CPU_1)
    assert in_broker(eid, 0, ENCODE_DECODE, "gpu")
    assert _enqueue.locate(["gpu"])[f"cf-{eid}-a0-encode_decode"].length == 1
    assert row(eid)["attempts"] == 0

    deliver(ENCODE_DECODE, eid, GPU_A)
    deliver(SCORE, eid, GPU_A)
    assert row(eid)["status"] == "succeeded"
    assert internal_errors() == 0


def test_a_message_taken_by_a_worker_killed_before_it_started_is_sent_again(race):
    """A worker takes the message (it moves to Redis's ``unacked`` hash) and is SIGKILLed
    before its task claims the experiment: Redis would give the message back only after
    the visibility timeout (hours). The reaper sends it again once a lease has passed."""
    import json

    import redis

    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    client = redis.Redis.from_url(race.env["CODECFLEET_BROKER_URL"])
    raw = client.rpop("gpu")  # what a worker's BRPOP does, then it records the message as unacked
    client.hset("unacked", "tag-1", json.dumps([json.loads(raw), "codecfleet", "gpu"]))
    assert _enqueue.locate(["gpu"])[f"cf-{eid}-a0-encode_decode"].queue == "unacked"

    deliver(REAP, None, CPU_1)  # waited less than a lease: only waiting
    assert client.llen("gpu") == 0
    with engine.transaction() as session:
        session.execute(sa.update(Experiment).where(Experiment.id == eid)
                        .values(waiting_since=datetime.now(UTC) - timedelta(minutes=10)))
    deliver(REAP, None, CPU_1)
    assert client.llen("gpu") == 1 and in_broker(eid, 0, ENCODE_DECODE, "gpu")
    deliver(REAP, None, CPU_1)
    assert client.llen("gpu") == 1  # found in the queue now: not sent a second time
    deliver(ENCODE_DECODE, eid, GPU_A)
    deliver(SCORE, eid, GPU_A)
    assert row(eid)["status"] == "succeeded" and row(eid)["attempts"] == 0
    assert internal_errors() == 0


def test_a_message_a_live_worker_is_starting_is_not_sent_again(race, monkeypatch):
    """Unacknowledged and unclaimed for longer than a lease is also what a live worker looks
    like while it sets up a slow step (a sandbox takes seconds): when a worker that answers
    reports the task as active or reserved, the reaper leaves it alone; once none does, it
    sends it again."""
    import json

    import redis

    from tasks import maintenance

    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    client = redis.Redis.from_url(race.env["CODECFLEET_BROKER_URL"])
    raw = client.rpop("gpu")
    client.hset("unacked", "tag-1", json.dumps([json.loads(raw), "codecfleet", "gpu"]))
    with engine.transaction() as session:
        session.execute(sa.update(Experiment).where(Experiment.id == eid)
                        .values(waiting_since=datetime.now(UTC) - timedelta(minutes=10)))
    asked = []
    monkeypatch.setattr(maintenance, "_taken_by_live_workers", lambda ids: asked.append(list(ids)) or set(ids))
    deliver(REAP, None, CPU_1)
    assert asked == [[f"cf-{eid}-a0-encode_decode"]] and client.llen("gpu") == 0
    monkeypatch.setattr(maintenance, "_taken_by_live_workers", lambda ids: set())
    deliver(REAP, None, CPU_1)
    assert client.llen("gpu") == 1 and in_broker(eid, 0, ENCODE_DECODE, "gpu")


def test_reaper_requeue_against_the_redelivered_step_of_a_killed_worker(race):
    """The reported race: a killed gpu worker's encode_decode comes back after the reaper
    re-queued its experiment. It must do nothing (or, if the experiment is waiting for
    it again, the work once), never fail the experiment."""
    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    seize(eid, "encode_decode", ExperimentStatus.ENCODING, f"{GPU_A}[{dead_pid()}]", lease_seconds=-1)

    deliver(REAP, None, CPU_1)  # the lease ran out: attempt 2
    assert (row(eid)["status"], row(eid)["attempts"], row(eid)["waiting_for"]) == ("queued", 1, "sanitize")
    assert in_broker(eid, 1, SANITIZE, "cpu")

    deliver(ENCODE_DECODE, eid, GPU_A)  # the killed worker's message, redelivered to the restarted node
    assert (row(eid)["status"], row(eid)["attempts"]) == ("queued", 1)

    deliver(SANITIZE, eid, CPU_2)
    deliver(ENCODE_DECODE, eid, GPU_A)  # redelivered again: now the experiment waits for it, so it runs
    assert (row(eid)["status"], row(eid)["waiting_for"], row(eid)["holder"]) == ("scoring", "score", GPU_A)
    deliver(ENCODE_DECODE, eid, GPU_B)  # attempt 2's own message, later: nothing
    deliver(SCORE, eid, GPU_A)

    result = api.Handle(eid).result()
    assert result["status"] == "succeeded" and result["attempts"] == 1
    assert all("/attempt-1/" in rp["bitstream"] for rp in result["rate_points"])
    assert measurements(race.database_url, eid) == 2
    assert internal_errors() == 0


def test_a_claim_that_loses_to_a_concurrent_move_does_nothing(race):
    """Read, then someone else moves the experiment, then the claim: the conditional
    UPDATE finds it moved and the step stands down (READ COMMITTED on Postgres)."""
    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    from tasks.base import StepContext

    ctx = StepContext(node=GPU_A, task_name=ENCODE_DECODE, private_queue=worker_queue(GPU_A))
    with engine.transaction() as session:
        stale = experiments.get_experiment(session, eid)
        assert stale.waiting_for == "encode_decode"
        with engine.transaction() as other:  # meanwhile, another transaction re-queues it
            assert experiments.requeue_from_anywhere(other, eid, max_attempts=3, holder=None, stage="encode",
                                           reason="test") == "requeued"
        assert enter(session, stale, ctx, step="encode_decode", status=ExperimentStatus.ENCODING) is False
    assert (row(eid)["status"], row(eid)["attempts"]) == ("queued", 1)


def test_cancel_against_redelivery(race):
    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    seize(eid, "encode_decode", ExperimentStatus.ENCODING, f"{GPU_A}[{dead_pid()}]", lease_seconds=-1)
    assert api.cancel(eid) == [eid]

    deliver(ENCODE_DECODE, eid, GPU_A)  # the dead worker's message comes back after the cancel
    deliver(SCORE, eid, GPU_A)
    deliver(REAP, None, CPU_1)
    assert row(eid)["status"] == "cancelled" and row(eid)["attempts"] == 0
    assert measurements(race.database_url, eid) == 0
    assert internal_errors() == 0

    # A cancel between a step's read and its claim.
    other = api.submit("reference:intra_dct", CLIP + ",seed=7", frames=2, rate_points=[0.3, 0.7]).id
    from tasks.base import StepContext

    ctx = StepContext(node=CPU_1, task_name=SANITIZE, private_queue=None)
    with engine.transaction() as session:
        stale = experiments.get_experiment(session, other)
        api.cancel(other)
        assert enter(session, stale, ctx, step="sanitize", status=ExperimentStatus.SANITIZING) is False
    assert row(other)["status"] == "cancelled"


def test_a_score_delivered_twice_records_once(race):
    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    deliver(ENCODE_DECODE, eid, GPU_A)
    deliver(SCORE, eid, GPU_B)  # scoring belongs to the node that decoded: nothing here
    assert row(eid)["status"] == "scoring"
    deliver(SCORE, eid, GPU_A)
    deliver(SCORE, eid, GPU_A)
    assert row(eid)["status"] == "succeeded"
    assert measurements(race.database_url, eid) == 2
    assert internal_errors() == 0

    # Two deliveries that both read "waiting for score" before either claims.
    other = api.submit("reference:intra_dct", CLIP + ",seed=8", frames=2, rate_points=[0.3, 0.7]).id
    deliver(SANITIZE, other, CPU_1)
    deliver(ENCODE_DECODE, other, GPU_A)
    from tasks.base import StepContext

    ctx = StepContext(node=GPU_A, task_name=SCORE, private_queue=worker_queue(GPU_A))
    with engine.transaction() as first, engine.transaction() as second:
        a, b = experiments.get_experiment(first, other), experiments.get_experiment(second, other)
        assert enter(first, a, ctx, step="score", status=ExperimentStatus.SCORING, node=GPU_A) is True
        first.commit()
        assert enter(second, b, ctx, step="score", status=ExperimentStatus.SCORING, node=GPU_A) is False


def test_a_requeued_experiment_gets_two_deliveries_of_each_step(race):
    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    seize(eid, "encode_decode", ExperimentStatus.ENCODING, f"{GPU_A}[{dead_pid()}]", lease_seconds=-1)
    deliver(REAP, None, CPU_1)
    assert row(eid)["attempts"] == 1

    deliver(SANITIZE, eid, CPU_1)
    deliver(SANITIZE, eid, CPU_2)
    assert (row(eid)["status"], row(eid)["waiting_for"]) == ("sanitizing", "encode_decode")
    deliver(ENCODE_DECODE, eid, GPU_B)
    deliver(ENCODE_DECODE, eid, GPU_A)
    assert (row(eid)["status"], row(eid)["holder"]) == ("scoring", GPU_B)
    deliver(SCORE, eid, GPU_B)
    deliver(SCORE, eid, GPU_B)
    result = api.Handle(eid).result()
    assert result["status"] == "succeeded" and result["attempts"] == 1
    assert measurements(race.database_url, eid) == 2
    assert internal_errors() == 0


def test_a_live_worker_is_left_alone_and_a_late_heartbeat_loses_cleanly(race):
    """The reaper against a slow but alive worker: while its lease holds, nobody takes the
    experiment; once it has run out and the reaper re-queued, the old holder's renewal and
    hand-off both fail, so it records nothing and sends nothing."""
    eid = race.experiment_id
    deliver(SANITIZE, eid, CPU_1)
    slow = f"{GPU_A}[1]"  # pid 1 exists: a live process, whatever the node
    seize(eid, "encode_decode", ExperimentStatus.ENCODING, slow, lease_seconds=60)
    deliver(ENCODE_DECODE, eid, GPU_B)  # a duplicate: the holder is alive and its lease runs
    deliver(REAP, None, CPU_1)
    assert (row(eid)["status"], row(eid)["holder"], row(eid)["attempts"]) == ("encoding", slow, 0)

    with engine.transaction() as session:  # the heartbeat is late: the lease ran out
        session.execute(sa.update(Experiment).where(Experiment.id == eid)
                        .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    deliver(REAP, None, CPU_1)
    assert (row(eid)["status"], row(eid)["attempts"]) == ("queued", 1)
    with engine.transaction() as session:  # the slow worker wakes up: renewal and hand-off fail
        assert not experiments.take_over(session, eid, status=ExperimentStatus.ENCODING, holder=slow, new_holder=slow,
                               lease_seconds=30, require_expired_lease=False)
        assert not experiments.hand_off(session, eid, status=ExperimentStatus.ENCODING, holder=slow, step="score",
                              to=ExperimentStatus.SCORING, keep_node=GPU_A)
    assert row(eid)["status"] == "queued"


def test_an_internal_error_is_counted_and_requeues_within_the_budget(race, monkeypatch):
    eid = race.experiment_id
    import tasks.experiment as steps

    def bug(_experiment):
        raise KeyError("a bug in codecfleet")

    monkeypatch.setattr(steps, "experiment_clip", bug)
    deliver(SANITIZE, eid, CPU_1)
    deliver(ENCODE_DECODE, eid, GPU_A)
    assert (row(eid)["status"], row(eid)["attempts"]) == ("queued", 1)
    assert in_broker(eid, 1, SANITIZE, "cpu")
    assert internal_errors() == 1

    deliver(SANITIZE, eid, CPU_1)
    deliver(ENCODE_DECODE, eid, GPU_A)
    deliver(SANITIZE, eid, CPU_1)
    deliver(ENCODE_DECODE, eid, GPU_A)  # the third attempt of three: the budget is spent
    r = row(eid)
    assert r["status"] == "failed" and "internal error: KeyError" in r["error"] and "none left" in r["error"]
    with engine.transaction() as session:
        listed = experiments.internal_errors(session)
    assert [(e.experiment_id, e.count) for e in listed] == [(eid, 3)]

    monkeypatch.undo()
    other = api.submit("reference:intra_dct", CLIP + ",seed=9", frames=2, rate_points=[0.3, 0.7]).id
    deliver(SANITIZE, other, CPU_1)
    deliver(ENCODE_DECODE, other, GPU_A)
    deliver(SCORE, other, GPU_A)
    assert row(other)["status"] == "succeeded"


def test_status_shows_what_waits_where_and_lists_internal_errors(race, monkeypatch, capsys):
    import json

    from codecfleet.cli import main

    eid = race.experiment_id
    second = api.submit("reference:intra_dct", CLIP + ",seed=5", frames=2, rate_points=[0.3, 0.7]).id
    deliver(SANITIZE, eid, CPU_1)
    deliver(SANITIZE, second, CPU_1)

    assert main(["status", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r for r in shown["experiments"]}
    assert (by_id[eid]["waiting_for"], by_id[eid]["queue"], by_id[eid]["queue_position"]) == ("encode_decode", "gpu", 1)
    assert (by_id[second]["queue"], by_id[second]["queue_position"]) == ("gpu", 2)
    assert shown["waiting"] == [{"step": "encode_decode", "waiting": 2, "longest_seconds": pytest.approx(0, abs=60)}]
    assert main(["status", str(second)]) == 0
    assert f"experiment {second}: sanitizing, waiting for encode_decode in gpu, #2 of 2" in capsys.readouterr().out

    import tasks.experiment as steps

    monkeypatch.setattr(steps, "experiment_clip", lambda _e: 1 / 0)
    deliver(ENCODE_DECODE, eid, GPU_A)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "internal errors (bugs of codecfleet): 1 in all" in out and "ZeroDivisionError" in out
    assert main(["status", "--json"]) == 0
    bugs = json.loads(capsys.readouterr().out)["internal_errors"]
    assert bugs["total"] == 1 and bugs["experiments"][0]["experiment"] == eid
    assert bugs["experiments"][0]["status"] == "queued"
