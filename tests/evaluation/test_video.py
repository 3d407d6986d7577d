"""Specification of evaluation.video: reading files, clip identity, synthetic clips."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import av
import numpy as np
import pytest

from evaluation.synthetic import SYNTHETIC_NAMES, synthetic_clip
from evaluation.clip import Clip, VideoError, public_source
from evaluation.video import (
    draw_secret_seed,
    load_clip,
    read_video,
    spec_seed,
    with_secret_seed,
    write_video,
)

W, H, N = 176, 144, 6


def noise_frames(n: int = N, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    # Incompressible frames: nearly every byte of an encoded file is frame data,
    # so damage placed in the middle of the file lands in a frame.
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.fixture
def frames() -> np.ndarray:
    return noise_frames()


@pytest.fixture
def lossless_mkv(tmp_path: Path, frames: np.ndarray) -> Path:
    path = tmp_path / "clip.mkv"
    write_video(path, frames, 30.0)
    return path


def damaged_copy(src: Path, dst: Path, *, keep: float | None = None, overwrite: bytes | None = None) -> Path:
    data = bytearray(src.read_bytes())
    if overwrite is not None:
        at = len(data) // 2
        data[at : at + len(overwrite)] = overwrite
    if keep is not None:
        data = data[: int(len(data) * keep)]
    dst.write_bytes(bytes(data))
    return dst


# --------------------------------------------------------------------------- reading


def test_lossless_mkv_reads_back_exactly_the_written_frames(lossless_mkv: Path, frames: np.ndarray):
    clip = read_video(lossless_mkv)
    assert clip.frames.shape == (N, H, W, 3)
    assert clip.frames.dtype == np.uint8
    np.testing.assert_array_equal(clip.frames, frames)
    assert clip.source == str(lossless_mkv)


def test_fps_comes_from_the_container(tmp_path: Path, frames: np.ndarray):
    path = tmp_path / "pal.mkv"
    write_video(path, frames, 25.0)
    assert read_video(path).fps == 25.0


def test_png_in_mov_is_also_lossless(tmp_path: Path, frames: np.ndarray):
    path = tmp_path / "clip.mov"
    write_video(path, frames, 30.0, codec="png")
    np.testing.assert_array_equal(read_video(path).frames, frames)


def test_first_frame_only(lossless_mkv: Path, frames: np.ndarray):
    clip = read_video(lossless_mkv, max_frames=1)
    np.testing.assert_array_equal(clip.frames, frames[:1])


def test_start_frame_and_max_frames_select_a_window(lossless_mkv: Path, frames: np.ndarray):
    clip = read_video(lossless_mkv, start_frame=2, max_frames=3)
    np.testing.assert_array_equal(clip.frames, frames[2:5])


def test_max_frames_beyond_the_end_returns_all_frames(lossless_mkv: Path, frames: np.ndarray):
    assert read_video(lossless_mkv, max_frames=100).n_frames == N


def test_odd_size_is_cropped_to_even_by_default(tmp_path: Path):
    odd = noise_frames(3, 37, 41)
    path = tmp_path / "odd.mkv"
    write_video(path, odd, 30.0)
    clip = read_video(path)
    assert (clip.height, clip.width) == (36, 40)
    np.testing.assert_array_equal(clip.frames, odd[:, :36, :40])


def test_odd_size_is_an_error_without_crop_even(tmp_path: Path):
    path = tmp_path / "odd.mkv"
    write_video(path, noise_frames(2, 36, 41), 30.0)
    with pytest.raises(VideoError, match=r"odd frame size 41x36") as info:
        read_video(path, crop_even=False)
    assert str(path) in str(info.value)


def test_frames_below_min_size_are_rejected(tmp_path: Path):
    path = tmp_path / "tiny.mkv"
    write_video(path, noise_frames(2, 12, 24), 30.0)
    with pytest.raises(VideoError, match=r"24x12 is below the minimum 16x16") as info:
        read_video(path)
    assert str(path) in str(info.value)


def test_min_size_applies_after_cropping_to_even(tmp_path: Path):
    path = tmp_path / "edge.mkv"
    write_video(path, noise_frames(2, 17, 17), 30.0)
    with pytest.raises(VideoError, match=r"16x16 after cropping"):
        read_video(path, min_size=17)


def test_missing_file_error_names_the_file(tmp_path: Path):
    path = tmp_path / "nowhere.mkv"
    with pytest.raises(VideoError, match="file not found") as info:
        read_video(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_video(tmp_path: Path):
    with pytest.raises(VideoError, match="is a directory"):
        read_video(tmp_path)


def test_empty_file_is_not_a_video(tmp_path: Path):
    path = tmp_path / "empty.mkv"
    path.touch()
    with pytest.raises(VideoError, match=r"empty file"):
        read_video(path)


def test_text_file_is_not_a_video(tmp_path: Path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 20)
    with pytest.raises(VideoError, match="not a video PyAV/FFmpeg can open") as info:
        read_video(path)
    assert str(path) in str(info.value)


def test_audio_only_file_has_no_video_stream(tmp_path: Path):
    path = tmp_path / "tone.mka"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoError, match=r"no video stream \(streams: audio\)") as info:
        read_video(path)
    assert str(path) in str(info.value)


def test_video_stream_without_frames_has_zero_decodable_frames(tmp_path: Path):
    path = tmp_path / "hollow.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "bgr0"
        container.start_encoding()
    with pytest.raises(VideoError, match="zero decodable frames") as info:
        read_video(path)
    assert str(path) in str(info.value)


def test_start_frame_past_the_end_says_how_many_frames_exist(lossless_mkv: Path):
    with pytest.raises(VideoError, match=rf"start_frame=9 is past the end: the file has {N} frames"):
        read_video(lossless_mkv, start_frame=9)


def test_corruption_part_way_says_how_many_frames_decoded(lossless_mkv: Path, tmp_path: Path):
    garbage = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = damaged_copy(lossless_mkv, tmp_path / "garbled.mkv", overwrite=garbage)
    with pytest.raises(VideoError, match=r"decoded \d+ frames before failing") as info:
        read_video(path)
    assert 0 < info.value.frames_decoded < N
    assert f"decoded {info.value.frames_decoded} frames" in str(info.value)
    assert str(path) in str(info.value)


def test_damage_the_decoder_conceals_is_still_reported(lossless_mkv: Path, tmp_path: Path):
    # 64 zero bytes inside an FFV1 slice: the decoder logs a slice CRC mismatch and
    # carries on with a damaged frame instead of raising.
    path = damaged_copy(lossless_mkv, tmp_path / "zeroed.mkv", overwrite=bytes(64))
    with pytest.raises(VideoError, match=r"corrupt video data: FFmpeg reported 'slice CRC mismatch") as info:
        read_video(path)
    assert 0 < info.value.frames_decoded < N


def test_concealed_damage_can_be_accepted_with_strict_false(lossless_mkv: Path, tmp_path: Path, frames):
    path = damaged_copy(lossless_mkv, tmp_path / "zeroed.mkv", overwrite=bytes(64))
    clip = read_video(path, strict=False)
    assert clip.n_frames == N
    assert not np.array_equal(clip.frames, frames)


def test_truncated_mp4_with_frame_count_in_header_reports_expected_vs_decoded(tmp_path: Path, frames):
    # faststart puts the index (with its frame count) before the frame data, so the
    # file still opens after the tail is cut off; cut at a frame boundary, decoding
    # just stops early without any error from the decoder.
    path = tmp_path / "whole.mp4"
    packet_sizes = []
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("png", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "rgb24"
        for rgb in [*frames, None]:
            frame = None if rgb is None else av.VideoFrame.from_ndarray(rgb, format="rgb24")
            packets = stream.encode(frame)
            packet_sizes += [p.size for p in packets]
            container.mux(packets)
    assert len(packet_sizes) == N
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) - sum(packet_sizes[3:])])
    expected = rf"truncated video: the container announces {N} frames but only 3 decoded"
    with pytest.raises(VideoError, match=expected) as info:
        read_video(cut)
    assert info.value.frames_decoded == 3


def test_truncated_mkv_is_caught_through_its_duration(lossless_mkv: Path, tmp_path: Path):
    # Matroska stores no frame count; the track duration (written at the start by
    # FFmpeg's muxer) times the frame rate still says how many frames to expect.
    path = damaged_copy(lossless_mkv, tmp_path / "cut.mkv", keep=0.5)
    expected = rf"truncated video: the container duration suggests .* {N} frames but only \d decoded"
    with pytest.raises(VideoError, match=expected) as info:
        read_video(path)
    assert 0 < info.value.frames_decoded < N


def test_truncation_is_not_checked_when_max_frames_was_satisfied(lossless_mkv: Path, tmp_path: Path, frames):
    path = damaged_copy(lossless_mkv, tmp_path / "cut.mkv", keep=0.5)
    clip = read_video(path, max_frames=1)
    np.testing.assert_array_equal(clip.frames, frames[:1])


def test_write_video_refuses_to_overwrite(lossless_mkv: Path, frames):
    before = lossless_mkv.read_bytes()
    with pytest.raises(VideoError, match="refusing to overwrite"):
        write_video(lossless_mkv, frames, 30.0)
    assert lossless_mkv.read_bytes() == before


# --------------------------------------------------------------------------- Clip


def test_clip_frames_are_read_only(lossless_mkv: Path):
    clip = read_video(lossless_mkv)
    with pytest.raises(ValueError, match="read-only"):
        clip.frames[0, 0, 0, 0] = 1


def test_clip_sha256_is_of_shape_header_and_pixels():
    frames = noise_frames(2, 16, 16)
    expected = hashlib.sha256(b"2x16x16x3:uint8\n" + frames.tobytes()).hexdigest()
    assert Clip("x", frames, 30.0).sha256 == expected


def test_clip_sha256_tells_apart_same_bytes_in_another_shape():
    frames = noise_frames(2, 16, 16)
    reshaped = frames.reshape(1, 32, 16, 3).copy()
    assert Clip("a", frames, 30.0).sha256 != Clip("b", reshaped, 30.0).sha256


def test_clip_identity_ignores_the_file_it_came_from(tmp_path: Path, frames):
    write_video(tmp_path / "a.mkv", frames, 30.0)
    write_video(tmp_path / "b.mov", frames, 30.0, codec="png")
    assert read_video(tmp_path / "a.mkv").sha256 == read_video(tmp_path / "b.mov").sha256


def test_clip_rejects_wrong_dtype():
    with pytest.raises(VideoError, match=r"\(N, H, W, 3\) uint8"):
        Clip("x", np.zeros((1, 16, 16, 3), np.float32), 30.0)


def test_clip_rejects_non_positive_fps():
    with pytest.raises(VideoError, match="fps must be a positive"):
        Clip("x", np.zeros((1, 16, 16, 3), np.uint8), 0.0)


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_synthetic_clip_has_the_requested_shape(name: str):
    clip = synthetic_clip(name, width=W, height=H, frames=5, fps=25.0)
    assert clip.frames.shape == (5, H, W, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.frames.flags.c_contiguous and not clip.frames.flags.writeable
    assert clip.fps == 25.0
    assert clip.source == f"synthetic:{name}@{W}x{H}"


def test_synthetic_names_include_the_agreed_ones():
    assert {"mix", "objects", "pan", "noise", "cut"} <= set(SYNTHETIC_NAMES)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_synthetic_clip_is_deterministic(name: str):
    a = synthetic_clip(name, width=W, height=H, frames=4)
    b = synthetic_clip(name, width=W, height=H, frames=4)
    assert a.sha256 == b.sha256


def test_synthetic_seed_and_name_change_the_content():
    base = synthetic_clip("mix", width=W, height=H, frames=2)
    assert synthetic_clip("mix", width=W, height=H, frames=2, seed=1).sha256 != base.sha256
    assert synthetic_clip("objects", width=W, height=H, frames=2).sha256 != base.sha256


def _frame_jumps(clip: Clip) -> np.ndarray:
    return np.abs(np.diff(clip.frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))


def test_mix_has_one_scene_cut_in_the_middle():
    jumps = _frame_jumps(synthetic_clip("mix", width=W, height=H, frames=8))
    # jumps[i] is frame i -> i+1; the cut is at frame 8 // 2 = 4.
    assert int(np.argmax(jumps)) == 3
    others = np.delete(jumps, 3)
    assert jumps[3] > 3 * others.max()


def test_cut_has_scene_cuts_at_thirds():
    jumps = _frame_jumps(synthetic_clip("cut", width=W, height=H, frames=9))
    assert sorted(np.argsort(jumps)[-2:].tolist()) == [2, 5]  # cuts at frames 3 and 6
    assert jumps[[2, 5]].min() > 3 * np.delete(jumps, [2, 5]).max()


def test_objects_move_over_a_static_background():
    f = synthetic_clip("objects", width=W, height=H, frames=4).frames.astype(np.int16)
    change = np.abs(f[3] - f[0]).max(axis=-1)
    assert (change < 12).mean() > 0.4  # background: only sensor noise
    assert (change > 40).mean() > 0.02  # objects have moved


def _best_shift(a: np.ndarray, b: np.ndarray, radius: int = 6) -> tuple[tuple[int, int], float, float]:
    """Integer (dy, dx) with b[y, x] ~ a[y + dy, x + dx]; its mean abs error and the unshifted one."""
    m = radius
    core = b[m:-m, m:-m].astype(np.float32)
    errors = {}
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            window = a[m + dy : a.shape[0] - m + dy, m + dx : a.shape[1] - m + dx]
            errors[(dy, dx)] = float(np.abs(window - core).mean())
    best = min(errors, key=errors.get)
    return best, errors[best], errors[(0, 0)]


def test_pan_moves_the_whole_background():
    f = synthetic_clip("pan", width=W, height=H, frames=3).frames
    shift, best, unshifted = _best_shift(f[0].astype(np.float32), f[2])
    assert shift != (0, 0)
    assert best < 0.5 * unshifted


def test_noise_clip_carries_more_sensor_noise_than_mix():
    def roughness(clip: Clip) -> float:
        return float(np.abs(np.diff(clip.frames.astype(np.int16), axis=2)).mean())

    assert roughness(synthetic_clip("noise", width=W, height=H, frames=2)) > 1.5 * roughness(
        synthetic_clip("mix", width=W, height=H, frames=2)
    )


def test_synthetic_content_is_compressible_but_not_trivial():
    clip = synthetic_clip("mix", width=W, height=H, frames=8)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for rgb in clip.frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    ratio = clip.frames.nbytes / len(buf.getvalue())
    assert 20 < ratio < 400, ratio


def test_synthetic_cif_clip_is_fast_to_generate():
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        synthetic_clip("mix", width=352, height=288, frames=8)
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, best


def test_synthetic_clip_rejects_unknown_name():
    with pytest.raises(VideoError, match=r"synthetic:nope@.*unknown synthetic clip 'nope'"):
        synthetic_clip("nope")


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [(177, 144, "width must be even"), (176, 8, "height must be an int >= 16")],
)
def test_synthetic_clip_rejects_odd_or_tiny_sizes(width: int, height: int, message: str):
    with pytest.raises(VideoError, match=message):
        synthetic_clip("mix", width=width, height=height)


def test_synthetic_clip_rejects_zero_frames():
    with pytest.raises(VideoError, match="frames must be an int >= 1"):
        synthetic_clip("mix", frames=0)


# --------------------------------------------------------------------------- load_clip


def test_load_clip_synthetic_spec_with_size():
    clip = load_clip("synthetic:mix@176x144", frames=4)
    assert clip.frames.shape == (4, 144, 176, 3)
    assert clip.sha256 == synthetic_clip("mix", width=176, height=144, frames=4).sha256


def test_load_clip_synthetic_defaults_to_cif_and_eight_frames():
    clip = load_clip("synthetic:pan")
    assert clip.frames.shape == (8, 288, 352, 3)


def test_load_clip_synthetic_size_from_keywords():
    assert load_clip("synthetic:noise", frames=2, width=64, height=48).frames.shape == (2, 48, 64, 3)


def test_load_clip_synthetic_start_frame_is_a_window_of_the_longer_clip():
    window = load_clip("synthetic:mix@176x144", frames=3, start_frame=2)
    whole = synthetic_clip("mix", width=176, height=144, frames=5)
    np.testing.assert_array_equal(window.frames, whole.frames[2:])


def test_synthetic_spec_loads_back_to_the_same_clip():
    clip = synthetic_clip("cut", width=64, height=48, frames=3, seed=7)
    assert clip.spec == "synthetic:cut@64x48,seed=7"
    again = load_clip(clip.spec, frames=3)
    assert again.sha256 == clip.sha256 and again.seed == 7 and again.spec == clip.spec


def test_a_synthetic_clips_source_is_its_public_name_without_the_seed():
    clip = load_clip("synthetic:mix@64x48,seed=123456789", frames=2, start_frame=1)
    assert clip.source == "synthetic:mix@64x48"
    assert "123456789" not in clip.source
    assert (clip.seed, clip.spec) == (123456789, "synthetic:mix@64x48,seed=123456789")
    # The seed matters: the public name alone (seed 0) is other frames.
    assert load_clip(clip.source, frames=2, start_frame=1).sha256 != clip.sha256
    file_clip = Clip(source="some/file.mkv", frames=np.zeros((1, 16, 16, 3), np.uint8), fps=25.0)
    assert file_clip.seed is None and file_clip.spec == "some/file.mkv"


def test_with_secret_seed_draws_a_fresh_seed_unless_one_is_named():
    spec, seed = with_secret_seed("synthetic:mix@64x48")
    assert spec == f"synthetic:mix@64x48,seed={seed}" and 0 <= seed < 2**63
    assert with_secret_seed("synthetic:mix@64x48")[1] != seed  # 63 random bits: never equal in practice
    assert with_secret_seed("synthetic:mix@64x48", 42) == ("synthetic:mix@64x48,seed=42", 42)
    assert with_secret_seed("synthetic:pan,seed=3") == ("synthetic:pan,seed=3", 3)  # the user's choice stands
    assert with_secret_seed("synthetic:pan,seed=3", 42) == ("synthetic:pan,seed=3", 3)
    assert with_secret_seed("clip.mkv") == ("clip.mkv", None)
    assert draw_secret_seed() != draw_secret_seed()


def test_public_source_and_spec_seed():
    assert public_source("synthetic:mix@176x144,seed=987") == "synthetic:mix@176x144"
    assert public_source("synthetic:mix,seed=1") == "synthetic:mix"
    assert public_source("synthetic:mix@176x144") == "synthetic:mix@176x144"
    assert public_source("videos/a,seed=1.mkv") == "videos/a,seed=1.mkv"  # files are not touched
    assert spec_seed("synthetic:mix@176x144,seed=987") == 987
    assert spec_seed("synthetic:mix@176x144") is None
    assert spec_seed("clip.mkv") is None


def test_errors_about_a_seeded_spec_do_not_repeat_the_seed():
    with pytest.raises(VideoError) as info:
        load_clip("synthetic:mix@64x48,seed=55555", width=32)
    assert "55555" not in str(info.value) and info.value.source == "synthetic:mix@64x48"
    with pytest.raises(VideoError) as info:
        load_clip("synthetic:mix@64x48,seed=55555", frames=0)
    assert "55555" not in str(info.value)


def test_load_clip_rejects_contradicting_sizes():
    with pytest.raises(VideoError, match="contradicts"):
        load_clip("synthetic:mix@176x144", width=352)


def test_load_clip_rejects_malformed_synthetic_spec():
    with pytest.raises(VideoError, match="malformed synthetic spec"):
        load_clip("synthetic:mix@176by144")


def test_load_clip_reads_a_file(lossless_mkv: Path, frames):
    clip = load_clip(str(lossless_mkv), frames=2, start_frame=1)
    np.testing.assert_array_equal(clip.frames, frames[1:3])


def test_load_clip_never_rescales_a_file(lossless_mkv: Path):
    with pytest.raises(VideoError, match=r"decoded size 176x144 differs from the requested 352x\*"):
        load_clip(str(lossless_mkv), width=352)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("seed", range(8))
def test_tiny_synthetic_clips_are_computed_without_invalid_values(seed):
    # Sprites on a 32x32 clip are smaller than the finest texture octave; they once
    # came out as 0/0 cast to uint8 (undefined pixels, a host-dependent clip hash).
    a = synthetic_clip("mix", width=32, height=32, frames=3, seed=seed)
    b = synthetic_clip("mix", width=32, height=32, frames=3, seed=seed)
    assert a.sha256 == b.sha256
