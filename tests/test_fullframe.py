"""Full-frame runs (marked slow: CI runs them with ``pytest -m slow``)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from romandask import store
from romandask.pipeline import prepare, run, sky_backgrounds
from romandask.scene.render import expected_counts

pytestmark = pytest.mark.slow


def test_full_sca_counts_cube(make_config):
    """One whole SCA (4088^2, 4 x 4 tiles of 1022) through the local cluster."""
    config, _ = make_config({
        "survey": {"exposures": [{"ra": 9.70, "dec": -44.0, "pa": 0.0, "filter": "F158",
                                  "ma_table": 4, "start_time": "2027-06-01T00:00:00"}],
                   "scas": [7]},
        "catalog": {"synthetic": {"density_scale": 0.2}},
        "detector": {"window": 4088, "tile": 1022},
        "cluster": {"type": "local", "n_workers": 2, "progress": False},
    })
    run(config, say=lambda s: None)
    ds = xr.open_zarr(config.output.directory / store.STORE_NAME)
    assert ds.counts.shape == (1, 1, 4088, 4088)
    assert ds.counts.data.numblocks == (1, 1, 4, 4)
    counts = ds.counts.values[0, 0]
    # sky everywhere: per-tile medians agree (zodi, thermal and dark are smooth)
    medians = np.array([np.median(counts[i:i + 1022, j:j + 1022])
                        for i in range(0, 4088, 1022) for j in range(0, 4088, 1022)])
    assert np.ptp(medians) < 0.05 * medians.mean()
    # the sources of the SCA are all in the truth table and their light is there
    survey = prepare(config)
    sources = survey.sky.select(survey.views[0])
    truth = xr.open_zarr(config.output.directory / store.STORE_NAME, group="truth")
    assert truth.sizes["source"] == len(sources["id"])
    # light closure: counts minus the noiseless background equal the sources' flux,
    # between that of the sources wholly inside and that of all of them
    view = survey.views[0]
    empty = {k: v[:0] for k, v in sources.items()}
    background = expected_counts(view.bounds, view.wcs, empty, None,
                                 view.exposure.exposure_time, sky_backgrounds(view, config))
    excess = counts.sum(dtype=np.float64) - background.sum()
    sigma = np.sqrt(counts.sum(dtype=np.float64))
    x, y, flux = truth.x.values, truth.y.values, truth.flux.values
    inside = (x > 64) & (x < 4023) & (y > 64) & (y < 4023)
    assert flux[inside].sum() - 5 * sigma < excess < flux.sum() + 5 * sigma
