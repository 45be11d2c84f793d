"""romancal reads romandask's products (in the environment with the released
romancal: ``scripts/setup.sh peers``; skipped where romancal is not installed).

romancal's steps ask CRDS for their parameters unless told not to; CRDS is
not reachable from a test, so ``STPIPE_DISABLE_CRDS_STEPPARS`` is set and
each step runs with its defaults.
"""

from __future__ import annotations

import numpy as np
import pytest
import roman_datamodels.datamodels as rdm

from conftest import BASE, merge

romancal = pytest.importorskip("romancal")


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    from romandask.config import parse_config
    from romandask.pipeline import run

    tmp = tmp_path_factory.mktemp("romancal")
    first, second = BASE["survey"]["exposures"]
    second = {**second, "ra": first["ra"] + 0.0005, "dec": first["dec"] + 0.0003}   # ~1.6"
    config = merge(BASE, {"survey": {"scas": [7], "exposures": [first, second]},
                          "detector": {"window": 128, "tile": 128},
                          "output": {"directory": str(tmp / "out"), "products": ["l1", "l2"]}})
    return run(parse_config(config, tmp), say=lambda s: None)


def test_every_file_opens_and_validates_where_romancal_is(run_files):
    for kind in ("l1", "l2"):
        for path in run_files[kind]:
            with rdm.open(path) as model:
                model.validate()
                assert model.meta.wcs is not None if kind == "l2" else True


def test_resample_step_runs_on_a_runs_l2_files(run_files, monkeypatch):
    from romancal.datamodels import ModelLibrary
    from romancal.resample import ResampleStep

    monkeypatch.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    files = [str(p) for p in sorted(run_files["l2"])]
    result = ResampleStep.call(ModelLibrary(files))
    data = np.asarray(result.data, np.float64)
    assert np.isfinite(data).mean() > 0.5
    # the sky: romancal's coadd of our rates is our rates' sky (DN/s per nominal pixel)
    skies = []
    for path in files:
        with rdm.open(path) as model:
            skies.append(np.nanmedian(np.asarray(model.data, np.float64)))
    assert np.nanmedian(data) == pytest.approx(np.mean(skies), rel=0.02)
    # the two exposures overlap: there both contributed (two context bits)
    context = np.asarray(result.context)
    assert (np.bitwise_count(context[0].astype(np.uint32)) == 2).any()
