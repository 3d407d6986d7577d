"""Flower sees the fleet: workers send task events, Flower serves them over HTTP with basic auth."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

from codecfleet import fleet as api
from fleet_harness import PYTHON, Process, free_port, wait_for

AUTH = "cf:s3cret"


def _get(port: int, path: str, auth: str | None = AUTH):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


def test_flower_lists_the_experiments_tasks_by_name_with_ids_only(make_fleet):
    fleet = make_fleet()
    fleet.worker("cpu,llm")
    fleet.worker("gpu")
    port = free_port()
    flower = Process(
        [PYTHON, "-m", "celery", "-A", "tasks.app", "flower", f"--port={port}", "--address=127.0.0.1",
         f"--basic-auth={AUTH}"],
        env=fleet.env, log_path=fleet.workdir / "flower.log",
    )
    fleet.extra.append(flower)
    wait_for(lambda: _get(port, "/healthcheck")[1] == b"OK", 60, "Flower to answer")
    # Flower learns about workers from their heartbeats; wait until it sees the gpu worker.
    wait_for(lambda: len(json.loads(_get(port, "/api/workers?refresh=1")[1])) >= 2, 60, "Flower to see both workers")

    handle = api.submit("reference:intra_dct", "synthetic:mix@64x48", frames=2, rate_points=[0.5])
    assert handle.wait(timeout=60)["status"] == "succeeded"

    def experiment_tasks():
        tasks = json.loads(_get(port, "/api/tasks")[1])
        mine = {t["name"]: t for t in tasks.values() if t.get("args") == f"[{handle.id}]"}
        done = all(mine.get(n, {}).get("state") == "SUCCESS" for n in
                   ("codecfleet.experiment.sanitize", "codecfleet.experiment.encode_decode", "codecfleet.experiment.score"))
        return mine if done else None

    mine = wait_for(experiment_tasks, 30, "Flower to list the experiment's three tasks as SUCCESS")
    assert mine["codecfleet.experiment.encode_decode"]["uuid"] == f"cf-{handle.id}-a0-encode_decode"
    assert mine["codecfleet.experiment.score"]["worker"] == mine["codecfleet.experiment.encode_decode"]["worker"]
    try:
        _get(port, "/api/tasks", auth=None)
        raise AssertionError("Flower answered without credentials")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
