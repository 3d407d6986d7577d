"""Fixtures for the sandbox tests: strict isolation (or a loud skip / CI failure),
tiny clips on disk, canaries, and helpers to check that nothing escaped."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import numpy as np
import pytest

from _sandbox_testlib import TEST_LIMITS
from sandbox.runner import SandboxRunner, probe_isolation


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def strict_isolation():
    """The probe's report; security tests fail under CI when isolation is missing, never skip."""
    report = probe_isolation()
    if not report.strict_ok:
        message = "SANDBOX ISOLATION UNAVAILABLE, security tests not run: " + "; ".join(report.problems)
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return report


@pytest.fixture
def runner(strict_isolation) -> SandboxRunner:
    return SandboxRunner(TEST_LIMITS)


@pytest.fixture(scope="session")
def canary() -> str:
    return f"CANARY-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def canary_env(canary):
    """A secret in the worker's environment, as a real deployment has (database passwords...)."""
    os.environ["CODECFLEET_TEST_SECRET"] = canary
    yield "CODECFLEET_TEST_SECRET"
    os.environ.pop("CODECFLEET_TEST_SECRET", None)


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory, canary) -> Path:
    """A source clip on disk with a secret file beside it, as on a real worker."""
    from evaluation.video import write_video

    d = tmp_path_factory.mktemp("source")
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(3)])
    write_video(d / "clip.mkv", frames, 30.0)
    (d / "canary.txt").write_text(canary)
    return d


@pytest.fixture(scope="session")
def clip(source_dir):
    from evaluation.video import read_video

    return read_video(source_dir / "clip.mkv")


@pytest.fixture
def tcp_listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.setblocking(False)
    yield srv
    srv.close()


@pytest.fixture
def udp_listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.setblocking(False)
    yield srv
    srv.close()
