"""The reference candidates: real codecs that honour the candidate contract.

Every round trip uses two module instances loaded separately from the file, one
encoding and one decoding, as the runners do: a decoder only knows the bytes.
"""

import ast
import importlib.util
import itertools
import struct

import numpy as np
import pytest
import torch

from evaluation.rd import bd_rate
from evaluation.reference import REFERENCE_CANDIDATES, UnknownReferenceError, reference_code, reference_path
from evaluation.runner import InProcessRunner, merged_config
from evaluation.synthetic import synthetic_clip
from sandbox.sanitize import sanitize

CODECS = ("intra_dct", "inter_mc", "torch_dct")
# The learned codec trains at encode time: its contract tests run on 2 QCIF frames with
# few steps, in test_overfit_nn.py; the source rules below hold for every seed.
ALL_CODECS = (*CODECS, "overfit_nn")
# The seeds keep to a narrower list than the sanitizer allows, so every one of them
# stays a valid starting point if the policy tightens.
ALLOWED_IMPORTS = {
    "numpy", "torch", "math", "zlib", "lzma", "bz2", "struct", "io",
    "functools", "itertools", "collections", "dataclasses", "typing", "heapq",
}  # fmt: skip
QUALITIES = (0.1, 0.3667, 0.6333, 0.9)

_instance_counter = itertools.count()


def load_instance(name: str, role: str):
    """A fresh module instance of the candidate file, with its own globals."""
    module_name = f"reference_{name}_{role}_{next(_instance_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, reference_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def system_config(frames: np.ndarray, quality: float) -> dict:
    return {"quality": quality, "width": frames.shape[2], "height": frames.shape[1], "fps": 30.0, "device": "cpu"}


def encode(name: str, frames: np.ndarray, config: dict) -> list[bytes]:
    encoder = load_instance(name, "encoder")
    cfg = merged_config(encoder, config)
    return [encoder.compress_video_frame(np.array(frame), i, cfg) for i, frame in enumerate(frames)]


def decode(name: str, payloads: list[bytes], config: dict) -> np.ndarray:
    decoder = load_instance(name, "decoder")
    cfg = merged_config(decoder, config)
    return np.stack([decoder.decompress_video_frame(payload, i, cfg) for i, payload in enumerate(payloads)])


