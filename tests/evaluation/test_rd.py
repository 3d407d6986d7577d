"""Specification of the Bjontegaard deltas in evaluation.rd."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from evaluation.rd import (
    LowOverlapWarning,
    RDError,
    bd_psnr,
    bd_rate,
    overlap_fraction,
)

# A realistic four-point anchor (kbps, PSNR dB), deliberately not in rate order.
ANCHOR = [(1358.24, 34.851), (9487.76, 40.037), (2486.44, 36.845), (4593.60, 38.615)]
TEST = [(1356.24, 34.987), (2451.52, 36.970), (4469.00, 38.651), (9787.80, 40.121)]


def _scaled_rates(curve, factor):
    return [(r * factor, p) for r, p in curve]


def _shifted_psnr(curve, db):
    return [(r, p + db) for r, p in curve]


# ---------------------------------------------------------------- identities


def test_rates_times_1_1_give_plus_ten_percent():
    assert bd_rate(ANCHOR, _scaled_rates(ANCHOR, 1.1)) == pytest.approx(10.0, abs=1e-9)


def test_rates_times_0_8_give_minus_twenty_percent():
    assert bd_rate(ANCHOR, _scaled_rates(ANCHOR, 0.8)) == pytest.approx(-20.0, abs=1e-9)


def test_psnr_plus_half_db_at_same_rates_gives_bd_psnr_0_5():
    assert bd_psnr(ANCHOR, _shifted_psnr(ANCHOR, 0.5)) == pytest.approx(0.5, abs=1e-12)


def test_identical_curves_give_zero():
    assert bd_rate(ANCHOR, ANCHOR) == 0.0
    assert bd_psnr(ANCHOR, ANCHOR) == 0.0


def test_swapping_curves_inverts_the_rate_ratio():
    r1 = bd_rate(ANCHOR, TEST) / 100
    r2 = bd_rate(TEST, ANCHOR) / 100
    assert (1 + r1) * (1 + r2) == pytest.approx(1.0, abs=1e-12)
    assert bd_psnr(ANCHOR, TEST) == pytest.approx(-bd_psnr(TEST, ANCHOR), abs=1e-12)


def test_point_order_does_not_matter():
    assert bd_rate(ANCHOR, TEST) == bd_rate(sorted(ANCHOR), list(reversed(TEST)))


def test_better_codec_has_negative_bd_rate_and_positive_bd_psnr():
    # TEST reaches higher PSNR at about the same rates.
    assert bd_rate(ANCHOR, TEST) < 0
    assert bd_psnr(ANCHOR, TEST) > 0


def test_linear_curves_match_the_closed_form_over_the_partial_overlap():
    # ln R = a + b P is reproduced exactly by PCHIP, so the delta has a closed
    # form: mean over [32, 40] of (a_t - a_a) + (b_t - b_a) P.
    pa = np.array([30.0, 32.5, 35.0, 37.5, 40.0])
    pt = np.array([32.0, 34.5, 37.0, 39.5, 42.0])
    a_a, b_a, a_t, b_t = 1.0, 0.12, 1.3, 0.11
    anchor = list(zip(np.exp(a_a + b_a * pa), pa))
    test = list(zip(np.exp(a_t + b_t * pt), pt))
    d = (a_t - a_a) + (b_t - b_a) * (32.0 + 40.0) / 2
    assert overlap_fraction(anchor, test) == pytest.approx(0.8)
    assert bd_rate(anchor, test) == pytest.approx(math.expm1(d) * 100, abs=1e-9)


def test_bd_psnr_of_linear_curves_matches_the_closed_form():
    # P = c + k ln R on both curves, with the same slope: the delta is c_t - c_a
    # whatever the overlap.
    la = np.log([100.0, 200.0, 400.0, 800.0])
    lt = np.log([150.0, 300.0, 600.0, 1200.0])
    anchor = list(zip(np.exp(la), 20.0 + 3.0 * la))
    test = list(zip(np.exp(lt), 20.7 + 3.0 * lt))
    assert bd_psnr(anchor, test) == pytest.approx(0.7, abs=1e-12)


def _reference_pchip_slopes(x, y):
    """Fritsch-Carlson slopes with the three-point end rule (MATLAB pchip, JCTVC sheet)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1 = 2 * h[k] + h[k - 1]
            w2 = h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def end(h0, h1, d0, d1):
        s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(s) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(s) > abs(3 * d0):
            return 3 * d0
        return s

    d[0] = end(h[0], h[1], delta[0], delta[1])
    d[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _reference_pchip(x, y, t):
    d = _reference_pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, t, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    s = (t - x[k]) / h
    h00 = 2 * s**3 - 3 * s**2 + 1
    h10 = s**3 - 2 * s**2 + s
    h01 = -2 * s**3 + 3 * s**2
    h11 = s**3 - s**2
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def _reference_bd_rate(anchor, test, n=200_001):
    """Independent implementation: hand-written PCHIP, Simpson quadrature."""
    a = np.array(sorted(anchor, key=lambda p: p[1]))
    t = np.array(sorted(test, key=lambda p: p[1]))
    lo, hi = max(a[0, 1], t[0, 1]), min(a[-1, 1], t[-1, 1])
    grid = np.linspace(lo, hi, n)
    diff = _reference_pchip(t[:, 1], np.log(t[:, 0]), grid) - _reference_pchip(
        a[:, 1], np.log(a[:, 0]), grid
    )
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4, 2
    mean = (w * diff).sum() * (grid[1] - grid[0]) / 3 / (hi - lo)
    return math.expm1(mean) * 100


def test_bd_rate_agrees_with_an_independent_pchip_and_quadrature():
    assert bd_rate(ANCHOR, TEST) == pytest.approx(_reference_bd_rate(ANCHOR, TEST), abs=1e-8)
    # A strongly curved pair whose test curve has five points.
    anchor = [(100, 28.0), (180, 31.5), (400, 34.0), (1200, 36.0)]
    test = [(90, 28.4), (150, 31.0), (260, 33.9), (700, 35.2), (1500, 37.0)]
    assert bd_rate(anchor, test) == pytest.approx(_reference_bd_rate(anchor, test), abs=1e-8)


# ---------------------------------------------------------------- overlap


def test_overlap_fraction_is_one_for_the_same_range():
    assert overlap_fraction(ANCHOR, _scaled_rates(ANCHOR, 1.3)) == pytest.approx(1.0)


def test_overlap_fraction_uses_the_larger_range():
    anchor = [(100, 30.0), (200, 32.0), (400, 34.0), (800, 40.0)]  # 10 dB
    test = [(100, 35.0), (200, 36.0), (400, 37.0), (800, 38.0)]  # 3 dB, inside
    assert overlap_fraction(anchor, test) == pytest.approx(0.3)
    assert overlap_fraction(test, anchor) == pytest.approx(0.3)


def test_overlap_below_75_percent_warns():
    anchor = [(100, 30.0), (200, 32.0), (400, 34.0), (800, 36.0)]
    test = [(100, 33.0), (200, 35.0), (400, 37.0), (800, 39.0)]  # 3 of 6 dB shared
    with pytest.warns(LowOverlapWarning, match=r"50\.0 %"):
        bd_rate(anchor, test)


def test_overlap_of_75_percent_or_more_does_not_warn():
    anchor = [(100, 30.0), (200, 32.0), (400, 34.0), (800, 36.0)]
    test = [(100, 31.5), (200, 33.5), (400, 35.5), (800, 37.5)]  # 4.5 of 6 dB
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowOverlapWarning)
        bd_rate(anchor, test)


