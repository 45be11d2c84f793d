"""The HEALPix index of the catalog gives the rows a scan of every row gives."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from romandask.scene.select import CatalogIndex
from romandask.survey.footprint import unit_vectors

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env


def _scan(xyz: np.ndarray, ra: float, dec: float, radius: float) -> np.ndarray:
    centre = unit_vectors(np.array(ra), np.array(dec))
    return np.flatnonzero(xyz @ centre >= np.cos(np.radians(radius)))


def test_cones_through_the_index_are_the_cones_of_a_scan():
    rng = np.random.default_rng(3)
    n = 200_000
    # uniform on the sphere, with a dense patch across RA 0 and one at the pole
    ra = np.concatenate([rng.uniform(0, 360, n), rng.uniform(-0.5, 0.5, n) % 360.0,
                         rng.uniform(0, 360, n // 4)])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
                          rng.uniform(-1, 1, n), rng.uniform(89.5, 90, n // 4)])
    index = CatalogIndex(Table({"ra": ra, "dec": dec}))
    cones = [(0.0, 0.0, 0.01), (359.999, 0.2, 0.05), (0.3, -0.7, 0.2), (123.4, 89.9, 0.3),
             (10.0, 90.0, 0.1), (200.0, -30.0, 2.0), (45.0, 10.0, 1e-4)]
    cones += [(rng.uniform(0, 360), rng.uniform(-90, 90), rng.uniform(0.001, 1.0))
              for _ in range(30)]
    found = 0
    for ra0, dec0, radius in cones:
        rows = index.cone(ra0, dec0, radius)
        np.testing.assert_array_equal(rows, _scan(index.xyz, ra0, dec0, radius))
        found += len(rows)
    assert found > 10_000  # the cones are not all empty
    empty = CatalogIndex(Table({"ra": np.zeros(0), "dec": np.zeros(0)}))
    assert len(empty.cone(10.0, 10.0, 1.0)) == 0
