"""The per-process PSF cache: kept by bytes, reused across exposures, counted."""

from __future__ import annotations

import numpy as np
import pytest

from romandask.pipeline import run
from romandask.scene import psf as psf_module
from romandask.scene.psf import ModelCache, model_bytes, psf_model

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env


class _Model:
    """A stand-in for a PSF model: one grid image of ``side`` pixels."""

    def __init__(self, key):
        self.key = key
        self.arrays = {(0, 0): np.zeros((key, key))}
        self._fourier = None


def test_cache_keeps_models_within_its_bytes_and_counts_lookups():
    one = model_bytes(_Model(100))
    cache = ModelCache(_Model, budget=2.5 * one)
    for key in (100, 100, 100, 100):  # one built, three reused
        assert cache(key).key == key
    first = cache(100)
    cache(100.0 + 0)  # the same key
    kept = cache(101)
    stats = cache.stats()
    assert (stats.built, stats.reused, stats.held) == (2, 5, 2)
    cache(102)  # three do not fit in 2.5 models' bytes: the least recently used goes
    assert cache.stats().held == 2
    assert cache(101) is kept and cache.stats().built == 3  # 101 was kept
    assert cache(100) is not first and cache.stats().built == 4  # 100 had gone
    big = ModelCache(_Model, budget=1)  # the newest is kept, whatever its size
    assert big(300) is big(300)
    assert "1 built, reused 1 times (50.0 % of 2 lookups)" in big.stats().line()


def test_run_builds_each_sca_filter_psf_once_and_reports_it(make_config):
    """Two exposures x two SCAs, four counts tiles each: a PSF per SCA, built once."""
    config, _ = make_config({"output": {"products": ["counts"]}})
    psf_model.cache_clear()
    lines = []
    run(config, say=lines.append)
    (line,) = [ln for ln in lines if ln.startswith("PSF models:")]
    assert line == "PSF models: 2 built, reused 14 times (87.5 % of 16 lookups)"
    assert psf_module.cache_stats().held == 2
