"""The codecfleet command line, run as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.reference import REFERENCE_CANDIDATES
from evaluation.synthetic import synthetic_clip
from evaluation.video import write_video

CLIP = "synthetic:mix@96x64"


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e.update(
        CODECFLEET_DATA_DIR=str(tmp_path / "data"),
        CODECFLEET_CACHE_DIR=str(tmp_path / "cache"),
        CODECFLEET_ARTIFACT_DIR=str(tmp_path / "artifacts"),
        CODECFLEET_DEVICE="cpu",
    )
    e.pop("CODECFLEET_DATABASE_URL", None)
    e.pop("CODECFLEET_BROKER_URL", None)
    return e


def codecfleet(*args, env, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "codecfleet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "name",
    # overfit_nn trains at encode time (17 s here): its own tests cover it, the CLI run is in the slow set.
    [pytest.param(n, marks=pytest.mark.slow) if n == "overfit_nn" else n for n in sorted(REFERENCE_CANDIDATES)],
)
def test_evaluate_json_for_each_reference_candidate(name, env, tmp_path):
    proc = codecfleet("evaluate", f"reference:{name}", "--clip", CLIP, "--frames", "3",
                      "--rate-points", "2", "--anchors", "", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "succeeded"
    assert out["isolation"].startswith("bubblewrap")
    assert out["clip"]["width"] == 96 and out["clip"]["height"] == 64 and out["clip"]["frames"] == 3
    for rp in out["rate_points"]:
        path = Path(rp["bitstream"])
        assert path.is_file() and path.is_relative_to(tmp_path / "artifacts")
        assert path.stat().st_size == rp["bytes"]
        for key in ("quality", "bitstream_sha256", "kbps", "bpp", "psnr_rgb", "psnr_y", "ssim_y", "ms_ssim",
                    "encode_fps", "decode_fps"):
            assert rp[key] is not None, key
    assert out["rate_points"][0]["bytes"] < out["rate_points"][1]["bytes"]


def test_evaluate_with_anchors_reports_bd_rate(env):
    proc = codecfleet("evaluate", "reference:intra_dct", "--clip", CLIP, "--frames", "3",
                      "--rate-points", "4", "--anchors", "x264", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["anchors"]["x264"]) >= 4
    assert isinstance(out["bd_rate"]["x264"], float)
    assert out["bd"]["x264"]["metric"] == "psnr_y"


def test_evaluate_a_real_file_written_by_pyav(env, tmp_path):
    clip = synthetic_clip("objects", width=96, height=64, frames=3)
    video = tmp_path / "clip.mkv"
    write_video(video, np.asarray(clip.frames), clip.fps)
    proc = codecfleet("evaluate", "reference:inter_mc", "--clip", str(video), "--rate-points", "2",
                      "--anchors", "", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["clip"]["source"] == str(video)
    assert out["clip"]["sha256"] == clip.sha256
    assert out["status"] == "succeeded"


def test_evaluate_table_output_names_columns_and_status(env):
    proc = codecfleet("evaluate", "reference:intra_dct", "--clip", CLIP, "--frames", "2",
                      "--rate-points", "2", "--anchors", "", env=env)
    assert proc.returncode == 0, proc.stderr
    for column in ("quality", "kbps", "PSNR-RGB", "PSNR-Y", "SSIM-Y", "enc fps", "dec fps"):
        assert column in proc.stdout
    assert "status: succeeded" in proc.stdout


def test_failed_candidate_prints_status_stage_reason_and_exits_1(env, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import numpy as np\n"
        "def compress_video_frame(frame, frame_index, config):\n    return b'x'\n"
        "def decompress_video_frame(compressed_data, frame_index, config):\n    return np.zeros((2, 2, 3), np.uint8)\n"
    )
    proc = codecfleet("evaluate", str(bad), "--clip", CLIP, "--frames", "2", "--rate-points", "1",
                      "--anchors", "", "--json", env=env)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert (out["status"], out["stage"]) == ("failed", "verify")
    assert "shape" in out["reason"]
    table = codecfleet("evaluate", str(bad), "--clip", CLIP, "--frames", "2", "--rate-points", "1",
                       "--anchors", "", env=env)
    assert table.returncode == 1
    assert "status: failed" in table.stdout and "stage: verify" in table.stdout


def test_rejected_candidate_fails_at_sanitize(env, tmp_path):
    bad = tmp_path / "evil.py"
    bad.write_text("import os\ndef compress_video_frame(f, i, c):\n    return b''\n"
                   "def decompress_video_frame(d, i, c):\n    return None\n")
    proc = codecfleet("evaluate", str(bad), "--clip", CLIP, "--frames", "2", "--anchors", "", "--json", env=env)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["stage"] == "sanitize" and "os" in out["reason"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "not found"), (b"this is not a video", "not a video")],
    ids=["missing", "garbage"],
)
def test_bad_video_is_one_clear_line_and_exit_2(env, tmp_path, content, needle):
    video = tmp_path / "input.mp4"
    if content is not None:
        video.write_bytes(content)
    proc = codecfleet("evaluate", "reference:intra_dct", "--clip", str(video), env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(video) in lines[0] and needle in lines[0].lower()


def test_missing_candidate_file_is_exit_2(env, tmp_path):
    proc = codecfleet("evaluate", str(tmp_path / "nope.py"), env=env)
    assert proc.returncode == 2
    assert "candidate file not found" in proc.stderr


def test_metrics_json_has_means_and_per_frame_values(env, tmp_path):
    clip = synthetic_clip("pan", width=96, height=64, frames=3)
    ref = tmp_path / "ref.mkv"
    dist = tmp_path / "dist.mkv"
    write_video(ref, np.asarray(clip.frames), clip.fps)
    noisy = np.clip(clip.frames.astype(np.int16) + np.random.default_rng(0).integers(-6, 7, clip.frames.shape), 0, 255)
    write_video(dist, noisy.astype(np.uint8), clip.fps)
    proc = codecfleet("metrics", str(ref), str(dist), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("psnr_rgb", "psnr_y", "ssim_y", "ms_ssim"):
        assert isinstance(out[key], float)
    assert 25 < out["psnr_rgb"] < 45
    assert len(out["per_frame"]) == 3
    assert out["per_frame"][0]["psnr_y"] > 0
    limited = codecfleet("metrics", str(ref), str(dist), "--frames", "2", "--json", env=env)
    assert len(json.loads(limited.stdout)["per_frame"]) == 2


def test_metrics_of_a_video_against_itself_is_capped(env, tmp_path):
    clip = synthetic_clip("pan", width=96, height=64, frames=2)
    ref = tmp_path / "ref.mkv"
    write_video(ref, np.asarray(clip.frames), clip.fps)
    out = json.loads(codecfleet("metrics", str(ref), str(ref), "--json", env=env).stdout)
    assert out["psnr_rgb"] == 100.0 and out["psnr_capped_frames"] == 2


def test_sanitize_json_reports_verdict_hash_and_code(env, tmp_path):
    reply = tmp_path / "reply.md"
    reply.write_text(
        "Here is my codec:\n```python\nimport zlib\nimport numpy as np\n"
        "def compress_video_frame(frame, frame_index, config):\n    return zlib.compress(frame.tobytes())\n"
        "def decompress_video_frame(compressed_data, frame_index, config):\n"
        "    return np.frombuffer(zlib.decompress(compressed_data), np.uint8).reshape(config['height'], config['width'], 3)\n"
        "if __name__ == '__main__':\n    print('hi')\n```\n"
    )
    proc = codecfleet("sanitize", str(reply), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is True and len(out["ast_hash"]) == 64
    assert "__main__" not in out["code"]


# --- help, clips, argument errors -----------------------------------------------------


def _all_parsers():
    import argparse

    from codecfleet.cli import build_parser

    root = build_parser()
    todo, out = [("codecfleet", root)], []
    while todo:
        name, parser = todo.pop()
        out.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return out


def test_every_option_has_help_with_its_default():
    import argparse

    missing = []
    for name, parser in _all_parsers():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
                continue
            if not action.help:
                missing.append(f"{name} {action.dest}: no help")
            elif action.option_strings and not isinstance(action, argparse._StoreTrueAction) \
                    and "default" not in action.help and "required" not in action.help:
                missing.append(f"{name} {action.option_strings[0]}: no default in {action.help!r}")
    assert missing == []


def test_top_level_help_has_examples_and_no_markup(env):
    proc = codecfleet("--help", env=env)
    assert proc.returncode == 0
    assert "``" not in proc.stdout and "examples:" in proc.stdout
    assert "codecfleet run " in proc.stdout and "codecfleet evaluate my_codec.py" in proc.stdout


def test_clips_lists_every_synthetic_clip_and_the_spec_options(env):
    from evaluation.synthetic import SYNTHETIC_NAMES

    proc = codecfleet("clips", env=env)
    assert proc.returncode == 0, proc.stderr
    for name in SYNTHETIC_NAMES:
        assert f"synthetic:{name}" in proc.stdout
    assert "synthetic:NAME[@WxH][,seed=S]" in proc.stdout


def test_run_refuses_a_bad_clip_before_any_banner_and_echoes_it_as_typed(env, tmp_path):
    proc = codecfleet("run", "--clip", "synthetic:foo", env=env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == ("codecfleet run: error: unknown synthetic clip 'foo' in 'synthetic:foo'; "
                                   "known: mix, objects, pan, noise, cut")
    assert not (tmp_path / "data").exists()  # nothing was recorded


def test_run_takes_anchors_and_the_old_anchor_spelling(env):
    for option in ("--anchors", "--anchor"):
        proc = codecfleet("run", option, "x999", env=env)
        assert proc.returncode == 2 and proc.stdout == ""
        assert "unknown anchor 'x999'" in proc.stderr


def test_run_takes_a_prompt_budget_and_refuses_a_non_positive_one(env):
    assert "--prompt-budget CHARS" in codecfleet("run", "--help", env=env).stdout
    proc = codecfleet("run", "--prompt-budget", "0", "--population", "1", "--generations", "0", env=env)
    assert proc.returncode == 2
    assert "prompt_budget must be a positive number of characters" in proc.stderr


def test_a_bd_figure_is_a_number_with_its_overlap_or_none_with_a_reason():
    from codecfleet.cli import bd_verdict, normalize_bd

    assert bd_verdict({"bd_rate_pct": 12.5, "overlap": 0.9, "reliable": True}) == (12.5, None)
    value, reason = bd_verdict({"bd_rate_pct": 12.5, "overlap": 0.5, "reliable": False, "min_overlap": 0.75})
    assert value is None and "overlap 50.0 % is below 75 %" in reason and "+12.50" in reason
    result = {"bd": {"x264": {"bd_rate_pct": 3.0, "bd_psnr_db": None, "overlap": 0.9, "reliable": True,
                              "error": "BD-PSNR failed"}}, "bd_rate": {"x264": 3.0}}
    normalize_bd(result)
    assert result["bd"]["x264"]["bd_rate_pct"] is None and result["bd_rate"]["x264"] is None
    assert result["bd"]["x264"]["raw_bd_rate_pct"] == 3.0 and result["bd"]["x264"]["error"] == "BD-PSNR failed"


def test_a_failed_candidate_prints_no_empty_table(env, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n", encoding="utf-8")
    proc = codecfleet("evaluate", str(bad), "--clip", CLIP, "--frames", "2", "--anchors", "", env=env)
    assert proc.returncode == 1
    assert "candidate rate points" not in proc.stdout and "stage: sanitize" in proc.stdout
