"""Phase times: nested phases are their own rows and are not counted twice."""

import time

import pytest

from mcl.logging_utils import PHASE_TIMES, record_time, timed_phase


def test_nested_phases_add_up_to_the_wall_time() -> None:
    first = len(PHASE_TIMES)
    started = time.perf_counter()
    with timed_phase("outer"):
        time.sleep(0.05)
        with timed_phase("inner"):
            time.sleep(0.05)
            record_time("leaf", 0.02)  # e.g. a cache build recorded by hand inside the inner phase
    wall = time.perf_counter() - started
    rows = dict(PHASE_TIMES[first:])
    assert list(rows) == ["leaf", "inner", "outer"]
    assert rows["leaf"] == 0.02
    assert rows["inner"] == pytest.approx(0.05 - 0.02, abs=0.02)
    assert rows["outer"] == pytest.approx(0.05, abs=0.02)
    assert sum(rows.values()) == pytest.approx(wall, abs=1e-3)


def test_a_failed_phase_records_nothing_and_unwinds() -> None:
    first = len(PHASE_TIMES)
    with pytest.raises(RuntimeError), timed_phase("failing"):
        raise RuntimeError("boom")
    record_time("after", 1.0)
    assert PHASE_TIMES[first:] == [("after", 1.0)]
