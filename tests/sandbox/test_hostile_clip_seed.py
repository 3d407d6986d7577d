"""Issue 12, finding 3: a candidate cannot regenerate the synthetic clip it is measured on.

``hostile/cheat_regenerate_clip.py`` carries the public generator of
``evaluation.synthetic`` (pasted in at test time, so it never drifts from it) and
guesses the public default seed 0. On a clip with that seed it is a real cheat
(100 dB at one byte a frame, checked here so the test cannot pass vacuously).
Every way of measuring a candidate (``codecfleet evaluate``, ``submit``,
campaigns) now draws a secret seed, stores it on the trusted side only, and the
cheat scores no better than blank frames. A second hostile candidate copies
everything it can see (its config, environment, argv, working directory) into
its bitstream: the seed is nowhere in it, nor in any prompt or experiment config.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from _sandbox_testlib import BLANK_CODEC, TEST_LIMITS, load_hostile
from evaluation import synthetic
from evaluation.pipeline import measure_candidate
from evaluation.runner import InProcessRunner
from evaluation.video import load_clip, with_secret_seed

W, H, N = 64, 48, 3
SPEC = f"synthetic:mix@{W}x{H}"

GREY_CODEC = """
import numpy as np


def compress_video_frame(frame, frame_index, config):
    return b"\\0"


def decompress_video_frame(compressed_data, frame_index, config):
    return np.full((config["height"], config["width"], 3), 128, np.uint8)
"""

# What a sanitized candidate can see (its config), copied into its first payload.
CONFIG_PROBE = """
import numpy as np


def compress_video_frame(frame, frame_index, config):
    return repr(sorted(config.items())).encode() if frame_index == 0 else b"-"


