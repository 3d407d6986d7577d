"""The codecfleet command line: measure LLM-written video codecs honestly.

Errors a user can act on (a missing file, a corrupt video, an unknown anchor)
are one clear line on stderr and exit status 2; a candidate that fails its
evaluation prints its status, stage and reason and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from config import UserError, get_settings, resolve_device
from codecfleet.untrusted import clean, markup, text


class UsageError(UserError):
    """A problem with what the user asked for; printed as one line."""


def _add_clip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--clip",
        default="synthetic:mix",
        help="a video file PyAV can read, or synthetic:NAME[@WxH][,seed=S], see codecfleet clips "
        "(default: synthetic:mix, 352x288; a secret seed is drawn unless S is given)",
    )
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="number of frames (default: synthetic 8, a file all)")
    p.add_argument("--start-frame", type=int, default=0, metavar="K", help="first frame to use, files only (default: 0)")


def _load_clip(args: argparse.Namespace):
    from evaluation.video import load_clip, with_secret_seed

    frames = args.frames
    if frames is None and args.clip.startswith("synthetic:"):
        frames = 8
    if frames is not None and frames < 1:
        raise UsageError(f"--frames must be at least 1, got {frames}")
    # A synthetic clip without an explicit seed gets a fresh secret one: no candidate can regenerate it.
    return load_clip(with_secret_seed(args.clip)[0], frames=frames, start_frame=args.start_frame)


def _read_candidate(spec: str) -> tuple[str, str]:
    """``reference:NAME`` or a path -> (display name, source text), read as ``submit`` reads it."""
    from codecfleet.fleet import read_candidate

    return spec, read_candidate(spec if spec.startswith("reference:") else Path(spec))[1]


#: Frames per video held at once by ``codecfleet metrics`` (8 1080p frames: 50 MB per video).
METRICS_BATCH_FRAMES = 8


def _console():
    from rich.console import Console

    # No emoji codes: candidate text such as ":warning:" is shown as written.
    console = Console(emoji=False)
    if not console.is_terminal:
        # Piped or logged output keeps whole numbers rather than rich's 80-column ellipses.
        console = Console(width=200, emoji=False)
    return console


def _quiet_console():
    from rich.console import Console

    return Console(file=sys.stderr, force_terminal=False)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def bd_verdict(detail: dict) -> tuple[float | None, str | None]:
    """``(BD-rate, None)`` for a reliable figure, ``(None, reason)`` otherwise: never both.

    A figure over too little overlap of the quality ranges is no figure (its raw
    value is named in the reason); one whose computation reported an error is none.
    """
    value = detail.get("bd_rate_pct")
    overlap = detail.get("overlap")
    raw = detail.get("raw_bd_rate_pct", value)
    if detail.get("error"):
        return None, str(detail["error"])
    if value is None and raw is None:
        return None, "; ".join(detail.get("warnings") or []) or "no BD-rate computed"
    if not detail.get("reliable", True) or value is None:
        minimum = detail.get("min_overlap") or 0.75
        shown = "" if overlap is None else f"overlap {100 * overlap:.1f} % is below {100 * minimum:.0f} %"
        return None, f"unreliable: {shown or 'overlap unknown'} (raw figure {raw:+.2f} %, not used)"
    return float(value), None


def normalize_bd(result: dict) -> dict:
    """The result with each BD figure either a number (with its overlap) or None with
    ``error`` saying why: an unreliable or failed figure moves to ``raw_bd_rate_pct``."""
    for codec, detail in (result.get("bd") or {}).items():
        value, reason = bd_verdict(detail)
        detail.setdefault("raw_bd_rate_pct", detail.get("bd_rate_pct"))
        if value is None:
            detail["bd_rate_pct"] = None
            detail["bd_psnr_db"] = None
            detail["error"] = reason
        else:
            detail.pop("error", None)
        result.setdefault("bd_rate", {})[codec] = value
    return result


def _print_evaluation(result: dict, candidate: str) -> None:
    from rich.table import Table

    console = _console()
    clip = result["clip"]
    # Everything not made here is escaped: names, sources, reasons and notes are data, not markup.
    console.print(
        f"[bold]{markup(candidate, 300)}[/] on {markup(clip['source'], 300)} "
        f"({clip['width']}x{clip['height']}, {clip['frames']} frames @ {clip['fps']:g} fps, sha256 {clip['sha256'][:12]}), "
        f"isolation: {markup(result['isolation'], 200)}, device: {markup(result['device'], 100)}"
    )
    table = Table(title="candidate rate points")
    for col in ("quality", "bytes", "kbps", "bpp", "PSNR-RGB", "PSNR-Y", "PSNR-YUV", "SSIM-Y", "MS-SSIM", "enc fps", "dec fps"):
        table.add_column(col, justify="right")
    for rp in result["rate_points"]:
        table.add_row(
            f"{rp['quality']:.3f}",
            str(rp["bytes"]),
            f"{rp['kbps']:.1f}",
            f"{rp['bpp']:.4f}",
            f"{rp['psnr_rgb']:.3f}",
            f"{rp['psnr_y']:.3f}",
            _fmt(rp.get("psnr_yuv"), ".3f"),
            f"{rp['ssim_y']:.4f}",
            f"{rp['ms_ssim']:.4f}",
            _fmt(rp["encode_fps"], ".1f"),
            _fmt(rp["decode_fps"], ".1f"),
        )
    if result["rate_points"]:  # a candidate that failed before any point has no table, only its reason
        console.print(table)
    if result["anchors"] and result["rate_points"]:
        metric = result.get("metric") or result["bd"][next(iter(result["bd"]))]["metric"]
        anchors = Table(title=f"BD against classic anchors (curve: kbps vs {markup(metric, 50)}; anchor points matched to the candidate's range)")
        for col in ("anchor", "CRF: kbps / PSNR-Y / PSNR-YUV", "BD-rate %", "BD-PSNR dB", "overlap", "note"):
            anchors.add_column(col)
        for codec, points in result["anchors"].items():
            bd = result["bd"][codec]
            pts = ", ".join(
                f"{p['crf']}: {p['kbps']:.0f}/{p['psnr_y']:.2f}/{_fmt(p.get('psnr_yuv'), '.2f')}" for p in points
            )
            value, reason = bd_verdict(bd)
            note = reason or "; ".join(bd.get("warnings") or [])
            overlap = "-" if bd.get("overlap") is None else f"{100 * bd['overlap']:.1f} %"
            anchors.add_row(text(codec, 50), pts, _fmt(value, "+.2f"), _fmt(bd["bd_psnr_db"] if value is not None else None, "+.3f"),
                            overlap, text(note, 500))
        console.print(anchors)
    det = result.get("determinism")
    if det and det.get("mode") != "off" and det.get("identical"):
        first = det.get("first_decode_seconds")
        if first is None:  # a stored result keeps each point's decode time, not their sum
            first = sum(rp["decode_seconds"] for rp in result["rate_points"] if rp["index"] in det["points"])
        console.print(
            f"decoder determinism ({det['mode']}): rate point(s) {', '.join(map(str, det['points']))} decoded again "
            f"in a fresh sandbox, bit-identical; cost {det['seconds']:.2f} s (first decodes {first:.2f} s)"
        )
    if result["status"] != "succeeded":
        # The reason is the candidate's text (capped, controls shown, never markup), after the system's words.
        console.print(
            f"[bold red]status: {markup(result['status'], 50)}  stage: {markup(result['stage'], 50)}  reason:[/]",
            text(result["reason"]),
        )
    else:
        where = f"; bitstreams in {markup(result['run_dir'], 500)}" if result.get("run_dir") else ""
        reused = f" (the result of experiment {result['reused_from']}, reused)" if result.get("reused_from") else ""
        console.print(f"status: succeeded in {result['seconds']:.1f} s{where}{reused}")


def _evaluate_clip_set(args: argparse.Namespace, name: str, code: str, anchors: list[str], settings) -> int:
    """``evaluate`` on a clip set: each clip measured on its own (loaded one at a time),
    then the set's BD-rate per anchor = the mean of the per-clip BD-rates."""
    from codecfleet.api import evaluate_candidate
    from evaluation.pipeline import clip_set_summary, to_json
    from evaluation.video import expand_clip_set

    results = []
    console = _console() if not args.json else None
    for spec in expand_clip_set(args.clip):
        clip = _load_clip(argparse.Namespace(**{**vars(args), "clip": spec}))
        result = evaluate_candidate(
            code, clip, args.rate_points, anchors=anchors, runner=args.runner,
            device=resolve_device(args.device or settings.device), settings=settings,
            metric=args.metric, min_overlap=args.min_overlap, determinism=args.determinism,
        ).to_json()
        del clip
        normalize_bd(result)
        results.append(result)
        if console is not None:
            _print_evaluation(result, name)
    summary = {"clip_set": args.clip, **clip_set_summary(results), "results": results}
    if args.json:
        print(to_json(summary))
    else:
        from rich.table import Table

        table = Table(title=f"clip set {markup(args.clip, 300)}: {len(results)} clips, mean of the per-clip BD-rates "
                            f"({markup(summary['metric'] or args.metric, 50)})")
        for col in ("anchor", "mean BD-rate %", "per clip %", "smallest overlap"):
            table.add_column(col)
        for codec, detail in summary["bd"].items():
            table.add_row(
                text(codec, 50),
                _fmt(detail["bd_rate_pct"], "+.2f") if detail["bd_rate_pct"] is not None
                else f"none: no reliable figure on {len(detail['missing'])} clip(s)",
                " / ".join(_fmt(v, "+.2f") if v is not None else "-" for v in detail["per_clip"]),
                "-" if detail["min_overlap_seen"] is None else f"{100 * detail['min_overlap_seen']:.0f} %",
            )
        console.print(table)
    return 0 if summary["status"] == "succeeded" else 1


