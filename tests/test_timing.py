"""fastest: the quickest of a few runs, and a clear error for no run."""
import time

import pytest

from memdec_helpers.runtime.timing import fastest


def test_fastest_takes_the_quickest_run():
    delays = iter([0.05, 0.01, 0.03])
    calls = []

    def run():
        calls.append(1)
        time.sleep(next(delays))

    assert 0.01 <= fastest(run, repeats=3) < 0.03 and len(calls) == 3
    with pytest.raises(ValueError, match="repeats"):
        fastest(run, repeats=0)
