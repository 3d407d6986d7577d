"""Paper-grade numbers from the pipeline: matched anchors and their overlap, metric
selection, and the decoder determinism check (stage ``verify``)."""

from __future__ import annotations

import random

import pytest

from codecfleet.fleet import read_candidate
from evaluation import anchors, pipeline
from evaluation.pipeline import bd_against, measure_candidate, verify_determinism
from evaluation.rd import overlap_fraction
from evaluation.runner import CandidateError, InProcessRunner
from evaluation.synthetic import synthetic_clip
from evaluation.video import read_video, write_video

NOISY_DECODER = '''
import os
import numpy as np

def compress_video_frame(frame, frame_index, config):
    return frame.tobytes()

def decompress_video_frame(compressed_data, frame_index, config):
    h, w = config["height"], config["width"]
    f = np.frombuffer(compressed_data, dtype=np.uint8).reshape(h, w, 3).copy()
    f[0, :, 0] = np.frombuffer(os.urandom(w), dtype=np.uint8)   # differs from one decode to the next
    return f
'''


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory):
    """A real mp4 written with PyAV (libx264) and read back."""
    path = tmp_path_factory.mktemp("real") / "real.mp4"
    src = synthetic_clip("mix", width=176, height=144, frames=3, seed=7)
    write_video(path, src.frames, 25.0, codec="libx264", options={"crf": "18"}, pix_fmt="yuv420p")
    return read_video(path)


@pytest.fixture(scope="module")
def intra_dct():
    return read_candidate("reference:intra_dct")[1]


@pytest.fixture(scope="module")
def evaluated(real_clip, intra_dct, tmp_path_factory):
    d = tmp_path_factory.mktemp("ev")
    return measure_candidate(intra_dct, real_clip, 4, runner=InProcessRunner(), artifact_dir=d / "art",
                              anchors=("x264",), anchor_cache_dir=d / "anchors", device="cpu", metric="psnr_yuv",
                              determinism="every")


def test_reference_codec_on_a_real_file_reports_psnr_yuv_and_overlap_of_90_percent(evaluated, real_clip, tmp_path):
    assert evaluated["status"] == "succeeded", evaluated["reason"]
    assert evaluated["metric"] == "psnr_yuv"
    for rp in evaluated["rate_points"]:
        assert rp["psnr_yuv"] is not None and 15 < rp["psnr_yuv"] < 60
        assert len(rp["per_frame"]["psnr_yuv"]) == real_clip.n_frames
    bd = evaluated["bd"]["x264"]
    assert bd["metric"] == "psnr_yuv"
    assert bd["reachable"] and bd["overlap"] >= 0.90 and bd["reliable"]
    assert bd["bd_rate_pct"] is not None
    # The number is the overlap of the two curves BD integrated over.
    test = [(r["kbps"], r["psnr_yuv"]) for r in evaluated["rate_points"]]
    anchor = [(p["kbps"], p["psnr_yuv"]) for p in evaluated["anchors"]["x264"]]
    assert bd["overlap"] == pytest.approx(overlap_fraction(anchor, test))
    assert [p["crf"] for p in evaluated["anchors"]["x264"]] == bd["anchor_crfs"]


def test_matched_anchors_beat_the_fixed_sweep_on_overlap(evaluated, real_clip, tmp_path):
    test = [(r["kbps"], r["psnr_yuv"]) for r in evaluated["rate_points"]]
    fixed = anchors.anchor_curve(real_clip, "x264", cache_dir=tmp_path, device="cpu")
    before = overlap_fraction([(p.kbps, p.psnr_yuv) for p in fixed], test)
    assert evaluated["bd"]["x264"]["overlap"] > before


def test_matched_sweep_is_cached_per_clip(real_clip, tmp_path):
    first = anchors.matched_curve(real_clip, "x264", [30.0, 38.0], cache_dir=tmp_path, device="cpu")
    again = anchors.matched_curve(real_clip, "x264", [30.0, 38.0], cache_dir=tmp_path, device="cpu")
    assert not any(p.from_cache for p in first.swept)
    assert all(p.from_cache for p in again.swept)
    assert [p.crf for p in again.points] == [p.crf for p in first.points]
    assert first.overlap >= 0.9 and 4 <= len(first.points) <= anchors.MAX_MATCHED_POINTS