def test_bd_psnr_measures_overlap_on_log_rate():
    anchor = [(100, 30.0), (200, 32.0), (400, 34.0), (800, 36.0)]
    test = [(400, 35.0), (800, 37.0), (1600, 39.0), (3200, 41.0)]  # 1 of 3 octaves
    assert overlap_fraction(anchor, test, axis="rate") == pytest.approx(1 / 3)
    with pytest.warns(LowOverlapWarning, match="log-rate"):
        bd_psnr(anchor, test)


def test_no_psnr_overlap_is_an_error():
    anchor = [(100, 30.0), (200, 31.0), (400, 32.0), (800, 33.0)]
    test = [(100, 34.0), (200, 35.0), (400, 36.0), (800, 37.0)]
    with pytest.raises(RDError, match="do not overlap in PSNR"):
        bd_rate(anchor, test)


def test_curves_touching_at_one_psnr_do_not_overlap():
    anchor = [(100, 30.0), (200, 31.0), (400, 32.0), (800, 33.0)]
    test = [(100, 33.0), (200, 35.0), (400, 36.0), (800, 37.0)]
    with pytest.raises(RDError, match="do not overlap"):
        bd_rate(anchor, test)


def test_no_rate_overlap_is_an_error_for_bd_psnr():
    anchor = [(100, 30.0), (200, 31.0), (400, 32.0), (800, 33.0)]
    test = [(1000, 30.0), (2000, 31.0), (4000, 32.0), (8000, 33.0)]
    with pytest.raises(RDError, match="do not overlap in log-rate"):
        bd_psnr(anchor, test)


