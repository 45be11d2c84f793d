"""Progress without a terminal: a line now and then with what is done, the
time elapsed and an estimate of the time to go."""

from __future__ import annotations

import re

import pytest

from romandask.cluster import ProgressLines, format_duration
from romandask.pipeline import run

#: no ASDF file, nor the libraries that differ between .venv and .venv-peers
pytestmark = pytest.mark.one_env


def test_the_line_estimates_the_time_to_go_from_the_pace_so_far():
    done = iter([0, 1, 4])
    lines = ProgressLines(lambda: next(done), 4, "files", say=print, interval=60)
    assert lines.line(10.0) == "progress: 0 of 4 files done, 10 s elapsed"
    assert lines.line(30.0) == "progress: 1 of 4 files done, 30 s elapsed, about 1.5 min to go"
    assert lines.line(200.0) == "progress: 4 of 4 files done, 3.3 min elapsed"


def test_durations_read_as_people_say_them():
    assert format_duration(42) == "42 s"
    assert format_duration(300) == "5.0 min"
    assert format_duration(3 * 3600 + 5 * 60) == "3 h 05 min"


def test_a_run_without_a_terminal_prints_progress_lines(make_config, capsys, monkeypatch):
    monkeypatch.setenv("ROMANDASK_PROGRESS_SECONDS", "0.05")
    config, _ = make_config({"survey": {"scas": [1]}, "output": {"products": ["counts"]},
                             "cluster": {"progress": True}})
    run(config, say=lambda s: None)
    err = capsys.readouterr().err  # pytest's stderr is not a terminal
    lines = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert lines, err
    for line in lines:
        assert re.fullmatch(r"progress: \d of 2 \(exposure, SCA\) products done, \d+ s elapsed"
                            r"(, about \d+ s to go)?", line), line
