"""Level 1 (uncalibrated ramp) ASDF files of the Roman WFI.

One file holds one SCA of one exposure as a
:class:`roman_datamodels.datamodels.ScienceRawModel` (``wfi_science_raw``
schema of RAD): the resultants ``data`` (nresultants, ny, nx) and the
amplifier-33 reference columns ``amp33`` (nresultants, ny, 128), both uint16
DN, with the metadata romancal reads.  A run with ``detector.window: N``
stores the central N x N science pixels plus the 4-pixel reference border,
so ``data`` is (nresultants, N + 8, N + 8); a full-frame run gives the
flight-sized 4096 x 4096 arrays.

File names
    Roman's exposure-level pattern,
    ``r<visit_id>_<ggsaa>_<eeee>_wfiNN_<suffix>.asdf``, where the visit id
    concatenates program (5 digits), execution plan (2), pass (3), segment
    (3), observation (3) and visit (3), ``ggsaa`` is the visit file group (2),
    sequence (1) and activity (2), ``eeee`` the exposure number and ``NN`` the
    SCA.  A simulated survey is program 1, plan 1, pass 1, segment 1,
    observation 1, group 1, sequence 1 (prime), activity ``01``; exposure
    ``id`` is exposure number ``id % 9999 + 1`` of visit ``id // 9999 + 1``
    (the exposure number has four digits).  The same identifiers go into
    ``meta.observation``.

Pointing
    ``Exposure.ra, dec`` is the WFI centre (aperture ``WFI_CEN``) and
    ``Exposure.pa`` the position angle of the observatory +Y axis east of
    north, as ``galsim.roman.getWCS(PA=..., PA_is_FPA=False)`` reads it.
    ``meta.pointing.pa_aperture`` holds that angle, which is how romanisim's
    galsim.roman WCS reads it back.  The telescope (V2, V3) frame is placed
    on the sky from GalSim's focal-plane layout and the SIAF position of
    ``WFI_CEN``, (V2, V3) = :data:`WFI_CEN_V2V3`: the boresight (V1) lies
    0.496 deg from the WFI centre along the focal-plane -Y axis (position
    angle ``pa + 300`` deg), and seen from the boresight ``WFI_CEN`` lies
    120 deg from +V3 towards +V2.  The SCA centres then come out at
    (V2, V3) = (1313, -1041) arcsec for WFI01, for example, and the nominal
    position angle of each detector's +y axis (GalSim's ``ORIENTAT``) is
    ``roll_ref + 120`` deg, as ``V3IdlYAngle = -60`` with ``vparity = -1``
    has it.  ``meta.wcsinfo`` describes the SCA's full-frame aperture
    ``WFInn_FULL``, whose reference point is the centre of the 4088 x 4088
    science array, while ``s_region`` outlines the pixels in the file.  No
    velocity aberration is simulated (``scale_factor`` 1), and
    ``meta.ephemeris`` gives the Earth's barycentric position and velocity
    in place of Roman's (as romanisim does).

Reproducibility
    A file depends only on its inputs and on the installed package versions,
    which asdf records: ``meta.file_date`` is the exposure start rather than
    the wall clock, and :func:`write_asdf` writes the tree with asdf directly
    because :meth:`~roman_datamodels.datamodels.DataModel.save` stamps
    ``file_date`` with the current time.  Writing the same model twice gives
    identical bytes.

Simulation truth
    The truth table of the sources drawn on the SCA, the window size and the
    pixel convention travel with the model under the key ``romandask`` of the
    ``roman`` node; RAD's schemas leave such extra keys alone, so they
    validate, save and reopen (``roman_datamodels.datamodels.open(path)
    .romandask["truth"]``).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import asdf
import astropy.units as u
import galsim
import numpy as np
from astropy.coordinates import SkyCoord, SkyOffsetFrame, get_body_barycentric_posvel
from astropy.time import Time, TimeDelta
from roman_datamodels import datamodels as rdm

from . import __version__
from .config import FITS_LAYOUTS, N_PIX, Exposure
from .errors import InputError, atomic_path
from .survey.footprint import SCAView

#: Reference pixels on each side of the 4088 x 4088 science array.
N_BORDER = 4
#: Columns of the amplifier-33 reference output.
N_AMP33 = 128
#: Key of the simulation's own entries in the ``roman`` node.
TREE_KEY = "romandask"

#: SIAF (V2, V3) of the ``WFI_CEN`` reference point, arcsec (as in romanisim).
WFI_CEN_V2V3 = (1546.3846181707652, -892.7916365721071)
#: SIAF angle of the V3 axis to the ideal Y axis of the WFI apertures, deg.
V3_IDEAL_Y_ANGLE = -60.0
#: SIAF parity of the ideal frame relative to the V2, V3 frame.
VPARITY = -1
#: Angle from the observatory +Y axis to the focal-plane +Y axis, deg
#: (``galsim.roman`` ``theta_fpa``).
FPA_ANGLE = 120.0

#: ``meta.exposure.ma_table_number`` of a read pattern defined in the config
#: rather than taken from the numbered tables: roman_datamodels' placeholder
#: for an integer without a value.
CUSTOM_MA_TABLE_NUMBER = -999999
#: ``meta.exposure.ma_table_id`` of such a read pattern.
CUSTOM_MA_TABLE_ID = "CUSTOM"

PROGRAM = 1
EXECUTION_PLAN = 1
PASS = 1
SEGMENT = 1
OBSERVATION = 1
VISIT_FILE_GROUP = 1
VISIT_FILE_SEQUENCE = 1  # 1: the WFI is the prime instrument
VISIT_FILE_ACTIVITY = "01"
#: Largest exposure number (four digits) and visit number (three digits).
MAX_EXPOSURE_NUMBER = 9999
MAX_VISIT_NUMBER = 999

#: Longest ``meta.exposure.ma_table_name`` the schema accepts.
MAX_MA_TABLE_NAME = 50

#: Mirrors roman_datamodels' ``DataModel.save``: arrays this small are
#: written inline in the YAML tree, larger ones as lz4-compressed blocks.
ARRAY_INLINE_THRESHOLD = 512
ARRAY_COMPRESSION = "lz4"

PIXEL_CONVENTION = (
    "truth x, y: 0-based science-pixel coordinates of the simulated window, "
    "pixel centres at integers; a source at (x, y) lies in data[:, y + 4, x + 4] "
    "(the arrays carry the 4-pixel reference border); window_origin: 0-based "
    "coordinates of window pixel (0, 0) in the full 4088 x 4088 science array"
)
#: The same for an L2 image, whose arrays hold the science window only.
L2_PIXEL_CONVENTION = (
    "truth x, y: 0-based science-pixel coordinates of the simulated window, "
    "pixel centres at integers; a source at (x, y) lies in data[y, x] (the "
    "image has no reference border); window_origin: 0-based coordinates of "
    "window pixel (0, 0) in the full 4088 x 4088 science array"
)


# --------------------------------------------------------------------------
# identifiers and file names
# --------------------------------------------------------------------------

def observation_ids(exposure: Exposure) -> dict[str, Any]:
    """The ``meta.observation`` identifiers of an exposure.

    Exposure ``id`` is exposure number ``id % 9999 + 1`` of visit
    ``id // 9999 + 1``; the other numbers are fixed (see the module
    docstring).  Raises ValueError for an id beyond the 999th visit.
    """
    visit, index = divmod(exposure.id, MAX_EXPOSURE_NUMBER)
    visit += 1
    if visit > MAX_VISIT_NUMBER:
        raise ValueError(f"exposure id {exposure.id} does not fit Roman's identifiers "
                         f"(at most {MAX_VISIT_NUMBER * MAX_EXPOSURE_NUMBER} exposures)")
    ids = {
        "program": PROGRAM,
        "execution_plan": EXECUTION_PLAN,
        "pass": PASS,
        "segment": SEGMENT,
        "observation": OBSERVATION,
        "visit": visit,
        "visit_file_group": VISIT_FILE_GROUP,
        "visit_file_sequence": VISIT_FILE_SEQUENCE,
        "visit_file_activity": VISIT_FILE_ACTIVITY,
        "exposure": index + 1,
        "wfi_parallel": False,
    }
    ids["visit_id"] = (f"{PROGRAM:05d}{EXECUTION_PLAN:02d}{PASS:03d}{SEGMENT:03d}"
                       f"{OBSERVATION:03d}{visit:03d}")
    ids["observation_id"] = (f"{ids['visit_id']}{VISIT_FILE_GROUP:02d}"
                             f"{VISIT_FILE_SEQUENCE:01d}{VISIT_FILE_ACTIVITY}"
                             f"{ids['exposure']:04d}")
    return ids


def _product_filename(exposure: Exposure, sca: int, suffix: str, prefix: str) -> str:
    if not 1 <= sca <= 18:
        raise ValueError(f"SCA {sca} is not one of 1 to 18")
    ids = observation_ids(exposure)
    activity = (f"{ids['visit_file_group']:02d}{ids['visit_file_sequence']:01d}"
                f"{ids['visit_file_activity']}")
    return f"{prefix}{ids['visit_id']}_{activity}_{ids['exposure']:04d}_wfi{sca:02d}_{suffix}.asdf"


def l1_filename(exposure: Exposure, sca: int, prefix: str = "r") -> str:
    """Name of the Level 1 file of one SCA of an exposure.

    For example ``r0000101001001001001_01101_0001_wfi02_uncal.asdf`` for
    exposure id 0, SCA 2.
    """
    return _product_filename(exposure, sca, "uncal", prefix)


def l2_filename(exposure: Exposure, sca: int, prefix: str = "r") -> str:
    """Name of the Level 2 (calibrated image) file of one SCA of an exposure."""
    return _product_filename(exposure, sca, "cal", prefix)


def visit_metadata(exposures: Iterable[Exposure], exposure: Exposure) -> dict[str, Any]:
    """``meta.visit`` entries of ``exposure``'s visit, for ``extra_meta``.

    ``exposures`` is the whole survey; the visit starts with the first of its
    exposures and counts all of them.  Without these entries
    :func:`l1_model` gives ``meta.visit`` the exposure's own start time and
    ``nexposures`` 1.
    """
    exposures = list(exposures)
    if exposure not in exposures:
        raise ValueError(f"exposure {exposure.id} is not one of the given exposures")
    return visits_metadata(exposures)[exposure.id]


def visits_metadata(exposures: Iterable[Exposure]) -> dict[int, dict[str, Any]]:
    """:func:`visit_metadata` of every exposure, by exposure id, in one pass (O(N))."""
    exposures = list(exposures)
    visits = [observation_ids(e)["visit"] for e in exposures]
    start: dict[str, Any] = {}
    count: dict[str, int] = {}
    for e, visit in zip(exposures, visits):
        start[visit] = min(start.get(visit, e.start_time), e.start_time)
        count[visit] = count.get(visit, 0) + 1
    entries = {visit: {"visit": {"start_time": _utc(start[visit]), "nexposures": count[visit]}}
               for visit in start}
    return {e.id: entries[visit] for e, visit in zip(exposures, visits)}


# --------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------

def _utc(when) -> Time:
    """An ISO-formatted UTC astropy Time from a naive UTC datetime."""
    t = Time(when, scale="utc")
    t.format = "isot"
    return t


def _exposure_meta(exposure: Exposure) -> dict[str, Any]:
    table = exposure.ma_table
    name = table.label
    if len(name) > MAX_MA_TABLE_NAME:
        raise ValueError(f"MA table name {name!r} is longer than the {MAX_MA_TABLE_NAME} "
                         "characters meta.exposure.ma_table_name allows")
    start = _utc(exposure.start_time)
    numbered = table.number is not None
    return {
        "type": "WFI_IMAGE",
        "start_time": start,
        "end_time": start + TimeDelta(table.exposure_time, format="sec"),
        "engineering_quality": "OK",
        "ma_table_id": f"SCI{table.number:04d}" if numbered else CUSTOM_MA_TABLE_ID,
        "ma_table_name": name,
        "ma_table_number": table.number if numbered else CUSTOM_MA_TABLE_NUMBER,
        "nresultants": table.nresultants,
        "data_problem": None,
        "frame_time": float(table.frame_time),
        "exposure_time": float(table.exposure_time),
        "effective_exposure_time": float(table.effective_exposure_time),
        "read_pattern": [[int(r) for r in resultant] for resultant in table.read_pattern],
        "truncated": False,
        "hga_move": False,
    }


def _skycoord(position: galsim.CelestialCoord) -> SkyCoord:
    return SkyCoord(position.ra.deg * u.deg, position.dec.deg * u.deg)


def _pointing_meta(view: SCAView) -> dict[str, dict[str, Any]]:
    """``pointing``, ``wcsinfo`` and ``velocity_aberration`` of one SCA."""
    exposure = view.exposure
    wfi_cen = SkyCoord(exposure.ra * u.deg, exposure.dec * u.deg)
    v2, v3 = WFI_CEN_V2V3
    offset = np.hypot(v2, v3) * u.arcsec
    # From WFI_CEN, the boresight lies along the focal-plane -Y axis.
    boresight = wfi_cen.directional_offset_by((exposure.pa + FPA_ANGLE + 180.0) * u.deg, offset)
    # Seen from the boresight, WFI_CEN lies atan2(V2, V3) from +V3 towards +V2,
    # and +V2 is 90 deg east of +V3 (the V frame is right-handed about V1).
    pa_v3 = boresight.position_angle(wfi_cen) - np.arctan2(v2, v3) * u.rad
    v_frame = SkyOffsetFrame(origin=boresight, rotation=pa_v3)
    v3_pole = boresight.directional_offset_by(pa_v3, 90 * u.deg)

    centre = (N_PIX + 1) / 2  # GalSim 1-based coordinates of the SCA centre
    ref = _skycoord(view.wcs.toWorld(galsim.PositionD(centre, centre)))
    ref_v = ref.transform_to(v_frame)
    ra_ref, dec_ref = float(ref.ra.deg), float(ref.dec.deg)
    return {
        "pointing": {
            "pa_aperture": float(exposure.pa),
            "pointing_engineering_source": "PLANNED",
            "ra_v1": float(boresight.ra.deg),
            "dec_v1": float(boresight.dec.deg),
            "pa_v3": float(pa_v3.to_value(u.deg) % 360.0),
            "target_aperture": "WFI_CEN",
            "target_ra": float(exposure.ra),
            "target_dec": float(exposure.dec),
        },
        "wcsinfo": {
            "aperture_name": f"WFI{view.sca:02d}_FULL",
            "v2_ref": float(ref_v.lon.wrap_at(180 * u.deg).arcsec),
            "v3_ref": float(ref_v.lat.arcsec),
            "vparity": VPARITY,
            "v3yangle": V3_IDEAL_Y_ANGLE,
            "ra_ref": ra_ref,
            "dec_ref": dec_ref,
            "roll_ref": float(ref.position_angle(v3_pole).deg % 360.0),
            "s_region": view.s_region(),
        },
        "velocity_aberration": {
            "ra_reference": ra_ref,
            "dec_reference": dec_ref,
            "scale_factor": 1.0,
        },
    }


def _ephemeris_meta(start: Time) -> dict[str, Any]:
    """The Earth's barycentric position and velocity, standing in for Roman's."""
    position, velocity = get_body_barycentric_posvel("earth", start)
    x, y, z = (float(c) for c in position.xyz.to_value(u.km))
    vx, vy, vz = (float(c) for c in velocity.xyz.to_value(u.km / u.s))
    return {
        "ephemeris_reference_frame": "ICRS",
        "type": "DEFAULT",
        "time": float(start.mjd),
        "spatial_x": x, "spatial_y": y, "spatial_z": z,
        "velocity_x": vx, "velocity_y": vy, "velocity_z": vz,
    }


def _merged(base: Mapping, extra: Mapping) -> dict:
    """``base`` updated recursively by ``extra`` (neither is modified)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def truth_tree(truth: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The truth table as equal-length 1-D arrays asdf can store."""
    columns, length = {}, None
    for name, values in truth.items():
        values = np.asarray(values)
        if values.dtype.kind == "O":
            values = values.astype(str)
        if values.ndim != 1 or (length is not None and len(values) != length):
            raise ValueError(f"truth column {name!r} has shape {values.shape}; "
                             "the columns must be 1-D and of equal length")
        length = len(values)
        columns[str(name)] = values
    return columns


def _check_array(name: str, array: np.ndarray, shape: tuple[int, ...],
                 dtype: type = np.uint16) -> None:
    """The schema wants these exact dtypes; refuse rather than cast silently."""
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        kind = getattr(array, "dtype", type(array).__name__)
        raise TypeError(f"{name} must be a {np.dtype(dtype).name} numpy array, got {kind}")
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")


# --------------------------------------------------------------------------
# the datamodel
# --------------------------------------------------------------------------

def l1_model(data: np.ndarray, amp33: np.ndarray, exposure: Exposure, view: SCAView, *,
             window: int, truth: Mapping[str, np.ndarray] | None,
             extra_meta: Mapping[str, Any] | None = None,
             resultantdq: np.ndarray | None = None,
             sim_extra: Mapping[str, Any] | None = None,
             validate: bool = True) -> rdm.ScienceRawModel:
    """The Level 1 datamodel of one SCA of one exposure.

    Parameters
    ----------
    data : numpy.ndarray
        Resultants, uint16 DN, shaped (nresultants, window + 8, window + 8):
        the simulated window with its 4-pixel reference border.
    amp33 : numpy.ndarray
        Amplifier-33 reference columns, uint16 DN, (nresultants, window + 8, 128).
    exposure : romandask.config.Exposure
        The exposure; its MA table sets the number of resultants.
    view : romandask.survey.footprint.SCAView
        The SCA of ``exposure`` (WCS and simulated window).
    window : int
        Side of the simulated window in science pixels.
    truth : dict of 1-D arrays, or None
        The truth table of the sources drawn (exposure, sca, id, ra, dec, x,
        y, flux, type); stored under ``romandask["truth"]``.
    extra_meta : dict, optional
        Entries merged recursively into ``meta`` after romandask's own, e.g.
        ``visit_metadata(...)`` or a different ``file_date``.
    resultantdq : numpy.ndarray, optional
        Resultant data quality flags, uint8, shaped like ``data``.
    sim_extra : dict, optional
        More entries under ``romandask`` (the detector model that made the
        file, the window's FITS WCS), which the calibration reads back.

    Returns
    -------
    roman_datamodels.datamodels.ScienceRawModel
        A validated model holding ``data``, ``amp33`` (and ``resultantdq``)
        without copying them; ``meta.filename`` is :func:`l1_filename`.
        ``validate=False`` leaves the validation to the write
        (:func:`write_asdf` validates what it writes), which then costs one
        schema pass instead of two.
    """
    if view.exposure != exposure:
        raise ValueError(f"view belongs to exposure {view.exposure.id}, not {exposure.id}")
    if view.shape != (window, window):
        raise ValueError(f"view covers {view.shape} pixels, not a {window} x {window} window")
    nres = exposure.ma_table.nresultants
    side = window + 2 * N_BORDER
    _check_array("data", data, (nres, side, side))
    _check_array("amp33", amp33, (nres, side, N_AMP33))
    if resultantdq is not None:
        _check_array("resultantdq", resultantdq, data.shape, np.uint8)

    meta = l1_meta(exposure, view, extra_meta)
    sim = sim_record(view, window, truth)
    if sim_extra:
        sim.update(sim_extra)

    # The fake arrays are placeholders for the real ones: keep them tiny.
    model = rdm.ScienceRawModel.create_fake_data({"meta": meta}, shape=(nres, 1, 1))
    model.data = data
    model.amp33 = amp33
    if resultantdq is not None:
        model.resultantdq = resultantdq
    model[TREE_KEY] = sim
    if validate:
        model.validate()
    return model


def sim_entries(model) -> Mapping[str, Any]:
    """The ``romandask`` entries of a file romandask wrote ({} for anyone else's)."""
    return model[TREE_KEY] if TREE_KEY in model else {}


_BLOCK_MAGIC = b"\xd3BLK"
_INDEX_MAGIC = b"#ASDF BLOCK INDEX"


def asdf_blocks_problem(path: Path) -> str | None:
    """What is wrong with the binary blocks of an ASDF file (None: nothing found).

    Reads the tree's text and walks the block headers (ASDF standard: magic,
    header size, flags, compression, allocated, used and data sizes) to the
    end of the file, reading only the headers, so that a file cut short (a
    copy interrupted, a full disk) is found before its arrays are needed: a
    tree without its end, a block that runs past the end of the file, fewer
    blocks than the tree's arrays refer to.  Files that are not ASDF are left
    to the reader to report.
    """
    import re
    import struct

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        tree = f.read(1 << 20)
        if not tree.startswith(b"#ASDF"):
            return None
        first = tree.find(_BLOCK_MAGIC)
        while first < 0:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            start = max(0, len(tree) - 3)
            tree += chunk
            found = tree.find(_BLOCK_MAGIC, start)
            first = found if found >= 0 else -1
        text = tree[:first] if first >= 0 else tree
        if not text.rstrip().endswith(b"\n..."):
            return f"the file ends inside its ASDF tree ({size} bytes; cut short)"
        sources = [int(m) for m in re.findall(
            rb"!core/ndarray-[0-9.]+\s*\{?\s*source:\s*(\d+)", text)]
        needed = max(sources) + 1 if sources else 0
        pos, n = (first, 0) if first >= 0 else (size, 0)
        while pos < size:
            f.seek(pos)
            lead = f.read(len(_INDEX_MAGIC))
            if lead.startswith(_INDEX_MAGIC):
                break
            if not lead.startswith(_BLOCK_MAGIC):
                return f"no block header at byte {pos} ({size} bytes in the file)"
            f.seek(pos + 4)
            raw = f.read(2 + 48)
            if len(raw) < 50:
                return f"the file ends inside the header of block {n} ({size} bytes; cut short)"
            (header_size,) = struct.unpack(">H", raw[:2])
            flags, _, allocated, used, _ = struct.unpack(">I4sQQQ", raw[2:34])
            n += 1
            if flags & 1:  # a streamed block runs to the end of the file
                break
            end = pos + 6 + header_size + allocated
            if used > allocated or end > size:
                return (f"block {n - 1} needs bytes up to {end} but the file has {size} "
                        f"(cut short)")
            pos = end
    if n < needed:
        return f"has {n} of the {needed} binary blocks its tree refers to (cut short)"
    return None


def open_datamodel(path: Path, kind: str):
    """Open a Roman datamodel file; a one-line InputError if it is missing or
    unreadable (``kind``, e.g. "L1 (_uncal)", names the file wanted)."""
    import warnings

    if not Path(path).is_file():
        raise InputError(str(path), "does not exist", f"give an {kind} ASDF file")
    problem = asdf_blocks_problem(path)
    if problem:
        raise InputError(str(path), f"is damaged: {problem}",
                         f"give a whole {kind} ASDF file (copy or write it again)")
    try:
        with warnings.catch_warnings():
            # a renamed file's meta.filename differs from its name; outputs get
            # their own names anyway
            warnings.filterwarnings("ignore", message="meta.filename")
            return rdm.open(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file
        raise InputError(str(path), f"cannot be read as a Roman datamodel ({exc})",
                         f"give an {kind} ASDF file") from None


def read_arrays(model, names, where: str, kind: str) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an open model (those it has), read now; a file
    whose blocks cannot be read (damaged after it was checked) is a one-line
    InputError naming it, not a traceback from inside a task."""
    arrays = {}
    for name in names:
        if name not in model:
            continue
        try:
            arrays[name] = np.asarray(model[name])
        except Exception as exc:  # noqa: BLE001 - any failure to read it is the file's
            raise InputError(where, f"is damaged: its {name} array cannot be read ({exc})",
                             f"give a whole {kind} ASDF file (copy or write it again)") from None
    return arrays


def read_exposure(model, where: str, kind: str):
    """The MA table and SCA number a Roman file's ``meta`` records.

    Raises a one-line :class:`~romandask.errors.InputError` for a read
    pattern that is not valid or a detector that is not one WFI SCA; ``kind``
    ("L1", "L2") names the file wanted in the fix.
    """
    from .instrument.matables import MATable, check_read_pattern

    exp = model.meta.exposure
    pattern = [list(map(int, r)) for r in exp.read_pattern]
    problem = check_read_pattern(pattern)
    if problem:
        raise InputError(where, f"meta.exposure.read_pattern {problem}",
                         f"give an {kind} file with a valid read pattern")
    table = MATable.from_pattern(pattern, float(exp.frame_time),
                                 name=str(getattr(exp, "ma_table_name", "custom")))
    detector = str(model.meta.instrument.detector)
    try:
        sca = int(detector.replace("WFI", ""))
        if not 1 <= sca <= 18:
            raise ValueError(detector)
    except ValueError:
        raise InputError(where, f"meta.instrument.detector is {detector!r}",
                         f"give an {kind} file of one WFI SCA (WFI01 ... WFI18)") from None
    return table, sca


def sim_record(view: SCAView, window: int,
               truth: Mapping[str, np.ndarray] | None = None, level: str = "L1"
               ) -> dict[str, Any]:
    """The ``romandask`` entries every file of one SCA carries: the window, the
    pixel convention (of an ``L1`` or ``L2`` file's arrays) and the truth
    table of its sources."""
    bounds = view.bounds
    sim = {
        "version": __version__,
        "window": int(window),
        "window_origin": [bounds.xmin - 1, bounds.ymin - 1],
        "reference_border": N_BORDER,
        "pixel_convention": pixel_convention(level),
    }
    if truth is not None:
        sim["truth"] = truth_tree(truth)
    return sim


def pixel_convention(level: str) -> str:
    """Where a truth position lies in the arrays of an ``L1`` or ``L2`` file."""
    if level not in ("L1", "L2"):
        raise ValueError(f"level must be L1 or L2, got {level!r}")
    return PIXEL_CONVENTION if level == "L1" else L2_PIXEL_CONVENTION


def l1_meta(exposure: Exposure, view: SCAView,
            extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``meta`` of one SCA of one exposure, as L1 and L2 share it."""
    exposure_meta = _exposure_meta(exposure)
    start = exposure_meta["start_time"]
    meta = {
        "filename": l1_filename(exposure, view.sca),
        "file_date": start,
        "exposure": exposure_meta,
        "ephemeris": _ephemeris_meta(start),
        "instrument": {"name": "WFI", "detector": f"WFI{view.sca:02d}",
                       "optical_element": exposure.filter},
        "observation": observation_ids(exposure),
        "visit": {"start_time": start, "nexposures": 1, "internal_target": False,
                  "wfi_acm_z_defocus_size": None,
                  "dither": {"primary_name": None, "subpixel_name": None,
                             "executed_pattern": None}},
        **_pointing_meta(view),
    }
    if extra_meta:
        meta = _merged(meta, extra_meta)
    return meta


#: meta.cal_step of an L2 file: the steps the calibration runs.
CAL_STEPS_RUN = ("assign_wcs", "dq_init", "saturation", "refpix", "linearity", "dark",
                 "ramp_fit", "flat_field", "photom")
CAL_STEPS_ALL = ("assign_wcs", "flat_field", "dark", "dark_decay", "dq_init", "flux",
                 "linearity", "photom", "source_catalog", "ramp_fit", "refpix", "saturation",
                 "outlier_detection", "tweakreg", "skymatch", "wfi18_transient")
#: Nominal WFI pixel: 0.11 arcsec on a side (galsim.roman.pixel_scale), in sr.
NOMINAL_PIXEL_AREA_SR = float((0.11 * u.arcsec).to_value(u.rad) ** 2)


def photometry_meta(filter_name: str, reference_gain: float) -> dict[str, float]:
    """``meta.photometry`` of an L2 image in DN/s per nominal pixel at ``reference_gain``.

    1 DN/s is ``reference_gain`` e-/s; a 1-maggie (3631 Jy) source gives
    :func:`~romandask.instrument.filters.electrons_per_maggie` e-/s; a rate
    per nominal pixel area is a surface brightness.
    """
    from .instrument.filters import electrons_per_maggie

    jansky = 3631.0 * reference_gain / electrons_per_maggie(filter_name)
    return {"conversion_megajanskys": float(jansky * 1e-6 / NOMINAL_PIXEL_AREA_SR),
            "conversion_megajanskys_uncertainty": 0.0,
            "pixel_area": NOMINAL_PIXEL_AREA_SR}


def calibration_record(fitter: str, reference_gain: float, units: str = "romandask",
                       exclude_first: bool = False) -> dict[str, Any]:
    """What an L2 file records of its calibration under ``romandask``: what
    source injection needs to refit it as it was fitted, and the units of its
    data (``romandask``: DN/s per nominal pixel at ``reference_gain``, so a
    source's flux is the sum of data x area; ``gen_cal_image``: see the
    README's Calibration section)."""
    return {"fitter": str(fitter), "reference_gain": float(reference_gain),
            "units": str(units), "pixel_area_normalised": units == "romandask",
            "exclude_first": bool(exclude_first)}


#: Value of gen_cal_image's bad pixels in its third HDU.
FITS_BAD_VALUE = -1000.0


def fits_companion(l2_path: Path) -> Path:
    """The FITS companion of an L2 file: ``<its name without .asdf>_asdf_to.fits``."""
    l2_path = Path(l2_path)
    if l2_path.suffix != ".asdf":
        raise ValueError(f"an L2 file name ends in .asdf, got {l2_path.name}")
    return l2_path.with_name(l2_path.name[: -len(".asdf")] + "_asdf_to.fits")


def fits_cards(filter_name: str, sca: int, fitter: str, units: str = "romandask") -> dict:
    """The primary-header cards of an L2 file's FITS companion."""
    return {"FILTER": filter_name, "DETECTOR": f"WFI{sca:02d}", "BUNIT": "DN/s",
            "UNITS": (units, "romandask | gen_cal_image: README, Calibration"),
            "FITTER": fitter}


def l2_fits_hdus(arrays: Mapping[str, np.ndarray], header, meta_cards: Mapping[str, Any],
                 layout: str = "gen_cal_image"):
    """The HDUs of an L2 image's FITS companion in one of
    :data:`romandask.config.FITS_LAYOUTS` (see :func:`write_l2_fits`)."""
    from .wcs import fits_image_hdus

    if layout not in FITS_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(FITS_LAYOUTS)}, got {layout!r}")
    cards = {**meta_cards, "FITSLAYO": (layout, "layout of this file's HDUs")}
    if layout == "romandask":
        names = ("data", "err", "dq", "var_poisson", "var_rnoise")   # SCI, ERR, DQ, ...
        return fits_image_hdus({name: arrays[name] for name in names}, header, cards)
    from .calibrate.gen_cal_image import good_pixels

    data = np.asarray(arrays["data"], np.float32)
    dq = np.asarray(arrays["dq"], np.uint32)
    masked = np.where(good_pixels(dq), data, np.float32(FITS_BAD_VALUE)).astype(np.float32)
    return fits_image_hdus({"data": data, "dq": dq, "masked": masked}, header, cards,
                           primary="data")


def write_l2_fits(path: Path, arrays: Mapping[str, np.ndarray], header,
                  meta_cards: Mapping[str, Any], layout: str = "gen_cal_image") -> Path:
    """Write the FITS companion of an L2 image in one of
    :data:`romandask.config.FITS_LAYOUTS`.

    ``gen_cal_image``: the primary HDU holds the data (float32), the first
    extension (``DQ``) the pixel flags, the second (``MASKED``) the data with
    the pixels gen_cal_image's mask rejects set to :data:`FITS_BAD_VALUE`
    (:func:`romandask.calibrate.gen_cal_image.good_pixels`: its DQ bits,
    grown; saturated pixels are kept).  ``romandask``: an empty primary HDU
    and SCI, ERR, DQ, VAR_POISSON, VAR_RNOISE.  Every HDU carries the WCS
    cards of ``header`` (see :func:`romandask.wcs.write_fits_image`).  The
    file is written under a temporary name and renamed when whole; the same
    inputs give the same bytes.
    """
    hdus = l2_fits_hdus(arrays, header, meta_cards, layout)
    with atomic_path(Path(path)) as partial:
        hdus.writeto(partial, overwrite=True, output_verify="exception")
    return Path(path)


def fits_companion_bytes(header, window: int, layout: str) -> int:
    """The size of one FITS companion of a ``window`` x ``window`` L2 image."""
    zeros = {name: np.zeros((window, window), np.uint32 if name == "dq" else np.float32)
             for name in ("data", "err", "var_poisson", "var_rnoise", "dq")}
    buffer = io.BytesIO()
    l2_fits_hdus(zeros, header, fits_cards("F158", 1, "fixed"), layout).writeto(buffer)
    return buffer.tell()


def l2_model(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], wcs, *,
             l1_data: np.ndarray, amp33: np.ndarray, photometry: Mapping[str, float],
             sim: Mapping[str, Any] | None = None,
             filename: str | None = None, validate: bool = True) -> rdm.ImageModel:
    """The Level 2 datamodel of one SCA of one exposure.

    ``arrays`` holds data, err, var_poisson, var_rnoise (N x N; the file
    stores the errors as float16, as RAD's schema has it) and dq (uint32); ``meta`` the L1 file's meta (exposure, instrument, pointing,
    ...); ``wcs`` a gWCS of the N x N image; ``l1_data`` the raw resultants
    (nres, N + 8, N + 8), whose border becomes the reference-pixel arrays;
    ``sim`` goes under the ``romandask`` key.
    """
    n = arrays["data"].shape[0]
    side = n + 2 * N_BORDER
    nres = l1_data.shape[0]
    _check_array("l1 data", l1_data, (nres, side, side))
    _check_array("amp33", amp33, (nres, side, N_AMP33))
    steps = {step: ("COMPLETE" if step in CAL_STEPS_RUN else "INCOMPLETE")
             for step in CAL_STEPS_ALL}
    meta = _merged(dict(meta), {"cal_step": steps, "photometry": dict(photometry)})
    if filename is not None:
        meta["filename"] = filename
    model = rdm.ImageModel.create_fake_data({"meta": meta}, shape=(1, 1))
    model.meta.wcs = wcs
    model.data = np.asarray(arrays["data"], np.float32)
    model.dq = np.asarray(arrays["dq"], np.uint32)
    model.dq2 = np.zeros((n, n), np.uint32)
    for name in ("err", "var_poisson", "var_rnoise"):
        # the schema's type (RAD wfi_image-2.2); the store keeps float32
        model[name] = np.asarray(arrays[name], np.float16)
    model.chisq = np.zeros((n, n), np.float16)
    model.dumo = np.zeros((n, n), np.float16)
    model.amp33 = amp33
    raw = l1_data.astype(np.float32)
    b = N_BORDER
    model.border_ref_pix_left = raw[:, :, :b]
    model.border_ref_pix_right = raw[:, :, -b:]
    model.border_ref_pix_top = raw[:, -b:, :]
    model.border_ref_pix_bottom = raw[:, :b, :]
    for side_name in ("left", "right", "top", "bottom"):
        shape = getattr(model, f"border_ref_pix_{side_name}").shape[1:]
        model[f"dq_border_ref_pix_{side_name}"] = np.full(shape, np.uint32(2 ** 31))
    if sim is not None:
        model[TREE_KEY] = dict(sim)
    if validate:  # else left to the write (see l1_model)
        model.validate()
    return model


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

def _skeleton(node):
    """A shallow copy of ``node`` with its large arrays cut to one element."""
    skeleton = node.copy()
    for key, value in node.items():
        if isinstance(value, np.ndarray) and value.size > ARRAY_INLINE_THRESHOLD:
            skeleton[key] = np.zeros((1,) * value.ndim, value.dtype)
    return skeleton


#: Extension histories worked out in this process, by the signature of the tree
#: (:func:`_signature`): a process writes few kinds of file, and the history of
#: each kind is worked out once.
_HISTORIES: dict[frozenset, list] = {}


def _signature(node, out: set[str]) -> set[str]:
    """The types a tree holds, which decide the asdf extensions writing it uses.

    Mappings and sequences are walked, and so are a gWCS's frames and
    transforms, an astropy compound model's parts and a frame's reference frame.
    """
    out.add(f"{type(node).__module__}.{type(node).__qualname__}")
    if isinstance(node, Mapping):
        for value in node.values():
            _signature(value, out)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _signature(value, out)
    elif hasattr(node, "pipeline") and hasattr(node, "forward_transform"):  # a gWCS
        for step in node.pipeline:
            _signature(step.frame, out)
            _signature(step.transform, out)
    elif hasattr(node, "traverse_postorder"):  # an astropy (compound) model
        for part in node.traverse_postorder():
            out.add(f"{type(part).__module__}.{type(part).__qualname__}")
    elif hasattr(node, "reference_frame") or hasattr(node, "frames"):  # a coordinate frame
        _signature(getattr(node, "reference_frame", None), out)
        for frame in getattr(node, "frames", None) or ():
            _signature(frame, out)
    return out


def _extension_history(tree: Mapping[str, Any]) -> dict[str, list]:
    """The extension history ``tree`` will get, in a fixed order.

    asdf lists the extensions a write used in the iteration order of a set
    hashed by object address, which changes from one process to the next;
    entries already in the tree's history keep their place when asdf updates
    them.  So write the tree, its large arrays cut short, to memory, read
    back the extensions recorded and sort them: once per kind of tree (its
    signature) and process.
    """
    key = frozenset(_signature(tree, set()))
    if key not in _HISTORIES:
        buffer = io.BytesIO()
        asdf.AsdfFile({**tree, "roman": _skeleton(tree["roman"])}).write_to(buffer)
        buffer.seek(0)
        with asdf.open(buffer, lazy_load=False, lazy_tree=False) as af:
            entries = list(af["history"]["extensions"])
        entries.sort(key=lambda entry: (entry.get("extension_uri") or "",
                                        entry["extension_class"]))
        _HISTORIES[key] = entries
    return {"extensions": copy.deepcopy(_HISTORIES[key])}


def write_asdf(model: rdm.DataModel, path: Path, extra_tree: Mapping[str, Any] | None = None
               ) -> Path:
    """Write ``model`` (and ``extra_tree`` beside it) to ``path``, reproducibly.

    The file is written as ``<name>.partial`` in the same directory and renamed
    when complete, so a file with the final name is always whole; an existing
    file of that name is replaced.  ``meta.filename`` is written as
    ``path``'s name.  Arrays are stored as in
    :meth:`~roman_datamodels.datamodels.DataModel.save` (lz4-compressed
    blocks, small arrays inline), but ``meta.file_date`` is kept as it is, so
    the same model gives the same bytes.

    Raises :class:`~romandask.errors.OutputError` if the file cannot be
    written; nothing is left behind then.
    """
    path = Path(path)
    extra_tree = dict(extra_tree or {})
    if {"roman", "history", "asdf_library"} & set(extra_tree):
        raise ValueError("extra_tree cannot replace the 'roman', 'history' or "
                         "'asdf_library' entries")
    # DataModel.save would stamp file_date with the clock; write the node ourselves.
    node = model._instance
    old_name = node.meta.filename
    node.meta.filename = path.name
    try:
        tree = {"roman": node, **extra_tree}
        with atomic_path(path) as partial, asdf.config_context() as cfg:
            cfg.array_inline_threshold = ARRAY_INLINE_THRESHOLD
            tree["history"] = _extension_history(tree)
            # to our own temporary file (a path would make asdf write one of its own,
            # which a killed process would leave behind)
            with open(partial, "wb") as f:
                asdf.AsdfFile(tree).write_to(f, all_array_compression=ARRAY_COMPRESSION)
    finally:
        node.meta.filename = old_name
    return path


def write_l1(path_dir: Path, data: np.ndarray, amp33: np.ndarray, exposure: Exposure,
             view: SCAView, window: int, truth: Mapping[str, np.ndarray] | None,
             extra_meta: Mapping[str, Any] | None = None, *,
             resultantdq: np.ndarray | None = None,
             sim_extra: Mapping[str, Any] | None = None) -> Path:
    """Build the Level 1 model of one SCA and write it to ``path_dir`` (validated
    once, as it is written).

    The file is named by :func:`l1_filename`; see :func:`l1_model` for the
    arguments.  Returns the path written.
    """
    model = l1_model(data, amp33, exposure, view, window=window, truth=truth,
                     extra_meta=extra_meta, resultantdq=resultantdq, sim_extra=sim_extra,
                     validate=False)
    return write_asdf(model, Path(path_dir) / model.meta.filename)