def _evaluate_as_experiment(args: argparse.Namespace, name: str, anchors: list[str], device: str) -> dict:
    """``evaluate`` in the sandbox: one experiment through the fleet's own orchestration
    (``fleet.submit(...).wait()``): embedded (SQLite, in-process tasks) without a broker,
    the fleet's workers with ``CODECFLEET_BROKER_URL``. Identical code measured before on
    the same clip and options is reused, identical output flagged. No probe: every rate
    point is measured and a failure says its own stage. A synthetic clip gets the
    database's secret seed (the same frames each time, so results can be reused)."""
    import time

    from codecfleet import fleet
    from codecfleet.progress import progress

    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    candidate = args.candidate if args.candidate.startswith("reference:") else Path(args.candidate)
    started = time.perf_counter()
    # Drawn only on a terminal (and never with --json, whose stdout is data).
    with progress(None, f"evaluating {Path(name).name}", console=_console() if not args.json else _quiet_console()):
        handle = fleet.submit(
            candidate, args.clip, rate_points=args.rate_points, anchors=anchors, frames=args.frames,
            start_frame=args.start_frame, device=device, metric=args.metric, min_overlap=args.min_overlap,
            determinism=args.determinism, probe=False,
        )
        handle.wait()
    result = handle.evaluation()
    bitstreams = {str(Path(p.bitstream).parent) for p in result.rate_points}
    return result.replace(run_dir=bitstreams.pop() if len(bitstreams) == 1 else None,
                          seconds=time.perf_counter() - started).to_json()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from codecfleet.api import evaluate_candidate

    settings = get_settings()
    name, code = _read_candidate(args.candidate)
    anchors = _anchor_list(args.anchors)
    _check_clip_specs([args.clip])
    from evaluation.video import is_clip_set

    if is_clip_set(args.clip):
        return _evaluate_clip_set(args, name, code, anchors, settings)
    device = resolve_device(args.device or settings.device)
    if args.runner == "sandbox":
        result = _evaluate_as_experiment(args, name, anchors, device)
    else:
        # Trusted code, no isolation: measured here directly, nothing stored.
        clip = _load_clip(args)
        from codecfleet.progress import progress

        console = _console() if not args.json else None
        with progress(args.rate_points + len(anchors), f"evaluating {Path(name).name}",
                      console=console or _quiet_console()) as advance:
            result = evaluate_candidate(
                code, clip, args.rate_points, anchors=anchors, runner=args.runner, device=device,
                settings=settings, on_step=lambda what: advance(description=what),
                metric=args.metric, min_overlap=args.min_overlap, determinism=args.determinism,
            ).to_json()
    normalize_bd(result)
    if args.json:
        from evaluation.pipeline import to_json

        print(to_json(result))
    else:
        _print_evaluation(result, name)
    return 0 if result["status"] == "succeeded" else 1


