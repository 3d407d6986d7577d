"""The RD figures: axes, one line per codec with the stored points, and the PNG on disk."""

from __future__ import annotations

import pytest
from matplotlib.image import imread
from matplotlib.lines import Line2D

import io

from codecfleet.report import ANCHOR_ORDER, RDSeries, rd_figure, rd_series
from codecfleet.report.figures import FIGURE_SIZE_PX, RATE_LABEL, data_uri_bytes


def _clip1_section(fx):
    return next(s for s in fx.report.sections if s.clip.sha256 == fx.clip1.sha256)


@pytest.mark.parametrize(("metric", "ylabel"), [("psnr_y", "PSNR-Y (dB)"), ("ssim_y", "SSIM-Y")])
def test_rd_figure_has_rate_and_quality_axes_on_a_log_rate_scale(report_fixture, metric, ylabel):
    fig = rd_figure(rd_series(_clip1_section(report_fixture), 3), metric)
    (ax,) = fig.axes
    assert ax.get_xlabel() == RATE_LABEL
    assert ax.get_ylabel() == ylabel
    assert ax.get_xscale() == "log"


def test_rd_figure_draws_the_best_of_each_family_the_seeds_and_the_anchors_with_distinct_markers(report_fixture):
    section = _clip1_section(report_fixture)
    series = rd_series(section, 3)
    (ax,) = rd_figure(series, "psnr_y").axes
    lines = [line for line in ax.get_lines() if isinstance(line, Line2D)]
    best = section.ranked[0]
    (root,) = [r for r in section.ranked if r.seed]
    # One family (intra_dct: root -> mutated -> inter): its best, then the seed as a baseline.
    labels = [f"cand {best.experiment.candidate_id}, best of intra_dct",
              f"seed intra_dct (cand {root.experiment.candidate_id})"]
    assert [line.get_label() for line in lines] == labels + list(ANCHOR_ORDER)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels + list(ANCHOR_ORDER)
    xs, ys = lines[0].get_data()
    assert list(xs) == [p.kbps for p in best.points] and list(ys) == [p.psnr_y for p in best.points]
    x264 = section.anchors["x264"].points
    assert sorted(lines[2].get_xdata()) == sorted(p.kbps for p in x264)
    markers = [line.get_marker() for line in lines]
    assert len(set(markers)) == len(markers)


def test_rd_series_keeps_the_seeds_and_every_anchor_with_no_family(report_fixture):
    series = rd_series(_clip1_section(report_fixture), 0)
    assert [s.kind for s in series] == ["seed", "anchor", "anchor", "anchor"]


def test_saved_rd_pngs_decode_at_the_figure_size(report_fixture):
    section = _clip1_section(report_fixture)
    assert set(section.figures) == {"psnr_y", "ssim_y"}
    for uri in section.figures.values():
        pixels = imread(io.BytesIO(data_uri_bytes(uri)), format="png")
        assert pixels.shape[:2] == (FIGURE_SIZE_PX[1], FIGURE_SIZE_PX[0])
        assert pixels[..., :3].std() > 0.05  # drawn, not blank


def test_rd_figure_rejects_an_unknown_metric():
    with pytest.raises(ValueError, match="unknown RD metric 'vmaf'"):
        rd_figure([RDSeries("x264", "anchor", ((100.0, 30.0, 0.9), (200.0, 33.0, 0.95)))], "vmaf")