# ---------------------------------------------------------------- invalid curves


def test_fewer_than_four_points_is_an_error_naming_the_curve():
    with pytest.raises(RDError, match="test curve: needs at least 4 .* got 3"):
        bd_rate(ANCHOR, TEST[:3])
    with pytest.raises(RDError, match="anchor curve: needs at least 4"):
        bd_psnr(ANCHOR[:2], TEST)


def test_non_monotonic_curve_is_an_error():
    bad = [(100, 30.0), (200, 33.0), (400, 32.0), (800, 36.0)]
    with pytest.raises(RDError, match="anchor curve: not monotonic: 400.0 kbps gives 32.0 dB"):
        bd_rate(bad, TEST)


def test_equal_psnr_at_two_rates_is_not_monotonic():
    flat = [(100, 30.0), (200, 31.0), (400, 31.0), (800, 33.0)]
    with pytest.raises(RDError, match="test curve: not monotonic"):
        bd_rate(ANCHOR, flat)


def test_duplicate_point_is_an_error():
    dup = [(100, 30.0), (200, 31.0), (200, 31.0), (800, 33.0), (900, 34.0)]
    with pytest.raises(RDError, match=r"test curve: duplicate point \(200.0 kbps, 31.0 dB\)"):
        bd_rate(ANCHOR, dup)


def test_two_psnr_values_at_one_rate_is_an_error():
    bad = [(100, 30.0), (200, 31.0), (200, 32.0), (800, 33.0)]
    with pytest.raises(RDError, match="share the rate 200.0 kbps"):
        bd_rate(bad, TEST)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value_is_an_error(value):
    bad = [(100, 30.0), (200, value), (400, 32.0), (800, 33.0)]
    with pytest.raises(RDError, match="test curve: point 1 .* is not finite"):
        bd_rate(ANCHOR, bad)


@pytest.mark.parametrize("rate", [0.0, -5.0])
def test_non_positive_rate_is_an_error(rate):
    bad = [(rate, 29.0), (200, 31.0), (400, 32.0), (800, 33.0)]
    with pytest.raises(RDError, match="anchor curve: point 0 has rate .* rates must be > 0"):
        bd_rate(bad, TEST)


def test_points_that_are_not_pairs_are_an_error():
    with pytest.raises(RDError, match=r"anchor curve: expected a sequence of \(kbps, psnr\) pairs"):
        bd_rate([(1, 2, 3)] * 4, TEST)