def cmd_metrics(args: argparse.Namespace) -> int:
    """Streams both videos in small batches: memory does not grow with the clip's length."""
    from evaluation import metrics
    from evaluation.video import STREAM_HASH_VERSION, VideoStream

    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    device = resolve_device(args.device or get_settings().device)
    ref = VideoStream(args.reference, max_frames=args.frames)
    dist = VideoStream(args.distorted, max_frames=args.frames)
    parts = []
    ref_batches, dist_batches = ref.batches(METRICS_BATCH_FRAMES), dist.batches(METRICS_BATCH_FRAMES)
    while True:
        a, b = next(ref_batches, None), next(dist_batches, None)
        if a is None and b is None:
            break
        if a is not None and b is not None and a.shape[1:] != b.shape[1:]:
            raise UsageError(
                f"frame sizes differ: {args.reference} is {a.shape[2]}x{a.shape[1]}, "
                f"{args.distorted} is {b.shape[2]}x{b.shape[1]}"
            )
        if a is None or b is None or a.shape[0] != b.shape[0]:
            for rest in (ref_batches, dist_batches):
                for _ in rest:  # count what is left, for the message
                    pass
            raise UsageError(
                f"frame counts differ: {args.reference} has {ref.n_frames}, {args.distorted} has {dist.n_frames} "
                "(use --frames N to compare the first N)"
            )
        parts.append(metrics.score_frames(a, b, device=device))
    scores = metrics.concat_scores(parts)
    summary = metrics.summarize(scores)
    n = scores.n_frames
    per_frame = [
        {
            "index": i,
            "psnr_rgb": float(scores.psnr_rgb[i]),
            "psnr_y": float(scores.psnr_y[i]),
            "psnr_yuv": None if not scores.has_yuv else float(scores.psnr_yuv[i]),
            "ssim_y": float(scores.ssim_y[i]),
            "ms_ssim": float(scores.ms_ssim[i]),
        }
        for i in range(n)
    ]
    out = {
        "reference": {"path": args.reference, "sha256": ref.sha256, "hash": STREAM_HASH_VERSION},
        "distorted": {"path": args.distorted, "sha256": dist.sha256, "hash": STREAM_HASH_VERSION},
        "width": ref.width,
        "height": ref.height,
        "frames": n,
        "metrics_version": metrics.METRICS_VERSION,
        **summary,
        "per_frame": per_frame,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"{markup(args.distorted, 300)} vs {markup(args.reference, 300)} ({ref.width}x{ref.height}, {n} frames)")
    for col in ("frame", "PSNR-RGB", "PSNR-Y", "PSNR-YUV", "SSIM-Y", "MS-SSIM"):
        table.add_column(col, justify="right")
    for row in per_frame:
        table.add_row(str(row["index"]), f"{row['psnr_rgb']:.3f}", f"{row['psnr_y']:.3f}", _fmt(row["psnr_yuv"], ".3f"),
                      f"{row['ssim_y']:.4f}", f"{row['ms_ssim']:.4f}")
    table.add_row(
        "mean",
        f"{summary['psnr_rgb']:.3f}",
        f"{summary['psnr_y']:.3f}",
        _fmt(summary["psnr_yuv"], ".3f"),
        f"{summary['ssim_y']:.4f}",
        f"{summary['ms_ssim']:.4f}",
        style="bold",
    )
    _console().print(table)
    return 0


def cmd_sanitize(args: argparse.Namespace) -> int:
    from sandbox.sanitize import sanitize

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"file not found: {path}")
    result = sanitize(path.read_text(encoding="utf-8", errors="replace"))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        verdict = "accepted" if result.ok else "rejected"
        print(f"verdict: {verdict}")
        # The reason and the code quote the candidate: control characters are shown, never sent.
        if result.reason:
            print(f"reason: {clean(result.reason, one_line=True)}")
        if result.ast_hash:
            print(f"ast_hash: {result.ast_hash}")
        for note in result.removed:
            print(f"removed: {clean(note, 500, one_line=True)}")
        if result.code is not None:
            code = clean(result.code, None)
            print("--- cleaned code ---")
            print(code, end="" if code.endswith("\n") else "\n")
    return 0 if result.ok else 1


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from db import lean
    from db.vocabulary import SCHEMA_REVISION

    url = args.url or get_settings().database_url
    at = lean.stored_revision(url)  # the embedded SQLite file at head: known without SQLAlchemy
    if at is None:
        from db.session import make_engine, stored_revision

        engine = make_engine(url)
        try:
            at = stored_revision(engine)
        finally:
            engine.dispose()
    if not (args.revision == "head" and at == SCHEMA_REVISION):  # at head already: nothing for Alembic to do
        from db.migrate import current_revision, upgrade

        upgrade(url, args.revision)
        at = current_revision(url)
    print(f"database at {_redact(url)} is at revision {at}")
    return 0


def _job_args(args: argparse.Namespace) -> dict:
    anchors = _anchor_list(args.anchors)
    _check_clip_specs([args.clip])
    frames = args.frames
    if frames is not None and frames < 1:
        raise UsageError(f"--frames must be at least 1, got {frames}")
    if args.rate_points < 1:
        raise UsageError(f"--rate-points must be at least 1, got {args.rate_points}")
    return {
        "clip": args.clip,
        "frames": frames,
        "start_frame": args.start_frame,
        "rate_points": args.rate_points,
        "anchors": anchors,
        "campaign": args.campaign,
        "device": args.device,
    }


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _waiting(step: str | None, seconds: float | None, where) -> str:
    """``encode_decode in gpu, #3 of 12, 4m10s``: what an experiment nobody holds waits for."""
    if step is None:
        return ""
    out = step
    if where is not None:
        out += " (taken, starting)" if where.position is None else f" in {where.queue}, #{where.position} of {where.length}"
    if seconds is not None:
        out += f", {_duration(seconds)}"
    return out


def _status_line(status, where=None) -> str:
    line = f"experiment {status.id}: {status.status}"
    if getattr(status, "waiting_for", None):
        line += f", waiting for {_waiting(status.waiting_for, status.waiting_seconds, where)}"
    if status.stage or status.reason:
        # One line: a reason cannot forge a line of its own, nor send control sequences.
        line += f" (stage {clean(status.stage, 50, one_line=True)}: {clean(status.reason, 500, one_line=True)})"
    return line