def test_a_range_beyond_the_anchors_reach_is_not_reachable(real_clip, tmp_path):
    m = anchors.matched_curve(real_clip, "x264", [5.0, 99.5], cache_dir=tmp_path, device="cpu")
    assert not m.reachable and m.overlap < 0.9


def test_low_overlap_figure_is_kept_but_unreliable():
    anchor = [{"kbps": k, "psnr_y": q} for k, q in ((100, 30), (200, 33), (400, 36), (800, 39))]
    test = [{"kbps": k, "psnr_y": q} for k, q in ((300, 35), (500, 37), (900, 40), (1500, 42))]
    detail = bd_against(anchor, test, "psnr_y", min_overlap=0.75)
    assert detail["bd_rate_pct"] is not None and detail["overlap"] < 0.75
    assert detail["reliable"] is False and any("unreliable" in w for w in detail["warnings"])
    assert bd_against(anchor, test, "psnr_y", min_overlap=0.2)["reliable"] is True


def test_ssim_metrics_enter_bd_in_db():
    anchor = [{"kbps": k, "ssim_y": q} for k, q in ((100, 0.90), (200, 0.95), (400, 0.98), (800, 0.99))]
    detail = bd_against(anchor, anchor, "ssim_y")
    assert detail["bd_rate_pct"] == pytest.approx(0.0, abs=1e-9) and detail["overlap"] == pytest.approx(1.0)


def test_unknown_metric_is_refused(real_clip, intra_dct, tmp_path):
    with pytest.raises(ValueError, match="unknown metric"):
        measure_candidate(intra_dct, real_clip, 2, runner=InProcessRunner(), artifact_dir=tmp_path, metric="vmaf")


def test_determinism_every_point_is_checked_and_its_cost_reported(evaluated):
    det = evaluated["determinism"]
    assert det["mode"] == "every" and det["identical"] is True
    assert det["points"] == [0, 1, 2, 3]
    assert det["seconds"] > 0 and det["first_decode_seconds"] > 0


def test_nondeterministic_decoder_fails_at_verify(real_clip, tmp_path):
    result = measure_candidate(NOISY_DECODER, real_clip, 2, runner=InProcessRunner(), artifact_dir=tmp_path,
                                determinism="one")
    assert result["status"] == "failed" and result["stage"] == "verify"
    assert "nondeterministic decoder" in result["reason"] and "frame 0" in result["reason"]


def test_determinism_off_and_one_sampled_point(real_clip, tmp_path):
    rows = measure_candidate(NOISY_DECODER, real_clip, 3, runner=InProcessRunner(), artifact_dir=tmp_path,
                              determinism="off")
    assert rows["status"] == "succeeded" and rows["determinism"]["points"] == []
    with pytest.raises(CandidateError) as err:
        verify_determinism(NOISY_DECODER, real_clip, rows["rate_points"], runner=InProcessRunner(), device="cpu",
                           mode="one", rng=random.Random(1))
    assert err.value.stage == "verify"
    with pytest.raises(ValueError):
        verify_determinism(NOISY_DECODER, real_clip, rows["rate_points"], runner=InProcessRunner(), device="cpu",
                           mode="sometimes")


def test_bitstream_changed_on_disk_between_decodes_is_caught(real_clip, intra_dct, tmp_path):
    """The second decode reads the file again: bytes altered after the first decode give other frames."""
    res = measure_candidate(intra_dct, real_clip, 2, runner=InProcessRunner(), artifact_dir=tmp_path,
                             determinism="off")
    from evaluation.container import read_bitstream, write_bitstream
    from pathlib import Path

    row = res["rate_points"][1]
    path = Path(row["bitstream"])
    payloads = read_bitstream(path)
    other = res["rate_points"][0]
    path.unlink()
    write_bitstream(path, read_bitstream(Path(other["bitstream"]))[:1] + payloads[1:])
    with pytest.raises(CandidateError, match="nondeterministic decoder: rate point 1"):
        verify_determinism(intra_dct, real_clip, [row], runner=InProcessRunner(), device="cpu", mode="every")
    assert pipeline.DETERMINISM_MODES == ("every", "one", "off")
