"""fastest: the quickest of a few runs (on a fake clock), and a clear error for no run."""
import pytest

from memdec_helpers.runtime import timing


def test_fastest_takes_the_quickest_run(monkeypatch):
    clock = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])  # runs of 5, 1 and 3 seconds
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    assert timing.fastest(lambda: calls.append(1), repeats=3) == 1.0 and len(calls) == 3
    with pytest.raises(ValueError, match="repeats"):
        timing.fastest(lambda: None, repeats=0)
