"""Issue 15 through the real chain (embedded, SQLite, sandbox on): the BD metric stored with
every score, the overlap and reliability beside it, YUV PSNR per measurement, and the
decoder determinism check failing an experiment at stage ``verify``."""

from __future__ import annotations

import os

import pytest

from fleet_harness import use_settings

NOISY_DECODER = '''
import numpy as np

def compress_video_frame(frame, frame_index, config):
    return frame.tobytes()

def decompress_video_frame(compressed_data, frame_index, config):
    h, w = config["height"], config["width"]
    f = np.frombuffer(compressed_data, dtype=np.uint8).reshape(h, w, 3).copy()
    f[0, :, 0] = np.random.default_rng().integers(0, 256, w)   # fresh OS entropy per process
    return f
'''


@pytest.fixture
def embedded(tmp_path):
    saved = {k: v for k, v in os.environ.items() if k.startswith("CODECFLEET_")}
    use_settings({"CODECFLEET_DATA_DIR": str(tmp_path / "data"), "CODECFLEET_CACHE_DIR": str(tmp_path / "cache"),
                  "CODECFLEET_DEVICE": "cpu"})
    yield
    from db import engine

    engine.reset()
    use_settings(saved)


def test_scores_store_the_metric_the_overlap_and_yuv_psnr(embedded):
    from codecfleet import fleet
    from db import engine
    from db import results

    (handle,) = fleet.submit_many([{
        "candidate": "reference:intra_dct", "clip": "synthetic:mix@64x48", "frames": 2,
        "rate_points": [0.2, 0.45, 0.7, 0.95], "anchors": ["x264"], "metric": "psnr_yuv", "determinism": "every",
    }])
    result = handle.result()
    assert result["status"] == "succeeded", result
    assert all(rp["psnr_yuv"] is not None and rp["verify_decode_seconds"] > 0 for rp in result["rate_points"])
    bd = result["bd"]["x264"]
    assert bd["metric"] == "psnr_yuv" and bd["overlap"] is not None and bd["min_overlap"] == 0.75
    with engine.transaction() as session:
        (score,) = results.experiment_scores(session, handle.id)
        assert score.metric == "psnr_yuv" and score.overlap == bd["overlap"]
        if score.reliable:
            assert score.bd_rate == score.raw_bd_rate and score.overlap >= 0.75
        else:
            assert score.bd_rate is None and score.raw_bd_rate is not None


def test_a_nondeterministic_decoder_fails_at_verify(embedded):
    from codecfleet import fleet

    (handle,) = fleet.submit_many([{
        "candidate": NOISY_DECODER, "clip": "synthetic:mix@64x48", "frames": 2, "rate_points": [0.5],
        "determinism": "one",
    }])
    result = handle.result()
    assert (result["status"], result["stage"]) == ("failed", "verify"), result
    assert "nondeterministic decoder" in result["reason"]
