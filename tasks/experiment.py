"""The chain of one experiment: generate -> sanitize -> encode_decode -> score.

Each task is thin: load the experiment by id, call domain code, record the
outcome, then (after the commit) send the next step. Status lives in the
database and moves only through ``db.experiments`` (conditional UPDATEs), so a
step that finds its work done does nothing: with late acks a message can be
delivered twice, and a retry re-runs a step from the top.

Who holds a running experiment is ``experiments.worker_host`` =
``node[pid]`` plus a lease (``lease_expires_at``) that a heartbeat thread
renews while the work goes on. A redelivered ``encode_decode`` that finds the
experiment already ``encoding`` takes it over only when the holder is gone:
its lease ran out, or it is this same node and its process no longer exists
(the worker was killed and restarted) or is this very process (a retry).
Otherwise a live worker is on it and the message is dropped; if that worker
dies later its lease runs out and the reaper re-queues the experiment.

Scoring happens where the frames were decoded. ``encode_decode`` measures each
rate point completely on the gpu worker: encode (sandbox), write the
bitstream under ``<artifact dir>/exp-<id>/attempt-<n>/``, re-read it, decode
it in a fresh sandbox, check the frames and compute PSNR/SSIM/MS-SSIM on the
worker's device while the decoded frames are still in memory; the numbers go
to a JSON file beside the bitstream. ``score`` runs on the *same worker* (it
is sent to that worker's private queue, ``host.<node>``): it re-reads every
bitstream and checks its sha256 and size against what was decoded, takes bits
from the bytes on disk, adds the anchors and BD figures and stores everything
with ``db.results.record_result``. Decoded frames never leave the worker, and
never touch the disk (see deploy/README.md for the cost of this choice).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from pathlib import Path

from db import catalog, experiments, hashing, results
from config import get_settings, resolve_device
from db.campaign_queries import campaign_codes
from db import engine
from db.models import Experiment, ExperimentStatus, Measurement, Stage
from evaluation import metrics
from evaluation.container import ContainerError, open_bitstream, sha256_file
from evaluation.pipeline import (
    BD_METRIC,
    DEFAULT_DETERMINISM,
    DEFAULT_MIN_OVERLAP,
    EVALUATOR_VERSION,
    PROBE_FRAMES,
    bd_against,
    compare_with_parent,
    measure_rate_point,
    probe_candidate,
    probe_quality,
    verify_determinism,
)
from evaluation.reference import OFFLINE_SEEDS
from evaluation.runner import CandidateError
from evaluation.clip import Clip, VideoError, public_source
from evaluation.video import load_clip
from tasks import feedback
from tasks.app import TIME_LIMITS, app
from tasks.base import FleetTask, StepContext, StepFailed, is_transient, parse_holder
from tasks.steps import ENCODE_DECODE, GENERATE, SANITIZE, SCORE, task_id

log = logging.getLogger(__name__)
S = ExperimentStatus

def _holder_gone(holder: str | None, ctx: StepContext) -> bool:
    """True when ``holder`` is provably not working any more: this same node, and its
    process is this one (a retry) or no longer exists (the worker was restarted)."""
    node, pid = parse_holder(holder)
    if node != ctx.node or pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def enter(session, experiment: Experiment, ctx: StepContext, *, step: str, status: ExperimentStatus,
          node: str | None = None, **values) -> bool:
    """The one way a step starts work on its experiment; True when this delivery now holds it.

    Exactly one of three things happens, and the log says which:

    * **claim**: the experiment waits for ``step`` (``waiting_for``), and this
      delivery takes it (one conditional UPDATE; of two deliveries one wins);
    * **take over**: it is already in ``status``, held by a worker that is gone
      (its lease ran out, or it is this node and its process is dead or is this
      one), as after a killed worker's message is redelivered;
    * **nothing**: a live worker holds it, it waits for another step, or it
      ended. A stale or duplicate delivery changes nothing.
    """
    settings = get_settings()
    eid = experiment.id
    if experiment.waiting_for == step and (node is None or experiment.worker_host == node):
        if experiments.claim(session, eid, step=step, to=status, holder=ctx.holder, lease_seconds=settings.lease_seconds,
                   node=node, **values):
            log.info("experiment %s: %s claimed by %s", eid, step, ctx.holder)
            return True
        log.info("experiment %s: another delivery of %s claimed it first; nothing to do", eid, step)
        return False
    if experiment.status is status and experiment.waiting_since is None:
        holder = experiment.worker_host
        if node is not None and parse_holder(holder)[0] != node:
            log.info("experiment %s: %s runs on %s, not here; nothing to do", eid, step, holder)
            return False
        gone = _holder_gone(holder, ctx)
        if experiments.take_over(session, eid, status=status, holder=holder, new_holder=ctx.holder,
                       lease_seconds=settings.lease_seconds, require_expired_lease=not gone):
            log.warning("experiment %s: %s taken over from %s (%s)", eid, step, holder,
                        "its process is gone" if gone else "its lease ran out")
            return True
        log.info("experiment %s: %s is held by live %s; dropping this delivery", eid, step, holder)
        return False
    log.info("experiment %s: a delivery of %s finds it %s%s (attempt %d); nothing to do", eid, step,
             experiment.status.value, f", waiting for {experiment.waiting_for}" if experiment.waiting_for else "",
             experiment.attempts + 1)
    return False


# --- generate ---------------------------------------------------------------


def generate_step(ctx: StepContext, experiment_id: int) -> None:
    """Ask the configured generator (an LLM, or the offline evolution by default) for the
    experiment's candidate; store prompt, reply, model and tokens; then sanitize.

    The generator is called outside any database transaction (an LLM call can take
    minutes). A generation that yields no code ends the experiment with the
    generator's own status and reason (stage ``generate``), which later prompts show.
    """
    with ctx.transaction() as session:
        experiment = experiments.get_experiment(session, experiment_id)
        if not enter(session, experiment, ctx, step="generate", status=S.GENERATING):
            return
        if experiment.candidate_id is not None:  # cannot happen: attach and hand-off are one transaction
            raise RuntimeError(f"experiment {experiment_id} holds candidate {experiment.candidate_id} while generating")
        request = feedback.generation_request(session, experiment)
        seen = campaign_codes(session, experiment.campaign_id) if experiment.campaign_id is not None else []

    # An LLM call can take minutes: the lease is renewed meanwhile.
    with Heartbeat(experiment_id, S.GENERATING, ctx.holder, on_lost=lambda: None) as heartbeat:
        generator = feedback.resolve_generator(seeds=feedback.seed_codes(OFFLINE_SEEDS), seen=seen)
        generated = generator.generate(request)
    if heartbeat.lost:
        return

    with ctx.transaction() as session:
        experiment = experiments.get_experiment(session, experiment_id)
        if experiment.status is not S.GENERATING or experiment.worker_host != ctx.holder:
            return  # cancelled or reaped meanwhile
        candidate = feedback.store_generated(session, feedback.provenance(generated), code=generated.code,
                                             campaign_id=experiment.campaign_id)
        experiments.attach_candidate(session, experiment_id, candidate.id)
        if not generated.ok:
            experiments.transition(session, experiment_id, generated.error.outcome, failure_stage=Stage.GENERATE,
                         error=str(generated.error))
            return
        attempt = experiment.attempts
        if experiments.hand_off(session, experiment_id, status=S.GENERATING, holder=ctx.holder, step="sanitize"):
            ctx.send_after_commit(SANITIZE, experiment_id, task_id=task_id(experiment_id, attempt, SANITIZE))


# --- sanitize ---------------------------------------------------------------


def sanitize_step(ctx: StepContext, experiment_id: int) -> None:
    from sandbox.sanitize import sanitize

    with ctx.transaction() as session:
        experiment = experiments.get_experiment(session, experiment_id)
        if not enter(session, experiment, ctx, step="sanitize", status=S.SANITIZING):
            return
        candidate = experiment.candidate
        if candidate is None:
            raise StepFailed(Stage.SANITIZE, "the experiment has no candidate to sanitize")
        # ``code`` is what the generator hands the sanitizer (a reply, or a parent
        # patched by a SEARCH/REPLACE reply); the raw reply alone is a fallback.
        text = candidate.code if candidate.code is not None else candidate.raw_reply
        verdict = sanitize(text or "")
        if not verdict.ok:
            catalog.record_sanitizer_verdict(session, candidate.id, accepted=False, reason=verdict.reason)
            experiments.transition(session, experiment_id, S.REJECTED, failure_stage=Stage.SANITIZE, error=verdict.reason)
            return
        catalog.record_sanitizer_verdict(
            session, candidate.id, accepted=True, code=verdict.code, ast_hash=verdict.ast_hash
        )
        original = results.find_reusable_experiment(
            session,
            ast_hash=verdict.ast_hash,
            clip_sha256=experiment.clip.sha256,
            config_hash=experiment.config_hash,
            metrics_version=metrics.METRICS_VERSION,
        )
        if original is not None and original.id != experiment_id:
            results.reuse_result(session, experiment_id, original.id)
            return
        attempt = experiment.attempts
        if experiments.hand_off(session, experiment_id, status=S.SANITIZING, holder=ctx.holder, step="encode_decode"):
            ctx.send_after_commit(ENCODE_DECODE, experiment_id, task_id=task_id(experiment_id, attempt, ENCODE_DECODE))


# --- encode_decode ----------------------------------------------------------

_clip_cache: dict[str, Clip] = {}


def experiment_clip(experiment: Experiment) -> Clip:
    """The experiment's reference frames, loaded from its recorded spec and checked
    against the clip's sha256 (one clip cached per process: score reuses it)."""
    sha = experiment.clip.sha256
    if sha in _clip_cache:
        return _clip_cache[sha]
    spec = experiment.config.get("clip") or {}
    source = spec.get("source", experiment.clip.source)
    try:
        clip = load_clip(source, frames=spec.get("frames", experiment.clip.n_frames), start_frame=spec.get("start_frame", 0))
    except (VideoError, OSError) as exc:
        raise StepFailed(Stage.CLIP, f"cannot load the clip on {os.uname().nodename}: {exc}") from exc
    if clip.sha256 != sha:
        raise StepFailed(
            Stage.CLIP,
            f"{public_source(source)} decodes to frames with sha256 {clip.sha256[:12]}… on this worker, "
            f"not the submitted {sha[:12]}…",
        )
    _clip_cache.clear()
    _clip_cache[sha] = clip
    return clip


