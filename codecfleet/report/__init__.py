"""``codecfleet report``: the results database as pictures and tables a researcher reads.

The report is one self-contained file, ``index.html``: every figure and crop is
embedded as a PNG data URI, so the file can be copied anywhere and opened
offline (no scripts, no network). It opens with the headline: best-so-far
BD-rate per generation with every candidate as a dot coloured by its status,
one sentence with the best result against each anchor (with the overlap of
the quality ranges), and what was spent. Then, for each clip in scope,

* a leaderboard: each candidate's best experiment ranked by its stored BD-rate
  (PSNR-Y curve) against x264, with BD-rate and overlap against every anchor,
  family, rate and quality ranges, speed and status; the seeds always appear;
* RD curves (PSNR-Y and SSIM-Y against kbps) of the best candidate of each
  family and of the seeds, each with its own marker, beside x264, x265 and
  SVT-AV1; held-out clips of a campaign are marked as such;
* side-by-side crops of the source, the best candidate and x264 at a similar
  rate, each re-made from its artifact (see :func:`make_crops`);
* the lineage of the best candidate, with the diff and the numbers of each step;

and, over the whole scope, a per-model table when several models wrote
candidates, deduplication (``duplicate_output`` and reused results: work not
repeated, not failures), the failures by status and stage with example
reasons, and the provenance of every number shown.

Every number is read from the database (measurements, scores, anchor results)
or, where the database lacks it, measured by this command from an artifact it
re-made and says so; a value that cannot be had is shown as "not measured"
with the reason. The report never writes to the database.

Modules, each importing only those above it in this list: :mod:`.model` (the
dataclasses and reading them from the database), :mod:`.figures` (matplotlib),
:mod:`.crops` (numpy, the sandbox), :mod:`.html` and :mod:`.terminal` (showing
them), :mod:`.build` (:func:`build_report`: all of the above), :mod:`.cli` (the
command; cheap to import). The names below are re-exported from them on first
use, so that ``import codecfleet.report.cli`` stays cheap.
"""

from __future__ import annotations

import importlib

#: Public name -> the submodule it lives in (loaded on first access, PEP 562).
_EXPORTS = {
    "ANCHOR_ORDER": "model",
    "PRIMARY_ANCHOR": "model",
    "AnchorCurve": "model",
    "ClipSection": "model",
    "Headline": "model",
    "CropPanel": "model",
    "Crops": "model",
    "LineageStep": "model",
    "RDSeries": "figures",
    "RankedExperiment": "model",
    "Report": "model",
    "ReportError": "model",
    "ReportOptions": "model",
    "add_report_parser": "cli",
    "build_report": "build",
    "cmd_report": "cli",
    "make_crops": "crops",
    "print_summary": "terminal",
    "rd_figure": "figures",
    "rd_series": "figures",
    "render_html": "html",
    "x264_decoded_frames": "crops",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
