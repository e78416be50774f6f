"""The learning-rate schedule: linear warm-up, then constant or cosine."""

import pytest

from mcl.training.schedule import learning_rate


def test_constant_schedule_after_warm_up() -> None:
    rates = [learning_rate(step, 100, 10, 1e-3, "constant") for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(rate == 1e-3 for rate in rates[10:])
    assert learning_rate(99, 100, 10, 1e-3, "cosine") < 1e-5