def attempt_dir(experiment_id: int, attempt: int) -> Path:
    return Path(get_settings().artifact_dir) / f"exp-{experiment_id}" / f"attempt-{attempt}"


def _sidecar(run_dir: Path, index: int) -> Path:
    return run_dir / f"rp{index}.json"


def _verify_path(run_dir: Path) -> Path:
    """The determinism check's record of this attempt (written once it passed)."""
    return run_dir / "verify.json"


def _write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, allow_nan=False))
    os.replace(tmp, path)


def _measure_or_resume(code: str, clip: Clip, index: int, quality: float, *, runner, run_dir: Path, device: str,
                       already_measured=None) -> dict:
    """One rate point: reuse a complete earlier measurement of this attempt (its JSON
    is written last, and its bitstream must still hash the same), else measure anew.
    ``already_measured(sha256)``: see ``evaluation.pipeline.measure_rate_point`` (the
    bytes are then not decoded again; the row says whose numbers it gets)."""
    sidecar = _sidecar(run_dir, index)
    if sidecar.is_file():
        row = json.loads(sidecar.read_text())
        path = Path(row["bitstream"])
        if path.is_file() and sha256_file(path) == row["bitstream_sha256"]:
            return row
    for partial in run_dir.glob(f"rp{index}_q*.cfbs"):
        partial.unlink()  # a killed run's half-written file; write_bitstream never overwrites
    point, _decoded = measure_rate_point(code, clip, index, quality, runner=runner, run_dir=run_dir, device=device,
                                         already_measured=already_measured)
    row = point.to_json()
    _write_json_atomically(sidecar, row)
    return row


