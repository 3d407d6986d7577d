"""The learned reference codec overfit_nn, on 2 QCIF frames with few training steps.

Encoder and decoder are separate module instances (as in the sandboxes); determinism is
checked in fresh interpreter processes.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from evaluation.reference import reference_code, reference_path
from evaluation.runner import InProcessRunner
from evaluation.synthetic import synthetic_clip
from tests.evaluation.test_reference_codecs import decode, encode, load_instance, psnr, system_config

QUALITIES = (0.1, 0.3667, 0.6333, 0.9)
STEPS = 6  # training steps per frame in these tests: enough to exercise every path


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return synthetic_clip("mix", width=176, height=144, frames=2).frames


@pytest.fixture(scope="module")
def codec():
    return load_instance("overfit_nn", "inspect")


def config(frames: np.ndarray, quality: float, steps: int | None = STEPS) -> dict:
    return {**system_config(frames, quality), "train_steps": steps}


def psnr_y(reference: np.ndarray, decoded: np.ndarray) -> float:
    luma = np.array([0.2126, 0.7152, 0.0722])
    diff = reference.astype(np.float64) @ luma - decoded.astype(np.float64) @ luma
    return float(10 * np.log10(255.0**2 / np.mean(diff**2)))


@pytest.fixture(scope="module")
def curve(clip):
    points = []
    for quality in QUALITIES:
        payloads = encode("overfit_nn", clip, config(clip, quality))
        decoded = decode("overfit_nn", payloads, config(clip, quality))
        points.append((quality, payloads, decoded))
    return points


def test_round_trip_gives_frames_of_the_input_shape(curve, clip):
    _, payloads, decoded = curve[1]
    assert all(isinstance(p, bytes) and p[:4] == b"CFN1" for p in payloads)
    assert decoded.shape == clip.shape and decoded.dtype == np.uint8
    assert psnr_y(clip, decoded) > 30.0 and psnr(clip, decoded) > 24.0
    assert sum(map(len, payloads)) < clip.nbytes / 10


def test_rd_curve_is_monotonic_at_four_rate_points(curve, clip):
    sizes = [sum(map(len, payloads)) for _, payloads, _ in curve]
    quality = [psnr_y(clip, decoded) for _, _, decoded in curve]
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes
    assert all(a < b for a, b in zip(quality, quality[1:])), quality


def test_decoder_reads_everything_from_the_bytes(curve, clip):
    _, payloads, decoded = curve[2]
    misleading = {"quality": 0.0, "width": 16, "height": 16, "fps": 1.0, "device": "cpu", "train_steps": 0}
    assert np.array_equal(decode("overfit_nn", payloads, misleading), decoded)


def test_decoding_is_bit_identical_in_two_fresh_processes(curve, tmp_path):
    """The integer synthesis: the same bytes, the same frames, in any interpreter."""
    _, payloads, decoded = curve[0]
    for i, payload in enumerate(payloads):
        (tmp_path / f"{i}.bin").write_bytes(payload)
    script = (
        "import importlib.util, sys, hashlib, pathlib, json\n"
        f"spec = importlib.util.spec_from_file_location('c', {str(reference_path('overfit_nn'))!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"d = pathlib.Path({str(tmp_path)!r})\n"
        f"out = [hashlib.sha256(m.decompress_video_frame((d / f'{{i}}.bin').read_bytes(), i, {{}}).tobytes()).hexdigest()"
        f" for i in range({len(payloads)})]\n"
        "print(json.dumps(out))\n"
    )
    runs = []
    for threads in ("1", "2"):
        env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": threads}
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    import hashlib

    here = [hashlib.sha256(frame.tobytes()).hexdigest() for frame in decoded]
    assert runs[0] == runs[1] == here


def test_encoding_is_deterministic(clip):
    assert encode("overfit_nn", clip, config(clip, 0.4)) == encode("overfit_nn", clip, config(clip, 0.4))


def test_training_never_loses_to_the_untrained_pyramid(clip, codec):
    """The encoder keeps the trained decoder only when its measured D + lambda R is lower."""
    frame = np.array(clip[0])
    for quality in (0.2, 0.8):
        step = codec.quality_to_step(quality) / (1 << codec.STEP_BITS)
        lam = codec.LAMBDA_SCALE * step**2

        def cost(steps):
            enc = load_instance("overfit_nn", "encoder")
            data = enc.compress_video_frame(frame, 0, config(clip, quality, steps))
            decoded = enc.decompress_video_frame(data, 0, {})
            return enc._weighted_mse(frame, decoded) + lam * 8 * len(data) / frame[..., 0].size

        assert cost(12) <= cost(0)


def test_integer_decoder_matches_the_float_synthesis_it_was_trained_with(clip, codec):
    """Fixed point costs at most one level on a few samples."""
    frame = torch.from_numpy(np.array(clip[0]))
    step_int = codec.quality_to_step(0.6)
    step = step_int / (1 << codec.STEP_BITS)
    latents, weights = codec._train(codec._to_ycbcr(frame), step, codec.LAMBDA_SCALE * step**2, 4, seed=0)
    grids, ints = codec._integers(latents, weights)
    exact = codec._synthesis_int(grids, ints, step_int, 144, 176).astype(np.int64)
    with torch.no_grad():
        q_latents = [torch.from_numpy(g).to(torch.float32) for g in grids]
        q_weights = {k: torch.from_numpy(v).to(torch.float32) / (1 << codec.WEIGHT_BITS) for k, v in ints.items()}
        ycc = codec._synthesis_float(q_latents, q_weights, step, 144, 176)
        rgb = codec._mix(torch.tensor(codec.YCBCR_TO_RGB), ycc) * 255.0
    approx = rgb.round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.int64)
    diff = np.abs(exact - approx)
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arithmetic_coder_round_trips_and_costs_what_the_model_says(codec, seed):
    rng = np.random.default_rng(seed)
    groups = [
        np.round(rng.laplace(0, 3.0, 5000)).astype(np.int64),
        np.zeros(300, dtype=np.int64),  # all zeros: no bits at all
        np.round(rng.laplace(0, 0.2, 4000)).astype(np.int64),  # mostly zeros: far below a bit each
        np.array([-20000, 3, 0, 17000], dtype=np.int64),  # a 15-bit bound
    ]
    data = codec._encode_groups(groups)
    back = codec._decode_groups(data, [g.size for g in groups], 0)
    assert all(np.array_equal(a, b) for a, b in zip(groups, back))
    ideal = sum(codec._code_length(g, (1 << bits) - 1, code) for g, (bits, code) in zip(groups, map(codec._choose_model, groups)) if bits)
    assert 8 * (len(data) - 2 * len(groups)) <= ideal + 64
    assert codec._choose_model(groups[1]) == (0, 0)


def test_step_budget_scales_with_device_and_resolution(codec):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    qcif, hd = 176 * 144, 1920 * 1080
    assert codec.MIN_STEPS <= codec.training_steps({}, cpu, hd) <= codec.training_steps({}, cpu, qcif)
    assert codec.training_steps({}, cuda, qcif) > codec.training_steps({}, cpu, qcif)
    assert codec.training_steps({}, cuda, hd) > codec.training_steps({}, cpu, hd)
    assert codec.training_steps({"train_steps": 7}, cuda, hd) == 7


def test_decoder_rejects_other_bytes_by_its_magic(clip):
    payload = encode("intra_dct", clip[:1], system_config(clip, 0.5))[0]
    with pytest.raises(ValueError, match="not an overfit_nn"):
        load_instance("overfit_nn", "decoder").decompress_video_frame(payload, 0, {})


@pytest.mark.parametrize("quality", [-0.1, 1.5])
def test_quality_outside_the_unit_interval_is_rejected(quality, clip):
    with pytest.raises(ValueError, match="quality"):
        load_instance("overfit_nn", "encoder").compress_video_frame(np.array(clip[0]), 0, config(clip, quality))


def test_odd_sizes_are_coded_and_cropped_back():
    frames = np.ascontiguousarray(synthetic_clip("pan", width=112, height=80, frames=2).frames[:, :61, :97])
    decoded = decode("overfit_nn", encode("overfit_nn", frames, config(frames, 0.6)), config(frames, 0.6))
    assert decoded.shape == frames.shape and psnr_y(frames, decoded) > 30.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_refuses_cuda_when_torch_sees_none(clip):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        load_instance("overfit_nn", "encoder").compress_video_frame(np.array(clip[0]), 0, {**config(clip, 0.5), "device": "cuda"})


def test_runs_from_source_text_and_is_a_campaign_seed(clip):
    """What `--seeds overfit_nn` hands a campaign: the registered source, runnable as a candidate."""
    from tasks.feedback import seed_codes as _seed_codes

    code = _seed_codes(["overfit_nn"])["overfit_nn"]
    assert code == reference_code("overfit_nn")
    runner = InProcessRunner()
    cfg = config(clip[:1], 0.5)
    encoded = runner.encode(code, clip[:1], cfg)
    decoded = runner.decode(code, encoded.payloads, cfg, 1)
    assert psnr_y(clip[:1], decoded.frames) > 30.0
    assert math.isfinite(psnr(clip[:1], decoded.frames))
