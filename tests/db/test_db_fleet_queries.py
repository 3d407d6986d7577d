"""Queries the fleet adds: lease take-over, cancel, campaigns."""

from __future__ import annotations

from db import catalog, experiments
from db.models import ExperimentStatus as S
from db_factories import later, make_clip, make_experiment

HOLDER = "gpu0@a[1]"


def _encoding(session, **kwargs):
    # Entered at T0 with a 60 s lease: live until T0 + 1 min.
    return make_experiment(session, make_clip(session), to=S.ENCODING, host=HOLDER, **kwargs)


def test_take_over_from_a_holder_whose_lease_expired(session):
    e = _encoding(session)

    took = experiments.take_over(session, e.id, status=S.ENCODING, holder=HOLDER, new_holder="gpu1@b[2]",
                       lease_seconds=60, require_expired_lease=True, now=later(2))

    assert took
    got = experiments.get_experiment(session, e.id)
    assert got.worker_host == "gpu1@b[2]" and got.lease_expires_at == later(3)


def test_take_over_refuses_a_live_lease_or_another_holder(session):
    e = _encoding(session)

    assert not experiments.take_over(session, e.id, status=S.ENCODING, holder=HOLDER, new_holder="gpu1@b[2]",
                           lease_seconds=60, require_expired_lease=True, now=later(0.5))
    assert not experiments.take_over(session, e.id, status=S.ENCODING, holder="someone-else", new_holder="gpu1@b[2]",
                           lease_seconds=60, require_expired_lease=False, now=later(0.5))
    assert not experiments.take_over(session, e.id, status=S.SCORING, holder=HOLDER, new_holder="gpu1@b[2]",
                           lease_seconds=60, require_expired_lease=False, now=later(0.5))
    assert experiments.get_experiment(session, e.id).worker_host == HOLDER


def test_take_over_by_the_holder_itself_renews_the_lease(session):
    e = _encoding(session)

    assert experiments.take_over(session, e.id, status=S.ENCODING, holder=HOLDER, new_holder=HOLDER,
                       lease_seconds=600, require_expired_lease=False, now=later(0.5))
    assert experiments.get_experiment(session, e.id).lease_expires_at == later(10.5)


def test_cancel_marks_a_running_experiment_once_and_leaves_finished_ones(session):
    e = _encoding(session)

    assert experiments.cancel_experiment(session, e.id, reason="by test", now=later(1))
    assert not experiments.cancel_experiment(session, e.id, reason="again", now=later(2))
    got = experiments.get_experiment(session, e.id)
    assert got.status is S.CANCELLED and got.lease_expires_at is None and got.finished_at == later(1)
    # The heartbeat of the worker that held it now fails: it stops.
    assert not experiments.take_over(session, e.id, status=S.ENCODING, holder=HOLDER, new_holder=HOLDER,
                           lease_seconds=60, require_expired_lease=False, now=later(1))


def test_campaigns_are_created_once_and_list_their_unfinished_experiments(session):
    c1 = catalog.get_or_create_campaign(session, "sweep")
    c2 = catalog.get_or_create_campaign(session, "sweep")
    clip = make_clip(session)
    a = make_experiment(session, clip, campaign_id=c1.id)
    b = make_experiment(session, clip, campaign_id=c1.id, code="def g(): pass")
    experiments.cancel_experiment(session, b.id, reason="x")

    assert c1.id == c2.id
    assert experiments.campaign_experiment_ids(session, "sweep") == [a.id, b.id]
    assert experiments.campaign_experiment_ids(session, "sweep", only_unfinished=True) == [a.id]


def test_stale_queued_lists_only_experiments_queued_longer_than_the_cutoff(session):
    clip = make_clip(session)
    old = make_experiment(session, clip)  # queued at T0
    make_experiment(session, clip, code="def g(): pass", to=S.ENCODING)

    assert experiments.stale_queued(session, older_than_seconds=300, now=later(4)) == []
    assert experiments.stale_queued(session, older_than_seconds=300, now=later(6)) == [old.id]