def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), np.uint8)
"""

# Everything an unsanitized candidate can see in the sandbox, copied into its first payload.
LEAK_PROBE = '''
import json

import numpy as np


def _seen(config):
    import os, sys
    seen = {"config": config, "env": dict(os.environ), "argv": list(sys.argv)}
    try:
        seen["cwd"] = sorted(os.listdir("."))
    except OSError as exc:
        seen["cwd"] = str(exc)
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            seen["cmdline"] = fh.read().decode("latin-1")
    except OSError as exc:
        seen["cmdline"] = str(exc)
    return json.dumps(seen, default=str).encode()


def compress_video_frame(frame, frame_index, config):
    return _seen(config) if frame_index == 0 else b"\\0"


def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''


def generator_source() -> str:
    """The public generator of evaluation.synthetic, as a candidate would paste it."""
    parts = [
        f"SYNTHETIC_NAMES = {synthetic.SYNTHETIC_NAMES!r}",
        f"_NAME_SALT = {synthetic._NAME_SALT!r}",
        f"_RECIPES = {synthetic._RECIPES!r}",
    ]
    for obj in (
        synthetic._gaussian_table, synthetic._value_noise, synthetic._fractal, synthetic._palette,
        synthetic._textured_field, synthetic._Sprite, synthetic._make_sprite, synthetic._bounce, synthetic._Scene,
    ):
        parts.append(inspect.getsource(obj))
    return "\n\n".join(parts)


def cheat(seed: int = 0) -> str:
    return load_hostile("cheat_regenerate_clip", GENERATOR=generator_source(), SEED=str(seed), NAME="mix")


@pytest.fixture(params=["sandbox", "in-process"])
def runner(request):
    if request.param == "in-process":
        return InProcessRunner()  # our own attack code: shows the clips differ, whatever the isolation
    request.getfixturevalue("strict_isolation")
    from sandbox.runner import SandboxRunner

    return SandboxRunner(TEST_LIMITS)


def _measure(code, clip, runner, tmp_path):
    result = measure_candidate(code, clip, [0.5], runner=runner, artifact_dir=tmp_path, device="cpu")
    assert result["status"] == "succeeded", result["reason"]
    return result["rate_points"][0]


def test_the_cheat_is_real_on_the_public_default_seed(runner, tmp_path):
    clip = load_clip(SPEC, frames=N)  # seed 0: what every run measured before
    row = _measure(cheat(0), clip, runner, tmp_path)
    assert row["psnr_y"] >= 99.0 and row["psnr_capped_frames"] == N
    assert row["bytes"] < 64  # one byte a frame plus the container


def test_the_cheat_scores_no_better_than_frames_that_carry_nothing_on_a_secret_seed(runner, tmp_path):
    clip = load_clip(with_secret_seed(SPEC)[0], frames=N)
    assert clip.seed is not None and clip.seed != 0
    row = _measure(cheat(0), clip, runner, tmp_path / "cheat")
    # Baselines that carry no information about the clip: black frames, flat mid-grey frames.
    nothing = [_measure(code, clip, runner, tmp_path / name) for name, code in (("blank", BLANK_CODEC), ("grey", GREY_CODEC))]
    # The regenerated frames are another seed's unrelated texture: nowhere near lossless
    # (100 dB when the seed is known), and within noise of sending nothing at all (an
    # unrelated texture of the same statistics may beat black frames by a few dB).
    assert row["psnr_capped_frames"] == 0
    assert row["psnr_y"] < 20.0, row["psnr_y"]
    assert row["psnr_y"] <= max(b["psnr_y"] for b in nothing) + 3.0, (row["psnr_y"], nothing)
    assert row["ssim_y"] <= max(b["ssim_y"] for b in nothing) + 0.05, (row["ssim_y"], nothing)


def test_codecfleet_evaluate_draws_a_secret_seed_for_each_run(strict_isolation, tmp_path):
    from codecfleet.api import evaluate_candidate as api_evaluate

    results = [
        api_evaluate(cheat(0), SPEC, [0.5], limits=TEST_LIMITS, device="cpu", artifact_dir=tmp_path / str(i))
        for i in range(2)
    ]
    for result in results:
        assert result["status"] == "succeeded", result["reason"]
        assert result["clip"]["source"] == SPEC  # the public name
        assert result["rate_points"][0]["psnr_y"] < 20.0
    seeds = [r["clip"]["seed"] for r in results]
    assert seeds[0] != seeds[1] and 0 not in seeds
    # The seed the run reports reproduces its frames (the clip hash identifies them).
    again = load_clip(f"{SPEC},seed={seeds[0]}", frames=8)
    assert again.sha256 == results[0]["clip"]["sha256"]


def test_a_seed_named_by_the_user_is_kept(tmp_path):
    from codecfleet.api import evaluate_candidate as api_evaluate

    result = api_evaluate(cheat(0), f"{SPEC},seed=0", [0.5], runner="in-process", device="cpu", artifact_dir=tmp_path)
    assert result["clip"]["seed"] == 0 and result["clip"]["source"] == SPEC
    assert result["rate_points"][0]["psnr_y"] >= 99.0  # the user chose the public clip: on them


# --- submissions and campaigns (the embedded default) ---------------------------------


def _use(env: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith("CODECFLEET_")]:
        del os.environ[key]
    os.environ.update(env)
    from config import get_settings
    from db import engine
    from tasks.app import reconfigure

    get_settings.cache_clear()
    engine.reset()
    reconfigure()


@pytest.fixture
def embedded(tmp_path):
    saved = {k: v for k, v in os.environ.items() if k.startswith("CODECFLEET_")}
    env = {
        "CODECFLEET_DATA_DIR": str(tmp_path / "data"),
        "CODECFLEET_CACHE_DIR": str(tmp_path / "cache"),
        "CODECFLEET_DEVICE": "cpu",
    }
    _use(env)
    yield env
    _use(saved)


def _rows(sql: str, **params) -> list:
    from db import engine

    with engine.transaction() as session:
        return [tuple(r) for r in session.execute(sa.text(sql), params).all()]


def _assert_secret(seed: int, *texts) -> None:
    for text in texts:
        assert str(seed) not in (text if isinstance(text, str) else json.dumps(text, default=str))


def test_the_sandbox_sees_nothing_of_the_seed(strict_isolation, tmp_path):
    from sandbox.runner import SandboxRunner

    clip = load_clip(with_secret_seed(SPEC)[0], frames=N)
    result = measure_candidate(LEAK_PROBE, clip, [0.5], runner=SandboxRunner(TEST_LIMITS), artifact_dir=tmp_path,
                                device="cpu")
    assert result["status"] == "succeeded", result["reason"]
    bitstream = Path(result["rate_points"][0]["bitstream"]).read_bytes()
    assert b'"config"' in bitstream and b'"env"' in bitstream  # the probe did copy what it saw
    assert str(clip.seed).encode() not in bitstream
    assert b"seed" not in bitstream


def test_submit_measures_a_secret_seeded_clip_and_keeps_the_seed_on_the_trusted_side(strict_isolation, embedded,
                                                                                     monkeypatch):
    from codecfleet import fleet
    from config import get_settings

    # The cheat's full measurement is the point here: the probe (which would stop it
    # early as wrong output, < 15 dB) is switched off for this test.
    monkeypatch.setenv("CODECFLEET_PROBE", "off")
    get_settings.cache_clear()

    cheat_result = fleet.submit(cheat(0), SPEC, frames=N, rate_points=[0.5]).result()
    probe = fleet.submit(CONFIG_PROBE, SPEC, frames=N, rate_points=[0.5]).result()
    assert cheat_result["status"] == probe["status"] == "succeeded", (cheat_result["reason"], probe["reason"])
    assert cheat_result["rate_points"][0]["psnr_y"] < 20.0
    [(seed,)] = _rows("SELECT seed FROM clip_seeds WHERE scope = 'default'")
    assert seed != 0
    # The same spec in the same database is the same secret clip (so identical code is reused, not remeasured).
    assert probe["clip"]["sha256"] == cheat_result["clip"]["sha256"]
    assert load_clip(f"{SPEC},seed={seed}", frames=N).sha256 == probe["clip"]["sha256"]
    # Stored on the trusted side: the clip row holds the spec that reproduces the frames.
    [(source,)] = _rows("SELECT source FROM clips")
    assert source == f"{SPEC},seed={seed}"
    # ... and nowhere a candidate or a prompt can read.
    configs = _rows("SELECT config FROM experiments")
    assert configs and all("seed" not in json.dumps(c) for (c,) in configs)
    bitstream = Path(probe["rate_points"][0]["bitstream"]).read_bytes()
    assert b"'width', 64" in bitstream  # the probe did copy its config
    assert str(seed).encode() not in bitstream and b"seed" not in bitstream
    _assert_secret(seed, probe, cheat_result)


def test_a_campaign_keeps_its_seed_secret_and_reuses_it_when_resumed(strict_isolation, embedded):
    from codecfleet.campaigns import campaign

    def measured_shas():
        return {sha for (sha,) in _rows("SELECT DISTINCT c.sha256 FROM clips c JOIN experiments e ON e.clip_id = c.id")}

    first = campaign([SPEC], "offline", population=1, generations=1, name="secret", frames=2, seeds=("intra_dct",))
    [(seed,)] = _rows("SELECT clip_seed FROM campaigns WHERE name = 'secret'")
    assert seed is not None and seed != 0
    assert measured_shas() == {load_clip(f"{SPEC},seed={seed}", frames=2).sha256}

    # Resuming by name measures the same frames (the stored seed) and draws no new one.
    again = campaign([SPEC], "offline", population=1, generations=1, name="secret", frames=2, seeds=("intra_dct",))
    assert again.campaign_id == first.campaign_id
    assert _rows("SELECT clip_seed FROM campaigns WHERE name = 'secret'") == [(seed,)]
    assert measured_shas() == {load_clip(f"{SPEC},seed={seed}", frames=2).sha256}

    # Another campaign on the same spec draws its own secret.
    campaign([SPEC], "offline", population=1, generations=0, name="other", frames=2, seeds=("intra_dct",))
    [(other,)] = _rows("SELECT clip_seed FROM campaigns WHERE name = 'other'")
    assert other != seed

    # The seed is in no prompt, reply, code or experiment config the campaign stored.
    stored = _rows("SELECT prompt, raw_reply, code FROM candidates")
    configs = _rows("SELECT config FROM experiments")
    _assert_secret(seed, *[t for row in stored for t in row if t], *[c for (c,) in configs])


def test_campaign_prompts_name_the_clip_without_its_seed(strict_isolation, embedded, monkeypatch):
    from codecfleet import campaigns as campaigns_mod
    from codecfleet.campaigns import campaign
    from generation.prompts import request_prompt

    requests = []
    real = campaigns_mod.resolve_generator

    def recording(generator, **kwargs):
        gen = real("offline", **kwargs)

        class Recorder:
            def __getattr__(self, name):
                return getattr(gen, name)

            def generate(self, request):
                requests.append(request)
                return gen.generate(request)

        return Recorder()

    monkeypatch.setattr(campaigns_mod, "resolve_generator", recording)
    campaign([SPEC], None, population=2, generations=1, name="prompted", frames=2, rate_points=4,
             seeds=("intra_dct",))
    [(seed,)] = _rows("SELECT clip_seed FROM campaigns WHERE name = 'prompted'")
    assert len(requests) == 2
    for request in requests:
        assert request.task.clip == SPEC
        _assert_secret(seed, repr(request), request_prompt(request, "rewrite"))


def test_the_generate_task_builds_its_request_without_the_seed(embedded):
    """The fleet's ``generate`` step builds its prompt from the experiment's stored config."""
    from codecfleet import fleet
    from db import engine
    from db import experiments
    from tasks.experiment import experiment_clip
    from tasks.feedback import generation_request as _generation_request

    meta = {"generator": "fake", "prompt": "p", "raw_reply": "r"}
    [handle] = fleet.submit_many([{"candidate": None, "clip": SPEC, "frames": N, "campaign": "gen",
                                   "generated": meta, "generation_failure": {"status": "failed", "reason": "x"}}])
    [(seed,)] = _rows("SELECT clip_seed FROM campaigns WHERE name = 'gen'")
    with engine.transaction() as session:
        experiment = experiments.get_experiment(session, handle.id)
        request = _generation_request(session, experiment)
        _assert_secret(seed, repr(request), experiment.config)
        # The worker still finds the very frames that were submitted (from the clip row's spec).
        clip = experiment_clip(experiment)
        assert clip.sha256 == experiment.clip.sha256 and clip.seed == seed
    assert handle.result()["clip"]["source"] == SPEC


def test_a_migrated_campaign_keeps_the_frames_it_measured(embedded):
    """Campaigns from before secret seeds measured seed 0; 0004 records that, so resuming them is consistent."""
    from codecfleet.fleet import secret_clip_spec
    from db import engine
    from db import catalog

    from codecfleet import fleet

    fleet._ensure_database()
    with engine.transaction() as session:
        row = catalog.get_or_create_campaign(session, "old")
        row.clip_seed = 0
        session.flush()
        assert secret_clip_spec(session, SPEC, row.id) == f"{SPEC},seed=0"
        assert secret_clip_spec(session, f"{SPEC},seed=5", row.id) == f"{SPEC},seed=5"
        assert secret_clip_spec(session, "clip.mkv", row.id) == "clip.mkv"
