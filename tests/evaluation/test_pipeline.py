"""measure_candidate: every number from an artifact that was written and re-read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from evaluation.container import read_bitstream
from evaluation.pipeline import measure_candidate, quality_points
from evaluation.runner import CandidateError, InProcessRunner
from evaluation.synthetic import synthetic_clip

LOSSLESS = '''
import zlib
import numpy as np

def compress_video_frame(frame, frame_index, config):
    return zlib.compress(frame.tobytes(), 1)

def decompress_video_frame(compressed_data, frame_index, config):
    h, w = config["height"], config["width"]
    return np.frombuffer(zlib.decompress(compressed_data), dtype=np.uint8).reshape(h, w, 3).copy()
'''

# A cheat: the encoder keeps the frames in a module global, and the decoder
# returns them if it can see that global. It must not be able to.
STASH = '''
import numpy as np
_STASH = []

def compress_video_frame(frame, frame_index, config):
    _STASH.append(frame.copy())
    return b"x"

def decompress_video_frame(compressed_data, frame_index, config):
    if len(_STASH) > frame_index:
        return _STASH[frame_index]
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''

BLANK = '''
import numpy as np

def compress_video_frame(frame, frame_index, config):
    return b"x"

def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''

# Rate knob honoured: keeps the top bits of each sample, more at higher quality.
QUANTISER = '''
import zlib
import numpy as np

def _shift(config):
    return int(round((1.0 - config["quality"]) * 6))

def compress_video_frame(frame, frame_index, config):
    return zlib.compress((frame >> _shift(config)).tobytes(), 9)

def decompress_video_frame(compressed_data, frame_index, config):
    s = _shift(config)
    q = np.frombuffer(zlib.decompress(compressed_data), dtype=np.uint8).reshape(config["height"], config["width"], 3)
    return ((q.astype(np.uint16) << s) + ((1 << s) >> 1)).clip(0, 255).astype(np.uint8)
'''


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip("mix", width=64, height=48, frames=3)


def _evaluate(code, clip, tmp_path, **kw):
    kw.setdefault("rate_points", [0.5])
    return measure_candidate(code, clip, runner=InProcessRunner(), artifact_dir=tmp_path, **kw)


def test_bytes_and_hash_come_from_the_file_on_disk(clip, tmp_path):
    result = _evaluate(LOSSLESS, clip, tmp_path)
    assert result["status"] == "succeeded", result
    rp = result["rate_points"][0]
    data = Path(rp["bitstream"]).read_bytes()
    assert rp["bytes"] == len(data)
    assert rp["bits"] == 8 * len(data)
    assert rp["bitstream_sha256"] == hashlib.sha256(data).hexdigest()
    assert len(read_bitstream(rp["bitstream"])) == clip.n_frames


def test_lossless_codec_scores_capped_psnr_and_says_so(clip, tmp_path):
    rp = _evaluate(LOSSLESS, clip, tmp_path)["rate_points"][0]
    assert rp["psnr_rgb"] == 100.0
    assert rp["psnr_capped_frames"] == clip.n_frames
    assert rp["ssim_y"] == pytest.approx(1.0)


def test_each_run_writes_under_its_own_directory(clip, tmp_path):
    a = _evaluate(LOSSLESS, clip, tmp_path)
    b = _evaluate(LOSSLESS, clip, tmp_path)
    assert a["run_dir"] != b["run_dir"]
    assert a["rate_points"][0]["bitstream"] != b["rate_points"][0]["bitstream"]


def test_decoder_never_sees_encoder_state(clip, tmp_path):
    stash = _evaluate(STASH, clip, tmp_path)["rate_points"][0]
    blank = _evaluate(BLANK, clip, tmp_path)["rate_points"][0]
    assert stash["psnr_y"] == pytest.approx(blank["psnr_y"])
    assert stash["psnr_y"] < 20


def test_decoder_is_fed_the_payloads_read_back_from_disk(clip, tmp_path):
    seen = {}

    class Spy(InProcessRunner):
        def decode(self, code, payloads, config, n_frames):
            seen["payloads"] = payloads
            return super().decode(code, payloads, config, n_frames)

    result = measure_candidate(LOSSLESS, clip, [0.5], runner=Spy(), artifact_dir=tmp_path)
    assert seen["payloads"] == read_bitstream(result["rate_points"][0]["bitstream"])


def test_rate_knob_gives_more_bytes_and_higher_psnr(clip, tmp_path):
    rps = _evaluate(QUANTISER, clip, tmp_path, rate_points=4)["rate_points"]
    assert [rp["quality"] for rp in rps] == quality_points(4)
    sizes = [rp["bytes"] for rp in rps]
    psnrs = [rp["psnr_y"] for rp in rps]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert psnrs == sorted(psnrs)


@pytest.mark.parametrize(
    ("code", "stage", "needle"),
    [
        ("def compress_video_frame(:\n", "import", "SyntaxError"),
        ("import numpy\n", "import", "compress_video_frame"),
        (LOSSLESS.replace("return zlib.compress(frame.tobytes(), 1)", "raise RuntimeError('boom')"), "encode", "boom"),
        (LOSSLESS.replace("return zlib.compress(frame.tobytes(), 1)", "return 'text'"), "encode", "expected bytes"),
        (LOSSLESS.replace(".reshape(h, w, 3)", ".reshape(h * w, 3)"), "verify", "shape"),
        (LOSSLESS.replace(".copy()", ".astype(np.float32)"), "verify", "dtype"),
        (LOSSLESS.replace("zlib.decompress(compressed_data)", "zlib.decompress(compressed_data[1:])"), "decode", "error"),
    ],
    ids=["syntax", "missing-functions", "encoder-raises", "non-bytes", "wrong-shape", "wrong-dtype", "decoder-raises"],
)
def test_candidate_faults_fail_with_stage_and_reason(clip, tmp_path, code, stage, needle):
    result = _evaluate(code, clip, tmp_path)
    assert result["status"] == "failed"
    assert result["stage"] == stage
    assert needle in result["reason"]
    assert result["rate_points"] == []


def test_candidate_error_refuses_unknown_stage():
    with pytest.raises(ValueError, match="unknown stage"):
        CandidateError("somewhere", "x")


def test_candidate_cannot_alter_the_reference_frames(clip, tmp_path):
    mutate = LOSSLESS.replace("return zlib.compress(frame.tobytes(), 1)", "frame[:] = 0\n    return zlib.compress(frame.tobytes(), 1)")
    before = clip.sha256
    frames_copy = np.array(clip.frames)
    _evaluate(mutate, clip, tmp_path)
    assert np.array_equal(clip.frames, frames_copy)
    assert clip.sha256 == before


def test_on_step_is_told_of_each_rate_point(clip, tmp_path):
    steps = []
    _evaluate(QUANTISER, clip, tmp_path, rate_points=3, on_step=steps.append)
    assert steps == [f"rate point {i}/3 (quality {q:.3f}) measured" for i, q in zip((1, 2, 3), quality_points(3))]
