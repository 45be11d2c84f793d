"""A small romanisim L1 file and romanisim's own L2 of the same simulation.

Test helper (not a test module): ``make_romanisim_pair`` runs
``romanisim.image.simulate`` in romanisim's small-detector mode (its own
tests set ``romanisim.models.parameters.n_pix``) with no CRDS
(``usecrds=False``: romanisim's scalar reference values and the galsim.roman
WCS) and GalSim PSFs (``psftype="galsim"``: the pupil planes ship inside
romanisim, no stpsf data), and writes

* ``<name>_uncal.asdf``: the L1 (``level=1``), and
* ``<name>_cal.asdf``: romanisim's L2 (``level=2``) of the same simulation.

``simulate`` makes one level per call; all random draws (the counts image,
the apportioning of electrons to reads, cosmic rays, read noise) happen
before the level is chosen, and come from one ``galsim.UniformDeviate(seed)``.
So three calls with the same seed (levels 0, 1, 2) give the same electrons
image, and the L2 is romanisim's ramp fit (``romanisim.image.make_l2``) of
exactly the resultants stored in the L1.  Level 0 (the electrons image) is
returned too, as the truth behind both.

Both files are written as romanisim's own command-line tool writes them:
``{"roman": model, "romanisim": extras}``; in the L1 ``extras["dq"]`` holds
romanisim's per-resultant DQ (saturation 2, cosmic-ray hits 4) on the framed
(n_pix + 8)² grid.

Requires romanisim 0.14 or 0.15 (a test-only dependency; ``reference_read``
needs 0.15).
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

DEFAULT_SOURCES = (
    # (x, y, AB magnitude): numpy/galsim pixel coordinates of the n_pix
    # science array (x = column, y = row), as fractions of n_pix so that any
    # n_pix >= 64 keeps them isolated and away from the edges.
    (0.30, 0.40, 18.0),
    (0.70, 0.25, 19.0),
    (0.55, 0.75, 20.0),
    (0.20, 0.80, 21.0),
)

_PIXEL_PITCH_CM = 10e-4  # 10 micron pixels (romanisim.models.parameters.cr["pixel_size"])


_BANDPASS_CACHE: dict = {}


def _cached_get_bandpasses(original):
    """``getBandpasses`` memoised on its arguments.

    romanisim re-reads and re-thins the bandpass table 5 times per
    ``simulate`` call (about 60 % of this helper's run time); the galsim
    Bandpass objects are immutable once built, and each call gets its own dict.
    """

    def get_bandpasses(*args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in _BANDPASS_CACHE:
            _BANDPASS_CACHE[key] = original(*args, **kwargs)
        return dict(_BANDPASS_CACHE[key])

    return get_bandpasses


@contextmanager
def _romanisim_globals(n_pix, reference_data, quiet):
    """Set romanisim's module globals (n_pix, reference_data, log level, a
    memoised getBandpasses) for one run; restore them afterwards."""
    import romanisim.models.bandpass as rbandpass
    import romanisim.psf as rpsf
    from romanisim import log
    from romanisim.models import parameters

    saved_npix = parameters.n_pix
    saved_ref = dict(parameters.reference_data)
    saved_level = log.level
    saved_bp = (rbandpass.getBandpasses, rpsf.getBandpasses)
    try:
        rbandpass.getBandpasses = _cached_get_bandpasses(saved_bp[0])
        rpsf.getBandpasses = _cached_get_bandpasses(saved_bp[1])
        parameters.n_pix = int(n_pix)
        if reference_data:
            unknown = set(reference_data) - set(parameters.reference_data)
            if unknown:
                raise KeyError(f"unknown romanisim reference_data keys: {sorted(unknown)}")
            parameters.reference_data.update(reference_data)
        if quiet:
            log.setLevel(logging.WARNING)
        yield parameters
    finally:
        rbandpass.getBandpasses, rpsf.getBandpasses = saved_bp
        parameters.n_pix = saved_npix
        parameters.reference_data.clear()
        parameters.reference_data.update(saved_ref)
        log.setLevel(saved_level)


def _write(model, extras, path):
    import asdf

    model["meta"]["filename"] = Path(path).name  # as romanisim's own writer does
    af = asdf.AsdfFile()
    af.tree = {"roman": model, "romanisim": extras}
    af.write_to(str(path))


def make_romanisim_pair(
    tmpdir,
    seed: int = 1,
    n_pix: int = 128,
    ma_table_number: int = 4,
    read_pattern=None,
    filter: str = "F158",
    *,
    sca: int = 7,
    ra: float = 270.0,
    dec: float = 66.0,
    pa_aperture: float = 0.0,
    start_time: str = "2027-06-01T00:00:00",
    sources=DEFAULT_SOURCES,
    cosmic_rays: bool = False,
    cr_area: float | None = None,
    reference_read: bool = False,
    reference_data: dict | None = None,
    name: str = "romanisim",
    quiet: bool = True,
) -> dict:
    """Simulate one small SCA with romanisim; write its L1 and its L2.

    Parameters
    ----------
    tmpdir : path-like
        Directory for ``<name>_uncal.asdf`` and ``<name>_cal.asdf``.
    seed : int
        Seed of the ``galsim.UniformDeviate`` driving every random draw.
    n_pix : int
        Side of the simulated science array (romanisim's small-detector mode);
        the L1 frame is ``n_pix + 8`` with a zero 4-pixel reference border.
    ma_table_number : int
        romanisim's numbered MA table (Rev F tables 3-17, 109, 110).
    read_pattern : list[list[int]] or None
        Explicit read pattern (read indices, 1 = first read after reset);
        overrides the table's pattern (``ma_table_number`` is still recorded).
    filter : str
        Roman optical element, e.g. "F158".
    sca, ra, dec, pa_aperture, start_time
        Detector and pointing; (ra, dec) is the WFI_CEN pointing, as in
        ``romanisim.ris_make_utils`` (the default field is always observable).
    sources : sequence of (fx, fy, abmag)
        Point sources, positions as fractions of ``n_pix`` (0-based numpy
        x = column, y = row of the science array), AB magnitudes in ``filter``.
    cosmic_rays : bool
        Simulate cosmic rays (romanisim's model, DQ bit 4 in the L1 extras and
        the L2).  Off by default.
    cr_area : float or None
        Detector area (cm²) for the cosmic-ray rate.  romanisim's default is
        the full 4096² SCA (16.8 cm²), which on a small array gives
        (4088/n_pix)² times the real hit density; None uses the area of the
        n_pix² array, i.e. the real density.
    reference_read : bool
        Flight-like L1 encoding (romanisim's ``reference_read=True``): the L1
        stores ``reference_read`` and data = resultant - reference read +
        ``meta.instrument.data_encoding_offset`` (4000 DN).  The L2 is the
        same either way.  Off by default (L1 data = absolute DN).
    reference_data : dict or None
        Temporary overrides of ``romanisim.models.parameters.reference_data``
        (keys: dark [e-/s], gain [e-/DN], readnoise [DN], saturation [DN],
        flat; scalars or (n_pix, n_pix) arrays).  Restored afterwards.
    name : str
        File-name stem.
    quiet : bool
        Silence romanisim's INFO logging during the run.

    Returns
    -------
    dict with keys
        l1_path, l2_path : pathlib.Path
        l1, l2 : the roman_datamodels nodes that were written
        l1_dq : (nresultants, n_pix + 8, n_pix + 8) uint32 DQ (romanisim extras)
        counts : (n_pix, n_pix) float32, electrons per pixel integrated to the
            last read (sources + sky + dark, Poisson noise included; level 0)
        catalog : astropy Table given to romanisim (ra, dec, type, ..., filter
            in maggies) plus columns x, y, abmag
        simcatobj : romanisim's rendered-source table (x, y, counts [e-])
        read_pattern, ma_table_number, frame_time [s], exposure_time [s]
            (last read time), nborder
        gain [e-/DN], read_noise [DN per read], dark_current [e-/s],
        saturation [DN], pedestal [e-], pedestal_dn, pedestal_extra_noise [e-],
        flat (None = 1), linearity (False), ipc (False: romanisim 0.15 computes
        IPC but drops the result), cosmic_rays, crparam, reference_read,
        data_encoding_offset (None unless reference_read), seed, n_pix,
        filter, sca, galsim_wcs (the galsim.roman WCS of the n_pix array,
        galsim/numpy 0-based x, y; use its toImage for sky -> pixel)
    """
    import galsim
    from astropy import table

    from romanisim import image as rimage
    from romanisim import ris_make_utils
    from romanisim.models import wcs as rwcs

    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    l1_path = tmpdir / f"{name}_uncal.asdf"
    l2_path = tmpdir / f"{name}_cal.asdf"

    with _romanisim_globals(n_pix, reference_data, quiet) as parameters:
        meta = ris_make_utils.set_metadata(
            date=start_time, bandpass=filter, sca=sca,
            ma_table_number=ma_table_number, usecrds=False,
            # 1.0: skip the ephemeris-based velocity-aberration factor (the
            # galsim.roman WCS used without CRDS ignores it anyway)
            scale_factor=1.0)
        rwcs.fill_in_parameters(meta, _skycoord(ra, dec), pa_aper=pa_aperture,
                                boresight=False)
        if read_pattern is not None:
            meta["exposure"]["read_pattern"] = [list(map(int, r)) for r in read_pattern]
            meta["exposure"]["nresultants"] = len(read_pattern)
        pattern = [list(r) for r in meta["exposure"]["read_pattern"]]

        # The catalog: point sources placed through the same WCS simulate uses.
        imwcs = rwcs.get_wcs(meta, usecrds=False)
        xs = np.array([s[0] * n_pix for s in sources], dtype="f8")
        ys = np.array([s[1] * n_pix for s in sources], dtype="f8")
        mags = np.array([s[2] for s in sources], dtype="f8")
        world = [imwcs.toWorld(galsim.PositionD(x, y)) for x, y in zip(xs, ys)]
        cat = table.Table()
        cat["ra"] = [w.ra.deg for w in world]
        cat["dec"] = [w.dec.deg for w in world]
        cat["type"] = ["PSF"] * len(world)
        cat["n"] = np.full(len(world), -1.0)
        cat["half_light_radius"] = np.zeros(len(world))
        cat["pa"] = np.zeros(len(world))
        cat["ba"] = np.ones(len(world))
        cat[filter] = 10.0 ** (-0.4 * mags)  # maggies
        truth = cat.copy()
        truth["x"] = xs
        truth["y"] = ys
        truth["abmag"] = mags

        if cosmic_rays:
            area = cr_area if cr_area is not None else (n_pix * _PIXEL_PITCH_CM) ** 2
            crparam = {"area": float(area)}
        else:
            crparam = None

        # romanisim 0.14 (the release romancal 1.1 requires) has no reference read
        extra = {"reference_read": True} if reference_read else {}

        def run(level):
            return rimage.simulate(
                copy.deepcopy(meta), cat.copy(), usecrds=False, psftype="galsim",
                level=level, crparam=crparam, rng=galsim.UniformDeviate(seed), **extra)

        l0, _ = run(0)
        l1, l1_extras = run(1)
        l2, l2_extras = run(2)

        _write(l1, l1_extras, l1_path)
        _write(l2, l2_extras, l2_path)

        ref = dict(parameters.reference_data)
        frame_time = float(parameters.read_time)
        out = dict(
            l1_path=l1_path,
            l2_path=l2_path,
            l1=l1,
            l2=l2,
            l1_dq=np.asarray(l1_extras["dq"]).astype(np.uint32),
            counts=np.asarray(l0["data"], dtype=np.float32),
            catalog=truth,
            simcatobj=l1_extras["simcatobj"],
            read_pattern=pattern,
            ma_table_number=int(ma_table_number),
            frame_time=frame_time,
            exposure_time=frame_time * pattern[-1][-1],
            nborder=int(parameters.nborder),
            gain=ref["gain"],
            read_noise=ref["readnoise"],
            dark_current=ref["dark"],
            saturation=ref["saturation"],
            pedestal=float(parameters.pedestal),
            pedestal_dn=float(parameters.pedestal) / np.median(ref["gain"]),
            pedestal_extra_noise=float(parameters.pedestal_extra_noise),
            flat=ref["flat"],
            linearity=ref["linearity"] is not None,
            # romanisim 0.15 calls l1.add_ipc (or IPC.apply with CRDS) but
            # discards the convolved array: no IPC reaches the resultants.
            ipc=False,
            cosmic_rays=bool(cosmic_rays),
            crparam=crparam,
            reference_read=bool(reference_read),
            data_encoding_offset=(
                int(l1["meta"]["instrument"]["data_encoding_offset"])
                if reference_read else None),
            galsim_wcs=imwcs,
            seed=seed,
            n_pix=int(n_pix),
            filter=filter,
            sca=int(sca),
        )
    return out


def _skycoord(ra, dec):
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra * u.deg, dec * u.deg)