def _remember(seen: dict[str, int], row: dict) -> dict:
    """Note which rate point first produced ``row``'s bytes (identical later ones are one curve point)."""
    seen.setdefault(row["bitstream_sha256"], int(row["index"]))
    return row


# --- the probe ----------------------------------------------------------------


def _probe_or_resume(code: str, clip: Clip, quality: float, *, runner, run_dir: Path, device: str) -> dict:
    """The probe of this attempt: its stored JSON when a killed run finished it, else run it."""
    path = run_dir / "probe.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = probe_candidate(code, clip, quality, runner=runner, run_dir=run_dir, device=device)
    _write_json_atomically(path, result)
    return result


def probe_verdict(probe: dict, parents: list, *, margin_db: float, n_frames: int, n_points: int) -> dict:
    """The probe's outcome after comparing with the parents, and the GPU-seconds it saved.

    A candidate is stopped as ``worse_than_parent`` only when it is worse, by more
    than ``margin_db`` dB of PSNR-Y at equal rate, than *every* parent it can be
    compared with (``evaluation.pipeline.compare_with_parent``: the parent's own
    numbers on the same first frames, interpolated at the probe's rate); the row
    names the closest parent.

    Seconds saved (an estimate, stored as such): a stop whose full measurement would
    have run to the end (``worse_than_parent``, or garbage frames) spares it,
    estimated as the probe's own seconds scaled to every frame of every rate point
    (``seconds * n_points * n_frames / probe frames``) minus the probe itself. A
    crash or a malformed output would have ended the full measurement as early, at
    its first rate point, so no saving is claimed for it.
    """
    out = dict(probe)
    out.setdefault("parent_experiment_id", None)
    out.setdefault("parent_psnr_y", None)
    out["margin_db"] = margin_db
    if out["outcome"] == "passed" and parents and out.get("payload_bytes"):
        verdicts = [(pid, compare_with_parent(out["payload_bytes"], out["psnr_y"], points, margin_db))
                    for pid, points in parents]
        comparable = [(pid, v) for pid, v in verdicts if v["verdict"] != "incomparable"]
        if comparable:
            pid, closest = min(comparable, key=lambda item: item[1]["deficit_db"])
            out["parent_experiment_id"], out["parent_psnr_y"] = pid, closest["parent_psnr_y"]
            if all(v["verdict"] == "worse" for _, v in comparable):
                out["outcome"] = "worse_than_parent"
                out["stage"] = "probe"
                out["reason"] = (
                    f"probe ({out['n_frames']} frames at quality {out['quality']:.3f}): PSNR-Y {out['psnr_y']:.2f} dB "
                    f"at {out['payload_bytes']} payload bytes, {closest['deficit_db']:.2f} dB below its parent "
                    f"(experiment {pid}: {closest['parent_psnr_y']:.2f} dB on the same frames at that rate), "
                    f"more than the {margin_db:g} dB allowed; not measured further"
                )
    saves = out["outcome"] == "worse_than_parent" or (out["outcome"] == "wrong_output" and out.get("stage") == "probe")
    full = out["seconds"] * n_points * n_frames / max(1, out["n_frames"])
    out["saved_seconds"] = max(0.0, full - out["seconds"]) if saves else 0.0
    return out