def cmd_submit(args: argparse.Namespace) -> int:
    from codecfleet import fleet
    from evaluation.pipeline import to_json

    candidate = args.candidate
    if not candidate.startswith("reference:") and not Path(candidate).is_file():
        raise UsageError(f"candidate file not found: {candidate}")
    handle = fleet.submit(candidate, **_job_args(args))
    if args.wait is not None:
        result = handle.wait(timeout=args.wait or None)
    else:
        status = handle.status()
        result = handle.result() if status.finished else None
    if result is not None:
        normalize_bd(result)
    if args.json:
        print(to_json(result) if result is not None else json.dumps({"id": handle.id, "status": handle.status().status}))
    elif result is not None:
        print(_status_line(handle.status()))
    else:
        print(f"experiment {handle.id}: queued (codecfleet status {handle.id})")
    if result is None:
        return 0
    return 0 if result["status"] == "succeeded" else 1


def cmd_status(args: argparse.Namespace) -> int:
    if args.experiment is not None:
        return _status_one(args)
    return _status_list(args)


def _status_one(args: argparse.Namespace) -> int:
    """One experiment: its status line (where it waits), its points and BD figures."""
    from codecfleet import fleet
    from db.models import ExperimentStatus

    handle = fleet.get(args.experiment)
    status = handle.status()
    if args.json:
        from evaluation.pipeline import to_json

        print(to_json(normalize_bd(handle.result())))
        return 0
    where = None
    if status.waiting_for:
        where = fleet.queue_positions([(status.id, status.attempts, status.waiting_for, status.worker)]).get(
            status.id
        )
    print(_status_line(status, where))
    if status.status == ExperimentStatus.SUCCEEDED:
        result = handle.result()
        for rp in result["rate_points"]:
            print(
                f"  rate point {rp['index']}: q={rp['quality']:.3f} {rp['bytes']} bytes "
                f"{rp['kbps']:.1f} kbps PSNR-Y {rp['psnr_y']:.3f} dB SSIM-Y {rp['ssim_y']:.4f}"
            )
        for codec, detail in result["bd"].items():
            value, reason = bd_verdict(detail)
            if value is None:
                print(f"  BD-rate vs {codec}: not given: {clean(reason, 300, one_line=True)}")
            else:
                print(f"  BD-rate vs {codec}: {value:+.2f} % (overlap {100 * (detail.get('overlap') or 0):.0f} %)")
    return 0


def _status_snapshot(limit: int) -> tuple[list, list, list, int, dict]:
    """(recent experiments, waiting ones, internal errors, their count, queue positions)
    as the rows status lists. The embedded default's SQLite database at this schema is
    read through :mod:`db.lean` (no SQLAlchemy to import: most of the answer time);
    anything else through the repository modules, which create or migrate it first."""
    settings = get_settings()
    if not settings.broker_url:  # embedded: no broker holds messages to locate
        from db import lean

        if lean.never_created(settings.database_url):
            return [], [], [], 0, {}
        conn = lean.open_embedded(settings.database_url)
        if conn is not None:
            try:
                return (lean.recent_experiments(conn, limit), lean.waiting_experiments(conn, 10_000),
                        lean.internal_errors(conn, limit), lean.internal_error_count(conn), {})
            finally:
                conn.close()
    from codecfleet import fleet
    from db import engine, experiments

    fleet._ensure_database()
    with engine.transaction() as session:
        recent = experiments.recent_experiments(session, limit)
        waiting = experiments.waiting_experiments(session, limit=10_000)
        bugs = experiments.internal_errors(session, limit=limit)
        n_bugs = experiments.internal_error_count(session)
        session.expunge_all()
    where = fleet.queue_positions((e.id, e.attempts, e.waiting_for, e.worker_host) for e in recent if e.waiting_for)
    return recent, waiting, bugs, n_bugs, where


def _status_list(args: argparse.Namespace) -> int:
    """The recent experiments, what waits in which queue, and the internal errors."""
    from datetime import UTC, datetime

    recent, waiting_rows, internal, n_bugs, where = _status_snapshot(args.limit)
    now = datetime.now(UTC)
    rows = [
        {
            "id": e.id, "status": str(e.status), "stage": e.failure_stage, "reason": e.error,
            "attempts": e.attempts, "worker": e.worker_host, "queued_at": e.queued_at.isoformat(timespec="seconds"),
            "waiting_for": e.waiting_for,
            "waiting_seconds": (now - e.waiting_since).total_seconds() if e.waiting_since else None,
        }
        for e in recent
    ]
    bugs = [
        {"experiment": b.experiment_id, "count": b.count, "stage": b.last_stage, "error": b.last_error,
         "at": b.last_at.isoformat(timespec="seconds"), "status": str(b.status) if b.status else None}
        for b in internal
    ]
    for r in rows:
        w = where.get(r["id"])
        r["queue"] = w.queue if w else None
        r["queue_position"] = w.position if w else None
    # Per queue: how many wait, and the longest wait (read from the database, not the broker).
    queues: dict[str, dict] = {}
    for w in waiting_rows:
        key = w.waiting_for
        entry = queues.setdefault(key, {"step": key, "waiting": 0, "longest_seconds": 0.0})
        entry["waiting"] += 1
        entry["longest_seconds"] = max(entry["longest_seconds"], (now - w.waiting_since).total_seconds())
    if args.json:
        print(json.dumps({"experiments": rows, "waiting": list(queues.values()),
                          "internal_errors": {"total": n_bugs, "experiments": bugs}}, indent=2))
        return 0
    _print_status_list(rows, queues, bugs, n_bugs, where)
    return 0


def _print_status_list(rows: list[dict], queues: dict, bugs: list[dict], n_bugs: int, where: dict) -> None:
    from rich.table import Table

    console = _console()
    if queues:
        summary = ", ".join(
            f"{q_['waiting']} for {q_['step']} (longest {_duration(q_['longest_seconds'])})" for q_ in queues.values()
        )
        console.print(f"waiting in queues (no lease runs while waiting): {summary}")
    if not rows:
        console.print("no experiments yet: codecfleet evaluate, submit or run make some")
        return
    table = Table(title="recent experiments")
    # "runs": the stored attempts counts re-queues, so the first run is attempt 0; shown as runs (1 = first try).
    for col in ("id", "status", "waiting for", "stage", "runs", "worker", "queued at", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["id"]), r["status"], text(_waiting(r["waiting_for"], r["waiting_seconds"], where.get(r["id"])), 80),
            text(r["stage"] or "", 50), str(r["attempts"] + 1), text(r["worker"] or "", 100),
            r["queued_at"], text(r["reason"] or "", 80, one_line=True),
        )
    console.print(table)
    if bugs:
        bug_table = Table(title=f"internal errors (bugs of codecfleet): {n_bugs} in all; each re-queued its experiment")
        for col in ("experiment", "count", "stage", "last error", "at", "now"):
            bug_table.add_column(col)
        for b in bugs:
            bug_table.add_row(str(b["experiment"]), str(b["count"]), b["stage"], text(b["error"], 120, one_line=True),
                              b["at"], b["status"] or "")
        console.print(bug_table)


