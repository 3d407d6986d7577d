"""Sessions forked from the worker's template (issue 16): what they are, what they
cannot reach, and what happens when the template is gone or refuses."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from _sandbox_testlib import LOSSLESS_CODEC, TEST_LIMITS, wait_until
from evaluation.runner import CandidateError
from sandbox import runner as sr
from sandbox.runner import SandboxRunner

FRAMES = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
CONFIG = {"quality": 0.5, "width": 16, "height": 16, "fps": 30.0, "device": "cpu"}

#: A candidate that tries to reach its template and siblings: every pid it can
#: name, a signal to all of them, the template's cgroup, a new namespace.
REACH = '''
import ctypes, os, signal
import numpy as np

def compress_video_frame(frame, frame_index, config):
    libc = ctypes.CDLL(None, use_errno=True)
    pids = sorted(p for p in os.listdir("/proc") if p.isdigit())
    try:
        os.kill(-1, signal.SIGKILL)  # everyone it may signal, except itself
        killed = "sent"
    except OSError as exc:
        killed = "errno%d" % exc.errno
    with open("/proc/self/status") as fh:
        caps = [l.split()[1] for l in fh if l.startswith(("CapEff", "CapPrm", "CapBnd"))]
    unshare = libc.unshare(0x10000000)
    with open("/proc/self/cgroup") as fh:
        cg = fh.read().replace("\\n", ";")
    mounts = [sorted(os.listdir("/tmp")), sorted(os.listdir("/dev/shm")), os.getcwd()]
    raise RuntimeError("pids=%s kill=%s caps=%s unshare=%d mounts=%s cgroup=%s" % (
        pids, killed, caps, unshare, mounts, cg))

def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''


@pytest.fixture
def runner(strict_isolation):
    if not strict_isolation.template_ok:
        pytest.skip(f"no template on this worker: {strict_isolation.template}")
    return SandboxRunner(TEST_LIMITS)


def _template(runner, role: str) -> sr._Template:
    view = runner.decoder_view if role == "decoder" else None
    return sr._get_template(runner.mode, runner.device, runner.limits, runner._bwrap, view, runner.decoder_view.key)


def test_the_probe_checks_forked_sessions(strict_isolation):
    assert strict_isolation.strict_ok
    assert strict_isolation.template_ok, strict_isolation.template


def test_encoder_and_decoder_are_forked_from_two_templates(runner):
    enc = runner.encode(LOSSLESS_CODEC, FRAMES, CONFIG)
    dec = runner.decode(LOSSLESS_CODEC, list(enc.payloads), CONFIG, len(FRAMES))
    np.testing.assert_array_equal(dec.frames, FRAMES)
    enc_log, dec_log = runner.logs
    assert enc_log.started_from == dec_log.started_from == "template"
    for log in (enc_log, dec_log):
        assert log.pids_seen and log.session_empty is True and log.host_uid not in (0, None)
        assert log.returncode == 0
    assert enc_log.pids_seen != dec_log.pids_seen
    enc_t, dec_t = _template(runner, "encoder"), _template(runner, "decoder")
    assert enc_t is not dec_t and enc_t.proc.pid != dec_t.proc.pid
    assert enc_t.view is None and dec_t.view is runner.decoder_view  # the decoder's private runtime copy


def test_a_forked_session_cannot_see_signal_or_join_its_template(runner):
    template = _template(runner, "encoder")
    with pytest.raises(CandidateError) as err:
        runner.encode(REACH, FRAMES[:1], CONFIG)
    reason = err.value.reason
    assert "pids=['1']" in reason, reason  # alone in its own pid namespace
    assert "caps=['0000000000000000', '0000000000000000', '0000000000000000']" in reason, reason
    assert "unshare=-1" in reason, reason
    assert "mounts=[['candidate.py'], [], '/tmp']" in reason, reason  # a fresh tmpfs of its own
    assert runner.logs[-1].started_from == "template"
    # The template lived through kill(-1) and serves the next session.
    assert template.alive()
    runner.encode(LOSSLESS_CODEC, FRAMES, CONFIG)
    assert runner.logs[-1].started_from == "template" and _template(runner, "encoder") is template


def test_a_dead_template_is_rebuilt(runner):
    old = _template(runner, "encoder")
    os.kill(old.proc.pid, signal.SIGKILL)
    assert wait_until(lambda: not old.alive(), timeout=3.0)
    runner.encode(LOSSLESS_CODEC, FRAMES, CONFIG)
    assert runner.logs[-1].started_from == "template"
    new = _template(runner, "encoder")
    assert new is not old and new.alive()


def test_a_template_that_refuses_means_a_cold_start_that_says_so(runner, monkeypatch):
    def refuse(self, token, fds, spec):
        self.broken = "it refused to fork: 3 threads: forking is unsafe"
        raise sr.TemplateError(self.broken)

    monkeypatch.setattr(sr._Template, "fork", refuse)
    enc = runner.encode(LOSSLESS_CODEC, FRAMES, CONFIG)
    log = runner.logs[-1]
    assert log.started_from.startswith("cold (the template failed: it refused to fork"), log.started_from
    assert log.pids_seen and log.session_empty is True
    monkeypatch.undo()
    dec = runner.decode(LOSSLESS_CODEC, list(enc.payloads), CONFIG, len(FRAMES))
    np.testing.assert_array_equal(dec.frames, FRAMES)
    assert runner.logs[-1].started_from == "template"


def test_template_off_starts_every_session_cold(strict_isolation):
    runner = SandboxRunner(TEST_LIMITS, template="off")
    enc = runner.encode(LOSSLESS_CODEC, FRAMES, CONFIG)
    runner.decode(LOSSLESS_CODEC, list(enc.payloads), CONFIG, len(FRAMES))
    assert [log.started_from for log in runner.logs] == ["cold", "cold"]


def test_templates_started_beside_a_failing_probe_are_closed(strict_isolation, monkeypatch):
    """The templates start while the cold probe sessions run; when those find the
    sandbox not strict, nothing may fork from them: they are closed, and the report
    says isolation does not hold."""
    started = []
    start = sr._Template.start

    def start_and_keep(self):
        start(self)
        started.append(self)

    def cold_probe_fails(self, code, config):
        if self.role == "probe":
            raise CandidateError("import", "the probe session could not start (simulated)")
        return cold_start(self, code, config)

    cold_start = sr._Session.start
    sr.close_templates()
    monkeypatch.setattr(sr._Template, "start", start_and_keep)
    monkeypatch.setattr(sr._Session, "start", cold_probe_fails)
    try:
        report = sr.probe_isolation(refresh=True)
        assert not report.strict_ok and not report.template_ok
        assert "simulated" in " ".join(report.problems)
        assert len(started) == 2 and not any(t.alive() for t in started)
        assert all(t.proc.poll() is not None for t in started)  # the processes are gone, not just marked
    finally:
        monkeypatch.undo()
        sr.close_templates()
        assert sr.probe_isolation(refresh=True).strict_ok  # later tests get the real report back
