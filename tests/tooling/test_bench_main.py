"""`make bench` shows why a benchmark failed instead of discarding its log."""

from __future__ import annotations

import importlib

import pytest
from support.processes import REPO


def test_a_failing_benchmark_shows_the_end_of_its_log(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # python -m bench.<name> finds bench/ here, as make bench does
    monkeypatch.syspath_prepend(str(REPO))
    bench = importlib.import_module("bench.__main__")
    assert bench.run("no_such_benchmark") != 0
    err = capfd.readouterr().err
    assert "bench.no_such_benchmark failed (exit 1); the end of its log:" in err
    assert "No module named bench.no_such_benchmark" in err