def cmd_cancel(args: argparse.Namespace) -> int:
    from codecfleet import fleet

    if (args.experiment is None) == (args.campaign is None):
        raise UsageError("give an experiment id or --campaign NAME")
    cancelled = fleet.cancel(args.experiment, campaign=args.campaign)
    if args.experiment is not None and not cancelled:
        status = fleet.get(args.experiment).status()
        print(f"experiment {args.experiment} already ended: {status.status}", file=sys.stderr)
        return 1
    print(f"cancelled {len(cancelled)} experiment(s): {' '.join(map(str, cancelled)) or '-'}")
    return 0


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The celery command line ``codecfleet worker`` runs (task events on, prefork)."""
    queues = [x.strip() for x in args.queues.split(",") if x.strip()]
    from tasks.app import QUEUES

    unknown = [x for x in queues if x not in QUEUES]
    if unknown or not queues:
        raise UsageError(f"unknown queue {unknown[0] if unknown else '(none)'!r}; expected some of {', '.join(QUEUES)}")
    name = args.name or f"{'-'.join(queues)}@%h"
    argv = [
        sys.executable, "-m", "celery", "-A", "tasks.app", "worker",
        "--queues", ",".join(queues), "--hostname", name, "--pool", "prefork",
        "--concurrency", str(args.concurrency), "--max-tasks-per-child", str(args.max_tasks_per_child),
        "--task-events", "--loglevel", args.loglevel, "--without-gossip", "--without-mingle",
    ]
    if args.beat:
        data_dir = get_settings().data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", "--schedule", str(data_dir / "celerybeat-schedule")]
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    import os

    if not get_settings().broker_url:
        raise UsageError("CODECFLEET_BROKER_URL is not set: a worker needs the Redis broker")
    argv = worker_argv(args)
    if args.print:
        print(" ".join(argv))
        return 0
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # pragma: no cover - exec does not return


def _redact(url: str) -> str:
    if "@" not in url:  # no user info, so no password to hide (and no SQLAlchemy to import)
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_run(args: argparse.Namespace) -> int:
    """A campaign: progress while it runs, a per-generation table and a leaderboard at the end."""
    from codecfleet.campaigns import CampaignError, campaign
    from codecfleet.progress import progress
    from evaluation.clip import public_source

    console = _console()
    # Every argument is checked before the banner: an error is the only thing printed.
    options = _campaign_options(args)
    clips, seeds, name, anchor = options["clips"], options["seeds"], options["name"], options["anchor"]
    console.print(
        f"campaign [bold]{markup(name, 200)}[/]: {args.generations} generations of {args.population} on "
        f"{markup(', '.join(public_source(c) for c in clips), 500)} ({args.frames} frames), seeds "
        f"{markup(', '.join(seeds), 200)}, fitness = BD-rate vs {markup(anchor, 50)} ({args.metric})"
    )
    total = len(seeds) + args.population * args.generations
    with progress(total, "candidates") as advance:

        def on_event(kind: str, data: dict) -> None:
            if kind == "candidate":
                advance(description=f"generation {data['generation']}, candidate {data['slot'] + 1}/{args.population}")
            elif kind == "generation":
                g = data["summary"]
                if g.generation == 0:
                    advance(len(seeds))
                best = "-" if g.best_so_far is None else f"{g.best_so_far:+.2f} %"
                here = "-" if g.best_bd_rate is None else f"{g.best_bd_rate:+.2f} %"
                counts = ", ".join(f"{k} {v}" for k, v in sorted(g.statuses.items()))
                console.print(f"generation {g.generation}: best here {here}, best so far {best} ({markup(counts, 300)})")

        try:
            report = campaign(generator=args.generator, on_event=on_event, **options)
        except CampaignError as exc:
            raise UsageError(str(exc)) from exc
    _print_campaign(console, report)
    return 0


def _campaign_options(args: argparse.Namespace) -> dict:
    """``campaign()``'s arguments from the command line, every one checked."""
    from codecfleet.campaigns import Budget
    from evaluation.reference import REFERENCE_CANDIDATES

    clips = [c.strip() for c in args.clip.split(",") if c.strip()]
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    _check_clip_specs(clips)
    held_out = [c.strip() for c in (args.held_out or "").split(",") if c.strip()]
    _check_clip_specs(held_out)
    anchor = _anchor_list(args.anchors)
    if len(anchor) != 1:
        raise UsageError(f"--anchors takes one anchor for the fitness of a campaign, got {args.anchors!r}")
    unknown = [s for s in seeds if s not in REFERENCE_CANDIDATES]
    if unknown or not seeds:
        raise UsageError(f"unknown seed {unknown[0] if unknown else '(none)'!r}; known: {', '.join(REFERENCE_CANDIDATES)}")
    for label, value, least in (("--frames", args.frames, 1), ("--population", args.population, 1),
                                ("--generations", args.generations, 0), ("--rate-points", args.rate_points, 4)):
        if value < least:
            raise UsageError(f"{label} must be at least {least}, got {value}")
    return {
        "clips": clips, "population": args.population, "generations": args.generations,
        "budget": Budget(candidates=args.budget_candidates, gpu_seconds=args.budget_gpu_seconds,
                         tokens=args.budget_tokens, money_usd=args.budget_usd),
        "name": args.name or f"run-seed{args.seed}-p{args.population}", "seed": args.seed, "seeds": seeds,
        "frames": args.frames, "rate_points": args.rate_points, "anchor": anchor[0], "clip_seed": args.clip_seed,
        "held_out": held_out, "metric": args.metric, "prompt_budget": args.prompt_budget,
    }