def _run_probe(ctx: StepContext, experiment_id: int, code: str, clip: Clip, qualities: list, parents: list, *,
               runner, run_dir: Path, device: str, heartbeat) -> bool:
    """Probe, record the probe, and stop a hopeless candidate (``StepFailed`` at stage
    ``probe`` with its numbers and reason). False when the experiment was lost meanwhile."""
    settings = get_settings()
    probe = probe_verdict(
        _probe_or_resume(code, clip, probe_quality(qualities), runner=runner, run_dir=run_dir, device=device),
        parents, margin_db=settings.probe_margin_db, n_frames=clip.n_frames, n_points=len(qualities),
    )
    if heartbeat.lost or runner.aborted.is_set():
        return False
    with ctx.transaction() as session:
        held = results.record_probe(
            session, experiment_id, holder=ctx.holder, outcome=probe["outcome"], reason=probe["reason"],
            quality=probe["quality"], n_frames=probe["n_frames"], seconds=probe["seconds"],
            saved_seconds=probe["saved_seconds"], payload_bytes=probe["payload_bytes"], psnr_y=probe["psnr_y"],
            parent_experiment_id=probe["parent_experiment_id"], parent_psnr_y=probe["parent_psnr_y"],
            margin_db=probe["margin_db"],
        )
    if not held:
        return False  # cancelled or taken away: that outcome stands
    if probe["outcome"] != "passed":
        raise StepFailed(Stage.PROBE, probe["reason"])
    return True


class _AbortableRunner:
    """A SandboxRunner whose running sandbox can be killed from another thread
    (cancel, or a lost lease): the heartbeat calls :meth:`abort`."""

    def __init__(self, runner):
        self._runner = runner
        self.isolation = runner.isolation
        self.aborted = threading.Event()

    def abort(self) -> None:
        self.aborted.set()
        self._runner.abort("the experiment was cancelled or taken from this worker")

    def encode(self, code, frames, config):
        return self._runner.encode(code, frames, config)

    def decode(self, code, payloads, config, n_frames, *, on_frame=None):
        return self._runner.decode(code, payloads, config, n_frames, on_frame=on_frame)


def make_runner(device: str):
    """The sandbox runner of this worker (the probe result is cached per process)."""
    from sandbox.runner import IsolationError, Limits, SandboxRunner

    try:
        return _AbortableRunner(SandboxRunner(Limits(), device=device, mode=get_settings().sandbox_mode))
    except IsolationError as exc:
        raise StepFailed(Stage.ENCODE, f"sandbox unavailable on this worker: {exc}") from exc


