"""Specification of the classic codec anchors in evaluation.anchors.

Real encoders and decoders (PyAV's bundled FFmpeg) on a small synthetic clip.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction

import av
import numpy as np
import pytest

from evaluation import anchors, metrics
from evaluation.anchors import (
    ANCHOR_CODECS,
    DEFAULT_CRFS,
    AnchorError,
    anchor_cache_path,
    anchor_curve,
    encode_anchor,
    encoder_settings,
)
from evaluation.synthetic import synthetic_clip
from evaluation.clip import Clip

W, H, N = 176, 144, 6


@pytest.fixture(scope="module")
def clip() -> Clip:
    return synthetic_clip("mix", width=W, height=H, frames=N)


@pytest.fixture(scope="module")
def curves(clip) -> dict[str, list[anchors.AnchorPoint]]:
    """Each codec's default sweep, measured once for the module."""
    return {codec: anchor_curve(clip, codec) for codec in ANCHOR_CODECS}


# ---------------------------------------------------------------- curves


@pytest.mark.parametrize("codec", ANCHOR_CODECS)
def test_default_sweep_gives_a_monotonic_rd_curve(curves, codec):
    curve = curves[codec]
    assert [p.crf for p in curve] == sorted(DEFAULT_CRFS[codec], reverse=True)
    assert len(curve) >= 4
    rates = [p.n_bytes for p in curve]
    assert rates == sorted(set(rates)), "more bytes at each lower CRF"
    for metric in ("psnr_y", "psnr_rgb"):
        values = [getattr(p, metric) for p in curve]
        assert all(b > a for a, b in zip(values, values[1:])), f"{metric} rises with rate: {values}"


@pytest.mark.parametrize("codec", ANCHOR_CODECS)
def test_default_sweep_spans_a_useful_quality_range(curves, codec):
    psnr = [p.psnr_y for p in curves[codec]]
    assert psnr[-1] - psnr[0] > 4.0


@pytest.mark.parametrize("codec", ANCHOR_CODECS)
def test_rate_fields_follow_the_metrics_formulas(curves, clip, codec):
    for p in curves[codec]:
        rate = metrics.rate_stats(p.n_bytes, N, W, H, clip.fps)
        assert p.kbps == pytest.approx(p.n_bytes * 8 * clip.fps / N / 1000)
        assert p.kbps == pytest.approx(rate["kbps"])
        assert p.bpp == pytest.approx(p.n_bytes * 8 / (N * W * H))


@pytest.mark.parametrize("codec", ANCHOR_CODECS)
def test_points_say_what_produced_them(curves, clip, codec):
    p = curves[codec][0]
    assert p.codec == codec
    assert p.clip_sha256 == clip.sha256
    assert p.metrics_version == metrics.METRICS_VERSION
    assert p.anchor_version == anchors.ANCHOR_VERSION
    assert p.from_cache is False
    assert p.encode_seconds > 0 and p.decode_seconds > 0
    assert p.library.split(":")[0].startswith(("libx264", "libx265", "libSvtAv1Enc", "unmapped"))


# ---------------------------------------------------------------- rate = packet bytes


def _muxed_size(clip: Clip, codec: str, crf: int, fmt: str) -> tuple[int, int]:
    """Encode through a PyAV output container instead; (file size, packet count)."""
    s = encoder_settings(codec, crf)
    buf = io.BytesIO()
    n_packets = 0
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(s["encoder"], rate=Fraction(clip.fps))
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, s["pix_fmt"]
        ctx = stream.codec_context
        ctx.gop_size, ctx.thread_type, ctx.thread_count = s["gop_size"], "FRAME", s["threads"]
        ctx.colorspace, ctx.color_range = 1, 1  # BT.709, limited
        stream.options = {**s["options"], "crf": str(crf)}
        for i, rgb in enumerate(clip.frames):
            frame = anchors._to_yuv420(rgb)
            frame.pts = i
            packets = stream.encode(frame)
            n_packets += len(packets)
            out.mux(packets)
        packets = stream.encode(None)
        n_packets += len(packets)
        out.mux(packets)
    return len(buf.getvalue()), n_packets


@pytest.mark.parametrize("codec, fmt", [("x264", "h264"), ("x265", "hevc")])
def test_bytes_equal_the_size_of_the_raw_elementary_stream(clip, codec, fmt):
    # The raw Annex-B muxers write packets back to back, so the file size is
    # the sum of packet sizes, counted here by FFmpeg's muxer, not by us.
    point = encode_anchor(clip, codec, 32)
    size, _ = _muxed_size(clip, codec, 32, fmt)
    assert point.n_bytes == size


