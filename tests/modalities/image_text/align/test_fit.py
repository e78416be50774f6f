"""The alignment loop's schedule: warm-up then cosine, the factors of the one schedule (mcl.training)."""

from __future__ import annotations

import math

import pytest

from mcl.modalities.image_text.align.fit import _lr_factor
from mcl.modalities.image_text.align.settings import AlignSettings


def test_warmup_then_cosine() -> None:
    settings = AlignSettings(steps=110, warmup_steps=10)
    assert _lr_factor(0, settings) == pytest.approx(0.1)
    assert _lr_factor(9, settings) == pytest.approx(1.0)
    assert _lr_factor(60, settings) == pytest.approx(0.5)
    assert _lr_factor(110, settings) == pytest.approx(0.0)


@pytest.mark.parametrize(("steps", "warmup"), [(1500, 100), (4, 1), (10, 0), (100, 200), (2000, 37)])
def test_lr_factors_are_those_the_aligned_checkpoints_were_built_with(steps: int, warmup: int) -> None:
    """Bit for bit the factors of the loop's former own schedule: a cached aligned stage 0 (named by a digest of its
    settings, not of the code) keeps its weights."""

    def former(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    settings = AlignSettings(steps=steps, warmup_steps=warmup)
    assert [_lr_factor(step, settings) for step in range(steps + 3)] == [former(step) for step in range(steps + 3)]