class Heartbeat:
    """Renews this worker's lease every ``interval`` seconds in its own transactions.

    When the renewal finds the experiment no longer held by us (cancelled,
    reaped, taken over) it calls ``on_lost`` once and stops. Transient database
    errors are logged and tried again at the next beat: a short outage must not
    stop an encode.
    """

    def __init__(self, experiment_id: int, status: ExperimentStatus, holder: str, on_lost) -> None:
        settings = get_settings()
        self.experiment_id = experiment_id
        self.status = status
        self.holder = holder
        self.lease_seconds = settings.lease_seconds
        self.interval = min(settings.heartbeat_seconds, settings.lease_seconds / 3)
        self.on_lost = on_lost
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{experiment_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with engine.transaction() as session:
                    held = experiments.take_over(
                        session,
                        self.experiment_id,
                        status=self.status,
                        holder=self.holder,
                        new_holder=self.holder,
                        lease_seconds=self.lease_seconds,
                        require_expired_lease=False,
                    )
            except Exception as exc:  # noqa: BLE001 - a heartbeat must outlive outages
                level = logging.WARNING if is_transient(exc) else logging.ERROR
                log.log(level, "experiment %s: lease renewal failed: %s", self.experiment_id, exc)
                continue
            if not held:
                self.lost = True
                log.warning("experiment %s: no longer held by %s; stopping", self.experiment_id, self.holder)
                self.on_lost()
                return


def encode_decode_step(ctx: StepContext, experiment_id: int) -> None:
    settings = get_settings()
    with ctx.transaction() as session:
        experiment = experiments.get_experiment(session, experiment_id)
        mine = experiment.waiting_for == "encode_decode" or (
            experiment.status is S.ENCODING and experiment.waiting_since is None
        )
        # The sandbox is probed only for an experiment this delivery may run.
        device = resolve_device(experiment.config.get("device") or settings.device) if mine else None
        runner = make_runner(device) if mine else None
        if not enter(session, experiment, ctx, step="encode_decode", status=S.ENCODING, device=device,
                     isolation=runner.isolation if runner else None):
            return
        attempt = experiment.attempts
        code = experiment.candidate.code
        qualities = list(experiment.rate_points)
        clip = experiment_clip(experiment)
        decoders = [hashing.experiment_decoder_hash(experiment, quality) for quality in qualities]
        # The probe is a setting, and an experiment may decline it (``codecfleet evaluate``).
        probe = settings.probe and experiment.config.get("probe", True) is not False
        parents = (
            results.parent_head_points(session, experiment.candidate_id, clip_sha256=clip.sha256,
                                 metrics_version=metrics.METRICS_VERSION, n_frames=min(PROBE_FRAMES, clip.n_frames))
            if probe else []
        )
        determinism = experiment.config.get("determinism") or DEFAULT_DETERMINISM

    run_dir = attempt_dir(experiment_id, attempt)
    run_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}

    def already_measured(index: int):
        """Bytes this run already decoded (an identical earlier rate point), or that this
        decoder measured before (stored): they are not decoded again."""
        def lookup(sha256: str) -> dict | None:
            if sha256 in seen:
                return {"same_as": seen[sha256]}
            with engine.transaction() as session:
                m = results.find_measurement(session, sha256=sha256, decoder_hash=decoders[index], clip_sha256=clip.sha256,
                                       metrics_version=metrics.METRICS_VERSION)
                if m is not None:
                    return {"reused_measurement_id": m.id, "reused_from": m.experiment_id}
            return None
        return lookup
    rows: list[dict] = []
    with Heartbeat(experiment_id, S.ENCODING, ctx.holder, on_lost=runner.abort) as heartbeat:
        try:
            # A cheap probe first: a broken or hopeless candidate stops here.
            if probe and not _run_probe(ctx, experiment_id, code, clip, qualities, parents, runner=runner,
                                                 run_dir=run_dir, device=device, heartbeat=heartbeat):
                return
            for index, quality in enumerate(qualities):
                if heartbeat.lost:
                    return
                rows.append(_remember(seen, _measure_or_resume(
                    code, clip, index, quality, runner=runner, run_dir=run_dir, device=device,
                    already_measured=already_measured(index))))
            # Later in the run, each rate point's bytes (or one sampled point's) are
            # decoded again in a fresh sandbox: frames must be bit-identical.
            if not heartbeat.lost and not _verify_path(run_dir).is_file():
                record = verify_determinism(code, clip, [r for r in rows if "decoded_sha256" in r], runner=runner, device=device, mode=determinism)
                _write_json_atomically(_verify_path(run_dir), record)
        except CandidateError as exc:
            if heartbeat.lost or runner.aborted.is_set():
                return  # cancelled or taken away: that outcome stands
            raise StepFailed(exc.stage, exc.reason) from exc
    if heartbeat.lost:
        return

    with ctx.transaction() as session:
        # Scoring needs the decoded measurements on this node: it waits on its private queue.
        if not experiments.hand_off(session, experiment_id, status=S.ENCODING, holder=ctx.holder, step="score",
                          to=S.SCORING, keep_node=ctx.node):
            return  # cancelled or reaped while we finished
    ctx.send_after_commit(SCORE, experiment_id, queue=ctx.private_queue, task_id=task_id(experiment_id, attempt, SCORE))


