"""The two test environments hold the same libraries but the file-format ones.

``.ci/run`` runs the modules marked ``one_env`` in ``.venv`` only: that is
sound only while ``.venv-peers`` (romancal's environment) has the same
numerical libraries.  Run in one environment while the other exists, this
compares their versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: what the one_env modules run on, which must be alike in both environments
SHARED = ("numpy", "scipy", "galsim", "stcal", "numba", "dask", "distributed", "zarr",
          "xarray", "astropy", "hpgeom")
ENVIRONMENTS = (REPO / ".venv", REPO / ".venv-peers")


def _versions(python: Path) -> dict[str, str]:
    code = ("import json, importlib.metadata as m; "
            f"print(json.dumps({{n: m.version(n) for n in {list(SHARED)!r}}}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_one_env_libraries_are_the_same_in_both_environments():
    here = Path(sys.prefix).resolve()
    others = [env for env in ENVIRONMENTS
              if env.resolve() != here and (env / "bin" / "python").exists()]
    if here not in [env.resolve() for env in ENVIRONMENTS] or not others:
        pytest.skip("needs .venv and .venv-peers, this test running in one of them")
    mine = _versions(Path(sys.executable))
    theirs = _versions(others[0] / "bin" / "python")
    differ = {name: (mine[name], theirs[name]) for name in SHARED if mine[name] != theirs[name]}
    assert not differ, (f"{here.name} and {others[0].name} differ in {differ}: the one_env "
                        "tests must run in both environments (.ci/run)")