def test_svtav1_bytes_equal_the_ivf_payload(clip):
    # IVF: a 32-byte file header and a 12-byte header per packet.
    point = encode_anchor(clip, "svtav1", 47)
    size, n_packets = _muxed_size(clip, "svtav1", 47, "ivf")
    assert point.n_bytes == size - 32 - 12 * n_packets


def test_bytes_include_the_packets_flushed_at_the_end(clip):
    # With B-frames and lookahead, x264 returns nothing until it has seen
    # several frames; only the flush yields the last ones.
    packets, _ = anchors._encode(clip, "x264", 32)
    assert len(packets) == N
    assert encode_anchor(clip, "x264", 32).n_bytes == sum(map(len, packets))


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("codec, crf", [("x264", 32), ("x265", 32), ("svtav1", 47)])
def test_repeated_encodes_give_identical_bitstreams(clip, codec, crf):
    # A cached point stands for every later measurement of the same input, so
    # the encoders must be deterministic (x264's AVX-512 code is not; see
    # anchors._encoder_options).
    streams = {b"".join(anchors._encode(clip, codec, crf)[0]) for _ in range(20)}
    assert len(streams) == 1


def test_x264_bitstream_equals_the_output_of_x264s_c_code(clip, monkeypatch):
    # x264's SIMD code is meant to be bit-exact with its C code; the anchor
    # must give that canonical stream on any host.
    anchor = b"".join(anchors._encode(clip, "x264", 32)[0])
    c_only = {**dict(anchors._SPECS["x264"].options), "x264-params": "asm=0"}
    monkeypatch.setattr(anchors, "_encoder_options", lambda codec: c_only)
    assert anchor == b"".join(anchors._encode(clip, "x264", 32)[0])


def test_x264_is_kept_off_its_avx512_code_on_avx512_hosts():
    if not anchors._host_has_avx512():
        pytest.skip("this host has no AVX-512")
    assert encoder_settings("x264", 30)["options"]["x264-params"] == "asm=AVX2"


# ---------------------------------------------------------------- decoding and conversion


def test_decoder_returning_a_different_frame_count_is_an_error(clip):
    packets, _ = anchors._encode(clip, "x264", 32)
    with pytest.raises(AnchorError, match=r"decode failed: h264 returned \d frames for 6 encoded"):
        anchors._decode(packets[:-2], "x264", 32, N)


def test_decoder_returns_every_encoded_frame(clip):
    packets, _ = anchors._encode(clip, "x265", 32)
    frames, _, _ = anchors._decode(packets, "x265", 32, N)
    assert frames.shape == (N, H, W, 3) and frames.dtype == np.uint8


def _smooth_colour_clip(fps: float) -> Clip:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    frames = [
        np.stack([xx / W * 220 + 4 * i, yy / H * 200 + 20, (xx + yy) / (W + H) * 160 + 60], axis=-1)
        for i in range(N)
    ]
    return Clip("synthetic:ramps", np.ascontiguousarray(np.round(frames).astype(np.uint8)), fps)


def test_lossless_x264_on_smooth_colour_gives_back_the_frames_nearly_exactly(clip):
    # Smooth colour loses almost nothing to chroma subsampling, so what is left
    # after a lossless encode is 8-bit limited-range rounding (about 53 dB); a
    # colour matrix or range that differs between the two conversions costs
    # far more.
    point = encode_anchor(_smooth_colour_clip(clip.fps), "x264", 0)
    assert point.psnr_rgb > 48.0


def test_near_lossless_x264_on_colour_frames_keeps_luma(clip):
    point = encode_anchor(clip, "x264", 1)
    assert point.psnr_y > 40.0


# ---------------------------------------------------------------- errors


def test_unknown_codec_is_a_clear_error(clip):
    with pytest.raises(ValueError, match="unknown anchor codec 'vp9'; known: x264, x265, svtav1"):
        encode_anchor(clip, "vp9", 30)
    with pytest.raises(ValueError, match="unknown anchor codec"):
        anchor_curve(clip, "libx264")


@pytest.mark.parametrize("codec, crf", [("x264", 52), ("x265", -1), ("svtav1", 64), ("x264", 2.5)])
def test_crf_outside_the_codec_range_is_an_error(clip, codec, crf):
    with pytest.raises(ValueError, match=f"{codec} CRF must be an integer in"):
        encode_anchor(clip, codec, crf)