def _print_campaign(console, report) -> None:
    """Per generation, the leaderboard, what was spent and wasted, and the probe's figures."""
    from rich.table import Table

    table = Table(title=f"best BD-rate vs {markup(report.anchor, 50)} by generation (campaign {markup(report.name, 200)})")
    for col in ("generation", "candidates", "best in generation", "best so far", "statuses"):
        table.add_column(col, justify="right")
    for g in report.generations:
        table.add_row(
            str(g.generation),
            str(g.candidates),
            _fmt(g.best_bd_rate, "+.2f"),
            _fmt(g.best_so_far, "+.2f"),
            text(", ".join(f"{k} {v}" for k, v in sorted(g.statuses.items())), 300),
        )
    console.print(table)
    held = bool(report.held_out)
    board = Table(title=f"leaderboard (BD-rate: mean over the training clips{'; held-out: the clips fitness never saw' if held else ''})")
    cols = ["rank", "candidate", "family", "generator", "parents", f"BD-rate vs {report.anchor} %"]
    cols += [f"held-out BD-rate vs {report.anchor} %"] if held else []
    for col in (*cols, "kbps", "PSNR-Y dB"):
        board.add_column(text(col, 100))
    for rank, row in enumerate(report.leaderboard, 1):
        extra = [_fmt(row.get("held_out_bd_rate"), "+.2f") if row.get("held_out_bd_rate") is not None
                 else "not given: no reliable figure on every held-out clip"] if held else []
        board.add_row(
            str(rank),
            str(row["candidate_id"]),
            text(row["family"] or "-", 100),
            text(row["generator"] or "-", 200),
            ",".join(map(str, row["parents"])) or "-",
            f"{row['bd_rate']:+.2f}",
            *extra,
            " / ".join(f"{k:.0f}" for k in row["kbps"]),
            " / ".join(f"{p:.2f}" for p in row["psnr_y"]),
        )
    if report.leaderboard:
        console.print(board)
    else:
        console.print("leaderboard: no candidate has a reliable BD-rate yet")
    if report.stopped_by:
        console.print("stopped early:", text(report.stopped_by, 500))
    console.print(f"spent: {', '.join(f'{k} {v:g}' for k, v in report.spent.items())}")
    c = report.counts
    if c:
        pts = c["points"]
        console.print(
            f"wasted: {c['wasted']} of {c['experiments']} experiments (duplicate_output {c['duplicate_output']}, "
            f"identical rate points {c['identical_points']}); rate points measured {pts['measured']}, "
            f"reused {pts['reused']}, same bytes as another point {pts['same_as']}"
        )
        stops = ", ".join(f"{k} {v}" for k, v in sorted(c["probe_outcomes"].items()) if k != "passed") or "none"
        console.print(
            f"probe: {c['probed']} probed, {c['probe_stopped']} stopped ({stops}); GPU-seconds spent "
            f"{c['probe_gpu_seconds']:.2f}, saved (estimated) {c['probe_saved_gpu_seconds']:.2f}"
        )
    console.print("see it all with: codecfleet report --campaign", text(report.name, 200))




EXAMPLES = """\
examples:
  codecfleet run                                     the main job: a 5-generation campaign on a synthetic clip
  codecfleet report --campaign run-seed0-p6          HTML report of that campaign (./codecfleet-report/index.html)
  codecfleet evaluate my_codec.py                    measure one candidate (4 rate points, BD-rate vs x264)
  codecfleet evaluate reference:inter_mc --clip synthetic:pan@176x144 --frames 4
  codecfleet clips                                   the synthetic clips and the clip spec syntax
  codecfleet submit my_codec.py --wait               the same through the fleet (in-process without a broker)
  codecfleet status                                  recent experiments; codecfleet status ID for one
  codecfleet metrics ref.mp4 dist.mp4                PSNR / SSIM / MS-SSIM of two videos

The candidate contract (what my_codec.py defines) is in README.md, "Write a candidate".
"""

#: Clip-spec help shared by every command that takes --clip.
CLIP_SPEC_HELP = "a video file PyAV can read, or synthetic:NAME[@WxH][,seed=S] (see: codecfleet clips)"

