"""Held-out clips: fitness and prompts use the training clips only; the held-out clips are
measured for the final leaderboard and the report, and never appear in a prompt."""

from __future__ import annotations

import sqlalchemy as sa

from codecfleet.campaigns import campaign

TRAIN = "synthetic:mix@96x64"
HELD = "synthetic:pan@96x64"


def test_held_out_clips_are_measured_for_the_leaderboard_and_never_prompted(embedded):
    report = campaign([TRAIN], "offline", population=2, generations=1, name="held", seed=3, frames=2,
                      held_out=[HELD])

    assert report.leaderboard, report
    assert report.held_out and set(report.held_out) == {r["candidate_id"] for r in report.leaderboard}
    for row in report.leaderboard:
        held = report.held_out[row["candidate_id"]]
        assert list(held["per_clip"]) == ["synthetic:pan@96x64"]
        assert row["held_out_bd_rate"] == held["bd_rate"]
    assert any(r["held_out_bd_rate"] is not None for r in report.leaderboard)

    engine = sa.create_engine(f"sqlite:///{embedded['CODECFLEET_DATA_DIR']}/codecfleet.db")
    with engine.connect() as conn:
        stored = [p for (p,) in conn.execute(sa.text("SELECT prompt FROM candidates WHERE prompt IS NOT NULL"))]
        clips = {s for (s,) in conn.execute(sa.text(
            "SELECT DISTINCT c.source FROM experiments e JOIN clips c ON c.id = e.clip_id"))}
        held_sha = conn.execute(sa.text("SELECT sha256 FROM clips WHERE source LIKE 'synthetic:pan%'")).scalar()
    engine.dispose()
    assert any(s.startswith("synthetic:pan") for s in clips)  # it was measured
    assert stored, "the offline generator stores its prompts"
    for prompt in stored:
        assert "pan@" not in prompt and held_sha[:12] not in prompt
