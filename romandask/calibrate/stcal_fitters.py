"""One interface to stcal's two Roman ramp fitters.

Both fitters take linearised, bias-subtracted resultants in electrons and
return a count-rate image in e-/s with its Poisson and read-noise variances:

``fit_ols_cas22``
    Casertano et al. (2022) optimally weighted least squares on resultants,
    with its optional built-in jump detection
    (``stcal.ramp_fitting.ols_cas22_fit.fit_ramps_casertano``, Cython).
``fit_likely``
    Brandt (2024) maximum-likelihood fit of resultant differences with the
    full covariance matrix, and likelihood-based jump detection
    (``stcal.ramp_fitting.likely_fit.likely_ramp_fit``, vectorised numpy
    over one row at a time).

Conventions (checked against stcal 1.20)
-----------------------------------------
Times
    Read ``k`` (1-based) ends ``k * frame_time`` seconds after the reset, and
    charge accumulates from the reset (t = 0).  ``fit_ramps_casertano`` takes
    the read *indices* and the frame time and builds exactly these times
    (``t_bar = frame_time * mean(reads)``); ``likely_ramp_fit`` takes explicit
    read *times*, which are given as ``k * frame_time``.  Both fitters use the
    times only through differences (and weights that sum to zero), so a
    constant offset, e.g. reads at ``(k - 1) * frame_time``, changes neither
    slopes nor variances (checked to float32 precision).
Units
    Resultants in electrons, so stcal's gain is 1 (``likely`` is handed a gain
    array of ones; ``cas22`` has no gain).  Slopes come back in e-/s, variances
    in (e-/s)^2.
Read noise
    ``read_noise`` is the sigma of ONE read.  ``fit_ramps_casertano`` uses it
    as such.  ``likely_ramp_fit`` divides the read noise it is given by
    sqrt(2) (it expects the JWST-style CDS noise), so it is handed
    ``read_noise * sqrt(2)`` here.
Poisson variance
    Both fitters compute ``var_poisson`` from a *measured* rate, not the truth:
    ``cas22`` from the final (read-noise-weighted average) slope, clipped at
    zero, so ``var_poisson / slope`` is the exact per-unit-rate coefficient;
    ``likely`` from the rate of its first pass (the jump-search fit, itself
    weighted with the median resultant difference), clipped at zero, which
    also sets its weights for the final pass, so ``var_poisson / slope`` is
    only close to that coefficient.  At zero flux the clipping inflates the
    errors of the positive fluctuations (pull std about 0.91 at 0 e-/s).
Excluded resultants
    A resultant whose group DQ has ``SATURATED`` or ``DO_NOT_USE`` set, or
    whose value is not finite, is excluded.  Other group DQ bits are ignored
    (stcal would treat any non-zero flag as a break).  ``cas22`` splits the
    ramp at excluded resultants and averages the segment slopes with
    inverse read-noise-variance weights; ``likely`` drops every resultant
    difference that touches an excluded resultant and fits one rate to the
    rest.
Output flags
    ``FitResult.dq`` holds only ``pixel.JUMP_DET`` (the fitter flagged a jump
    in at least one resultant) and ``pixel.DO_NOT_USE`` (no slope could be
    measured; slope and variances are NaN there).  ``cas22`` returns a slope
    of 0 and variances of 0, not NaN, when no segment of at least two
    resultants is left; that case is detected from its output group DQ and
    turned into NaN + ``DO_NOT_USE`` here.

Jump detection
--------------
``cas22``
    After each segment fit, single and double resultant differences are
    compared with the fitted slope; the largest *positive* normalised
    deviation is a jump when it exceeds ``5.5 - (1/3) log10(slope)`` (slope
    in e-/s clipped to [1, 1e4], so 5.5 sigma down to 4.17 sigma).  The
    resultant at the start of the offending difference and the next one are
    both flagged and dropped, and the sub-segments either side are searched
    again.  On short ramps at high flux the statistic misfires: with 4
    resultants ([1], [2], [3, 4], [5..9]) about 1.5 %, 8 % and 15 % of pixels
    get a false jump at 100, 300 and 1000 e-/s, which leaves no two-resultant
    segment, i.e. no slope.
``likely``
    Dropping one resultant difference must improve chi^2 by more than 20.25
    (4.5 sigma), or dropping two adjacent differences by more than 23.8 (the
    same p-value for two degrees of freedom); these are stcal's defaults
    (``rejection_threshold=None``), as in romancal.  The resultant at the
    upper end of each dropped difference is flagged; the search repeats until
    nothing more is dropped or only three differences are left.  With few
    resultants and a jump inside a many-read resultant at high flux (e.g.
    300 e-/s, 6 resultants) a few per cent of pixels drop the wrong pair and
    keep part of the jump.  Needs at least 4 resultants.

Threads
-------
``fit_ramps_casertano`` holds the GIL for its whole per-pixel loop (no
``nogil`` section): a pure-Python thread was blocked for 2.4 s of a 2.9 s
call on 3.1 million pixels, and for 0.4 s of the 0.75 s this wrapper takes on
a 1024 x 1024 cube.  Only the numpy work around the loop (casts, copies, the
slow conversion of stcal's output memoryviews) overlaps between threads, so
two threads gave 1.1-1.6x and more cannot beat 2x: run it in processes (Dask
worker processes with one thread each).
``likely`` is Python-level code driving small numpy operations on one row at
a time and holds the GIL for most of it; two threads were measured no faster
than one (on a shared 2-core machine, where two processes gave 1.2x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from roman_datamodels.dqflags import group, pixel
from stcal.ramp_fitting import ols_cas22_fit
from stcal.ramp_fitting.ols_cas22 import JUMP_DET as _CAS22_JUMP_DET
from stcal.ramp_fitting.ols_cas22 import Parameter, Variance

from romandask.config import LIKELY_MIN_RESULTANTS
from romandask.instrument.matables import check_read_pattern

__all__ = ["EXCLUDED_GROUP_FLAGS", "LIKELY_MIN_RESULTANTS", "FitResult",
           "fit_likely", "fit_ols_cas22"]

#: Group DQ bits that exclude a resultant from the fit.
EXCLUDED_GROUP_FLAGS = int(group.SATURATED | group.DO_NOT_USE)


_GROUP_DO_NOT_USE = int(group.DO_NOT_USE)
_GROUP_JUMP_DET = int(group.JUMP_DET)
_PIXEL_DO_NOT_USE = np.uint32(pixel.DO_NOT_USE)
_PIXEL_JUMP_DET = np.uint32(pixel.JUMP_DET)


@dataclass
class FitResult:
    """Ramp-fit output for one detector image.

    Attributes
    ----------
    slope : numpy.ndarray
        float32 (ny, nx), e-/s; NaN where no slope can be measured.
    var_poisson : numpy.ndarray
        float32 (ny, nx), Poisson variance of ``slope``, (e-/s)^2; NaN where
        ``slope`` is NaN.
    var_rnoise : numpy.ndarray
        float32 (ny, nx), read-noise variance of ``slope``, (e-/s)^2; NaN
        where ``slope`` is NaN.
    dq : numpy.ndarray
        uint32 (ny, nx) of ``roman_datamodels.dqflags.pixel`` bits:
        ``JUMP_DET`` where the fitter flagged a jump, ``DO_NOT_USE`` where
        there is no slope.
    """

    slope: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    dq: np.ndarray


def fit_ols_cas22(resultants, groupdq, read_noise, read_pattern, frame_time, *,
                  use_jump=True) -> FitResult:
    """Fit ramps with stcal's Casertano (2022) optimal least squares.

    Parameters
    ----------
    resultants : array_like
        (nres, ny, nx) linearised, bias-subtracted resultants in electrons.
    groupdq : array_like
        (nres, ny, nx) integer ``roman_datamodels.dqflags.group`` flags;
        resultants with ``SATURATED`` or ``DO_NOT_USE`` are excluded.
    read_noise : array_like
        (ny, nx) or scalar sigma of one read, electrons.
    read_pattern : list of list of int
        1-based read indices averaged into each resultant; read ``k`` ends
        ``k * frame_time`` seconds after the reset.
    frame_time : float
        Seconds between reads.
    use_jump : bool, optional
        Run cas22's jump detection (default True).

    Returns
    -------
    FitResult
        Slopes, variances and pixel flags; see the module notes.
    """
    res, excluded, rn, pattern = _prepare(resultants, groupdq, read_noise,
                                          read_pattern, frame_time)
    dq_in = np.where(excluded, np.int32(_GROUP_DO_NOT_USE), np.int32(0))
    out = ols_cas22_fit.fit_ramps_casertano(
        res, dq_in, rn, float(frame_time), read_pattern=pattern,
        use_jump=bool(use_jump))

    slope = out.parameters[..., Parameter.slope]
    var_rnoise = out.variances[..., Variance.read_var]
    var_poisson = out.variances[..., Variance.poisson_var]
    # cas22 fits the maximal runs of unflagged resultants (dq breaks ramps and
    # every detected jump flags the resultants it splits on), and a run needs
    # two resultants to give a slope.
    good = out.dq == 0
    measured = np.any(good[:-1] & good[1:], axis=0)
    jump = np.any(out.dq & _CAS22_JUMP_DET, axis=0)
    return _result(slope, var_poisson, var_rnoise, jump, measured)


def fit_likely(resultants, groupdq, read_noise, read_pattern, frame_time, *,
               use_jump=True, rejection_threshold=None) -> FitResult:
    """Fit ramps with stcal's maximum-likelihood ("LIKELY") fitter.

    Parameters
    ----------
    resultants : array_like
        (nres, ny, nx) linearised, bias-subtracted resultants in electrons;
        ``nres`` must be at least 4.
    groupdq : array_like
        (nres, ny, nx) integer ``roman_datamodels.dqflags.group`` flags;
        resultants with ``SATURATED`` or ``DO_NOT_USE`` are excluded.
    read_noise : array_like
        (ny, nx) or scalar sigma of one read, electrons.
    read_pattern : list of list of int
        1-based read indices averaged into each resultant; read ``k`` ends
        ``k * frame_time`` seconds after the reset.
    frame_time : float
        Seconds between reads.
    use_jump : bool, optional
        Run the likelihood jump search (default True).  When False the
        rejection threshold is made infinite, so no difference is dropped.
    rejection_threshold : float, optional
        The jump threshold in sigma, as romancal's ``likely`` step takes it
        (romanimpreprocess's ``REJECTION_THRESHOLD``, 4.5 there): dropping
        one difference must improve chi^2 by its square, two adjacent ones
        by the chi^2 (2 degrees of freedom) of the same p-value.  None:
        stcal's defaults (20.25 and 23.8, i.e. 4.5 sigma).

    Returns
    -------
    FitResult
        Slopes, variances and pixel flags; see the module notes.

    Raises
    ------
    ValueError
        With fewer than ``LIKELY_MIN_RESULTANTS`` resultants.
    """
    # Imported here: likely_fit pulls in scipy.signal and astropy.convolution
    # (about 2 s) through stcal.jump.
    from stcal.ramp_fitting.likely_fit import likely_ramp_fit
    from stcal.ramp_fitting.ramp_fit_class import RampData

    res, excluded, rn, pattern = _prepare(resultants, groupdq, read_noise,
                                          read_pattern, frame_time)
    nres, ny, nx = res.shape
    if nres < LIKELY_MIN_RESULTANTS:
        raise ValueError(f"the likely fitter needs at least {LIKELY_MIN_RESULTANTS} "
                         f"resultants, got {nres}")

    # stcal reads the group DQ of one row into uint8 and drops every
    # difference touching a non-zero flag: hand it only the exclusion.
    gdq = np.where(excluded, np.uint8(_GROUP_DO_NOT_USE), np.uint8(0))[np.newaxis]
    ramp = RampData()
    ramp.set_arrays(res[np.newaxis], gdq, np.zeros((ny, nx), np.uint32),
                    np.zeros((ny, nx), np.float32))
    # frame/group times are unused once explicit read times are set below.
    ramp.set_meta(name="WFI", frame_time=float(frame_time),
                  group_time=float(frame_time), groupgap=0, nframes=1)
    ramp.set_dqflags({name: int(getattr(pixel, name)) for name in (
        "DO_NOT_USE", "JUMP_DET", "SATURATED", "PERSISTENCE", "NO_GAIN_VALUE",
        "UNRELIABLE_SLOPE")})
    ramp.read_pattern = [float(frame_time) * np.asarray(reads, dtype=np.float64)
                         for reads in pattern]
    # None selects stcal's default thresholds; an infinite threshold makes
    # every chi^2 improvement fall short, i.e. no jump search.
    ramp.rejection_threshold = (None if rejection_threshold is None
                                else float(rejection_threshold)) if use_jump else np.inf

    with np.errstate(divide="ignore", invalid="ignore"):
        image, _, _ = likely_ramp_fit(ramp, rn * np.float32(np.sqrt(2.0)),
                                      np.ones((ny, nx), np.float32))

    measured = np.isfinite(image["slope"])
    # likely_ramp_fit ORs the flags it sets back into ramp.groupdq.
    jump = np.any(ramp.groupdq[0] & _GROUP_JUMP_DET, axis=0)
    return _result(image["slope"], image["var_poisson"], image["var_rnoise"],
                   jump, measured)


def _prepare(resultants, groupdq, read_noise, read_pattern, frame_time):
    """Check the inputs and bring them to the types both fitters use.

    Returns
    -------
    res : numpy.ndarray
        float32 (nres, ny, nx) resultants, a copy, with non-finite values set
        to 0 (a NaN would otherwise leak through ``likely``'s masked products).
    excluded : numpy.ndarray
        bool (nres, ny, nx), True for resultants left out of the fit.
    read_noise : numpy.ndarray
        float32 (ny, nx).
    pattern : list of list of int
        The read pattern as plain Python lists.
    """
    res = np.array(resultants, dtype=np.float32)
    if res.ndim != 3:
        raise ValueError(f"resultants must be (nres, ny, nx), got shape {res.shape}")
    gdq = np.asarray(groupdq)
    if gdq.shape != res.shape:
        raise ValueError(f"groupdq shape {gdq.shape} != resultants shape {res.shape}")
    if not np.issubdtype(gdq.dtype, np.integer):
        raise TypeError(f"groupdq must be an integer array, got {gdq.dtype}")
    rn = np.ascontiguousarray(
        np.broadcast_to(np.asarray(read_noise, dtype=np.float32), res.shape[1:]))
    problem = check_read_pattern([list(reads) for reads in read_pattern])
    if problem:
        raise ValueError(f"read_pattern {problem}")
    pattern = [[int(r) for r in reads] for reads in read_pattern]
    if len(pattern) != res.shape[0]:
        raise ValueError(f"read_pattern has {len(pattern)} resultants, "
                         f"resultants has {res.shape[0]}")
    if not frame_time > 0:
        raise ValueError(f"frame_time must be positive, got {frame_time}")

    nonfinite = ~np.isfinite(res)
    excluded = ((gdq & EXCLUDED_GROUP_FLAGS) != 0) | nonfinite
    res[nonfinite] = 0.0
    return res, excluded, rn, pattern


def _result(slope, var_poisson, var_rnoise, jump, measured) -> FitResult:
    """Assemble a FitResult, blanking pixels without a measured slope."""
    slope = np.array(slope, dtype=np.float32)
    var_poisson = np.array(var_poisson, dtype=np.float32)
    var_rnoise = np.array(var_rnoise, dtype=np.float32)
    measured = measured & np.isfinite(slope)
    for arr in (slope, var_poisson, var_rnoise):
        arr[~measured] = np.nan
    dq = np.where(jump, _PIXEL_JUMP_DET, np.uint32(0))
    dq[~measured] |= _PIXEL_DO_NOT_USE
    return FitResult(slope, var_poisson, var_rnoise, dq.astype(np.uint32))
