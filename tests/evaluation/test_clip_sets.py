"""Named clip sets: a directory of videos or a list file is measured clip by clip, and the
set's BD-rate is the mean of the per-clip BD-rates (codecfleet evaluate --clip @LIST / DIR)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.pipeline import clip_set_summary
from evaluation.synthetic import synthetic_clip
from evaluation.clip import VideoError
from evaluation.video import (
    expand_clip_set,
    expand_clip_specs,
    is_clip_set,
    write_video,
)


def _video(path, name, seed):
    clip = synthetic_clip(name, width=64, height=48, frames=3, seed=seed)
    write_video(path, clip.frames, 25.0, codec="libx264", options={"crf": "16"}, pix_fmt="yuv420p")
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("set")
    b = _video(d / "b_pan.mp4", "pan", 2)
    a = _video(d / "a_mix.mkv", "mix", 1)
    (d / "notes.txt").write_text("not a clip\n")
    return d, [a, b]


def test_a_directory_is_its_video_files_by_name(videos):
    d, (a, b) = videos
    assert is_clip_set(str(d)) and not is_clip_set(a) and not is_clip_set("synthetic:mix")
    assert expand_clip_set(str(d)) == [a, b]
    assert expand_clip_set(a) == [a]  # a single clip is a set of one


def test_a_list_file_takes_paths_directories_and_synthetic_specs_with_comments(videos, tmp_path):
    d, (a, b) = videos
    other = tmp_path / "more"
    other.mkdir()
    c = _video(other / "c.mp4", "objects", 3)
    listing = tmp_path / "clips.txt"
    listing.write_text(f"# training clips\n\n{b}   # absolute path\nmore/c.mp4\nsynthetic:noise@64x48\n  # indented\n")
    assert expand_clip_set(f"@{listing}") == [b, c, "synthetic:noise@64x48"]
    listing.write_text(f"{d}\n")
    assert expand_clip_set(f"@{listing}") == [a, b]
    assert expand_clip_specs([f"@{listing}", "synthetic:mix@64x48"]) == [a, b, "synthetic:mix@64x48"]


@pytest.mark.parametrize("content, message", [
    ("missing.mp4\n", "line 1: no such file: missing.mp4"),
    ("# nothing\n\n", "names no clip"),
    ("@other.txt\n", "cannot name another list"),
])
def test_a_bad_list_file_says_which_line(tmp_path, content, message):
    listing = tmp_path / "clips.txt"
    listing.write_text(content)
    with pytest.raises(VideoError, match=message):
        expand_clip_set(f"@{listing}")


def test_a_clip_named_twice_or_an_empty_directory_is_refused(videos, tmp_path):
    d, (a, _) = videos
    with pytest.raises(VideoError, match="named twice"):
        expand_clip_specs([str(d), a])
    with pytest.raises(VideoError, match="holds no video file"):
        expand_clip_set(str(tmp_path))


def test_the_set_figure_is_the_mean_of_per_clip_figures_and_none_unless_all_are_reliable():
    def result(source, bd, reliable, overlap):
        return {"status": "succeeded", "clip": {"source": source}, "metric": "psnr_y",
                "bd": {"x264": {"bd_rate_pct": bd, "reliable": reliable, "overlap": overlap}}}

    s = clip_set_summary([result("a", 10.0, True, 0.95), result("b", -30.0, True, 0.9)])
    assert s["bd_rate"] == {"x264": -10.0} and s["bd"]["x264"]["min_overlap_seen"] == 0.9
    s = clip_set_summary([result("a", 10.0, True, 0.95), result("b", -30.0, False, 0.4)])
    assert s["bd_rate"] == {"x264": None} and s["bd"]["x264"]["missing"] == ["b"]
    assert s["bd"]["x264"]["per_clip"] == [10.0, None]


def test_codecfleet_evaluate_on_a_clip_set_reports_each_clip_and_the_mean(videos, tmp_path, monkeypatch, capsys):
    from codecfleet.cli import main
    from config import get_settings

    d, (a, b) = videos
    monkeypatch.setenv("CODECFLEET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CODECFLEET_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    listing = tmp_path / "clips.txt"
    listing.write_text(f"{a}\nsynthetic:pan@64x48  # a synthetic clip too\n")
    try:
        rc = main(["evaluate", "reference:intra_dct", "--clip", f"@{listing}", "--frames", "3", "--runner",
                   "in-process", "--determinism", "off", "--anchors", "x264", "--json"])
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["clip_set"] == f"@{listing}" and out["clips"] == 2
    sources = [r["clip"]["source"] for r in out["results"]]
    assert sources == [a, "synthetic:pan@64x48"]
    per_clip = [r["bd"]["x264"]["bd_rate_pct"] for r in out["results"]]
    assert out["bd"]["x264"]["per_clip"] == per_clip
    assert all(v is not None for v in per_clip) and per_clip[0] != pytest.approx(per_clip[1])
    assert out["bd_rate"]["x264"] == pytest.approx(float(np.mean(per_clip)))
    assert out["bd"]["x264"]["min_overlap_seen"] == min(r["bd"]["x264"]["overlap"] for r in out["results"])
