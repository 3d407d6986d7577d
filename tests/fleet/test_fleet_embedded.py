"""No broker configured: submit runs the same task code in this process, on SQLite, sandbox on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fleet_harness import REPO, use_settings


@pytest.fixture
def embedded(tmp_path):
    saved = {k: v for k, v in os.environ.items() if k.startswith("CODECFLEET_")}
    env = {"CODECFLEET_DATA_DIR": str(tmp_path / "data"), "CODECFLEET_CACHE_DIR": str(tmp_path / "cache"),
           "CODECFLEET_DEVICE": "cpu"}
    use_settings(env)
    yield env
    from db import engine

    engine.reset()
    use_settings(saved)


def test_submit_without_a_broker_runs_to_the_end_in_process_on_sqlite(embedded, tmp_path):
    from codecfleet import fleet

    handle = fleet.submit("reference:intra_dct", "synthetic:mix@64x48", frames=2, rate_points=[0.3, 0.8])

    assert handle.status().status == "succeeded"  # already ended when submit returned
    result = handle.wait(timeout=0)
    assert [rp["index"] for rp in result["rate_points"]] == [0, 1]
    assert result["isolation"] == "bubblewrap+seccomp+rlimits"
    assert (tmp_path / "data" / "codecfleet.db").is_file()
    assert all(str(tmp_path / "data" / "artifacts" / f"exp-{handle.id}") in rp["bitstream"] for rp in result["rate_points"])


def test_the_same_code_on_the_same_clip_reuses_the_measured_result(embedded):
    from codecfleet import fleet

    first = fleet.submit("reference:intra_dct", "synthetic:mix@64x48", frames=2, rate_points=[0.5])
    again = fleet.submit("reference:intra_dct", "synthetic:mix@64x48", frames=2, rate_points=[0.5])

    result = again.result()
    assert result["status"] == "succeeded" and result["reused_from"] == first.id
    assert result["rate_points"] == first.result()["rate_points"]


def test_candidate_faults_are_recorded_with_stage_and_reason(embedded):
    from codecfleet import fleet

    crash = "def compress_video_frame(f, i, c):\n    raise ValueError('boom')\n\ndef decompress_video_frame(b, i, c):\n    return None\n"

    result = fleet.submit(crash, "synthetic:mix@64x48", frames=2, rate_points=[0.5]).result()

    # The probe (2 frames, one quality) stops it before the full measurement.
    assert (result["status"], result["stage"]) == ("failed", "probe")
    assert "encode" in result["reason"] and "boom" in result["reason"] and result["rate_points"] == []


def test_without_code_the_chain_starts_at_generate_and_the_offline_generator_writes_it(embedded):
    from codecfleet import fleet
    from db import engine

    result = fleet.submit(None, "synthetic:mix@64x48", frames=2, rate_points=[0.2, 0.8], campaign="gen").result()

    assert result["status"] == "succeeded", result
    with engine.transaction() as session:
        from db.campaign_queries import campaign_id_by_name, campaign_members

        (member,) = campaign_members(session, campaign_id_by_name(session, "gen"))
        assert member.generator == "offline"
        assert "def compress_video_frame" in member.code


def test_a_generator_that_yields_no_code_ends_the_experiment_at_generate_with_its_reason(embedded, monkeypatch):
    from codecfleet import fleet

    # An OpenAI-compatible endpoint that refuses connections: the generator's own
    # bounded retries end in a reason, recorded as stage "generate".
    monkeypatch.setenv("CODECFLEET_LLM_PROVIDER", "openai")
    monkeypatch.setenv("CODECFLEET_LLM_MODEL", "m")
    monkeypatch.setenv("CODECFLEET_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CODECFLEET_LLM_API_KEY", "k-not-used")
    monkeypatch.setenv("CODECFLEET_LLM_TIMEOUT", "2")
    monkeypatch.setenv("CODECFLEET_LLM_MAX_RETRIES", "0")

    result = fleet.submit(None, "synthetic:mix@64x48", frames=2, rate_points=[0.5]).result()

    assert (result["status"], result["stage"]) == ("failed", "generate")
    assert "connect" in result["reason"].lower()


def test_get_of_an_unknown_id_and_a_missing_file_are_clear_errors(embedded):
    from codecfleet import fleet

    with pytest.raises(fleet.FleetError, match="experiment 4242 does not exist"):
        fleet.get(4242)
    with pytest.raises(fleet.FleetError, match="candidate file not found"):
        fleet.submit("no_such_codec.py", "synthetic:mix@64x48")


def test_cli_errors_are_one_line_with_a_non_zero_exit(embedded):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CODECFLEET_")}, **embedded}
    run = lambda *a: subprocess.run([sys.executable, "-m", "codecfleet.cli", *a], env=env, cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)

    cases = [run("status", "77"), run("cancel"), run("worker", "--queues", "gpu"), run("submit", "nope.py")]

    for result in cases:
        assert result.returncode == 2, result
        assert result.stderr.count("\n") == 1 and "error:" in result.stderr, result.stderr
