"""The report's figures (matplotlib, Agg, no pyplot): RD curves per clip and the headline.

matplotlib is imported when a figure is drawn, never at import time. Figures and
crops reach the page as PNG data URIs (:func:`figure_data_uri`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from codecfleet.report.model import ANCHOR_ORDER, PRIMARY_ANCHOR, ClipSection, Headline, RankedExperiment


RD_METRICS: dict[str, str] = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y"}
RATE_LABEL = "rate (kbps, log scale)"
#: Width and height of the RD figures in pixels (two fit side by side on the page).
FIGURE_SIZE_PX = (560, 400)


@dataclass(frozen=True)
class RDSeries:
    """One curve of an RD figure: ``points`` are (kbps, PSNR-Y dB, SSIM-Y) by rising rate."""

    label: str
    kind: str  # "candidate", "seed" or "anchor"
    points: tuple[tuple[float, float, float], ...]


_ANCHOR_STYLE = {
    "x264": {"color": "#222222", "linestyle": "--", "marker": "s"},
    "x265": {"color": "#7a7a7a", "linestyle": "-.", "marker": "^"},
    "svtav1": {"color": "#a0522d", "linestyle": ":", "marker": "D"},
}

_CANDIDATE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#bcbd22")
#: One marker per candidate or seed curve (the anchors have s, ^ and D).
_CANDIDATE_MARKERS = ("o", "v", "P", "X", "*", "h", "<", ">", "p", "d", "H", "8")


def rd_figure(series: Sequence[RDSeries], metric: str, *, title: str = ""):
    """A matplotlib Figure: ``metric`` against rate, one line per series (Agg, no pyplot).

    ``metric`` is "psnr_y" or "ssim_y"; the x axis is kbps on a log scale, as
    Bjontegaard integrates over log-rate. Anchors are drawn dashed in grey
    tones, candidates solid in colour.
    """
    if metric not in RD_METRICS:
        raise ValueError(f"unknown RD metric {metric!r}; expected one of {tuple(RD_METRICS)}")
    from matplotlib.figure import Figure

    column = 1 if metric == "psnr_y" else 2
    fig = Figure(figsize=(FIGURE_SIZE_PX[0] / 100, FIGURE_SIZE_PX[1] / 100), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    n_candidates = 0
    for s in series:
        pts = sorted(s.points)
        xs = [p[0] for p in pts]
        ys = [p[column] for p in pts]
        if s.kind == "anchor":
            style = _ANCHOR_STYLE.get(s.label, {"color": "#555555", "linestyle": "--", "marker": "o"})
            ax.plot(xs, ys, label=s.label, linewidth=1.4, markersize=4, **style)
        else:
            color = _CANDIDATE_COLORS[n_candidates % len(_CANDIDATE_COLORS)]
            marker = _CANDIDATE_MARKERS[n_candidates % len(_CANDIDATE_MARKERS)]
            n_candidates += 1
            if s.kind == "seed":  # a baseline: thin, hollow markers
                ax.plot(xs, ys, label=s.label, color=color, linestyle=(0, (5, 2)), marker=marker, linewidth=1.3,
                        markersize=7, markerfacecolor="white")
            else:
                ax.plot(xs, ys, label=s.label, color=color, linestyle="-", marker=marker, linewidth=2.0, markersize=7,
                        alpha=0.9)
    ax.set_xscale("log")
    ax.set_xlabel(RATE_LABEL)
    ax.set_ylabel(RD_METRICS[metric])
    ax.set_title(title or f"{RD_METRICS[metric]} against rate")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def rd_series(section: ClipSection, n_curves: int) -> list[RDSeries]:
    """The curves of a clip's RD figures: the best candidate of each of the ``n_curves``
    best families (a family's best that is its seed is drawn once, as the seed), then
    every seed as a baseline, then each anchor with points."""
    out = []
    with_points = [r for r in section.ranked if r.points]
    seeds = [r for r in with_points if r.seed]
    families: dict[str, RankedExperiment] = {}
    for r in with_points:
        families.setdefault(r.family or f"candidate {r.experiment.candidate_id}", r)
    for family, r in list(families.items())[:n_curves]:
        if r.seed:
            continue
        out.append(
            RDSeries(
                label=f"cand {r.experiment.candidate_id}, best of {family}",
                kind="candidate",
                points=tuple((p.kbps, p.psnr_y, p.ssim_y) for p in r.points),
            )
        )
    for r in seeds:
        out.append(
            RDSeries(
                label=f"seed {r.family} (cand {r.experiment.candidate_id})",
                kind="seed",
                points=tuple((p.kbps, p.psnr_y, p.ssim_y) for p in r.points),
            )
        )
    for codec in ANCHOR_ORDER:
        curve = section.anchors.get(codec)
        if curve and curve.points:
            out.append(RDSeries(codec, "anchor", tuple((p.kbps, p.psnr_y, p.ssim_y) for p in curve.points)))
    return out


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_data_uri(fig) -> str:
    """A matplotlib figure as a PNG data URI (embedded in the page: one self-contained file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _png_uri(buf.getvalue())


def data_uri_bytes(uri: str) -> bytes:
    """The bytes of a ``data:...;base64,`` URI (for tests and tools reading the page)."""
    return base64.b64decode(uri.split(",", 1)[1])


#: Colours of the headline's dots by candidate status.
STATUS_COLORS = {
    "succeeded": "#1f77b4",
    "reused": "#9e9e9e",
    "duplicate_output": "#9e9e9e",
    "failed": "#d62728",
    "rejected": "#ff7f0e",
    "timed_out": "#8c564b",
    "cancelled": "#7f7f7f",
}

HEADLINE_SIZE_PX = (1100, 380)


def headline_figure(h: Headline):
    """Best-so-far BD-rate per generation (a step line) over every candidate as a dot coloured by status.

    Candidates without a BD-rate (failed, rejected, deduplicated, unreliable) sit in a band above the
    highest figure, labelled so, at their generation.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(HEADLINE_SIZE_PX[0] / 100, HEADLINE_SIZE_PX[1] / 100), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    values = [d.bd_rate for d in h.dots if d.bd_rate is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    span = max(hi - lo, 1.0)
    band = hi + 0.25 * span
    slot: dict[int, int] = {}
    by_status: dict[str, list[tuple[float, float]]] = {}
    for d in sorted(h.dots, key=lambda d: d.candidate_id):
        k = slot.get(d.generation, 0)
        slot[d.generation] = k + 1
        x = d.generation + (((k % 9) - 4) * 0.04)
        status = d.status if d.bd_rate is not None or d.status != "succeeded" else "succeeded (no reliable BD-rate)"
        by_status.setdefault(status, []).append((x, d.bd_rate if d.bd_rate is not None else band))
    for status, pts in sorted(by_status.items()):
        color = STATUS_COLORS.get(status, "#bcbd22")
        label = {"reused": "reused (deduplicated)", "duplicate_output": "duplicate_output (deduplicated)"}.get(status, status)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=36, color=color, alpha=0.8, label=f"{label} ({len(pts)})",
                   edgecolors="white", linewidths=0.5, zorder=3)
    gens = [g for g in h.generations if g[2] is not None]
    if gens:
        xs = [g[0] for g in gens]
        ax.step(xs, [g[2] for g in gens], where="post", color="black", linewidth=2.2, label="best so far", zorder=4)
        for x, _here, best in gens:
            ax.annotate(f"{best:+.1f} %", (x, best), textcoords="offset points", xytext=(0, -13), ha="center",
                        fontsize=8, zorder=5)
    if len(values) < len(h.dots):
        ax.axhline(band - 0.1 * span, color="#cccccc", linewidth=0.8)
        ax.text(ax.get_xlim()[0] if h.dots else 0, band, " no BD-rate", va="center", fontsize=8, color="#666666")
    ax.set_xticks(sorted({d.generation for d in h.dots}) or [0])
    ax.set_xlabel("generation")
    ax.set_ylabel(f"BD-rate vs {PRIMARY_ANCHOR} (%, lower is better)")
    ax.set_title("Best-so-far BD-rate per generation; every candidate a dot coloured by status")
    ax.grid(True, alpha=0.3)
    if h.dots:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return fig