#: One line per synthetic clip (evaluation.video's module docstring has the details).
SYNTHETIC_DESCRIPTIONS = {
    "mix": "camera pan over a textured background, textured moving objects, light noise, a scene cut at frame N//2",
    "objects": "static textured background, textured objects moving and occluding",
    "pan": "camera pan (sub-pixel, both axes) over a textured background",
    "noise": "pan and objects under heavy sensor noise (sigma 8 levels)",
    "cut": "pan and objects with scene cuts at N//3 and 2N//3",
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout; wider help column so defaults stay on the option's line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


def _check_clip_specs(specs: list[str]) -> None:
    """Refuse a clip spec before anything runs, naming it as the user typed it."""
    import re

    from evaluation.synthetic import SYNTHETIC_NAMES
    from evaluation.clip import VideoError
    from evaluation.video import expand_clip_set, is_clip_set

    for spec in specs:
        if spec.startswith("synthetic:"):
            m = re.fullmatch(r"synthetic:([A-Za-z0-9_]+)(?:@(\d+)x(\d+))?(?:,seed=\d+)?", spec)
            if m is None:
                raise UsageError(f"malformed clip spec {spec!r}; expected synthetic:NAME[@WxH][,seed=S] (codecfleet clips)")
            if m.group(1) not in SYNTHETIC_NAMES:
                raise UsageError(f"unknown synthetic clip {m.group(1)!r} in {spec!r}; known: {', '.join(SYNTHETIC_NAMES)}")
            for value in (m.group(2), m.group(3)):
                if value is not None and (int(value) < 16 or int(value) % 2):
                    raise UsageError(f"clip size in {spec!r} must be even and at least 16x16")
        elif is_clip_set(spec):  # a directory of videos or @LIST_FILE: check each clip of it
            try:
                _check_clip_specs(expand_clip_set(spec))
            except VideoError as exc:
                raise UsageError(str(exc)) from exc
        elif not Path(spec).is_file():
            raise UsageError(f"clip file not found: {spec}")


def _anchor_list(value: str) -> list[str]:
    from evaluation.anchors import ANCHOR_CODECS

    anchors = [a.strip() for a in (value or "").split(",") if a.strip()]
    unknown = [a for a in anchors if a not in ANCHOR_CODECS]
    if unknown:
        raise UsageError(f"unknown anchor {unknown[0]!r}; known: {', '.join(ANCHOR_CODECS)}")
    return anchors


def cmd_clips(args: argparse.Namespace) -> int:
    """The synthetic clips and the clip spec syntax."""
    from rich.table import Table

    from evaluation.synthetic import SYNTHETIC_NAMES

    console = _console()
    table = Table(title="synthetic clips (generated in code; no input file needed)")
    table.add_column("spec")
    table.add_column("content")
    for name in SYNTHETIC_NAMES:
        table.add_row(f"synthetic:{name}", SYNTHETIC_DESCRIPTIONS.get(name, "-"))
    console.print(table)
    console.print(
        "options: synthetic:NAME[@WxH][,seed=S]\n"
        "  @WxH     frame size, even, at least 16x16 (default 352x288; codecfleet run uses synthetic:mix@176x144)\n"
        "  ,seed=S  the generator's seed; without it a secret seed is drawn, so no candidate can regenerate the clip\n"
        "  frames   --frames N (default: evaluate/submit 8, run 4); 30 fps\n"
        "a file: any video PyAV can decode (--frames N: the first N, --start-frame K: from frame K); frames are never rescaled",
        markup=False,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codecfleet",
        description=__import__("textwrap").fill(
            "Measure LLM-written video codecs honestly: encode a clip with a candidate at several rate points, "
            "decode the bytes read back from disk in a separate sandbox, score against the source and classic "
            "anchors.", 100),
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, **kw) -> argparse.ArgumentParser:
        import textwrap

        description = textwrap.fill(kw.pop("description", help[:1].upper() + help[1:] + "."), 100)
        return sub.add_parser(name, help=help, description=description, formatter_class=_Formatter, **kw)

    _add_run_parser(add)
    from codecfleet.report.cli import add_report_parser

    add_report_parser(sub)
    _add_experiment_parsers(add)
    _add_tool_parsers(add)
    _add_fleet_parsers(add)
    return parser


def _add_run_parser(add) -> None:
    """``run``: a campaign."""
    ru = add("run", "run (or resume) a campaign: generate candidates, measure them, feed the results back, repeat",
             description="Run (or resume, by --name) a campaign: generation 0 measures the seed codecs, then each "
             "generation writes --population candidates from the best so far and measures them. Fitness is the "
             "BD-rate against the anchor on PSNR-Y. The Python API codecfleet.campaign() has the same defaults "
             "except frames (3 there, 4 here).",
             epilog="example: codecfleet run --generations 2 --population 4 --name quick")
    ru.add_argument("--clip", default="synthetic:mix@176x144",
                    help=f"clip spec(s), comma-separated; {CLIP_SPEC_HELP}; or a clip set: a directory of videos or "
                         "@LIST_FILE (one spec per line, # comments), fitness the mean of per-clip BD-rates "
                         "(default: synthetic:mix@176x144)")
    ru.add_argument("--held-out", default=None, metavar="CLIPS",
                    help="held-out clip spec(s) or set, comma-separated: never in fitness or prompts, measured for "
                         "the final leaderboard (default: none)")
    ru.add_argument("--metric", default="psnr_y", choices=("psnr_y", "psnr_yuv", "ssim_y", "ms_ssim"),
                    help="quality axis of every BD figure and of fitness (default: psnr_y)")
    ru.add_argument("--frames", type=int, default=4, metavar="N", help="frames of each clip (default: 4)")
    ru.add_argument("--population", type=int, default=6, metavar="N", help="candidates per generation (default: 6)")
    ru.add_argument("--generations", type=int, default=5, metavar="N", help="generations after the seeds' generation 0 (default: 5)")
    ru.add_argument("--seed", type=int, default=0, metavar="S", help="seed of parent selection and the offline generator (default: 0)")
    ru.add_argument("--clip-seed", type=int, default=None,
                    metavar="S", help="seed of the synthetic clips (default: a secret one drawn when the campaign starts, "
                         "stored with it and reused on resume)")
    ru.add_argument("--seeds", default="intra_dct,inter_mc",
                    metavar="NAMES", help="reference codecs measured as generation 0, comma-separated (default: intra_dct,inter_mc)")
    ru.add_argument("--name", default=None,
                    help="campaign name; rerun with the same name to resume (default: run-seed{SEED}-p{POPULATION})")
    ru.add_argument("--generator", default=None,
                    help="offline, replay:CAMPAIGN, or manual:DIR (each prompt written to DIR as request-NAME-NNNN.md, "
                         "the reply read from answer-NAME-NNNN.md there) (default: the LLM of CODECFLEET_LLM_*, "
                         "several with CODECFLEET_LLM_MODELS, offline when unset)")
    ru.add_argument("--rate-points", type=int, default=4, metavar="K", help="qualities per candidate, at least 4 (default: 4)")
    ru.add_argument("--anchors", default="x264", metavar="ANCHOR",
                    help="the anchor fitness is measured against: x264, x265 or svtav1 (default: x264)")
    ru.add_argument("--anchor", dest="anchors", help=argparse.SUPPRESS)  # the old spelling
    ru.add_argument("--budget-candidates", type=int, default=None,
                    metavar="N", help="stop after this many generated candidates (default: no limit)")
    ru.add_argument("--budget-gpu-seconds", type=float, default=None,
                    metavar="S", help="stop after this much encode + decode time (default: no limit)")
    ru.add_argument("--budget-tokens", type=int, default=None, metavar="T", help="stop after this many LLM tokens (default: no limit)")
    ru.add_argument("--budget-usd", type=float, default=None, metavar="X", help="stop after this much LLM cost in USD (default: no limit)")
    ru.add_argument("--prompt-budget", type=int, default=None, metavar="CHARS",
                    help="the largest prompt sent to the model, in characters (default: CODECFLEET_LLM_PROMPT_BUDGET "
                         "or 160000); a parent that does not fit whole is asked for as SEARCH/REPLACE edits")
    ru.set_defaults(func=cmd_run)


def _add_experiment_parsers(add) -> None:
    """``evaluate``, ``submit``, ``status``, ``cancel``: one experiment."""
    ev = add("evaluate", "measure one candidate codec on a clip, here, now",
             epilog="example: codecfleet evaluate my_codec.py --clip synthetic:mix@176x144 --frames 4")
    ev.add_argument("candidate", help="candidate .py file, or reference:NAME (intra_dct, inter_mc, torch_dct, overfit_nn)")
    _add_clip_args(ev)
    ev.add_argument("--rate-points", type=int, default=4, help="number of qualities, spread over 0.1..0.9 (default: 4)")
    ev.add_argument("--anchors", default="x264", help="comma-separated classic anchors: x264,x265,svtav1; '' for none (default: x264)")
    ev.add_argument("--anchor", dest="anchors", help=argparse.SUPPRESS)
    ev.add_argument("--device", default=None, help="cpu, cuda or auto (default: CODECFLEET_DEVICE, else auto)")
    ev.add_argument("--metric", default="psnr_y", choices=("psnr_y", "psnr_yuv", "ssim_y", "ms_ssim"),
                    help="quality axis of the BD figures (default: psnr_y)")
    ev.add_argument("--min-overlap", type=float, default=0.75,
                    help="below this overlap of the quality ranges a BD figure is not given (default: 0.75)")
    ev.add_argument("--determinism", default="one", choices=("every", "one", "off"),
                    help="decode every / one sampled rate point a second time in a fresh sandbox (default: one)")
    ev.add_argument("--runner", default="sandbox", choices=("sandbox", "in-process"),
                    help="sandbox: run as an experiment (embedded, or the fleet with CODECFLEET_BROKER_URL; stored, "
                         "earlier results of the same code reused), or in-process: no isolation, for trusted code "
                         "only, measured here directly and not stored (default: sandbox)")
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ev.set_defaults(func=cmd_evaluate)

    su = add("submit", "submit an experiment (fleet: enqueue and return; no broker: run here)")
    su.add_argument("candidate", help="candidate .py file, or reference:NAME")
    _add_clip_args(su)
    su.add_argument("--rate-points", type=int, default=4, help="number of qualities (default: 4)")
    su.add_argument("--anchors", default="",
                    help="comma-separated classic anchors: x264,x265,svtav1 (default: none, unlike evaluate: "
                         "a fleet measures anchors only when asked)")
    su.add_argument("--anchor", dest="anchors", help=argparse.SUPPRESS)
    su.add_argument("--campaign", default=None, help="campaign name, created if new (default: none)")
    su.add_argument("--device", default=None, help="cpu, cuda or auto (default: CODECFLEET_DEVICE, else auto)")
    su.add_argument("--wait", type=float, nargs="?", const=0.0, default=None, metavar="SECONDS",
                    help="wait until it ends, at most SECONDS if given (default: return at once with a fleet)")
    su.add_argument("--json", action="store_true", help="print the result (or the id) as JSON")
    su.set_defaults(func=cmd_submit)

    st = add("status", "one experiment's status and result, or the recent experiments")
    st.add_argument("experiment", type=int, nargs="?", default=None, help="experiment id (default: list the recent ones)")
    st.add_argument("--limit", type=int, default=20, help="how many recent experiments to list (default: 20)")
    st.add_argument("--json", action="store_true", help="print JSON instead of tables")
    st.set_defaults(func=cmd_status)

    ca = add("cancel", "cancel an experiment, or every unfinished one of a campaign")
    ca.add_argument("experiment", type=int, nargs="?", default=None, help="experiment id (or give --campaign)")
    ca.add_argument("--campaign", default=None, help="cancel every unfinished experiment of this campaign (default: none)")
    ca.set_defaults(func=cmd_cancel)


def _add_tool_parsers(add) -> None:
    """``clips``, ``metrics``, ``sanitize``: tools that need no database."""
    cl = add("clips", "list the synthetic clips and the clip spec syntax")
    cl.set_defaults(func=cmd_clips)

    me = add("metrics", "PSNR, SSIM and MS-SSIM of a distorted video against a reference")
    me.add_argument("reference", help="the reference video file")
    me.add_argument("distorted", help="the distorted video file, same size and frame count")
    me.add_argument("--frames", type=int, default=None, help="compare the first N frames (default: all)")
    me.add_argument("--device", default=None, help="cpu, cuda or auto (default: CODECFLEET_DEVICE, else auto)")
    me.add_argument("--json", action="store_true", help="print JSON instead of a table")
    me.set_defaults(func=cmd_metrics)

    sa = add("sanitize", "run the sanitizer on a candidate file or an LLM reply")
    sa.add_argument("file", help="a .py file or the text of an LLM reply (fenced code is extracted)")
    sa.add_argument("--json", action="store_true", help="print JSON instead of text")
    sa.set_defaults(func=cmd_sanitize)


def _add_fleet_parsers(add) -> None:
    """``worker`` and ``db``: running a fleet."""
    wo = add("worker", "start a Celery worker (task events on) for some queues")
    wo.add_argument("--queues", required=True, help="comma-separated: llm, cpu, gpu (the private queue is added); required")
    wo.add_argument("--name", default=None, help="node name, e.g. gpu0@%%h (default: QUEUES@%%h)")
    wo.add_argument("--concurrency", type=int, default=1, help="pool processes; 1 for gpu (default: 1)")
    wo.add_argument("--max-tasks-per-child", type=int, default=20, help="recycle a pool process after N tasks (default: 20)")
    wo.add_argument("--loglevel", default="INFO", help="Celery log level (default: INFO)")
    wo.add_argument("--beat", action="store_true", help="also run the beat scheduler (the reaper); one per fleet")
    wo.add_argument("--print", action="store_true", help="print the celery command line instead of running it")
    wo.set_defaults(func=cmd_worker)

    dbp = add("db", "database administration")
    dbsub = dbp.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    up = dbsub.add_parser("upgrade", help="apply migrations to CODECFLEET_DATABASE_URL",
                          description="Apply the Alembic migrations.", formatter_class=_Formatter)
    up.add_argument("--url", default=None, help="database URL (default: CODECFLEET_DATABASE_URL or the SQLite file)")
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    up.set_defaults(func=cmd_db_upgrade)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        # The project's own "cannot do what was asked" errors: one line. Anything else
        # is a bug (or an outage, below) and keeps its traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"codecfleet {args.command}: error: {clean(message, one_line=True)}", file=sys.stderr)
        return 2
    except Exception as exc:
        return _known_failure(args.command, exc)


def _known_failure(command: str, exc: Exception) -> int:
    """Exit codes for the failures that are not bugs; re-raises everything else.

    The classes are looked up among the modules already loaded: an exception of a
    module this command never imported cannot have been raised.
    """
    fleet, runner = sys.modules.get("codecfleet.fleet"), sys.modules.get("sandbox.runner")
    if fleet is not None and isinstance(exc, fleet.WaitTimeout):
        print(f"codecfleet {command}: {clean(exc, one_line=True)}", file=sys.stderr)
        return 1
    if runner is not None and isinstance(exc, runner.IsolationError):
        # Not the candidate's fault and not silently weakened: say what is missing.
        print(f"codecfleet {command}: error: sandbox unavailable: {clean(exc, one_line=True)}", file=sys.stderr)
        return 3
    # The database or the broker is unreachable: say which, in one line.
    broker, database = sys.modules.get("kombu.exceptions"), sys.modules.get("sqlalchemy.exc")
    if database is not None and isinstance(exc, database.OperationalError):
        print(f"codecfleet {command}: error: database unreachable: {str(exc.orig).splitlines()[0]}", file=sys.stderr)
        return 2
    if broker is not None and isinstance(exc, broker.OperationalError):
        print(f"codecfleet {command}: error: broker unreachable: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    raise exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
