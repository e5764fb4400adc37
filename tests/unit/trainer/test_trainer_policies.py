"""Promotion, retraining and stopping rules."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop_trainer.domain.convergence import (
    StopSet,
    compare_predictions,
    converged,
    stop_set,
)
from labelloop_trainer.domain.promotion import should_promote
from labelloop_trainer.domain.retraining import decide_retrain


@pytest.mark.parametrize(
    ("new", "current", "tolerance", "promoted"),
    [
        (0.80, None, 0.01, True),
        (0.80, 0.80, 0.0, True),
        (0.795, 0.80, 0.01, True),
        (0.79, 0.80, 0.01, True),
        (0.789, 0.80, 0.01, False),
        (0.90, 0.80, 0.0, True),
    ],
)
def test_promotion_tolerates_small_drops_only(
    new: float, current: float | None, tolerance: float, promoted: bool
) -> None:
    assert should_promote(new, current, tolerance) is promoted


@pytest.mark.parametrize(
    ("n_rows", "last", "train"),
    [
        (10, None, True),
        (0, None, False),
        (100, 100, False),
        (119, 100, True),  # growth 19% >= 10%
        (300, 290, False),  # 10 new, 3.4% growth
        (320, 300, True),  # 20 new labels
        (90, 100, False),  # fewer rows (labels excluded): nothing new
    ],
)
def test_retrain_policy(n_rows: int, last: int | None, train: bool) -> None:
    decision = decide_retrain(n_rows, last, min_new_labels=20, min_growth=0.1)
    assert decision.train is train
    assert decision.reason


def test_convergence_needs_consecutive_stable_rounds() -> None:
    assert not converged([], 3, 0.99)
    assert not converged([0.995, 0.999], 3, 0.99)
    assert converged([0.5, 0.995, 0.999, 1.0], 3, 0.99)
    assert not converged([0.995, 0.999, 0.98, 1.0, 1.0], 3, 0.99)
    assert not converged([0.995, None, 1.0, 1.0], 3, 0.99)
    assert converged([0.995, None, 1.0, 1.0, 1.0], 3, 0.99)


def test_compare_predictions_on_common_items() -> None:
    prev = {f"i{k}": "a" if k % 2 else "b" for k in range(100)}
    cur = dict(prev)
    cur["i0"] = "a"  # one change
    cur["new"] = "a"  # not in prev: ignored
    del cur["i99"]  # labeled since: ignored
    agreement = compare_predictions(prev, cur)
    assert agreement.n_common == 99
    assert agreement.share == pytest.approx(98 / 99)
    assert agreement.kappa is not None
    assert 0.9 < agreement.kappa < 1.0
    assert compare_predictions({"a": "x"}, {"a": "x"}).share is None  # too few to say


def test_kappa_of_identical_constant_predictions_is_one() -> None:
    same = {f"i{k}": "a" for k in range(50)}
    assert compare_predictions(same, same).kappa == 1.0


def test_stop_set_is_stable_and_model_independent() -> None:
    ids = [f"item-{k}" for k in range(1000)]
    first = stop_set(ids, 100, "p")
    assert len(first) == 100
    assert stop_set(list(reversed(ids)), 100, "p") == first
    grown = stop_set([*ids, *(f"new-{k}" for k in range(1000))], 100, "p")
    assert len(set(first) & set(grown)) > 30  # about half the old members stay


def test_a_drop_within_chance_does_not_hold_a_model_back() -> None:
    # 80 test rows: the new model loses 4 rows and wins 1: a 3.75-point drop, not significant
    current = np.ones(80, dtype=bool)
    current[:1] = False
    new = np.ones(80, dtype=bool)
    new[1:5] = False
    assert should_promote(0.90, 0.95, 0.01, new_correct=new, current_correct=current)
    assert not should_promote(0.90, 0.95, 0.01)  # without the rows, the plain rule holds


def test_a_significant_drop_is_rejected() -> None:
    current = np.ones(80, dtype=bool)
    new = np.ones(80, dtype=bool)
    new[:12] = False  # the new model is wrong on 12 rows the current one gets right
    assert not should_promote(0.80, 0.95, 0.01, new_correct=new, current_correct=current)


def test_a_kept_stop_set_is_the_pools_own_as_items_are_labeled_returned_and_added() -> None:
    """The stop set drawn from what a project keeps between trainings is the one hashing the
    whole pool gives: as the pool shrinks, as labels are withdrawn (items come back), when the
    catalog grows, and when most of the catalog is labeled (it draws over the pool again)."""
    rng = np.random.default_rng(3)
    catalog = sorted(f"item-{k:05d}" for k in range(5_000))
    kept = StopSet(50, "p")
    labeled: set[str] = set()
    for step in range(8):
        if step == 4:  # labels withdrawn: some items come back to the pool
            labeled -= set(sorted(labeled)[::3])
        elif step == 5:  # the catalog grows
            catalog = sorted([*catalog, *(f"added-{k:04d}" for k in range(2_000))])
        else:
            labeled |= set(rng.choice(catalog, size=600, replace=False).tolist())
        if step == 7:  # most of the catalog labeled: fewer than 50 kept ids are left
            labeled = set(catalog[200:])
        pool = [i for i in catalog if i not in labeled]
        got = kept.positions(catalog, pool)
        assert got == sorted(pool.index(i) for i in stop_set(pool, 50, "p")), step
    tiny = ["a", "b", "c"]
    assert StopSet(50, "p").positions(tiny, tiny[1:]) == [0, 1]
    assert StopSet(50, "p").positions(tiny, []) == []