# --- score ------------------------------------------------------------------

#: Stored measurement columns -> the sidecar row keys ``_reread`` reads them from.
_ROW_KEYS = {
    "psnr_rgb": "psnr_rgb", "psnr_y": "psnr_y", "psnr_rgb_pooled": "psnr_rgb_pooled",
    "psnr_y_pooled": "psnr_y_pooled", "ssim_y": "ssim_y", "ms_ssim": "ms_ssim", "ms_ssim_scales": "ms_ssim_scales",
    "psnr_capped_frames": "psnr_capped_frames", "encode_seconds": "encode_seconds",
    "decode_seconds": "decode_seconds", "encode_fps": "encode_fps", "decode_fps": "decode_fps",
    "peak_rss_bytes": "encode_peak_rss_bytes",
}
_FILE_KEYS = ("index", "quality", "bitstream", "bitstream_sha256", "bytes")


def _resolve_rows(rows: list[dict]) -> list[dict]:
    """Sidecar rows with numbers for every rate point: a point with the same bytes as an
    earlier one takes its numbers; a point whose bytes this decoder measured before takes
    the stored numbers (``_measured`` False: ``record_result`` links, never re-stores them)."""
    out: list[dict] = []
    for row in rows:
        own = {k: row[k] for k in _FILE_KEYS}
        if "same_as" in row:
            first = out[row["same_as"]]
            out.append({**first, **own, "same_as": row["same_as"]})
        elif "reused_measurement_id" in row:
            with engine.transaction() as session:
                m = session.get(Measurement, row["reused_measurement_id"])
                if m is None:  # cannot happen: measurements are never deleted
                    raise RuntimeError(f"measurement {row['reused_measurement_id']} reused by rate point "
                                       f"{row['index']} is gone")
                stored = {key: getattr(m, column) for column, key in _ROW_KEYS.items()}
                stored.update(_evaluator_version=m.evaluator_version, _frame_psnr_y=m.frame_psnr_y,
                              _frame_bytes=m.frame_bytes)
            out.append({**stored, **own, "_measured": False, "reused_measurement_id": row["reused_measurement_id"]})
        else:
            out.append(row)
    return out


def _finish_points(points: list, rows: list[dict]) -> list:
    """Per-frame numbers (what a child's probe is compared with) and whether each
    point's numbers were measured here."""
    done = []
    for p, row in zip(points, rows, strict=True):
        per_frame = row.get("per_frame") or {}
        done.append(dataclasses.replace(
            p,
            frame_psnr_y=tuple(per_frame["psnr_y"]) if per_frame.get("psnr_y") else row.get("_frame_psnr_y"),
            frame_bytes=tuple(per_frame["payload_bytes"]) if per_frame.get("payload_bytes") else row.get("_frame_bytes"),
            measured=row.get("_measured", True),
            evaluator_version=row.get("_evaluator_version", p.evaluator_version),
        ))
    return done


def _one_per_bitstream(items: list, sha256_of) -> list:
    """Identical bytes at two rate points are one point of the curve: keep the first."""
    seen: set[str] = set()
    out = []
    for item in items:
        if sha256_of(item) not in seen:
            seen.add(sha256_of(item))
            out.append(item)
    return out


