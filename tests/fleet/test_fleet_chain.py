"""The chain on a real fleet: Redis, Postgres and worker processes (never eager mode)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from codecfleet import fleet as api
from evaluation.container import sha256_file
from fleet_harness import SLOW_CANDIDATE, wait_for

CLIP = "synthetic:mix@64x48"
HOSTILE = (Path(__file__).parents[1] / "sandbox" / "hostile" / "memory_bomb.py").read_text()


def _rows(database_url: str, sql: str, *params) -> list[tuple]:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_reference_candidate_runs_the_whole_chain_and_stores_one_measurement_per_rate_point(fleet):
    handle = api.submit("reference:intra_dct", CLIP, frames=3, rate_points=2, anchors=["x264"], campaign="chain")
    assert handle.status().status in ("queued", "sanitizing", "encoding", "scoring", "succeeded")

    result = handle.wait(timeout=120)

    assert result["status"] == "succeeded", result
    assert [rp["index"] for rp in result["rate_points"]] == [0, 1]
    for rp in result["rate_points"]:
        assert sha256_file(rp["bitstream"]) == rp["bitstream_sha256"]
        assert Path(rp["bitstream"]).stat().st_size == rp["bytes"]
        assert f"exp-{handle.id}/attempt-0/" in rp["bitstream"]
        assert 10 < rp["psnr_y"] < 100
    assert result["rate_points"][0]["bytes"] < result["rate_points"][1]["bytes"]
    assert set(result["anchors"]) == {"x264"} and len(result["anchors"]["x264"]) >= 4
    assert "x264" in result["bd"] and ("bd_rate_pct" in result["bd"]["x264"])
    assert result["isolation"] == "bubblewrap+seccomp+rlimits"
    stamps = _rows(
        fleet.database_url,
        "SELECT sanitize_started_at, encode_started_at, score_started_at, finished_at, attempts FROM experiments WHERE id=%s",
        handle.id,
    )[0]
    assert all(stamps[:4]) and list(stamps[:4]) == sorted(stamps[:4]) and stamps[4] == 0
    assert _rows(
        fleet.database_url,
        "SELECT count(*) FROM measurements m JOIN artifacts a ON a.id = m.artifact_id WHERE a.experiment_id=%s",
        handle.id,
    ) == [(2,)]


def test_result_has_the_fields_of_evaluate_json_plus_status_stage_reason(fleet):
    from codecfleet.api import evaluate_candidate
    from evaluation.video import load_clip

    clip = load_clip(CLIP + ",seed=7", frames=2)
    direct = evaluate_candidate(api.read_candidate("reference:intra_dct")[1], clip, [0.5], artifact_dir=fleet.workdir / "direct")

    result = api.submit("reference:intra_dct", clip, rate_points=[0.5]).wait(timeout=120)

    assert result["status"] == "succeeded", result
    missing = set(direct) - set(result) - {"run_dir", "seconds"}
    assert not missing, f"fleet result lacks {missing}"
    per_point_missing = set(direct["rate_points"][0]) - set(result["rate_points"][0])
    # The decoded frames' hash (used by the determinism check on the worker), pooled
    # chroma PSNRs and the split encoder/decoder memory are not stored.
    assert per_point_missing <= {"encode_peak_rss_bytes", "decode_peak_rss_bytes", "decoded_sha256",
                                 "psnr_u_pooled", "psnr_v_pooled", "psnr_y420_pooled"}
    # The same code on the same frames gives the same bytes and the same quality.
    assert result["rate_points"][0]["bitstream_sha256"] == direct["rate_points"][0]["bitstream_sha256"]
    assert result["rate_points"][0]["psnr_y"] == direct["rate_points"][0]["psnr_y"]
    # Of the per-frame series, the stored ones: PSNR-Y and payload bytes, frame by frame.
    stored, measured = result["rate_points"][0]["per_frame"], direct["rate_points"][0]["per_frame"]
    assert set(stored) == {"psnr_y", "payload_bytes"} and len(stored["psnr_y"]) == 2
    assert stored == {k: measured[k] for k in stored}


def test_rejected_candidate_ends_rejected_with_stage_and_reason(fleet):
    result = api.submit("import socket\ndef compress_video_frame(f, i, c):\n    return b''\n", CLIP, frames=2,
                        rate_points=[0.5]).wait(timeout=60)

    assert (result["status"], result["stage"]) == ("rejected", "sanitize")
    assert "socket" in result["reason"] or "decompress_video_frame" in result["reason"]


def test_hostile_candidate_fails_without_taking_the_worker_down_and_the_next_one_succeeds(fleet):
    gpu = next(w for w in fleet.workers if "gpu" in w.name)

    bad = api.submit(HOSTILE, CLIP, frames=2, rate_points=[0.5]).wait(timeout=120)
    good = api.submit("reference:intra_dct", CLIP + ",seed=3", frames=2, rate_points=[0.5]).wait(timeout=120)

    assert bad["status"] == "failed" and bad["stage"] == "probe", bad  # the probe's encode
    assert bad["reason"]
    assert gpu.alive()
    assert good["status"] == "succeeded", good


def test_cancel_stops_a_running_experiment_and_the_worker_takes_the_next(fleet):
    handle = api.submit(SLOW_CANDIDATE, CLIP + ",seed=11", frames=3, rate_points=[0.2, 0.5, 0.8], campaign="to-cancel")
    wait_for(lambda: handle.status().status == "encoding", 60, "the slow experiment to start encoding")

    cancelled = api.cancel(campaign="to-cancel")

    assert cancelled == [handle.id]
    assert handle.wait(timeout=5)["status"] == "cancelled"
    # The worker notices at its next lease renewal, kills the sandbox and is free again.
    after = api.submit("reference:intra_dct", CLIP + ",seed=12", frames=2, rate_points=[0.5]).wait(timeout=60)
    assert after["status"] == "succeeded", after
    assert _rows(
        fleet.database_url,
        "SELECT count(*) FROM artifacts WHERE experiment_id=%s", handle.id,
    ) == [(0,)]
    assert handle.status().status == "cancelled"


def test_score_runs_on_the_worker_that_decoded(fleet):
    handle = api.submit("reference:intra_dct", CLIP + ",seed=5", frames=2, rate_points=[0.5])
    handle.wait(timeout=60)
    gpu = next(w for w in fleet.workers if "gpu" in w.name)

    log = gpu.log()
    assert f"cf-{handle.id}-a0-encode_decode" in log and f"cf-{handle.id}-a0-score" in log
    assert handle.result()["worker"].startswith(gpu.name + "[")


def test_cli_submit_status_and_cancel_speak_one_line(fleet, tmp_path):
    import subprocess
    import sys

    env = fleet.env
    code = tmp_path / "codec.py"
    code.write_text(api.read_candidate("reference:intra_dct")[1])
    run = lambda *a: subprocess.run([sys.executable, "-m", "codecfleet.cli", *a], env=env, capture_output=True, text=True, timeout=120)  # noqa: E731

    submitted = run("submit", str(code), "--clip", CLIP + ",seed=21", "--frames", "2", "--rate-points", "1", "--json")
    assert submitted.returncode == 0, submitted.stderr
    experiment_id = json.loads(submitted.stdout)["id"]
    wait_for(lambda: api.get(experiment_id).status().finished, 60, "the CLI experiment to end")
    status = run("status", str(experiment_id))
    missing = run("status", "999999")
    cancel_done = run("cancel", str(experiment_id))

    assert status.returncode == 0 and f"experiment {experiment_id}: succeeded" in status.stdout
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    assert cancel_done.returncode == 1 and "already ended: succeeded" in cancel_done.stderr
