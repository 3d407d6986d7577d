"""One list of failure stages: the database holds ``failure_stage`` to it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from db_factories import make_clip, make_experiment
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Experiment, Stage
from evaluation import runner
from tasks import steps


def test_a_candidates_own_fault_stages_are_stages():
    assert set(runner.STAGES) <= {s.value for s in Stage}


def test_every_step_dies_at_a_stage():
    assert set(steps.STEP_STAGE) == set(steps.STEP_TASKS.values())
    assert all(isinstance(stage, Stage) for stage in steps.STEP_STAGE.values())


@pytest.mark.parametrize("stage", [s.value for s in Stage])
def test_every_stage_is_accepted(session: Session, stage: str) -> None:
    experiment = make_experiment(session, make_clip(session))
    session.commit()
    session.execute(sa.update(Experiment).where(Experiment.id == experiment.id).values(failure_stage=stage))
    session.commit()


def test_a_stage_outside_the_list_is_refused(session: Session) -> None:
    experiment = make_experiment(session, make_clip(session))
    session.commit()
    with pytest.raises(IntegrityError):
        session.execute(sa.update(Experiment).where(Experiment.id == experiment.id).values(failure_stage="encode_decode"))
        session.flush()
    session.rollback()
