"""Shared fixtures: small, fast configs built in code."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from romandask.config import parse_config

BASE = {
    "seed": 7,
    "survey": {
        "exposures": [
            {"ra": 9.70, "dec": -44.0, "pa": 0.0, "filter": "F158", "ma_table": 4,
             "start_time": "2027-06-01T00:00:00"},
            {"ra": 9.7046, "dec": -43.9966, "pa": 0.0, "filter": "F158", "ma_table": 4,
             "start_time": "2027-06-01T00:03:00"},
        ],
        "scas": [1, 2],
    },
    "catalog": {"synthetic": {}},
    "detector": {"window": 64, "tile": 32},
    "output": {"directory": "out"},
    "cluster": {"type": "threads", "n_workers": 1, "progress": False},
}


def merge(base: dict, overrides: dict) -> dict:
    """``base`` updated recursively by ``overrides``; a None override deletes the key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_config(tmp_path: Path):
    """Build a validated Config (and its YAML file) from BASE plus overrides."""

    def build(overrides: dict | None = None, name: str = "config.yaml"):
        data = merge(BASE, overrides or {})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return parse_config(data, tmp_path, path), path

    return build
