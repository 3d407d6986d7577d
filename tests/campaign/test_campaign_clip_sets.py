"""A campaign on a named clip set (a list file, a directory for the held-out clips):
each clip measured on its own, fitness the mean of the per-clip BD-rates, the set
stored expanded, held-out clips never in a prompt."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from codecfleet.campaigns import campaign
from evaluation.synthetic import synthetic_clip
from evaluation.video import write_video


def test_a_campaign_on_a_clip_list_scores_each_clip_and_averages_their_bd_rates(embedded, tmp_path):
    held_dir = tmp_path / "held"
    held_dir.mkdir()
    write_video(held_dir / "h.mp4", synthetic_clip("objects", width=64, height=48, frames=2, seed=9).frames, 25.0,
                codec="libx264", options={"crf": "16"}, pix_fmt="yuv420p")
    train = tmp_path / "train.mp4"
    write_video(train, synthetic_clip("pan", width=64, height=48, frames=2, seed=4).frames, 25.0,
                codec="libx264", options={"crf": "16"}, pix_fmt="yuv420p")
    listing = tmp_path / "clips.txt"
    listing.write_text("# the training set\ntrain.mp4\nsynthetic:mix@64x48\n")

    report = campaign([f"@{listing}"], "offline", population=1, generations=1, name="sets", seed=2, frames=2,
                      seeds=("intra_dct",), held_out=[str(held_dir)])

    engine = sa.create_engine(f"sqlite:///{embedded['CODECFLEET_DATA_DIR']}/codecfleet.db")
    with engine.connect() as conn:
        stored = json.loads(conn.execute(sa.text("SELECT description FROM campaigns WHERE name = 'sets'")).scalar())
        rows = conn.execute(sa.text(
            "SELECT e.candidate_id, c.source, s.bd_rate FROM experiments e JOIN clips c ON c.id = e.clip_id "
            "JOIN scores s ON s.experiment_id = COALESCE(e.reused_from_id, e.id) "
            "WHERE s.anchor_codec = 'x264' AND s.metric = 'psnr_y'")).all()
        prompts = [p for (p,) in conn.execute(sa.text("SELECT prompt FROM candidates WHERE prompt IS NOT NULL"))]
    engine.dispose()
    assert stored["clips"] == [str(train), "synthetic:mix@64x48"]  # the set, expanded
    assert stored["held_out"] == [str(held_dir / "h.mp4")]
    assert report.leaderboard
    for row in report.leaderboard:
        per_clip = {src: bd for cid, src, bd in rows if cid == row["candidate_id"] and "h.mp4" not in src}
        assert len(per_clip) == 2 and None not in per_clip.values(), per_clip
        assert row["bd_rate"] == pytest.approx(sum(per_clip.values()) / 2)
        assert list(report.held_out[row["candidate_id"]]["per_clip"]) == [str(held_dir / "h.mp4")]
    for prompt in prompts:
        assert "h.mp4" not in prompt and str(held_dir) not in prompt