def test_odd_sized_clip_is_an_error():
    frames = np.zeros((2, 33, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="64x33 is odd-sized"):
        encode_anchor(Clip("synthetic:odd", frames, 30.0), "x264", 30)


def test_duplicate_crfs_are_an_error(clip):
    with pytest.raises(ValueError, match="duplicate CRFs"):
        anchor_curve(clip, "x264", crfs=[30, 30, 35, 40])


# ---------------------------------------------------------------- cache


CACHE_CRFS = (28, 36)


def test_second_call_reads_the_cache(clip, tmp_path):
    first = anchor_curve(clip, "x264", crfs=CACHE_CRFS, cache_dir=tmp_path)
    for crf in CACHE_CRFS:
        assert anchor_cache_path(tmp_path, clip, "x264", crf).is_file()
    second = anchor_curve(clip, "x264", crfs=CACHE_CRFS, cache_dir=tmp_path)
    assert [p.from_cache for p in first] == [False, False]
    assert [p.from_cache for p in second] == [True, True]
    for a, b in zip(first, second):
        assert {**a.__dict__, "from_cache": True} == b.__dict__


def test_cache_file_records_the_measurement_and_its_inputs(clip, tmp_path):
    (point,) = anchor_curve(clip, "x264", crfs=[36], cache_dir=tmp_path)
    record = json.loads(anchor_cache_path(tmp_path, clip, "x264", 36).read_text())
    material = record["key_material"]
    assert material["clip_sha256"] == clip.sha256
    assert material["settings"]["crf"] == 36
    assert material["settings"]["options"]["preset"] == "medium"
    assert material["settings"]["options"]["tune"] == "psnr"
    assert material["metrics_version"] == metrics.METRICS_VERSION
    assert material["versions"]["pyav"] == av.__version__
    assert record["point"]["measured_at"] == point.measured_at
    assert sum(record["packet_sizes"]) == point.n_bytes


def test_a_new_crf_is_measured_and_known_ones_are_reused(clip, tmp_path):
    anchor_curve(clip, "x264", crfs=CACHE_CRFS, cache_dir=tmp_path)
    points = anchor_curve(clip, "x264", crfs=(*CACHE_CRFS, 44), cache_dir=tmp_path)
    assert {p.crf: p.from_cache for p in points} == {28: True, 36: True, 44: False}


def test_another_clip_misses_the_cache(clip, tmp_path):
    anchor_curve(clip, "x264", crfs=CACHE_CRFS, cache_dir=tmp_path)
    other = synthetic_clip("mix", width=W, height=H, frames=N, seed=1)
    assert other.sha256 != clip.sha256
    points = anchor_curve(other, "x264", crfs=CACHE_CRFS, cache_dir=tmp_path)
    assert [p.from_cache for p in points] == [False, False]
    assert {p.clip_sha256 for p in points} == {other.sha256}


def test_another_frame_rate_misses_the_cache(clip, tmp_path):
    anchor_curve(clip, "x264", crfs=[36], cache_dir=tmp_path)
    faster = Clip(clip.source, clip.frames, clip.fps * 2)
    (point,) = anchor_curve(faster, "x264", crfs=[36], cache_dir=tmp_path)
    assert point.from_cache is False


def test_a_record_for_other_inputs_is_never_returned(clip, tmp_path):
    (point,) = anchor_curve(clip, "x264", crfs=[36], cache_dir=tmp_path)
    path = anchor_cache_path(tmp_path, clip, "x264", 36)
    record = json.loads(path.read_text())
    record["key_material"]["clip_sha256"] = "0" * 64
    record["point"]["psnr_y"] = 99.0
    path.write_text(json.dumps(record))
    (again,) = anchor_curve(clip, "x264", crfs=[36], cache_dir=tmp_path)
    assert again.from_cache is False
    assert again.psnr_y == point.psnr_y


def test_a_corrupt_cache_file_is_measured_again_and_replaced(clip, tmp_path):
    anchor_curve(clip, "x264", crfs=[36], cache_dir=tmp_path)
    path = anchor_cache_path(tmp_path, clip, "x264", 36)
    path.write_text('{"truncated": ')
    (point,) = anchor_curve(clip, "x264", crfs=[36], cache_dir=tmp_path)
    assert point.from_cache is False
    assert json.loads(path.read_text())["point"]["n_bytes"] == point.n_bytes
    assert list(path.parent.glob("*.tmp")) == []


def test_an_svtav1_encode_leaves_the_calling_thread_at_its_own_scheduling_policy(tmp_path):
    """libSvtAv1Enc raises its caller to SCHED_FIFO when it may (root); the worker must not
    stay real-time afterwards (it would starve the host and every sandbox it starts)."""
    import os

    from evaluation.anchors import anchor_curve
    from evaluation.synthetic import synthetic_clip

    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    clip = synthetic_clip("mix", width=64, height=48, frames=2)
    anchor_curve(clip, "svtav1", crfs=[31], cache_dir=tmp_path, device="cpu")
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