def psnr(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Mean over frames of 10 log10(255^2 / MSE), MSE over all RGB samples of a frame."""
    diff = reference.astype(np.float64) - distorted.astype(np.float64)
    mse = np.mean(diff**2, axis=(1, 2, 3))
    return float(np.mean(10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


@pytest.fixture(scope="module")
def mix_clip() -> np.ndarray:
    """Pan, moving textured objects, sensor noise and a scene cut at frame 3."""
    return synthetic_clip("mix", width=176, height=144, frames=6).frames


# ---------------------------------------------------------------------------- registry


def test_reference_candidates_name_the_four_codec_files():
    assert set(REFERENCE_CANDIDATES) == set(ALL_CODECS)
    for name, path in REFERENCE_CANDIDATES.items():
        assert path.is_file() and path.name == f"{name}.py"


def test_reference_path_of_an_unknown_name_lists_the_known_names():
    with pytest.raises(KeyError) as info:
        reference_path("h264")
    assert isinstance(info.value, UnknownReferenceError)
    assert "h264" in str(info.value) and all(name in str(info.value) for name in ALL_CODECS)


# ---------------------------------------------------------------------------- source rules


@pytest.mark.parametrize("name", ALL_CODECS)
def test_candidate_imports_only_allowed_modules(name):
    tree = ast.parse(reference_code(name))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported and imported <= ALLOWED_IMPORTS


@pytest.mark.parametrize("name", ALL_CODECS)
def test_candidate_passes_the_sanitizer_unchanged(name):
    """Nothing stripped (no work at import), nothing refused: what runs is the file as written."""
    result = sanitize(reference_code(name))
    assert result.ok, result.reason
    assert result.removed == [] and result.code == reference_code(name)


# ---------------------------------------------------------------------------- contract, every codec


@pytest.mark.parametrize("name", CODECS)
def test_round_trip_returns_frames_of_the_input_shape_at_useful_quality(name, mix_clip):
    payloads = encode(name, mix_clip, system_config(mix_clip, 0.5))
    decoded = decode(name, payloads, system_config(mix_clip, 0.5))
    assert all(isinstance(p, bytes) for p in payloads)
    assert decoded.shape == mix_clip.shape and decoded.dtype == np.uint8
    assert psnr(mix_clip, decoded) > 24.0  # RGB; 4:2:0 caps this clip near 29 dB
    assert sum(map(len, payloads)) < mix_clip.nbytes / 15


@pytest.mark.parametrize("name", CODECS)
def test_rate_and_psnr_rise_with_quality(name, mix_clip):
    points = []
    for quality in QUALITIES:
        payloads = encode(name, mix_clip, system_config(mix_clip, quality))
        decoded = decode(name, payloads, system_config(mix_clip, quality))
        points.append((sum(map(len, payloads)), psnr(mix_clip, decoded)))
    sizes, psnrs = zip(*points)
    assert all(a < b for a, b in zip(sizes, sizes[1:])), points
    assert all(a < b for a, b in zip(psnrs, psnrs[1:])), points


@pytest.mark.parametrize("name", CODECS)
def test_decoder_reads_its_parameters_from_the_bytes(name, mix_clip):
    payloads = encode(name, mix_clip, system_config(mix_clip, 0.7))
    expected = decode(name, payloads, system_config(mix_clip, 0.7))
    misleading = {"quality": 0.0, "width": 16, "height": 16, "fps": 1.0, "device": "cpu"}
    assert np.array_equal(decode(name, payloads, misleading), expected)


@pytest.mark.parametrize("name", CODECS)
def test_decoding_is_deterministic(name, mix_clip):
    payloads = encode(name, mix_clip, system_config(mix_clip, 0.4))
    first = decode(name, payloads, system_config(mix_clip, 0.4))
    second = decode(name, payloads, system_config(mix_clip, 0.4))
    assert np.array_equal(first, second)


@pytest.mark.parametrize("name", CODECS)
def test_encoding_is_deterministic(name, mix_clip):
    config = system_config(mix_clip, 0.4)
    assert encode(name, mix_clip, config) == encode(name, mix_clip, config)


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize(("width", "height"), [(200, 120), (97, 61)])
def test_sizes_off_the_block_grid_are_padded_and_cropped_back(name, width, height):
    frames = np.ascontiguousarray(synthetic_clip("pan", width=208, height=128, frames=3).frames[:, :height, :width])
    decoded = decode(name, encode(name, frames, system_config(frames, 0.6)), system_config(frames, 0.6))
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert psnr(frames, decoded) > 30.0


@pytest.mark.parametrize("name", CODECS)
def test_decoder_rejects_another_codecs_bytes_by_its_magic(name, mix_clip):
    other = CODECS[(CODECS.index(name) + 1) % len(CODECS)]
    payload = encode(other, mix_clip[:1], system_config(mix_clip, 0.5))[0]
    with pytest.raises(ValueError, match=f"not an? {name}"):
        load_instance(name, "decoder").decompress_video_frame(payload, 0, system_config(mix_clip, 0.5))


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("quality", [-0.1, 1.5])
def test_quality_outside_the_unit_interval_is_rejected(name, quality, mix_clip):
    encoder = load_instance(name, "encoder")
    with pytest.raises(ValueError, match="quality"):
        encoder.compress_video_frame(np.array(mix_clip[0]), 0, merged_config(encoder, system_config(mix_clip, quality)))


@pytest.mark.parametrize("name", CODECS)
def test_candidate_runs_from_source_text_in_the_in_process_runner(name, mix_clip):
    runner = InProcessRunner()
    config = system_config(mix_clip[:3], 0.5)
    encoded = runner.encode(reference_code(name), mix_clip[:3], config)
    decoded = runner.decode(reference_code(name), encoded.payloads, config, 3)
    assert np.array_equal(decoded.frames, decode(name, encode(name, mix_clip[:3], config), config))


# ---------------------------------------------------------------------------- inter_mc


def inter_frame_types(payloads: list[bytes]) -> str:
    module = load_instance("inter_mc", "inspect")
    return "".join("IP"[struct.unpack(module.HEADER, p[: struct.calcsize(module.HEADER)])[2]] for p in payloads)


def test_inter_mc_needs_far_fewer_bytes_than_intra_dct_for_the_same_psnr(mix_clip):
    """Bjontegaard delta rate over the four default rate points, on PSNR-RGB (rates in
    bits: the unit cancels in the ratio)."""
    curves = {}
    for name in ("intra_dct", "inter_mc"):
        curves[name] = []
        for quality in QUALITIES:
            payloads = encode(name, mix_clip, system_config(mix_clip, quality))
            decoded = decode(name, payloads, system_config(mix_clip, quality))
            curves[name].append((8 * sum(map(len, payloads)), psnr(mix_clip, decoded)))
    assert bd_rate(curves["intra_dct"], curves["inter_mc"]) < -25.0, curves


def test_inter_mc_encoder_reference_is_the_decoder_reconstruction(mix_clip):
    encoder, decoder = load_instance("inter_mc", "encoder"), load_instance("inter_mc", "decoder")
    config = merged_config(encoder, system_config(mix_clip, 0.3))
    for i, frame in enumerate(mix_clip):
        decoder.decompress_video_frame(encoder.compress_video_frame(np.array(frame), i, config), i, config)
        for enc_plane, dec_plane in zip(encoder._ENCODER["planes"], decoder._DECODER["planes"]):
            assert np.array_equal(enc_plane, dec_plane)


def test_inter_mc_sends_a_keyframe_every_keyint_frames():
    frames = synthetic_clip("pan", width=176, height=144, frames=7).frames
    payloads = encode("inter_mc", frames, {**system_config(frames, 0.5), "keyint": 3})
    assert inter_frame_types(payloads) == "IPPIPPI"


def test_inter_mc_codes_scene_cuts_as_keyframes():
    frames = synthetic_clip("cut", width=176, height=144, frames=6).frames  # cuts at frames 2 and 4
    payloads = encode("inter_mc", frames, system_config(frames, 0.5))
    assert inter_frame_types(payloads) == "IPIPIP"


def test_inter_mc_follows_motion_beyond_the_exhaustive_search_range():
    """A 20-sample pan is found by the coarse-to-fine search: the P frame costs a
    fraction of the keyframe."""
    scene = synthetic_clip("objects", width=208, height=176, frames=1).frames[0]
    frames = np.ascontiguousarray(np.stack([scene[20:164, :176], scene[:144, 20:196]]))
    payloads = encode("inter_mc", frames, {**system_config(frames, 0.5), "search_range": 24})
    assert inter_frame_types(payloads) == "IP"
    assert len(payloads[1]) < len(payloads[0]) / 3


def test_inter_mc_decoder_refuses_a_p_frame_without_its_reference(mix_clip):
    payloads = encode("inter_mc", mix_clip[:3], system_config(mix_clip, 0.5))
    decoder = load_instance("inter_mc", "decoder")
    decoder.decompress_video_frame(payloads[0], 0, {})
    with pytest.raises(ValueError, match="needs decoded frame 1"):
        decoder.decompress_video_frame(payloads[2], 2, {})


# ---------------------------------------------------------------------------- torch_dct


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_torch_dct_refuses_cuda_when_torch_sees_none(mix_clip):
    encoder = load_instance("torch_dct", "encoder")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        encoder.compress_video_frame(np.array(mix_clip[0]), 0, {**system_config(mix_clip, 0.5), "device": "cuda"})
