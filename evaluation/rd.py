"""Bjontegaard rate-distortion deltas (BD-rate, BD-PSNR).

Each curve is a sequence of ``(kbps, psnr_db)`` points, in any order. Both
metrics follow Bjontegaard's method (VCEG-M33, 2001) with the piecewise cubic
Hermite (PCHIP) interpolation that replaced the original cubic polynomial fit
in the JCT-VC / JVET common test conditions (JCTVC-L1100, JVET-K1010): PCHIP
preserves the monotonicity of the measured points, so the interpolated curve
cannot oscillate between them.

Both curves are interpolated, the difference of the two interpolants is
integrated *exactly* over the interval where both curves are defined (the
interpolants are piecewise cubic polynomials, integrated in closed form) and
divided by the length of that interval.

Rates are handled as natural logarithms; the choice of base cancels in BD-rate
(the mean log-difference is exponentiated in the same base) and BD-PSNR only
uses log-rate as the abscissa of a mean, which is base-independent as well.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = [
    "LOW_OVERLAP_FRACTION",
    "MIN_POINTS",
    "LowOverlapWarning",
    "RDError",
    "bd_psnr",
    "bd_rate",
    "overlap_fraction",
]

MIN_POINTS = 4
"""Fewest points per curve: PCHIP over three points is too weakly constrained
for the common test conditions, which use four rate points."""

LOW_OVERLAP_FRACTION = 0.75
"""Below this overlap fraction (see :func:`overlap_fraction`) a
:class:`LowOverlapWarning` is issued."""

RDPoints = Sequence[tuple[float, float]]


class RDError(ValueError):
    """A rate-distortion curve cannot be used for a Bjontegaard delta.

    The message names the curve (``anchor`` or ``test``) and the offending
    point(s).
    """


class LowOverlapWarning(UserWarning):
    """The two curves share less than 75 % of their range on the integration axis.

    The delta is then computed over a small part of either curve and says
    little about the rest of it.
    """


def _validated_curve(points: RDPoints, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(log_rate, psnr)`` sorted by rate, after checking every rule."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RDError(f"{name} curve: points must be (kbps, psnr) number pairs ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise RDError(
            f"{name} curve: expected a sequence of (kbps, psnr) pairs, got an array of shape {arr.shape}"
        )
    if arr.shape[0] < MIN_POINTS:
        raise RDError(
            f"{name} curve: needs at least {MIN_POINTS} (kbps, psnr) points, got {arr.shape[0]}"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RDError(f"{name} curve: point {i} {tuple(arr[i].tolist())} is not finite")
    nonpos = arr[:, 0] <= 0
    if nonpos.any():
        i = int(np.flatnonzero(nonpos)[0])
        raise RDError(
            f"{name} curve: point {i} has rate {float(arr[i, 0])!r} kbps; rates must be > 0"
        )

    # Stable sort so the first of two duplicate points is reported as such.
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    # Plain floats so messages read "200.0 kbps", not "np.float64(200.0) kbps".
    rate, psnr = arr[:, 0].tolist(), arr[:, 1].tolist()
    for k in range(1, len(arr)):
        if rate[k] == rate[k - 1]:
            if psnr[k] == psnr[k - 1]:
                raise RDError(
                    f"{name} curve: duplicate point ({rate[k]!r} kbps, {psnr[k]!r} dB)"
                )
            raise RDError(
                f"{name} curve: two points share the rate {rate[k]!r} kbps "
                f"({psnr[k - 1]!r} dB and {psnr[k]!r} dB); rate must be strictly increasing with PSNR"
            )
        if psnr[k] <= psnr[k - 1]:
            raise RDError(
                f"{name} curve: not monotonic: {rate[k]!r} kbps gives {psnr[k]!r} dB but the "
                f"lower rate {rate[k - 1]!r} kbps gives {psnr[k - 1]!r} dB; "
                "PSNR must be strictly increasing with rate"
            )
    return np.log(arr[:, 0]), arr[:, 1].copy()


def _overlap(xa: np.ndarray, xt: np.ndarray) -> tuple[float, float, float]:
    """Return ``(lo, hi, fraction)`` of the shared interval of two sorted abscissae."""
    lo = max(xa[0], xt[0])
    hi = min(xa[-1], xt[-1])
    span = max(xa[-1] - xa[0], xt[-1] - xt[0])
    return float(lo), float(hi), float(max(hi - lo, 0.0) / span)


def overlap_fraction(
    anchor: RDPoints, test: RDPoints, *, axis: Literal["psnr", "rate"] = "psnr"
) -> float:
    """Fraction of the curves' range that both share on the integration axis.

    ``fraction = overlap / max(range_anchor, range_test)`` where, for
    ``axis="psnr"`` (the BD-rate axis) ranges are in dB and for ``axis="rate"``
    (the BD-PSNR axis) in log-rate. Dividing by the *larger* range makes the
    fraction the smaller of the two curves' coverages, so a warning is given
    when either curve lies mostly outside the shared interval. 0 when the curves
    do not overlap; 1 when both span the same interval.

    Raises
    ------
    RDError
        If either curve is invalid (see :func:`bd_rate`).
    """
    if axis not in ("psnr", "rate"):
        raise ValueError(f"axis must be 'psnr' or 'rate', got {axis!r}")
    la, pa = _validated_curve(anchor, "anchor")
    lt, pt = _validated_curve(test, "test")
    xa, xt = (pa, pt) if axis == "psnr" else (la, lt)
    return _overlap(xa, xt)[2]


def _mean_difference(
    xa: np.ndarray, ya: np.ndarray, xt: np.ndarray, yt: np.ndarray, axis_name: str, unit: str
) -> float:
    """Mean of ``pchip(xt, yt) - pchip(xa, ya)`` over the shared ``x`` interval."""
    lo, hi, fraction = _overlap(xa, xt)
    if hi <= lo:
        raise RDError(
            f"the anchor and test curves do not overlap in {axis_name}: anchor spans "
            f"[{xa[0]:.6g}, {xa[-1]:.6g}] {unit}, test spans [{xt[0]:.6g}, {xt[-1]:.6g}] {unit}"
        )
    if fraction < LOW_OVERLAP_FRACTION:
        warnings.warn(
            f"the anchor and test curves share only {100 * fraction:.1f} % of their {axis_name} "
            f"range ([{lo:.6g}, {hi:.6g}] {unit}); the Bjontegaard delta describes that part only",
            LowOverlapWarning,
            stacklevel=3,
        )
    # PchipInterpolator is a scipy PPoly: .integrate is the closed-form integral
    # of the piecewise cubic, not a quadrature approximation.
    int_a = PchipInterpolator(xa, ya, extrapolate=False).integrate(lo, hi)
    int_t = PchipInterpolator(xt, yt, extrapolate=False).integrate(lo, hi)
    return float((int_t - int_a) / (hi - lo))


def bd_rate(anchor: RDPoints, test: RDPoints) -> float:
    """Bjontegaard delta rate of ``test`` against ``anchor``, in percent.

    The average rate difference at equal quality::

        d = 1 / (P_hi - P_lo) * integral_{P_lo}^{P_hi} (ln R_test(P) - ln R_anchor(P)) dP
        BD-rate = (exp(d) - 1) * 100

    where ``ln R_c(P)`` is the PCHIP interpolant of ``ln(kbps)`` over PSNR for
    curve ``c`` and ``[P_lo, P_hi] = [max(min PSNR), min(max PSNR)]`` is the
    PSNR interval both curves cover. Negative values mean the test codec needs
    fewer bits for the same PSNR (``-10.0``: 10 % bit saving).

    Swapping the curves gives ``(1 + r1 / 100) * (1 + r2 / 100) == 1``.

    Parameters
    ----------
    anchor, test : sequence of (kbps, psnr) pairs
        At least 4 points each, any order, rates > 0, all values finite, PSNR
        strictly increasing with rate (no duplicate rates or points).

    Returns
    -------
    float
        BD-rate in percent.

    Raises
    ------
    RDError
        Invalid curve (message names it) or no PSNR overlap.

    Warns
    -----
    LowOverlapWarning
        When :func:`overlap_fraction` on the PSNR axis is below 0.75.

    References
    ----------
    G. Bjontegaard, "Calculation of average PSNR differences between RD-curves",
    ITU-T VCEG-M33, 2001. F. Bossen, "Common test conditions and software
    reference configurations", JCTVC-L1100, 2013 (piecewise cubic interpolation).
    """
    la, pa = _validated_curve(anchor, "anchor")
    lt, pt = _validated_curve(test, "test")
    d = _mean_difference(pa, la, pt, lt, "PSNR", "dB")
    return math.expm1(d) * 100.0


def bd_psnr(anchor: RDPoints, test: RDPoints) -> float:
    """Bjontegaard delta PSNR of ``test`` against ``anchor``, in dB.

    The average PSNR difference at equal rate::

        BD-PSNR = 1 / (L_hi - L_lo) * integral_{L_lo}^{L_hi} (P_test(L) - P_anchor(L)) dL

    where ``P_c(L)`` is the PCHIP interpolant of PSNR over ``L = ln(kbps)`` for
    curve ``c`` and ``[L_lo, L_hi]`` is the log-rate interval both curves cover.
    Positive values mean the test codec gives higher PSNR at the same rate.

    Parameters, errors and warnings are as for :func:`bd_rate`, with the overlap
    measured on the log-rate axis.

    References
    ----------
    G. Bjontegaard, "Calculation of average PSNR differences between RD-curves",
    ITU-T VCEG-M33, 2001.
    """
    la, pa = _validated_curve(anchor, "anchor")
    lt, pt = _validated_curve(test, "test")
    return _mean_difference(la, pa, lt, pt, "log-rate", "ln(kbps)")
