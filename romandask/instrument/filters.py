"""WFI imaging filters and their GalSim bandpasses.

Filter names follow the Roman data products (``F062`` ... ``F213``); GalSim's
``galsim.roman`` names the same filters after their historical bands.  Fluxes
are in maggies (AB magnitude = -2.5 log10 flux), as in romanisim's catalogs.
"""

from __future__ import annotations

from functools import lru_cache

#: Roman WFI imaging filters, in order of wavelength (F146 is the wide filter).
FILTERS = ("F062", "F087", "F106", "F129", "F146", "F158", "F184", "F213")

#: Roman filter name -> galsim.roman bandpass name.
GALSIM_NAME = {
    "F062": "R062",
    "F087": "Z087",
    "F106": "Y106",
    "F129": "J129",
    "F146": "W146",
    "F158": "H158",
    "F184": "F184",
    "F213": "K213",
}


@lru_cache(maxsize=None)
def bandpasses():
    """All WFI imaging bandpasses (GalSim, AB zeropoints, QE included), by Roman name."""
    import galsim.roman

    bps = galsim.roman.getBandpasses(AB_zeropoint=True)
    return {name: bps[GALSIM_NAME[name]] for name in FILTERS}


def bandpass(filter_name: str):
    """The GalSim bandpass of one filter."""
    return bandpasses()[filter_name]


@lru_cache(maxsize=None)
def electrons_per_maggie(filter_name: str) -> float:
    """Electrons per second collected from a 1-maggie (AB mag 0) source.

    GalSim's AB zeropoint is the magnitude giving 1 photon cm^-2 s^-1 through
    the bandpass (whose throughput includes the detector QE), so a source of
    ``f`` maggies gives ``f * 10**(0.4 zp) * A`` electrons per second with A
    the collecting area (``galsim.roman.collecting_area``, cm^2).
    """
    import galsim.roman

    zp = bandpass(filter_name).zeropoint
    return 10.0 ** (0.4 * zp) * galsim.roman.collecting_area
