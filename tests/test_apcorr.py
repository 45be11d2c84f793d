"""Aperture-correction reference files of romandask's PSF (romandask.apcorr)."""

from __future__ import annotations

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from romandask.apcorr import DEFAULT_RADII, encircled_energy, write_apcorr

WINDOW = 256


def test_encircled_energy_is_what_apertures_hold_on_rendered_stars():
    """The encircled energy equals aperture sums of stars the renderer draws
    (pixel-integrated, at random sub-pixel positions), and reaches 1 at the
    stamp's corner (the PSF is normalised within the stamp)."""
    import galsim
    from photutils.aperture import CircularAperture, aperture_photometry

    from romandask.config import PSFConfig
    from romandask.scene.psf import PSFKey, psf_model
    from romandask.scene.render import Backgrounds, expected_counts
    from romandask.survey.footprint import window_bounds

    radii = np.array([1.0, 2.0, 3.72, 7.45, 14.9, 30.0])
    ee = encircled_energy(7, "F158", radii, window=WINDOW)
    assert np.all(np.diff(ee) > 0) and 0.15 < ee[0] < ee[-1] < 1.0
    corner = encircled_energy(7, "F158", [64 * np.sqrt(2) + 1], window=WINDOW)[0]
    assert corner == pytest.approx(1.0, abs=2e-3)

    b = window_bounds(WINDOW)
    psf = PSFConfig()
    model = psf_model(PSFKey(7, "F158", b.xmin, b.xmax, b.ymin, b.ymax, psf.grid,
                             psf.pupil_bin, psf.oversample, 64))
    rng = np.random.default_rng(3)
    sums = []
    for _ in range(8):
        x, y = b.true_center.x + rng.uniform(-0.5, 0.5), b.true_center.y + rng.uniform(-0.5, 0.5)
        star = {"x": np.array([x]), "y": np.array([y]), "flux": np.array([1.0]),
                "type": np.array(["PSF"]), "n": np.zeros(1), "half_light_radius": np.zeros(1),
                "pa": np.zeros(1), "ba": np.ones(1)}
        image = expected_counts(b, galsim.PixelScale(0.11), star, model, 1.0, Backgrounds())
        position = (x - b.xmin, y - b.ymin)
        table = aperture_photometry(image, [CircularAperture(position, r) for r in radii],
                                    method="exact")
        sums.append([table[f"aperture_sum_{k}"][0] for k in range(len(radii))])
    # averaged over where a star falls in its pixel: within 5 standard errors of the
    # mean of the phases drawn, and 1e-4 for the two ways of drawing the PSF (the
    # renderer's stamp and this grid differ by a few 1e-5 beyond 10 pixels)
    sums = np.array(sums)
    standard_error = sums.std(axis=0, ddof=1) / np.sqrt(len(sums))
    difference = np.abs(sums.mean(axis=0) - ee)
    assert np.all(difference < 5 * standard_error + 1e-4), (difference, standard_error)


def test_apcorr_file_validates_and_holds_the_encircled_energy(tmp_path):
    path = write_apcorr(tmp_path / "apcorr.asdf", 7, ["F158", "F062"], window=WINDOW)
    with rdm.open(path) as model:
        assert isinstance(model, rdm.ApcorrRefModel)
        model.validate()
        assert model.meta.instrument.detector == "WFI07"
        for name in ("F158", "F062"):
            entry = model.data[name]
            np.testing.assert_array_equal(entry["ee_radii"], DEFAULT_RADII)
            np.testing.assert_allclose(entry["ap_corrections"] * entry["ee_fractions"], 1.0)
            expected = encircled_energy(7, name, DEFAULT_RADII[[1, 7, 29]], window=WINDOW)
            np.testing.assert_array_equal(entry["ee_fractions"][[1, 7, 29]], expected)
        # the bluer filter's PSF is the sharper one
        assert model.data["F062"]["ee_fractions"][3] > model.data["F158"]["ee_fractions"][3]
    with pytest.raises(ValueError, match="filters"):
        write_apcorr(tmp_path / "x.asdf", 7, ["F999"])
    assert not (tmp_path / "x.asdf").exists()
