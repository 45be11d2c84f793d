"""Full-frame runs (marked slow: CI runs them with ``pytest -m slow``)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from romandask import store
from romandask.pipeline import prepare, run

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
    truth = xr.open_zarr(config.output.directory / store.STORE_NAME, group="truth")
    assert truth.sizes["source"] == len(survey.sources[0]["id"])
    inside = ((truth.x > 64) & (truth.x < 4023) & (truth.y > 64) & (truth.y < 4023)).values
    excess = counts.sum(dtype=np.float64) - np.median(counts) * counts.size
    assert excess > 0.8 * float(truth.flux.values[inside].sum())
