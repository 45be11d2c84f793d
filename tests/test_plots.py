"""The footprint figure shows what was simulated: every exposure's windows
visible whatever their size, over a source density that covers every SCA."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BASE, merge
from romandask.config import parse_config
from romandask.pipeline import prepare
from romandask.plots import _density_sample, _free_corners, plot_footprint
from romandask.survey.footprint import SCAView, angular_distance, window_bounds

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env

#: matplotlib's tab10 blue and orange: exposures 0 and 1
COLOURS = {0: (31, 119, 180), 1: (255, 127, 14)}


def _survey(tmp_path, window):
    data = merge(BASE, {"detector": {"window": window, "tile": min(window, 512)}})
    return prepare(parse_config(data, tmp_path))


def _pixels_of(image: np.ndarray, rgb) -> int:
    return int(np.sum(np.all(np.abs(image[..., :3] * 255 - rgb) < 12, axis=-1)))


@pytest.mark.parametrize("window", [16, 4088])
def test_each_exposure_is_seen_whatever_the_window(tmp_path, window):
    import matplotlib.image

    survey = _survey(tmp_path, window)
    path = tmp_path / "footprint.png"
    plot_footprint(survey, path)
    image = matplotlib.image.imread(path)
    for ie, rgb in COLOURS.items():
        # drawn in its colour, unblended, in more than a marker's worth of pixels
        assert _pixels_of(image, rgb) > 40, (ie, _pixels_of(image, rgb))


def test_the_density_sample_covers_every_sca(tmp_path):
    survey = _survey(tmp_path, 64)
    full = [SCAView(v.exposure, v.sca, v.wcs, window_bounds(4088)) for v in survey.views]
    ra, dec, label, cap = _density_sample(survey, full)
    assert "synthetic" in label
    for view in full:
        cra, cdec = view.corners()
        # every SCA corner lies inside the drawn cap, with a bin to spare
        assert np.all(angular_distance(cra, cdec, cap[0], cap[1]) < cap[2] - 0.6 / 60)
        # and there are sources around it
        near = angular_distance(ra[:, None], dec[:, None], cra[None], cdec[None]) < 1 / 60
        assert np.all(near.sum(axis=0) > 10)


def test_the_zoom_and_legend_go_where_the_scas_are_not():
    square = np.array([[0.2, 0.2], [1.0, 0.2], [1.0, 1.0], [0.2, 1.0]])  # east, north
    ranked = [loc for _, loc in _free_corners([square], 1.0)]
    assert ranked[-1] == "upper left"  # east is to the left
    assert "upper left" not in ranked[:3]