def _reread(row: dict, clip: Clip, verify_seconds: float | None = None) -> results.RatePointResult:
    """The stored numbers of one rate point, after checking that the bitstream on
    disk is byte for byte the one that was decoded."""
    path = Path(row["bitstream"])
    try:
        # One bounded pass checks the layout and CRC and hashes the bytes.
        with open_bitstream(path) as payloads:
            digest, n_bytes, n_payloads = payloads.sha256, payloads.n_bytes, len(payloads)
    except (OSError, ContainerError) as exc:
        raise StepFailed(Stage.SCORE, f"bitstream of rate point {row['index']} cannot be re-read: {exc}") from exc
    if digest != row["bitstream_sha256"] or n_bytes != row["bytes"]:
        raise StepFailed(
            Stage.SCORE,
            f"bitstream {path.name} changed after it was decoded (sha256 {digest[:12]}…, {n_bytes} bytes; "
            f"decoded {row['bitstream_sha256'][:12]}…, {row['bytes']} bytes)",
        )
    if n_payloads != clip.n_frames:
        raise StepFailed(Stage.SCORE, f"bitstream {path.name} holds {n_payloads} frames, expected {clip.n_frames}")
    rate = metrics.rate_stats(n_bytes, clip.n_frames, clip.width, clip.height, clip.fps)
    return results.RatePointResult(
        rate_index=row["index"],
        quality=row["quality"],
        path=str(path),
        n_bytes=n_bytes,
        sha256=digest,
        n_frames=clip.n_frames,
        bits=rate["bits"],
        kbps=rate["kbps"],
        bpp=rate["bpp"],
        psnr_rgb=row["psnr_rgb"],
        psnr_y=row["psnr_y"],
        psnr_rgb_pooled=row["psnr_rgb_pooled"],
        psnr_y_pooled=row["psnr_y_pooled"],
        ssim_y=row["ssim_y"],
        ms_ssim=row.get("ms_ssim"),
        ms_ssim_scales=row.get("ms_ssim_scales"),
        psnr_capped_frames=row.get("psnr_capped_frames", 0),
        psnr_y420=row.get("psnr_y420"),
        psnr_u=row.get("psnr_u"),
        psnr_v=row.get("psnr_v"),
        psnr_yuv=row.get("psnr_yuv"),
        psnr_yuv_pooled=row.get("psnr_yuv_pooled"),
        verify_decode_seconds=verify_seconds,
        encode_seconds=row["encode_seconds"],
        decode_seconds=row["decode_seconds"],
        encode_fps=row.get("encode_fps"),
        decode_fps=row.get("decode_fps"),
        peak_rss_bytes=max(
            (v for v in (row.get("encode_peak_rss_bytes"), row.get("decode_peak_rss_bytes")) if v), default=None
        ),
        evaluator_version=EVALUATOR_VERSION,
        metrics_version=metrics.METRICS_VERSION,
        clip_sha256=clip.sha256,
    )


def _anchor_scores(clip: Clip, codecs: list[str], rows: list[dict], device: str, *,
                   metric: str = BD_METRIC, min_overlap: float = DEFAULT_MIN_OVERLAP) -> list[results.ScoreResult]:
    """BD figures on ``metric`` against each anchor, its points matched to the candidate's
    measured range (a cached dense sweep); an anchor that cannot be measured gives a
    score row with no number and the reason, never a stand-in. A figure over less than
    ``min_overlap`` keeps its overlap and ``raw_bd_rate`` but no ``bd_rate``: never fitness."""
    from evaluation import anchors as anchors_mod

    settings = get_settings()
    scores = []
    test_q = [metrics.fitness_value(r, metric) for r in rows]
    for codec in codecs:
        cache_dir = Path(settings.cache_dir) / "anchors"
        try:
            if any(v is None for v in test_q):
                points = swept = anchors_mod.anchor_curve(clip, codec, cache_dir=cache_dir, device=device)
            else:
                matched = anchors_mod.matched_curve(clip, codec, test_q, metric=metric, cache_dir=cache_dir, device=device)
                points, swept = matched.points, matched.swept
        except anchors_mod.AnchorError as exc:
            scores.append(
                results.ScoreResult(codec, metric, None, None, anchors_mod.ANCHOR_VERSION, metrics.METRICS_VERSION, reason=str(exc))
            )
            continue
        with engine.transaction() as session:
            for p in swept:
                results.record_anchor_result(
                    session,
                    clip_sha256=clip.sha256,
                    codec=codec,
                    crf=p.crf,
                    settings=anchors_mod.encoder_settings(codec, p.crf),
                    n_bytes=p.n_bytes,
                    kbps=p.kbps,
                    bpp=p.bpp,
                    psnr_rgb=p.psnr_rgb,
                    psnr_y=p.psnr_y,
                    ssim_y=p.ssim_y,
                    ms_ssim=p.ms_ssim,
                    psnr_y420=p.psnr_y420,
                    psnr_u=p.psnr_u,
                    psnr_v=p.psnr_v,
                    psnr_yuv=p.psnr_yuv,
                    encode_seconds=p.encode_seconds,
                    decode_seconds=p.decode_seconds,
                    anchor_version=p.anchor_version,
                    metrics_version=p.metrics_version,
                )
        detail = bd_against([dataclasses.asdict(p) for p in points], rows, metric, min_overlap=min_overlap)
        reason = detail.get("error")
        if detail["warnings"]:
            reason = "; ".join(filter(None, [reason, *detail["warnings"]]))
        reliable = detail["reliable"] if detail["bd_rate_pct"] is not None else None
        scores.append(
            results.ScoreResult(
                anchor_codec=codec,
                metric=detail["metric"],
                bd_rate=detail["bd_rate_pct"] if reliable else None,
                bd_psnr=detail["bd_psnr_db"] if reliable else None,
                anchor_version=anchors_mod.ANCHOR_VERSION,
                metrics_version=metrics.METRICS_VERSION,
                overlap=detail["overlap"],
                reason=reason,
                reliable=reliable,
                min_overlap=min_overlap,
                raw_bd_rate=detail["bd_rate_pct"],
            )
        )
    return scores


