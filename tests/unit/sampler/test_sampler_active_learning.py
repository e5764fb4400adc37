"""Active learning on digits with a perfect oracle: hybrid and margin beat random.

An ML experiment (seconds of training), so ``slow``: ``make test`` runs it, ``make test-fast``
does not; ``bench/bench_active_learning.py`` measures the same curves in full.
"""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from labelloop.project import SamplingStrategy as S
from labelloop_sampler.domain.selection import select

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2, 3)
TARGET = 0.90
BUDGET = 300


def labels_to_target(strategy: S, seed: int) -> int:
    """Labels needed to reach TARGET test accuracy (seed 20, batches of 20), capped at BUDGET."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_pool, X_test, y_pool, y_test = train_test_split(
        X, y, test_size=0.3, random_state=seed, stratify=y
    )
    rng = np.random.default_rng(seed)
    labeled = np.zeros(len(X_pool), dtype=bool)
    labeled[rng.choice(len(X_pool), 20, replace=False)] = True
    round_ = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(max_iter=200).fit(X_pool[labeled], y_pool[labeled])
        if model.score(X_test, y_test) >= TARGET or labeled.sum() >= BUDGET:
            return int(labeled.sum())
        candidates = np.flatnonzero(~labeled)
        chosen = select(
            strategy,
            20,
            n_candidates=len(candidates),
            X=X_pool[candidates],
            proba=model.predict_proba(X_pool[candidates]),
            random_state=seed * 1000 + round_,
        )
        labeled[candidates[chosen.indices]] = True
        round_ += 1


@pytest.fixture(scope="module")
def needed() -> dict[S, float]:
    return {
        s: float(np.mean([labels_to_target(s, seed) for seed in SEEDS]))
        for s in (S.RANDOM, S.MARGIN, S.HYBRID)
    }


def test_margin_needs_fewer_labels_than_random(needed: dict[S, float]) -> None:
    assert needed[S.MARGIN] < needed[S.RANDOM], needed


def test_hybrid_needs_fewer_labels_than_random(needed: dict[S, float]) -> None:
    assert needed[S.HYBRID] < needed[S.RANDOM], needed
    assert needed[S.HYBRID] <= 100, needed
