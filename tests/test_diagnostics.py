"""Label-free stage diagnostics: each signal on arrays whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from mcl.diagnostics import (
    alignment,
    group_statistics,
    linear_cka,
    rankme,
    ridge_residual,
    sample_rows,
    stage_diagnostics,
    uniformity,
    view_novelty,
    view_rows,
)


def test_group_statistics_batch_and_mask_modes() -> None:
    labels = np.repeat([0, 1, 2], [10, 10, 1])
    batch = group_statistics(labels, batch_size=4)
    # a group of 10 cut into 3 batches of ~3.33: 2.33 negatives; the single sample has none
    assert batch["groups"] == 3 and batch["groups_trained"] == 2 and batch["groups_below_batch"] == 1
    assert batch["mean_negatives"] == pytest.approx((20 * (10 / 3 - 1)) / 21)
    mask = group_statistics(labels, batch_size=4, negatives="mask")
    assert mask["mean_negatives"] == pytest.approx(3 * (20 * 9 / 20) / 21)
    random = group_statistics(None, batch_size=4, num_samples=21)
    assert random["groups_trained"] == 1 and random["mean_negatives"] == 3


def test_rankme_counts_the_effective_dimensions() -> None:
    rng = np.random.default_rng(0)
    full = rng.normal(size=(500, 8))
    low = full[:, :2] @ rng.normal(size=(2, 8))
    assert rankme(full) == pytest.approx(8, abs=0.6)
    assert rankme(low) == pytest.approx(2, abs=0.3)


def test_novelty_is_low_for_a_linear_function_of_earlier_stages_and_high_for_new_features() -> None:
    rng = np.random.default_rng(0)
    earlier = rng.normal(size=(400, 6))
    copied = earlier @ rng.normal(size=(6, 5))
    fresh = rng.normal(size=(400, 5))
    assert ridge_residual(earlier, copied, seed=0)[0] < 0.05
    assert ridge_residual(earlier, fresh, seed=0)[0] > 0.9
    assert linear_cka(earlier, earlier @ np.linalg.qr(rng.normal(size=(6, 6)))[0]) == pytest.approx(1.0)
    assert linear_cka(earlier, fresh) < 0.1


def test_view_novelty_counts_new_features_the_views_agree_on_not_augmentation_noise() -> None:
    rng = np.random.default_rng(0)
    n_fit, n_views = 600, 600
    earlier = rng.normal(size=(n_fit + n_views, 6))
    new = rng.normal(size=(n_fit + n_views, 4))  # a feature of the image, the same in both views
    fit, held = slice(0, n_fit), slice(n_fit, None)

    def views(x: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
        return tuple(x[held] + noise * rng.normal(size=x[held].shape) for _ in range(2))

    copied = earlier @ rng.normal(size=(6, 4))
    earlier_views = views(earlier, 0.0)
    # a linear function of the earlier stages: nothing new, even where the views' noise differs
    old = view_novelty(earlier[fit], copied[fit], earlier_views, views(copied, 0.5))
    fresh = view_novelty(earlier[fit], new[fit], earlier_views, views(new, 0.3))
    noise_only = view_novelty(earlier[fit], copied[fit] + rng.normal(size=(n_fit, 4)), earlier_views,
                              tuple(copied[held] + rng.normal(size=(n_views, 4)) for _ in range(2)))
    assert abs(old) < 0.05 and abs(noise_only) < 0.1 and fresh > 0.8
    # a feature silent on every fit row (a ReLU channel, say) but not on the views is left out, not divided by ~0
    silent = np.column_stack([copied, np.zeros(n_fit + n_views)])
    silent_views = tuple(np.column_stack([v, np.full(n_views, 0.01)]) for v in views(copied, 0.5))
    assert abs(view_novelty(earlier[fit], silent[fit], earlier_views, silent_views) - old) < 0.05
    assert view_novelty(earlier[fit], np.zeros((n_fit, 3)), earlier_views, (np.ones((n_views, 3)),) * 2) == 0.0
    assert np.array_equal(view_rows(np.arange(10)), [1, 3, 5, 7, 9])


def test_alignment_and_uniformity() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    assert alignment(x, x) == pytest.approx(0.0)
    assert alignment(x, -x) == pytest.approx(4.0)
    collapsed = np.ones((300, 16))
    assert uniformity(collapsed) == pytest.approx(0.0)
    assert uniformity(x) < -1.0


def test_stage_diagnostics_keys_and_the_fixed_sample() -> None:
    rng = np.random.default_rng(0)
    rows = sample_rows(5000, seed=3, size=100)
    assert np.array_equal(rows, sample_rows(5000, seed=3, size=100)) and len(np.unique(rows)) == 100
    assert np.array_equal(sample_rows(50, seed=3, size=100), np.arange(50))
    centres = rng.normal(size=(4, 8)) * 5
    labels = rng.integers(0, 4, 400)
    current = centres[labels] + rng.normal(size=(400, 8)) * 0.1
    first = stage_diagnostics(current, [], labels, None, clusters=4, seed=0)
    assert first["novelty"] is None and first["nmi_previous"] is None
    assert first["stability"] > 0.9
    later = stage_diagnostics(current, [rng.normal(size=(400, 8))], labels, labels, clusters=4, seed=0)
    assert later["nmi_previous"] == pytest.approx(1.0) and later["new_structure"] == pytest.approx(0.0, abs=1e-9)
    assert later["novelty"] > 0.9 and later["view_novelty"] is None and first["view_novelty"] is None
    noisy = [current[1::2] + rng.normal(size=(200, 8)) * 0.05 for _ in range(2)]
    repeated = stage_diagnostics(current, [current], labels, labels, clusters=4, seed=0,
                                 views=[tuple(noisy), tuple(noisy)])
    assert repeated["view_novelty"] == pytest.approx(0.0, abs=0.01)  # stage s repeats stage s-1
    # stage s adds a feature of the image (the same in both views) that stage s-1 lacks
    extra = rng.normal(size=(400, 4))
    grown = np.column_stack([current, extra])
    new = stage_diagnostics(grown, [current], labels, labels, clusters=4, seed=0,
                            views=[tuple(noisy), tuple(np.column_stack([v, extra[1::2]]) for v in noisy)])
    assert new["view_novelty"] > 0.25
