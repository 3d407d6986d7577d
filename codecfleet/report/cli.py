"""``codecfleet report``: its arguments and its handler.

Cheap to import (the main CLI imports it to build its parser): the report's
modules, and matplotlib and numpy with them, are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``codecfleet report`` on the CLI's subparsers; its handler is :func:`cmd_report`."""
    p = subparsers.add_parser(
        "report",
        help="write an HTML report (leaderboard, RD curves, crops, lineage, failures, provenance)",
        description="Write a self-contained HTML report (--out/index.html, images embedded) and print a summary.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--campaign", default=None, help="only this campaign, by name or id (default: every experiment)")
    scope.add_argument("--experiment", type=int, default=None, help="only this experiment id (default: every experiment)")
    p.add_argument("--out", default="codecfleet-report", help="output folder (default: ./codecfleet-report)")
    p.add_argument("--db", default=None, help="database URL (default: CODECFLEET_DATABASE_URL or the SQLite file)")
    p.add_argument("--top", type=int, default=20, help="leaderboard rows per clip (default 20)")
    p.add_argument("--curves", type=int, default=6,
                   help="families whose best candidate is drawn on the RD curves; the seeds always are (default 6)")
    p.add_argument("--no-crops", action="store_true", help="skip re-decoding the best candidate for crops")
    p.add_argument(
        "--no-compute-anchors",
        action="store_true",
        help="do not measure anchor curves that the database lacks (they are then shown as not measured)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: CODECFLEET_DEVICE or auto)")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of ``codecfleet report``: 0 when the report was written, 2 when it cannot be made."""
    from config import get_settings, resolve_device

    from codecfleet.report.build import build_report
    from codecfleet.report.model import ReportError, ReportOptions
    from codecfleet.report.terminal import print_summary

    settings = get_settings()
    if args.top < 1 or args.curves < 0:
        print("codecfleet report: error: --top must be >= 1 and --curves >= 0", file=sys.stderr)
        return 2
    options = ReportOptions(
        top=args.top,
        curves=args.curves,
        crops=not args.no_crops,
        compute_anchors=not args.no_compute_anchors,
        anchor_cache_dir=settings.cache_dir / "anchors",
        device=resolve_device(args.device or settings.device),
        sandbox_mode=settings.sandbox_mode,
    )
    try:
        report = build_report(
            args.db or settings.database_url,
            Path(args.out),
            campaign=args.campaign,
            experiment_id=args.experiment,
            options=options,
        )
    except ReportError as exc:
        print(f"codecfleet report: error: {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    return 0
