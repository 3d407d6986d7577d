"""What the schema itself refuses, whatever the code above it does."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
import sqlalchemy as sa
from db_factories import make_clip, make_experiment, points, sha
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from db import experiments, results
from db.models import Artifact, Experiment, ExperimentStatus, Measurement


def _artifact(session: Session, experiment_id: int, tag: str, rate_index: int = 0) -> Artifact:
    artifact = Artifact(
        experiment_id=experiment_id, rate_index=rate_index, path=f"/a/{tag}", n_bytes=10, sha256=sha(tag)
    )
    session.add(artifact)
    session.flush()
    return artifact


def _measurement(artifact_id: int | None, clip_sha256: str, experiment_id: int, **overrides: object) -> Measurement:
    values: dict[str, object] = dict(
        artifact_id=artifact_id, experiment_id=experiment_id, decoder_hash=sha("decoder"), rate_index=0, quality=0.5, n_frames=4, n_bytes=10, bits=80, kbps=0.6, bpp=1e-4,
        psnr_rgb=30.0, psnr_y=31.0, psnr_rgb_pooled=30.0, psnr_y_pooled=31.0, ssim_y=0.9, ms_ssim=0.95,
        ms_ssim_scales=3, encode_seconds=0.1, decode_seconds=0.1, evaluator_version="e", metrics_version="m",
        clip_sha256=clip_sha256,
    )
    values.update(overrides)
    return Measurement(**values)


def _flush_fails(session: Session, row: object) -> None:
    session.add(row)
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_a_measurement_without_an_artifact_is_impossible(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    session.commit()

    _flush_fails(session, _measurement(None, clip.sha256, experiment.id))


def test_a_measurement_of_a_nonexistent_artifact_is_impossible(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    session.commit()

    _flush_fails(session, _measurement(987654, clip.sha256, experiment.id))


def test_one_artifact_has_at_most_one_measurement_per_decoder(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    other = make_experiment(session, clip, code="other")
    artifact = _artifact(session, experiment.id, "only")
    session.add(_measurement(artifact.id, clip.sha256, experiment.id))
    session.commit()

    # The same file, the same decoder: never measured twice, whoever asks.
    _flush_fails(session, _measurement(artifact.id, clip.sha256, other.id))


def test_one_artifact_may_be_measured_by_several_decoders(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    other = make_experiment(session, clip, code="other")
    artifact = _artifact(session, experiment.id, "only")
    session.add(_measurement(artifact.id, clip.sha256, experiment.id))
    session.add(_measurement(artifact.id, clip.sha256, other.id, decoder_hash=sha("another decoder")))
    session.commit()

    assert session.scalar(sa.select(sa.func.count()).select_from(Measurement)) == 2


def test_an_output_hash_exists_once_across_all_experiments(session: Session) -> None:
    clip = make_clip(session)
    first = make_experiment(session, clip, code="a")
    second = make_experiment(session, clip, code="b")
    _artifact(session, first.id, "same-bytes")
    session.commit()

    _flush_fails(
        session,
        Artifact(experiment_id=second.id, rate_index=0, path="/a/elsewhere", n_bytes=10, sha256=sha("same-bytes")),
    )


@pytest.mark.parametrize("psnr", [math.inf, -math.inf, math.nan, 100.5, -1.0], ids=str)
def test_psnr_that_is_not_finite_or_above_the_cap_is_refused(session: Session, psnr: float) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    artifact = _artifact(session, experiment.id, "x")
    session.commit()

    _flush_fails(session, _measurement(artifact.id, clip.sha256, experiment.id, psnr_y=psnr))


def test_peak_rss_of_zero_is_refused_because_not_measured_is_null(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    artifact = _artifact(session, experiment.id, "x")
    session.add(_measurement(artifact.id, clip.sha256, experiment.id, peak_rss_bytes=None))
    session.commit()
    other = _artifact(session, experiment.id, "y", rate_index=1)
    session.commit()

    _flush_fails(session, _measurement(other.id, clip.sha256, experiment.id, rate_index=1, peak_rss_bytes=0))


def test_bits_must_be_the_bytes_on_disk_times_eight(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    artifact = _artifact(session, experiment.id, "x")
    session.commit()

    _flush_fails(session, _measurement(artifact.id, clip.sha256, experiment.id, bits=81))


def test_a_failed_experiment_without_an_error_is_refused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    session.commit()

    with pytest.raises(IntegrityError):
        session.execute(sa.update(Experiment).where(Experiment.id == experiment.id).values(status="failed"))
    session.rollback()


def test_a_status_outside_the_state_machine_is_refused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)
    session.commit()

    with pytest.raises(IntegrityError):
        session.execute(sa.text("UPDATE experiments SET status = 'running' WHERE id = :id"), {"id": experiment.id})
    session.rollback()


def test_naive_datetimes_are_refused(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip)

    with pytest.raises(StatementError, match="naive datetime"):
        experiments.renew_lease(session, experiment.id, lease_seconds=1, now=datetime(2025, 1, 1))


def test_timestamps_come_back_timezone_aware_in_utc(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=ExperimentStatus.ENCODING)
    session.commit()
    session.expire_all()

    stored = session.get(Experiment, experiment.id)
    assert stored is not None and stored.encode_started_at is not None
    assert stored.encode_started_at.utcoffset() is not None
    assert stored.encode_started_at.utcoffset().total_seconds() == 0
    assert stored.lease_expires_at is not None and stored.lease_expires_at > stored.encode_started_at


def test_results_store_null_not_zero_for_unmeasured_values(session: Session) -> None:
    clip = make_clip(session)
    experiment = make_experiment(session, clip, to=ExperimentStatus.SCORING)
    results.record_result(session, experiment.id, points(experiment, clip))
    session.commit()

    rss = session.scalars(sa.select(Measurement.peak_rss_bytes)).all()
    assert rss == [None, None, None]