def score_step(ctx: StepContext, experiment_id: int) -> None:
    settings = get_settings()
    with ctx.transaction() as session:
        experiment = experiments.get_experiment(session, experiment_id)
        if not enter(session, experiment, ctx, step="score", status=S.SCORING, node=ctx.node):
            return
        attempt = experiment.attempts
        n_points = len(experiment.rate_points)
        codecs = list(experiment.anchors)
        device = experiment.device or resolve_device(settings.device)
        clip = experiment_clip(experiment)
        metric = experiment.config.get("metric") or BD_METRIC
        min_overlap = float(experiment.config.get("min_overlap") or DEFAULT_MIN_OVERLAP)

    run_dir = attempt_dir(experiment_id, attempt)
    rows = []
    for index in range(n_points):
        sidecar = _sidecar(run_dir, index)
        if not sidecar.is_file():
            raise StepFailed(Stage.SCORE, f"no measurement of rate point {index} in {run_dir} on {ctx.node}")
        rows.append(json.loads(sidecar.read_text()))
    verify = json.loads(_verify_path(run_dir).read_text()) if _verify_path(run_dir).is_file() else {}
    verify_seconds = verify.get("point_seconds") or {}
    rows = _resolve_rows(rows)
    points = [_reread(row, clip, verify_seconds.get(str(row["index"]))) for row in rows]
    points = _finish_points(points, rows)
    # Bits from the file on disk, qualities as measured where the frames were decoded.
    curve_rows = [{**row, "kbps": p.kbps} for row, p in _one_per_bitstream(list(zip(rows, points)), lambda rp: rp[1].sha256)]
    with Heartbeat(experiment_id, S.SCORING, ctx.holder, on_lost=lambda: None) as heartbeat:
        scores = _anchor_scores(clip, codecs, curve_rows, device, metric=metric, min_overlap=min_overlap)
    if heartbeat.lost:
        return
    with ctx.transaction() as session:
        outcome = results.record_result(session, experiment_id, points, scores)
    log.info("experiment %s: %s", experiment_id, outcome.status.value)


# --- the tasks --------------------------------------------------------------


@app.task(bind=True, base=FleetTask, name=GENERATE, soft_time_limit=TIME_LIMITS[GENERATE][0], time_limit=TIME_LIMITS[GENERATE][1])
def generate(self: FleetTask, experiment_id: int) -> None:
    """Queue llm: build the prompt, call the generator, store the reply (supplied code only, for now)."""
    self.run_step(generate_step, experiment_id)


@app.task(bind=True, base=FleetTask, name=SANITIZE, soft_time_limit=TIME_LIMITS[SANITIZE][0], time_limit=TIME_LIMITS[SANITIZE][1])
def sanitize(self: FleetTask, experiment_id: int) -> None:
    """Queue cpu: extract, check and hash the code; reject it, reuse an earlier result, or send it on."""
    self.run_step(sanitize_step, experiment_id)


@app.task(
    bind=True, base=FleetTask, name=ENCODE_DECODE,
    soft_time_limit=TIME_LIMITS[ENCODE_DECODE][0], time_limit=TIME_LIMITS[ENCODE_DECODE][1],
)
def encode_decode(self: FleetTask, experiment_id: int) -> None:
    """Queue gpu: encode and decode every rate point in fresh sandboxes and measure the decoded frames."""
    self.run_step(encode_decode_step, experiment_id)


@app.task(bind=True, base=FleetTask, name=SCORE, soft_time_limit=TIME_LIMITS[SCORE][0], time_limit=TIME_LIMITS[SCORE][1])
def score(self: FleetTask, experiment_id: int) -> None:
    """The decoding worker's private queue: re-read, check hashes, add anchors and BD, store."""
    self.run_step(score_step, experiment_id)


__all__ = ["encode_decode", "generate", "sanitize", "score"]
